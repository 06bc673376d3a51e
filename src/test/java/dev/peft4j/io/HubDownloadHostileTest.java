package dev.peft4j.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpHandler;
import com.sun.net.httpserver.HttpServer;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The Hub client against a hostile local server (127.0.0.1 only; "localhost" stands for another host): redirects
 * across hosts, a body that stalls or is cut, a body that is not what its sha256 says, transient errors, a missing
 * file, two processes downloading one blob, and a token that must stay out of every message.
 */
class HubDownloadHostileTest {
    private static final String COMMIT = "9999999999999999999999999999999999999999";
    private static final String FILE = "adapter_model.safetensors";
    private static final String TOKEN = "hf_SeCrEtToKeN42";

    // small timeouts and waits: each test runs in about a second
    private static final HubDownload.Network NET = new HubDownload.Network(Duration.ofMillis(400),
            Duration.ofMillis(400), 2, Duration.ofMillis(10), true);

    @TempDir
    Path tmp;

    private final List<AutoCloseable> servers = new ArrayList<>();
    private final List<String> seen = new CopyOnWriteArrayList<>();
    private volatile String base; // the server's http://127.0.0.1:<port>, for absolute redirects (a CDN's)

    @AfterEach
    void stop() throws Exception {
        for (AutoCloseable s : servers) {
            s.close();
        }
    }

    private static byte[] body(int n, long seed) {
        byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    private static String sha256(byte[] b) throws Exception {
        return java.util.HexFormat.of().formatHex(java.security.MessageDigest.getInstance("SHA-256").digest(b));
    }

    /** An HTTP server on 127.0.0.1 with one handler; each request is added to {@link #seen}. */
    private int serve(HttpHandler h) throws IOException {
        HttpServer s = HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 0);
        ExecutorService pool = Executors.newCachedThreadPool();
        s.setExecutor(pool);
        s.createContext("/", ex -> {
            String auth = ex.getRequestHeaders().getFirst("Authorization");
            String range = ex.getRequestHeaders().getFirst("Range");
            seen.add(ex.getRequestMethod() + " " + ex.getRequestHeaders().getFirst("Host").replaceAll(":\\d+$", "")
                    + ex.getRequestURI().getPath() + (range == null ? "" : " " + range)
                    + (auth == null ? "" : " " + auth));
            try {
                h.handle(ex);
            } finally {
                ex.close();
            }
        });
        s.start();
        servers.add(() -> {
            s.stop(0);
            pool.shutdownNow();
        });
        base = "http://127.0.0.1:" + s.getAddress().getPort();
        return s.getAddress().getPort();
    }

    /** The Hub's answer to a HEAD for a large file: its commit, sha256, size, and a redirect to {@code location}. */
    private static void lfsHead(HttpExchange ex, byte[] body, String sha, String location) throws IOException {
        ex.getResponseHeaders().add("X-Repo-Commit", COMMIT);
        ex.getResponseHeaders().add("X-Linked-Etag", "\"" + sha + "\"");
        ex.getResponseHeaders().add("X-Linked-Size", String.valueOf(body.length));
        ex.getResponseHeaders().add("Location", location);
        ex.sendResponseHeaders(302, -1);
    }

    private static void send(HttpExchange ex, int status, byte[] body) throws IOException {
        ex.sendResponseHeaders(status, body.length == 0 ? -1 : body.length);
        ex.getResponseBody().write(body);
    }

    private HubDownload.Settings settings(int port, String token) {
        return new HubDownload.Settings("http://127.0.0.1:" + port, token, false).withNetwork(NET);
    }

    private static List<Path> files(Path dir) throws IOException {
        if (!Files.isDirectory(dir)) {
            return List.of();
        }
        try (Stream<Path> s = Files.list(dir)) {
            return s.sorted().toList();
        }
    }

