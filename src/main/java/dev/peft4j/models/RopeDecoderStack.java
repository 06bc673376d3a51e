package dev.peft4j.models;

import dev.peft4j.kernels.DecodeKernels;
import dev.peft4j.nn.Activation;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.ModuleList;
import dev.peft4j.nn.RMSNorm;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.pytorch.GradMode;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The decoder stack of Gemma, Gemma 2, Gemma 3 (text), Qwen3 and Phi-3: token embeddings, RoPE attention layers, a
 * final RMSNorm, under transformers' module names. The owning model registers {@link #modules}; the forward reads
 * them back through the owner's children. Temporaries are left to the caller's
 * {@link org.bytedeco.javacpp.PointerScope}.
 */
final class RopeDecoderStack implements AutoCloseable {
    final RopeDecoderConfig cfg;
    // float32, not buffers: to(bfloat16) leaves them in float32, as transformers' RoPE computes
    private Tensor invFreq;
    private Tensor localInvFreq;
    private Tensor longInvFreq;

    RopeDecoderStack(RopeDecoderConfig cfg) {
        this.cfg = cfg;
        invFreq = ScopeUtil.detach(org.bytedeco.pytorch.AbstractTensor.create(cfg.invFreq));
        localInvFreq = cfg.localInvFreq == null ? null
                : ScopeUtil.detach(org.bytedeco.pytorch.AbstractTensor.create(cfg.localInvFreq));
        longInvFreq = cfg.longInvFreq == null ? null
                : ScopeUtil.detach(org.bytedeco.pytorch.AbstractTensor.create(cfg.longInvFreq));
    }

    /** {@code embed_tokens}, {@code layers}, {@code norm}, for the owner to register in this order. */
    Map<String, Module> modules(Init init) {
        Map<String, Module> out = new LinkedHashMap<>();
        out.put("embed_tokens", new Embedding(cfg.vocabSize, cfg.hiddenSize, init));
        ModuleList<DecoderLayer> layers = new ModuleList<>();
        for (int i = 0; i < cfg.numLayers; i++) {
            layers.add(new DecoderLayer(cfg, init));
        }
        out.put("layers", layers);
        out.put("norm", norm(cfg, cfg.hiddenSize, init));
        return out;
    }

    static Module norm(RopeDecoderConfig cfg, long dim, Init init) {
        return cfg.gemmaNorm ? new GemmaRMSNorm(dim, cfg.rmsNormEps, init) : new RMSNorm(dim, cfg.rmsNormEps, init);
    }

    /**
     * The last hidden states {@code [B, T, hidden]} (after the final norm) of the stack whose modules are
     * {@code children} (as registered from {@link #modules}).
     */
    Tensor hiddenStates(Map<String, Module> children, Tensor inputIds, Tensor attentionMask, Tensor positionIds,
            KVCache cache, boolean align) {
        Attention.checkIds("input_ids", inputIds);
        long batch = inputIds.size(0);
        long q = inputIds.size(1);
        long past = cache == null ? 0 : cache.length();
        Attention.checkMask(attentionMask, batch, past + q);
        if (cache != null && cache.numLayers() != cfg.numLayers) {
            throw new IllegalArgumentException("cache has " + cache.numLayers() + " layers, the model " + cfg.numLayers);
        }
        if (positionIds != null && (positionIds.dim() != 2 || positionIds.size(1) != q)) {
            throw new IllegalArgumentException("position_ids must be [batch, " + q + "], got shape "
                    + java.util.Arrays.toString(positionIds.shape()));
        }
        Tensor pos = positionIds != null ? positionIds : Attention.positionIds(inputIds, attentionMask, batch, q, past);
        Tensor full = Attention.mask(inputIds, attentionMask, q, past, true, 0);
        Tensor sliding = cfg.slidingWindow > 0 ? Attention.mask(inputIds, attentionMask, q, past, true, cfg.slidingWindow) : full;
        return layers(children, inputIds, pos, full, sliding, cache == null ? null : cache::append, align);
    }

