package dev.peft4j.config;

import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** The keys each method's config has, and the defaults a new config is written with (PEFT 0.18's key set, spec A.1). */
final class KnownKeys {
    private KnownKeys() {}

    static final List<String> COMMON = List.of("peft_type", "task_type", "base_model_name_or_path", "revision",
            "inference_mode", "auto_mapping", "peft_version", "target_modules", "exclude_modules", "modules_to_save",
            "fan_in_fan_out");

    /** LoRA keys beyond the common ones, in the order PEFT added them (0.4 ... main). */
    static final List<String> LORA = List.of("r", "lora_alpha", "lora_dropout", "bias", "init_lora_weights",
            "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern", "megatron_config",
            "megatron_core", "loftq_config", "use_rslora", "use_dora", "layer_replication", "lora_bias", "eva_config",
            "corda_config", "trainable_token_indices", "use_qalora", "qalora_group_size", "target_parameters",
            "alora_invocation_tokens", "arrow_config", "ensure_weight_tying", "lora_ga_config", "use_bdlora",
            "velora_config", "monteclora_config", "kasa_config");

    static final List<String> IA3 = List.of("feedforward_modules", "init_ia3_weights");

    static final List<String> ADALORA = List.of("target_r", "init_r", "tinit", "tfinal", "deltaT", "beta1", "beta2",
            "orth_reg_weight", "total_step");

    static Set<String> of(PeftType type) {
        Set<String> keys = new LinkedHashSet<>(COMMON);
        switch (type) {
            case LORA -> keys.addAll(LORA);
            case IA3 -> keys.addAll(IA3);
            case ADALORA -> {
                keys.addAll(LORA);
                keys.addAll(ADALORA);
            }
        }
        return keys;
    }

    /** The JSON PEFT 0.18's dataclass defaults give, as {@code asdict} would (before PeftModel fills anything in). */
    static LinkedHashMap<String, Object> defaults(PeftType type) {
        LinkedHashMap<String, Object> d = new LinkedHashMap<>();
        d.put("peft_type", type.jsonValue());
        d.put("task_type", null);
        d.put("base_model_name_or_path", null);
        d.put("revision", null);
        d.put("inference_mode", false);
        d.put("auto_mapping", null);
        d.put("peft_version", null);
        d.put("target_modules", null);
        d.put("exclude_modules", null);
        d.put("modules_to_save", null);
        d.put("fan_in_fan_out", false);
        if (type == PeftType.IA3) {
            d.put("feedforward_modules", null);
            d.put("init_ia3_weights", true);
            return d;
        }
        d.put("r", 8L);
        d.put("lora_alpha", 8L);
        d.put("lora_dropout", 0.0);
        d.put("bias", "none");
        d.put("init_lora_weights", true);
        d.put("layers_to_transform", null);
        d.put("layers_pattern", null);
        d.put("rank_pattern", type == PeftType.ADALORA ? null : Map.of());
        d.put("alpha_pattern", Map.of());
        d.put("megatron_config", null);
        d.put("megatron_core", "megatron.core");
        d.put("loftq_config", Map.of());
        d.put("use_rslora", false);
        d.put("use_dora", false);
        d.put("layer_replication", null);
        d.put("lora_bias", false);
        d.put("eva_config", null);
        d.put("corda_config", null);
        d.put("trainable_token_indices", null);
        d.put("use_qalora", false);
        d.put("qalora_group_size", 16L);
        d.put("target_parameters", null);
        d.put("alora_invocation_tokens", null);
        d.put("arrow_config", null);
        d.put("ensure_weight_tying", false);
        if (type == PeftType.ADALORA) {
            d.put("target_r", 8L);
            d.put("init_r", 12L);
            d.put("tinit", 0L);
            d.put("tfinal", 0L);
            d.put("deltaT", 1L);
            d.put("beta1", 0.85);
            d.put("beta2", 0.85);
            d.put("orth_reg_weight", 0.5);
            d.put("total_step", null);
        }
        return d;
    }

    static Map<String, Object> unknown(Map<String, Object> values, PeftType type) {
        Set<String> known = of(type);
        Map<String, Object> out = new LinkedHashMap<>();
        values.forEach((k, v) -> {
            if (!known.contains(k)) {
                out.put(k, v);
            }
        });
        return out;
    }
}
