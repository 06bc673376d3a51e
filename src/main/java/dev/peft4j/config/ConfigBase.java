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

    public TaskType taskType() {
        return taskType;
    }

    public String baseModelNameOrPath() {
        return baseModelNameOrPath;
    }

    public String revision() {
        return revision;
    }

    public boolean inferenceMode() {
        return inferenceMode;
    }

    public Map<String, Object> autoMapping() {
        return autoMapping;
    }

    public String peftVersion() {
        return peftVersion;
    }

    public ModuleSelector targetModules() {
        return targetModules;
    }

    public ModuleSelector excludeModules() {
        return excludeModules;
    }

    public List<String> modulesToSave() {
        return modulesToSave;
    }

    public boolean fanInFanOut() {
        return fanInFanOut;
    }

    public Map<String, Object> unknownKeys() {
        return unknownKeys;
    }

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
