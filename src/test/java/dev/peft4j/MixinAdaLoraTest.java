package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.AdaLoraConfig;
import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Linear;
import dev.peft4j.tuners.adalora.SvdLinear;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** AdaLoRA SVD layers through the mixin on a small seeded Llama. */
class MixinAdaLoraTest {
    @TempDir
    Path tmp;

    static AdaLoraConfig.Builder cfg(boolean init) {
        return AdaLoraConfig.builder().initR(4).targetR(2).totalStep(100).loraAlpha(8).targetModules("q_proj", "v_proj")
                .initLoraWeights(new InitLoraWeights.Flag(init));
    }

    @Test
    void defaultInitIsIdentity() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(1)) {
            Tensor x = ids(2, 5, 32, 1);
            Tensor base = logits(m, x);
            m.addAdapter(cfg(true).build());
            assertTrue(bitEqual(base, logits(m, x)), "E = 0");
            Map<String, Tensor> sd = m.getAdapterStateDict();
            assertEquals(12, sd.size(), "A, E, B of 4 modules; ranknum never saved");
            assertTrue(sd.containsKey("model.layers.0.self_attn.q_proj.lora_E"));
            assertFalse(sd.keySet().stream().anyMatch(k -> k.contains("ranknum") || k.endsWith(".weight")));
        }
    }

    @Test
    void layerForwardIsSvdFormScaledByAlphaOverRanknum() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(2)) {
            m.addAdapter(cfg(false).build());
            SvdLinear l = (SvdLinear) m.getSubmodule("model.layers.1.self_attn.v_proj");
            Map<String, Tensor> p = l.adapterParameters("default");
            Tensor w = ((Linear) l.baseLayer()).weight();
            torch.manual_seed(5);
            Tensor x = torch.randn(3, 16);
            Tensor ae = p.get("lora_A.default").mul(p.get("lora_E.default"));
            Tensor expect = x.matmul(w.t()).add(x.matmul(ae.t()).matmul(p.get("lora_B.default").t())
                    .mul(new Scalar(8.0 / (4 + 1e-5))));
            assertTrue(maxAbsDiff(expect, l.forward(x)) < 1e-5, "fp32");
            assertEquals(4.0f, l.ranknum("default").item_float());
        }
    }

    @Test
    void mergeSaveReload() throws Exception {
        Path dir = tmp.resolve("ada");
        Tensor x = ids(2, 5, 32, 3);
        Tensor adapted;
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            Tensor base = logits(m, x);
            m.addAdapter(cfg(false).build());
            adapted = logits(m, x);
            assertTrue(maxAbsDiff(base, adapted) > 1e-4);
            m.saveAdapter(dir, "default");
            m.mergeAdapter();
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5);
            m.unmergeAdapter();
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5);
        }
        try (SafetensorsFile f = SafetensorsFile.open(dir.resolve("adapter_model.safetensors"))) {
            assertTrue(f.names().contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A"));
            assertEquals(12, f.names().size());
        }
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            AdapterLoadReport r = m.loadAdapter(dir);
            assertEquals(List.of(), r.unexpectedKeys());
            assertEquals(List.of(), r.missingKeys());
            assertTrue(bitEqual(adapted, logits(m, x)));
        }
    }

    @Test
    void rankPatternResizesModulesAndKeepsRanknumAtInitR() throws Exception {
        Map<String, List<Boolean>> pattern = new LinkedHashMap<>();
        pattern.put("model.layers.0.self_attn.q_proj.lora_E", List.of(true, false, true, false));
        pattern.put("model.layers.1.self_attn.v_proj.lora_E", List.of(false, false, false, false));
        AdaLoraConfig c = cfg(true).rankPattern(pattern).build();
        Map<String, Tensor> sd = new LinkedHashMap<>();
        torch.manual_seed(1);
        sd.put("base_model.model.model.layers.0.self_attn.q_proj.lora_A", torch.randn(2, 16));
        sd.put("base_model.model.model.layers.0.self_attn.q_proj.lora_E", torch.randn(2, 1));
        sd.put("base_model.model.model.layers.0.self_attn.q_proj.lora_B", torch.randn(16, 2));
        try (PreTrainedModel m = MixinSupport.tinyLlama(4)) {
            AdapterLoadReport r = m.loadAdapter(c, sd, "pruned");
            assertEquals(List.of(), r.unexpectedKeys());
            SvdLinear q0 = (SvdLinear) m.getSubmodule("model.layers.0.self_attn.q_proj");
            assertArrayEquals(new long[] {2, 16}, q0.adapterParameters("pruned").get("lora_A.pruned").shape());
            assertEquals(4.0f, q0.ranknum("pruned").item_float(), "ranknum stays init_r");
            SvdLinear v1 = (SvdLinear) m.getSubmodule("model.layers.1.self_attn.v_proj");
            assertArrayEquals(new long[] {0, 16}, v1.adapterParameters("pruned").get("lora_A.pruned").shape());
            SvdLinear q1 = (SvdLinear) m.getSubmodule("model.layers.1.self_attn.q_proj");
            assertArrayEquals(new long[] {4, 16}, q1.adapterParameters("pruned").get("lora_A.pruned").shape());
            assertTrue(bitEqual(sd.get("base_model.model.model.layers.0.self_attn.q_proj.lora_E"),
                    m.getAdapterStateDict("pruned").get("model.layers.0.self_attn.q_proj.lora_E")));
            Tensor x = ids(1, 4, 32, 2);
            logits(m, x); // a k = 0 module runs (empty tensors)
        }
    }

    @Test
    void addWithRankPatternKeepsInitRThenSaveSlicesAndReloadResizes() throws Exception {
        Map<String, List<Boolean>> pattern = new LinkedHashMap<>();
        pattern.put("model.layers.0.self_attn.q_proj.lora_E.default", List.of(false, true, true, false)); // as trained
        Path dir = tmp.resolve("pruned");
        Tensor x = ids(1, 4, 32, 6);
        Tensor out;
        try (PreTrainedModel m = MixinSupport.tinyLlama(6)) {
            m.addAdapter(cfg(false).rankPattern(pattern).build());
            SvdLinear q0 = (SvdLinear) m.getSubmodule("model.layers.0.self_attn.q_proj");
            Map<String, Tensor> full = q0.adapterParameters("default");
            assertArrayEquals(new long[] {4, 16}, full.get("lora_A.default").shape(), "training keeps init_r slots");
            try (org.bytedeco.pytorch.NoGradGuard g = new org.bytedeco.pytorch.NoGradGuard()) {
                // what the allocator does to pruned slots: their E entries are zero
                full.get("lora_E.default").narrow(0, 0, 1).zero_();
                full.get("lora_E.default").narrow(0, 3, 1).zero_();
            }
            out = logits(m, x);
            Map<String, Tensor> sd = m.getAdapterStateDict();
            assertArrayEquals(new long[] {2, 16}, sd.get("model.layers.0.self_attn.q_proj.lora_A").shape());
            assertArrayEquals(new long[] {16, 2}, sd.get("model.layers.0.self_attn.q_proj.lora_B").shape());
            assertTrue(bitEqual(full.get("lora_A.default").narrow(0, 1, 2),
                    sd.get("model.layers.0.self_attn.q_proj.lora_A")));
            m.saveAdapter(dir, "default");
        }
        assertEquals(Map.of("model.layers.0.self_attn.q_proj.lora_E", List.of(false, true, true, false)),
                ((AdaLoraConfig) dev.peft4j.config.PeftConfigs.read(dir)).rankPattern(), "saved without the adapter name");
        try (PreTrainedModel m = MixinSupport.tinyLlama(6)) {
            AdapterLoadReport r = m.loadAdapter(dir);
            assertEquals(List.of(), r.missingKeys());
            assertEquals(List.of(), r.unexpectedKeys());
            SvdLinear q0 = (SvdLinear) m.getSubmodule("model.layers.0.self_attn.q_proj");
            assertArrayEquals(new long[] {2, 16}, q0.adapterParameters("default").get("lora_A.default").shape());
            // pruned slots contributed nothing (E = 0) and ranknum stays init_r: same output up to summation order
            assertTrue(maxAbsDiff(out, logits(m, x)) < 1e-5);
        }
    }

    @Test
    void onlyOneTrainableAdaLoraAdapter() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(5)) {
            m.addAdapter(cfg(true).build(), "a");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.addAdapter(cfg(true).build(), "b"));
            assertTrue(e.getMessage().startsWith("AdaLoraModel supports only 1 trainable adapter."));
            m.addAdapter(cfg(true).inferenceMode(true).build(), "c");
            assertEquals(List.of("c"), m.activeAdapters());
        }
    }
}
