package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
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
import dev.peft4j.kernels.Quantization;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.BaseTunerLayer;
import java.util.ArrayList;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A mixed batch (one adapter per row, PEFT's adapter_names) through the grouped decode projections: each layer hands
 * out its decode state with the rows' adapter index, the q/k/v group and the gated MLP input run in one group call,
 * and each output equals the layer's own mixed-batch forward bit for bit (bfloat16, float32, and an int8 / int4
 * quantized base); each row equals that row run alone on its adapter (rows on __base__ the base layer's product),
 * which fails when the index is ignored (two adapters of different weights, every adapter on every row).
 */
class MixedDecodeGroupTest {
    @AfterEach
    void restore() {
        DecodeKernels.setEnabled(true);
        DecodeKernels.setGrouped(true);
        DecodeKernels.Switch.MIXED_GROUP.set(true);
        Kernels.setActiveIsa(Kernels.bestIsa());
    }

    @org.junit.jupiter.api.Test
    void theMixedGroupSwitchDecidesWhetherAMixedBatchHandsOutItsDecodeState() {
        assertEquals("peft4j.decode.mixedGroup", DecodeKernels.Switch.MIXED_GROUP.property());
        try (PointerScope scope = new PointerScope();
                LlamaForCausalLM m = NativeDecodeTest.tinyLlama(ScalarType.Float, "", 33);
                InferenceMode im = new InferenceMode()) {
            m.addAdapter(lora(4, "q_proj"), "a");
            Module q = part(m, "self_attn.q_proj");
            Tensor x = NativeDecodeTest.randn(9, ScalarType.Float, 2, 1, 64);
            DecodeLinear[] got = new DecodeLinear[2];
            for (int k = 0; k < 2; k++) {
                int kk = k;
                DecodeKernels.Switch.MIXED_GROUP.set(k == 0);
                BaseTunerLayer.withAdapterNames(List.of("a", "__base__"),
                        () -> got[kk] = ((DecodeLinearSource) q).decodeLinear(x));
            }
            assertTrue(got[0] != null, "switch on: the mixed batch's state joins the group");
            assertTrue(got[1] == null, "switch off: the layer runs its own mixed forward");
        }
    }

    private static LoraConfig lora(int r, String... targets) {
        return LoraConfig.builder().r(r).loraAlpha(2 * r).targetModules(targets)
                .initLoraWeights(new InitLoraWeights.Flag(false)).build();
    }

    private static Module part(LlamaForCausalLM m, String name) {
        return m.getSubmodule("model.layers.1." + name);
    }

    private static DecodeLinear[] states(Tensor x, Module... layers) {
        DecodeLinear[] out = new DecodeLinear[layers.length];
        for (int i = 0; i < layers.length; i++) {
            out[i] = ((DecodeLinearSource) layers[i]).decodeLinear(x);
            assertNotNull(out[i], "layer " + i + " has a decode state for the mixed batch");
        }
        return out;
    }

    /** Row i's adapter: a, __base__, b, a, ... */
    private static List<String> names(long rows) {
        String[] cycle = {"a", BaseTunerLayer.BASE_ADAPTER_NAME, "b"};
        List<String> out = new ArrayList<>();
        for (int i = 0; i < rows; i++) {
            out.add(cycle[i % 3]);
        }
        return out;
    }

    /** layer's forward on row i of x alone, on the adapter that row names (the base layer alone for __base__). */
    private static Tensor alone(LlamaForCausalLM m, Module layer, Tensor x, int i, String name) {
        Tensor row = x.narrow(0, i, 1).contiguous();
        if (BaseTunerLayer.BASE_ADAPTER_NAME.equals(name)) {
            Module base = layer instanceof BaseTunerLayer t ? t.baseLayer() : layer;
            return ((Layer) base).forward(row);
        }
        m.setAdapter(name);
        return ((Layer) layer).forward(row);
    }

    /** Checks the q/k/v group and the gated input on a mixed batch against each layer's own forward. */
    private static void checkMixedStep(LlamaForCausalLM m, ScalarType dt, long seed, boolean rowsAlone) {
        Module[] qkv = {part(m, "self_attn.q_proj"), part(m, "self_attn.k_proj"), part(m, "self_attn.v_proj")};
        Module gate = part(m, "mlp.gate_proj");
        Module up = part(m, "mlp.up_proj");
        for (Isa isa : NativeDecodeTest.isas()) {
            Kernels.setActiveIsa(isa);
            for (long rows : new long[] {1, 3, 16}) {
                Tensor x = NativeDecodeTest.randn(seed + rows, dt, rows, 1, 64);
                List<String> names = names(rows);
                m.setAdapter("a");
                Tensor[][] got = new Tensor[1][];
                Tensor[] want = new Tensor[3];
                Tensor[] gatedGot = new Tensor[1];
                Tensor[] gu = new Tensor[2];
                long calls = DecodeKernels.groupCalls();
                BaseTunerLayer.withAdapterNames(names, () -> {
                    got[0] = DecodeKernels.linearGroup(x, states(x, qkv));
                    DecodeLinear[] s = states(x, gate, up);
                    gatedGot[0] = DecodeKernels.gatedLinear(x, s[0], s[1], GateActivation.SILU);
                    for (int i = 0; i < 3; i++) {
                        want[i] = ((Layer) qkv[i]).forward(x);
                    }
                    gu[0] = ((Layer) gate).forward(x).contiguous();
                    gu[1] = ((Layer) up).forward(x).contiguous();
                    return null;
                });
                assertEquals(2, DecodeKernels.groupCalls() - calls, "one group call for q/k/v, one for gate/up");
                String where = isa + ", " + rows + " rows";
                for (int i = 0; i < 3; i++) {
                    assertTrue(got[0][i].equal(want[i]), "layer " + i + ", " + where
                            + ": the mixed group's output is the layer's own mixed forward");
                }
                for (long r = 0; r < rows; r++) {
                    Tensor wantRow = DecodeKernels.actMul(gu[0].narrow(0, r, 1).contiguous(),
                            gu[1].narrow(0, r, 1).contiguous(), GateActivation.SILU);
                    assertTrue(gatedGot[0].narrow(0, r, 1).equal(wantRow), "gated row " + r + ", " + where
                            + ": act(gate)·up of the layers' own mixed forwards");
                }
                if (!rowsAlone) {
                    continue;
                }
                double tol = NativeDecodeTest.tol(dt);
                for (int i = 0; i < 3; i++) {
                    for (int r = 0; r < rows; r++) {
                        Tensor one = alone(m, qkv[i], x, r, names.get(r));
                        double e = NativeDecodeTest.relErr(got[0][i].narrow(0, r, 1), one);
                        assertTrue(e < tol, "layer " + i + " row " + r + " (" + names.get(r) + "), " + where
                                + ": off its own adapter's forward by " + e);
                    }
                }
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"Float", "BFloat16"})
    void aMixedBatchGroupEqualsEachLayersMixedForwardAndEachRowItsAdapter(String dtype) {
        ScalarType dt = ScalarType.valueOf(dtype);
        try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = NativeDecodeTest.tinyLlama(dt, "", 31);
                InferenceMode im = new InferenceMode()) {
            // two adapters of different ranks and weights; k is a plain Linear (no adapters) in the group
            m.addAdapter(lora(4, "q_proj", "v_proj", "gate_proj", "up_proj"), "a");
            m.addAdapter(lora(8, "q_proj", "v_proj", "gate_proj"), "b");
            checkMixedStep(m, dt, 100, true);
            // the index is used: rows a and b swapped change q's rows 0 and 2, not row 1 (the base)
            Module q = part(m, "self_attn.q_proj");
            Tensor x = NativeDecodeTest.randn(7, dt, 3, 1, 64);
            Tensor[] ab = new Tensor[2];
            List<List<String>> orders = List.of(List.of("a", "__base__", "b"), List.of("b", "__base__", "a"));
            for (int k = 0; k < 2; k++) {
                int kk = k;
                BaseTunerLayer.withAdapterNames(orders.get(k), () -> {
                    ab[kk] = DecodeKernels.linearGroup(x, states(x, q))[0];
                    return null;
                });
            }
            assertFalse(ab[0].narrow(0, 0, 1).equal(ab[1].narrow(0, 0, 1)), "row 0 on a differs from it on b");
            assertTrue(ab[0].narrow(0, 1, 1).equal(ab[1].narrow(0, 1, 1)), "the base row is the same");
            // the per-row index is checked against the rows
            DecodeLinear[] s = new DecodeLinear[1];
            BaseTunerLayer.withAdapterNames(orders.get(0), () -> s[0] = states(x, q)[0]);
            Tensor x2 = NativeDecodeTest.randn(8, dt, 2, 1, 64);
            assertThrows(IllegalArgumentException.class, () -> DecodeKernels.linearGroup(x2, s[0]));
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"Float", "BFloat16"})
    void doraStaysRefusedInAMixedBatch(String dtype) {
        ScalarType dt = ScalarType.valueOf(dtype);
        try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = NativeDecodeTest.tinyLlama(dt, "", 33);
                InferenceMode im = new InferenceMode()) {
            m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj").useDora(true)
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build(), "a");
            Module q = part(m, "self_attn.q_proj");
            Tensor x = NativeDecodeTest.randn(9, dt, 2, 1, 64);
            BaseTunerLayer.withAdapterNames(List.of("a", "__base__"), () -> {
                assertEquals(null, ((DecodeLinearSource) q).decodeLinear(x), "no decode state for DoRA");
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ((Layer) q).forward(x));
                assertEquals("Cannot pass `adapter_names` when DoRA is enabled.", e.getMessage());
                return null;
            });
        }
    }

    /** 2 layers, hidden 64, 8 heads of 12 (q 96 outputs, k and v 24), intermediate 96, quantized. */
    private static LlamaForCausalLM quantizedLlama(ScalarType dt, Quantization fmt, long seed) {
        String json = "{\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":97,"
                + "\"hidden_size\":64,\"intermediate_size\":96,\"num_hidden_layers\":2,\"num_attention_heads\":8,"
                + "\"num_key_value_heads\":2,\"head_dim\":12,\"max_position_embeddings\":256,\"rms_norm_eps\":1e-6,"
                + "\"tie_word_embeddings\":false}";
        LlamaForCausalLM m = (LlamaForCausalLM) AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(dt));
        Init.normal(m, 0.25, seed);
        AutoModel.quantize(m, fmt);
        return m;
    }

    @ParameterizedTest
    @CsvSource({"Float, INT8", "BFloat16, INT8", "BFloat16, INT4"})
    void aQuantizedMixedBatchGroupEqualsEachLayersMixedForward(String dtype, String format) {
        ScalarType dt = ScalarType.valueOf(dtype);
        Quantization fmt = Quantization.valueOf(format);
        for (boolean fused : new boolean[] {true, false}) {
            DecodeKernels.setQuantizedLoraFused(fused);
            try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = quantizedLlama(dt, fmt, 41);
                    InferenceMode im = new InferenceMode()) {
                // a and b on every projection of the group: one shared index, one region
                m.addAdapter(lora(4, "q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"), "a");
                m.addAdapter(lora(8, "q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"), "b");
                checkMixedStep(m, dt, 200, fused);
            }
            try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = quantizedLlama(dt, fmt, 43);
                    InferenceMode im = new InferenceMode()) {
                // different adapter sets per projection (k's slots are not q's): one member at a time, same result
                m.addAdapter(lora(4, "q_proj", "v_proj", "up_proj"), "a");
                m.addAdapter(lora(8, "q_proj", "k_proj", "gate_proj"), "b");
                checkMixedStep(m, dt, 300, false);
            }
        }
        DecodeKernels.setQuantizedLoraFused(true);
    }
}
