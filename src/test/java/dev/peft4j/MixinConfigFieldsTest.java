package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.tuners.lora.LoraLayer;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every config field that changes what an adapter computes is applied or refused loudly (docs/CONFIG-FIELDS.md):
 * each refusal names the field and the adapter and leaves the model as it was; init-only methods load as plain LoRA;
 * unknown keys are logged as a WARN naming them.
 */
class MixinConfigFieldsTest {
    @TempDir
    Path tmp;

    static LoraConfig.Builder base() {
        return LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj", "v_proj");
    }

    static Map<String, Tensor> weights() {
        return MixinHotswapTest.adapter(4, 5);
    }

    static List<Arguments> refusedFields() {
        return List.of(
                Arguments.of("alora_invocation_tokens", List.of(1L, 2L)),
                Arguments.of("target_parameters", List.of("mlp.experts.gate_up_proj")),
                Arguments.of("layer_replication", List.of(List.of(0L, 2L), List.of(1L, 2L))),
                Arguments.of("arrow_config", Map.of("top_k", 3L)),
                Arguments.of("use_bdlora", Map.of("nblocks", 2L)),
                Arguments.of("kasa_config", Map.of("beta", 0.1)),
                Arguments.of("monteclora_config", Map.of("num_variants", 4L)),
                Arguments.of("velora_config", Map.of("num_groups", 32L)),
                Arguments.of("use_qalora", true),
                Arguments.of("ensure_weight_tying", true),
                Arguments.of("init_lora_weights", "pissa"),
                Arguments.of("init_lora_weights", "olora"),
                Arguments.of("init_lora_weights", "mica"));
    }

    @ParameterizedTest(name = "{0} = {1}")
    @MethodSource("refusedFields")
    void aFieldPeft4jDoesNotImplementIsRefusedNamingFieldAndAdapter(String key, Object value) throws Exception {
        PeftConfig config = base().set(key, value).build();
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            m.loadAdapter(null, LoadAdapterOptions.builder().adapterName("keep").peftConfig(base().build())
                    .adapterStateDict(weights()).build());
            Map<String, Tensor> before = MixinLoraTest.snapshot(m);
            UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class, () -> m.loadAdapter(
                    null, LoadAdapterOptions.builder().adapterName("fancy").peftConfig(config)
                            .adapterStateDict(weights()).build()));
            assertTrue(e.getMessage().contains("adapter 'fancy'") && e.getMessage().contains("\"" + key + "\""),
                    e.getMessage());
            assertTrue(e.getMessage().contains("the model is unchanged"), e.getMessage());
            MixinLoraTest.assertSameState(before, m);
            assertEquals(List.of("keep"), List.copyOf(m.peftAdapters().peftConfig().keySet()));
            assertEquals(List.of("keep"), m.activeAdapters());
            // add_adapter refuses it the same way
            UnsupportedOperationException add = assertThrows(UnsupportedOperationException.class,
                    () -> m.addAdapter(config, "fresh"));
            assertTrue(add.getMessage().contains("\"" + key + "\"") && add.getMessage().contains("'fresh'"),
                    add.getMessage());
            MixinLoraTest.assertSameState(before, m);
        }
    }

    @Test
    void aFolderWithARefusedFieldFailsNamingTheFolder() throws Exception {
        Path dir = tmp.resolve("alora");
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            m.addAdapter(base().build());
            m.saveAdapter(dir, null);
        }
        String json = Files.readString(dir.resolve("adapter_config.json"));
        Files.writeString(dir.resolve("adapter_config.json"), json.replace("\"alora_invocation_tokens\": null",
                "\"alora_invocation_tokens\": [5, 6]"));
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class,
                    () -> m.loadAdapter(dir));
            assertTrue(e.getMessage().contains(dir.toString()) && e.getMessage().contains("[5,6]"), e.getMessage());
            assertFalse(m.peftAdapters().isLoaded());
            assertFalse(m.getSubmodule("model.layers.0.self_attn.q_proj") instanceof LoraLayer);
        }
    }

    @Test
    void evaAndOrthogonalLoadAsPlainLoraAndKeepTheirInit() throws Exception {
        Tensor x = ids(2, 5, 32, 3);
        Tensor plain = MixinHotswapTest.fresh(base().build(), weights(), x);
        for (String init : List.of("eva", "orthogonal")) {
            try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
                m.loadAdapter(null, LoadAdapterOptions.builder().adapterName("default")
                        .peftConfig(base().set("init_lora_weights", init).build()).adapterStateDict(weights()).build());
                assertTrue(bitEqual(plain, logits(m, x)), init + ": the checkpoint's weights, as plain LoRA");
                assertEquals(init, m.peftAdapters().peftConfig().get("default").toJsonObject().get("init_lora_weights"));
                // a fresh adapter would need the init's data or method: refused
                UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class,
                        () -> m.addAdapter(base().set("init_lora_weights", init).build(), "new"));
                assertTrue(e.getMessage().contains("init_lora_weights"), e.getMessage());
            }
        }
    }

    @Test
    void unknownKeysAreLoggedAsAWarningNamingThem() throws Exception {
        PrintStream err = System.err;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            System.setErr(new PrintStream(captured, true, StandardCharsets.UTF_8));
            try {
                m.loadAdapter(null, LoadAdapterOptions.builder().adapterName("newer")
                        .peftConfig(base().set("future_option", 3L).build()).adapterStateDict(weights()).build());
            } finally {
                System.setErr(err);
            }
            String log = captured.toString(StandardCharsets.UTF_8);
            assertTrue(log.contains("WARN") && log.contains("'newer'") && log.contains("future_option"), log);
            // kept and written back unchanged
            m.saveAdapter(tmp.resolve("out"), "newer");
            assertEquals(3L, PeftConfigs.read(tmp.resolve("out")).unknownKeys().get("future_option"));
        }
    }
}
