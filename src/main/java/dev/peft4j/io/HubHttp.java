package dev.peft4j.io;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;
import java.util.concurrent.Flow;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The HTTP side of {@link HubDownload}, as huggingface_hub does it: redirects followed here (never by the client), the
 * token sent only while the scheme, host and port stay those of the request it was given to; a read timeout on
 * every chunk of a body; retries with exponential backoff on 408, 429, 5xx and network errors; a cut download resumed
 * with a {@code Range} request. No log line or exception message carries a token or a URL's query string (a CDN's
 * signed URL).
 */
final class HubHttp {
    private static final Logger LOG = LoggerFactory.getLogger(HubHttp.class);

    /** httpx's default bound, which huggingface_hub's downloads run under. */
    static final int MAX_REDIRECTS = 20;

    private static final Pattern CONTENT_RANGE = Pattern.compile("bytes (\\d+)-\\d+/(\\d+|\\*)");

    // one client per connect timeout: a client pools connections and owns a selector thread
    private static final ConcurrentMap<Duration, HttpClient> CLIENTS = new ConcurrentHashMap<>();

    private HubHttp() {}

    private static HttpClient client(Duration connectTimeout) {
        return CLIENTS.computeIfAbsent(connectTimeout, t -> HttpClient.newBuilder().connectTimeout(t)
                .followRedirects(HttpClient.Redirect.NEVER).build());
    }

    /** A failure worth another try: a network error, a timeout, a cut body, HTTP 408 / 429 / 5xx. */
    static final class TransientException extends IOException {
        TransientException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    static boolean retryableStatus(int status) {
        return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
    }

    /** The wait before retry {@code n} (0-based): {@code base}, doubling, at most 8 times {@code base}. */
    static Duration backoff(Duration base, int n) {
        return base.multipliedBy(1L << Math.min(n, 3));
    }

    static void sleep(Duration d) throws IOException {
        try {
            Thread.sleep(d.toMillis());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new java.io.InterruptedIOException("interrupted while waiting to retry");
        }
    }

