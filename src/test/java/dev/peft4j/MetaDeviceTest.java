package dev.peft4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.AdaLoraConfig;
import dev.peft4j.config.IA3Config;
import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.BertForMaskedLM;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.Generation;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.models.Seq2SeqGeneration;
import dev.peft4j.models.Seq2SeqLM;
import dev.peft4j.nn.Init;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every model family and adapter method on libtorch's {@code meta} device, which computes shapes without data. Its
 * element-wise ops (add, mul, comparisons, masks, index_copy_) refuse a CPU operand ("Expected all tensors to be on
 * the same device"), so a CPU tensor made along the way by a mask, position ids, an adapter's init or a loaded
 * adapter fails the forward; matmul, linear, cat and copy_ on meta do not check (measured with libtorch 2.10), which is
 * why every parameter and buffer is also checked to be on meta. A model moved to meta loads a saved adapter, adds a
 * fresh one, runs forward, greedy generation (argmax has a meta kernel: the generated ids are meta tensors of the
 * right shape; sampling and an end token need values and are not run), a mixed batch (LoRA: PEFT refuses
 * {@code adapter_names} for the others), merge and unmerge; each output must be a meta tensor of the right shape.
 */
class MetaDeviceTest {
    @TempDir
    Path tmp;

    static final String DECODER = "\"vocab_size\":32,\"hidden_size\":16,\"intermediate_size\":32,\"num_hidden_layers\":2,"
            + "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"max_position_embeddings\":64,\"rms_norm_eps\":1e-6";
    static final String[] SPLIT = {"q_proj", "v_proj", "down_proj"};

    static Stream<Arguments> familiesAndMethods() {
        List<Arguments> out = new ArrayList<>();
        Object[][] families = {
            {"llama", "{" + DECODER + ",\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"]}", SPLIT},
            {"mistral", "{" + DECODER + ",\"model_type\":\"mistral\",\"architectures\":[\"MistralForCausalLM\"],"
                    + "\"sliding_window\":3}", SPLIT},
            {"qwen2", "{" + DECODER + ",\"model_type\":\"qwen2\",\"architectures\":[\"Qwen2ForCausalLM\"]}", SPLIT},
            {"gemma", "{" + DECODER + ",\"model_type\":\"gemma\",\"architectures\":[\"GemmaForCausalLM\"],\"head_dim\":8,"
                    + "\"num_key_value_heads\":1}", SPLIT},
            {"gemma2", "{" + DECODER + ",\"model_type\":\"gemma2\",\"architectures\":[\"Gemma2ForCausalLM\"],\"head_dim\":8,"
                    + "\"sliding_window\":3,\"query_pre_attn_scalar\":8,\"attn_logit_softcapping\":2.0,"
                    + "\"final_logit_softcapping\":4.0}", SPLIT},
            {"gemma3_text", "{" + DECODER + ",\"model_type\":\"gemma3_text\",\"architectures\":[\"Gemma3ForCausalLM\"],"
                    + "\"head_dim\":8,\"sliding_window\":3,\"sliding_window_pattern\":2,\"query_pre_attn_scalar\":8}", SPLIT},
            {"qwen3", "{" + DECODER + ",\"model_type\":\"qwen3\",\"architectures\":[\"Qwen3ForCausalLM\"],\"head_dim\":8}",
                SPLIT},
            {"phi3", "{" + DECODER + ",\"model_type\":\"phi3\",\"architectures\":[\"Phi3ForCausalLM\"],"
                    + "\"sliding_window\":4,\"tie_word_embeddings\":false}", new String[] {"qkv_proj", "down_proj"}},
            {"mixtral", "{\"model_type\":\"mixtral\",\"architectures\":[\"MixtralForCausalLM\"],\"vocab_size\":32,"
                    + "\"hidden_size\":16,\"intermediate_size\":24,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
                    + "\"num_key_value_heads\":2,\"num_local_experts\":4,\"num_experts_per_tok\":2}",
                new String[] {"q_proj", "v_proj", "w2"}},
            {"gpt2", "{\"model_type\":\"gpt2\",\"architectures\":[\"GPT2LMHeadModel\"],\"vocab_size\":32,\"n_embd\":16,"
                    + "\"n_layer\":2,\"n_head\":2,\"n_positions\":32}", new String[] {"c_attn", "c_fc"}},
            {"opt", "{\"model_type\":\"opt\",\"architectures\":[\"OPTForCausalLM\"],\"vocab_size\":32,\"hidden_size\":16,"
                    + "\"ffn_dim\":32,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"max_position_embeddings\":32}",
                new String[] {"q_proj", "v_proj", "fc2"}},
            {"bert", "{\"model_type\":\"bert\",\"architectures\":[\"BertForMaskedLM\"],\"vocab_size\":32,\"hidden_size\":16,"
                    + "\"intermediate_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
                    + "\"max_position_embeddings\":32}", new String[] {"query", "value"}},
            {"t5", "{\"model_type\":\"t5\",\"architectures\":[\"T5ForConditionalGeneration\"],\"vocab_size\":32,"
                    + "\"d_model\":16,\"d_kv\":4,\"num_heads\":4,\"d_ff\":24,\"num_layers\":2,\"num_decoder_layers\":2,"
                    + "\"relative_attention_num_buckets\":8,\"relative_attention_max_distance\":16,"
                    + "\"feed_forward_proj\":\"relu\"}", new String[] {"q", "v"}},
        };
        for (Object[] f : families) {
            for (String method : new String[] {"lora", "dora", "ia3", "adalora"}) {
                out.add(Arguments.of(f[0], method, f[1], f[2]));
            }
        }
        return out.stream();
    }

    static PeftConfig config(String method, String[] targets, long seed) {
        return switch (method) {
            case "lora" -> LoraConfig.builder().r(2).loraAlpha(4).targetModules(targets)
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build();
            case "dora" -> LoraConfig.builder().r(2).loraAlpha(4).targetModules(targets).useDora(true)
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build();
            case "ia3" -> IA3Config.builder().targetModules(targets).initIa3Weights(false).build();
            case "adalora" -> AdaLoraConfig.builder().initR(4).targetR(2).totalStep(100).loraAlpha(8)
                    .targetModules(targets).initLoraWeights(new InitLoraWeights.Flag(false)).build();
            default -> throw new IllegalArgumentException(method);
        };
    }

    static PreTrainedModel cpuModel(String json) {
        PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(ScalarType.Float));
        Init.normal(m, 0.2, 1);
        return m;
    }

    static Tensor metaIds(long batch, long seq) {
        try (Device meta = new Device("meta")) {
            return torch.empty(new long[] {batch, seq}, new TensorOptions(ScalarType.Long).device(
                    new org.bytedeco.pytorch.DeviceOptional(meta)), new org.bytedeco.pytorch.MemoryFormatOptional());
        }
    }

    static Tensor forward(PreTrainedModel m, Tensor ids) {
        try (NoGradGuard g = new NoGradGuard()) {
            if (m instanceof Seq2SeqLM s) {
                return s.forward(ids, null, ids.narrow(1, 0, 3));
            }
            if (m instanceof BertForMaskedLM b) {
                return b.forward(ids, null, null);
            }
            return ((CausalLM) m).forward(ids, null, null, null);
        }
    }

    static void assertMeta(Tensor t, long[] shape, String what) {
        assertTrue(t.device().is_meta(), what + ": on " + t.device().str().getString() + ", not meta");
        assertArrayEquals(shape, t.shape(), what + ": shape");
    }

    static void assertAllMeta(PreTrainedModel m, String what) {
        List<String> elsewhere = new ArrayList<>();
        for (Map.Entry<String, Tensor> e : m.namedParameters().entrySet()) {
            if (!e.getValue().device().is_meta()) {
                elsewhere.add(e.getKey());
            }
        }
        for (Map.Entry<String, Tensor> e : m.namedBuffers().entrySet()) {
            if (!e.getValue().device().is_meta()) {
                elsewhere.add(e.getKey());
            }
        }
        assertEquals(List.of(), elsewhere, what + ": tensors not on meta");
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("familiesAndMethods")
    void runsOnMetaWithoutMakingCpuTensors(String family, String method, String json, String[] targets)
            throws Exception {
        Path saved = tmp.resolve("a");
        try (PreTrainedModel m = cpuModel(json)) {
            m.peftAdapters().seed(1);
            m.addAdapter(config(method, targets, 1), "a");
            m.saveAdapter(saved, "a");
        }
        String what = family + " " + method;
        try (Device meta = new Device("meta"); PreTrainedModel m = cpuModel(json)) {
            m.to(meta);
            assertAllMeta(m, what + " after to(meta)");
            m.loadAdapter(saved, "a"); // loaded tensors go to the device of the layer they adapt
            m.peftAdapters().seed(2);
            m.addAdapter(config(method, targets, 2), "b"); // a fresh adapter is made on that device too
            assertAllMeta(m, what + " after load and add");
            m.setAdapter("a");
            Tensor ids = metaIds(3, 5);
            long vocab = 32;
            long[] logitsShape = m instanceof Seq2SeqLM ? new long[] {3, 3, vocab} : new long[] {3, 5, vocab};
            assertMeta(forward(m, ids), logitsShape, what + " forward");

            if (method.equals("lora")) { // PEFT refuses adapter_names with DoRA, IA3 and AdaLoRA
                Supplier<Tensor> f = () -> forward(m, ids);
                assertMeta(m.withAdapterNames(List.of("b", "__base__", "a"), f), logitsShape, what + " mixed batch");
            }
            if (m instanceof CausalLM lm) {
                Tensor out = Generation.generate(lm, ids, null, Generation.Options.greedy(3));
                assertMeta(out, new long[] {3, 8}, what + " generate");
            } else if (m instanceof Seq2SeqLM s) {
                Tensor out = Seq2SeqGeneration.generate(s, ids, null, Generation.Options.greedy(3));
                assertMeta(out, new long[] {3, 4}, what + " generate");
            }
            m.mergeAdapter();
            assertMeta(forward(m, ids), logitsShape, what + " merged");
            m.unmergeAdapter();
            assertMeta(forward(m, ids), logitsShape, what + " unmerged");
            assertAllMeta(m, what + " at the end");
        }
    }

    @org.junit.jupiter.api.Test
    void fromPretrainedPlacesTheModelOnTheDeviceAskedAndRefusesAnAbsentCuda() throws Exception {
        String json = "{" + DECODER + ",\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"]}";
        Path dir = tmp.resolve("model");
        try (PreTrainedModel m = cpuModel(json)) {
            m.savePretrained(dir);
        }
        try (PreTrainedModel m = AutoModel.fromPretrained(dir, ScalarType.Float, "meta")) {
            assertAllMeta(m, "fromPretrained(meta)");
            assertMeta(forward(m, metaIds(2, 4)), new long[] {2, 4, 32}, "fromPretrained(meta) forward");
        }
        try (PreTrainedModel m = AutoModel.fromPretrained(dir, ScalarType.Float, "auto")) {
            String want = dev.peft4j.nn.Devices.auto();
            assertEquals(want, m.namedParameters().values().iterator().next().device().str().getString(), "auto");
        }
        if (!dev.peft4j.nn.Devices.cudaAvailable()) {
            for (String cuda : new String[] {"cuda", "cuda:0", "cuda:3"}) {
                IllegalArgumentException x = org.junit.jupiter.api.Assertions.assertThrows(
                        IllegalArgumentException.class, () -> AutoModel.fromPretrained(dir, ScalarType.Float, cuda));
                assertTrue(x.getMessage().startsWith("device=" + cuda + ": no CUDA device is present"), x.getMessage());
            }
        }
        IllegalArgumentException bad = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> AutoModel.fromPretrained(dir, ScalarType.Float, "tpu"));
        assertTrue(bad.getMessage().startsWith("device=tpu: expected"), bad.getMessage());
    }
}
