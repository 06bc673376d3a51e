package dev.peft4j.models;

import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;

/** transformers' {@code OPTForCausalLM}: {@code model} ({@link OPTModel}) and {@code lm_head}, tied to the token embeddings. */
public final class OPTForCausalLM extends PreTrainedModel implements CausalLM {
    private final OPTModel model;
    private final boolean tied;

    /**
     * The modules {@code config} describes, their tensors made by {@code init} (uninitialised until a state dict or
     * {@link Init#normal} fills them).
     * @throws IllegalArgumentException naming the config file and key, if a required key is missing, has the wrong
     *     type, or asks for something not supported
     */
    public OPTForCausalLM(ModelConfig config, Init init) {
        super(config);
        model = registerModule("model", new OPTModel(config, init));
        tied = config.getBoolean("tie_word_embeddings", true);
        registerModule("lm_head", new Linear(model.projDim, model.vocabSize, false, init));
        if (tied) {
            setParameter("lm_head.weight", getParameter("model.decoder.embed_tokens.weight"), false).close();
        }
    }

    @Override
    public String baseModelPrefix() {
        return "model";
    }

    @Override
    public boolean isBaseModel() {
        return false;
    }

    @Override
    public Map<String, String> tiedKeys() {
        return tied ? Map.of("lm_head.weight", "model.decoder.embed_tokens.weight") : Map.of();
    }

    @Override
    public Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor logits;
            try (PointerScope scope = new PointerScope()) {
                Tensor h = model.hiddenStates(inputIds, attentionMask, positionIds, cache);
                logits = ScopeUtil.keep(scope, layer("lm_head").forward(h));
            }
            return ScopeUtil.handToCaller(logits);
        } finally {
            hotswapGuard.unlock();
        }
    }

    @Override
    public KVCache newCache() {
        return new KVCache(model.numLayers);
    }
}
