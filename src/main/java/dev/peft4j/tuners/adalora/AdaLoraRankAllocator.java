package dev.peft4j.tuners.adalora;

import dev.peft4j.tuners.Scoped;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeSet;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;

/**
 * AdaLoRA's rank allocation during training ({@code RankAllocator}, {@code tuners/adalora/layer.py}, §6.8), for
 * the single trainable adapter: importance scores smoothed over steps, and E entries zeroed to meet the scheduled
 * budget. Parameters are passed as PEFT sees them, by name ({@code named_parameters()} order, names relative to the
 * wrapped network such as {@code model.q.lora_E.default}); selection uses PEFT's substring tests.
 *
 * <p>Holds native state (three tensors per parameter): {@link #close()} frees it.
 */
public final class AdaLoraRankAllocator implements AutoCloseable {
    private final String adapterName;
    private final double beta1;
    private final double beta2;
    private final AdaLoraSchedule schedule;
    private final Map<String, Tensor> expAvgIpt = new HashMap<>();
    private final Map<String, Tensor> expAvgUnc = new HashMap<>();

    /** A budget step's outcome: the budget, and the rank pattern if masking ran at this step (else null). */
    public record Allocation(int budget, Map<String, List<Boolean>> rankPattern) {}

    /**
     * {@code RankAllocator.__init__}: {@code init_bgt} is the summed row count of every {@code lora_A.<adapter>}
     * parameter, {@code target_bgt = target_r ×} the number of adapted modules.
     *
     * @throws IllegalArgumentException for betas outside (0, 1) or an invalid schedule (PEFT's messages)
     */
    public static AdaLoraRankAllocator create(Map<String, Tensor> namedParameters, String adapterName, int targetR,
            int tinit, int tfinal, int totalStep, int deltaT, double beta1, double beta2) {
        if (!(beta1 > 0 && beta1 < 1) || !(beta2 > 0 && beta2 < 1)) {
            throw new IllegalArgumentException("beta1 and beta2 must be in (0, 1), got " + beta1 + " and " + beta2);
        }
        int initBudget = 0;
        Set<String> modules = new TreeSet<>();
        for (Map.Entry<String, Tensor> e : namedParameters.entrySet()) {
            if (e.getKey().contains("lora_A." + adapterName)) {
                initBudget += (int) e.getValue().size(0);
                modules.add(e.getKey().replace("lora_A", "%s"));
            }
        }
        AdaLoraSchedule schedule = new AdaLoraSchedule(initBudget, targetR * modules.size(), tinit, tfinal,
                totalStep, deltaT);
        return new AdaLoraRankAllocator(adapterName, beta1, beta2, schedule);
    }

    private AdaLoraRankAllocator(String adapterName, double beta1, double beta2, AdaLoraSchedule schedule) {
        this.adapterName = Objects.requireNonNull(adapterName, "adapter name");
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.schedule = schedule;
    }

    /** The budget schedule (init and target budgets as computed from the parameters). */
    public AdaLoraSchedule schedule() {
        return schedule;
    }

