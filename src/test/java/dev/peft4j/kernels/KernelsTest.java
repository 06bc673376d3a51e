package dev.peft4j.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.ShortPointer;
import org.bytedeco.pytorch.Generator;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

class KernelsTest {
    // sizes around the vector widths (8 for AVX2, 16 for AVX-512) and one large odd size
    private static final long[] SIZES = {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 1000, 4099};

    @AfterEach
    void restoreBestIsa() {
        Kernels.setActiveIsa(Kernels.bestIsa());
    }

    static List<Isa> supportedIsas() {
        List<Isa> out = new ArrayList<>();
        for (Isa isa : Isa.values()) {
            if (isa.ordinal() <= Kernels.bestIsa().ordinal()) {
                out.add(isa);
            }
        }
        return out;
    }

    static float[] floats(Tensor t) {
        Tensor c = t.contiguous();
        float[] out = new float[(int) c.numel()];
        if (out.length == 0) {
            return out; // an empty tensor has no data pointer
        }
        new FloatPointer(c.data_ptr()).capacity(out.length).get(out);
        return out;
    }

    static short[] bf16Bits(Tensor t) {
        Tensor c = t.contiguous();
        short[] out = new short[(int) c.numel()];
        if (out.length == 0) {
            return out;
        }
        new ShortPointer(c.data_ptr()).capacity(out.length).get(out);
        return out;
    }

    static Tensor randn(long n, ScalarType dt, long seed) {
        torch.manual_seed(seed);
        return torch.randn(n).mul_(new Scalar(3.0f)).to(dt);
    }

    @Test
    void parallelLoopsRunOnLibtorchsOpenMpTeamUnlessTheOwnPoolIsAskedFor() {
        // libtorch (and with it libgomp) is loaded before the kernels, so the pool must have found GOMP_parallel
        String expected = "own".equals(System.getenv("PEFT4J_POOL")) ? "own" : "openmp";
        assertEquals(expected, Kernels.threadPool());
    }

    @Test
    void reportsACoherentIsaAndLoadsTheLibrary() {
        assertTrue(Kernels.activeIsa().ordinal() <= Kernels.bestIsa().ordinal());
        assertTrue(Kernels.libraryPath().contains("jniNativeKernels"), Kernels.libraryPath());
        assertEquals(Isa.SCALAR, Kernels.setActiveIsa(Isa.SCALAR));
        // a request above the CPU's best is clamped to the best
        assertEquals(Kernels.bestIsa(), Kernels.setActiveIsa(Isa.AVX512_BF16));
        String features = Kernels.cpuFeatures();
        if (Kernels.bestIsa().ordinal() >= Isa.AVX512.ordinal()) {
            assertTrue(features.contains("avx512f"), features);
        }
        if (Kernels.bestIsa() == Isa.AVX512_BF16) {
            assertTrue(features.contains("avx512bf16"), features);
        }
        if (Kernels.bestIsa().ordinal() >= Isa.AVX2.ordinal()) {
            assertTrue(features.contains("avx2") && features.contains("fma"), features);
        }
    }

    @Test
    void axpyFloat32WithUnitAlphaIsBitEqualToLibtorchAddOnEveryIsa() {
        for (Isa isa : supportedIsas()) {
            Kernels.setActiveIsa(isa);
            for (long n : SIZES) {
                Tensor x = randn(n, ScalarType.Float, 1 + n);
                Tensor y = randn(n, ScalarType.Float, 1000 + n);
                Tensor expected = y.clone().add_(x);
                Kernels.axpy(y, x, 1.0f);
                assertArrayEquals(floats(expected), floats(y), 0.0f, isa + " n=" + n);
            }
        }
    }

    @Test
    void axpyFloat32WithScaleIsWithinOneRoundingOfLibtorchAndIdenticalAcrossIsas() {
        float alpha = -0.3712f;
        float[] scalarResult = null;
        for (Isa isa : supportedIsas()) {
            Kernels.setActiveIsa(isa);
            Tensor x = randn(4099, ScalarType.Float, 7);
            Tensor y = randn(4099, ScalarType.Float, 8);
            Tensor expected = y.clone().add_(x, new Scalar(alpha));
            Kernels.axpy(y, x, alpha);
            float[] got = floats(y);
            float[] want = floats(expected);
            // libtorch may compute a*x+y as a separate multiply and add (two roundings) where we use one
            // fused multiply-add: the results differ by at most the rounding of the product, half an ulp
            // of |a*x| plus half an ulp of the sum.
            float[] xs = floats(x);
            for (int i = 0; i < got.length; i++) {
                float tol = Math.ulp(Math.abs(alpha * xs[i])) + Math.ulp(Math.abs(want[i]));
                assertEquals(want[i], got[i], tol, isa + " element " + i);
            }
            // every path uses FMA in float32, so all paths agree bit for bit
            if (scalarResult == null) {
                scalarResult = got;
            } else {
                assertArrayEquals(scalarResult, got, 0.0f, isa + " differs from the scalar path");
            }
        }
    }

