package dev.peft4j.io;

import java.io.IOException;
import java.net.URLEncoder;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.Map;
import java.util.UUID;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One file of a Hub model repository, fetched into the local Hugging Face cache as huggingface_hub's
 * {@code hf_hub_download} does: {@code HEAD <endpoint>/<repo>/resolve/<revision>/<file>} gives the commit
 * ({@code X-Repo-Commit}) and the blob's id ({@code X-Linked-Etag} for large files, else {@code ETag}); the body goes
 * to {@code blobs/<id>} (written to an {@code .incomplete} file, then renamed), {@code snapshots/<commit>/<file>} links
 * to it, and {@code refs/<revision>} names the commit. A blob already present is not fetched again.
 *
 * <p>As there: redirects are followed here, and the token goes to the Hub's own host only (a redirect to another
 * host, such as a CDN, gets none); every chunk of a body must arrive within {@code HF_HUB_DOWNLOAD_TIMEOUT}, the
 * metadata within {@code HF_HUB_ETAG_TIMEOUT}; a large file (its id a sha256) is checked against that sha256, and a
 * mismatch leaves nothing in the cache; a download cut midway resumes with a {@code Range} request, and a large
 * file's {@code blobs/<id>.incomplete} left by an earlier run is resumed too; 408, 429, 5xx and network errors are
 * retried with backoff. Two processes (JVMs, or a JVM and Python) share one cache: a blob is downloaded under
 * {@code .locks/<repo folder>/<id>.lock} ({@link HubLock}), and a file the Hub says is missing is recorded as
 * {@code .no_exist/<commit>/<file>}.
 *
 * <p>When the Hub cannot be reached, answers with an error, or in offline mode, the cache answers if it can (the
 * file, or that it is known missing), as huggingface_hub does; with {@code force_download} it is no answer (an error
 * instead, as there). No message or log line carries the token.
 */
public final class HubDownload {
    /**
     * How downloads use the network: {@code downloadTimeout} for each chunk of a body and for a connection
     * ({@code HF_HUB_DOWNLOAD_TIMEOUT}), {@code etagTimeout} for the metadata request ({@code HF_HUB_ETAG_TIMEOUT}),
     * at most {@code maxRetries} retries in a row waiting {@code retryWait}, doubling up to 8 times it, and whether
     * progress bars may be shown on a terminal ({@code HF_HUB_DISABLE_PROGRESS_BARS} unset).
     */
    public record Network(Duration downloadTimeout, Duration etagTimeout, int maxRetries, Duration retryWait,
            boolean progressBars) {
        /** huggingface_hub's defaults: 10 s, 10 s, 5 retries from 1 s, bars on a terminal. */
        public static final Network DEFAULTS = new Network(Duration.ofSeconds(10), Duration.ofSeconds(10), 5,
                Duration.ofSeconds(1), true);

        /**
         * Checks the settings.
         * @throws IllegalArgumentException if a timeout is not positive, or {@code maxRetries} or {@code retryWait} is
         *     negative
         */
        public Network {
            if (downloadTimeout.isNegative() || downloadTimeout.isZero() || etagTimeout.isNegative()
                    || etagTimeout.isZero() || maxRetries < 0 || retryWait.isNegative()) {
                throw new IllegalArgumentException("timeouts must be positive, retries and waits not negative: "
                        + downloadTimeout + ", " + etagTimeout + ", " + maxRetries + ", " + retryWait);
            }
        }

        static Network fromEnvironment(Map<String, String> env) {
            return new Network(seconds(env, "HF_HUB_DOWNLOAD_TIMEOUT", DEFAULTS.downloadTimeout),
                    seconds(env, "HF_HUB_ETAG_TIMEOUT", DEFAULTS.etagTimeout), DEFAULTS.maxRetries,
                    DEFAULTS.retryWait, !Settings.truthy(env.get("HF_HUB_DISABLE_PROGRESS_BARS")));
        }

        // a whole number of seconds as huggingface_hub reads it; unset, empty or 0: the default
        private static Duration seconds(Map<String, String> env, String var, Duration dflt) {
            String v = env.get(var);
            if (v == null || v.trim().isEmpty()) {
                return dflt;
            }
            try {
                int s = Integer.parseInt(v.trim());
                if (s < 0) {
                    throw new NumberFormatException();
                }
                return s == 0 ? dflt : Duration.ofSeconds(s);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(var + "='" + v + "' is not a whole number of seconds");
            }
        }
    }

