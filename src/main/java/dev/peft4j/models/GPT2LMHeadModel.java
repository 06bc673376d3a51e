package dev.peft4j.models;

import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;

/** transformers' {@code GPT2LMHeadModel}: {@code transformer} ({@link GPT2Model}) and {@code lm_head}, tied to {@code wte}. */
public final class GPT2LMHeadModel extends PreTrainedModel implements CausalLM {
    private final GPT2Model transformer;
    private final boolean tied;

    /**
     * The modules {@code config} describes, their tensors made by {@code init} (uninitialised until a state dict or
     * {@link Init#normal} fills them).
     * @throws IllegalArgumentException naming the config file and key, if a required key is missing, has the wrong
     *     type, or asks for something not supported
     */
    public GPT2LMHeadModel(ModelConfig config, Init init) {
        super(config);
        transformer = registerModule("transformer", new GPT2Model(config, init));
        tied = config.getBoolean("tie_word_embeddings", true);
        registerModule("lm_head", new Linear(transformer.hidden, transformer.vocabSize, false, init));
        if (tied) {
            setParameter("lm_head.weight", getParameter("transformer.wte.weight"), false).close();
        }
    }

    @Override
    public String baseModelPrefix() {
        return "transformer";
    }

    @Override
    public boolean isBaseModel() {
        return false;
    }

    @Override
    public Map<String, String> tiedKeys() {
        return tied ? Map.of("lm_head.weight", "transformer.wte.weight") : Map.of();
    }

    @Override
    protected List<Pattern> ignoredUnexpectedKeys() {
        return GPT2Model.IGNORED;
    }

    @Override
    public Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor logits;
            try (PointerScope scope = new PointerScope()) {
                Tensor h = transformer.hiddenStates(inputIds, attentionMask, positionIds, cache);
                logits = ScopeUtil.keep(scope, layer("lm_head").forward(h));
            }
            return ScopeUtil.handToCaller(logits);
        } finally {
            hotswapGuard.unlock();
        }
    }

    @Override
    public KVCache newCache() {
        return new KVCache(transformer.numLayers);
    }
}
