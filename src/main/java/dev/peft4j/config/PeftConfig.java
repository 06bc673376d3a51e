package dev.peft4j.config;

import java.util.List;
import java.util.Map;

/**
 * An adapter's {@code adapter_config.json}, typed: PEFT's {@code PeftConfig} for the methods peft4j injects. Each
 * implementation is immutable, validated as PEFT validates it, and built with its builder ({@code LoraConfig.builder()},
 * ...) or read with {@link PeftConfigs}.
 *
 * <p>Every config keeps the JSON object it stands for: values PEFT can write two ways ({@code 16} or {@code 16.0}, a
 * list or a regex string, an int or a list of ints) and keys peft4j does not know are written back as they were read,
 * so a file PEFT wrote comes back byte for byte.
 */
public sealed interface PeftConfig permits LoraConfig, IA3Config, AdaLoraConfig {

    /** {@code peft_type}. */
    PeftType peftType();

    /** {@code task_type}, or null. */
    TaskType taskType();

    /** {@code base_model_name_or_path}, or null. */
    String baseModelNameOrPath();

    /** {@code revision} of the base model, or null. */
    String revision();

    /** {@code inference_mode}: the adapter is frozen. */
    boolean inferenceMode();

    /** {@code auto_mapping} ({@code base_model_class}, {@code parent_library}), or null. */
    Map<String, Object> autoMapping();

    /** {@code peft_version} (PEFT 0.18 and later), or null. */
    String peftVersion();

    /** {@code target_modules}, or null (PEFT then takes the model type's defaults, spec §3.9). */
    ModuleSelector targetModules();

    /** {@code exclude_modules}, or null. */
    ModuleSelector excludeModules();

    /** {@code modules_to_save}: modules trained in full and saved with the adapter, or null. */
    List<String> modulesToSave();

    /** {@code fan_in_fan_out}: the target stores its weight as {@code (in, out)} (GPT-2's {@code Conv1D}). */
    boolean fanInFanOut();

    /**
     * Keys of the file that peft4j does not know (written by a newer PEFT, or by another tool), with their values.
     * They are kept and written back unchanged.
     */
    Map<String, Object> unknownKeys();

    /**
     * A builder starting from this config's JSON object (unknown keys included), e.g. to save a copy with
     * {@code inference_mode} set as PEFT's {@code save_pretrained} does.
     */
    PeftConfigBuilder<?> toBuilder();

    /**
     * The JSON object this config stands for, keys in the order read (or set), values as described in
     * {@link PeftConfigs}; unmodifiable.
     */
    Map<String, Object> toJsonObject();
}
