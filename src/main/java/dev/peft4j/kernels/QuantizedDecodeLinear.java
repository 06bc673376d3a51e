package dev.peft4j.kernels;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The decode state of a quantized Linear ({@link QuantizedWeight}'s panels and the layer's bias), with the LoRA
 * delta of adapters on it when there are any: {@link DecodeKernels#linearGroup}, {@link DecodeKernels#gatedLinear} and
 * {@link DecodeKernels#linear} quantize x once for all their quantized members and run every member's panels in one
 * parallel region, each member's delta fused into its panels ({@link DecodeKernels#quantizedLoraFused()}; off: added
 * in place after the region, as {@link LoraDelta#apply} does after the layer's own product).
 */
final class QuantizedDecodeLinear extends DecodeLinear {
    final QuantizedWeight weight;
    final Tensor bias;
    final ScalarType dtype;
    final LoraDelta.Slots delta;

    QuantizedDecodeLinear(QuantizedWeight weight, Tensor bias, ScalarType dtype, LoraDelta.Slots delta) {
        this.weight = weight;
        this.bias = bias;
        this.dtype = dtype;
        this.delta = delta;
    }

    @Override
    long handle() {
        throw new UnsupportedOperationException("a quantized Linear has no adapted-linear handle");
    }

    @Override
    ScalarType dtype() {
        return dtype;
    }

    @Override
    long inFeatures() {
        return weight.inFeatures();
    }

    @Override
    long outFeatures() {
        return weight.outFeatures();
    }

    @Override
    boolean countsLayerCall() {
        return false; // the layer's own forward counts none; its LoRA delta counts as LoraDelta#apply does
    }

    @Override
    int slotCount() {
        return delta == null ? 0 : delta.a.length;
    }
}
