package dev.peft4j.nn;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * transformers' {@code Conv1D} (GPT-2): a linear layer whose weight is stored transposed, {@code (in, out)}:
 * {@code y = x·W + b}. Adapters treat it as {@code fan_in_fan_out=True}.
 */
public final class Conv1D extends Module implements Layer {
    private final long inFeatures;
    private final long outFeatures;

    /** transformers' argument order: {@code Conv1D(nf = out, nx = in)}. */
    public Conv1D(long outFeatures, long inFeatures, Init init) {
        this.inFeatures = inFeatures;
        this.outFeatures = outFeatures;
        registerParameter("weight", init.empty(inFeatures, outFeatures), true);
        registerParameter("bias", init.empty(outFeatures), true);
    }

    /** The input width. */
    public long inFeatures() {
        return inFeatures;
    }

    /** The output width. */
    public long outFeatures() {
        return outFeatures;
    }

    /** The weight {@code (in, out)}, owned by this module. */
    public Tensor weight() {
        return param("weight");
    }

    /** The current bias, {@code (out)}; owned by this module, do not close it. */
    public Tensor bias() {
        return param("bias");
    }

    @Override
    public Tensor forward(Tensor x) {
        // torch.addmm(bias, x.view(-1, in), weight), reshaped back: the same arithmetic as transformers
        long[] shape = x.shape();
        long[] outShape = shape.clone();
        outShape[outShape.length - 1] = outFeatures;
        if (Linear.isSingleFloatRow(x, inFeatures, param("weight"))) { // a decode step: gemv, see Linear
            try (Tensor flat = x.reshape(inFeatures); Tensor wt = param("weight").t(); Tensor y = wt.mv(flat)) {
                return y.add_(param("bias")).view(outShape);
            }
        }
        try (Tensor flat = x.reshape(-1, inFeatures); Tensor y = torch.addmm(param("bias"), flat, param("weight"))) {
            return y.view(outShape);
        }
    }
}
