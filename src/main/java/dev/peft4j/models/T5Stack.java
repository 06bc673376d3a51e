package dev.peft4j.models;

import dev.peft4j.nn.Activation;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.ModuleList;
import dev.peft4j.nn.RMSNorm;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * transformers' {@code T5Stack}: the encoder (bidirectional self-attention) or the decoder (causal self-attention,
 * cross-attention over the encoder's output). Keys: {@code embed_tokens.weight} (tied to {@code shared.weight}),
 * {@code block.N.layer.0.SelfAttention.{q,k,v,o}.weight}, {@code block.0.layer.0.SelfAttention.relative_attention_bias
 * .weight}, decoder {@code block.N.layer.1.EncDecAttention.{q,k,v,o}.weight}, {@code block.N.layer.M.layer_norm.weight},
 * {@code block.N.layer.M.DenseReluDense.{wi | wi_0, wi_1}.weight} and {@code .wo.weight}, {@code final_layer_norm.weight}.
 * T5's layer norm is an RMS norm (no mean, no bias), and its attention is not scaled by 1/√d.
 */
final class T5Stack extends Module {
    private final T5Config cfg;
    private final boolean decoder;
    private final int numBlocks;

    T5Stack(T5Config cfg, boolean decoder, Init init) {
        this.cfg = cfg;
        this.decoder = decoder;
        numBlocks = decoder ? cfg.numDecoderLayers : cfg.numLayers;
        registerModule("embed_tokens", new Embedding(cfg.vocabSize, cfg.dModel, init));
        ModuleList<Module> blocks = registerModule("block", new ModuleList<>());
        for (int i = 0; i < numBlocks; i++) {
            blocks.add(new T5Block(cfg, decoder, i == 0, init));
        }
        registerModule("final_layer_norm", new RMSNorm(cfg.dModel, cfg.eps, init));
    }

    int numBlocks() {
        return numBlocks;
    }

    /**
     * The stack's last hidden states {@code [B, T, d_model]}. Encoder: {@code attentionMask} {@code [B, T]} hides
     * padding. Decoder: causal over {@code past + T} positions ({@code cache} holds the past, or null), attending to
     * {@code encoderHidden} where {@code encoderMask} is 1. Temporaries go to the caller's scope.
     */
    Tensor forward(Tensor ids, Tensor attentionMask, Tensor encoderHidden, Tensor encoderMask, Seq2SeqCache cache,
            boolean align) {
        // align (a model placed per module): each block takes its inputs on its device, as accelerate's hooks move them
        Tensor x = layer("embed_tokens").forward(align ? PreTrainedModel.onDeviceOf(ids, child("embed_tokens")) : ids);
        ScalarType dtype = x.scalar_type().intern();
        long b = ids.size(0);
        long q = ids.size(1);
        long past = cache == null ? 0 : cache.length();
        T5Attention first = block(0).attention(0);
        // the relative position bias of block 0, shared by every block, with the mask folded in (as transformers
        // adds its extended mask to position_bias)
        Tensor bias = first.relativeBias(q, past, dtype);
        Tensor allowed = Attention.mask(ids, decoder ? null : attentionMask, q, past, decoder, 0);
        if (align) {
            allowed = PreTrainedModel.onDeviceOfTensor(allowed, bias);
        }
        Tensor selfMask = allowed == null ? bias
                : bias.masked_fill(allowed.bitwise_not(), new Scalar(lowest(dtype)));
        Tensor crossMask = null;
        if (decoder && encoderMask != null) {
            crossMask = encoderMask.ne(new Scalar(0)).view(b, 1, 1, encoderMask.size(1));
        }
        for (int i = 0; i < numBlocks; i++) {
            T5Block blk = block(i);
            if (align) {
                x = PreTrainedModel.onDeviceOf(x, blk);
                selfMask = PreTrainedModel.onDeviceOf(selfMask, blk);
                encoderHidden = PreTrainedModel.onDeviceOf(encoderHidden, blk);
                crossMask = PreTrainedModel.onDeviceOf(crossMask, blk);
            }
            x = blk.forward(x, selfMask, encoderHidden, crossMask, cache, i);
        }
        return layer("final_layer_norm").forward(align ? PreTrainedModel.onDeviceOf(x, child("final_layer_norm")) : x);
    }

    private T5Block block(int i) {
        @SuppressWarnings("unchecked")
        ModuleList<Module> blocks = (ModuleList<Module>) child("block");
        return (T5Block) blocks.get(i);
    }

