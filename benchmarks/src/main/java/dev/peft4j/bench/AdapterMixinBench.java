package dev.peft4j.bench;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
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
 * The adapter mixin's bookkeeping at Llama-7B shape (hidden 4096, intermediate 11008, 32 heads, vocab 32000):
 * {@code setAdapter} between two r=16 LoRA adapters on q/k/v/o (4 tuner layers per decoder layer), at 8 and 32
 * decoder layers (param {@code others}: more adapters held, e.g. {@code -p others=0,8}); and loading 100 distinct random r=16 LoRA adapters on q/k/v/o of 32 layers from the page cache
 * (bf16 like the base: 33.6 MB each, 3.36 GB in all; fp32 would be 6.7 GB), printing throughput and resident-memory
 * growth per adapter byte.
 *
 * <p>The base weights are never materialised: the model is built on the meta device and every base parameter is
 * then replaced by a stride-0 expanded view of one zero (no memory), so 6+ GB of base weights cost nothing. The
 * adapters are real CPU bf16 tensors. Only the mixin's bookkeeping and the adapter tensors are measured; no forward
 * runs.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
@Fork(value = 1, jvmArgsAppend = {"-Xmx2g", "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
public class AdapterMixinBench {
    static final int ADAPTERS = 100;
    /** The base model's dtype, hence the adapters' (PEFT keeps LoRA weights in a 16-bit base's dtype). */
    static final ScalarType DTYPE = ScalarType.BFloat16;

    static String llama(int layers) {
        return "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
                + " \"vocab_size\": 32000, \"hidden_size\": 4096, \"intermediate_size\": 11008,"
                + " \"num_hidden_layers\": " + layers + ", \"num_attention_heads\": 32, \"num_key_value_heads\": 32,"
                + " \"rms_norm_eps\": 1e-5, \"tie_word_embeddings\": false}";
    }

    static LoraConfig qkvo() {
        return LoraConfig.builder().r(16).loraAlpha(32).targetModules("q_proj", "k_proj", "v_proj", "o_proj")
                .initLoraWeights(new InitLoraWeights.Flag(false)).build();
    }

    /** A model of {@code layers} decoder layers whose base parameters hold no memory (stride-0 views of a zero). */
    static PreTrainedModel hollowModel(int layers) {
        torch.set_num_threads(1);
        PreTrainedModel model = AutoModel.fromConfig(ModelConfig.parse(llama(layers)), Init.meta(DTYPE));
        try (Tensor zero = Init.cpu(DTYPE).full(0.0, 1)) {
            for (Map.Entry<String, Tensor> e : model.namedParameters().entrySet()) {
                long[] shape = e.getValue().shape();
                Tensor hollow;
                try (Tensor z = zero.reshape(ones(shape.length))) {
                    hollow = z.expand(shape);
                }
                model.setParameter(e.getKey(), hollow, false).close();
            }
        }
        return model;
    }

    private static long[] ones(int n) {
        long[] s = new long[n];
        java.util.Arrays.fill(s, 1);
        return s;
    }

    static long procStatusBytes(String field) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith(field + ":")) {
                return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
            }
        }
        throw new IllegalStateException(field + " not in /proc/self/status");
    }

    static void deleteTree(Path dir) throws IOException {
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : (Iterable<Path>) s.sorted(Comparator.reverseOrder())::iterator) {
                Files.delete(p);
            }
        }
    }

    // ------------------------------------------------------------------ setAdapter

    @State(Scope.Benchmark)
    public static class Switch {
        @Param({"8", "32"})
        public int layers;

        /** Adapters held besides a and b (PEFT's set_adapter sets requires_grad on every adapter a layer holds). */
        @Param({"0"})
        public int others;

        PreTrainedModel model;
        boolean flip;

        @Setup(Level.Trial)
        public void setUp() {
            model = hollowModel(layers);
            model.addAdapter(qkvo(), "a");
            model.addAdapter(qkvo(), "b");
            for (int i = 0; i < others; i++) {
                model.addAdapter(qkvo(), "o" + i);
            }
            if (model.peftAdapters().tunerLayers().size() != 4 * layers) {
                throw new IllegalStateException("expected " + 4 * layers + " tuner layers");
            }
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            model.close();
        }
    }

    /** One {@code setAdapter} over the {@code 4 × layers} tuner layers (alternating a / b). */
    @Benchmark
    public void setAdapter(Switch s) {
        s.flip = !s.flip;
        s.model.setAdapter(s.flip ? "a" : "b");
    }

    // ------------------------------------------------------------------ loading 100 adapters

    @State(Scope.Benchmark)
    public static class Loading {
        PreTrainedModel model;
        Path root;
        Path[] folders = new Path[ADAPTERS];
        long fileBytes;
        long tensorBytes;

        @Setup(Level.Trial)
        public void setUp() throws IOException {
            model = hollowModel(32);
            root = Files.createTempDirectory("peft4j-bench-adapters");
            for (int i = 0; i < ADAPTERS; i++) {
                model.peftAdapters().seed(i);
                model.addAdapter(qkvo(), "w");
                if (i == 0) {
                    for (Tensor t : model.peftAdapters().getAdapterStateDict("w").values()) {
                        tensorBytes += t.nbytes();
                    }
                }
                folders[i] = root.resolve("a" + i);
                model.saveAdapter(folders[i], "w");
                model.deleteAdapter("w");
                fileBytes += Files.size(folders[i].resolve("adapter_model.safetensors"));
            }
            byte[] buf = new byte[1 << 20];
            for (Path f : folders) { // read once: every page in the page cache
                try (var in = Files.newInputStream(f.resolve("adapter_model.safetensors"))) {
                    while (in.read(buf) > 0) {
                        // nothing
                    }
                }
            }
            System.gc();
            System.err.printf("%n[AdapterMixinBench] wrote %d adapters, %.1f MB each (tensor bytes %.1f MB)%n",
                    ADAPTERS, fileBytes / 1e6 / ADAPTERS, tensorBytes / 1e6);
        }

        public PreTrainedModel getModel() {
            return model;
        }

        public Path getFolder(int i) {
            return folders[i];
        }

        /** Deletes what the iteration loaded. */
        @TearDown(Level.Iteration)
        public void deleteLoaded() {
            String[] names = new String[ADAPTERS];
            for (int i = 0; i < ADAPTERS; i++) {
                names[i] = "x" + i;
            }
            if (model.peftAdapters().isLoaded()) {
                model.deleteAdapter(names);
            }
            System.gc();
        }

        @TearDown(Level.Trial)
        public void tearDown() throws IOException {
            model.close();
            deleteTree(root);
        }
    }

    /**
     * Loads the 100 adapters from the page cache (the files were written and then read once in setup); the score is
     * the time of the 100 {@code loadAdapter} calls alone (the deletes run in the iteration's teardown). Printed per
     * iteration: throughput and the growth of private (RssAnon) and whole (VmRSS) resident memory over the adapters'
     * tensor bytes. The first (warm-up) iteration's growth is the memory the adapters take, and its time includes the
     * first touch of that fresh memory (slow on this project's VM); later iterations reuse what the allocator kept
     * from the previous iteration's deletes (≈ 0 growth: nothing leaks from one round to the next), so the score is
     * the loading itself.
     */
    @Benchmark
    @BenchmarkMode(Mode.SingleShotTime)
    @OutputTimeUnit(TimeUnit.MILLISECONDS)
    @Warmup(iterations = 1)
    @Measurement(iterations = 3)
    public void load100Adapters(Loading s) throws IOException {
        long anon0 = procStatusBytes("RssAnon");
        long rss0 = procStatusBytes("VmRSS");
        long t0 = System.nanoTime();
        for (int i = 0; i < ADAPTERS; i++) {
            s.model.loadAdapter(s.folders[i], "x" + i);
        }
        long t1 = System.nanoTime();
        long anon1 = procStatusBytes("RssAnon");
        long rss1 = procStatusBytes("VmRSS");
        double all = (double) s.tensorBytes * ADAPTERS;
        System.err.printf("%n[AdapterMixinBench] loaded %d adapters (%.2f GB of files) in %.0f ms: %.2f GB/s;"
                        + " RssAnon +%.0f MB (%.3f× adapter bytes), VmRSS +%.0f MB (%.3f×)%n", ADAPTERS,
                s.fileBytes / 1e9, (t1 - t0) / 1e6, s.fileBytes / ((t1 - t0) / 1e9) / 1e9, (anon1 - anon0) / 1e6,
                (anon1 - anon0) / all, (rss1 - rss0) / 1e6, (rss1 - rss0) / all);
    }
}
