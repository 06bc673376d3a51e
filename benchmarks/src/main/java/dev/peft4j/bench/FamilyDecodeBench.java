package dev.peft4j.bench;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.KVCache;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * {@link DecodeBench}'s decode step on the new families' real shapes, bfloat16, random weights built here: a
 * Gemma-2-2B-shaped {@code Gemma2ForCausalLM} (hidden 2304, 26 layers, 8 heads / 4 KV heads of 256, MLP 9216, vocab
 * 256000, soft-capping, sliding window on alternate layers) and a Phi-3-mini-4k-shaped {@code Phi3ForCausalLM}
 * (hidden 3072, 32 layers, 32 heads, fused qkv / gate_up, MLP 8192, vocab 32064). One token with the KV cache after a
 * 128-token prompt, base (adapters disabled) and with a rank-16 LoRA on every Linear, measured in alternating blocks in
 * one process so that the adapter overhead comes out as a ratio on the same machine state.
 *
 * <p>Run: {@code java -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp benchmarks/target/benchmarks.jar
 * dev.peft4j.bench.FamilyDecodeBench [gemma2-2b|phi3-mini ...] [rounds]} (with {@code OMP_WAIT_POLICY=passive
 * OPENBLAS_THREAD_TIMEOUT=4}). Each round times 5 base steps then 5 adapted steps (the first of each block, after the
 * switch, is not counted); it prints the median of each and their ratio.
 */
public final class FamilyDecodeBench {
    private FamilyDecodeBench() {}

    static final String GEMMA2_2B = "{\"model_type\": \"gemma2\", \"architectures\": [\"Gemma2ForCausalLM\"],"
            + " \"vocab_size\": 256000, \"hidden_size\": 2304, \"intermediate_size\": 9216, \"num_hidden_layers\": 26,"
            + " \"num_attention_heads\": 8, \"num_key_value_heads\": 4, \"head_dim\": 256, \"query_pre_attn_scalar\": 256,"
            + " \"sliding_window\": 4096, \"attn_logit_softcapping\": 50.0, \"final_logit_softcapping\": 30.0,"
            + " \"hidden_activation\": \"gelu_pytorch_tanh\", \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0,"
            + " \"max_position_embeddings\": 8192, \"tie_word_embeddings\": true}";
    static final String PHI3_MINI = "{\"model_type\": \"phi3\", \"architectures\": [\"Phi3ForCausalLM\"],"
            + " \"vocab_size\": 32064, \"hidden_size\": 3072, \"intermediate_size\": 8192, \"num_hidden_layers\": 32,"
            + " \"num_attention_heads\": 32, \"num_key_value_heads\": 32, \"hidden_act\": \"silu\", \"rms_norm_eps\": 1e-5,"
            + " \"rope_theta\": 10000.0, \"max_position_embeddings\": 4096, \"original_max_position_embeddings\": 4096,"
            + " \"sliding_window\": 2047, \"tie_word_embeddings\": false}";
    static final int PROMPT = 128;
    static final int BLOCK = 5;

    public static void main(String[] args) {
        List<String> shapes = new ArrayList<>();
        int rounds = 6;
        for (String a : args) {
            if (a.matches("\\d+")) {
                rounds = Integer.parseInt(a);
            } else {
                shapes.add(a);
            }
        }
        if (shapes.isEmpty()) {
            shapes = List.of("gemma2-2b", "phi3-mini");
        }
        torch.set_num_threads(2);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(2);
        for (String shape : shapes) {
            run(shape, rounds);
        }
    }

    static void run(String shape, int rounds) {
        String json;
        String[] targets;
        switch (shape) {
            case "gemma2-2b":
                json = GEMMA2_2B;
                targets = new String[] {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
                break;
            case "phi3-mini":
                json = PHI3_MINI;
                targets = new String[] {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"};
                break;
            default:
                throw new IllegalArgumentException("shape '" + shape + "'; known: gemma2-2b, phi3-mini");
        }
        long t0 = System.nanoTime();
        try (PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(ScalarType.BFloat16))) {
            Init.normal(m, 0.02, 1234);
            m.eval();
            m.addAdapter(LoraConfig.builder().r(16).loraAlpha(32).targetModules(targets)
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build(), "a");
            CausalLM lm = (CausalLM) m;
            System.out.printf("%s: built in %.1f s%n", shape, (System.nanoTime() - t0) / 1e9);
            Tensor prompt;
            Tensor next;
            try (TensorOptions o = new TensorOptions(ScalarType.Long)) {
                prompt = torch.randint(1000, new long[] {1, PROMPT}, o);
                next = torch.full(new long[] {1, 1}, new Scalar(7), o);
            }
            try (KVCache cache = lm.newCache()) {
                try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
                    lm.forward(prompt, null, null, cache);
                }
                double[] base = new double[rounds * (BLOCK - 1)];
                double[] adapted = new double[rounds * (BLOCK - 1)];
                for (int r = 0; r < rounds; r++) {
                    m.disableAdapters();
                    block(lm, cache, next, base, r * (BLOCK - 1));
                    m.enableAdapters();
                    block(lm, cache, next, adapted, r * (BLOCK - 1));
                }
                double mb = median(base);
                double ma = median(adapted);
                System.out.printf("%s bf16 decode step (1 token, %d cached): base %.1f ms, LoRA r16 on %s %.1f ms, "
                        + "ratio %.3f (medians of %d steps each)%n", shape, PROMPT, mb, String.join("/", targets), ma,
                        ma / mb, base.length);
            }
        }
    }

    /** BLOCK decode steps at the same position; the first (after an adapter switch) is not recorded. */
    static void block(CausalLM lm, KVCache cache, Tensor next, double[] out, int at) {
        for (int i = 0; i < BLOCK; i++) {
            long s0 = System.nanoTime();
            try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
                lm.forward(next, null, null, cache).size(2);
                cache.truncate(PROMPT);
            }
            if (i > 0) {
                out[at + i - 1] = (System.nanoTime() - s0) / 1e6;
            }
        }
    }

    static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }
}
