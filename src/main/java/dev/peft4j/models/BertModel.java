package dev.peft4j.models;

import dev.peft4j.nn.Activation;
import dev.peft4j.nn.Dropout;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.LayerNorm;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.ModuleList;
import java.util.List;
import java.util.regex.Pattern;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * transformers' {@code BertModel}: {@code embeddings} (word, absolute position, token type, LayerNorm),
 * {@code encoder.layer.N} (bidirectional self-attention {@code attention.self.{query,key,value}},
 * {@code attention.output}, {@code intermediate}, {@code output}) and, optionally, {@code pooler}.
 * Positions are {@code 0..T-1} (absolute, as in transformers): pad on the right.
 */
public final class BertModel extends PreTrainedModel {
    final long vocabSize;
    final long hidden;
    final int numLayers;
    final long maxPositions;
    final double eps;
    final String hiddenAct;
    private final boolean pooler;

    /**
     * The modules {@code config} describes, pooler included, their tensors made by {@code init} (uninitialised until a
     * state dict or {@link Init#normal} fills them).
     * @throws IllegalArgumentException naming the config file and key, if a required key is missing, has the wrong
     *     type, or asks for something not supported
     */
    public BertModel(ModelConfig c, Init init) {
        this(c, init, true);
    }

    BertModel(ModelConfig c, Init init, boolean addPooler) {
        super(c);
        vocabSize = c.getLong("vocab_size");
        hidden = c.getLong("hidden_size");
        numLayers = c.getInt("num_hidden_layers");
        maxPositions = c.getLong("max_position_embeddings", 512);
        eps = c.getDouble("layer_norm_eps", 1e-12);
        hiddenAct = c.getString("hidden_act", "gelu");
        long heads = c.getLong("num_attention_heads");
        if (hidden % heads != 0) {
            throw new IllegalArgumentException(c.source() + ": hidden_size " + hidden
                    + " is not divisible by num_attention_heads " + heads);
        }
        String posType = c.getString("position_embedding_type", "absolute");
        if (!posType.equals("absolute")) {
            throw new IllegalArgumentException(c.source() + ": position_embedding_type '" + posType
                    + "' is not supported; supported: absolute");
        }
        if (c.getBoolean("is_decoder", false)) {
            throw new IllegalArgumentException(c.source() + ": BERT as a decoder (is_decoder=true) is not supported");
        }
        double drop = c.getDouble("hidden_dropout_prob", 0.1);
        Group emb = registerModule("embeddings", new Group());
        emb.add("word_embeddings", new Embedding(vocabSize, hidden, init));
        emb.add("position_embeddings", new Embedding(maxPositions, hidden, init));
        emb.add("token_type_embeddings", new Embedding(c.getLong("type_vocab_size", 2), hidden, init));
        emb.add("LayerNorm", new LayerNorm(hidden, eps, init));
        emb.add("dropout", new Dropout(drop));
        Group encoder = registerModule("encoder", new Group());
        ModuleList<BertLayer> layers = encoder.add("layer", new ModuleList<>());
        for (int i = 0; i < numLayers; i++) {
            layers.add(new BertLayer(c, hidden, heads, init));
        }
        this.pooler = addPooler;
        if (addPooler) {
            registerModule("pooler", new Group()).add("dense", new Linear(hidden, hidden, true, init));
        }
    }

    /** A container module named as transformers names it (BertEmbeddings, BertEncoder, BertPooler, ...). */
    static final class Group extends Module {
        <M extends Module> M add(String name, M m) {
            return registerModule(name, m);
        }

        Layer get(String name) {
            return layer(name);
        }
    }

    @Override
    public String baseModelPrefix() {
        return "bert";
    }

    @Override
    public boolean isBaseModel() {
        return true;
    }

    @Override
    protected boolean alignsDevices() {
        return true;
    }

    /** Older checkpoints store {@code embeddings.position_ids}. */
    static final List<Pattern> IGNORED = List.of(Pattern.compile(".*embeddings\\.position_ids"));

    @Override
    protected List<Pattern> ignoredUnexpectedKeys() {
        return IGNORED;
    }

