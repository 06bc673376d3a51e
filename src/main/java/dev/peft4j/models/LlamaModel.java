package dev.peft4j.models;

import dev.peft4j.kernels.DecodeKernels;
import dev.peft4j.nn.Activation;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.ModuleList;
import dev.peft4j.nn.RMSNorm;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.GradMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * transformers' {@code LlamaModel} (also Mistral's and Qwen2's, which differ only in config): token embeddings,
 * decoder layers with RoPE grouped-query attention and a SwiGLU MLP, a final RMSNorm. Keys: {@code embed_tokens.weight},
 * {@code layers.N.self_attn.{q,k,v,o}_proj.weight}, {@code layers.N.mlp.{gate,up,down}_proj.weight},
 * {@code layers.N.{input,post_attention}_layernorm.weight}, {@code norm.weight}.
 */
public final class LlamaModel extends PreTrainedModel {
    private static final java.util.concurrent.atomic.LongAdder NATIVE_PREFILLS =
            new java.util.concurrent.atomic.LongAdder();
    final LlamaConfig cfg;
    // float32 [head_dim/2]: not a buffer, so that to(bfloat16) leaves it in float32 as transformers' RoPE computes
    private Tensor invFreq; // float32, not a buffer: to(dtype) leaves it float32

    /**
     * The Llama-family decoder stack (embeddings, layers, final norm) of {@code config}'s shape, its parameters made by
     * {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public LlamaModel(ModelConfig config, Init init) {
        super(config);
        cfg = new LlamaConfig(config);
        registerModule("embed_tokens", new Embedding(cfg.vocabSize, cfg.hiddenSize, init));
        ModuleList<LlamaDecoderLayer> layers = registerModule("layers", new ModuleList<>());
        for (int i = 0; i < cfg.numLayers; i++) {
            layers.add(new LlamaDecoderLayer(cfg, i, init));
        }
        registerModule("norm", new RMSNorm(cfg.hiddenSize, cfg.rmsNormEps, init));
        invFreq = ScopeUtil.detach(org.bytedeco.pytorch.AbstractTensor.create(cfg.invFreq));
    }

    @Override
    public String baseModelPrefix() {
        return "model";
    }

    @Override
    public boolean isBaseModel() {
        return true;
    }

    @Override
    protected java.util.List<java.util.regex.Pattern> ignoredUnexpectedKeys() {
        return java.util.List.of(java.util.regex.Pattern.compile(".*rotary_emb\\.inv_freq"));
    }

    /**
     * The last hidden states {@code [B, T, hidden]} (after the final norm) for {@code inputIds}; must run inside
     * a {@link PointerScope} that frees the temporaries (the models' {@code forward} provide one).
     */
    Tensor hiddenStates(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        Attention.checkIds("input_ids", inputIds);
        long batch = inputIds.size(0);
        long q = inputIds.size(1);
        long past = cache == null ? 0 : cache.length();
        Attention.checkMask(attentionMask, batch, past + q);
        if (cache != null && cache.numLayers() != cfg.numLayers) {
            throw new IllegalArgumentException("cache has " + cache.numLayers() + " layers, the model " + cfg.numLayers);
        }
        Tensor pos = positionIds != null ? positionIds : Attention.positionIds(inputIds, attentionMask, batch, q, past);
        Tensor mask = Attention.mask(inputIds, attentionMask, q, past, true, cfg.slidingWindow);
        Tensor fullMask = cfg.slidingWindow > 0 ? Attention.mask(inputIds, attentionMask, q, past, true, 0) : mask;
        return decoder(inputIds, pos, mask, fullMask, cache == null ? null : cache::append);
    }

