package dev.peft4j.models;

import dev.peft4j.nn.Activation;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.ModuleList;
import dev.peft4j.nn.RMSNorm;
import dev.peft4j.tuners.BaseTunerLayer;
import java.util.ArrayList;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.T_TensorTensor_T;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * transformers' {@code MixtralModel}: token embeddings, decoder layers with Mistral's attention (RoPE, grouped-query,
 * optional sliding window) and a sparse mixture of experts in place of the MLP, a final RMSNorm. Keys:
 * {@code embed_tokens.weight}, {@code layers.N.self_attn.{q,k,v,o}_proj.weight},
 * {@code layers.N.block_sparse_moe.gate.weight} (the router), {@code layers.N.block_sparse_moe.experts.E.{w1,w2,w3}
 * .weight}, {@code layers.N.{input,post_attention}_layernorm.weight}, {@code norm.weight}.
 *
 * <p>Each token goes to the {@code num_experts_per_tok} experts of highest router probability (softmax over all
 * experts, the top-k renormalised to sum to 1, as transformers computes it), and the experts' outputs are summed
 * with those weights. The experts are Linear modules, so adapters target them by name ({@code w1}, {@code w2},
 * {@code w3}, {@code gate}); in a mixed batch each token routed to an expert keeps its row's adapter.
 */
public final class MixtralModel extends PreTrainedModel {
    final MixtralConfig cfg;
    // float32 [head_dim/2]: not a buffer, so that to(bfloat16) leaves it in float32 as transformers' RoPE computes
    private Tensor invFreq; // float32, not a buffer: to(dtype) leaves it float32

    /**
     * The Mixtral decoder stack (embeddings, layers, final norm) of {@code config}'s shape, its parameters made by
     * {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public MixtralModel(ModelConfig config, Init init) {
        super(config);
        cfg = new MixtralConfig(config);
        registerModule("embed_tokens", new Embedding(cfg.vocabSize, cfg.hiddenSize, init));
        ModuleList<Module> layers = registerModule("layers", new ModuleList<>());
        for (int i = 0; i < cfg.numLayers; i++) {
            layers.add(new MixtralDecoderLayer(cfg, init));
        }
        registerModule("norm", new RMSNorm(cfg.hiddenSize, cfg.rmsNormEps, init));
        invFreq = ScopeUtil.detach(org.bytedeco.pytorch.AbstractTensor.create(RopeScaling.of(config).invFreq(cfg.headDim)));
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
    protected boolean alignsDevices() {
        return true;
    }

    @Override
    protected List<java.util.regex.Pattern> ignoredUnexpectedKeys() {
        return List.of(java.util.regex.Pattern.compile(".*rotary_emb\\.inv_freq"));
    }

    /**
     * The last hidden states {@code [B, T, hidden]} (after the final norm); positions from the mask as
     * transformers' {@code generate} computes them. Must run inside a {@link PointerScope}.
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
        // placed per module (dispatch): each module's inputs go to its device first, as accelerate's hooks move them
        Tensor x = layer("embed_tokens").forward(aligned(inputIds, child("embed_tokens")));
        ScalarType dtype = x.scalar_type().intern();
        Tensor freqs = onDeviceOfTensor(pos, invFreq).to(ScalarType.Float).unsqueeze(-1).mul(invFreq);
        Tensor emb = torch.cat(new TensorVector(freqs, freqs), -1);
        Tensor cos = emb.cos().to(dtype).unsqueeze(1);
        Tensor sin = emb.sin().to(dtype).unsqueeze(1);
        @SuppressWarnings("unchecked")
        ModuleList<Module> layers = (ModuleList<Module>) child("layers");
        for (int i = 0; i < cfg.numLayers; i++) {
            Module l = layers.get(i);
            x = ((MixtralDecoderLayer) l).forward(aligned(x, l), aligned(cos, l), aligned(sin, l), aligned(mask, l),
                    cache, i);
        }
        return layer("norm").forward(aligned(x, child("norm")));
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

    /** The fields of a {@code mixtral} config the model reads. */
    static final class MixtralConfig {
        final long vocabSize;
        final long hiddenSize;
        final long intermediateSize;
        final int numLayers;
        final long numHeads;
        final long numKvHeads;
        final long headDim;
        final double rmsNormEps;
        final String hiddenAct;
        final boolean tieWordEmbeddings;
        final long slidingWindow;
        final int numExperts;
        final int topK;

