package dev.peft4j.models;

import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;

/**
 * transformers' {@code LlamaForCausalLM} (and {@code MistralForCausalLM}, {@code Qwen2ForCausalLM}): {@code model}
 * ({@link LlamaModel}) and {@code lm_head}, tied to {@code model.embed_tokens} when {@code tie_word_embeddings}.
 *
 * <p>Without explicit position ids, positions come from the attention mask (cumsum − 1), as transformers'
 * {@code generate} computes them: a left-padded row gets the positions it would have unpadded.
 */
public final class LlamaForCausalLM extends PreTrainedModel implements CausalLM {
    private final LlamaModel model;
    private final boolean tied;

    /**
     * A Llama-family causal LM (Llama, Mistral, Qwen2) of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public LlamaForCausalLM(ModelConfig config, Init init) {
        super(config);
        model = registerModule("model", new LlamaModel(config, init));
        tied = model.cfg.tieWordEmbeddings;
        registerModule("lm_head", new Linear(model.cfg.hiddenSize, model.cfg.vocabSize, false, init));
        if (tied) {
            setParameter("lm_head.weight", getParameter("model.embed_tokens.weight"), false).close();
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
        return tied ? Map.of("lm_head.weight", "model.embed_tokens.weight") : Map.of();
    }

    @Override
    protected java.util.List<java.util.regex.Pattern> ignoredUnexpectedKeys() {
        return java.util.List.of(java.util.regex.Pattern.compile(".*rotary_emb\\.inv_freq"));
    }

    @Override
    public Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor logits;
            try (PointerScope scope = new PointerScope()) {
                Tensor h = model.hiddenStates(inputIds, attentionMask, positionIds, cache);
                if (deviceMapped()) {
                    h = onDeviceOf(h, child("lm_head"));
                }
                logits = ScopeUtil.keep(scope, layer("lm_head").forward(h));
            }
            return ScopeUtil.handToCaller(logits);
        } finally {
            hotswapGuard.unlock();
        }
    }

    @Override
    protected boolean alignsDevices() {
        return true;
    }

    @Override
    public boolean supportsSlotCache() {
        return true;
    }

    @Override
    public SlotKVCache newSlotCache(int slots, int maxLength) {
        return new SlotKVCache(model.cfg.numLayers, slots, maxLength, model.cfg.numKvHeads, model.cfg.headDim,
                model.activationDtype());
    }

    @Override
    public Tensor forwardSlots(Tensor inputIds, SlotKVCache cache, int[] slotOf, long[] past) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor logits;
            try (PointerScope scope = new PointerScope()) {
                Tensor h = model.hiddenStatesSlots(inputIds, cache, slotOf, past);
                Tensor last = h.select(1, h.size(1) - 1);
                logits = ScopeUtil.keep(scope, layer("lm_head").forward(last));
            }
            return ScopeUtil.handToCaller(logits);
        } finally {
            hotswapGuard.unlock();
        }
    }

    @Override
    public KVCache newCache() {
        return new KVCache(model.cfg.numLayers);
    }
}
