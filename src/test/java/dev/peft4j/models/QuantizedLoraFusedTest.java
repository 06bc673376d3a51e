package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.kernels.DecodeKernels;
import dev.peft4j.kernels.DecodeLinear;
import dev.peft4j.kernels.DecodeLinearSource;
import dev.peft4j.kernels.Isa;
import dev.peft4j.kernels.Kernels;
import dev.peft4j.kernels.Quantization;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.QuantizedLinear;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.lora.LoraLayer;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * LoRA fused into the quantized decode product ({@link DecodeKernels#quantizedLoraFused()}): a LoRA layer's forward
 * on a quantized base at decode sizes equals the separate path (the quantized product, then the delta in place)
 * within float rounding, on every ISA level; runs as one adapted layer call and no group call; a mixed batch's rows
 * each equal, bit for bit, the row of a batch run with that row's adapter alone (the base's for {@code __base__});
 * a row slot is refused for a dense state; and a quantized Llama's one-token steps give logits within rounding of the
 * separate path's.
 */
class QuantizedLoraFusedTest {
    @AfterEach
    void restore() {
        DecodeKernels.setQuantizedLoraFused(true);
        DecodeKernels.setGrouped(true);
        Kernels.setActiveIsa(Kernels.bestIsa());
    }

    /** 2 layers, hidden 64, 8 heads of 12 (q 96 outputs: 6 panels), k and v 24 (a padded panel), relu MLP of 96. */
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

    private static LoraConfig lora(int r, String... targets) {
        return LoraConfig.builder().r(r).loraAlpha(2 * r).targetModules(targets)
                .initLoraWeights(new InitLoraWeights.Flag(false)).build();
    }

    /**
     * max over elements of |fused − separate| / tol. float32: 1e-5·(1 + |separate|). bfloat16: the separate path
     * rounds the base to bf16 before adding the delta and rounds the sum again (on AVX-512 BF16 it also rounds x·Aᵀ to
     * bf16), the fused one rounds the sum once: tol = 2^-7·(|separate| + |base|) + 2^-7·max|separate − base|.
     */
    private static double worst(Tensor fused, Tensor separate, Tensor base, boolean bf16) {
        Tensor f = fused.to(ScalarType.Double);
        Tensor s = separate.to(ScalarType.Double);
        Tensor b = base.to(ScalarType.Double);
        Tensor diff = f.sub(s).abs();
        Tensor tol;
        if (bf16) {
            double delta = s.sub(b).abs().max().item_double();
            tol = s.abs().add(b.abs()).mul(new org.bytedeco.pytorch.Scalar(Math.scalb(1.0, -7)))
                    .add(new org.bytedeco.pytorch.Scalar(Math.scalb(delta, -7) + 1e-12));
        } else {
            tol = s.abs().mul(new org.bytedeco.pytorch.Scalar(1e-5)).add(new org.bytedeco.pytorch.Scalar(1e-5));
        }
        return diff.div(tol).max().item_double();
    }

    @ParameterizedTest
    @CsvSource({"Float,INT8", "Float,INT4", "BFloat16,INT8", "BFloat16,INT4"})
    void aLoraLayerOnAQuantizedBaseRunsFusedWithinRoundingOfTheSeparatePath(String dtype, String format) {
        ScalarType dt = ScalarType.valueOf(dtype);
        boolean bf16 = dt == ScalarType.BFloat16;
        try (PointerScope scope = new PointerScope();
                LlamaForCausalLM m = quantizedLlama(dt, Quantization.valueOf(format), 41)) {
            m.peftAdapters().seed(5);
            m.addAdapter(lora(4, "q_proj", "v_proj", "o_proj"), "a");
            m.peftAdapters().seed(6);
            m.addAdapter(lora(20, "q_proj"), "b"); // rank 20: past one 16-rank block of the expand's transpose
            LoraLayer q = (LoraLayer) m.getSubmodule("model.layers.1.self_attn.q_proj");
            QuantizedLinear base = (QuantizedLinear) q.baseLayer();
            try (InferenceMode im = new InferenceMode()) {
                for (Isa isa : NativeDecodeTest.isas()) {
                    Kernels.setActiveIsa(isa);
                    for (String adapter : List.of("a", "b")) {
                        m.setAdapter(adapter);
                        for (long rows : new long[] {1, 5, 16}) {
                            Tensor x = NativeDecodeTest.randn(50 + rows, dt, rows, 1, 64);
                            DecodeKernels.setQuantizedLoraFused(true);
                            long layerCalls = Kernels.layerCalls();
                            long groupCalls = DecodeKernels.groupCalls();
                            Tensor fused = q.forward(x);
                            assertEquals(1, Kernels.layerCalls() - layerCalls, "one adapted layer call");
                            assertEquals(0, DecodeKernels.groupCalls() - groupCalls, "a layer's own call, no group");
                            DecodeKernels.setQuantizedLoraFused(false);
                            Tensor separate = q.forward(x);
                            Tensor b = base.forward(x);
                            double w = worst(fused, separate, b, bf16);
                            assertTrue(w <= 1.0, isa + ", adapter " + adapter + ", " + rows + " rows: " + w
                                    + " of the tolerance between fused and separate");
                            // the group of one is the layer's own forward
                            DecodeKernels.setQuantizedLoraFused(true);
                            DecodeLinear s = ((DecodeLinearSource) q).decodeLinear(x);
                            assertTrue(DecodeKernels.linearGroup(x, s)[0].equal(fused), isa + ", " + rows
                                    + " rows: the grouped state gives the layer's forward");
                        }
                    }
                    // a mixed batch: row 0 on a, row 1 on b, row 2 on the base alone
                    Tensor x3 = NativeDecodeTest.randn(77, dt, 3, 1, 64);
                    Tensor mixed = BaseTunerLayer.withAdapterNames(List.of("a", "b", "__base__"), () -> q.forward(x3));
                    m.setAdapter("a");
                    Tensor onA = q.forward(x3);
                    m.setAdapter("b");
                    Tensor onB = q.forward(x3);
                    Tensor plain = base.forward(x3);
                    assertTrue(mixed.narrow(0, 0, 1).equal(onA.narrow(0, 0, 1)), isa + ": mixed row 0 is adapter a's");
                    assertTrue(mixed.narrow(0, 1, 1).equal(onB.narrow(0, 1, 1)), isa + ": mixed row 1 is adapter b's");
                    assertTrue(mixed.narrow(0, 2, 1).equal(plain.narrow(0, 2, 1)), isa + ": mixed row 2 is the base's");
                    assertTrue(!onA.equal(plain), "the adapter changes the output");
                }
                // a row slot is for a quantized state only
                Tensor x = NativeDecodeTest.randn(3, dt, 2, 64);
                try (dev.peft4j.nn.Linear dense = new dev.peft4j.nn.Linear(64, 8, false, Init.cpu(dt))) {
                    DecodeLinear d = dense.decodeLinear(x);
                    assertThrows(IllegalArgumentException.class, () -> DecodeKernels.linear(x, d, new int[] {0, -1}));
                }
                m.setAdapter("a");
                DecodeLinear s = ((DecodeLinearSource) q).decodeLinear(x);
                assertThrows(IllegalArgumentException.class, () -> DecodeKernels.linear(x, s, new int[] {1, 0}),
                        "adapter index 1 of a state holding one adapter");
            }
        }
    }

    @ParameterizedTest
    @CsvSource({"Float,INT8", "Float,INT4", "BFloat16,INT8", "BFloat16,INT4"})
    void aQuantizedLlamaStepWithLoraIsWithinRoundingOfTheSeparatePath(String dtype, String format) {
        ScalarType dt = ScalarType.valueOf(dtype);
        try (PointerScope scope = new PointerScope();
                LlamaForCausalLM m = quantizedLlama(dt, Quantization.valueOf(format), 43)) {
            m.addAdapter(lora(8, "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"));
            Tensor[] logits = new Tensor[2];
            for (int on = 0; on < 2; on++) {
                DecodeKernels.setQuantizedLoraFused(on == 1);
                long groups = DecodeKernels.groupCalls();
                logits[on] = steps(m);
                assertEquals(4 * 2 * 2, DecodeKernels.groupCalls() - groups, "grouped projections");
            }
            m.disableAdapters();
            Tensor base = steps(m);
            m.enableAdapters();
            double err = NativeDecodeTest.relErr(logits[1], logits[0]);
            double effect = NativeDecodeTest.relErr(logits[0], base);
            if (dt == ScalarType.Float) {
                assertTrue(err <= 1e-5, "fused vs separate logits: " + err);
            } else {
                // bf16: the paths round differently at every adapted layer, and a last-bit change of a layer's output
                // can move the next layer's int8 activation quantization by a step: only far below the LoRA's effect
                assertTrue(err <= 0.25 * effect, "fused vs separate logits: " + err + ", LoRA vs base " + effect);
            }
        }
    }

    /** A 5-token prompt in slot 1 and a 3-token one in slot 0, then 4 one-token steps of both: their logits. */
    private static Tensor steps(LlamaForCausalLM m) {
        int[] slots = {1, 0};
        long[] past = {5, 3};
        try (InferenceMode im = new InferenceMode(); var cache = m.newSlotCache(2, 16)) {
            m.forwardSlots(NativeDecodeTest.prompt(60, 1, 5), cache, new int[] {1}, new long[] {0}).close();
            m.forwardSlots(NativeDecodeTest.prompt(61, 1, 3), cache, new int[] {0}, new long[] {0}).close();
            org.bytedeco.pytorch.TensorVector tv = new org.bytedeco.pytorch.TensorVector();
            for (int s = 0; s < 4; s++) {
                tv.push_back(m.forwardSlots(NativeDecodeTest.prompt(70 + s, 2, 1), cache, slots, past));
                past[0]++;
                past[1]++;
            }
            return torch.stack(tv);
        }
    }
}
