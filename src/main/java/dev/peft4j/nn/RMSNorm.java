package dev.peft4j.nn;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Llama's {@code LlamaRMSNorm}: computed in float32 ({@code x · rsqrt(mean(x²) + eps)}), cast back to the input's
 * dtype, then multiplied by the weight — the order transformers uses, which matters in bf16/fp16.
 */
public final class RMSNorm extends Module implements Layer {
    private final double eps;

    /**
     * A norm over a last dimension of size {@code dim}, with {@code eps} added to the mean square; weight made by
     * {@code init}.
     */
    public RMSNorm(long dim, double eps, Init init) {
        this.eps = eps;
        registerParameter("weight", init.empty(dim), true);
    }

    /** The weight {@code (dim,)}, owned by this module. */
    public Tensor weight() {
        return param("weight");
    }

    /** The value added to the mean square. */
    public double eps() {
        return eps;
    }

    @Override
    public Tensor forward(Tensor x) {
        ScalarType in = x.scalar_type().intern();
        boolean upcast = in != ScalarType.Float;
        Tensor xf = upcast ? x.to(ScalarType.Float) : x;
        try (Tensor sq = xf.pow(new org.bytedeco.pytorch.Scalar(2.0));
                Tensor var = sq.mean(new long[] {-1}, true, new org.bytedeco.pytorch.ScalarTypeOptional());
                Tensor inv = var.add_(new org.bytedeco.pytorch.Scalar(eps)).rsqrt_();
                Tensor normed = xf.mul(inv);
                Tensor back = upcast ? normed.to(in) : null) {
            return param("weight").mul(back != null ? back : normed);
        } finally {
            if (upcast) {
                xf.close();
            }
        }
    }
}
