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
import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.openjdk.jmh.annotations.AuxCounters;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The adapter mixin's bookkeeping on a 32-layer Llama (hidden 512, 8 heads; random weights): {@code setAdapter}
 * switching between two LoRA adapters on q/k/v/o (128 tuner layers), and loading 100 r=8 LoRA adapters from one
 * saved folder (then deleting them), with the process's resident-memory growth per loaded adapter as an auxiliary
 * counter.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 2, time = 3)
@Measurement(iterations = 3, time = 5)
@Fork(value = 1, jvmArgsAppend = {"-Xmx2g"})
public class AdapterMixinBench {
    static final String LLAMA32 = "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
            + " \"vocab_size\": 256, \"hidden_size\": 512, \"intermediate_size\": 1024, \"num_hidden_layers\": 32,"
            + " \"num_attention_heads\": 8, \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-5,"
            + " \"tie_word_embeddings\": false}";

    private PreTrainedModel model;
    private Path folder;
    private boolean flip;

    static LoraConfig qkvo() {
        return LoraConfig.builder().r(8).loraAlpha(16).targetModules("q_proj", "k_proj", "v_proj", "o_proj")
                .initLoraWeights(new InitLoraWeights.Flag(false)).build();
    }

    @Setup(Level.Trial)
    public void setUp() throws IOException {
        model = AutoModel.fromConfig(ModelConfig.parse(LLAMA32), Init.cpu(ScalarType.Float));
        Init.normal(model, 0.02, 1);
        model.addAdapter(qkvo(), "a");
        model.addAdapter(qkvo(), "b");
        folder = Files.createTempDirectory("peft4j-bench-adapter");
        model.saveAdapter(folder, "a");
    }

    @TearDown(Level.Trial)
    public void tearDown() throws IOException {
        model.close();
        try (var files = Files.list(folder)) {
            for (Path p : (Iterable<Path>) files::iterator) {
                Files.delete(p);
            }
        }
        Files.delete(folder);
    }

    /** One {@code setAdapter} over the 128 tuner layers (alternating a / b). */
    @Benchmark
    public void setAdapter() {
        flip = !flip;
        model.setAdapter(flip ? "a" : "b");
    }

    /** Resident memory growth while 100 adapters are loaded. */
    @State(Scope.Thread)
    @AuxCounters(AuxCounters.Type.EVENTS)
    public static class Memory {
        public double rssKibPerAdapter;
    }

    /** Loads 100 adapters from the saved folder (safetensors, mapped), then deletes them. */
    @Benchmark
    @BenchmarkMode(Mode.SingleShotTime)
    @OutputTimeUnit(TimeUnit.MILLISECONDS)
    @Measurement(iterations = 5)
    @Warmup(iterations = 1)
    public void load100Adapters(Memory mem) throws IOException {
        long before = rssKib();
        String[] names = new String[100];
        for (int i = 0; i < 100; i++) {
            names[i] = "x" + i;
            model.loadAdapter(folder, names[i]);
        }
        mem.rssKibPerAdapter = (rssKib() - before) / 100.0;
        model.deleteAdapter(names);
    }

    static long rssKib() throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmRSS:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        }
        return -1;
    }
}
