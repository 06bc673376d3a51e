package dev.peft4j.models;

import dev.peft4j.nn.Init;
import org.bytedeco.pytorch.Tensor;

/** transformers' {@code OPTForCausalLM}: {@code model} ({@link OPTModel}) and {@code lm_head}, tied to the token embeddings. */
public final class OPTForCausalLM extends PreTrainedCausalLM {
    private final OPTModel model;

    /**
     * The modules {@code config} describes, their tensors made by {@code init} (uninitialised until a state dict or
     * {@link Init#normal} fills them).
     * @throws IllegalArgumentException naming the config file and key, if a required key is missing, has the wrong
     *     type, or asks for something not supported
     */
    public OPTForCausalLM(ModelConfig config, Init init) {
        super(config, "model");
        model = registerModule("model", new OPTModel(config, init));
        registerHead(model.projDim, model.vocabSize,
                config.getBoolean("tie_word_embeddings", true) ? "model.decoder.embed_tokens.weight" : null, init);
    }

    @Override
    Tensor hiddenStates(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        return model.hiddenStates(inputIds, attentionMask, positionIds, cache);
    }

    @Override
    public KVCache newCache() {
        return new KVCache(model.numLayers);
    }
}
