package dev.peft4j.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.PreTrainedModel;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Data-parallel training on loopback, each rank a child JVM ({@link DistributedTrainChild}) with torchrun's
 * environment: 2 ranks splitting the batches end where 1 process training on all of them does, a 2-rank checkpoint
 * resumes in 1 and in 2 processes, and a rank killed mid-run ends the other with an error naming it.
 */
class DistributedTrainerTest {
    private static final double TOLERANCE = 1e-6;

    @Test
    void twoRanksSplittingTheBatchesMatchOneProcessOnAllOfThemAndTheirCheckpointResumesInOneAndTwo(
            @TempDir Path tmp) throws Exception {
        Path two = tmp.resolve("two");
        List<Process> ranks = launch(2, two, 4, 2, "-");
        for (Process p : ranks) {
            finish(p, 240);
        }
        Map<String, Tensor> r0 = read(two.resolve("params-rank0.safetensors"));
        Map<String, Tensor> r1 = read(two.resolve("params-rank1.safetensors"));
        assertEquals(0.0, maxDiff(r0, r1), "the ranks' adapters stay identical");
        assertTrue(Files.isDirectory(two.resolve("checkpoint-2")) && Files.isDirectory(two.resolve("checkpoint-4")),
                "rank 0 saved checkpoints 2 and 4");

        // one process, the same initial adapter as rank 0, each step's batches together
        Map<String, Tensor> initial;
        Map<String, Tensor> whole;
        try (PreTrainedModel model = DistributedTrainChild.newModel(1000)) {
            initial = DistributedTrainChild.trainable(model);
            new Trainer(model, DistributedTrainChild.arguments(tmp.resolve("one"), 4, 0))
                    .train(DistributedTrainChild.data(1));
            whole = DistributedTrainChild.trainable(model);
        }
        assertTrue(maxDiff(initial, whole) > 1e-3, "training moved the adapter: " + maxDiff(initial, whole));
        assertTrue(maxDiff(whole, r0) <= TOLERANCE, "2 ranks vs 1 process: max |diff| " + maxDiff(whole, r0));

        // the 2-rank checkpoint at step 2, resumed in one process on the whole batches
        try (PreTrainedModel model = DistributedTrainChild.newModel(5)) {
            new Trainer(model, DistributedTrainChild.arguments(tmp.resolve("resumed1"), 4, 0))
                    .train(DistributedTrainChild.data(1), two.resolve("checkpoint-2"));
            Map<String, Tensor> resumed = DistributedTrainChild.trainable(model);
            assertTrue(maxDiff(whole, resumed) <= TOLERANCE, "resumed in 1 process: " + maxDiff(whole, resumed));
        }
        // and in 2 ranks
        Path again = tmp.resolve("resumed2");
        for (Process p : launch(2, again, 4, 0, two.resolve("checkpoint-2").toString())) {
            finish(p, 240);
        }
        Map<String, Tensor> resumed2 = read(again.resolve("params-rank1.safetensors"));
        assertTrue(maxDiff(whole, resumed2) <= TOLERANCE, "resumed in 2 ranks: " + maxDiff(whole, resumed2));
    }

    @Test
    void eachRankTakesItsShareOfTheEpochOrderAsDistributedSamplerSplitsIt() {
        int[] order = {4, 2, 0, 3, 1};
        int[] shard = new int[3];
        // DistributedSampler: padded to 6 by repeating the first entry, then rank::2
        Trainer.shard(order, 0, 2, shard);
        assertEquals(List.of(4, 0, 1), asList(shard));
        Trainer.shard(order, 1, 2, shard);
        assertEquals(List.of(2, 3, 4), asList(shard));
        // more ranks than entries: the order is repeated as often as needed
        int[] one = new int[1];
        int[] got = new int[4];
        for (int r = 0; r < 4; r++) {
            Trainer.shard(new int[] {7, 9}, r, 4, one);
            got[r] = one[0];
        }
        assertEquals(List.of(7, 9, 7, 9), asList(got));
        int[] all = new int[5];
        Trainer.shard(order, 0, 1, all); // one rank: the whole order
        assertEquals(asList(order), asList(all));
    }

