package dev.peft4j.models;

import dev.peft4j.kernels.DecodeKernels;
import dev.peft4j.kernels.DecodeLinear;
import dev.peft4j.kernels.DecodeLinearSource;
import dev.peft4j.nn.Activation;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.Module;
import org.bytedeco.pytorch.Tensor;

/**
 * The projections of a native decode step that share an input, run together: a layer's q, k, v in one parallel
 * region, its gate and up in one with the activation and product fused after it. Each layer hands out its decode
 * state ({@link DecodeLinearSource}); when one cannot (a quantized base, IA3, a mixed batch, ...) the group falls back
 * to each layer's own forward, with the same result.
 */
final class DecodeProjections {
    private DecodeProjections() {}

    /** {@code layers[i].forward(h)} for each, contiguous: in one region when every layer has a decode state. */
    static Tensor[] project(Tensor h, Module... layers) {
        DecodeLinear[] states = states(h, layers);
        if (states != null) {
            return DecodeKernels.linearGroup(h, states);
        }
        Tensor[] out = new Tensor[layers.length];
        for (int i = 0; i < layers.length; i++) {
            out[i] = RopeDecoderStack.contiguous(((Layer) layers[i]).forward(h));
        }
        return out;
    }

    /**
     * {@code act(gate(h)) · up(h)} ({@code up == null}: {@code gate} is a fused gate_up projection, the gate's the
     * first half of its outputs) on the native gated kernel, or null when a layer has no decode state or the
     * activation is not one it knows: the caller then runs its libtorch forward.
     */
    static Tensor gated(Tensor h, Module gate, Module up, Module act) {
        if (!(act instanceof Activation a)) {
            return null;
        }
        DecodeLinear[] states = up == null ? states(h, gate) : states(h, gate, up);
        if (states == null) {
            return null;
        }
        DecodeKernels.GateActivation kind = switch (a.kind()) {
            case SILU -> DecodeKernels.GateActivation.SILU;
            case GELU -> DecodeKernels.GateActivation.GELU;
            case GELU_TANH -> DecodeKernels.GateActivation.GELU_TANH;
            case RELU -> DecodeKernels.GateActivation.RELU;
        };
        return DecodeKernels.gatedLinear(h, states[0], up == null ? null : states[1], kind);
    }

    private static DecodeLinear[] states(Tensor h, Module... layers) {
        if (!DecodeKernels.grouped() || !h.is_contiguous()) {
            return null;
        }
        DecodeLinear[] states = new DecodeLinear[layers.length];
        for (int i = 0; i < layers.length; i++) {
            if (!(layers[i] instanceof DecodeLinearSource s) || (states[i] = s.decodeLinear(h)) == null) {
                return null;
            }
        }
        return states;
    }
}
