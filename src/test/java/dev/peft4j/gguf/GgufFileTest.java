package dev.peft4j.gguf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
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
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link GgufFile} on files built byte by byte from ggml's {@code docs/gguf.md} (not by {@link GgufWriter}): every
 * metadata value type, version 2, a custom alignment, tensor views; and each malformed input named.
 */
class GgufFileTest {
    @TempDir
    Path tmp;

    /** A little-endian byte builder. */
    static final class Bytes {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();

        Bytes raw(byte... b) {
            out.writeBytes(b);
            return this;
        }

        Bytes u8(int v) {
            return raw((byte) v);
        }

        Bytes u16(int v) {
            return raw(ByteBuffer.allocate(2).order(ByteOrder.LITTLE_ENDIAN).putShort((short) v).array());
        }

        Bytes u32(int v) {
            return raw(ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt(v).array());
        }

        Bytes u64(long v) {
            return raw(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v).array());
        }

        Bytes f32(float v) {
            return u32(Float.floatToRawIntBits(v));
        }

        Bytes str(String s) {
            byte[] b = s.getBytes(StandardCharsets.UTF_8);
            return u64(b.length).raw(b);
        }

        Bytes padTo(int alignment) {
            while (out.size() % alignment != 0) {
                u8(0);
            }
            return this;
        }

