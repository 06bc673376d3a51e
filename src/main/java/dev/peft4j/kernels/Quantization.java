package dev.peft4j.kernels;

import java.util.Locale;

/**
 * A weight-only quantization format: weights in blocks of {@value QuantizedWeight#BLOCK} along the input dimension,
 * one IEEE half-precision scale per block, the layouts of llama.cpp's {@code Q8_0} and {@code Q4_0} (quantized as
 * ggml's reference quantizers do, so the values are the same).
 */
public enum Quantization {
    /** {@code Q8_0}: {@code w = q·d}, {@code q} int8 in [−127, 127], {@code d = max|w| / 127}; 8.5 bits per weight. */
    INT8("q8_0"),
    /**
     * {@code Q4_0}: {@code w = (q − 8)·d}, {@code q} 4 bits in [0, 15], {@code d = m / −8} where {@code m} is the
     * block's weight of largest magnitude; 4.5 bits per weight.
     */
    INT4("q4_0");

    private final String ggmlName;

    Quantization(String ggmlName) {
        this.ggmlName = ggmlName;
    }

    /** llama.cpp's name of the block layout ({@code q8_0}, {@code q4_0}). */
    public String ggmlName() {
        return ggmlName;
    }

    /** Bytes of quantized values per row of {@code k} weights (scales not included). */
    public long rowBytes(long k) {
        return this == INT8 ? k : k / 2;
    }

    /**
     * The format named {@code name}: {@code int8} / {@code q8_0}, {@code int4} / {@code q4_0}, any case.
     *
     * @throws IllegalArgumentException naming the value and the accepted ones
     */
    public static Quantization parse(String name) {
        String n = name == null ? "" : name.trim().toLowerCase(Locale.ROOT);
        switch (n) {
            case "int8", "q8_0" -> {
                return INT8;
            }
            case "int4", "q4_0" -> {
                return INT4;
            }
            default -> throw new IllegalArgumentException("unknown quantization '" + name
                    + "': expected int8 (Q8_0) or int4 (Q4_0)");
        }
    }
}
