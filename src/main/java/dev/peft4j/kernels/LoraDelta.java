package dev.peft4j.kernels;

import java.util.Arrays;
import java.util.List;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

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
     * Adapters checked once for a layer of shape {@code [out, in]}: their pointers, ranks and scales, ready for
     * every call. A layer holds one while its active set stays the same, so that a forward's checks cover only x
     * and y: after a base GEMM that streamed the weight through every cache, each call into libtorch misses, and
     * checking the adapters on every call added 0.2-0.3 % of a bf16 4096 x 4096 GEMM at 128-512 rows
     * ({@code LoraDeltaBench.splitBaseThenDeltaCheckedPerCall} against {@code splitBaseThenDelta}). Keeps the
     * tensors reachable; their storage must stay where it is (in-place updates are seen).
     */
    public static final class Slots {
        final List<FusedLoraLinear.Adapter> adapters;
        final int dtype;
        final ScalarType scalarType;
        final long in;
        final long out;
        final long[] a;
        final long[] b;
        final int[] r;
        final float[] s;

        private Slots(List<FusedLoraLinear.Adapter> adapters, ScalarType scalarType, long in, long out) {
            this.adapters = adapters;
            this.scalarType = scalarType;
            this.dtype = scalarType == ScalarType.Float ? 0 : 1;
            this.in = in;
            this.out = out;
            int ns = adapters.size();
            a = new long[ns];
            b = new long[ns];
            r = new int[ns];
            s = new float[ns];
        }

        /**
         * Checks the adapters against a layer of {@code in} inputs, {@code out} outputs and the given dtype
         * (float32 or bfloat16): each {@code a} {@code [r, in]}, {@code b} {@code [out, r]}, contiguous, on the CPU.
         */
        public static Slots of(List<FusedLoraLinear.Adapter> adapters, long in, long out, ScalarType dtype) {
            return of(adapters, in, out, dtype, "slots");
        }

        /** {@link #of} with errors naming the adapters {@code label[i].a} / {@code .b}. */
        static Slots of(List<FusedLoraLinear.Adapter> adapters, long in, long out, ScalarType dtype, String label) {
            dtype = dtype.intern();
            if (dtype != ScalarType.Float && dtype != ScalarType.BFloat16) {
                throw new IllegalArgumentException("dtype " + dtype + " not supported, expected Float or BFloat16");
            }
            Slots sl = new Slots(List.copyOf(adapters), dtype, in, out);
            for (int i = 0; i < sl.a.length; i++) {
                FusedLoraLinear.Adapter ad = sl.adapters.get(i);
                String an = label + "[" + i + "].a";
                String bn = label + "[" + i + "].b";
                Kernels.checkCpuContiguous(an, ad.a());
                Kernels.checkCpuContiguous(bn, ad.b());
                checkDtype(an, ad.a(), dtype);
                checkDtype(bn, ad.b(), dtype);
                if (ad.a().dim() != 2 || ad.a().size(1) != in || ad.a().size(0) < 1
                        || ad.a().size(0) > Integer.MAX_VALUE) {
                    throw new IllegalArgumentException(an + ": expected shape [r, " + in + "] with r >= 1, got "
                            + Arrays.toString(ad.a().shape()));
                }
                long rank = ad.a().size(0);
                if (ad.b().dim() != 2 || ad.b().size(0) != out || ad.b().size(1) != rank) {
                    throw new IllegalArgumentException(bn + ": expected shape [" + out + ", " + rank + "], got "
                            + Arrays.toString(ad.b().shape()));
                }
                sl.a[i] = ad.a().data_ptr().address();
                sl.b[i] = ad.b().data_ptr().address();
                sl.r[i] = (int) rank;
                sl.s[i] = ad.scale();
            }
            return sl;
        }

        /** The adapters, in slot order (a row slot indexes this list). */
        public List<FusedLoraLinear.Adapter> adapters() {
            return adapters;
        }

        private static void checkDtype(String name, Tensor t, ScalarType want) {
            ScalarType dt = t.scalar_type().intern();
            if (dt != want) {
                throw new IllegalArgumentException(name + ": dtype " + dt + " does not match the layer's " + want);
            }
        }
    }

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
        ScalarType dt = Kernels.dtypeCode("y", y) == 0 ? ScalarType.Float : ScalarType.BFloat16;
        Kernels.checkSameDtype("x", x, "y", y);
        long[] ys = y.shape();
        long[] xs = x.shape();
        if (ys.length == 0 || xs.length == 0) {
            throw new IllegalArgumentException("y: expected at least one dimension, got shapes y "
                    + Arrays.toString(ys) + " and x " + Arrays.toString(xs));
        }
        apply(y, x, Slots.of(slots, xs[xs.length - 1], ys[ys.length - 1], dt), rowSlot);
    }

    /**
     * Adds the LoRA terms of adapters checked beforehand into {@code y} in place; as {@link #apply(Tensor, Tensor,
     * List, int[])}, with x and y checked against the layer the slots were made for.
     */
    public static void apply(Tensor y, Tensor x, Slots slots, int[] rowSlot) {
        long[] xs = checkInput(x, slots);
        long rows = rows(xs);
        Kernels.checkCpuContiguous("y", y);
        checkDtype("y", y, slots);
        Kernels.checkNoGrad("y", y);
        long[] ys = y.shape();
        if (ys.length == 0 || ys[ys.length - 1] != slots.out) {
            throw new IllegalArgumentException("y: expected shape [..., " + slots.out + "], got "
                    + Arrays.toString(ys));
        }
        if (!Arrays.equals(Arrays.copyOf(ys, ys.length - 1), Arrays.copyOf(xs, xs.length - 1))) {
            throw new IllegalArgumentException("x: shape " + Arrays.toString(xs) + " does not have y's leading "
                    + "dimensions " + Arrays.toString(Arrays.copyOf(ys, ys.length - 1)));
        }
        run(y.data_ptr().address(), x.data_ptr().address(), rows, slots, rowSlot, torch.get_num_threads());
        java.lang.ref.Reference.reachabilityFence(y);
        java.lang.ref.Reference.reachabilityFence(x);
    }

    /**
     * An adapted Linear for any M: libtorch's {@code linear(x, weight, bias)} for the base, then {@link #apply} into
     * that output. {@code x} is made contiguous (copied) when it is not.
     */
    public static Tensor linear(Tensor x, Tensor weight, Tensor bias, List<FusedLoraLinear.Adapter> slots,
            int[] rowSlot) {
        Kernels.checkCpuContiguous("weight", weight);
        return linear(x, weight, bias, Slots.of(slots, weight.size(-1), weight.size(0), weight.scalar_type()), rowSlot);
    }

    /**
     * The same with adapters checked beforehand. Everything is checked before libtorch's GEMM; after it, the delta
     * needs only the output's address (the output of {@code linear} on checked inputs has a known shape and layout).
     */
    public static Tensor linear(Tensor x, Tensor weight, Tensor bias, Slots slots, int[] rowSlot) {
        Kernels.checkCpuContiguous("weight", weight);
        checkDtype("weight", weight, slots);
        if (weight.dim() != 2 || weight.size(0) != slots.out || weight.size(1) != slots.in) {
            throw new IllegalArgumentException("weight: expected shape [" + slots.out + ", " + slots.in + "], got "
                    + Arrays.toString(weight.shape()));
        }
        Tensor xc = x.is_contiguous() ? x : x.contiguous();
        try {
            long rows = rows(checkInput(xc, slots));
            if (rowSlot != null) {
                checkRowSlot(rowSlot, rows, slots.a.length);
            }
            long xAddr = xc.data_ptr().address();
            int threads = torch.get_num_threads();
            Tensor y = bias == null ? torch.linear(xc, weight) : torch.linear(xc, weight, new TensorOptional(bias));
            // [..., out], contiguous, x's dtype: made by linear from the inputs checked above
            if (y.requires_grad()) {
                y.close();
                throw new IllegalArgumentException("weight: requires grad; this in-place kernel is invisible to "
                        + "autograd");
            }
            run(y.data_ptr().address(), xAddr, rows, slots, rowSlot, threads);
            java.lang.ref.Reference.reachabilityFence(weight);
            return y;
        } finally {
            if (xc != x) {
                xc.close();
            }
        }
    }

    /** Checks x ({@code [..., in]}, contiguous, on the CPU, the slots' dtype) and returns its shape. */
    private static long[] checkInput(Tensor x, Slots slots) {
        Kernels.checkCpuContiguous("x", x);
        checkDtype("x", x, slots);
        long[] xs = x.shape();
        if (xs.length == 0 || xs[xs.length - 1] != slots.in) {
            throw new IllegalArgumentException("x: expected shape [..., " + slots.in + "], got " + Arrays.toString(xs));
        }
        return xs;
    }

    /** The number of rows of a {@code [..., features]} shape. */
    private static long rows(long[] shape) {
        long m = 1;
        for (int i = 0; i < shape.length - 1; i++) {
            m *= shape[i];
        }
        return m;
    }

    private static void checkDtype(String name, Tensor t, Slots slots) {
        ScalarType dt = t.scalar_type().intern();
        if (dt != slots.scalarType) {
            throw new IllegalArgumentException(name + ": dtype " + dt + " does not match the slots' "
                    + slots.scalarType);
        }
    }

    private static void run(long y, long x, long m, Slots slots, int[] rowSlot, int threads) {
        int ns = slots.a.length;
        if (rowSlot != null) {
            checkRowSlot(rowSlot, m, ns);
        }
        if (m == 0 || slots.out == 0 || ns == 0) {
            return;
        }
        long k = slots.in;
        int elem = slots.dtype == 0 ? 4 : 2;
        if (k > 0 && x < y + m * slots.out * elem && y < x + m * k * elem) {
            throw new IllegalArgumentException("x: memory overlaps y's");
        }
        Kernels.countLayerCall();
        NativeKernels.peft4j_lora_delta(slots.dtype, y, k == 0 ? 0L : x, m, k, slots.out, ns, slots.a, slots.b,
                slots.r, slots.s, rowSlot, threads);
        java.lang.ref.Reference.reachabilityFence(slots);
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
