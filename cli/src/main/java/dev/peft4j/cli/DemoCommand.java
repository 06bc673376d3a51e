package dev.peft4j.cli;

import dev.peft4j.config.IA3Config;
import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.config.TaskType;
import dev.peft4j.kernels.FusedLoraLinear;
import dev.peft4j.kernels.Kernels;
import dev.peft4j.models.Generation;
import dev.peft4j.models.KVCache;
import dev.peft4j.models.LlamaForCausalLM;
import dev.peft4j.nn.Linear;
import dev.peft4j.serve.ServeRequest;
import dev.peft4j.serve.ServeResult;
import dev.peft4j.serve.ServingEngine;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.lora.LoraLayer;
import dev.peft4j.tuners.lora.LoraMath;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code peft4j demo}: no arguments, no network. A small Llama built in code with seeded random weights gets three
 * seeded adapters; the demo shows each adapter's output for the same prompt, a mixed batch, merge/unmerge, the
 * adapter saved as a PEFT folder, and measured timings. Every number printed is computed or measured in this run.
 */
@Command(name = "demo", header = "Adapters on a small built-in Llama with random weights: switch, mix, merge, save, time.",
        description =
            "Build a small Llama-family model from a built-in config with seeded random weights (no "
            + "download), attach seeded adapters, and show: each adapter's output for the same prompt ids "
            + "(setAdapter), a mixed batch with a different adapter per row, merge then unmerge, the adapter "
            + "saved as a PEFT folder, measured timings (decode step per token; one adapted layer, fused "
            + "against composed), and serving: requests over several adapters served one at a time, then at once "
            + "by the serving engine (their tokens, whether both agree, the throughput of each). The weights are "
            + "random: the tokens mean nothing, the comparisons and timings are real.")
final class DemoCommand extends CliCommand {
    @Option(names = "--seed", paramLabel = "S", defaultValue = "0",
            description = "Seed of the model's and the adapters' random weights (default ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--out", paramLabel = "<dir>",
            description = "Where to save the adapter as a PEFT folder (default: a new temporary folder).")
    Path out;

    @Option(names = "--save-model", description =
            "Also write the base model (its random weights) as a Hugging Face folder <out>/model, to try the "
            + "other commands on it with the saved adapter.")
    boolean saveModel;

    @Option(names = "--iterations", paramLabel = "N", defaultValue = "20",
            description = "Timed runs per timing (default ${DEFAULT-VALUE}).")
    int iterations;

    @Option(names = "--threads", paramLabel = "N", defaultValue = "1", description =
            "libtorch and OpenBLAS threads (default ${DEFAULT-VALUE}: the model is small, and one thread "
            + "keeps its timings steady on a shared machine).")
    int threads;

    @Option(names = "--new-tokens", paramLabel = "N", defaultValue = "8",
            description = "Tokens generated per adapter (default ${DEFAULT-VALUE}).")
    int newTokens;

    private static final long[] PROMPT = {1, 306, 2966, 304, 1560, 263, 3535};

