package dev.peft4j.models;

import dev.peft4j.nn.Activation;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.LayerNorm;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;

/**
 * transformers' {@code BertForMaskedLM} (also loads {@code BertLMHeadModel} checkpoints, which share its keys):
 * {@code bert} without pooler and {@code cls.predictions} ({@code transform.dense}, {@code transform.LayerNorm},
 * {@code decoder} tied to the word embeddings, {@code bias} shared with {@code decoder.bias}).
 */
public final class BertForMaskedLM extends PreTrainedModel {
    private final BertModel bert;
    private final boolean tied;

    /**
     * The modules {@code config} describes, their tensors made by {@code init} (uninitialised until a state dict or
     * {@link Init#normal} fills them).
     * @throws IllegalArgumentException naming the config file and key, if a required key is missing, has the wrong
     *     type, or asks for something not supported
     */
    public BertForMaskedLM(ModelConfig c, Init init) {
        super(c);
        bert = registerModule("bert", new BertModel(c, init, false));
        BertModel.Group cls = registerModule("cls", new BertModel.Group());
        Predictions p = cls.add("predictions", new Predictions(bert, init));
        BertModel.Group transform = p.add("transform", new BertModel.Group());
        transform.add("dense", new Linear(bert.hidden, bert.hidden, true, init));
        transform.add("transform_act_fn", Activation.named(bert.hiddenAct));
        transform.add("LayerNorm", new LayerNorm(bert.hidden, bert.eps, init));
        p.add("decoder", new Linear(bert.hidden, bert.vocabSize, true, init));
        tied = c.getBoolean("tie_word_embeddings", true);
        if (tied) {
            setParameter("cls.predictions.decoder.weight", getParameter("bert.embeddings.word_embeddings.weight"), false)
                    .close();
        }
        setParameter("cls.predictions.decoder.bias", getParameter("cls.predictions.bias"), false).close();
    }

    /** {@code BertLMPredictionHead}: holds the output {@code bias}, shared with {@code decoder.bias}. */
    static final class Predictions extends Module {
        Predictions(BertModel bert, Init init) {
            registerParameter("bias", init.empty(bert.vocabSize), true);
        }

        <M extends Module> M add(String name, M m) {
            return registerModule(name, m);
        }
    }

    @Override
    public String baseModelPrefix() {
        return "bert";
    }

    @Override
    public boolean isBaseModel() {
        return false;
    }

    @Override
    public Map<String, String> tiedKeys() {
        return tied ? Map.of("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight",
                "cls.predictions.decoder.bias", "cls.predictions.bias")
                : Map.of("cls.predictions.decoder.bias", "cls.predictions.bias");
    }

    @Override
    protected boolean alignsDevices() {
        return true;
    }

    @Override
    protected List<Pattern> ignoredUnexpectedKeys() {
        return BertModel.IGNORED;
    }

    /** Vocabulary logits {@code [B, T, vocab]} (a tensor the caller owns); {@code tokenTypeIds} may be null. */
    public Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor logits;
            try (PointerScope scope = new PointerScope()) {
                Tensor h = bert.hiddenStates(inputIds, attentionMask, tokenTypeIds);
                Module p = getSubmodule("cls.predictions");
                BertModel.Group t = (BertModel.Group) p.children().get("transform");
                h = aligned(h, p); // the prediction head is one unit (its bias is its own parameter)
                h = t.get("LayerNorm").forward(t.get("transform_act_fn").forward(t.get("dense").forward(h)));
                logits = ScopeUtil.keep(scope, ((dev.peft4j.nn.Layer) p.children().get("decoder")).forward(h));
            }
            return ScopeUtil.handToCaller(logits);
        } finally {
            hotswapGuard.unlock();
        }
    }
}
