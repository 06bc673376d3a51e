package dev.peft4j.config;

import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

/** What the three configs share: the common keys (spec §3.3), the JSON object, equality by that object. */
abstract class ConfigBase {
    private final Map<String, Object> json;
    private final Map<String, Object> unknownKeys;
    private final TaskType taskType;
    private final String baseModelNameOrPath;
    private final String revision;
    private final boolean inferenceMode;
    private final Map<String, Object> autoMapping;
    private final String peftVersion;
    private final ModuleSelector targetModules;
    private final ModuleSelector excludeModules;
    private final List<String> modulesToSave;
    private final boolean fanInFanOut;

    /**
     * Reads the common keys and freezes the JSON object; subclasses apply PEFT's normalisations to {@code doc}
     * before calling this, and read their own keys after.
     */
    ConfigBase(ConfigDoc doc, PeftType type) {
        String declared = doc.string("peft_type", null, false);
        if (!type.jsonValue().equals(declared)) {
            throw doc.error("peft_type", "must be \"" + type.jsonValue() + "\" for " + getClass().getSimpleName());
        }
        String task = doc.string("task_type", null, true);
        if (task == null) {
            taskType = null;
        } else {
            try {
                taskType = TaskType.valueOf(task);
            } catch (IllegalArgumentException e) {
                throw doc.error("task_type", "must be null or one of " + Arrays.stream(TaskType.values())
                        .map(Enum::name).collect(Collectors.joining(", ")));
            }
        }
        baseModelNameOrPath = doc.string("base_model_name_or_path", null, true);
        revision = doc.string("revision", null, true);
        inferenceMode = doc.bool("inference_mode", false);
        autoMapping = doc.object("auto_mapping", null, true);
        peftVersion = doc.string("peft_version", null, true);
        targetModules = doc.selector("target_modules");
        excludeModules = doc.selector("exclude_modules");
        modulesToSave = doc.stringList("modules_to_save");
        fanInFanOut = doc.bool("fan_in_fan_out", false);
        unknownKeys = Collections.unmodifiableMap(KnownKeys.unknown(doc.values, type));
        json = doc.frozen();
    }

    /** {@code task_type}, or null. */
    public TaskType taskType() {
        return taskType;
    }

    /** {@code base_model_name_or_path}, or null. */
    public String baseModelNameOrPath() {
        return baseModelNameOrPath;
    }

    /** {@code revision} of the base model, or null. */
    public String revision() {
        return revision;
    }

    /** {@code inference_mode}: the adapter is frozen. */
    public boolean inferenceMode() {
        return inferenceMode;
    }

    /** {@code auto_mapping} ({@code base_model_class}, {@code parent_library}), or null. */
    public Map<String, Object> autoMapping() {
        return autoMapping;
    }

    /** {@code peft_version} (PEFT 0.18 and later), or null. */
    public String peftVersion() {
        return peftVersion;
    }

    /** {@code target_modules}, or null (PEFT then takes the model type's defaults, spec §3.9). */
    public ModuleSelector targetModules() {
        return targetModules;
    }

    /** {@code exclude_modules}, or null. */
    public ModuleSelector excludeModules() {
        return excludeModules;
    }

    /** {@code modules_to_save}: modules trained in full and saved with the adapter, or null. */
    public List<String> modulesToSave() {
        return modulesToSave;
    }

    /** {@code fan_in_fan_out}: the target stores its weight as {@code (in, out)} (GPT-2's {@code Conv1D}). */
    public boolean fanInFanOut() {
        return fanInFanOut;
    }

    /** Keys of the file that peft4j does not know, with their values; kept and written back unchanged. Unmodifiable. */
    public Map<String, Object> unknownKeys() {
        return unknownKeys;
    }

    /** The JSON object this config stands for, keys in the order read (or set); unmodifiable. */
    public Map<String, Object> toJsonObject() {
        return json;
    }

    /** Two configs are equal when they would be written as the same JSON. */
    @Override
    public boolean equals(Object o) {
        return o != null && o.getClass() == getClass() && ((ConfigBase) o).json.equals(json);
    }

    @Override
    public int hashCode() {
        return json.hashCode();
    }

    /** The config as PEFT writes it. */
    @Override
    public String toString() {
        return PythonJson.dumps(json);
    }
}
