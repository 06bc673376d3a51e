package dev.peft4j.config;

import java.util.List;

/**
 * {@code layers_pattern}: the name of the module list holding the layers ({@code "layers"}, {@code "h"}), as one
 * string or a list of them (each inserted raw into a regular expression). Written back in the form it was read.
 */
public sealed interface LayersPattern permits LayersPattern.Single, LayersPattern.Listed {

    /** The patterns, a single one as a one-element list (as PEFT treats it). */
    List<String> patterns();

    /** Whether Python would find the value truthy (a non-empty string or list). */
    default boolean isEmpty() {
        return patterns().isEmpty() || this instanceof Single s && s.pattern().isEmpty();
    }

    /** {@code "layers_pattern": "layers"}. */
    record Single(String pattern) implements LayersPattern {
        /**
         * Checks that {@code pattern} is given.
         * @throws NullPointerException if {@code pattern} is null
         */
        public Single {
            if (pattern == null) {
                throw new NullPointerException("pattern");
            }
        }

        @Override
        public List<String> patterns() {
            return List.of(pattern);
        }
    }

    /** {@code "layers_pattern": ["layers", "h"]}. */
    record Listed(List<String> patterns) implements LayersPattern {
        /**
         * Copies the list.
         * @throws NullPointerException if the list or a pattern is null
         */
        public Listed {
            patterns = List.copyOf(patterns);
        }
    }

    /** One pattern. */
    static LayersPattern of(String pattern) {
        return new Single(pattern);
    }

    /** A list of patterns. */
    static LayersPattern of(List<String> patterns) {
        return new Listed(patterns);
    }
}
