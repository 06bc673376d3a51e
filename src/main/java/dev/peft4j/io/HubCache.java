package dev.peft4j.io;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * A model repository already in the local Hugging Face cache, in huggingface_hub's layout:
 * {@code <cache>/models--<namespace>--<name>/refs/<branch or tag>} holds a commit hash, and
 * {@code snapshots/<commit>/} the repository's files at that commit (links into {@code blobs/}). This is where Python's
 * {@code from_pretrained} / {@code hf_hub_download} put what they download, so an adapter fetched once by Python (or by
 * {@code huggingface-cli download}) loads here by its repo id; {@link HubDownload} fetches into the same layout.
 *
 * <p>The cache folder is, in huggingface_hub's order: an explicit {@code cache_dir}, {@code $HF_HUB_CACHE},
 * {@code $HUGGINGFACE_HUB_CACHE} (its older name), {@code $HF_HOME/hub}, {@code $XDG_CACHE_HOME/huggingface/hub},
 * {@code ~/.cache/huggingface/hub}.
 */
public final class HubCache {
    /** huggingface_hub's default revision. */
    public static final String DEFAULT_REVISION = "main";

    // huggingface_hub's validate_repo_id: "name" or "namespace/name", at most 96 characters, no "--" or ".." inside
    private static final Pattern REPO_ID = Pattern.compile("^(\\b[\\w\\-.]+\\b/)?\\b[\\w\\-.]{1,96}\\b$");
    private static final Pattern COMMIT = Pattern.compile("^[0-9a-f]{40}$");

    private HubCache() {}

    /** Whether {@code id} has the shape of a Hub repo id ({@code name} or {@code namespace/name}). */
    public static boolean isRepoId(String id) {
        return id != null && REPO_ID.matcher(id).matches() && !id.contains("--") && !id.contains("..");
    }

    /**
     * Whether {@code pathOrRepoId} names a Hub repo rather than a local folder: it is no directory here and has a repo
     * id's shape (as transformers' {@code from_pretrained} decides; a folder of that name shadows the repo).
     */
    public static boolean refersToHub(String pathOrRepoId) {
        return isRepoId(pathOrRepoId) && !Files.isDirectory(Path.of(pathOrRepoId));
    }

    /** A repo's folder in the cache under {@code root}: {@code models--<namespace>--<name>}. */
    public static Path repoFolder(Path root, String repoId) {
        return root.resolve("models--" + repoId.replace("/", "--"));
    }

    /** The commit of a file inside a snapshot of {@code repoId} under {@code root} (the snapshot folder's name). */
    public static String commitOf(Path root, String repoId, Path snapshotFile) {
        return repoFolder(root, repoId).resolve("snapshots").relativize(snapshotFile).getName(0).toString();
    }

    /** The cache folder for this process: {@code cacheDir} when not null, else from the environment as above. */
    public static Path root(String cacheDir) {
        return root(cacheDir, System.getenv(), System.getProperty("user.home"));
    }

    static Path root(String cacheDir, Map<String, String> env, String userHome) {
        if (cacheDir != null) {
            return Path.of(cacheDir);
        }
        for (String var : new String[] {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"}) {
            String v = env.get(var);
            if (v != null && !v.isEmpty()) {
                return Path.of(v);
            }
        }
        String home = env.get("HF_HOME");
        if (home != null && !home.isEmpty()) {
            return Path.of(home, "hub");
        }
        String xdg = env.get("XDG_CACHE_HOME");
        if (xdg != null && !xdg.isEmpty()) {
            return Path.of(xdg, "huggingface", "hub");
        }
        return Path.of(userHome, ".cache", "huggingface", "hub");
    }

    /**
     * {@code pathOrRepoId} as a local directory when it is one, else the snapshot of that repo id in the cache
     * ({@code cacheDir}, or the environment's: {@link #root(String)}) at {@code revision} (null: {@value
     * #DEFAULT_REVISION}), as transformers' {@code from_pretrained} resolves its first argument. What is neither a
     * directory nor shaped like a repo id comes back as the path it names, for the caller's error about the files
     * it lacks.
     */
    public static Path localOrCached(String pathOrRepoId, String revision, String cacheDir) throws IOException {
        if (!refersToHub(pathOrRepoId)) {
            return Path.of(pathOrRepoId);
        }
        return snapshot(root(cacheDir), pathOrRepoId, revision);
    }

    /**
     * The snapshot folder of {@code repoId} at {@code revision} (a branch or tag with a ref in the cache, or a full
     * commit hash; null means {@value #DEFAULT_REVISION}).
     *
     * @throws IllegalArgumentException when {@code repoId} is not a repo id
     * @throws java.nio.file.NoSuchFileException naming the cache path that is missing
     */
    public static Path snapshot(Path root, String repoId, String revision) throws IOException {
        if (!isRepoId(repoId)) {
            throw new IllegalArgumentException("'" + repoId + "' is neither a local directory nor a Hub repo id "
                    + "('name' or 'namespace/name')");
        }
        String rev = revision == null ? DEFAULT_REVISION : revision;
        Path repo = repoFolder(root, repoId);
        if (!Files.isDirectory(repo)) {
            throw new java.nio.file.NoSuchFileException(repo.toString(), null, "'" + repoId + "' is not a local "
                    + "directory and not in the Hugging Face cache " + root + "; peft4j does not download from the "
                    + "Hub: fetch it first (huggingface-cli download " + repoId + ") or pass the folder's path");
        }
        String commit;
        if (COMMIT.matcher(rev).matches()) {
            commit = rev;
        } else {
            if (rev.contains("..") || rev.startsWith("/") || rev.contains("\\")) {
                throw new IllegalArgumentException("revision '" + rev + "' is not a branch, tag or commit hash");
            }
            Path ref = repo.resolve("refs").resolve(rev);
            if (!Files.isRegularFile(ref)) {
                throw new java.nio.file.NoSuchFileException(ref.toString(), null, "revision '" + rev + "' of '"
                        + repoId + "' is not in the Hugging Face cache (no ref); fetch it first or pass a commit hash");
            }
            commit = Files.readString(ref, StandardCharsets.UTF_8).trim();
            if (!COMMIT.matcher(commit).matches()) {
                throw new IOException(ref + ": expected a 40-character commit hash, found '" + commit + "'");
            }
        }
        Path snap = repo.resolve("snapshots").resolve(commit);
        if (!Files.isDirectory(snap)) {
            throw new java.nio.file.NoSuchFileException(snap.toString(), null, "commit " + commit + " of '" + repoId
                    + "' (revision '" + rev + "') is not in the Hugging Face cache");
        }
        return snap;
    }
}