    /**
     * Where to ask and with what: the endpoint, a token (or null), whether the network may be used at all, whether a
     * file already in the cache is downloaded again ({@code force_download}), and how the network is used.
     * {@link #toString()} hides the token.
     */
    public record Settings(String endpoint, String token, boolean offline, boolean forceDownload, Network network) {
        /** Settings that reuse cached files, with huggingface_hub's default timeouts and retries. */
        public Settings(String endpoint, String token, boolean offline) {
            this(endpoint, token, offline, false, Network.DEFAULTS);
        }

        /** These settings with {@code force_download} on or off. */
        public Settings withForceDownload(boolean on) {
            return new Settings(endpoint, token, offline, on, network);
        }

        /** These settings with other timeouts, retries or progress bars. */
        public Settings withNetwork(Network n) {
            return new Settings(endpoint, token, offline, forceDownload, n);
        }

        @Override
        public String toString() {
            return "Settings[endpoint=" + endpoint + ", token=" + (token == null ? "none" : "(hidden)") + ", offline="
                    + offline + ", forceDownload=" + forceDownload + ", network=" + network + "]";
        }

        /**
         * From the environment, as huggingface_hub reads it: {@code HF_ENDPOINT} (default https://huggingface.co);
         * {@code token} if not null, else {@code HF_TOKEN}, else {@code HUGGING_FACE_HUB_TOKEN}, else the token file
         * {@code HF_TOKEN_PATH} (default {@code $HF_HOME/token}, what {@code hf auth login} writes; {@code HF_HOME}
         * defaults to {@code $XDG_CACHE_HOME/huggingface}, else {@code ~/.cache/huggingface}); offline when
         * {@code HF_HUB_OFFLINE} or {@code TRANSFORMERS_OFFLINE} is 1 / true / yes / on; {@code HF_HUB_DOWNLOAD_TIMEOUT},
         * {@code HF_HUB_ETAG_TIMEOUT} (whole seconds) and {@code HF_HUB_DISABLE_PROGRESS_BARS} for {@link Network}.
         */
        public static Settings fromEnvironment(String token) {
            return fromEnvironment(token, System.getenv(), System.getProperty("user.home"));
        }

        static Settings fromEnvironment(String token, Map<String, String> env, String userHome) {
            String endpoint = env.getOrDefault("HF_ENDPOINT", "");
            if (endpoint.isEmpty()) {
                endpoint = "https://huggingface.co";
            }
            String t = clean(token);
            if (t == null) { // an empty HF_TOKEN falls through, as Python's `or` does
                t = clean(nonEmpty(env.get("HF_TOKEN")) != null ? env.get("HF_TOKEN")
                        : env.get("HUGGING_FACE_HUB_TOKEN"));
            }
            if (t == null) {
                try {
                    Path file = tokenPath(env, userHome);
                    t = Files.isRegularFile(file) ? clean(Files.readString(file, StandardCharsets.UTF_8)) : null;
                } catch (IOException | java.nio.file.InvalidPathException e) {
                    t = null;
                }
            }
            boolean offline = truthy(env.get("HF_HUB_OFFLINE")) || truthy(env.get("TRANSFORMERS_OFFLINE"));
            return new Settings(endpoint.replaceAll("/+$", ""), t, offline, false, Network.fromEnvironment(env));
        }

