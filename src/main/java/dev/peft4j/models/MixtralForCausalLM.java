package dev.peft4j.models;

import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;

/**
 * transformers' {@code MixtralForCausalLM}: {@code model} ({@link MixtralModel}, sparse mixture-of-experts layers)
 * and {@code lm_head}, tied to {@code model.embed_tokens} when {@code tie_word_embeddings}. Positions come from the
 * attention mask as in {@link LlamaForCausalLM}. The router's auxiliary loss is not computed (inference).
 */
public final class MixtralForCausalLM extends PreTrainedModel implements CausalLM {
    private final MixtralModel model;
    private final boolean tied;

    /**
     * A Mixtral causal LM of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public MixtralForCausalLM(ModelConfig config, Init init) {
        super(config);
        model = registerModule("model", new MixtralModel(config, init));
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
    protected List<Pattern> ignoredUnexpectedKeys() {
        return List.of(Pattern.compile(".*rotary_emb\\.inv_freq"));
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
        return new KVCache(model.cfg.numLayers);
    }
}
