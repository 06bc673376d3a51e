package dev.peft4j.kernels;

import java.util.Arrays;
import java.util.List;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * An IA3-adapted Linear ({@code [out, in]} weight): the product of the active vectors is folded once, when the
 * active set changes ({@link #setActive}), not per call. Feed-forward layers scale the input, the others the
 * output (bias included), as PEFT's {@code Linear.forward}.
 *
 * <p>Up to {@value FusedLoraLinear#MAX_ROWS} rows, one native call: the scaling is fused into the kernel's read of
 * x (rounded to x's dtype, as the composed {@code x.mul(l).to(x.dtype)}) and its write of y. More rows: libtorch's
 * {@code linear} for the GEMM, the scaling done natively in one pass (a scaled copy of x, or y in place).
 * The vectors are folded in their own dtype as PEFT does ({@code l1.flatten()·l2.flatten()…}), then widened to
 * float32 for the kernel. Tensors are kept alive until {@link #close()}; inference only.
 */
public final class Ia3Kernel implements AutoCloseable {
    private final Tensor weight;
    private final Tensor bias;
    private final boolean feedForward;
    private final long in;
    private final long out;
    private final int dt;
    private final FusedLoraLinear fused;
    private Tensor folded; // float32 [in] or [out], or null with no active vector
    private final TensorOptions options;
    private final MemoryFormatOptional noMemoryFormat = Kernels.own(new MemoryFormatOptional());

    /**
     * @param weight {@code [out, in]}, float32 or bfloat16, contiguous CPU
     * @param bias {@code [out]} of the same dtype, or null
     * @param feedForward scale the input (the vectors are {@code (1, in)}), else the output ({@code (out, 1)})
     */
    public Ia3Kernel(Tensor weight, Tensor bias, boolean feedForward) {
        this.fused = new FusedLoraLinear(weight, bias); // checks weight and bias
        this.weight = weight;
        this.bias = bias;
        this.feedForward = feedForward;
        this.out = weight.size(0);
        this.in = weight.size(1);
        this.dt = Kernels.dtypeCode("weight", weight);
        this.options = Kernels.own(new TensorOptions(weight.scalar_type().intern()));
    }

    /** Folds the active adapters' {@code ia3_l} (their product); an empty list: the base layer alone. */
    public void setActive(List<Tensor> vectors) {
        long want = feedForward ? in : out;
        Tensor product = null;
        for (int i = 0; i < vectors.size(); i++) {
            Tensor l = vectors.get(i);
            MergeKernels.checkFloating("vectors[" + i + "]", l);
            long[] shape = feedForward ? new long[] {1, in} : new long[] {out, 1};
            if (!Arrays.equals(l.shape(), shape)) {
                throw new IllegalArgumentException("vectors[" + i + "]: expected shape " + Arrays.toString(shape)
                        + ", got " + Arrays.toString(l.shape()));
            }
            Tensor flat = l.flatten();
            if (product == null) {
                product = flat;
            } else {
                Tensor next = product.mul(flat);
                product.close();
                flat.close();
                product = next;
            }
        }
        if (folded != null) {
            folded.close();
            folded = null;
        }
        if (product == null) {
            fused.setIa3(null, null);
            return;
        }
        Tensor wide = product.to(ScalarType.Float);
        folded = Kernels.own(wide.contiguous()); // outlives a caller's scope
        wide.close();
        product.close();
        float[] f = new float[(int) want];
        new FloatPointer(folded.data_ptr()).capacity(want).get(f);
        fused.setIa3(feedForward ? f : null, feedForward ? null : f);
    }

    /** {@code x}: {@code [..., in]} of the weight's dtype; returns {@code [..., out]}. Non-contiguous x is copied. */
    public Tensor forward(Tensor x) {
        Tensor xc = x.is_contiguous() ? x : x.contiguous();
        Kernels.checkCpuContiguous("x", xc);
        if (Kernels.dtypeCode("x", xc) != dt) {
            throw new IllegalArgumentException("x: dtype " + xc.scalar_type().intern() + " does not match the weight's "
                    + weight.scalar_type().intern());
        }
        long[] shape = xc.shape();
        if (shape.length == 0 || shape[shape.length - 1] != in) {
            throw new IllegalArgumentException("x: expected last dimension " + in + ", got shape "
                    + Arrays.toString(shape));
        }
        long rows = xc.numel() / Math.max(1, in);
        if (rows <= FusedLoraLinear.MAX_ROWS && in > 0) {
            return fused.forward(xc);
        }
        Kernels.countLayerCall();
        int threads = torch.get_num_threads();
        Tensor src = xc;
        if (folded != null && feedForward && rows > 0) {
            src = torch.empty(shape, options, noMemoryFormat);
            NativeKernels.peft4j_scale_matrix(dt, src.data_ptr().address(), xc.data_ptr().address(), rows, in,
                    folded.data_ptr().address(), 0, 0, threads);
        }
        Tensor y = bias == null ? torch.linear(src, weight) : torch.linear(src, weight, new TensorOptional(bias));
        if (folded != null && !feedForward && rows > 0 && out > 0) {
            long ya = y.data_ptr().address();
            NativeKernels.peft4j_scale_matrix(dt, ya, ya, rows, out, folded.data_ptr().address(), 0, 0, threads);
        }
        if (src != xc) {
            src.close();
        }
        java.lang.ref.Reference.reachabilityFence(xc);
        return y;
    }

    @Override
    public void close() {
        fused.close();
        if (folded != null) {
            folded.close();
            folded = null;
        }
        options.close();
        noMemoryFormat.close();
    }
}
