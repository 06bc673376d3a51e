package dev.peft4j.models;

import dev.peft4j.nn.Init;
import java.util.List;
import java.util.regex.Pattern;
import org.bytedeco.pytorch.Tensor;

/**
 * transformers' {@code MixtralForCausalLM}: {@code model} ({@link MixtralModel}, sparse mixture-of-experts layers)
 * and {@code lm_head}, tied to {@code model.embed_tokens} when {@code tie_word_embeddings}. Positions come from the
 * attention mask as in {@link LlamaForCausalLM}. The router's auxiliary loss is not computed (inference).
 */
public final class MixtralForCausalLM extends PreTrainedCausalLM {
    private final MixtralModel model;

    /**
     * A Mixtral causal LM of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public MixtralForCausalLM(ModelConfig config, Init init) {
        super(config, "model");
        model = registerModule("model", new MixtralModel(config, init));
        registerHead(model.cfg.hiddenSize, model.cfg.vocabSize,
                model.cfg.tieWordEmbeddings ? "model.embed_tokens.weight" : null, init);
    }

    @Override
    protected List<Pattern> ignoredUnexpectedKeys() {
        return List.of(Pattern.compile(".*rotary_emb\\.inv_freq"));
    }

    @Override
    Tensor hiddenStates(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        return model.hiddenStates(inputIds, attentionMask, positionIds, cache);
    }

    @Override
    public KVCache newCache() {
        return new KVCache(model.cfg.numLayers);
    }
}
