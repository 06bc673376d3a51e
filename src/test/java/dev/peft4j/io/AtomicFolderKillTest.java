package dev.peft4j.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.PeftConfig;
import dev.peft4j.config.PeftConfigs;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Kills child JVMs ({@link AtomicSaveChild}) with {@code SIGKILL} at random moments of repeated adapter saves and
 * checks every folder left behind: it is one complete save (config and weights of the same save, never one older
 * than the last save that returned), as Python would read it and as peft4j loads it, the user's own files and a
 * second adapter's subfolder are still there, and the load leaves no leftover. Half the children swap with
 * {@code renameat2(RENAME_EXCHANGE)}, half with the rename-aside fallback.
 *
 * <p>{@code -Dpeft4j.atomicKills=N} sets the number of kills (default 100); two children run at a time, each on its
 * own folder. A few children write the weights through libtorch ({@link SafetensorsFile#write}); the rest write the
 * same bytes without it, so that a child starts in well under a second.
 */
class AtomicFolderKillTest {
    private static final byte[] README = "# my adapter\nkept across saves\n".getBytes(StandardCharsets.UTF_8);
    private static final Set<String> ENTRIES = Set.of(AdapterFolder.SAFETENSORS_NAME, PeftConfigs.CONFIG_FILE_NAME,
            "README.md", "other");

    @TempDir
    Path tmp;

    private record Stats(AtomicInteger leftoversFound, AtomicInteger missingMidSwap, AtomicInteger progressed) {}

    @Test
    void everyFolderAKilledSaveLeavesIsOneWholeSave() throws Exception {
        int kills = Integer.getInteger("peft4j.atomicKills", 100);
        int torchKills = Math.min(kills, Integer.getInteger("peft4j.atomicKills.torch", 2));
        int workers = 2;
        Stats stats = new Stats(new AtomicInteger(), new AtomicInteger(), new AtomicInteger());
        ExecutorService pool = Executors.newFixedThreadPool(workers);
        try {
            List<Future<?>> done = new ArrayList<>();
            for (int w = 0; w < workers; w++) {
                int mine = kills / workers + (w < kills % workers ? 1 : 0);
                int myTorch = torchKills / workers + (w < torchKills % workers ? 1 : 0);
                Path root = Files.createDirectory(tmp.resolve("w" + w));
                long seed = 1234 + w;
                done.add(pool.submit(() -> {
                    killRepeatedly(root.resolve("adapter"), mine, myTorch, new Random(seed), stats);
                    return null;
                }));
            }
            for (Future<?> f : done) {
                f.get(10, TimeUnit.MINUTES);
            }
        } finally {
            pool.shutdownNow();
        }
        System.out.printf("AtomicFolderKillTest: %d kills, %d found a killed save's leftovers, %d found the folder "
                + "renamed aside, %d after at least one more save%n", kills, stats.leftoversFound.get(),
                stats.missingMidSwap.get(), stats.progressed.get());
        // the kills must land inside saves, or this test proves nothing
        assertTrue(stats.leftoversFound.get() >= Math.max(1, kills / 10), "kills that hit a save in progress: "
                + stats.leftoversFound.get() + " of " + kills);
        assertTrue(stats.progressed.get() >= Math.max(1, kills / 4), "kills after further saves: "
                + stats.progressed.get() + " of " + kills);
    }

    private void killRepeatedly(Path dir, int kills, int torchKills, Random random, Stats stats) throws Exception {
        Path parent = dir.getParent();
        String name = dir.getFileName().toString();
        AtomicSaveChild.save(dir, 0, false);
        Files.write(dir.resolve("README.md"), README);
        AtomicSaveChild.save(dir.resolve("other"), -1, false); // PEFT's layout for a second adapter
        AtomicSaveChild.save(dir, 1, false);
        int last = 1; // the last save that returned
        for (int i = 0; i < kills; i++) {
            int first = last + 1;
            boolean exchange = i % 2 == 0;
            boolean torch = i < torchKills;
            Process child = startChild(dir, first, exchange, torch);
            try (BufferedReader out = new BufferedReader(new InputStreamReader(child.getInputStream(),
                    StandardCharsets.UTF_8))) {
                String line = out.readLine();
                assertEquals("ready", line, "child of kill " + i + " did not start");
                Thread.sleep(random.nextInt(60));
                child.destroyForcibly(); // SIGKILL
                assertTrue(child.waitFor(30, TimeUnit.SECONDS));
            }
            // what Python sees, before any peft4j code touched the folder: with the exchange, always a whole save
            boolean present = Files.isDirectory(dir);
            if (!leftovers(parent, name).isEmpty()) {
                stats.leftoversFound.incrementAndGet();
            }
            if (!present) {
                assertTrue(!exchange, "the folder is missing after a kill although it is swapped in one step");
                stats.missingMidSwap.incrementAndGet();
            } else {
                assertOneSave(dir, first, "kill " + i + ", read directly");
            }
            // what peft4j loads: the half swap undone, leftovers gone
            AdapterFolder f = AdapterFolder.read(dir);
            int k = savedK(f.config(), "kill " + i);
            assertEquals(AtomicSaveChild.TENSORS, f.stateDict().size());
            for (Map.Entry<String, Tensor> e : f.stateDict().entrySet()) {
                try (Tensor t = e.getValue(); Tensor min = t.min(); Tensor max = t.max()) {
                    assertEquals(k, min.item_float(), "kill " + i + ": " + e.getKey() + " of another save");
                    assertEquals(k, max.item_float(), "kill " + i + ": " + e.getKey() + " of another save");
                }
            }
            assertTrue(k >= first, "kill " + i + ": save " + k + " is older than save " + first
                    + ", which had returned before the kill");
            assertEquals(List.of(), leftovers(parent, name), "kill " + i + ": leftovers after the load");
            assertFolderKept(dir, "kill " + i);
            if (k > first) {
                stats.progressed.incrementAndGet();
            }
            last = k;
        }
        AtomicSaveChild.save(dir, last + 1, true);
        assertOneSave(dir, last + 1, "the last save");
        assertEquals(List.of(), leftovers(parent, name));
        assertFolderKept(dir, "the last save");
    }

    private static Process startChild(Path dir, int first, boolean exchange, boolean torch) throws IOException {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                "-XX:-UsePerfData", "-Xmx256m", "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0",
                "-cp", System.getProperty("java.class.path"), AtomicSaveChild.class.getName(), "save", dir.toString(),
                Integer.toString(first), exchange ? "exchange" : "aside", torch ? "torch" : "plain"));
        return new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.INHERIT).start();
    }

    /** The folder as a reader that is not peft4j sees it: the config's save number in every weight. */
    private static void assertOneSave(Path dir, int atLeast, String what) throws IOException {
        int k = savedK(PeftConfigs.read(dir), what);
        assertTrue(k >= atLeast, what + ": save " + k + " older than " + atLeast);
        ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(dir.resolve(AdapterFolder.SAFETENSORS_NAME)))
                .order(ByteOrder.LITTLE_ENDIAN);
        long header = b.getLong();
        b.position(Math.toIntExact(8 + header));
        assertEquals(AtomicSaveChild.TENSORS * AtomicSaveChild.ELEMENTS * 4L, b.remaining(), what);
        while (b.hasRemaining()) {
            float v = b.getFloat();
            if (v != k) {
                throw new AssertionError(what + ": weights of save " + v + " beside the config of save " + k);
            }
        }
    }

    private static int savedK(PeftConfig config, String what) {
        String base = config.baseModelNameOrPath();
        assertTrue(base != null && base.startsWith("save-"), what + ": " + base);
        return Integer.parseInt(base.substring("save-".length()));
    }

    private static void assertFolderKept(Path dir, String what) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            assertEquals(new TreeSet<>(ENTRIES), s.map(p -> p.getFileName().toString())
                    .collect(Collectors.toCollection(TreeSet::new)), what + ": the folder's entries");
        }
        assertArrayEquals(README, Files.readAllBytes(dir.resolve("README.md")), what + ": README.md");
        assertEquals(-1, savedK(PeftConfigs.read(dir.resolve("other")), what + ": other/"));
    }

    private static List<String> leftovers(Path parent, String name) throws IOException {
        return AtomicFolder.leftovers(parent, name, true).stream().map(p -> p.getFileName().toString()).toList();
    }

    @Test
    void theChildsPlainWriterWritesWhatSafetensorsFileWrites() throws Exception {
        AtomicSaveChild.writePlain(tmp.resolve("plain.safetensors"), 7);
        AtomicSaveChild.writeWithTorch(tmp.resolve("torch.safetensors"), 7);
        assertArrayEquals(Files.readAllBytes(tmp.resolve("torch.safetensors")),
                Files.readAllBytes(tmp.resolve("plain.safetensors")));
    }
}