    @Override
    public Integer call() throws IOException {
        if (iterations < 1 || newTokens < 1 || threads < 1) {
            throw usage("--iterations, --new-tokens and --threads must be ≥ 1");
        }
        Threads.pin(threads);
        PrintWriter o = out();
        long t0 = System.nanoTime();
        try (LlamaForCausalLM m = BuiltinLlama.create(ScalarType.Float, seed); InferenceMode im = new InferenceMode();
                PointerScope scope = new PointerScope()) {
            long params = m.namedParameters().values().stream().mapToLong(Tensor::numel).sum();
            o.println("peft4j demo: the model and adapters have seeded RANDOM weights (their tokens mean nothing);");
            o.println("every comparison is computed and every time measured in this run.");
            o.printf("model: built-in %s, float32, %,d parameters, seed %d%n", BuiltinLlama.describe(), params, seed);
            Path dir = out != null ? out : Files.createTempDirectory("peft4j-demo-");
            if (saveModel) {
                m.savePretrained(dir.resolve("model"));
                o.printf("       saved as a Hugging Face folder: %s%n", dir.resolve("model"));
            }

            // ---- three adapters: two LoRA now, IA3 after the mixed batch
            m.peftAdapters().seed(seed);
            LoraConfig a = LoraConfig.builder().r(8).loraAlpha(16).targetModules("q_proj", "v_proj")
                    .initLoraWeights(InitLoraWeights.of(false)).taskType(TaskType.CAUSAL_LM).build();
            LoraConfig b = LoraConfig.builder().r(4).loraAlpha(8)
                    .targetModules("q_proj", "k_proj", "v_proj", "o_proj")
                    .initLoraWeights(InitLoraWeights.of(false)).taskType(TaskType.CAUSAL_LM).build();
            // on modules no LoRA adapter wraps: like PEFT, a layer holds adapters of one method only
            IA3Config c = IA3Config.builder().targetModules("up_proj", "down_proj")
                    .feedforwardModules("down_proj").initIa3Weights(false).taskType(TaskType.CAUSAL_LM).build();
            List<String> names = new ArrayList<>();
            o.println("adapters (seeded random init, not trained):");
            addAdapter(m, o, "lora_a", a, names);
            addAdapter(m, o, "lora_b", b, names);
            int w = 8;

            // ---- 1. each adapter on the same prompt
            Tensor prompt = TokenIds.longs(PROMPT, 1, PROMPT.length);
            o.printf("%n1. the same prompt through each adapter (setAdapter), greedy, %d new tokens%n", newTokens);
            o.println("   prompt ids: " + TokenIds.join(PROMPT));
            m.disableAdapters();
            Tensor baseLogits = m.forward(prompt, null, null, null);
            long[] baseIds = TokenIds.row(Generation.generate(m, prompt, null, Generation.Options.greedy(newTokens)), 0);
            m.enableAdapters();
            o.printf("   %-" + w + "s  %s%n", "__base__", newIds(baseIds));
            List<Tensor> single = new ArrayList<>();
            for (String n : names) {
                single.add(showAdapter(m, o, n, prompt, baseLogits, w));
            }

            // ---- 2. mixed batch
            List<String> rows = new ArrayList<>();
            rows.add(LoraMath.BASE_ADAPTER_NAME);
            rows.addAll(names);
            o.printf("%n2. one forward of a %d-row batch, a different adapter per row (adapter_names)%n", rows.size());
            Tensor batch = prompt.expand(new long[] {rows.size(), PROMPT.length}).contiguous();
            Tensor mixed = m.withAdapterNames(rows, () -> m.forward(batch, null, null, null));
            for (int r = 0; r < rows.size(); r++) {
                Tensor alone = r == 0 ? baseLogits : single.get(r - 1);
                o.printf("   row %d %-" + w + "s  max |row - that adapter alone| %.3g%n", r, rows.get(r),
                        maxDiff(mixed.narrow(0, r, 1), alone));
            }

            // ---- 3. a third adapter, IA3
            o.printf("%n3. a third adapter, IA3, attached now (a mixed batch is LoRA-only, as in PEFT: a model holding%n"
                    + "   IA3 layers refuses adapter_names, so section 2 ran before it was attached)%n");
            int before = names.size();
            addAdapter(m, o, "ia3", c, names);
            if (names.size() > before) {
                showAdapter(m, o, "ia3", prompt, baseLogits, w);
            }

            // ---- 4. merge, unmerge
            String first = names.get(0);
            m.setAdapter(first);
            o.printf("%n4. merge %s into the base weights, then unmerge%n", first);
            m.mergeAdapter();
            Tensor merged = m.forward(prompt, null, null, null);
            m.unmergeAdapter();
            Tensor unmerged = m.forward(prompt, null, null, null);
            o.printf("   merged   vs adapter alone: max |diff| %.3g%n", maxDiff(merged, single.get(0)));
            o.printf("   unmerged vs adapter alone: max |diff| %.3g%n", maxDiff(unmerged, single.get(0)));

            // ---- 5. save
            Path saved = dir.resolve(first);
            m.saveAdapter(saved, first);
            o.printf("%n5. %s saved as a PEFT adapter folder: %s%n", first, saved);
            try (Stream<Path> files = Files.list(saved)) {
                for (Path f : files.sorted().toList()) {
                    o.printf("   %-28s %,10d bytes%n", f.getFileName(), Files.size(f));
                }
            }
            m.loadAdapter(saved, first + "_reloaded");
            m.setAdapter(first + "_reloaded");
            o.printf("   loaded back as %s_reloaded: max |logits - %s| %.3g%n", first,  first,
                    maxDiff(m.forward(prompt, null, null, null), single.get(0)));
            m.deleteAdapter(first + "_reloaded");

            // ---- 6. timings
            o.printf("%n6. timings, measured now (median of %d runs after a warm-up, %d %s)%n", iterations,
                    torch.get_num_threads(), torch.get_num_threads() == 1 ? "thread" : "threads");
            timings(m, o, first);

            // ---- 7. serving
            serving(o, dir.resolve("serving"));
        }
        o.printf("%ndemo done in %.1f s%n", (System.nanoTime() - t0) / 1e9);
        o.flush();
        return 0;
    }

