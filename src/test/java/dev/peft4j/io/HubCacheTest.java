package dev.peft4j.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The local Hugging Face cache, laid out as huggingface_hub writes it. */
class HubCacheTest {
    private static final String MAIN = "0123456789abcdef0123456789abcdef01234567";
    private static final String V1 = "89abcdef0123456789abcdef0123456789abcdef";

    @TempDir
    Path tmp;

    /** models--org--name with refs/main and refs/v1, a snapshot per commit. */
    private Path cache() throws IOException {
        Path repo = Files.createDirectories(tmp.resolve("hub/models--org--name"));
        Files.createDirectories(repo.resolve("refs"));
        Files.writeString(repo.resolve("refs/main"), MAIN); // huggingface_hub writes no newline
        Files.writeString(repo.resolve("refs/v1"), V1 + "\n");
        Files.createDirectories(repo.resolve("snapshots/" + MAIN));
        Files.createDirectories(repo.resolve("snapshots/" + V1));
        return tmp.resolve("hub");
    }

    @Test
    void cacheFolderFollowsHuggingfaceHubOrder() {
        String home = "/home/u";
        assertEquals(Path.of("/c"), HubCache.root("/c", Map.of("HF_HUB_CACHE", "/x"), home));
        assertEquals(Path.of("/x"), HubCache.root(null, Map.of("HF_HUB_CACHE", "/x", "HUGGINGFACE_HUB_CACHE", "/y",
                "HF_HOME", "/h"), home));
        assertEquals(Path.of("/y"), HubCache.root(null, Map.of("HUGGINGFACE_HUB_CACHE", "/y", "HF_HOME", "/h"), home));
        assertEquals(Path.of("/h/hub"), HubCache.root(null, Map.of("HF_HOME", "/h", "XDG_CACHE_HOME", "/g"), home));
        assertEquals(Path.of("/g/huggingface/hub"), HubCache.root(null, Map.of("XDG_CACHE_HOME", "/g"), home));
        assertEquals(Path.of("/home/u/.cache/huggingface/hub"), HubCache.root(null, Map.of(), home));
        assertEquals(Path.of("/home/u/.cache/huggingface/hub"), HubCache.root(null, Map.of("HF_HOME", ""), home),
                "an empty variable counts as unset");
    }

    @Test
    void resolvesBranchTagAndCommitToTheirSnapshot() throws IOException {
        Path root = cache();
        Path repo = root.resolve("models--org--name");
        assertEquals(repo.resolve("snapshots/" + MAIN), HubCache.snapshot(root, "org/name", null), "default: main");
        assertEquals(repo.resolve("snapshots/" + V1), HubCache.snapshot(root, "org/name", "v1"), "ref with a newline");
        assertEquals(repo.resolve("snapshots/" + V1), HubCache.snapshot(root, "org/name", V1), "commit hash, no ref");
    }

    @Test
    void missingRepoRevisionOrSnapshotNamesWhatIsMissing() throws IOException {
        Path root = cache();
        NoSuchFileException repo = assertThrows(NoSuchFileException.class,
                () -> HubCache.snapshot(root, "org/other", null));
        assertTrue(repo.getMessage().contains("models--org--other"), repo.getMessage());
        assertTrue(repo.getMessage().contains("does not download"), repo.getMessage());
        NoSuchFileException ref = assertThrows(NoSuchFileException.class, () -> HubCache.snapshot(root, "org/name", "v2"));
        assertTrue(ref.getMessage().contains("refs/v2") && ref.getMessage().contains("revision 'v2'"), ref.getMessage());
        String absent = "fedcba9876543210fedcba9876543210fedcba98";
        NoSuchFileException snap = assertThrows(NoSuchFileException.class,
                () -> HubCache.snapshot(root, "org/name", absent));
        assertTrue(snap.getMessage().contains("snapshots/" + absent), snap.getMessage());
        Files.writeString(root.resolve("models--org--name/refs/bad"), "not-a-hash");
        IOException bad = assertThrows(IOException.class, () -> HubCache.snapshot(root, "org/name", "bad"));
        assertTrue(bad.getMessage().contains("not-a-hash"), bad.getMessage());
    }

    @Test
    void refusesWhatIsNotARepoIdOrRevision() throws IOException {
        Path root = cache();
        for (String id : new String[] {"a/b/c", "../x", "org--name", "a b", "", "x/"}) {
            assertFalse(HubCache.isRepoId(id), id);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> HubCache.snapshot(root, id, null), id);
            assertTrue(e.getMessage().contains("repo id"), e.getMessage());
        }
        assertTrue(HubCache.isRepoId("bert-base-uncased"));
        assertTrue(HubCache.isRepoId("org.x/name_1.2-b"));
        assertThrows(IllegalArgumentException.class, () -> HubCache.snapshot(root, "org/name", "../../etc"));
    }

    @Test
    void localOrCachedPrefersALocalFolderAndLeavesNonRepoIdsToTheCaller() throws IOException {
        Path root = cache();
        Path local = Files.createDirectories(tmp.resolve("org/name"));
        assertEquals(local, HubCache.localOrCached(local.toString(), null, root.toString()), "a folder is used as is");
        assertEquals(root.resolve("models--org--name/snapshots/" + V1),
                HubCache.localOrCached("org/name", "v1", root.toString()));
        Path nowhere = tmp.resolve("a/b/no-model");
        assertEquals(nowhere, HubCache.localOrCached(nowhere.toString(), null, root.toString()),
                "not a repo id: the path itself, for the caller's missing-file error");
    }
}