    /** Last hidden states {@code [B, T, hidden]}; runs inside the caller's {@link PointerScope}. */
    Tensor hiddenStates(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds) {
        Attention.checkIds("input_ids", inputIds);
        long batch = inputIds.size(0);
        long t = inputIds.size(1);
        Attention.checkMask(attentionMask, batch, t);
        if (t > maxPositions) {
            throw new IllegalArgumentException("sequence of " + t + " exceeds max_position_embeddings " + maxPositions);
        }
        Group emb = (Group) child("embeddings");
        // placed per module (dispatch): the embeddings (one unit) and each layer take their inputs on their device
        Tensor ids = aligned(inputIds, emb);
        Tensor types = tokenTypeIds != null ? aligned(tokenTypeIds, emb) : torch.zeros_like(ids);
        Tensor x = emb.get("word_embeddings").forward(ids)
                .add_(emb.get("token_type_embeddings").forward(types))
                .add_(emb.get("position_embeddings").forward(Attention.arange(0, t, ids).view(1, t)));
        x = emb.get("dropout").forward(emb.get("LayerNorm").forward(x));
        Tensor mask = Attention.mask(inputIds, attentionMask, t, 0, false, 0);
        @SuppressWarnings("unchecked")
        ModuleList<Module> layers = (ModuleList<Module>) ((Group) child("encoder")).children().get("layer");
        for (int i = 0; i < numLayers; i++) {
            Module l = layers.get(i);
            x = ((BertLayer) l).forward(aligned(x, l), aligned(mask, l));
        }
        return x;
    }

    /** {@code tanh(dense(h[:, 0]))}; runs inside the caller's scope. */
    Tensor pooled(Tensor hiddenStates) {
        if (!pooler) {
            throw new IllegalStateException("this BertModel was built without a pooler");
        }
        Module pool = child("pooler");
        return torch.tanh(((Group) pool).get("dense").forward(aligned(hiddenStates.select(1, 0), pool)));
    }

    /** Last hidden states {@code [B, T, hidden]} (a tensor the caller owns); {@code tokenTypeIds} may be null (zeros). */
    public Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor out;
            try (PointerScope scope = new PointerScope()) {
                out = ScopeUtil.keep(scope, hiddenStates(inputIds, attentionMask, tokenTypeIds));
            }
            return ScopeUtil.handToCaller(out);
        } finally {
            hotswapGuard.unlock();
        }
    }

    /** The pooler output {@code [B, hidden]} (a tensor the caller owns). */
    public Tensor pooledOutput(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds) {
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            out = ScopeUtil.keep(scope, pooled(hiddenStates(inputIds, attentionMask, tokenTypeIds)));
        }
        return ScopeUtil.handToCaller(out);
    }

    /** {@code BertLayer}: attention (self + output), intermediate, output. */
    static final class BertLayer extends Module {
        private final long hidden;
        private final long heads;
        private final double attnDropout;

        BertLayer(ModelConfig c, long hidden, long heads, Init init) {
            this.hidden = hidden;
            this.heads = heads;
            this.attnDropout = c.getDouble("attention_probs_dropout_prob", 0.1);
            double eps = c.getDouble("layer_norm_eps", 1e-12);
            double drop = c.getDouble("hidden_dropout_prob", 0.1);
            Group attention = registerModule("attention", new Group());
            Group self = attention.add("self", new Group());
            self.add("query", new Linear(hidden, hidden, true, init));
            self.add("key", new Linear(hidden, hidden, true, init));
            self.add("value", new Linear(hidden, hidden, true, init));
            self.add("dropout", new Dropout(attnDropout));
            Group attnOut = attention.add("output", new Group());
            attnOut.add("dense", new Linear(hidden, hidden, true, init));
            attnOut.add("LayerNorm", new LayerNorm(hidden, eps, init));
            attnOut.add("dropout", new Dropout(drop));
            long inter = c.getLong("intermediate_size");
            Group intermediate = registerModule("intermediate", new Group());
            intermediate.add("dense", new Linear(hidden, inter, true, init));
            intermediate.add("intermediate_act_fn", Activation.named(c.getString("hidden_act", "gelu")));
            Group output = registerModule("output", new Group());
            output.add("dense", new Linear(inter, hidden, true, init));
            output.add("LayerNorm", new LayerNorm(hidden, eps, init));
            output.add("dropout", new Dropout(drop));
        }

        Tensor forward(Tensor x, Tensor mask) {
            long b = x.size(0);
            long t = x.size(1);
            long hd = hidden / heads;
            Group attention = (Group) child("attention");
            Group self = (Group) attention.children().get("self");
            Tensor q = self.get("query").forward(x).view(b, t, heads, hd).transpose(1, 2);
            Tensor k = self.get("key").forward(x).view(b, t, heads, hd).transpose(1, 2);
            Tensor v = self.get("value").forward(x).view(b, t, heads, hd).transpose(1, 2);
            Tensor ctx = Attention.sdpa(q, k, v, mask, 1.0 / Math.sqrt(hd), isTraining() ? attnDropout : 0.0)
                    .transpose(1, 2).reshape(b, t, hidden);
            Group ao = (Group) attention.children().get("output");
            Tensor a = ao.get("LayerNorm").forward(ao.get("dropout").forward(ao.get("dense").forward(ctx)).add_(x));
            Group inter = (Group) child("intermediate");
            Tensor i = inter.get("intermediate_act_fn").forward(inter.get("dense").forward(a));
            Group out = (Group) child("output");
            return out.get("LayerNorm").forward(out.get("dropout").forward(out.get("dense").forward(i)).add_(a));
        }
    }
}
