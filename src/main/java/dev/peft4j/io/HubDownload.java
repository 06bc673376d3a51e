package dev.peft4j.io;

import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.Map;
import java.util.Optional;
import java.util.UUID;

/**
 * One file of a Hub model repository, fetched into the local Hugging Face cache as huggingface_hub's
 * {@code hf_hub_download} does: {@code HEAD <endpoint>/<repo>/resolve/<revision>/<file>} gives the commit
 * ({@code X-Repo-Commit}) and the blob's id ({@code X-Linked-Etag} for large files, else {@code ETag}); the body goes
 * to {@code blobs/<id>} (written to a temporary file, then renamed), {@code snapshots/<commit>/<file>} links to it, and
 * {@code refs/<revision>} names the commit. A blob already present is not fetched again. When the Hub cannot be
 * reached, or in offline mode, the cached snapshot is used if it has the file, as huggingface_hub does; with
 * {@code force_download} neither is an answer (an error instead, as there).
 */
public final class HubDownload {
    /**
     * Where to ask and with what: the endpoint, a token (or null), whether the network may be used at all, and
     * whether a file already in the cache is downloaded again ({@code force_download}).
     */
    public record Settings(String endpoint, String token, boolean offline, boolean forceDownload) {
        /** Settings that reuse cached files. */
        public Settings(String endpoint, String token, boolean offline) {
            this(endpoint, token, offline, false);
        }

        /** These settings with {@code force_download} on or off. */
        public Settings withForceDownload(boolean on) {
            return new Settings(endpoint, token, offline, on);
        }

        /**
         * From the environment, as huggingface_hub reads it: {@code HF_ENDPOINT} (default https://huggingface.co),
         * {@code token} if not null else {@code HF_TOKEN} else the token file {@code $HF_HOME/token} (what
         * {@code huggingface-cli login} writes), offline when {@code HF_HUB_OFFLINE} or {@code TRANSFORMERS_OFFLINE}
         * is 1 / true / yes / on.
         */
        public static Settings fromEnvironment(String token) {
            return fromEnvironment(token, System.getenv(), System.getProperty("user.home"));
        }

        static Settings fromEnvironment(String token, Map<String, String> env, String userHome) {
            String endpoint = env.getOrDefault("HF_ENDPOINT", "");
            if (endpoint.isEmpty()) {
                endpoint = "https://huggingface.co";
            }
            String t = token;
            if (t == null) {
                t = env.get("HF_TOKEN");
            }
            if (t == null || t.isEmpty()) {
                String home = env.get("HF_HOME");
                Path file = home != null && !home.isEmpty() ? Path.of(home, "token")
                        : Path.of(userHome, ".cache", "huggingface", "token");
                try {
                    t = Files.isRegularFile(file) ? Files.readString(file, StandardCharsets.UTF_8).trim() : null;
                } catch (IOException e) {
                    t = null;
                }
            }
            boolean offline = truthy(env.get("HF_HUB_OFFLINE")) || truthy(env.get("TRANSFORMERS_OFFLINE"));
            return new Settings(endpoint.replaceAll("/+$", ""), t == null || t.isEmpty() ? null : t, offline);
        }

        private static boolean truthy(String v) {
            return v != null && java.util.Set.of("1", "true", "yes", "on").contains(v.trim().toLowerCase());
        }
    }

    private static final Duration TIMEOUT = Duration.ofSeconds(30);

    private HubDownload() {}

    // one client of each kind per process (they pool connections), made on the first download
    private static final class Clients {
        static final HttpClient NO_REDIRECTS = HttpClient.newBuilder().connectTimeout(TIMEOUT)
                .followRedirects(HttpClient.Redirect.NEVER).build();
        static final HttpClient REDIRECTS = HttpClient.newBuilder().connectTimeout(TIMEOUT)
                .followRedirects(HttpClient.Redirect.NORMAL).build();
    }

