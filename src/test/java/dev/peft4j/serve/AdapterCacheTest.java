package dev.peft4j.serve;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.models.PreTrainedModel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * 1,000 registered adapters, 16 resident at most, requests spread over all of them: every request succeeds, the
 * resident set never passes 16, the counters add up, and native memory (RssAnon) stays flat once warm: over the last
 * 500 requests (about 490 loads) a leak of the unloaded adapters (256 KiB each) would add some 120 MiB, where the
 * allocator's own growth (arenas, per-thread scratch) levels off during the first 900.
 */
class AdapterCacheTest {
    private static final int REGISTERED = 1000;
    private static final int RESIDENT = 16;
    private static final int REQUESTS = 1400;
    /** Requests before the first RssAnon sample: the Java heap (anonymous memory too) has grown to its size by then. */
    private static final int WARM = 400;
    /** Requests before the second sample: growth from here to the end is what a leak would keep adding. */
    private static final int MID = 900;

    @Test
    void thousandAdaptersSixteenResident(@TempDir Path tmp) throws Exception {
        List<Path> distinct = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            distinct.add(ServeFixtures.lora(tmp.resolve("src" + i), ServeFixtures.HIDDEN, ServeFixtures.LAYERS, 128,
                    500 + i));
        }
        try (PreTrainedModel model = ServeFixtures.llama(3);
                ServingEngine engine = ServingEngine.builder(model).maxConcurrent(8).maxLength(32)
                        .maxResidentAdapters(RESIDENT).maxWaiting(REQUESTS).threads(1).build()) {
            for (int i = 0; i < REGISTERED; i++) {
                Path d = Files.createDirectories(tmp.resolve("adapter" + i));
                Path src = distinct.get(i % distinct.size());
                Files.copy(src.resolve("adapter_config.json"), d.resolve("adapter_config.json"));
                Files.copy(src.resolve("adapter_model.safetensors"), d.resolve("adapter_model.safetensors"));
                engine.register("adapter" + i, d);
            }
            assertEquals(REGISTERED, engine.stats().registeredAdapters());
            assertEquals(0, engine.stats().residentAdapters(), "registration reads configs only");

            AtomicBoolean sampling = new AtomicBoolean(true);
            AtomicInteger maxResidentSeen = new AtomicInteger();
            Thread sampler = new Thread(() -> {
                while (sampling.get()) {
                    maxResidentSeen.accumulateAndGet(engine.stats().residentAdapters(), Math::max);
                    Thread.onSpinWait();
                }
            });
            sampler.start();
            List<Integer> order = new ArrayList<>();
            for (int i = 0; i < REQUESTS; i++) {
                order.add(i % REGISTERED);
            }
            Collections.shuffle(order, new java.util.Random(11));
            long warmRss = 0;
            long midRss = 0;
            List<CompletableFuture<ServeResult>> all = new ArrayList<>();
            for (int i = 0; i < REQUESTS; i++) {
                all.add(engine.submit(ServeRequest.builder().adapter("adapter" + order.get(i))
                        .promptIds(1, 2, 3, i % ServeFixtures.VOCAB).maxNewTokens(2).build()).result());
                if (i == WARM - 1) {
                    for (CompletableFuture<ServeResult> f : all) {
                        f.get(60, TimeUnit.SECONDS);
                    }
                    warmRss = nativeAnonKiB();
                }
                if (i == MID - 1) {
                    for (CompletableFuture<ServeResult> f : all) {
                        f.get(60, TimeUnit.SECONDS);
                    }
                    midRss = nativeAnonKiB();
                }
            }
            for (CompletableFuture<ServeResult> f : all) {
                assertEquals(2, f.get(120, TimeUnit.SECONDS).tokenIds().length);
            }
            long endRss = nativeAnonKiB();
            sampling.set(false);
            sampler.join();

            EngineStats st = engine.stats();
            assertEquals(REQUESTS, st.completed());
            assertEquals(0, st.failed());
            assertEquals(REQUESTS, st.adapterHits() + st.adapterMisses(), st.toString());
            assertTrue(st.adapterLoads() >= REGISTERED && st.adapterLoads() <= st.adapterMisses(), st.toString());
            assertEquals(st.adapterLoads() - st.adapterEvictions(), st.residentAdapters(), st.toString());
            assertTrue(st.residentAdapters() <= RESIDENT && st.maxResidentObserved() <= RESIDENT, st.toString());
            assertTrue(maxResidentSeen.get() <= RESIDENT && maxResidentSeen.get() > 1, "seen " + maxResidentSeen);
            long lateGrowthMiB = (endRss - midRss) / 1024;
            assertTrue(lateGrowthMiB < 48, "RssAnon less the Java heap grew by " + lateGrowthMiB + " MiB over the last "
                    + (REQUESTS - MID) + " requests (" + (midRss - warmRss) / 1024 + " MiB over the "
                    + (MID - WARM) + " before them; " + st.adapterLoads() + " loads in all)");
        }
    }

    /**
     * {@code RssAnon} less the JVM's committed heap and non-heap memory, after a GC, in KiB: the Java heap is anonymous
     * memory too, and grows with the other tests run in the same JVM.
     */
    static long nativeAnonKiB() throws java.io.IOException {
        System.gc();
        java.lang.management.MemoryMXBean mx = java.lang.management.ManagementFactory.getMemoryMXBean();
        long jvm = mx.getHeapMemoryUsage().getCommitted() + mx.getNonHeapMemoryUsage().getCommitted();
        return rssAnonKiB() - jvm / 1024;
    }

    /** {@code RssAnon} of {@code /proc/self/status}, in KiB. */
    static long rssAnonKiB() throws java.io.IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("RssAnon:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        }
        throw new IllegalStateException("no RssAnon in /proc/self/status");
    }
}
