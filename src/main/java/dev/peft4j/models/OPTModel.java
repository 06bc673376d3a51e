package dev.peft4j.models;

import java.util.Map;
import dev.peft4j.nn.Activation;
import dev.peft4j.nn.Dropout;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.LayerNorm;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.ModuleList;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;

/**
 * transformers' {@code OPTModel}: {@code decoder.embed_tokens} (width {@code word_embed_proj_dim}, projected in and
 * out when it differs from {@code hidden_size}), {@code decoder.embed_positions} (learned, offset by 2), decoder
 * layers pre- or post-norm ({@code do_layer_norm_before}), and {@code decoder.final_layer_norm} for pre-norm models.
 */
public final class OPTModel extends PreTrainedModel {
    final long vocabSize;
    final long hidden;
    final long projDim;
    final int numLayers;
    final long maxPositions;
    private final boolean preNorm;
    private final boolean finalNorm;

    /**
     * The modules {@code config} describes, their tensors made by {@code init} (uninitialised until a state dict or
     * {@link Init#normal} fills them).
     * @throws IllegalArgumentException naming the config file and key, if a required key is missing, has the wrong
     *     type, or asks for something not supported
     */
    public OPTModel(ModelConfig c, Init init) {
        super(c);
        vocabSize = c.getLong("vocab_size");
        hidden = c.getLong("hidden_size");
        projDim = c.getLong("word_embed_proj_dim", hidden);
        numLayers = c.getInt("num_hidden_layers");
        maxPositions = c.getLong("max_position_embeddings");
        long heads = c.getLong("num_attention_heads");
        long ffn = c.getLong("ffn_dim");
        if (hidden % heads != 0) {
            throw new IllegalArgumentException(c.source() + ": hidden_size " + hidden
                    + " is not divisible by num_attention_heads " + heads);
        }
        preNorm = c.getBoolean("do_layer_norm_before", true);
        finalNorm = preNorm && !c.getBoolean("_remove_final_layer_norm", false);
        if (!c.getBoolean("layer_norm_elementwise_affine", true)) {
            throw new IllegalArgumentException(c.source() + ": layer_norm_elementwise_affine=false is not supported");
        }
        boolean bias = c.getBoolean("enable_bias", true);
        Decoder decoder = registerModule("decoder", new Decoder());
        decoder.add("embed_tokens", new Embedding(vocabSize, projDim, init));
        decoder.add("embed_positions", new Embedding(maxPositions + 2, hidden, init));
        if (finalNorm) {
            decoder.add("final_layer_norm", new LayerNorm(hidden, 1e-5, init));
        }
        if (projDim != hidden) {
            decoder.add("project_out", new Linear(hidden, projDim, false, init));
            decoder.add("project_in", new Linear(projDim, hidden, false, init));
        }
        ModuleList<OPTDecoderLayer> layers = decoder.add("layers", new ModuleList<>());
        for (int i = 0; i < numLayers; i++) {
            layers.add(new OPTDecoderLayer(hidden, heads, ffn, bias, preNorm, c, init));
        }
    }

    /** {@code OPTDecoder}: a container for the decoder's parts, named as transformers names them. */
    static final class Decoder extends Module {
        <M extends Module> M add(String name, M m) {
            return registerModule(name, m);
        }

        Layer get(String name) {
            return layer(name);
        }

        boolean has(String name) {
            return children().containsKey(name);
        }
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

