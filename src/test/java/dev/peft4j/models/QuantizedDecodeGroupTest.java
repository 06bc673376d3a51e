package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.kernels.DecodeKernels;
import dev.peft4j.kernels.DecodeKernels.GateActivation;
import dev.peft4j.kernels.DecodeLinear;
import dev.peft4j.kernels.DecodeLinearSource;
import dev.peft4j.kernels.Isa;
import dev.peft4j.kernels.Kernels;
import dev.peft4j.kernels.Quantization;
import dev.peft4j.kernels.QuantizedWeight;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.QuantizedLinear;
import dev.peft4j.tuners.lora.LoraLayer;
import java.util.ArrayList;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The grouped projections of the native decode step on quantized Linears: x quantized once for the group and every
 * member's panels in one region equal each layer's own forward bit for bit (int8 and int4, plain and with LoRA on the
 * quantized base, output widths that are not a multiple of the 16-row panel, with a bias), on every ISA level; the
 * gated MLP input equals the activation and product of the layers' own outputs bit for bit; and a quantized tiny
 * Llama's one-token steps give the same logits with the group on and off, the group having run.
 */
class QuantizedDecodeGroupTest {
    @AfterEach
    void restore() {
        DecodeKernels.setEnabled(true);
        DecodeKernels.setGrouped(true);
        Kernels.setActiveIsa(Kernels.bestIsa());
    }

