package dev.peft4j.bench;

import dev.peft4j.models.AutoModel;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import dev.peft4j.serve.EngineStats;
import dev.peft4j.serve.ServeRequest;
import dev.peft4j.serve.ServingEngine;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Native memory of a long-running {@link ServingEngine}: {@code requests} requests (prompt 1-32 tokens, 1-16 new
 * tokens, greedy or seeded sampling, every few one cancelled) over {@code adapters} registered adapters of which
 * {@code resident} stay loaded (so adapters are loaded and evicted all along), at most {@code concurrent} in flight.
 * Prints the process's RssAnon (from {@code /proc/self/status}) every {@code every} requests, and its growth from the
 * first report (after the warm-up) to the last.
 *
 * <pre>
 * java -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp benchmarks/target/benchmarks.jar dev.peft4j.bench.ServeRss \
 *     [requests=10000] [every=1000] [hidden=256] [layers=4] [adapters=12] [resident=4] [concurrent=16]
 * </pre>
 */
public final class ServeRss {
    private ServeRss() {}

    public static void main(String[] args) throws Exception {
        String[] defaults = {"requests", "10000", "every", "1000", "hidden", "256", "layers", "4", "adapters", "12",
            "resident", "4", "concurrent", "16", "threads", "1"};
        Map<String, String> a = BenchArgs.parse(args, defaults);
        int requests = Integer.parseInt(a.get("requests"));
        int every = Integer.parseInt(a.get("every"));
        int hidden = Integer.parseInt(a.get("hidden"));
        int layers = Integer.parseInt(a.get("layers"));
        int adapters = Integer.parseInt(a.get("adapters"));
        int resident = Integer.parseInt(a.get("resident"));
        int concurrent = Integer.parseInt(a.get("concurrent"));
        int threads = Integer.parseInt(a.get("threads"));
        torch.set_num_threads(threads);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(threads);
        System.out.println("config: " + a);
        int heads = Math.max(1, hidden / 64);
        int kvHeads = Math.max(1, heads / 2);
        String cfg = String.format("{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
                + " \"vocab_size\": 4096, \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d,"
                + " \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"rms_norm_eps\": 1e-5,"
                + " \"tie_word_embeddings\": false}", hidden, hidden * 11 / 4, layers, heads, kvHeads);
        Path tmp = Files.createTempDirectory("peft4j-serve-rss");
        Random rnd = new Random(7);
        long first = -1;
        long last = -1;
        try (PreTrainedModel model = AutoModel.fromConfig(ModelConfig.parse(cfg), Init.cpu(ScalarType.Float));
                ServingEngine engine = ServingEngine.builder(model).maxConcurrent(concurrent).maxLength(48)
                        .maxResidentAdapters(resident).maxWaiting(4 * concurrent).threads(threads).build()) {
            Init.normal(model, 0.02, 1234);
            for (int i = 0; i < adapters; i++) {
                engine.register("a" + i, ServeThroughput.lora(tmp.resolve("a" + i), hidden, heads, kvHeads, layers,
                        i));
            }
            ArrayDeque<CompletableFuture<?>> inFlight = new ArrayDeque<>();
            long t0 = System.nanoTime();
            for (int r = 1; r <= requests; r++) {
                while (inFlight.size() >= concurrent) {
                    try {
                        inFlight.poll().get();
                    } catch (java.util.concurrent.ExecutionException | java.util.concurrent.CancellationException e) {
                        // the cancelled ones
                    }
                }
                long[] prompt = new long[1 + rnd.nextInt(32)];
                for (int k = 0; k < prompt.length; k++) {
                    prompt[k] = rnd.nextInt(4096);
                }
                ServeRequest.Builder b = ServeRequest.builder().promptIds(prompt).maxNewTokens(1 + rnd.nextInt(16))
                        .ignoreEos(true);
                int pick = rnd.nextInt(adapters + 1);
                if (pick < adapters) {
                    b.adapter("a" + pick);
                }
                if (r % 3 == 0) {
                    b.sampling(0.8, 40, 0.95, r);
                }
                var h = engine.submit(b.build());
                if (r % 50 == 0) {
                    h.cancel();
                }
                inFlight.add(h.result());
                if (r % every == 0) {
                    for (CompletableFuture<?> f : inFlight) {
                        try {
                            f.get();
                        } catch (java.util.concurrent.ExecutionException
                                | java.util.concurrent.CancellationException e) {
                            // the cancelled ones
                        }
                    }
                    inFlight.clear();
                    System.gc();
                    long rss = rssAnonKiB();
                    if (first < 0) {
                        first = rss;
                    }
                    last = rss;
                    EngineStats s = engine.stats();
                    System.out.printf("after %6d requests (%5.0f s): RssAnon %,9d KiB; completed %d, cancelled %d,"
                            + " failed %d, adapter loads %d, evictions %d%n", r, (System.nanoTime() - t0) / 1e9, rss,
                            s.completed(), s.cancelled(), s.failed(), s.adapterLoads(), s.adapterEvictions());
                }
            }
        }
        System.out.printf("RssAnon growth from the first report to the last: %,d KiB (%.1f MiB)%n", last - first,
                (last - first) / 1024.0);
    }

    static long rssAnonKiB() throws java.io.IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("RssAnon:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        }
        throw new IllegalStateException("no RssAnon in /proc/self/status");
    }
}
