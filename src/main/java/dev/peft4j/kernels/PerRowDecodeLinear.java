package dev.peft4j.kernels;

import org.bytedeco.pytorch.global.torch.ScalarType;

/** A decode state with a mixed batch's per-row adapter index ({@link DecodeLinear#perRow}). */
final class PerRowDecodeLinear extends DecodeLinear {
    final DecodeLinear state;
    final int[] rowSlot;

    PerRowDecodeLinear(DecodeLinear state, int[] rowSlot) {
        this.state = state;
        this.rowSlot = rowSlot;
    }

    @Override
    long handle() {
        return state.handle();
    }

    @Override
    ScalarType dtype() {
        return state.dtype();
    }

    @Override
    long inFeatures() {
        return state.inFeatures();
    }

    @Override
    long outFeatures() {
        return state.outFeatures();
    }

    @Override
    boolean countsLayerCall() {
        return state.countsLayerCall();
    }

    @Override
    int slotCount() {
        return state.slotCount();
    }
}
