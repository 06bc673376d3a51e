package dev.peft4j.tuners;

import dev.peft4j.config.PyRegex;
import dev.peft4j.config.PyRepr;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Pattern;

/**
 * Decides which modules of a model an adapter wraps: PEFT's {@code check_target_module_exists} and the error
 * handling of {@code BaseTuner.inject_adapter} ({@code tuners_utils.py}, PEFT main after 0.20).
 *
 * <p>Module names (keys) are full dotted names relative to the wrapped network, without any
 * {@code base_model.model.} prefix, e.g. {@code model.layers.0.self_attn.q_proj}. The rules, in order:
 *
 * <ol>
 *   <li>{@code exclude_modules}: a regex excludes keys it full-matches; a list excludes keys equal to an entry or
 *       ending with {@code "." + entry};
 *   <li>{@code modules_to_save}: a key naming a module to save, or anything below it, is excluded (the entry is
 *       inserted raw into {@code (^|.*\.)ENTRY($|\..*)});
 *   <li>a regex {@code target_modules} must full-match the key (no layer filter);
 *   <li>a list entry equal to the key matches (no layer filter either);
 *   <li>otherwise a list entry matches a dotted suffix ({@code xq_proj} is not {@code q_proj}), and
 *       {@code layers_to_transform} / {@code layers_pattern} then filter on the layer index found in the key.
 * </ol>
 *
 * Regexes follow Python's {@code re} semantics (see {@link PyRegex} for how Python syntax is carried over).
 * A Python set has no order; where PEFT prints one (error messages), the order given to the builder is used.
 */
public final class TargetMatcher {
    /** PEFT's shorthand for "every linear layer but the output layer" ({@code INCLUDE_LINEAR_LAYERS_SHORTHAND}). */
    public static final String ALL_LINEAR = "all-linear";
    /** PEFT's {@code DUMMY_TARGET_MODULES}: matches nothing and suppresses the "nothing matched" errors. */
    public static final String DUMMY_TARGET_MODULES = "dummy-target-modules";
    /** Python {@code .*?\.[^.]*\.(\d+)\.}: the first numbered segment of a key (PEFT 0.20+, lazy). */
    private static final Pattern DEFAULT_LAYER_INDEX = PyRegex.compile(".*?\\.[^.]*\\.(\\d+)\\.", "layers_pattern");
    /** transformers' {@code SEQ_CLS_HEAD_NAMES}, tried in this order. */
    private static final List<String> SEQ_CLS_HEAD_NAMES = List.of("score", "classifier");

    /** Outcome of {@link #check}. PEFT returns a falsy {@code _ExcludedModule} sentinel for excluded keys. */
    public enum Result {
        /** The module is adapted. */
        TARGETED,
        /** No target rule selects the module. */
        NOT_TARGETED,
        /** {@code exclude_modules} or {@code modules_to_save} rule the module out. */
        EXCLUDED
    }

    private final Set<String> targetNames; // null when target_modules is a regex or None
    private final String targetRegexSource;
    private final Pattern targetRegex;
    private final Set<String> excludeNames;
    private final Pattern excludeRegex;
    private final List<Pattern> modulesToSave;
    private final List<Integer> layersToTransform; // null: None
    private final boolean layersToTransformIsInt;
    private final List<String> layersPatternList; // null: None
    private final String layersPatternString; // when given as a str
    private final List<Pattern> layerIndexPatterns; // empty: the default search

    private TargetMatcher(Builder b) {
        if (b.targetRegex != null && isAllLinear(b.targetRegex)) {
            throw new IllegalArgumentException("target_modules: " + PyRepr.str(b.targetRegex)
                    + " must be expanded first: pass TargetMatcher.allLinearTargets(...) as the target module names");
        }
        this.targetNames = b.targetNames == null ? null : Collections.unmodifiableSet(new LinkedHashSet<>(b.targetNames));
        this.targetRegexSource = b.targetRegex;
        this.targetRegex = b.targetRegex == null ? null : PyRegex.compile(b.targetRegex, "target_modules");
        this.excludeNames = b.excludeNames == null ? Set.of() : new LinkedHashSet<>(b.excludeNames);
        // PEFT tests `config.exclude_modules` for truthiness: "" excludes nothing
        this.excludeRegex = b.excludeRegex == null || b.excludeRegex.isEmpty() ? null
                : PyRegex.compile(b.excludeRegex, "exclude_modules");
        List<Pattern> save = new ArrayList<>();
        if (b.modulesToSave != null) {
            for (String m : b.modulesToSave) {
                save.add(PyRegex.compile("(^|.*\\.)" + m + "($|\\..*)", "modules_to_save"));
            }
        }
        this.modulesToSave = List.copyOf(save);
        this.layersToTransform = b.layersToTransform == null ? null : List.copyOf(b.layersToTransform);
        this.layersToTransformIsInt = b.layersToTransformIsInt;
        this.layersPatternList = b.layersPatternList == null ? null : List.copyOf(b.layersPatternList);
        this.layersPatternString = b.layersPatternString;
        List<String> patterns = b.layersPatternString != null
                ? (b.layersPatternString.isEmpty() ? List.of() : List.of(b.layersPatternString))
                : (b.layersPatternList == null ? List.of() : b.layersPatternList);
        List<Pattern> compiled = new ArrayList<>();
        for (String p : patterns) {
            compiled.add(PyRegex.compile(".*?\\." + p + "\\.(\\d+)\\.", "layers_pattern"));
        }
        this.layerIndexPatterns = List.copyOf(compiled);
    }

