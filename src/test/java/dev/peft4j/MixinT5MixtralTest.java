package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.IA3Config;
import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.models.Seq2SeqLM;
import dev.peft4j.nn.Init;
import dev.peft4j.tuners.ia3.Ia3Layer;
import dev.peft4j.tuners.lora.LoraLayer;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The mixin's lifecycle on T5, mT5 and Mixtral (small seeded models): add, set, disable, merge, mixed batch, save and
 * reload, with PEFT's default targets for these model types (LoRA q, v on T5; IA3 k, v, wo with wo feed-forward on
 * T5, k, v, wi_1 on mT5; LoRA on Mixtral's attention and expert modules), and the mt0-large IA3 fixture's keys
 * loading onto a model of mt0-large's shape.
 */
class MixinT5MixtralTest {
    @TempDir
    Path tmp;

    static final String T5 = "{\"model_type\":\"t5\",\"architectures\":[\"T5ForConditionalGeneration\"],\"vocab_size\":40,"
            + "\"d_model\":16,\"d_kv\":4,\"num_heads\":4,\"d_ff\":24,\"num_layers\":2,\"num_decoder_layers\":2,"
            + "\"relative_attention_num_buckets\":8,\"relative_attention_max_distance\":16,\"feed_forward_proj\":\"relu\"}";
    static final String MT5 = "{\"model_type\":\"mt5\",\"architectures\":[\"MT5ForConditionalGeneration\"],\"vocab_size\":40,"
            + "\"d_model\":16,\"d_kv\":4,\"num_heads\":4,\"d_ff\":24,\"num_layers\":2,\"feed_forward_proj\":\"gated-gelu\"}";
    static final String MIXTRAL = "{\"model_type\":\"mixtral\",\"architectures\":[\"MixtralForCausalLM\"],\"vocab_size\":40,"
            + "\"hidden_size\":16,\"intermediate_size\":24,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
            + "\"num_key_value_heads\":2,\"num_local_experts\":4,\"num_experts_per_tok\":2,\"rms_norm_eps\":1e-5}";

