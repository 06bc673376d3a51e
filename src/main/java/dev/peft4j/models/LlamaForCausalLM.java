package dev.peft4j.models;

import dev.peft4j.nn.Init;
import org.bytedeco.pytorch.Tensor;

/**
 * transformers' {@code LlamaForCausalLM} (and {@code MistralForCausalLM}, {@code Qwen2ForCausalLM}): {@code model}
 * ({@link LlamaModel}) and {@code lm_head}, tied to {@code model.embed_tokens} when {@code tie_word_embeddings}.
 *
 * <p>Without explicit position ids, positions come from the attention mask (cumsum − 1), as transformers'
 * {@code generate} computes them: a left-padded row gets the positions it would have unpadded.
 */
public final class LlamaForCausalLM extends PreTrainedCausalLM {
    private final LlamaModel model;

    /**
     * A Llama-family causal LM (Llama, Mistral, Qwen2) of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public LlamaForCausalLM(ModelConfig config, Init init) {
        super(config, "model");
        model = registerModule("model", new LlamaModel(config, init));
        registerHead(model.cfg.hiddenSize, model.cfg.vocabSize,
                model.cfg.tieWordEmbeddings ? "model.embed_tokens.weight" : null, init);
    }

    @Override
    protected java.util.List<java.util.regex.Pattern> ignoredUnexpectedKeys() {
        return java.util.List.of(java.util.regex.Pattern.compile(".*rotary_emb\\.inv_freq"));
    }

    @Override
    Tensor hiddenStates(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        return model.hiddenStates(inputIds, attentionMask, positionIds, cache);
    }

    @Override
    Tensor hiddenStatesSlots(Tensor inputIds, SlotKVCache cache, int[] slotOf, long[] past) {
        return model.hiddenStatesSlots(inputIds, cache, slotOf, past);
    }

    @Override
    public boolean supportsSlotCache() {
        return true;
    }

    @Override
    public SlotKVCache newSlotCache(int slots, int maxLength) {
        return new SlotKVCache(model.cfg.numLayers, slots, maxLength, model.cfg.numKvHeads, model.cfg.headDim,
                model.activationDtype(), layerDevices("model.layers"));
    }

    @Override
    public KVCache newCache() {
        return new KVCache(model.cfg.numLayers);
    }
}