    /**
     * The last hidden states {@code [B, T, hidden]} for {@code inputIds} {@code [B, T]} over a {@link SlotKVCache}:
     * row {@code i} continues the sequence in slot {@code slotOf[i]}, which holds {@code past[i]} positions; its new
     * tokens take positions {@code past[i] ..}, are written into the slot and attend to the slot's positions only.
     * Only the last position feeds the head ({@link CausalLM#forwardSlots}): on the native path the result is
     * {@code [B, 1, hidden]}, the last layer computing its queries, attention output and MLP for that position
     * alone (its keys and values still for every position, into the cache). Must run inside a {@link PointerScope}.
     */
    Tensor hiddenStatesSlots(Tensor inputIds, SlotKVCache cache, int[] slotOf, long[] past) {
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
        long keyLength = 0;
        long[] qpos = new long[Math.toIntExact(batch * q)];
        boolean ragged = false;
        for (int i = 0; i < batch; i++) {
            keyLength = Math.max(keyLength, past[i] + q);
            ragged |= past[i] != past[0];
            for (int t = 0; t < q; t++) {
                qpos[(int) (i * q + t)] = past[i] + t;
            }
        }
        if (q == 1 && nativeDecodeEligible(inputIds, cache)) {
            return nativeDecodeStep(inputIds, cache, slotOf, past);
        }
        Tensor pos = Tensor.create(qpos, batch, q);
        Tensor mask = null;
        Tensor fullMask = null;
        if (ragged || q > 1 || cfg.slidingWindow > 0) {
            // row i's query at position p sees keys 0..p of its own slot (and within the sliding window)
            Tensor qp = pos.view(batch, 1, q, 1);
            Tensor kp = Attention.arange(0, keyLength, inputIds).view(1, 1, 1, keyLength);
            mask = kp.le(qp);
            fullMask = mask;
            if (cfg.slidingWindow > 0) {
                mask = mask.bitwise_and(qp.sub(kp).lt(new org.bytedeco.pytorch.Scalar(cfg.slidingWindow)));
            }
        }
        Tensor index = cache.writeIndex(slotOf, past, q);
        final long kl = keyLength;
        KvStore kv = (layer, k, v) -> cache.writeAndRead(layer, index, slotOf, kl, k, v);
        if (nativeDecodeEligible(inputIds, cache)) {
            // every row a whole prompt: the causal mask is libtorch's own (it skips the blocks above the diagonal)
            boolean causal = !ragged && past[0] == 0 && cfg.slidingWindow <= 0;
            return nativePrefill(inputIds, qpos, causal ? null : mask, causal ? null : fullMask, causal, kv);
        }
        return decoder(inputIds, pos, mask, fullMask, kv);
    }

    /**
     * Whether a one-token step over {@code cache} can take the native decode kernels: the switch is on, autograd is
     * off, the model and the cache hold float32 or bfloat16 of the same dtype on the CPU, the model is not placed per
     * module (a device_map: that path moves activations between layers), and the norms are the model's own
     * {@link RMSNorm}s.
     */
    private boolean nativeDecodeEligible(Tensor inputIds, SlotKVCache cache) {
        if (!DecodeKernels.enabled() || GradMode.is_enabled() || !inputIds.is_cpu() || deviceMapped()) {
            return false;
        }
        ScalarType dt = activationDtype();
        if (!nativeNorm(child("norm"), dt) || dt != ScalarType.Float && dt != ScalarType.BFloat16
                || cache.keys(0).scalar_type().intern() != dt || !cache.keys(0).is_cpu()) {
            return false;
        }
        @SuppressWarnings("unchecked")
        ModuleList<Module> layers = (ModuleList<Module>) child("layers");
        for (int i = 0; i < cfg.numLayers; i++) {
            Module l = layers.get(i);
            if (!nativeNorm(l.getSubmodule("input_layernorm"), dt)
                    || !nativeNorm(l.getSubmodule("post_attention_layernorm"), dt)) {
                return false;
            }
        }
        return true;
    }

    /** Whether {@code m} is the model's own {@link RMSNorm} (not an adapter's wrapper) with a weight of {@code dt}. */
    private static boolean nativeNorm(Module m, ScalarType dt) {
        return m instanceof RMSNorm r && r.weight().scalar_type().intern() == dt;
    }

