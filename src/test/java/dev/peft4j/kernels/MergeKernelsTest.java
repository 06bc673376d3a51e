package dev.peft4j.kernels;

import static dev.peft4j.kernels.KernelChecks.assertClose;
import static dev.peft4j.kernels.KernelChecks.randn;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.tuners.ia3.Ia3Math;
import dev.peft4j.tuners.lora.LoraMath;
import java.util.Random;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * In-place merge kernels against PEFT's composed merge ({@link LoraMath#deltaWeight}, {@link Ia3Math#merge}).
 *
 * <p>Tolerances. LoRA, float32: {@code W + s·Σ_j B[i,j]·A[j,k]} over r ≤ 64 terms of O(0.1) accumulated in float32
 * against float64: a few float32 ulps of O(1) values, so 1e-5 absolute + 1e-6 relative.
 * bfloat16: the kernel rounds the sum once (half an ulp, 2⁻⁹ relative) where the float64 reference does not round;
 * 2⁻⁸·|ref|. IA3: one multiply or divide per element, rounded once, exactly the composed op: bit-identical.
 */
class MergeKernelsTest {
    private PointerScope scope;

    @BeforeEach
    void openScope() {
        scope = new PointerScope();
    }

    @AfterEach
    void closeScope() {
        Kernels.setActiveIsa(Kernels.bestIsa());
        scope.close();
    }

    @Test
    void loraMergeMatchesComposedDeltaWeightForLinearAndConv1dAcrossDtypesAndIsas() {
        long[][] shapes = {{1, 1}, {7, 33}, {65, 17}, {130, 1030}};
        int[] ranks = {1, 5, 16, 64};
        long seed = 7;
        for (Isa isa : KernelChecks.supportedIsas()) {
            Kernels.setActiveIsa(isa);
            for (ScalarType dt : new ScalarType[] {ScalarType.Float, ScalarType.BFloat16}) {
                for (long[] s : shapes) {
                    for (int r : ranks) {
                        for (boolean fanIn : new boolean[] {false, true}) {
                            Random rnd = new Random(seed++);
                            long out = s[0];
                            long in = s[1];
                            Tensor a = randn(rnd, 0.3, r, in).to(dt);
                            Tensor b = randn(rnd, 0.3, out, r).to(dt);
                            double scale = 0.5 + rnd.nextDouble();
                            Tensor w = (fanIn ? randn(rnd, 1, in, out) : randn(rnd, 1, out, in)).to(dt);
                            Tensor want = w.to(ScalarType.Double).add(LoraMath.deltaWeight(a.to(ScalarType.Double),
                                    b.to(ScalarType.Double), scale, fanIn));
                            Tensor got = w.clone();
                            MergeKernels.mergeLora(got, a, b, scale, fanIn, +1);
                            String what = String.format("merge %s out=%d in=%d r=%d fanIn=%b", dt, out, in, r, fanIn);
                            double rel = dt == ScalarType.BFloat16 ? Math.pow(2, -8) : 1e-6;
                            assertClose(want, got, 1e-5, rel, what);
                            // unmerge comes back to W within the two roundings
                            MergeKernels.mergeLora(got, a, b, scale, fanIn, -1);
                            assertClose(w, got, 1e-5, dt == ScalarType.BFloat16 ? Math.pow(2, -7) : 1e-6, want,
                                    what + " then unmerge");
                        }
                    }
                }
            }
        }
    }

    @Test
    void float32AdapterMergesIntoBfloat16Weight() {
        Random rnd = new Random(3);
        Tensor a = randn(rnd, 0.3, 8, 40);
        Tensor b = randn(rnd, 0.3, 24, 8);
        Tensor w = randn(rnd, 1, 24, 40).to(ScalarType.BFloat16);
        Tensor want = w.to(ScalarType.Double).add(LoraMath.deltaWeight(a.to(ScalarType.Double), b.to(ScalarType.Double),
                2.0, false));
        MergeKernels.mergeLora(w, a, b, 2.0, false, 1);
        assertClose(want, w, 1e-5, Math.pow(2, -8), "fp32 adapter into bf16 W");
    }

    @Test
    void ia3MergeAndUnmergeAreBitIdenticalToComposed() {
        for (Isa isa : KernelChecks.supportedIsas()) {
            Kernels.setActiveIsa(isa);
            for (ScalarType dt : new ScalarType[] {ScalarType.Float, ScalarType.BFloat16}) {
                for (boolean ff : new boolean[] {false, true}) {
                    for (boolean fanIn : new boolean[] {false, true}) {
                        Random rnd = new Random(ff ? 1 : 2);
                        long out = 37;
                        long in = 1029;
                        Tensor w = (fanIn ? randn(rnd, 1, in, out) : randn(rnd, 1, out, in)).to(dt);
                        Tensor l = randn(rnd, 1, Ia3Math.vectorShape(in, out, ff)).abs().add(new Scalar(0.25)).to(dt);
                        Tensor composed = w.clone();
                        Ia3Math.merge(composed, null, l, ff, fanIn, false, "x");
                        Tensor fused = w.clone();
                        MergeKernels.mergeIa3(fused, l, ff, fanIn);
                        String what = dt + " ff=" + ff + " fanIn=" + fanIn + " isa=" + isa;
                        assertTrue(composed.equal(fused), "merge " + what);
                        Ia3Math.unmerge(composed, null, l, ff, fanIn);
                        MergeKernels.unmergeIa3(fused, l, ff, fanIn);
                        assertTrue(composed.equal(fused), "unmerge " + what);
                    }
                }
            }
        }
    }

    @Test
    void refusesBadArgumentsNamingThem() {
        Tensor a = torch.ones(2, 8);
        Tensor b = torch.ones(6, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> MergeKernels.mergeLora(torch.ones(8, 6).t(), a, b, 1, false, 1));
        assertTrue(e.getMessage().startsWith("weight: tensor of shape [6, 8]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> MergeKernels.mergeLora(torch.ones(6, 8), a, b, 1, true, 1));
        assertTrue(e.getMessage().startsWith("weight: shape [6, 8], the adapter needs [8, 6] (fan_in_fan_out)"),
                e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> MergeKernels.mergeLora(torch.ones(6, 8), a, b, 1, false, 0));
        assertTrue(e.getMessage().startsWith("sign: 0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> MergeKernels.mergeLora(torch.ones(6, 8), a, torch.ones(6, 3), 1, false, 1));
        assertTrue(e.getMessage().startsWith("b: shape [6, 3]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> MergeKernels.scaleRows(torch.ones(6, 8), torch.ones(8)));
        assertTrue(e.getMessage().startsWith("l: 8 entries (shape [8]), the weight's rows need 6"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> MergeKernels.scaleCols(torch.ones(6, 8).to(ScalarType.Double), torch.ones(8)));
        assertTrue(e.getMessage().startsWith("weight: dtype Double not supported"), e.getMessage());
    }
}
