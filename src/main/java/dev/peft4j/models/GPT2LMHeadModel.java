package dev.peft4j.models;

import dev.peft4j.nn.Init;
import java.util.List;
import java.util.regex.Pattern;
import org.bytedeco.pytorch.Tensor;

/** transformers' {@code GPT2LMHeadModel}: {@code transformer} ({@link GPT2Model}) and {@code lm_head}, tied to {@code wte}. */
public final class GPT2LMHeadModel extends PreTrainedCausalLM {
    private final GPT2Model transformer;

    /**
     * The modules {@code config} describes, their tensors made by {@code init} (uninitialised until a state dict or
     * {@link Init#normal} fills them).
     * @throws IllegalArgumentException naming the config file and key, if a required key is missing, has the wrong
     *     type, or asks for something not supported
     */
    public GPT2LMHeadModel(ModelConfig config, Init init) {
        super(config, "transformer");
        transformer = registerModule("transformer", new GPT2Model(config, init));
        registerHead(transformer.hidden, transformer.vocabSize,
                config.getBoolean("tie_word_embeddings", true) ? "transformer.wte.weight" : null, init);
    }

    @Override
    protected List<Pattern> ignoredUnexpectedKeys() {
        return GPT2Model.IGNORED;
    }

    @Override
    Tensor hiddenStates(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        return transformer.hiddenStates(inputIds, attentionMask, positionIds, cache);
    }

    @Override
    public KVCache newCache() {
        return new KVCache(transformer.numLayers);
    }
}
