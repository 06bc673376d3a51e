package dev.peft4j.tuners.lora;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.LoadAdapterOptions;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.tuners.BaseTunerLayer;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The {@code dare_*} types of add_weighted_adapter with the Bernoulli masks that make_goldens.py drew in torch
 * injected in their place: the new factors (within 1e-6) or, for the svd types, the new delta B·A (within 1e-5) equal
 * PEFT's, restated in torch, on Linear (Llama q/v), Conv1D (GPT-2 c_attn: the masks in get_delta_weight's transposed
 * layout) and Embedding layers; every mask is asked for in PEFT's order and shape, and all of them are used.
 */
class WeightedAdaptersDareTest {
    private static Path res(String relative) {
        try {
            return Path.of(WeightedAdaptersDareTest.class.getResource("/" + relative).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    @ParameterizedTest
    @CsvSource({"llama, dare_linear", "llama, dare_ties", "llama, dare_linear_svd", "llama, dare_ties_svd",
        "conv1d, dare_linear", "conv1d, dare_ties", "conv1d, dare_linear_svd", "conv1d, dare_ties_svd",
        "emb, dare_linear", "emb, dare_ties", "emb, dare_linear_svd", "emb, dare_ties_svd"})
    void theFactorsMatchTheGoldensWithTheirMasks(String set, String type) throws Exception {
        String model = set.equals("conv1d") ? "gpt2-tied" : "llama-gqa-llama3rope";
        String prefix = set.equals("llama") ? "" : set + "_";
        Path dir = res("dev/peft4j/tuners/weighted");
        List<String> adapters = List.of("a", "b");
        List<Double> weights = List.of(0.7, -0.4);
        try (PointerScope s = new PointerScope();
                PreTrainedModel m = AutoModel.fromPretrained(res("dev/peft4j/models/golden/" + model),
                        ScalarType.Float);
                SafetensorsFile golden = SafetensorsFile.open(dir.resolve("golden.safetensors"))) {
            Map<String, Tensor> gt = golden.tensors();
            for (String a : adapters) {
                m.loadAdapter(dir.resolve(prefix + a).toString(), LoadAdapterOptions.builder().adapterName(a).build());
            }
            boolean svd = type.endsWith("svd");
            // a rank-4 adapter injected and combined by the public path; combineMasked overwrites it
            m.addWeightedAdapter(adapters, weights, "x", svd ? "svd" : "linear", null);
            int checked = 0;
            for (Map.Entry<String, BaseTunerLayer> e : m.peftAdapters().tunerLayers().entrySet()) {
                String k = type + "/" + e.getKey();
                Deque<Tensor> masks = new ArrayDeque<>();
                for (int i = 0; gt.containsKey(k + "/mask" + i); i++) {
                    masks.add(gt.get(k + "/mask" + i));
                }
                assertEquals(svd ? 2 : 4, masks.size(), k);
                WeightedAdapters.combineMasked(e.getValue(), "x", adapters, weights, type, 4, null, 0.5, "total",
                        (t, density) -> {
                            assertEquals(0.5, density);
                            Tensor mask = masks.poll();
                            assertNotNull(mask, k + ": more masks asked for than PEFT draws");
                            assertArrayEquals(mask.shape(), t.shape(), k + ": a mask for another layout");
                            return mask;
                        });
                assertTrue(masks.isEmpty(), k + ": fewer masks asked for than PEFT draws");
                Map<String, Tensor> p = e.getValue().adapterParameters("x");
                boolean emb = e.getValue() instanceof LoraEmbedding;
                Tensor a = p.get(emb ? "lora_embedding_A.x" : "lora_A.x.weight");
                Tensor b = p.get(emb ? "lora_embedding_B.x" : "lora_B.x.weight");
                if (svd) {
                    Tensor got = b.matmul(a); // the new adapter's scaling is r / r = 1
                    double off = got.sub(gt.get(k + "/delta")).abs().max().item_double();
                    assertTrue(off <= 1e-5, k + ": delta off by " + off);
                } else {
                    double offA = a.sub(gt.get(k + "/A")).abs().max().item_double();
                    double offB = b.sub(gt.get(k + "/B")).abs().max().item_double();
                    assertTrue(offA <= 1e-6 && offB <= 1e-6, k + ": A off by " + offA + ", B by " + offB);
                    assertTrue(a.ne(new Scalar(0.0)).sum().item_long() < a.numel(), k + ": some entries pruned");
                }
                checked++;
            }
            assertEquals(set.equals("llama") ? 4 : set.equals("conv1d") ? 2 : 1, checked);
        }
    }
}
