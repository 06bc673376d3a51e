package dev.peft4j.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.zip.ZipEntry;
import java.util.zip.ZipOutputStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.ThrowingSupplier;
import org.junit.jupiter.api.io.TempDir;

/**
 * Small files that cost much to unpickle naively: each must be read or refused with a
 * {@link TorchPickleException} naming the file within a second. The files are built here, as
 * {@code torch.save}'s zip layout with a deflated {@code data.pkl}.
 */
class TorchPickleHostileTest {
    private static final Duration LIMIT = Duration.ofSeconds(1);
    private static final Duration WALL_STOP = Duration.ofSeconds(15);
    private static final int MEMOIZE = 0x94;
    private static final int TUPLE2 = 0x86;

    @TempDir
    Path tmp;

    /** Writes {@code archive/data.pkl} from the chunks given, deflated, repeated {@code times} times. */
    private Path torchZip(String name, byte[] head, byte[] repeated, long times, byte[] tail) throws IOException {
        Path file = tmp.resolve(name);
        try (ZipOutputStream z = new ZipOutputStream(Files.newOutputStream(file))) {
            z.setLevel(9);
            z.putNextEntry(new ZipEntry("archive/data.pkl"));
            z.write(head);
            writeRepeated(z, repeated, times);
            z.write(tail);
            z.closeEntry();
            z.putNextEntry(new ZipEntry("archive/byteorder"));
            z.write("little".getBytes(java.nio.charset.StandardCharsets.US_ASCII));
            z.closeEntry();
        }
        return file;
    }

    private static void writeRepeated(OutputStream out, byte[] unit, long times) throws IOException {
        if (times == 0 || unit.length == 0) {
            return;
        }
        byte[] block = new byte[unit.length * (int) Math.max(1, Math.min(times, (1 << 20) / unit.length))];
        int perBlock = block.length / unit.length;
        for (int i = 0; i < perBlock; i++) {
            System.arraycopy(unit, 0, block, i * unit.length, unit.length);
        }
        long left = times;
        while (left > 0) {
            int n = (int) Math.min(left, perBlock);
            out.write(block, 0, n * unit.length);
            left -= n;
        }
    }

    private static byte[] b(int... v) {
        byte[] out = new byte[v.length];
        for (int i = 0; i < v.length; i++) {
            out[i] = (byte) v[i];
        }
        return out;
    }

    private static TorchPickleException refusedInTime(Path file) {
        return inTime(() -> assertThrows(TorchPickleException.class, () -> TorchPickle.loadStateDict(file)));
    }

    /**
     * Runs {@code task} and asserts it took under a second of this thread's CPU time (the build
     * machine may be shared: wall time there says little), with a wall-clock stop against hangs.
     */
    static <T> T inTime(ThrowingSupplier<T> task) {
        return assertTimeoutPreemptively(WALL_STOP, () -> {
            ThreadMXBean threads = ManagementFactory.getThreadMXBean();
            long cpu0 = threads.getCurrentThreadCpuTime();
            T result = task.get();
            long cpu = threads.getCurrentThreadCpuTime() - cpu0;
            assertTrue(cpu < LIMIT.toNanos(), "took " + cpu / 1_000_000 + " ms of CPU time");
            return result;
        });
    }

    /**
     * Keys a_n and b_n with a_k+1 = (a_k, b_k) and b_k+1 = (b_k, a_k): equal, but comparing them
     * item by item visits 2^n pairs (43 s at n = 31 before keys were made canonical).
     */
    private static byte[] equalNestedTupleKeys(int depth) {
        ByteArrayOutputStream p = new ByteArrayOutputStream();
        p.writeBytes(b(0x80, 2, '}')); // PROTO 2, EMPTY_DICT
        p.writeBytes(b('K', 1, 0x85, 'q', 0, 'K', 1, 0x85, 'q', 1, '0', '0')); // a_0 = (1,), b_0 = (1,): memo 0, 1
        for (int k = 0; k < depth; k++) {
            int a = 2 * k;
            int bb = 2 * k + 1;
            p.writeBytes(b('h', a, 'h', bb, TUPLE2, 'q', a + 2)); // a_k+1
            p.writeBytes(b('h', bb, 'h', a, TUPLE2, 'q', bb + 2)); // b_k+1
            p.writeBytes(b('0')); // POP: only the memo keeps them
            p.writeBytes(b('0'));
        }
        p.writeBytes(b('h', 2 * depth, 'N', 's', 'h', 2 * depth + 1, 'N', 's', '.'));
        return p.toByteArray();
    }