    @Test
    void axpyBfloat16MatchesLibtorchAddOnEveryIsa() {
        for (Isa isa : supportedIsas()) {
            Kernels.setActiveIsa(isa);
            for (long n : SIZES) {
                Tensor x = randn(n, ScalarType.BFloat16, 3 + n);
                Tensor y = randn(n, ScalarType.BFloat16, 2000 + n);
                // unit alpha: x + y of two bfloat16 values is exact in float32, so one rounding to
                // bfloat16 (nearest even) must give libtorch's bits exactly
                Tensor expected = y.clone().add_(x);
                Kernels.axpy(y, x, 1.0f);
                assertArrayEquals(bf16Bits(expected), bf16Bits(y), isa + " n=" + n);
            }
        }
    }

    @Test
    void axpyBfloat16KeepsInfinityAndNanAndRoundsTiesToEven() {
        // values chosen so that x + y lands exactly halfway between two bfloat16 values
        float[] xs = {1.0f, 1.0f, Float.POSITIVE_INFINITY, Float.NaN, 3.0e38f, -0.0f, 256.0f, 257.0f};
        float[] ys = {0.00390625f, 0.01171875f, 1.0f, 2.0f, 3.0e38f, -0.0f, 1.0f, 1.0f};
        for (Isa isa : supportedIsas()) {
            Kernels.setActiveIsa(isa);
            // 16 copies so the SIMD body, not only the tail, sees every value
            float[] xr = new float[xs.length * 4];
            float[] yr = new float[ys.length * 4];
            for (int i = 0; i < xr.length; i++) {
                xr[i] = xs[i % xs.length];
                yr[i] = ys[i % ys.length];
            }
            Tensor x = Tensor.create(xr).to(ScalarType.BFloat16);
            Tensor y = Tensor.create(yr).to(ScalarType.BFloat16);
            Tensor expected = y.clone().add_(x);
            Kernels.axpy(y, x, 1.0f);
            float[] got = floats(y.to(ScalarType.Float));
            float[] want = floats(expected.to(ScalarType.Float));
            for (int i = 0; i < got.length; i++) {
                if (Float.isNaN(want[i])) {
                    assertTrue(Float.isNaN(got[i]), isa + " element " + i + " should be NaN");
                } else {
                    assertEquals(want[i], got[i], 0.0f, isa + " element " + i);
                }
            }
        }
    }

    @Test
    void axpyRefusesBadTensorsNamingTheArgument() {
        Tensor y = torch.zeros(4, 4);
        Tensor x = torch.ones(4, 4);

        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Kernels.axpy(y.to(ScalarType.Double), x.to(ScalarType.Double), 1f));
        assertTrue(e.getMessage().startsWith("y: dtype Double"), e.getMessage());

        e = assertThrows(IllegalArgumentException.class, () -> Kernels.axpy(y, x.to(ScalarType.BFloat16), 1f));
        assertTrue(e.getMessage().startsWith("x: dtype BFloat16 does not match"), e.getMessage());

        e = assertThrows(IllegalArgumentException.class, () -> Kernels.axpy(y, torch.ones(16), 1f));
        assertTrue(e.getMessage().contains("x: shape [16] does not match y's [4, 4]"), e.getMessage());

        e = assertThrows(IllegalArgumentException.class, () -> Kernels.axpy(y, torch.ones(4, 8).narrow(1, 0, 4), 1f));
        assertTrue(e.getMessage().startsWith("x: tensor of shape [4, 4] and strides [8, 1] is not contiguous"),
                e.getMessage());

        e = assertThrows(IllegalArgumentException.class, () -> Kernels.axpy(null, x, 1f));
        assertTrue(e.getMessage().startsWith("y: tensor is null"), e.getMessage());

        Tensor leaf = torch.zeros(4, 4).requires_grad_(true);
        e = assertThrows(IllegalArgumentException.class, () -> Kernels.axpy(leaf, x, 1f));
        assertTrue(e.getMessage().startsWith("y: requires grad"), e.getMessage());

        Tensor buf = torch.zeros(20);
        e = assertThrows(IllegalArgumentException.class,
                () -> Kernels.axpy(buf.narrow(0, 0, 16), buf.narrow(0, 4, 16), 1f));
        assertTrue(e.getMessage().startsWith("x: memory partially overlaps"), e.getMessage());
        assertArrayEquals(new float[20], floats(buf), 0f, "a refused call must not write");
    }

    @Test
    void axpyOnTheSameTensorDoublesIt() {
        Tensor y = Tensor.create(new float[] {1f, -2f, 3.5f});
        Kernels.axpy(y, y, 1.0f);
        assertArrayEquals(new float[] {2f, -4f, 7f}, floats(y), 0f);
    }
}