    /**
     * Embedding, RoPE tables for {@code pos}, the layers (sliding ones under {@code sliding}), the final norm; with
     * {@code align} (a model placed per module) each one's inputs moved to its device first.
     */
    private Tensor layers(Map<String, Module> children, Tensor inputIds, Tensor pos, Tensor full, Tensor sliding,
            KvStore kv, boolean align) {
        Module embed = children.get("embed_tokens");
        Tensor x = ((Layer) embed).forward(align ? PreTrainedModel.onDeviceOf(inputIds, embed) : inputIds);
        ScalarType dtype = x.scalar_type().intern();
        if (cfg.scaleEmbeddings) {
            // √hidden rounded to the activations' dtype first, as transformers' normalizer tensor is
            try (Tensor f = org.bytedeco.pytorch.AbstractTensor.create((float) Math.sqrt(cfg.hiddenSize))) {
                x = x.mul(f.to(x.device(), dtype));
            }
        }
        Tensor[] global = rope(pos, dtype, pickGlobal(pos));
        Tensor[] local = localInvFreq == null ? global : rope(pos, dtype, localInvFreq);
        @SuppressWarnings("unchecked")
        ModuleList<Module> layers = (ModuleList<Module>) children.get("layers");
        for (int i = 0; i < cfg.numLayers; i++) {
            boolean slides = cfg.slidingLayers[i];
            Tensor[] cs = slides ? local : global;
            Module l = layers.get(i);
            Tensor m = slides ? sliding : full;
            if (align) {
                x = PreTrainedModel.onDeviceOf(x, l);
                cs = new Tensor[] {PreTrainedModel.onDeviceOf(cs[0], l), PreTrainedModel.onDeviceOf(cs[1], l)};
                m = PreTrainedModel.onDeviceOf(m, l);
            }
            x = ((DecoderLayer) l).forward(x, cs[0], cs[1], m, kv, i);
        }
        Module norm = children.get("norm");
        return ((Layer) norm).forward(align ? PreTrainedModel.onDeviceOf(x, norm) : x);
    }

    /**
     * The last hidden states {@code [B, T, hidden]} for {@code inputIds} over a {@link SlotKVCache}: row {@code i}
     * continues slot {@code slotOf[i]}, which holds {@code past[i]} positions; its tokens take positions
     * {@code past[i] ..}, are written into the slot and attend to the slot's positions only (within the window on
     * sliding layers).
     */
    Tensor hiddenStatesSlots(Map<String, Module> children, Tensor inputIds, SlotKVCache cache, int[] slotOf,
            long[] past, boolean align) {
        Attention.checkIds("input_ids", inputIds);
        long batch = inputIds.size(0);
        long q = inputIds.size(1);
        if (slotOf.length != batch || past.length != batch) {
            throw new IllegalArgumentException("slots (" + slotOf.length + ") and past lengths (" + past.length
                    + ") must give one entry per batch row (" + batch + ")");
        }
        if (cache.numLayers() != cfg.numLayers) {
            throw new IllegalArgumentException("cache has " + cache.numLayers() + " layers, the model " + cfg.numLayers);
        }
        if (q == 1 && !align && nativeDecodeEligible(children, inputIds, cache)) {
            return nativeDecodeStep(children, inputIds, cache, slotOf, past);
        }
        long keyLength = 0;
        long[] qpos = new long[Math.toIntExact(batch * q)];
        for (int i = 0; i < batch; i++) {
            keyLength = Math.max(keyLength, past[i] + q);
            for (int t = 0; t < q; t++) {
                qpos[(int) (i * q + t)] = past[i] + t;
            }
        }
        Tensor pos = Tensor.create(qpos, batch, q);
        // row i's query at position p sees keys 0..p of its own slot (and p - window < key on sliding layers)
        Tensor qp = pos.view(batch, 1, q, 1);
        Tensor kp = Attention.arange(0, keyLength, inputIds).view(1, 1, 1, keyLength);
        Tensor full = kp.le(qp);
        Tensor sliding = cfg.slidingWindow > 0 ? full.bitwise_and(qp.sub(kp).lt(new Scalar(cfg.slidingWindow))) : full;
        Tensor index = cache.writeIndex(slotOf, past, q);
        final long kl = keyLength;
        return layers(children, inputIds, pos, full, sliding,
                (layer, k, v) -> cache.writeAndRead(layer, index, slotOf, kl, k, v), align);
    }

