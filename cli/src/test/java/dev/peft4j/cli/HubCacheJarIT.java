package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --adapter <repo id>} fetched from a local server that answers as the Hub does ({@code HF_ENDPOINT}) into the
 * cache, then {@code --model <repo id>} from the packaged jar: the repo's snapshot is found in the Hugging Face cache named by
 * {@code HF_HUB_CACHE} (laid out as huggingface_hub writes it: files linked into blobs/, refs/main naming the
 * commit) and gives what the folder itself gives; a repo id not in the cache is a one-line error.
 */
class HubCacheJarIT {
    private static final String COMMIT = "3333333333333333333333333333333333333333";

    private static Path cacheOf(Path model, Path cache) throws Exception {
        Path repo = Files.createDirectories(cache.resolve("models--org--tiny-llama"));
        Path blobs = Files.createDirectories(repo.resolve("blobs"));
        Path snap = Files.createDirectories(repo.resolve("snapshots/" + COMMIT));
        Files.createDirectories(repo.resolve("refs"));
        Files.writeString(repo.resolve("refs/main"), COMMIT);
        try (Stream<Path> files = Files.list(model)) {
            for (Path f : files.toList()) {
                Path blob = blobs.resolve("blob-" + f.getFileName());
                Files.copy(f, blob);
                Files.createSymbolicLink(snap.resolve(f.getFileName()), snap.relativize(blob));
            }
        }
        return cache;
    }

