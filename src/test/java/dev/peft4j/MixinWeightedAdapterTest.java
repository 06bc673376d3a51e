package dev.peft4j;

import static dev.peft4j.MixinSupport.maxAbsDiff;
import static dev.peft4j.MixinSupport.res;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.lora.LoraEmbedding;
import dev.peft4j.tuners.lora.LoraLayer;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRef;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * PEFT's {@code add_weighted_adapter} against make_goldens.py's torch restatement: two LoRA adapters of scalings 2
 * and 1 with weights [0.7, -0.4] on Llama q/v (Linear), GPT-2 c_attn (Conv1D, fan_in_fan_out) and Llama embed_tokens
 * (Embedding); the new factors within 1e-6 for cat, linear, ties and magnitude_prune (density 0.5), the new delta B·A
 * within 1e-5 for the svd types (SVD factors are unique only up to signs); the new adapter frozen and not active. The
 * dare types with their real generator: each entry of the result is one of the four sums the two Bernoulli draws
 * allow, rescaled by exactly 1/density, the kept fraction within a binomial bound of the density, the same seed
 * giving the same adapter and another seed another. DoRA sources as PEFT: A and B combined, the new adapter DoRA when
 * the first is, with a fresh adapter's magnitude. PEFT's refusals.
 */
class MixinWeightedAdapterTest {
    private static final List<Double> WEIGHTS = List.of(0.7, -0.4);

    private static Path dir(String name) {
        return res("dev/peft4j/tuners/weighted/" + name);
    }

    /** The model of {@code set} (llama, conv1d, emb) with its two adapters "a" and "b". */
    static PreTrainedModel withTwoAdapters(String set) throws Exception {
        String model = set.equals("conv1d") ? "gpt2-tied" : "llama-gqa-llama3rope";
        String prefix = set.equals("llama") ? "" : set + "_";
        PreTrainedModel m = AutoModel.fromPretrained(res("dev/peft4j/models/golden/" + model), ScalarType.Float);
        m.loadAdapter(dir(prefix + "a").toString(), LoadAdapterOptions.builder().adapterName("a").build());
        m.loadAdapter(dir(prefix + "b").toString(), LoadAdapterOptions.builder().adapterName("b").build());
        return m;
    }

    private static PreTrainedModel withTwoAdapters() throws Exception {
        return withTwoAdapters("llama");
    }

    /** {A, B} of adapter {@code name} on a LoRA Linear / Conv1D or Embedding layer. */
    static Tensor[] factors(BaseTunerLayer l, String name) {
        Map<String, Tensor> p = l.adapterParameters(name);
        if (l instanceof LoraEmbedding) {
            return new Tensor[] {p.get("lora_embedding_A." + name), p.get("lora_embedding_B." + name)};
        }
        return new Tensor[] {p.get("lora_A." + name + ".weight"), p.get("lora_B." + name + ".weight")};
    }

    static double scaling(BaseTunerLayer l, String name) {
        return l instanceof LoraEmbedding e ? e.scaling(name) : ((LoraLayer) l).scaling(name);
    }

