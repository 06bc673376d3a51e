package dev.peft4j.models;

import com.fasterxml.jackson.databind.JsonNode;
import dev.peft4j.nn.Dropout;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import java.util.List;
import java.util.regex.Pattern;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;

/**
 * transformers' {@code BertForSequenceClassification}: {@code bert} with pooler, {@code dropout},
 * {@code classifier} ({@code num_labels} outputs, from {@code num_labels} or {@code id2label}, default 2).
 */
public final class BertForSequenceClassification extends PreTrainedModel {
    private final BertModel bert;
    private final long numLabels;

    /**
     * The modules {@code config} describes ({@code num_labels}, else the size of {@code id2label}, else 2 outputs),
     * their tensors made by {@code init} (uninitialised until a state dict or {@link Init#normal} fills them).
     * @throws IllegalArgumentException naming the config file and key, if a required key is missing, has the wrong
     *     type, or asks for something not supported
     */
    public BertForSequenceClassification(ModelConfig c, Init init) {
        super(c);
        bert = registerModule("bert", new BertModel(c, init, true));
        JsonNode id2label = c.json().get("id2label");
        numLabels = c.has("num_labels") ? c.getLong("num_labels")
                : id2label != null && id2label.isObject() ? id2label.size() : 2;
        double drop = c.has("classifier_dropout") ? c.getDouble("classifier_dropout", 0.1)
                : c.getDouble("hidden_dropout_prob", 0.1);
        registerModule("dropout", new Dropout(drop));
        registerModule("classifier", new Linear(bert.hidden, numLabels, true, init));
    }

    /** The number of classes the classifier scores. */
    public long numLabels() {
        return numLabels;
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
    protected boolean alignsDevices() {
        return true;
    }

    @Override
    protected List<Pattern> ignoredUnexpectedKeys() {
        return BertModel.IGNORED;
    }

    /** Class logits {@code [B, num_labels]} (a tensor the caller owns); {@code tokenTypeIds} may be null. */
    public Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor tokenTypeIds) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor logits;
            try (PointerScope scope = new PointerScope()) {
                Tensor pooled = bert.pooled(bert.hiddenStates(inputIds, attentionMask, tokenTypeIds));
                pooled = aligned(pooled, child("classifier"));
                logits = ScopeUtil.keep(scope, layer("classifier").forward(layer("dropout").forward(pooled)));
            }
            return ScopeUtil.handToCaller(logits);
        } finally {
            hotswapGuard.unlock();
        }
    }
}