    /**
     * {@code update_ipt}: for every parameter whose name holds {@code lora_} and the adapter name,
     * {@code ipt = |p ⊙ grad|}, {@code avg_ipt ← β1·avg_ipt + (1−β1)·ipt},
     * {@code avg_unc ← β2·avg_unc + (1−β2)·|ipt − avg_ipt|} (with the updated avg_ipt; both start at zero).
     *
     * @throws IllegalStateException if such a parameter has no gradient
     */
    public void updateImportance(Map<String, Tensor> namedParameters) {
        try (NoGradGuard g = new NoGradGuard()) {
            for (Map.Entry<String, Tensor> e : namedParameters.entrySet()) {
                String n = e.getKey();
                if (!(n.contains("lora_") && n.contains(adapterName))) {
                    continue;
                }
                Tensor p = e.getValue();
                Tensor grad = p.grad();
                if (grad == null || grad.isNull() || !grad.defined()) {
                    throw new IllegalStateException("parameter " + n + " has no gradient: call backward() before "
                            + "updating AdaLoRA's importance scores");
                }
                Tensor oldIpt = expAvgIpt.get(n);
                Tensor oldUnc = expAvgUnc.get(n);
                Scoped.run(() -> {
                    Tensor ipt = p.mul(grad).abs();
                    Tensor prevIpt = oldIpt == null ? torch.zeros_like(p) : oldIpt;
                    Tensor prevUnc = oldUnc == null ? torch.zeros_like(p) : oldUnc;
                    Tensor newIpt = Scoped.computeOwned(
                            () -> prevIpt.mul(new Scalar(beta1)).add(ipt.mul(new Scalar(1 - beta1))));
                    Tensor newUnc = Scoped.computeOwned(
                            () -> prevUnc.mul(new Scalar(beta2)).add(ipt.sub(newIpt).abs().mul(new Scalar(1 - beta2))));
                    expAvgIpt.put(n, newIpt);
                    expAvgUnc.put(n, newUnc);
                });
                if (oldIpt != null) {
                    oldIpt.close();
                }
                if (oldUnc != null) {
                    oldUnc.close();
                }
            }
        }
    }

    /** The smoothed sensitivity of a parameter (a view of the allocator's state), or null before any update. */
    public Tensor smoothedImportance(String name) {
        return expAvgIpt.get(name);
    }

    /** The smoothed uncertainty of a parameter (a view of the allocator's state), or null before any update. */
    public Tensor smoothedUncertainty(String name) {
        return expAvgUnc.get(name);
    }

