package dev.peft4j.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Fetching into the Hugging Face cache from a local server that answers as the Hub does: {@code resolve} URLs with
 * {@code X-Repo-Commit} and {@code ETag}, large files redirected to another path with {@code X-Linked-Etag},
 * {@code X-Error-Code} on 404, 401 for a private repo without its token.
 */
class HubDownloadTest {
    private static final String COMMIT = "5555555555555555555555555555555555555555";
    private static final byte[] CONFIG = "{\"peft_type\": \"LORA\"}".getBytes(StandardCharsets.UTF_8);
    private static final byte[] WEIGHTS = "large file bytes".getBytes(StandardCharsets.UTF_8);

    // a sharded model repo: no model.safetensors, an index naming two shards, no tokenizer
    private static final Map<String, byte[]> MODEL_FILES = Map.of(
            "config.json", "{\"model_type\": \"llama\"}".getBytes(StandardCharsets.UTF_8),
            "model.safetensors.index.json", ("{\"metadata\": {}, \"weight_map\": {\"a\": \"model-00001-of-00002"
                    + ".safetensors\", \"b\": \"model-00002-of-00002.safetensors\", \"c\": "
                    + "\"model-00001-of-00002.safetensors\"}}").getBytes(StandardCharsets.UTF_8),
            "model-00001-of-00002.safetensors", "shard one".getBytes(StandardCharsets.UTF_8),
            "model-00002-of-00002.safetensors", "shard two".getBytes(StandardCharsets.UTF_8),
            "generation_config.json", "{}".getBytes(StandardCharsets.UTF_8));

    @TempDir
    Path tmp;

    private HttpServer server;
    private final List<String> requests = new CopyOnWriteArrayList<>();

    @BeforeEach
    void start() throws IOException {
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.createContext("/", this::handle);
        server.start();
    }

    @AfterEach
    void stop() {
        server.stop(0);
    }

    private String endpoint() {
        return "http://127.0.0.1:" + server.getAddress().getPort();
    }

    private void handle(HttpExchange ex) throws IOException {
        String path = ex.getRequestURI().getPath();
        String auth = ex.getRequestHeaders().getFirst("Authorization");
        requests.add(ex.getRequestMethod() + " " + path + (auth == null ? "" : " " + auth));
        boolean head = ex.getRequestMethod().equals("HEAD");
        if (path.startsWith("/private/")) {
            if (!"Bearer secret".equals(auth)) {
                ex.getResponseHeaders().add("X-Error-Code", "RepoNotFound");
                reply(ex, 401, null, head);
                return;
            }
            path = path.replace("/private/", "/org/");
        }
        if (path.startsWith("/org/model/resolve/")) {
            String rest = path.substring("/org/model/resolve/".length());
            String rev = rest.substring(0, rest.indexOf('/'));
            byte[] body = MODEL_FILES.get(rest.substring(rev.length() + 1));
            if (!rev.equals("main") && !rev.equals(COMMIT)) {
                ex.getResponseHeaders().add("X-Error-Code", "RevisionNotFound");
                reply(ex, 404, null, head);
            } else if (body == null) {
                ex.getResponseHeaders().add("X-Error-Code", "EntryNotFound");
                reply(ex, 404, null, head);
            } else {
                ex.getResponseHeaders().add("X-Repo-Commit", COMMIT);
                ex.getResponseHeaders().add("ETag", "\"" + Integer.toHexString(java.util.Arrays.hashCode(body)) + "\"");
                reply(ex, 200, body, head);
            }
            return;
        }
        if (path.equals("/org/lora/resolve/main/adapter_config.json")
                || path.equals("/org/lora/resolve/" + COMMIT + "/adapter_config.json")) {
            ex.getResponseHeaders().add("X-Repo-Commit", COMMIT);
            ex.getResponseHeaders().add("ETag", "\"cfg-etag\"");
            reply(ex, 200, CONFIG, head);
        } else if (path.equals("/org/lora/resolve/main/adapter_model.safetensors")) {
            ex.getResponseHeaders().add("X-Repo-Commit", COMMIT);
            ex.getResponseHeaders().add("X-Linked-Etag", "\"sha256ofweights\"");
            ex.getResponseHeaders().add("Location", endpoint() + "/cdn/weights");
            reply(ex, 302, null, head);
        } else if (path.equals("/cdn/weights")) {
            reply(ex, 200, WEIGHTS, head);
        } else if (path.startsWith("/org/lora/resolve/main/")) {
            ex.getResponseHeaders().add("X-Error-Code", "EntryNotFound");
            reply(ex, 404, null, head);
        } else if (path.startsWith("/org/lora/resolve/")) {
            ex.getResponseHeaders().add("X-Error-Code", "RevisionNotFound");
            reply(ex, 404, null, head);
        } else {
            ex.getResponseHeaders().add("X-Error-Code", "RepoNotFound");
            reply(ex, 404, null, head);
        }
    }

