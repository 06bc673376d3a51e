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

    /** How many adapters a per-row index may name ({@link #perRow}): none unless the state has LoRA adapters. */
    int slotCount() {
        return 0;
    }

    /**
     * This state for a mixed batch (PEFT's {@code adapter_names}): row {@code i} of the input ({@code [rows, in]}
     * flattened) gets only adapter {@code rowSlot[i]} of this state's adapters, or none for {@code -1}, as
     * {@link FusedLoraLinear#forward(org.bytedeco.pytorch.Tensor, int[])} and {@link DecodeKernels#linear} take it.
     * {@link DecodeKernels#linearGroup} and {@link DecodeKernels#gatedLinear} run such members in their group; the
     * index is checked there against the input's rows. {@code rowSlot} is not copied: do not change it while in use.
     */
    public final DecodeLinear perRow(int[] rowSlot) {
        if (this instanceof PerRowDecodeLinear) {
            throw new IllegalArgumentException("this state already carries a per-row adapter index");
        }
        return new PerRowDecodeLinear(this, java.util.Objects.requireNonNull(rowSlot, "rowSlot"));
    }
}
