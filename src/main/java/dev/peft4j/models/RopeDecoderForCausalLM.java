package dev.peft4j.models;

import dev.peft4j.nn.Init;
import java.util.List;
import java.util.regex.Pattern;
import org.bytedeco.pytorch.Tensor;

/**
 * A {@link RopeDecoderModel} under {@code model} with {@code lm_head} (tied to {@code model.embed_tokens} when
 * {@code tie_word_embeddings}, Gemma's default): {@link GemmaForCausalLM}, {@link Gemma2ForCausalLM},
 * {@link Gemma3ForCausalLM}, {@link Qwen3ForCausalLM}, {@link Phi3ForCausalLM}. Logits are soft-capped when the
 * config sets {@code final_logit_softcapping}.
 *
 * <p>Without explicit position ids, positions come from the attention mask (cumsum − 1), as transformers'
 * {@code generate} computes them: a left-padded row gets the positions it would have unpadded.
 */
public abstract class RopeDecoderForCausalLM extends PreTrainedCausalLM {
    private final RopeDecoderModel model;

    RopeDecoderForCausalLM(ModelConfig config, Init init, RopeDecoderModel model) {
        super(config, "model");
        this.model = registerModule("model", model);
        RopeDecoderConfig cfg = model.stack.cfg;
        registerHead(cfg.hiddenSize, cfg.vocabSize, cfg.tieWordEmbeddings ? "model.embed_tokens.weight" : null, init);
    }

    @Override
    protected final List<Pattern> ignoredUnexpectedKeys() {
        return List.of(Pattern.compile(".*rotary_emb.*\\.inv_freq"));
    }

    @Override
    final Tensor hiddenStates(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        return model.hiddenStates(inputIds, attentionMask, positionIds, cache);
    }

    @Override
    final Tensor head(Tensor h) {
        return model.stack.capLogits(layer("lm_head").forward(h));
    }

    @Override
    final Tensor hiddenStatesSlots(Tensor inputIds, SlotKVCache cache, int[] slotOf, long[] past) {
        return model.hiddenStatesSlots(inputIds, cache, slotOf, past);
    }

    @Override
    public final boolean supportsSlotCache() {
        return true;
    }

    @Override
    public final SlotKVCache newSlotCache(int slots, int maxLength) {
        RopeDecoderConfig cfg = model.stack.cfg;
        return new SlotKVCache(cfg.numLayers, slots, maxLength, cfg.numKvHeads, cfg.headDim,
                model.stack.activationDtype(model.children()), layerDevices("model.layers"));
    }

    RopeDecoderStack modelStack() {
        return model.stack;
    }

    @Override
    public final KVCache newCache() {
        return model.newCache();
    }
}
