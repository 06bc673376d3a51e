package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.kernels.DecodeKernels;
import dev.peft4j.kernels.DecodeKernels.GateActivation;
import dev.peft4j.kernels.DecodeLinear;
import dev.peft4j.kernels.DecodeLinearSource;
import dev.peft4j.kernels.Isa;
import dev.peft4j.kernels.Kernels;
import dev.peft4j.nn.Activation;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.Module;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The grouped projections of the native decode step: a layer's q, k, v run in one parallel region equal each
 * layer's own forward bit for bit (plain Linears, LoRA layers, disabled adapters), on every ISA level; the gated MLP
 * input {@code act(gate(x))·up(x)} in one native call equals libtorch's activation then multiplication (float32 to
 * summation order, bfloat16 within one ulp), for every activation, with two projections or a fused gate_up one; and
 * inputs that do not fit are refused.
 */
class DecodeGroupTest {
    @AfterEach
    void restore() {
        DecodeKernels.setEnabled(true);
        Kernels.setActiveIsa(Kernels.bestIsa());
    }

    private static LlamaForCausalLM loraLlama(ScalarType dt) {
        LlamaForCausalLM m = NativeDecodeTest.tinyLlama(dt, "", 21);
        m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj", "v_proj", "gate_proj")
                .initLoraWeights(new InitLoraWeights.Flag(false)).build());
        return m;
    }

    private static Module part(LlamaForCausalLM m, String name) {
        return m.getSubmodule("model.layers.1." + name);
    }

    private static DecodeLinear[] states(Tensor x, Module... layers) {
        DecodeLinear[] out = new DecodeLinear[layers.length];
        for (int i = 0; i < layers.length; i++) {
            out[i] = ((DecodeLinearSource) layers[i]).decodeLinear(x);
            assertNotNull(out[i], "layer " + i + " has a decode state for x");
        }
        return out;
    }

    @ParameterizedTest
    @ValueSource(strings = {"Float", "BFloat16"})
    void aGroupEqualsEachLayersOwnForwardBitForBit(String dtype) {
        ScalarType dt = ScalarType.valueOf(dtype);
        try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = loraLlama(dt);
                InferenceMode im = new InferenceMode()) {
            // q and v adapted (the fused kernel), k a plain Linear (the GEMV)
            Module[] qkv = {part(m, "self_attn.q_proj"), part(m, "self_attn.k_proj"), part(m, "self_attn.v_proj")};
            for (boolean enabled : new boolean[] {true, false}) {
                if (enabled) {
                    m.enableAdapters();
                } else {
                    m.disableAdapters();
                }
                for (Isa isa : NativeDecodeTest.isas()) {
                    Kernels.setActiveIsa(isa);
                    for (long rows : new long[] {1, 3, 16}) {
                        Tensor x = NativeDecodeTest.randn(40 + rows, dt, rows, 1, 64);
                        long calls = DecodeKernels.groupCalls();
                        Tensor[] got = DecodeKernels.linearGroup(x, states(x, qkv));
                        assertEquals(1, DecodeKernels.groupCalls() - calls);
                        for (int i = 0; i < 3; i++) {
                            Tensor want = ((Layer) qkv[i]).forward(x);
                            assertTrue(got[i].equal(want), "layer " + i + ", adapters " + enabled + ", " + isa + ", "
                                    + rows + " rows: the group's output is the layer's own");
                        }
                    }
                }
            }
            // 17 rows, or autograd on: no decode state, the layer's forward takes libtorch
            m.enableAdapters();
            Tensor big = NativeDecodeTest.randn(3, dt, 17, 64);
            for (Module l : qkv) {
                assertNull(((DecodeLinearSource) l).decodeLinear(big), "17 rows have no decode state");
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"Float", "BFloat16"})
    void theGatedInputEqualsLibtorchsActivationTimesUp(String dtype) {
        ScalarType dt = ScalarType.valueOf(dtype);
        double tol = NativeDecodeTest.tol(dt);
        try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = loraLlama(dt);
                InferenceMode im = new InferenceMode()) {
            Module gate = part(m, "mlp.gate_proj"); // adapted
            Module up = part(m, "mlp.up_proj");
            for (Isa isa : NativeDecodeTest.isas()) {
                Kernels.setActiveIsa(isa);
                for (long rows : new long[] {1, 5}) {
                    Tensor x = NativeDecodeTest.randn(60 + rows, dt, rows, 1, 64).mul(new org.bytedeco.pytorch.Scalar(4));
                    Tensor g = ((Layer) gate).forward(x);
                    Tensor u = ((Layer) up).forward(x);
                    for (Activation.Kind kind : Activation.Kind.values()) {
                        GateActivation act = GateActivation.valueOf(kind.name());
                        Tensor want = new Activation(kind).forward(g).mul(u);
                        DecodeLinear[] s = states(x, gate, up);
                        Tensor got = DecodeKernels.gatedLinear(x, s[0], s[1], act);
                        double e = NativeDecodeTest.relErr(got, want);
                        assertTrue(e < tol, kind + " " + isa + " " + rows + " rows: gated off by " + e);
                        double e2 = NativeDecodeTest.relErr(DecodeKernels.actMul(g, u, act), want);
                        assertTrue(e2 < tol, kind + " " + isa + ": actMul off by " + e2);
                    }
                }
            }
            // a fused gate_up projection: the first half of its outputs is the gate
            try (dev.peft4j.nn.Linear gu = new dev.peft4j.nn.Linear(64, 2 * 112, false, dev.peft4j.nn.Init.cpu(dt))) {
                dev.peft4j.nn.Init.normal(gu, 0.25, 5);
                Tensor x = NativeDecodeTest.randn(70, dt, 2, 1, 64);
                Tensor y = gu.forward(x);
                Tensor want = new Activation(Activation.Kind.GELU_TANH).forward(y.narrow(-1, 0, 112))
                        .mul(y.narrow(-1, 112, 112));
                Tensor got = DecodeKernels.gatedLinear(x, gu.decodeLinear(x), null, GateActivation.GELU_TANH);
                double e = NativeDecodeTest.relErr(got, want);
                assertTrue(e < tol, "fused gate_up off by " + e);
                // refusals: an input of another width, gate and up of different widths
                Tensor narrow = NativeDecodeTest.randn(71, dt, 1, 1, 32);
                DecodeLinear gs = gu.decodeLinear(x);
                assertThrows(IllegalArgumentException.class, () -> DecodeKernels.linearGroup(narrow, gs));
                DecodeLinear[] s = states(x, gate);
                assertThrows(IllegalArgumentException.class,
                        () -> DecodeKernels.gatedLinear(x, s[0], gs, GateActivation.SILU));
                assertThrows(IllegalArgumentException.class, () -> DecodeKernels.linearGroup(
                        NativeDecodeTest.randn(72, dt, 17, 64), gs));
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"Float", "BFloat16"})
    void theLlamaStepGroupsQkvAndTheMlpInputWithLoraOnEveryProjection(String dtype) {
        ScalarType dt = ScalarType.valueOf(dtype);
        try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = NativeDecodeTest.tinyLlama(dt, "", 23)) {
            m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj", "k_proj", "v_proj",
                    "o_proj", "gate_proj", "up_proj", "down_proj").initLoraWeights(new InitLoraWeights.Flag(false))
                    .build());
            long groups = DecodeKernels.groupCalls();
            NativeDecodeTest.assertSlotStepsMatch(m, dt, dt == ScalarType.Float ? 2e-5 : 3e-2);
            // 6 one-token forwards (5 steps, one 1-token prompt) of 3 layers, two groups each (q/k/v, gate/up)
            assertEquals(6 * 3 * 2, DecodeKernels.groupCalls() - groups, "grouped projections on every layer");
        }
    }
}