    @Test
    void aRedirectToAnotherHostCarriesNoTokenAndRedirectsAreBounded() throws Exception {
        byte[] w = body(3000, 1);
        String sha = sha256(w);
        int[] port = new int[1];
        port[0] = serve(ex -> {
            String p = ex.getRequestURI().getPath();
            String other = "http://localhost:" + port[0]; // another host name for the same loopback server
            if (p.equals("/org/lora/resolve/main/" + FILE)) {
                lfsHead(ex, w, sha, other + "/cdn/w");
            } else if (p.equals("/org/hop/resolve/main/" + FILE)) {
                lfsHead(ex, w, sha, base + "/cdn/hop"); // same host first, then the CDN
            } else if (p.equals("/cdn/hop")) {
                ex.getResponseHeaders().add("Location", other + "/cdn/w");
                ex.sendResponseHeaders(302, -1);
            } else if (p.equals("/old/name/resolve/main/adapter_config.json")) { // a renamed repo: relative
                ex.getResponseHeaders().add("Location", "/org/lora/resolve/main/adapter_config.json");
                ex.sendResponseHeaders(307, -1);
            } else if (p.equals("/org/lora/resolve/main/adapter_config.json")) {
                ex.getResponseHeaders().add("X-Repo-Commit", COMMIT);
                ex.getResponseHeaders().add("ETag", "\"cfg\"");
                send(ex, 200, ex.getRequestMethod().equals("HEAD") ? new byte[0] : "{}".getBytes());
            } else if (p.equals("/org/loop/resolve/main/" + FILE)) {
                lfsHead(ex, w, sha, base + "/cdn/loop");
            } else if (p.equals("/cdn/loop")) {
                ex.getResponseHeaders().add("Location", "/cdn/loop");
                ex.sendResponseHeaders(302, -1);
            } else if (p.equals("/cdn/w")) {
                send(ex, 200, w);
            } else {
                ex.getResponseHeaders().add("X-Error-Code", "RepoNotFound");
                ex.sendResponseHeaders(404, -1);
            }
        });
        Path root = tmp.resolve("hub");
        HubDownload.Settings s = settings(port[0], TOKEN);
        assertArrayEquals(w, Files.readAllBytes(HubDownload.file(root, "org/lora", null, FILE, s)));
        assertEquals(List.of("HEAD 127.0.0.1/org/lora/resolve/main/" + FILE + " Bearer " + TOKEN,
                "GET localhost/cdn/w"), seen, "the other host gets no token");

        seen.clear();
        HubDownload.file(tmp.resolve("hub2"), "org/hop", null, FILE, s);
        assertEquals(List.of("HEAD 127.0.0.1/org/hop/resolve/main/" + FILE + " Bearer " + TOKEN,
                "GET 127.0.0.1/cdn/hop Bearer " + TOKEN, "GET localhost/cdn/w"), seen,
                "the Hub's host keeps it, the first other host drops it");

        seen.clear();
        HubDownload.file(root, "old/name", null, "adapter_config.json", s);
        assertEquals(List.of("HEAD 127.0.0.1/old/name/resolve/main/adapter_config.json Bearer " + TOKEN,
                "HEAD 127.0.0.1/org/lora/resolve/main/adapter_config.json Bearer " + TOKEN,
                "GET 127.0.0.1/org/lora/resolve/main/adapter_config.json Bearer " + TOKEN), seen,
                "a relative redirect (renamed repo) is the Hub itself, and the GET goes where it led");

        seen.clear();
        IOException loop = assertThrows(IOException.class,
                () -> HubDownload.file(tmp.resolve("hub3"), "org/loop", null, FILE, s));
        assertTrue(loop.getMessage().contains("more than " + HubHttp.MAX_REDIRECTS + " redirects"),
                loop.getMessage());
        assertEquals(2 + HubHttp.MAX_REDIRECTS, seen.size(), "one HEAD, then the first GET and 20 redirects");
        assertTrue(files(tmp.resolve("hub3/models--org--loop/blobs")).isEmpty(), "nothing cached");
    }

