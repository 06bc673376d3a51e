package dev.peft4j.config;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * PEFT's {@code LoraConfig} (spec §3.4): the LoRA keys ({@link LoraSettings}), {@code rank_pattern}, and the per-module
 * rank, alpha and scaling a LoRA layer gets (§4.6, §6.1).
 */
public final class LoraConfig extends ConfigBase implements PeftConfig, LoraSettings {
    private final LoraFields lora;
    private final Map<String, Integer> rankPattern;
    // the pattern keys compiled as PEFT's get_pattern_key does, in the maps' order
    private final Map<String, Pattern> rankMatchers;
    private final Map<String, Pattern> alphaMatchers;

    LoraConfig(ConfigDoc doc) {
        super(LoraFields.rewriteAsPostInitDoes(doc), PeftType.LORA);
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

    @Override
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
     * map's order, for which {@code (.*\.)?(P)$} matches the whole name (Python's {@code re.match}), else the value
     * of the key equal to the name, else {@code r} (PEFT ≥ 0.15's {@code get_pattern_key}). Patterns are compiled
     * with {@link Pattern}, which agrees with Python's {@code re} on the syntax such patterns use.
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
            if (PyRegex.matchAtStart(e.getValue(), key)) { // re.match: anchored at the start only
                return e.getKey();
            }
        }
        return key; // exact-name fallback
    }

    private static Map<String, Pattern> compile(ConfigDoc doc, String field, Iterable<String> keys) {
        Map<String, Pattern> out = new LinkedHashMap<>();
        for (String key : keys) {
            try {
                // Python 3's \\d, \\w, \\s are Unicode-aware
                out.put(key, Pattern.compile("(.*\\.)?(" + key + ")$", Pattern.UNICODE_CHARACTER_CLASS));
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

    private void validate(ConfigDoc doc) {
        // PEFT refuses r <= 0 when it builds a layer; AdaLoRA, which ignores r, does not
        if (lora.r() <= 0) {
            throw doc.error("r", "must be a positive integer");
        }
        lora.checkPostInit(doc, targetModules());
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
        @Override
        public LoraConfig build() {
            return new LoraConfig(new ConfigDoc("LoraConfig", json));
        }
    }
}
