package dev.peft4j.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Configs built in Java, written as PEFT 0.18 writes them (spec Appendix A). */
class ConfigBuilderTest {

    static final String APPENDIX_A1 = """
            {
              "alora_invocation_tokens": null,
              "alpha_pattern": {},
              "arrow_config": null,
              "auto_mapping": null,
              "base_model_name_or_path": "meta-llama/Llama-2-7b-hf",
              "bias": "none",
              "corda_config": null,
              "ensure_weight_tying": false,
              "eva_config": null,
              "exclude_modules": null,
              "fan_in_fan_out": false,
              "inference_mode": true,
              "init_lora_weights": true,
              "layer_replication": null,
              "layers_pattern": null,
              "layers_to_transform": null,
              "loftq_config": {},
              "lora_alpha": 16,
              "lora_bias": false,
              "lora_dropout": 0.05,
              "megatron_config": null,
              "megatron_core": "megatron.core",
              "modules_to_save": null,
              "peft_type": "LORA",
              "peft_version": "0.18.0",
              "qalora_group_size": 16,
              "r": 8,
              "rank_pattern": {},
              "revision": null,
              "target_modules": [
                "q_proj",
                "v_proj"
              ],
              "target_parameters": null,
              "task_type": "CAUSAL_LM",
              "trainable_token_indices": null,
              "use_dora": false,
              "use_qalora": false,
              "use_rslora": false
            }""";

    static final String APPENDIX_A2 = """
            {
              "auto_mapping": null,
              "base_model_name_or_path": "t5-small",
              "exclude_modules": null,
              "fan_in_fan_out": false,
              "feedforward_modules": [
                "wo"
              ],
              "inference_mode": true,
              "init_ia3_weights": true,
              "modules_to_save": null,
              "peft_type": "IA3",
              "peft_version": "0.18.0",
              "revision": null,
              "target_modules": [
                "k",
                "v",
                "wo"
              ],
              "task_type": "SEQ_2_SEQ_LM"
            }""";

    @Test
    void loraBuiltLikeAppendixA1IsWrittenExactlyAsPeft018Writes() {
        LoraConfig c = LoraConfig.builder().baseModelNameOrPath("meta-llama/Llama-2-7b-hf").inferenceMode(true)
                .loraAlpha(16).loraDropout(0.05).peftVersion("0.18.0").targetModules("q_proj", "v_proj")
                .taskType(TaskType.CAUSAL_LM).build();
        assertEquals(APPENDIX_A1, PeftConfigs.toJson(c));
        assertEquals(c, PeftConfigs.parse(APPENDIX_A1, "A.1"));
    }

    @Test
    void ia3BuiltLikeAppendixA2IsWrittenExactlyAsPeft018Writes() {
        IA3Config c = IA3Config.builder().baseModelNameOrPath("t5-small").feedforwardModules("wo").inferenceMode(true)
                .peftVersion("0.18.0").targetModules("k", "v", "wo").taskType(TaskType.SEQ_2_SEQ_LM).build();
        assertEquals(APPENDIX_A2, PeftConfigs.toJson(c));
    }

    @Test
    void adaLoraIsWrittenWithEveryLoraKeyANullRankPatternAndItsOwnKeys() {
        AdaLoraConfig c = AdaLoraConfig.builder().totalStep(1000).targetModules("q", "v").build();
        String json = PeftConfigs.toJson(c);
        Map<String, Object> expected = new LinkedHashMap<>(KnownKeys.defaults(PeftType.LORA));
        expected.putAll(Map.of("peft_type", "ADALORA", "target_r", 8L, "init_r", 12L, "tinit", 0L, "tfinal", 0L,
                "deltaT", 1L, "beta1", 0.85, "beta2", 0.85, "orth_reg_weight", 0.5, "total_step", 1000L));
        expected.put("rank_pattern", null);
        expected.put("target_modules", List.of("q", "v"));
        assertEquals(PythonJson.dumps(expected), json);
        assertTrue(json.contains("\"rank_pattern\": null,"));
        assertTrue(json.contains("\"beta1\": 0.85,"));
    }

    @Test
    void adaLoraRankPatternIsWrittenWithOneBooleanPerLineAsInAppendixA3() {
        AdaLoraConfig c = AdaLoraConfig.builder().totalStep(10)
                .rankPattern(Map.of("encoder.block.0.layer.0.SelfAttention.q.lora_E", List.of(true, false, true)))
                .build();
        assertTrue(PeftConfigs.toJson(c).contains("""
                  "rank_pattern": {
                    "encoder.block.0.layer.0.SelfAttention.q.lora_E": [
                      true,
                      false,
                      true
                    ]
                  },
                """), PeftConfigs.toJson(c));
        assertEquals(List.of(true, false, true), c.rankPattern().get("encoder.block.0.layer.0.SelfAttention.q.lora_E"));
    }