    /**
     * A raw HTTP/1.1 server (one request per connection) for what HttpServer cannot do: stall mid-body, cut the
     * connection. {@code answer} writes the whole response for (method, path, headers) to the socket's stream.
     */
    private interface Raw {
        void answer(String method, String path, Map<String, String> headers, OutputStream out) throws Exception;
    }

    private int raw(Raw answer) throws IOException {
        ServerSocket ss = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
        ExecutorService pool = Executors.newCachedThreadPool();
        List<Socket> open = new CopyOnWriteArrayList<>();
        pool.submit(() -> {
            while (!ss.isClosed()) {
                Socket c;
                try {
                    c = ss.accept();
                } catch (IOException e) {
                    return null;
                }
                open.add(c);
                pool.submit(() -> {
                    try (c) {
                        InputStream in = c.getInputStream();
                        String[] line = readLine(in).split(" ");
                        Map<String, String> h = new HashMap<>();
                        for (String l; !(l = readLine(in)).isEmpty(); ) {
                            int i = l.indexOf(':');
                            h.put(l.substring(0, i).trim().toLowerCase(), l.substring(i + 1).trim());
                        }
                        String range = h.get("range");
                        seen.add(line[0] + " " + line[1] + (range == null ? "" : " " + range));
                        answer.answer(line[0], line[1], h, c.getOutputStream());
                        c.getOutputStream().flush();
                        c.shutdownOutput();
                    } catch (Exception e) {
                        // the client went away
                    }
                    return null;
                });
            }
            return null;
        });
        servers.add(() -> {
            ss.close();
            for (Socket c : open) {
                c.close();
            }
            pool.shutdownNow();
        });
        base = "http://127.0.0.1:" + ss.getLocalPort();
        return ss.getLocalPort();
    }

    private static String readLine(InputStream in) throws IOException {
        StringBuilder b = new StringBuilder();
        for (int c; (c = in.read()) != -1 && c != '\n'; ) {
            if (c != '\r') {
                b.append((char) c);
            }
        }
        return b.toString();
    }

    private static void headers(OutputStream out, String status, String... lines) throws IOException {
        StringBuilder b = new StringBuilder("HTTP/1.1 " + status + "\r\nConnection: close\r\n");
        for (String l : lines) {
            b.append(l).append("\r\n");
        }
        out.write(b.append("\r\n").toString().getBytes(StandardCharsets.US_ASCII));
        out.flush();
    }

    private static String[] lfsHeaders(byte[] body, String sha, String location) {
        return new String[] {"X-Repo-Commit: " + COMMIT, "X-Linked-Etag: \"" + sha + "\"", "X-Linked-Size: "
                + body.length, "Location: " + location, "Content-Length: 0"};
    }

