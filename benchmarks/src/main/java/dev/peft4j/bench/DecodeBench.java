package dev.peft4j.bench;

import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.KVCache;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Module;
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
 * A TinyLlama-1.1B-shaped {@code LlamaForCausalLM} (hidden 2048, 22 layers, 32 heads / 4 KV heads, MLP 5632, vocab
 * 32000; random weights built here): one decode step after a 128-token prompt, and a 128-token prefill, in fp32
 * and bf16.
 *
 * <p>{@code decodeStepHollow} runs the same decode step — same 22 layers, same sequence of libtorch calls from Java
 * — on a model whose dimensions are tiny (hidden 64, vocab 32), so its time is almost all per-call cost: Java plus
 * libtorch's own dispatch. Its ratio to {@code decodeStep} is therefore an upper bound on the share of a decode step
 * spent outside libtorch's kernels in Java.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 5)
@Measurement(iterations = 3, time = 10)
@Fork(value = 1, jvmArgsAppend = {"-Xmx2g", "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
public class DecodeBench {
    static final String TINYLLAMA = "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
            + " \"vocab_size\": %d, \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": 22,"
            + " \"num_attention_heads\": 32, \"num_key_value_heads\": 4, \"rms_norm_eps\": 1e-5,"
            + " \"rope_theta\": 10000.0, \"tie_word_embeddings\": false}";
    static final int PROMPT = 128;

    @Param({"Float", "BFloat16"})
    public String dtype;

    /** libtorch's OpenMP threads and OpenBLAS's (fp32 GEMM), pinned together: unpinned they oversubscribe 2 cores. */
    @Param({"2"})
    public int threads;

    private Module model;
    private CausalLM lm;
    private KVCache cache;
    private Module hollowModel;
    private CausalLM hollow;
    private KVCache hollowCache;
    private Tensor prompt;
    private Tensor nextToken;

    static CausalLM build(long vocab, long hidden, long inter, ScalarType dt) {
        ModelConfig c = ModelConfig.parse(String.format(TINYLLAMA, vocab, hidden, inter));
        Module m = AutoModel.fromConfig(c, Init.cpu(dt));
        Init.normal(m, 0.02, 1234);
        return (CausalLM) m;
    }

    static KVCache prefilled(CausalLM lm, Tensor prompt) {
        KVCache cache = lm.newCache();
        try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
            lm.forward(prompt, null, null, cache);
        }
        return cache;
    }

    @Setup(Level.Trial)
    public void setup() {
        torch.set_num_threads(threads);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(threads);
        ScalarType dt = ScalarType.valueOf(dtype);
        lm = build(32000, 2048, 5632, dt);
        model = (Module) lm;
        hollow = build(32, 64, 64, dt);
        hollowModel = (Module) hollow;
        try (TensorOptions o = new TensorOptions(ScalarType.Long)) {
            prompt = torch.randint(32, new long[] {1, PROMPT}, o);
            nextToken = torch.full(new long[] {1, 1}, new Scalar(7), o);
        }
        cache = prefilled(lm, prompt);
        hollowCache = prefilled(hollow, prompt);
        System.out.println("threads: libtorch " + torch.get_num_threads() + ", OpenBLAS "
                + org.bytedeco.openblas.presets.openblas_nolapack.blas_get_num_threads());
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        cache.close();
        hollowCache.close();
        model.close();
        hollowModel.close();
        prompt.close();
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

    @Benchmark
    public long decodeStepHollow() {
        try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
            Tensor logits = hollow.forward(nextToken, null, null, hollowCache);
            hollowCache.truncate(PROMPT);
            return logits.size(2);
        }
    }

    @Benchmark
    public long prefill128() {
        try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
            return lm.forward(prompt, null, null, null).size(1);
        }
    }
}
