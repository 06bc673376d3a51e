package dev.peft4j.config;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The LoRA keys of {@code adapter_config.json} (spec §3.4) other than the common ones and {@code rank_pattern}: what
 * both {@link LoraConfig} and {@link AdaLoraConfig} carry, as PEFT's {@code AdaLoraConfig} inherits them from
 * {@code LoraConfig}. {@code rank_pattern} is not here because the two methods give it different meanings (LoRA: rank
 * per module pattern; AdaLoRA: kept rank positions per module).
 *
 * <p>Nested configs PEFT writes as objects ({@code loftq_config}, {@code eva_config}, ...) are unmodifiable maps of
 * JSON values (see {@link PeftConfigs}); null where the file has null.
 *
 * @param r rank ({@code r}, default 8; AdaLoRA ignores it)
 * @param loraAlpha scaling numerator ({@code lora_alpha}, default 8)
 * @param loraDropout dropout on the LoRA input ({@code lora_dropout}, default 0.0)
 * @param bias which base biases are trained and saved ({@code bias}, default none)
 * @param useRslora scale by alpha/sqrt(r) instead of alpha/r ({@code use_rslora})
 * @param initLoraWeights {@code init_lora_weights}, default true
 * @param layersToTransform {@code layers_to_transform}, or null
 * @param layersPattern {@code layers_pattern}, or null
 * @param alphaPattern {@code alpha_pattern}: module pattern to alpha, in the file's order (empty when null)
 * @param megatronConfig {@code megatron_config}, or null
 * @param megatronCore {@code megatron_core}, default "megatron.core"
 * @param loftqConfig {@code loftq_config}, default empty
 * @param useDora {@code use_dora}
 * @param layerReplication {@code layer_replication}, or null
 * @param loraBias a bias on {@code lora_B} ({@code lora_bias})
 * @param evaConfig {@code eva_config}, or null
 * @param cordaConfig {@code corda_config}, or null
 * @param trainableTokenIndices {@code trainable_token_indices}: a list or an object of JSON values, or null
 * @param useQalora {@code use_qalora}
 * @param qaloraGroupSize {@code qalora_group_size}, default 16
 * @param targetParameters {@code target_parameters}, or null
 * @param aloraInvocationTokens {@code alora_invocation_tokens}, or null
 * @param arrowConfig {@code arrow_config}, or null
 * @param ensureWeightTying {@code ensure_weight_tying}
 * @param loraGaConfig {@code lora_ga_config} (PEFT 0.19), or null
 * @param useBdlora {@code use_bdlora} (PEFT 0.19) as a JSON value, or null
 * @param veloraConfig {@code velora_config} (PEFT 0.20), or null
 * @param montecloraConfig {@code monteclora_config} (PEFT 0.20), or null
 * @param kasaConfig {@code kasa_config} (PEFT after 0.20), or null
 */
