package dev.peft4j.tuners.adalora;

import dev.peft4j.tuners.Scoped;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.stream.IntStream;
import org.bytedeco.pytorch.Generator;
import org.bytedeco.pytorch.GeneratorOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * AdaLoRA's SVD-form layer math ({@code SVDLinear}, {@code tuners/adalora/layer.py}) as composed libtorch ops on plain
 * tensors: {@code ΔW = B·(A ⊙ E)·s / (ranknum + 1e-5)} with {@code A (r, in)}, {@code E (r, 1)} (scales row i of A),
 * {@code B (out, r)} and {@code ranknum} a {@code (1,)} tensor holding {@code float(r)} — after loading a pruned
 * checkpoint still {@code init_r}, not the kept rank.
 */
public final class AdaLoraMath {
    private AdaLoraMath() {}

    /** The tensors of one AdaLoRA adapter; {@code scaling} is {@link #scaling}, not divided by the rank. */
    public record Adapter(Tensor a, Tensor e, Tensor b, Tensor ranknum, double scaling, double dropout) {
        /**
         * Checks the tensors' shapes.
         * @throws NullPointerException if a tensor is null
         * @throws IllegalArgumentException if the shapes do not form one SVD triplet, or {@code dropout} is not in [0,
         *     1)
         */
        public Adapter {
            Objects.requireNonNull(a, "lora_A");
            Objects.requireNonNull(e, "lora_E");
            Objects.requireNonNull(b, "lora_B");
            Objects.requireNonNull(ranknum, "ranknum");
            long r = a.size(0);
            if (e.dim() != 2 || e.size(0) != r || e.size(1) != 1 || b.dim() != 2 || b.size(1) != r) {
                throw new IllegalArgumentException("AdaLoRA shapes disagree: lora_A " + Arrays.toString(a.shape())
                        + ", lora_E " + Arrays.toString(e.shape()) + ", lora_B " + Arrays.toString(b.shape())
                        + " (expected (r, in), (r, 1), (out, r))");
            }
            if (dropout < 0 || dropout >= 1) {
                throw new IllegalArgumentException("lora_dropout must be in [0, 1), got " + dropout);
            }
        }
    }

    /** AdaLoRA's scaling: {@code lora_alpha} if positive, else {@code float(r)}; the division by ranknum is separate. */
    public static double scaling(double loraAlpha, int r) {
        return loraAlpha > 0 ? loraAlpha : r;
    }

    /** A fresh {@code ranknum}: a {@code (1,)} tensor holding {@code float(r)} in {@code dtype}. */
    public static Tensor ranknum(int r, ScalarType dtype) {
        return Scoped.compute(() -> Tensor.create(new float[] {r}, 1).to(dtype));
    }