    /**
     * Whether a one-token step over {@code cache} can take the native decode kernels: the switch is on, autograd is
     * off, the model and the cache hold float32 or bfloat16 of the same dtype on the CPU, and every norm is the
     * stack's own ({@link RMSNorm} or {@link GemmaRMSNorm}, not replaced by an adapter's wrapper).
     */
    private boolean nativeDecodeEligible(Map<String, Module> children, Tensor inputIds, SlotKVCache cache) {
        if (!DecodeKernels.enabled() || GradMode.is_enabled() || !inputIds.is_cpu()) {
            return false;
        }
        Module finalNorm = children.get("norm");
        ScalarType dt = activationDtype(children);
        if (!nativeNorm(finalNorm, dt) || dt != ScalarType.Float && dt != ScalarType.BFloat16
                || cache.keys(0).scalar_type().intern() != dt || !cache.keys(0).is_cpu()) {
            return false;
        }
        @SuppressWarnings("unchecked")
        ModuleList<Module> layers = (ModuleList<Module>) children.get("layers");
        for (int i = 0; i < cfg.numLayers; i++) {
            DecoderLayer l = (DecoderLayer) layers.get(i);
            for (String n : l.sandwich ? new String[] {"input_layernorm", "post_attention_layernorm",
                "pre_feedforward_layernorm", "post_feedforward_layernorm"}
                    : new String[] {"input_layernorm", "post_attention_layernorm"}) {
                if (!nativeNorm(l.part(n), dt)) {
                    return false;
                }
            }
            DecoderAttention a = (DecoderAttention) l.part("self_attn");
            if (a.qkNorm && (!nativeNorm(a.part("q_norm"), dt) || !nativeNorm(a.part("k_norm"), dt))) {
                return false;
            }
        }
        return true;
    }

    /** Whether {@code m} is the stack's own norm (not an adapter's wrapper) with a weight of dtype {@code dt}. */
    private static boolean nativeNorm(Module m, ScalarType dt) {
        Tensor w = m instanceof RMSNorm r ? r.weight() : m instanceof GemmaRMSNorm g ? g.weight() : null;
        return w != null && w.scalar_type().intern() == dt; // the model's own tensor: not closed
    }

    /**
     * The dtype of the hidden states of the stack whose modules are {@code children}, so of its slot cache: its
     * token embedding's weight's (see {@link #embeddingDtype}).
     */
    ScalarType activationDtype(Map<String, Module> children) {
        return embeddingDtype(children.get("embed_tokens"));
    }

    /**
     * The dtype of the token embedding {@code embed}'s weight: the module itself, or the {@link Embedding} an
     * adapter's wrapper ({@code modules_to_save}, trainable tokens) holds, found by type.
     *
     * @throws IllegalStateException if {@code embed} holds no {@link Embedding}
     */
    static ScalarType embeddingDtype(Module embed) {
        if (embed instanceof Embedding e) {
            return e.weight().scalar_type().intern();
        }
        for (Module m : embed.namedModules().values()) {
            if (m instanceof Embedding e) {
                return e.weight().scalar_type().intern();
            }
        }
        throw new IllegalStateException("embed_tokens (" + embed.getClass().getSimpleName() + ") holds no Embedding");
    }

    /** {@code norm(x)} on the native kernel (x contiguous, normed over its last dimension). */
    static Tensor nativeNorm(Module norm, Tensor x) {
        if (norm instanceof GemmaRMSNorm g) {
            return DecodeKernels.rmsNorm(x, g.weight(), g.eps(), true);
        }
        RMSNorm r = (RMSNorm) norm;
        return DecodeKernels.rmsNorm(x, r.weight(), r.eps());
    }

    /** {@code residual = residual + a} in place, then returns {@code norm(residual)}, on the native kernel. */
    static Tensor nativeAddNorm(Module norm, Tensor residual, Tensor a) {
        Tensor ac = a.is_contiguous() ? a : a.contiguous();
        if (norm instanceof GemmaRMSNorm g) {
            return DecodeKernels.addRmsNorm(residual, ac, g.weight(), g.eps(), true);
        }
        RMSNorm r = (RMSNorm) norm;
        return DecodeKernels.addRmsNorm(residual, ac, r.weight(), r.eps());
    }

