package dev.peft4j.kernels;

import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** Shared helpers of the kernel tests: seeded tensors and element-wise comparison with a stated tolerance. */
final class KernelChecks {
    private KernelChecks() {}

    static Tensor randn(Random rnd, double std, long... shape) {
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

    /**
     * Σ_a s_a·|x·A_aᵀ|·|B_a|ᵀ in float64: what the LoRA expand's terms add up to in magnitude. The bf16 delta's
     * VDPBF16PS expand rounds t = s·x·Aᵀ to bf16 (as PEFT's composed path rounds x·Aᵀ), which moves each term by at
     * most 2^-9 of itself; with a relative tolerance of 2^-8 this magnitude allows twice that.
     */
    static Tensor loraTermsAbs(Tensor x, List<FusedLoraLinear.Adapter> ads) {
        Tensor xd = x.to(ScalarType.Double);
        Tensor sum = null;
        for (FusedLoraLinear.Adapter a : ads) {
            Tensor t = org.bytedeco.pytorch.global.torch.linear(xd, a.a().to(ScalarType.Double)).abs();
            Tensor term = org.bytedeco.pytorch.global.torch.linear(t, a.b().to(ScalarType.Double).abs())
                    .mul(new org.bytedeco.pytorch.Scalar((double) Math.abs(a.scale())));
            sum = sum == null ? term : sum.add(term);
        }
        return sum;
    }

    static double[] doubles(Tensor t) {
        Tensor c = t.to(ScalarType.Double).contiguous();
        double[] out = new double[(int) c.numel()];
        if (out.length > 0) {
            new DoublePointer(c.data_ptr()).capacity(out.length).get(out);
        }
        return out;
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

    /** |got - want| <= abs + rel·|want| element-wise, else fails naming the first bad element. */
    static void assertClose(Tensor want, Tensor got, double abs, double rel, String what) {
        assertClose(want, got, abs, rel, null, what);
    }

    /**
     * |got - want| <= abs + rel·(|want| + |extra|) element-wise: {@code extra} names a magnitude that was rounded on
     * the way (e.g. a bfloat16 base output before the delta was added), or null.
     */
    static void assertClose(Tensor want, Tensor got, double abs, double rel, Tensor extra, String what) {
        double[] w = doubles(want);
        double[] g = doubles(got);
        double[] x = extra == null ? null : doubles(extra);
        if (w.length != g.length) {
            fail(what + ": " + g.length + " elements, expected " + w.length);
        }
        for (int i = 0; i < w.length; i++) {
            double tol = abs + rel * (Math.abs(w[i]) + (x == null ? 0 : Math.abs(x[i])));
            if (!(Math.abs(g[i] - w[i]) <= tol)) {
                fail(String.format("%s (isa %s): element %d got %.8g want %.8g (tolerance %.3g)", what,
                        Kernels.activeIsa(), i, g[i], w[i], tol));
            }
        }
    }
}
