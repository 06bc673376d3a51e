package dev.peft4j.bench;

import dev.peft4j.PeftAdapterMixin;
import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.kernels.DecodeKernels;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.Generation;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Module;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Whole-model decode, old path against new in one process: a TinyLlama-1.1B-shaped {@code LlamaForCausalLM}
 * (random weights), a 128-token prompt, then 64 greedy tokens through {@link Generation#generate}, with the native
 * decode path off ({@code libtorch}: a concatenated {@code KVCache}, libtorch's GEMV and small ops; the adapted layers
 * still fused, as before the native path existed) and on ({@code native}), alternating round by round. Decode
 * ms/token is {@code (time(64 tokens) − time(1 token)) / 63}: the prefill, which both paths run on libtorch, cancels.
 *
 * <p>The same on a hollow model (the same 22 layers and heads, hidden 64, MLP 64, vocab 32) gives what a decode step
 * costs beyond reading the weights: per-call overhead in Java, JNI, libtorch's dispatch and our kernels' fixed costs.
 *
 * <pre>
 * java -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp benchmarks/target/benchmarks.jar dev.peft4j.bench.GenerateBench \
 *     BFloat16 base,lora 5
 * </pre>
 * Arguments: dtype ({@code Float} or {@code BFloat16}), variants ({@code base}, {@code lora}: LoRA r = 16 on q, k, v,
 * o, added after the base rounds), rounds (default 5), new tokens (default 64), {@code nohollow} to skip the hollow
 * model. Prints medians; 2 threads.
 */
public final class GenerateBench {
    static final String CONFIG = "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
            + " \"vocab_size\": %d, \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": 22,"
            + " \"num_attention_heads\": 32, \"num_key_value_heads\": 4, \"rms_norm_eps\": 1e-5,"
            + " \"rope_theta\": 10000.0, \"tie_word_embeddings\": false}";
    static final int PROMPT = 128;
    static int newTokens = 64;

    private GenerateBench() {}

    static Module build(long vocab, long hidden, long inter, ScalarType dt) {
        Module m = AutoModel.fromConfig(ModelConfig.parse(String.format(CONFIG, vocab, hidden, inter)), Init.cpu(dt));
        Init.normal(m, 0.02, 1234);
        return m;
    }

    static double seconds(CausalLM lm, Tensor prompt, int tokens, long[][] out) {
        try (PointerScope s = new PointerScope()) {
            long t0 = System.nanoTime();
            Tensor ids = Generation.generate(lm, prompt, null, Generation.Options.greedy(tokens));
            double sec = (System.nanoTime() - t0) / 1e9;
            if (out != null) {
                Tensor c = ids.contiguous();
                out[0] = new long[(int) c.numel()];
                c.data_ptr_long().capacity(out[0].length).get(out[0]);
            }
            ids.close();
            return sec;
        }
    }

    static double median(List<Double> v) {
        double[] a = v.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        return a.length % 2 == 1 ? a[a.length / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
    }

    /** Median decode ms/token and prefill ms per path, alternating libtorch / native each round. */
    static void compare(String what, CausalLM lm, Tensor prompt, int rounds) {
        List<List<Double>> decode = List.of(new ArrayList<>(), new ArrayList<>());
        List<List<Double>> prefill = List.of(new ArrayList<>(), new ArrayList<>());
        long[][] tokens = new long[2][];
        for (int r = -1; r < rounds; r++) { // round -1 warms both paths up
            for (int path = 0; path < 2; path++) {
                DecodeKernels.setEnabled(path == 1);
                long[][] got = new long[1][];
                double one = seconds(lm, prompt, 1, null);
                double all = seconds(lm, prompt, newTokens, got);
                tokens[path] = got[0];
                if (r >= 0) {
                    prefill.get(path).add(one * 1e3);
                    decode.get(path).add((all - one) / (newTokens - 1) * 1e3);
                }
            }
        }
        DecodeKernels.setEnabled(true);
        double old = median(decode.get(0));
        double now = median(decode.get(1));
        System.out.printf("%-28s decode ms/token: libtorch %.1f, native %.1f, native/libtorch %.3f | prefill ms: "
                + "%.0f / %.0f | same greedy tokens: %s%n", what, old, now, now / old, median(prefill.get(0)),
                median(prefill.get(1)), Arrays.equals(tokens[0], tokens[1]));
        System.out.println("   decode per round, libtorch " + decode.get(0) + ", native " + decode.get(1));
    }

    public static void main(String[] args) {
        ScalarType dt = ScalarType.valueOf(args.length > 0 ? args[0] : "BFloat16");
        List<String> variants = Arrays.asList((args.length > 1 ? args[1] : "base,lora").split(","));
        int rounds = args.length > 2 ? Integer.parseInt(args[2]) : 5;
        newTokens = args.length > 3 ? Integer.parseInt(args[3]) : 64;
        boolean withHollow = args.length <= 4 || !args[4].equals("nohollow");
        torch.set_num_threads(2);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(2);
        Tensor prompt;
        try (TensorOptions o = new TensorOptions(ScalarType.Long)) {
            torch.manual_seed(7);
            prompt = torch.randint(32, new long[] {1, PROMPT}, o);
        }
        if (withHollow) {
            try (Module hollow = build(32, 64, 64, dt)) {
                compare(dt + " hollow (overhead)", (CausalLM) hollow, prompt, rounds);
            }
        }
        try (Module model = build(32000, 2048, 5632, dt)) {
            CausalLM lm = (CausalLM) model;
            if (variants.contains("base")) {
                compare(dt + " TinyLlama base", lm, prompt, rounds);
            }
            if (variants.contains("lora")) {
                ((PeftAdapterMixin) model).addAdapter(LoraConfig.builder().r(16).loraAlpha(32)
                        .targetModules("q_proj", "k_proj", "v_proj", "o_proj")
                        .initLoraWeights(new InitLoraWeights.Flag(false)).build());
                compare(dt + " TinyLlama LoRA r=16 qkvo", lm, prompt, rounds);
            }
        }
        prompt.close();
    }
}