    /**
     * One new token per row over the slot cache, on the native decode kernels (the Llama step's, with the
     * differences of these families: Gemma's scaled embeddings and {@code (1 + w)} norms, Gemma 2 / 3's norms around
     * each branch, q / k norms, partial and scaled RoPE, local RoPE on sliding layers, soft-capped scores, Phi-3's
     * fused projections). Each residual add is fused with the norm after it; the Linears take their own decode paths.
     */
    private Tensor nativeDecodeStep(Map<String, Module> children, Tensor inputIds, SlotKVCache cache, int[] slotOf,
            long[] past) {
        Tensor x = ((Layer) children.get("embed_tokens")).forward(inputIds);
        if (cfg.scaleEmbeddings) {
            try (Tensor f = org.bytedeco.pytorch.AbstractTensor.create((float) Math.sqrt(cfg.hiddenSize))) {
                x = x.mul(f.to(x.scalar_type().intern()));
            }
        } else {
            x = x.clone(); // the residual stream is updated in place by the fused add + norm
        }
        long last = 0;
        for (long p : past) {
            last = Math.max(last, p);
        }
        Tensor global = longInvFreq != null && last + 1 > cfg.originalMaxPositions ? longInvFreq : invFreq;
        Tensor local = localInvFreq == null ? global : localInvFreq;
        @SuppressWarnings("unchecked")
        ModuleList<Module> layers = (ModuleList<Module>) children.get("layers");
        Tensor pending = null; // the last branch output, added into x by the next norm
        for (int i = 0; i < cfg.numLayers; i++) {
            DecoderLayer l = (DecoderLayer) layers.get(i);
            boolean slides = cfg.slidingLayers[i];
            Module in = l.part("input_layernorm");
            Tensor h = pending == null ? nativeNorm(in, x) : nativeAddNorm(in, x, pending);
            Tensor a = ((DecoderAttention) l.part("self_attn")).forwardDecode(h, cache, i, slotOf, past,
                    slides ? local : global, slides ? cfg.slidingWindow : 0, cfg.ropeAttentionScaling);
            Module mlpModule = l.part("mlp");
            java.util.function.UnaryOperator<Tensor> mlp = mlpModule instanceof DecoderMLP m ? m::forwardDecode
                    : ((Layer) mlpModule)::forward;
            if (l.sandwich) {
                Tensor na = nativeNorm(l.part("post_attention_layernorm"), contiguous(a));
                Tensor h2 = nativeAddNorm(l.part("pre_feedforward_layernorm"), x, na);
                pending = nativeNorm(l.part("post_feedforward_layernorm"), contiguous(mlp.apply(h2)));
            } else {
                pending = mlp.apply(nativeAddNorm(l.part("post_attention_layernorm"), x, a));
            }
        }
        Module norm = children.get("norm");
        return pending == null ? nativeNorm(norm, x) : nativeAddNorm(norm, x, pending);
    }

    static Tensor contiguous(Tensor t) {
        return t.is_contiguous() ? t : t.contiguous();
    }

    /** Phi-3 long-RoPE: the long factors once the longest position passes the original context, as transformers. */
    private Tensor pickGlobal(Tensor pos) {
        if (longInvFreq == null) {
            return invFreq;
        }
        long seqLen;
        try (Tensor m = pos.max()) {
            seqLen = m.item_long() + 1;
        }
        return seqLen > cfg.originalMaxPositions ? longInvFreq : invFreq;
    }

    /** cos and sin {@code [B, 1, T, rotary_dim]}: computed in float32, scaled, cast to {@code dtype}. */
    private Tensor[] rope(Tensor pos, ScalarType dtype, Tensor inv) {
        // pos on the frequencies' device (a model placed per module may hold them apart from the input ids)
        Tensor freqs = PreTrainedModel.onDeviceOfTensor(pos, inv).to(ScalarType.Float).unsqueeze(-1).mul(inv);
        Tensor emb = torch.cat(new TensorVector(freqs, freqs), -1);
        Tensor cos = emb.cos();
        Tensor sin = emb.sin();
        if (cfg.ropeAttentionScaling != 1.0) {
            cos = cos.mul(new Scalar(cfg.ropeAttentionScaling));
            sin = sin.mul(new Scalar(cfg.ropeAttentionScaling));
        }
        return new Tensor[] {cos.to(dtype).unsqueeze(1), sin.to(dtype).unsqueeze(1)};
    }