        // huggingface_hub's constants.HF_TOKEN_PATH
        static Path tokenPath(Map<String, String> env, String userHome) {
            String p = nonEmpty(env.get("HF_TOKEN_PATH"));
            if (p != null) {
                return Path.of(p.equals("~") || p.startsWith("~/") ? userHome + p.substring(1) : p);
            }
            String home = nonEmpty(env.get("HF_HOME"));
            if (home == null) {
                String xdg = nonEmpty(env.get("XDG_CACHE_HOME"));
                home = Path.of(xdg != null ? xdg : Path.of(userHome, ".cache").toString(), "huggingface").toString();
            } else if (home.equals("~") || home.startsWith("~/")) {
                home = userHome + home.substring(1);
            }
            return Path.of(home, "token");
        }

        // huggingface_hub's _clean_token: line breaks and surrounding blanks dropped, empty is none
        private static String clean(String token) {
            if (token == null) {
                return null;
            }
            String t = token.replace("\r", "").replace("\n", "").strip();
            return t.isEmpty() ? null : t;
        }

        private static String nonEmpty(String v) {
            return v == null || v.isEmpty() ? null : v;
        }

        static boolean truthy(String v) {
            return v != null && java.util.Set.of("1", "true", "yes", "on").contains(v.trim().toLowerCase());
        }
    }

    private static final Logger LOG = LoggerFactory.getLogger(HubDownload.class);
    private static final Pattern COMMIT = Pattern.compile("[0-9a-f]{40}");
    private static final Pattern SHA256 = Pattern.compile("[0-9a-f]{64}");

    private HubDownload() {}

    /**
     * {@code file} (a path inside the repo, '/'-separated) of {@code repoId} at {@code revision} (null: main), in the
     * cache under {@code root}: fetched if needed; null when the repo has no such file at that revision.
     *
     * @throws IOException naming the URL and the reason when the repo or revision does not exist, access is refused,
     *     the download fails (timeout, retries spent, a sha256 that does not match), or the Hub cannot be reached and
     *     the cache lacks the file (or {@code force_download} is set)
     * @throws IllegalArgumentException for {@code force_download} in offline mode
     */
    public static Path file(Path root, String repoId, String revision, String file, Settings settings)
            throws IOException {
        if (!HubCache.isRepoId(repoId)) {
            throw new IllegalArgumentException("'" + repoId + "' is not a Hub repo id ('name' or 'namespace/name')");
        }
        if (file.isEmpty() || file.startsWith("/") || file.contains("..") || file.contains("\\")) {
            throw new IllegalArgumentException("'" + file + "' is not a file path inside a repo");
        }
        String rev = revision == null ? HubCache.DEFAULT_REVISION : revision;
        if (rev.isEmpty() || rev.contains("..") || rev.startsWith("/") || rev.contains("\\")) {
            throw new IllegalArgumentException("revision '" + rev + "' is not a branch, tag or commit hash");
        }
        Path repo = HubCache.repoFolder(root, repoId);
        if (settings.offline()) {
            if (settings.forceDownload()) { // huggingface_hub refuses the pair rather than serve the cache
                throw new IllegalArgumentException("force_download cannot be used offline (HF_HUB_OFFLINE, "
                        + "TRANSFORMERS_OFFLINE or local_files_only): " + file + " of '" + repoId + "' at revision '"
                        + rev + "' would have to be fetched again");
            }
            Cached c = fromCache(root, repoId, rev, file);
            if (c == null) {
                throw new java.nio.file.NoSuchFileException(repo.toString(), null, "offline (HF_HUB_OFFLINE or "
                        + "local_files_only) and " + file + " of '" + repoId + "' at revision '" + rev + "' is not in "
                        + "the Hugging Face cache");
            }
            return c.path();
        }
        if (COMMIT.matcher(rev).matches() && !settings.forceDownload()) { // a commit never changes: no request
            Path pointer = repo.resolve("snapshots").resolve(rev).resolve(file);
            if (Files.exists(pointer)) {
                return pointer;
            }
        }
        String url = settings.endpoint() + "/" + repoId + "/resolve/" + URLEncoder.encode(rev, StandardCharsets.UTF_8)
                .replace("+", "%20") + "/" + encodePath(file);
        Metadata meta;
        try {
            meta = metadata(url, repoId, rev, file, settings, 0);
        } catch (EntryNotFound e) {
            return recordMissing(repo, rev, file, e.commit);
        } catch (HeadFailure f) {
            if (!settings.forceDownload()) { // the cache answers when it can, as huggingface_hub's does
                Cached c = fromCache(root, repoId, rev, file);
                if (c != null) {
                    return c.path();
                }
            }
            if (!f.retryable) {
                throw f.error;
            }
            try { // nothing cached to fall back on: worth waiting for, with backoff
                meta = metadata(url, repoId, rev, file, settings, settings.network().maxRetries());
            } catch (EntryNotFound e) {
                return recordMissing(repo, rev, file, e.commit);
            } catch (HeadFailure g) {
                if (!(g.error instanceof HubHttp.TransientException)) {
                    throw g.error;
                }
                if (settings.forceDownload()) { // forced: the cached copy is not an answer
                    throw new IOException(HubHttp.display(url) + ": force_download failed: the Hub cannot be reached ("
                            + g.error.getMessage() + ")", g.error);
                }
                throw new IOException(HubHttp.display(url) + ": the Hub cannot be reached (" + g.error.getMessage()
                        + ") and the Hugging Face cache " + root + " does not have " + file + " of '" + repoId
                        + "' at revision '" + rev + "'", g.error);
            }
        }
        Path blob = repo.resolve("blobs").resolve(meta.etag);
        Path pointer = repo.resolve("snapshots").resolve(meta.commit).resolve(file);
        if (settings.forceDownload() || !Files.exists(pointer)) {
            try (HubLock lock = HubLock.acquire(HubLock.pathOf(root, repo, meta.etag))) {
                // another process may have fetched it while this one waited
                if (settings.forceDownload() || !Files.isRegularFile(blob)) {
                    fetchBlob(meta, blob, repoId + "/" + file, settings);
                }
                link(pointer, blob, settings.forceDownload());
            }
        }
        writeRef(repo, rev, meta.commit);
        return pointer;
    }

