package dev.peft4j.tuners.adalora;

import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.kernels.AdaLoraKernel;
import dev.peft4j.kernels.FusedLoraLinear;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.LinearShape;
import dev.peft4j.tuners.NativeLinear;
import dev.peft4j.nn.ParameterDict;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * PEFT's {@code adalora.SVDLinear} around an {@code nn.Linear} or transformers {@code Conv1D}: bare parameters
 * {@code lora_A.<name>} {@code (r, in)}, {@code lora_E.<name>} {@code (r, 1)}, {@code lora_B.<name>} {@code (out, r)}
 * and the frozen {@code ranknum.<name>} {@code (1,)} (never saved). Merge and the autograd forward are
 * {@link AdaLoraMath}'s.
 *
 * <p>An inference forward (autograd off, CPU, float32 / bfloat16 throughout, no dropout in training mode) runs each
 * active adapter as a LoRA slot {@code (A⊙E, B, s/(ranknum + 1e-5))} on the native kernels ({@link NativeLinear}).
 * {@link AdaLoraKernel} caches the effective {@code A⊙E} and rebuilds it only when A, E or ranknum change (their
 * version counters: the rank allocator masks E in place; a load replaces or refills them), so no forward recomputes
 * it. Anything else, or {@code -Dpeft4j.kernels=composed}, takes the composed ops.
 */
public final class SvdLinear extends BaseTunerLayer {
    private static final Logger LOG = LoggerFactory.getLogger(SvdLinear.class);
    private final boolean fanInFanOut;
    private final long inFeatures;
    private final long outFeatures;
    private final Map<String, Double> scaling = new LinkedHashMap<>();
    private final Map<String, Double> dropout = new LinkedHashMap<>();
    // native inference state, rebuilt lazily; null: not built or not servable
    private NativeLinear nativeState;
    private List<AdaLoraKernel> kernels = List.of();
    private boolean kernelDropout;

    /**
     * Wraps {@code base} with no adapter yet.
     * @throws IllegalArgumentException if {@code base} is not a linear layer ({@code nn.Linear} or {@code Conv1D}),
     *     with PEFT's message
     */
    public SvdLinear(Module base) {
        super(base);
        LinearShape shape = LinearShape.of(innermost(base)); // a tuner layer of another method: what it adapts
        if (shape == null) {
            throw new IllegalArgumentException("Target module " + base.typeName() + " is not supported. Currently, "
                    + "only `torch.nn.Linear`, `Conv1D`, and `torch.nn.Conv2d` are supported.");
        }
        fanInFanOut = shape.fanInFanOut();
        inFeatures = shape.in();
        outFeatures = shape.out();
        registerModule("lora_A", new ParameterDict());
        registerModule("lora_B", new ParameterDict());
        registerModule("lora_E", new ParameterDict());
        registerModule("ranknum", new ParameterDict());
    }

    @Override
    public String typeName() {
        return "adalora.SVDLinear";
    }

    /** PEFT's {@code AdaLoraLayer} is a {@code LoraLayer}: LoRA's and AdaLoRA's activations reach it. */
    @Override
    public String tunerLayerClass() {
        return "LoraLayer";
    }

    /** The base layer's input width. */
    public long inFeatures() {
        return inFeatures;
    }

    /** The base layer's output width. */
    public long outFeatures() {
        return outFeatures;
    }

    private ParameterDict d(String n) {
        return (ParameterDict) child(n);
    }

    /** Adds prepared tensors (taken over); {@code ranknum} is frozen. */
    public void addAdapter(String name, Tensor a, Tensor e, Tensor b, Tensor ranknum, double scale, double p,
            boolean trainable) {
        new AdaLoraMath.Adapter(a, e, b, ranknum, scale, p); // shape checks
        markKernelsDirty();
        if (a.size(1) != inFeatures || b.size(0) != outFeatures) {
            throw new IllegalArgumentException("adapter '" + name + "': lora_A/lora_B do not fit in=" + inFeatures
                    + ", out=" + outFeatures);
        }
        d("lora_A").put(name, a, trainable);
        d("lora_B").put(name, b, trainable);
        d("lora_E").put(name, e, trainable);
        d("ranknum").put(name, ranknum, false);
        scaling.put(name, scale);
        dropout.put(name, p);
    }

    /**
     * Adapter {@code name}'s scaling {@code s}, before the division by {@link #ranknum}.
     * @throws NullPointerException if the layer does not hold {@code name}
     */
    public double scaling(String name) {
        return scaling.get(name);
    }

    @Override
    public List<String> adapterNames() {
        return d("lora_A").keys();
    }