    /** A builder with nothing set: {@code target_modules=None}, no exclusions, no layer filter. */
    public static Builder builder() {
        return new Builder();
    }

    /** True if {@code targetModules} is PEFT's {@code all-linear} shorthand (compared case-insensitively). */
    public static boolean isAllLinear(String targetModules) {
        return targetModules != null && targetModules.toLowerCase(Locale.ROOT).equals(ALL_LINEAR);
    }

    /** {@code check_target_module_exists(config, key)}. */
    public Result check(String key) {
        Objects.requireNonNull(key, "key");
        if (excludeRegex != null) {
            if (PyRegex.fullMatch(excludeRegex, key)) {
                return Result.EXCLUDED;
            }
        } else if (endsWithEntry(key, excludeNames)) {
            return Result.EXCLUDED;
        }
        for (Pattern p : modulesToSave) {
            if (PyRegex.matchAtStart(p, key)) {
                return Result.EXCLUDED;
            }
        }
        if (targetRegex != null) {
            return PyRegex.fullMatch(targetRegex, key) ? Result.TARGETED : Result.NOT_TARGETED;
        }
        if (targetNames == null) {
            return Result.NOT_TARGETED;
        }
        if (targetNames.contains(key)) {
            return Result.TARGETED; // an exact name bypasses the layer filter
        }
        boolean found = false;
        for (String t : targetNames) {
            if (key.endsWith("." + t)) {
                found = true;
                break;
            }
        }
        boolean usingLayerIndexes = layersToTransform != null && (layersToTransformIsInt || !layersToTransform.isEmpty());
        if (usingLayerIndexes && found) {
            BigInteger index = layerIndex(key);
            if (index == null) {
                return Result.NOT_TARGETED;
            }
            for (Integer wanted : layersToTransform) {
                if (index.equals(BigInteger.valueOf(wanted))) {
                    return Result.TARGETED;
                }
            }
            return Result.NOT_TARGETED;
        }
        return found ? Result.TARGETED : Result.NOT_TARGETED;
    }

    /** {@code check(key) == TARGETED}. */
    public boolean matches(String key) {
        return check(key) == Result.TARGETED;
    }

    /**
     * The modules to adapt, in the order given: PEFT's injection loop over {@code named_modules()}. The root
     * ({@code ""}) is skipped; modules inside an existing tuner layer ({@code existingTunerLayers}, e.g. the
     * {@code lora_A} of an adapter added before) count as excluded. When nothing is targeted (and
     * {@code target_modules} is not {@value #DUMMY_TARGET_MODULES}) a {@link NoMatchingModuleException} is thrown
     * with PEFT's message.
     */
    public List<String> selectTargets(Collection<String> moduleNames, Collection<String> existingTunerLayers) {
        List<String> targeted = new ArrayList<>();
        int excluded = 0;
        int unmatched = 0;
        // a key is inside a tuner layer when one of its dotted prefixes is one: O(depth) per key, not O(layers)
        Set<String> tuners = existingTunerLayers instanceof Set<String> set ? set : new HashSet<>(existingTunerLayers);
        for (String key : moduleNames) {
            if (key.isEmpty()) {
                continue;
            }
            boolean insideTuner = false;
            if (!tuners.isEmpty()) {
                for (int dot = key.lastIndexOf('.'); dot > 0; dot = key.lastIndexOf('.', dot - 1)) {
                    if (tuners.contains(key.substring(0, dot))) {
                        insideTuner = true;
                        break;
                    }
                }
            }
            if (insideTuner) {
                excluded++;
                continue;
            }
            switch (check(key)) {
                case TARGETED:
                    targeted.add(key);
                    break;
                case EXCLUDED:
                    excluded++;
                    break;
                default:
                    unmatched++;
            }
        }
        if (targeted.isEmpty() && !DUMMY_TARGET_MODULES.equals(targetRegexSource)) {
            throw new NoMatchingModuleException(noMatchMessage(excluded > 0, unmatched > 0));
        }
        return List.copyOf(targeted);
    }

