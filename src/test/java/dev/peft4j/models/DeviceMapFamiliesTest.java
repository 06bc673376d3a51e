package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.nn.Init;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every model family placed across devices by a per-module device_map ({@link PreTrainedModel#dispatch}), split at
 * its second layer (the second encoder layer; for T5 the second decoder block). Split cpu/meta, the forward must run
 * and give meta logits of the right shape: libtorch's element-wise ops on a meta tensor refuse a CPU operand, so a
 * hidden state, mask or rotary table not moved to the meta layer fails it. Split cpu/cpu (the same per-module map,
 * every module on the CPU), the aligned forward must give the unsplit model's logits exactly; so must greedy
 * generation give its tokens, over the growing KV cache and the slot cache, whose layers must each sit on their layer's
 * device (checked on the cpu/meta split, where a prefill and a step continuing the cache run).
 */
class DeviceMapFamiliesTest {
    static final String DECODER = "\"vocab_size\":32,\"hidden_size\":16,\"intermediate_size\":32,\"num_hidden_layers\":2,"
            + "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"max_position_embeddings\":64,\"rms_norm_eps\":1e-6,"
            + "\"tie_word_embeddings\":false";

    /** One tiny config per family; heads untied, since tied weights must share a device and the head sits after. */
    static Stream<Arguments> families() {
        Object[][] f = {
            {"llama", "{" + DECODER + ",\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"]}"},
            {"mistral", "{" + DECODER + ",\"model_type\":\"mistral\",\"architectures\":[\"MistralForCausalLM\"],"
                    + "\"sliding_window\":3}"},
            {"qwen2", "{" + DECODER + ",\"model_type\":\"qwen2\",\"architectures\":[\"Qwen2ForCausalLM\"]}"},
            {"gemma", "{" + DECODER + ",\"model_type\":\"gemma\",\"architectures\":[\"GemmaForCausalLM\"],\"head_dim\":8,"
                    + "\"num_key_value_heads\":1}"},
            {"gemma2", "{" + DECODER + ",\"model_type\":\"gemma2\",\"architectures\":[\"Gemma2ForCausalLM\"],\"head_dim\":8,"
                    + "\"sliding_window\":3,\"query_pre_attn_scalar\":8,\"attn_logit_softcapping\":2.0,"
                    + "\"final_logit_softcapping\":4.0}"},
            {"gemma3_text", "{" + DECODER + ",\"model_type\":\"gemma3_text\",\"architectures\":[\"Gemma3ForCausalLM\"],"
                    + "\"head_dim\":8,\"sliding_window\":3,\"sliding_window_pattern\":2,\"query_pre_attn_scalar\":8}"},
            {"qwen3", "{" + DECODER + ",\"model_type\":\"qwen3\",\"architectures\":[\"Qwen3ForCausalLM\"],\"head_dim\":8}"},
            {"phi3", "{" + DECODER + ",\"model_type\":\"phi3\",\"architectures\":[\"Phi3ForCausalLM\"],"
                    + "\"sliding_window\":4}"},
            {"mixtral", "{\"model_type\":\"mixtral\",\"architectures\":[\"MixtralForCausalLM\"],\"vocab_size\":32,"
                    + "\"hidden_size\":16,\"intermediate_size\":24,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
                    + "\"num_key_value_heads\":2,\"num_local_experts\":4,\"num_experts_per_tok\":2}"},
            {"gpt2", "{\"model_type\":\"gpt2\",\"architectures\":[\"GPT2LMHeadModel\"],\"vocab_size\":32,\"n_embd\":16,"
                    + "\"n_layer\":2,\"n_head\":2,\"n_positions\":32,\"tie_word_embeddings\":false}"},
            {"opt", "{\"model_type\":\"opt\",\"architectures\":[\"OPTForCausalLM\"],\"vocab_size\":32,\"hidden_size\":16,"
                    + "\"ffn_dim\":32,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"max_position_embeddings\":32,"
                    + "\"tie_word_embeddings\":false}"},
            {"bert", "{\"model_type\":\"bert\",\"architectures\":[\"BertForMaskedLM\"],\"vocab_size\":32,\"hidden_size\":16,"
                    + "\"intermediate_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
                    + "\"max_position_embeddings\":32,\"tie_word_embeddings\":false}"},
            {"bert-cls", "{\"model_type\":\"bert\",\"architectures\":[\"BertForSequenceClassification\"],"
                    + "\"vocab_size\":32,\"hidden_size\":16,\"intermediate_size\":32,\"num_hidden_layers\":2,"
                    + "\"num_attention_heads\":4,\"max_position_embeddings\":32,\"num_labels\":3}"},
            {"t5", "{\"model_type\":\"t5\",\"architectures\":[\"T5ForConditionalGeneration\"],\"vocab_size\":32,"
                    + "\"d_model\":16,\"d_kv\":4,\"num_heads\":4,\"d_ff\":24,\"num_layers\":2,\"num_decoder_layers\":2,"
                    + "\"relative_attention_num_buckets\":8,\"relative_attention_max_distance\":16,"
                    + "\"feed_forward_proj\":\"relu\",\"tie_word_embeddings\":false}"},
        };
        return Stream.of(f).map(a -> Arguments.of(a[0], a[1]));
    }

    static PreTrainedModel tiny(String json) {
        PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(ScalarType.Float));
        Init.normal(m, 0.2, 7);
        m.eval();
        return m;
    }

    /**
     * The model's placement units in order, the ones before its last second layer ({@code ….1}) on {@code first},
     * that one and the rest on {@code second}.
     */
    static Map<String, String> split(PreTrainedModel m, String first, String second) {
        List<String> units = new ArrayList<>(m.inferDeviceMap(Map.of("cpu", Long.MAX_VALUE)).keySet());
        int at = -1;
        for (int i = 0; i < units.size(); i++) {
            if (units.get(i).endsWith(".1")) {
                at = i;
            }
        }
        assertTrue(at > 0, "no second layer among " + units);
        Map<String, String> map = new LinkedHashMap<>();
        for (int i = 0; i < units.size(); i++) {
            map.put(units.get(i), i < at ? first : second);
        }
        if (map.containsKey("model.decoder.final_layer_norm")) {
            map.put("model.decoder.final_layer_norm", second); // OPT registers it before the layers, runs it after
        }
        return map;
    }

    static Tensor ids() {
        return Tensor.create(new long[] {1, 5, 9, 3, 2, 7, 30, 4}, 2, 4);
    }

    static Tensor forward(PreTrainedModel m, Tensor ids) {
        if (m instanceof Seq2SeqLM s) {
            return s.forward(ids, null, ids.narrow(1, 0, 3));
        }
        if (m instanceof BertForMaskedLM b) {
            return b.forward(ids, null, null);
        }
        if (m instanceof BertForSequenceClassification b) {
            return b.forward(ids, null, null);
        }
        return ((CausalLM) m).forward(ids, null, null, null);
    }

    static long[] logitsShape(PreTrainedModel m) {
        return m instanceof Seq2SeqLM ? new long[] {2, 3, 32} : m instanceof BertForSequenceClassification
                ? new long[] {2, 3} : new long[] {2, 4, 32};
    }

    static String device(Tensor t) {
        return t.device().str().getString();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("families")
    void cpuMetaSplitRunsWithMetaLogits(String family, String json) {
        try (NoGradGuard g = new NoGradGuard(); PreTrainedModel m = tiny(json)) {
            Map<String, String> map = split(m, "cpu", "meta");
            m.dispatch(map);
            map.forEach((unit, d) -> m.getSubmodule(unit).namedParameters().forEach((k, v) ->
                    assertEquals(d, device(v), family + ": " + unit + "." + k)));
            try (Tensor logits = forward(m, ids())) {
                assertEquals("meta", device(logits), family);
                assertArrayEquals(logitsShape(m), logits.shape(), family);
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("families")
    void cpuCpuSplitGivesTheUnsplitLogitsExactly(String family, String json) {
        try (NoGradGuard g = new NoGradGuard(); PreTrainedModel whole = tiny(json); PreTrainedModel placed = tiny(json)) {
            placed.dispatch(split(placed, "cpu", "cpu"));
            assertTrue(placed.deviceMapped(), "a per-module map takes the aligned forward");
            try (Tensor a = forward(whole, ids()); Tensor b = forward(placed, ids())) {
                assertTrue(torch.equal(a, b), family + ": logits of the cpu/cpu split differ from the unsplit model's");
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("families")
    void cpuCpuSplitGeneratesTheUnsplitTokens(String family, String json) {
        try (NoGradGuard g = new NoGradGuard(); PreTrainedModel whole = tiny(json); PreTrainedModel placed = tiny(json)) {
            if (!(whole instanceof CausalLM) && !(whole instanceof Seq2SeqLM)) {
                return; // an encoder: nothing to generate
            }
            placed.dispatch(split(placed, "cpu", "cpu"));
            Generation.Options greedy = Generation.Options.greedy(5);
            if (whole instanceof Seq2SeqLM s) {
                try (Tensor a = Seq2SeqGeneration.generate(s, ids(), null, greedy);
                        Tensor b = Seq2SeqGeneration.generate((Seq2SeqLM) placed, ids(), null, greedy)) {
                    assertTrue(torch.equal(a, b), family + ": generated ids differ");
                }
                return;
            }
            // unpadded: the slot cache where the model has one; padded: the growing KV cache
            Tensor padded = Tensor.create(new long[] {0, 1, 1, 1, 1, 1, 1, 1}, 2, 4);
            for (Tensor mask : new Tensor[] {null, padded}) {
                try (Tensor a = Generation.generate((CausalLM) whole, ids(), mask, greedy);
                        Tensor b = Generation.generate((CausalLM) placed, ids(), mask, greedy)) {
                    assertTrue(torch.equal(a, b), family + ": generated ids differ (mask " + (mask != null) + ")");
                }
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("families")
    void cpuMetaSplitKeepsEachLayersCacheOnItsDevice(String family, String json) {
        try (NoGradGuard g = new NoGradGuard(); PreTrainedModel m = tiny(json)) {
            if (!(m instanceof CausalLM lm)) {
                return;
            }
            m.dispatch(split(m, "cpu", "meta"));
            Tensor step = Tensor.create(new long[] {3, 4}, 2, 1); // a next token, made on the CPU
            try (KVCache cache = lm.newCache()) {
                lm.forward(ids(), null, null, cache).close();
                try (Tensor logits = lm.forward(step, null, null, cache)) {
                    assertArrayEquals(new long[] {2, 1, 32}, logits.shape(), family);
                }
                assertEquals(5, cache.length());
                assertEquals(List.of("cpu", "meta"), List.of(device(cache.keys(0)), device(cache.keys(1))), family);
                assertEquals(List.of("cpu", "meta"), List.of(device(cache.values(0)), device(cache.values(1))), family);
            }
            if (lm.supportsSlotCache()) {
                try (SlotKVCache slots = lm.newSlotCache(2, 8)) {
                    assertEquals(List.of("cpu", "meta"), List.of(device(slots.keys(0)), device(slots.keys(1))), family);
                    assertEquals(List.of("cpu", "meta"), List.of(device(slots.values(0)), device(slots.values(1))),
                            family);
                    int[] slotOf = {0, 1};
                    lm.forwardSlots(ids(), slots, slotOf, new long[] {0, 0}).close();
                    try (Tensor logits = lm.forwardSlots(step, slots, slotOf, new long[] {4, 4})) {
                        assertArrayEquals(new long[] {2, 32}, logits.shape(), family);
                        assertEquals("meta", device(logits), family);
                    }
                }
            }
        }
    }

    @Test
    void aLoraAdapterOnASplitModelSitsBesideItsLayersAndMatchesTheUnsplitModel() {
        String json = families().findFirst().orElseThrow().get()[1].toString();
        dev.peft4j.config.LoraConfig lora = dev.peft4j.config.LoraConfig.builder().r(2).loraAlpha(4)
                .targetModules("q_proj", "v_proj").initLoraWeights(new dev.peft4j.config.InitLoraWeights.Flag(false))
                .build();
        try (NoGradGuard g = new NoGradGuard(); PreTrainedModel meta = tiny(json); PreTrainedModel whole = tiny(json);
                PreTrainedModel placed = tiny(json)) {
            meta.dispatch(split(meta, "cpu", "meta"));
            meta.peftAdapters().seed(3);
            meta.addAdapter(lora, "a"); // made beside each layer: layer 0's on the CPU, layer 1's on meta
            assertEquals("cpu", device(meta.getParameter("model.layers.0.self_attn.q_proj.lora_A.a.weight")));
            assertEquals("meta", device(meta.getParameter("model.layers.1.self_attn.q_proj.lora_A.a.weight")));
            try (Tensor logits = forward(meta, ids())) {
                assertEquals("meta", device(logits));
            }
            placed.dispatch(split(placed, "cpu", "cpu"));
            for (PreTrainedModel m : new PreTrainedModel[] {whole, placed}) {
                m.peftAdapters().seed(3);
                m.addAdapter(lora, "a");
            }
            try (Tensor a = forward(whole, ids()); Tensor b = forward(placed, ids())) {
                assertTrue(torch.equal(a, b), "logits with the adapter differ between the cpu/cpu split and unsplit");
            }
        }
    }

    @Test
    void aMapSplittingALayerIsRefusedNamingIt() {
        try (PreTrainedModel m = tiny(families().findFirst().orElseThrow().get()[1].toString())) {
            Map<String, String> map = split(m, "cpu", "meta");
            map.put("model.layers.0.mlp", "meta");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.dispatch(map));
            assertTrue(e.getMessage().contains("splits module model.layers.0 "), e.getMessage());
            assertEquals("cpu", device(m.getParameter("model.layers.0.mlp.up_proj.weight")), "nothing moved");
        }
    }

    @Test
    void servingEngineRefusesAModelAcrossDevices() {
        try (PreTrainedModel m = tiny(families().findFirst().orElseThrow().get()[1].toString())) {
            m.dispatch(split(m, "cpu", "meta"));
            UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class,
                    () -> dev.peft4j.serve.ServingEngine.builder(m).build());
            assertTrue(e.getMessage().contains("[cpu, meta]") && e.getMessage().contains("one device"), e.getMessage());
        }
    }
}
