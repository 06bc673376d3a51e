package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.IA3Config;
import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Linear;
import dev.peft4j.tuners.ia3.Ia3Layer;
import dev.peft4j.tuners.lora.LoraLayer;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** IA³ through the mixin on a small seeded Llama (k/v output scaling, down_proj input scaling). */
class MixinIa3Test {
    @TempDir
    Path tmp;

    static IA3Config cfg(boolean init) {
        return IA3Config.builder().targetModules("k_proj", "v_proj", "down_proj").feedforwardModules("down_proj")
                .initIa3Weights(init).build();
    }

    @Test
    void defaultInitIsIdentityAndShapesFollowFeedForward() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(1)) {
            Tensor x = ids(2, 5, 32, 1);
            Tensor base = logits(m, x);
            m.addAdapter(cfg(true));
            assertTrue(bitEqual(base, logits(m, x)), "ones scale exactly");
            Ia3Layer k = (Ia3Layer) m.getSubmodule("model.layers.0.self_attn.k_proj");
            Ia3Layer down = (Ia3Layer) m.getSubmodule("model.layers.0.mlp.down_proj");
            assertArrayEquals(new long[] {8, 1}, k.adapterParameters("default").get("ia3_l.default").shape(), "(kv out, 1)");
            assertArrayEquals(new long[] {1, 32}, down.adapterParameters("default").get("ia3_l.default").shape(), "(1, in)");
            assertTrue(m.getAdapterStateDict().containsKey("model.layers.1.mlp.down_proj.ia3_l"), "no .weight suffix");
        }
    }

    @Test
    void outputsAndInputsScaledAndTwoAdaptersMultiply() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(2)) {
            m.peftAdapters().seed(1);
            m.addAdapter(cfg(false), "a");
            m.peftAdapters().seed(2);
            m.addAdapter(cfg(false), "b");
            m.setAdapter("a", "b");
            torch.manual_seed(3);
            Ia3Layer k = (Ia3Layer) m.getSubmodule("model.layers.0.self_attn.k_proj");
            Tensor kw = ((Linear) k.baseLayer()).weight();
            Tensor x = torch.randn(3, 16);
            Tensor la = k.adapterParameters("a").get("ia3_l.a").flatten();
            Tensor lb = k.adapterParameters("b").get("ia3_l.b").flatten();
            assertTrue(maxAbsDiff(x.matmul(kw.t()).mul(la).mul(lb), k.forward(x)) < 1e-6, "output scaled by la·lb");
            Ia3Layer d = (Ia3Layer) m.getSubmodule("model.layers.0.mlp.down_proj");
            Tensor dw = ((Linear) d.baseLayer()).weight();
            Tensor h = torch.randn(3, 32);
            Tensor da = d.adapterParameters("a").get("ia3_l.a").flatten();
            Tensor db = d.adapterParameters("b").get("ia3_l.b").flatten();
            assertTrue(maxAbsDiff(h.mul(da.mul(db)).matmul(dw.t()), d.forward(h)) < 1e-5, "input scaled by la·lb");
        }
    }

    @Test
    void mergeUnmergeSaveReloadAndDisable() throws Exception {
        Path dir = tmp.resolve("ia3");
        Tensor x = ids(2, 5, 32, 4);
        Tensor adapted;
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            Tensor base = logits(m, x);
            m.addAdapter(cfg(false));
            adapted = logits(m, x);
            assertTrue(maxAbsDiff(base, adapted) > 1e-4);
            m.disableAdapters();
            assertTrue(bitEqual(base, logits(m, x)));
            m.enableAdapters();
            m.mergeAdapter();
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5, "fp32 merge");
            m.unmergeAdapter();
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5, "unmerge divides by l + 1e-8");
            m.saveAdapter(dir, "default");
        }
        try (SafetensorsFile f = SafetensorsFile.open(dir.resolve("adapter_model.safetensors"))) {
            assertEquals(6, f.names().size());
            assertTrue(f.names().contains("base_model.model.model.layers.0.self_attn.k_proj.ia3_l"));
        }
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            AdapterLoadReport r = m.loadAdapter(dir);
            assertEquals(List.of(), r.missingKeys());
            assertEquals(List.of(), r.unexpectedKeys());
            // unmerge rounding touched the first model's weights, not the adapter: the reload is exact
            Tensor again = logits(m, x);
            assertTrue(maxAbsDiff(adapted, again) < 1e-5);
        }
    }

    @Test
    void loraAndIa3SideBySide() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(4)) {
            m.addAdapter(LoraConfig.builder().r(2).targetModules("q_proj").initLoraWeights(new InitLoraWeights.Flag(false))
                    .build(), "lora");
            m.addAdapter(cfg(false), "ia3");
            assertTrue(m.getSubmodule("model.layers.0.self_attn.q_proj") instanceof LoraLayer);
            assertTrue(m.getSubmodule("model.layers.0.self_attn.k_proj") instanceof Ia3Layer);
            assertEquals(List.of("ia3"), m.activeAdapters());
            Map<String, Tensor> sd = m.getAdapterStateDict("lora");
            assertEquals(4, sd.size());
            m.setAdapter("lora", "ia3");
            Tensor x = ids(1, 4, 32, 2);
            Tensor both = logits(m, x);
            UnsupportedOperationException mb = org.junit.jupiter.api.Assertions.assertThrows(
                    UnsupportedOperationException.class, () -> m.withAdapterNames(List.of("lora"), () -> logits(m, x)));
            assertTrue(mb.getMessage().contains("LoRA only"), mb.getMessage());
            m.deleteAdapter("ia3");
            assertEquals(List.of("lora"), m.activeAdapters());
            assertTrue(maxAbsDiff(both, logits(m, x)) > 1e-6);
        }
    }
}