    /** Final-logit soft-capping ({@code cap · tanh(logits / cap)}) when the config sets one. */
    Tensor capLogits(Tensor logits) {
        if (cfg.finalLogitSoftcap <= 0) {
            return logits;
        }
        Scalar cap = new Scalar(cfg.finalLogitSoftcap);
        return logits.div(cap).tanh().mul(cap); // not in place: tanh's backward reads its output
    }

    /** Moves the rotary frequencies to {@code device} (float32 kept), with the model's weights. */
    void moveTo(org.bytedeco.pytorch.Device device) {
        invFreq = Module.movedTensor(invFreq, device);
        localInvFreq = Module.movedTensor(localInvFreq, device);
        longInvFreq = Module.movedTensor(longInvFreq, device);
    }

    @Override
    public void close() {
        invFreq.close();
        if (localInvFreq != null) {
            localInvFreq.close();
        }
        if (longInvFreq != null) {
            longInvFreq.close();
        }
    }

    /** Where a layer's new keys and values go: returns the keys and values to attend to. */
    @FunctionalInterface
    interface KvStore {
        Tensor[] update(int layer, Tensor k, Tensor v);
    }

    /**
     * Gemma's {@code GemmaRMSNorm}: {@code x · rsqrt(mean(x²) + eps) · (1 + weight)}, all in float32, cast back to the
     * input's dtype at the end.
     */
    static final class GemmaRMSNorm extends Module implements Layer {
        private final double eps;

        GemmaRMSNorm(long dim, double eps, Init init) {
            this.eps = eps;
            registerParameter("weight", init.empty(dim), true);
        }

        /** The weight {@code (dim,)}, owned by this module. */
        Tensor weight() {
            return param("weight");
        }

        /** The value added to the mean square. */
        double eps() {
            return eps;
        }

        @Override
        public Tensor forward(Tensor x) {
            ScalarType in = x.scalar_type().intern();
            Tensor xf = x.to(ScalarType.Float);
            Tensor inv = xf.pow(new Scalar(2.0)).mean(new long[] {-1}, true, new ScalarTypeOptional())
                    .add_(new Scalar(eps)).rsqrt_();
            Tensor w = param("weight").to(ScalarType.Float).add(new Scalar(1.0));
            return xf.mul(inv).mul(w).to(in);
        }
    }

    /**
     * A decoder layer: {@code x + attn(norm(x))} then {@code x + mlp(norm(x))}; Gemma 2 / 3 also norm each branch's
     * output ({@code post_attention_layernorm}, {@code post_feedforward_layernorm}) and name the MLP's input norm
     * {@code pre_feedforward_layernorm}.
     */
    static final class DecoderLayer extends Module {
        private final boolean sandwich;

        DecoderLayer(RopeDecoderConfig cfg, Init init) {
            sandwich = cfg.sandwichNorms;
            registerModule("self_attn", new DecoderAttention(cfg, init));
            registerModule("mlp", new DecoderMLP(cfg, init));
            registerModule("input_layernorm", norm(cfg, cfg.hiddenSize, init));
            registerModule("post_attention_layernorm", norm(cfg, cfg.hiddenSize, init));
            if (sandwich) {
                registerModule("pre_feedforward_layernorm", norm(cfg, cfg.hiddenSize, init));
                registerModule("post_feedforward_layernorm", norm(cfg, cfg.hiddenSize, init));
            }
        }