    private String noMatchMessage(boolean anyExcluded, boolean anyUnmatched) {
        if (anyExcluded && !anyUnmatched) {
            return "All modules were excluded. This is likely unintended. Check your `target_modules`, "
                    + "`exclude_modules` and `modules_to_save` configuration.";
        }
        boolean targetsFalsy = targetRegexSource == null
                ? targetNames == null || targetNames.isEmpty() : targetRegexSource.isEmpty();
        if (!anyExcluded && anyUnmatched && targetsFalsy) {
            return "No `target_modules` passed but also no `target_parameters` found. Please check the values for "
                    + "these arguments.";
        }
        String msg;
        if (!anyExcluded && anyUnmatched) {
            msg = "Target modules " + targetModulesStr() + " not found in the base model. "
                    + "Please check the target modules and try again.";
        } else {
            msg = "No modules were targeted for adaptation. "
                    + "This might be caused by a combination of mismatched target modules and excluded modules. "
                    + "Please check your `target_modules` and `exclude_modules` configuration. You may also have "
                    + "only targeted modules that are marked to be saved (`modules_to_save`).";
        }
        if (layersToTransform != null) {
            msg += " Note: You specified 'layers_to_transform': "
                    + (layersToTransformIsInt ? String.valueOf(layersToTransform.get(0)) : PyRepr.list(layersToTransform))
                    + ".";
        }
        if (layersPatternString != null || layersPatternList != null) {
            msg += " You also specified 'layers_pattern': "
                    + (layersPatternString != null ? layersPatternString : PyRepr.list(layersPatternList)) + ".";
        }
        return msg;
    }

    /** Python's {@code str(config.target_modules)}: the regex itself, or the set's repr. */
    private String targetModulesStr() {
        if (targetRegexSource != null) {
            return targetRegexSource;
        }
        return targetNames == null ? "None" : PyRepr.set(targetNames);
    }

    private BigInteger layerIndex(String key) {
        List<Pattern> patterns = layerIndexPatterns.isEmpty() ? List.of(DEFAULT_LAYER_INDEX) : layerIndexPatterns;
        for (Pattern p : patterns) {
            String[] groups = PyRegex.groupsAtStart(p, key);
            if (groups != null) {
                return parsePythonInt(groups[1]);
            }
        }
        return null;
    }

    /** Python's {@code int(s)} of a run of (Unicode) decimal digits: {@code "001"} is 1. */
    private static BigInteger parsePythonInt(String digits) {
        StringBuilder ascii = new StringBuilder(digits.length());
        digits.codePoints().forEach(cp -> ascii.append((char) ('0' + Character.digit(cp, 10))));
        return new BigInteger(ascii.toString());
    }

    private static boolean endsWithEntry(String key, Collection<String> entries) {
        if (entries.contains(key)) {
            return true;
        }
        for (String e : entries) {
            if (key.endsWith("." + e)) {
                return true;
            }
        }
        return false;
    }

    /**
     * PEFT's {@code all-linear} expansion ({@code _maybe_include_all_linear_layers}): the full names of every
     * {@code nn.Linear} and transformers {@code Conv1D} module (and of every tuner layer around one), minus the
     * output embedding, minus (for a sequence-classification model without output embeddings) the first of the
     * top-level heads {@code score} / {@code classifier} that exists, minus every module inside an existing tuner
     * layer. This set replaces {@code target_modules} in the config and is what gets saved.
     *
     * @param modules every module of the model, name to kind (a tuner layer reported with its base layer's kind)
     * @param outputEmbeddingName name of the module {@code get_output_embeddings()} returns, or null if none
     * @param seqClsTask whether the config's {@code task_type} is {@code SEQ_CLS}
     * @param existingTunerLayers names of modules that are already tuner layers
     * @return the names, sorted (Python's set has no order; sorting makes the saved config reproducible)
     */
    public static Set<String> allLinearTargets(Map<String, ModuleType> modules, String outputEmbeddingName,
            boolean seqClsTask, Collection<String> existingTunerLayers) {
        Set<String> names = new TreeSet<>();
        for (Map.Entry<String, ModuleType> e : modules.entrySet()) {
            if (e.getValue() != null && e.getValue().isLinear()) {
                names.add(e.getKey());
            }
        }
        if (outputEmbeddingName != null) {
            names.remove(outputEmbeddingName);
        } else if (seqClsTask) {
            for (String head : SEQ_CLS_HEAD_NAMES) {
                if (modules.containsKey(head)) {
                    names.remove(head);
                    break;
                }
            }
        }
        for (String tuner : existingTunerLayers) {
            names.removeIf(n -> n.startsWith(tuner + "."));
        }
        return Collections.unmodifiableSet(names);
    }

