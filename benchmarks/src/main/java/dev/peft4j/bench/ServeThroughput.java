package dev.peft4j.bench;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.config.TaskType;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.Generation;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import dev.peft4j.serve.RequestHandle;
import dev.peft4j.serve.ServeRequest;
import dev.peft4j.serve.ServeResult;
import dev.peft4j.serve.ServingEngine;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Serving throughput, measured as ratios in one run on one model (random weights, LoRA r = 16 on q, k, v, o):
 * {@code R} requests over {@code A} adapters served one at a time ({@code setAdapter} + {@code generate}), the same
 * requests submitted at once to a {@link ServingEngine} (continuous batching, mixed adapters), and the same on one
 * adapter; then time to first token and per output token (p50, p99) under an open-loop load at 50 % and 90 % of the
 * engine's measured capacity. Tokens per second count every generated token over the wall time, prefill included.
 *
 * <pre>
 * java -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp benchmarks/target/benchmarks.jar dev.peft4j.bench.ServeThroughput \
 *     [dtype=Float|BFloat16] [layers=22] [hidden=2048] [intermediate=5632] [requests=16] [adapters=8] \
 *     [prompt=32] [tokens=32] [threads=2]
 * </pre>
 */
public final class ServeThroughput {
    private ServeThroughput() {}

    public static void main(String[] args) throws Exception {
        Map<String, String> a = new LinkedHashMap<>(Map.of("dtype", "Float", "layers", "22", "hidden", "2048",
                "intermediate", "5632", "requests", "16", "adapters", "8", "prompt", "32", "tokens", "32",
                "threads", "2"));
        for (String arg : args) {
            String[] kv = arg.split("=", 2);
            if (kv.length != 2 || !a.containsKey(kv[0])) {
                throw new IllegalArgumentException("expected key=value with a key of " + a.keySet() + ", got " + arg);
            }
            a.put(kv[0], kv[1]);
        }
        ScalarType dt = ScalarType.valueOf(a.get("dtype"));
        int layers = Integer.parseInt(a.get("layers"));
        int hidden = Integer.parseInt(a.get("hidden"));
        int inter = Integer.parseInt(a.get("intermediate"));
        int requests = Integer.parseInt(a.get("requests"));
        int adapters = Integer.parseInt(a.get("adapters"));
        int promptLen = Integer.parseInt(a.get("prompt"));
        int tokens = Integer.parseInt(a.get("tokens"));
        int threads = Integer.parseInt(a.get("threads"));
        torch.set_num_threads(threads);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(threads);
        System.out.println("config: " + a);

        String cfg = String.format("{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
                + " \"vocab_size\": 32000, \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d,"
                + " \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"rms_norm_eps\": 1e-5,"
                + " \"tie_word_embeddings\": false}", hidden, inter, layers, hidden / 64, Math.max(1, hidden / 512));
        Path tmp = Files.createTempDirectory("peft4j-serve-bench");
        List<Path> folders = new ArrayList<>();
        for (int i = 0; i < adapters; i++) {
            folders.add(lora(tmp.resolve("a" + i), hidden, hidden / 64, Math.max(1, hidden / 512), layers, i));
        }
        java.util.Random rnd = new java.util.Random(1);
        List<long[]> prompts = new ArrayList<>();
        for (int r = 0; r < requests; r++) {
            long[] p = new long[promptLen];
            for (int k = 0; k < p.length; k++) {
                p[k] = rnd.nextInt(32000);
            }
            prompts.add(p);
        }
        try (PreTrainedModel model = AutoModel.fromConfig(ModelConfig.parse(cfg), Init.cpu(dt))) {
            Init.normal(model, 0.02, 1234);
            // one at a time: setAdapter + generate
            for (int i = 0; i < adapters; i++) {
                model.loadAdapter(folders.get(i), "a" + i);
            }
            sequential(model, prompts.subList(0, Math.min(2, requests)), 1, tokens); // warm-up
            long t0 = System.nanoTime();
            sequential(model, prompts, adapters, tokens);
            double seqSeconds = (System.nanoTime() - t0) / 1e9;
            double seqTps = (double) requests * tokens / seqSeconds;
            System.out.printf("one at a time (setAdapter + generate): %d requests x %d tokens in %.2f s = %.1f tok/s%n",
                    requests, tokens, seqSeconds, seqTps);
            for (int i = 0; i < adapters; i++) {
                model.deleteAdapter("a" + i);
            }
            try (ServingEngine engine = ServingEngine.builder(model).maxConcurrent(requests)
                    .maxLength(promptLen + tokens).maxResidentAdapters(adapters).maxWaiting(4096).threads(threads)
                    .build()) {
                for (int i = 0; i < adapters; i++) {
                    engine.register("a" + i, folders.get(i));
                }
                burst(engine, prompts, adapters, tokens); // warm-up: loads every adapter
                double mixed = burst(engine, prompts, adapters, tokens);
                double one = burst(engine, prompts, 1, tokens);
                System.out.printf("engine, %d concurrent over %d adapters: %.1f tok/s%n", requests, adapters, mixed);
                System.out.printf("engine, %d concurrent on 1 adapter: %.1f tok/s%n", requests, one);
                System.out.printf("ratio mixed / one at a time = %.2f (target >= 8)%n", mixed / seqTps);
                System.out.printf("ratio mixed / one adapter = %.3f (target >= 0.9)%n", mixed / one);
                double capacity = mixed / tokens; // requests per second
                for (double load : new double[] {0.5, 0.9}) {
                    openLoop(engine, prompts, adapters, tokens, capacity * load, load);
                }
            }
        }
    }