    private static void reply(HttpExchange ex, int status, byte[] body, boolean head) throws IOException {
        if (body == null || head) {
            if (body != null) {
                ex.getResponseHeaders().add("Content-Length", String.valueOf(body.length));
            }
            ex.sendResponseHeaders(status, -1);
        } else {
            ex.sendResponseHeaders(status, body.length);
            ex.getResponseBody().write(body);
        }
        ex.close();
    }

    // quick retries: an unreachable Hub is retried with backoff before the error when the cache cannot answer
    static final HubDownload.Network FAST = new HubDownload.Network(java.time.Duration.ofSeconds(2),
            java.time.Duration.ofSeconds(2), 2, java.time.Duration.ofMillis(10), true);

    private HubDownload.Settings online(String token) {
        return new HubDownload.Settings(endpoint(), token, false).withNetwork(FAST);
    }

    @Test
    void fetchesIntoTheCacheLayoutOfHuggingfaceHub() throws IOException {
        Path root = tmp.resolve("hub");
        Path cfg = HubDownload.file(root, "org/lora", null, "adapter_config.json", online(null));
        Path w = HubDownload.file(root, "org/lora", null, "adapter_model.safetensors", online(null));
        Path repo = root.resolve("models--org--lora");
        assertEquals(repo.resolve("snapshots/" + COMMIT + "/adapter_config.json"), cfg);
        assertEquals(repo.resolve("snapshots/" + COMMIT + "/adapter_model.safetensors"), w);
        assertArrayEquals(CONFIG, Files.readAllBytes(cfg));
        assertArrayEquals(WEIGHTS, Files.readAllBytes(w));
        assertTrue(Files.isSymbolicLink(w), "snapshots link into blobs/");
        assertArrayEquals(WEIGHTS, Files.readAllBytes(repo.resolve("blobs/sha256ofweights")), "X-Linked-Etag names it");
        assertArrayEquals(CONFIG, Files.readAllBytes(repo.resolve("blobs/cfg-etag")));
        assertEquals(COMMIT, Files.readString(repo.resolve("refs/main")));
        try (var s = Files.list(repo.resolve("blobs"))) {
            assertEquals(2, s.count(), "no temporary file left");
        }
        // what HubCache resolves offline is what was fetched
        assertEquals(cfg.getParent(), HubCache.snapshot(root, "org/lora", null));
        // fetching again sends a HEAD only (the blob is there)
        requests.clear();
        HubDownload.file(root, "org/lora", null, "adapter_model.safetensors", online(null));
        assertEquals(List.of("HEAD /org/lora/resolve/main/adapter_model.safetensors"), requests);
        // force_download: fetched again, replacing a damaged blob in place
        Files.write(repo.resolve("blobs/sha256ofweights"), new byte[] {1, 2, 3});
        requests.clear();
        Path again = HubDownload.file(root, "org/lora", null, "adapter_model.safetensors",
                online(null).withForceDownload(true));
        assertEquals(2, requests.size(), requests.toString());
        assertTrue(requests.get(1).startsWith("GET "), requests.toString());
        assertArrayEquals(WEIGHTS, Files.readAllBytes(again));
        try (var s = Files.list(repo.resolve("blobs"))) {
            assertEquals(2, s.count(), "the blob replaced, no temporary file left");
        }
    }