    @Test
    void aStalledBodyTimesOutWithinTheConfiguredTimeoutWhileASlowSteadyOneCompletes() throws Exception {
        byte[] w = body(6000, 2);
        String sha = sha256(w);
        int port = raw((method, path, h, out) -> {
            if (method.equals("HEAD")) {
                headers(out, "302 Found", lfsHeaders(w, sha, base + (path.startsWith("/org/stall/") ? "/cdn/stall"
                        : "/cdn/blob")));
            } else if (path.equals("/cdn/stall")) {
                headers(out, "200 OK", "Content-Length: " + w.length);
                out.write(w, 0, 100); // then nothing, the connection open
                out.flush();
                Thread.sleep(30_000);
            } else if (path.equals("/cdn/blob")) { // 6 chunks 150 ms apart: 900 ms in all, under 400 ms each
                headers(out, "200 OK", "Content-Length: " + w.length);
                for (int i = 0; i < 6; i++) {
                    Thread.sleep(150);
                    out.write(w, i * 1000, 1000);
                    out.flush();
                }
            }
        });
        HubDownload.Settings noRetry = settings(port, null).withNetwork(new HubDownload.Network(Duration.ofMillis(300),
                Duration.ofMillis(300), 0, Duration.ofMillis(10), true));
        Path root = tmp.resolve("hub");
        // first (which also warms the client up): a body slower in all than the timeout, each chunk in time
        long t0 = System.nanoTime();
        Path got = HubDownload.file(root, "org/slow", null, FILE, noRetry);
        assertArrayEquals(w, Files.readAllBytes(got));
        assertTrue((System.nanoTime() - t0) / 1_000_000 >= 900);

        t0 = System.nanoTime();
        IOException e = assertThrows(IOException.class, () -> HubDownload.file(root, "org/stall", null, FILE,
                noRetry));
        long ms = (System.nanoTime() - t0) / 1_000_000;
        assertTrue(ms >= 300 && ms < 2000, "failed after " + ms + " ms, the timeout is 300 ms");
        assertTrue(e.getMessage().contains("org/stall/" + FILE) && e.getMessage().contains("no data for 0.3 s")
                && e.getMessage().contains("HF_HUB_DOWNLOAD_TIMEOUT"), e.getMessage());
        assertFalse(Files.exists(root.resolve("models--org--stall/snapshots")), "nothing linked");
        assertTrue(files(root.resolve("models--org--stall/blobs")).stream()
                .allMatch(p -> p.getFileName().toString().endsWith(".incomplete")), "no blob, only a resumable part");

        // with retries the stall is retried (as huggingface_hub does a read timeout), still bounded
        t0 = System.nanoTime();
        assertThrows(IOException.class, () -> HubDownload.file(tmp.resolve("h2"), "org/stall", null, FILE,
                settings(port, null)));
        ms = (System.nanoTime() - t0) / 1_000_000;
        assertTrue(ms < (2 + NET.maxRetries()) * 400 + 2000, "failed after " + ms + " ms");
    }

    @Test
    void aWrongSha256IsRefusedAndNothingIsCached() throws Exception {
        byte[] w = body(5000, 3);
        byte[] tampered = w.clone();
        tampered[1234] ^= 1;
        String sha = sha256(w);
        int port = serve(ex -> {
            if (ex.getRequestMethod().equals("HEAD")) {
                lfsHead(ex, w, sha, base + "/cdn/blob");
            } else {
                send(ex, 200, tampered);
            }
        });
        Path root = tmp.resolve("hub");
        IOException e = assertThrows(IOException.class, () -> HubDownload.file(root, "org/lora", null, FILE,
                settings(port, null)));
        assertTrue(e.getMessage().contains("org/lora/" + FILE) && e.getMessage().contains("sha256 mismatch")
                && e.getMessage().contains(sha) && e.getMessage().contains(sha256(tampered)), e.getMessage());
        Path repo = root.resolve("models--org--lora");
        assertEquals(List.of(), files(repo.resolve("blobs")), "no blob and no partial file");
        assertFalse(Files.exists(repo.resolve("snapshots")), "nothing linked");
        HubDownload.Settings offline = new HubDownload.Settings("http://unused", null, true);
        assertThrows(NoSuchFileException.class, () -> HubDownload.file(root, "org/lora", null, FILE, offline),
                "offline, the file is not in the cache");
    }