    /**
     * A model repo's files fetched into the cache, all at one commit (that of {@code config.json} at
     * {@code revision}): {@code config.json}, the weights ({@code model.safetensors}, else the shards its
     * {@code .index.json} lists, else {@code pytorch_model.bin} or its shards) and, when the repo has them,
     * {@code tokenizer.json} and {@code generation_config.json}. Returns the snapshot folder.
     */
    public static Path modelSnapshot(Path root, String repoId, String revision, Settings settings) throws IOException {
        Path config = file(root, repoId, revision, "config.json", settings);
        if (config == null) {
            throw new java.nio.file.NoSuchFileException(repoId, null, "'" + repoId + "' at revision '"
                    + (revision == null ? HubCache.DEFAULT_REVISION : revision) + "' has no config.json: not a "
                    + "model repo");
        }
        Path snap = config.getParent();
        String commit = HubCache.commitOf(root, repoId, config); // the rest at this commit, whatever the branch does
        if (file(root, repoId, commit, "model.safetensors", settings) == null
                && !shards(root, repoId, commit, "model.safetensors.index.json", settings)
                && file(root, repoId, commit, "pytorch_model.bin", settings) == null
                && !shards(root, repoId, commit, "pytorch_model.bin.index.json", settings)) {
            throw new java.nio.file.NoSuchFileException(repoId, null, "'" + repoId + "' at commit " + commit
                    + " has none of model.safetensors, model.safetensors.index.json, pytorch_model.bin, "
                    + "pytorch_model.bin.index.json");
        }
        file(root, repoId, commit, "tokenizer.json", settings);
        file(root, repoId, commit, "generation_config.json", settings);
        return snap;
    }

