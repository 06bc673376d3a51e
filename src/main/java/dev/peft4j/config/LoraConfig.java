package dev.peft4j.config;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * PEFT's {@code LoraConfig} (spec §3.4): the LoRA keys ({@link LoraSettings}), {@code rank_pattern}, and the per-module
 * rank, alpha and scaling a LoRA layer gets (§4.6, §6.1).
 */
public final class LoraConfig extends ConfigBase implements PeftConfig, LoraSettings {
    private static final Logger LOG = LoggerFactory.getLogger(LoraConfig.class);

    private final LoraFields lora;
    private final Map<String, Integer> rankPattern;
    // the pattern keys compiled as PEFT's get_pattern_key does, in the maps' order
    private final Map<String, Pattern> rankMatchers;
    private final Map<String, Pattern> alphaMatchers;

    LoraConfig(ConfigDoc doc) {
        super(normalise(doc), PeftType.LORA);
        lora = LoraFields.read(doc);
        rankPattern = readRankPattern(doc);
        rankMatchers = compile(doc, "rank_pattern", rankPattern.keySet());
        alphaMatchers = compile(doc, "alpha_pattern", lora.alphaPattern().keySet());
        validate(doc);
    }

    /** A builder with PEFT's defaults. */
    public static Builder builder() {
        return new Builder(KnownKeys.defaults(PeftType.LORA));
    }

    /** A builder starting from this config's JSON (unknown keys included). */
    public Builder toBuilder() {
        return new Builder(toJsonObject());
    }

    @Override
    public PeftType peftType() {
        return PeftType.LORA;
    }

    @Override
    public LoraFields loraFields() {
        return lora;
    }

    /** {@code rank_pattern}: module name or pattern to rank, in the file's order (empty when null). */
    public Map<String, Integer> rankPattern() {
        return rankPattern;
    }

    /**
     * The rank of the LoRA layer for module {@code moduleKey} (its name relative to the wrapped model, e.g.
     * {@code model.layers.0.self_attn.q_proj}): the value of the first {@code rank_pattern} key {@code P}, in the
     * map's order, for which {@code (.*\.)?(P)$} matches the start of the name, else {@code r} (PEFT ≥ 0.15's
     * {@code get_pattern_key}).
     */
    public int rankFor(String moduleKey) {
        Integer rank = rankPattern.get(patternKey(rankMatchers, moduleKey));
        return rank != null ? rank : lora.r();
    }

    /** The alpha for module {@code moduleKey}, resolved from {@code alpha_pattern} as {@link #rankFor} does. */
    public double alphaFor(String moduleKey) {
        Double alpha = lora.alphaPattern().get(patternKey(alphaMatchers, moduleKey));
        return alpha != null ? alpha : lora.loraAlpha();
    }

    /** The scaling of module {@code moduleKey}'s LoRA layer: alpha / r, or alpha / sqrt(r) with {@code use_rslora}. */
    public double scaling(String moduleKey) {
        int rank = rankFor(moduleKey);
        double alpha = alphaFor(moduleKey);
        return lora.useRslora() ? alpha / Math.sqrt(rank) : alpha / rank;
    }

    private static String patternKey(Map<String, Pattern> matchers, String key) {
        for (Map.Entry<String, Pattern> e : matchers.entrySet()) {
            if (e.getValue().matcher(key).lookingAt()) { // re.match: anchored at the start only
                return e.getKey();
            }
        }
        return key; // exact-name fallback
    }

    private static Map<String, Pattern> compile(ConfigDoc doc, String field, Iterable<String> keys) {
        Map<String, Pattern> out = new LinkedHashMap<>();
        for (String key : keys) {
            try {
                out.put(key, Pattern.compile("(.*\\.)?(" + key + ")$"));
            } catch (PatternSyntaxException e) {
                throw doc.error(field + ": key \"" + key + "\" is not a valid regular expression: "
                        + e.getDescription());
            }
        }
        return Collections.unmodifiableMap(out);
    }

    private static Map<String, Integer> readRankPattern(ConfigDoc doc) {
        Map<String, Object> raw = doc.object("rank_pattern", Map.of(), true);
        Map<String, Integer> out = new LinkedHashMap<>();
        if (raw != null) {
            raw.forEach((pattern, value) -> {
                if (!(value instanceof Long l) || l <= 0 || l > Integer.MAX_VALUE) {
                    throw doc.error("rank_pattern: rank of \"" + pattern + "\" must be a positive integer, got "
                            + PythonJson.repr(value));
                }
                out.put(pattern, l.intValue());
            });
        }
        return Collections.unmodifiableMap(out);
    }

    /** PEFT's silent rewrites in {@code __post_init__}, applied before the JSON object is frozen. */
    private static ConfigDoc normalise(ConfigDoc doc) {
        Object init = doc.raw("init_lora_weights");
        Map<String, Object> loftq = doc.object("loftq_config", Map.of(), true);
        if (!"loftq".equals(init) && loftq != null && !loftq.isEmpty()) {
            LOG.warn("{}: \"loftq_config\" is ignored unless \"init_lora_weights\" is \"loftq\"; reset to {{}}"
                    + " as PEFT does", doc.source);
            doc.put("loftq_config", Map.of());
        }
        return doc;
    }

    private void validate(ConfigDoc doc) {
        if (lora.r() <= 0) {
            throw doc.error("r", "must be a positive integer");
        }
        lora.checkLayerSelection(doc, targetModules(), true);
        if (lora.useDora() && lora.megatronConfig() != null && !lora.megatronConfig().isEmpty()) {
            throw doc.error("\"use_dora\": true cannot be combined with \"megatron_config\" (DoRA does not support"
                    + " megatron_core), got " + PythonJson.repr(lora.megatronConfig()));
        }
        InitLoraWeights init = lora.initLoraWeights();
        if (init instanceof InitLoraWeights.Method m && m.name().equals("loftq") && lora.loftqConfig().isEmpty()) {
            throw doc.error("loftq_config", "must be given when \"init_lora_weights\" is \"loftq\"");
        }
        if (lora.loraBias()) {
            if (!(init instanceof InitLoraWeights.Flag)) {
                throw doc.error("\"lora_bias\": true needs \"init_lora_weights\" true or false, got "
                        + PythonJson.repr(doc.raw("init_lora_weights")));
            }
            if (lora.useDora()) {
                throw doc.error("\"lora_bias\": true cannot be combined with \"use_dora\": true");
            }
        }
        if (init instanceof InitLoraWeights.Method m && (m.name().equals("eva") && lora.evaConfig() == null
                || m.name().equals("corda") && lora.cordaConfig() == null)) {
            LOG.warn("{}: \"init_lora_weights\" is \"{}\" without \"{}_config\"; PEFT fills in a default one",
                    doc.source, m.name(), m.name());
        }
    }

    /** Builds a {@link LoraConfig}; see {@link PeftConfigBuilder}. */
    public static final class Builder extends LoraSettingsBuilder<Builder> {
        Builder(Map<String, Object> start) {
            super(start);
        }

        /** {@code rank_pattern}: module name or pattern to rank; iteration order is kept. */
        public Builder rankPattern(Map<String, Integer> rankPattern) {
            return put("rank_pattern", rankPattern);
        }

        /**
         * Validates and builds.
         *
         * @throws PeftConfigException where reading a file with these values would fail
         */
        public LoraConfig build() {
            return new LoraConfig(new ConfigDoc("LoraConfig", json));
        }
    }
}
