package dev.peft4j.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;

/** Every adapter_config.json of the shared fixtures (copied with their PROVENANCE.md), PEFT 0.5 to 0.17. */
class PeftConfigsFixtureTest {

    static Path fixtureDir(String name) throws URISyntaxException {
        return Path.of(PeftConfigsFixtureTest.class.getResource(name + "/adapter_config.json").toURI()).getParent();
    }

    @ParameterizedTest
    @ValueSource(strings = {"peft-ia3-mt0-large", "peft-lora-tinyllama-added-tokens-fms", "peft-lora-gpt2-tigrinya",
            "peft-regression-lora-opt125m"})
    void writingAParsedFixtureGivesBackTheFileByteForByte(String fixture) throws Exception {
        Path file = fixtureDir(fixture).resolve("adapter_config.json");
        PeftConfig config = PeftConfigs.read(file);
        assertEquals(Files.readString(file), PeftConfigs.toJson(config));
        assertEquals(Map.of(), config.unknownKeys());
    }

    @Test
    void readsPeft05LoraRegressionConfigWithDefaultsForKeysItLacks() throws Exception {
        LoraConfig c = (LoraConfig) PeftConfigs.read(fixtureDir("peft-regression-lora-opt125m"));
        assertEquals(PeftType.LORA, c.peftType());
        assertNull(c.taskType());
        assertEquals("facebook/opt-125m", c.baseModelNameOrPath());
        assertEquals(Map.of("base_model_class", "OPTForCausalLM",
                "parent_library", "transformers.models.opt.modeling_opt"), c.autoMapping());
        assertTrue(c.inferenceMode());
        assertEquals(8, c.r());
        assertEquals(8.0, c.loraAlpha());
        assertEquals(0.0, c.loraDropout());
        assertEquals(InitLoraWeights.of(false), c.initLoraWeights());
        assertEquals(ModuleSelector.names("q_proj", "v_proj"), c.targetModules());
        assertEquals(Bias.NONE, c.bias());
        // keys PEFT 0.5 did not write take today's defaults
        assertFalse(c.useRslora());
        assertFalse(c.useDora());
        assertEquals(Map.of(), c.rankPattern());
        assertEquals("megatron.core", c.megatronCore());
        assertEquals(16, c.qaloraGroupSize());
        assertNull(c.peftVersion());
        assertEquals(1.0, c.scaling("model.decoder.layers.0.self_attn.q_proj"));
        assertFalse(c.toJsonObject().containsKey("use_rslora"), "a PEFT 0.5 file stays a PEFT 0.5 file");
    }

    @Test
    void readsGpt2ConfigWithFanInFanOutAndPeft017Keys() throws Exception {
        LoraConfig c = (LoraConfig) PeftConfigs.read(fixtureDir("peft-lora-gpt2-tigrinya"));
        assertTrue(c.fanInFanOut());
        assertEquals(TaskType.CAUSAL_LM, c.taskType());
        assertEquals(ModuleSelector.names("c_attn", "c_proj"), c.targetModules());
        assertEquals(0.05, c.loraDropout());
        assertEquals(4.0, c.scaling("transformer.h.0.attn.c_attn"));
        assertNull(c.targetParameters());
        assertNull(c.trainableTokenIndices());
        assertFalse(c.loraBias());
        assertEquals(Map.of(), c.loftqConfig());
    }

    @Test
    void readsTinyLlamaConfigKeepingTheFilesTargetOrder() throws Exception {
        LoraConfig c = (LoraConfig) PeftConfigs.read(fixtureDir("peft-lora-tinyllama-added-tokens-fms"));
        assertEquals(List.of("v_proj", "q_proj"), ((ModuleSelector.Names) c.targetModules()).names());
        assertEquals(32.0, c.loraAlpha());
        assertNull(c.layerReplication());
    }

    @Test
    void readsIa3ConfigWithEmptyFeedforwardList() throws Exception {
        IA3Config c = (IA3Config) PeftConfigs.read(fixtureDir("peft-ia3-mt0-large"));
        assertEquals(TaskType.SEQ_2_SEQ_LM, c.taskType());
        assertEquals(ModuleSelector.names("k", "v", "wi_1"), c.targetModules());
        assertEquals(ModuleSelector.names(), c.feedforwardModules());
        assertTrue(c.initIa3Weights());
        assertNull(c.excludeModules());
        assertInstanceOf(IA3Config.class, c.toBuilder().build());
    }

    /** The shape of configs written by PEFT's earliest releases (0.2/0.3), with keys PEFT later dropped. */
    static final String EARLY_PEFT_SHAPE = """
            {
              "base_model_name_or_path": "some/llama-7b",
              "bias": "none",
              "enable_lora": null,
              "fan_in_fan_out": false,
              "inference_mode": true,
              "init_lora_weights": true,
              "lora_alpha": 16,
              "lora_dropout": 0.05,
              "merge_weights": false,
              "modules_to_save": null,
              "peft_type": "LORA",
              "r": 8,
              "target_modules": [
                "q_proj",
                "v_proj",
                "k_proj",
                "o_proj"
              ],
              "task_type": "CAUSAL_LM"
            }""";

    @Test
    void readsEarlyPeftConfigKeepingItsRetiredKeysAsUnknown() {
        PeftConfig c = PeftConfigs.parse(EARLY_PEFT_SHAPE, "early.json");
        Map<String, Object> unknown = new java.util.LinkedHashMap<>();
        unknown.put("enable_lora", null);
        unknown.put("merge_weights", false);
        assertEquals(unknown, c.unknownKeys());
        assertEquals(2.0, ((LoraConfig) c).scaling("model.layers.0.self_attn.o_proj"));
        assertEquals(EARLY_PEFT_SHAPE, PeftConfigs.toJson(c));
    }

    @Test
    void intDropoutAsSomeTrainersWriteItStaysAnInt() {
        String json = "{\n  \"lora_dropout\": 0,\n  \"peft_type\": \"LORA\"\n}";
        LoraConfig c = (LoraConfig) PeftConfigs.parse(json, "t.json");
        assertEquals(0.0, c.loraDropout());
        assertEquals(json, PeftConfigs.toJson(c));
    }
}