        byte[] bytes() {
            return out.toByteArray();
        }
    }

    Path file(String name, byte[] b) throws IOException {
        return Files.write(tmp.resolve(name), b);
    }

    /** Version {@code v}, every scalar type once, arrays of int16 and string, alignment 64, two F32 tensors. */
    static byte[] everything(int v) {
        Bytes b = new Bytes().raw("GGUF".getBytes(StandardCharsets.US_ASCII)).u32(v).u64(2).u64(15);
        b.str("u8").u32(0).u8(250);
        b.str("i8").u32(1).u8(-5);
        b.str("u16").u32(2).u16(65000);
        b.str("i16").u32(3).u16(-300);
        b.str("u32").u32(4).u32(-1);
        b.str("i32").u32(5).u32(-70000);
        b.str("f32").u32(6).f32(0.25f);
        b.str("bool").u32(7).u8(1);
        b.str("str").u32(8).str("köln");
        b.str("u64").u32(10).u64(-1L);
        b.str("i64").u32(11).u64(-5_000_000_000L);
        b.str("f64").u32(12).u64(Double.doubleToRawLongBits(-1.5));
        b.str("arr.i16").u32(9).u32(3).u64(3).u16(1).u16(-2).u16(3);
        b.str("arr.str").u32(9).u32(8).u64(2).str("a").str("");
        b.str("general.alignment").u32(4).u32(64);
        b.str("x").u32(2).u64(3).u64(1).u32(0).u64(0); // ne [3, 1]: shape [1, 3], F32 at 0
        b.str("y").u32(1).u64(2).u32(0).u64(64); // [2] F32 at the aligned end of x (12 bytes → 64)
        b.padTo(64);
        b.f32(1).f32(2).f32(3).padTo(64).f32(-4).f32(5);
        return b.bytes();
    }

    @Test
    void everyValueTypeVersionsTwoAndThreeAndTensorViews() throws IOException {
        for (int v : new int[] {2, 3}) {
            try (GgufFile g = GgufFile.open(file("all" + v + ".gguf", everything(v)))) {
                assertEquals(v, g.version());
                assertEquals(64, g.alignment());
                assertEquals(0, g.dataOffset() % 64);
                assertEquals(250L, g.metadata().get("u8"));
                assertEquals(-5L, g.metadata().get("i8"));
                assertEquals(65000L, g.metadata().get("u16"));
                assertEquals(-300L, g.metadata().get("i16"));
                assertEquals(0xFFFF_FFFFL, g.metadata().get("u32"));
                assertEquals(-70000L, g.metadata().get("i32"));
                assertEquals(0.25f, g.metadata().get("f32"));
                assertEquals(true, g.metadata().get("bool"));
                assertEquals("köln", g.metadata().get("str"));
                assertEquals(-1L, g.metadata().get("u64"), "a uint64 above Long.MAX_VALUE keeps its bits");
                assertEquals(-5_000_000_000L, g.metadata().get("i64"));
                assertEquals(-1.5, g.metadata().get("f64"));
                assertEquals(List.of(1L, -2L, 3L), g.metadata().get("arr.i16"));
                assertEquals(List.of("a", ""), g.metadata().get("arr.str"));
                assertEquals(9, g.valueType("arr.i16"));
                assertEquals(3, g.arrayElementType("arr.i16"));
                assertEquals(12, g.valueType("f64"));
                assertEquals(-1, g.valueType("absent"));
                GgufFile.TensorInfo x = g.tensor("x");
                assertArrayEquals(new long[] {1, 3}, x.shape());
                assertEquals("F32", x.typeName());
                assertEquals(64, g.tensor("y").offset());
                try (Tensor t = g.get("x"); Tensor y = g.get("y")) {
                    assertEquals(ScalarType.Float, t.scalar_type().intern());
                    assertArrayEquals(new long[] {1, 3}, t.shape());
                    float[] got = new float[3];
                    new FloatPointer(t.data_ptr()).get(got);
                    assertArrayEquals(new float[] {1, 2, 3}, got);
                    assertEquals(-4f, y.get(0).item_float());
                }
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> g.tensor("z"));
                assertTrue(e.getMessage().contains("no tensor named z"), e.getMessage());
            }
        }
    }

    String refused(byte[] b) throws IOException {
        Path f = file("bad.gguf", b);
        GgufFormatException e = assertThrows(GgufFormatException.class, () -> GgufFile.open(f).close());
        assertEquals(f, e.file());
        assertTrue(e.getMessage().startsWith(f + ": malformed GGUF: "), e.getMessage());
        return e.getMessage();
    }

    static Bytes head(long tensors, long kvs) {
        return new Bytes().raw("GGUF".getBytes(StandardCharsets.US_ASCII)).u32(3).u64(tensors).u64(kvs);
    }

    @Test
    void malformedHeadersAreNamed() throws IOException {
        assertTrue(refused(new byte[] {'G', 'G'}).contains("too short for the magic"));
        assertTrue(refused(new Bytes().raw("GGML".getBytes(StandardCharsets.US_ASCII)).u32(3).bytes())
                .contains("the magic is 'GGML'"));
        assertTrue(refused(new Bytes().raw("GGUF".getBytes(StandardCharsets.US_ASCII)).u32(3 << 24).u64(0).u64(0)
                .bytes()).contains("big-endian"));
        assertTrue(refused(head(0, 1).str("k").u32(13).u8(0).bytes()).contains("key k has unknown value type 13"));
        assertTrue(refused(head(0, 1).str("k").u32(9).u32(9).u64(1).bytes()).contains("key k is an array of arrays"));
        assertTrue(refused(head(0, 1).str("k").u32(7).u8(2).bytes()).contains("key k: bool byte 2"));
        assertTrue(refused(head(0, 2).str("k").u32(0).u8(1).str("k").u32(0).u8(1).bytes())
                .contains("key k appears twice"));
        assertTrue(refused(head(0, 1).str("k").u32(8).u64(1L << 40).bytes()).contains("runs past the end"));
        assertTrue(refused(head(0, 1).str("k").u32(8).u64(2).raw((byte) 0xC3, (byte) 0x28).bytes())
                .contains("the value of key k is not valid UTF-8"));
        assertTrue(refused(head(0, 1).str("k").u32(4).bytes()).contains("while reading the value of key k"));
        assertTrue(refused(head(0, 1).str("general.alignment").u32(4).u32(48).bytes())
                .contains("general.alignment 48"));
        assertTrue(refused(head(0, 1L << 40).bytes()).contains("key-value count"));
    }

    @Test
    void malformedTensorInfosAreNamed() throws IOException {
        assertTrue(refused(head(1, 0).str("w").u32(5).raw(new byte[32]).bytes()).contains("tensor w: 5 dimensions"));
        assertTrue(refused(head(1, 0).str("w").u32(1).u64(32).u32(77).u64(0).padTo(32).bytes())
                .contains("tensor w has unknown ggml type 77"));
        assertTrue(refused(head(1, 0).str("w").u32(1).u64(30).u32(8).u64(0).padTo(32).bytes())
                .contains("tensor w: row length 30 is not a multiple of Q8_0's block of 32"));
        assertTrue(refused(head(1, 0).str("w").u32(2).u64(1L << 40).u64(1L << 40).u32(0).u64(0).bytes())
                .contains("overflow"));
        String m = refused(head(1, 0).str("w").u32(1).u64(4).u32(0).u64(0).padTo(32).f32(1).bytes());
        assertTrue(m.contains("tensor w (F32 [4], 16 bytes at 64) ends past the end of the file (68 bytes)"), m);
        m = refused(head(2, 0).str("a").u32(1).u64(1).u32(0).u64(0).str("b").u32(1).u64(1).u32(0).u64(0).padTo(32)
                .raw(new byte[64]).bytes());
        assertTrue(m.contains("tensor b has offset 0, expected 32"), m);
        assertTrue(refused(head(2, 0).str("a").u32(1).u64(1).u32(0).u64(0).str("a").u32(1).u64(1).u32(0).u64(32)
                .padTo(32).raw(new byte[64]).bytes()).contains("tensor a appears twice"));
        Path f = file("q.gguf", head(1, 0).str("q").u32(2).u64(32).u64(1).u32(8).u64(0).padTo(32).raw(new byte[34])
                .bytes());
        try (GgufFile g = GgufFile.open(f)) {
            UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class, () -> g.get("q"));
            assertTrue(e.getMessage().contains("tensor q is Q8_0"), e.getMessage());
            try (Tensor raw = g.bytes("q")) {
                assertEquals(34, raw.numel());
            }
            g.close();
            assertThrows(IllegalStateException.class, () -> g.bytes("q"));
        }
    }
}