        /** A child module by name (the native decode step reads the norms and runs the parts itself). */
        Module part(String name) {
            return child(name);
        }

        Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensor mask, KvStore cache, int index) {
            Tensor h = layer("input_layernorm").forward(x);
            Tensor a = ((DecoderAttention) child("self_attn")).forward(h, cos, sin, mask, cache, index);
            if (sandwich) {
                Tensor r = x.add(layer("post_attention_layernorm").forward(a));
                Tensor m = layer("mlp").forward(layer("pre_feedforward_layernorm").forward(r));
                return r.add(layer("post_feedforward_layernorm").forward(m));
            }
            Tensor r = x.add(a);
            Tensor m = layer("mlp").forward(layer("post_attention_layernorm").forward(r));
            return r.add(m); // not add_: the norm saved r for backward
        }
    }

    /**
     * Attention: q/k/v projections (Phi-3: one fused {@code qkv_proj}), optional per-head q/k RMSNorm, RoPE on the
     * leading rotary dims, grouped-query attention (soft-capped scores when configured), {@code o_proj}.
     */
    static final class DecoderAttention extends Module {
        private final long numHeads;
        private final long numKvHeads;
        private final long headDim;
        private final long rotaryDim;
        private final double scale;
        private final double softcap;
        private final boolean fused;
        private final boolean qkNorm;

        DecoderAttention(RopeDecoderConfig cfg, Init init) {
            numHeads = cfg.numHeads;
            numKvHeads = cfg.numKvHeads;
            headDim = cfg.headDim;
            rotaryDim = cfg.rotaryDim;
            scale = cfg.attentionScale;
            softcap = cfg.attnLogitSoftcap;
            fused = cfg.fused;
            qkNorm = cfg.qkNorm;
            boolean bias = cfg.attentionBias;
            if (fused) {
                registerModule("qkv_proj", new Linear(cfg.hiddenSize, (numHeads + 2 * numKvHeads) * headDim, false,
                        init));
            } else {
                registerModule("q_proj", new Linear(cfg.hiddenSize, numHeads * headDim, bias, init));
                registerModule("k_proj", new Linear(cfg.hiddenSize, numKvHeads * headDim, bias, init));
                registerModule("v_proj", new Linear(cfg.hiddenSize, numKvHeads * headDim, bias, init));
            }
            registerModule("o_proj", new Linear(numHeads * headDim, cfg.hiddenSize, bias, init));
            if (qkNorm) {
                registerModule("q_norm", norm(cfg, headDim, init));
                registerModule("k_norm", norm(cfg, headDim, init));
            }
        }

        Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensor mask, KvStore cache, int index) {
            long b = x.size(0);
            long t = x.size(1);
            Tensor q;
            Tensor k;
            Tensor v;
            if (fused) {
                Tensor qkv = layer("qkv_proj").forward(x);
                q = qkv.narrow(-1, 0, numHeads * headDim);
                k = qkv.narrow(-1, numHeads * headDim, numKvHeads * headDim);
                v = qkv.narrow(-1, (numHeads + numKvHeads) * headDim, numKvHeads * headDim);
            } else {
                q = layer("q_proj").forward(x);
                k = layer("k_proj").forward(x);
                v = layer("v_proj").forward(x);
            }
            q = q.view(b, t, numHeads, headDim);
            k = k.view(b, t, numKvHeads, headDim);
            v = v.view(b, t, numKvHeads, headDim).transpose(1, 2);
            if (qkNorm) {
                q = layer("q_norm").forward(q);
                k = layer("k_norm").forward(k);
            }
            q = rotate(q.transpose(1, 2), cos, sin);
            k = rotate(k.transpose(1, 2), cos, sin);
            if (cache != null) {
                Tensor[] kv = cache.update(index, k, v);
                k = kv[0];
                v = kv[1];
            }
            long groups = numHeads / numKvHeads;
            k = Attention.repeatKv(k, groups);
            v = Attention.repeatKv(v, groups);
            Tensor o = softcap > 0 ? cappedAttention(q, k, v, mask) : Attention.sdpa(q, k, v, mask, scale);
            return layer("o_proj").forward(o.transpose(1, 2).reshape(b, t, numHeads * headDim));
        }

        /** A child module by name (the native decode step reads the q / k norms). */
        Module part(String name) {
            return child(name);
        }

        /**
         * The attention of one new token per row ({@code h} {@code [B, 1, hidden]}) on the native kernels: the
         * projections, the q / k norms, RoPE at positions {@code past} (inverse frequencies {@code inv}) in place, k
         * and v written into the slot cache, attention over each row's slot (its last {@code window} positions when
         * {@code window > 0}, scores soft-capped when configured), then o_proj.
         */
        Tensor forwardDecode(Tensor h, SlotKVCache cache, int index, int[] slotOf, long[] past, Tensor inv,
                long window, double ropeScaling) {
            long rows = h.size(0);
            Tensor q;
            Tensor k;
            Tensor v;
            if (fused) {
                Tensor qkv = layer("qkv_proj").forward(h);
                q = contiguous(qkv.narrow(-1, 0, numHeads * headDim));
                k = contiguous(qkv.narrow(-1, numHeads * headDim, numKvHeads * headDim));
                v = contiguous(qkv.narrow(-1, (numHeads + numKvHeads) * headDim, numKvHeads * headDim));
            } else {
                Tensor[] qkv = DecodeProjections.project(h, child("q_proj"), child("k_proj"), child("v_proj"));
                q = qkv[0];
                k = qkv[1];
                v = qkv[2];
            }
            if (qkNorm) {
                q = nativeNorm(child("q_norm"), q.view(rows, 1, numHeads, headDim)).view(rows, 1, numHeads * headDim);
                k = nativeNorm(child("k_norm"), k.view(rows, 1, numKvHeads, headDim))
                        .view(rows, 1, numKvHeads * headDim);
            }
            Tensor o = DecodeKernels.ropeAttention(q, k, v, cache.keys(index), cache.values(index), slotOf, past,
                    window, scale, softcap, inv, ropeScaling);
            return layer("o_proj").forward(o);
        }

        /** Eager attention with {@code cap · tanh(scores / cap)} before the mask, softmax in float32. */
        private Tensor cappedAttention(Tensor q, Tensor k, Tensor v, Tensor mask) {
            Scalar cap = new Scalar(softcap);
            // not in place after tanh: its backward reads its output
            Tensor w = q.matmul(k.transpose(2, 3)).mul_(new Scalar(scale)).div_(cap).tanh().mul(cap);
            if (mask != null) {
                w = w.masked_fill(mask.bitwise_not(), new Scalar(Double.NEGATIVE_INFINITY));
            }
            Tensor p = w.softmax(-1, new ScalarTypeOptional(ScalarType.Float)).to(q.scalar_type().intern());
            return p.matmul(v);
        }

        /** RoPE on the first {@code rotaryDim} dims: {@code x·cos + rotate_half(x)·sin}; the rest pass through. */
        private Tensor rotate(Tensor x, Tensor cos, Tensor sin) {
            Tensor rot = rotaryDim == headDim ? x : x.narrow(-1, 0, rotaryDim);
            long half = rotaryDim / 2;
            Tensor x1 = rot.narrow(-1, 0, half);
            Tensor x2 = rot.narrow(-1, half, half);
            Tensor rotated = torch.cat(new TensorVector(x2.neg(), x1), -1);
            Tensor out = rot.mul(cos).add_(rotated.mul_(sin));
            if (rotaryDim == headDim) {
                return out;
            }
            return torch.cat(new TensorVector(out, x.narrow(-1, rotaryDim, headDim - rotaryDim)), -1);
        }
    }

    /** MLP: {@code down(act(gate(x)) · up(x))}; Phi-3 computes gate and up in one {@code gate_up_proj}. */
    static final class DecoderMLP extends Module implements Layer {
        private final boolean fused;
        private final long intermediate;

        DecoderMLP(RopeDecoderConfig cfg, Init init) {
            fused = cfg.fused;
            intermediate = cfg.intermediateSize;
            if (fused) {
                registerModule("gate_up_proj", new Linear(cfg.hiddenSize, 2 * intermediate, false, init));
            } else {
                registerModule("gate_proj", new Linear(cfg.hiddenSize, intermediate, false, init));
                registerModule("up_proj", new Linear(cfg.hiddenSize, intermediate, false, init));
            }
            registerModule("down_proj", new Linear(intermediate, cfg.hiddenSize, false, init));
            registerModule("act_fn", Activation.named(cfg.hiddenAct));
        }

        /**
         * The MLP of one new token per row on the native decode kernels: gate and up (or the fused gate_up) in one
         * region with the activation and product fused after it, then down_proj; libtorch's forward where a layer
         * has no decode state.
         */
        Tensor forwardDecode(Tensor x) {
            Tensor h = fused ? DecodeProjections.gated(x, child("gate_up_proj"), null, child("act_fn"))
                    : DecodeProjections.gated(x, child("gate_proj"), child("up_proj"), child("act_fn"));
            return h == null ? forward(x) : layer("down_proj").forward(h);
        }

        @Override
        public Tensor forward(Tensor x) {
            Tensor gate;
            Tensor up;
            if (fused) {
                Tensor gu = layer("gate_up_proj").forward(x);
                gate = gu.narrow(-1, 0, intermediate);
                up = gu.narrow(-1, intermediate, intermediate);
            } else {
                gate = layer("gate_proj").forward(x);
                up = layer("up_proj").forward(x);
            }
            return layer("down_proj").forward(layer("act_fn").forward(gate).mul(up));
        }
    }
}
