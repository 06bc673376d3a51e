package dev.peft4j.kernels;

import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The native state of one Linear layer on the decode kernel ({@link NativeGemv} for a plain Linear,
 * {@link FusedLoraLinear} for one with adapters, {@link QuantizedWeight#decodeLinear} for a quantized one), as a
 * layer hands it out for {@link DecodeKernels#linearGroup} and {@link DecodeKernels#gatedLinear}, which run several
 * layers over the same input in one parallel region. Only this package's classes are such states.
 */
public abstract class DecodeLinear {
    DecodeLinear() {}

    /** The native handle; throws when closed. */
    abstract long handle();

    /** float32 or bfloat16: the weight's, the input's and the output's. */
    abstract ScalarType dtype();

    abstract long inFeatures();

    abstract long outFeatures();

    /** Whether a forward counts as a fused adapted layer call ({@link Kernels#layerCalls()}). */
    abstract boolean countsLayerCall();
}