    @Test
    void aCutDownloadResumesWithARangeRequest() throws Exception {
        byte[] w = body(64 * 1024, 4);
        String sha = sha256(w);
        AtomicInteger gets = new AtomicInteger();
        boolean[] ignoreRange = {false};
        int port = raw((method, path, h, out) -> {
            if (method.equals("HEAD")) {
                headers(out, "302 Found", lfsHeaders(w, sha, base + "/cdn/blob"));
                return;
            }
            String range = h.get("range");
            if (range == null || ignoreRange[0]) {
                headers(out, "200 OK", "Content-Length: " + w.length);
                if (gets.getAndIncrement() == 0 && !ignoreRange[0]) {
                    out.write(w, 0, 20_000); // then the connection is cut
                    return;
                }
                out.write(w);
                return;
            }
            int from = Integer.parseInt(range.replaceAll("bytes=(\\d+)-", "$1"));
            headers(out, "206 Partial Content", "Content-Length: " + (w.length - from),
                    "Content-Range: bytes " + from + "-" + (w.length - 1) + "/" + w.length);
            out.write(w, from, w.length - from);
        });
        Path root = tmp.resolve("hub");
        Path got = HubDownload.file(root, "org/lora", null, FILE, settings(port, null));
        assertArrayEquals(w, Files.readAllBytes(got));
        assertEquals(List.of("HEAD /org/lora/resolve/main/" + FILE, "GET /cdn/blob", "GET /cdn/blob bytes=20000-"),
                seen, "the second GET asks for the rest only");
        assertEquals(List.of(root.resolve("models--org--lora/blobs/" + sha)),
                files(root.resolve("models--org--lora/blobs")));

        // a part left by an earlier run is resumed
        Path root2 = tmp.resolve("hub2");
        Path blobs = Files.createDirectories(root2.resolve("models--org--lora/blobs"));
        Files.write(blobs.resolve(sha + ".incomplete"), java.util.Arrays.copyOf(w, 1000));
        seen.clear();
        assertArrayEquals(w, Files.readAllBytes(HubDownload.file(root2, "org/lora", null, FILE,
                settings(port, null))));
        assertEquals(List.of("HEAD /org/lora/resolve/main/" + FILE, "GET /cdn/blob bytes=1000-"), seen);
        assertEquals(List.of(blobs.resolve(sha)), files(blobs));

        // a server that ignores the range: the whole body again, not appended
        ignoreRange[0] = true;
        Path root3 = tmp.resolve("hub3");
        Path blobs3 = Files.createDirectories(root3.resolve("models--org--lora/blobs"));
        Files.write(blobs3.resolve(sha + ".incomplete"), java.util.Arrays.copyOf(w, 1000));
        assertArrayEquals(w, Files.readAllBytes(HubDownload.file(root3, "org/lora", null, FILE,
                settings(port, null))));
    }

    @Test
    void transientErrorsAreRetriedWithBackoffAndABoundedCount() throws Exception {
        byte[] w = body(2000, 5);
        String sha = sha256(w);
        AtomicInteger heads = new AtomicInteger();
        AtomicInteger gets = new AtomicInteger();
        int port = serve(ex -> {
            boolean down = ex.getRequestURI().getPath().startsWith("/org/down/");
            if (ex.getRequestMethod().equals("HEAD")) {
                if (down || heads.getAndIncrement() < 2) {
                    ex.sendResponseHeaders(503, -1);
                } else {
                    lfsHead(ex, w, sha, base + "/cdn/blob");
                }
            } else if (gets.getAndIncrement() < 1) {
                ex.sendResponseHeaders(502, -1);
            } else {
                send(ex, 200, w);
            }
        });
        Path root = tmp.resolve("hub");
        assertArrayEquals(w, Files.readAllBytes(HubDownload.file(root, "org/lora", null, FILE, settings(port, null))));
        assertEquals(3, heads.get(), "503 twice, then the answer");
        assertEquals(2, gets.get(), "502 once, then the body");

        seen.clear();
        IOException e = assertThrows(IOException.class, () -> HubDownload.file(root, "org/down", null, FILE,
                settings(port, null)));
        assertTrue(e.getMessage().contains("HTTP 503") && e.getMessage().contains("cannot be reached"),
                e.getMessage());
        // one try (the cache could have answered), then one more and NET.maxRetries() retries
        assertEquals(2 + NET.maxRetries(), seen.size(), seen.toString());
        assertEquals(10, HubHttp.backoff(Duration.ofMillis(10), 0).toMillis());
        assertEquals(40, HubHttp.backoff(Duration.ofMillis(10), 2).toMillis());
        assertEquals(80, HubHttp.backoff(Duration.ofMillis(10), 9).toMillis(), "at most 8 times the first wait");
    }