    @Test
    void aMissingFileIsNullAndAMissingRepoOrRevisionAnError() throws IOException {
        Path root = tmp.resolve("hub");
        assertNull(HubDownload.file(root, "org/lora", null, "adapter_model.bin", online(null)));
        NoSuchFileException repo = assertThrows(NoSuchFileException.class,
                () -> HubDownload.file(root, "org/nothing", null, "adapter_config.json", online(null)));
        assertTrue(repo.getMessage().contains("not a repo on the Hub"), repo.getMessage());
        NoSuchFileException rev = assertThrows(NoSuchFileException.class,
                () -> HubDownload.file(root, "org/lora", "v9", "adapter_config.json", online(null)));
        assertTrue(rev.getMessage().contains("revision 'v9'"), rev.getMessage());
        assertTrue(!Files.exists(root.resolve("models--org--nothing")), "nothing written for a failed lookup");
        for (String bad : new String[] {"../../x", "/abs", ""}) {
            assertThrows(IllegalArgumentException.class,
                    () -> HubDownload.file(root, "org/lora", bad, "adapter_config.json", online(null)), bad);
        }
        assertThrows(IllegalArgumentException.class,
                () -> HubDownload.file(root, "org/lora", null, "../adapter_config.json", online(null)));
    }

    @Test
    void aPrivateRepoNeedsItsTokenWhichOnlyTheHubReceives() throws IOException {
        Path root = tmp.resolve("hub");
        IOException denied = assertThrows(IOException.class,
                () -> HubDownload.file(root, "private/lora", null, "adapter_config.json", online(null)));
        assertTrue(denied.getMessage().contains("HTTP 401") && denied.getMessage().contains("token"),
                denied.getMessage());
        requests.clear();
        Path cfg = HubDownload.file(root, "private/lora", null, "adapter_config.json", online("secret"));
        assertArrayEquals(CONFIG, Files.readAllBytes(cfg));
        assertEquals(List.of("HEAD /private/lora/resolve/main/adapter_config.json Bearer secret",
                "GET /private/lora/resolve/main/adapter_config.json Bearer secret"), requests);
        requests.clear();
        HubDownload.file(root, "org/lora", null, "adapter_model.safetensors", online("secret"));
        assertEquals(List.of("HEAD /org/lora/resolve/main/adapter_model.safetensors Bearer secret",
                "GET /cdn/weights Bearer secret"), requests, "same host here, so the token goes along");
    }

    @Test
    void offlineOrUnreachableUsesTheCacheAndSaysWhatIsMissing() throws IOException {
        Path root = tmp.resolve("hub");
        HubDownload.file(root, "org/lora", null, "adapter_config.json", online(null));
        requests.clear();
        HubDownload.Settings offline = new HubDownload.Settings(endpoint(), null, true);
        assertEquals(root.resolve("models--org--lora/snapshots/" + COMMIT + "/adapter_config.json"),
                HubDownload.file(root, "org/lora", null, "adapter_config.json", offline));
        assertEquals(List.of(), requests, "offline: no request");
        assertNull(HubDownload.file(root, "org/lora", null, "adapter_model.safetensors", offline),
                "the snapshot is cached without it: absent, as an optional file or an alternative would be");
        NoSuchFileException notCached = assertThrows(NoSuchFileException.class,
                () -> HubDownload.file(root, "org/lora", "v1", "adapter_config.json", offline));
        assertTrue(notCached.getMessage().contains("offline") && notCached.getMessage().contains("revision 'v1'"),
                notCached.getMessage());

        server.stop(0);
        assertEquals(root.resolve("models--org--lora/snapshots/" + COMMIT + "/adapter_config.json"),
                HubDownload.file(root, "org/lora", null, "adapter_config.json", online(null)),
                "unreachable: the cached copy");
        assertNull(HubDownload.file(root, "org/lora", null, "adapter_model.safetensors", online(null)));
        IOException down = assertThrows(IOException.class,
                () -> HubDownload.file(root, "org/other", null, "adapter_config.json", online(null)));
        assertTrue(down.getMessage().contains("cannot be reached"), down.getMessage());
    }