    /**
     * The dtype of the hidden states, so of a slot cache: the token embedding's weight's, also under an adapter's
     * wrapper ({@link RopeDecoderStack#embeddingDtype}).
     */
    ScalarType activationDtype() {
        return RopeDecoderStack.embeddingDtype(child("embed_tokens"));
    }

    /**
     * One new token per row over the slot cache, on the native decode kernels: each residual add is fused with the
     * norm after it, RoPE and attention run over the cache in place; the Linears take their own decode paths
     * (native GEMV, or the fused adapted kernel). Same numbers as the libtorch path up to float32 summation order
     * (bf16: the roundings of transformers' ops, and libtorch's SDPA rounding of probabilities aside).
     */
    private Tensor nativeDecodeStep(Tensor inputIds, SlotKVCache cache, int[] slotOf, long[] past) {
        Tensor x = residualStream(inputIds);
        @SuppressWarnings("unchecked")
        ModuleList<Module> layers = (ModuleList<Module>) child("layers");
        Tensor pending = null; // the last MLP output, added into x by the next norm
        for (int i = 0; i < cfg.numLayers; i++) {
            LlamaDecoderLayer l = (LlamaDecoderLayer) layers.get(i);
            RMSNorm in = (RMSNorm) l.part("input_layernorm");
            Tensor h = addNorm(x, pending, in);
            Tensor a = ((LlamaAttention) l.part("self_attn")).forwardDecode(h, cache, i, slotOf, past, invFreq,
                    cfg.slidingLayers[i] ? cfg.slidingWindow : 0);
            RMSNorm post = (RMSNorm) l.part("post_attention_layernorm");
            Tensor h2 = addNorm(x, a, post);
            Module mlp = l.part("mlp");
            pending = mlp instanceof LlamaMLP m ? m.forwardDecode(h2) : ((dev.peft4j.nn.Layer) mlp).forward(h2);
        }
        return addNorm(x, pending, (RMSNorm) child("norm"));
    }

    /**
     * Several new tokens per row over the slot cache (a prompt, or a chunk of one): the libtorch decoder's numbers
     * (up to float32 summation order) with the small ops on the native kernels, as the decode step runs them: each
     * residual add fused with the norm after it, RoPE applied in place to the projections' outputs at the positions
     * {@code qpos} ({@code [B · T]}, row-major). Attention is {@link Attention#sdpa} over the slot (libtorch's
     * flash attention), under {@code mask} / {@code fullMask}, or, when {@code causal} (null masks: every row a whole
     * prompt), libtorch's causal one. Only each row's last position reaches the head, so the last layer projects its queries and
     * runs attention, o_proj and the MLP for that position alone; it returns {@code [B, 1, hidden]}.
     */
    private Tensor nativePrefill(Tensor inputIds, long[] qpos, Tensor mask, Tensor fullMask, boolean causal,
            KvStore kv) {
        NATIVE_PREFILLS.increment();
        long batch = inputIds.size(0);
        long q = inputIds.size(1);
        long[] lastPos = new long[(int) batch];
        for (int i = 0; i < batch; i++) {
            lastPos[i] = qpos[(int) (i * q + q - 1)];
        }
        Tensor x = residualStream(inputIds);
        @SuppressWarnings("unchecked")
        ModuleList<Module> layers = (ModuleList<Module>) child("layers");
        Tensor pending = null; // the last MLP output, added into x by the next norm
        for (int i = 0; i < cfg.numLayers; i++) {
            LlamaDecoderLayer l = (LlamaDecoderLayer) layers.get(i);
            boolean last = i == cfg.numLayers - 1;
            RMSNorm in = (RMSNorm) l.part("input_layernorm");
            Tensor h = addNorm(x, pending, in);
            Tensor m = cfg.slidingLayers[i] ? mask : fullMask;
            Tensor a = ((LlamaAttention) l.part("self_attn")).forwardPrefill(h, qpos, last ? lastPos : null, invFreq,
                    m, causal, kv, i);
            if (last) {
                x = x.narrow(1, q - 1, 1).contiguous();
            }
            RMSNorm post = (RMSNorm) l.part("post_attention_layernorm");
            Tensor h2 = addNorm(x, a, post);
            pending = ((dev.peft4j.nn.Layer) l.part("mlp")).forward(h2);
        }
        return addNorm(x, pending, (RMSNorm) child("norm"));
    }

