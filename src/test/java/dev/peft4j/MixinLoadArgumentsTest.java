package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.ids;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.AdaLoraConfig;
import dev.peft4j.config.IA3Config;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.adalora.SvdLinear;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/**
 * The rest of {@code load_adapter}'s signature (revision and token in {@code adapter_kwargs}, device placement
 * arguments on a CPU build), {@code get_adapter_state_dict(name, state_dict)}, {@code active_adapter()}, and the
 * edge cases PEFT allows: a rank-0 AdaLoRA module, the active adapter after two loads.
 */
class MixinLoadArgumentsTest {
    static LoraConfig cfg() {
        return MixinConfigFieldsTest.base().build();
    }

    static LoadAdapterOptions.Builder inMemory(String name) {
        return LoadAdapterOptions.builder().adapterName(name).peftConfig(cfg()).adapterStateDict(
                MixinHotswapTest.adapter(4, 9));
    }

    @Test
    void revisionAndTokenInAdapterKwargsAreUsedAsTransformersUsesThem() {
        PrintStream err = System.err;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        LoadAdapterOptions resolved;
        System.setErr(new PrintStream(captured, true, StandardCharsets.UTF_8));
        try {
            resolved = LoadArguments.resolve(LoadAdapterOptions.builder().revision("v1").token("arg-token")
                    .adapterKwargs(Map.of("revision", "v2", "token", "kw-token")).build());
        } finally {
            System.setErr(err);
        }
        assertEquals("v2", resolved.revision(), "adapter_kwargs' revision wins");
        assertEquals("kw-token", resolved.token(), "adapter_kwargs' token replaces the argument");
        assertTrue(captured.toString(StandardCharsets.UTF_8).contains("You passed a `revision` argument both in "
                + "`adapter_kwargs` and as a standalone argument. The one in `adapter_kwargs` will be used."),
                captured.toString(StandardCharsets.UTF_8));
        assertEquals("v1", LoadArguments.resolve(LoadAdapterOptions.builder().revision("v1").build()).revision());
        assertEquals("v3", LoadArguments.resolve(LoadAdapterOptions.builder()
                .adapterKwargs(Map.of("revision", "v3")).build()).revision());
        Map<String, Object> nullToken = new HashMap<>();
        nullToken.put("token", null);
        assertNull(LoadArguments.resolve(LoadAdapterOptions.builder().token("t").adapterKwargs(nullToken).build())
                .token(), "an explicit None in adapter_kwargs replaces it too");
    }

