package dev.peft4j;

import static dev.peft4j.MixinSupport.maxAbsDiff;
import static dev.peft4j.MixinSupport.res;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.lora.LoraLayer;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * PEFT's {@code add_weighted_adapter} against make_goldens.py's torch restatement: two LoRA adapters of scalings 2
 * and 1 with weights [0.7, -0.4]; the new factors within 1e-6 for cat, linear, ties and magnitude_prune (density
 * 0.5), the new delta B·A within 1e-5 for svd and ties_svd (SVD factors are unique only up to signs); the new adapter
 * frozen and not active; PEFT's refusals.
 */
class MixinWeightedAdapterTest {
    private static Path dir(String name) {
        return res("dev/peft4j/tuners/weighted/" + name);
    }

    private static PreTrainedModel withTwoAdapters() throws Exception {
        PreTrainedModel m = AutoModel.fromPretrained(res("dev/peft4j/models/golden/llama-gqa-llama3rope"),
                ScalarType.Float);
        m.loadAdapter(dir("a").toString(), LoadAdapterOptions.builder().adapterName("a").build());
        m.loadAdapter(dir("b").toString(), LoadAdapterOptions.builder().adapterName("b").build());
        return m;
    }

    @ParameterizedTest
    @CsvSource({"cat, 8", "linear, 4", "ties, 4", "magnitude_prune, 4", "svd, 4", "ties_svd, 4"})
    void theNewFactorsMatchTheGoldens(String type, int rank) throws Exception {
        try (PointerScope s = new PointerScope(); PreTrainedModel m = withTwoAdapters();
                SafetensorsFile golden = SafetensorsFile.open(dir("golden.safetensors"))) {
            Map<String, Tensor> gt = golden.tensors();
            String name = "w_" + type;
            m.addWeightedAdapter(List.of("a", "b"), List.of(0.7, -0.4), name, type, 0.5);
            assertEquals(rank, ((LoraConfig) m.peftAdapters().peftConfig().get(name)).r());
            assertEquals(List.of("b"), m.activeAdapters(), "the new adapter is not activated");
            int checked = 0;
            for (Map.Entry<String, BaseTunerLayer> e : m.peftAdapters().tunerLayers().entrySet()) {
                LoraLayer l = (LoraLayer) e.getValue();
                Map<String, Tensor> p = l.adapterParameters(name);
                Tensor a = p.get("lora_A." + name + ".weight");
                Tensor b = p.get("lora_B." + name + ".weight");
                assertFalse(a.requires_grad() || b.requires_grad(), "frozen");
                String k = type + "/" + e.getKey();
                if (type.endsWith("svd")) {
                    Tensor want = gt.get(k + "/delta");
                    assertNotNull(want, k);
                    Tensor got = b.matmul(a).mul(new org.bytedeco.pytorch.Scalar(l.scaling(name)));
                    assertTrue(maxAbsDiff(want, got) <= 1e-5, k + ": off by " + maxAbsDiff(want, got));
                } else {
                    assertTrue(maxAbsDiff(gt.get(k + "/A"), a) <= 1e-6, k + "/A off by " + maxAbsDiff(gt.get(k + "/A"), a));
                    assertTrue(maxAbsDiff(gt.get(k + "/B"), b) <= 1e-6, k + "/B off by " + maxAbsDiff(gt.get(k + "/B"), b));
                }
                checked++;
            }
            assertEquals(4, checked);
        }
    }

    @Test
    void peftsRefusals() throws Exception {
        try (PointerScope s = new PointerScope(); PreTrainedModel m = withTwoAdapters()) {
            assertEquals("Adapter c does not exist", assertThrows(IllegalArgumentException.class,
                    () -> m.addWeightedAdapter(List.of("a", "c"), List.of(1.0, 1.0), "x", "cat", null)).getMessage());
            assertTrue(assertThrows(UnsupportedOperationException.class, () -> m.addWeightedAdapter(
                    List.of("a", "b"), List.of(1.0, 1.0), "x", "dare_linear", 0.5)).getMessage().contains("random"));
            assertEquals("Invalid combination_type: nope", assertThrows(IllegalArgumentException.class,
                    () -> m.addWeightedAdapter(List.of("a", "b"), List.of(1.0, 1.0), "x", "nope", null)).getMessage());
            m.addAdapter(LoraConfig.builder().r(2).targetModules("q_proj", "v_proj").build(), "r2");
            assertTrue(assertThrows(IllegalArgumentException.class, () -> m.addWeightedAdapter(List.of("a", "r2"),
                    List.of(1.0, 1.0), "x", "linear", null)).getMessage().startsWith("All adapters must have the same r"));
            assertFalse(m.peftAdapters().peftConfig().containsKey("x"));
        }
    }
}