    /** Forwards of several tokens per row that took {@link #nativePrefill} since the class loaded (for tests). */
    static long nativePrefills() {
        return NATIVE_PREFILLS.sum();
    }

    private static Tensor contiguous(Tensor t) {
        return t.is_contiguous() ? t : t.contiguous();
    }

    /** The embeddings of {@code inputIds} as a copy: the native paths update the residual stream in place. */
    private Tensor residualStream(Tensor inputIds) {
        return layer("embed_tokens").forward(inputIds).clone();
    }

    /**
     * {@code norm(x)}, or {@code norm(x += pending)} with the add done in place in one native call when
     * {@code pending} (the last sub-layer's output) is not null.
     */
    private static Tensor addNorm(Tensor x, Tensor pending, RMSNorm norm) {
        return pending == null ? DecodeKernels.rmsNorm(x, norm.weight(), norm.eps())
                : DecodeKernels.addRmsNorm(x, contiguous(pending), norm.weight(), norm.eps());
    }

    /**
     * Embedding, RoPE tables for {@code pos} {@code [B, T]}, the decoder layers (sliding ones under {@code mask},
     * the others under {@code fullMask}) and the final norm.
     */
    private Tensor decoder(Tensor inputIds, Tensor pos, Tensor mask, Tensor fullMask, KvStore kv) {
        boolean align = deviceMapped(); // placed across devices: each module's inputs go to its device first
        Tensor x = layer("embed_tokens").forward(align ? onDeviceOf(inputIds, child("embed_tokens")) : inputIds);
        ScalarType dtype = x.scalar_type().intern();
        // RoPE tables in float32 (as transformers computes them), cast to the activations' dtype
        Tensor freqs = (align ? pos.to(invFreq.device(), pos.scalar_type().intern()) : pos).to(ScalarType.Float)
                .unsqueeze(-1).mul(invFreq);
        Tensor emb = torch.cat(new TensorVector(freqs, freqs), -1);
        Tensor cos = emb.cos().to(dtype).unsqueeze(1);
        Tensor sin = emb.sin().to(dtype).unsqueeze(1);
        @SuppressWarnings("unchecked")
        ModuleList<Module> layers = (ModuleList<Module>) child("layers");
        for (int i = 0; i < cfg.numLayers; i++) {
            Module l = layers.get(i);
            Tensor m = cfg.slidingLayers[i] ? mask : fullMask;
            if (align) {
                x = onDeviceOf(x, l);
                cos = onDeviceOf(cos, l);
                sin = onDeviceOf(sin, l);
                m = onDeviceOf(m, l);
            }
            x = ((LlamaDecoderLayer) l).forward(x, cos, sin, m, kv, i);
        }
        return layer("norm").forward(align ? onDeviceOf(x, child("norm")) : x);
    }

    @Override
    protected boolean alignsDevices() {
        return true;
    }

    /** Where a layer's new keys and values go: returns the keys and values to attend to. */
    @FunctionalInterface
    interface KvStore {
        Tensor[] update(int layer, Tensor k, Tensor v);
    }

