package dev.peft4j.kernels;

import static dev.peft4j.kernels.KernelChecks.doubles;
import static dev.peft4j.kernels.KernelChecks.randn;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Random;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The quantized weight's kernels through their Java entry points, on every ISA level this CPU has: the quantizers
 * against their error bounds, and {@code x·Ŵᵀ + b} against a float64 reference computed here from the dequantized
 * weight and the activations quantized as the kernel quantizes them (llama.cpp's Q8_0 of each block of 32).
 *
 * <p>Tolerance of the product: the kernel sums exact int32 block dots in float32, so it differs from the float64
 * reference by float32 rounding of about nb terms: 1e-5 of the magnitudes summed. bfloat16 outputs add one rounding
 * (2^-8 relative). A wrong block scale, nibble order or offset moves outputs by orders of magnitude more.
 */
class QuantizedWeightTest {
    @AfterEach
    void restoreIsa() {
        Kernels.setActiveIsa(Kernels.bestIsa());
    }

    /** The reference product of the kernel's definition, in float64, [rows, out]. */
    static double[][] reference(double[] x, long rows, long in, double[] w, long out, double[] bias, double[][] mag) {
        double[][] y = new double[(int) rows][(int) out];
        for (int r = 0; r < rows; r++) {
            double[] xq = new double[(int) in];
            for (int b = 0; b < in / 32; b++) {
                float amax = 0f;
                for (int j = 0; j < 32; j++) {
                    amax = Math.max(amax, Math.abs((float) x[(int) (r * in + b * 32 + j)]));
                }
                float d = amax / 127f;
                float id = d != 0f ? 1f / d : 0f;
                for (int j = 0; j < 32; j++) {
                    float v = (float) x[(int) (r * in + b * 32 + j)] * id;
                    double q = Math.signum(v) * Math.floor(Math.abs((double) v) + 0.5); // C's roundf
                    xq[b * 32 + j] = q * d;
                }
            }
            for (int n = 0; n < out; n++) {
                double s = bias == null ? 0 : bias[n];
                double m = 0;
                for (int k = 0; k < in; k++) {
                    s += xq[k] * w[(int) (n * in + k)];
                    m += Math.abs(xq[k] * w[(int) (n * in + k)]);
                }
                y[r][n] = s;
                mag[r][n] = m + Math.abs(s);
            }
        }
        return y;
    }

    @Test
    void linearEqualsTheDequantizedReferenceOnEveryIsaForBothFormatsAndDtypes() {
        Random rnd = new Random(5);
        long in = 96;
        long out = 37;
        int cases = 0;
        for (Quantization fmt : Quantization.values()) {
            Tensor w = randn(rnd, 0.1, out, in);
            QuantizedWeight q = QuantizedWeight.quantize(w, fmt);
            double[] wd = doubles(q.dequantize(ScalarType.Float));
            for (ScalarType dt : new ScalarType[] {ScalarType.Float, ScalarType.BFloat16}) {
                for (long rows : new long[] {1, 3, 16, 37}) {
                    Tensor x = randn(rnd, 1.0, rows, in).to(dt);
                    Tensor bias = rows % 2 == 1 ? randn(rnd, 1.0, out).to(dt) : null;
                    double[][] mag = new double[(int) rows][(int) out];
                    double[][] want = reference(doubles(x), rows, in, wd, out, bias == null ? null : doubles(bias), mag);
                    for (Isa isa : KernelChecks.supportedIsas()) {
                        Kernels.setActiveIsa(isa);
                        Tensor y = q.linear(x, bias);
                        assertEquals(dt, y.scalar_type().intern());
                        assertEquals(rows * out, y.numel());
                        double[] got = doubles(y);
                        double rel = dt == ScalarType.Float ? 1e-5 : 1.0 / 256 + 1e-5;
                        for (int r = 0; r < rows; r++) {
                            for (int n = 0; n < out; n++) {
                                double g = got[(int) (r * out + n)];
                                double tol = rel * mag[r][n] + 1e-6;
                                if (!(Math.abs(g - want[r][n]) <= tol)) {
                                    fail(String.format("%s %s %d rows, isa %s (path %s): y[%d, %d] = %.8g, want %.8g "
                                            + "(tolerance %.3g)", fmt, dt, rows, isa, QuantizedWeight.activePath(), r,
                                            n, g, want[r][n], tol));
                                }
                            }
                        }
                        cases++;
                    }
                }
            }
        }
        assertTrue(cases >= 16, "ran " + cases + " cases");
    }

    @Test
    void quantizedWeightsStayWithinTheQuantizersErrorBound() {
        Random rnd = new Random(6);
        Tensor w = randn(rnd, 0.5, 8, 64);
        double[] wv = doubles(w);
        for (Quantization fmt : Quantization.values()) {
            QuantizedWeight q = QuantizedWeight.quantize(w, fmt);
            double[] deq = doubles(q.dequantize(ScalarType.Float));
            // Q8_0: |w − ŵ| <= d/2 with d = max|w| / 127; Q4_0: <= d with d = max|w| / 8 (its top level is clamped);
            // plus d's own rounding to half precision (2^-11 relative) over the block's range
            for (int b = 0; b < wv.length / 32; b++) {
                double amax = 0;
                for (int j = 0; j < 32; j++) {
                    amax = Math.max(amax, Math.abs(wv[b * 32 + j]));
                }
                double d = fmt == Quantization.INT8 ? amax / 127 : amax / 8;
                double bound = (fmt == Quantization.INT8 ? 0.5 : 1.0) * d + amax * 1e-3;
                for (int j = 0; j < 32; j++) {
                    double e = Math.abs(wv[b * 32 + j] - deq[b * 32 + j]);
                    assertTrue(e <= bound, fmt + " block " + b + ": error " + e + " over " + bound);
                }
            }
            // the block's largest weight is represented exactly up to d's half-precision rounding
            assertEquals(fmt == Quantization.INT8 ? 8 * 64 : 8 * 32, q.values().numel());
            assertEquals(8 * 2, q.scales().numel());
        }
    }

    /** IEEE half-precision bits (low 16 bits of h) as a double. */
    static double halfToDouble(int h) {
        int e = (h >> 10) & 0x1f;
        int m = h & 0x3ff;
        double v = e == 0 ? m * Math.pow(2, -24) : (1 + m / 1024.0) * Math.pow(2, e - 15);
        return (h & 0x8000) != 0 ? -v : v;
    }

    /** llama.cpp's dequantization of canonical blocks (values, scales as returned by the weight), in float64. */
    static double[] dequantizeCanonical(Quantization fmt, Tensor values, Tensor scales, long out, long in) {
        double[] w = new double[(int) (out * in)];
        try (Tensor v = values.to(ScalarType.Int); Tensor d = scales.to(ScalarType.Int)) {
            int[] q = new int[(int) v.numel()];
            int[] h = new int[(int) d.numel()];
            v.data_ptr_int().get(q);
            d.data_ptr_int().get(h);
            for (int n = 0; n < out; n++) {
                for (int b = 0; b < in / 32; b++) {
                    double dd = halfToDouble(h[(int) (n * in / 32 + b)]);
                    for (int j = 0; j < 32; j++) {
                        int k = b * 32 + j;
                        double val;
                        if (fmt == Quantization.INT8) {
                            val = q[(int) (n * in + k)];
                        } else {
                            int byt = q[(int) (n * in / 2 + b * 16 + (j % 16))] & 0xff;
                            val = (j < 16 ? byt & 0xf : byt >> 4) - 8;
                        }
                        w[(int) (n * in + k)] = val * dd;
                    }
                }
            }
        }
        return w;
    }

    @Test
    void canonicalValuesAndScalesAreLlamaCppsBlocksAndPackBackToTheSamePanels() {
        Random rnd = new Random(8);
        for (Quantization fmt : Quantization.values()) {
            for (long out : new long[] {1, 16, 37}) {
                long in = 64;
                Tensor w = randn(rnd, 0.2, out, in);
                QuantizedWeight q = QuantizedWeight.quantize(w, fmt);
                assertEquals(java.util.List.of((out + 15) / 16, in / 32, fmt == Quantization.INT8 ? 512L : 256L),
                        java.util.Arrays.stream(q.panels().shape()).boxed().toList(), "panel shape");
                Tensor values = q.values();
                Tensor scales = q.scales();
                assertEquals(java.util.List.of(out, fmt.rowBytes(in)),
                        java.util.Arrays.stream(values.shape()).boxed().toList());
                // the canonical bytes, read in llama.cpp's order, dequantize to what the kernels dequantize
                double[] want = dequantizeCanonical(fmt, values, scales, out, in);
                double[] got = doubles(q.dequantize(ScalarType.Float));
                for (int i = 0; i < want.length; i++) {
                    assertEquals(want[i], got[i], 0.0, fmt + " out " + out + ": weight " + i);
                }
                // and pack back into exactly the same panels
                QuantizedWeight back = new QuantizedWeight(values, scales, fmt);
                assertTrue(back.panels().equal(q.panels()) && back.panelScales().equal(q.panelScales()),
                        fmt + " out " + out + ": canonical -> panels is not the inverse of panels -> canonical");
                QuantizedWeight wrapped = QuantizedWeight.ofPanels(q.panels(), q.panelScales(), fmt, out, in);
                Tensor x = randn(rnd, 1.0, 3, in);
                assertTrue(wrapped.linear(x, null).equal(q.linear(x, null)));
            }
        }
        QuantizedWeight q = QuantizedWeight.quantize(randn(rnd, 1, 20, 64), Quantization.INT8);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> QuantizedWeight.ofPanels(q.panels(), q.panelScales(), Quantization.INT4, 20, 64));
        assertTrue(e.getMessage().contains("panels") && e.getMessage().contains("256"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> QuantizedWeight.ofPanels(q.panels(), q.panelScales(), Quantization.INT8, 33, 64));
        assertTrue(e.getMessage().contains("[3, 2, 512]"), e.getMessage());
    }

    @Test
    void badWeightsAndInputsAreRefusedNamingWhatIsWrong() {
        Random rnd = new Random(7);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> QuantizedWeight.quantize(randn(rnd, 1, 4, 48), Quantization.INT8));
        assertTrue(e.getMessage().contains("multiple of 32") && e.getMessage().contains("48"), e.getMessage());
        float[] v = new float[4 * 32];
        v[77] = Float.NaN;
        Tensor nan = Tensor.create(v, 4, 32);
        e = assertThrows(IllegalArgumentException.class, () -> QuantizedWeight.quantize(nan, Quantization.INT4));
        assertTrue(e.getMessage().contains("NaN"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> QuantizedWeight.quantize(randn(rnd, 1, 4, 32).to(ScalarType.Half), Quantization.INT8));
        assertTrue(e.getMessage().contains("Half"), e.getMessage());
        QuantizedWeight q = QuantizedWeight.quantize(randn(rnd, 1, 4, 64), Quantization.INT4);
        e = assertThrows(IllegalArgumentException.class, () -> q.linear(randn(rnd, 1, 2, 63), null));
        assertTrue(e.getMessage().contains("64"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> q.linear(randn(rnd, 1, 2, 64), randn(rnd, 1, 5)));
        assertTrue(e.getMessage().contains("bias"), e.getMessage());
        assertEquals(Quantization.INT4, Quantization.parse("Q4_0"));
        assertEquals(Quantization.INT8, Quantization.parse(" int8 "));
        e = assertThrows(IllegalArgumentException.class, () -> Quantization.parse("int3"));
        assertTrue(e.getMessage().contains("int3") && e.getMessage().contains("int4"), e.getMessage());
    }

    @Test
    void eachIsaLevelTakesItsPath() {
        Kernels.setActiveIsa(Isa.SCALAR);
        assertEquals("scalar", QuantizedWeight.activePath());
        if (Kernels.bestIsa().ordinal() >= Isa.AVX2.ordinal()) {
            Kernels.setActiveIsa(Isa.AVX2);
            assertEquals("avx2", QuantizedWeight.activePath());
        }
        if (Kernels.bestIsa().ordinal() >= Isa.AVX512.ordinal() && Kernels.cpuFeatures().contains("avx512vnni")) {
            Kernels.setActiveIsa(Kernels.bestIsa());
            assertEquals("avx512_vnni", QuantizedWeight.activePath());
        }
    }
}