    /** PEFT's {@code MIN_TARGET_MODULES_FOR_OPTIMIZATION}: lists this long get condensed. */
    public static final int MIN_TARGET_MODULES_FOR_OPTIMIZATION = 20;

    /**
     * The condensation step of {@code inject_adapter} (§4.5): a {@code target_modules} list of at least
     * {@value #MIN_TARGET_MODULES_FOR_OPTIMIZATION} entries (not for IA³) is replaced by the minimal set of dotted
     * suffixes that selects the same modules, when that set is smaller. The result is what PEFT saves.
     *
     * @param moduleNames every module name of the model ({@code named_modules()} order)
     * @return the condensed set, or {@code targets} unchanged (as a set)
     */
    public static Set<String> condenseTargetModules(Collection<String> targets, Collection<String> moduleNames,
            boolean isIa3) {
        Set<String> original = new LinkedHashSet<>(targets);
        if (isIa3 || targets.size() < MIN_TARGET_MODULES_FOR_OPTIMIZATION) {
            return original;
        }
        List<String> others = new ArrayList<>();
        for (String name : moduleNames) {
            if (!endsWithEntry(name, original)) {
                others.add(name);
            }
        }
        Set<String> condensed = findMinimalTargetModules(original, others);
        return condensed.size() < original.size() ? condensed : original;
    }

    /**
     * {@code _find_minimal_target_modules(target_modules, other_module_names)}: the smallest set of dotted suffixes
     * covering every target and no other module, built greedily over the targets sorted by their suffix lists
     * (shortest suffix first), as PEFT does. Returns the targets themselves if no suffix qualifies.
     *
     * @throws IllegalArgumentException with PEFT's messages: empty targets, an empty entry, or names in both sets
     */
    public static Set<String> findMinimalTargetModules(Collection<String> targetModules,
            Collection<String> otherModuleNames) {
        if (targetModules == null || targetModules.isEmpty()) {
            throw new IllegalArgumentException("target_modules should be a list or set of strings.");
        }
        Set<String> targets = new LinkedHashSet<>(targetModules);
        if (targets.contains("")) {
            throw new IllegalArgumentException("target_modules should not contain an empty string.");
        }
        Set<String> others = new HashSet<>(otherModuleNames);
        for (String t : targets) {
            if (others.contains(t)) {
                throw new IllegalArgumentException("target_modules and other_module_names contain common elements, "
                        + "this should not happen, please open a GitHub issue at "
                        + "https://github.com/huggingface/peft/issues with the code to reproduce this issue");
            }
        }
        Set<String> otherSuffixes = new HashSet<>();
        for (String o : others) {
            otherSuffixes.addAll(suffixes(o));
        }
        List<Map.Entry<String, List<String>>> items = new ArrayList<>();
        for (String t : targets) {
            items.add(Map.entry(t, suffixes(t)));
        }
        items.sort((x, y) -> compareLists(x.getValue(), y.getValue()));
        Set<String> required = new LinkedHashSet<>();
        for (Map.Entry<String, List<String>> item : items) {
            for (String suffix : item.getValue()) {
                if (required.contains(suffix) || otherSuffixes.contains(suffix)) {
                    continue;
                }
                boolean covered = false;
                for (String req : required) {
                    if (item.getKey().endsWith("." + req)) {
                        covered = true;
                        break;
                    }
                }
                if (!covered) {
                    required.add(suffix);
                    break;
                }
            }
        }
        return required.isEmpty() ? targets : required;
    }

    /** {@code generate_suffixes}: {@code a.b.c} → {@code [c, b.c, a.b.c]}. */
    private static List<String> suffixes(String name) {
        String[] parts = name.split("\\.", -1);
        List<String> out = new ArrayList<>(parts.length);
        for (int i = parts.length - 1; i >= 0; i--) {
            out.add(String.join(".", Arrays.copyOfRange(parts, i, parts.length)));
        }
        return out;
    }

