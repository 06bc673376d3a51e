package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.IA3Config;
import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.kernels.Kernels;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.KVCache;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import java.nio.file.Path;
import java.util.List;
import java.util.function.Supplier;
import java.util.stream.Stream;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The mixin's LoRA and IA3 operations (load, set, disable, merge, mixed batch, save, reload) and the fused kernel
 * path on each decoder family beyond Llama: a tiny seeded model per family, the adapters on the modules PEFT targets
 * there (Phi-3's fused {@code qkv_proj} and {@code gate_up_proj}).
 */
class MixinFamiliesTest {
    @TempDir
    Path tmp;

    static final String SHAPE = "\"vocab_size\":32,\"hidden_size\":16,\"intermediate_size\":32,\"num_hidden_layers\":2,"
            + "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"max_position_embeddings\":64,\"rms_norm_eps\":1e-6";
    static final String[] SPLIT_ALL = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    static final String[] FUSED_ALL = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"};

    static Stream<Arguments> families() {
        return Stream.of(
                Arguments.of("gemma", "\"model_type\":\"gemma\",\"architectures\":[\"GemmaForCausalLM\"],\"head_dim\":8,"
                        + "\"num_key_value_heads\":1", false),
                Arguments.of("gemma2", "\"model_type\":\"gemma2\",\"architectures\":[\"Gemma2ForCausalLM\"],\"head_dim\":8,"
                        + "\"sliding_window\":3,\"query_pre_attn_scalar\":8,\"attn_logit_softcapping\":2.0,"
                        + "\"final_logit_softcapping\":4.0", false),
                Arguments.of("gemma3_text", "\"model_type\":\"gemma3_text\",\"architectures\":[\"Gemma3ForCausalLM\"],"
                        + "\"head_dim\":8,\"sliding_window\":3,\"sliding_window_pattern\":2,\"query_pre_attn_scalar\":8",
                        false),
                Arguments.of("qwen3", "\"model_type\":\"qwen3\",\"architectures\":[\"Qwen3ForCausalLM\"],\"head_dim\":8,"
                        + "\"tie_word_embeddings\":false", false),
                Arguments.of("phi3", "\"model_type\":\"phi3\",\"architectures\":[\"Phi3ForCausalLM\"],"
                        + "\"sliding_window\":4,\"tie_word_embeddings\":false", true),
                Arguments.of("qwen2-sliding", "\"model_type\":\"qwen2\",\"architectures\":[\"Qwen2ForCausalLM\"],"
                        + "\"use_sliding_window\":true,\"sliding_window\":3,\"max_window_layers\":1", false),
                Arguments.of("mistral", "\"model_type\":\"mistral\",\"architectures\":[\"MistralForCausalLM\"],"
                        + "\"sliding_window\":3", false));
    }

    static PreTrainedModel model(String json, long seed) {
        PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse("{" + SHAPE + "," + json + "}"),
                Init.cpu(ScalarType.Float));
        Init.normal(m, 0.2, seed);
        return m;
    }

    static LoraConfig lora(String... targets) {
        return LoraConfig.builder().r(4).loraAlpha(8).targetModules(targets)
                .initLoraWeights(new InitLoraWeights.Flag(false)).build();
    }

    static <T> T inference(boolean fused, Supplier<T> f) {
        boolean before = Kernels.fusedLayers();
        Kernels.setFusedLayers(fused);
        try (NoGradGuard g = new NoGradGuard()) {
            return f.get();
        } finally {
            Kernels.setFusedLayers(before);
        }
    }

    /** Within 1e-5 of the logits' magnitude (merging rounds W + s·B·A once, in float32). */
    static void assertClose(Tensor want, Tensor got, String what) {
        double scale = Math.max(1.0, want.abs().max().item_double());
        double d = maxAbsDiff(want, got);
        assertTrue(d <= 1e-5 * scale, what + ": max |diff| " + d + " for logits up to " + scale);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("families")
    void loraLoadSetDisableMergeMixedBatchSaveReload(String family, String json, boolean fusedModules) throws Exception {
        String[] all = fusedModules ? FUSED_ALL : SPLIT_ALL;
        String[] some = fusedModules ? new String[] {"qkv_proj", "gate_up_proj"} : new String[] {"q_proj", "up_proj"};
        Path dir = tmp.resolve("a");
        Tensor x = ids(3, 6, 32, 7);
        Tensor onlyA;
        try (PreTrainedModel m = model(json, 1)) {
            Tensor base = logits(m, x);
            m.peftAdapters().seed(1);
            m.addAdapter(lora(all), "a");
            onlyA = logits(m, x);
            m.peftAdapters().seed(2);
            m.addAdapter(lora(some), "b");
            Tensor onlyB = logits(m, x);
            assertTrue(maxAbsDiff(onlyA, base) > 1e-3 && maxAbsDiff(onlyB, base) > 1e-3 && maxAbsDiff(onlyA, onlyB) > 1e-3,
                    family + ": each adapter changes the logits");
            m.disableAdapters();
            assertTrue(bitEqual(base, logits(m, x)), family + ": disabled == base");
            m.enableAdapters();
            m.setAdapter("a");
            assertTrue(maxAbsDiff(onlyA, logits(m, x)) < 1e-5, family + ": set back to a");

            // the fused kernel path (inference, no autograd) agrees with the composed one and serves every layer
            long before = Kernels.layerCalls();
            Tensor fused = inference(true, () -> logits(m, x));
            assertEquals(2L * all.length, Kernels.layerCalls() - before, family + ": native layer forwards");
            assertTrue(maxAbsDiff(inference(false, () -> logits(m, x)), fused) < 1e-5, family + ": fused vs composed");

            List<String> names = List.of("b", "__base__", "a");
            Tensor mixed = m.withAdapterNames(names, () -> logits(m, x));
            Tensor[] rows = {onlyB, base, onlyA};
            for (int i = 0; i < 3; i++) {
                assertTrue(maxAbsDiff(rows[i].narrow(0, i, 1), mixed.narrow(0, i, 1)) < 1e-5, family + ": mixed row " + i);
            }
            Tensor mixedFused = inference(true, () -> m.withAdapterNames(names, () -> logits(m, x)));
            assertTrue(maxAbsDiff(mixed, mixedFused) < 1e-5, family + ": fused mixed batch");

            m.mergeAdapter();
            assertClose(onlyA, logits(m, x), family + ": merged");
            m.unmergeAdapter();
            assertClose(onlyA, logits(m, x), family + ": unmerged");
            m.saveAdapter(dir, "a");
        }
        try (PreTrainedModel m = model(json, 1)) {
            AdapterLoadReport r = m.loadAdapter(dir);
            assertEquals(List.of(), r.missingKeys(), family);
            assertEquals(List.of(), r.unexpectedKeys(), family);
            assertTrue(maxAbsDiff(onlyA, logits(m, x)) < 1e-5, family + ": reloaded");
            // an adapted model decodes through the cache as it runs the full sequence
            CausalLM lm = (CausalLM) m;
            try (KVCache cache = lm.newCache()) {
                Tensor full = inference(true, () -> lm.forward(x, null, null, null));
                TensorVector steps = new TensorVector();
                steps.push_back(inference(true, () -> lm.forward(x.narrow(1, 0, 2), null, null, cache)));
                for (int t = 2; t < 6; t++) {
                    int at = t;
                    steps.push_back(inference(true, () -> lm.forward(x.narrow(1, at, 1), null, null, cache)));
                }
                assertTrue(maxAbsDiff(full, torch.cat(steps, 1)) < 1e-5, family + ": cached decode");
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("families")
    void loraTrainsThroughEveryFamilysForward(String family, String json, boolean fusedModules) {
        try (PreTrainedModel m = model(json, 5)) {
            m.addAdapter(lora(fusedModules ? FUSED_ALL : SPLIT_ALL));
            Tensor x = ids(2, 6, 32, 8);
            logits(m, x).pow(new org.bytedeco.pytorch.Scalar(2)).mean().backward();
            int trainable = 0;
            for (var e : m.namedParameters().entrySet()) {
                if (e.getValue().requires_grad()) {
                    trainable++;
                    Tensor g = e.getValue().grad();
                    assertTrue(g.defined() && g.isfinite().all().item_bool(), family + ": gradient of " + e.getKey());
                    if (e.getKey().contains("lora_B")) {
                        assertTrue(g.abs().sum().item_double() > 0, family + ": zero gradient for " + e.getKey());
                    }
                }
            }
            assertEquals(2 * 2 * (fusedModules ? FUSED_ALL : SPLIT_ALL).length, trainable, family + ": A and B per layer");
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("families")
    void ia3MergeUnmergeDisableSaveReload(String family, String json, boolean fusedModules) throws Exception {
        String[] targets = fusedModules ? new String[] {"qkv_proj", "down_proj"} : new String[] {"k_proj", "v_proj", "down_proj"};
        IA3Config cfg = IA3Config.builder().targetModules(targets).feedforwardModules("down_proj").initIa3Weights(false)
                .build();
        Path dir = tmp.resolve("ia3");
        Tensor x = ids(2, 5, 32, 4);
        Tensor adapted;
        try (PreTrainedModel m = model(json, 3)) {
            Tensor base = logits(m, x);
            m.addAdapter(cfg);
            adapted = logits(m, x);
            assertTrue(maxAbsDiff(base, adapted) > 1e-4, family);
            assertTrue(maxAbsDiff(adapted, inference(true, () -> logits(m, x))) < 1e-5, family + ": fused IA3");
            m.disableAdapters();
            assertTrue(bitEqual(base, logits(m, x)), family + ": disabled");
            m.enableAdapters();
            m.mergeAdapter();
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5, family + ": merged");
            m.unmergeAdapter();
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5, family + ": unmerged");
            m.saveAdapter(dir, "default");
        }
        try (PreTrainedModel m = model(json, 3)) {
            AdapterLoadReport r = m.loadAdapter(dir);
            assertEquals(List.of(), r.missingKeys(), family);
            assertEquals(List.of(), r.unexpectedKeys(), family);
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5, family + ": reloaded");
        }
    }
}
