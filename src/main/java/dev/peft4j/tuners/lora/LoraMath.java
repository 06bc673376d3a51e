package dev.peft4j.tuners.lora;

import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.Scoped;
import java.util.Arrays;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.stream.IntStream;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * LoRA's forward and merge math ({@code tuners/lora/layer.py}) as composed libtorch ops on plain tensors: the
 * autograd path, and the reference the fused kernels are tested against.
 *
 * <p>Layouts are PEFT's: base weight {@code W (out, in)} ({@code (in, out)} for transformers' {@code Conv1D}, i.e.
 * {@code fan_in_fan_out}), {@code A (r, in)}, {@code B (out, r)}; Embedding {@code lora_embedding_A (r, num_embeddings)},
 * {@code lora_embedding_B (embedding_dim, r)}. Results are new tensors (in the caller's {@code PointerScope} if
 * there is one); {@code merge}/{@code unmerge} update the base weight in place, outside autograd.
 */
public final class LoraMath {
    private LoraMath() {}

    /**
     * One adapter of a layer.
     *
     * @param a {@code lora_A} weight {@code (r, in)}
     * @param b {@code lora_B} weight {@code (out, r)}
     * @param bBias {@code lora_B} bias {@code (out,)} when {@code lora_bias=True}, else null
     * @param scaling {@code s}, see {@link #scaling}
     * @param dropout {@code lora_dropout} probability (applied to the input in training mode only)
     */
    public record Adapter(Tensor a, Tensor b, Tensor bBias, double scaling, double dropout) {
        /**
         * Checks the adapter.
         * @throws NullPointerException if {@code a} or {@code b} is null
         * @throws IllegalArgumentException if {@code dropout} is not in [0, 1)
         */
        public Adapter {
            Objects.requireNonNull(a, "lora_A");
            Objects.requireNonNull(b, "lora_B");
            if (dropout < 0 || dropout >= 1) {
                throw new IllegalArgumentException("lora_dropout must be in [0, 1), got " + dropout);
            }
        }

        /** An adapter without {@code lora_B} bias and without dropout. */
        public Adapter(Tensor a, Tensor b, double scaling) {
            this(a, b, null, scaling, 0.0);
        }
    }

    /**
     * PEFT's scaling: {@code lora_alpha / r}, or {@code lora_alpha / sqrt(r)} with {@code use_rslora}, in double.
     *
     * @throws IllegalArgumentException for {@code r <= 0}, with PEFT's message
     */
    public static double scaling(double loraAlpha, int r, boolean useRslora) {
        if (r <= 0) {
            throw new IllegalArgumentException("`r` should be a positive integer value but the value passed is " + r);
        }
        return useRslora ? loraAlpha / Math.sqrt(r) : loraAlpha / r;
    }

    /**
     * The LoRA term of one adapter for a Linear or Conv1D target: {@code ((dropout(x)·Aᵀ)·Bᵀ + b_B)·s}, with
     * {@code x} cast to A's dtype first (the result has the adapter's dtype). Conv1D targets use the same A/B
     * layout, so this is also their forward term; only merging transposes.
     *
     * @param training whether dropout is active (PEFT's module training mode)
     */
    public static Tensor delta(Tensor x, Adapter adapter, boolean training) {
        return Scoped.compute(() -> loraTerm(castTo(x, adapter.a.scalar_type()), adapter, training));
    }

    /** {@code ((x·Aᵀ)·Bᵀ)·s}: {@link #delta(Tensor, Adapter, boolean)} without bias or dropout. */
    public static Tensor delta(Tensor x, Tensor a, Tensor b, double scaling) {
        return delta(x, new Adapter(a, b, scaling), false);
    }

