package dev.peft4j.io;

import java.net.URISyntaxException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.Arrays;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Tensor;

/** Test helpers: fixture paths, a tensor's raw bytes, expected little-endian bytes. */
final class TestTensors {
    private TestTensors() {}

    static Path fixture(String relative) {
        try {
            return Path.of(TestTensors.class.getResource("/fixtures/" + relative).toURI());
        } catch (URISyntaxException | NullPointerException e) {
            throw new IllegalStateException("missing test fixture " + relative, e);
        }
    }

    /** The tensor's elements as raw bytes, row-major (copied out; the tensor is not modified). */
    static byte[] bytes(Tensor t) {
        try (Tensor c = t.contiguous()) {
            long n = c.nbytes();
            byte[] out = new byte[Math.toIntExact(n)];
            if (n > 0) {
                new BytePointer(c.data_ptr()).capacity(n).get(out);
            }
            return out;
        }
    }

    /** Little-endian bytes of integers, {@code width} bytes each (two's complement, truncated). */
    static byte[] le(int width, long... values) {
        ByteBuffer b = ByteBuffer.allocate(width * values.length).order(ByteOrder.LITTLE_ENDIAN);
        for (long v : values) {
            switch (width) {
                case 1 -> b.put((byte) v);
                case 2 -> b.putShort((short) v);
                case 4 -> b.putInt((int) v);
                case 8 -> b.putLong(v);
                default -> throw new IllegalArgumentException("width " + width);
            }
        }
        return b.array();
    }

    static byte[] f32(float... values) {
        ByteBuffer b = ByteBuffer.allocate(4 * values.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float v : values) {
            b.putFloat(v);
        }
        return b.array();
    }

    static byte[] f64(double... values) {
        ByteBuffer b = ByteBuffer.allocate(8 * values.length).order(ByteOrder.LITTLE_ENDIAN);
        for (double v : values) {
            b.putDouble(v);
        }
        return b.array();
    }

    /** IEEE half bits of small integers (exact): sign, exponent 15-biased, 10-bit mantissa. */
    static short halfOfInt(int v) {
        if (v == 0) {
            return 0;
        }
        int sign = v < 0 ? 0x8000 : 0;
        int a = Math.abs(v);
        int e = 31 - Integer.numberOfLeadingZeros(a);
        int mantissa = ((a << 10) >> e) & 0x3ff;
        return (short) (sign | ((e + 15) << 10) | mantissa);
    }

    static long[] range(long from, long to) {
        long[] r = new long[(int) (to - from)];
        Arrays.setAll(r, i -> from + i);
        return r;
    }
}
