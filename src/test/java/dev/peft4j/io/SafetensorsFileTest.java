package dev.peft4j.io;

import static dev.peft4j.io.TestTensors.bytes;
import static dev.peft4j.io.TestTensors.f32;
import static dev.peft4j.io.TestTensors.le;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The reader's checks, one malformed file per rule, and the mapping's lifetime and write semantics. */
class SafetensorsFileTest {
    @TempDir
    Path tmp;

    private int files;

    /** A file: the 8-byte little-endian {@code lengthField}, then {@code rest}. */
    private Path raw(long lengthField, byte[] rest) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.writeBytes(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(lengthField).array());
        out.writeBytes(rest);
        Path f = tmp.resolve("t" + (files++) + ".safetensors");
        Files.write(f, out.toByteArray());
        return f;
    }

    /** A file with header {@code json} padded with spaces to 8 bytes (as writers do), then {@code data}. */
    private Path padded(String json, byte[] data) throws IOException {
        return file(json + " ".repeat((8 - json.getBytes(StandardCharsets.UTF_8).length % 8) % 8), data);
    }

    /** A file with header {@code json} (exact length) followed by {@code data}. */
    private Path file(String json, byte[] data) throws IOException {
        byte[] header = json.getBytes(StandardCharsets.UTF_8);
        ByteArrayOutputStream rest = new ByteArrayOutputStream();
        rest.writeBytes(header);
        rest.writeBytes(data);
        return raw(header.length, rest.toByteArray());
    }

    private static void assertRejected(Path f, String tensor, String... fragments) {
        SafetensorsException e = assertThrows(SafetensorsException.class, () -> SafetensorsFile.open(f));
        String m = e.getMessage();
        assertTrue(m.startsWith(f.toString() + ": "), m);
        assertEquals(tensor, e.tensor(), m);
        if (tensor != null) {
            assertTrue(m.contains("tensor \"" + tensor + "\""), m);
        }
        for (String fragment : fragments) {
            assertTrue(m.contains(fragment), "expected \"" + fragment + "\" in: " + m);
        }
    }

    private static String entry(String name, String dtype, String shape, long begin, long end) {
        return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" + begin + ","
                + end + "]}";
    }

    @Test
    void rejectsFileShorterThanTheLengthField() throws Exception {
        Path f = tmp.resolve("short.safetensors");
        Files.write(f, new byte[] {1, 0, 0});
        assertRejected(f, null, "3 bytes");
    }

    @Test
    void rejectsHeaderLongerThanFile() throws Exception {
        assertRejected(raw(100, "{}".getBytes(StandardCharsets.US_ASCII)), null, "header length 100", "10 bytes");
    }

    @Test
    void rejectsAbsurdHeaderSizeBeforeAllocatingIt() throws Exception {
        assertRejected(raw(1L << 40, new byte[16]), null, "header length 1099511627776", "cap");
        assertRejected(raw(-1L, new byte[16]), null, "header length 18446744073709551615", "cap");
        assertRejected(raw(100_000_001L, new byte[16]), null, "cap");
    }

    @Test
    void rejectsHeaderThatIsNotJson() throws Exception {
        assertRejected(file("{\"a\":{\"dtype\":", new byte[0]), null, "not valid JSON");
        assertRejected(file("[1,2]   ", new byte[0]), null, "must start with '{'");
        assertRejected(file("", new byte[0]), null, "empty header");
        assertRejected(file("{} x", new byte[0]), null, "not valid JSON");
        assertRejected(file("{} {}", new byte[0]), null, "after its JSON object");
        assertRejected(file("{\"a\":1}", new byte[0]), "a", "must be an object");
    }

    @Test
    void rejectsHeaderThatIsNotUtf8() throws Exception {
        byte[] header = "{\"\u00e9\":1}".getBytes(StandardCharsets.ISO_8859_1);
        ByteArrayOutputStream rest = new ByteArrayOutputStream();
        rest.writeBytes(header);
        assertRejected(raw(header.length, rest.toByteArray()), null, "UTF-8");
    }

    @Test
    void rejectsUnknownDtype() throws Exception {
        assertRejected(file("{" + entry("w", "F31", "[2]", 0, 8) + "}", new byte[8]), "w", "unknown dtype \"F31\"");
    }

    @Test
    void rejectsShapeThatDisagreesWithByteSpan() throws Exception {
        assertRejected(file("{" + entry("w", "F32", "[3]", 0, 8) + "}", new byte[8]), "w", "needs 12 bytes", "span 8");
        // 3 four-bit values are 12 bits: not whole bytes
        assertRejected(file("{" + entry("q", "F4", "[3]", 0, 2) + "}", new byte[2]), "q", "not a whole number of bytes");
    }

    @Test
    void rejectsOverlappingOffsets() throws Exception {
        String h = "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}";
        assertRejected(file(h, new byte[12]), "b", "overlap tensor \"a\"");
    }

    @Test
    void rejectsOutOfOrderOffsets() throws Exception {
        assertRejected(file("{" + entry("w", "F32", "[0]", 8, 0) + "}", new byte[8]), "w", "out of order");
    }

    @Test
    void rejectsOffsetsBeyondTheDataSection() throws Exception {
        assertRejected(file("{" + entry("w", "F32", "[4]", 0, 16) + "}", new byte[8]), "w", "out of range", "8 bytes");
        assertRejected(file("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", new byte[8]), "w",
                "negative data_offsets");
        assertRejected(file("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", new byte[8]), "w",
                "exactly two");
    }

    @Test
    void rejectsGapsInTheDataSection() throws Exception {
        String h = "{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "F32", "[1]", 8, 12) + "}";
        assertRejected(file(h, new byte[12]), "b", "gap of 4");
        assertRejected(file("{" + entry("a", "U8", "[2]", 2, 4) + "}", new byte[4]), "a", "gap of 2");
    }

    @Test
    void rejectsTrailingBytesAfterTheLastTensor() throws Exception {
        assertRejected(file("{" + entry("a", "F32", "[1]", 0, 4) + "}", new byte[6]), null, "2 trailing bytes");
    }

    @Test
    void rejectsDuplicateNames() throws Exception {
        String h = "{" + entry("a", "U8", "[1]", 0, 1) + "," + entry("a", "U8", "[1]", 1, 2) + "}";
        assertRejected(file(h, new byte[2]), "a", "duplicate name");
        assertRejected(file("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                new byte[1]), "a", "duplicate field dtype");
    }

    @Test
    void rejectsNegativeDimensions() throws Exception {
        assertRejected(file("{" + entry("w", "F32", "[-1,-4]", 0, 16) + "}", new byte[16]), "w", "negative dimension");
    }

    @Test
    void rejectsShapesTooLargeToAddressAndNonIntegerDimensions() throws Exception {
        assertRejected(file("{" + entry("w", "F32", "[4294967296,4294967296]", 0, 8) + "}", new byte[8]), "w",
                "too large");
        assertRejected(file("{" + entry("w", "F32", "[99999999999999999999]", 0, 8) + "}", new byte[8]), "w",
                "too large");
        assertRejected(file("{" + entry("w", "F32", "[2.0]", 0, 8) + "}", new byte[8]), "w", "integers");
        assertRejected(file("{" + entry("w", "F32", "2", 0, 8) + "}", new byte[8]), "w", "array");
    }

    @Test
    void rejectsEntriesLackingAField() throws Exception {
        assertRejected(file("{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", new byte[1]), "w", "lacks data_offsets");
    }

    @Test
    void rejectsMetadataThatIsNotStrings() throws Exception {
        assertRejected(file("{\"__metadata__\":{\"n\":1}}", new byte[0]), null, "__metadata__", "\"n\"");
        assertRejected(file("{\"__metadata__\":[]}", new byte[0]), null, "__metadata__");
    }

    @Test
    void tellsAnEmptyMetadataFromNone() throws Exception {
        try (SafetensorsFile empty = SafetensorsFile.open(file("{\"__metadata__\":{}}", new byte[0]));
                SafetensorsFile none = SafetensorsFile.open(file("{}", new byte[0]));
                SafetensorsFile nul = SafetensorsFile.open(file("{\"__metadata__\":null}", new byte[0]))) {
            assertTrue(empty.hasMetadata() && empty.metadata().isEmpty());
            assertFalse(none.hasMetadata() || nul.hasMetadata());
            assertTrue(none.names().isEmpty());
        }
    }

    @Test
    void rejectsBoolBytesOtherThanZeroOrOne() throws Exception {
        assertRejected(file("{" + entry("m", "BOOL", "[3]", 0, 3) + "}", new byte[] {1, 0, 2}), "m", "element 2",
                "byte 2");
        byte[] many = new byte[70_000]; // past the first 64 KiB chunk checked
        many[69_999] = (byte) 0xff;
        assertRejected(file("{" + entry("m", "BOOL", "[70000]", 0, 70_000) + "}", many), "m", "element 69999",
                "byte 255");
    }

    @Test
    void readsUnpaddedHeaderAndListsNamesInDataOrder() throws Exception {
        // header order b, a; data order a, b; no padding (header length 117, not a multiple of 8)
        String h = "{" + entry("b", "I32", "[1]", 4, 8) + "," + entry("a", "F32", "[1]", 0, 4) + "}";
        byte[] data = new byte[8];
        System.arraycopy(f32(1.5f), 0, data, 0, 4);
        System.arraycopy(le(4, -7), 0, data, 4, 4);
        try (SafetensorsFile f = SafetensorsFile.open(file(h, data))) {
            assertEquals(List.of("a", "b"), f.names());
            assertTrue(f.metadata().isEmpty());
            try (Tensor a = f.get("a"); Tensor b = f.get("b")) {
                // unaligned within the file: served as aligned copies with the same values
                assertEquals(1.5f, a.item_float());
                assertEquals(-7, b.item_int());
                assertEquals(1, a.dim());
            }
        }
    }

    @Test
    void readsEmptyTensorsAndScalars() throws Exception {
        String h = "{\"__metadata__\":{\"format\":\"pt\"}," + entry("empty", "F32", "[0,3]", 0, 0) + ","
                + entry("scalar", "F64", "[]", 0, 8) + "," + entry("empty2", "BF16", "[2,0]", 8, 8) + "}";
        try (SafetensorsFile f = SafetensorsFile.open(file(h, TestTensors.f64(2.25)))) {
            assertEquals(List.of("empty", "scalar", "empty2"), f.names());
            try (Tensor e = f.get("empty"); Tensor s = f.get("scalar"); Tensor e2 = f.get("empty2")) {
                assertArrayEquals(new long[] {0, 3}, e.shape());
                assertEquals(ScalarType.Float, e.scalar_type().intern());
                assertArrayEquals(new long[] {2, 0}, e2.shape());
                assertEquals(ScalarType.BFloat16, e2.scalar_type().intern());
                assertEquals(0, s.dim());
                assertEquals(2.25, s.item_double());
            }
        }
    }

    @Test
    void dtypesWithoutLibtorchTypeOpenButGetNamesTheTensor() throws Exception {
        // F6_E2M3: 6-bit values, 4 of them in 3 bytes; libtorch has no such element type
        String h = "{" + entry("six", "F6_E2M3", "[4]", 0, 3) + "," + entry("ok", "U8", "[1]", 3, 4) + "}";
        Path p = file(h, new byte[] {1, 2, 3, 9});
        try (SafetensorsFile f = SafetensorsFile.open(p)) {
            assertEquals(new TensorInfo("six", "F6_E2M3", new long[] {4}, 0, 3), f.info("six"));
            UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class, () -> f.get("six"));
            assertTrue(e.getMessage().contains(p.toString()) && e.getMessage().contains("\"six\"")
                    && e.getMessage().contains("F6_E2M3"), e.getMessage());
            try (Tensor ok = f.get("ok")) {
                assertEquals(9, ok.item_int());
            }
        }
    }

    @Test
    void unknownNameAndUseAfterCloseAreClearErrors() throws Exception {
        Path p = file("{" + entry("a", "U8", "[1]", 0, 1) + "}", new byte[1]);
        SafetensorsFile f = SafetensorsFile.open(p);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> f.get("b"));
        assertTrue(e.getMessage().contains(p.toString()) && e.getMessage().contains("\"b\""), e.getMessage());
        f.close();
        f.close(); // idempotent
        assertThrows(IllegalStateException.class, () -> f.get("a"));
    }

    // ---- the mapping: zero copy, lifetime, copy-on-write (Linux: /proc/self/maps) ----

    /** Address ranges of this process's mappings of {@code file}. */
    private static List<long[]> mappingsOf(Path file) throws IOException {
        String name = file.toRealPath().toString();
        return Files.readAllLines(Path.of("/proc/self/maps")).stream()
                .filter(l -> l.endsWith(" " + name))
                .map(l -> {
                    String[] range = l.substring(0, l.indexOf(' ')).split("-");
                    return new long[] {Long.parseUnsignedLong(range[0], 16), Long.parseUnsignedLong(range[1], 16)};
                })
                .toList();
    }

    private Path floats(int n) throws IOException {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = i * 0.5f;
        }
        return padded("{\"__metadata__\":{\"format\":\"pt\"}," + entry("w", "F32", "[" + n + "]", 0, 4L * n) + "}",
                f32(v));
    }

    @Test
    void tensorDataLivesInTheFileMapping() throws Exception {
        Path p = floats(4096);
        try (SafetensorsFile f = SafetensorsFile.open(p); Tensor w = f.get("w")) {
            long address = w.data_ptr().address();
            List<long[]> maps = mappingsOf(p);
            assertEquals(1, maps.size(), "one mapping of the file");
            assertTrue(address >= maps.get(0)[0] && address + w.nbytes() <= maps.get(0)[1],
                    "tensor data at 0x" + Long.toHexString(address) + " is inside the file's mapping");
            assertEquals(0.5f * 4095, w.max().item_float());
        }
    }

    @Test
    void tensorsStayValidAfterCloseAndTheLastOneReleasesTheMapping() throws Exception {
        Path p = floats(1024);
        SafetensorsFile f = SafetensorsFile.open(p);
        Tensor w = f.get("w");
        f.close();
        assertEquals(1, mappingsOf(p).size(), "mapping kept alive by the tensor");
        assertEquals(0.5 * (1023 * 1024 / 2), w.sum().item_double(), 0.0);
        w.close();
        assertTrue(mappingsOf(p).isEmpty(), "mapping released with the last tensor");
    }

    @Test
    void writesToATensorAreCopyOnWriteAndNeverReachTheFile() throws Exception {
        Path p = floats(256);
        byte[] before = Files.readAllBytes(p);
        try (SafetensorsFile f = SafetensorsFile.open(p); Tensor w = f.get("w"); Scalar seven = new Scalar(7.0f)) {
            w.fill_(seven);
            assertEquals(7.0f * 256, w.sum().item_float());
            try (Tensor again = f.get("w")) {
                // another view of the same private mapping sees this process's write...
                assertEquals(7.0f, again.max().item_float());
            }
        }
        // ...the file does not
        assertArrayEquals(before, Files.readAllBytes(p));
        try (SafetensorsFile f = SafetensorsFile.open(p); Tensor w = f.get("w")) {
            assertEquals(0.5f * 255, w.max().item_float());
        }
    }

    @Test
    void alignedTensorsAreViewsNotCopies() throws Exception {
        Path p = floats(64);
        try (SafetensorsFile f = SafetensorsFile.open(p); Tensor a = f.get("w"); Tensor b = f.get("w")) {
            assertEquals(a.data_ptr().address(), b.data_ptr().address());
            assertFalse(a.is_same(b)); // distinct handles over one storage
        }
    }

    /** A field of /proc/self/status in bytes (RssAnon: private memory; RssFile: mapped file pages). */
    static long procStatusBytes(String field) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith(field + ":")) {
                return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
            }
        }
        throw new IllegalStateException(field + " not in /proc/self/status");
    }

    @Test
    void readingEveryTensorAllocatesNoCopyOfTheData() throws Exception {
        int tensors = 8;
        long perTensor = 16L << 20; // 16 MiB each, 128 MiB in all
        java.util.Map<String, Tensor> out = new java.util.LinkedHashMap<>();
        for (int i = 0; i < tensors; i++) {
            out.put("w" + i, org.bytedeco.pytorch.global.torch.ones(perTensor / 4));
        }
        Path p = tmp.resolve("big.safetensors");
        SafetensorsFile.write(p, out);
        out.values().forEach(Tensor::close);
        System.gc();
        long anonBefore = procStatusBytes("RssAnon");
        long fileBefore = procStatusBytes("RssFile");
        double total = 0;
        try (SafetensorsFile f = SafetensorsFile.open(p)) {
            java.util.Map<String, Tensor> all = f.tensors(); // all held while measuring: a copy could not hide
            for (Tensor t : all.values()) {
                try (Tensor sum = t.sum()) {
                    total += sum.item_double(); // reads every page of the tensor
                }
            }
            long anonGrowth = procStatusBytes("RssAnon") - anonBefore;
            long fileGrowth = procStatusBytes("RssFile") - fileBefore;
            all.values().forEach(Tensor::close);
            assertEquals(tensors * perTensor / 4.0, total, 0.0);
            // the 128 MiB were read through the file mapping (positive control) ...
            assertTrue(fileGrowth > 100L << 20, "mapped file pages grew by " + (fileGrowth >> 20) + " MiB");
            // ... and not copied into private memory
            assertTrue(anonGrowth < 24L << 20, "private memory grew by " + (anonGrowth >> 20) + " MiB");
        }
    }

    @Test
    void opensFilesUnderNonAsciiPaths() throws Exception {
        Path dir = Files.createDirectories(tmp.resolve("modèle-模型"));
        Path p = dir.resolve("w.safetensors");
        try (Tensor w = org.bytedeco.pytorch.global.torch.ones(3)) {
            SafetensorsFile.write(p, java.util.Map.of("w", w));
        }
        try (SafetensorsFile f = SafetensorsFile.open(p); Tensor w = f.get("w")) {
            assertEquals(3.0f, w.sum().item_float());
        }
    }

    @Test
    void mapsTensorsLargerThan2GiB() throws Exception {
        // a sparse file: 8 MiB of F32 then a 3 GiB U8 tensor, with marker bytes written past 2^31
        long big = 3L << 30;
        String json = "{" + entry("small", "F32", "[2097152]", 0, 8L << 20) + ","
                + entry("big", "U8", "[" + big + "]", 8L << 20, (8L << 20) + big) + "}";
        json += " ".repeat((8 - json.length() % 8) % 8);
        Path p = file(json, new byte[0]);
        long dataStart = 8 + json.length();
        try (java.io.RandomAccessFile raf = new java.io.RandomAccessFile(p.toFile(), "rw")) {
            raf.setLength(dataStart + (8L << 20) + big);
            raf.seek(dataStart + (8L << 20) + (1L << 31) + 5);
            raf.write(42);
            raf.seek(dataStart + (8L << 20) + big - 1);
            raf.write(7);
        }
        try (SafetensorsFile f = SafetensorsFile.open(p); Tensor t = f.get("big")) {
            assertArrayEquals(new long[] {big}, t.shape());
            try (Tensor a = t.narrow(0, (1L << 31) + 5, 1); Tensor b = t.narrow(0, big - 1, 1);
                    Tensor c = t.narrow(0, 1L << 31, 1)) {
                assertEquals(42, a.item_int());
                assertEquals(7, b.item_int());
                assertEquals(0, c.item_int());
            }
        }
    }
}
