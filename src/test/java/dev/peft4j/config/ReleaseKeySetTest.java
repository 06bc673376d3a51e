package dev.peft4j.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Configs built in Java with an older release's key set are the files those releases wrote. */
class ReleaseKeySetTest {

    static String fixture(String name) throws Exception {
        return Files.readString(PeftConfigsFixtureTest.fixtureDir(name).resolve("adapter_config.json"));
    }

    @Test
    void loraWithPeft05KeysIsTheRegressionFixtureOfPeft05() throws Exception {
        LoraConfig c = LoraConfig.builder().keysOfRelease("0.5.0").baseModelNameOrPath("facebook/opt-125m")
                .autoMapping(Map.of("base_model_class", "OPTForCausalLM",
                        "parent_library", "transformers.models.opt.modeling_opt"))
                .inferenceMode(true).initLoraWeights(InitLoraWeights.of(false)).targetModules("q_proj", "v_proj")
                .build();
        assertEquals(fixture("peft-regression-lora-opt125m"), PeftConfigs.toJson(c));
    }

    @Test
    void loraWithPeft013KeysIsTheTinyLlamaFixture() throws Exception {
        LoraConfig c = LoraConfig.builder().keysOfRelease("0.13").baseModelNameOrPath("Maykeye/TinyLLama-v0")
                .inferenceMode(true).loraAlpha(32).loraDropout(0.05).targetModules("v_proj", "q_proj")
                .taskType(TaskType.CAUSAL_LM).build();
        assertEquals(fixture("peft-lora-tinyllama-added-tokens-fms"), PeftConfigs.toJson(c));
    }

    @Test
    void loraWithPeft017KeysIsTheGpt2FixtureOfPeft0171() throws Exception {
        LoraConfig c = LoraConfig.builder().keysOfRelease("0.17.1").baseModelNameOrPath("gpt2").fanInFanOut(true)
                .inferenceMode(true).loraAlpha(32).loraDropout(0.05).targetModules("c_attn", "c_proj")
                .taskType(TaskType.CAUSAL_LM).build();
        assertEquals(fixture("peft-lora-gpt2-tigrinya"), PeftConfigs.toJson(c));
    }

    @Test
    void ia3WithPeft05KeysIsTheMt0Fixture() throws Exception {
        IA3Config c = IA3Config.builder().keysOfRelease("0.5").baseModelNameOrPath("bigscience/mt0-large")
                .feedforwardModules().inferenceMode(true).targetModules("k", "v", "wi_1")
                .taskType(TaskType.SEQ_2_SEQ_LM).build();
        assertEquals(fixture("peft-ia3-mt0-large"), PeftConfigs.toJson(c));
    }

    @Test
    void laterReleasesAddTheirKeysAsNull() {
        String json = PeftConfigs.toJson(LoraConfig.builder().keysOfRelease("0.20").build());
        assertTrue(json.contains("\"lora_ga_config\": null,"), json);
        assertTrue(json.contains("\"monteclora_config\": null,"), json);
        assertFalse(json.contains("kasa_config"), json);
        LoraConfig back = (LoraConfig) PeftConfigs.parse(json, "0.20");
        assertEquals(Map.of(), back.unknownKeys(), "0.19/0.20 keys are known");
    }

    @Test
    void keysOfReleaseKeepsValuesAndUnknownKeys() {
        LoraConfig c = LoraConfig.builder().r(4).useRslora(true).set("tool_key", 1).keysOfRelease("0.18")
                .keysOfRelease("0.6").build();
        assertEquals(4, c.r());
        assertFalse(c.toJsonObject().containsKey("use_rslora"), "0.6 had no use_rslora");
        assertFalse(c.useRslora());
        assertEquals(Map.of("tool_key", 1L), c.unknownKeys());
    }

    @Test
    void rejectsReleasesBefore05AndNonVersions() {
        assertThrows(IllegalArgumentException.class, () -> LoraConfig.builder().keysOfRelease("0.4.0"));
        assertThrows(IllegalArgumentException.class, () -> LoraConfig.builder().keysOfRelease("latest"));
    }
}