        MixtralConfig(ModelConfig c) {
            vocabSize = c.getLong("vocab_size");
            hiddenSize = c.getLong("hidden_size");
            intermediateSize = c.getLong("intermediate_size");
            numLayers = c.getInt("num_hidden_layers");
            numHeads = c.getLong("num_attention_heads");
            numKvHeads = c.getLong("num_key_value_heads", numHeads);
            if (numHeads % numKvHeads != 0) {
                throw new IllegalArgumentException(c.source() + ": num_attention_heads " + numHeads
                        + " is not divisible by num_key_value_heads " + numKvHeads);
            }
            if (hiddenSize % numHeads != 0 && !c.has("head_dim")) {
                throw new IllegalArgumentException(c.source() + ": hidden_size " + hiddenSize
                        + " is not divisible by num_attention_heads " + numHeads);
            }
            headDim = c.getLong("head_dim", hiddenSize / numHeads);
            rmsNormEps = c.getDouble("rms_norm_eps", 1e-5);
            hiddenAct = c.getString("hidden_act", "silu");
            tieWordEmbeddings = c.getBoolean("tie_word_embeddings", false);
            slidingWindow = c.getLong("sliding_window", 0);
            numExperts = c.getInt("num_local_experts", 8);
            topK = c.getInt("num_experts_per_tok", 2);
            if (topK < 1 || topK > numExperts) {
                throw new IllegalArgumentException(c.source() + ": num_experts_per_tok " + topK
                        + " must be between 1 and num_local_experts " + numExperts);
            }
            if (c.getBoolean("attention_bias", false)) {
                throw new IllegalArgumentException(c.source() + ": mixtral with attention_bias=true is not supported");
            }
            if (c.getDouble("router_jitter_noise", 0.0) != 0.0) {
                // jitter only acts in training; inference routing is unaffected, which is what this model runs
                org.slf4j.LoggerFactory.getLogger(MixtralModel.class).debug("router_jitter_noise ignored (inference)");
            }
        }
    }