    // endpoint: HF_ENDPOINT, or "offline" for HF_HUB_OFFLINE=1
    private static String[] run(Path tmp, Path hubCache, String endpoint, String... args) throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java, "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0", "-jar",
                Path.of("target", "peft4j-cli.jar").toString()));
        cmd.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(cmd);
        pb.environment().put("DJL_CACHE_DIR", tmp.resolve("djl-cache").toString());
        pb.environment().remove("ENGINE_CACHE_DIR");
        pb.environment().put("HF_HUB_CACHE", hubCache.toString());
        for (String v : new String[] {"HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HOME",
            "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}) {
            pb.environment().remove(v);
        }
        pb.environment().put("HF_HOME", tmp.resolve("hf-home").toString()); // no token file of the machine's
        if ("offline".equals(endpoint)) {
            pb.environment().put("HF_HUB_OFFLINE", "1");
        } else if (endpoint != null) {
            pb.environment().put("HF_ENDPOINT", endpoint);
        }
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        return new String[] {String.valueOf(p.waitFor()), out, err};
    }

    @Test
    void aRepoIdInTheHuggingFaceCacheLoadsLikeItsFolder(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 5);
        Path cache = cacheOf(model, tmp.resolve("hub"));
        String[] gen = {"generate", "--prompt", "hello world", "--max-new-tokens", "4", "--print-ids", "--model"};
        String offline = "offline"; // HF_HUB_OFFLINE=1: the cache alone
        String[] byFolder = run(tmp, cache, offline, concat(gen, model.toString()));
        String[] byRepo = run(tmp, cache, offline, concat(gen, "org/tiny-llama"));
        assertEquals("0", byFolder[0], byFolder[1] + byFolder[2]);
        assertEquals("0", byRepo[0], byRepo[1] + byRepo[2]);
        assertTrue(byFolder[1].contains("\nids: "), byFolder[1]);
        assertEquals(byFolder[1], byRepo[1], "the snapshot is the same model and tokenizer");

        String[] missing = run(tmp, cache, offline, concat(gen, "org/not-cached"));
        assertEquals("1", missing[0], missing[1] + missing[2]);
        assertTrue(missing[2].contains("models--org--not-cached") && missing[2].contains("offline"), missing[2]);
    }

    /**
     * A local server answering as the Hub does for one repo at one revision: {@code /<repo>/resolve/<revision or
     * commit>/<file>} serves {@code files}' file with {@code X-Repo-Commit} and an ETag (HEAD: headers only); with a
     * token, requests without {@code Authorization: Bearer <token>} get 401. Each request is added to {@code seen}.
     */
    private static com.sun.net.httpserver.HttpServer hub(Path files, String repo, String revision, String commit,
            String token, List<String> seen) throws java.io.IOException {
        com.sun.net.httpserver.HttpServer hub = com.sun.net.httpserver.HttpServer.create(
                new java.net.InetSocketAddress("127.0.0.1", 0), 0);
        hub.createContext("/", ex -> {
            seen.add(ex.getRequestMethod() + " " + ex.getRequestURI().getPath());
            String path = ex.getRequestURI().getPath().replace("/resolve/" + commit + "/", "/resolve/" + revision + "/");
            String prefix = "/" + repo + "/resolve/" + revision + "/"; // the revision, or the commit it names
            Path f = path.startsWith(prefix) ? files.resolve(path.substring(prefix.length())) : null;
            if (token != null && !("Bearer " + token).equals(ex.getRequestHeaders().getFirst("Authorization"))) {
                ex.sendResponseHeaders(401, -1);
            } else if (f == null || !Files.isRegularFile(f)) {
                ex.getResponseHeaders().add("X-Error-Code", f != null ? "EntryNotFound"
                        : path.startsWith("/" + repo + "/") ? "RevisionNotFound" : "RepoNotFound");
                ex.sendResponseHeaders(404, -1);
            } else {
                byte[] body = Files.readAllBytes(f);
                ex.getResponseHeaders().add("X-Repo-Commit", commit);
                ex.getResponseHeaders().add("ETag", "\"etag-" + f.getFileName() + "\"");
                if (ex.getRequestMethod().equals("HEAD")) {
                    ex.sendResponseHeaders(200, -1);
                } else {
                    ex.sendResponseHeaders(200, body.length);
                    ex.getResponseBody().write(body);
                }
            }
            ex.close();
        });
        hub.start();
        return hub;
    }

    /**
     * With {@code --gguf}, {@code --model <repo id>} gives only the tokenizer: tokenizer.json is all that is fetched
     * (a model repo's weights may be gigabytes, and the GGUF holds them), and the text generated is the folder's.
     */
    @Test
    void withGgufOnlyTheRepoTokenizerIsFetched(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 5);
        Path gguf = GgufCommandsTest.export(model, tmp.resolve("tiny.gguf"));
        String commit = "7777777777777777777777777777777777777777";
        List<String> seen = java.util.Collections.synchronizedList(new ArrayList<>());
        com.sun.net.httpserver.HttpServer hub = hub(model, "org/tiny-llama", "main", commit, null, seen);
        try {
            String endpoint = "http://127.0.0.1:" + hub.getAddress().getPort();
            String[] gen = {"generate", "--prompt", "hello world", "--max-new-tokens", "4", "--print-ids"};
            String[] byFolder = run(tmp, tmp.resolve("hub"), endpoint, concat(gen, "--model", model.toString()));
            String[] byGguf = run(tmp, tmp.resolve("hub"), endpoint, concat(gen, "--gguf", gguf.toString(),
                    "--model", "org/tiny-llama"));
            assertEquals("0", byFolder[0], byFolder[1] + byFolder[2]);
            assertEquals("0", byGguf[0], byGguf[1] + byGguf[2]);
            assertTrue(byGguf[1].contains("\nids: "), byGguf[1]);
            assertEquals(byFolder[1], byGguf[1], "the GGUF's weights, the repo's tokenizer");
            assertTrue(!seen.isEmpty() && seen.stream().allMatch(r -> r.endsWith("/tokenizer.json")),
                    "only tokenizer.json is fetched: " + seen);
            assertTrue(Files.exists(tmp.resolve("hub/models--org--tiny-llama/snapshots/" + commit
                    + "/tokenizer.json")));
            assertTrue(!Files.exists(tmp.resolve("hub/models--org--tiny-llama/snapshots/" + commit
                    + "/model.safetensors")));
        } finally {
            hub.stop(0);
        }
    }

    @Test
    void anAdapterRepoIdIsFetchedIntoTheCacheAndLoadsLikeItsFolder(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 5);
        Path adapter = TinyModels.loraAdapter(tmp.resolve("lora"), false);
        String commit = "6666666666666666666666666666666666666666";
        com.sun.net.httpserver.HttpServer hub = hub(adapter, "org/tiny-lora", "main", commit, null,
                java.util.Collections.synchronizedList(new ArrayList<>()));
        try {
            String endpoint = "http://127.0.0.1:" + hub.getAddress().getPort();
            Path cache = tmp.resolve("hub");
            String[] gen = {"generate", "--model", model.toString(), "--input-ids", "1,2,3", "--max-new-tokens", "6",
                "--adapter"};
            String[] byFolder = run(tmp, cache, endpoint, concat(gen, adapter.toString()));
            String[] byRepo = run(tmp, cache, endpoint, concat(gen, "org/tiny-lora"));
            assertEquals("0", byFolder[0], byFolder[1] + byFolder[2]);
            assertEquals("0", byRepo[0], byRepo[1] + byRepo[2]);
            assertEquals(byFolder[1], byRepo[1], "the fetched adapter is the folder's");
            Path snap = cache.resolve("models--org--tiny-lora/snapshots/" + commit);
            assertTrue(Files.isSymbolicLink(snap.resolve("adapter_model.safetensors")), "cached as huggingface_hub does");
            assertEquals(commit, Files.readString(cache.resolve("models--org--tiny-lora/refs/main")));

            hub.stop(0); // unreachable now: the cached snapshot serves
            String[] cached = run(tmp, cache, endpoint, concat(gen, "org/tiny-lora"));
            assertEquals("0", cached[0], cached[1] + cached[2]);
            assertEquals(byFolder[1], cached[1]);
        } finally {
            hub.stop(0);
        }
    }

    @Test
    void revisionTokenAndCacheDirFlagsReachTheHub(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 5);
        Path adapter = TinyModels.loraAdapter(tmp.resolve("lora"), false);
        String commit = "7777777777777777777777777777777777777777";
        List<String> seen = java.util.Collections.synchronizedList(new ArrayList<>());
        // only the tag v1, only with the token
        com.sun.net.httpserver.HttpServer hub = hub(adapter, "org/private-lora", "v1", commit, "s3cret", seen);
        try {
            String endpoint = "http://127.0.0.1:" + hub.getAddress().getPort();
            Path envCache = tmp.resolve("env-hub");
            Path flagCache = tmp.resolve("flag-hub");
            String[] gen = {"generate", "--model", model.toString(), "--input-ids", "1,2,3", "--max-new-tokens", "6",
                "--adapter"};
            String[] byFolder = run(tmp, envCache, endpoint, concat(gen, adapter.toString()));
            String[] noToken = run(tmp, envCache, endpoint, concat(concat(gen, "org/private-lora"), "--adapter-revision",
                    "v1"));
            String[] byFlags = run(tmp, envCache, endpoint, concat(concat(gen, "org/private-lora"), "--adapter-revision",
                    "v1", "--token", "s3cret", "--cache-dir", flagCache.toString()));
            assertEquals("0", byFolder[0], byFolder[1] + byFolder[2]);
            assertEquals("1", noToken[0], noToken[1] + noToken[2]);
            assertTrue(noToken[2].contains("401"), noToken[2]);
            assertEquals("0", byFlags[0], byFlags[1] + byFlags[2]);
            assertEquals(byFolder[1], byFlags[1], "the adapter at v1 is the folder's");
            assertTrue(seen.contains("HEAD /org/private-lora/resolve/v1/adapter_config.json"), seen.toString());
            assertEquals(commit, Files.readString(flagCache.resolve("models--org--private-lora/refs/v1")));
            assertTrue(!Files.exists(envCache.resolve("models--org--private-lora/snapshots")),
                    "--cache-dir, not HF_HUB_CACHE, holds the download");
        } finally {
            hub.stop(0);
        }
    }

    @Test
    void aModelRepoIdIsFetchedAtItsRevision(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 5);
        String commit = "8888888888888888888888888888888888888888";
        List<String> seen = java.util.Collections.synchronizedList(new ArrayList<>());
        com.sun.net.httpserver.HttpServer hub = hub(model, "org/tiny-llama", "v2", commit, null, seen); // v2 only
        try {
            String endpoint = "http://127.0.0.1:" + hub.getAddress().getPort();
            Path cache = tmp.resolve("hub");
            String[] gen = {"generate", "--prompt", "hello world", "--max-new-tokens", "4", "--print-ids", "--model"};
            String[] byFolder = run(tmp, cache, endpoint, concat(gen, model.toString()));
            String[] atV2 = run(tmp, cache, endpoint, concat(gen, "org/tiny-llama", "--revision", "v2"));
            String[] atMain = run(tmp, cache, endpoint, concat(gen, "org/tiny-llama"));
            assertEquals("0", byFolder[0], byFolder[1] + byFolder[2]);
            assertEquals("0", atV2[0], atV2[1] + atV2[2]);
            assertEquals(byFolder[1], atV2[1], "the model and tokenizer at v2 are the folder's");
            assertTrue(seen.contains("HEAD /org/tiny-llama/resolve/v2/config.json"), seen.toString());
            assertEquals(commit, Files.readString(cache.resolve("models--org--tiny-llama/refs/v2")));
            assertEquals("1", atMain[0], atMain[1] + atMain[2]);
            assertTrue(atMain[2].contains("revision 'main' of 'org/tiny-llama' does not exist"), atMain[2]);
        } finally {
            hub.stop(0);
        }
    }

    private static String[] concat(String[] a, String... more) {
        String[] out = java.util.Arrays.copyOf(a, a.length + more.length);
        System.arraycopy(more, 0, out, a.length, more.length);
        return out;
    }
}
