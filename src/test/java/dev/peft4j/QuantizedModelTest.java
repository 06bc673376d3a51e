package dev.peft4j;

import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.IA3Config;
import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.kernels.Kernels;
import dev.peft4j.kernels.Quantization;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.QuantizedLinear;
import dev.peft4j.tuners.lora.LoraLayer;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * A Llama whose transformer blocks' Linears are quantized ({@link AutoModel#quantize}): its logits against a
 * reference model computing the kernels' definition in float64, against the float32 model, LoRA and IA3 on top, merge
 * refused, and a QLoRA-style training step.
 */
class QuantizedModelTest {
    @AfterEach
    void restore() {
        Kernels.setFusedLayers(true);
    }

    /** 2 layers, hidden 64 (4 heads of 16, 2 KV heads), intermediate 128, vocab 64: every width a multiple of 32. */
    static PreTrainedModel llama(long seed) {
        String json = "{\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":64,"
                + "\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
                + "\"num_key_value_heads\":2,\"max_position_embeddings\":64,\"rms_norm_eps\":1e-6,"
                + "\"tie_word_embeddings\":false}";
        PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(ScalarType.Float));
        Init.normal(m, 0.1, seed);
        return m;
    }

    static double[] doubles(Tensor t) {
        Tensor c = t.to(ScalarType.Double).contiguous();
        double[] out = new double[(int) c.numel()];
        new DoublePointer(c.data_ptr()).capacity(out.length).get(out);
        return out;
    }

    static double maxAbs(Tensor t) {
        return t.abs().max().item_double();
    }

    static <T> T noGrad(boolean fused, Supplier<T> f) {
        Kernels.setFusedLayers(fused);
        try (NoGradGuard g = new NoGradGuard()) {
            return f.get();
        } finally {
            Kernels.setFusedLayers(true);
        }
    }

    /**
     * The quantized kernel's definition in float64: each row of x quantized per block of 32 to int8 (scale
     * max|x|/127 in float32, C's roundf), times the dequantized weight, plus the bias.
     */
    static final class ReferenceQuantLinear extends Module implements Layer {
        private final double[] w;
        private final long in;
        private final long out;

        ReferenceQuantLinear(QuantizedLinear q) {
            try (Tensor wd = q.dequantizedWeight(ScalarType.Float)) {
                w = doubles(wd);
            }
            in = q.inFeatures();
            out = q.outFeatures();
        }

        @Override
        public Tensor forward(Tensor x) {
            double[] xv = doubles(x);
            long rows = xv.length / in;
            float[] y = new float[(int) (rows * out)];
            double[] xq = new double[(int) in];
            for (int r = 0; r < rows; r++) {
                for (int b = 0; b < in / 32; b++) {
                    float amax = 0f;
                    for (int j = 0; j < 32; j++) {
                        amax = Math.max(amax, Math.abs((float) xv[(int) (r * in + b * 32 + j)]));
                    }
                    float d = amax / 127f;
                    float id = d != 0f ? 1f / d : 0f;
                    for (int j = 0; j < 32; j++) {
                        float v = (float) xv[(int) (r * in + b * 32 + j)] * id;
                        xq[b * 32 + j] = Math.signum(v) * Math.floor(Math.abs((double) v) + 0.5) * d;
                    }
                }
                for (int n = 0; n < out; n++) {
                    double s = 0;
                    for (int k = 0; k < in; k++) {
                        s += xq[k] * w[(int) (n * in + k)];
                    }
                    y[(int) (r * out + n)] = (float) s;
                }
            }
            long[] shape = x.shape();
            shape[shape.length - 1] = out;
            return Tensor.create(y, shape);
        }
    }

    @Test
    void quantizedLogitsEqualTheKernelsDefinitionAndStayCloseToTheFloatModel() {
        Tensor x = ids(2, 6, 64, 3);
        double[] rel = new double[2];
        for (Quantization fmt : Quantization.values()) {
            try (PreTrainedModel orig = llama(1); PreTrainedModel q = llama(1); PreTrainedModel ref = llama(1)) {
                List<String> names = AutoModel.quantize(q, fmt);
                assertEquals(14, names.size(), "2 layers x (q, k, v, o, gate, up, down): " + names);
                assertTrue(names.contains("model.layers.1.mlp.down_proj"), names.toString());
                assertFalse(names.contains("lm_head"), "lm_head stays as loaded");
                for (String n : names) {
                    ref.replaceSubmodule(n, new ReferenceQuantLinear((QuantizedLinear) q.getSubmodule(n))).close();
                }
                Tensor lo = noGrad(true, () -> logits(orig, x));
                Tensor lq = noGrad(true, () -> logits(q, x));
                Tensor lr = noGrad(true, () -> logits(ref, x));
                double scale = maxAbs(lo);
                double vsRef = maxAbsDiff(lq, lr);
                double vsFloat = maxAbsDiff(lq, lo);
                rel[fmt.ordinal()] = vsFloat / scale;
                // float32 accumulation order only, through 2 layers (an activation landing on a rounding tie could
                // move one int8 step: still far below the quantization's own effect, asserted below)
                assertTrue(vsRef <= 2e-4 * scale, fmt + ": quantized vs its float64 definition " + vsRef
                        + " (logits up to " + scale + ")");
                assertTrue(vsFloat > 20 * vsRef, fmt + ": the reference must be much closer than the float model ("
                        + vsRef + " vs " + vsFloat + ")");
            }
        }
        // int8 is the finer format, and both stay close to the float32 model's logits
        assertTrue(rel[0] < rel[1], "int8 " + rel[0] + " vs int4 " + rel[1]);
        // measured: int8 0.027, int4 0.25 of the largest logit (random N(0, 0.1) weights, no outlier structure)
        assertTrue(rel[0] < 0.05 && rel[1] < 0.5, "relative logit error int8 " + rel[0] + ", int4 " + rel[1]);
    }

    @Test
    void theHeadQuantizedToo() {
        Tensor x = ids(2, 6, 64, 3);
        try (PreTrainedModel q = llama(1); PreTrainedModel ref = llama(1); PreTrainedModel blocksOnly = llama(1)) {
            List<String> names = AutoModel.quantize(q, Quantization.INT4, Quantization.INT8);
            assertEquals(15, names.size(), "14 block Linears, then lm_head: " + names);
            assertEquals("lm_head", names.get(14));
            QuantizedLinear head = (QuantizedLinear) q.getSubmodule("lm_head");
            assertEquals(Quantization.INT8, head.format());
            assertEquals(Quantization.INT4, ((QuantizedLinear) q.getSubmodule("model.layers.0.mlp.up_proj")).format());
            for (String n : names) {
                ref.replaceSubmodule(n, new ReferenceQuantLinear((QuantizedLinear) q.getSubmodule(n))).close();
            }
            AutoModel.quantize(blocksOnly, Quantization.INT4);
            Tensor lq = noGrad(true, () -> logits(q, x));
            Tensor lr = noGrad(true, () -> logits(ref, x));
            Tensor lb = noGrad(true, () -> logits(blocksOnly, x));
            double scale = maxAbs(lr);
            // the head runs the int8 kernel: equal to its float64 definition, and not to the float head's output
            assertTrue(maxAbsDiff(lq, lr) <= 2e-4 * scale, "vs the float64 definition: " + maxAbsDiff(lq, lr));
            assertTrue(maxAbsDiff(lq, lb) > 20 * maxAbsDiff(lq, lr), "the head must be quantized: "
                    + maxAbsDiff(lq, lb) + " vs " + maxAbsDiff(lq, lr));
        }
        // a head tied to the embedding is refused, naming the tie, before anything is quantized
        String json = "{\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":64,"
                + "\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":1,\"num_attention_heads\":4,"
                + "\"num_key_value_heads\":2,\"max_position_embeddings\":64,\"tie_word_embeddings\":true}";
        try (PreTrainedModel tied = AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(ScalarType.Float))) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> AutoModel.quantize(tied, Quantization.INT8, Quantization.INT8));
            assertTrue(e.getMessage().contains("model.embed_tokens.weight"), e.getMessage());
            assertFalse(tied.getSubmodule("model.layers.0.mlp.up_proj") instanceof QuantizedLinear);
        }
    }

    @Test
    void aQuantizedModelsStateDictLoadsIntoAnotherQuantizedModelAndGivesTheSameLogits() {
        Tensor x = ids(2, 5, 64, 4);
        for (Quantization fmt : Quantization.values()) {
            try (PreTrainedModel a = llama(11); PreTrainedModel b = llama(12)) {
                AutoModel.quantize(a, fmt, Quantization.INT8);
                AutoModel.quantize(b, fmt, Quantization.INT8);
                java.util.Map<String, Tensor> sd = a.stateDict();
                assertTrue(sd.containsKey("model.layers.0.self_attn.q_proj.qpanels")
                        && sd.containsKey("lm_head.qpanel_scales"), "the panel buffers are the state: " + sd.keySet());
                Tensor la = noGrad(true, () -> logits(a, x));
                assertTrue(maxAbsDiff(la, noGrad(true, () -> logits(b, x))) > 0, "two different models first");
                assertTrue(b.loadStateDict(sd).unexpectedKeys().isEmpty());
                assertEquals(0.0, maxAbsDiff(la, noGrad(true, () -> logits(b, x))), fmt + ": bit for bit after loading");
                QuantizedLinear qa = (QuantizedLinear) a.getSubmodule("model.layers.1.mlp.down_proj");
                QuantizedLinear qb = (QuantizedLinear) b.getSubmodule("model.layers.1.mlp.down_proj");
                assertTrue(qa.weight().values().equal(qb.weight().values())
                        && qa.weight().scales().equal(qb.weight().scales()), fmt + ": the same canonical blocks");
            }
        }
    }

    static LoraConfig lora(String... targets) {
        return LoraConfig.builder().r(4).loraAlpha(8).targetModules(targets)
                .initLoraWeights(new InitLoraWeights.Flag(false)).build();
    }

    @Test
    void loraOnAQuantizedBaseIsTheQuantizedBaseOutputPlusTheDelta() {
        for (Quantization fmt : Quantization.values()) {
            try (PreTrainedModel m = llama(2)) {
                AutoModel.quantize(m, fmt);
                Tensor x = ids(2, 5, 64, 4);
                Tensor base = noGrad(true, () -> logits(m, x));
                m.peftAdapters().seed(3);
                m.addAdapter(lora("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), "a");
                m.peftAdapters().seed(4);
                m.addAdapter(lora("q_proj", "v_proj"), "b");
                m.setAdapter("a");
                // one layer: the quantized kernel's output plus s·(x·Aᵀ)·Bᵀ
                LoraLayer layer = (LoraLayer) m.getSubmodule("model.layers.0.mlp.up_proj");
                QuantizedLinear q = (QuantizedLinear) layer.baseLayer();
                Tensor hin = torch.randn(new long[] {3, 4, 64});
                long callsBefore = Kernels.layerCalls();
                Tensor fused = noGrad(true, () -> layer.forward(hin));
                assertTrue(Kernels.layerCalls() > callsBefore, "the LoRA delta ran on the native kernel");
                Map<String, Tensor> p = layer.adapterParameters("a");
                Tensor want = noGrad(true, () -> q.forward(hin).to(ScalarType.Double).add(torch.linear(
                        torch.linear(hin.to(ScalarType.Double), p.get("lora_A.a.weight").to(ScalarType.Double)),
                        p.get("lora_B.a.weight").to(ScalarType.Double)).mul(new org.bytedeco.pytorch.Scalar(
                        layer.scaling("a")))));
                assertTrue(maxAbsDiff(fused.to(ScalarType.Double), want) <= 1e-5 * (1 + maxAbs(want)),
                        fmt + ": base_q + delta, got diff " + maxAbsDiff(fused.to(ScalarType.Double), want));
                // the whole model: fused (native delta) == composed (libtorch ops around the same base)
                Tensor lf = noGrad(true, () -> logits(m, x));
                Tensor lc = noGrad(false, () -> logits(m, x));
                assertTrue(maxAbsDiff(lf, lc) <= 1e-5 * maxAbs(lc), fmt + ": fused vs composed " + maxAbsDiff(lf, lc));
                assertTrue(maxAbsDiff(lf, base) > 1e-3 * maxAbs(base), "the adapter changes the output");
                // a mixed batch: each row as if run with its adapter alone
                Tensor mixed = noGrad(true, () -> m.withAdapterNames(List.of("a", "b"), () -> logits(m, x)));
                Tensor onlyA = lf.narrow(0, 0, 1);
                m.setAdapter("b");
                Tensor onlyB = noGrad(true, () -> logits(m, x)).narrow(0, 1, 1);
                assertTrue(maxAbsDiff(mixed.narrow(0, 0, 1), onlyA) <= 1e-5 * maxAbs(onlyA), "row 0 = adapter a");
                assertTrue(maxAbsDiff(mixed.narrow(0, 1, 1), onlyB) <= 1e-5 * maxAbs(onlyB), "row 1 = adapter b");
            }
        }
    }

    @Test
    void mergeIntoAQuantizedBaseIsRefusedNamingTheModuleAndChangesNothing() {
        try (PreTrainedModel m = llama(5)) {
            AutoModel.quantize(m, Quantization.INT8);
            m.addAdapter(lora("q_proj", "v_proj"), "a");
            Tensor x = ids(1, 4, 64, 6);
            Tensor before = noGrad(true, () -> logits(m, x));
            UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class,
                    () -> m.mergeAndUnload("a"));
            assertTrue(e.getMessage().contains("model.layers.0.self_attn.q_proj") && e.getMessage().contains("q8_0"),
                    e.getMessage());
            e = assertThrows(UnsupportedOperationException.class, () -> m.mergeAdapter("a"));
            assertTrue(e.getMessage().contains("quantized"), e.getMessage());
            assertTrue(maxAbsDiff(before, noGrad(true, () -> logits(m, x))) == 0, "nothing was merged");
            assertTrue(m.getSubmodule("model.layers.1.self_attn.v_proj") instanceof LoraLayer, "still adapted");
        }
    }

    @Test
    void qloraTrainingReachesTheFirstLayersAdapterThroughTheQuantizedBases() {
        try (PreTrainedModel m = llama(7)) {
            AutoModel.quantize(m, Quantization.INT4);
            m.addAdapter(lora("q_proj", "v_proj"), "a");
            m.train(true);
            Tensor x = ids(2, 5, 64, 8);
            Tensor loss = logits(m, x).pow(new org.bytedeco.pytorch.Scalar(2)).mean();
            loss.backward();
            LoraLayer first = (LoraLayer) m.getSubmodule("model.layers.0.self_attn.q_proj");
            Tensor g = first.adapterParameters("a").get("lora_B.a.weight").grad();
            assertTrue(g.defined() && maxAbs(g) > 0 && torch.isfinite(g).all().item_bool(),
                    "layer 0's lora_B gets a gradient through layer 1's quantized projections");
            QuantizedLinear q = (QuantizedLinear) first.baseLayer();
            assertEquals(0, q.namedParameters().values().stream().filter(Tensor::requires_grad).count(),
                    "the quantized base is frozen");
        }
    }

    @Test
    void quantizedLinearsBackwardToTheInputIsTheDequantizedWeights() {
        try (PreTrainedModel m = llama(9)) {
            AutoModel.quantize(m, Quantization.INT8);
            QuantizedLinear q = (QuantizedLinear) m.getSubmodule("model.layers.0.mlp.down_proj");
            Tensor x = torch.randn(new long[] {3, 128}).requires_grad_(true);
            q.forward(x).sum().backward();
            Tensor w = q.dequantizedWeight(ScalarType.Float);
            Tensor want = w.sum(new long[] {0}, false, new org.bytedeco.pytorch.ScalarTypeOptional()).expand(3, 128);
            assertTrue(maxAbsDiff(x.grad(), want) <= 1e-5 * (1 + maxAbs(want)), "d(sum y)/dx = Σ_n Ŵ[n, :]");
        }
    }

    @Test
    void ia3OnAQuantizedBaseScalesItsInputOrOutput() {
        try (PreTrainedModel m = llama(10)) {
            AutoModel.quantize(m, Quantization.INT8);
            Tensor x = ids(1, 4, 64, 11);
            Tensor base = noGrad(true, () -> logits(m, x));
            m.addAdapter(IA3Config.builder().targetModules("k_proj", "down_proj").feedforwardModules("down_proj")
                    .initIa3Weights(true).build(), "i");
            assertTrue(maxAbsDiff(base, noGrad(true, () -> logits(m, x))) <= 1e-6 * maxAbs(base),
                    "IA3 initialised to ones is the identity over a quantized base");
            Module down = m.getSubmodule("model.layers.0.mlp.down_proj");
            Tensor l = ((dev.peft4j.tuners.BaseTunerLayer) down).adapterParameters("i").values().iterator().next();
            try (NoGradGuard g = new NoGradGuard()) {
                l.fill_(new org.bytedeco.pytorch.Scalar(2.0));
            }
            Tensor h = torch.randn(new long[] {2, 128});
            QuantizedLinear q = (QuantizedLinear) ((dev.peft4j.tuners.BaseTunerLayer) down).baseLayer();
            Tensor got = noGrad(true, () -> ((Layer) down).forward(h));
            Tensor want = noGrad(true, () -> q.forward(h.mul(new org.bytedeco.pytorch.Scalar(2.0))));
            assertTrue(maxAbsDiff(got, want) == 0, "feed-forward IA3 scales the quantized layer's input");
            assertThrows(UnsupportedOperationException.class, () -> m.mergeAndUnload("i"));
        }
    }
}