    // an index and every shard its weight_map names; false when the repo has no such index
    private static boolean shards(Path root, String repoId, String commit, String indexName, Settings settings)
            throws IOException {
        Path index = file(root, repoId, commit, indexName, settings);
        if (index == null) {
            return false;
        }
        com.fasterxml.jackson.databind.JsonNode map = new com.fasterxml.jackson.databind.ObjectMapper()
                .readTree(index.toFile()).get("weight_map");
        if (map == null || !map.isObject()) {
            throw new IOException(index + ": no 'weight_map' object");
        }
        java.util.Set<String> names = new java.util.TreeSet<>();
        map.fields().forEachRemaining(e -> names.add(e.getValue().asText()));
        for (String shard : names) {
            if (file(root, repoId, commit, shard, settings) == null) {
                throw new java.nio.file.NoSuchFileException(repoId, null, indexName + " lists " + shard
                        + ", which '" + repoId + "' at commit " + commit + " does not have");
            }
        }
        return true;
    }

    /** What the cache says of a file: its path, or null when it is known to be missing. */
    private record Cached(Path path) {}

    /**
     * The cache's answer for {@code file} at {@code rev} without the network, as huggingface_hub looks: the snapshot's
     * file; else known missing when {@code .no_exist/<commit>/<file>} says so or the snapshot is there without it;
     * else null (the cache cannot answer).
     */
    private static Cached fromCache(Path root, String repoId, String rev, String file) {
        Path repo = HubCache.repoFolder(root, repoId);
        String commit = rev;
        if (!COMMIT.matcher(rev).matches()) {
            try {
                Path ref = repo.resolve("refs").resolve(rev);
                commit = Files.isRegularFile(ref) ? Files.readString(ref, StandardCharsets.UTF_8).trim() : null;
            } catch (IOException | java.nio.file.InvalidPathException e) {
                commit = null;
            }
            if (commit == null || !COMMIT.matcher(commit).matches()) {
                return null;
            }
        }
        Path snap = repo.resolve("snapshots").resolve(commit);
        if (Files.isRegularFile(snap.resolve(file))) {
            return new Cached(snap.resolve(file));
        }
        if (Files.exists(repo.resolve(".no_exist").resolve(commit).resolve(file)) || Files.isDirectory(snap)) {
            return new Cached(null); // the snapshot is there without it: optional files, alternatives
        }
        return null;
    }

    // huggingface_hub's record of a file the Hub said is missing at a commit; null for the caller to return
    private static Path recordMissing(Path repo, String rev, String file, String commit) throws IOException {
        if (commit == null || !COMMIT.matcher(commit).matches()) {
            return null;
        }
        try {
            Path marker = repo.resolve(".no_exist").resolve(commit).resolve(file);
            Files.createDirectories(marker.getParent());
            if (!Files.exists(marker)) {
                Files.createFile(marker);
            }
        } catch (java.nio.file.FileAlreadyExistsException e) {
            // another process recorded it meanwhile
        }
        writeRef(repo, rev, commit);
        return null;
    }

