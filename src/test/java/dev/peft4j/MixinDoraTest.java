package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static dev.peft4j.MixinSupport.res;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.kernels.Kernels;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Linear;
import dev.peft4j.train.Trainer;
import dev.peft4j.train.TrainingArguments;
import dev.peft4j.tuners.lora.LoraEmbedding;
import dev.peft4j.tuners.lora.LoraLayer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * DoRA ({@code use_dora=True}) through the mixin: logits against make_goldens.py's independent torch restatement of
 * PEFT's DoRA (tiny Llama q/v, the same Llama's embed_tokens, tiny GPT-2's Conv1D c_attn; unmerged and merged,
 * within 1e-5 in float32), the checkpoint key layouts, save and reload, PEFT's mixed-batch rule, the initial
 * magnitude of a fresh adapter and training through the Trainer.
 */
class MixinDoraTest {
    static final double TOL = 1e-5;

    @TempDir
    Path tmp;

    private static Path base(String name) {
        return res("dev/peft4j/models/golden/" + name);
    }

    private static Path adapter(String name) {
        return res("dev/peft4j/tuners/dora/" + name);
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

    @ParameterizedTest
    @CsvSource({"llama-qv, llama-gqa-llama3rope", "llama-embed, llama-gqa-llama3rope", "gpt2-c_attn, gpt2-tied"})
    void logitsMatchTheGoldensUnmergedMergedAndUnmergedAgain(String adapterCase, String baseCase) throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel m = AutoModel.fromPretrained(base(baseCase), ScalarType.Float);
                SafetensorsFile golden = SafetensorsFile.open(adapter(adapterCase).resolve("golden.safetensors"))) {
            Map<String, Tensor> gt = golden.tensors();
            Tensor ids = gt.get("input_ids");
            Tensor mask = gt.get("attention_mask");
            Tensor plain = forward(m, ids, mask);
            AdapterLoadReport r = m.loadAdapter(adapter(adapterCase));
            assertEquals(List.of(), r.missingKeys(), "every magnitude, A and B filled");
            assertEquals(List.of(), r.unexpectedKeys());
            Tensor unmerged = gt.get("logits_unmerged");
            assertTrue(maxAbsDiff(plain, unmerged) > 1e-2, "the adapter changes the logits");
            // autograd on: the composed ops
            assertGolden(unmerged, forward(m, ids, mask), adapterCase + " composed");
            // inference: the fused kernels (decode kernel on nn.Linear, GEMM + native rescale on Conv1D)
            long calls = Kernels.layerCalls();
            try (NoGradGuard g = new NoGradGuard()) {
                assertGolden(unmerged, forward(m, ids, mask), adapterCase + " fused");
                if (!adapterCase.equals("llama-embed")) {
                    assertTrue(Kernels.layerCalls() > calls, "the native kernels served the adapted layers");
                }
                // 28 rows: past the decode kernel, libtorch's GEMM then the native delta and rescale
                Tensor ids4 = torch.cat(new TensorVector(ids, ids));
                Tensor mask4 = torch.cat(new TensorVector(mask, mask));
                Tensor big = forward(m, ids4, mask4);
                assertGolden(unmerged, big.narrow(0, 2, 2), adapterCase + " fused, GEMM path");
            }
            m.disableAdapters();
            assertTrue(bitEqual(plain, forward(m, ids, mask)), "disabled: the base model exactly");
            m.enableAdapters();
            m.mergeAdapter();
            assertGolden(gt.get("logits_merged"), forward(m, ids, mask), adapterCase + " merged");
            m.unmergeAdapter();
            assertGolden(unmerged, forward(m, ids, mask), adapterCase + " unmerged again");
            assertTrue(maxAbsDiff(plain, withAdaptersDisabled(m, ids, mask)) < 1e-5,
                    "the round trip restores the base weights");
        }
    }

    private static Tensor withAdaptersDisabled(PreTrainedModel m, Tensor ids, Tensor mask) {
        m.disableAdapters();
        try {
            return forward(m, ids, mask);
        } finally {
            m.enableAdapters();
        }
    }

    @Test
    void theMagnitudeLoadsWithAndWithoutItsWeightLeafAndSavesWithout() throws Exception {
        Path src = adapter("gpt2-c_attn");
        Path withLeaf = Files.createDirectories(tmp.resolve("with-leaf"));
        Files.copy(src.resolve("adapter_config.json"), withLeaf.resolve("adapter_config.json"));
        try (PointerScope s = new PointerScope();
                SafetensorsFile f = SafetensorsFile.open(src.resolve("adapter_model.safetensors"))) {
            Map<String, Tensor> renamed = new LinkedHashMap<>();
            int magnitudes = 0;
            for (Map.Entry<String, Tensor> e : f.tensors().entrySet()) {
                boolean mag = e.getKey().endsWith(".lora_magnitude_vector");
                magnitudes += mag ? 1 : 0;
                renamed.put(mag ? e.getKey() + ".weight" : e.getKey(), e.getValue().clone());
            }
            assertEquals(2, magnitudes, "PEFT's layout: no .weight");
            SafetensorsFile.write(withLeaf.resolve("adapter_model.safetensors"), renamed);
        }
        Path saved = tmp.resolve("saved");
        try (PointerScope s = new PointerScope();
                PreTrainedModel a = AutoModel.fromPretrained(base("gpt2-tied"), ScalarType.Float);
                PreTrainedModel b = AutoModel.fromPretrained(base("gpt2-tied"), ScalarType.Float)) {
            Tensor x = ids(2, 6, 50, 5);
            a.loadAdapter(src);
            AdapterLoadReport r = b.loadAdapter(withLeaf);
            assertEquals(List.of(), r.missingKeys());
            assertEquals(List.of(), r.unexpectedKeys());
            Tensor la = logits(a, x);
            assertTrue(bitEqual(la, logits(b, x)), "both layouts give the same adapter");
            Map<String, Tensor> sd = a.getAdapterStateDict("default");
            assertTrue(sd.containsKey("transformer.h.0.attn.c_attn.lora_magnitude_vector"), sd.keySet().toString());
            assertFalse(sd.keySet().stream().anyMatch(k -> k.endsWith("lora_magnitude_vector.weight")));
            assertEquals(6, sd.size(), "A, B and m of two layers");
            LoraLayer layer = (LoraLayer) a.getSubmodule("transformer.h.0.attn.c_attn");
            assertNotNull(layer.adapterParameters("default").get("lora_magnitude_vector.default.weight"),
                    "in memory: PEFT's module key");
            a.saveAdapter(saved, "default");
        }
        try (PointerScope s = new PointerScope();
                SafetensorsFile f = SafetensorsFile.open(saved.resolve("adapter_model.safetensors"));
                SafetensorsFile orig = SafetensorsFile.open(src.resolve("adapter_model.safetensors"))) {
            assertEquals(new java.util.TreeSet<>(orig.names()), new java.util.TreeSet<>(f.names()),
                    "saved under PEFT's checkpoint keys");
            for (String k : orig.names()) {
                assertTrue(bitEqual(orig.tensors().get(k), f.tensors().get(k)), k);
            }
            assertTrue(Files.readString(saved.resolve("adapter_config.json")).contains("\"use_dora\": true"));
        }
    }

    @Test
    void mixedBatchesMayNotNameADoraAdapterButMayRunOthersBesideOne() {
        try (PointerScope s = new PointerScope(); PreTrainedModel m = MixinSupport.tinyLlama(31)) {
            m.addAdapter(LoraConfig.builder().r(2).targetModules("q_proj", "v_proj", "embed_tokens").useDora(true)
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build(), "dora");
            m.addAdapter(LoraConfig.builder().r(2).targetModules("q_proj", "v_proj")
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build(), "plain");
            Tensor x = ids(2, 4, 32, 6);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.withAdapterNames(List.of("dora", "__base__"), () -> logits(m, x)));
            assertEquals("Cannot pass `adapter_names` when DoRA is enabled.", e.getMessage());
            try (NoGradGuard g = new NoGradGuard()) {
                assertThrows(IllegalArgumentException.class,
                        () -> m.withAdapterNames(List.of("plain", "dora"), () -> logits(m, x)), "fused path too");
                Tensor mixed = m.withAdapterNames(List.of("plain", "__base__"), () -> logits(m, x));
                m.setAdapter("plain");
                Tensor plainOnly = logits(m, x.narrow(0, 0, 1));
                assertTrue(maxAbsDiff(plainOnly, mixed.narrow(0, 0, 1)) < 1e-5, "row 0: the plain adapter");
                m.disableAdapters();
                Tensor base = logits(m, x.narrow(0, 1, 1));
                m.enableAdapters();
                assertTrue(maxAbsDiff(base, mixed.narrow(0, 1, 1)) < 1e-5, "row 1: the base model");
            }
        }
    }

    @Test
    void theServingEngineRefusesADoraAdapterAtRegistration() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel m = AutoModel.fromPretrained(base("llama-gqa-llama3rope"), ScalarType.Float);
                dev.peft4j.serve.ServingEngine e = dev.peft4j.serve.ServingEngine.builder(m).maxConcurrent(2)
                        .maxLength(32).threads(1).build()) {
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class,
                    () -> e.register("d", adapter("llama-qv")));
            assertTrue(x.getMessage().contains("DoRA") && x.getMessage().contains("adapter_names"), x.getMessage());
        }
    }

    @Test
    void aFreshDoraAdapterStartsAtTheWeightNormAndIsANoOp() {
        try (PointerScope s = new PointerScope(); PreTrainedModel m = MixinSupport.tinyLlama(32)) {
            Tensor x = ids(2, 5, 32, 7);
            Tensor base = logits(m, x);
            m.addAdapter(LoraConfig.builder().r(4).targetModules("q_proj", "embed_tokens").useDora(true).build());
            LoraLayer q = (LoraLayer) m.getSubmodule("model.layers.0.self_attn.q_proj");
            Tensor w = ((Linear) q.baseLayer()).weight();
            Tensor want = w.mul(w).sum(new long[] {1}, false, new org.bytedeco.pytorch.ScalarTypeOptional()).sqrt();
            assertTrue(maxAbsDiff(want, q.magnitude("default")) < 1e-6, "m = row norms of W (B = 0)");
            LoraEmbedding emb = (LoraEmbedding) m.getSubmodule("model.embed_tokens");
            assertEquals(16, emb.magnitude("default").size(0), "one entry per embedding dimension");
            assertTrue(maxAbsDiff(base, logits(m, x)) < 1e-6, "f = 1 and B·A = 0");
            assertNull(q.magnitude("other"));
        }
    }

    @Test
    void theTrainerMovesTheMagnitudeAndAAndBAndSavesThem() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel m = AutoModel.fromPretrained(base("gpt2-tied"), ScalarType.Float)) {
            m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules("c_attn").useDora(true).build(), "fit");
            LoraLayer layer = (LoraLayer) m.getSubmodule("transformer.h.1.attn.c_attn");
            Map<String, Tensor> before = new LinkedHashMap<>();
            layer.adapterParameters("fit").forEach((k, v) -> before.put(k, v.clone()));
            Tensor baseW = ((Conv1D) layer.baseLayer()).weight().clone();
            Tensor ids = torch.arange(new Scalar(16L)).remainder(new Scalar(5L)).add(new Scalar(3L)).reshape(2, 8);
            Trainer.TrainOutput out = new Trainer(m, TrainingArguments.builder().learningRate(1e-2).maxSteps(3)
                    .seed(3).build()).train(List.of(Trainer.Batch.causalLM(ids, null)));
            assertEquals(3, out.globalStep());
            for (Map.Entry<String, Tensor> e : before.entrySet()) {
                Tensor now = layer.adapterParameters("fit").get(e.getKey());
                assertTrue(maxAbsDiff(e.getValue(), now) > 1e-6, e.getKey() + " did not move");
            }
            assertTrue(bitEqual(baseW, ((Conv1D) layer.baseLayer()).weight()), "the base weight is frozen");
            m.saveAdapter(tmp.resolve("fit"), "fit");
            try (SafetensorsFile f = SafetensorsFile.open(tmp.resolve("fit").resolve("adapter_model.safetensors"))) {
                Tensor saved = f.tensors().get("base_model.model.transformer.h.1.attn.c_attn.lora_magnitude_vector");
                assertTrue(bitEqual(layer.magnitude("fit"), saved), "the trained magnitude is saved");
            }
        }
    }
}
