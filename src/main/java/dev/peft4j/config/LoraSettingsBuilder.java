package dev.peft4j.config;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Sets the LoRA keys ({@link LoraFields}) of a {@link LoraConfig} or {@link AdaLoraConfig}. Numbers keep Python's
 * int/float distinction by overload: {@code loraAlpha(16)} writes {@code 16}, {@code loraAlpha(16.0)} writes
 * {@code 16.0}, as {@code LoraConfig(lora_alpha=16)} and {@code lora_alpha=16.0} do.
 *
 * @param <B> the concrete builder
 */
public abstract class LoraSettingsBuilder<B extends LoraSettingsBuilder<B>> extends PeftConfigBuilder<B> {

    LoraSettingsBuilder(Map<String, Object> start) {
        super(start);
    }

    /** {@code r}. */
    public B r(int r) {
        return put("r", r);
    }

    /** {@code lora_alpha} as a Python int. */
    public B loraAlpha(int loraAlpha) {
        return put("lora_alpha", loraAlpha);
    }

    /** {@code lora_alpha} as a Python float. */
    public B loraAlpha(double loraAlpha) {
        return put("lora_alpha", loraAlpha);
    }

    /** {@code lora_dropout}. */
    public B loraDropout(double loraDropout) {
        return put("lora_dropout", loraDropout);
    }

    /** {@code bias}. */
    public B bias(Bias bias) {
        return put("bias", bias.jsonValue());
    }

    /** {@code use_rslora}. */
    public B useRslora(boolean useRslora) {
        return put("use_rslora", useRslora);
    }

    /** {@code init_lora_weights}. */
    public B initLoraWeights(InitLoraWeights init) {
        return put("init_lora_weights", init instanceof InitLoraWeights.Flag f ? (Object) f.value()
                : ((InitLoraWeights.Method) init).name());
    }

    /** {@code layers_to_transform}; null for all layers. */
    public B layersToTransform(LayerIndices layers) {
        Object value = layers == null ? null
                : layers instanceof LayerIndices.Single s ? (Object) s.index() : ((LayerIndices.Listed) layers).indices();
        return put("layers_to_transform", value);
    }

    /** {@code layers_pattern}; null for PEFT's generic layer-index pattern. */
    public B layersPattern(LayersPattern pattern) {
        Object value = pattern == null ? null
                : pattern instanceof LayersPattern.Single s ? (Object) s.pattern() : pattern.patterns();
        return put("layers_pattern", value);
    }

    /**
     * {@code alpha_pattern}: module name or pattern to alpha. Integer values are written as Python ints, Double
     * values as floats; iteration order is kept (it decides which overlapping pattern wins).
     */
    public B alphaPattern(Map<String, ? extends Number> alphaPattern) {
        return put("alpha_pattern", alphaPattern);
    }

    /** {@code loftq_config}. */
    public B loftqConfig(Map<String, ?> loftqConfig) {
        return put("loftq_config", loftqConfig);
    }

    /** {@code use_dora}. */
    public B useDora(boolean useDora) {
        return put("use_dora", useDora);
    }

    /** {@code lora_bias}. */
    public B loraBias(boolean loraBias) {
        return put("lora_bias", loraBias);
    }

    /** {@code layer_replication}; null for none. */
    public B layerReplication(List<LayerRange> ranges) {
        if (ranges == null) {
            return put("layer_replication", null);
        }
        List<Object> pairs = new ArrayList<>();
        for (LayerRange range : ranges) {
            pairs.add(List.of(range.start(), range.end()));
        }
        return put("layer_replication", pairs);
    }

    /** {@code target_parameters}; null for none. */
    public B targetParameters(List<String> parameterNames) {
        return put("target_parameters", parameterNames);
    }

    /** {@code ensure_weight_tying}. */
    public B ensureWeightTying(boolean ensureWeightTying) {
        return put("ensure_weight_tying", ensureWeightTying);
    }
}
