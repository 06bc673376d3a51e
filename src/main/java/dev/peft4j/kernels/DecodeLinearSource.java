package dev.peft4j.kernels;

import org.bytedeco.pytorch.Tensor;

/**
 * A layer whose inference forward on a decode-sized input is exactly one {@link DecodeLinear}'s: the decode step
 * asks its projections for them to run several in one parallel region ({@link DecodeKernels#linearGroup}).
 */
public interface DecodeLinearSource {
    /**
     * The native state whose forward equals this layer's {@code forward(x)} now, or null when {@code x} must take
     * {@code forward} (autograd on, too many rows, another dtype or device, a path the state does not cover). Valid
     * until the layer's adapters, weights or activation change.
     */
    DecodeLinear decodeLinear(Tensor x);
}
