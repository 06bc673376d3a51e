package dev.peft4j.nn;

import dev.peft4j.kernels.DecodeKernels;
import dev.peft4j.kernels.DecodeLinear;
import dev.peft4j.kernels.DecodeLinearSource;
import dev.peft4j.kernels.FusedLoraLinear;
import dev.peft4j.kernels.NativeGemv;
import org.bytedeco.pytorch.GradMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;

/** {@code torch.nn.Linear}: {@code y = x·Wᵀ + b}, weight {@code (out_features, in_features)}, optional bias. */
public final class Linear extends Module implements Layer, DecodeLinearSource {
    private final long inFeatures;
    private final long outFeatures;
    // the native GEMV for decode-sized inference forwards, built on first use and rebuilt when a tensor is replaced
    private NativeGemv gemv;
    private long gemvEpoch = -1;

    /**
     * {@code torch.nn.Linear(inFeatures, outFeatures, bias)}: weight {@code (out, in)} and, when {@code bias}, a bias
     * {@code (out)}, made by {@code init}.
     */
    public Linear(long inFeatures, long outFeatures, boolean bias, Init init) {
        this.inFeatures = inFeatures;
        this.outFeatures = outFeatures;
        registerParameter("weight", init.empty(outFeatures, inFeatures), true);
        if (bias) {
            registerParameter("bias", init.empty(outFeatures), true);
        }
    }

    /** The input width. */
    public long inFeatures() {
        return inFeatures;
    }

    /** The output width. */
    public long outFeatures() {
        return outFeatures;
    }

    /** The weight {@code (out, in)}, owned by this module. */
    public Tensor weight() {
        return param("weight");
    }

    /** The bias {@code (out,)}, or null. */
    public Tensor bias() {
        return paramOrNull("bias");
    }

    /**
     * {@code x·Wᵀ + b}. An inference forward (autograd off) of at most {@value FusedLoraLinear#MAX_ROWS} rows on the
     * CPU runs on peft4j's native GEMV ({@link NativeGemv}) while {@link DecodeKernels#enabled()}; larger inputs and
     * autograd forwards run on libtorch.
     */
    @Override
    public Tensor forward(Tensor x) {
        if (DecodeKernels.enabled() && !GradMode.is_enabled() && x.numel() <= FusedLoraLinear.MAX_ROWS * inFeatures) {
            NativeGemv g = gemv();
            if (g != null && g.accepts(x)) {
                return g.forward(x);
            }
        }
        Tensor b = paramOrNull("bias");
        if (isSingleFloatRow(x, inFeatures, param("weight"))) {
            // one row (a decode step): libtorch's gemv reads fp32 weights several times faster than OpenBLAS's
            // sgemm with m = 1 (measured 54 vs 8-17 GB/s on 2 cores)
            long[] outShape = x.shape();
            outShape[outShape.length - 1] = outFeatures;
            try (Tensor flat = x.reshape(inFeatures); Tensor y = param("weight").mv(flat)) {
                return (b == null ? y : y.add_(b)).view(outShape);
            }
        }
        if (b == null) {
            return torch.linear(x, param("weight"));
        }
        try (TensorOptional ob = new TensorOptional(b)) {
            return torch.linear(x, param("weight"), ob);
        }
    }

    /**
     * The native GEMV that {@link #forward} runs for {@code x} (an inference forward of at most
     * {@value FusedLoraLinear#MAX_ROWS} rows while {@link DecodeKernels#enabled()}), or null when x takes libtorch.
     */
    @Override
    public DecodeLinear decodeLinear(Tensor x) {
        if (DecodeKernels.enabled() && !GradMode.is_enabled() && x.numel() <= FusedLoraLinear.MAX_ROWS * inFeatures) {
            NativeGemv g = gemv();
            if (g != null && g.accepts(x)) {
                return g;
            }
        }
        return null;
    }

    private synchronized NativeGemv gemv() {
        long epoch = Module.tensorEpoch();
        Tensor w = param("weight");
        Tensor b = paramOrNull("bias");
        if (gemv != null && gemvEpoch == epoch && gemv.sameTensors(w, b)) {
            return gemv;
        }
        if (gemv != null) {
            gemv.close();
        }
        gemv = NativeGemv.create(w, b);
        gemvEpoch = epoch;
        return gemv;
    }

    @Override
    protected void releaseNative() {
        synchronized (this) {
            if (gemv != null) {
                gemv.close();
                gemv = null;
            }
        }
    }

    /** A CPU float32 input holding one row of {@code in} features, for a float32 weight. */
    static boolean isSingleFloatRow(Tensor x, long in, Tensor weight) {
        return x.numel() == in && x.dim() >= 1 && x.is_cpu()
                && x.scalar_type().intern() == org.bytedeco.pytorch.global.torch.ScalarType.Float
                && weight.scalar_type().intern() == org.bytedeco.pytorch.global.torch.ScalarType.Float;
    }
}
