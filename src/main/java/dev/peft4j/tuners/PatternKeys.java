package dev.peft4j.tuners;

import dev.peft4j.config.PyRegex;
import dev.peft4j.config.PyRepr;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * Per-module overrides of rank and alpha: {@code rank_pattern} / {@code alpha_pattern} resolution as PEFT's
 * {@code get_pattern_key} ({@code utils/other.py}) does it, PEFT 0.15 and later.
 *
 * <p>The patterns are tried in the map's iteration order (pass a {@link java.util.LinkedHashMap} in the order the
 * JSON file lists them; PEFT saves with sorted keys, so a reloaded config tries them alphabetically). The first
 * pattern {@code P} with {@code re.match("(.*\.)?(P)$", key)} wins; if none does, the module name itself is the
 * lookup key (an exact-name entry that is not a valid match of itself as a regex still applies). Rank and alpha
 * are resolved independently.
 */
public final class PatternKeys {
    private PatternKeys() {}

    /** {@code get_pattern_key(pattern_keys, key)}: the first matching pattern, or {@code key} itself. */
    public static String patternKey(Collection<String> patternKeys, String key) {
        for (String p : patternKeys) {
            Pattern re = PyRegex.compile("(.*\\.)?(" + p + ")$", "rank_pattern/alpha_pattern key " + PyRepr.str(p));
            if (PyRegex.matchAtStart(re, key)) {
                return p;
            }
        }
        return key;
    }

    /** {@code rank_pattern.get(get_pattern_key(rank_pattern.keys(), key), r)}. */
    public static int rank(Map<String, Integer> rankPattern, String key, int defaultRank) {
        if (rankPattern == null || rankPattern.isEmpty()) {
            return defaultRank;
        }
        Integer r = rankPattern.get(patternKey(rankPattern.keySet(), key));
        return r == null ? defaultRank : r;
    }

    /** {@code alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), key), lora_alpha)}; alphas may be int or float. */
    public static double alpha(Map<String, ? extends Number> alphaPattern, String key, double defaultAlpha) {
        if (alphaPattern == null || alphaPattern.isEmpty()) {
            return defaultAlpha;
        }
        Number a = alphaPattern.get(patternKey(alphaPattern.keySet(), key));
        return a == null ? defaultAlpha : a.doubleValue();
    }

    /**
     * PEFT 0.6–0.14 behaviour, for reproducing old results: one list {@code rank keys + alpha keys}, pattern
     * {@code .*\.P$} (a dot before the pattern is required, so a top-level module never matches), and the single
     * first match is then used for both the rank and the alpha lookup.
     */
    public static String legacyPatternKey(Map<String, ?> rankPattern, Map<String, ?> alphaPattern, String key) {
        List<String> keys = new ArrayList<>();
        if (rankPattern != null) {
            keys.addAll(rankPattern.keySet());
        }
        if (alphaPattern != null) {
            keys.addAll(alphaPattern.keySet());
        }
        for (String p : keys) {
            Pattern re = PyRegex.compile(".*\\." + p + "$", "rank_pattern/alpha_pattern key " + PyRepr.str(p));
            if (PyRegex.matchAtStart(re, key)) {
                return p;
            }
        }
        return key;
    }
}
