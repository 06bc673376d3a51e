package dev.peft4j.kernels;

import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;

/**
 * AdaLoRA's SVD form reduced to a plain LoRA slot: {@code ΔW = B·(A⊙E)·s/(ranknum + 1e-5)} becomes the adapter
 * {@code (A⊙E, B, s/(ranknum + 1e-5))}, so the delta runs on {@link LoraDelta} / {@link FusedLoraLinear}. The
 * effective A is computed (in A's dtype, as PEFT's {@code lora_A * lora_E}) and cached; it is recomputed only when
 * A, E or ranknum change — detected by libtorch's version counters (every in-place update bumps them) or the
 * tensor objects being replaced — never per call (except for inference tensors, which have no version counter).
 * {@code ranknum + 1e-5} is computed in ranknum's dtype, as PEFT.
 */
public final class AdaLoraKernel implements AutoCloseable {
    private final double scaling;
    private Tensor a;
    private Tensor e;
    private Tensor b;
    private Tensor ranknum;
    private final long[] versions = new long[3];
    private FusedLoraLinear.Adapter slot;
    private int refreshes;

    /**
     * @param a {@code lora_A (r, in)}
     * @param e {@code lora_E (r, 1)}
     * @param b {@code lora_B (out, r)}, contiguous, the activations' dtype
     * @param ranknum {@code (1,)}
     * @param scaling AdaLoRA's scaling (not divided by the rank)
     */
    public AdaLoraKernel(Tensor a, Tensor e, Tensor b, Tensor ranknum, double scaling) {
        this.scaling = scaling;
        setWeights(a, e, b, ranknum);
    }

    /** Replaces the tensors (a loaded or resized adapter); the effective A is rebuilt on the next {@link #slot()}. */
    public void setWeights(Tensor a, Tensor e, Tensor b, Tensor ranknum) {
        MergeKernels.checkFloating("a", a);
        MergeKernels.checkFloating("e", e);
        MergeKernels.checkFloating("ranknum", ranknum);
        Kernels.checkCpuContiguous("b", b);
        long r = a.dim() == 2 ? a.size(0) : -1;
        if (r < 1 || e.dim() != 2 || e.size(0) != r || e.size(1) != 1 || b.dim() != 2 || b.size(1) != r) {
            throw new IllegalArgumentException("e: AdaLoRA shapes disagree: a " + java.util.Arrays.toString(a.shape())
                    + ", e " + java.util.Arrays.toString(e.shape()) + ", b " + java.util.Arrays.toString(b.shape())
                    + " (expected (r, in), (r, 1), (out, r) with r >= 1)");
        }
        if (ranknum.numel() != 1) {
            throw new IllegalArgumentException("ranknum: expected one element, got shape "
                    + java.util.Arrays.toString(ranknum.shape()));
        }
        this.a = a;
        this.e = e;
        this.b = b;
        this.ranknum = ranknum;
        closeSlot();
    }

    /** The LoRA slot for the current weights, rebuilt only if A, E or ranknum changed since the last call. */
    public FusedLoraLinear.Adapter slot() {
        long va = version(a);
        long ve = version(e);
        long vr = version(ranknum);
        if (slot == null || va < 0 || ve < 0 || vr < 0 || va != versions[0] || ve != versions[1] || vr != versions[2]) {
            Tensor prod = a.mul(e);
            Tensor ae = Kernels.own(prod.contiguous()); // cached across calls: out of any caller's scope
            prod.close();
            Scalar eps = new Scalar(1e-5);
            Tensor denom = ranknum.add(eps);
            double scale = scaling / denom.item_double();
            denom.close();
            eps.close();
            closeSlot();
            slot = new FusedLoraLinear.Adapter(ae, b, (float) scale);
            versions[0] = va;
            versions[1] = ve;
            versions[2] = vr;
            refreshes++;
        }
        return slot;
    }

    /**
     * The tensor's version counter, or -1 for an inference tensor (created under {@code InferenceMode}), which has
     * none: its slot is then rebuilt on every call, since nothing would tell us that its values changed.
     */
    static long version(Tensor t) {
        return t.__dispatch_is_inference() ? -1 : t.__dispatch__version();
    }

    /** Frees the cached effective A; a later {@link #slot()} builds it again. */
    @Override
    public void close() {
        closeSlot();
    }

    // the previous effective A: whoever used it (a FusedLoraLinear's adapter list) is given the new slot next
    private void closeSlot() {
        if (slot != null) {
            slot.a().close();
            slot = null;
        }
    }

    /** How many times the effective A has been built (for tests: not per call). */
    public int refreshes() {
        return refreshes;
    }
}