    /** The most negative finite value of {@code dtype}: transformers' {@code torch.finfo(dtype).min} mask value. */
    static double lowest(ScalarType dtype) {
        switch (dtype) {
            case Half: return -65504.0;
            case BFloat16: return -3.3895313892515355e38;
            default: return -Float.MAX_VALUE;
        }
    }

    /** {@code T5Block}: self-attention, (decoder) cross-attention, feed-forward; each pre-norm with a residual. */
    static final class T5Block extends Module {
        private final boolean decoder;

        T5Block(T5Config cfg, boolean decoder, boolean relativeBias, Init init) {
            this.decoder = decoder;
            ModuleList<Module> layers = registerModule("layer", new ModuleList<>());
            layers.add(new T5LayerAttention("SelfAttention", new T5Attention(cfg, relativeBias, !decoder, init), cfg, init));
            if (decoder) {
                layers.add(new T5LayerAttention("EncDecAttention", new T5Attention(cfg, false, false, init), cfg, init));
            }
            layers.add(new T5LayerFF(cfg, init));
        }

        private Module sub(int i) {
            @SuppressWarnings("unchecked")
            ModuleList<Module> layers = (ModuleList<Module>) child("layer");
            return layers.get(i);
        }

        T5Attention attention(int i) {
            return ((T5LayerAttention) sub(i)).attention();
        }

        Tensor forward(Tensor x, Tensor selfMask, Tensor encoderHidden, Tensor crossMask, Seq2SeqCache cache, int index) {
            x = ((T5LayerAttention) sub(0)).forward(x, null, selfMask, cache == null ? null : cache.selfStore(), index);
            if (decoder) {
                x = ((T5LayerAttention) sub(1)).forward(x, encoderHidden, crossMask,
                        cache == null ? null : cache.crossStore(), index);
            }
            return ((T5LayerFF) sub(decoder ? 2 : 1)).forward(x);
        }
    }

    /** {@code T5LayerSelfAttention} / {@code T5LayerCrossAttention}: {@code x + attention(layer_norm(x))}. */
    static final class T5LayerAttention extends Module {
        private final String name;

        T5LayerAttention(String name, T5Attention attention, T5Config cfg, Init init) {
            this.name = name;
            registerModule(name, attention);
            registerModule("layer_norm", new RMSNorm(cfg.dModel, cfg.eps, init));
        }

        T5Attention attention() {
            return (T5Attention) child(name);
        }

        Tensor forward(Tensor x, Tensor keyValueStates, Tensor mask, KvStore store, int index) {
            Tensor h = layer("layer_norm").forward(x);
            return x.add(attention().forward(h, keyValueStates, mask, store, index));
        }
    }

    /** {@code T5LayerFF}: {@code x + DenseReluDense(layer_norm(x))}. */
    static final class T5LayerFF extends Module {
        T5LayerFF(T5Config cfg, Init init) {
            registerModule("DenseReluDense", cfg.gated ? new T5DenseGatedActDense(cfg, init) : new T5DenseActDense(cfg, init));
            registerModule("layer_norm", new RMSNorm(cfg.dModel, cfg.eps, init));
        }

        Tensor forward(Tensor x) {
            return x.add(layer("DenseReluDense").forward(layer("layer_norm").forward(x)));
        }
    }

    /** {@code T5DenseActDense}: {@code wo(act(wi(x)))}. */
    static final class T5DenseActDense extends Module implements Layer {
        T5DenseActDense(T5Config cfg, Init init) {
            registerModule("wi", new Linear(cfg.dModel, cfg.dFf, false, init));
            registerModule("wo", new Linear(cfg.dFf, cfg.dModel, false, init));
            registerModule("act", Activation.named(cfg.activation));
        }

        @Override
        public Tensor forward(Tensor x) {
            return layer("wo").forward(layer("act").forward(layer("wi").forward(x)));
        }
    }

    /** {@code T5DenseGatedActDense} (T5 v1.1, mT5): {@code wo(act(wi_0(x)) · wi_1(x))}. */
    static final class T5DenseGatedActDense extends Module implements Layer {
        T5DenseGatedActDense(T5Config cfg, Init init) {
            registerModule("wi_0", new Linear(cfg.dModel, cfg.dFf, false, init));
            registerModule("wi_1", new Linear(cfg.dModel, cfg.dFf, false, init));
            registerModule("wo", new Linear(cfg.dFf, cfg.dModel, false, init));
            registerModule("act", Activation.named(cfg.activation));
        }

        @Override
        public Tensor forward(Tensor x) {
            Tensor g = layer("act").forward(layer("wi_0").forward(x));
            return layer("wo").forward(g.mul(layer("wi_1").forward(x)));
        }
    }

