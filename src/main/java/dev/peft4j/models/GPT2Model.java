package dev.peft4j.models;

import dev.peft4j.nn.Activation;
import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Dropout;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.LayerNorm;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.ModuleList;
import java.util.List;
import java.util.regex.Pattern;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;

/**
 * transformers' {@code GPT2Model}: token ({@code wte}) and learned position ({@code wpe}) embeddings, pre-norm blocks
 * {@code h.N} with {@link Conv1D} projections ({@code attn.c_attn}, {@code attn.c_proj}, {@code mlp.c_fc},
 * {@code mlp.c_proj}), final {@code ln_f}.
 *
 * <p>Without explicit position ids, positions come from the attention mask (cumsum − 1), as transformers'
 * {@code generate} computes them, so left padding keeps each row's positions.
 */
public final class GPT2Model extends PreTrainedModel {
    final long vocabSize;
    final long hidden;
    final int numLayers;
    final long maxPositions;

    /**
     * The modules {@code config} describes, their tensors made by {@code init} (uninitialised until a state dict or
     * {@link Init#normal} fills them).
     * @throws IllegalArgumentException naming the config file and key, if a required key is missing, has the wrong
     *     type, or asks for something not supported
     */
    public GPT2Model(ModelConfig config, Init init) {
        super(config);
        vocabSize = config.getLong("vocab_size");
        hidden = config.getLong("n_embd");
        numLayers = config.getInt("n_layer");
        maxPositions = config.getLong("n_positions");
        long heads = config.getLong("n_head");
        if (hidden % heads != 0) {
            throw new IllegalArgumentException(config.source() + ": n_embd " + hidden + " is not divisible by n_head " + heads);
        }
        long inner = config.has("n_inner") ? config.getLong("n_inner") : 4 * hidden;
        double eps = config.getDouble("layer_norm_epsilon", 1e-5);
        String act = config.getString("activation_function", "gelu_new");
        boolean scaleWeights = config.getBoolean("scale_attn_weights", true);
        boolean byLayer = config.getBoolean("scale_attn_by_inverse_layer_idx", false);
        registerModule("wte", new Embedding(vocabSize, hidden, init));
        registerModule("wpe", new Embedding(maxPositions, hidden, init));
        registerModule("drop", new Dropout(config.getDouble("embd_pdrop", 0.1)));
        ModuleList<GPT2Block> h = registerModule("h", new ModuleList<>());
        for (int i = 0; i < numLayers; i++) {
            double scale = (scaleWeights ? 1.0 / Math.sqrt(hidden / heads) : 1.0) / (byLayer ? i + 1 : 1);
            h.add(new GPT2Block(hidden, heads, inner, eps, act, scale, config, init));
        }
        registerModule("ln_f", new LayerNorm(hidden, eps, init));
    }

    @Override
    public String baseModelPrefix() {
        return "transformer";
    }

    @Override
    public boolean isBaseModel() {
        return true;
    }

    @Override
    protected boolean alignsDevices() {
        return true;
    }

    /** Old checkpoints carry the causal-mask buffers {@code attn.bias} and {@code attn.masked_bias}. */
    static final List<Pattern> IGNORED = List.of(Pattern.compile(".*attn\\.masked_bias"),
            Pattern.compile(".*h\\.\\d+\\.attn\\.bias"));

    @Override
    protected List<Pattern> ignoredUnexpectedKeys() {
        return IGNORED;
    }

    /** Last hidden states after {@code ln_f}; runs inside the caller's {@link PointerScope}. */
    Tensor hiddenStates(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        Attention.checkIds("input_ids", inputIds);
        long batch = inputIds.size(0);
        long q = inputIds.size(1);
        long past = cache == null ? 0 : cache.length();
        Attention.checkMask(attentionMask, batch, past + q);
        if (past + q > maxPositions) {
            throw new IllegalArgumentException("sequence of " + (past + q) + " positions exceeds n_positions " + maxPositions);
        }
        Tensor pos = positionIds != null ? positionIds : Attention.positionIds(inputIds, attentionMask, batch, q, past);
        // placed per module (dispatch): each module's inputs go to its device first, as accelerate's hooks move them
        Tensor x = layer("wte").forward(aligned(inputIds, child("wte")));
        Tensor wpe = layer("wpe").forward(aligned(pos, child("wpe")));
        x = x.add_(aligned(wpe, child("wte")));
        x = layer("drop").forward(x);
        Tensor mask = Attention.mask(inputIds, attentionMask, q, past, true, 0);
        @SuppressWarnings("unchecked")
        ModuleList<Module> h = (ModuleList<Module>) child("h");
        for (int i = 0; i < numLayers; i++) {
            Module block = h.get(i);
            x = ((GPT2Block) block).forward(aligned(x, block), aligned(mask, block), cache, i);
        }
        return layer("ln_f").forward(aligned(x, child("ln_f")));
    }