    /**
     * AdaLoRA's init: {@code init_lora_weights} truthy → {@code E} zeros (the adapter is an exact no-op), {@code A}
     * and {@code B} ~ N(0, 0.02²); falsy → all three standard normal.
     */
    public static void init(Tensor a, Tensor e, Tensor b, boolean initLoraWeights, Generator generator) {
        Objects.requireNonNull(generator, "generator");
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                GeneratorOptional gen = new GeneratorOptional(generator);
                double std = initLoraWeights ? 0.02 : 1.0;
                if (initLoraWeights) {
                    e.zero_();
                } else {
                    e.normal_(0.0, 1.0, gen);
                }
                a.normal_(0.0, std, gen);
                b.normal_(0.0, std, gen);
            });
        }
    }

    /**
     * One adapter's term: {@code ((dropout(x)·(A⊙E)ᵀ)·Bᵀ)·s / (ranknum + 1e-5)}, {@code x} cast to A's dtype; the
     * {@code + 1e-5} is computed in ranknum's dtype.
     */
    public static Tensor delta(Tensor x, Adapter adapter, boolean training) {
        return Scoped.compute(() -> term(x, adapter, training));
    }

    private static Tensor term(Tensor x, Adapter ad, boolean training) {
        ScalarType dt = ad.a.scalar_type().intern();
        Tensor in = x.scalar_type().intern() == dt ? x : x.to(dt);
        if (ad.dropout > 0 && training) {
            in = torch.dropout(in, ad.dropout, true);
        }
        Tensor ae = ad.a.mul(ad.e);
        return in.matmul(ae.t()).matmul(ad.b.t()).mul(new Scalar(ad.scaling)).div(ad.ranknum.add(new Scalar(1e-5)));
    }

    /**
     * {@code SVDLinear.forward}: starting from a copy of the base output, each active adapter's term is added
     * <em>in place</em>, so the result keeps the base output's dtype and is rounded after every adapter (unlike
     * LoRA's out-of-place sum).
     */
    public static Tensor forward(Tensor baseOutput, Tensor x, List<Adapter> active, boolean training) {
        return Scoped.compute(() -> {
            Tensor result = baseOutput.clone();
            Tensor input = x;
            for (Adapter ad : active) {
                ScalarType dt = ad.a.scalar_type().intern();
                input = input.scalar_type().intern() == dt ? input : input.to(dt); // x stays cast
                result.add_(term(input, ad, training));
            }
            return result;
        });
    }

    /** {@code get_delta_weight}: {@code transpose(B·(A⊙E), fan_in_fan_out)·s / (ranknum + 1e-5)}. */
    public static Tensor deltaWeight(Adapter adapter, boolean fanInFanOut) {
        return Scoped.compute(() -> {
            Tensor d = adapter.b.matmul(adapter.a.mul(adapter.e));
            return (fanInFanOut ? d.t() : d).mul(new Scalar(adapter.scaling))
                    .div(adapter.ranknum.add(new Scalar(1e-5))).contiguous();
        });
    }

    /**
     * Merges in place: {@code W += ΔW} (no dtype cast of the delta); a safe merge computes {@code W + ΔW} aside and
     * checks it for non-finite values first.
     */
    public static void merge(Tensor weight, Adapter adapter, boolean fanInFanOut, boolean safeMerge,
            String adapterName) {
        checkWeight(weight, adapter, fanInFanOut);
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                Tensor delta = deltaWeight(adapter, fanInFanOut);
                if (safeMerge) {
                    Tensor merged = weight.clone().add_(delta);
                    if (!torch.isfinite(merged).all().item_bool()) {
                        throw new IllegalArgumentException("NaNs detected in the merged weights. The adapter "
                                + adapterName + " seems to be broken");
                    }
                    weight.copy_(merged);
                } else {
                    weight.add_(delta);
                }
            });
        }
    }

    /** Undoes {@link #merge}: {@code W -= ΔW}. */
    public static void unmerge(Tensor weight, Adapter adapter, boolean fanInFanOut) {
        checkWeight(weight, adapter, fanInFanOut);
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> weight.sub_(deltaWeight(adapter, fanInFanOut)));
        }
    }

    /**
     * The orthogonal regulariser AdaLoRA adds to the training loss ({@code AdaLoraModel.forward}, §6.9): over the
     * parameters whose name contains {@code lora_A} or {@code lora_B} and the adapter name (PEFT's substring tests),
     * in the map's order, the mean of {@code ‖P·Pᵀ − I‖_F} (A) and {@code ‖Pᵀ·P − I‖_F} (B); 0 when there is none.
     * Empty (rank 0) parameters are skipped. Differentiable; the caller adds {@code orth_reg_weight ×} this to the
     * loss.
     *
     * @param namedParameters name → parameter, in {@code named_parameters()} order
     */
    public static Tensor orthogonalRegularization(Map<String, Tensor> namedParameters, String adapterName) {
        return Scoped.compute(() -> {
            Tensor sum = null;
            int count = 0;
            for (Map.Entry<String, Tensor> e : namedParameters.entrySet()) {
                String n = e.getKey();
                Tensor p = e.getValue();
                if (!((n.contains("lora_A") || n.contains("lora_B")) && n.contains(adapterName)) || p.numel() == 0) {
                    continue;
                }
                Tensor cov = n.contains("lora_A") ? p.matmul(p.t()) : p.t().matmul(p);
                Tensor eye = torch.eye(cov.size(0)).to(cov.scalar_type());
                Tensor norm = cov.sub(eye).norm();
                sum = sum == null ? norm : sum.add(norm);
                count++;
            }
            return sum == null ? torch.scalar_tensor(new Scalar(0.0)) : sum.div(new Scalar((double) count));
        });
    }

    /** AdaLoRA's three tensors of one adapter, {@code A (k, in)}, {@code E (k, 1)}, {@code B (out, k)}. */
    public record Triplet(Tensor a, Tensor e, Tensor b) {}

    /**
     * Keeps the rank slots a {@code rank_pattern} entry marks {@code true} ({@code resize_state_dict_by_rank_pattern}
     * on save, and the copy into the resized module on load): rows of {@code A} and {@code E}, columns of
     * {@code B} — each left as is (same storage) when it already has {@code k = count(true)} slots (an already-sliced checkpoint).
     * {@code k = 0} gives empty tensors. {@code ranknum} is not touched: a pruned module keeps the scale
     * {@code alpha / (init_r + 1e-5)}.
     *
     * @throws IllegalArgumentException if a tensor still to be sliced does not have one slot per mask entry
     */
    public static Triplet sliceByRankPattern(Tensor a, Tensor e, Tensor b, boolean[] kept) {
        long[] idx = IntStream.range(0, kept.length).filter(i -> kept[i]).asLongStream().toArray();
        return new Triplet(select(a, 0, idx, kept.length, "lora_A"), select(e, 0, idx, kept.length, "lora_E"),
                select(b, 1, idx, kept.length, "lora_B"));
    }

    private static Tensor select(Tensor t, long dim, long[] idx, int maskLength, String name) {
        return Scoped.compute(() -> {
            if (t.size(dim) == idx.length) {
                return t.alias();
            }
            if (t.size(dim) != maskLength) {
                throw new IllegalArgumentException(name + " has " + t.size(dim) + " rank slots in dim " + dim
                        + " but the rank_pattern mask has " + maskLength + " entries");
            }
            return t.index_select(dim, Tensor.create(idx, idx.length));
        });
    }

    private static void checkWeight(Tensor weight, Adapter ad, boolean fanInFanOut) {
        long in = ad.a.size(1);
        long out = ad.b.size(0);
        long d0 = fanInFanOut ? in : out;
        long d1 = fanInFanOut ? out : in;
        if (weight.dim() != 2 || weight.size(0) != d0 || weight.size(1) != d1) {
            throw new IllegalArgumentException("weight has shape " + Arrays.toString(weight.shape())
                    + ", the AdaLoRA adapter needs [" + d0 + ", " + d1 + "]" + (fanInFanOut ? " (fan_in_fan_out)" : ""));
        }
    }
}