    @ParameterizedTest
    @CsvSource({"llama, cat, 8", "llama, linear, 4", "llama, ties, 4", "llama, magnitude_prune, 4", "llama, svd, 4",
        "llama, ties_svd, 4", "llama, magnitude_prune_svd, 4",
        "conv1d, cat, 8", "conv1d, linear, 4", "conv1d, ties, 4", "conv1d, magnitude_prune, 4", "conv1d, svd, 4",
        "conv1d, ties_svd, 4", "conv1d, magnitude_prune_svd, 4",
        "emb, cat, 8", "emb, linear, 4", "emb, ties, 4", "emb, magnitude_prune, 4", "emb, svd, 4",
        "emb, ties_svd, 4", "emb, magnitude_prune_svd, 4"})
    void theNewFactorsMatchTheGoldens(String set, String type, int rank) throws Exception {
        try (PointerScope s = new PointerScope(); PreTrainedModel m = withTwoAdapters(set);
                SafetensorsFile golden = SafetensorsFile.open(dir("golden.safetensors"))) {
            Map<String, Tensor> gt = golden.tensors();
            String name = "w_" + type;
            m.addWeightedAdapter(List.of("a", "b"), WEIGHTS, name, type, 0.5);
            assertEquals(rank, ((LoraConfig) m.peftAdapters().peftConfig().get(name)).r());
            assertEquals(List.of("b"), m.activeAdapters(), "the new adapter is not activated");
            int checked = 0;
            for (Map.Entry<String, BaseTunerLayer> e : m.peftAdapters().tunerLayers().entrySet()) {
                Tensor[] ab = factors(e.getValue(), name);
                Tensor a = ab[0];
                Tensor b = ab[1];
                assertFalse(a.requires_grad() || b.requires_grad(), "frozen");
                String k = type + "/" + e.getKey();
                if (type.endsWith("svd")) {
                    Tensor want = gt.get(k + "/delta");
                    assertNotNull(want, k);
                    Tensor got = b.matmul(a).mul(new Scalar(scaling(e.getValue(), name)));
                    assertTrue(maxAbsDiff(want, got) <= 1e-5, k + ": off by " + maxAbsDiff(want, got));
                } else {
                    assertTrue(maxAbsDiff(gt.get(k + "/A"), a) <= 1e-6, k + "/A off by " + maxAbsDiff(gt.get(k + "/A"), a));
                    assertTrue(maxAbsDiff(gt.get(k + "/B"), b) <= 1e-6, k + "/B off by " + maxAbsDiff(gt.get(k + "/B"), b));
                }
                checked++;
            }
            assertEquals(set.equals("llama") ? 4 : set.equals("conv1d") ? 2 : 1, checked);
        }
    }

    /**
     * dare_linear from the real generator, density 0.3: each entry of the new A (B) is x0·m0 + x1·m1 with
     * x_i = w_i·T_i / density and m_i ∈ {0, 1}; which of the four sums it equals gives the two masks back, and their
     * kept fraction over the 1,792 draws is within 5 standard deviations of the density.
     */
    @Test
    void dareLinearKeepsADensityFractionRescaledByOneOverDensity() throws Exception {
        double density = 0.3;
        try (PointerScope s = new PointerScope(); PreTrainedModel m = withTwoAdapters()) {
            m.addWeightedAdapter(List.of("a", "b"), WEIGHTS, "d", "dare_linear", density, 42L);
            long kept = 0;
            long drawn = 0;
            for (BaseTunerLayer l : m.peftAdapters().tunerLayers().values()) {
                Tensor[] got = factors(l, "d");
                Tensor[] fa = factors(l, "a");
                Tensor[] fb = factors(l, "b");
                for (int f = 0; f < 2; f++) {
                    // sign·√|w·s| on A, √|w·s| on B (scalings 2 and 1)
                    double w0 = Math.sqrt(0.7 * 2);
                    double w1 = f == 0 ? -Math.sqrt(0.4) : Math.sqrt(0.4);
                    Tensor x0 = fa[f].div(new Scalar(density)).mul(new Scalar(w0));
                    Tensor x1 = fb[f].div(new Scalar(density)).mul(new Scalar(w1));
                    Tensor candidates = torch.stack(new TensorArrayRef(new TensorVector(
                            torch.zeros_like(x0), x0, x1, x0.add(x1))), 0);
                    Tensor dist = candidates.sub(got[f].unsqueeze(0)).abs();
                    Tensor best = dist.argmin(new org.bytedeco.pytorch.LongOptional(0), false);
                    double worst = dist.min(0).get0().max().item_double();
                    assertTrue(worst <= 1e-6, "an entry is none of 0, x0, x1, x0 + x1: off by " + worst);
                    // bit 0 of the candidate index is m0, bit 1 is m1
                    kept += best.remainder(new Scalar(2L)).sum().item_long()
                            + best.ge(new Scalar(2L)).sum().item_long();
                    drawn += 2 * got[f].numel();
                }
            }
            assertEquals(1792, drawn);
            double fraction = (double) kept / drawn;
            double bound = 5 * Math.sqrt(density * (1 - density) / drawn);
            assertTrue(Math.abs(fraction - density) <= bound, "kept " + fraction + ", density " + density);
        }
    }

