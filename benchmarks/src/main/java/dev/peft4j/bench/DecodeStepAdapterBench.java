package dev.peft4j.bench;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.kernels.Kernels;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.KVCache;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import java.util.concurrent.TimeUnit;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * One whole decode step (M = 1 after a 32-token prompt, KV cache) of a 32-layer Llama-shaped model (head dim 64,
 * GQA 4:1, MLP 2.75× hidden, vocab 1024, random weights built here), three ways in one run ({@code path}):
 * {@code base} — the model without adapters; {@code composed} — LoRA r = 16 on q, k, v, o through the mixin,
 * served by the composed libtorch ops ({@code Kernels.setFusedLayers(false)}); {@code fused} — the same adapters on
 * the native kernels (one call per adapted layer). The figures to compare are the ratios fused / base and
 * composed / base: what an adapter costs per token on each path.
 *
 * <p>Each path runs in its own fork, so only one model is in memory at a time (hidden 1024: about 1.5 GB fp32).
 * Threads: libtorch's and OpenBLAS's pinned together (unpinned they oversubscribe small machines).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 3)
@Measurement(iterations = 3, time = 5)
@Fork(value = 1, jvmArgsAppend = {"-Xmx2g", "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
public class DecodeStepAdapterBench {
    static final String LLAMA = "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
            + " \"vocab_size\": 1024, \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": 32,"
            + " \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"rms_norm_eps\": 1e-5,"
            + " \"rope_theta\": 10000.0, \"max_position_embeddings\": 256, \"tie_word_embeddings\": false}";
    static final int PROMPT = 32;

    /** Hidden size; heads of 64, a quarter of them for keys and values. */
    @Param({"1024"})
    public int hidden;

    @Param({"base", "composed", "fused"})
    public String path;

    @Param({"Float"})
    public String dtype;

    /** libtorch's OpenMP threads and OpenBLAS's, pinned together. */
    @Param({"1"})
    public int threads;

    private PreTrainedModel model;
    private CausalLM lm;
    private KVCache cache;
    private Tensor nextToken;

    @Setup(Level.Trial)
    public void setup() {
        torch.set_num_threads(threads);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(threads);
        ScalarType dt = ScalarType.valueOf(dtype);
        long inter = hidden * 11L / 4;
        int heads = hidden / 64;
        ModelConfig c = ModelConfig.parse(String.format(LLAMA, hidden, inter, heads, Math.max(1, heads / 4)));
        model = AutoModel.fromConfig(c, Init.cpu(dt));
        Init.normal(model, 0.02, 1234);
        lm = (CausalLM) model;
        if (!path.equals("base")) {
            model.peftAdapters().seed(7);
            model.addAdapter(LoraConfig.builder().r(16).loraAlpha(32).targetModules("q_proj", "k_proj", "v_proj",
                    "o_proj").initLoraWeights(new InitLoraWeights.Flag(false)).build(), "lora");
        }
        Kernels.setFusedLayers(!path.equals("composed"));
        Tensor prompt;
        try (TensorOptions o = new TensorOptions(ScalarType.Long)) {
            prompt = torch.randint(1024, new long[] {1, PROMPT}, o);
            nextToken = torch.full(new long[] {1, 1}, new Scalar(7), o);
        }
        cache = lm.newCache();
        try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
            lm.forward(prompt, null, null, cache);
        }
        prompt.close();
        long before = Kernels.layerCalls();
        decodeStep();
        System.out.println("path " + path + ": threads libtorch " + torch.get_num_threads() + ", OpenBLAS "
                + org.bytedeco.openblas.presets.openblas_nolapack.blas_get_num_threads() + "; native layer calls per step "
                + (Kernels.layerCalls() - before));
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        cache.close();
        model.close();
        nextToken.close();
    }

    @Benchmark
    public long decodeStep() {
        try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
            Tensor logits = lm.forward(nextToken, null, null, cache);
            cache.truncate(PROMPT); // the next invocation decodes at the same position
            return logits.size(2);
        }
    }
}
