package dev.peft4j.kernels;

import java.util.Arrays;
import java.util.List;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A Linear layer with LoRA adapters, computed by one native call for decode-sized batches
 * ({@value #MAX_ROWS} rows or fewer):
 * {@code y = x·Wᵀ + b + Σ scale_a·(x·A_aᵀ)·B_aᵀ}, with PEFT's layout ({@code A: [r, in]},
 * {@code B: [out, r]}). The base weight is streamed once; each output is finished in the same pass.
 * float32 or bfloat16 throughout, float32 accumulation. A mixed batch ({@link #forward(Tensor, int[])}) gives each
 * row one adapter of the list or none, in the same single pass; each adapter's rows are gathered once, so 16 rows
 * over 8 adapters cost about what 16 rows on one adapter cost. {@link Ia3Kernel} reuses this kernel with IA3
 * scaling fused into the read of x and the write of y. Larger batches: {@link LoraDelta}.
 *
 * <p>The native side holds raw pointers to the weight, bias and adapter tensors; this object keeps
 * those tensors alive until {@link #close()} or the next {@link #setAdapters}. Their storage must not be
 * reallocated meanwhile (in-place value updates are fine and are seen by the next forward).
 * Inference only: nothing is recorded for autograd.
 */
public final class FusedLoraLinear extends DecodeLinear implements AutoCloseable {
    /** Rows per call the fused path handles; callers use libtorch's GEMM above this. */
    public static final int MAX_ROWS = 16;

    private static final java.util.concurrent.atomic.AtomicLong LIVE = new java.util.concurrent.atomic.AtomicLong();

    /** One active LoRA adapter: {@code a} is {@code [r, in]}, {@code b} is {@code [out, r]}. */
    public record Adapter(Tensor a, Tensor b, float scale) {}

    private final Tensor weight;
    private final Tensor bias;
    private final ScalarType dtype;
    private final long in;
    private final long out;
    private List<Adapter> adapters = List.of();
    private long handle;
    // allocated once: a TensorOptions per forward would be a native allocation on the hot path
    private final TensorOptions outputOptions;
    private final MemoryFormatOptional noMemoryFormat = Kernels.own(new MemoryFormatOptional());

    /**
     * @param weight {@code [out, in]}, float32 or bfloat16, contiguous, on the CPU
     * @param bias {@code [out]} of the same dtype, or null
     */
    public FusedLoraLinear(Tensor weight, Tensor bias) {
        Kernels.checkCpuContiguous("weight", weight);
        this.dtype = weight.scalar_type().intern();
        if (dtype != ScalarType.Float && dtype != ScalarType.BFloat16) {
            throw new IllegalArgumentException("weight: dtype " + dtype + " not supported, expected Float or BFloat16");
        }
        if (weight.dim() != 2) {
            throw new IllegalArgumentException("weight: expected 2 dimensions [out, in], got shape "
                    + Arrays.toString(weight.shape()));
        }
        this.out = weight.size(0);
        this.in = weight.size(1);
        if (bias != null) {
            Kernels.checkCpuContiguous("bias", bias);
            checkDtype("bias", bias);
            checkShape("bias", bias, out);
        }
        this.weight = weight;
        this.bias = bias;
        this.outputOptions = Kernels.own(new TensorOptions(dtype)); // may be built inside a caller's scope
        this.handle = NativeKernels.peft4j_adapted_linear_create(dtypeCode(), weight.data_ptr().address(),
                bias == null ? 0L : bias.data_ptr().address(), in, out);
        LIVE.incrementAndGet();
    }

    /** How many instances hold native state now (created, not yet closed): leak tests of their owners use it. */
    public static long liveHandles() {
        return LIVE.get();
    }

    /**
     * Replaces the active adapters with ones already checked against this layer's shape and dtype
     * ({@link LoraDelta.Slots}, which a layer holds for its GEMM path too): no second round of checks.
     */
    public void setAdapters(LoraDelta.Slots checked) {
        checkOpen();
        if (checked.in != in || checked.out != out || checked.scalarType != dtype) {
            throw new IllegalArgumentException("slots made for a [" + checked.out + ", " + checked.in + "] "
                    + checked.scalarType + " layer, this one is [" + out + ", " + in + "] " + dtype);
        }
        NativeKernels.peft4j_adapted_linear_set_adapters(handle, checked.a.length, checked.a, checked.b, checked.r,
                checked.s);
        this.adapters = checked.adapters();
    }

    /** Replaces the active adapters (an empty list: the base layer alone). */
    public void setAdapters(List<Adapter> active) {
        checkOpen();
        setAdapters(LoraDelta.Slots.of(active, in, out, dtype, "adapters"));
    }

    /** {@code x} of shape {@code [..., in]} with at most {@value #MAX_ROWS} rows; returns {@code [..., out]}. */
    public Tensor forward(Tensor x) {
        return forward(x, null);
    }

    /**
     * A mixed batch: row {@code i} of {@code x} (flattened to {@code [rows, in]}) gets only the adapter at index
     * {@code rowSlot[i]} of {@link #setAdapters}' list, or none for {@code -1} (Punica's BGMV convention); the other
     * adapters do not touch it. {@code rowSlot == null}: every adapter on every row, as {@link #forward(Tensor)}.
     * At most {@value LoraDelta#MAX_SLOTS} adapters with a slot index.
     */
    public Tensor forward(Tensor x, int[] rowSlot) {
        checkOpen();
        Kernels.checkCpuContiguous("x", x);
        checkDtype("x", x);
        long[] shape = x.shape();
        if (shape.length == 0 || shape[shape.length - 1] != in) {
            throw new IllegalArgumentException("x: expected last dimension " + in + ", got shape "
                    + Arrays.toString(shape));
        }
        long rows = x.numel() / in;
        if (rows > MAX_ROWS) {
            throw new IllegalArgumentException("x: " + rows + " rows, the fused decode path takes at most "
                    + MAX_ROWS + "; use libtorch's linear for larger batches");
        }
        if (rowSlot != null) {
            LoraDelta.checkRowSlot(rowSlot, rows, adapters.size());
        }
        long[] outShape = shape.clone();
        outShape[outShape.length - 1] = out;
        Tensor y = torch.empty(outShape, outputOptions, noMemoryFormat);
        if (rows > 0) {
            NativeKernels.peft4j_adapted_linear_forward(handle, y.data_ptr().address(), x.data_ptr().address(),
                    rows, torch.get_num_threads(), rowSlot);
        }
        Kernels.countLayerCall();
        java.lang.ref.Reference.reachabilityFence(x);
        java.lang.ref.Reference.reachabilityFence(this);
        return y;
    }

    /**
     * IA3 scaling fused into the kernel's read of x ({@code in}, {@code in_features} entries) and write of y
     * ({@code out}, {@code out_features} entries), float32, already folded over the active adapters; null for none.
     */
    void setIa3(float[] inScale, float[] outScale) {
        checkOpen();
        if (inScale != null && inScale.length != in) {
            throw new IllegalArgumentException("inScale: " + inScale.length + " entries, expected " + in);
        }
        if (outScale != null && outScale.length != out) {
            throw new IllegalArgumentException("outScale: " + outScale.length + " entries, expected " + out);
        }
        NativeKernels.peft4j_adapted_linear_set_ia3(handle, inScale, outScale);
    }

    /**
     * DoRA's magnitude scale ({@code m / ‖W + s·B·A‖}, one float32 entry per output feature, copied), applied to
     * each output before the bias is added: {@code y = scale ⊙ (x·Wᵀ + Σ s·(x·Aᵀ)·Bᵀ) + b}; null clears it.
     *
     * @throws IllegalArgumentException if {@code scale} does not have {@code out_features} entries
     */
    public void setDoraScale(float[] scale) {
        checkOpen();
        if (scale != null && scale.length != out) {
            throw new IllegalArgumentException("DoRA scale: " + scale.length + " entries, expected " + out);
        }
        NativeKernels.peft4j_adapted_linear_set_dora(handle, scale);
    }

    @Override
    long handle() {
        checkOpen();
        return handle;
    }

    @Override
    ScalarType dtype() {
        return dtype;
    }

    @Override
    long inFeatures() {
        return in;
    }

    @Override
    long outFeatures() {
        return out;
    }

    @Override
    boolean countsLayerCall() {
        return true;
    }

    @Override
    int slotCount() {
        return adapters.size();
    }

    /** Frees the native state and releases the tensors. */
    @Override
    public void close() {
        if (handle != 0) {
            NativeKernels.peft4j_adapted_linear_destroy(handle);
            handle = 0;
            LIVE.decrementAndGet();
            adapters = List.of();
            outputOptions.close();
            noMemoryFormat.close();
        }
    }

    private int dtypeCode() {
        return dtype == ScalarType.Float ? 0 : 1;
    }

    private void checkOpen() {
        if (handle == 0) {
            throw new IllegalStateException("FusedLoraLinear is closed");
        }
    }

    private void checkDtype(String name, Tensor t) {
        ScalarType dt = t.scalar_type().intern();
        if (dt != dtype) {
            throw new IllegalArgumentException(name + ": dtype " + dt + " does not match the weight's " + dtype);
        }
    }

    private static void checkShape(String name, Tensor t, long... expected) {
        if (!Arrays.equals(t.shape(), expected)) {
            throw new IllegalArgumentException(name + ": expected shape " + Arrays.toString(expected) + ", got "
                    + Arrays.toString(t.shape()));
        }
    }

    // weight and bias are referenced only to keep them alive while the native state points at them
    @SuppressWarnings("unused")
    private Object keepAlive() {
        return new Object[] {weight, bias, adapters};
    }
}
