package dev.peft4j.tuners;

import java.util.Arrays;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * State-dict key names of adapters, both ways: in memory (with the adapter name) and in a checkpoint (without it,
 * under {@code base_model.model.}), as PEFT's {@code get_peft_model_state_dict} / {@code set_peft_model_state_dict}
 * ({@code utils/save_and_load.py}) and the transformers integration write and read them.
 *
 * <p>In-memory keys are relative to the wrapped network, e.g. {@code model.layers.0.self_attn.q_proj.lora_A.default.weight}
 * (a PeftModel adds {@code base_model.model.} in front). Checkpoint keys always start with {@code base_model.model.},
 * e.g. {@code base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight}. LoRA Linear keys end in
 * {@code .weight}; AdaLoRA ({@code lora_A}, {@code lora_B}, {@code lora_E}) and IA³ ({@code ia3_l}) keys do not.
 */
public final class AdapterKeys {
    /** The prefix every checkpoint key carries: PeftModel → {@code base_model} → {@code .model}. */
    public static final String PEFT_PREFIX = "base_model.model.";
    /** Parameter prefix of LoRA and AdaLoRA ({@code PEFT_TYPE_TO_PREFIX_MAPPING}). */
    public static final String LORA_PREFIX = "lora_";
    /** Parameter prefix of IA³. */
    public static final String IA3_PREFIX = "ia3_";

    private AdapterKeys() {}

    /** An adapter parameter of a tuner layer. */
    public enum Param {
        /** LoRA {@code lora_A[name]}: an {@code nn.Linear(in, r)}, weight {@code (r, in)}. */
        LORA_A("lora_A", "weight", true),
        /** LoRA {@code lora_B[name]}: an {@code nn.Linear(r, out)}, weight {@code (out, r)}. */
        LORA_B("lora_B", "weight", true),
        /** LoRA {@code lora_B[name].bias} ({@code lora_bias=True}), shape {@code (out,)}. */
        LORA_B_BIAS("lora_B", "bias", true),
        /** LoRA Embedding {@code lora_embedding_A[name]}: a bare Parameter {@code (r, num_embeddings)}. */
        LORA_EMBEDDING_A("lora_embedding_A", null, true),
        /** LoRA Embedding {@code lora_embedding_B[name]}: a bare Parameter {@code (embedding_dim, r)}. */
        LORA_EMBEDDING_B("lora_embedding_B", null, true),
        /** DoRA magnitude: in memory {@code .lora_magnitude_vector.<name>.weight}, saved without {@code .weight}. */
        LORA_MAGNITUDE_VECTOR("lora_magnitude_vector", "weight", false),
        /** AdaLoRA {@code lora_A[name]}: a bare Parameter {@code (r, in)}. */
        ADALORA_A("lora_A", null, true),
        /** AdaLoRA {@code lora_B[name]}: a bare Parameter {@code (out, r)}. */
        ADALORA_B("lora_B", null, true),
        /** AdaLoRA {@code lora_E[name]}: a bare Parameter {@code (r, 1)}. */
        ADALORA_E("lora_E", null, true),
        /** AdaLoRA {@code ranknum[name]}: {@code (1,)}, never saved. */
        RANKNUM("ranknum", null, false),
        /** IA³ {@code ia3_l[name]}: {@code (out, 1)}, or {@code (1, in)} for feed-forward layers. */
        IA3_L("ia3_l", null, true);

        private final String container;
        private final String leaf;
        private final boolean leafSaved;

        Param(String container, String leaf, boolean leafSaved) {
            this.container = container;
            this.leaf = leaf;
            this.leafSaved = leafSaved;
        }

        /** The tuner layer's attribute holding the per-adapter entries, e.g. {@code lora_A}. */
        public String container() {
            return container;
        }

        /** Whether PEFT writes this parameter to a checkpoint ({@code ranknum} never is). */
        public boolean isSaved() {
            return this != RANKNUM;
        }

        String checkpointSuffix() {
            return "." + container + (leaf != null && leafSaved ? "." + leaf : "");
        }
    }

    /** A checkpoint key taken apart: the adapted module (relative, no prefix) and the parameter. */
    public record ParsedKey(String module, Param param) {}