    @Test
    void placementArgumentsAreCheckedAndCudaIsRefusedWithoutADevice() throws Exception {
        for (Object ok : List.of("auto", "cpu", "balanced", "sequential", Map.of("", "cpu"), "meta",
                Map.of("model.layers.0", "cpu", "model.layers.1", "meta"))) {
            LoadArguments.resolve(LoadAdapterOptions.builder().deviceMap(ok).build());
        }
        for (String cuda : List.of("cuda", "cuda:1")) {
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class,
                    () -> LoadArguments.resolve(LoadAdapterOptions.builder().deviceMap(cuda).build()));
            assertTrue(x.getMessage().startsWith("device_map=" + cuda + ": no CUDA device is present"), x.getMessage());
        }
        LoadArguments.resolve(LoadAdapterOptions.builder().adapterKwargs(Map.of("device", "cpu")).build());
        Map<String, LoadAdapterOptions> refused = new LinkedHashMap<>();
        refused.put("device_map=cuda", LoadAdapterOptions.builder().deviceMap("cuda").build());
        refused.put("device_map['model.layers.1']", LoadAdapterOptions.builder().deviceMap(Map.of("model.layers.1",
                "disk")).build());
        refused.put("adapter_kwargs['device']", LoadAdapterOptions.builder().adapterKwargs(Map.of("device", "cuda:0"))
                .build());
        refused.put("offload_folder", LoadAdapterOptions.builder().offloadFolder(Path.of("/tmp/off")).build());
        refused.put("offload_index", LoadAdapterOptions.builder().offloadIndex(Path.of("/tmp/idx")).build());
        refused.put("max_memory['0']", LoadAdapterOptions.builder().maxMemory(Map.of("0", "10GiB")).build());
        refused.put("max_memory['cpu'] = lots", LoadAdapterOptions.builder().maxMemory(Map.of("cpu", "lots")).build());
        refused.put("adapter_kwargs['proxies']", LoadAdapterOptions.builder().adapterKwargs(Map.of("proxies",
                Map.of("https", "http://proxy:3128"))).build());
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            for (Map.Entry<String, LoadAdapterOptions> e : refused.entrySet()) {
                IllegalArgumentException x = assertThrows(IllegalArgumentException.class,
                        () -> m.loadAdapter("/nonexistent/adapter", e.getValue()), e.getKey());
                assertTrue(x.getMessage().contains(e.getKey()), x.getMessage());
            }
            // max_memory['cpu'] is applied: 1 KB cannot hold the adapter's 1,792 bytes of float32 factors
            LoadAdapterOptions tight = inMemory("a").maxMemory(Map.of("cpu", "1KB")).build();
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class, () -> m.loadAdapter(null, tight));
            assertTrue(x.getMessage().contains("max_memory['cpu'] = 1KB (1000 bytes)"), x.getMessage());
            assertFalse(m.peftAdapters().isLoaded());
            m.loadAdapter(null, inMemory("a").maxMemory(Map.of("cpu", "1MiB")).build());
            assertEquals(List.of("a"), m.activeAdapters());
        }
        assertEquals(2L << 30, LoadArguments.parseSize("2GiB"));
        assertEquals(500_000_000L, LoadArguments.parseSize("500MB"));
        assertEquals(123L, LoadArguments.parseSize(123));
    }

    @Test
    void adapterStateDictOfAGivenStateDictTakesItsValues() throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            m.loadAdapter(null, inMemory("a").build());
            Map<String, Tensor> given = new LinkedHashMap<>();
            m.stateDict().forEach((k, v) -> given.put(k, v.mul(new org.bytedeco.pytorch.Scalar(2.0))));
            given.remove("model.layers.1.self_attn.v_proj.lora_B.a.weight");
            Map<String, Tensor> own = m.getAdapterStateDict("a");
            Map<String, Tensor> sd = m.getAdapterStateDict("a", given);
            assertEquals(own.size() - 1, sd.size(), "a key the given state dict lacks is left out");
            String k = "model.layers.0.self_attn.q_proj.lora_A.weight";
            assertSame(given.get("model.layers.0.self_attn.q_proj.lora_A.a.weight"), sd.get(k));
            assertTrue(bitEqual(own.get(k).mul(new org.bytedeco.pytorch.Scalar(2.0)), sd.get(k)));
            assertFalse(sd.containsKey("model.layers.1.self_attn.v_proj.lora_B.weight"));
        }
    }

    @Test
    @SuppressWarnings("deprecation")
    void theActiveAdapterAfterTwoLoadsIsTheSecondEverywhere() throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            m.loadAdapter(null, inMemory("first").build());
            m.loadAdapter(null, inMemory("second").build());
            assertEquals(List.of("second"), m.activeAdapters());
            assertEquals("second", m.activeAdapter());
            for (BaseTunerLayer l : m.peftAdapters().tunerLayers().values()) {
                assertEquals(List.of("second"), l.activeAdapters());
            }
        }
    }

    @Test
    void anAdaLoraModulePrunedToRankZeroLoadsAndAddsNothing() throws Exception {
        Map<String, List<Boolean>> pattern = new LinkedHashMap<>();
        pattern.put("model.layers.1.self_attn.v_proj.lora_E", List.of(false, false, false, false));
        AdaLoraConfig c = AdaLoraConfig.builder().initR(4).targetR(2).totalStep(100).loraAlpha(8)
                .targetModules("q_proj", "v_proj").rankPattern(pattern).build();
        Map<String, Tensor> sd = new LinkedHashMap<>();
        sd.put("base_model.model.model.layers.1.self_attn.v_proj.lora_A", torch.zeros(0, 16));
        sd.put("base_model.model.model.layers.1.self_attn.v_proj.lora_E", torch.zeros(0, 1));
        sd.put("base_model.model.model.layers.1.self_attn.v_proj.lora_B", torch.zeros(8, 0));
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            AdapterLoadReport r = m.loadAdapter(c, sd, "pruned");
            assertEquals(List.of(), r.unexpectedKeys());
            SvdLinear v1 = (SvdLinear) m.getSubmodule("model.layers.1.self_attn.v_proj");
            assertArrayEquals(new long[] {0, 16}, v1.adapterParameters("pruned").get("lora_A.pruned").shape());
            Module base = v1.baseLayer();
            Tensor x = torch.randn(2, 3, 16);
            assertTrue(bitEqual(((dev.peft4j.nn.Layer) base).forward(x), v1.forward(x)), "autograd path: base alone");
            try (NoGradGuard g = new NoGradGuard()) {
                assertTrue(bitEqual(((dev.peft4j.nn.Layer) base).forward(x), v1.forward(x)), "inference path");
            }
            MixinSupport.logits(m, ids(1, 4, 32, 2));
        }
    }

    @Test
    void aSecondAdapterOfAnotherMethodOnAnAdaptedModuleWrapsIt() throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            m.loadAdapter(null, inMemory("lora").build());
            Module lora = m.getSubmodule("model.layers.0.self_attn.q_proj");
            m.addAdapter(IA3Config.builder().targetModules("q_proj", "k_proj").feedforwardModules().build(), "ia3");
            Module q = m.getSubmodule("model.layers.0.self_attn.q_proj");
            assertEquals("ia3.Linear", q.typeName());
            assertTrue(((BaseTunerLayer) q).baseLayer() == lora, "PEFT nests the new layer around the LoRA one");
            assertTrue(m.getSubmodule("model.layers.0.self_attn.k_proj") instanceof BaseTunerLayer);
            assertEquals(List.of("lora", "ia3"), List.copyOf(m.peftAdapters().peftConfig().keySet()));
        }
    }
}
