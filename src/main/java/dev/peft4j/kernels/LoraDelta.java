package dev.peft4j.kernels;

import java.util.Arrays;
import java.util.List;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;

/**
 * The LoRA term for any number of rows (prefill, training-free inference):
 * {@code y += Σ scale_a·(x·A_aᵀ)·B_aᵀ} added into {@code y} in place by one native call, the base GEMM left
 * to libtorch. With a per-row slot index (the idea of Punica's BGMV/SGMV) one call serves a mixed batch: row
 * {@code i} gets only adapter {@code rowSlot[i]}, or none for {@code -1}. Rows are grouped by adapter inside
 * the kernel (each adapter's A is read once per group, never gathered per row), so a batch spread over several
 * adapters costs about what the same rows on one adapter cost, and an all-base batch costs nothing.
 *
 * <p>float32 or bfloat16 (all tensors the same dtype), float32 accumulation, the sum rounded once into y.
 * Threads: libtorch's {@code get_num_threads()}. Inference only: nothing is recorded for autograd.
 */
public final class LoraDelta {
    /** Adapters a mixed batch may index (the decode kernel's limit; the prefill kernel has none). */
    public static final int MAX_SLOTS = 64;

    private LoraDelta() {}

    /**
     * Adds the LoRA terms into {@code y} in place.
     *
     * @param y {@code [..., out]}, the base output (e.g. from {@code linear} / {@code addmm_out}), contiguous
     * @param x {@code [..., in]}, the same rows, contiguous, not overlapping y
     * @param slots adapters, {@code a: [r, in]}, {@code b: [out, r]}, y's dtype
     * @param rowSlot null (every adapter on every row, summed) or one entry per row in {@code [-1, slots.size())}
     */
    public static void apply(Tensor y, Tensor x, List<FusedLoraLinear.Adapter> slots, int[] rowSlot) {
        Kernels.checkCpuContiguous("y", y);
        Kernels.checkCpuContiguous("x", x);
        int dt = Kernels.dtypeCode("y", y);
        Kernels.checkSameDtype("x", x, "y", y);
        Kernels.checkNoGrad("y", y);
        long[] ys = y.shape();
        long[] xs = x.shape();
        if (ys.length == 0 || xs.length == 0) {
            throw new IllegalArgumentException("y: expected at least one dimension, got shapes y "
                    + Arrays.toString(ys) + " and x " + Arrays.toString(xs));
        }
        long n = ys[ys.length - 1];
        long k = xs[xs.length - 1];
        if (!Arrays.equals(Arrays.copyOf(ys, ys.length - 1), Arrays.copyOf(xs, xs.length - 1))) {
            throw new IllegalArgumentException("x: shape " + Arrays.toString(xs) + " does not have y's leading "
                    + "dimensions " + Arrays.toString(Arrays.copyOf(ys, ys.length - 1)));
        }
        long m = 1;
        for (int i = 0; i < xs.length - 1; i++) {
            m *= xs[i];
        }
        int ns = slots.size();
        long[] a = new long[ns];
        long[] b = new long[ns];
        int[] r = new int[ns];
        float[] s = new float[ns];
        for (int i = 0; i < ns; i++) {
            FusedLoraLinear.Adapter ad = slots.get(i);
            String an = "slots[" + i + "].a";
            String bn = "slots[" + i + "].b";
            Kernels.checkCpuContiguous(an, ad.a());
            Kernels.checkCpuContiguous(bn, ad.b());
            Kernels.checkSameDtype(an, ad.a(), "y", y);
            Kernels.checkSameDtype(bn, ad.b(), "y", y);
            if (ad.a().dim() != 2 || ad.a().size(1) != k || ad.a().size(0) < 1 || ad.a().size(0) > Integer.MAX_VALUE) {
                throw new IllegalArgumentException(an + ": expected shape [r, " + k + "] with r >= 1, got "
                        + Arrays.toString(ad.a().shape()));
            }
            long rank = ad.a().size(0);
            if (ad.b().dim() != 2 || ad.b().size(0) != n || ad.b().size(1) != rank) {
                throw new IllegalArgumentException(bn + ": expected shape [" + n + ", " + rank + "], got "
                        + Arrays.toString(ad.b().shape()));
            }
            a[i] = ad.a().data_ptr().address();
            b[i] = ad.b().data_ptr().address();
            r[i] = (int) rank;
            s[i] = ad.scale();
        }
        if (rowSlot != null) {
            checkRowSlot(rowSlot, m, ns);
        }
        if (m == 0 || n == 0 || ns == 0) {
            return;
        }
        if (k > 0) {
            Kernels.checkNoOverlap("x", x, "y", y);
        }
        Kernels.countLayerCall();
        NativeKernels.peft4j_lora_delta(dt, y.data_ptr().address(), k == 0 ? 0L : x.data_ptr().address(), m, k, n, ns,
                a, b, r, s, rowSlot, torch.get_num_threads());
        java.lang.ref.Reference.reachabilityFence(y);
        java.lang.ref.Reference.reachabilityFence(x);
        java.lang.ref.Reference.reachabilityFence(slots);
    }

    /**
     * An adapted Linear for any M: libtorch's {@code linear(x, weight, bias)} for the base, then {@link #apply} into
     * that output. {@code x} is made contiguous (copied) when it is not.
     */
    public static Tensor linear(Tensor x, Tensor weight, Tensor bias, List<FusedLoraLinear.Adapter> slots,
            int[] rowSlot) {
        Tensor xc = x.is_contiguous() ? x : x.contiguous();
        Tensor y = bias == null ? torch.linear(xc, weight) : torch.linear(xc, weight, new TensorOptional(bias));
        apply(y, xc, slots, rowSlot);
        return y;
    }

    static void checkRowSlot(int[] rowSlot, long rows, int nSlots) {
        if (rowSlot.length != rows) {
            throw new IllegalArgumentException("rowSlot: " + rowSlot.length + " entries for " + rows + " rows");
        }
        if (nSlots > MAX_SLOTS) {
            throw new IllegalArgumentException("rowSlot: " + nSlots + " adapters, a mixed batch indexes at most "
                    + MAX_SLOTS);
        }
        for (int i = 0; i < rowSlot.length; i++) {
            if (rowSlot[i] < -1 || rowSlot[i] >= nSlots) {
                throw new IllegalArgumentException("rowSlot[" + i + "]: " + rowSlot[i] + " is not -1 or an index below "
                        + nSlots);
            }
        }
    }
}