    @Test
    void equalNestedTupleKeysCompareInLinearTime() throws Exception {
        byte[] pickle = equalNestedTupleKeys(31);
        assertTrue(pickle.length < 600, "a file of " + pickle.length + " bytes");
        Path file = torchZip("nested_keys.bin", pickle, new byte[0], 0, new byte[0]);
        Map<?, ?> dict = inTime(() -> assertInstanceOf(Map.class, TorchPickle.load(file)));
        assertEquals(1, dict.size(), "a_31 and b_31 are equal tuples: one key, as in Python");
        List<?> key = assertInstanceOf(List.class, dict.keySet().iterator().next());
        assertEquals(2, key.size());
        assertSame(key.get(0), key.get(1), "equal items of a key tuple are made one canonical object");
        TorchPickleException e = refusedInTime(file);
        assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("not a str"), e.getMessage());
    }

    @Test
    void keysNestedTooDeeplyAreRefused() throws Exception {
        Path file = torchZip("deep_keys.bin", equalNestedTupleKeys(40), new byte[0], 0, new byte[0]);
        TorchPickleException e = refusedInTime(file);
        assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("nested deeper"),
                e.getMessage());
    }

    /**
     * 200k tuple keys (i, -31 i) all have one {@link List#hashCode}; key tuples hash with a seeded
     * hash instead, so the dict does not degrade to a list scan per insert (quadratic).
     */
    @Test
    void tupleKeysCraftedToCollideUnderListHashCodeLoadInTime() throws Exception {
        int n = 200_000;
        ByteArrayOutputStream p = new ByteArrayOutputStream();
        p.writeBytes(b(0x80, 2, '}', '('));
        for (int i = 0; i < n; i++) {
            int j = 31 * (n - i); // (i, 31 (n - i)) hash as lists to 31 (31 + 31 n)
            p.writeBytes(b('J', i, i >> 8, i >> 16, i >> 24, 'J', j, j >> 8, j >> 16, j >> 24, TUPLE2, 'N'));
        }
        p.writeBytes(b('u', '.'));
        assertEquals(List.of(0L, 31L * n).hashCode(), List.of(1L, 31L * (n - 1)).hashCode(), "keys collide as lists");
        Path file = torchZip("colliding_keys.bin", p.toByteArray(), new byte[0], 0, new byte[0]);
        Map<?, ?> dict = inTime(() -> assertInstanceOf(Map.class, TorchPickle.load(file)));
        assertEquals(n, dict.size());
    }

    /** About 190 KB on disk; data.pkl inflates to 200 million MEMOIZE opcodes (200 MB). */
    @Test
    void twoHundredMillionMemoizeOpcodesAreRefused() throws Exception {
        Path file = torchZip("memoize.bin", b(0x80, 4, 'N'), b(MEMOIZE), 200_000_000L, b('.'));
        assertTrue(Files.size(file) < 300_000, Files.size(file) + " bytes");
        TorchPickleException e = refusedInTime(file);
        assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("data.pkl"), e.getMessage());
    }

    /** Within the size allowed for data.pkl, the memo limit stops a pickle that only memoizes. */
    @Test
    void memoLimitStopsAPickleThatOnlyMemoizes() throws Exception {
        long count = PickleMachine.MAX_MEMO + 10L;
        assertTrue(count < TorchPickle.MAX_PICKLE_BYTES);
        Path file = torchZip("memo_limit.bin", b(0x80, 4, 'N'), b(MEMOIZE), count, b('.'));
        TorchPickleException e = refusedInTime(file);
        assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("memo"), e.getMessage());
    }

    @Test
    void stackLimitStopsAPickleThatOnlyDuplicates() throws Exception {
        long count = PickleMachine.MAX_STACK + 10L;
        Path file = torchZip("dup.bin", b(0x80, 4, 'N'), b('2'), count, b('.'));
        TorchPickleException e = refusedInTime(file);
        assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("stack"), e.getMessage());
    }

    /** APPEND of one list into itself, over and over: the container item limit stops it. */
    @Test
    void itemLimitStopsAPickleThatOnlyAppends() throws Exception {
        long count = PickleMachine.MAX_ITEMS + 10L; // 'a' after '2': two bytes per item
        Path file = torchZip("append.bin", b(0x80, 4, ']'), b('2', 'a'), count, b('.'));
        assertTrue(count * 2 < TorchPickle.MAX_PICKLE_BYTES);
        // twice the opcodes of the tests above: stopped, with no claim on the time it takes
        TorchPickleException e = assertTimeoutPreemptively(WALL_STOP,
                () -> assertThrows(TorchPickleException.class, () -> TorchPickle.loadStateDict(file)));
        assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("items"), e.getMessage());
    }

    /** Found by the fuzzer: a zip whose end record points past the end of the file (ZipFile: EOFException). */
    @Test
    void zipEndRecordPastTheEndIsACorruptArchive() {
        Path file = PickleTestTensors.fixture("fuzz-findings/zip_end_record_past_eof.pt");
        TorchPickleException e = refusedInTime(file);
        assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("corrupt zip"), e.getMessage());
    }

    /** Found by the fuzzer: an entry name that is not UTF-8 (ZipFile.getEntry: IllegalArgumentException). */
    @Test
    void zipEntryNameNotUtf8IsACorruptArchive() {
        Path file = PickleTestTensors.fixture("fuzz-findings/zip_entry_name_not_utf8.pt");
        TorchPickleException e = refusedInTime(file);
        assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("corrupt zip"), e.getMessage());
    }
}