    /** In-memory key: {@code model.q_proj} + {@code default} + LORA_A → {@code model.q_proj.lora_A.default.weight}. */
    public static String modelKey(String module, String adapterName, Param param) {
        checkName("module", module);
        checkName("adapter name", adapterName);
        return module + "." + param.container + "." + adapterName + (param.leaf != null ? "." + param.leaf : "");
    }

    /** Checkpoint key: {@code model.q_proj} + LORA_A → {@code base_model.model.model.q_proj.lora_A.weight}. */
    public static String checkpointKey(String module, Param param) {
        checkName("module", module);
        if (!param.isSaved()) {
            throw new IllegalArgumentException(param.container + " of module " + module
                    + " is never saved in a checkpoint");
        }
        return PEFT_PREFIX + module + param.checkpointSuffix();
    }

    /** Key of a base-layer tensor of an adapted module, e.g. {@code model.q_proj.base_layer.bias} ({@code bias="all"}). */
    public static String baseLayerKey(String module, String leaf) {
        checkName("module", module);
        return module + ".base_layer." + leaf;
    }

    /**
     * Takes a checkpoint key apart (with or without {@code base_model.model.}). Empty for keys that are no adapter
     * parameter (base biases, modules_to_save copies, embeddings saved alongside). A key ending in
     * {@code .lora_A} (no {@code .weight}) is AdaLoRA's.
     */
    public static Optional<ParsedKey> parseCheckpointKey(String key) {
        String k = stripPeftPrefix(key);
        // DoRA's magnitude: PEFT saves it without ".weight", and loads it with ".weight" too (its load appends the
        // leaf to keys that lack it, and maps the module's own key)
        String doraLeaf = Param.LORA_MAGNITUDE_VECTOR.checkpointSuffix() + "." + Param.LORA_MAGNITUDE_VECTOR.leaf;
        if (k.endsWith(doraLeaf) && k.length() > doraLeaf.length()) {
            return Optional.of(new ParsedKey(k.substring(0, k.length() - doraLeaf.length()),
                    Param.LORA_MAGNITUDE_VECTOR));
        }
        for (Param p : Param.values()) {
            if (!p.isSaved()) {
                continue;
            }
            String suffix = p.checkpointSuffix();
            if (k.endsWith(suffix) && k.length() > suffix.length()) {
                return Optional.of(new ParsedKey(k.substring(0, k.length() - suffix.length()), p));
            }
        }
        return Optional.empty();
    }

    /** {@code base_model.model.} + key. */
    public static String addPeftPrefix(String key) {
        return PEFT_PREFIX + key;
    }

    /** Removes one leading {@code base_model.model.} if present (transformers v4, PEFT ≥ 0.20 on bare models). */
    public static String stripPeftPrefix(String key) {
        return key.startsWith(PEFT_PREFIX) ? key.substring(PEFT_PREFIX.length()) : key;
    }

    /**
     * Save side, PEFT ≥ 0.14 ({@code remove_adapter_name}): a key without a dot is unchanged; a key ending in
     * {@code .<adapter>} (a bare Parameter) loses that suffix; otherwise the adapter name is removed only when it is
     * the second-to-last component ({@code …lora_A.default.weight} → {@code …lora_A.weight}).
     */
    public static String removeAdapterName(String key, String adapterName) {
        checkName("adapter name", adapterName);
        if (key.indexOf('.') < 0) {
            return key;
        }
        String tail = "." + adapterName;
        if (key.endsWith(tail)) {
            return key.substring(0, key.length() - tail.length());
        }
        int dot = key.lastIndexOf('.');
        String head = key.substring(0, dot);
        String leaf = key.substring(dot + 1);
        if (head.endsWith(tail)) {
            head = head.substring(0, head.length() - tail.length());
        }
        return head + "." + leaf;
    }

    /**
     * Save side, PEFT ≤ 0.13: every occurrence of {@code .<adapter>} anywhere in the key is removed (wrong for
     * modules named like the adapter: adapter {@code v_proj} also strips the module name).
     */
    public static String removeAdapterNameLegacy(String key, String adapterName) {
        checkName("adapter name", adapterName);
        return key.replace("." + adapterName, "");
    }

