package dev.peft4j.models;

import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.bytedeco.javacpp.PointerScope;
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
public abstract class RopeDecoderForCausalLM extends PreTrainedModel implements CausalLM {
    private final RopeDecoderModel model;
    private final boolean tied;

    RopeDecoderForCausalLM(ModelConfig config, Init init, RopeDecoderModel model) {
        super(config);
        this.model = registerModule("model", model);
        RopeDecoderConfig cfg = model.stack.cfg;
        tied = cfg.tieWordEmbeddings;
        registerModule("lm_head", new Linear(cfg.hiddenSize, cfg.vocabSize, false, init));
        if (tied) {
            setParameter("lm_head.weight", getParameter("model.embed_tokens.weight"), false).close();
        }
    }

    @Override
    public final String baseModelPrefix() {
        return "model";
    }

    @Override
    public final boolean isBaseModel() {
        return false;
    }

    @Override
    public final Map<String, String> tiedKeys() {
        return tied ? Map.of("lm_head.weight", "model.embed_tokens.weight") : Map.of();
    }

    @Override
    protected final List<Pattern> ignoredUnexpectedKeys() {
        return List.of(Pattern.compile(".*rotary_emb.*\\.inv_freq"));
    }

    @Override
    public final Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor logits;
            try (PointerScope scope = new PointerScope()) {
                Tensor h = model.hiddenStates(inputIds, attentionMask, positionIds, cache);
                logits = ScopeUtil.keep(scope, model.stack.capLogits(layer("lm_head").forward(h)));
            }
            return ScopeUtil.handToCaller(logits);
        } finally {
            hotswapGuard.unlock();
        }
    }

    @Override
    public final boolean supportsSlotCache() {
        return true;
    }

    @Override
    public final SlotKVCache newSlotCache(int slots, int maxLength) {
        RopeDecoderConfig cfg = model.stack.cfg;
        return new SlotKVCache(cfg.numLayers, slots, maxLength, cfg.numKvHeads, cfg.headDim,
                model.stack.activationDtype(model.children()));
    }

    @Override
    public final Tensor forwardSlots(Tensor inputIds, SlotKVCache cache, int[] slotOf, long[] past) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor logits;
            try (PointerScope scope = new PointerScope()) {
                Tensor h = model.hiddenStatesSlots(inputIds, cache, slotOf, past);
                Tensor last = h.select(1, h.size(1) - 1);
                logits = ScopeUtil.keep(scope, model.stack.capLogits(layer("lm_head").forward(last)));
            }
            return ScopeUtil.handToCaller(logits);
        } finally {
            hotswapGuard.unlock();
        }
    }

    RopeDecoderStack modelStack() {
        return model.stack;
    }

    @Override
    public final KVCache newCache() {
        return model.newCache();
    }
}
