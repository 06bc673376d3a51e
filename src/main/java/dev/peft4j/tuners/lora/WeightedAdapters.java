package dev.peft4j.tuners.lora;

import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.Scoped;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Generator;
import org.bytedeco.pytorch.GeneratorOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRef;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.T_TensorTensorTensor_T;
import org.bytedeco.pytorch.global.torch;

/**
 * The per-layer arithmetic of PEFT's {@code LoraModel.add_weighted_adapter} ({@code lora/model.py},
 * {@code utils/merge_utils.py}): the factors of a new adapter made from existing ones on one LoRA layer.
 * {@code cat} stacks the factors (A scaled by weight·scaling); {@code linear}, {@code ties}, {@code magnitude_prune},
 * {@code dare_linear} and {@code dare_ties} combine A and B separately with sign·√|weight·scaling| on A and
 * √|weight·scaling| on B; the {@code *svd} types combine the delta weights (PEFT multiplies each
 * {@code get_delta_weight}, which holds the scaling already, by weight·scaling once more) and factor the result by
 * {@code torch.linalg.svd}, keeping the first {@code rank} singular directions (B = U·S, A = Vᴴ).
 *
 * <p>The {@code dare_*} types prune every tensor they combine at random (DARE): each entry is kept with probability
 * {@code density} (a Bernoulli mask) and the kept entries are divided by {@code density}; {@code dare_linear} then sums
 * the weighted tensors, {@code dare_ties} elects a sign per entry as {@code ties} does. The masks come from the
 * {@link Generator} given, drawn in PEFT's order (per layer: the A of each adapter, then the B of each; or the delta
 * weight of each adapter for the svd types). They are not the masks PEFT draws in Python, even from the same seed:
 * PEFT draws from torch's global generator, and the stream differs between libtorch builds as it differs between
 * torch devices. A density of 1 or more keeps every entry and rescales nothing, as in PEFT.
 */
public final class WeightedAdapters {
    private WeightedAdapters() {
    }

    /** One source adapter on a layer: its factors (A {@code (r, in)}, B {@code (out, r)}), scaling, user weight. */
    record Source(Tensor a, Tensor b, double scaling, double weight) {
    }

    /** Where the {@code dare_*} types take their Bernoulli masks from: one call per pruned tensor, in PEFT's order. */
    interface DareMasks {
        /**
         * A mask of {@code tensor}'s shape, dtype and device: each entry 1 with probability {@code density}, else 0.
         */
        Tensor draw(Tensor tensor, double density);
    }

    /**
     * PEFT's {@code torch.bernoulli(torch.full_like(tensor, density))}, drawn from {@code generator}; a CPU generator
     * draws the mask of a tensor on another device on the CPU, then moves it there.
     */
    static DareMasks bernoulli(Generator generator) {
        return (t, density) -> {
            if (t.is_cpu() || !generator.device().is_cpu()) {
                return torch.bernoulli(torch.full_like(t, new Scalar(density)), new GeneratorOptional(generator));
            }
            Tensor p = dev.peft4j.nn.Init.cpu(t.scalar_type()).empty(t.shape()).fill_(new Scalar(density));
            return torch.bernoulli(p, new GeneratorOptional(generator)).to(t.device(), t.scalar_type());
        };
    }

    /**
     * Writes the combination into {@code layer}'s adapter {@code name} (already injected, zero-filled here first),
     * from the {@code adapters} (with {@code weights}) the layer holds; does nothing when it holds none of them.
     *
     * @param type {@code cat}, {@code linear}, {@code ties}, {@code magnitude_prune}, {@code dare_linear},
     *     {@code dare_ties}, {@code svd}, {@code ties_svd}, {@code magnitude_prune_svd}, {@code dare_linear_svd},
     *     {@code dare_ties_svd}
     * @param rank the new adapter's rank (for the svd types)
     * @param clamp the quantile clamping the svd factors, or null
     * @param density the fraction kept by the {@code ties}, {@code magnitude_prune} and {@code dare} types
     * @param majoritySign {@code total} or {@code frequency}
     * @param generator the generator the {@code dare_*} types draw their masks from (used by one thread at a time
     *     for a reproducible result), or null for the other types
     */
    public static void combine(BaseTunerLayer layer, String name, List<String> adapters, List<Double> weights,
            String type, int rank, Double clamp, Double density, String majoritySign, Generator generator) {
        combineMasked(layer, name, adapters, weights, type, rank, clamp, density, majoritySign,
                generator == null ? null : bernoulli(generator));
    }