    /** Last hidden states {@code [B, T, n_embd]}, a tensor the caller owns. */
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

    /** {@code GPT2Block}: {@code x + attn(ln_1(x))}, then {@code x + mlp(ln_2(x))}. */
    static final class GPT2Block extends Module {
        GPT2Block(long hidden, long heads, long inner, double eps, String act, double scale, ModelConfig c, Init init) {
            registerModule("ln_1", new LayerNorm(hidden, eps, init));
            registerModule("attn", new GPT2Attention(hidden, heads, scale, c, init));
            registerModule("ln_2", new LayerNorm(hidden, eps, init));
            registerModule("mlp", new GPT2MLP(hidden, inner, act, c, init));
        }

        Tensor forward(Tensor x, Tensor mask, KVCache cache, int index) {
            Tensor a = ((GPT2Attention) child("attn")).forward(layer("ln_1").forward(x), mask, cache, index);
            Tensor r = x.add(a);
            return r.add(layer("mlp").forward(layer("ln_2").forward(r))); // not add_: ln_2 saved r for backward
        }
    }

    /** {@code GPT2Attention}: fused {@code c_attn} → q, k, v; causal SDPA; {@code c_proj}. */
    static final class GPT2Attention extends Module {
        private final long hidden;
        private final long heads;
        private final double scale;
        private final double attnDropout;

        GPT2Attention(long hidden, long heads, double scale, ModelConfig c, Init init) {
            this.hidden = hidden;
            this.heads = heads;
            this.scale = scale;
            this.attnDropout = c.getDouble("attn_pdrop", 0.1);
            registerModule("c_attn", new Conv1D(3 * hidden, hidden, init));
            registerModule("c_proj", new Conv1D(hidden, hidden, init));
            registerModule("attn_dropout", new Dropout(attnDropout));
            registerModule("resid_dropout", new Dropout(c.getDouble("resid_pdrop", 0.1)));
        }

        Tensor forward(Tensor x, Tensor mask, KVCache cache, int index) {
            long b = x.size(0);
            long t = x.size(1);
            long hd = hidden / heads;
            TensorVector qkv = layer("c_attn").forward(x).split(hidden, 2);
            Tensor q = qkv.get(0).view(b, t, heads, hd).transpose(1, 2);
            Tensor k = qkv.get(1).view(b, t, heads, hd).transpose(1, 2);
            Tensor v = qkv.get(2).view(b, t, heads, hd).transpose(1, 2);
            if (cache != null) {
                Tensor[] kv = cache.append(index, k, v);
                k = kv[0];
                v = kv[1];
            }
            Tensor o = Attention.sdpa(q, k, v, mask, scale, isTraining() ? attnDropout : 0.0);
            Tensor y = layer("c_proj").forward(o.transpose(1, 2).reshape(b, t, hidden));
            return layer("resid_dropout").forward(y);
        }
    }

    /** {@code GPT2MLP}: {@code dropout(c_proj(act(c_fc(x))))}. */
    static final class GPT2MLP extends Module implements Layer {
        GPT2MLP(long hidden, long inner, String act, ModelConfig c, Init init) {
            registerModule("c_fc", new Conv1D(inner, hidden, init));
            registerModule("c_proj", new Conv1D(hidden, inner, init));
            registerModule("act", Activation.named(act));
            registerModule("dropout", new Dropout(c.getDouble("resid_pdrop", 0.1)));
        }

        @Override
        public Tensor forward(Tensor x) {
            Tensor y = layer("c_proj").forward(layer("act").forward(layer("c_fc").forward(x)));
            return layer("dropout").forward(y);
        }
    }
}
