package dev.peft4j.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** {@link AtomicFolder}: what a save keeps, what it and a load clean up, and who waits for whom. */
class AtomicFolderTest {
    private static final String CONFIG = "adapter_config.json";
    private static final String WEIGHTS = "adapter_model.safetensors";

    @TempDir
    Path tmp;

    @AfterEach
    void exchangeBackOn() {
        AtomicFolder.exchangeDisabled = false;
    }

    /** A save whose two files both say {@code token}. */
    private static AtomicFolder.Contents save(String token) {
        return staging -> {
            Files.writeString(staging.resolve(WEIGHTS), "weights " + token);
            Files.writeString(staging.resolve(CONFIG), "config " + token);
        };
    }

    private static void assertSave(Path dir, String token) throws IOException {
        assertEquals("weights " + token, Files.readString(dir.resolve(WEIGHTS)), dir.toString());
        assertEquals("config " + token, Files.readString(dir.resolve(CONFIG)), dir.toString());
    }

    private static TreeSet<String> entries(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).collect(Collectors.toCollection(TreeSet::new));
        }
    }

    @ParameterizedTest(name = "exchange disabled: {0}")
    @ValueSource(booleans = {false, true})
    void aSaveReplacesItsFilesAndKeepsEverythingElse(boolean noExchange) throws IOException {
        AtomicFolder.exchangeDisabled = noExchange;
        Path dir = tmp.resolve("ad");
        AtomicFolder.replace(dir, save("1"));
        Files.writeString(dir.resolve("README.md"), "mine");
        Files.writeString(dir.resolve("adapter_model.bin"), "an older format, kept as save_pretrained keeps it");
        Files.createDirectories(dir.resolve("notes/deep"));
        Files.writeString(dir.resolve("notes/deep/n.txt"), "deep");
        Files.createSymbolicLink(dir.resolve("link"), Path.of("README.md"));
        Files.writeString(dir.resolve(".adapter_config.json.x1y2.tmp"), "a killed single-file write");
        Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwxr-x---"));
        Object readmeKey = Files.readAttributes(dir.resolve("README.md"),
                java.nio.file.attribute.BasicFileAttributes.class).fileKey();

        AtomicFolder.replace(dir, save("2"));

        assertSave(dir, "2");
        assertEquals(new TreeSet<>(List.of(CONFIG, WEIGHTS, "README.md", "adapter_model.bin", "notes", "link")),
                entries(dir), "the writer's temp file is gone, all else kept");
        assertEquals("mine", Files.readString(dir.resolve("README.md")));
        assertEquals(readmeKey, Files.readAttributes(dir.resolve("README.md"),
                java.nio.file.attribute.BasicFileAttributes.class).fileKey(), "kept as a hard link, not copied");
        assertEquals("deep", Files.readString(dir.resolve("notes/deep/n.txt")));
        assertTrue(Files.isSymbolicLink(dir.resolve("link")));
        assertEquals(Path.of("README.md"), Files.readSymbolicLink(dir.resolve("link")));
        assertEquals("rwxr-x---", PosixFilePermissions.toString(Files.getPosixFilePermissions(dir)));
        assertEquals(new TreeSet<>(List.of("ad")), entries(tmp), "no staging, aside or lock file left beside it");
    }

    @Test
    void aFirstSaveCreatesTheFolderAndItsParents() throws IOException {
        Path dir = tmp.resolve("a/b/ad");
        AtomicFolder.replace(dir, save("1"));
        assertSave(dir, "1");
        assertEquals(new TreeSet<>(List.of(CONFIG, WEIGHTS)), entries(dir));
        assertEquals(new TreeSet<>(List.of("ad")), entries(tmp.resolve("a/b")));
    }

    @Test
    void aLinkToAFolderStaysALink() throws IOException {
        Path real = tmp.resolve("real");
        AtomicFolder.replace(real, save("1"));
        Path link = Files.createSymbolicLink(tmp.resolve("link"), real);
        AtomicFolder.replace(link, save("2"));
        assertTrue(Files.isSymbolicLink(link));
        assertSave(real, "2");
        assertEquals(new TreeSet<>(List.of("link", "real")), entries(tmp));
    }

    @Test
    void aFailedSaveLeavesTheFolderAsItWas() throws IOException {
        Path dir = tmp.resolve("ad");
        AtomicFolder.replace(dir, save("1"));
        IOException e = assertThrows(IOException.class, () -> AtomicFolder.replace(dir, staging -> {
            Files.writeString(staging.resolve(WEIGHTS), "half");
            throw new IOException("disk full");
        }));
        assertEquals("disk full", e.getMessage());
        assertSave(dir, "1");
        assertEquals(new TreeSet<>(List.of("ad")), entries(tmp));
    }

    @Test
    void aFileIsNotReplacedByAFolder() throws IOException {
        Path file = Files.writeString(tmp.resolve("ad"), "a file");
        IOException e = assertThrows(IOException.class, () -> AtomicFolder.replace(file, save("1")));
        assertTrue(e.getMessage().contains(file + ": is a file"), e.getMessage());
        assertEquals("a file", Files.readString(file));
        assertEquals(new TreeSet<>(List.of("ad")), entries(tmp));
    }

    /** Leftovers of killed saves of "ad", and look-alikes of other folders that must stay. */
    private void makeLeftovers() throws IOException {
        Files.createDirectories(tmp.resolve(".ad.peft4j-abc.new/sub"));
        Files.writeString(tmp.resolve(".ad.peft4j-abc.new/sub/f"), "half a save");
        Files.createDirectories(tmp.resolve(".ad.peft4j-def.old"));
        Files.writeString(tmp.resolve(".ad.peft4j-lock"), "");
        Files.createDirectories(tmp.resolve(".adx.peft4j-abc.new"));
        Files.createDirectories(tmp.resolve(".ad.peft4j-b.peft4j-abc.new"));
    }

    private static final TreeSet<String> OTHERS = new TreeSet<>(List.of(".adx.peft4j-abc.new",
            ".ad.peft4j-b.peft4j-abc.new"));

    @Test
    void aSaveRemovesWhatKilledSavesLeft() throws IOException {
        AtomicFolder.replace(tmp.resolve("ad"), save("1"));
        makeLeftovers();
        AtomicFolder.replace(tmp.resolve("ad"), save("2"));
        TreeSet<String> expected = new TreeSet<>(OTHERS);
        expected.add("ad");
        assertEquals(expected, entries(tmp));
        assertSave(tmp.resolve("ad"), "2");
    }

    @Test
    void aLoadRemovesWhatKilledSavesLeft() throws IOException {
        AtomicFolder.replace(tmp.resolve("ad"), save("1"));
        makeLeftovers();
        AtomicFolder.recover(tmp.resolve("ad"));
        TreeSet<String> expected = new TreeSet<>(OTHERS);
        expected.add("ad");
        assertEquals(expected, entries(tmp));
        assertSave(tmp.resolve("ad"), "1");
    }

    @Test
    void aLoadPutsBackAFolderLeftRenamedAside() throws IOException {
        // killed between the fallback's two renames: the old folder aside, the new one complete beside it
        Path aside = tmp.resolve(".ad.peft4j-abc.old");
        AtomicFolder.replace(aside, save("old"));
        Files.writeString(aside.resolve("README.md"), "mine");
        AtomicFolder.replace(tmp.resolve(".ad.peft4j-abc.new"), save("new"));
        AtomicFolder.recover(tmp.resolve("ad"));
        assertSave(tmp.resolve("ad"), "old");
        assertEquals("mine", Files.readString(tmp.resolve("ad/README.md")));
        assertEquals(new TreeSet<>(List.of("ad")), entries(tmp));
    }

    @Test
    void aSavePutsBackAFolderLeftRenamedAsideAndKeepsItsFiles() throws IOException {
        Path aside = tmp.resolve(".ad.peft4j-abc.old");
        AtomicFolder.replace(aside, save("old"));
        Files.writeString(aside.resolve("README.md"), "mine");
        AtomicFolder.replace(tmp.resolve("ad"), save("2"));
        assertSave(tmp.resolve("ad"), "2");
        assertEquals("mine", Files.readString(tmp.resolve("ad/README.md")));
        assertEquals(new TreeSet<>(List.of("ad")), entries(tmp));
    }

    @Test
    void aSubfolderLeftRenamedAsideIsKeptByItsParentsSave() throws IOException {
        Path dir = tmp.resolve("ad");
        AtomicFolder.replace(dir, save("1"));
        AtomicFolder.replace(dir.resolve(".other.peft4j-abc.old"), save("other"));
        AtomicFolder.replace(dir, save("2"));
        assertSave(dir.resolve("other"), "other");
        assertEquals(new TreeSet<>(List.of(CONFIG, WEIGHTS, "other")), entries(dir));
    }

    @Test
    void aLoadOfNothingDoesNothing() throws IOException {
        AtomicFolder.recover(tmp.resolve("no/such/folder"));
        AtomicFolder.recover(tmp.resolve("missing"));
        AtomicFolder.recover(Path.of("user/repo-id-like"));
        assertEquals(new TreeSet<>(), entries(tmp));
    }

    @Test
    void aLoadLeavesALiveSaveOfThisJvmAlone() throws Exception {
        Path dir = tmp.resolve("ad");
        AtomicFolder.replace(dir, save("1"));
        CountDownLatch writing = new CountDownLatch(1);
        CountDownLatch finish = new CountDownLatch(1);
        ExecutorService pool = Executors.newSingleThreadExecutor();
        try {
            Future<?> saving = pool.submit(() -> {
                AtomicFolder.replace(dir, staging -> {
                    save("2").writeInto(staging);
                    writing.countDown();
                    await(finish);
                });
                return null;
            });
            assertTrue(writing.await(30, TimeUnit.SECONDS));
            List<Path> before = AtomicFolder.leftovers(tmp, "ad", true);
            assertEquals(2, before.size(), "the live save's lock and staging folder: " + before);
            AtomicFolder.recover(dir);
            assertEquals(before, AtomicFolder.leftovers(tmp, "ad", true), "a live save's files are not touched");
            assertSave(dir, "1");
            finish.countDown();
            saving.get(30, TimeUnit.SECONDS);
            assertSave(dir, "2");
            assertEquals(new TreeSet<>(List.of("ad")), entries(tmp));
        } finally {
            finish.countDown();
            pool.shutdownNow();
        }
    }

    @Test
    void aLoadLeavesALiveSaveOfAnotherProcessAloneAndCleansUpOnceItDies() throws Exception {
        Path dir = tmp.resolve("ad");
        AtomicFolder.replace(dir, save("1"));
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process child = new ProcessBuilder(java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp",
                System.getProperty("java.class.path"), AtomicSaveChild.class.getName(), "hold", dir.toString())
                .redirectError(ProcessBuilder.Redirect.INHERIT).start();
        try (BufferedReader out = new BufferedReader(new InputStreamReader(child.getInputStream(),
                StandardCharsets.UTF_8))) {
            String line = out.readLine();
            assertTrue(line != null && line.startsWith("held "), String.valueOf(line));
            AtomicFolder.recover(dir);
            assertTrue(Files.isDirectory(tmp.resolve(".ad.peft4j-live1.new")), "another process's live save");
            assertTrue(Files.exists(tmp.resolve(".ad.peft4j-lock")));
        } finally {
            child.destroyForcibly();
            child.waitFor(30, TimeUnit.SECONDS);
        }
        AtomicFolder.recover(dir); // the kernel released the dead process's lock
        assertEquals(new TreeSet<>(List.of("ad")), entries(tmp));
        assertSave(dir, "1");
    }

    @Test
    void concurrentSavesOfOneFolderEachLandWhole() throws Exception {
        Path dir = tmp.resolve("ad");
        AtomicFolder.replace(dir, save("0"));
        Files.writeString(dir.resolve("README.md"), "mine");
        ExecutorService pool = Executors.newFixedThreadPool(4);
        try {
            List<Future<?>> all = new ArrayList<>();
            for (int t = 0; t < 4; t++) {
                int thread = t;
                all.add(pool.submit(() -> {
                    for (int i = 0; i < 10; i++) {
                        AtomicFolder.replace(dir, save(thread + "-" + i));
                        // a reader by path is consistent when no swap fell between its reads. Every save's content
                        // is unique and a path never goes back to an earlier save, so the config read again after
                        // the weights equal to the first read proves it (the directory's inode alone does not: a
                        // deleted folder's inode number is reused by a later save's folder)
                        Object before = folderKey(dir);
                        String config = Files.readString(dir.resolve(CONFIG));
                        String weights = Files.readString(dir.resolve(WEIGHTS));
                        String configAgain = Files.readString(dir.resolve(CONFIG));
                        if (before.equals(folderKey(dir)) && config.equals(configAgain)) {
                            assertEquals(config.replace("config", "weights"), weights);
                        }
                    }
                    return null;
                }));
            }
            for (Future<?> f : all) {
                f.get(60, TimeUnit.SECONDS);
            }
        } finally {
            pool.shutdownNow();
        }
        assertEquals(new TreeSet<>(List.of(CONFIG, WEIGHTS, "README.md")), entries(dir));
        String last = Files.readString(dir.resolve(CONFIG)).substring("config ".length());
        assertTrue(last.endsWith("-9"), "the last save of some thread: " + last);
        assertSave(dir, last);
        assertEquals(new TreeSet<>(List.of("ad")), entries(tmp));
    }

    @Test
    void aParentsSaveWaitsForASaveOfItsSubfolder() throws Exception {
        Path dir = tmp.resolve("ad");
        Path other = dir.resolve("other");
        AtomicFolder.replace(dir, save("1"));
        AtomicFolder.replace(other, save("other-1"));
        CountDownLatch writing = new CountDownLatch(1);
        CountDownLatch finish = new CountDownLatch(1);
        ExecutorService pool = Executors.newFixedThreadPool(2);
        try {
            Future<?> sub = pool.submit(() -> {
                AtomicFolder.replace(other, staging -> {
                    save("other-2").writeInto(staging);
                    writing.countDown();
                    await(finish);
                });
                return null;
            });
            assertTrue(writing.await(30, TimeUnit.SECONDS));
            Future<?> parent = pool.submit(() -> {
                AtomicFolder.replace(dir, save("2"));
                return null;
            });
            Thread.sleep(300);
            assertFalse(parent.isDone(), "the parent's save waits while the subfolder is being saved");
            finish.countDown();
            sub.get(30, TimeUnit.SECONDS);
            parent.get(30, TimeUnit.SECONDS);
        } finally {
            finish.countDown();
            pool.shutdownNow();
        }
        assertSave(dir, "2");
        assertSave(other, "other-2");
        assertEquals(new TreeSet<>(List.of(CONFIG, WEIGHTS, "other")), entries(dir));
        assertEquals(new TreeSet<>(List.of(CONFIG, WEIGHTS)), entries(other));
    }

    @Test
    void theLockIsExclusiveAndItsFileGoesWithIt() throws IOException {
        assertTrue(NativeFs.LOADED, "the native library is built with the project");
        Path file = tmp.resolve(".x.peft4j-lock");
        try (FolderLock held = FolderLock.acquire(file)) {
            assertSame(null, FolderLock.tryAcquire(file));
            assertTrue(Files.exists(file, LinkOption.NOFOLLOW_LINKS));
        }
        assertFalse(Files.exists(file, LinkOption.NOFOLLOW_LINKS));
        try (FolderLock again = FolderLock.tryAcquire(file)) {
            assertTrue(again != null);
        }
    }

    @Test
    void aWaiterThatLockedADeletedLockFileLocksTheNewOne() throws Exception {
        Path file = tmp.resolve(".x.peft4j-lock");
        int first = NativeFs.lockFile(file, true);
        assertTrue(first >= 0);
        assertEquals(-NativeFs.EWOULDBLOCK, NativeFs.lockFile(file, false), "held");
        ExecutorService pool = Executors.newSingleThreadExecutor();
        try {
            Future<Integer> waiter = pool.submit(() -> NativeFs.lockFile(file, true));
            Thread.sleep(200); // the waiter now blocks in flock on the file about to be deleted
            Files.delete(file);
            assertEquals(0, NativeFs.unlockFile(first));
            int second = waiter.get(30, TimeUnit.SECONDS);
            assertTrue(second >= 0);
            assertTrue(Files.exists(file), "the waiter made and locked a new lock file");
            assertEquals(-NativeFs.EWOULDBLOCK, NativeFs.lockFile(file, false), "and holds it");
            assertEquals(0, NativeFs.unlockFile(second));
        } finally {
            pool.shutdownNow();
        }
    }

    private static Object folderKey(Path dir) throws IOException {
        return Files.readAttributes(dir, java.nio.file.attribute.BasicFileAttributes.class).fileKey();
    }

    private static void await(CountDownLatch latch) throws IOException {
        try {
            if (!latch.await(60, TimeUnit.SECONDS)) {
                throw new IOException("test latch timed out");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException(e);
        }
    }
}
