package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LayerIndices;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.ModuleSelector;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Linear;
import dev.peft4j.tuners.NoMatchingModuleException;
import dev.peft4j.tuners.lora.LoraLayer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The mixin's behaviour on a small seeded Llama: PEFT's and transformers' tests that apply (spec §7). */
class MixinLoraTest {
    @TempDir
    Path tmp;

    static LoraConfig cfg(boolean init, String... targets) {
        return LoraConfig.builder().r(4).loraAlpha(8).targetModules(targets)
                .initLoraWeights(new InitLoraWeights.Flag(init)).build();
    }

    static Map<String, Tensor> snapshot(PreTrainedModel m) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        m.stateDict().forEach((k, v) -> out.put(k, v.clone()));
        return out;
    }

    static void assertSameState(Map<String, Tensor> before, PreTrainedModel m) {
        Map<String, Tensor> now = m.stateDict();
        assertEquals(before.keySet(), now.keySet());
        before.forEach((k, v) -> assertTrue(bitEqual(v, now.get(k)), k));
    }

    @Test
    void defaultInitIsExactNoOp() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(1)) {
            Tensor x = ids(2, 5, 32, 1);
            Tensor base = logits(m, x);
            m.addAdapter(cfg(true, "q_proj", "v_proj"));
            assertTrue(bitEqual(base, logits(m, x)), "lora_B = 0 == base exactly");
        }
    }

    @Test
    void addAdapterActivatesItAndTrainsOnlyAdapters() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(1)) {
            m.addAdapter(cfg(false, "q_proj"), "a");
            m.addAdapter(cfg(false, "q_proj"), "b");
            assertEquals(List.of("b"), m.activeAdapters());
            List<String> trainable = new ArrayList<>();
            m.namedParameters().forEach((k, v) -> {
                if (v.requires_grad()) {
                    trainable.add(k);
                }
            });
            assertEquals(List.of("model.layers.0.self_attn.q_proj.lora_A.b.weight",
                    "model.layers.0.self_attn.q_proj.lora_B.b.weight", "model.layers.1.self_attn.q_proj.lora_A.b.weight",
                    "model.layers.1.self_attn.q_proj.lora_B.b.weight"), trainable);
            assertEquals(List.of("a", "b"), ((LoraLayer) m.getSubmodule("model.layers.0.self_attn.q_proj")).adapterNames());
        }
    }

    @Test
    void layerForwardIsBasePlusScaledDeltasOfBothActiveAdapters() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(2)) {
            m.peftAdapters().seed(1);
            m.addAdapter(LoraConfig.builder().r(2).loraAlpha(3).targetModules("q_proj")
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build(), "a");
            m.peftAdapters().seed(2);
            m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).useRslora(true).targetModules("q_proj")
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build(), "b");
            m.setAdapter("a", "b");
            LoraLayer l = (LoraLayer) m.getSubmodule("model.layers.0.self_attn.q_proj");
            Map<String, Tensor> pa = l.adapterParameters("a");
            Map<String, Tensor> pb = l.adapterParameters("b");
            Tensor w = ((Linear) l.baseLayer()).weight();
            torch.manual_seed(4);
            Tensor x = torch.randn(3, 16);
            // by hand: x·Wᵀ + 3/2·(x·Aaᵀ)·Baᵀ + 8/√4·(x·Abᵀ)·Bbᵀ
            Tensor expect = x.matmul(w.t())
                    .add(x.matmul(pa.get("lora_A.a.weight").t()).matmul(pa.get("lora_B.a.weight").t()).mul(new Scalar(1.5)))
                    .add(x.matmul(pb.get("lora_A.b.weight").t()).matmul(pb.get("lora_B.b.weight").t()).mul(new Scalar(4.0)));
            assertTrue(maxAbsDiff(expect, l.forward(x)) < 1e-6, "fp32, 16-wide sums");
            assertEquals(1.5, l.scaling("a"));
            assertEquals(4.0, l.scaling("b"));
        }
    }

    @Test
    void twoActiveAdaptersMergeAndUnmergeReproduceUnmergedOutput() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            Tensor x = ids(2, 5, 32, 2);
            Tensor base = logits(m, x);
            m.peftAdapters().seed(1);
            m.addAdapter(cfg(false, "q_proj", "v_proj", "down_proj"), "a");
            Tensor onlyA = logits(m, x);
            m.peftAdapters().seed(2);
            m.addAdapter(cfg(false, "q_proj", "o_proj"), "b");
            Tensor onlyB = logits(m, x);
            m.setAdapter("a", "b");
            Tensor both = logits(m, x);
            assertTrue(maxAbsDiff(both, onlyA) > 1e-4 && maxAbsDiff(both, onlyB) > 1e-4 && maxAbsDiff(onlyA, base) > 1e-4);
            m.mergeAdapter();
            assertTrue(maxAbsDiff(both, logits(m, x)) < 1e-5);
            m.unmergeAdapter();
            assertTrue(maxAbsDiff(both, logits(m, x)) < 1e-5);
            m.setAdapter("a");
            assertTrue(maxAbsDiff(onlyA, logits(m, x)) < 1e-5, "switching back reproduces adapter a");
            m.setAdapter("b");
            m.mergeAndUnload("b");
            assertTrue(maxAbsDiff(onlyB, logits(m, x)) < 1e-5, "merge_and_unload([b]) == b's output");
            assertFalse(m.peftAdapters().isLoaded());
        }
    }

    @Test
    void mixedBatchRowEqualsSingleAdapterRun() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(4)) {
            m.peftAdapters().seed(1);
            m.addAdapter(cfg(false, "q_proj", "v_proj"), "a");
            m.peftAdapters().seed(2);
            m.addAdapter(cfg(false, "q_proj", "up_proj"), "b");
            Tensor x = ids(3, 4, 32, 9);
            List<String> names = List.of("b", "__base__", "a");
            Tensor mixed = m.withAdapterNames(names, () -> logits(m, x));
            for (int i = 0; i < 3; i++) {
                Tensor row = x.narrow(0, i, 1);
                Tensor single;
                if (names.get(i).equals("__base__")) {
                    m.disableAdapters();
                    single = logits(m, row);
                    m.enableAdapters();
                } else {
                    m.setAdapter(names.get(i));
                    single = logits(m, row);
                }
                assertTrue(maxAbsDiff(single, mixed.narrow(0, i, 1)) < 1e-5, "row " + i);
            }
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.withAdapterNames(List.of("a", "zz", "a"), () -> logits(m, x)));
            assertTrue(e.getMessage().contains("zz"));
            IllegalArgumentException len = assertThrows(IllegalArgumentException.class,
                    () -> m.withAdapterNames(List.of("a", "b"), () -> logits(m, x)));
            assertTrue(len.getMessage().startsWith("Length of `adapter_names` should be the same as the number of inputs"));
            m.mergeAdapter();
            IllegalStateException merged = assertThrows(IllegalStateException.class,
                    () -> m.withAdapterNames(names, () -> logits(m, x)));
            assertTrue(merged.getMessage().startsWith("Cannot pass `adapter_names` when there are merged adapters"));
        }
    }

    @Test
    void errorsAreTransformers() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(5)) {
            IllegalStateException none = assertThrows(IllegalStateException.class, m::disableAdapters);
            assertEquals("No adapter loaded. Please load an adapter first.", none.getMessage());
            assertThrows(IllegalStateException.class, m::enableAdapters);
            assertThrows(IllegalStateException.class, m::activeAdapters);
            assertThrows(IllegalStateException.class, () -> m.setAdapter("x"));
            NoMatchingModuleException nm = assertThrows(NoMatchingModuleException.class,
                    () -> m.addAdapter(cfg(true, "qq_proj"), "n"));
            assertEquals("Target modules {'qq_proj'} not found in the base model. Please check the target modules and "
                    + "try again.", nm.getMessage());
            assertFalse(m.peftAdapters().isLoaded());
            m.addAdapter(cfg(true, "q_proj"), "a");
            IllegalArgumentException dup = assertThrows(IllegalArgumentException.class, () -> m.addAdapter(cfg(true, "q_proj"), "a"));
            assertEquals("Adapter with name a already exists. Please use a different name.", dup.getMessage());
            IllegalArgumentException one = assertThrows(IllegalArgumentException.class, () -> m.setAdapter("x"));
            assertEquals("Adapter with name x not found. Please pass the correct adapter name among ['a']", one.getMessage());
            IllegalArgumentException list = assertThrows(IllegalArgumentException.class, () -> m.setAdapter("a", "x", "y"));
            assertEquals("Following adapter(s) could not be found: x, y. Make sure you are passing the correct adapter "
                    + "name(s). current loaded adapters are: ['a']", list.getMessage());
            IllegalArgumentException del = assertThrows(IllegalArgumentException.class, () -> m.deleteAdapter("a", "q"));
            assertEquals("The following adapter(s) are not present and cannot be deleted: q", del.getMessage());
            assertEquals(List.of("a"), m.activeAdapters(), "nothing deleted");
            IllegalArgumentException nothing = assertThrows(IllegalArgumentException.class,
                    () -> m.loadAdapter(null, LoadAdapterOptions.named("z")));
            assertTrue(nothing.getMessage().startsWith("You should either pass a `peft_model_id` or a `peft_config`"));
            java.nio.file.NoSuchFileException hub = assertThrows(java.nio.file.NoSuchFileException.class,
                    () -> m.loadAdapter("someone/some-lora", LoadAdapterOptions.builder().adapterName("h")
                            .adapterKwargs(java.util.Map.of("cache_dir", tmp.resolve("empty-cache").toString(),
                                    "local_files_only", true)).build()));
            assertTrue(hub.getMessage().contains("not in the Hugging Face cache")
                    && hub.getMessage().contains("local_files_only"), hub.getMessage());
            assertEquals(List.of("a"), new ArrayList<>(m.peftAdapters().peftConfig().keySet()));
        }
    }

    @Test
    void deleteAdapterFallsBackAlphabeticallyAndLastOneUnloads() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(6)) {
            m.addAdapter(cfg(true, "q_proj"), "c");
            m.addAdapter(cfg(true, "q_proj"), "b");
            m.addAdapter(cfg(true, "q_proj"), "a");
            m.setAdapter("c");
            m.deleteAdapter("c");
            assertEquals(List.of("a"), m.activeAdapters());
            assertFalse(m.namedParameters().keySet().stream().anyMatch(k -> k.contains(".c.")));
            m.deleteAdapter("a", "b", "a");
            assertFalse(m.peftAdapters().isLoaded());
            assertThrows(IllegalStateException.class, m::activeAdapters);
            // wrappers stay, empty, and forward as the base
            assertTrue(m.getSubmodule("model.layers.0.self_attn.q_proj") instanceof LoraLayer);
        }
    }

    @Test
    void failedLoadLeavesModelUnchanged() throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(7)) {
            m.addAdapter(cfg(false, "q_proj"), "a");
            Map<String, Tensor> before = snapshot(m);
            Map<String, Tensor> sd = new LinkedHashMap<>();
            sd.put("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", torch.zeros(4, 16));
            sd.put("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", torch.zeros(8, 5)); // wrong rank
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.loadAdapter(cfg(true, "q_proj", "v_proj"), sd, "bad"));
            assertTrue(e.getMessage().contains("model.layers.0.self_attn.v_proj.lora_B.weight"), e.getMessage());
            assertTrue(e.getMessage().contains("[8, 5]") && e.getMessage().contains("[8, 4]"), e.getMessage());
            assertSameState(before, m);
            assertEquals(List.of("a"), new ArrayList<>(m.peftAdapters().peftConfig().keySet()));
            assertFalse(m.getSubmodule("model.layers.0.self_attn.v_proj") instanceof LoraLayer);
            assertEquals(List.of("a"), ((LoraLayer) m.getSubmodule("model.layers.0.self_attn.q_proj")).adapterNames());
            // a missing adapter file in a folder is refused before anything changes too
            Path dir = Files.createDirectories(tmp.resolve("nofile"));
            dev.peft4j.config.PeftConfigs.write(cfg(true, "q_proj"), dir);
            assertThrows(java.nio.file.NoSuchFileException.class, () -> m.loadAdapter(dir, "x"));
            assertSameState(before, m);
        }
    }

    @Test
    void unexpectedKeysAreReportedByNameAndMissingKeysListed() throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(8)) {
            Map<String, Tensor> sd = new LinkedHashMap<>();
            sd.put("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", torch.ones(4, 16));
            sd.put("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", torch.ones(4, 16));
            AdapterLoadReport r = m.loadAdapter(cfg(true, "q_proj"), sd, "x");
            assertEquals(List.of("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"), r.unexpectedKeys());
            assertEquals(List.of("model.layers.0.self_attn.q_proj.lora_B.x.weight",
                    "model.layers.1.self_attn.q_proj.lora_A.x.weight", "model.layers.1.self_attn.q_proj.lora_B.x.weight"),
                    r.missingKeys());
            assertTrue(bitEqual(torch.ones(4, 16), m.getAdapterStateDict("x").get("model.layers.0.self_attn.q_proj.lora_A.weight")));
        }
    }

    @Test
    void loadDefaultIsInferenceModeAndTrainableLoadTrainsOnlyLora() throws Exception {
        Path dir = tmp.resolve("ad");
        try (PreTrainedModel m = MixinSupport.tinyLlama(9)) {
            m.addAdapter(cfg(false, "q_proj", "v_proj"));
            m.saveAdapter(dir, null);
        }
        try (PreTrainedModel m = MixinSupport.tinyLlama(9)) {
            m.train(true);
            m.loadAdapter(dir);
            assertFalse(m.isTraining(), "load_adapter → eval()");
            assertTrue(m.namedParameters().values().stream().noneMatch(Tensor::requires_grad));
            assertTrue(m.peftAdapters().peftConfig().get("default").inferenceMode());
            m.loadAdapter(dir.toString(), LoadAdapterOptions.builder().adapterName("t").isTrainable(true).build());
            m.namedParameters().forEach((k, v) -> assertEquals(k.contains(".lora_") && k.contains(".t."), v.requires_grad(), k));
            assertFalse(m.peftAdapters().peftConfig().get("t").inferenceMode());
        }
    }

    @Test
    void saveReloadReproducesOutputsAndStateDict() throws Exception {
        Path dir = tmp.resolve("rt");
        Tensor x = ids(2, 5, 32, 4);
        Tensor out;
        Map<String, Tensor> saved = new LinkedHashMap<>();
        try (PreTrainedModel m = MixinSupport.tinyLlama(10)) {
            m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules(new ModuleSelector.Regex("all-linear"))
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build(), "other-name");
            out = logits(m, x);
            m.getAdapterStateDict().forEach((k, v) -> saved.put(k, v.clone()));
            m.saveAdapter(dir, "other-name");
            // all-linear: the 7 Linears of each of the 2 layers, not lm_head
            assertEquals(28, saved.size());
            assertTrue(saved.keySet().stream().allMatch(k -> k.startsWith("model.layers.")), saved.keySet().toString());
            assertEquals(new ModuleSelector.Names(List.of("model.layers.0.mlp.down_proj", "model.layers.0.mlp.gate_proj",
                    "model.layers.0.mlp.up_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.o_proj",
                    "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.mlp.down_proj",
                    "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj", "model.layers.1.self_attn.k_proj",
                    "model.layers.1.self_attn.o_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj")),
                    m.peftAdapters().peftConfig().get("other-name").targetModules(), "the expanded set is what is saved");
        }
        try (PreTrainedModel m = MixinSupport.tinyLlama(10)) {
            AdapterLoadReport r = m.loadAdapter(dir, "again");
            assertEquals(List.of(), r.missingKeys());
            assertEquals(List.of(), r.unexpectedKeys());
            assertTrue(bitEqual(out, logits(m, x)), "same seed base + reloaded adapter == saved model");
            Map<String, Tensor> sd = m.getAdapterStateDict("again");
            assertEquals(saved.keySet(), sd.keySet(), "keys carry no adapter name");
            saved.forEach((k, v) -> assertTrue(bitEqual(v, sd.get(k)), k));
        }
    }

    @Test
    void layersToTransformAndRankPatternShapeInjection() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(13)) {
            m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj", "v_proj")
                    .layersToTransform(new LayerIndices.Single(1)).rankPattern(Map.of("v_proj", 2))
                    .alphaPattern(Map.of("layers.1.self_attn.q_proj", 2)).build());
            assertFalse(m.getSubmodule("model.layers.0.self_attn.q_proj") instanceof LoraLayer);
            LoraLayer q = (LoraLayer) m.getSubmodule("model.layers.1.self_attn.q_proj");
            LoraLayer v = (LoraLayer) m.getSubmodule("model.layers.1.self_attn.v_proj");
            assertEquals(4, q.rank("default"));
            assertEquals(0.5, q.scaling("default"), "alpha 2 / r 4");
            assertEquals(2, v.rank("default"));
            assertEquals(4.0, v.scaling("default"), "alpha 8 / r 2");
        }
    }

    @Test
    void bf16BaseKeepsAdaptersInBaseDtypeAndRoundsLoadedValues() throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(14)) {
            m.to(org.bytedeco.pytorch.global.torch.ScalarType.BFloat16);
            Map<String, Tensor> sd = new LinkedHashMap<>();
            torch.manual_seed(2);
            Tensor a = torch.randn(4, 16);
            sd.put("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", a);
            m.loadAdapter(cfg(true, "q_proj"), sd, "x");
            Tensor mine = m.getAdapterStateDict("x").get("model.layers.0.self_attn.q_proj.lora_A.weight");
            assertTrue(mine.scalar_type().intern() == org.bytedeco.pytorch.global.torch.ScalarType.BFloat16,
                    "transformers integration: no fp32 upcast (§6.10)");
            assertTrue(bitEqual(a.to(org.bytedeco.pytorch.global.torch.ScalarType.BFloat16), mine));
            Tensor out = logits(m, ids(1, 3, 32, 1));
            assertTrue(out.scalar_type().intern() == org.bytedeco.pytorch.global.torch.ScalarType.BFloat16);
        }
    }

    @Test
    void addAdapterOverwritesBaseModelNameOrPath() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(15)) {
            m.addAdapter(LoraConfig.builder().targetModules("q_proj").baseModelNameOrPath("elsewhere").build());
            assertEquals(null, m.peftAdapters().peftConfig().get("default").baseModelNameOrPath());
        }
    }

    @Test
    void safeMergeRefusesNonFiniteWeightsAndLeavesWeightAlone() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(16)) {
            m.addAdapter(cfg(false, "q_proj"));
            LoraLayer l = (LoraLayer) m.getSubmodule("model.layers.0.self_attn.q_proj");
            Tensor before = ((Linear) l.baseLayer()).weight().clone();
            try (org.bytedeco.pytorch.NoGradGuard g = new org.bytedeco.pytorch.NoGradGuard()) {
                l.adapterParameters("default").get("lora_B.default.weight").fill_(new Scalar(Double.NaN));
            }
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.mergeAdapter(true, List.of("default")));
            assertEquals("NaNs detected in the merged weights. The adapter default seems to be broken", e.getMessage());
            assertTrue(bitEqual(before, ((Linear) l.baseLayer()).weight()));
        }
    }

    @Test
    void deleteAdapterFreesItsTensors() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(17)) {
            m.addAdapter(cfg(false, "q_proj"), "a");
            m.addAdapter(cfg(false, "q_proj"), "b");
            Tensor a = ((LoraLayer) m.getSubmodule("model.layers.0.self_attn.q_proj")).adapterParameters("a")
                    .get("lora_A.a.weight");
            assertFalse(a.isNull());
            m.deleteAdapter("a");
            assertTrue(a.isNull(), "the deleted adapter's tensor was closed");
        }
    }

    @Test
    void gaussianInitIsNoOpAndBaseRewritingInitsAreRefused() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(18)) {
            Tensor x = ids(1, 4, 32, 3);
            Tensor base = logits(m, x);
            m.addAdapter(LoraConfig.builder().r(4).targetModules("q_proj")
                    .initLoraWeights(new InitLoraWeights.Method("gaussian")).build(), "g");
            assertTrue(bitEqual(base, logits(m, x)), "gaussian A, zero B");
            UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class, () -> m.addAdapter(
                    LoraConfig.builder().targetModules("q_proj").initLoraWeights(new InitLoraWeights.Method("pissa"))
                            .build(), "p"));
            assertTrue(e.getMessage().contains("pissa") && e.getMessage().contains("'p'"), e.getMessage());
            assertEquals(List.of("g"), new ArrayList<>(m.peftAdapters().peftConfig().keySet()));
        }
    }

    @Test
    void keyMappingRenamesCheckpointKeys() throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(19)) {
            Map<String, Tensor> sd = new LinkedHashMap<>();
            sd.put("base_model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight", torch.ones(4, 16));
            AdapterLoadReport r = m.loadAdapter(null, LoadAdapterOptions.builder().peftConfig(cfg(true, "q_proj"))
                    .adapterStateDict(sd).adapterKwargs(Map.of("key_mapping", Map.of("^language_model\\.", "model.")))
                    .build());
            assertEquals(List.of(), r.unexpectedKeys());
            assertTrue(bitEqual(torch.ones(4, 16),
                    m.getAdapterStateDict().get("model.layers.0.self_attn.q_proj.lora_A.weight")));
        }
    }

    @Test
    void adapterNameMakesNoDifference() {
        Tensor x = ids(2, 4, 32, 8);
        List<Map<String, Tensor>> sds = new ArrayList<>();
        List<Tensor> outs = new ArrayList<>();
        for (String name : List.of("default", "adapter", "other-name")) {
            try (PreTrainedModel m = MixinSupport.tinyLlama(20)) {
                m.peftAdapters().seed(3);
                m.addAdapter(cfg(false, "q_proj", "v_proj"), name);
                Map<String, Tensor> sd = new LinkedHashMap<>();
                m.getAdapterStateDict().forEach((k, v) -> sd.put(k, v.clone()));
                sds.add(sd);
                outs.add(logits(m, x));
            }
        }
        for (int i = 1; i < 3; i++) {
            assertEquals(sds.get(0).keySet(), sds.get(i).keySet());
            for (String k : sds.get(0).keySet()) {
                assertTrue(bitEqual(sds.get(0).get(k), sds.get(i).get(k)), k);
            }
            assertTrue(bitEqual(outs.get(0), outs.get(i)));
        }
    }

    @Test
    void mergeIsIdempotent() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(21)) {
            m.addAdapter(cfg(false, "q_proj"));
            Tensor x = ids(1, 4, 32, 1);
            m.mergeAdapter();
            Tensor once = logits(m, x);
            m.mergeAdapter(); // "All adapters are already merged, nothing to do."
            assertTrue(bitEqual(once, logits(m, x)));
            assertEquals(List.of("default"),
                    ((LoraLayer) m.getSubmodule("model.layers.0.self_attn.q_proj")).mergedAdapters());
        }
    }

    @Test
    void aFileIsNotAnAdapterFolder() throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(22)) {
            Path f = Files.writeString(tmp.resolve("adapter_config.json"), "{}");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.loadAdapter(f.toString(), LoadAdapterOptions.DEFAULTS));
            assertTrue(e.getMessage().startsWith("adapter model file not found in " + f), e.getMessage());
        }
    }

    @Test
    void promptLearningAdapterIsRefusedAsTransformersDoes() throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(23)) {
            Path dir = Files.createDirectories(tmp.resolve("pt"));
            Files.writeString(dir.resolve("adapter_config.json"), "{\"peft_type\": \"PROMPT_TUNING\", "
                    + "\"num_virtual_tokens\": 8, \"task_type\": \"CAUSAL_LM\"}");
            Files.write(dir.resolve("adapter_model.safetensors"), new byte[0]);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.loadAdapter(dir));
            assertTrue(e.getMessage().endsWith("`create_and_replace` does not support prompt learning and adaption "
                    + "prompt yet."), e.getMessage());
            assertFalse(m.peftAdapters().isLoaded());
        }
    }

    @Test
    void savingWithTwoActiveAdaptersIsRefused() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(11)) {
            m.addAdapter(cfg(true, "q_proj"), "a");
            m.addAdapter(cfg(true, "q_proj"), "b");
            m.setAdapter("a", "b");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.saveAdapter(tmp.resolve("s"), null));
            assertTrue(e.getMessage().startsWith("Multiple active adapters detected"));
            assertFalse(Files.exists(tmp.resolve("s")));
        }
    }

    @Test
    void disabledEqualsBaseAndDropoutOnlyInTraining() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(12)) {
            Tensor x = ids(2, 5, 32, 5);
            Tensor base = logits(m, x);
            m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).loraDropout(0.5).targetModules("q_proj", "v_proj")
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build());
            Tensor eval1 = logits(m, x);
            assertTrue(bitEqual(eval1, logits(m, x)), "eval: dropout is the identity");
            m.train(true);
            assertTrue(maxAbsDiff(eval1, logits(m, x)) > 1e-6, "training: dropout on the adapter input");
            m.train(false);
            m.disableAdapters();
            assertTrue(bitEqual(base, logits(m, x)));
            m.enableAdapters();
            assertTrue(bitEqual(eval1, logits(m, x)));
        }
    }
}