    /**
     * Load side, name-based ({@code _insert_adapter_name_into_state_dict}, PEFT 0.14 to main): for a key holding
     * {@code methodPrefix} ({@code lora_} or {@code ia3_}), take the text after its <em>last</em> occurrence; with no
     * dot there, append {@code .<adapter>} ({@code …lora_E} → {@code …lora_E.default}); with one dot, insert
     * {@code <adapter>.} before the final component ({@code …lora_A.weight} → {@code …lora_A.default.weight}); with
     * more dots the prefix was part of a module name and the key is left as is. Keys without the prefix are
     * unchanged. For LoRA, a {@code …lora_magnitude_vector.<adapter>} key then gets {@code .weight} appended (DoRA).
     */
    public static String insertAdapterName(String key, String adapterName, String methodPrefix) {
        checkName("adapter name", adapterName);
        int at = key.lastIndexOf(methodPrefix);
        String out = key;
        if (at >= 0) {
            String suffix = key.substring(at + methodPrefix.length());
            int dot = suffix.indexOf('.');
            if (dot >= 0) {
                String toReplace = suffix.substring(dot + 1);
                if (toReplace.indexOf('.') < 0) {
                    out = key.substring(0, key.length() - toReplace.length()) + adapterName + "." + toReplace;
                }
            } else {
                out = key + "." + adapterName;
            }
        }
        if (LORA_PREFIX.equals(methodPrefix) && out.endsWith("lora_magnitude_vector." + adapterName)) {
            out = out + ".weight";
        }
        return out;
    }

    /**
     * Load side, PEFT ≤ 0.13: the text between the <em>first</em> and second occurrence of the prefix decides, and
     * the replacement is an unanchored global {@code str.replace} (mis-renames keys whose module names repeat the
     * suffix).
     */
    public static String insertAdapterNameLegacy(String key, String adapterName, String methodPrefix) {
        checkName("adapter name", adapterName);
        int at = key.indexOf(methodPrefix);
        if (at < 0) {
            return key;
        }
        int next = key.indexOf(methodPrefix, at + methodPrefix.length());
        String suffix = key.substring(at + methodPrefix.length(), next < 0 ? key.length() : next);
        int dot = suffix.indexOf('.');
        if (dot >= 0) {
            String toReplace = suffix.substring(dot + 1);
            return pythonReplace(key, toReplace, adapterName + "." + toReplace);
        }
        return key + "." + adapterName;
    }

    /**
     * Load side, structural (PEFT main after #3490): maps each checkpoint key to the model's own key by applying
     * {@link #removeAdapterName} to every adapter parameter key of the model and inverting; when the model keys
     * lack {@code base_model.model.}, the prefixed checkpoint key maps too. Keys absent from the map pass through.
     *
     * @param modelAdapterKeys in-memory keys of the adapter's parameters (those that hold the adapter name)
     * @throws IllegalArgumentException if two model keys collapse to one checkpoint key
     */
    public static Map<String, String> checkpointToModelKeys(Collection<String> modelAdapterKeys, String adapterName) {
        Map<String, String> out = new LinkedHashMap<>();
        for (String modelKey : modelAdapterKeys) {
            String ckpt = removeAdapterName(modelKey, adapterName);
            putUnique(out, ckpt, modelKey);
            if (!modelKey.startsWith(PEFT_PREFIX)) {
                putUnique(out, PEFT_PREFIX + ckpt, modelKey);
            }
        }
        return out;
    }

    private static void putUnique(Map<String, String> map, String ckpt, String modelKey) {
        String prev = map.put(ckpt, modelKey);
        if (prev != null && !prev.equals(modelKey)) {
            throw new IllegalArgumentException("model keys " + prev + " and " + modelKey
                    + " both map to checkpoint key " + ckpt);
        }
    }

    /** modules_to_save, in memory: {@code lm_head} + {@code default} + {@code weight} → {@code lm_head.modules_to_save.default.weight}. */
    public static String modulesToSaveModelKey(String wrapperModule, String adapterName, String subKey) {
        checkName("module", wrapperModule);
        checkName("adapter name", adapterName);
        return wrapperModule + ".modules_to_save." + adapterName + "." + subKey;
    }