    static PreTrainedModel model(String json, long seed) {
        PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(ScalarType.Float));
        Init.normal(m, 0.2, seed);
        return m;
    }

    /** Logits of the family's forward: the decoder's for an encoder-decoder (its input shifted by one as ids). */
    static Tensor logits(PreTrainedModel m, Tensor x) {
        if (m instanceof Seq2SeqLM s) {
            return s.forward(x, null, x.narrow(1, 0, 3));
        }
        return ((CausalLM) m).forward(x, null, null, null);
    }

    static PeftConfig lora(String json, long seed) {
        List<String> targets = json == MIXTRAL ? List.of("q_proj", "v_proj", "w1", "w2", "w3") : List.of("q", "v");
        return LoraConfig.builder().r(2).loraAlpha(4).targetModules(targets.toArray(String[]::new))
                .initLoraWeights(new InitLoraWeights.Flag(false)).build();
    }

    static PeftConfig ia3(String json) {
        return json == MT5 ? IA3Config.builder().targetModules("k", "v", "wi_1").initIa3Weights(false).build()
                : IA3Config.builder().targetModules("k", "v", "wo").feedforwardModules("wo").initIa3Weights(false).build();
    }

    static String config(String family) {
        return switch (family) {
            case "t5" -> T5;
            case "mt5" -> MT5;
            default -> MIXTRAL;
        };
    }

    @ParameterizedTest
    @ValueSource(strings = {"t5", "mt5", "mixtral"})
    void loraAddSetDisableMergeMixedBatchSaveReload(String family) throws Exception {
        String json = config(family);
        Tensor x = ids(3, 6, 40, 1);
        Tensor base;
        Tensor onlyA;
        Tensor onlyB;
        try (PreTrainedModel m = model(json, 1)) {
            base = logits(m, x);
            m.peftAdapters().seed(1);
            m.addAdapter(lora(json, 1), "a");
            onlyA = logits(m, x);
            m.peftAdapters().seed(2);
            m.addAdapter(lora(json, 2), "b");
            assertEquals(List.of("b"), m.activeAdapters(), "the added adapter is active");
            onlyB = logits(m, x);
            assertTrue(maxAbsDiff(onlyA, base) > 1e-4 && maxAbsDiff(onlyB, onlyA) > 1e-4);
            m.disableAdapters();
            // T5's runs differ in the last bits (up to 6e-7 measured) between the base with trainable weights and
            // the frozen one; an adapter left on changes the logits by more than 1e-4
            assertTrue(maxAbsDiff(base, logits(m, x)) < 1e-5, "disabled is the base");
            m.enableAdapters();
            m.setAdapter("a");
            assertTrue(maxAbsDiff(onlyA, logits(m, x)) < 1e-6, "set back to a");
            // mixed batch: each row as if run alone with its adapter (Mixtral: through the routed experts too)
            List<String> names = List.of("b", "__base__", "a");
            Tensor mixed = m.withAdapterNames(names, () -> logits(m, x));
            assertTrue(maxAbsDiff(onlyB.narrow(0, 0, 1), mixed.narrow(0, 0, 1)) < 1e-5, "row 0 = b");
            assertTrue(maxAbsDiff(base.narrow(0, 1, 1), mixed.narrow(0, 1, 1)) < 1e-5, "row 1 = base");
            assertTrue(maxAbsDiff(onlyA.narrow(0, 2, 1), mixed.narrow(0, 2, 1)) < 1e-5, "row 2 = a");
            IllegalArgumentException len = assertThrows(IllegalArgumentException.class,
                    () -> m.withAdapterNames(List.of("a", "b"), () -> logits(m, x)));
            assertTrue(len.getMessage().startsWith("Length of `adapter_names` should be the same as the number of inputs"),
                    len.getMessage());
            m.mergeAdapter();
            assertTrue(maxAbsDiff(onlyA, logits(m, x)) < 1e-5, "merged a");
            m.unmergeAdapter();
            assertTrue(maxAbsDiff(onlyA, logits(m, x)) < 1e-5, "unmerged a");
            m.saveAdapter(tmp.resolve("b"), "b");
        }
        try (PreTrainedModel m = model(json, 1)) {
            AdapterLoadReport r = m.loadAdapter(tmp.resolve("b"));
            assertEquals(List.of(), r.missingKeys());
            assertEquals(List.of(), r.unexpectedKeys());
            assertTrue(maxAbsDiff(onlyB, logits(m, x)) < 1e-6, "reloaded b");
            m.mergeAndUnload();
            assertFalse(m.peftAdapters().isLoaded());
            assertTrue(maxAbsDiff(onlyB, logits(m, x)) < 1e-5, "merged and unloaded b");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"t5", "mt5", "mixtral"})
    void loraTargetsEveryMatchingModule(String family) {
        try (PreTrainedModel m = model(config(family), 2)) {
            m.addAdapter(lora(config(family), 1));
            Map<String, Tensor> sd = m.getAdapterStateDict();
            if (family.equals("mixtral")) {
                assertTrue(m.getSubmodule("model.layers.0.block_sparse_moe.experts.3.w2") instanceof LoraLayer);
                assertEquals(2 * (2 + 4 * 3) * 2, sd.size());
            } else {
                // encoder self-attention, decoder self- and cross-attention: q and v in each
                assertTrue(m.getSubmodule("decoder.block.1.layer.1.EncDecAttention.v") instanceof LoraLayer);
                assertEquals((2 * 2 + 2 * 4) * 2, sd.size());
                assertTrue(sd.containsKey("encoder.block.0.layer.0.SelfAttention.q.lora_A.weight"), sd.keySet().toString());
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"t5", "mt5"})
    void ia3DefaultTargetsMergeSaveReload(String family) throws Exception {
        String json = config(family);
        Tensor x = ids(2, 5, 40, 3);
        Tensor adapted;
        try (PreTrainedModel m = model(json, 3)) {
            Tensor base = logits(m, x);
            m.addAdapter(ia3(json));
            adapted = logits(m, x);
            assertTrue(maxAbsDiff(base, adapted) > 1e-4);
            String ffKey = family.equals("t5") ? "encoder.block.0.layer.1.DenseReluDense.wo"
                    : "encoder.block.0.layer.1.DenseReluDense.wi_1";
            Ia3Layer ff = (Ia3Layer) m.getSubmodule(ffKey);
            long[] shape = ff.adapterParameters("default").get("ia3_l.default").shape();
            // T5's wo is a feed-forward module: its vector scales the input (1, d_ff); mT5's wi_1 scales outputs
            assertArrayEquals(family.equals("t5") ? new long[] {1, 24} : new long[] {24, 1}, shape);
            m.disableAdapters();
            assertTrue(maxAbsDiff(base, logits(m, x)) < 1e-5, "disabled is the base");
            m.enableAdapters();
            m.mergeAdapter();
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5, "merged");
            m.unmergeAdapter();
            m.saveAdapter(tmp.resolve("ia3"), "default");
        }
        try (PreTrainedModel m = model(json, 3)) {
            AdapterLoadReport r = m.loadAdapter(tmp.resolve("ia3"));
            assertEquals(List.of(), r.missingKeys());
            assertEquals(List.of(), r.unexpectedKeys());
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5, "reloaded");
        }
    }

    @Test
    void loraTargetParametersAreRefusedNamingThem() {
        try (PreTrainedModel m = model(MIXTRAL, 4)) {
            LoraConfig c = LoraConfig.builder().r(2).targetModules("q_proj")
                    .targetParameters(List.of("block_sparse_moe.experts.gate_up_proj")).build();
            UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class, () -> m.addAdapter(c));
            assertTrue(e.getMessage().contains("target_parameters") && e.getMessage().contains("gate_up_proj"),
                    e.getMessage());
            assertFalse(m.peftAdapters().isLoaded(), "nothing was added");
        }
    }

    /** mt0-large's shape (d_model 1024, d_ff 2816, 16 heads of 64, 24 + 24 blocks, gated-gelu), built without memory. */
    static final String MT0_LARGE = "{\"model_type\":\"mt5\",\"architectures\":[\"MT5ForConditionalGeneration\"],"
            + "\"vocab_size\":250112,\"d_model\":1024,\"d_kv\":64,\"num_heads\":16,\"d_ff\":2816,\"num_layers\":24,"
            + "\"num_decoder_layers\":24,\"feed_forward_proj\":\"gated-gelu\",\"tie_word_embeddings\":false}";

    @Test
    void ia3Mt0LargeFixtureKeysAndShapesAllMapOntoItsModel() throws Exception {
        Path dir = MixinSupport.res("fixtures/peft-ia3-mt0-large");
        Path folder = MixinSupport.fixtureFolder(tmp, "peft-ia3-mt0-large", "adapter_model.bin");
        try (PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(MT0_LARGE), Init.meta(ScalarType.Float))) {
            AdapterLoadReport r = m.loadAdapter(folder);
            assertEquals(List.of(), r.missingKeys(), "every targeted module has its vector");
            assertEquals(List.of(), r.unexpectedKeys(), "every fixture key names a module of the model");
            Map<String, Tensor> fixture = new TreeMap<>(dev.peft4j.io.TorchPickle.loadStateDict(
                    dir.resolve("adapter_model.bin")));
            Map<String, Tensor> loaded = m.getAdapterStateDict();
            assertEquals(192, fixture.size());
            assertEquals(fixture.size(), loaded.size());
            // the model lives on the meta device (no memory for its 1.2 B parameters): keys and shapes are what map
            for (Map.Entry<String, Tensor> e : fixture.entrySet()) {
                String key = e.getKey().substring("base_model.model.".length());
                Tensor t = loaded.get(key);
                assertTrue(t != null, key);
                assertArrayEquals(e.getValue().shape(), t.shape(), key);
            }
            assertTrue(m.getSubmodule("decoder.block.23.layer.1.EncDecAttention.k") instanceof Ia3Layer);
        }
    }
}
