package dev.peft4j.config;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Sets the keys every config has. A builder edits the JSON object the config will stand for: it starts from PEFT
 * 0.18's defaults (a new config) or from an existing config's object ({@code toBuilder()}), and {@code build()}
 * validates it exactly as a file read from disk is validated.
 *
 * @param <B> the concrete builder
 */
public abstract class PeftConfigBuilder<B extends PeftConfigBuilder<B>> {
    final LinkedHashMap<String, Object> json;

    PeftConfigBuilder(Map<String, Object> start) {
        this.json = new LinkedHashMap<>(start);
    }

    @SuppressWarnings("unchecked")
    final B self() {
        return (B) this;
    }

    final B put(String key, Object value) {
        json.put(key, PythonJson.freeze(value));
        return self();
    }

    /**
     * Validates and builds the config.
     *
     * @throws PeftConfigException where reading a file with these values would fail
     */
    public abstract PeftConfig build();

    /** {@code task_type}; null for none. */
    public B taskType(TaskType taskType) {
        return put("task_type", taskType == null ? null : taskType.name());
    }

    /** {@code base_model_name_or_path}. */
    public B baseModelNameOrPath(String nameOrPath) {
        return put("base_model_name_or_path", nameOrPath);
    }

    /** {@code revision} of the base model. */
    public B revision(String revision) {
        return put("revision", revision);
    }

    /** {@code inference_mode}. */
    public B inferenceMode(boolean inferenceMode) {
        return put("inference_mode", inferenceMode);
    }

    /** {@code auto_mapping}; null for none. */
    public B autoMapping(Map<String, ?> autoMapping) {
        return put("auto_mapping", autoMapping);
    }

    /** {@code peft_version}. */
    public B peftVersion(String peftVersion) {
        return put("peft_version", peftVersion);
    }

    /** {@code target_modules}; null to let the model type's defaults apply. */
    public B targetModules(ModuleSelector targetModules) {
        return put("target_modules", ConfigDoc.toJson(targetModules));
    }

    /** {@code target_modules} as a list of names. */
    public B targetModules(String... names) {
        return targetModules(ModuleSelector.names(names));
    }

    /** {@code exclude_modules}; null for none. */
    public B excludeModules(ModuleSelector excludeModules) {
        return put("exclude_modules", ConfigDoc.toJson(excludeModules));
    }

    /** {@code modules_to_save}; null for none. */
    public B modulesToSave(List<String> modulesToSave) {
        return put("modules_to_save", modulesToSave);
    }

    /** {@code fan_in_fan_out}. */
    public B fanInFanOut(boolean fanInFanOut) {
        return put("fan_in_fan_out", fanInFanOut);
    }

    /**
     * Sets any key to a JSON value ({@code null}, Boolean, Integer/Long/BigInteger for a Python int, Double for a
     * Python float, String, List, Map with String keys): the way to set the rarely used nested configs
     * ({@code eva_config}, ...) and keys peft4j does not know. The value is checked by {@code build()}.
     *
     * @throws IllegalArgumentException for {@code peft_type}, which the builder's class fixes
     */
    public B set(String key, Object value) {
        if ("peft_type".equals(key)) {
            throw new IllegalArgumentException("peft_type is fixed by the builder's class");
        }
        return put(key, value);
    }

    /**
     * Makes the key set that of PEFT release {@code peftVersion} ({@code "0.17.1"}, {@code "0.17"}; 0.5 or later):
     * keys that release did not write are removed, keys it wrote and this builder lacks are added with their
     * defaults, keys peft4j does not know are left alone. Use it to write a file an older PEFT loads without
     * complaint (before 0.14, PEFT refuses any key it does not know); values are not changed.
     *
     * @throws IllegalArgumentException for a version that is not {@code 0.MINOR[...]} with MINOR at least 5
     */
    public B keysOfRelease(String peftVersion) {
        Matcher m = Pattern.compile("0\\.(\\d+)(\\..*)?").matcher(peftVersion);
        if (!m.matches() || Integer.parseInt(m.group(1)) < KnownKeys.OLDEST_MINOR) {
            throw new IllegalArgumentException("PEFT release \"" + peftVersion + "\" is not 0.5 or later");
        }
        PeftType type = PeftType.valueOf((String) json.get("peft_type"));
        Map<String, Object> release = KnownKeys.ofRelease(type, Integer.parseInt(m.group(1)));
        json.keySet().removeIf(key -> KnownKeys.of(type).contains(key) && !release.containsKey(key));
        release.forEach(json::putIfAbsent);
        return self();
    }

    /**
     * Removes a key, so that the written file does not have it (for example to write the key set of an older PEFT
     * release); reading the config then gives the key's default.
     */
    public B remove(String key) {
        if ("peft_type".equals(key)) {
            throw new IllegalArgumentException("peft_type is fixed by the builder's class");
        }
        json.remove(key);
        return self();
    }
}