    @ParameterizedTest
    @CsvSource({"dare_linear", "dare_ties", "dare_linear_svd", "dare_ties_svd"})
    void theSameSeedGivesTheSameAdapterAndAnotherSeedAnother(String type) throws Exception {
        try (PointerScope s = new PointerScope(); PreTrainedModel m = withTwoAdapters()) {
            m.addWeightedAdapter(List.of("a", "b"), WEIGHTS, "s1", type, 0.5, 1L);
            m.addWeightedAdapter(List.of("a", "b"), WEIGHTS, "s1again", type, 0.5, 1L);
            m.addWeightedAdapter(List.of("a", "b"), WEIGHTS, "s2", type, 0.5, 2L);
            m.addWeightedAdapter(List.of("a", "b"), WEIGHTS, "default", type, 0.5);
            m.addWeightedAdapter(List.of("a", "b"), WEIGHTS, "default0", type, 0.5, PeftAdapters.DEFAULT_DARE_SEED);
            m.addWeightedAdapter(List.of("a", "b"), WEIGHTS, "plain", type.endsWith("svd") ? "svd" : "linear", null);
            boolean anyDiffers = false;
            boolean differsFromPlain = false;
            for (BaseTunerLayer l : m.peftAdapters().tunerLayers().values()) {
                for (int f = 0; f < 2; f++) {
                    Tensor one = factors(l, "s1")[f];
                    assertTrue(torch.equal(one, factors(l, "s1again")[f]), "same seed, same factors");
                    assertTrue(torch.equal(factors(l, "default")[f], factors(l, "default0")[f]),
                            "no seed means DEFAULT_DARE_SEED");
                    anyDiffers |= !torch.equal(one, factors(l, "s2")[f]);
                    differsFromPlain |= maxAbsDiff(one, factors(l, "plain")[f]) > 1e-3;
                }
            }
            assertTrue(anyDiffers, "another seed, other masks");
            assertTrue(differsFromPlain, "the masks change the result");
        }
    }

    /** PEFT's prune returns a tensor untouched at density 1: dare_linear is then linear (its golden), unrescaled. */
    @Test
    void dareAtDensityOneIsLinear() throws Exception {
        try (PointerScope s = new PointerScope(); PreTrainedModel m = withTwoAdapters();
                SafetensorsFile golden = SafetensorsFile.open(dir("golden.safetensors"))) {
            Map<String, Tensor> gt = golden.tensors();
            m.addWeightedAdapter(List.of("a", "b"), WEIGHTS, "d1", "dare_linear", 1.0, 5L);
            for (Map.Entry<String, BaseTunerLayer> e : m.peftAdapters().tunerLayers().entrySet()) {
                Tensor[] ab = factors(e.getValue(), "d1");
                String k = "linear/" + e.getKey();
                assertTrue(maxAbsDiff(gt.get(k + "/A"), ab[0]) <= 1e-6, k + "/A");
                assertTrue(maxAbsDiff(gt.get(k + "/B"), ab[1]) <= 1e-6, k + "/B");
            }
        }
    }