    @Test
    void aMissingFileIsRecordedInNoExistAndHonouredOffline() throws Exception {
        int port = serve(ex -> {
            ex.getResponseHeaders().add("X-Repo-Commit", COMMIT);
            ex.getResponseHeaders().add("X-Error-Code", "EntryNotFound");
            ex.sendResponseHeaders(404, -1);
        });
        Path root = tmp.resolve("hub");
        assertNull(HubDownload.file(root, "org/lora", null, "adapter_model.bin", settings(port, null)));
        Path repo = root.resolve("models--org--lora");
        assertTrue(Files.isRegularFile(repo.resolve(".no_exist/" + COMMIT + "/adapter_model.bin")),
                "huggingface_hub's record of a missing file");
        assertEquals(COMMIT, Files.readString(repo.resolve("refs/main")));
        seen.clear();
        HubDownload.Settings offline = new HubDownload.Settings("http://127.0.0.1:" + port, null, true);
        assertNull(HubDownload.file(root, "org/lora", null, "adapter_model.bin", offline),
                "offline: known missing, though no snapshot folder exists");
        assertThrows(NoSuchFileException.class, () -> HubDownload.file(root, "org/lora", null, "other.bin", offline),
                "a file not recorded is unknown offline");
        assertEquals(List.of(), seen, "offline: no request");
    }

    /** A second process for the race below: downloads args[2] of args[1] into the cache args[0] from args[3]. */
    static final class Child {
        public static void main(String[] args) throws Exception {
            HubDownload.Settings s = new HubDownload.Settings(args[3], null, false).withNetwork(new HubDownload.Network(
                    Duration.ofSeconds(20), Duration.ofSeconds(20), 0, Duration.ofMillis(10), true));
            System.out.println(HubDownload.file(Path.of(args[0]), args[1], null, args[2], s));
        }
    }

