package dev.peft4j.tuners.ia3;

import java.util.Collection;
import java.util.Objects;
import dev.peft4j.config.PyRegex;

/**
 * IA³'s feed-forward classification ({@code IA3Model._check_target_module_feedforward}, {@code ia3/model.py}):
 * whether an adapted module scales its <em>input</em> (feed-forward) rather than its output.
 *
 * <p>Unlike target matching, a list entry matches with a plain {@code endswith}, without a dot boundary
 * ({@code "wo"} also classifies {@code ...xwo}). The flag belongs to the layer: a second IA³ adapter on the same
 * layer keeps the first one's classification.
 */
public final class Ia3Targets {
    private Ia3Targets() {}

    /** {@code feedforward_modules} as a list: {@code any(key.endswith(entry))}. */
    public static boolean isFeedForward(String key, Collection<String> feedforwardModules) {
        Objects.requireNonNull(key, "key");
        if (feedforwardModules == null) {
            return false;
        }
        for (String entry : feedforwardModules) {
            if (key.endsWith(entry)) {
                return true;
            }
        }
        return false;
    }

    /** {@code feedforward_modules} as a string: {@code re.fullmatch(regex, key)}, Python regex semantics. */
    public static boolean isFeedForward(String key, String feedforwardRegex) {
        Objects.requireNonNull(key, "key");
        if (feedforwardRegex == null) {
            return false;
        }
        return PyRegex.fullMatch(PyRegex.compile(feedforwardRegex, "feedforward_modules"), key);
    }
}