    /** {@code MixtralDecoderLayer}: pre-norm attention and sparse MoE with residuals. */
    static final class MixtralDecoderLayer extends Module {
        MixtralDecoderLayer(MixtralConfig cfg, Init init) {
            registerModule("self_attn", new MixtralAttention(cfg, init));
            registerModule("block_sparse_moe", new MixtralSparseMoeBlock(cfg, init));
            registerModule("input_layernorm", new RMSNorm(cfg.hiddenSize, cfg.rmsNormEps, init));
            registerModule("post_attention_layernorm", new RMSNorm(cfg.hiddenSize, cfg.rmsNormEps, init));
        }

        Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensor mask, KVCache cache, int index) {
            Tensor h = layer("input_layernorm").forward(x);
            Tensor r = x.add(((MixtralAttention) child("self_attn")).forward(h, cos, sin, mask, cache, index));
            return r.add(layer("block_sparse_moe").forward(layer("post_attention_layernorm").forward(r)));
        }
    }

    /** {@code MixtralAttention}: q/k/v projections, RoPE, grouped-query SDPA (sliding window in the mask), o. */
    static final class MixtralAttention extends Module {
        private final long numHeads;
        private final long numKvHeads;
        private final long headDim;

        MixtralAttention(MixtralConfig cfg, Init init) {
            numHeads = cfg.numHeads;
            numKvHeads = cfg.numKvHeads;
            headDim = cfg.headDim;
            registerModule("q_proj", new Linear(cfg.hiddenSize, numHeads * headDim, false, init));
            registerModule("k_proj", new Linear(cfg.hiddenSize, numKvHeads * headDim, false, init));
            registerModule("v_proj", new Linear(cfg.hiddenSize, numKvHeads * headDim, false, init));
            registerModule("o_proj", new Linear(numHeads * headDim, cfg.hiddenSize, false, init));
        }

        Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensor mask, KVCache cache, int index) {
            long b = x.size(0);
            long t = x.size(1);
            Tensor q = rotate(layer("q_proj").forward(x).view(b, t, numHeads, headDim).transpose(1, 2), cos, sin);
            Tensor k = rotate(layer("k_proj").forward(x).view(b, t, numKvHeads, headDim).transpose(1, 2), cos, sin);
            Tensor v = layer("v_proj").forward(x).view(b, t, numKvHeads, headDim).transpose(1, 2);
            if (cache != null) {
                Tensor[] kv = cache.append(index, k, v);
                k = kv[0];
                v = kv[1];
            }
            long groups = numHeads / numKvHeads;
            Tensor o = Attention.sdpa(q, Attention.repeatKv(k, groups), Attention.repeatKv(v, groups), mask,
                    1.0 / Math.sqrt(headDim));
            return layer("o_proj").forward(o.transpose(1, 2).reshape(b, t, numHeads * headDim));
        }

        /** {@code x·cos + rotate_half(x)·sin}. */
        private Tensor rotate(Tensor x, Tensor cos, Tensor sin) {
            long half = headDim / 2;
            Tensor rotated = torch.cat(new TensorVector(x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)), -1);
            return x.mul(cos).add_(rotated.mul_(sin));
        }
    }

    /**
     * {@code MixtralSparseMoeBlock}: the router {@code gate} scores each token over the experts; each token's top-k
     * experts run on it and their outputs are summed, weighted by the renormalised router probabilities.
     */
    static final class MixtralSparseMoeBlock extends Module implements Layer {
        private final int numExperts;
        private final int topK;

        MixtralSparseMoeBlock(MixtralConfig cfg, Init init) {
            numExperts = cfg.numExperts;
            topK = cfg.topK;
            registerModule("gate", new Linear(cfg.hiddenSize, numExperts, false, init));
            ModuleList<Module> experts = registerModule("experts", new ModuleList<>());
            for (int e = 0; e < numExperts; e++) {
                experts.add(new MixtralBlockSparseTop2MLP(cfg, init));
            }
        }

        @Override
        public Tensor forward(Tensor x) {
            long[] shape = x.shape();
            long d = shape[shape.length - 1];
            Tensor h = x.reshape(-1, d);
            long tokens = h.size(0);
            // a mixed batch names one adapter per row: the router and the experts see tokens, so each token
            // carries its row's name
            List<String> rowNames = BaseTunerLayer.currentAdapterNames();
            List<String> tokenNames = rowNames == null ? null : perToken(rowNames, shape[0], tokens);
            Tensor routerLogits = run(tokenNames, () -> layer("gate").forward(h));
            Tensor probs = routerLogits.softmax(1, new ScalarTypeOptional(ScalarType.Float));
            T_TensorTensor_T top = probs.topk(topK, -1, true, true);
            Tensor weights = top.get0();
            Tensor selected = top.get1();
            weights = weights.div(weights.sum(new long[] {-1}, true, new ScalarTypeOptional())).to(h.scalar_type());
            Tensor out = torch.zeros_like(h);
            @SuppressWarnings("unchecked")
            ModuleList<Module> experts = (ModuleList<Module>) child("experts");
            for (int e = 0; e < numExperts; e++) {
                Tensor hit = selected.eq(new Scalar(e));
                // the tokens routed to expert e; on meta (no data to route by) every token, which keeps the shapes
                Tensor idx = h.is_meta() ? Attention.arange(0, h.size(0), h) : hit.any(-1).nonzero().squeeze(1);
                long n = idx.size(0);
                if (n == 0) {
                    continue;
                }
                // each token picks an expert at most once: the masked sum is that slot's weight
                Tensor w = weights.mul(hit.to(weights.scalar_type())).sum(new long[] {-1}, false,
                        new ScalarTypeOptional());
                w = dev.peft4j.nn.DeviceOps.indexSelect(w, 0, idx).unsqueeze(1);
                Tensor in = dev.peft4j.nn.DeviceOps.indexSelect(h, 0, idx);
                List<String> names = tokenNames == null ? null : select(tokenNames, idx);
                Layer expert = (Layer) experts.get(e);
                Tensor y = run(names, () -> expert.forward(in)).mul(w);
                out.index_add_(0, idx, y.to(h.scalar_type()));
            }
            return out.view(shape);
        }

        private static List<String> perToken(List<String> rowNames, long rows, long tokens) {
            if (rowNames.size() != rows) {
                throw new IllegalArgumentException("Length of `adapter_names` should be the same as the number of "
                        + "inputs, but got " + rowNames.size() + " and " + rows + " respectively.");
            }
            long perRow = tokens / rows;
            List<String> out = new ArrayList<>((int) tokens);
            for (String n : rowNames) {
                for (long t = 0; t < perRow; t++) {
                    out.add(n);
                }
            }
            return out;
        }

        private static List<String> select(List<String> names, Tensor idx) {
            long[] rows = new long[(int) idx.size(0)];
            if (idx.is_meta()) {
                // every token (see the routing): the arange's values, which meta does not hold
                java.util.Arrays.setAll(rows, i -> i);
            } else {
                // read on the CPU: data_ptr of a tensor on another device is not host memory
                try (org.bytedeco.pytorch.Device cpu = new org.bytedeco.pytorch.Device("cpu");
                        Tensor c = idx.to(cpu, ScalarType.Long).contiguous()) {
                    c.data_ptr_long().get(rows);
                }
            }
            List<String> out = new ArrayList<>(rows.length);
            for (long r : rows) {
                out.add(names.get((int) r));
            }
            return out;
        }

        private static Tensor run(List<String> names, java.util.function.Supplier<Tensor> body) {
            return names == null ? body.get() : BaseTunerLayer.withAdapterNames(names, body);
        }
    }

    /** {@code MixtralBlockSparseTop2MLP}: one expert, {@code w2(act(w1(x)) · w3(x))}. */
    static final class MixtralBlockSparseTop2MLP extends Module implements Layer {
        MixtralBlockSparseTop2MLP(MixtralConfig cfg, Init init) {
            registerModule("w1", new Linear(cfg.hiddenSize, cfg.intermediateSize, false, init));
            registerModule("w2", new Linear(cfg.intermediateSize, cfg.hiddenSize, false, init));
            registerModule("w3", new Linear(cfg.hiddenSize, cfg.intermediateSize, false, init));
            registerModule("act_fn", Activation.named(cfg.hiddenAct));
        }

        @Override
        public Tensor forward(Tensor x) {
            Tensor g = layer("act_fn").forward(layer("w1").forward(x));
            return layer("w2").forward(g.mul(layer("w3").forward(x)));
        }
    }
}