    /**
     * Requests over several LoRA adapters and the base model, served one at a time ({@code setAdapter} +
     * {@code generate}) and then submitted at once to a {@link ServingEngine} (one decode forward for all running
     * requests, a different adapter per row): each request's tokens, whether both ways agree, and the throughput of
     * each (the second of two passes, the first warming up).
     */
    private void serving(PrintWriter o, Path dir) throws IOException {
        List<String> adapters = List.of("lora_a", "lora_b", "lora_c", "lora_d");
        List<String> rows = new ArrayList<>();
        List<long[]> prompts = new ArrayList<>();
        for (int i = 0; i < 10; i++) {
            rows.add(i % 5 == 4 ? null : adapters.get(i % 5 % 4));
            long[] p = PROMPT.clone();
            p[1] = 100 + 37L * i; // a different prompt per request
            prompts.add(p);
        }
        o.printf("%n7. serving: %d requests over %d LoRA adapters (r 8 on q, k, v, o) and the base model, one at a%n"
                + "   time (setAdapter + generate), then submitted at once to a ServingEngine (continuous batching:%n"
                + "   one forward per step for every running request, a different adapter per row)%n", rows.size(),
                adapters.size());
        List<long[]> alone = new ArrayList<>();
        double aloneSeconds = 0;
        try (LlamaForCausalLM ref = BuiltinLlama.create(ScalarType.Float, seed)) {
            ref.peftAdapters().seed(seed + 1);
            for (String a : adapters) {
                ref.addAdapter(LoraConfig.builder().r(8).loraAlpha(16).targetModules("q_proj", "k_proj", "v_proj",
                        "o_proj").initLoraWeights(InitLoraWeights.of(false)).taskType(TaskType.CAUSAL_LM).build(), a);
                ref.saveAdapter(dir.resolve(a), a);
            }
            for (int pass = 0; pass < 2; pass++) {
                alone.clear();
                long t = System.nanoTime();
                for (int i = 0; i < rows.size(); i++) {
                    if (rows.get(i) == null) {
                        ref.disableAdapters();
                    } else {
                        ref.enableAdapters();
                        ref.setAdapter(rows.get(i));
                    }
                    try (PointerScope s = new PointerScope()) {
                        Tensor in = TokenIds.longs(prompts.get(i), 1, PROMPT.length);
                        long[] all = TokenIds.row(Generation.generate(ref, in, null,
                                Generation.Options.greedy(newTokens)), 0);
                        alone.add(java.util.Arrays.copyOfRange(all, PROMPT.length, all.length));
                    }
                }
                aloneSeconds = (System.nanoTime() - t) / 1e9;
                ref.enableAdapters();
            }
        }
        List<ServeResult> served = new ArrayList<>();
        double servedSeconds = 0;
        try (LlamaForCausalLM base = BuiltinLlama.create(ScalarType.Float, seed);
                ServingEngine engine = ServingEngine.builder(base).maxConcurrent(rows.size())
                        .maxLength(PROMPT.length + newTokens).threads(torch.get_num_threads()).build()) {
            for (String a : adapters) {
                engine.register(a, dir.resolve(a));
            }
            for (int pass = 0; pass < 2; pass++) {
                served.clear();
                long t = System.nanoTime();
                List<java.util.concurrent.CompletableFuture<ServeResult>> futures = new ArrayList<>();
                for (int i = 0; i < rows.size(); i++) {
                    futures.add(engine.submit(ServeRequest.builder().adapter(rows.get(i)).promptIds(prompts.get(i))
                            .maxNewTokens(newTokens).ignoreEos(true).build()).result());
                }
                for (var f : futures) {
                    served.add(f.join());
                }
                servedSeconds = (System.nanoTime() - t) / 1e9;
            }
        }
        int agree = 0;
        for (int i = 0; i < rows.size(); i++) {
            boolean same = java.util.Arrays.equals(alone.get(i), served.get(i).tokenIds());
            agree += same ? 1 : 0;
            o.printf("   request %2d  %-8s  %s  %s%n", i, rows.get(i) == null ? "__base__" : rows.get(i),
                    TokenIds.join(served.get(i).tokenIds()), same ? "= one at a time" : "DIFFERS from one at a time");
        }
        long tokens = (long) rows.size() * newTokens;
        o.printf("   %d of %d requests: the same tokens both ways%n", agree, rows.size());
        o.printf("   one at a time: %d tokens in %.3f s = %.0f tokens/s; at once: %.3f s = %.0f tokens/s (%.1fx)%n",
                tokens, aloneSeconds, tokens / aloneSeconds, servedSeconds, tokens / servedSeconds,
                aloneSeconds / servedSeconds);
    }