    @Test
    void theEnvironmentIsReadAsTorchrunSetsItAndBadValuesAreNamed() {
        assertEquals(null, DistributedContext.fromEnvironment(Map.of()), "no WORLD_SIZE: one process");
        assertEquals(null, DistributedContext.fromEnvironment(Map.of("WORLD_SIZE", "1", "RANK", "0")));
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> DistributedContext.fromEnvironment(Map.of("WORLD_SIZE", "2", "RANK", "0")));
        assertTrue(e.getMessage().contains("MASTER_ADDR"), e.getMessage());
        e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> DistributedContext.fromEnvironment(Map.of("WORLD_SIZE", "2", "RANK", "2",
                        "MASTER_ADDR", "127.0.0.1", "MASTER_PORT", "29500")));
        assertTrue(e.getMessage().contains("RANK 2"), e.getMessage());
        e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> DistributedContext.fromEnvironment(Map.of("WORLD_SIZE", "two")));
        assertTrue(e.getMessage().contains("WORLD_SIZE: 'two'"), e.getMessage());
    }

    private static List<Integer> asList(int[] a) {
        List<Integer> l = new ArrayList<>();
        for (int v : a) {
            l.add(v);
        }
        return l;
    }

    @Test
    void aKilledRankEndsTheOtherWithAnErrorNamingItInsteadOfAHang(@TempDir Path tmp) throws Exception {
        killAndWatch(tmp.resolve("kill1"), 1, "rank 1 is lost");
        // rank 0 also hosts the store: the survivor learns it from the store's silence
        killAndWatch(tmp.resolve("kill0"), 0, "rank 0 is lost");
    }

    private static void killAndWatch(Path out, int victim, String want) throws Exception {
        List<Process> ranks = launch(2, out, 1_000_000, 0, "-");
        Process killed = ranks.get(victim);
        Process survivor = ranks.get(1 - victim);
        List<String> lines = new ArrayList<>();
        try {
            BufferedReader in = new BufferedReader(new InputStreamReader(survivor.getInputStream(),
                    StandardCharsets.UTF_8));
            String line;
            while ((line = in.readLine()) != null) {
                lines.add(line);
                if (line.equals("step 2")) {
                    break;
                }
            }
            assertTrue(lines.contains("step 2"), "the survivor trained 2 steps: " + lines);
            killed.destroyForcibly(); // SIGKILL: no goodbye
            long t0 = System.nanoTime();
            Thread drain = drain(in, lines);
            // the collective timeout is 20 s; a closed connection is seen sooner
            assertTrue(survivor.waitFor(60, TimeUnit.SECONDS), "rank " + (1 - victim) + " still runs 60 s after rank "
                    + victim + " died");
            drain.join(5000);
            double seconds = (System.nanoTime() - t0) / 1e9;
            assertTrue(survivor.exitValue() != 0, "the survivor exits non-zero");
            String text;
            synchronized (lines) {
                text = String.join("\n", lines);
            }
            assertTrue(text.contains(want), "the survivor's error names rank " + victim + ": " + text);
            assertTrue(seconds < 60, "ended in " + seconds + " s");
        } finally {
            for (Process p : ranks) {
                p.destroyForcibly();
                p.waitFor(30, TimeUnit.SECONDS);
            }
        }
    }

    // world child JVMs with torchrun's environment on a free loopback port; stderr merged into stdout
    static List<Process> launch(int world, Path out, int maxSteps, int saveSteps, String resume) throws IOException {
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        Files.createDirectories(out);
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<Process> ranks = new ArrayList<>();
        for (int r = 0; r < world; r++) {
            ProcessBuilder pb = new ProcessBuilder(java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m",
                    "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0", "-cp", System.getProperty("java.class.path"),
                    DistributedTrainChild.class.getName(), out.toString(), String.valueOf(maxSteps),
                    String.valueOf(saveSteps), resume).redirectErrorStream(true);
            Map<String, String> env = pb.environment();
            env.put("RANK", String.valueOf(r));
            env.put("LOCAL_RANK", String.valueOf(r));
            env.put("WORLD_SIZE", String.valueOf(world));
            env.put("LOCAL_WORLD_SIZE", String.valueOf(world));
            env.put("MASTER_ADDR", "127.0.0.1");
            env.put("MASTER_PORT", String.valueOf(port));
            env.put("PEFT4J_DIST_TIMEOUT_S", "20");
            env.put("OMP_NUM_THREADS", "1");
            env.put("OPENBLAS_NUM_THREADS", "1");
            env.put("OMP_WAIT_POLICY", "passive");
            env.put("OPENBLAS_THREAD_TIMEOUT", "4");
            ranks.add(pb.start());
        }
        return ranks;
    }

    private static void finish(Process p, int seconds) throws Exception {
        List<String> lines = new ArrayList<>();
        Thread t = drain(new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8)), lines);
        boolean done = p.waitFor(seconds, TimeUnit.SECONDS);
        if (!done) {
            p.destroyForcibly();
        }
        t.join(5000);
        assertTrue(done && p.exitValue() == 0, "a rank failed (" + (done ? "exit " + p.exitValue() : "timeout")
                + "):\n" + String.join("\n", lines));
    }

    private static Thread drain(BufferedReader in, List<String> lines) {
        Thread t = new Thread(() -> {
            try {
                String line;
                while ((line = in.readLine()) != null) {
                    synchronized (lines) {
                        lines.add(line);
                    }
                }
            } catch (IOException ignored) {
                // the process ended
            }
        });
        t.setDaemon(true);
        t.start();
        return t;
    }

    private static Map<String, Tensor> read(Path file) throws IOException {
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            Map<String, Tensor> m = new java.util.LinkedHashMap<>();
            for (String k : f.names()) {
                m.put(k, f.get(k).clone());
            }
            return m;
        }
    }

    private static double maxDiff(Map<String, Tensor> a, Map<String, Tensor> b) {
        assertEquals(a.keySet(), b.keySet());
        double d = 0;
        try (PointerScope s = new PointerScope()) {
            for (String k : a.keySet()) {
                d = Math.max(d, a.get(k).sub(b.get(k)).abs().max().item_double());
            }
        }
        return d;
    }
}