    @Test
    void intAndFloatAlphaAreWrittenAsPythonWouldWriteWhatWasPassed() {
        LoraConfig asInt = LoraConfig.builder().loraAlpha(16).build();
        LoraConfig asFloat = LoraConfig.builder().loraAlpha(16.0).build();
        assertTrue(PeftConfigs.toJson(asInt).contains("\"lora_alpha\": 16,"));
        assertTrue(PeftConfigs.toJson(asFloat).contains("\"lora_alpha\": 16.0,"));
        assertEquals(asInt.loraAlpha(), asFloat.loraAlpha());
        assertNotEquals(asInt, asFloat, "they write different files");
    }

    @Test
    void regexTargetsAndScalarLayerIndicesAreWrittenInTheFormGiven() {
        LoraConfig regex = LoraConfig.builder().targetModules(ModuleSelector.regex(".*\\.(q|v)_proj")).build();
        assertTrue(PeftConfigs.toJson(regex).contains("\"target_modules\": \".*\\\\.(q|v)_proj\","));
        LoraConfig one = LoraConfig.builder().targetModules("q_proj").layersToTransform(LayerIndices.of(3))
                .layersPattern(LayersPattern.of("layers")).build();
        String json = PeftConfigs.toJson(one);
        assertTrue(json.contains("\"layers_to_transform\": 3,"), json);
        assertTrue(json.contains("\"layers_pattern\": \"layers\","), json);
        LoraConfig many = one.toBuilder().layersToTransform(LayerIndices.of(List.of(0, 2)))
                .layersPattern(LayersPattern.of(List.of("layers", "h"))).build();
        assertEquals(LayerIndices.of(List.of(0, 2)), many.layersToTransform());
        assertEquals(List.of("layers", "h"), many.layersPattern().patterns());
        assertTrue(PeftConfigs.toJson(many).contains("\"layers_to_transform\": [\n    0,\n    2\n  ],"));
    }

    @Test
    void initLoraWeightsIsWrittenAsBooleanOrMethodName() {
        assertTrue(PeftConfigs.toJson(LoraConfig.builder().initLoraWeights(InitLoraWeights.of("gaussian")).build())
                .contains("\"init_lora_weights\": \"gaussian\","));
        LoraConfig pissa = LoraConfig.builder().initLoraWeights(InitLoraWeights.of("pissa_niter_4")).build();
        assertTrue(pissa.initLoraWeights().mutatesBaseWeights());
        assertTrue(InitLoraWeights.of("gaussian").isSimple());
        assertTrue(PeftConfigs.toJson(LoraConfig.builder().initLoraWeights(InitLoraWeights.of(false)).build())
                .contains("\"init_lora_weights\": false,"));
    }

    @Test
    void toBuilderKeepsUnknownKeysAndTheFilesKeySet() {
        String json = "{\"peft_type\": \"LORA\", \"r\": 4, \"future_option\": {\"x\": [1, 2.0]}}";
        LoraConfig read = (LoraConfig) PeftConfigs.parse(json, "test.json");
        LoraConfig changed = read.toBuilder().r(16).build();
        assertEquals(16, changed.r());
        assertEquals("{\n  \"future_option\": {\n    \"x\": [\n      1,\n      2.0\n    ]\n  },\n"
                + "  \"peft_type\": \"LORA\",\n  \"r\": 16\n}", PeftConfigs.toJson(changed));
    }

    @Test
    void builderRefusesToChangePeftType() {
        assertThrows(IllegalArgumentException.class, () -> LoraConfig.builder().set("peft_type", "IA3"));
    }

    @Test
    void removingAKeyWritesAnOlderReleasesKeySet() {
        LoraConfig c = LoraConfig.builder().remove("peft_version").remove("ensure_weight_tying").build();
        assertTrue(!PeftConfigs.toJson(c).contains("peft_version"));
        assertEquals(false, c.ensureWeightTying());
    }

    @Test
    void builderValuesAreValidatedAsAFileWouldBe() {
        PeftConfigException e = assertThrows(PeftConfigException.class, () -> LoraConfig.builder().r(0).build());
        assertEquals("LoraConfig: \"r\" must be a positive integer, got 0", e.getMessage());
        assertThrows(PeftConfigException.class, () -> LoraConfig.builder().set("use_rslora", "yes").build());
    }

    @Test
    void anyConfigCanBeCopiedWithInferenceModeSetThroughTheInterface() {
        for (PeftConfig c : java.util.List.<PeftConfig>of(LoraConfig.builder().build(), IA3Config.builder().build(),
                AdaLoraConfig.builder().totalStep(5).build())) {
            PeftConfig frozen = c.toBuilder().inferenceMode(true).build();
            assertEquals(c.getClass(), frozen.getClass());
            assertTrue(frozen.inferenceMode());
            assertTrue(!c.inferenceMode(), "the original is unchanged");
        }
    }
}