    /**
     * {@code mask_to_budget}: scores each rank slot of each module as {@code E + (mean_cols(A) + mean_rows(B))} of the
     * element scores {@code avg_ipt ⊙ avg_unc}, takes the {@code (init_bgt − budget)}-th smallest score over all
     * modules as threshold, zeroes (in place) every E entry scoring at or below it (ties can prune more), and
     * returns the rank pattern: E parameter name → kept flags.
     *
     * @throws IllegalArgumentException if the budget leaves nothing to prune or exceeds the slots ({@code kthvalue}
     *     needs {@code 1 <= k <= init_bgt})
     */
    public Map<String, List<Boolean>> maskToBudget(Map<String, Tensor> namedParameters, int budget) {
        int k = schedule.initBudget() - budget;
        if (k < 1 || k > schedule.initBudget()) {
            throw new IllegalArgumentException("budget " + budget + " must be below init_bgt "
                    + schedule.initBudget() + " and not negative to select a pruning threshold");
        }
        Map<String, List<Boolean>> rankPattern = new LinkedHashMap<>();
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                Map<String, List<Tensor>> vector = new LinkedHashMap<>();
                Map<String, Tensor> value = new HashMap<>();
                for (String n : namedParameters.keySet()) {
                    if (n.contains("lora_A." + adapterName)) {
                        vector.computeIfAbsent(n.replace("lora_A", "%s"), x -> new ArrayList<>())
                                .add(score(n).mean(new long[] {1}, true, new ScalarTypeOptional()));
                    }
                    if (n.contains("lora_B." + adapterName)) {
                        vector.computeIfAbsent(n.replace("lora_B", "%s"), x -> new ArrayList<>())
                                .add(score(n).mean(new long[] {0}, false, new ScalarTypeOptional())
                                        .view(-1, 1));
                    }
                    if (n.contains("lora_E." + adapterName)) {
                        value.put(n.replace("lora_E", "%s"), score(n));
                    }
                }
                Map<String, Tensor> triplet = new HashMap<>();
                TensorVector all = new TensorVector();
                for (Map.Entry<String, List<Tensor>> e : vector.entrySet()) {
                    Tensor ipE = value.get(e.getKey());
                    if (ipE == null) {
                        throw new IllegalArgumentException("no lora_E parameter for " + e.getKey().replace("%s", "lora_E"));
                    }
                    Tensor ab = torch.cat(new TensorVector(e.getValue().toArray(new Tensor[0])), 1).sum(new long[] {1},
                            false, new ScalarTypeOptional());
                    Tensor sum = ipE.view(-1).add(ab.view(-1));
                    triplet.put(e.getKey().replace("%s", "lora_E"), sum.view(-1, 1));
                    all.push_back(sum.view(-1));
                }
                double threshold = torch.kthvalue(torch.cat(all), k).get0().item_double();
                for (Map.Entry<String, Tensor> e : namedParameters.entrySet()) {
                    String n = e.getKey();
                    if (!n.contains("lora_E." + adapterName)) {
                        continue;
                    }
                    Tensor pruned = triplet.get(n).le(new Scalar(threshold));
                    e.getValue().masked_fill_(pruned, new Scalar(0.0));
                    Tensor flat = pruned.view(-1);
                    List<Boolean> kept = new ArrayList<>((int) flat.numel());
                    for (int i = 0; i < flat.numel(); i++) {
                        kept.add(!flat.get(i).item_bool());
                    }
                    rankPattern.put(n, kept);
                }
            });
        }
        return rankPattern;
    }

    /**
     * {@code update_and_allocate(model, global_step, force_mask)}: importance update before the final phase, then
     * the scheduled budget, masking when the schedule (or {@code forceMask}) says so.
     */
    public Allocation updateAndAllocate(Map<String, Tensor> namedParameters, int globalStep, boolean forceMask) {
        if (globalStep < schedule.totalStep() - schedule.tfinal()) {
            updateImportance(namedParameters);
        }
        AdaLoraSchedule.Budget b = schedule.at(globalStep);
        Map<String, List<Boolean>> pattern = b.mask() || forceMask ? maskToBudget(namedParameters, b.budget()) : null;
        return new Allocation(b.budget(), pattern);
    }

    /**
     * {@code mask_using_rank_pattern}: zeroes the E entries a stored pattern marks {@code false}; pattern keys may
     * carry the adapter name or not (as saved), as long as the first key decides for all, like PEFT.
     */
    public void maskUsingRankPattern(Map<String, Tensor> namedParameters, Map<String, List<Boolean>> rankPattern) {
        if (rankPattern.isEmpty()) {
            return;
        }
        boolean truncated = !rankPattern.keySet().iterator().next().contains(adapterName);
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                for (Map.Entry<String, Tensor> e : namedParameters.entrySet()) {
                    String n = e.getKey();
                    if (!n.contains("lora_E." + adapterName)) {
                        continue;
                    }
                    String key = truncated ? n.replace("." + adapterName, "") : n;
                    List<Boolean> kept = rankPattern.get(key);
                    if (kept == null) {
                        throw new IllegalArgumentException("rank_pattern has no entry " + key);
                    }
                    boolean[] drop = new boolean[kept.size()];
                    for (int i = 0; i < drop.length; i++) {
                        drop[i] = !kept.get(i);
                    }
                    Tensor mask = Tensor.create(drop, kept.size(), 1);
                    e.getValue().masked_fill_(mask, new Scalar(0.0));
                }
            });
        }
    }

    /** {@code reset_ipt}: forgets the smoothed scores. */
    public void resetImportance() {
        expAvgIpt.values().forEach(Tensor::close);
        expAvgUnc.values().forEach(Tensor::close);
        expAvgIpt.clear();
        expAvgUnc.clear();
    }

    @Override
    public void close() {
        resetImportance();
    }

    private Tensor score(String name) {
        Tensor ipt = expAvgIpt.get(name);
        if (ipt == null) {
            throw new IllegalStateException("no importance score for " + name + ": call updateImportance first");
        }
        return ipt.mul(expAvgUnc.get(name));
    }
}
