package dev.peft4j.tuners.lora;

import dev.peft4j.tuners.Scoped;
import java.util.List;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarOptional;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * DoRA's math ({@code tuners/lora/dora.py} and the DoRA variants of {@code variants.py}) as composed libtorch ops:
 * the autograd path, and the reference the fused path is tested against.
 *
 * <p>The magnitude {@code m} has one entry per output feature ({@code embedding_dim} for an Embedding). The
 * weight norm {@code ‖W + s·B·A‖} is taken per output feature over the input features (for Conv1D,
 * {@code fan_in_fan_out}, after transposing its {@code (in, out)} weight; for an Embedding over the vocabulary) and
 * is always detached: gradients reach {@code m}, A and B through the rest of the formula only (DoRA paper §4.3).
 * The Linear forward adds {@code (f − 1)·(base − bias) + f·s·B·A·x} with {@code f = m / ‖…‖}, i.e.
 * {@code y = f ⊙ (W·x + s·B·A·x) + bias}.
 */
final class DoraMath {
    private DoraMath() {}

    /**
     * {@code ‖transpose(W, fan_in_fan_out) + s·B·A‖₂} over dim 1: shape {@code (out,)}, detached, in the sum's
     * dtype ({@code get_weight_norm}). For an Embedding pass {@code W (num, dim)} with {@code fanInFanOut = true},
     * {@code a = lora_embedding_A (r, num)} and {@code b = lora_embedding_B (dim, r)}.
     */
    static Tensor weightNorm(Tensor w, Tensor a, Tensor b, double scaling, boolean fanInFanOut) {
        try (NoGradGuard g = new NoGradGuard()) {
            return Scoped.compute(() -> {
                Tensor lora = b.matmul(a);
                Tensor wt = fanInFanOut ? w.t() : w;
                Tensor sum = wt.add(lora.mul(new Scalar(scaling)));
                return norm(sum).to(sum.scalar_type());
            });
        }
    }

    private static Tensor norm(Tensor t) {
        return torch.linalg_norm(t, new ScalarOptional(new Scalar(2.0)), new long[] {1L}, false,
                new ScalarTypeOptional());
    }

    /** {@code m / ‖W + s·B·A‖}: the per-output-feature factor {@code f}, detached from the norm only. */
    static Tensor factor(Tensor magnitude, Tensor w, Tensor a, Tensor b, double scaling, boolean fanInFanOut) {
        return Scoped.compute(() -> magnitude.div(weightNorm(w, a, b, scaling, fanInFanOut)));
    }

    /**
     * A DoRA adapter's step of {@code Linear.forward} ({@code DoraLinearVariant.forward}): from the running
     * {@code result} (which holds the base output, bias included, and the adapters before this one), returns
     * {@code result + (f − 1)·base + f·s·B·A·x'}. Without dropout (or in eval mode) {@code base} is {@code result}
     * minus the base bias and {@code x'} is x; with dropout in training {@code x'} is dropout(x) and {@code base} is
     * {@code x'·transpose(W, fif)ᵀ}, as PEFT recomputes it.
     */
    static Tensor linearStep(Tensor result, Tensor x, LoraMath.Adapter ad, Tensor magnitude, Tensor w, Tensor bias,
            boolean fanInFanOut, boolean training) {
        return Scoped.compute(() -> {
            ScalarType xt = x.scalar_type().intern();
            Tensor wx = LoraMath.castTo(w, xt);
            Tensor f = magnitude.div(weightNorm(wx, ad.a(), ad.b(), ad.scaling(), fanInFanOut)).view(1, -1);
            boolean drop = ad.dropout() > 0 && training;
            Tensor in = drop ? torch.dropout(x, ad.dropout(), true) : x;
            Tensor loraResult = torch.linear(torch.linear(in, ad.a()), ad.b());
            Tensor base;
            if (drop) {
                base = torch.linear(in, fanInFanOut ? wx.t() : wx);
            } else {
                base = bias == null ? result : result.sub(bias);
            }
            Tensor term = f.sub(new Scalar(1.0)).mul(base).add(f.mul(loraResult).mul(new Scalar(ad.scaling())));
            return result.add(term);
        });
    }

    /**
     * {@code Linear.forward} with DoRA among the active adapters: starting from the base output, each active
     * adapter in order (x cast to its A's dtype) adds its plain LoRA term, or takes its DoRA step when
     * {@code magnitudes} has an entry for it; the sum is cast back to the base output's dtype.
     *
     * @param magnitudes per adapter of {@code active}, its magnitude vector or null for a plain LoRA adapter
     */
    static Tensor forward(Tensor baseOutput, Tensor x, List<LoraMath.Adapter> active, List<Tensor> magnitudes,
            Tensor w, Tensor bias, boolean fanInFanOut, boolean training) {
        return Scoped.compute(() -> {
            ScalarType outType = baseOutput.scalar_type().intern();
            Tensor result = baseOutput;
            Tensor input = x;
            for (int i = 0; i < active.size(); i++) {
                LoraMath.Adapter ad = active.get(i);
                input = LoraMath.castTo(input, ad.a().scalar_type());
                Tensor m = magnitudes.get(i);
                if (m == null) {
                    result = result.add(LoraMath.delta(input, ad, training));
                } else {
                    result = linearStep(result, input, ad, m, w, bias, fanInFanOut, training);
                }
            }
            return result.to(outType);
        });
    }

