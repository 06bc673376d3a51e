package dev.peft4j.serve;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.core.http.StreamResponse;
import com.openai.errors.BadRequestException;
import com.openai.errors.NotFoundException;
import com.openai.models.completions.Completion;
import com.openai.models.completions.CompletionCreateParams;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.tokenizers.Tokenizer;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link CompletionsServer} over plain HTTP and with OpenAI's official Java client: completions by text and by token
 * ids, streaming, {@code model} naming an adapter, and JSON errors with the right status.
 */
class CompletionsServerTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    @TempDir
    static Path tmp;
    private static PreTrainedModel model;
    private static Tokenizer tokenizer;
    private static ServingEngine engine;
    private static CompletionsServer server;
    private static final HttpClient HTTP = HttpClient.newHttpClient();

    @BeforeAll
    static void start() throws Exception {
        model = ServeFixtures.llama(5);
        tokenizer = Tokenizer.fromFile(Path.of(CompletionsServerTest.class
                .getResource("/dev/peft4j/tokenizers/llama-bpe/tokenizer.json").toURI()));
        engine = ServingEngine.builder(model).tokenizer(tokenizer).maxConcurrent(4).maxLength(64).maxWaiting(8)
                .threads(1).build();
        engine.register("a0", ServeFixtures.lora(tmp.resolve("a0"), ServeFixtures.HIDDEN, ServeFixtures.LAYERS, 4, 1));
        engine.register("a1", ServeFixtures.lora(tmp.resolve("a1"), ServeFixtures.HIDDEN, ServeFixtures.LAYERS, 4, 2));
        server = new CompletionsServer(engine, "tiny-llama", "127.0.0.1", 0, 8);
    }

    @AfterAll
    static void stop() {
        server.close();
        engine.close();
        tokenizer.close();
        model.close();
    }

    private static String url(String path) {
        return "http://127.0.0.1:" + server.port() + path;
    }

    private static HttpResponse<String> post(String body) throws Exception {
        return HTTP.send(HttpRequest.newBuilder(URI.create(url("/v1/completions")))
                .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(body)).build(),
                HttpResponse.BodyHandlers.ofString());
    }

    private static HttpResponse<String> get(String path) throws Exception {
        return HTTP.send(HttpRequest.newBuilder(URI.create(url(path))).GET().build(),
                HttpResponse.BodyHandlers.ofString());
    }

    private static long[] ids(JsonNode arr) {
        long[] out = new long[arr.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = arr.get(i).asLong();
        }
        return out;
    }

    private static long[] direct(String adapter, long[] prompt, int max) throws Exception {
        return engine.submit(ServeRequest.builder().adapter(adapter).promptIds(prompt).maxNewTokens(max).build())
                .result().get(60, TimeUnit.SECONDS).tokenIds();
    }

    @Test
    void healthModelsAndMetrics() throws Exception {
        assertEquals(200, get("/health").statusCode());
        JsonNode models = JSON.readTree(get("/v1/models").body());
        List<String> names = new ArrayList<>();
        models.get("data").forEach(m -> names.add(m.get("id").asText()));
        assertEquals(List.of("tiny-llama", "a0", "a1"), names);
        assertEquals("tiny-llama", models.get("data").get(1).get("parent").asText());
        post("{\"model\": \"tiny-llama\", \"prompt\": [1, 2], \"max_tokens\": 2, \"temperature\": 0}");
        String metrics = get("/metrics").body();
        assertTrue(metrics.contains("# TYPE peft4j_requests_completed_total counter"), metrics);
        assertTrue(metrics.matches("(?s).*\\npeft4j_adapters_registered 2\\n.*"), metrics);
    }

    @Test
    void completionByTokenIdsWithAnAdapter() throws Exception {
        HttpResponse<String> r = post("{\"model\": \"a1\", \"prompt\": [5, 6, 7], \"max_tokens\": 6, "
                + "\"temperature\": 0}");
        assertEquals(200, r.statusCode(), r.body());
        JsonNode body = JSON.readTree(r.body());
        JsonNode choice = body.get("choices").get(0);
        long[] got = ids(choice.get("token_ids"));
        assertArrayEquals(direct("a1", new long[] {5, 6, 7}, 6), got);
        assertFalse(java.util.Arrays.equals(direct(null, new long[] {5, 6, 7}, 6), got), "the adapter applied");
        assertEquals(tokenizer.decode(got, true), choice.get("text").asText());
        assertEquals("length", choice.get("finish_reason").asText());
        assertEquals("a1", body.get("model").asText());
        assertEquals(9, body.get("usage").get("total_tokens").asInt());
    }

    @Test
    void streamingSendsEveryTokenThenDone() throws Exception {
        HttpResponse<String> r = post("{\"model\": \"a0\", \"prompt\": \"hello world\", \"max_tokens\": 8, "
                + "\"temperature\": 0, \"stream\": true}");
        assertEquals(200, r.statusCode(), r.body());
        assertEquals("text/event-stream", r.headers().firstValue("Content-Type").orElse(""));
        List<Long> streamed = new ArrayList<>();
        StringBuilder text = new StringBuilder();
        String finish = null;
        String[] events = r.body().split("\n\n");
        assertEquals("data: [DONE]", events[events.length - 1]);
        for (int i = 0; i < events.length - 1; i++) {
            assertTrue(events[i].startsWith("data: "), events[i]);
            JsonNode event = JSON.readTree(events[i].substring(6));
            assertTrue(event.has("choices"), r.body());
            JsonNode c = event.get("choices").get(0);
            c.get("token_ids").forEach(t -> streamed.add(t.asLong()));
            text.append(c.get("text").asText());
            if (!c.get("finish_reason").isNull()) {
                finish = c.get("finish_reason").asText();
            }
        }
        long[] prompt = tokenizer.encode("hello world", true);
        long[] expected = direct("a0", prompt, 8);
        assertEquals(java.util.Arrays.stream(expected).boxed().toList(), streamed);
        assertEquals(tokenizer.decode(expected, true), text.toString());
        assertEquals("length", finish);
    }

    @Test
    void errorsAreJsonWithTheRightStatus() throws Exception {
        assertError(post("{\"model\": \"nope\", \"prompt\": \"hi\"}"), 404, "The model `nope` does not exist");
        assertError(post("{\"model\": \"a0\", \"prompt\": \"hi\", \"max_tokens\": 0}"), 400,
                "'max_tokens' must be an integer ≥ 1");
        assertError(post("{\"model\": \"a0\", \"prompt\": \"hi\", \"temperature\": \"hot\"}"), 400,
                "'temperature' must be a number");
        assertError(post("{\"model\": \"a0\", \"prompt\": \"hi\", \"logprobs\": 2}"), 400,
                "'logprobs' is not supported");
        assertError(post("{\"model\": \"a0\", \"prompt\": [1, 99]}"), 400, "outside the vocabulary");
        assertError(post("{\"model\": \"a0\", \"prompt\": [1], \"max_tokens\": 64}"), 400,
                "the engine's slots hold 64");
        assertError(post("{not json"), 400, "not valid JSON");
        assertError(post("{\"prompt\": \"hi\"}"), 400, "'model' is required");
        assertError(get("/v1/completions"), 405, "use POST");
        assertError(get("/v2/anything"), 404, "no such endpoint");
    }

    @Test
    void aFullQueueAnswers429() throws Exception {
        // requests for an adapter whose load is held back wait: two fill the queue
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.ExecutorService held = java.util.concurrent.Executors.newSingleThreadExecutor();
        try (PreTrainedModel m = ServeFixtures.llama(5)) {
            ServingEngine.Builder b = ServingEngine.builder(m).maxConcurrent(1).maxWaiting(2).threads(1);
            b.loader = heldLoader(held, release);
            try (ServingEngine e = b.build(); CompletionsServer s = new CompletionsServer(e, "tiny-llama", "127.0.0.1",
                    0, 2)) {
                e.register("slow", tmp.resolve("a0"));
                List<RequestHandle> waiting = new ArrayList<>();
                waiting.add(e.submit(ServeRequest.builder().adapter("slow").promptIds(1).build()));
                waiting.add(e.submit(ServeRequest.builder().adapter("slow").promptIds(1).build()));
                HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + s.port()
                        + "/v1/completions")).POST(HttpRequest.BodyPublishers.ofString(
                                "{\"model\": \"tiny-llama\", \"prompt\": [1], \"max_tokens\": 4}")).build(),
                        HttpResponse.BodyHandlers.ofString());
                assertError(r, 429, "the wait queue is full (2 requests)");
                release.countDown();
                for (RequestHandle h : waiting) {
                    assertEquals(16, h.result().get(60, TimeUnit.SECONDS).tokenIds().length, "served once loaded");
                }
            }
        }
    }

    /** A loader executor whose tasks wait for {@code release}. */
    private static java.util.concurrent.ExecutorService heldLoader(java.util.concurrent.ExecutorService held,
            java.util.concurrent.CountDownLatch release) {
        return new java.util.concurrent.AbstractExecutorService() {
            @Override
            public void execute(Runnable r) {
                held.execute(() -> {
                    try {
                        release.await();
                    } catch (InterruptedException ie) {
                        return;
                    }
                    r.run();
                });
            }

            @Override
            public void shutdown() {
                held.shutdown();
            }

            @Override
            public List<Runnable> shutdownNow() {
                return held.shutdownNow();
            }

            @Override
            public boolean isShutdown() {
                return held.isShutdown();
            }

            @Override
            public boolean isTerminated() {
                return held.isTerminated();
            }

            @Override
            public boolean awaitTermination(long t, TimeUnit u) throws InterruptedException {
                return held.awaitTermination(t, u);
            }
        };
    }

    @Test
    void openAiJavaClient() throws Exception {
        OpenAIClient client = OpenAIOkHttpClient.builder().baseUrl(url("/v1")).apiKey("unused").maxRetries(0).build();
        try {
            Completion c = client.completions().create(CompletionCreateParams.builder().model("a0")
                    .prompt("hello world").maxTokens(5).temperature(0.0).build());
            long[] expected = direct("a0", tokenizer.encode("hello world", true), 5);
            assertEquals(tokenizer.decode(expected, true), c.choices().get(0).text());
            assertEquals("length", c.choices().get(0).finishReason().asString());
            List<Long> fromClient = new ArrayList<>();
            for (Object v : (List<?>) c.choices().get(0)._additionalProperties().get("token_ids").asArray()
                    .orElseThrow()) {
                fromClient.add(((Number) ((com.openai.core.JsonValue) v).asNumber().orElseThrow()).longValue());
            }
            assertEquals(java.util.Arrays.stream(expected).boxed().toList(), fromClient);

            StringBuilder streamed = new StringBuilder();
            try (StreamResponse<Completion> s = client.completions().createStreaming(CompletionCreateParams.builder()
                    .model("a0").prompt("hello world").maxTokens(5).temperature(0.0).build())) {
                s.stream().forEach(chunk -> streamed.append(chunk.choices().get(0).text()));
            }
            assertEquals(tokenizer.decode(expected, true), streamed.toString());

            NotFoundException nf = assertThrows(NotFoundException.class, () -> client.completions().create(
                    CompletionCreateParams.builder().model("nope").prompt("hi").build()));
            assertTrue(nf.getMessage().contains("does not exist"), nf.getMessage());
            assertThrows(BadRequestException.class, () -> client.completions().create(CompletionCreateParams
                    .builder().model("a0").prompt("hi").topP(5.0).build()));
        } finally {
            client.close();
        }
    }

    private static void assertError(HttpResponse<String> r, int status, String message) throws Exception {
        assertEquals(status, r.statusCode(), r.body());
        assertEquals("application/json", r.headers().firstValue("Content-Type").orElse(""));
        JsonNode e = JSON.readTree(r.body()).get("error");
        assertTrue(e.get("message").asText().contains(message), e.toString());
        assertEquals(status, e.get("code").asInt());
        assertFalse(r.body().contains("\tat "), "no stack trace");
    }
}