    /**
     * {@code file} (a path inside the repo, '/'-separated) of {@code repoId} at {@code revision} (null: main), in the
     * cache under {@code root}: fetched if needed; null when the repo has no such file at that revision.
     *
     * @throws IOException naming the URL and the reason when the repo or revision does not exist, access is refused,
     *     or the Hub cannot be reached and the cache lacks the file (or {@code force_download} is set)
     * @throws IllegalArgumentException for {@code force_download} in offline mode
     */
    public static Path file(Path root, String repoId, String revision, String file, Settings settings)
            throws IOException {
        if (!HubCache.isRepoId(repoId)) {
            throw new IllegalArgumentException("'" + repoId + "' is not a Hub repo id ('name' or 'namespace/name')");
        }
        if (file.startsWith("/") || file.contains("..") || file.contains("\\")) {
            throw new IllegalArgumentException("'" + file + "' is not a file path inside a repo");
        }
        String rev = revision == null ? HubCache.DEFAULT_REVISION : revision;
        if (rev.isEmpty() || rev.contains("..") || rev.startsWith("/") || rev.contains("\\")) {
            throw new IllegalArgumentException("revision '" + rev + "' is not a branch, tag or commit hash");
        }
        if (settings.offline()) {
            if (settings.forceDownload()) { // huggingface_hub refuses the pair rather than serve the cache
                throw new IllegalArgumentException("force_download cannot be used offline (HF_HUB_OFFLINE, "
                        + "TRANSFORMERS_OFFLINE or local_files_only): " + file + " of '" + repoId + "' at revision '"
                        + rev + "' would have to be fetched again");
            }
            Path snap = cachedSnapshot(root, repoId, rev);
            if (snap == null) {
                throw new java.nio.file.NoSuchFileException(HubCache.repoFolder(root, repoId)
                        .toString(), null, "offline (HF_HUB_OFFLINE or local_files_only) and " + file + " of '" + repoId
                        + "' at revision '" + rev + "' is not in the Hugging Face cache");
            }
            // the snapshot is there: a file it lacks counts as one the repo lacks (optional files, alternatives)
            return Files.isRegularFile(snap.resolve(file)) ? snap.resolve(file) : null;
        }
        String url = settings.endpoint() + "/" + repoId + "/resolve/" + URLEncoder.encode(rev, StandardCharsets.UTF_8)
                .replace("+", "%20") + "/" + encodePath(file);
        HttpResponse<Void> head;
        try {
            head = headFollowingRelative(url, settings.token());
        } catch (IOException e) {
            if (settings.forceDownload()) { // forced: the cached copy is not an answer
                throw new IOException(url + ": force_download failed: the Hub cannot be reached (" + e.getMessage()
                        + ")", e);
            }
            Path snap = cachedSnapshot(root, repoId, rev);
            if (snap != null) { // the Hub is unreachable: the cached snapshot, as huggingface_hub does
                return Files.isRegularFile(snap.resolve(file)) ? snap.resolve(file) : null;
            }
            throw new IOException(url + ": the Hub cannot be reached (" + e.getMessage() + ") and the Hugging Face "
                    + "cache " + root + " does not have " + file + " of '" + repoId + "' at revision '" + rev + "'", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException(url + ": interrupted", e);
        }
        int status = head.statusCode();
        String errorCode = head.headers().firstValue("X-Error-Code").orElse("");
        if (status == 404 && errorCode.equals("EntryNotFound")) {
            return null;
        }
        if (status == 401 || status == 403) {
            throw new IOException(url + ": HTTP " + status + ": '" + repoId + "' is private or gated, or does not "
                    + "exist; pass a token with access to it (LoadAdapterOptions.token, HF_TOKEN or "
                    + "huggingface-cli login)");
        }
        if (status == 404) {
            throw new java.nio.file.NoSuchFileException(url, null, errorCode.equals("RevisionNotFound")
                    ? "revision '" + rev + "' of '" + repoId + "' does not exist on the Hub"
                    : "'" + repoId + "' is not a repo on the Hub (or " + file + " is not in it)");
        }
        if (status != 200 && (status < 300 || status >= 400)) {
            throw new IOException(url + ": HTTP " + status);
        }
        String commit = head.headers().firstValue("X-Repo-Commit").orElse(null);
        String etag = head.headers().firstValue("X-Linked-Etag").or(() -> head.headers().firstValue("ETag"))
                .map(HubDownload::normalizeEtag).orElse(null);
        if (commit == null || !commit.matches("[0-9a-f]{40}") || etag == null || etag.isEmpty()
                || !etag.matches("[A-Za-z0-9._-]+")) {
            throw new IOException(url + ": the response has no usable X-Repo-Commit / ETag headers (commit "
                    + commit + ", etag " + etag + "); is " + settings.endpoint() + " a Hugging Face Hub?");
        }
        Path repo = HubCache.repoFolder(root, repoId);
        Path blob = repo.resolve("blobs").resolve(etag);
        if (!Files.isRegularFile(blob) || settings.forceDownload()) { // force: fetched again, replacing it
            String location = status == 200 ? url : resolveLocation(url, head.headers().firstValue("Location")
                    .orElseThrow(() -> new IOException(url + ": HTTP " + status + " without a Location")));
            fetch(location, settings.token(), blob, location.equals(url) || sameHost(url, location));
        }
        Path snap = repo.resolve("snapshots").resolve(commit).resolve(file);
        Files.createDirectories(snap.getParent());
        if (!Files.exists(snap)) {
            try {
                Files.createSymbolicLink(snap, snap.getParent().relativize(blob));
            } catch (java.nio.file.FileAlreadyExistsException e) {
                // another process linked it meanwhile
            } catch (UnsupportedOperationException | IOException e) {
                Path tmp = snap.resolveSibling("." + snap.getFileName() + "." + UUID.randomUUID() + ".tmp");
                Files.copy(blob, tmp); // no symbolic links here (huggingface_hub copies too)
                Files.move(tmp, snap, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            }
        }
        if (!rev.equals(commit)) {
            Path ref = repo.resolve("refs").resolve(rev);
            Files.createDirectories(ref.getParent());
            Path tmp = ref.resolveSibling("." + ref.getFileName() + "." + UUID.randomUUID() + ".tmp");
            Files.writeString(tmp, commit, StandardCharsets.UTF_8);
            Files.move(tmp, ref, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        }
        return snap;
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

    // the cached snapshot of the revision, or null
    private static Path cachedSnapshot(Path root, String repoId, String rev) {
        try {
            return HubCache.snapshot(root, repoId, rev);
        } catch (IOException | IllegalArgumentException e) {
            return null;
        }
    }

    // HEAD, following redirects whose Location is relative (a renamed repo); an absolute one (the CDN of a large
    // file) is returned as is: its headers carry the commit and the blob id
    private static HttpResponse<Void> headFollowingRelative(String url, String token)
            throws IOException, InterruptedException {
        String u = url;
        for (int hop = 0; ; hop++) {
            HttpResponse<Void> r = Clients.NO_REDIRECTS.send(request(u, token).method("HEAD", HttpRequest.BodyPublishers.noBody())
                    .build(), HttpResponse.BodyHandlers.discarding());
            Optional<String> loc = r.headers().firstValue("Location");
            boolean redirect = r.statusCode() >= 300 && r.statusCode() < 400 && loc.isPresent();
            if (!redirect || URI.create(loc.get()).isAbsolute() || hop >= 5) {
                return r;
            }
            u = resolveLocation(u, loc.get());
        }
    }

    private static void fetch(String url, String token, Path blob, boolean sendToken) throws IOException {
        Files.createDirectories(blob.getParent());
        Path tmp = blob.resolveSibling(blob.getFileName() + "." + UUID.randomUUID() + ".incomplete");
        try {
            HttpResponse<Path> r = Clients.REDIRECTS.send(request(url, sendToken ? token : null).GET().build(),
                    HttpResponse.BodyHandlers.ofFile(tmp));
            if (r.statusCode() != 200) {
                throw new IOException(url + ": HTTP " + r.statusCode() + " while downloading");
            }
            Files.move(tmp, blob, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException(url + ": interrupted", e);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    private static HttpRequest.Builder request(String url, String token) {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(url)).timeout(TIMEOUT)
                .header("User-Agent", "peft4j");
        if (token != null) {
            b.header("Authorization", "Bearer " + token);
        }
        return b;
    }

    private static String resolveLocation(String base, String location) {
        return URI.create(base).resolve(location).toString();
    }

    private static boolean sameHost(String a, String b) {
        return java.util.Objects.equals(URI.create(a).getHost(), URI.create(b).getHost());
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