    @Test
    void twoProcessesDownloadingOneFileAtOnceBothSucceedWithOneBlob() throws Exception {
        byte[] w = body(200_000, 6);
        String sha = sha256(w);
        AtomicInteger heads = new AtomicInteger();
        AtomicInteger gets = new AtomicInteger();
        int port = serve(ex -> {
            if (ex.getRequestMethod().equals("HEAD")) {
                heads.incrementAndGet();
                lfsHead(ex, w, sha, base + "/cdn/blob");
                return;
            }
            gets.incrementAndGet();
            // hold the body until both processes have asked for the file, so that they overlap
            for (long end = System.nanoTime() + 15_000_000_000L; heads.get() < 2 && System.nanoTime() < end; ) {
                sleep(10);
            }
            ex.sendResponseHeaders(200, w.length);
            for (int i = 0; i < 4; i++) {
                ex.getResponseBody().write(w, i * 50_000, 50_000);
                ex.getResponseBody().flush();
                sleep(50);
            }
        });
        Path root = tmp.resolve("hub");
        String endpoint = "http://127.0.0.1:" + port;
        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        Process child = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-cp",
                cp, Child.class.getName(), root.toString(), "org/lora", FILE, endpoint).redirectErrorStream(true)
                .start();
        Path mine = HubDownload.file(root, "org/lora", null, FILE, new HubDownload.Settings(endpoint, null, false)
                .withNetwork(new HubDownload.Network(Duration.ofSeconds(20), Duration.ofSeconds(20), 0,
                        Duration.ofMillis(10), true)));
        assertTrue(child.waitFor(60, TimeUnit.SECONDS), "the child finished");
        String out = new String(child.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
        assertEquals(0, child.exitValue(), out);
        assertEquals(mine.toString(), out.lines().reduce((a, b) -> b).orElse(""), "the same snapshot file");
        assertArrayEquals(w, Files.readAllBytes(mine));
        assertEquals(2, heads.get());
        assertEquals(1, gets.get(), "one process downloaded, the other waited on the lock and found the blob");
        Path repo = root.resolve("models--org--lora");
        assertEquals(List.of(repo.resolve("blobs/" + sha)), files(repo.resolve("blobs")), "one blob, no part left");
        assertTrue(Files.isRegularFile(root.resolve(".locks/models--org--lora/" + sha + ".lock")),
                "the lock where huggingface_hub keeps its own");
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @Test
    void threadsOfOneProcessShareTheLockToo() throws Exception {
        byte[] w = body(100_000, 7);
        String sha = sha256(w);
        AtomicInteger gets = new AtomicInteger();
        int port = serve(ex -> {
            if (ex.getRequestMethod().equals("HEAD")) {
                lfsHead(ex, w, sha, base + "/cdn/blob");
            } else {
                gets.incrementAndGet();
                sleep(200);
                send(ex, 200, w);
            }
        });
        Path root = tmp.resolve("hub");
        ExecutorService pool = Executors.newFixedThreadPool(4);
        try {
            List<java.util.concurrent.Future<Path>> all = new ArrayList<>();
            for (int i = 0; i < 4; i++) {
                all.add(pool.submit(() -> HubDownload.file(root, "org/lora", null, FILE, settings(port, null)
                        .withNetwork(new HubDownload.Network(Duration.ofSeconds(5), Duration.ofSeconds(5), 0,
                                Duration.ofMillis(10), true)))));
            }
            for (var f : all) {
                assertArrayEquals(w, Files.readAllBytes(f.get(30, TimeUnit.SECONDS)));
            }
        } finally {
            pool.shutdownNow();
        }
        assertEquals(1, gets.get(), "one download for four threads");
    }

    @Test
    void theTokenAppearsInNoMessageLogLineOrToString() throws Exception {
        byte[] w = body(3000, 8);
        String sha = sha256(w);
        int[] port = new int[1];
        port[0] = serve(ex -> {
            String p = ex.getRequestURI().getPath();
            if (p.startsWith("/org/denied/")) {
                ex.sendResponseHeaders(401, -1);
            } else if (p.startsWith("/org/flaky/")) {
                ex.sendResponseHeaders(500, -1);
            } else if (p.startsWith("/org/bad/") && ex.getRequestMethod().equals("HEAD")) {
                lfsHead(ex, w, sha, "http://localhost:" + port[0] + "/cdn/bad?X-Amz-Signature=" + TOKEN);
            } else {
                send(ex, 200, body(3000, 9)); // the right size, not the right bytes
            }
        });
        HubDownload.Settings s = settings(port[0], TOKEN);
        assertFalse(s.toString().contains(TOKEN), s.toString());
        assertTrue(s.toString().contains("token=(hidden)"), s.toString());
        PrintStream err = System.err;
        ByteArrayOutputStream logged = new ByteArrayOutputStream();
        List<String> messages = new ArrayList<>();
        System.setErr(new PrintStream(logged, true, StandardCharsets.UTF_8));
        try {
            for (String repo : new String[] {"org/denied", "org/flaky", "org/bad"}) {
                IOException e = assertThrows(IOException.class,
                        () -> HubDownload.file(tmp.resolve("hub"), repo, null, FILE, s));
                for (Throwable t = e; t != null; t = t.getCause()) {
                    messages.add(String.valueOf(t));
                    for (Throwable x : t.getSuppressed()) {
                        messages.add(String.valueOf(x));
                    }
                }
            }
        } finally {
            System.setErr(err);
        }
        String all = String.join("\n", messages) + "\n" + logged.toString(StandardCharsets.UTF_8);
        assertTrue(all.contains("HTTP 401") && all.contains("HTTP 500") && all.contains("sha256 mismatch")
                && all.contains("retrying"), all);
        assertFalse(all.contains(TOKEN), "the token (or a signed URL's query) leaked:\n" + all);
        assertFalse(all.contains("\r"), "no progress bar off a terminal");
    }

    @Test
    void settingsFromTheEnvironmentFollowHuggingfaceHub() throws IOException {
        String home = tmp.toString();
        Path hfHome = Files.createDirectories(tmp.resolve("hf-home"));
        Files.writeString(hfHome.resolve("token"), "  from-hf-home\r\n");
        Path xdg = Files.createDirectories(tmp.resolve("xdg/huggingface"));
        Files.writeString(xdg.resolve("token"), "from-xdg");
        Path other = Files.writeString(tmp.resolve("elsewhere"), "from-token-path\n");
        Map<String, String> env = new HashMap<>(Map.of("HF_TOKEN", "a", "HUGGING_FACE_HUB_TOKEN", "b",
                "HF_TOKEN_PATH", other.toString(), "HF_HOME", hfHome.toString(), "XDG_CACHE_HOME",
                tmp.resolve("xdg").toString()));
        assertEquals("given", HubDownload.Settings.fromEnvironment("given", env, home).token());
        assertEquals("a", HubDownload.Settings.fromEnvironment(null, env, home).token());
        env.put("HF_TOKEN", ""); // empty: the next one, as Python's `or`
        assertEquals("b", HubDownload.Settings.fromEnvironment(null, env, home).token());
        env.remove("HUGGING_FACE_HUB_TOKEN");
        assertEquals("from-token-path", HubDownload.Settings.fromEnvironment(null, env, home).token());
        env.remove("HF_TOKEN_PATH");
        assertEquals("from-hf-home", HubDownload.Settings.fromEnvironment(null, env, home).token());
        env.remove("HF_HOME");
        assertEquals("from-xdg", HubDownload.Settings.fromEnvironment(null, env, home).token());
        env.remove("XDG_CACHE_HOME");
        assertNull(HubDownload.Settings.fromEnvironment(null, env, home).token(), "~/.cache/huggingface/token: none");
        assertEquals(Path.of(home, "t"), HubDownload.Settings.tokenPath(Map.of("HF_TOKEN_PATH", "~/t"), home));

        assertEquals(HubDownload.Network.DEFAULTS, HubDownload.Settings.fromEnvironment(null, Map.of(), home)
                .network());
        assertEquals(Duration.ofSeconds(10), HubDownload.Network.DEFAULTS.downloadTimeout());
        HubDownload.Network n = HubDownload.Settings.fromEnvironment(null, Map.of("HF_HUB_DOWNLOAD_TIMEOUT", "3",
                "HF_HUB_ETAG_TIMEOUT", "2", "HF_HUB_DISABLE_PROGRESS_BARS", "1"), home).network();
        assertEquals(Duration.ofSeconds(3), n.downloadTimeout());
        assertEquals(Duration.ofSeconds(2), n.etagTimeout());
        assertFalse(n.progressBars());
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class, () -> HubDownload.Settings
                .fromEnvironment(null, Map.of("HF_HUB_ETAG_TIMEOUT", "soon"), home));
        assertTrue(bad.getMessage().contains("HF_HUB_ETAG_TIMEOUT='soon'"), bad.getMessage());
    }

    @Test
    void theProgressBarDrawsOneLineInPlaceAndNothingOffATerminal() {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        ProgressBar bar = new ProgressBar(new PrintStream(b, true, StandardCharsets.UTF_8), "model.safetensors",
                2_000_000, 500_000);
        bar.advance(1_500_000);
        bar.close();
        String out = b.toString(StandardCharsets.UTF_8);
        assertTrue(out.startsWith("\rmodel.safetensors:") && out.contains("100% 2.0MB/2.0MB") && out.endsWith("\n")
                && out.chars().filter(c -> c == '\n').count() == 1, out);
        assertFalse(ProgressBar.onTerminal(), "tests run off a terminal");
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        PrintStream saved = System.err;
        System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
        try (ProgressBar none = ProgressBar.open("x", 10, 0, true)) {
            none.advance(10);
        } finally {
            System.setErr(saved);
        }
        assertEquals("", err.toString(StandardCharsets.UTF_8));
    }
}
