package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static dev.peft4j.MixinSupport.res;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.IA3Config;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.BaseTunerLayer;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * A second adapter of another method on modules that already hold one, as transformers' {@code load_adapter} leaves
 * it ({@code inject_adapter_in_model}: the new method's layer wraps the old one as its {@code base_layer}; the
 * injection's {@code set_adapter} reaches only its own layer class, LoRA's and AdaLoRA's being one). Goldens from
 * {@code tuners/nested/make_goldens.py} (PEFT's forwards restated in torch): the logits after the two loads, with
 * both, the first and the second adapter active, within 1e-5 in float32, on the composed ops and on the inference
 * path; disable, delete, the state dict keys ({@code base_layer.} of the inner adapter) and save; merges of a
 * nested stack and DoRA around another method's layer are refused with the model unchanged.
 */
class MixinNestedAdaptersTest {
    static final double TOL = 1e-5;

    @TempDir
    Path tmp;

    private static Path folder(String name) {
        return res("dev/peft4j/tuners/nested/" + name);
    }

    /** Row 0 whole, row 1 at its real positions (it is left-padded by 2). */
    private static void assertGolden(Tensor want, Tensor got, String what) {
        double d0 = maxAbsDiff(want.select(0, 0), got.select(0, 0));
        double d1 = maxAbsDiff(want.select(0, 1).narrow(0, 2, 5), got.select(0, 1).narrow(0, 2, 5));
        assertTrue(Math.max(d0, d1) <= TOL, what + ": off by " + Math.max(d0, d1));
    }

    private static Tensor forward(PreTrainedModel m, Tensor ids, Tensor mask) {
        return ((CausalLM) m).forward(ids, mask, null, null);
    }

    /** Composed ops (autograd on) and the inference path (no grad: fused kernels where a layer is not nested). */
    private static void assertBothPaths(Tensor want, PreTrainedModel m, Tensor ids, Tensor mask, String what) {
        assertGolden(want, forward(m, ids, mask), what + " (composed)");
        try (NoGradGuard g = new NoGradGuard()) {
            assertGolden(want, forward(m, ids, mask), what + " (inference)");
        }
    }

    @ParameterizedTest
    @CsvSource({
        "lora-ia3, self_attn.q_proj, ia3.Linear, lora.Linear, first",
        "ia3-lora, mlp.down_proj, lora.Linear, ia3.Linear, first",
        "lora-adalora, self_attn.v_proj, adalora.SVDLinear, lora.Linear, second",
        "adalora-lora, self_attn.q_proj, lora.Linear, adalora.SVDLinear, second"})
    void aSecondMethodWrapsTheFirstAndBothComputeAsInPeft(String c, String stacked, String outerType,
            String innerType, String innerActive) throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel m = AutoModel.fromPretrained(res("dev/peft4j/models/golden/llama-gqa-llama3rope"),
                        ScalarType.Float);
                SafetensorsFile golden = SafetensorsFile.open(folder(c).resolve("golden.safetensors"));
                SafetensorsFile firstCkpt = SafetensorsFile.open(folder(c).resolve("first/adapter_model.safetensors"));
                SafetensorsFile secondCkpt = SafetensorsFile.open(
                        folder(c).resolve("second/adapter_model.safetensors"))) {
            Map<String, Tensor> gt = golden.tensors();
            Tensor ids = gt.get("input_ids");
            Tensor mask = gt.get("attention_mask");
            Tensor plain = forward(m, ids, mask);
            for (String a : List.of("first", "second")) {
                AdapterLoadReport r = m.loadAdapter(folder(c).resolve(a), a);
                assertEquals(List.of(), r.missingKeys(), a);
                assertEquals(List.of(), r.unexpectedKeys(), a);
            }
            String module = "model.layers.0." + stacked;
            Module outer = m.getSubmodule(module);
            assertEquals(outerType, outer.typeName());
            Module inner = ((BaseTunerLayer) outer).baseLayer();
            assertEquals(innerType, inner.typeName(), "the new layer's base_layer is the old layer");
            assertTrue(((BaseTunerLayer) inner).baseLayer() instanceof Linear);
            assertEquals(List.of("second"), ((BaseTunerLayer) outer).activeAdapters());
            assertEquals(List.of(innerActive), ((BaseTunerLayer) inner).activeAdapters(), "the first load's layer "
                    + "keeps its active adapter unless the second method's activation reaches its class");
            // active_adapters(): the first tuner layer's (q_proj's, which the second adapter's activation reached)
            assertEquals(List.of("second"), m.activeAdapters());
            assertBothPaths(gt.get("logits_loaded"), m, ids, mask, c + " after two loads");
            assertTrue(maxAbsDiff(plain, gt.get("logits_loaded")) > 1e-2, "the adapters change the logits");

            m.setAdapter("first", "second");
            assertBothPaths(gt.get("logits_both"), m, ids, mask, c + " both active");
            m.setAdapter("first");
            assertBothPaths(gt.get("logits_first"), m, ids, mask, c + " first active");

            // the inner adapter's keys hold the wrapper's base_layer., as PEFT's get_peft_model_state_dict gives them
            Map<String, Tensor> firstSd = m.getAdapterStateDict("first");
            Map<String, Tensor> firstWant = new java.util.LinkedHashMap<>();
            for (Map.Entry<String, Tensor> e : firstCkpt.tensors().entrySet()) {
                String k = e.getKey().substring("base_model.model.".length());
                for (String l : List.of("model.layers.0.", "model.layers.1.")) {
                    String mod = l + stacked;
                    if (k.startsWith(mod + ".")) {
                        k = mod + ".base_layer" + k.substring(mod.length());
                    }
                }
                firstWant.put(k, e.getValue());
            }
            assertEquals(new TreeSet<>(firstWant.keySet()), new TreeSet<>(firstSd.keySet()));
            firstWant.forEach((k, v) -> assertTrue(bitEqual(v, firstSd.get(k)), k));
            Map<String, Tensor> secondSd = m.getAdapterStateDict("second");
            assertEquals(secondCkpt.tensors().size(), secondSd.size());
            for (Map.Entry<String, Tensor> e : secondCkpt.tensors().entrySet()) {
                String k = e.getKey().substring("base_model.model.".length());
                assertTrue(bitEqual(e.getValue(), secondSd.get(k)), k);
            }
            m.saveAdapter(tmp.resolve(c), "first");
            try (SafetensorsFile saved = SafetensorsFile.open(tmp.resolve(c).resolve("adapter_model.safetensors"))) {
                for (String k : firstWant.keySet()) {
                    assertTrue(saved.tensors().containsKey("base_model.model." + k), k);
                }
            }

            m.setAdapter("second");
            assertBothPaths(gt.get("logits_second"), m, ids, mask, c + " second active");
            m.disableAdapters();
            assertTrue(bitEqual(plain, forward(m, ids, mask)), "disabled: the base model exactly");
            m.enableAdapters();

            // merging a nested stack is refused (PEFT merges both into the innermost weight), the model unchanged
            m.setAdapter("first", "second");
            Map<String, Tensor> before = MixinLoraTest.snapshot(m);
            UnsupportedOperationException merge = assertThrows(UnsupportedOperationException.class,
                    () -> m.mergeAdapter());
            assertTrue(merge.getMessage().contains("'" + module + "'") && merge.getMessage().contains(outerType
                    + " around " + innerType), merge.getMessage());
            UnsupportedOperationException unload = assertThrows(UnsupportedOperationException.class,
                    () -> m.mergeAndUnload());
            assertTrue(unload.getMessage().startsWith("cannot merge_and_unload"), unload.getMessage());
            MixinLoraTest.assertSameState(before, m);
            assertBothPaths(gt.get("logits_both"), m, ids, mask, c + " after the refused merges");

            // deleting the second: every layer that held it falls back to what it holds, the first
            m.setAdapter("second");
            m.deleteAdapter("second");
            assertBothPaths(gt.get("logits_first"), m, ids, mask, c + " second deleted");
            assertEquals(List.of("first"), List.copyOf(m.peftAdapters().peftConfig().keySet()));
        }
    }

    @Test
    void doraAroundAnotherMethodIsRefusedButAnotherMethodAroundDoraIsNot() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(7)) {
            m.addAdapter(IA3Config.builder().targetModules("q_proj").feedforwardModules().build(), "ia3");
            Map<String, Tensor> before = MixinLoraTest.snapshot(m);
            UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class, () -> m.addAdapter(
                    LoraConfig.builder().r(2).targetModules("q_proj").useDora(true).build(), "dora"));
            assertTrue(e.getMessage().contains("adapter 'dora'") && e.getMessage().contains("DoRA")
                    && e.getMessage().contains("model.layers.0.self_attn.q_proj") && e.getMessage().contains("[ia3]"),
                    e.getMessage());
            MixinLoraTest.assertSameState(before, m);
            assertEquals(List.of("ia3"), List.copyOf(m.peftAdapters().peftConfig().keySet()));
            // a plain LoRA wraps it
            m.addAdapter(LoraConfig.builder().r(2).targetModules("q_proj").build(), "lora");
            assertEquals("lora.Linear", m.getSubmodule("model.layers.0.self_attn.q_proj").typeName());
        }
        try (PreTrainedModel m = MixinSupport.tinyLlama(7)) {
            m.addAdapter(LoraConfig.builder().r(2).targetModules("q_proj").useDora(true)
                    .set("init_lora_weights", false).build(), "dora");
            Tensor x = MixinSupport.ids(1, 4, 32, 1);
            Tensor doraOnly = MixinSupport.logits(m, x);
            m.addAdapter(IA3Config.builder().targetModules("q_proj").feedforwardModules().initIa3Weights(false)
                    .build(), "ia3");
            Tensor ia3Only = MixinSupport.logits(m, x); // add_adapter activates only the new adapter
            m.setAdapter("dora", "ia3");
            BaseTunerLayer q = (BaseTunerLayer) m.getSubmodule("model.layers.0.self_attn.q_proj");
            assertEquals("ia3.Linear", q.typeName());
            assertEquals("lora.Linear", q.baseLayer().typeName());
            Tensor both = MixinSupport.logits(m, x);
            assertFalse(bitEqual(both, doraOnly) || bitEqual(both, ia3Only), "the nested DoRA and IA³ layers apply");
        }
    }
}
