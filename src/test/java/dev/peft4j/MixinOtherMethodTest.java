package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.AdaLoraConfig;
import dev.peft4j.config.IA3Config;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.BaseTunerLayer;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;

/**
 * Adapters of different methods in one model (transformers' integration allows it, unlike PEFT's
 * {@code PeftModel.add_adapter}): side by side on different modules both apply; on a module that already holds an
 * adapter of another method the new method's layer wraps the old one, and the adapters held before are kept as they
 * were ({@link MixinNestedAdaptersTest} checks what the stacks compute against PEFT's).
 */
class MixinOtherMethodTest {
    private static LoraConfig lora(String... targets) {
        return LoraConfig.builder().r(4).loraAlpha(8).set("init_lora_weights", false).targetModules(targets).build();
    }

    private static IA3Config ia3(String... targets) {
        return IA3Config.builder().targetModules(targets).initIa3Weights(false).build();
    }

    @Test
    void methodsSideBySideOnDifferentModulesBothApply() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(7)) {
            Tensor x = ids(2, 5, 32, 7);
            m.addAdapter(lora("q_proj"), "l");
            Tensor loraOnly = logits(m, x);
            m.addAdapter(ia3("k_proj"), "i");
            Tensor ia3Only = logits(m, x);
            m.setAdapter("l", "i");
            Tensor both = logits(m, x);
            assertFalse(bitEqual(both, loraOnly));
            assertFalse(bitEqual(both, ia3Only));
        }
    }

    @Test
    void adaLoraCountsTheTrainableAdaptersOfEveryMethod() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(7)) {
            m.addAdapter(lora("q_proj"), "lora"); // add_adapter: inference_mode False, trainable
            Map<String, Tensor> before = MixinLoraTest.snapshot(m);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.addAdapter(AdaLoraConfig.builder().initR(4).totalStep(10).targetModules("k_proj").build(),
                            "ada"));
            assertEquals("AdaLoraModel supports only 1 trainable adapter. When using multiple adapters, set "
                    + "inference_mode to True for all adapters except the one you want to train.", e.getMessage());
            MixinLoraTest.assertSameState(before, m);
            m.addAdapter(AdaLoraConfig.builder().initR(4).totalStep(10).targetModules("k_proj").inferenceMode(true)
                    .build(), "ada");
            m.addAdapter(ia3("v_proj"), "ia3"); // IA3 does not count
            assertThrows(IllegalArgumentException.class, () -> m.addAdapter(AdaLoraConfig.builder().initR(4)
                    .totalStep(10).targetModules("o_proj").inferenceMode(true).build(), "ada2"),
                    "two trainable adapters (lora, ia3) already: even an inference AdaLoRA is refused, as PEFT");
        }
    }

    @Test
    void aSecondMethodOnTheSameModuleWrapsTheFirstAndKeepsItsTensors() {
        // each case: the first adapter, the second, the module both target
        List<Object[]> cases = List.of(
                new Object[] {lora("q_proj", "v_proj"), ia3("q_proj"), "q_proj"},
                new Object[] {ia3("q_proj"), lora("q_proj"), "q_proj"},
                // AdaLoRA counts the trainable adapters of every method: the second one is for inference
                new Object[] {lora("v_proj"), AdaLoraConfig.builder().initR(4).totalStep(10).targetModules("v_proj")
                        .inferenceMode(true).build(), "v_proj"});
        for (Object[] c : cases) {
            try (PreTrainedModel m = MixinSupport.tinyLlama(7)) {
                m.addAdapter((PeftConfig) c[0], "first");
                Map<String, Tensor> before = MixinLoraTest.snapshot(m);
                String key = "model.layers.0.self_attn." + c[2];
                Module innerBefore = m.getSubmodule(key);
                m.addAdapter((PeftConfig) c[1], "second");
                BaseTunerLayer outer = (BaseTunerLayer) m.getSubmodule(key);
                assertTrue(outer.baseLayer() == innerBefore, "the first method's layer is the new one's base_layer");
                assertEquals(List.of("first"), ((BaseTunerLayer) innerBefore).adapterNames());
                Map<String, Tensor> now = m.stateDict();
                for (Map.Entry<String, Tensor> e : before.entrySet()) {
                    String k = e.getKey();
                    // every layer's module moved under the new wrapper's base_layer
                    String moved = k.replaceFirst("^(model\\.layers\\.\\d+\\.self_attn\\." + c[2] + ")\\.",
                            "$1.base_layer.");
                    Tensor t = now.get(moved);
                    assertTrue(t != null && bitEqual(e.getValue(), t), k + " kept as " + moved + " in " + now.keySet());
                }
                assertEquals(List.of("first", "second"), List.copyOf(m.peftAdapters().peftConfig().keySet()));
            }
        }
    }
}
