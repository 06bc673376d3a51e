package dev.peft4j.serve;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CancellationException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * An HTTP server on a {@link ServingEngine}, compatible with OpenAI's completions API as vLLM and LoRAX serve
 * adapters: {@code POST /v1/completions} ({@code model} names an adapter, or the base model's name for none; prompt
 * text or token ids; {@code max_tokens}, {@code temperature} (0 = greedy), {@code top_p}, {@code top_k},
 * {@code seed}, {@code stop}, {@code stop_token_ids}, {@code ignore_eos}, {@code stream} with server-sent events),
 * {@code GET /v1/models}, {@code GET /health} and {@code GET /metrics} (Prometheus text). Each choice carries its
 * {@code token_ids}. Errors are JSON ({@code {"error": {"message", "type", "param", "code"}}}) with a 4xx status
 * for the client's faults (404 unknown model, 400 bad parameter, 429 queue full) and never a stack trace.
 *
 * <p>Built on the JDK's {@code com.sun.net.httpserver}: no dependency, and enough for a loopback or internal service
 * (put a reverse proxy in front for TLS). Handlers run on a fixed pool of {@code handlerThreads}; a streaming request
 * holds one for its duration.
 */
public final class CompletionsServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(CompletionsServer.class);
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Set<String> UNSUPPORTED = Set.of("suffix", "echo", "logprobs", "best_of", "logit_bias",
            "presence_penalty", "frequency_penalty");

    private final ServingEngine engine;
    private final String baseModel;
    private final HttpServer http;
    private final ExecutorService handlers;
    private final long created = System.currentTimeMillis() / 1000;
    private final AtomicInteger inFlight = new AtomicInteger();

    /**
     * Binds {@code host:port} (port 0: any free port) and starts serving.
     *
     * @param baseModel the name under which clients ask for the base model (no adapter)
     */
    public CompletionsServer(ServingEngine engine, String baseModel, String host, int port, int handlerThreads)
            throws IOException {
        if (engine.isRegistered(baseModel)) {
            throw new IllegalArgumentException("an adapter is registered under the base model's name '" + baseModel
                    + "': rename one of them");
        }
        this.engine = engine;
        this.baseModel = baseModel;
        http = HttpServer.create(new InetSocketAddress(host, port), 0);
        handlers = Executors.newFixedThreadPool(handlerThreads, r -> {
            Thread t = new Thread(r, "peft4j-serve-http");
            t.setDaemon(true);
            return t;
        });
        http.setExecutor(handlers);
        http.createContext("/", this::handle);
        http.start();
    }

    /** The bound port. */
    public int port() {
        return http.getAddress().getPort();
    }

    /** Stops listening (waiting up to a second for exchanges in progress); the engine stays the caller's. */
    @Override
    public void close() {
        http.stop(1);
        handlers.shutdownNow();
    }

    private void handle(HttpExchange ex) throws IOException {
        try (ex) {
            String path = ex.getRequestURI().getPath();
            String method = ex.getRequestMethod();
            try {
                switch (path) {
                    case "/health" -> {
                        requireMethod(method, "GET");
                        sendJson(ex, 200, JSON.createObjectNode().put("status", "ok"));
                    }
                    case "/v1/models" -> {
                        requireMethod(method, "GET");
                        sendJson(ex, 200, models());
                    }
                    case "/metrics" -> {
                        requireMethod(method, "GET");
                        send(ex, 200, "text/plain; version=0.0.4", metrics().getBytes(StandardCharsets.UTF_8));
                    }
                    case "/v1/completions" -> {
                        requireMethod(method, "POST");
                        completions(ex);
                    }
                    default -> throw new ApiError(404, "NotFoundError", null, "no such endpoint: " + method + " "
                            + path + " (served: POST /v1/completions, GET /v1/models, /health, /metrics)");
                }
            } catch (ApiError e) {
                if (!ex.getResponseHeaders().containsKey("Content-Type")) {
                    sendError(ex, e);
                }
            } catch (IOException e) {
                LOG.debug("client connection: {}", e.toString());
            } catch (RuntimeException e) {
                LOG.warn("request {} {} failed", method, path, e);
                if (!ex.getResponseHeaders().containsKey("Content-Type")) {
                    sendError(ex, new ApiError(500, "InternalServerError", null, "internal error: " + e));
                }
            }
        }
    }

    private static void requireMethod(String method, String expected) {
        if (!method.equals(expected)) {
            throw new ApiError(405, "MethodNotAllowed", null, "use " + expected + ", not " + method);
        }
    }

    private ObjectNode models() {
        ObjectNode out = JSON.createObjectNode().put("object", "list");
        ArrayNode data = out.putArray("data");
        data.addObject().put("id", baseModel).put("object", "model").put("created", created).put("owned_by", "peft4j")
                .put("root", baseModel).putNull("parent");
        for (String a : new java.util.TreeSet<>(engine.adapters())) {
            data.addObject().put("id", a).put("object", "model").put("created", created).put("owned_by", "peft4j")
                    .put("root", a).put("parent", baseModel);
        }
        return out;
    }

    private String metrics() {
        EngineStats s = engine.stats();
        StringBuilder b = new StringBuilder();
        gauge(b, "peft4j_requests_running", "Requests holding a slot.", s.running());
        gauge(b, "peft4j_requests_waiting", "Requests waiting for a slot.", s.waiting());
        gauge(b, "peft4j_slots", "Slots of the KV cache.", s.slots());
        gauge(b, "peft4j_adapters_registered", "Adapters registered.", s.registeredAdapters());
        gauge(b, "peft4j_adapters_resident", "Adapters loaded in the model.", s.residentAdapters());
        counter(b, "peft4j_adapter_cache_hits_total", "Requests whose adapter was resident.", s.adapterHits());
        counter(b, "peft4j_adapter_cache_misses_total", "Requests whose adapter had to be loaded.", s.adapterMisses());
        counter(b, "peft4j_adapter_loads_total", "Adapter loads started.", s.adapterLoads());
        counter(b, "peft4j_adapter_evictions_total", "Adapters unloaded to make room.", s.adapterEvictions());
        counter(b, "peft4j_adapter_load_failures_total", "Adapter loads that failed.", s.adapterLoadFailures());
        counter(b, "peft4j_requests_completed_total", "Requests finished.", s.completed());
        counter(b, "peft4j_requests_failed_total", "Requests failed (timeouts included).", s.failed());
        counter(b, "peft4j_requests_cancelled_total", "Requests cancelled.", s.cancelled());
        counter(b, "peft4j_generated_tokens_total", "Tokens generated.", s.generatedTokens());
        gauge(b, "peft4j_tokens_per_second", "Tokens generated per second, last second.", s.tokensPerSecond());
        counter(b, "peft4j_prefill_tokens_total", "Prompt tokens run through the model.", s.prefillTokens());
        counter(b, "peft4j_prefill_seconds_total", "Time spent in prefill forwards.", s.prefillNanos() / 1e9);
        counter(b, "peft4j_decode_tokens_total", "Tokens produced by decode steps.", s.decodeTokens());
        counter(b, "peft4j_decode_seconds_total", "Time spent in decode steps.", s.decodeNanos() / 1e9);
        gauge(b, "peft4j_time_to_first_token_p50_seconds", "Median TTFT, latest requests.", s.ttftP50Millis() / 1e3);
        gauge(b, "peft4j_time_to_first_token_p99_seconds", "p99 TTFT, latest requests.", s.ttftP99Millis() / 1e3);
        gauge(b, "peft4j_time_per_output_token_p50_seconds", "Median TPOT, latest requests.", s.tpotP50Millis() / 1e3);
        gauge(b, "peft4j_time_per_output_token_p99_seconds", "p99 TPOT, latest requests.", s.tpotP99Millis() / 1e3);
        return b.toString();
    }

    private static void gauge(StringBuilder b, String name, String help, double v) {
        b.append("# HELP ").append(name).append(' ').append(help).append("\n# TYPE ").append(name).append(" gauge\n")
                .append(name).append(' ').append(v == Math.rint(v) ? Long.toString((long) v) : Double.toString(v))
                .append('\n');
    }

    private static void counter(StringBuilder b, String name, String help, long v) {
        b.append("# HELP ").append(name).append(' ').append(help).append("\n# TYPE ").append(name)
                .append(" counter\n").append(name).append(' ').append(v).append('\n');
    }

    private static void counter(StringBuilder b, String name, String help, double v) {
        b.append("# HELP ").append(name).append(' ').append(help).append("\n# TYPE ").append(name)
                .append(" counter\n").append(name).append(' ').append(v).append('\n');
    }

    // ------------------------------------------------------------------ completions

    private void completions(HttpExchange ex) throws IOException {
        JsonNode body;
        try (InputStream in = ex.getRequestBody()) {
            body = JSON.readTree(in);
        } catch (com.fasterxml.jackson.core.JacksonException e) {
            throw new ApiError(400, "BadRequestError", null, "the body is not valid JSON: " + e.getOriginalMessage());
        }
        if (body == null || !body.isObject()) {
            throw new ApiError(400, "BadRequestError", null, "the body must be a JSON object");
        }
        Parsed p = parse(body);
        ServeRequest.Builder rb = ServeRequest.builder().adapter(p.adapter).maxNewTokens(p.maxTokens)
                .stopStrings(p.stop).stopTokenIds(p.stopTokenIds).ignoreEos(p.ignoreEos);
        if (p.promptIds != null) {
            rb.promptIds(p.promptIds);
        } else {
            rb.promptText(p.promptText);
        }
        if (p.temperature == 0) {
            rb.greedy();
        } else {
            rb.sampling(p.temperature, p.topK, p.topP, p.seed);
        }
        String id = "cmpl-" + Long.toHexString(System.nanoTime()) + Integer.toHexString(inFlight.incrementAndGet());
        long createdAt = System.currentTimeMillis() / 1000;
        if (p.stream) {
            stream(ex, rb, p, id, createdAt);
            return;
        }
        ServeResult r = await(submit(rb));
        ObjectNode out = JSON.createObjectNode().put("id", id).put("object", "text_completion")
                .put("created", createdAt).put("model", p.model);
        ObjectNode choice = out.putArray("choices").addObject().put("index", 0)
                .put("text", r.text() == null ? "" : r.text());
        choice.putNull("logprobs");
        choice.put("finish_reason", r.finishReason().openAiName());
        ArrayNode ids = choice.putArray("token_ids");
        for (long t : r.tokenIds()) {
            ids.add(t);
        }
        out.putObject("usage").put("prompt_tokens", r.promptIds().length).put("completion_tokens", r.tokenIds().length)
                .put("total_tokens", r.promptIds().length + r.tokenIds().length);
        sendJson(ex, 200, out);
    }

    private RequestHandle submit(ServeRequest.Builder rb) {
        ServeRequest req;
        try {
            req = rb.build();
        } catch (IllegalArgumentException e) {
            throw new ApiError(400, "BadRequestError", null, e.getMessage());
        }
        try {
            return engine.submit(req);
        } catch (UnknownAdapterException e) {
            throw new ApiError(404, "NotFoundError", "model", "The model `" + e.adapter() + "` does not exist: "
                    + "ask for '" + baseModel + "' or a registered adapter (GET /v1/models)");
        } catch (QueueFullException e) {
            throw new ApiError(429, "RateLimitError", null, e.getMessage());
        } catch (IllegalArgumentException e) {
            throw new ApiError(400, "BadRequestError", null, e.getMessage());
        } catch (IllegalStateException e) {
            throw new ApiError(503, "ServiceUnavailableError", null, e.getMessage());
        }
    }

    private static ServeResult await(RequestHandle h) {
        try {
            return h.result().get();
        } catch (InterruptedException e) {
            h.cancel();
            Thread.currentThread().interrupt();
            throw new ApiError(503, "ServiceUnavailableError", null, "the server is shutting down");
        } catch (CancellationException e) {
            throw new ApiError(503, "ServiceUnavailableError", null, "the request was cancelled: " + e.getMessage());
        } catch (ExecutionException e) {
            throw failure(e.getCause());
        }
    }

    private static ApiError failure(Throwable cause) {
        if (cause instanceof TimeoutException) {
            return new ApiError(504, "TimeoutError", null, cause.getMessage());
        }
        if (cause instanceof CancellationException) {
            return new ApiError(503, "ServiceUnavailableError", null, "the request was cancelled: "
                    + cause.getMessage());
        }
        return new ApiError(500, "InternalServerError", null, "the request failed: " + cause.getMessage());
    }

    private void stream(HttpExchange ex, ServeRequest.Builder rb, Parsed p, String id, long createdAt)
            throws IOException {
        OutputStream out = ex.getResponseBody();
        java.util.concurrent.CountDownLatch headersSent = new java.util.concurrent.CountDownLatch(1);
        rb.listener((index, tokenId, delta) -> {
            headersSent.await(); // tokens may come before this thread sent the headers

            ObjectNode chunk = chunk(id, createdAt, p.model, delta == null ? "" : delta, null);
            ((ObjectNode) chunk.get("choices").get(0)).putArray("token_ids").add(tokenId);
            event(out, chunk);
        });
        RequestHandle h = submit(rb); // refusals are still plain JSON errors: no header sent yet
        ex.getResponseHeaders().set("Content-Type", "text/event-stream");
        ex.getResponseHeaders().set("Cache-Control", "no-cache");
        ex.sendResponseHeaders(200, 0);
        headersSent.countDown();
        try {
            ServeResult r = await(h);
            ObjectNode last = chunk(id, createdAt, p.model, "", r.finishReason().openAiName());
            ((ObjectNode) last.get("choices").get(0)).putArray("token_ids");
            event(out, last);
        } catch (ApiError e) {
            event(out, e.json());
        }
        out.write("data: [DONE]\n\n".getBytes(StandardCharsets.UTF_8));
        out.flush();
    }

    private static ObjectNode chunk(String id, long created, String model, String text, String finish) {
        ObjectNode c = JSON.createObjectNode().put("id", id).put("object", "text_completion").put("created", created)
                .put("model", model);
        ObjectNode choice = c.putArray("choices").addObject().put("index", 0).put("text", text);
        choice.putNull("logprobs");
        if (finish == null) {
            choice.putNull("finish_reason");
        } else {
            choice.put("finish_reason", finish);
        }
        return c;
    }

    private static void event(OutputStream out, JsonNode json) {
        try {
            out.write(("data: " + JSON.writeValueAsString(json) + "\n\n").getBytes(StandardCharsets.UTF_8));
            out.flush();
        } catch (IOException e) {
            // the client went away: failing the listener cancels the request
            throw new java.io.UncheckedIOException(e);
        }
    }

    /** The request's fields, checked. */
    private record Parsed(String model, String adapter, long[] promptIds, String promptText, int maxTokens,
            double temperature, double topP, int topK, long seed, List<String> stop, Set<Long> stopTokenIds,
            boolean ignoreEos, boolean stream) {}

    private Parsed parse(JsonNode b) {
        for (String f : UNSUPPORTED) {
            JsonNode v = b.get(f);
            if (v != null && !v.isNull() && !(v.isBoolean() && !v.asBoolean())
                    && !(v.isNumber() && v.asDouble() == (f.equals("best_of") ? 1 : 0))) {
                throw new ApiError(400, "BadRequestError", f, "'" + f + "' is not supported by this server");
            }
        }
        JsonNode n = b.get("n");
        if (n != null && !n.isNull() && !(n.canConvertToInt() && n.asInt() == 1)) {
            throw new ApiError(400, "BadRequestError", "n", "only n = 1 is supported, got " + n);
        }
        JsonNode m = b.get("model");
        if (m == null || !m.isTextual()) {
            throw new ApiError(400, "BadRequestError", "model", "'model' is required: '" + baseModel
                    + "' or an adapter's name");
        }
        String model = m.asText();
        String adapter = model.equals(baseModel) ? null : model;
        long[] ids = null;
        String text = null;
        JsonNode prompt = b.get("prompt");
        if (prompt != null && prompt.isArray() && prompt.size() == 1 && (prompt.get(0).isTextual()
                || prompt.get(0).isArray())) {
            prompt = prompt.get(0);
        }
        if (prompt == null || prompt.isNull()) {
            throw new ApiError(400, "BadRequestError", "prompt", "'prompt' is required: text or token ids");
        } else if (prompt.isTextual()) {
            text = prompt.asText();
        } else if (prompt.isArray() && prompt.size() > 0 && allIntegers(prompt)) {
            ids = new long[prompt.size()];
            for (int i = 0; i < ids.length; i++) {
                ids[i] = prompt.get(i).asLong();
            }
        } else {
            throw new ApiError(400, "BadRequestError", "prompt", "'prompt' must be a string or a non-empty array of "
                    + "token ids (one prompt per request)");
        }
        int maxTokens = intField(b, "max_tokens", 16, 1);
        double temperature = doubleField(b, "temperature", 1.0);
        if (temperature < 0) {
            throw new ApiError(400, "BadRequestError", "temperature", "'temperature' must be ≥ 0, got " + temperature);
        }
        double topP = doubleField(b, "top_p", 1.0);
        if (!(topP > 0 && topP <= 1)) {
            throw new ApiError(400, "BadRequestError", "top_p", "'top_p' must be in (0, 1], got " + topP);
        }
        JsonNode tk = b.get("top_k");
        int topK = tk == null || tk.isNull() || tk.canConvertToInt() && tk.asInt() == -1 ? 0 : intField(b, "top_k", 0, 0);
        JsonNode sd = b.get("seed");
        long seed;
        if (sd == null || sd.isNull()) {
            seed = java.util.concurrent.ThreadLocalRandom.current().nextLong();
        } else if (sd.isIntegralNumber() && sd.canConvertToLong()) {
            seed = sd.asLong();
        } else {
            throw new ApiError(400, "BadRequestError", "seed", "'seed' must be an integer, got " + sd);
        }
        List<String> stop = new ArrayList<>();
        JsonNode st = b.get("stop");
        if (st != null && !st.isNull()) {
            if (st.isTextual()) {
                stop.add(st.asText());
            } else if (st.isArray()) {
                for (JsonNode s : st) {
                    if (!s.isTextual() || s.asText().isEmpty()) {
                        throw new ApiError(400, "BadRequestError", "stop", "'stop' must hold non-empty strings");
                    }
                    stop.add(s.asText());
                }
            } else {
                throw new ApiError(400, "BadRequestError", "stop", "'stop' must be a string or an array of strings");
            }
        }
        Set<Long> stopIds = new HashSet<>();
        JsonNode sti = b.get("stop_token_ids");
        if (sti != null && !sti.isNull()) {
            if (!sti.isArray() || !allIntegers(sti)) {
                throw new ApiError(400, "BadRequestError", "stop_token_ids", "'stop_token_ids' must be an array of "
                        + "token ids");
            }
            sti.forEach(x -> stopIds.add(x.asLong()));
        }
        boolean ignoreEos = boolField(b, "ignore_eos");
        boolean stream = boolField(b, "stream");
        return new Parsed(model, adapter, ids, text, maxTokens, temperature, topP, topK, seed, stop, stopIds, ignoreEos,
                stream);
    }

    private static boolean allIntegers(JsonNode arr) {
        for (JsonNode x : arr) {
            if (!x.isIntegralNumber() || !x.canConvertToLong()) {
                return false;
            }
        }
        return true;
    }

    private static int intField(JsonNode b, String f, int fallback, int min) {
        JsonNode v = b.get(f);
        if (v == null || v.isNull()) {
            return fallback;
        }
        if (!v.isIntegralNumber() || !v.canConvertToInt() || v.asInt() < min) {
            throw new ApiError(400, "BadRequestError", f, "'" + f + "' must be an integer ≥ " + min + ", got " + v);
        }
        return v.asInt();
    }

    private static double doubleField(JsonNode b, String f, double fallback) {
        JsonNode v = b.get(f);
        if (v == null || v.isNull()) {
            return fallback;
        }
        if (!v.isNumber() || !Double.isFinite(v.asDouble())) {
            throw new ApiError(400, "BadRequestError", f, "'" + f + "' must be a number, got " + v);
        }
        return v.asDouble();
    }

    private static boolean boolField(JsonNode b, String f) {
        JsonNode v = b.get(f);
        if (v == null || v.isNull()) {
            return false;
        }
        if (!v.isBoolean()) {
            throw new ApiError(400, "BadRequestError", f, "'" + f + "' must be true or false, got " + v);
        }
        return v.asBoolean();
    }

    // ------------------------------------------------------------------ responses

    private static void sendJson(HttpExchange ex, int status, JsonNode json) throws IOException {
        send(ex, status, "application/json", JSON.writeValueAsBytes(json));
    }

    private static void send(HttpExchange ex, int status, String type, byte[] body) throws IOException {
        ex.getResponseHeaders().set("Content-Type", type);
        ex.sendResponseHeaders(status, body.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(body);
        }
    }

    private static void sendError(HttpExchange ex, ApiError e) {
        try {
            sendJson(ex, e.status, e.json());
        } catch (IOException io) {
            LOG.debug("client connection: {}", io.toString());
        }
    }

    /** An error answered as OpenAI's JSON error object. */
    private static final class ApiError extends RuntimeException {
        private static final long serialVersionUID = 1L;
        final int status;
        final String type;
        final String param;

        ApiError(int status, String type, String param, String message) {
            super(message, null, false, false);
            this.status = status;
            this.type = type;
            this.param = param;
        }

        ObjectNode json() {
            ObjectNode out = JSON.createObjectNode();
            ObjectNode e = out.putObject("error").put("message", getMessage()).put("type", type).put("code", status);
            if (param == null) {
                e.putNull("param");
            } else {
                e.put("param", param);
            }
            return out;
        }
    }
}
