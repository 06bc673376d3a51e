package dev.peft4j.cli;

import dev.peft4j.models.CausalLM;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.serve.CompletionsServer;
import dev.peft4j.serve.ServingEngine;
import dev.peft4j.tokenizers.Tokenizer;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code peft4j serve}: an OpenAI-compatible completions server over a {@link ServingEngine}: the model and any number
 * of LoRA adapters, requests of different adapters batched together. Runs until the process is stopped.
 */
@Command(name = "serve", header = "Serve a model and its LoRA adapters over OpenAI's completions API (HTTP).",
        description =
            "Starts an HTTP server: POST /v1/completions ('model' = an adapter's name, or the base model's name "
            + "for none; 'prompt' as text, with the model folder's tokenizer.json (with --gguf: --model's), or "
            + "token ids; max_tokens, temperature (0 = greedy), top_p, top_k, seed, stop, stop_token_ids, "
            + "ignore_eos, stream), GET /v1/models, GET /health, GET /metrics. Requests of different adapters run "
            + "in one batch (continuous batching). Listens on 127.0.0.1 unless --host says otherwise; runs until stopped.")
final class ServeCommand extends CliCommand {
    /** Servers running in this JVM by port, each stopped by counting its latch down (tests, embedding). */
    static final Map<Integer, CountDownLatch> RUNNING = new ConcurrentHashMap<>();

    @Mixin
    ModelOptions model;

    @Mixin
    AdapterOptions adapterOptions;

    @Option(names = "--host", paramLabel = "<addr>", defaultValue = "127.0.0.1",
            description = "Address to listen on (default ${DEFAULT-VALUE}, this machine only; 0.0.0.0 opens it).")
    String host;

    @Option(names = "--port", paramLabel = "N", defaultValue = "8000",
            description = "Port (default ${DEFAULT-VALUE}; 0 picks a free one, printed at start).")
    int port;

    @Option(names = "--served-model-name", paramLabel = "<name>", description =
            "The name clients give as 'model' for the base model (default: the model folder's name; with --gguf, "
            + "the file's name without .gguf).")
    String servedName;

    @Option(names = "--max-concurrent", paramLabel = "N", defaultValue = "16",
            description = "Requests decoded together: slots of the KV cache (default ${DEFAULT-VALUE}).")
    int maxConcurrent;

    @Option(names = "--max-length", paramLabel = "N", defaultValue = "2048",
            description = "Prompt + new tokens per request, at most (default ${DEFAULT-VALUE}).")
    int maxLength;

    @Option(names = "--max-waiting", paramLabel = "N", defaultValue = "1024",
            description = "Requests waiting for a slot; more are answered 429 (default ${DEFAULT-VALUE}).")
    int maxWaiting;

    @Option(names = "--max-resident-adapters", paramLabel = "N", defaultValue = "16",
            description = "Adapters loaded at once, least recently used unloaded first (default ${DEFAULT-VALUE}).")
    int maxResident;

    @Option(names = "--request-timeout", paramLabel = "SECONDS",
            description = "Fail a request still running after this long (HTTP 504); default: none.")
    Double timeoutSeconds;

    @Override
    public Integer call() throws IOException, InterruptedException {
        if (adapterOptions.active != null || adapterOptions.disable || adapterOptions.merge) {
            throw usage("--active, --disable and --merge do not apply to serve: each request names its adapter");
        }
        if (port < 0 || port > 65535) {
            throw usage("--port must be in [0, 65535], got " + port);
        }
        if (timeoutSeconds != null && !(timeoutSeconds > 0)) {
            throw usage("--request-timeout must be > 0, got " + timeoutSeconds);
        }
        Map<String, Path> folders;
        try {
            folders = adapterOptions.parse();
        } catch (IllegalArgumentException e) {
            throw usage(e.getMessage());
        }
        // with --gguf, --model is only the tokenizer's folder, and optional: prompts as token ids without it
        Path dir = model.gguf() == null || model.hasModel() ? model.dir() : null;
        String baseName = servedName != null ? servedName
                : model.gguf() != null ? ggufName(model.gguf()) : dir.getFileName().toString();
        if (folders.containsKey(baseName)) {
            throw usage("the adapter name '" + baseName + "' is the base model's: rename the adapter, or give "
                    + "--served-model-name");
        }
        try (PreTrainedModel m = model.load();
                Tokenizer tokenizer = dir != null && Tokenizer.existsIn(dir)
                        ? Tokenizer.fromFile(dir.resolve(Tokenizer.FILE_NAME)) : null) {
            if (!(m instanceof CausalLM)) {
                throw new IllegalArgumentException(model.source() + ": " + m.typeName() + " has no language-model "
                        + "head: serve "
                        + "needs a causal LM");
            }
            ServingEngine.Builder b = ServingEngine.builder(m).tokenizer(tokenizer).maxConcurrent(maxConcurrent)
                    .maxLength(maxLength).maxWaiting(maxWaiting).maxResidentAdapters(maxResident)
                    .threads(org.bytedeco.pytorch.global.torch.get_num_threads());
            if (timeoutSeconds != null) {
                b.defaultTimeout(Duration.ofMillis(Math.round(timeoutSeconds * 1000)));
            }
            try (ServingEngine engine = b.build()) {
                for (Map.Entry<String, Path> e : folders.entrySet()) {
                    // a repo id fetched with --token, --cache-dir and --adapter-revision, as generate loads it
                    engine.register(e.getKey(), e.getValue().toString(),
                            model.adapterOptions(e.getKey(), adapterOptions.revision));
                }
                CountDownLatch stop = new CountDownLatch(1);
                Thread hook = new Thread(stop::countDown, "peft4j-serve-shutdown");
                Runtime.getRuntime().addShutdownHook(hook);
                try (CompletionsServer server = new CompletionsServer(engine, baseName, host, port,
                        Math.max(16, maxConcurrent * 2))) {
                    RUNNING.put(server.port(), stop);
                    out().printf("peft4j serve: %s with %d adapter(s) on http://%s:%d/v1 (model '%s'%s)%n",
                            model.source(), folders.size(), host, server.port(), baseName, tokenizer == null
                                    ? "; no tokenizer.json: prompts as token ids" : "");
                    out().flush();
                    stop.await();
                    RUNNING.remove(server.port());
                } finally {
                    try {
                        Runtime.getRuntime().removeShutdownHook(hook);
                    } catch (IllegalStateException shuttingDown) {
                        // the hook is running: nothing to remove
                    }
                }
            }
        }
        return 0;
    }

    /** The base model's default name for a GGUF file: its file name without {@code .gguf}. */
    static String ggufName(Path file) {
        String name = file.getFileName().toString();
        return name.toLowerCase(java.util.Locale.ROOT).endsWith(".gguf") && name.length() > 5
                ? name.substring(0, name.length() - 5) : name;
    }
}