    /**
     * HEAD {@code url}, following relative redirects only (a renamed repo) with the token; an absolute {@code Location}
     * (a CDN) is returned as is, since its headers carry the file's metadata. One try: the caller retries.
     *
     * @throws TransientException on a network error or timeout
     */
    static HttpResponse<Void> head(String url, String token, Duration timeout) throws IOException {
        String u = url;
        for (int hop = 0; ; hop++) {
            HttpResponse<Void> r;
            try {
                r = client(timeout).send(request(u, token, timeout).method("HEAD", HttpRequest.BodyPublishers.noBody())
                        .build(), HttpResponse.BodyHandlers.discarding());
            } catch (IOException e) {
                throw new TransientException(display(u) + ": " + describe(e), e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new java.io.InterruptedIOException(display(u) + ": interrupted");
            }
            Optional<String> loc = r.headers().firstValue("Location");
            if (!isRedirect(r.statusCode()) || loc.isEmpty() || isAbsolute(loc.get())) {
                return r;
            }
            if (hop >= MAX_REDIRECTS) {
                throw new IOException(display(url) + ": more than " + MAX_REDIRECTS + " redirects");
            }
            u = resolve(u, loc.get());
        }
    }

    /**
     * GET {@code url} into {@code partial}, appending to what it already holds with a {@code Range} request (a server
     * that ignores the range restarts it), retrying transient failures with backoff: at most {@code maxRetries} in a
     * row without a byte received, as huggingface_hub counts them. Each chunk of the body must arrive within
     * {@code timeout}. {@code expectedSize} (or -1) is the size the Hub announced.
     */
    static void download(String url, String token, Path partial, long expectedSize, String name,
            HubDownload.Network net) throws IOException {
        int failures = 0;
        while (true) {
            long have = Files.exists(partial) ? Files.size(partial) : 0;
            if (expectedSize >= 0 && have > expectedSize) {
                truncate(partial);
                have = 0;
            }
            if (expectedSize > 0 && have == expectedSize) {
                return; // complete already (a resumed blob that was whole)
            }
            try {
                fetchOnce(url, token, partial, have, expectedSize, name, net);
                return;
            } catch (TransientException e) {
                if (Files.exists(partial) && Files.size(partial) > have) {
                    failures = 0; // bytes came in: the connection works, the count starts again
                }
                if (failures >= net.maxRetries()) {
                    throw new IOException(name + ": download from " + display(url) + " failed after "
                            + net.maxRetries() + " retries: " + e.getMessage(), e);
                }
                Duration wait = backoff(net.retryWait(), failures++);
                LOG.warn("{}: {}; retrying in {} ms ({}/{})", name, e.getMessage(), wait.toMillis(), failures,
                        net.maxRetries());
                sleep(wait);
            }
        }
    }

    private static void fetchOnce(String url, String token, Path partial, long have, long expectedSize,
            String name, HubDownload.Network net) throws IOException {
        Opened o = open(url, token, have, net.downloadTimeout());
        try (ChunkReader body = o.body) {
            int status = o.response.statusCode();
            boolean append;
            if (status == 206) {
                long start = o.response.headers().firstValue("Content-Range").map(CONTENT_RANGE::matcher)
                        .filter(Matcher::matches).map(m -> Long.parseLong(m.group(1))).orElse(-1L);
                if (start != have) { // not the range asked for: start over
                    truncate(partial);
                    throw new TransientException(display(o.url) + ": HTTP 206 for bytes from " + start + ", not "
                            + have, null);
                }
                append = true;
            } else if (status == 416 && have > 0) { // the partial file is no prefix of this one
                truncate(partial);
                throw new TransientException(display(o.url) + ": HTTP 416 for bytes from " + have, null);
            } else if (status == 200) {
                append = false; // the whole body, whatever was asked
            } else if (retryableStatus(status)) {
                throw new TransientException(display(o.url) + ": HTTP " + status, null);
            } else {
                throw new IOException(name + ": " + display(o.url) + ": HTTP " + status + " while downloading");
            }
            long total = append ? -1 : o.response.headers().firstValueAsLong("Content-Length").orElse(-1L);
            try (FileChannel out = FileChannel.open(partial, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                    append ? StandardOpenOption.APPEND : StandardOpenOption.TRUNCATE_EXISTING);
                    ProgressBar bar = ProgressBar.open(name, expectedSize >= 0 ? expectedSize : total,
                            append ? have : 0, net.progressBars())) {
                for (List<ByteBuffer> chunk; (chunk = body.next(o.url)) != null; ) {
                    for (ByteBuffer b : chunk) {
                        bar.advance(b.remaining());
                        while (b.hasRemaining()) {
                            out.write(b);
                        }
                    }
                }
            }
        }
    }

    /** A GET's response with its body not yet read. */
    private record Opened(HttpResponse<Flow.Publisher<List<ByteBuffer>>> response, String url, ChunkReader body) {}

    // GET from byte `from` on, following redirects; the token goes only as far as the origin stays the same
    private static Opened open(String url, String token, long from, Duration timeout) throws IOException {
        String u = url;
        String t = token;
        for (int hop = 0; ; hop++) {
            HttpRequest.Builder b = request(u, t, timeout).GET();
            if (from > 0) {
                b.header("Range", "bytes=" + from + "-");
            }
            HttpResponse<Flow.Publisher<List<ByteBuffer>>> r;
            try {
                r = client(timeout).send(b.build(), HttpResponse.BodyHandlers.ofPublisher());
            } catch (IOException e) {
                throw new TransientException(display(u) + ": " + describe(e), e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new java.io.InterruptedIOException(display(u) + ": interrupted");
            }
            ChunkReader body = new ChunkReader(timeout);
            r.body().subscribe(body);
            Optional<String> loc = r.headers().firstValue("Location");
            if (!isRedirect(r.statusCode()) || loc.isEmpty()) {
                return new Opened(r, u, body);
            }
            body.close();
            if (hop >= MAX_REDIRECTS) {
                throw new IOException(display(url) + ": more than " + MAX_REDIRECTS + " redirects");
            }
            String next = resolve(u, loc.get());
            if (!sameOrigin(u, next)) {
                t = null; // a signed CDN URL needs no token, and another host must not see it
            }
            u = next;
        }
    }

    /**
     * A response body read chunk by chunk, each chunk awaited at most {@code timeout}: the JDK client's own timeout
     * ends when the headers arrive, so a server that stalls mid-body would otherwise block forever.
     */
    static final class ChunkReader implements Flow.Subscriber<List<ByteBuffer>>, AutoCloseable {
        private static final Object END = new Object();
        private final BlockingQueue<Object> queue = new LinkedBlockingQueue<>();
        private final CompletableFuture<Flow.Subscription> subscription = new CompletableFuture<>();
        private final Duration timeout;

        ChunkReader(Duration timeout) {
            this.timeout = timeout;
        }

        @Override
        public void onSubscribe(Flow.Subscription s) {
            subscription.complete(s);
            s.request(1);
        }

        @Override
        public void onNext(List<ByteBuffer> item) {
            queue.add(item);
        }

        @Override
        public void onError(Throwable t) {
            queue.add(t);
        }

        @Override
        public void onComplete() {
            queue.add(END);
        }

        /** The next chunk, or null at the end of the body. */
        @SuppressWarnings("unchecked")
        List<ByteBuffer> next(String url) throws IOException {
            Object o;
            try {
                o = queue.poll(timeout.toNanos(), TimeUnit.NANOSECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                close();
                throw new java.io.InterruptedIOException(display(url) + ": interrupted");
            }
            if (o == null) {
                close();
                throw new TransientException(display(url) + ": no data for " + seconds(timeout)
                        + " (HF_HUB_DOWNLOAD_TIMEOUT)", new HttpTimeoutException("read timed out"));
            }
            if (o == END) {
                return null;
            }
            if (o instanceof Throwable t) {
                throw new TransientException(display(url) + ": the body was cut: " + describe(t), t);
            }
            subscription.join().request(1);
            return (List<ByteBuffer>) o;
        }

        @Override
        public void close() {
            // cancelling closes the connection rather than reading the rest of the body
            subscription.thenAccept(Flow.Subscription::cancel);
        }
    }

    private static HttpRequest.Builder request(String url, String token, Duration timeout) {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(url)).timeout(timeout)
                .header("User-Agent", "peft4j");
        if (token != null) {
            b.header("Authorization", "Bearer " + token);
        }
        return b;
    }

    private static boolean isRedirect(int status) {
        return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
    }

    static String resolve(String base, String location) throws IOException {
        try {
            return URI.create(base).resolve(location.trim()).toString();
        } catch (IllegalArgumentException e) {
            throw new IOException(display(base) + ": a redirect to a malformed Location", e);
        }
    }

    private static boolean isAbsolute(String location) {
        try {
            return URI.create(location.trim()).getHost() != null;
        } catch (IllegalArgumentException e) {
            return true; // not followed here; resolving it reports it
        }
    }

    /** Whether two URLs share scheme, host and port (httpx keeps {@code Authorization} only then). */
    static boolean sameOrigin(String a, String b) {
        URI x = URI.create(a);
        URI y = URI.create(b);
        return Objects.equals(lower(x.getScheme()), lower(y.getScheme()))
                && Objects.equals(lower(x.getHost()), lower(y.getHost())) && port(x) == port(y);
    }

    private static String lower(String s) {
        return s == null ? null : s.toLowerCase(java.util.Locale.ROOT);
    }

    private static int port(URI u) {
        return u.getPort() != -1 ? u.getPort() : "https".equalsIgnoreCase(u.getScheme()) ? 443 : 80;
    }

    /** A URL as messages show it: without its query (a signed CDN URL's signature) or user info. */
    static String display(String url) {
        try {
            URI u = URI.create(url);
            return new URI(u.getScheme(), null, u.getHost(), u.getPort(), u.getPath(), null, null).toString();
        } catch (IllegalArgumentException | java.net.URISyntaxException e) {
            return "(a malformed URL)";
        }
    }

    static String describe(Throwable e) {
        String m = e.getMessage();
        return e.getClass().getSimpleName() + (m == null || m.isEmpty() ? "" : ": " + m);
    }

    private static String seconds(Duration d) {
        return d.toMillis() % 1000 == 0 ? d.toSeconds() + " s" : d.toMillis() / 1000.0 + " s";
    }

    private static void truncate(Path p) throws IOException {
        try (FileChannel c = FileChannel.open(p, StandardOpenOption.CREATE, StandardOpenOption.WRITE)) {
            c.truncate(0);
        }
    }
}
