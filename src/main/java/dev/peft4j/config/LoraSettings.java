package dev.peft4j.config;

import java.util.List;
import java.util.Map;

/**
 * A config that carries LoRA's keys: {@link LoraConfig}, and {@link AdaLoraConfig} as PEFT's {@code AdaLoraConfig}
 * subclasses {@code LoraConfig}. Each accessor reads {@link #loraFields()}.
 */
public sealed interface LoraSettings permits LoraConfig, AdaLoraConfig {

    /** The LoRA keys, as one record. */
    LoraFields loraFields();

    /** See {@link LoraFields#r()}. */
    default int r() {
        return loraFields().r();
    }

    /** See {@link LoraFields#loraAlpha()}. */
    default double loraAlpha() {
        return loraFields().loraAlpha();
    }

    /** See {@link LoraFields#loraDropout()}. */
    default double loraDropout() {
        return loraFields().loraDropout();
    }

    /** See {@link LoraFields#bias()}. */
    default Bias bias() {
        return loraFields().bias();
    }

    /** See {@link LoraFields#useRslora()}. */
    default boolean useRslora() {
        return loraFields().useRslora();
    }

    /** See {@link LoraFields#initLoraWeights()}. */
    default InitLoraWeights initLoraWeights() {
        return loraFields().initLoraWeights();
    }

    /** See {@link LoraFields#layersToTransform()}. */
    default LayerIndices layersToTransform() {
        return loraFields().layersToTransform();
    }

    /** See {@link LoraFields#layersPattern()}. */
    default LayersPattern layersPattern() {
        return loraFields().layersPattern();
    }

    /** See {@link LoraFields#alphaPattern()}. */
    default Map<String, Double> alphaPattern() {
        return loraFields().alphaPattern();
    }

    /** See {@link LoraFields#megatronConfig()}. */
    default Map<String, Object> megatronConfig() {
        return loraFields().megatronConfig();
    }

    /** See {@link LoraFields#megatronCore()}. */
    default String megatronCore() {
        return loraFields().megatronCore();
    }

    /** See {@link LoraFields#loftqConfig()}. */
    default Map<String, Object> loftqConfig() {
        return loraFields().loftqConfig();
    }

    /** See {@link LoraFields#useDora()}. */
    default boolean useDora() {
        return loraFields().useDora();
    }

    /** See {@link LoraFields#layerReplication()}. */
    default List<LayerRange> layerReplication() {
        return loraFields().layerReplication();
    }

    /** See {@link LoraFields#loraBias()}. */
    default boolean loraBias() {
        return loraFields().loraBias();
    }

    /** See {@link LoraFields#evaConfig()}. */
    default Map<String, Object> evaConfig() {
        return loraFields().evaConfig();
    }

    /** See {@link LoraFields#cordaConfig()}. */
    default Map<String, Object> cordaConfig() {
        return loraFields().cordaConfig();
    }

    /** See {@link LoraFields#trainableTokenIndices()}. */
    default Object trainableTokenIndices() {
        return loraFields().trainableTokenIndices();
    }

    /** See {@link LoraFields#useQalora()}. */
    default boolean useQalora() {
        return loraFields().useQalora();
    }

    /** See {@link LoraFields#qaloraGroupSize()}. */
    default int qaloraGroupSize() {
        return loraFields().qaloraGroupSize();
    }

    /** See {@link LoraFields#targetParameters()}. */
    default List<String> targetParameters() {
        return loraFields().targetParameters();
    }

    /** See {@link LoraFields#aloraInvocationTokens()}. */
    default List<Integer> aloraInvocationTokens() {
        return loraFields().aloraInvocationTokens();
    }

    /** See {@link LoraFields#arrowConfig()}. */
    default Map<String, Object> arrowConfig() {
        return loraFields().arrowConfig();
    }

    /** See {@link LoraFields#ensureWeightTying()}. */
    default boolean ensureWeightTying() {
        return loraFields().ensureWeightTying();
    }

    /** See {@link LoraFields#loraGaConfig()}. */
    default Map<String, Object> loraGaConfig() {
        return loraFields().loraGaConfig();
    }

    /** See {@link LoraFields#useBdlora()}. */
    default Object useBdlora() {
        return loraFields().useBdlora();
    }

    /** See {@link LoraFields#veloraConfig()}. */
    default Map<String, Object> veloraConfig() {
        return loraFields().veloraConfig();
    }

    /** See {@link LoraFields#montecloraConfig()}. */
    default Map<String, Object> montecloraConfig() {
        return loraFields().montecloraConfig();
    }

    /** See {@link LoraFields#kasaConfig()}. */
    default Map<String, Object> kasaConfig() {
        return loraFields().kasaConfig();
    }
}