    /** Hidden states {@code [B, T, word_embed_proj_dim]}; runs inside the caller's {@link PointerScope}. */
    Tensor hiddenStates(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        Attention.checkIds("input_ids", inputIds);
        long batch = inputIds.size(0);
        long q = inputIds.size(1);
        long past = cache == null ? 0 : cache.length();
        Attention.checkMask(attentionMask, batch, past + q);
        if (past + q > maxPositions) {
            throw new IllegalArgumentException("sequence of " + (past + q) + " positions exceeds max_position_embeddings "
                    + maxPositions);
        }
        Decoder d = (Decoder) child("decoder");
        // placed per module (dispatch): each module's inputs go to its device first, as accelerate's hooks move them
        Map<String, Module> parts = d.children();
        Tensor x = d.get("embed_tokens").forward(aligned(inputIds, parts.get("embed_tokens")));
        if (d.has("project_in")) {
            x = d.get("project_in").forward(aligned(x, parts.get("project_in")));
        }
        // OPTLearnedPositionalEmbedding: positions counted over real tokens, offset by 2
        Tensor pos = positionIds != null ? positionIds : Attention.positionIds(inputIds, attentionMask, batch, q, past);
        Tensor positions = d.get("embed_positions").forward(aligned(pos.add(new Scalar(2)), parts.get("embed_positions")));
        x = aligned(x, parts.get("embed_positions")).add_(positions);
        Tensor mask = Attention.mask(inputIds, attentionMask, q, past, true, 0);
        @SuppressWarnings("unchecked")
        ModuleList<Module> layers = (ModuleList<Module>) parts.get("layers");
        for (int i = 0; i < numLayers; i++) {
            Module l = layers.get(i);
            x = ((OPTDecoderLayer) l).forward(aligned(x, l), aligned(mask, l), cache, i);
        }
        if (d.has("final_layer_norm")) {
            x = d.get("final_layer_norm").forward(aligned(x, parts.get("final_layer_norm")));
        }
        if (d.has("project_out")) {
            x = d.get("project_out").forward(aligned(x, parts.get("project_out")));
        }
        return x;
    }

    /** Last hidden states, a tensor the caller owns. */
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

    /** {@code OPTDecoderLayer}. */
    static final class OPTDecoderLayer extends Module {
        private final boolean preNorm;

        OPTDecoderLayer(long hidden, long heads, long ffn, boolean bias, boolean preNorm, ModelConfig c, Init init) {
            this.preNorm = preNorm;
            registerModule("self_attn", new OPTAttention(hidden, heads, bias, c, init));
            registerModule("self_attn_layer_norm", new LayerNorm(hidden, 1e-5, init));
            registerModule("fc1", new Linear(hidden, ffn, bias, init));
            registerModule("fc2", new Linear(ffn, hidden, bias, init));
            registerModule("final_layer_norm", new LayerNorm(hidden, 1e-5, init));
            registerModule("activation_fn", Activation.named(c.getString("activation_function", "relu")));
            registerModule("dropout", new Dropout(c.getDouble("dropout", 0.1)));
        }

        Tensor forward(Tensor x, Tensor mask, KVCache cache, int index) {
            Tensor h = preNorm ? layer("self_attn_layer_norm").forward(x) : x;
            h = ((OPTAttention) child("self_attn")).forward(h, mask, cache, index);
            x = x.add(layer("dropout").forward(h));
            if (!preNorm) {
                x = layer("self_attn_layer_norm").forward(x);
            }
            h = preNorm ? layer("final_layer_norm").forward(x) : x;
            h = layer("fc2").forward(layer("activation_fn").forward(layer("fc1").forward(h)));
            x = x.add(layer("dropout").forward(h));
            if (!preNorm) {
                x = layer("final_layer_norm").forward(x);
            }
            return x;
        }
    }

    /** {@code OPTAttention}: {@code k_proj}, {@code v_proj}, {@code q_proj}, {@code out_proj}. */
    static final class OPTAttention extends Module {
        private final long hidden;
        private final long heads;
        private final double dropout;

        OPTAttention(long hidden, long heads, boolean bias, ModelConfig c, Init init) {
            this.hidden = hidden;
            this.heads = heads;
            this.dropout = c.getDouble("attention_dropout", 0.0);
            registerModule("k_proj", new Linear(hidden, hidden, bias, init));
            registerModule("v_proj", new Linear(hidden, hidden, bias, init));
            registerModule("q_proj", new Linear(hidden, hidden, bias, init));
            registerModule("out_proj", new Linear(hidden, hidden, bias, init));
        }

        Tensor forward(Tensor x, Tensor mask, KVCache cache, int index) {
            long b = x.size(0);
            long t = x.size(1);
            long hd = hidden / heads;
            Tensor q = layer("q_proj").forward(x).view(b, t, heads, hd).transpose(1, 2);
            Tensor k = layer("k_proj").forward(x).view(b, t, heads, hd).transpose(1, 2);
            Tensor v = layer("v_proj").forward(x).view(b, t, heads, hd).transpose(1, 2);
            if (cache != null) {
                Tensor[] kv = cache.append(index, k, v);
                k = kv[0];
                v = kv[1];
            }
            Tensor o = Attention.sdpa(q, k, v, mask, 1.0 / Math.sqrt(hd), isTraining() ? dropout : 0.0);
            return layer("out_proj").forward(o.transpose(1, 2).reshape(b, t, hidden));
        }
    }
}
