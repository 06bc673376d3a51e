package dev.peft4j.io;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The Hub cache's blob lock excludes a process that locks the same file with {@code flock(2)}, as Python's filelock
 * (huggingface_hub) does: util-linux's {@code flock} command stands in for Python here.
 */
class HubLockTest {
    @Test
    void waitsForAnFlockHeldByAnotherProcess(@TempDir Path dir) throws Exception {
        assumeTrue(NativeFs.LOADED, "the native layer is needed for flock");
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/flock")), "util-linux's flock command");
        Path lockFile = dir.resolve(".locks/models--a--b/0123.lock");
        Files.createDirectories(lockFile.getParent());
        Path held = dir.resolve("held");
        // the other process takes the lock, says so, and keeps it 1.5 s
        Process other = new ProcessBuilder("/usr/bin/flock", lockFile.toString(), "sh", "-c",
                "touch " + held + "; sleep 1.5").redirectErrorStream(true).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!Files.exists(held) && System.nanoTime() < deadline) {
            Thread.sleep(10);
        }
        assertTrue(Files.exists(held), "the flock process did not start");
        long t0 = System.nanoTime();
        try (HubLock lock = HubLock.acquire(lockFile)) {
            long waitedMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
            assertTrue(waitedMs >= 1000, "took the lock after " + waitedMs + " ms while another process held it");
        }
        assertTrue(other.waitFor(10, TimeUnit.SECONDS));
    }
}