    @Test
    void forceDownloadIsRefusedOfflineAndFailsWhenTheHubCannotBeReached() throws IOException {
        Path root = tmp.resolve("hub");
        Path cached = HubDownload.file(root, "org/lora", null, "adapter_config.json", online(null));
        requests.clear();
        HubDownload.Settings offline = new HubDownload.Settings(endpoint(), null, true).withForceDownload(true);
        IllegalArgumentException refused = assertThrows(IllegalArgumentException.class,
                () -> HubDownload.file(root, "org/lora", null, "adapter_config.json", offline));
        assertTrue(refused.getMessage().startsWith("force_download cannot be used offline")
                && refused.getMessage().contains("adapter_config.json of 'org/lora'"), refused.getMessage());
        assertEquals(List.of(), requests, "offline: no request");

        server.stop(0);
        IOException down = assertThrows(IOException.class, () -> HubDownload.file(root, "org/lora", null,
                "adapter_config.json", online(null).withForceDownload(true)));
        assertTrue(down.getMessage().contains("force_download failed: the Hub cannot be reached"), down.getMessage());
        assertArrayEquals(CONFIG, Files.readAllBytes(cached), "the cached copy is left as it was");
    }

    @Test
    void settingsComeFromTheEnvironmentAsHuggingfaceHubReadsThem() throws IOException {
        Path home = Files.createDirectories(tmp.resolve("hf-home"));
        Files.writeString(home.resolve("token"), "from-file\n");
        HubDownload.Settings d = HubDownload.Settings.fromEnvironment(null, Map.of(), tmp.toString());
        assertEquals(new HubDownload.Settings("https://huggingface.co", null, false), d);
        assertEquals(new HubDownload.Settings("http://mirror", "from-file", true), HubDownload.Settings
                .fromEnvironment(null, Map.of("HF_ENDPOINT", "http://mirror/", "HF_HOME", home.toString(),
                        "HF_HUB_OFFLINE", "1"), tmp.toString()));
        assertEquals("env", HubDownload.Settings.fromEnvironment(null, Map.of("HF_TOKEN", "env", "HF_HOME",
                home.toString()), tmp.toString()).token());
        assertEquals("given", HubDownload.Settings.fromEnvironment("given", Map.of("HF_TOKEN", "env"),
                tmp.toString()).token());
        assertTrue(HubDownload.Settings.fromEnvironment(null, Map.of("TRANSFORMERS_OFFLINE", "true"),
                tmp.toString()).offline());
        assertEquals("abc", HubDownload.normalizeEtag("W/\"abc\""));
    }

    @Test
    void aModelRepoIsFetchedAtOneCommitWithItsShards() throws IOException {
        Path root = tmp.resolve("hub");
        Path snap = HubDownload.modelSnapshot(root, "org/model", null, online(null));
        assertEquals(root.resolve("models--org--model/snapshots/" + COMMIT), snap);
        for (Map.Entry<String, byte[]> e : MODEL_FILES.entrySet()) {
            assertArrayEquals(e.getValue(), Files.readAllBytes(snap.resolve(e.getKey())), e.getKey());
        }
        assertTrue(!Files.exists(snap.resolve("tokenizer.json")), "the repo has none");
        // config.json at main, every other file at the commit main named then
        assertEquals("HEAD /org/model/resolve/main/config.json", requests.get(0));
        assertTrue(requests.stream().skip(2).allMatch(r -> r.contains("/resolve/" + COMMIT + "/")), requests.toString());
        IOException notModel = assertThrows(IOException.class,
                () -> HubDownload.modelSnapshot(root, "org/lora", null, online(null)));
        assertTrue(notModel.getMessage().contains("no config.json"), notModel.getMessage());
    }
}
