package dev.peft4j.tuners.ia3;

import dev.peft4j.tuners.Scoped;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import org.bytedeco.pytorch.Generator;
import org.bytedeco.pytorch.GeneratorOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * IA³'s forward and merge math for Linear and transformers-{@code Conv1D} targets ({@code tuners/ia3/layer.py}) as
 * composed libtorch ops on plain tensors.
 *
 * <p>The learned vector {@code ia3_l} is {@code (out, 1)} for an output-scaling layer and {@code (1, in)} for a
 * feed-forward (input-scaling) one, whatever the base layout; the base weight is {@code (out, in)}, or
 * {@code (in, out)} with {@code fan_in_fan_out} (Conv1D). Several active adapters <em>multiply</em>.
 */
public final class Ia3Math {
    private Ia3Math() {}

    /** Shape of {@code ia3_l}: {@code (1, in)} for feed-forward layers, else {@code (out, 1)}. */
    public static long[] vectorShape(long inFeatures, long outFeatures, boolean feedForward) {
        return feedForward ? new long[] {1, inFeatures} : new long[] {outFeatures, 1};
    }

    /**
     * {@code init_ia3_weights}: {@code true} fills ones (the adapter is the identity), {@code false} standard normal
     * values drawn from {@code generator}.
     */
    public static void init(Tensor ia3L, boolean initIa3Weights, Generator generator) {
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                if (initIa3Weights) {
                    ia3L.fill_(new Scalar(1.0));
                } else {
                    ia3L.normal_(0.0, 1.0, new GeneratorOptional(Objects.requireNonNull(generator, "generator")));
                }
            });
        }
    }

    /**
     * An adapted layer's forward ({@code Linear.forward}, unmerged): the product of the active vectors (flattened)
     * scales the input — computed in the vectors' dtype, then cast back to the input's — for a feed-forward layer,
     * or else the base output (bias included), cast back to the base output's dtype. With no active vector the base
     * output is returned.
     *
     * @param bias the base layer's bias or null
     * @param active the active adapters' {@code ia3_l} present in the layer, in active-list order
     */
    public static Tensor forward(Tensor x, Tensor weight, Tensor bias, List<Tensor> active, boolean feedForward,
            boolean fanInFanOut) {
        return Scoped.compute(() -> {
            Tensor scaling = null;
            for (Tensor l : active) {
                checkVector(l, weight, feedForward, fanInFanOut);
                scaling = scaling == null ? l.flatten() : scaling.mul(l.flatten());
            }
            if (scaling == null) {
                return base(x, weight, bias, fanInFanOut);
            }
            if (feedForward) {
                ScalarType inType = x.scalar_type().intern();
                Tensor scaled = x.to(scaling.scalar_type()).mul(scaling).to(inType);
                return base(scaled, weight, bias, fanInFanOut);
            }
            Tensor result = base(x, weight, bias, fanInFanOut);
            return result.mul(scaling).to(result.scalar_type());
        });
    }

    /**
     * The base layer: {@code x·Wᵀ + b} ({@code nn.Linear}) or {@code x·W + b} (transformers {@code Conv1D}).
     */
    public static Tensor base(Tensor x, Tensor weight, Tensor bias, boolean fanInFanOut) {
        return Scoped.compute(() -> {
            if (fanInFanOut) {
                Tensor out = x.matmul(weight);
                return bias == null ? out : out.add(bias);
            }
            return bias == null ? torch.linear(x, weight) : torch.linear(x, weight, new TensorOptional(bias));
        });
    }

    /**
     * Merges one adapter in place ({@code Linear.merge}): {@code W ← (W ⊙ transpose(l, fan_in_fan_out)).to(W.dtype)}
     * — rows (outputs) for an {@code (out, 1)} vector, columns (inputs) for {@code (1, in)} — and, for an
     * output-scaling layer with a bias, {@code b ← (b ⊙ l).to(b.dtype)}. A safe merge checks the new weight for
     * non-finite values before writing it.
     *
     * @throws IllegalArgumentException (safe merge) "NaNs detected in the merged weights. The adapter {name} seems to
     *     be broken"
     */
    public static void merge(Tensor weight, Tensor bias, Tensor ia3L, boolean feedForward, boolean fanInFanOut,
            boolean safeMerge, String adapterName) {
        checkVector(ia3L, weight, feedForward, fanInFanOut);
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                Tensor l = fanInFanOut ? ia3L.t() : ia3L;
                Tensor product = weight.mul(l);
                // PEFT checks the product before casting it back to W's dtype
                if (safeMerge && !torch.isfinite(product).all().item_bool()) {
                    throw new IllegalArgumentException(
                            "NaNs detected in the merged weights. The adapter " + adapterName + " seems to be broken");
                }
                weight.copy_(product.to(weight.scalar_type()));
                if (!feedForward && bias != null) {
                    bias.copy_(bias.mul(ia3L.reshape(bias.shape())).to(bias.scalar_type()));
                }
            });
        }
    }

    /**
     * Undoes {@link #merge} in place by dividing by {@code l + 1e-8} (PEFT warns the result can be inaccurate; a
     * zero entry cannot be undone).
     */
    public static void unmerge(Tensor weight, Tensor bias, Tensor ia3L, boolean feedForward, boolean fanInFanOut) {
        checkVector(ia3L, weight, feedForward, fanInFanOut);
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                Tensor l = (fanInFanOut ? ia3L.t() : ia3L).add(new Scalar(1e-8));
                weight.copy_(weight.div(l).to(weight.scalar_type()));
                if (!feedForward && bias != null) {
                    Tensor lb = ia3L.reshape(bias.shape()).add(new Scalar(1e-8));
                    bias.copy_(bias.div(lb).to(bias.scalar_type()));
                }
            });
        }
    }

    private static void checkVector(Tensor l, Tensor weight, boolean feedForward, boolean fanInFanOut) {
        if (weight.dim() != 2) {
            throw new IllegalArgumentException("weight has shape " + Arrays.toString(weight.shape())
                    + ", IA3 needs a 2-d Linear/Conv1D weight");
        }
        long out = fanInFanOut ? weight.size(1) : weight.size(0);
        long in = fanInFanOut ? weight.size(0) : weight.size(1);
        long[] want = vectorShape(in, out, feedForward);
        if (!Arrays.equals(l.shape(), want)) {
            throw new IllegalArgumentException("ia3_l has shape " + Arrays.toString(l.shape()) + ", a "
                    + (feedForward ? "feed-forward" : "non-feed-forward") + " layer with weight "
                    + Arrays.toString(weight.shape()) + (fanInFanOut ? " (fan_in_fan_out)" : "") + " needs "
                    + Arrays.toString(want));
        }
    }
}
