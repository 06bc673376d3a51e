package dev.peft4j.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The fused decode kernel against an independent float64 reference computed by libtorch's own ops
 * from the same (rounded) inputs: {@code x·Wᵀ + b + Σ s·(x·Aᵀ)·Bᵀ}.
 *
 * <p>Tolerances: float32 results differ from the float64 reference by accumulation order only,
 * ≈ sqrt(K)·2⁻²⁴ relative to the magnitudes summed; we allow 2e-5·(1 + |ref|) with weights scaled
 * so outputs are O(1). bfloat16 outputs are rounded once from a float32 accumulator, so they are within
 * one bfloat16 ulp (2⁻⁷ relative) of the float64 result, plus the float32 error.
 */
class FusedLoraLinearTest {
    @AfterEach
    void restoreIsa() {
        Kernels.setActiveIsa(Kernels.bestIsa());
    }

    private static Tensor randn(Random rnd, double std, long... shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        float[] v = new float[(int) n];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (rnd.nextGaussian() * std);
        }
        return Tensor.create(v, shape);
    }

    private static double[] doubles(Tensor t) {
        Tensor c = t.to(ScalarType.Double).contiguous();
        double[] out = new double[(int) c.numel()];
        if (out.length > 0) {
            new DoublePointer(c.data_ptr()).capacity(out.length).get(out);
        }
        return out;
    }

    private static Tensor reference(Tensor x, Tensor w, Tensor b, List<FusedLoraLinear.Adapter> ads) {
        Tensor xd = x.to(ScalarType.Double);
        Tensor y = b == null ? torch.linear(xd, w.to(ScalarType.Double))
                : torch.linear(xd, w.to(ScalarType.Double), b.to(ScalarType.Double));
        for (FusedLoraLinear.Adapter a : ads) {
            Tensor t = torch.linear(xd, a.a().to(ScalarType.Double));
            y = y.add(torch.linear(t, a.b().to(ScalarType.Double)).mul(new Scalar((double) a.scale())));
        }
        return y;
    }

    private static void check(ScalarType dt, long m, long k, long n, int[] ranks, boolean withBias, long seed) {
        Random rnd = new Random(seed);
        double std = 1.0 / Math.sqrt(k);
        Tensor w = randn(rnd, std, n, k).to(dt);
        Tensor b = withBias ? randn(rnd, 0.5, n).to(dt) : null;
        Tensor x = randn(rnd, 1.0, m, k).to(dt);
        List<FusedLoraLinear.Adapter> ads = new ArrayList<>();
        for (int r : ranks) {
            ads.add(new FusedLoraLinear.Adapter(randn(rnd, std, r, k).to(dt), randn(rnd, 1.0 / Math.sqrt(r), n, r).to(dt),
                    (float) (0.5 + rnd.nextDouble())));
        }
        double[] want = doubles(reference(x, w, b, ads));
        try (FusedLoraLinear layer = new FusedLoraLinear(w, b)) {
            layer.setAdapters(ads);
            Tensor y = layer.forward(x);
            assertEquals(Arrays.toString(new long[] {m, n}), Arrays.toString(y.shape()));
            double[] got = doubles(y);
            for (int i = 0; i < got.length; i++) {
                double tol = 2e-5 * (1 + Math.abs(want[i]));
                if (dt == ScalarType.BFloat16) {
                    tol += Math.abs(want[i]) * Math.pow(2, -7);
                }
                if (!(Math.abs(got[i] - want[i]) <= tol)) {
                    fail(String.format("%s isa=%s M=%d K=%d N=%d ranks=%s bias=%b: element %d got %.7g want %.7g",
                            dt, Kernels.activeIsa(), m, k, n, Arrays.toString(ranks), withBias, i, got[i], want[i]));
                }
            }
        }
    }

    @Test
    void fusedLoraLinearMatchesFloat64ReferenceAcrossShapesIsasAndDtypes() {
        long[] ms = {1, 2, 3, 4, 5, 7, 16};
        long[][] kn = {{1, 1}, {15, 5}, {16, 64}, {17, 65}, {33, 130}, {257, 63}, {1024, 200}};
        int[][] rankSets = {{}, {1}, {8}, {3, 17}};
        long seed = 1;
        for (Isa isa : Isa.values()) {
            if (isa.ordinal() > Kernels.bestIsa().ordinal()) {
                continue;
            }
            Kernels.setActiveIsa(isa);
            for (ScalarType dt : new ScalarType[] {ScalarType.Float, ScalarType.BFloat16}) {
                for (long[] s : kn) {
                    for (int ri = 0; ri < rankSets.length; ri++) {
                        long m = ms[(int) ((seed + ri) % ms.length)];
                        check(dt, m, s[0], s[1], rankSets[ri], (seed & 1) == 0, seed++);
                    }
                }
            }
        }
    }

    @Test
    void everyRowCountUpToTheLimitIsHandled() {
        for (long m = 1; m <= FusedLoraLinear.MAX_ROWS; m++) {
            check(ScalarType.Float, m, 70, 67, new int[] {4}, true, 100 + m);
        }
    }

    @Test
    void zeroLoraBGivesTheBaseLayerExactly() {
        Random rnd = new Random(5);
        Tensor w = randn(rnd, 0.1, 48, 40);
        Tensor x = randn(rnd, 1.0, 3, 40);
        try (FusedLoraLinear base = new FusedLoraLinear(w, null);
                FusedLoraLinear adapted = new FusedLoraLinear(w, null)) {
            adapted.setAdapters(List.of(new FusedLoraLinear.Adapter(randn(rnd, 0.1, 8, 40), torch.zeros(48, 8), 2f)));
            assertTrue(base.forward(x).equal(adapted.forward(x)), "B = 0 must leave the output bit-identical");
        }
    }

    @Test
    void inputOfShapeBatchBySequenceKeepsItsLeadingDimensions() {
        Random rnd = new Random(9);
        Tensor w = randn(rnd, 0.1, 12, 8);
        try (FusedLoraLinear layer = new FusedLoraLinear(w, null)) {
            Tensor y = layer.forward(randn(rnd, 1, 2, 3, 8));
            assertEquals("[2, 3, 12]", Arrays.toString(y.shape()));
        }
    }

    @Test
    void refusesBadArgumentsNamingThem() {
        Tensor w = torch.ones(6, 4);
        try (FusedLoraLinear layer = new FusedLoraLinear(w, null)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> layer.forward(torch.ones(2, 5)));
            assertTrue(e.getMessage().startsWith("x: expected last dimension 4"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> layer.forward(torch.ones(17, 4)));
            assertTrue(e.getMessage().startsWith("x: 17 rows"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class,
                    () -> layer.setAdapters(List.of(new FusedLoraLinear.Adapter(torch.ones(2, 4), torch.ones(6, 3), 1f))));
            assertTrue(e.getMessage().startsWith("adapters[0].b: expected shape [6, 2], got [6, 3]"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class,
                    () -> layer.setAdapters(List.of(new FusedLoraLinear.Adapter(torch.ones(2, 5), torch.ones(6, 2), 1f))));
            assertTrue(e.getMessage().startsWith("adapters[0].a: expected shape [r, 4]"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> layer.forward(torch.ones(2, 4).to(ScalarType.BFloat16)));
            assertTrue(e.getMessage().startsWith("x: dtype BFloat16 does not match the weight's Float"), e.getMessage());
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new FusedLoraLinear(torch.ones(6, 4).to(ScalarType.Half), null));
        assertTrue(e.getMessage().startsWith("weight: dtype Half not supported"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new FusedLoraLinear(w, torch.ones(5)));
        assertTrue(e.getMessage().startsWith("bias: expected shape [6], got [5]"), e.getMessage());
        FusedLoraLinear closed = new FusedLoraLinear(w, null);
        closed.close();
        assertThrows(IllegalStateException.class, () -> closed.forward(torch.ones(1, 4)));
    }
}
