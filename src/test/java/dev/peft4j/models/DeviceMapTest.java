package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.nn.Init;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link PreTrainedModel#dispatch} and {@link AutoModel#fromPretrained(Path, ScalarType, Map)}: a tiny Llama placed
 * by a per-module device map (accelerate's semantics: the longest module-name prefix wins, every parameter covered).
 * Split across cpu and meta, its forward must run (meta refuses a CPU operand in element-wise ops, so an activation
 * not moved to the meta layer fails) and give meta logits of the right shape; split cpu/cpu it must give the
 * unsplit logits exactly; an uncovered module, an unknown key and tied parameters split apart are refused by name.
 */
class DeviceMapTest {
    @TempDir
    Path tmp;

    static final String LLAMA = "{\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":32,"
            + "\"hidden_size\":16,\"intermediate_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
            + "\"num_key_value_heads\":2,\"max_position_embeddings\":64,\"rms_norm_eps\":1e-6,"
            + "\"tie_word_embeddings\":false}";

    static PreTrainedModel tiny(String json) {
        PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(ScalarType.Float));
        Init.normal(m, 0.2, 7);
        m.eval();
        return m;
    }

    static Tensor ids() {
        return Tensor.create(new long[] {1, 5, 9, 3, 2, 7, 30, 4}, 2, 4);
    }

    static Map<String, Object> split(String first, String second) {
        Map<String, Object> map = new LinkedHashMap<>();
        map.put("model.embed_tokens", first);
        map.put("model.layers.0", first);
        map.put("model.layers.1", second);
        map.put("model.norm", second);
        map.put("lm_head", second);
        return map;
    }

    static String deviceOf(PreTrainedModel m, String name) {
        return m.getParameter(name).device().str().getString();
    }

    @Test
    void cpuAndMetaSplitRunsWithMetaLogits() {
        try (NoGradGuard g = new NoGradGuard(); PreTrainedModel m = tiny(LLAMA)) {
            m.dispatch(split("cpu", "meta"));
            assertEquals("cpu", deviceOf(m, "model.layers.0.self_attn.q_proj.weight"));
            assertEquals("meta", deviceOf(m, "model.layers.1.self_attn.q_proj.weight"));
            assertEquals("meta", deviceOf(m, "lm_head.weight"));
            assertEquals("cpu", deviceOf(m, "model.embed_tokens.weight"));
            try (Tensor logits = ((CausalLM) m).forward(ids(), null, null, null)) {
                assertEquals("meta", logits.device().str().getString());
                assertArrayEquals(new long[] {2, 4, 32}, logits.sizes().vec().get());
            }
        }
    }

    @Test
    void cpuCpuSplitEqualsUnsplitAndLongestPrefixWins() throws Exception {
        try (NoGradGuard g = new NoGradGuard(); PreTrainedModel whole = tiny(LLAMA)) {
            whole.savePretrained(tmp);
            Map<String, Object> map = new LinkedHashMap<>();
            map.put("", "meta");            // the whole model on meta ...
            map.put("model", "cpu");        // ... but the decoder stack on the CPU ...
            map.put("lm_head", "cpu");      // ... and the head too: every parameter on the CPU
            map.put("model.layers.1", "cpu");
            try (PreTrainedModel placed = AutoModel.fromPretrained(tmp, ScalarType.Float, map);
                    Tensor a = ((CausalLM) whole).forward(ids(), null, null, null);
                    Tensor b = ((CausalLM) placed).forward(ids(), null, null, null)) {
                placed.namedParameters().forEach((k, v) -> assertEquals("cpu", v.device().str().getString(), k));
                assertTrue(torch.equal(a, b), "logits of the cpu/cpu placement differ from the unsplit model's");
            }
            try (PreTrainedModel placed = AutoModel.fromPretrained(tmp, ScalarType.Float, split("cpu", "cpu"));
                    Tensor a = ((CausalLM) whole).forward(ids(), null, null, null);
                    Tensor b = ((CausalLM) placed).forward(ids(), null, null, null)) {
                assertTrue(torch.equal(a, b), "logits of the split cpu/cpu placement differ from the unsplit model's");
            }
        }
    }

    @Test
    void metaWholeModelByEmptyKeyAndLongerKeyBackOnCpu() {
        try (PreTrainedModel m = tiny(LLAMA)) {
            m.dispatch(Map.of("", "meta", "model.layers.0", "cpu"));
            assertEquals("cpu", deviceOf(m, "model.layers.0.self_attn.q_proj.weight"));
            assertEquals("cpu", deviceOf(m, "model.layers.0.mlp.down_proj.weight"));
            assertEquals("meta", deviceOf(m, "model.layers.1.mlp.down_proj.weight"));
            assertEquals("meta", deviceOf(m, "lm_head.weight"));
        }
        try (PreTrainedModel m = tiny(LLAMA)) { // a layer's parts apart: the forward moves activations between layers
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.dispatch(Map.of("", "meta", "model.layers.0.mlp", "cpu")));
            assertTrue(e.getMessage().contains("splits module model.layers.0 "), e.getMessage());
        }
    }

    @Test
    void uncoveredModuleUnknownKeyAndSplitTiesAreRefused() {
        try (PreTrainedModel m = tiny(LLAMA)) {
            Map<String, Object> map = split("cpu", "meta");
            map.remove("model.layers.1");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.dispatch(map));
            assertTrue(e.getMessage().contains("model.layers.1.self_attn.q_proj"), e.getMessage());
            assertEquals("cpu", deviceOf(m, "model.layers.0.self_attn.q_proj.weight"), "nothing moved on refusal");
            assertEquals("cpu", deviceOf(m, "lm_head.weight"), "nothing moved on refusal");

            Map<String, Object> typo = split("cpu", "cpu");
            typo.put("model.layer.1", "cpu");
            e = assertThrows(IllegalArgumentException.class, () -> m.dispatch(typo));
            assertTrue(e.getMessage().contains("'model.layer.1'"), e.getMessage());

            Map<String, Object> bad = split("cpu", "gpu");
            e = assertThrows(IllegalArgumentException.class, () -> m.dispatch(bad));
            assertTrue(e.getMessage().contains("device_map['model.layers.1']"), e.getMessage());
        }
        String tiedJson = LLAMA.replace("\"tie_word_embeddings\":false", "\"tie_word_embeddings\":true");
        try (PreTrainedModel m = tiny(tiedJson)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.dispatch(split("cpu", "meta")));
            assertTrue(e.getMessage().contains("lm_head.weight") && e.getMessage().contains("model.embed_tokens.weight"),
                    e.getMessage());
        }
    }

    @Test
    void diskOffloadedModulesRunOverTheMappedFileWithTheSameLogits() throws Exception {
        try (NoGradGuard g = new NoGradGuard(); PreTrainedModel whole = tiny(LLAMA)) {
            Path ckpt = tmp.resolve("ckpt");
            whole.savePretrained(ckpt);
            Path folder = tmp.resolve("offload");
            Map<String, Object> map = split("cpu", "disk");
            map.put("model.norm", "cpu");
            try (PreTrainedModel off = AutoModel.fromPretrained(ckpt, ScalarType.Float, map, folder);
                    Tensor a = ((CausalLM) whole).forward(ids(), null, null, null);
                    Tensor b = ((CausalLM) off).forward(ids(), null, null, null)) {
                assertTrue(torch.equal(a, b), "logits of the offloaded model differ from the in-memory model's");
                long fileBytes = java.nio.file.Files.size(folder.resolve(PreTrainedModel.OFFLOAD_FILE));
                Map<String, Tensor> params = off.namedParameters();
                int offloaded = 0;
                for (Map.Entry<String, Tensor> e : params.entrySet()) {
                    boolean disk = e.getKey().startsWith("model.layers.1.") || e.getKey().startsWith("lm_head.");
                    assertEquals("cpu", e.getValue().device().str().getString(), e.getKey());
                    // a view of the mapped file: its storage is the whole file, one uint8 mapping
                    long storage = e.getValue().storage().nbytes();
                    assertEquals(disk, storage == fileBytes, e.getKey() + ": storage of " + storage
                            + " bytes, offload file " + fileBytes);
                    offloaded += disk ? 1 : 0;
                }
                assertEquals(10, offloaded);
            }
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> AutoModel.fromPretrained(ckpt, ScalarType.Float, split("cpu", "disk")));
            assertTrue(e.getMessage().contains("offload_folder"), e.getMessage());
            Map<String, Object> inside = split("cpu", "disk");
            inside.put("model.layers.1.mlp", "cpu");
            assertThrows(UnsupportedOperationException.class,
                    () -> AutoModel.fromPretrained(ckpt, ScalarType.Float, inside, folder));
        }
    }

    @Test
    void maxMemoryFillsDevicesInOrderWithWholeLayersThenDisk() throws Exception {
        try (NoGradGuard g = new NoGradGuard(); PreTrainedModel m = tiny(LLAMA)) {
            // float32 sizes of this config: embedding and head 32 x 16, a layer q/o 16 x 16, k/v 8 x 16,
            // gate/up/down 32 x 16 (three), two norms of 16; the final norm 16
            long embed = 32 * 16 * 4;
            long layer = (2 * 256 + 2 * 128 + 3 * 512 + 2 * 16) * 4;
            long norm = 16 * 4;
            Map<String, Long> budget = new LinkedHashMap<>();
            budget.put("cpu", embed + layer + layer - 1); // the second layer does not fit whole
            budget.put("meta", layer + norm);
            Map<String, String> map = m.inferDeviceMap(budget);
            assertEquals(java.util.List.of("model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm",
                    "lm_head"), java.util.List.copyOf(map.keySet()));
            assertEquals(java.util.List.of("cpu", "cpu", "meta", "meta", "disk"), java.util.List.copyOf(map.values()));
            // the inferred map runs (meta's data cannot come back to the CPU head, so meta stands in as cpu here)
            Map<String, String> runnable = new LinkedHashMap<>();
            map.forEach((k, v) -> runnable.put(k, v.equals("meta") ? "cpu" : v));
            try (Tensor before = ((CausalLM) m).forward(ids(), null, null, null)) {
                m.dispatch(runnable, tmp.resolve("offload"));
                try (Tensor after = ((CausalLM) m).forward(ids(), null, null, null)) {
                    assertTrue(torch.equal(before, after), "logits changed by the inferred placement");
                }
            }
            budget.put("cpu", embed + layer + layer); // now both layers fit exactly; norm and head fit meta's budget
            Map<String, String> again = m.inferDeviceMap(budget);
            assertEquals(java.util.List.of("cpu", "cpu", "cpu", "meta", "meta"), java.util.List.copyOf(again.values()));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.inferDeviceMap(Map.of("gpu", 1L)));
            assertTrue(e.getMessage().contains("max_memory['gpu']"), e.getMessage());
        }
    }

    @Test
    void fromPretrainedAutoWithMaxMemoryPlacesUnderTheBudgetsAndOffloadsTheRest() throws Exception {
        try (NoGradGuard g = new NoGradGuard(); PreTrainedModel whole = tiny(LLAMA)) {
            Path ckpt = tmp.resolve("ckpt");
            whole.savePretrained(ckpt);
            long embed = 32 * 16 * 4;
            long layer = (2 * 256 + 2 * 128 + 3 * 512 + 2 * 16) * 4;
            Map<String, Long> budget = Map.of("cpu", embed + layer); // layer 1, the norm and the head go to disk
            Path folder = tmp.resolve("offload");
            for (String strategy : new String[] {"auto", "sequential"}) {
                try (PreTrainedModel placed = AutoModel.fromPretrained(ckpt, ScalarType.Float, strategy, budget, folder);
                        Tensor a = ((CausalLM) whole).forward(ids(), null, null, null);
                        Tensor b = ((CausalLM) placed).forward(ids(), null, null, null)) {
                    assertTrue(torch.equal(a, b), strategy + ": logits of the max_memory placement differ");
                    long fileBytes = java.nio.file.Files.size(folder.resolve(PreTrainedModel.OFFLOAD_FILE));
                    assertEquals(fileBytes, placed.getParameter("model.layers.1.mlp.up_proj.weight").storage().nbytes(),
                            "layer 1 is a view of the offload file");
                    // layer 0 stays on the checkpoint's own mapping (model.safetensors), not the offload file
                    assertEquals(java.nio.file.Files.size(ckpt.resolve("model.safetensors")),
                            placed.getParameter("model.layers.0.mlp.up_proj.weight").storage().nbytes(),
                            "layer 0 is not offloaded");
                }
            }
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> AutoModel.fromPretrained(ckpt, ScalarType.Float, "auto", budget, null));
            assertTrue(e.getMessage().contains("offload_folder"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class,
                    () -> AutoModel.fromPretrained(ckpt, ScalarType.Float, "balanced_low_1", budget, folder));
            assertTrue(e.getMessage().contains("device_map=balanced_low_1"), e.getMessage());
            Map<String, Long> twoGpus = new LinkedHashMap<>();
            twoGpus.put("cuda:0", 1L << 30);
            twoGpus.put("cuda:1", 1L << 30);
            UnsupportedOperationException u = assertThrows(UnsupportedOperationException.class,
                    () -> AutoModel.fromPretrained(ckpt, ScalarType.Float, "auto", twoGpus, folder));
            assertTrue(u.getMessage().contains("sequential"), u.getMessage());
        }
    }

    @Test
    void aModelWhoseForwardDoesNotAlignAcceptsOneDeviceOnly() {
        // every family aligns; a model that does not (its forward would mix devices) takes one device only
        try (PreTrainedModel m = tiny(LLAMA)) {
            assertTrue(m.alignsDevices());
        }
        try (PreTrainedModel m = new NotAligning()) {
            assertThrows(UnsupportedOperationException.class,
                    () -> m.dispatch(Map.of("", "cpu", "w", "meta")));
            m.dispatch(Map.of("", "meta"));
            m.namedParameters().forEach((k, v) -> assertEquals("meta", v.device().str().getString(), k));
        }
    }

    /** A model whose forward does not move activations (the default of {@link PreTrainedModel#alignsDevices}). */
    static final class NotAligning extends PreTrainedModel {
        NotAligning() {
            super(ModelConfig.parse("{\"model_type\":\"none\"}"));
            registerModule("w", new dev.peft4j.nn.Linear(2, 2, false, Init.cpu(ScalarType.Float)));
            registerModule("v", new dev.peft4j.nn.Linear(2, 2, false, Init.cpu(ScalarType.Float)));
        }

        @Override
        public String baseModelPrefix() {
            return "none";
        }

        @Override
        public boolean isBaseModel() {
            return true;
        }
    }
}
