package dev.peft4j;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraSettings;
import dev.peft4j.config.PeftConfig;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Every {@code adapter_config.json} field that changes what an adapter computes is either applied or refused here,
 * before anything of the model changes: the LoRA variants peft4j does not implement (aLoRA, Arrow, BD-LoRA, KaSA,
 * MonteCLoRA, VeLoRA, QALoRA, MiCA), the field that targets something other than modules
 * ({@code target_parameters}) or reshapes the model ({@code layer_replication}),
 * and the inits that rewrite the base weights. Inits that only draw the starting weights (EVA, orthogonal) load as
 * plain LoRA, since the checkpoint replaces them. Keys peft4j does not know are logged as a WARN naming them.
 * docs/CONFIG-FIELDS.md lists every field and what peft4j does with it.
 */
final class ConfigFieldChecks {
    private static final Logger LOG = LoggerFactory.getLogger(ConfigFieldChecks.class);

    /** Inits that only set the starting A and B (PEFT leaves the base weight alone): a checkpoint replaces them. */
    private static final ObjectMapper JSON = new ObjectMapper();

    private static final Set<String> INIT_ONLY = Set.of("eva", "orthogonal");

    private ConfigFieldChecks() {
    }

    /**
     * The config to inject adapter {@code name} with: {@code config} itself, or for a load of an init-only method
     * the same config with {@code init_lora_weights} true (the tensors the init would draw are overwritten by the
     * checkpoint; PEFT's EVA init leaves A as drawn and B zero, as {@code true} does).
     *
     * @param forLoad a checkpoint follows ({@code load_adapter}), else a fresh adapter ({@code add_adapter})
     * @param source the folder, repo id or {@code state_dict}, for messages
     * @throws UnsupportedOperationException naming the field, its value and the adapter, when a field changes the
     *     output in a way peft4j does not implement
     */
    static PeftConfig check(PeftConfig config, String name, boolean forLoad, String source) {
        warnUnknownKeys(config, name, source);
        if (!(config instanceof LoraSettings ls)) {
            return config;
        }
        String verb = forLoad ? "loaded" : "added";
        List<String> refused = new ArrayList<>();
        refuseIfSet(refused, "alora_invocation_tokens", ls.aloraInvocationTokens(),
                "aLoRA applies the adapter only from the invocation tokens on; applied as a plain LoRA it would "
                        + "change every position");
        refuseIfSet(refused, "target_parameters", ls.targetParameters(),
                "LoRA on bare nn.Parameters (ParamWrapper, for MoE experts) is not implemented");
        refuseIfSet(refused, "layer_replication", ls.layerReplication(),
                "replicating decoder layers (sharing their base weights) is not implemented");
        refuseIfSet(refused, "arrow_config", ls.arrowConfig(),
                "Arrow routes each token among several LoRA experts; it is not implemented");
        refuseIfSet(refused, "use_bdlora", ls.useBdlora(),
                "BD-LoRA (block-diagonal LoRA factors) is not implemented");
        Map<String, Object> raw = config.toJsonObject();
        refuseIfSet(refused, "kasa_config", raw.get("kasa_config"), "KaSA is not implemented");
        refuseIfSet(refused, "monteclora_config", raw.get("monteclora_config"), "MonteCLoRA is not implemented");
        refuseIfSet(refused, "velora_config", raw.get("velora_config"), "VeLoRA is not implemented");
        if (ls.ensureWeightTying()) {
            refused.add("\"ensure_weight_tying\" = true (PEFT ties the adapter of a tied output embedding to the input "
                    + "embedding's; not implemented)");
        }
        if (ls.useQalora()) {
            refused.add("\"use_qalora\" = true (QALoRA pools the input of a quantized layer in groups; not "
                    + "implemented)");
        }
        InitLoraWeights init = ls.initLoraWeights();
        boolean initOnly = false;
        if (init instanceof InitLoraWeights.Method m) {
            String method = m.name().toLowerCase(Locale.ROOT);
            initOnly = INIT_ONLY.contains(method);
            if (initOnly && !forLoad) {
                refused.add("\"init_lora_weights\" = " + json(m.name()) + " (this init needs data or "
                        + "a method peft4j does not implement; load a trained adapter instead)");
            } else if (init.mutatesBaseWeights()) {
                refused.add("\"init_lora_weights\" = " + json(m.name()) + " (PEFT rewrites the base weights with "
                        + "this init, so the checkpoint is only right relative to the rewritten base; convert it to a "
                        + "plain LoRA first, e.g. with PEFT's path_initial_model_for_weight_conversion)");
            } else if (method.equals("mica")) {
                refused.add("\"init_lora_weights\" = \"mica\" (MiCA is a LoRA variant; not implemented)");
            }
        }
        if (!refused.isEmpty()) {
            throw new UnsupportedOperationException("adapter '" + name + "' (" + source + ") was not " + verb
                    + ", the model is unchanged: peft4j does not implement " + String.join("; ", refused));
        }
        if (initOnly) {
            return config.toBuilder().set("init_lora_weights", true).build();
        }
        return config;
    }

    private static void refuseIfSet(List<String> refused, String key, Object value, String why) {
        if (value == null || Boolean.FALSE.equals(value)
                || value instanceof Collection<?> c && c.isEmpty() || value instanceof Map<?, ?> m && m.isEmpty()) {
            return;
        }
        refused.add("\"" + key + "\" = " + json(value) + " (" + why + ")");
    }

    /** The value as it reads in the JSON file. */
    private static String json(Object value) {
        try {
            return JSON.writeValueAsString(value);
        } catch (JsonProcessingException e) {
            return String.valueOf(value);
        }
    }

    private static void warnUnknownKeys(PeftConfig config, String name, String source) {
        if (!config.unknownKeys().isEmpty()) {
            LOG.warn("adapter '{}' ({}): adapter_config.json keys unknown to peft4j's {} config are ignored: {}",
                    name, source, config.peftType(), String.join(", ", config.unknownKeys().keySet()));
        }
    }
}