    /**
     * A LoRA Linear/Conv1D layer's forward when unmerged ({@code Linear.forward}, PEFT 0.9+): starting from the base
     * layer's output, for each active adapter in order cast {@code x} to its A's dtype (x stays cast for the next
     * adapters) and add its term out of place (a wider adapter dtype widens the sum); the sum is cast back to the
     * base output's dtype at the end. Several adapters are summed.
     *
     * @param baseOutput {@code base_layer(x)}
     * @param active the active adapters present in the layer, in active-list order
     */
    public static Tensor forward(Tensor baseOutput, Tensor x, List<Adapter> active, boolean training) {
        return Scoped.compute(() -> {
            ScalarType outType = baseOutput.scalar_type().intern();
            Tensor result = baseOutput;
            Tensor input = x;
            for (Adapter ad : active) {
                input = castTo(input, ad.a.scalar_type());
                result = result.add(loraTerm(input, ad, training));
            }
            return result.to(outType); // always a new tensor object, even with no adapters
        });
    }

    /** The per-sample adapter name that means "no adapter" in a mixed batch. */
    public static final String BASE_ADAPTER_NAME = BaseTunerLayer.BASE_ADAPTER_NAME;

    /**
     * A mixed-batch forward ({@code Linear._mixed_batch_forward}, §6.6): sample {@code i} (dim 0) gets the adapter
     * named {@code adapterNames.get(i)}, or none for {@value #BASE_ADAPTER_NAME} or a name the layer does not hold.
     * Each sub-batch's term is cast to the base output's dtype <em>before</em> it is added (unlike
     * {@link #forward}, which sums at the adapter's precision). The caller refuses merged layers, as PEFT does.
     *
     * @param adapters the layer's adapters by name
     * @throws IllegalArgumentException when the names do not cover the batch, with PEFT's message
     */
    public static Tensor mixedBatchForward(Tensor baseOutput, Tensor x, List<String> adapterNames,
            Map<String, Adapter> adapters, boolean training) {
        if (adapterNames.size() != x.size(0)) {
            throw new IllegalArgumentException("Length of `adapter_names` should be the same as the number of inputs, "
                    + "but got " + adapterNames.size() + " and " + x.size(0) + " respectively.");
        }
        return Scoped.compute(() -> {
            ScalarType outType = baseOutput.scalar_type().intern();
            Tensor result = baseOutput.clone();
            for (String name : new LinkedHashSet<>(adapterNames)) {
                Adapter ad = adapters.get(name);
                if (BASE_ADAPTER_NAME.equals(name) || ad == null) {
                    continue;
                }
                long[] rows = IntStream.range(0, adapterNames.size())
                        .filter(i -> adapterNames.get(i).equals(name)).asLongStream().toArray();
                Tensor idx = Tensor.create(rows, rows.length).to(x.device(), ScalarType.Long);
                Tensor sub = castTo(dev.peft4j.nn.DeviceOps.indexSelect(x, 0, idx), ad.a.scalar_type());
                Tensor term = loraTerm(sub, ad, training).to(outType);
                result.index_copy_(0, idx, dev.peft4j.nn.DeviceOps.indexSelect(result, 0, idx).add(term));
            }
            return result;
        });
    }

    private static Tensor loraTerm(Tensor x, Adapter ad, boolean training) {
        Tensor in = ad.dropout > 0 && training ? torch.dropout(x, ad.dropout, true) : x;
        Tensor h = torch.linear(in, ad.a);
        Tensor out = ad.bBias == null ? torch.linear(h, ad.b) : torch.linear(h, ad.b, new TensorOptional(ad.bBias));
        return out.mul(new Scalar(ad.scaling));
    }

    /**
     * The weight delta of an adapter ({@code get_delta_weight}): {@code transpose(B·A, fan_in_fan_out)·s}, shaped like
     * the base weight. For fp16/bf16 adapters on the CPU, {@code B·A} and the scaling are computed in fp32 and the
     * result is cast back to the adapter dtype, as PEFT does.
     */
    public static Tensor deltaWeight(Tensor a, Tensor b, double scaling, boolean fanInFanOut) {
        return Scoped.compute(() -> {
            ScalarType dt = b.scalar_type().intern();
            boolean upcast = b.is_cpu() && (dt == ScalarType.Half || dt == ScalarType.BFloat16);
            Tensor wa = upcast ? a.to(ScalarType.Float) : a;
            Tensor wb = upcast ? b.to(ScalarType.Float) : b;
            Tensor ba = wb.matmul(wa);
            Tensor out = (fanInFanOut ? ba.t() : ba).mul(new Scalar(scaling));
            return upcast ? out.to(dt) : out.contiguous();
        });
    }