    /** The trainable parameters (A, E, B); {@code ranknum} is not listed: never saved, never trained. */
    @Override
    public Map<String, Tensor> adapterParameters(String name) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        if (!(d("lora_A").get(name) != null)) {
            return out;
        }
        out.put("lora_A." + name, d("lora_A").get(name));
        out.put("lora_B." + name, d("lora_B").get(name));
        out.put("lora_E." + name, d("lora_E").get(name));
        return out;
    }

    /**
     * Adapter {@code name}'s {@code ranknum}, a {@code (1,)} tensor owned by the layer; null if the layer does not hold
     * {@code name}.
     */
    public Tensor ranknum(String name) {
        return d("ranknum").get(name);
    }

    @Override
    protected void removeAdapter(String name) {
        closeNative(); // before the tensors it points at go
        for (String c : List.of("lora_A", "lora_B", "lora_E", "ranknum")) {
            d(c).remove(name).close();
        }
        scaling.remove(name);
        dropout.remove(name);
    }

    private AdaLoraMath.Adapter adapter(String n) {
        return new AdaLoraMath.Adapter(d("lora_A").get(n), d("lora_E").get(n), d("lora_B").get(n),
                d("ranknum").get(n), scaling.get(n), dropout.get(n));
    }

    @Override
    public Tensor forward(Tensor x) {
        Tensor baseOnly = baseOnlyForward(x, "AdaLoRA");
        if (baseOnly != null) {
            return baseOnly;
        }
        List<AdaLoraMath.Adapter> act = new ArrayList<>();
        for (String n : activeAdapters()) {
            if (d("lora_A").get(n) != null && d("lora_A").get(n).size(0) > 0) { // rank 0 (pruned): adds nothing
                act.add(adapter(n));
            }
        }
        if (act.isEmpty()) {
            return baseForward(x);
        }
        if (kernelEligible(x) && !wrapsTunerLayer()) { // nested: composed around the inner layer's output
            NativeLinear s = refreshNative();
            if (s != null && !(kernelDropout && isTraining()) && s.acceptsInput(x)) {
                return s.forward(x, this::baseForward, null);
            }
        }
        try (Tensor base = baseForward(x)) {
            return AdaLoraMath.forward(base, x, act, isTraining());
        }
    }

    /**
     * The native state for the active adapters, rebuilt if stale, its slots refreshed when an effective A changed;
     * null when some tensor cannot be served natively.
     */
    private synchronized NativeLinear refreshNative() {
        if (takeKernelsStale()) {
            freeNative();
            NativeLinear s = NativeLinear.create(baseWeight(), baseBias(), fanInFanOut);
            List<AdaLoraKernel> ks = new ArrayList<>();
            for (String n : activeAdapters()) {
                if (s == null || d("lora_A").get(n) == null || d("lora_A").get(n).size(0) == 0) {
                    continue; // a rank-0 (pruned) adapter adds nothing
                }
                Tensor a = d("lora_A").get(n);
                Tensor e = d("lora_E").get(n);
                Tensor b = d("lora_B").get(n);
                if (!s.accepts(a) || !s.accepts(b) || e.scalar_type().intern() != a.scalar_type().intern()) {
                    s.close();
                    s = null;
                    continue;
                }
                ks.add(new AdaLoraKernel(a, e, b, d("ranknum").get(n), scaling.get(n)));
                kernelDropout |= dropout.get(n) > 0;
            }
            if (s == null || ks.isEmpty()) {
                ks.forEach(AdaLoraKernel::close);
                if (s != null) {
                    s.close();
                }
                return null;
            }
            nativeState = s;
            kernels = ks;
        }
        if (nativeState == null) {
            return null;
        }
        List<FusedLoraLinear.Adapter> current = nativeState.slots();
        boolean changed = current.size() != kernels.size();
        List<FusedLoraLinear.Adapter> slots = new ArrayList<>(kernels.size());
        for (int i = 0; i < kernels.size(); i++) {
            FusedLoraLinear.Adapter slot = kernels.get(i).slot(); // the cached one unless A, E or ranknum changed
            slots.add(slot);
            changed |= !changed && slot != current.get(i);
        }
        if (changed) {
            nativeState.setSlots(slots);
        }
        return nativeState;
    }

    private synchronized void closeNative() {
        freeNative();
        markKernelsDirty();
    }

    private void freeNative() {
        if (nativeState != null) {
            nativeState.close();
            nativeState = null;
        }
        kernels.forEach(AdaLoraKernel::close);
        kernels = List.of();
        kernelDropout = false;
    }

    @Override
    protected void releaseNative() {
        closeNative();
    }

    @Override
    public void merge(List<String> names, boolean safeMerge) {
        markKernelsDirty();
        for (String n : names) {
            if (mergedList().contains(n) || !(d("lora_A").get(n) != null)) {
                continue;
            }
            AdaLoraMath.merge(baseWeight(), adapter(n), fanInFanOut, safeMerge, n);
            mergedList().add(n);
        }
    }

    @Override
    public void unmerge() {
        markKernelsDirty();
        if (!merged()) {
            LOG.warn("Already unmerged. Nothing to do.");
            return;
        }
        while (!mergedList().isEmpty()) {
            String n = mergedList().remove(mergedList().size() - 1);
            if ((d("lora_A").get(n) != null)) {
                AdaLoraMath.unmerge(baseWeight(), adapter(n), fanInFanOut);
            }
        }
    }
}
