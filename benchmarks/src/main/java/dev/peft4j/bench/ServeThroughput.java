package dev.peft4j.bench;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.config.TaskType;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.Generation;
import dev.peft4j.models.KVCache;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import dev.peft4j.serve.EngineStats;
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
 * engine's measured capacity. Each run reports its prefill phase (prompt tokens over the time to the first new tokens)
 * and its decode phase (the other new tokens over the time spent in decode steps: for the engine its own counters,
 * {@link EngineStats#decodeNanos}) apart, and tokens per second end to end (every new token over the wall time).
 *
 * <pre>
 * java -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp benchmarks/target/benchmarks.jar dev.peft4j.bench.ServeThroughput \
 *     [dtype=Float|BFloat16] [layers=22] [hidden=2048] [intermediate=5632] [requests=16] [adapters=8] \
 *     [prompt=32] [tokens=32] [threads=2] [prefill=128] [rounds=1] [openloop=true]
 * </pre>
 */
public final class ServeThroughput {
    private ServeThroughput() {}

    public static void main(String[] args) throws Exception {
        String[] defaults = {"dtype", "Float", "layers", "22", "hidden", "2048", "intermediate", "5632",
            "requests", "16", "adapters", "8", "prompt", "32", "tokens", "32", "threads", "2", "prefill", "128",
            "rounds", "1", "openloop", "true"};
        Map<String, String> a = BenchArgs.parse(args, defaults);
        ScalarType dt = ScalarType.valueOf(a.get("dtype"));
        int layers = Integer.parseInt(a.get("layers"));
        int hidden = Integer.parseInt(a.get("hidden"));
        int inter = Integer.parseInt(a.get("intermediate"));
        int requests = Integer.parseInt(a.get("requests"));
        int adapters = Integer.parseInt(a.get("adapters"));
        int promptLen = Integer.parseInt(a.get("prompt"));
        int tokens = Integer.parseInt(a.get("tokens"));
        int threads = Integer.parseInt(a.get("threads"));
        int prefillChunk = Integer.parseInt(a.get("prefill"));
        int rounds = Integer.parseInt(a.get("rounds"));
        boolean openLoop = Boolean.parseBoolean(a.get("openloop"));
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
            sequential(model, prompts.subList(0, Math.min(2, requests)), 1, Math.min(2, tokens)); // warm-up
            Phases seq = sequential(model, prompts, adapters, tokens);
            seq.print("one at a time (setAdapter + generate)");
            for (int i = 0; i < adapters; i++) {
                model.deleteAdapter("a" + i);
            }
            try (ServingEngine engine = ServingEngine.builder(model).maxConcurrent(requests)
                    .maxLength(promptLen + tokens).maxResidentAdapters(adapters).maxWaiting(4096).threads(threads)
                    .prefillChunk(prefillChunk).build()) {
                for (int i = 0; i < adapters; i++) {
                    engine.register("a" + i, folders.get(i));
                }
                burst(engine, prompts, adapters, Math.min(2, tokens)); // warm-up: loads every adapter
                Phases mixed = new Phases();
                Phases one = new Phases();
                for (int round = 0; round < rounds; round++) { // alternated, so that drifts of the machine hit both
                    mixed.add(burst(engine, prompts, adapters, tokens));
                    one.add(burst(engine, prompts, 1, tokens));
                }
                mixed.print("engine, " + requests + " concurrent over " + adapters + " adapters");
                one.print("engine, " + requests + " concurrent on 1 adapter");
                System.out.printf("decode: mixed / one at a time = %.2f (target >= 8); mixed / one adapter = %.3f"
                        + " (target >= 0.9)%n", mixed.decodeRate() / seq.decodeRate(),
                        mixed.decodeRate() / one.decodeRate());
                System.out.printf("end to end (prefill included): mixed / one at a time = %.2f; mixed / one adapter"
                        + " = %.3f%n", mixed.wallRate() / seq.wallRate(), mixed.wallRate() / one.wallRate());
                if (openLoop) {
                    double capacity = mixed.wallRate() / tokens; // requests per second
                    for (double load : new double[] {0.5, 0.9}) {
                        openLoop(engine, prompts, adapters, tokens, capacity * load, load);
                    }
                }
            }
        }
    }

    /** Tokens and times of a run, split in its prefill phase (to each request's first token) and its decode phase. */
    static final class Phases {
        long tokens;
        long wallNanos;
        long prefillTokens;
        long prefillNanos;
        long decodeTokens;
        long decodeNanos;

        void add(Phases o) {
            tokens += o.tokens;
            wallNanos += o.wallNanos;
            prefillTokens += o.prefillTokens;
            prefillNanos += o.prefillNanos;
            decodeTokens += o.decodeTokens;
            decodeNanos += o.decodeNanos;
        }

        double wallRate() {
            return tokens * 1e9 / wallNanos;
        }

        double decodeRate() {
            return decodeTokens * 1e9 / decodeNanos;
        }

        void print(String what) {
            System.out.printf("%s: %d tokens in %.2f s = %.2f tok/s end to end; prefill %d prompt tokens in %.2f s"
                    + " = %.1f tok/s; decode %d tokens in %.2f s = %.2f tok/s%n", what, tokens, wallNanos / 1e9,
                    wallRate(), prefillTokens, prefillNanos / 1e9, prefillTokens * 1e9 / prefillNanos, decodeTokens,
                    decodeNanos / 1e9, decodeRate());
        }
    }

    /**
     * Each request alone: {@code setAdapter} + {@code generate}. Its prefill phase runs from the call to the second
     * forward (the prompt's forward and the pick of the first token), its decode phase from there to the return.
     */
    private static Phases sequential(PreTrainedModel model, List<long[]> prompts, int adapters, int tokens) {
        Phases p = new Phases();
        TimedLM lm = new TimedLM((CausalLM) model);
        for (int r = 0; r < prompts.size(); r++) {
            model.setAdapter("a" + (r % adapters));
            try (PointerScope s = new PointerScope()) {
                long[] ids = prompts.get(r);
                lm.forwards = 0;
                long t0 = System.nanoTime();
                Tensor out = Generation.generate(lm, Tensor.create(ids, 1, ids.length), null,
                        Generation.Options.greedy(tokens));
                long t1 = System.nanoTime();
                long produced = out.size(1) - ids.length;
                long decodeStart = lm.forwards >= 2 ? lm.secondForwardAt : t1;
                p.tokens += produced;
                p.wallNanos += t1 - t0;
                p.prefillTokens += ids.length;
                p.prefillNanos += decodeStart - t0;
                p.decodeTokens += produced - 1;
                p.decodeNanos += t1 - decodeStart;
            }
        }
        return p;
    }

    /** A causal LM that notes when its second forward (the first decode step of a generate call) starts. */
    private static final class TimedLM implements CausalLM {
        private final CausalLM lm;
        int forwards;
        long secondForwardAt;

        TimedLM(CausalLM lm) {
            this.lm = lm;
        }

        @Override
        public Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
            if (++forwards == 2) {
                secondForwardAt = System.nanoTime();
            }
            return lm.forward(inputIds, attentionMask, positionIds, cache);
        }

        @Override
        public KVCache newCache() {
            return lm.newCache();
        }

        @Override
        public ModelConfig config() {
            return lm.config();
        }

        @Override
        public void close() {
        }
    }

    /** All requests at once; the engine's own prefill and decode times over the burst. */
    private static Phases burst(ServingEngine engine, List<long[]> prompts, int adapters, int tokens)
            throws Exception {
        EngineStats before = engine.stats();
        long t0 = System.nanoTime();
        List<CompletableFuture<ServeResult>> fs = new ArrayList<>();
        for (int r = 0; r < prompts.size(); r++) {
            fs.add(engine.submit(ServeRequest.builder().adapter("a" + (r % adapters)).promptIds(prompts.get(r))
                    .maxNewTokens(tokens).ignoreEos(true).build()).result());
        }
        Phases p = new Phases();
        for (CompletableFuture<ServeResult> f : fs) {
            p.tokens += f.get().tokenIds().length;
        }
        p.wallNanos = System.nanoTime() - t0;
        EngineStats after = engine.stats();
        p.prefillTokens = after.prefillTokens() - before.prefillTokens();
        p.prefillNanos = after.prefillNanos() - before.prefillNanos();
        p.decodeTokens = after.decodeTokens() - before.decodeTokens();
        p.decodeNanos = after.decodeNanos() - before.decodeNanos();
        return p;
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

    static Path lora(Path dir, int hidden, int heads, int kvHeads, int layers, long seed) throws Exception {
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