    /** setAdapter(name), then its logits and greedy tokens for the prompt; returns the logits. */
    private Tensor showAdapter(LlamaForCausalLM m, PrintWriter o, String name, Tensor prompt, Tensor baseLogits, int w) {
        m.setAdapter(name);
        Tensor logits = m.forward(prompt, null, null, null);
        long[] ids = TokenIds.row(Generation.generate(m, prompt, null, Generation.Options.greedy(newTokens)), 0);
        o.printf("   %-" + w + "s  %s   (max |logits - base| %.3g)%n", name, newIds(ids), maxDiff(logits, baseLogits));
        return logits;
    }

    private void addAdapter(LlamaForCausalLM m, PrintWriter o, String name, PeftConfig config, List<String> names) {
        try {
            m.addAdapter(config, name);
        } catch (UnsupportedOperationException e) {
            o.printf("   %-7s %s on %s: not attached: %s%n", name, config.peftType().jsonValue(),
                    String.join(", ", ((dev.peft4j.config.ModuleSelector.Names) config.targetModules()).names()),
                    e.getMessage());
            return;
        }
        names.add(name);
        long n = 0;
        int layers = 0;
        for (BaseTunerLayer t : m.peftAdapters().tunerLayers().values()) {
            Map<String, Tensor> p = t.adapterParameters(name);
            if (!p.isEmpty()) {
                layers++;
                n += p.values().stream().mapToLong(Tensor::numel).sum();
            }
        }
        String what = config instanceof LoraConfig l ? " r=" + l.r() + " alpha=" + (int) l.loraAlpha() : "";
        o.printf("   %-7s %s%s on %s: %d layers wrapped, %,d parameters%n", name, config.peftType().jsonValue(), what,
                String.join(", ", ((dev.peft4j.config.ModuleSelector.Names) config.targetModules()).names()), layers, n);
    }

