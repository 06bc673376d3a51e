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
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;

/**
 * Adapters of different methods in one model (transformers' integration allows it, unlike PEFT's
 * {@code PeftModel.add_adapter}): side by side on different modules both apply; on a module that already holds an
 * adapter of another method (where PEFT nests the new layer around the old) the new adapter is refused, naming it, the
 * module and what it holds, and the model is left as it was.
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
    void aSecondMethodOnTheSameModuleIsRefusedAndTheModelKept() {
        List<PeftConfig[]> cases = List.of(
                new PeftConfig[] {lora("q_proj", "v_proj"), ia3("q_proj")},
                new PeftConfig[] {ia3("q_proj"), lora("q_proj")},
                new PeftConfig[] {lora("v_proj"), AdaLoraConfig.builder().initR(4).totalStep(10)
                        .targetModules("v_proj").build()});
        for (PeftConfig[] c : cases) {
            try (PreTrainedModel m = MixinSupport.tinyLlama(7)) {
                m.addAdapter(c[0], "first");
                Map<String, Tensor> before = MixinLoraTest.snapshot(m);
                UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class,
                        () -> m.addAdapter(c[1], "second"));
                assertTrue(e.getMessage().contains("adapter 'second'") && e.getMessage().contains("[first]")
                        && e.getMessage().contains("model.layers.0.self_attn."), e.getMessage());
                MixinLoraTest.assertSameState(before, m);
                assertEquals(List.of("first"), List.copyOf(m.peftAdapters().peftConfig().keySet()));
            }
        }
    }
}
