package dev.peft4j.kernels;

import static dev.peft4j.kernels.KernelChecks.assertClose;
import static dev.peft4j.kernels.KernelChecks.randn;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.tuners.ia3.Ia3Math;
import java.util.List;
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
 * {@link Ia3Kernel} against PEFT's composed IA3 forward ({@link Ia3Math#forward}) in the same dtype, two active
 * vectors folded.
 *
 * <p>Tolerances. float32: the decode path sums in another order than libtorch's GEMM, ≈ sqrt(K)·2⁻²⁴ relative to
 * O(1) outputs; 3e-5·(1 + |ref|). bfloat16: both sides accumulate in float32 and round; the decode path rounds once
 * where the composed path rounds the base output and again after scaling, and float32 sums in different orders may
 * round to neighbouring bfloat16 values: 2 ulps, 2⁻⁶·|ref|. The prefill path (more than 16 rows) is libtorch's
 * GEMM with the same elementwise scaling as the composed path, so it must be bit-identical.
 */
class Ia3KernelTest {
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
    void ia3ForwardMatchesComposedForBothKindsAcrossRowCountsDtypesAndIsas() {
        long seed = 1;
        for (Isa isa : KernelChecks.supportedIsas()) {
            Kernels.setActiveIsa(isa);
            for (ScalarType dt : new ScalarType[] {ScalarType.Float, ScalarType.BFloat16}) {
                for (boolean ff : new boolean[] {false, true}) {
                    for (boolean withBias : new boolean[] {false, true}) {
                        for (long m : new long[] {1, 5, 16, 17, 300}) {
                            Random rnd = new Random(seed++);
                            long in = 67;
                            long out = 130;
                            Tensor w = randn(rnd, 1 / Math.sqrt(in), out, in).to(dt);
                            Tensor bias = withBias ? randn(rnd, 0.5, out).to(dt) : null;
                            Tensor l1 = randn(rnd, 0.5, Ia3Math.vectorShape(in, out, ff)).add(new Scalar(1)).to(dt);
                            Tensor l2 = randn(rnd, 0.5, Ia3Math.vectorShape(in, out, ff)).add(new Scalar(1)).to(dt);
                            Tensor x = randn(rnd, 1, m, in).to(dt);
                            Tensor want = Ia3Math.forward(x, w, bias, List.of(l1, l2), ff, false);
                            try (Ia3Kernel k = new Ia3Kernel(w, bias, ff)) {
                                k.setActive(List.of(l1, l2));
                                Tensor got = k.forward(x);
                                String what = String.format("%s ff=%b bias=%b M=%d", dt, ff, withBias, m);
                                if (m > FusedLoraLinear.MAX_ROWS) {
                                    assertTrue(want.equal(got), "prefill path must equal the composed one: " + what);
                                } else {
                                    assertClose(want, got, 3e-5, dt == ScalarType.BFloat16 ? Math.pow(2, -6) : 3e-5,
                                            what);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    @Test
    void activeVectorsAreFoldedWhenSetNotReadPerCall() {
        Random rnd = new Random(4);
        Tensor w = randn(rnd, 0.2, 12, 20);
        Tensor l = randn(rnd, 0.5, 12, 1).add(new Scalar(1));
        Tensor x = randn(rnd, 1, 3, 20);
        try (Ia3Kernel k = new Ia3Kernel(w, null, false)) {
            k.setActive(List.of(l));
            Tensor before = k.forward(x);
            l.mul_(new Scalar(3.0)); // an in-place change is not seen until the active set is set again
            assertTrue(before.equal(k.forward(x)), "the folded vector is a snapshot taken by setActive");
            k.setActive(List.of(l));
            assertClose(Ia3Math.forward(x, w, null, List.of(l), false, false), k.forward(x), 3e-5, 3e-5, "refolded");
            k.setActive(List.of());
            assertClose(Ia3Math.base(x, w, null, false), k.forward(x), 3e-5, 3e-5, "no active vector: base layer");
        }
    }

    @Test
    void nonContiguousInputIsCopiedAndBadVectorsAreRefused() {
        Random rnd = new Random(5);
        Tensor w = randn(rnd, 0.2, 12, 20);
        try (Ia3Kernel k = new Ia3Kernel(w, null, true)) {
            Tensor l = randn(rnd, 0.5, 1, 20).add(new Scalar(1));
            k.setActive(List.of(l));
            Tensor xt = randn(rnd, 1, 20, 30).t();
            assertTrue(k.forward(xt).equal(k.forward(xt.contiguous())));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> k.setActive(List.of(torch.ones(12, 1))));
            assertTrue(e.getMessage().startsWith("vectors[0]: expected shape [1, 20], got [12, 1]"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> k.forward(torch.ones(2, 19)));
            assertTrue(e.getMessage().startsWith("x: expected last dimension 20"), e.getMessage());
        }
    }
}