    /**
     * A DoRA Embedding adapter's step ({@code DoraEmbeddingVariant.forward}): {@code f·result + f·s·emb(ids, Aᵀ)·Bᵀ}
     * with {@code f = m / ‖Wᵀ + s·B·A‖} over the vocabulary (one entry per embedding dimension).
     */
    static Tensor embeddingStep(Tensor result, Tensor ids, Tensor embA, Tensor embB, double scaling, Tensor magnitude,
            Tensor w) {
        return Scoped.compute(() -> {
            Tensor f = magnitude.div(weightNorm(w, embA, embB, scaling, true));
            Tensor afterA = torch.embedding(embA.t(), ids, -1, false, false);
            Tensor dora = f.mul(afterA.matmul(embB.t())).mul(new Scalar(scaling));
            return f.mul(result).add(dora);
        });
    }

    /**
     * Merges a DoRA adapter into a Linear / Conv1D weight in place ({@code DoraLinearVariant.merge_*}):
     * {@code W ← f ⊙ (W + ΔW)} with {@code ΔW = transpose(B·A, fif)·s} and {@code f} broadcast over the output
     * features (rows, or columns for Conv1D). Returns the weight norm taken on the unmerged weight, which
     * {@link #unmergeLinear} needs (the merged weight no longer gives it).
     *
     * @throws IllegalArgumentException (safe merge) non-finite merged weights, with PEFT's message; W unchanged
     */
    static Tensor mergeLinear(Tensor weight, LoraMath.Adapter ad, Tensor magnitude, boolean fanInFanOut,
            boolean safeMerge, String adapterName) {
        try (NoGradGuard g = new NoGradGuard()) {
            return Scoped.compute(() -> {
                Tensor delta = LoraMath.deltaWeight(ad.a(), ad.b(), ad.scaling(), fanInFanOut);
                Tensor norm = weightNormOfSum(weight, delta, fanInFanOut);
                Tensor f = magnitude.div(norm).view(-1, 1);
                Tensor factor = fanInFanOut ? f.t() : f;
                Tensor merged = factor.mul(weight.add(delta)).to(weight.scalar_type());
                if (safeMerge) {
                    LoraMath.checkFinite(merged, adapterName);
                }
                weight.copy_(merged);
                return norm;
            });
        }
    }

    /** {@code ‖transpose(W, fif) + transpose(ΔW, fif)‖} over dim 1, detached: the merge's norm (scaling 1). */
    private static Tensor weightNormOfSum(Tensor weight, Tensor delta, boolean fanInFanOut) {
        Tensor sum = fanInFanOut ? weight.t().add(delta.t()) : weight.add(delta);
        return norm(sum).to(sum.scalar_type());
    }

    /** Undoes {@link #mergeLinear}: {@code W ← W / f − ΔW} with the norm the merge returned. */
    static void unmergeLinear(Tensor weight, LoraMath.Adapter ad, Tensor magnitude, Tensor norm, boolean fanInFanOut) {
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                Tensor delta = LoraMath.deltaWeight(ad.a(), ad.b(), ad.scaling(), fanInFanOut);
                Tensor f = magnitude.div(norm).view(-1, 1);
                Tensor factor = fanInFanOut ? f.t() : f;
                weight.copy_(weight.div(factor).sub(delta).to(weight.scalar_type()));
            });
        }
    }

    /**
     * Merges a DoRA Embedding adapter in place ({@code DoraEmbeddingVariant.merge_*}): {@code W ← f ⊙ (W + ΔW)},
     * {@code f} over the columns (embedding dimensions); returns the norm for {@link #unmergeEmbedding}.
     */
    static Tensor mergeEmbedding(Tensor weight, Tensor embA, Tensor embB, double scaling, Tensor magnitude,
            boolean safeMerge, String adapterName) {
        try (NoGradGuard g = new NoGradGuard()) {
            return Scoped.compute(() -> {
                Tensor delta = LoraMath.embeddingDeltaWeight(embA, embB, scaling);
                Tensor norm = weightNormOfSum(weight, delta, true);
                Tensor f = magnitude.div(norm).view(1, -1);
                Tensor merged = f.mul(weight.add(delta)).to(weight.scalar_type());
                if (safeMerge) {
                    LoraMath.checkFinite(merged, adapterName);
                }
                weight.copy_(merged);
                return norm;
            });
        }
    }

    /** Undoes {@link #mergeEmbedding}: {@code W ← W / f − ΔW}. */
    static void unmergeEmbedding(Tensor weight, Tensor embA, Tensor embB, double scaling, Tensor magnitude,
            Tensor norm) {
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                Tensor delta = LoraMath.embeddingDeltaWeight(embA, embB, scaling);
                Tensor f = magnitude.div(norm).view(1, -1);
                weight.copy_(weight.div(f).sub(delta).to(weight.scalar_type()));
            });
        }
    }
}