    /**
     * modules_to_save, saved: the copy's keys directly under the wrapper, {@code lm_head.modules_to_save.default.weight}
     * → {@code lm_head.weight}. Throws if {@code modelKey} is not under that wrapper's copy for that adapter.
     */
    public static String modulesToSaveCheckpointKey(String wrapperModule, String adapterName, String modelKey) {
        String head = wrapperModule + ".modules_to_save." + adapterName + ".";
        if (!modelKey.startsWith(head)) {
            throw new IllegalArgumentException("key " + modelKey + " is not a parameter of adapter '" + adapterName
                    + "' in modules_to_save wrapper " + wrapperModule);
        }
        return wrapperModule + "." + modelKey.substring(head.length());
    }

    /**
     * AdaLoRA {@code rank_pattern} key as saved: PEFT removes {@code .<adapter>} everywhere in the key (a global
     * replace, mutating the config), e.g. {@code model.q.lora_E.default} → {@code model.q.lora_E}.
     */
    public static String rankPatternSaveKey(String rankPatternKey, String adapterName) {
        return removeAdapterNameLegacy(rankPatternKey, adapterName);
    }

    /**
     * The module an AdaLoRA {@code rank_pattern} key refers to ({@code resize_modules_by_rank_pattern},
     * {@code resize_state_dict_by_rank_pattern}): the key minus its last two components if it contains the adapter
     * name as a substring, else minus its last one. The substring test is PEFT's: an adapter named e.g. {@code "a"}
     * also "occurs" in {@code lora_E} and cuts one component too many.
     */
    public static String rankPatternModule(String rankPatternKey, String adapterName) {
        checkName("adapter name", adapterName);
        String[] parts = rankPatternKey.split("\\.", -1);
        int drop = rankPatternKey.contains(adapterName) ? 2 : 1;
        if (parts.length <= drop) {
            throw new IllegalArgumentException("rank_pattern key " + rankPatternKey + " has no module part");
        }
        return String.join(".", Arrays.copyOf(parts, parts.length - drop));
    }

    /**
     * transformers v4 {@code load_adapter}: strip one leading {@code base_model.model.}, then PEFT's name-based
     * insertion of the adapter name ({@link #insertAdapterName}).
     */
    public static String transformersV4ModelKey(String checkpointKey, String adapterName, String methodPrefix) {
        return insertAdapterName(stripPeftPrefix(checkpointKey), adapterName, methodPrefix);
    }

    private static final Pattern V5_PREFIX_MODEL = Pattern.compile("^base_model\\.model\\.model\\.");

    /**
     * transformers v5 {@code load_adapter} renames: {@code base_model.model.model.} → {@code model.}, then
     * {@code base_model.model.} → {@code ""} (both at the start of the key), then for each method prefix every
     * {@code <prefix>[^.]*} gets {@code .<adapter>} appended ({@code lora_A} → {@code lora_A.default}) — also inside
     * module names that happen to hold the prefix, as in transformers.
     */
    public static String transformersV5ModelKey(String checkpointKey, String adapterName,
            Collection<String> methodPrefixes) {
        checkName("adapter name", adapterName);
        String k = V5_PREFIX_MODEL.matcher(checkpointKey).replaceFirst("model.");
        k = stripPeftPrefix(k);
        for (String prefix : methodPrefixes) {
            Matcher m = Pattern.compile("(" + Pattern.quote(prefix) + "[^.]*)").matcher(k);
            k = m.replaceAll("$1." + Matcher.quoteReplacement(adapterName));
        }
        return k;
    }

    /** Python's {@code str.replace(old, new)}, including its behaviour for an empty {@code old}. */
    static String pythonReplace(String s, String old, String replacement) {
        if (!old.isEmpty()) {
            return s.replace(old, replacement);
        }
        StringBuilder b = new StringBuilder(replacement);
        for (int i = 0; i < s.length(); i++) {
            b.append(s.charAt(i)).append(replacement);
        }
        return b.toString();
    }

    private static void checkName(String what, String name) {
        Objects.requireNonNull(name, what);
        if (name.isEmpty()) {
            throw new IllegalArgumentException(what + " is empty");
        }
    }
}
