package dev.peft4j.config;

import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

/**
 * Which modules a config field selects, in the two forms PEFT accepts for {@code target_modules},
 * {@code exclude_modules} and {@code feedforward_modules}: a list of module names (name suffixes) or one regular
 * expression. A field that is {@code null} in the JSON is a {@code null} selector.
 */
public sealed interface ModuleSelector permits ModuleSelector.Names, ModuleSelector.Regex {

    /**
     * A list of names. PEFT turns it into a set; the order kept here is the file's (PEFT writes a set's iteration
     * order, which varies between processes), so a config written back is byte-identical to the one read.
     */
    record Names(List<String> names) implements ModuleSelector {
        /**
         * Copies the list.
         * @throws NullPointerException if the list or a name is null
         */
        public Names {
            names = List.copyOf(names);
        }

        /** The names as the set PEFT works with. */
        public Set<String> asSet() {
            return new LinkedHashSet<>(names);
        }
    }

    /** One regular expression, matched against the whole module name ({@code re.fullmatch}). */
    record Regex(String pattern) implements ModuleSelector {
        /**
         * Checks that {@code pattern} is given.
         * @throws NullPointerException if {@code pattern} is null
         */
        public Regex {
            if (pattern == null) {
                throw new NullPointerException("pattern");
            }
        }
    }

    /** A selector of the given names. */
    static ModuleSelector names(String... names) {
        return new Names(List.of(names));
    }

    /** A selector of the given names. */
    static ModuleSelector names(List<String> names) {
        return new Names(names);
    }

    /** A selector by regular expression. */
    static ModuleSelector regex(String pattern) {
        return new Regex(pattern);
    }
}