    /**
     * Merges the adapter into the base weight in place ({@code Linear.merge}). Unsafe: {@code W += ΔW} (a wider
     * delta is added at its precision and rounded once into W's dtype). Safe: {@code W + ΔW.to(W.dtype)} is computed
     * aside and checked for non-finite values first. With {@code lora_bias}, {@code b += b_B·s}.
     *
     * @param baseBias the base layer's bias, or null
     * @throws IllegalArgumentException (safe merge) "NaNs detected in the merged weights. The adapter {name} seems to
     *     be broken"
     * @throws IllegalStateException {@code lora_bias} without a base bias
     */
    public static void merge(Tensor weight, Tensor baseBias, Adapter adapter, boolean fanInFanOut, boolean safeMerge,
            String adapterName) {
        checkWeightShape(weight, adapter, fanInFanOut);
        if (adapter.bBias != null && baseBias == null) {
            throw new IllegalStateException(
                    "Impossible to merge LoRA with `lora_bias=True` because the base layer has no bias.");
        }
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                Tensor delta = deltaWeight(adapter.a, adapter.b, adapter.scaling, fanInFanOut);
                Tensor biasDelta = adapter.bBias == null ? null : adapter.bBias.mul(new Scalar(adapter.scaling));
                if (safeMerge) {
                    Tensor merged = weight.clone().add_(delta.to(weight.scalar_type()));
                    checkFinite(merged, adapterName);
                    Tensor mergedBias = null;
                    if (biasDelta != null) {
                        mergedBias = baseBias.add(biasDelta);
                        checkFinite(mergedBias, adapterName);
                    }
                    weight.copy_(merged);
                    if (mergedBias != null) {
                        baseBias.copy_(mergedBias);
                    }
                } else {
                    weight.add_(delta);
                    if (biasDelta != null) {
                        baseBias.add_(biasDelta);
                    }
                }
            });
        }
    }

    /** Undoes {@link #merge} in place: {@code W -= ΔW.to(W.dtype)} (and {@code b -= b_B·s}). */
    public static void unmerge(Tensor weight, Tensor baseBias, Adapter adapter, boolean fanInFanOut) {
        checkWeightShape(weight, adapter, fanInFanOut);
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                weight.sub_(deltaWeight(adapter.a, adapter.b, adapter.scaling, fanInFanOut).to(weight.scalar_type()));
                if (adapter.bBias != null && baseBias != null) {
                    baseBias.sub_(adapter.bBias.mul(new Scalar(adapter.scaling)));
                }
            });
        }
    }

    /**
     * The LoRA term of an Embedding target ({@code Embedding.forward}, no input casting, no dropout):
     * {@code embedding(ids, Aᵀ)·Bᵀ·s}, times the base layer's {@code embed_scale} when it has one.
     *
     * @param paddingIdx the base layer's {@code padding_idx} (-1 for none; it only affects gradients)
     * @param embedScale the base layer's scalar {@code embed_scale} (Gemma-3 style), or null
     */
    public static Tensor embeddingDelta(Tensor ids, Tensor embA, Tensor embB, double scaling, long paddingIdx,
            Double embedScale) {
        return Scoped.compute(() -> {
            Tensor afterA = torch.embedding(embA.t(), ids, paddingIdx, false, false);
            Tensor added = afterA.matmul(embB.t()).mul(new Scalar(scaling));
            return embedScale == null ? added : added.mul(new Scalar(embedScale));
        });
    }

    /**
     * An adapted Embedding's forward: the base output plus each active adapter's term (out of place), cast back to
     * the base output's dtype.
     *
     * @param active pairs of {@code (lora_embedding_A, lora_embedding_B)} with their scaling, as {@link Adapter}s
     *     ({@code a} = {@code lora_embedding_A}, {@code b} = {@code lora_embedding_B}; bias and dropout unused)
     */
    public static Tensor embeddingForward(Tensor baseOutput, Tensor ids, List<Adapter> active, long paddingIdx,
            Double embedScale) {
        return Scoped.compute(() -> {
            ScalarType outType = baseOutput.scalar_type().intern();
            Tensor result = baseOutput;
            for (Adapter ad : active) {
                result = result.add(embeddingDelta(ids, ad.a, ad.b, ad.scaling, paddingIdx, embedScale));
            }
            return result.to(outType);
        });
    }

    /** An Embedding adapter's weight delta {@code (B·A)ᵀ·s}, shaped {@code (num_embeddings, embedding_dim)}. */
    public static Tensor embeddingDeltaWeight(Tensor embA, Tensor embB, double scaling) {
        return deltaWeight(embA, embB, scaling, true);
    }

    /**
     * Merges an Embedding adapter in place; the delta is cast to W's dtype first on both paths (PEFT's
     * {@code Embedding.merge}).
     */
    public static void mergeEmbedding(Tensor weight, Tensor embA, Tensor embB, double scaling, boolean safeMerge,
            String adapterName) {
        checkShape("embedding weight", weight, embA.size(1), embB.size(0));
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                Tensor delta = embeddingDeltaWeight(embA, embB, scaling).to(weight.scalar_type());
                if (safeMerge) {
                    Tensor merged = weight.clone().add_(delta);
                    checkFinite(merged, adapterName);
                    weight.copy_(merged);
                } else {
                    weight.add_(delta);
                }
            });
        }
    }

    /** Undoes {@link #mergeEmbedding}. */
    public static void unmergeEmbedding(Tensor weight, Tensor embA, Tensor embB, double scaling) {
        checkShape("embedding weight", weight, embA.size(1), embB.size(0));
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> weight.sub_(embeddingDeltaWeight(embA, embB, scaling).to(weight.scalar_type())));
        }
    }

    /**
     * The dtype adapter tensors get (§6.10): created in fp32, cast to the base weight's dtype when that is a floating
     * type (an integer/quantised base keeps fp32), and — on PeftModel's path ({@code autocast_adapter_dtype=True}) —
     * fp16, bf16 and float8 adapters upcast back to fp32. The transformers integration never upcasts.
     */
    public static ScalarType adapterDtype(ScalarType baseWeightDtype, boolean autocastAdapterDtype) {
        return BaseTunerLayer.adapterDtype(baseWeightDtype, autocastAdapterDtype);
    }

    static Tensor castTo(Tensor x, ScalarType dtype) {
        return x.scalar_type().intern() == dtype.intern() ? x : x.to(dtype);
    }

    static void checkFinite(Tensor merged, String adapterName) {
        if (!torch.isfinite(merged).all().item_bool()) {
            throw new IllegalArgumentException(
                    "NaNs detected in the merged weights. The adapter " + adapterName + " seems to be broken");
        }
    }

    private static void checkWeightShape(Tensor weight, Adapter ad, boolean fanInFanOut) {
        long in = ad.a.size(1);
        long out = ad.b.size(0);
        if (ad.a.size(0) != ad.b.size(1)) {
            throw new IllegalArgumentException("lora_A " + Arrays.toString(ad.a.shape()) + " and lora_B "
                    + Arrays.toString(ad.b.shape()) + " disagree on the rank");
        }
        checkShape(fanInFanOut ? "Conv1D weight (fan_in_fan_out)" : "weight", weight,
                fanInFanOut ? in : out, fanInFanOut ? out : in);
    }

    private static void checkShape(String what, Tensor t, long d0, long d1) {
        if (t.dim() != 2 || t.size(0) != d0 || t.size(1) != d1) {
            throw new IllegalArgumentException(what + " has shape " + Arrays.toString(t.shape())
                    + ", the adapter needs [" + d0 + ", " + d1 + "]");
        }
    }
}