    /** Python's ordering of lists of strings (element-wise, then by length). */
    private static int compareLists(List<String> x, List<String> y) {
        for (int i = 0; i < Math.min(x.size(), y.size()); i++) {
            int c = x.get(i).compareTo(y.get(i));
            if (c != 0) {
                return c;
            }
        }
        return Integer.compare(x.size(), y.size());
    }

    /** transformers/PEFT {@code EMBEDDING_LAYER_NAMES}. */
    private static final List<String> EMBEDDING_LAYER_NAMES = List.of("embed_tokens", "lm_head");

    /**
     * {@code save_embedding_layers="auto"} trigger (§5.6) for a list {@code target_modules}: it names
     * {@code embed_tokens} or {@code lm_head} (exact entries). PEFT then saves the full input and output embedding
     * matrices alongside the adapter.
     */
    public static boolean embeddingIsTargeted(Collection<String> targetModules) {
        for (String e : EMBEDDING_LAYER_NAMES) {
            if (targetModules.contains(e)) {
                return true;
            }
        }
        return false;
    }

    /**
     * The same trigger for a regex {@code target_modules}: it full-matches some module whose name ends in the
     * component {@code embed_tokens} or {@code lm_head}. {@code all-linear} never triggers it.
     */
    public static boolean embeddingIsTargeted(String targetRegex, Collection<String> moduleNames) {
        if (targetRegex.equals(ALL_LINEAR)) {
            return false;
        }
        Pattern target = PyRegex.compile(targetRegex, "target_modules");
        for (String name : moduleNames) {
            for (String e : EMBEDDING_LAYER_NAMES) {
                if ((name.equals(e) || name.endsWith("." + e)) && PyRegex.fullMatch(target, name)) {
                    return true;
                }
            }
        }
        return false;
    }

    /**
     * The adapter-config fields that steer matching. {@code target_modules} and {@code exclude_modules} are either a
     * list of names or one regex (the last call wins), as in PEFT's configs.
     */
    public static final class Builder {
        private Collection<String> targetNames;
        private String targetRegex;
        private Collection<String> excludeNames;
        private String excludeRegex;
        private Collection<String> modulesToSave;
        private List<Integer> layersToTransform;
        private boolean layersToTransformIsInt;
        private List<String> layersPatternList;
        private String layersPatternString;

        private Builder() {}

        /** {@code target_modules} as a list (set) of names or dotted suffixes. */
        public Builder targetModules(Collection<String> names) {
            this.targetNames = List.copyOf(names);
            this.targetRegex = null;
            return this;
        }

        /** {@code target_modules} as a string: a Python regex that must match the whole module name. */
        public Builder targetModules(String regex) {
            this.targetRegex = Objects.requireNonNull(regex, "target_modules regex");
            this.targetNames = null;
            return this;
        }

        /** {@code exclude_modules} as a list of names or dotted suffixes. */
        public Builder excludeModules(Collection<String> names) {
            this.excludeNames = List.copyOf(names);
            this.excludeRegex = null;
            return this;
        }

        /** {@code exclude_modules} as a string: a Python regex that must match the whole module name. */
        public Builder excludeModules(String regex) {
            this.excludeRegex = Objects.requireNonNull(regex, "exclude_modules regex");
            this.excludeNames = null;
            return this;
        }

        /** {@code modules_to_save}: never adapted, nor anything below them. Entries are used as regex fragments. */
        public Builder modulesToSave(Collection<String> names) {
            this.modulesToSave = names == null ? null : List.copyOf(names);
            return this;
        }

        /** {@code layers_to_transform} given as one int. */
        public Builder layersToTransform(int layer) {
            this.layersToTransform = List.of(layer);
            this.layersToTransformIsInt = true;
            return this;
        }

        /** {@code layers_to_transform} given as a list; an empty list means "no layer filter". */
        public Builder layersToTransform(List<Integer> layers) {
            this.layersToTransform = layers == null ? null : List.copyOf(layers);
            this.layersToTransformIsInt = false;
            return this;
        }

        /** {@code layers_pattern} given as one string; {@code ""} means the default layer-index search. */
        public Builder layersPattern(String pattern) {
            this.layersPatternString = pattern;
            this.layersPatternList = null;
            return this;
        }

        /** {@code layers_pattern} given as a list (first matching pattern wins); empty means the default search. */
        public Builder layersPattern(List<String> patterns) {
            this.layersPatternList = patterns == null ? null : List.copyOf(patterns);
            this.layersPatternString = null;
            return this;
        }

        /**
         * The matcher. Throws {@link IllegalArgumentException} for an invalid regex (naming the field) and for an
         * unexpanded {@code all-linear}.
         */
        public TargetMatcher build() {
            return new TargetMatcher(this);
        }
    }
}
