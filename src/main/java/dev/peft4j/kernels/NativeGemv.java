package dev.peft4j.kernels;

import java.util.Arrays;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A plain Linear layer ({@code y = x·Wᵀ + b}, no adapter) on the native decode GEMV, for up to
 * {@value FusedLoraLinear#MAX_ROWS} rows: the adapted-linear kernel with no adapter, which streams the weight at
 * memory speed where libtorch's bf16 GEMV reaches about half of it. float32 or bfloat16, float32 accumulation.
 *
 * <p>Holds a raw pointer to the weight and bias: in-place value updates (a merge) are read by the next forward; a
 * tensor replaced by another needs a new instance (its owner, {@link dev.peft4j.nn.Linear}, rebuilds it when
 * {@link dev.peft4j.nn.Module#tensorEpoch()} moves). Keeps both tensors reachable until {@link #close()}.
 * Forwards may run from several threads at once; {@link #close()} must not race them.
 */
public final class NativeGemv extends DecodeLinear implements AutoCloseable {
    private static final java.util.concurrent.atomic.AtomicLong LIVE = new java.util.concurrent.atomic.AtomicLong();

    private final Tensor weight;
    private final Tensor bias;
    private final ScalarType dtype;
    private final long in;
    private final long out;
    private final TensorOptions outputOptions;
    private final MemoryFormatOptional noMemoryFormat;
    private long handle;

    private NativeGemv(Tensor weight, Tensor bias, ScalarType dtype) {
        this.weight = weight;
        this.bias = bias;
        this.dtype = dtype;
        this.out = weight.size(0);
        this.in = weight.size(1);
        this.outputOptions = Kernels.own(new TensorOptions(dtype)); // may be built inside a caller's scope
        this.noMemoryFormat = Kernels.own(new MemoryFormatOptional());
        this.handle = NativeKernels.peft4j_adapted_linear_create(dtype == ScalarType.Float ? 0 : 1,
                weight.data_ptr().address(), bias == null ? 0L : bias.data_ptr().address(), in, out);
        LIVE.incrementAndGet();
    }

    /**
     * The GEMV state for {@code weight} {@code [out, in]} and {@code bias} {@code [out]} (or null), or null when the
     * kernel cannot serve them: not on the CPU, not contiguous, a dtype other than float32 / bfloat16, a bias of
     * another dtype, an empty weight.
     */
    public static NativeGemv create(Tensor weight, Tensor bias) {
        if (!usable(weight) || weight.dim() != 2 || weight.size(0) == 0 || weight.size(1) == 0) {
            return null;
        }
        ScalarType dt = weight.scalar_type().intern();
        if (dt != ScalarType.Float && dt != ScalarType.BFloat16) {
            return null;
        }
        if (bias != null && (!usable(bias) || bias.scalar_type().intern() != dt || bias.numel() != weight.size(0))) {
            return null;
        }
        return new NativeGemv(weight, bias, dt);
    }

    /** How many instances hold native state now: leak tests of their owners use it. */
    public static long liveHandles() {
        return LIVE.get();
    }

    /** Whether this state was built on exactly these tensors. */
    public boolean sameTensors(Tensor w, Tensor b) {
        return w == weight && b == bias;
    }

    /** Whether {@code x} can take this kernel: the weight's dtype, on the CPU, at most {@value FusedLoraLinear#MAX_ROWS} rows. */
    public boolean accepts(Tensor x) {
        return x.scalar_type().intern() == dtype && x.dim() >= 1 && x.size(x.dim() - 1) == in
                && x.numel() / in <= FusedLoraLinear.MAX_ROWS && x.is_cpu();
    }

    /** {@code x} {@code [..., in]} (checked by {@link #accepts}) to {@code [..., out]}, a new tensor. */
    public Tensor forward(Tensor x) {
        if (handle == 0) {
            throw new IllegalStateException("NativeGemv is closed");
        }
        if (!accepts(x)) {
            throw new IllegalArgumentException("x: shape " + Arrays.toString(x.shape()) + " of "
                    + x.scalar_type().intern() + " does not fit a [" + out + ", " + in + "] " + dtype
                    + " GEMV of at most " + FusedLoraLinear.MAX_ROWS + " rows");
        }
        Tensor xc = x.is_contiguous() ? x : x.contiguous();
        long[] outShape = x.shape();
        outShape[outShape.length - 1] = out;
        Tensor y = torch.empty(outShape, outputOptions, noMemoryFormat);
        long rows = x.numel() / in;
        if (rows > 0) {
            NativeKernels.peft4j_adapted_linear_forward(handle, y.data_ptr().address(), xc.data_ptr().address(), rows,
                    torch.get_num_threads(), null);
        }
        java.lang.ref.Reference.reachabilityFence(xc);
        java.lang.ref.Reference.reachabilityFence(this);
        if (xc != x) {
            xc.close();
        }
        return y;
    }

    @Override
    long handle() {
        if (handle == 0) {
            throw new IllegalStateException("NativeGemv is closed");
        }
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
        return false;
    }

    /** Frees the native state and releases the tensors. */
    @Override
    public void close() {
        if (handle != 0) {
            NativeKernels.peft4j_adapted_linear_destroy(handle);
            handle = 0;
            LIVE.decrementAndGet();
            outputOptions.close();
            noMemoryFormat.close();
        }
    }

    private static boolean usable(Tensor t) {
        return t != null && !t.isNull() && t.defined() && t.is_cpu() && t.is_contiguous();
    }

    // weight and bias are referenced only to keep them alive while the native state points at them
    @SuppressWarnings("unused")
    private Object keepAlive() {
        return new Object[] {weight, bias};
    }
}
