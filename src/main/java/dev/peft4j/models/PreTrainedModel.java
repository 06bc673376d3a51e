package dev.peft4j.models;

import dev.peft4j.nn.Module;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A transformers model: a module tree under Hugging Face's parameter names, with its config, its tied weights and
 * transformers' rules for loading a checkpoint saved with or without the base model's prefix.
 */
public abstract class PreTrainedModel extends Module {
    private static final Logger LOG = LoggerFactory.getLogger(PreTrainedModel.class);
    private final ModelConfig config;

    protected PreTrainedModel(ModelConfig config) {
        this.config = config;
    }

    public final ModelConfig config() {
        return config;
    }

    /** transformers' {@code base_model_prefix}: {@code model}, {@code transformer}, {@code bert}. */
    public abstract String baseModelPrefix();

    /** True for a bare base model ({@code LlamaModel}, {@code GPT2Model}): its keys carry no prefix. */
    public abstract boolean isBaseModel();

    /**
     * Keys that share another key's tensor (target → source, e.g. {@code lm_head.weight →
     * model.embed_tokens.weight}); a checkpoint may omit either. Saving writes the source only, as transformers does.
     */
    public Map<String, String> tiedKeys() {
        return Map.of();
    }

    /** Unused checkpoint keys not worth a warning (transformers' {@code _keys_to_ignore_on_load_unexpected}). */
    protected List<Pattern> ignoredUnexpectedKeys() {
        return List.of();
    }

    /**
     * Loads a checkpoint's state dict (all or nothing), adopting each tensor already of the model's dtype (a
     * mapped file's copy-on-write view: no copy) and converting the others once. As
     * transformers does, a base model accepts a task model's checkpoint (prefix stripped, head keys unused) and a
     * task model a base model's checkpoint (prefix added; the head must then be tied or it is missing).
     *
     * @throws IllegalArgumentException listing missing keys, or naming a key whose shape does not match
     * @return the unused keys, also logged as a warning
     */
    public LoadReport loadWeights(Map<String, Tensor> checkpoint, String source) {
        String prefix = baseModelPrefix() + ".";
        boolean anyPrefixed = checkpoint.keySet().stream().anyMatch(k -> k.startsWith(prefix));
        Map<String, Tensor> sd = checkpoint;
        if (isBaseModel() && anyPrefixed) {
            sd = new LinkedHashMap<>();
            for (Map.Entry<String, Tensor> e : checkpoint.entrySet()) {
                String k = e.getKey();
                sd.put(k.startsWith(prefix) ? k.substring(prefix.length()) : "<head>." + k, e.getValue());
            }
        } else if (!isBaseModel() && !anyPrefixed) {
            sd = new LinkedHashMap<>();
            Map<String, Tensor> own = stateDict();
            for (Map.Entry<String, Tensor> e : checkpoint.entrySet()) {
                String k = e.getKey();
                sd.put(own.containsKey(k) ? k : prefix + k, e.getValue());
            }
        }
        LoadReport report;
        try {
            report = loadStateDict(sd, true);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(source + ": " + e.getMessage(), e);
        }
        List<String> unexpected = new ArrayList<>();
        for (String k : report.unexpectedKeys()) {
            String original = k.startsWith("<head>.") ? k.substring("<head>.".length()) : k;
            if (ignoredUnexpectedKeys().stream().noneMatch(p -> p.matcher(original).matches())) {
                unexpected.add(original);
            }
        }
        if (!unexpected.isEmpty()) {
            LOG.warn("Some weights of the checkpoint at {} were not used when initializing {}: {}", source, typeName(),
                    unexpected);
        }
        return new LoadReport(List.copyOf(unexpected));
    }
}