    /** Last hidden states {@code [B, T, hidden]}, a tensor the caller owns. */
    public Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor out;
            try (PointerScope scope = new PointerScope()) {
                out = ScopeUtil.keep(scope, hiddenStates(inputIds, attentionMask, positionIds, cache));
            }
            return ScopeUtil.handToCaller(out);
        } finally {
            hotswapGuard.unlock();
        }
    }

    @Override
    public void close() {
        super.close();
        invFreq.close();
    }

    @Override
    protected void moveHeldTensors(org.bytedeco.pytorch.Device device) {
        invFreq = movedTensor(invFreq, device);
    }

    /** {@code LlamaDecoderLayer}: pre-norm attention and MLP with residuals. */
    static final class LlamaDecoderLayer extends Module {
        LlamaDecoderLayer(LlamaConfig cfg, int index, Init init) {
            registerModule("self_attn", new LlamaAttention(cfg, index, init));
            registerModule("mlp", new LlamaMLP(cfg, init));
            registerModule("input_layernorm", new RMSNorm(cfg.hiddenSize, cfg.rmsNormEps, init));
            registerModule("post_attention_layernorm", new RMSNorm(cfg.hiddenSize, cfg.rmsNormEps, init));
        }

        /** A child module by name (the native decode step reads the norms' weights and runs the parts itself). */
        Module part(String name) {
            return child(name);
        }

        Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensor mask, KvStore cache, int index) {
            Tensor h = layer("input_layernorm").forward(x);
            Tensor a = ((LlamaAttention) child("self_attn")).forward(h, cos, sin, mask, cache, index);
            Tensor r = x.add(a);
            Tensor m = layer("mlp").forward(layer("post_attention_layernorm").forward(r));
            return r.add(m); // not add_: the norm saved r for backward
        }
    }

    /** {@code LlamaAttention}: q/k/v projections, RoPE, grouped-query SDPA, o projection. */
    static final class LlamaAttention extends Module {
        private final long numHeads;
        private final long numKvHeads;
        private final long headDim;
        private final double scale;

        LlamaAttention(LlamaConfig cfg, int index, Init init) {
            numHeads = cfg.numHeads;
            numKvHeads = cfg.numKvHeads;
            headDim = cfg.headDim;
            scale = 1.0 / Math.sqrt(headDim);
            registerModule("q_proj", new Linear(cfg.hiddenSize, numHeads * headDim, cfg.qkvBias, init));
            registerModule("k_proj", new Linear(cfg.hiddenSize, numKvHeads * headDim, cfg.qkvBias, init));
            registerModule("v_proj", new Linear(cfg.hiddenSize, numKvHeads * headDim, cfg.qkvBias, init));
            registerModule("o_proj", new Linear(numHeads * headDim, cfg.hiddenSize, cfg.oBias, init));
        }

        Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensor mask, KvStore cache, int index) {
            long b = x.size(0);
            long t = x.size(1);
            Tensor q = layer("q_proj").forward(x).view(b, t, numHeads, headDim).transpose(1, 2);
            Tensor k = layer("k_proj").forward(x).view(b, t, numKvHeads, headDim).transpose(1, 2);
            Tensor v = layer("v_proj").forward(x).view(b, t, numKvHeads, headDim).transpose(1, 2);
            q = rotate(q, cos, sin);
            k = rotate(k, cos, sin);
            if (cache != null) {
                Tensor[] kv = cache.update(index, k, v);
                k = kv[0];
                v = kv[1];
            }
            long groups = numHeads / numKvHeads;
            Tensor o = Attention.sdpa(q, Attention.repeatKv(k, groups), Attention.repeatKv(v, groups), mask, scale);
            return layer("o_proj").forward(o.transpose(1, 2).reshape(b, t, numHeads * headDim));
        }

        /**
         * The attention of one new token per row ({@code h} {@code [B, 1, hidden]}) on the native kernels: RoPE at
         * positions {@code past} applied to q and k in place, k and v written into the slot cache, attention over
         * each row's slot (its last {@code window} positions when {@code window > 0}), then o_proj.
         */
        Tensor forwardDecode(Tensor h, SlotKVCache cache, int index, int[] slotOf, long[] past, Tensor invFreq,
                long window) {
            Tensor[] qkv = DecodeProjections.project(h, child("q_proj"), child("k_proj"), child("v_proj"));
            Tensor q = qkv[0];
            Tensor k = qkv[1];
            Tensor v = qkv[2];
            Tensor o = DecodeKernels.ropeAttention(q, k, v, cache.keys(index), cache.values(index), slotOf, past,
                    window, scale, 0, invFreq, 1.0);
            return layer("o_proj").forward(o);
        }

        /**
         * The attention of a prefill ({@code h} {@code [B, T, hidden]}, normed) on the native RoPE: q, k and v
         * projected, RoPE applied in place at positions {@code qpos} ({@code [B · T]}), k and v stored through
         * {@code cache}, then SDPA under {@code mask} (or causal, when {@code causal}) and o_proj. With {@code lastPos} (each row's last position) the
         * queries, the attention and o_proj are of that position alone: {@code [B, 1, hidden]}.
         */
        Tensor forwardPrefill(Tensor h, long[] qpos, long[] lastPos, Tensor invFreq, Tensor mask, boolean causal,
                KvStore cache, int index) {
            long b = h.size(0);
            long t = h.size(1);
            long tq = lastPos == null ? t : 1;
            Tensor q = layer("q_proj").forward(lastPos == null ? h : h.narrow(1, t - 1, 1));
            Tensor k = layer("k_proj").forward(h);
            Tensor v = layer("v_proj").forward(h);
            q = q.is_contiguous() ? q : q.contiguous();
            k = k.is_contiguous() ? k : k.contiguous();
            DecodeKernels.rope(q, numHeads, lastPos == null ? qpos : lastPos, invFreq);
            DecodeKernels.rope(k, numKvHeads, qpos, invFreq);
            Tensor[] kv = cache.update(index, k.view(b, t, numKvHeads, headDim).transpose(1, 2),
                    v.view(b, t, numKvHeads, headDim).transpose(1, 2));
            long groups = numHeads / numKvHeads;
            Tensor m = mask == null || lastPos == null ? mask : mask.narrow(2, t - 1, 1);
            // the last position alone sees every key: no mask then
            Tensor o = Attention.sdpa(q.view(b, tq, numHeads, headDim).transpose(1, 2),
                    Attention.repeatKv(kv[0], groups), Attention.repeatKv(kv[1], groups), m, scale, 0.0,
                    causal && lastPos == null);
            return layer("o_proj").forward(o.transpose(1, 2).reshape(b, tq, numHeads * headDim));
        }

        /** {@code x·cos + rotate_half(x)·sin}, rotate_half(x) = cat(-x2, x1) over the last dim. */
        private Tensor rotate(Tensor x, Tensor cos, Tensor sin) {
            long half = headDim / 2;
            Tensor x1 = x.narrow(-1, 0, half);
            Tensor x2 = x.narrow(-1, half, half);
            Tensor rotated = torch.cat(new TensorVector(x2.neg(), x1), -1);
            return x.mul(cos).add_(rotated.mul_(sin));
        }
    }

    /** {@code LlamaMLP}: {@code down(act(gate(x)) · up(x))}. */
    static final class LlamaMLP extends Module implements dev.peft4j.nn.Layer {
        LlamaMLP(LlamaConfig cfg, Init init) {
            registerModule("gate_proj", new Linear(cfg.hiddenSize, cfg.intermediateSize, cfg.mlpBias, init));
            registerModule("up_proj", new Linear(cfg.hiddenSize, cfg.intermediateSize, cfg.mlpBias, init));
            registerModule("down_proj", new Linear(cfg.intermediateSize, cfg.hiddenSize, cfg.mlpBias, init));
            registerModule("act_fn", Activation.named(cfg.hiddenAct));
        }

        /**
         * The MLP of one new token per row on the native decode kernels: gate and up in one region with the
         * activation and product fused after it, then down_proj; libtorch's forward where a layer has no decode state.
         */
        Tensor forwardDecode(Tensor x) {
            Tensor h = DecodeProjections.gated(x, child("gate_proj"), child("up_proj"), child("act_fn"));
            return h == null ? forward(x) : layer("down_proj").forward(h);
        }

        @Override
        public Tensor forward(Tensor x) {
            Tensor g = layer("act_fn").forward(layer("gate_proj").forward(x));
            return layer("down_proj").forward(g.mul(layer("up_proj").forward(x)));
        }
    }
}
