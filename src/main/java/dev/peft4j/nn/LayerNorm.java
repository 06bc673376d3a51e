package dev.peft4j.nn;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;

/** {@code torch.nn.LayerNorm} over the last dimension, with weight and bias. */
public final class LayerNorm extends Module implements Layer {
    private final long dim;
    private final double eps;

    /**
     * A norm over a last dimension of size {@code dim}, with {@code eps} added to the variance; weight and bias made by
     * {@code init}.
     */
    public LayerNorm(long dim, double eps, Init init) {
        this.dim = dim;
        this.eps = eps;
        registerParameter("weight", init.empty(dim), true);
        registerParameter("bias", init.empty(dim), true);
    }

    /** The value added to the variance. */
    public double eps() {
        return eps;
    }

    @Override
    public Tensor forward(Tensor x) {
        if (x.is_meta()) {
            // libtorch has no meta kernel for layer_norm's path there: the same shapes from its definition
            Tensor mean = x.mean(new long[] {-1}, true, new org.bytedeco.pytorch.ScalarTypeOptional());
            Tensor c = x.sub(mean);
            Tensor var = c.mul(c).mean(new long[] {-1}, true, new org.bytedeco.pytorch.ScalarTypeOptional());
            return c.mul(var.add(new org.bytedeco.pytorch.Scalar(eps)).rsqrt()).mul(param("weight")).add(param("bias"));
        }
        try (TensorOptional w = new TensorOptional(param("weight")); TensorOptional b = new TensorOptional(param("bias"))) {
            return torch.layer_norm(x, new long[] {dim}, w, b, eps, false);
        }
    }
}