    private void timings(LlamaForCausalLM m, PrintWriter o, String adapter) {
        List<String[]> table = new ArrayList<>();
        // per token: one decode step at a fixed position
        try (KVCache cache = m.newCache()) {
            m.setAdapter(adapter);
            m.forward(TokenIds.longs(PROMPT, 1, PROMPT.length), null, null, cache);
            Tensor next = TokenIds.longs(new long[] {42}, 1, 1);
            Runnable step = () -> {
                try (PointerScope s = new PointerScope()) {
                    m.forward(next, null, null, cache);
                    cache.truncate(PROMPT.length);
                }
            };
            // base, fused and composed alternate step by step (the switches themselves untimed), so that load
            // changing meanwhile affects all three alike
            long[] baseNs = new long[iterations];
            long[] fusedNs = new long[iterations];
            long[] composedNs = new long[iterations];
            for (int i = -10; i < iterations; i++) {
                m.disableAdapters();
                long t0 = System.nanoTime();
                step.run();
                long t1 = System.nanoTime();
                m.enableAdapters();
                long t2 = System.nanoTime();
                step.run();
                long t3 = System.nanoTime();
                long t5 = composed(() -> {
                    long t4 = System.nanoTime();
                    step.run();
                    return System.nanoTime() - t4;
                });
                if (i >= 0) {
                    baseNs[i] = t1 - t0;
                    fusedNs[i] = t3 - t2;
                    composedNs[i] = t5;
                }
            }
            double base = Timing.median(baseNs);
            double fused = Timing.median(fusedNs);
            double composed = Timing.median(composedNs);
            m.mergeAdapter();
            double merged = Timing.medianNanos(3, iterations, step);
            m.unmergeAdapter();
            table.add(row("per token: decode step, base model", base, base));
            table.add(row("per token: decode step, " + adapter + " active (fused native kernels)", fused, base));
            table.add(row("per token: decode step, " + adapter + " active (LoRA composed per layer)", composed, base));
            table.add(row("per token: decode step, " + adapter + " merged into the weights", merged, base));
        }
        // per layer: one adapted q_proj, one row
        String name = "model.layers.0.self_attn.q_proj";
        LoraLayer layer = (LoraLayer) m.peftAdapters().tunerLayers().get(name);
        Linear baseLayer = (Linear) layer.baseLayer();
        Map<String, Tensor> p = layer.adapterParameters(adapter);
        try (PointerScope s = new PointerScope(); TensorOptions fo = new TensorOptions(ScalarType.Float);
                FusedLoraLinear fused = new FusedLoraLinear(baseLayer.weight(), baseLayer.bias())) {
            fused.setAdapters(List.of(new FusedLoraLinear.Adapter(p.get("lora_A." + adapter + ".weight"),
                    p.get("lora_B." + adapter + ".weight"), (float) layer.scaling(adapter))));
            torch.manual_seed(seed);
            Tensor x = torch.randn(new long[] {1, layer.inFeatures()}, fo);
            double[] t = Timing.interleavedMedianNanos(5, Math.max(iterations, 50), () -> {
                try (PointerScope sc = new PointerScope()) {
                    baseLayer.forward(x);
                }
            }, () -> composed(() -> {
                try (PointerScope sc = new PointerScope()) {
                    return layer.forward(x).numel();
                }
            }), () -> {
                try (PointerScope sc = new PointerScope()) {
                    fused.forward(x);
                }
            });
            double d = maxDiff(fused.forward(x), composed(() -> layer.forward(x)));
            String shape = name + " " + layer.inFeatures() + "->" + layer.outFeatures() + ", 1 row";
            table.add(row("per layer: " + shape + ", base Linear", t[0], t[0]));
            table.add(row("per layer: " + shape + ", + " + adapter + " composed (LoraLayer)", t[1], t[0]));
            String[] f = row("per layer: " + shape + ", + " + adapter + " fused (native, "
                    + Kernels.activeIsa().name().toLowerCase() + ")", t[2], t[0]);
            f[2] += String.format("; %.2fx of composed, max |fused - composed| %.2g", t[2] / t[1], d);
            table.add(f);
        }
        int w = table.stream().mapToInt(r -> r[0].length()).max().orElse(4);
        for (String[] r : table) {
            o.printf("   %-" + w + "s  %10s  %s%n", r[0], r[1], r[2]);
        }
    }

    /** {@code body} on the composed libtorch ops (the adapted layers' kernels switched off meanwhile). */
    private static <T> T composed(java.util.function.Supplier<T> body) {
        boolean before = Kernels.fusedLayers();
        Kernels.setFusedLayers(false);
        try {
            return body.get();
        } finally {
            Kernels.setFusedLayers(before);
        }
    }

    private static String[] row(String what, double ns, double base) {
        return new String[] {what, BenchCommand.formatNanos(ns), String.format("%.2fx of base", ns / base)};
    }

    private String newIds(long[] all) {
        return "... " + TokenIds.join(java.util.Arrays.copyOfRange(all, PROMPT.length, all.length));
    }

    static double maxDiff(Tensor a, Tensor b) {
        return a.to(ScalarType.Float).sub(b.to(ScalarType.Float)).abs().max().item_double();
    }
}
