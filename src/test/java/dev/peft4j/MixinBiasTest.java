package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.Bias;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.models.PreTrainedModel;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code bias="all"} and {@code "lora_only"} on a small GPT-2 (Conv1D with biases). */
class MixinBiasTest {
    @TempDir
    Path tmp;

    static PreTrainedModel gpt2(long seed) throws Exception {
        return MixinSupport.model("dev/peft4j/models/adapters/gpt2.config.json",
                Map.of("vocab_size", 64, "n_positions", 16, "n_ctx", 16, "n_embd", 16, "n_layer", 2, "n_head", 2), seed);
    }

    static LoraConfig cfg(Bias bias) {
        return LoraConfig.builder().r(2).targetModules("c_attn").bias(bias).build();
    }

    @Test
    void biasAllTrainsAndSavesEveryBiasAndReloadRestoresThem() throws Exception {
        Path dir = tmp.resolve("all");
        Tensor x = ids(1, 5, 64, 1);
        Tensor trained;
        try (PreTrainedModel m = gpt2(1)) {
            m.loadAdapter(null, LoadAdapterOptions.builder().peftConfig(cfg(Bias.ALL)).adapterStateDict(Map.of())
                    .isTrainable(true).build());
            m.namedParameters().forEach((k, v) -> assertEquals(k.endsWith(".bias") || k.contains(".lora_"),
                    v.requires_grad(), k));
            try (NoGradGuard g = new NoGradGuard()) { // a "trained" bias
                m.getParameter("transformer.h.0.attn.c_attn.base_layer.bias").add_(new Scalar(0.25));
                m.getParameter("transformer.h.1.mlp.c_fc.bias").add_(new Scalar(-0.5));
            }
            trained = logits(m, x);
            Map<String, Tensor> sd = m.getAdapterStateDict();
            assertTrue(sd.containsKey("transformer.h.0.attn.c_attn.base_layer.bias"));
            assertTrue(sd.containsKey("transformer.h.1.mlp.c_fc.bias"));
            assertTrue(sd.containsKey("transformer.ln_f.bias"));
            assertFalse(sd.keySet().stream().anyMatch(k -> k.endsWith(".weight") && !k.contains("lora_")));
            m.saveAdapter(dir, "default");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.addAdapter(cfg(Bias.LORA_ONLY), "two"));
            assertEquals("LoraModel supports only 1 adapter with bias. When using multiple adapters, set bias to 'none' "
                    + "for all adapters.", e.getMessage());
        }
        try (PreTrainedModel m = gpt2(1)) {
            AdapterLoadReport r = m.loadAdapter(dir);
            assertEquals(List.of(), r.unexpectedKeys(), "base_layer biases map onto the fresh model's modules");
            assertTrue(bitEqual(trained, logits(m, x)));
        }
    }

    @Test
    void allLinearOnGpt2IsCondensedToSuffixesAsPeftSavesIt() throws Exception {
        try (PreTrainedModel m = MixinSupport.model("dev/peft4j/models/adapters/gpt2.config.json",
                Map.of("vocab_size", 64, "n_positions", 16, "n_ctx", 16, "n_embd", 16, "n_layer", 6, "n_head", 2), 3)) {
            m.addAdapter(LoraConfig.builder().r(2).targetModules(new dev.peft4j.config.ModuleSelector.Regex("all-linear"))
                    .build());
            // 6 blocks × (c_attn, attn.c_proj, c_fc, mlp.c_proj) = 24 names ≥ 20 → minimal suffixes
            assertEquals(new dev.peft4j.config.ModuleSelector.Names(List.of("c_attn", "c_fc", "c_proj")),
                    m.peftAdapters().peftConfig().get("default").targetModules());
            assertEquals(48, m.getAdapterStateDict().size());
        }
    }

    @Test
    void fanInFanOutIsForcedToTheAdaptedModuleType() throws Exception {
        try (PreTrainedModel m = gpt2(4)) {
            m.addAdapter(LoraConfig.builder().r(2).targetModules("c_attn").fanInFanOut(false).build());
            assertTrue(m.peftAdapters().peftConfig().get("default").fanInFanOut(), "Conv1D → true");
        }
        try (PreTrainedModel m = MixinSupport.tinyLlama(4)) {
            m.addAdapter(LoraConfig.builder().r(2).targetModules("q_proj").fanInFanOut(true).build());
            assertFalse(m.peftAdapters().peftConfig().get("default").fanInFanOut(), "Linear → false");
        }
    }

    @Test
    void loraOnlySavesBaseBiasesOfAdaptedLayers() throws Exception {
        try (PreTrainedModel m = gpt2(2)) {
            m.addAdapter(cfg(Bias.LORA_ONLY));
            TreeSet<String> biases = new TreeSet<>();
            for (String k : m.getAdapterStateDict().keySet()) {
                if (k.endsWith(".bias")) {
                    biases.add(k);
                }
            }
            assertEquals(new TreeSet<>(List.of("transformer.h.0.attn.c_attn.base_layer.bias",
                    "transformer.h.1.attn.c_attn.base_layer.bias")), biases);
            assertTrue(m.getParameter("transformer.h.0.attn.c_attn.base_layer.bias").requires_grad());
            assertFalse(m.getParameter("transformer.h.0.mlp.c_fc.bias").requires_grad());
        }
    }
}
