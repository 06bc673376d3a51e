package dev.peft4j.io;

import java.util.Arrays;
import java.util.Objects;

/**
 * One tensor's entry in a safetensors header.
 *
 * @param name  the tensor's name
 * @param dtype the safetensors dtype string ({@code "F32"}, {@code "BF16"}, {@code "I64"}, ...)
 * @param shape the dimensions, row-major; empty for a scalar (a copy is kept and returned)
 * @param begin first byte of the tensor, relative to the start of the data section (as in the header)
 * @param end   one past its last byte, relative to the start of the data section
 */
public record TensorInfo(String name, String dtype, long[] shape, long begin, long end) {
    /**
     * Keeps a copy of {@code shape}.
     * @throws NullPointerException if {@code name}, {@code dtype} or {@code shape} is null
     */
    public TensorInfo {
        Objects.requireNonNull(name, "name");
        Objects.requireNonNull(dtype, "dtype");
        shape = shape.clone();
    }

    /** The dimensions, row-major; a new copy on each call. */
    @Override
    public long[] shape() {
        return shape.clone();
    }

    /** Number of bytes the tensor occupies ({@code end - begin}). */
    public long byteSize() {
        return end - begin;
    }

    /** Number of elements (product of the shape; 1 for a scalar). */
    public long numel() {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof TensorInfo t && name.equals(t.name) && dtype.equals(t.dtype)
                && Arrays.equals(shape, t.shape) && begin == t.begin && end == t.end;
    }

    @Override
    public int hashCode() {
        return Objects.hash(name, dtype, Arrays.hashCode(shape), begin, end);
    }

    @Override
    public String toString() {
        return name + " " + dtype + Arrays.toString(shape) + " [" + begin + ", " + end + ")";
    }
}