    private static void sequential(PreTrainedModel model, List<long[]> prompts, int adapters, int tokens) {
        for (int r = 0; r < prompts.size(); r++) {
            model.setAdapter("a" + (r % adapters));
            try (PointerScope s = new PointerScope()) {
                long[] p = prompts.get(r);
                Generation.generate((CausalLM) model, Tensor.create(p, 1, p.length), null,
                        Generation.Options.greedy(tokens));
            }
        }
    }

    /** All requests at once; tokens per second over the burst. */
    private static double burst(ServingEngine engine, List<long[]> prompts, int adapters, int tokens) throws Exception {
        long t0 = System.nanoTime();
        List<CompletableFuture<ServeResult>> fs = new ArrayList<>();
        for (int r = 0; r < prompts.size(); r++) {
            fs.add(engine.submit(ServeRequest.builder().adapter("a" + (r % adapters)).promptIds(prompts.get(r))
                    .maxNewTokens(tokens).ignoreEos(true).build()).result());
        }
        long n = 0;
        for (CompletableFuture<ServeResult> f : fs) {
            n += f.get().tokenIds().length;
        }
        return n / ((System.nanoTime() - t0) / 1e9);
    }

    /** Requests arriving at a fixed rate for a while; TTFT and TPOT percentiles. */
    private static void openLoop(ServingEngine engine, List<long[]> prompts, int adapters, int tokens, double rate,
            double load) throws Exception {
        int n = prompts.size() * 3;
        long gap = (long) (1e9 / rate);
        List<CompletableFuture<ServeResult>> fs = new ArrayList<>();
        long start = System.nanoTime();
        for (int r = 0; r < n; r++) {
            long due = start + r * gap;
            while (System.nanoTime() < due) {
                Thread.sleep(Math.max(0, (due - System.nanoTime()) / 1_000_000));
            }
            fs.add(engine.submit(ServeRequest.builder().adapter("a" + (r % adapters))
                    .promptIds(prompts.get(r % prompts.size())).maxNewTokens(tokens).ignoreEos(true).build())
                    .result());
        }
        long[] ttft = new long[n];
        long[] tpot = new long[n];
        for (int r = 0; r < n; r++) {
            ServeResult res = fs.get(r).get();
            ttft[r] = res.timings().timeToFirstTokenNanos();
            tpot[r] = res.timings().timePerOutputTokenNanos();
        }
        Arrays.sort(ttft);
        Arrays.sort(tpot);
        System.out.printf("open loop at %.0f %% of capacity (%.2f req/s, %d requests): TTFT p50 %.0f ms, p99 %.0f ms;"
                + " TPOT p50 %.1f ms, p99 %.1f ms%n", load * 100, rate, n, pct(ttft, 0.5), pct(ttft, 0.99),
                pct(tpot, 0.5), pct(tpot, 0.99));
    }

    private static double pct(long[] sorted, double p) {
        return sorted[(int) Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] / 1e6;
    }

    private static Path lora(Path dir, int hidden, int heads, int kvHeads, int layers, long seed) throws Exception {
        LoraConfig c = LoraConfig.builder().r(16).loraAlpha(32).targetModules("q_proj", "k_proj", "v_proj", "o_proj")
                .taskType(TaskType.CAUSAL_LM).build();
        PeftConfigs.write(c, dir);
        Map<String, Tensor> t = new LinkedHashMap<>();
        torch.manual_seed(seed);
        long kvOut = (long) kvHeads * (hidden / heads);
        try (TensorOptions o = new TensorOptions(ScalarType.Float)) {
            for (int l = 0; l < layers; l++) {
                for (String p : new String[] {"q_proj", "k_proj", "v_proj", "o_proj"}) {
                    long out = p.equals("k_proj") || p.equals("v_proj") ? kvOut : hidden;
                    String m = "base_model.model.model.layers." + l + ".self_attn." + p;
                    t.put(m + ".lora_A.weight", torch.randn(new long[] {16, hidden}, o).mul(new Scalar(0.02)));
                    t.put(m + ".lora_B.weight", torch.randn(new long[] {out, 16}, o).mul(new Scalar(0.02)));
                }
            }
        }
        SafetensorsFile.write(dir.resolve("adapter_model.safetensors"), t);
        return dir;
    }
}
