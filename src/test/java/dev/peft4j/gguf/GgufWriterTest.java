package dev.peft4j.gguf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The GGUF writer's bytes: the exact layout of a small file, and every value type and alignment through a reader. */
class GgufWriterTest {
    @TempDir
    Path tmp;

    private static GgufWriter.TensorSource bytes(byte[] data) {
        return ch -> ch.write(ByteBuffer.wrap(data));
    }

    private static byte[] floats(float... v) {
        ByteBuffer b = ByteBuffer.allocate(v.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (float x : v) {
            b.putFloat(x);
        }
        return b.array();
    }

    /** A file of one key and one 2-float tensor, byte for byte as the GGUF v3 spec lays it out. */
    @Test
    void smallFileByteForByte() throws IOException {
        GgufWriter w = new GgufWriter();
        w.putUint32("a", 7);
        w.addTensor("t", new long[] {2}, GgufWriter.TensorType.F32, bytes(floats(1.5f, -2f)));
        Path f = tmp.resolve("small.gguf");
        w.write(f);

        ByteBuffer e = ByteBuffer.allocate(128).order(ByteOrder.LITTLE_ENDIAN);
        e.put("GGUF".getBytes(StandardCharsets.US_ASCII)).putInt(3).putLong(1).putLong(1);
        e.putLong(1).put((byte) 'a').putInt(4).putInt(7); // key "a": UINT32 (4) = 7
        e.putLong(1).put((byte) 't').putInt(1).putLong(2).putInt(0).putLong(0); // "t": 1 dim [2], F32, offset 0
        assertEquals(74, e.position());
        e.position(96); // zero padding to the 32-byte alignment
        e.putFloat(1.5f).putFloat(-2f); // data, then zero padding to 128
        assertArrayEquals(e.array(), Files.readAllBytes(f));
    }

    /** Every value type the exporter writes, read back by the spec reader; tensor offsets aligned and in order. */
    @Test
    void valueTypesAndAlignment() throws IOException {
        GgufWriter w = new GgufWriter();
        w.putString("general.architecture", "llama");
        w.putString("unicode", "köln ✓");
        w.putUint32("u32", 0xFFFF_FFFFL);
        w.putFloat32("f32", 1e-5f);
        w.putBool("yes", true);
        w.putBool("no", false);
        w.putStringArray("tokens", List.of("<s>", "", "▁a"));
        w.putInt32Array("types", new int[] {1, -3, 6});
        w.putFloat32Array("scores", new float[] {0f, -1.25f});
        byte[] three = floats(1f, 2f, 3f); // 12 bytes: padded to 32
        byte[] halves = new byte[2 * 5 * 7]; // 70 bytes: padded to 96
        for (int i = 0; i < halves.length; i++) {
            halves[i] = (byte) (i + 1);
        }
        byte[] bf = new byte[2 * 16]; // 32 bytes: no padding
        bf[0] = 0x3f;
        w.addTensor("a", new long[] {3}, GgufWriter.TensorType.F32, bytes(three));
        w.addTensor("b.weight", new long[] {5, 7}, GgufWriter.TensorType.F16, bytes(halves));
        w.addTensor("c", new long[] {2, 2, 4}, GgufWriter.TensorType.BF16, bytes(bf));
        Path f = tmp.resolve("types.gguf");
        w.write(f);

        GgufReader r = new GgufReader(f);
        assertEquals(3, r.version);
        assertEquals("llama", r.kv.get("general.architecture"));
        assertEquals(8, r.kvType.get("general.architecture"));
        assertEquals("köln ✓", r.kv.get("unicode"));
        assertEquals(0xFFFF_FFFFL, r.kv.get("u32"));
        assertEquals(4, r.kvType.get("u32"));
        assertEquals(1e-5f, r.kv.get("f32"));
        assertEquals(6, r.kvType.get("f32"));
        assertEquals(true, r.kv.get("yes"));
        assertEquals(false, r.kv.get("no"));
        assertEquals(7, r.kvType.get("no"));
        assertEquals(List.of("<s>", "", "▁a"), r.kv.get("tokens"));
        assertEquals(8, r.arrayType.get("tokens"));
        assertEquals(List.of(1L, -3L, 6L), r.kv.get("types"));
        assertEquals(5, r.arrayType.get("types"));
        assertEquals(List.of(0f, -1.25f), r.kv.get("scores"));
        assertEquals(6, r.arrayType.get("scores"));

        assertEquals(List.of("a", "b.weight", "c"), List.copyOf(r.tensors.keySet()));
        assertEquals(0, r.tensors.get("a").offset());
        assertEquals(32, r.tensors.get("b.weight").offset());
        assertEquals(128, r.tensors.get("c").offset());
        assertEquals(0, r.dataStart % 32);
        // dims innermost first: PyTorch's [5, 7] is ne = [7, 5]
        assertArrayEquals(new long[] {7, 5}, r.tensors.get("b.weight").dims());
        assertArrayEquals(new long[] {4, 2, 2}, r.tensors.get("c").dims());
        assertEquals(1, r.tensors.get("b.weight").type());
        assertEquals(30, r.tensors.get("c").type());
        assertArrayEquals(new float[] {1f, 2f, 3f}, r.tensors.get("a").floats());
        byte[] got = new byte[70];
        r.tensors.get("b.weight").data().duplicate().get(got);
        assertArrayEquals(halves, got);
        assertEquals(r.dataStart + 160, Files.size(f));
    }

    /** The file gets a new file's permissions (the umask's), not a temporary file's 0600. */
    @Test
    void permissionsAreANewFilesPermissions() throws IOException {
        Path probe = Files.createFile(tmp.resolve("probe"));
        GgufWriter w = new GgufWriter();
        w.putUint32("a", 1);
        Path f = tmp.resolve("perm.gguf");
        w.write(f);
        assertEquals(Files.getPosixFilePermissions(probe), Files.getPosixFilePermissions(f));
    }

    @Test
    void refusesDuplicatesAndBadShapes() {
        GgufWriter w = new GgufWriter();
        w.putUint32("k", 1);
        assertThrows(IllegalArgumentException.class, () -> w.putString("k", "x"));
        assertThrows(IllegalArgumentException.class, () -> w.putUint32("neg", -1));
        w.addTensor("t", new long[] {1}, GgufWriter.TensorType.F32, bytes(floats(0f)));
        assertThrows(IllegalArgumentException.class,
                () -> w.addTensor("t", new long[] {1}, GgufWriter.TensorType.F32, bytes(floats(0f))));
        assertThrows(IllegalArgumentException.class,
                () -> w.addTensor("z", new long[] {2, 0}, GgufWriter.TensorType.F32, bytes(new byte[0])));
        assertThrows(IllegalArgumentException.class,
                () -> w.addTensor("x".repeat(64), new long[] {1}, GgufWriter.TensorType.F32, bytes(floats(0f))));
    }

    /** A tensor source that fails, or writes the wrong byte count, leaves the old file whole and no temporary. */
    @Test
    void failedWriteKeepsTheOldFile() throws IOException {
        Path f = tmp.resolve("keep.gguf");
        Files.write(f, "old".getBytes(StandardCharsets.US_ASCII));
        GgufWriter w = new GgufWriter();
        w.addTensor("t", new long[] {4}, GgufWriter.TensorType.F32, bytes(floats(1f, 2f))); // 8 of 16 bytes
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> w.write(f));
        assertTrue(e.getMessage().contains("tensor t wrote 8 bytes, expected 16"), e.getMessage());
        GgufWriter w2 = new GgufWriter();
        w2.addTensor("t", new long[] {1}, GgufWriter.TensorType.F32, ch -> {
            throw new IOException("disk gone");
        });
        assertThrows(IOException.class, () -> w2.write(f));
        assertEquals("old", Files.readString(f));
        try (var list = Files.list(tmp)) {
            assertEquals(List.of(f), list.toList());
        }
    }
}