    /**
     * {@link #combine(BaseTunerLayer, String, List, List, String, int, Double, Double, String, Generator)} with the
     * {@code dare_*} masks from {@code masks}.
     */
    static void combineMasked(BaseTunerLayer layer, String name, List<String> adapters, List<Double> weights,
            String type, int rank, Double clamp, Double density, String majoritySign, DareMasks masks) {
        if (type.startsWith("dare_") && masks == null) {
            throw new IllegalArgumentException("combination_type " + type + " needs a generator for its masks");
        }
        Map<String, Tensor> target = layer.adapterParameters(name);
        boolean embedding = layer instanceof LoraEmbedding;
        if (target.isEmpty() || !(layer instanceof LoraLayer || embedding)) {
            return;
        }
        Tensor ta = target.get(embedding ? "lora_embedding_A." + name : "lora_A." + name + ".weight");
        Tensor tb = target.get(embedding ? "lora_embedding_B." + name : "lora_B." + name + ".weight");
        List<Source> sources = new ArrayList<>();
        for (int i = 0; i < adapters.size(); i++) {
            String n = adapters.get(i);
            Map<String, Tensor> p = layer.adapterParameters(n);
            if (p.isEmpty()) {
                continue;
            }
            double s = embedding ? ((LoraEmbedding) layer).scaling(n) : ((LoraLayer) layer).scaling(n);
            Tensor a = p.get(embedding ? "lora_embedding_A." + n : "lora_A." + n + ".weight");
            Tensor b = p.get(embedding ? "lora_embedding_B." + n : "lora_B." + n + ".weight");
            sources.add(new Source(a, b, s, weights.get(i)));
        }
        if (sources.isEmpty()) {
            return;
        }
        boolean transpose = embedding || ((LoraLayer) layer).fanInFanOut();
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                ta.zero_();
                tb.zero_();
                Tensor[] ab;
                if (type.equals("cat")) {
                    List<Tensor> as = new ArrayList<>();
                    List<Tensor> bs = new ArrayList<>();
                    for (Source src : sources) {
                        as.add(src.a().mul(new Scalar(src.weight() * src.scaling())));
                        bs.add(src.b());
                    }
                    ab = new Tensor[] {cat(as, 0), cat(bs, 1)};
                } else if (type.endsWith("svd")) {
                    ab = svd(sources, type, rank, clamp, density, majoritySign, transpose, masks);
                } else {
                    List<Tensor> as = new ArrayList<>();
                    List<Tensor> bs = new ArrayList<>();
                    double[] wa = new double[sources.size()];
                    double[] wb = new double[sources.size()];
                    for (int i = 0; i < sources.size(); i++) {
                        Source src = sources.get(i);
                        double ws = src.weight() * src.scaling();
                        wa[i] = Math.sqrt(Math.abs(ws)) * (ws >= 0 ? 1 : -1);
                        wb[i] = Math.sqrt(Math.abs(ws));
                        as.add(src.a());
                        bs.add(src.b());
                    }
                    ab = new Tensor[] {merge(type, as, wa, density, majoritySign, masks),
                        merge(type, bs, wb, density, majoritySign, masks)};
                }
                ta.narrow(0, 0, ab[0].size(0)).narrow(1, 0, ab[0].size(1)).copy_(ab[0]);
                tb.narrow(0, 0, ab[1].size(0)).narrow(1, 0, ab[1].size(1)).copy_(ab[1]);
            });
        }
    }

    private static Tensor[] svd(List<Source> sources, String type, int rank, Double clamp, Double density,
            String majoritySign, boolean transpose, DareMasks masks) {
        List<Tensor> deltas = new ArrayList<>();
        double[] w = new double[sources.size()];
        for (int i = 0; i < sources.size(); i++) {
            Source src = sources.get(i);
            // get_delta_weight: transpose(B·A, fan_in_fan_out) · scaling (an Embedding's is transposed)
            Tensor d = src.b().matmul(src.a()).mul(new Scalar(src.scaling()));
            deltas.add(transpose ? d.t() : d);
            w[i] = src.weight() * src.scaling();
        }
        String base = type.equals("svd") ? "linear" : type.substring(0, type.length() - "_svd".length());
        Tensor delta = merge(base, deltas, w, density, majoritySign, masks);
        if (transpose) {
            delta = delta.t();
        }
        T_TensorTensorTensor_T usv = torch.linalg_svd(delta); // full_matrices=True, as PEFT's default
        Tensor u = usv.get0();
        Tensor s = usv.get1();
        Tensor vh = usv.get2();
        long k = Math.min(rank, s.size(0));
        u = u.narrow(1, 0, Math.min(rank, u.size(1))).narrow(1, 0, k).mul(s.narrow(0, 0, k));
        vh = vh.narrow(0, 0, k);
        if (clamp != null) {
            Tensor dist = torch.cat(new TensorArrayRef(new TensorVector(u.flatten(), vh.flatten())), 0);
            double hi = torch.quantile(dist, clamp).item_double();
            org.bytedeco.pytorch.ScalarOptional lo = new org.bytedeco.pytorch.ScalarOptional(new Scalar(-hi));
            org.bytedeco.pytorch.ScalarOptional up = new org.bytedeco.pytorch.ScalarOptional(new Scalar(hi));
            u = u.clamp(lo, up);
            vh = vh.clamp(lo, up);
        }
        return new Tensor[] {vh, u};
    }

    /**
     * {@code merge_utils}: task arithmetic ({@code linear}), {@code ties}, {@code magnitude_prune},
     * {@code dare_linear} or {@code dare_ties} of stacked tensors.
     */
    private static Tensor merge(String type, List<Tensor> tensors, double[] weights, Double density,
            String majoritySign, DareMasks masks) {
        boolean magnitude = type.equals("ties") || type.equals("magnitude_prune");
        boolean random = type.startsWith("dare_");
        List<Tensor> parts = new ArrayList<>();
        for (Tensor t : tensors) {
            parts.add(magnitude ? magnitudePrune(t, density) : random ? randomPrune(t, density, masks) : t);
        }
        Tensor stacked = torch.stack(new TensorArrayRef(new TensorVector(parts.toArray(new Tensor[0]))), 0);
        long[] shape = new long[(int) stacked.dim()];
        java.util.Arrays.fill(shape, 1);
        shape[0] = weights.length;
        Tensor w = Tensor.create(weights, weights.length).to(stacked.scalar_type()).view(shape);
        Tensor weighted = stacked.mul(w);
        if (!type.equals("ties") && !type.equals("dare_ties")) { // linear, magnitude_prune, dare_linear, svd
            return weighted.sum(0);
        }
        Tensor sign = stacked.sign();
        Tensor total = "frequency".equals(majoritySign) ? sign.sum(0) : stacked.sum(0);
        Tensor majority = torch.where(total.ge(new Scalar(0.0)), new Scalar(1L), new Scalar(-1L));
        Tensor mask = sign.eq(majority);
        Tensor mixed = weighted.mul(mask).sum(0);
        Tensor kept = mask.sum(0);
        return mixed.div(kept.clamp_min(new Scalar(1.0)));
    }

    /** {@code random_pruning} with {@code rescale}: a Bernoulli({@code density}) mask, kept entries / density. */
    private static Tensor randomPrune(Tensor t, double density, DareMasks masks) {
        if (density >= 1) {
            return t;
        }
        Tensor mask = masks.draw(t, density);
        if (!java.util.Arrays.equals(mask.shape(), t.shape())) {
            throw new IllegalStateException("a DARE mask of shape " + java.util.Arrays.toString(mask.shape())
                    + " for a tensor of shape " + java.util.Arrays.toString(t.shape()));
        }
        return t.mul(mask).div(new Scalar(density));
    }

    /** {@code magnitude_based_pruning}: the {@code int(density·numel)} largest magnitudes kept, the rest zero. */
    private static Tensor magnitudePrune(Tensor t, double density) {
        if (density >= 1) {
            return t;
        }
        long k = (long) (density * t.numel());
        Tensor mask = torch.zeros_like(t).reshape(-1);
        Tensor idx = t.abs().reshape(-1).topk(k, -1, true, true).get1();
        mask.index_fill_(0, idx, new Scalar(1.0));
        return t.mul(mask.reshape(t.shape()));
    }

    private static Tensor cat(List<Tensor> parts, long dim) {
        return torch.cat(new TensorArrayRef(new TensorVector(parts.toArray(new Tensor[0]))), dim);
    }
}
