package dev.peft4j.bench;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import dev.peft4j.train.DistributedContext;
import dev.peft4j.train.Trainer;
import dev.peft4j.train.TrainingArguments;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Data-parallel scaling of LoRA training on one machine: optimizer steps per second of 1 process against 2 ranks
 * (each a JVM of {@code threads} libtorch / OpenBLAS threads) at the same global batch per step (1 process: 2
 * micro-batches of {@code batch} sequences accumulated; 2 ranks: one each), in alternating rounds; and the
 * allreduce: the gradient bytes one rank sends per optimizer step for a LoRA of rank {@code r} on q, k, v, o, at the
 * benchmark's shape and at TinyLlama-1.1B's (hidden 2048, 22 layers, 4 KV heads of 64), with the time one allreduce
 * of the benchmark's size takes between the 2 ranks.
 *
 * <pre>
 * java -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp benchmarks/target/benchmarks.jar \
 *     dev.peft4j.bench.DistributedScalingBench [hidden=512] [layers=4] [vocab=4096] [seq=128] [batch=1] [r=16] \
 *     [steps=12] [warmup=3] [rounds=3] [threads=1]
 * </pre>
 */
public final class DistributedScalingBench {
    private DistributedScalingBench() {}

    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("worker")) {
            worker(BenchArgs.parse(Arrays.copyOfRange(args, 1, args.length), DEFAULTS));
            return;
        }
        Map<String, String> a = BenchArgs.parse(args, DEFAULTS);
        System.out.println("config: " + a + ", cores " + Runtime.getRuntime().availableProcessors());
        int rounds = Integer.parseInt(a.get("rounds"));
        List<Double> ratios = new ArrayList<>();
        for (int round = 1; round <= rounds; round++) {
            // alternate which runs first, so a drift in the machine's load falls on both
            double one;
            double two;
            if (round % 2 == 1) {
                one = run(args, 1);
                two = run(args, 2);
            } else {
                two = run(args, 2);
                one = run(args, 1);
            }
            ratios.add(two / one);
            System.out.printf("round %d: 1 process %.3f steps/s, 2 ranks %.3f steps/s, ratio %.3f%n", round, one,
                    two, two / one);
        }
        List<Double> sorted = new ArrayList<>(ratios);
        sorted.sort(null);
        System.out.printf("2 ranks / 1 process, steps per second at the same global batch: median %.3f of %s%n",
                sorted.get(sorted.size() / 2), ratios);
        int r = Integer.parseInt(a.get("r"));
        System.out.printf("allreduce per optimizer step, LoRA r=%d q,k,v,o float32: this shape %.2f MB, TinyLlama-1.1B "
                + "shape %.2f MB%n", r, loraBytes(Integer.parseInt(a.get("hidden")), Integer.parseInt(a.get("layers")),
                        kvHeads(Integer.parseInt(a.get("hidden"))) * 64, r, 4) / 1e6,
                loraBytes(2048, 22, 256, r, 4) / 1e6);
    }

    private static final String[] DEFAULTS = {"hidden", "512", "layers", "4", "vocab", "4096", "seq", "128", "batch",
        "1", "r", "16", "steps", "12", "warmup", "3", "rounds", "3", "threads", "1", "world", "1"};

    /** LoRA r on q, k, v, o of each layer: A [r, hidden] and B [out, r], out = hidden for q / o, kvDim for k / v. */
    static long loraBytes(long hidden, long layers, long kvDim, long r, long elementBytes) {
        long perLayer = r * (hidden + hidden) * 2 + r * (hidden + kvDim) * 2;
        return perLayer * layers * elementBytes;
    }

    private static int kvHeads(int hidden) {
        return Math.max(1, hidden / 64 / 4);
    }

    // one measurement: world JVMs; returns rank 0's steps per second
    private static double run(String[] args, int world) throws Exception {
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<Process> ps = new ArrayList<>();
        for (int rank = 0; rank < world; rank++) {
            List<String> cmd = new ArrayList<>(List.of(java, "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0", "-cp",
                    System.getProperty("java.class.path"), DistributedScalingBench.class.getName(), "worker"));
            cmd.addAll(Arrays.asList(args));
            cmd.add("world=" + world);
            ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
            Map<String, String> env = pb.environment();
            if (world > 1) {
                env.put("RANK", String.valueOf(rank));
                env.put("LOCAL_RANK", String.valueOf(rank));
                env.put("WORLD_SIZE", String.valueOf(world));
                env.put("LOCAL_WORLD_SIZE", String.valueOf(world));
                env.put("MASTER_ADDR", "127.0.0.1");
                env.put("MASTER_PORT", String.valueOf(port));
                env.put("PEFT4J_DIST_TIMEOUT_S", "300");
            }
            ps.add(pb.start());
        }
        double rate = Double.NaN;
        for (int rank = 0; rank < world; rank++) {
            Process p = ps.get(rank);
            List<String> lines = new ArrayList<>();
            try (BufferedReader in = new BufferedReader(new InputStreamReader(p.getInputStream(),
                    StandardCharsets.UTF_8))) {
                String line;
                while ((line = in.readLine()) != null) {
                    lines.add(line);
                    if (line.startsWith("RATE ")) {
                        rate = Double.parseDouble(line.substring(5));
                    } else if (line.startsWith("ALLREDUCE ")) {
                        System.out.println("  " + line.substring(10));
                    }
                }
            }
            if (!p.waitFor(600, TimeUnit.SECONDS) || p.exitValue() != 0) {
                ps.forEach(Process::destroyForcibly);
                throw new IllegalStateException("world " + world + " rank " + rank + " failed:\n"
                        + String.join("\n", lines));
            }
        }
        return rate;
    }

    private static double allreduceMillis(DistributedContext dist, long bytes) {
        Tensor flat = torch.zeros(bytes / 4);
        int reps = 10;
        dist.allreduceSum(List.of(flat), "warm-up");
        long t0 = System.nanoTime();
        for (int i = 0; i < reps; i++) {
            dist.allreduceSum(List.of(flat), "timing");
        }
        return (System.nanoTime() - t0) / 1e6 / reps;
    }

    private static void worker(Map<String, String> a) throws Exception {
        int hidden = Integer.parseInt(a.get("hidden"));
        int layers = Integer.parseInt(a.get("layers"));
        int vocab = Integer.parseInt(a.get("vocab"));
        int seq = Integer.parseInt(a.get("seq"));
        int batch = Integer.parseInt(a.get("batch"));
        int r = Integer.parseInt(a.get("r"));
        int steps = Integer.parseInt(a.get("steps"));
        int warmup = Integer.parseInt(a.get("warmup"));
        int threads = Integer.parseInt(a.get("threads"));
        int world = Integer.parseInt(a.get("world"));
        torch.set_num_threads(threads);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(threads);
        int heads = Math.max(1, hidden / 64);
        String cfg = String.format("{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
                + " \"vocab_size\": %d, \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d,"
                + " \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"rms_norm_eps\": 1e-5,"
                + " \"tie_word_embeddings\": false}", vocab, hidden, hidden * 11 / 4, layers, heads, kvHeads(hidden));
        DistributedContext dist = DistributedContext.fromEnvironment(System.getenv());
        try (PreTrainedModel model = AutoModel.fromConfig(ModelConfig.parse(cfg), Init.cpu(ScalarType.Float))) {
            Init.normal(model, 0.02, 1234);
            model.addAdapter(LoraConfig.builder().r(r).loraAlpha(2 * r).loraDropout(0.0)
                    .targetModules("q_proj", "k_proj", "v_proj", "o_proj").build(), "bench");
            long trainable = 0;
            for (Tensor p : model.namedParameters().values()) {
                if (p.requires_grad()) {
                    trainable += p.numel() * p.element_size();
                }
            }
            long want = loraBytes(hidden, layers, kvHeads(hidden) * 64L, r, 4);
            if (trainable != want) {
                throw new IllegalStateException("trainable bytes " + trainable + ", the formula's " + want);
            }
            // the same global batch per step: 2 micro-batches, accumulated by 1 process or one per rank
            List<Trainer.Batch> data = new ArrayList<>();
            torch.manual_seed(5);
            for (int i = 0; i < 2; i++) {
                Tensor ids = torch.randint(vocab, new long[] {batch, seq}).to(ScalarType.Long);
                data.add(Trainer.Batch.causalLM(ids, null));
            }
            int total = warmup + steps;
            TrainingArguments targs = TrainingArguments.builder().learningRate(1e-4).maxSteps(total)
                    .gradientAccumulationSteps(world == 1 ? 2 : 1).build();
            long[] marks = new long[2];
            new Trainer(model, targs).distributed(dist).onStepEnd(s -> {
                if (s == warmup) {
                    marks[0] = System.nanoTime();
                } else if (s == total) {
                    marks[1] = System.nanoTime();
                }
            }).train(data);
            if (dist == null || dist.isMain()) {
                System.out.println("RATE " + steps / ((marks[1] - marks[0]) / 1e9));
            }
            if (dist != null) {
                // one allreduce of the step's gradient bytes, alone: the communication part of a step; and one of
                // the TinyLlama-shaped LoRA's, which needs no model to time
                double ms = allreduceMillis(dist, trainable);
                long tiny = loraBytes(2048, 22, 256, r, 4);
                double tinyMs = allreduceMillis(dist, tiny);
                if (dist.isMain()) {
                    System.out.printf("ALLREDUCE %.2f MB of gradients in %.2f ms per allreduce (2 ranks, loopback), "
                            + "%.3f s per step in all; TinyLlama shape's %.2f MB in %.2f ms%n", trainable / 1e6, ms,
                            (marks[1] - marks[0]) / 1e9 / steps, tiny / 1e6, tinyMs);
                }
                dist.barrier();
                dist.close();
            }
        }
    }
}
