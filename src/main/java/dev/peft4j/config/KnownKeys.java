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

    /** The PEFT minor release (0.MINOR) that first wrote each key; 5 stands for "0.5 or earlier". */
    private static final Map<String, Integer> INTRODUCED_IN = Map.ofEntries(
            Map.entry("peft_version", 18), Map.entry("exclude_modules", 14),
            Map.entry("rank_pattern", 6), Map.entry("alpha_pattern", 6),
            Map.entry("megatron_config", 7), Map.entry("megatron_core", 7), Map.entry("loftq_config", 7),
            Map.entry("use_rslora", 8), Map.entry("use_dora", 9), Map.entry("layer_replication", 10),
            Map.entry("lora_bias", 14), Map.entry("eva_config", 14),
            Map.entry("corda_config", 15), Map.entry("trainable_token_indices", 15),
            Map.entry("use_qalora", 16), Map.entry("qalora_group_size", 16), Map.entry("target_parameters", 17),
            Map.entry("alora_invocation_tokens", 18), Map.entry("arrow_config", 18),
            Map.entry("ensure_weight_tying", 18), Map.entry("lora_ga_config", 19), Map.entry("use_bdlora", 19),
            Map.entry("velora_config", 20), Map.entry("monteclora_config", 20), Map.entry("kasa_config", 21));

    /** The oldest release {@link #ofRelease} knows: transformers v4's minimum PEFT. */
    static final int OLDEST_MINOR = 5;

    /** The minor release in which {@code key} first appeared in {@code type}'s config. */
    static int introducedIn(PeftType type, String key) {
        if (type == PeftType.ADALORA && key.equals("rank_pattern")) {
            return OLDEST_MINOR; // AdaLoRA had its own rank_pattern before LoRA got one
        }
        return INTRODUCED_IN.getOrDefault(key, OLDEST_MINOR);
    }

    /**
     * The keys of {@code type}'s config as PEFT {@code 0.minor} wrote them, with the defaults of those not in
     * {@link #defaults} (keys after 0.18 default to null).
     */
    static LinkedHashMap<String, Object> ofRelease(PeftType type, int minor) {
        LinkedHashMap<String, Object> base = defaults(type);
        LinkedHashMap<String, Object> out = new LinkedHashMap<>();
        for (String key : of(type)) {
            if (introducedIn(type, key) <= minor) {
                out.put(key, base.get(key)); // null for the keys after 0.18
            }
        }
        return out;
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
