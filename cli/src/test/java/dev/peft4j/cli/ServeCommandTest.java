package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code peft4j serve}: starts on a free port with a model folder and named adapters, serves, stops cleanly. */
class ServeCommandTest {
    @Test
    void servesTheModelAndItsAdaptersOverHttp(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny-llama"), 1);
        Path adapter = TinyModels.loraAdapter(tmp.resolve("ad"), false);
        AtomicReference<Cli.Result> result = new AtomicReference<>();
        Thread t = new Thread(() -> result.set(Cli.run("serve", "--model", model.toString(), "--adapter",
                adapter + "=support", "--port", "0", "--max-length", "64", "--threads", "1")));
        t.start();
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (ServeCommand.RUNNING.isEmpty() && t.isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertTrue(!ServeCommand.RUNNING.isEmpty(), "not started: " + result.get());
        int port = ServeCommand.RUNNING.keySet().iterator().next();
        CountDownLatch stop = ServeCommand.RUNNING.get(port);
        try {
            HttpClient http = HttpClient.newHttpClient();
            JsonNode models = new ObjectMapper().readTree(http.send(HttpRequest.newBuilder(
                    URI.create("http://127.0.0.1:" + port + "/v1/models")).build(),
                    HttpResponse.BodyHandlers.ofString()).body());
            assertEquals("tiny-llama", models.get("data").get(0).get("id").asText());
            assertEquals("support", models.get("data").get(1).get("id").asText());
            HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port
                    + "/v1/completions")).POST(HttpRequest.BodyPublishers.ofString("{\"model\": \"support\", "
                    + "\"prompt\": \"hello\", \"max_tokens\": 3, \"temperature\": 0, \"ignore_eos\": true}")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(200, r.statusCode(), r.body());
            assertEquals(3, new ObjectMapper().readTree(r.body()).get("choices").get(0).get("token_ids").size());
        } finally {
            stop.countDown();
            t.join(60_000);
        }
        assertEquals(0, result.get().rc(), result.get().toString());
        assertTrue(result.get().out().contains("with 1 adapter(s) on http://127.0.0.1:" + port + "/v1"),
                result.get().toString());
    }

    @Test
    void optionsThatDoNotApplyAreRefused(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("m"), 1);
        Cli.Result r = Cli.run("serve", "--model", model.toString(), "--adapter", tmp + "=a", "--active", "a");
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("do not apply to serve"), r.toString());
    }

    /**
     * --adapter-revision, --token and --cache-dir are taken (they reach the engine's registration as generate's
     * loadAdapter gets them; ServingEngineRegisterTest covers a repo id fetched with them from a cache, offline: a test
     * may not reach the Hub), they do not apply to a folder, and the token is never echoed.
     */
    @Test
    void hubOptionsAreTaken(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("m"), 1);
        Path adapter = TinyModels.loraAdapter(tmp.resolve("ad"), false);
        Path cache = java.nio.file.Files.createDirectories(tmp.resolve("hf-cache"));
        AtomicReference<Cli.Result> result = new AtomicReference<>();
        Thread t = new Thread(() -> result.set(Cli.run("serve", "--model", model.toString(), "--adapter",
                adapter + "=a", "--adapter-revision", "v1", "--token", "hf_secret_x", "--cache-dir", cache.toString(),
                "--port", "0", "--max-length", "64", "--threads", "1")));
        t.start();
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (ServeCommand.RUNNING.isEmpty() && t.isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertTrue(!ServeCommand.RUNNING.isEmpty(), "not started: " + result.get());
        ServeCommand.RUNNING.values().iterator().next().countDown();
        t.join(60_000);
        Cli.Result r = result.get();
        assertEquals(0, r.rc(), r.toString());
        assertTrue(r.out().contains("with 1 adapter(s)"), r.toString());
        assertTrue(!r.out().contains("hf_secret_x") && !r.err().contains("hf_secret_x"), "the token is not echoed: "
                + r);
    }
}