    /** Where an attention layer's keys and values go (a cache), or come from (cross-attention's, once computed). */
    interface KvStore {
        /** The keys and values to attend to, given this step's (self-attention) or the encoder's (cross). */
        Tensor[] update(int layer, Tensor k, Tensor v);

        /** For cross-attention: the stored keys and values of {@code layer}, or null before the first step. */
        default Tensor[] stored(int layer) {
            return null;
        }
    }

    /** {@code T5Attention}: q/k/v/o without bias, SDPA without 1/√d scaling, a relative position bias in block 0. */
    static final class T5Attention extends Module {
        private final long numHeads;
        private final long dKv;
        private final boolean bidirectional;
        private final int numBuckets;
        private final int maxDistance;

        T5Attention(T5Config cfg, boolean relativeBias, boolean bidirectional, Init init) {
            numHeads = cfg.numHeads;
            dKv = cfg.dKv;
            this.bidirectional = bidirectional;
            numBuckets = cfg.numBuckets;
            maxDistance = cfg.maxDistance;
            long inner = numHeads * dKv;
            registerModule("q", new Linear(cfg.dModel, inner, false, init));
            registerModule("k", new Linear(cfg.dModel, inner, false, init));
            registerModule("v", new Linear(cfg.dModel, inner, false, init));
            registerModule("o", new Linear(inner, cfg.dModel, false, init));
            if (relativeBias) {
                registerModule("relative_attention_bias", new Embedding(numBuckets, numHeads, init));
            }
        }

        /**
         * {@code compute_bias}: {@code [1, H, q, past + q]} for queries at positions {@code past ..} over keys at
         * {@code 0 .. past + q - 1}, in {@code dtype}.
         */
        Tensor relativeBias(long q, long past, ScalarType dtype) {
            Tensor table = getParameter("relative_attention_bias.weight"); // positions made on its device
            Tensor context = Attention.arange(past, past + q, table).view(q, 1);
            Tensor memory = Attention.arange(0, past + q, table).view(1, past + q);
            Tensor buckets = bucket(memory.sub(context));
            Tensor values = layer("relative_attention_bias").forward(buckets); // [q, k, H]
            return values.permute(2, 0, 1).unsqueeze(0).to(dtype);
        }

        /** transformers' {@code _relative_position_bucket}, in the same tensor ops (float32 log, truncation). */
        private Tensor bucket(Tensor relative) {
            int buckets = numBuckets;
            Tensor result;
            Tensor rp;
            if (bidirectional) {
                buckets /= 2;
                result = relative.gt(new Scalar(0)).to(ScalarType.Long).mul(new Scalar(buckets));
                rp = relative.is_meta() ? relative.maximum(relative.neg()) : relative.abs(); // no meta abs kernel
            } else {
                result = torch.zeros_like(relative);
                rp = relative.clamp_max(new Scalar(0)).neg();
            }
            int maxExact = buckets / 2;
            Tensor small = rp.lt(new Scalar(maxExact));
            Tensor large = rp.to(ScalarType.Float).div(new Scalar((double) maxExact)).log()
                    .div(new Scalar(Math.log((double) maxDistance / maxExact)))
                    .mul(new Scalar((double) (buckets - maxExact))).to(ScalarType.Long).add(new Scalar(maxExact));
            large = large.clamp_max(new Scalar(buckets - 1));
            return result.add(dev.peft4j.nn.DeviceOps.where(small, rp, large));
        }

        /**
         * Attention of {@code x} over itself ({@code keyValueStates} null) or over {@code keyValueStates} (cross);
         * {@code mask} a float bias {@code [B or 1, H or 1, q, k]} added to the scores, a bool mask, or null.
         */
        Tensor forward(Tensor x, Tensor keyValueStates, Tensor mask, KvStore store, int index) {
            long b = x.size(0);
            long t = x.size(1);
            Tensor q = layer("q").forward(x).view(b, t, numHeads, dKv).transpose(1, 2);
            Tensor[] kv = store == null ? null : store.stored(index);
            if (kv == null) {
                Tensor src = keyValueStates == null ? x : keyValueStates;
                long s = src.size(1);
                Tensor k = layer("k").forward(src).view(b, s, numHeads, dKv).transpose(1, 2);
                Tensor v = layer("v").forward(src).view(b, s, numHeads, dKv).transpose(1, 2);
                kv = store == null ? new Tensor[] {k, v} : store.update(index, k, v);
            }
            Tensor o = Attention.sdpa(q, kv[0], kv[1], mask, 1.0);
            return layer("o").forward(o.transpose(1, 2).reshape(b, t, numHeads * dKv));
        }
    }
}
