package dev.peft4j.kernels;

import static dev.peft4j.kernels.KernelChecks.assertClose;
import static dev.peft4j.kernels.KernelChecks.randn;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.tuners.adalora.AdaLoraMath;
import java.util.List;
import java.util.Random;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * {@link AdaLoraKernel}'s slot run through {@link LoraDelta} and {@link FusedLoraLinear} against PEFT's composed
 * {@link AdaLoraMath#forward} in float64 (same rounded inputs; A⊙E is formed in A's dtype on both sides).
 * Tolerances as {@link LoraDeltaTest}: float32 3e-5·(1 + |ref|); bfloat16 2⁻⁸·(|ref| + |base|), plus one more
 * half ulp of the delta for A⊙E rounded to bfloat16 (covered: |delta| ≤ |ref| + |base|).
 */
class AdaLoraKernelTest {
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

    private static AdaLoraMath.Adapter asDouble(Tensor a, Tensor e, Tensor b, Tensor ranknum, double s) {
        // A⊙E rounded in A's dtype first, as PEFT computes lora_A * lora_E in the adapter dtype
        Tensor ae = a.mul(e).to(ScalarType.Double);
        return new AdaLoraMath.Adapter(ae, torch.ones(a.size(0), 1).to(ScalarType.Double), b.to(ScalarType.Double),
                ranknum.to(ScalarType.Double), s, 0);
    }

    @Test
    void adaLoraDeltaMatchesComposedAcrossRowCountsDtypesAndIsas() {
        long seed = 1;
        for (Isa isa : KernelChecks.supportedIsas()) {
            Kernels.setActiveIsa(isa);
            for (ScalarType dt : new ScalarType[] {ScalarType.Float, ScalarType.BFloat16}) {
                for (long m : new long[] {1, 7, 16, 100}) {
                    Random rnd = new Random(seed++);
                    long in = 70;
                    long out = 33;
                    int r = 12;
                    Tensor a = randn(rnd, 1 / Math.sqrt(in), r, in).to(dt);
                    Tensor e = randn(rnd, 1, r, 1).to(dt);
                    Tensor b = randn(rnd, 1 / Math.sqrt(r), out, r).to(dt);
                    Tensor ranknum = AdaLoraMath.ranknum(r, ScalarType.Float);
                    Tensor w = randn(rnd, 1 / Math.sqrt(in), out, in).to(dt);
                    Tensor bias = randn(rnd, 0.5, out).to(dt);
                    Tensor x = randn(rnd, 1, m, in).to(dt);
                    AdaLoraKernel k = new AdaLoraKernel(a, e, b, ranknum, 8.0);
                    Tensor base = torch.linear(x.to(ScalarType.Double), w.to(ScalarType.Double),
                            new TensorOptional(bias.to(ScalarType.Double)));
                    Tensor want = AdaLoraMath.forward(base, x.to(ScalarType.Double),
                            List.of(asDouble(a, e, b, ranknum, 8.0)), false);
                    Tensor got;
                    if (m <= FusedLoraLinear.MAX_ROWS) {
                        try (FusedLoraLinear layer = new FusedLoraLinear(w, bias)) {
                            layer.setAdapters(List.of(k.slot()));
                            got = layer.forward(x);
                        }
                    } else {
                        got = LoraDelta.linear(x, w, bias, List.of(k.slot()), null);
                    }
                    double rel = dt == ScalarType.BFloat16 ? Math.pow(2, -8) : 3e-5;
                    // the bf16 delta (M > 16) may round t to bf16: see KernelChecks.loraTermsAbs
                    Tensor extra = dt == ScalarType.BFloat16 && m > FusedLoraLinear.MAX_ROWS
                            ? base.abs().add(KernelChecks.loraTermsAbs(x, List.of(k.slot()))) : base;
                    assertClose(want, got, 3e-5, rel, extra, dt + " M=" + m);
                }
            }
        }
    }

    @Test
    void effectiveAIsRebuiltOnlyWhenWeightsOrRanksChange() {
        Random rnd = new Random(9);
        Tensor a = randn(rnd, 0.2, 6, 20);
        Tensor e = randn(rnd, 1, 6, 1);
        Tensor b = randn(rnd, 0.3, 10, 6);
        Tensor ranknum = AdaLoraMath.ranknum(6, ScalarType.Float);
        Tensor x = randn(rnd, 1, 40, 20);
        AdaLoraKernel k = new AdaLoraKernel(a, e, b, ranknum, 4.0);
        FusedLoraLinear.Adapter first = k.slot();
        for (int i = 0; i < 5; i++) {
            assertTrue(first == k.slot(), "unchanged weights: the cached slot is returned");
        }
        assertEquals(1, k.refreshes());
        e.mul_(new Scalar(0.5)); // rank allocation masks / rescales E in place
        FusedLoraLinear.Adapter second = k.slot();
        assertEquals(2, k.refreshes());
        Tensor y = torch.zeros(40, 10);
        LoraDelta.apply(y, x, List.of(second), null);
        Tensor want = AdaLoraMath.delta(x, new AdaLoraMath.Adapter(a, e, b, ranknum, 4.0, 0), false);
        assertClose(want, y, 3e-5, 3e-5, "after E changed in place");
        ranknum.fill_(new Scalar(3.0));
        k.slot();
        assertEquals(3, k.refreshes());
        assertEquals(4.0 / (3.0 + 1e-5), k.slot().scale(), 1e-6);
    }

    @Test
    void refusesShapesThatDisagree() {
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class, () -> new AdaLoraKernel(
                torch.ones(4, 8), torch.ones(3, 1), torch.ones(5, 4), torch.ones(1), 1.0));
        assertTrue(ex.getMessage().startsWith("e: AdaLoRA shapes disagree"), ex.getMessage());
    }
}