    private static void writeRef(Path repo, String rev, String commit) throws IOException {
        if (rev.equals(commit)) {
            return;
        }
        Path ref = repo.resolve("refs").resolve(rev);
        if (Files.isRegularFile(ref) && Files.readString(ref, StandardCharsets.UTF_8).equals(commit)) {
            return;
        }
        Files.createDirectories(ref.getParent());
        Path tmp = ref.resolveSibling("." + ref.getFileName() + "." + UUID.randomUUID() + ".tmp");
        Files.writeString(tmp, commit, StandardCharsets.UTF_8);
        Files.move(tmp, ref, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    // snapshots/<commit>/<file> -> blobs/<id>, a relative link as huggingface_hub makes, else a copy
    private static void link(Path pointer, Path blob, boolean force) throws IOException {
        Files.createDirectories(pointer.getParent());
        if (Files.exists(pointer) && (Files.isSymbolicLink(pointer) || !force)) {
            return; // a link sees a replaced blob; a copy is replaced under force only
        }
        try {
            Files.createSymbolicLink(pointer, pointer.getParent().relativize(blob));
        } catch (java.nio.file.FileAlreadyExistsException e) {
            if (force && !Files.isSymbolicLink(pointer)) {
                copy(pointer, blob);
            }
        } catch (UnsupportedOperationException | IOException e) {
            copy(pointer, blob); // no symbolic links here (huggingface_hub copies too)
        }
    }

    private static void copy(Path pointer, Path blob) throws IOException {
        Path tmp = pointer.resolveSibling("." + pointer.getFileName() + "." + UUID.randomUUID() + ".tmp");
        Files.copy(blob, tmp);
        Files.move(tmp, pointer, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    /** The file's metadata from the Hub: commit, blob id, where its bytes are, their size (or -1). */
    private record Metadata(String commit, String etag, String location, boolean sendToken, long size) {}

    /** The Hub says the repo has no such file at {@code commit} (or null when it did not say which). */
    private static final class EntryNotFound extends Exception {
        final String commit;

        EntryNotFound(String commit) {
            super(null, null, false, false);
            this.commit = commit;
        }
    }

    /** The metadata request failed: {@code error} is what to throw when the cache cannot answer instead. */
    private static final class HeadFailure extends Exception {
        final IOException error;
        final boolean retryable;

        HeadFailure(IOException error, boolean retryable) {
            super(null, null, false, false);
            this.error = error;
            this.retryable = retryable;
        }
    }

    // HEAD with up to `retries` retries on transient failures, as huggingface_hub's get_hf_file_metadata
    private static Metadata metadata(String url, String repoId, String rev, String file, Settings settings,
            int retries) throws IOException, EntryNotFound, HeadFailure {
        Network net = settings.network();
        for (int attempt = 0; ; attempt++) {
            HttpResponse<Void> head;
            try {
                head = HubHttp.head(url, settings.token(), net.etagTimeout());
            } catch (HubHttp.TransientException e) {
                if (attempt < retries) {
                    retryAfter(attempt, net, e.getMessage());
                    continue;
                }
                throw new HeadFailure(e, true);
            }
            int status = head.statusCode();
            String errorCode = head.headers().firstValue("X-Error-Code").orElse("");
            if (status == 404 && errorCode.equals("EntryNotFound")) {
                throw new EntryNotFound(head.headers().firstValue("X-Repo-Commit").orElse(null));
            }
            if (status == 404 && errorCode.equals("RevisionNotFound")) {
                throw new java.nio.file.NoSuchFileException(url, null, "revision '" + rev + "' of '" + repoId
                        + "' does not exist on the Hub");
            }
            if (status == 401 || status == 403) {
                throw new HeadFailure(new IOException(url + ": HTTP " + status + ": '" + repoId + "' is private or "
                        + "gated, or does not exist; pass a token with access to it (LoadAdapterOptions.token, "
                        + "HF_TOKEN or hf auth login)"), false);
            }
            if (status == 404) {
                throw new HeadFailure(new java.nio.file.NoSuchFileException(url, null, "'" + repoId + "' is not a "
                        + "repo on the Hub (or " + file + " is not in it)"), false);
            }
            if (HubHttp.retryableStatus(status)) {
                IOException e = new HubHttp.TransientException(url + ": HTTP " + status, null);
                if (attempt < retries) {
                    retryAfter(attempt, net, e.getMessage());
                    continue;
                }
                throw new HeadFailure(e, true);
            }
            boolean redirect = status >= 300 && status < 400;
            if (status != 200 && !redirect) {
                throw new HeadFailure(new IOException(url + ": HTTP " + status), false);
            }
            String commit = head.headers().firstValue("X-Repo-Commit").orElse(null);
            String etag = head.headers().firstValue("X-Linked-Etag").or(() -> head.headers().firstValue("ETag"))
                    .map(HubDownload::normalizeEtag).orElse(null);
            if (commit == null || !COMMIT.matcher(commit).matches() || etag == null || etag.isEmpty()
                    || !etag.matches("[A-Za-z0-9._-]+") || etag.startsWith(".")) {
                throw new HeadFailure(new IOException(url + ": the response has no usable X-Repo-Commit / ETag "
                        + "headers (commit " + commit + ", etag " + etag + "); is " + settings.endpoint()
                        + " a Hugging Face Hub?"), false);
            }
            String answered = head.uri().toString(); // after relative redirects (a renamed repo)
            String location = answered;
            if (redirect) {
                String loc = head.headers().firstValue("Location").orElse(null);
                if (loc == null) {
                    throw new HeadFailure(new IOException(url + ": HTTP " + status + " without a Location"), false);
                }
                location = HubHttp.resolve(answered, loc);
            }
            long size = head.headers().firstValueAsLong("X-Linked-Size").orElse(redirect ? -1
                    : head.headers().firstValueAsLong("Content-Length").orElse(-1));
            return new Metadata(commit, etag, location, HubHttp.sameOrigin(url, location), size);
        }
    }

    private static void retryAfter(int attempt, Network net, String why) throws IOException {
        Duration wait = HubHttp.backoff(net.retryWait(), attempt);
        LOG.warn("{}; retrying in {} ms ({}/{})", why, wait.toMillis(), attempt + 1, net.maxRetries());
        HubHttp.sleep(wait);
    }

    /**
     * The blob downloaded into place: to {@code blobs/<id>.incomplete} for a large file (kept when the download fails
     * midway, to be resumed; its sha256 makes a wrong resume harmless), to a file of its own for a small one (git's id
     * is not checked), renamed to {@code blobs/<id>} once whole. Runs under the blob's lock.
     */
    private static void fetchBlob(Metadata meta, Path blob, String name, Settings settings) throws IOException {
        Files.createDirectories(blob.getParent());
        boolean lfs = SHA256.matcher(meta.etag).matches();
        Path partial = blob.resolveSibling(meta.etag + (lfs ? "" : "." + UUID.randomUUID().toString()
                .substring(0, 8)) + ".incomplete");
        if (settings.forceDownload()) {
            Files.deleteIfExists(partial);
        }
        boolean keep = false;
        try {
            try {
                HubHttp.download(meta.location, meta.sendToken ? settings.token() : null, partial, meta.size, name,
                        settings.network());
            } catch (IOException e) {
                keep = lfs; // resumable by the next try
                throw e;
            }
            long got = Files.size(partial);
            if (meta.size >= 0 && got != meta.size) {
                throw new IOException(name + ": consistency check failed: " + HubHttp.display(meta.location)
                        + " gave " + got + " bytes, the Hub announced " + meta.size + "; nothing was cached");
            }
            if (lfs) {
                String actual = sha256(partial);
                if (!actual.equals(meta.etag)) {
                    throw new IOException(name + ": sha256 mismatch: the Hub announced " + meta.etag + ", "
                            + HubHttp.display(meta.location) + " gave " + actual + "; nothing was cached");
                }
            }
            Files.move(partial, blob, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            if (!keep) {
                Files.deleteIfExists(partial);
            }
        }
    }

    static String sha256(Path file) throws IOException {
        java.security.MessageDigest md;
        try {
            md = java.security.MessageDigest.getInstance("SHA-256");
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        try (java.io.InputStream in = Files.newInputStream(file)) {
            byte[] buf = new byte[1 << 20];
            for (int n; (n = in.read(buf)) > 0; ) {
                md.update(buf, 0, n);
            }
        }
        return java.util.HexFormat.of().formatHex(md.digest());
    }

    // ETag values come quoted, large files' sometimes weak (W/"…")
    static String normalizeEtag(String etag) {
        String e = etag.trim();
        if (e.startsWith("W/")) {
            e = e.substring(2);
        }
        return e.replace("\"", "");
    }

    private static String encodePath(String file) {
        StringBuilder b = new StringBuilder();
        for (String part : file.split("/")) {
            if (b.length() > 0) {
                b.append('/');
            }
            b.append(URLEncoder.encode(part, StandardCharsets.UTF_8).replace("+", "%20"));
        }
        return b.toString();
    }
}