public record LoraFields(
        int r,
        double loraAlpha,
        double loraDropout,
        Bias bias,
        boolean useRslora,
        InitLoraWeights initLoraWeights,
        LayerIndices layersToTransform,
        LayersPattern layersPattern,
        Map<String, Double> alphaPattern,
        Map<String, Object> megatronConfig,
        String megatronCore,
        Map<String, Object> loftqConfig,
        boolean useDora,
        List<LayerRange> layerReplication,
        boolean loraBias,
        Map<String, Object> evaConfig,
        Map<String, Object> cordaConfig,
        Object trainableTokenIndices,
        boolean useQalora,
        int qaloraGroupSize,
        List<String> targetParameters,
        List<Integer> aloraInvocationTokens,
        Map<String, Object> arrowConfig,
        boolean ensureWeightTying,
        Map<String, Object> loraGaConfig,
        Object useBdlora,
        Map<String, Object> veloraConfig,
        Map<String, Object> montecloraConfig,
        Map<String, Object> kasaConfig) {
    private static final Logger LOG = LoggerFactory.getLogger(LoraFields.class);

    /** Reads and type-checks the LoRA keys of {@code doc}, defaults for missing ones. */
    static LoraFields read(ConfigDoc doc) {
        int r = doc.integer("r", 8, false);
        double alpha = doc.number("lora_alpha", 8);
        double dropout = doc.number("lora_dropout", 0.0);
        if (!(dropout >= 0 && dropout <= 1)) {
            throw doc.error("lora_dropout", "must be a probability between 0 and 1");
        }
        Bias bias = Bias.fromJson(doc.string("bias", "none", false));
        if (bias == null) {
            throw doc.error("bias", "must be one of \"none\", \"all\", \"lora_only\"");
        }
        Map<String, Object> loftq = doc.object("loftq_config", Map.of(), true);
        if (doc.raw("target_parameters") instanceof String) {
            throw doc.error("target_parameters", "must be a list of parameter names, not a string");
        }
        List<String> targetParameters = doc.stringList("target_parameters");
        return new LoraFields(r, alpha, dropout, bias,
                doc.bool("use_rslora", false),
                initLoraWeights(doc),
                layersToTransform(doc),
                layersPattern(doc),
                alphaPattern(doc),
                doc.object("megatron_config", null, true),
                doc.string("megatron_core", "megatron.core", true),
                loftq == null ? Map.of() : loftq,
                doc.bool("use_dora", false),
                layerReplication(doc),
                doc.bool("lora_bias", false),
                doc.object("eva_config", null, true),
                doc.object("corda_config", null, true),
                trainableTokenIndices(doc),
                doc.bool("use_qalora", false),
                doc.integer("qalora_group_size", 16, false),
                targetParameters,
                doc.intList("alora_invocation_tokens"),
                doc.object("arrow_config", null, true),
                doc.bool("ensure_weight_tying", false),
                doc.object("lora_ga_config", null, true),
                doc.raw("use_bdlora"),
                doc.object("velora_config", null, true),
                doc.object("monteclora_config", null, true),
                doc.object("kasa_config", null, true));
    }

    /**
     * PEFT's silent rewrite in {@code LoraConfig.__post_init__} (which {@code AdaLoraConfig} runs first too),
     * applied before the JSON object is frozen: a {@code loftq_config} without {@code init_lora_weights: "loftq"}
     * is reset to {@code {}}.
     */
    static ConfigDoc rewriteAsPostInitDoes(ConfigDoc doc) {
        Object init = doc.raw("init_lora_weights");
        Map<String, Object> loftq = doc.object("loftq_config", Map.of(), true);
        if (!"loftq".equals(init) && loftq != null && !loftq.isEmpty()) {
            LOG.warn("{}: \"loftq_config\" is ignored unless \"init_lora_weights\" is \"loftq\"; reset to an empty"
                    + " object, as PEFT does", doc.source);
            doc.put("loftq_config", Map.of());
        }
        return doc;
    }

    /** The checks of PEFT's {@code LoraConfig.__post_init__} (spec §3.5), which AdaLoRA's runs too. */
    void checkPostInit(ConfigDoc doc, ModuleSelector targetModules) {
        if (targetModules instanceof ModuleSelector.Regex && layersToTransform != null) {
            throw doc.error("layers_to_transform", "cannot be used when \"target_modules\" is a regular expression"
                    + " string (" + PythonJson.repr(doc.raw("target_modules")) + ")");
        }
        if (targetModules instanceof ModuleSelector.Regex && layersPattern != null) {
            throw doc.error("layers_pattern", "cannot be used when \"target_modules\" is a regular expression"
                    + " string (" + PythonJson.repr(doc.raw("target_modules")) + ")");
        }
        // PEFT tests truthiness here: an empty pattern is no pattern, and layers_to_transform 0 or [] counts as unset
        boolean transformSet = layersToTransform instanceof LayerIndices.Single s ? s.index() != 0
                : layersToTransform != null && layersToTransform.filters();
        if (layersPattern != null && !layersPattern.isEmpty() && !transformSet) {
            throw doc.error("layers_pattern", "needs \"layers_to_transform\" too (which is "
                    + PythonJson.repr(doc.raw("layers_to_transform")) + ")");
        }
        if (useDora && megatronConfig != null && !megatronConfig.isEmpty()) {
            throw doc.error("\"use_dora\": true cannot be combined with \"megatron_config\" (DoRA does not support"
                    + " megatron_core), got " + PythonJson.repr(megatronConfig));
        }
        if (initLoraWeights instanceof InitLoraWeights.Method m && m.name().equals("loftq") && loftqConfig.isEmpty()) {
            throw doc.error("loftq_config", "must be given when \"init_lora_weights\" is \"loftq\"");
        }
        if (loraBias) {
            if (!(initLoraWeights instanceof InitLoraWeights.Flag)) {
                throw doc.error("\"lora_bias\": true needs \"init_lora_weights\" true or false, got "
                        + PythonJson.repr(doc.raw("init_lora_weights")));
            }
            if (useDora) {
                throw doc.error("\"lora_bias\": true cannot be combined with \"use_dora\": true");
            }
        }
        if (initLoraWeights instanceof InitLoraWeights.Method m && (m.name().equals("eva") && evaConfig == null
                || m.name().equals("corda") && cordaConfig == null)) {
            LOG.warn("{}: \"init_lora_weights\" is \"{}\" without \"{}_config\"; PEFT fills in a default one",
                    doc.source, m.name(), m.name());
        }
    }

    private static InitLoraWeights initLoraWeights(ConfigDoc doc) {
        if (!doc.has("init_lora_weights")) {
            return InitLoraWeights.DEFAULT;
        }
        Object v = doc.raw("init_lora_weights");
        if (v instanceof Boolean b) {
            return InitLoraWeights.of(b);
        }
        if (v instanceof String s) {
            return InitLoraWeights.of(s);
        }
        throw doc.error("init_lora_weights", "must be true, false or the name of an initialisation method");
    }

    private static LayerIndices layersToTransform(ConfigDoc doc) {
        Object v = doc.raw("layers_to_transform");
        if (v == null) {
            return null;
        }
        if (v instanceof Long) {
            return LayerIndices.of(doc.integer("layers_to_transform", null, false));
        }
        if (v instanceof List<?>) {
            return LayerIndices.of(doc.intList("layers_to_transform"));
        }
        throw doc.error("layers_to_transform", "must be a layer index, a list of layer indices or null");
    }

    private static LayersPattern layersPattern(ConfigDoc doc) {
        Object v = doc.raw("layers_pattern");
        if (v == null) {
            return null;
        }
        if (v instanceof String s) {
            return LayersPattern.of(s);
        }
        if (v instanceof List<?>) {
            return LayersPattern.of(doc.stringList("layers_pattern"));
        }
        throw doc.error("layers_pattern", "must be a string, a list of strings or null");
    }

    private static Map<String, Double> alphaPattern(ConfigDoc doc) {
        Map<String, Object> raw = doc.object("alpha_pattern", Map.of(), true);
        Map<String, Double> out = new LinkedHashMap<>();
        if (raw != null) {
            raw.forEach((pattern, value) -> {
                if (!(value instanceof Long || value instanceof Double)) {
                    throw doc.error("alpha_pattern: value of \"" + pattern + "\" must be a number, got "
                            + PythonJson.repr(value));
                }
                out.put(pattern, ((Number) value).doubleValue());
            });
        }
        return Collections.unmodifiableMap(out);
    }

    private static List<LayerRange> layerReplication(ConfigDoc doc) {
        Object v = doc.raw("layer_replication");
        if (v == null) {
            return null;
        }
        String mustBe = "must be a list of [start, end] layer index pairs or null";
        if (!(v instanceof List<?> list)) {
            throw doc.error("layer_replication", mustBe);
        }
        List<LayerRange> out = new ArrayList<>();
        for (Object item : list) {
            if (!(item instanceof List<?> pair) || pair.size() != 2 || !(pair.get(0) instanceof Long start)
                    || !(pair.get(1) instanceof Long end)) {
                throw doc.error("layer_replication", mustBe);
            }
            out.add(new LayerRange(Math.toIntExact(start), Math.toIntExact(end)));
        }
        return List.copyOf(out);
    }

    private static Object trainableTokenIndices(ConfigDoc doc) {
        Object v = doc.raw("trainable_token_indices");
        if (v == null || v instanceof List<?> || v instanceof Map<?, ?>) {
            return v;
        }
        throw doc.error("trainable_token_indices", "must be a list of token indices, an object or null");
    }
}