    /**
     * PEFT combines a DoRA adapter's A and B only. The new adapter copies the first adapter's config: DoRA when the
     * first is (its magnitude the fresh one, ‖W‖ per output row as B starts at zero), plain LoRA when it is not.
     */
    @Test
    void doraSourcesCombineTheirFactorsAndTheFirstDecidesTheNewAdaptersKind() throws Exception {
        try (PointerScope s = new PointerScope(); PreTrainedModel m = withTwoAdapters();
                SafetensorsFile golden = SafetensorsFile.open(dir("golden.safetensors"))) {
            Map<String, Tensor> gt = golden.tensors();
            m.loadAdapter(dir("dora_a").toString(), LoadAdapterOptions.builder().adapterName("da").build());
            m.addWeightedAdapter(List.of("da", "b"), WEIGHTS, "wd", "linear", null);
            m.addWeightedAdapter(List.of("b", "da"), List.of(-0.4, 0.7), "wl", "linear", null);
            assertTrue(((LoraConfig) m.peftAdapters().peftConfig().get("wd")).useDora());
            assertFalse(((LoraConfig) m.peftAdapters().peftConfig().get("wl")).useDora());
            for (Map.Entry<String, BaseTunerLayer> e : m.peftAdapters().tunerLayers().entrySet()) {
                LoraLayer l = (LoraLayer) e.getValue();
                String k = e.getKey();
                for (String n : List.of("wd", "wl")) {
                    Tensor[] ab = factors(l, n);
                    assertTrue(maxAbsDiff(gt.get("linear/" + k + "/A"), ab[0]) <= 1e-6, n + " " + k + "/A");
                    assertTrue(maxAbsDiff(gt.get("linear/" + k + "/B"), ab[1]) <= 1e-6, n + " " + k + "/B");
                }
                Tensor mag = l.magnitude("wd");
                assertNotNull(mag, k);
                assertTrue(maxAbsDiff(gt.get("dora/" + k + "/magnitude"), mag) <= 1e-5, k + ": magnitude off by "
                        + maxAbsDiff(gt.get("dora/" + k + "/magnitude"), mag));
                assertTrue(maxAbsDiff(l.magnitude("da"), mag) > 1e-2, "the source's magnitude is not used");
                assertFalse(mag.requires_grad(), "frozen");
                assertNull(l.magnitude("wl"), k);
            }
            m.setAdapter("wd");
            Tensor ids = Tensor.create(new long[] {1, 5, 9, 3}, 1, 4);
            Tensor logits = ((dev.peft4j.models.CausalLM) m).forward(ids, null, null, null);
            assertFalse(logits.isnan().any().item_bool(), "the DoRA adapter runs");
        }
    }

    @Test
    void peftsRefusals() throws Exception {
        try (PointerScope s = new PointerScope(); PreTrainedModel m = withTwoAdapters()) {
            assertEquals("Adapter c does not exist", assertThrows(IllegalArgumentException.class,
                    () -> m.addWeightedAdapter(List.of("a", "c"), List.of(1.0, 1.0), "x", "cat", null)).getMessage());
            assertEquals("Invalid combination_type: nope", assertThrows(IllegalArgumentException.class,
                    () -> m.addWeightedAdapter(List.of("a", "b"), List.of(1.0, 1.0), "x", "nope", null)).getMessage());
            assertTrue(assertThrows(IllegalArgumentException.class, () -> m.addWeightedAdapter(List.of("a", "b"),
                    List.of(1.0, 1.0), "x", "dare_ties", null)).getMessage().contains("needs a density"));
            assertTrue(assertThrows(IllegalArgumentException.class, () -> m.addWeightedAdapter(List.of("a", "b"),
                    List.of(1.0, 1.0), "x", "dare_linear_svd", 0.0)).getMessage().contains("density 0"));
            assertTrue(assertThrows(IllegalArgumentException.class, () -> m.peftAdapters().addWeightedAdapter(
                    List.of("a", "b"), List.of(1.0, 1.0), "x", "dare_linear", null, null, 0.5, "total", null))
                    .getMessage().contains("needs a generator"));
            m.addAdapter(LoraConfig.builder().r(2).targetModules("q_proj", "v_proj").build(), "r2");
            for (String type : List.of("linear", "dare_linear", "dare_ties")) {
                assertTrue(assertThrows(IllegalArgumentException.class, () -> m.addWeightedAdapter(List.of("a", "r2"),
                        List.of(1.0, 1.0), "x", type, 0.5)).getMessage().startsWith("All adapters must have the same r"),
                        type);
            }
            assertFalse(m.peftAdapters().peftConfig().containsKey("x"));
        }
    }
}