    /** 2 layers, hidden 64, 8 heads of 12 (q 96 outputs, k and v 24: not a multiple of 16), intermediate 96, relu. */
    private static LlamaForCausalLM quantizedLlama(ScalarType dt, Quantization fmt, long seed) {
        String json = "{\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":97,"
                + "\"hidden_size\":64,\"intermediate_size\":96,\"num_hidden_layers\":2,\"num_attention_heads\":8,"
                + "\"num_key_value_heads\":2,\"head_dim\":12,\"max_position_embeddings\":256,\"rms_norm_eps\":1e-6,"
                + "\"hidden_act\":\"relu\",\"tie_word_embeddings\":false}";
        LlamaForCausalLM m = (LlamaForCausalLM) AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(dt));
        Init.normal(m, 0.25, seed);
        AutoModel.quantize(m, fmt);
        return m;
    }

    private static void addLora(LlamaForCausalLM m, String... targets) {
        m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules(targets)
                .initLoraWeights(new InitLoraWeights.Flag(false)).build());
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
    @CsvSource({"Float,INT8", "Float,INT4", "BFloat16,INT8", "BFloat16,INT4"})
    void aQuantizedGroupEqualsEachLayersOwnForwardBitForBit(String dtype, String format) {
        ScalarType dt = ScalarType.valueOf(dtype);
        Quantization fmt = Quantization.valueOf(format);
        try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = quantizedLlama(dt, fmt, 31);
                Linear dense = new Linear(64, 40, true, Init.cpu(dt))) {
            addLora(m, "q_proj", "v_proj", "gate_proj");
            Init.normal(dense, 0.25, 32);
            // a plain quantized Linear of 40 outputs (2.5 panels) with a bias
            QuantizedLinear extra = QuantizedLinear.quantize(dense, fmt, "extra");
            Module q = part(m, "self_attn.q_proj");
            Module k = part(m, "self_attn.k_proj");
            Module v = part(m, "self_attn.v_proj");
            assertTrue(q instanceof LoraLayer && ((LoraLayer) q).baseLayer() instanceof QuantizedLinear,
                    "q_proj is LoRA on a quantized base");
            assertTrue(k instanceof QuantizedLinear, "k_proj is a plain quantized Linear");
            Module[] group = {q, k, v, extra};
            Module gate = part(m, "mlp.gate_proj"); // adapted
            Module up = part(m, "mlp.up_proj"); // plain
            try (InferenceMode im = new InferenceMode()) {
                for (Isa isa : NativeDecodeTest.isas()) {
                    Kernels.setActiveIsa(isa);
                    String path = isa + " (" + QuantizedWeight.activePath() + ")";
                    for (long rows : new long[] {1, 3, 16}) {
                        Tensor x = NativeDecodeTest.randn(40 + rows, dt, rows, 1, 64);
                        long calls = DecodeKernels.groupCalls();
                        Tensor[] got = DecodeKernels.linearGroup(x, states(x, group));
                        assertEquals(1, DecodeKernels.groupCalls() - calls);
                        for (int i = 0; i < group.length; i++) {
                            Tensor want = ((Layer) group[i]).forward(x);
                            assertTrue(got[i].equal(want), "layer " + i + ", " + path + ", " + rows
                                    + " rows: the group's output is the layer's own");
                        }
                        Tensor g = ((Layer) gate).forward(x);
                        Tensor u = ((Layer) up).forward(x);
                        DecodeLinear[] s = states(x, gate, up);
                        Tensor want = rowwiseActMul(g, u, GateActivation.SILU);
                        assertTrue(DecodeKernels.gatedLinear(x, s[0], s[1], GateActivation.SILU).equal(want),
                                path + ", " + rows + " rows: gated input (LoRA gate) is act(gate)·up of their own");
                        DecodeLinear gs = ((DecodeLinearSource) extra).decodeLinear(x);
                        Tensor ex = ((Layer) extra).forward(x);
                        // extra (40) as a fused gate_up of 2·20: its first half the gate
                        Tensor wantFused = rowwiseActMul(ex.narrow(-1, 0, 20).contiguous(),
                                ex.narrow(-1, 20, 20).contiguous(), GateActivation.GELU_TANH);
                        assertTrue(DecodeKernels.gatedLinear(x, gs, null, GateActivation.GELU_TANH).equal(wantFused),
                                path + ", " + rows + " rows: fused gate_up");
                        // both plain: the one native call (projections, then the activation and product)
                        Tensor uq = ((Layer) up).forward(x);
                        assertTrue(DecodeKernels.gatedLinear(x, states(x, up)[0], states(x, up)[0],
                                GateActivation.SILU).equal(rowwiseActMul(uq, uq, GateActivation.SILU)),
                                path + ", " + rows + " rows: plain quantized gate and up");
                    }
                }
                // 17 rows: no decode state
                Tensor big = NativeDecodeTest.randn(3, dt, 17, 64);
                for (Module l : group) {
                    assertNull(((DecodeLinearSource) l).decodeLinear(big), "17 rows have no decode state");
                }
            }
            extra.close();
        }
    }

    @ParameterizedTest
    @CsvSource({"Float,INT8", "Float,INT4", "BFloat16,INT4"})
    void aQuantizedLlamaStepIsTheSameWithTheGroupOnAndOff(String dtype, String format) {
        ScalarType dt = ScalarType.valueOf(dtype);
        Quantization fmt = Quantization.valueOf(format);
        try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = quantizedLlama(dt, fmt, 33)) {
            addLora(m, "q_proj", "v_proj", "o_proj", "gate_proj", "down_proj");
            Tensor[] logits = new Tensor[2];
            for (int on = 0; on < 2; on++) {
                DecodeKernels.setGrouped(on == 1);
                long groups = DecodeKernels.groupCalls();
                long attention = DecodeKernels.attentionCalls();
                logits[on] = steps(m);
                // 4 one-token steps of 2 layers on the native path; grouped: q/k/v and gate/up on each
                assertEquals(4 * 2, DecodeKernels.attentionCalls() - attention, "native one-token steps");
                assertEquals(on == 1 ? 4 * 2 * 2 : 0, DecodeKernels.groupCalls() - groups, "grouped projections");
            }
            assertTrue(logits[1].equal(logits[0]), "the step's logits are the same with the group on and off");
        }
    }

    /** {@link DecodeKernels#actMul} on each row of g and u on its own, as the gated call runs it. */
    private static Tensor rowwiseActMul(Tensor g, Tensor u, GateActivation act) {
        long rows = g.numel() / g.size(-1);
        Tensor g2 = g.reshape(rows, g.size(-1));
        Tensor u2 = u.reshape(rows, u.size(-1));
        TensorVector tv = new TensorVector();
        for (long r = 0; r < rows; r++) {
            tv.push_back(DecodeKernels.actMul(g2.narrow(0, r, 1).contiguous(), u2.narrow(0, r, 1).contiguous(), act));
        }
        return torch.cat(tv).reshape(g.shape());
    }

    /** A 5-token prompt in slot 1 and a 3-token one in slot 0, then 4 one-token steps of both: their logits. */
    private static Tensor steps(LlamaForCausalLM m) {
        int[] slots = {1, 0};
        long[] past = {5, 3};
        try (InferenceMode im = new InferenceMode(); var cache = m.newSlotCache(2, 16)) {
            m.forwardSlots(NativeDecodeTest.prompt(60, 1, 5), cache, new int[] {1}, new long[] {0}).close();
            m.forwardSlots(NativeDecodeTest.prompt(61, 1, 3), cache, new int[] {0}, new long[] {0}).close();
            List<Tensor> out = new ArrayList<>();
            for (int s = 0; s < 4; s++) {
                out.add(m.forwardSlots(NativeDecodeTest.prompt(70 + s, 2, 1), cache, slots, past));
                past[0]++;
                past[1]++;
            }
            TensorVector tv = new TensorVector();
            out.forEach(tv::push_back);
            return torch.stack(tv);
        }
    }
}
