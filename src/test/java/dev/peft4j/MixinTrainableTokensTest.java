package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static dev.peft4j.MixinSupport.res;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.models.SlotKVCache;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Linear;
import dev.peft4j.train.Trainer;
import dev.peft4j.train.TrainingArguments;
import dev.peft4j.tuners.TrainableTokensLayer;
import dev.peft4j.tuners.TrainableTokensWrapper;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * LoRA's {@code trainable_token_indices} (PEFT's TrainableTokensLayer) through the mixin: logits against
 * make_goldens.py's independent torch restatement (a list on an untied Llama, a dict of embedding and head, a list on
 * GPT-2 whose head is tied to wte; within 1e-5 in float32), disable, merge and unmerge, PEFT's saved layout, a fresh
 * adapter that changes nothing until trained and trains only its rows, mixed batches, PEFT's overlap error and the
 * refusals.
 */
class MixinTrainableTokensTest {
    static final double TOL = 1e-5;

    @TempDir
    Path tmp;

    private static Path base(String name) {
        return res("dev/peft4j/models/golden/" + name);
    }

    private static Path adapter(String name) {
        return res("dev/peft4j/tuners/trainable_tokens/" + name);
    }

    /** Row 0 whole, row 1 at its real positions (it is left-padded by 2). */
    private static double goldenDiff(Tensor want, Tensor got) {
        double d0 = maxAbsDiff(want.select(0, 0), got.select(0, 0));
        double d1 = maxAbsDiff(want.select(0, 1).narrow(0, 2, 5), got.select(0, 1).narrow(0, 2, 5));
        return Math.max(d0, d1);
    }

    private static Tensor forward(PreTrainedModel m, Tensor ids, Tensor mask) {
        return ((CausalLM) m).forward(ids, mask, null, null);
    }

    private static Tensor embeddingWeight(PreTrainedModel m, String module) {
        Object w = m.getSubmodule(module);
        Object base = w instanceof TrainableTokensWrapper tw ? tw.originalModule() : w;
        return base instanceof Embedding e ? e.weight() : ((Linear) base).weight();
    }

    @ParameterizedTest
    @CsvSource({"llama-list, llama-gqa-llama3rope, model.embed_tokens, ''",
            "llama-dict, llama-gqa-llama3rope, model.embed_tokens, lm_head",
            "gpt2-tied-list, gpt2-tied, transformer.wte, lm_head"})
    void logitsMatchTheGoldensDisabledMergedAndUnmerged(String adapterCase, String baseCase, String embedding,
            String head) throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel m = AutoModel.fromPretrained(base(baseCase), ScalarType.Float);
                SafetensorsFile golden = SafetensorsFile.open(adapter(adapterCase).resolve("golden.safetensors"))) {
            Map<String, Tensor> gt = golden.tensors();
            Tensor ids = gt.get("input_ids");
            Tensor mask = gt.get("attention_mask");
            Tensor plain = forward(m, ids, mask);
            Tensor embBefore = embeddingWeight(m, embedding).clone();
            AdapterLoadReport r = m.loadAdapter(adapter(adapterCase));
            assertEquals(List.of(), r.missingKeys(), "every delta, A and B filled");
            assertEquals(List.of(), r.unexpectedKeys());
            TrainableTokensWrapper w = assertInstanceOf(TrainableTokensWrapper.class, m.getSubmodule(embedding));
            assertNull(w.tokenAdapter().tiedTo());
            if (head.isEmpty()) {
                assertInstanceOf(Linear.class, m.getSubmodule("lm_head"), "an untied head is left alone");
            } else {
                TrainableTokensWrapper hw = assertInstanceOf(TrainableTokensWrapper.class, m.getSubmodule(head));
                if (baseCase.equals("gpt2-tied")) {
                    assertSame(w.tokenAdapter(), hw.tokenAdapter().tiedTo(), "the tied head follows wte's rows");
                } else {
                    assertNull(hw.tokenAdapter().tiedTo(), "an untied head has its own rows");
                }
            }
            Tensor want = gt.get("logits");
            assertTrue(maxAbsDiff(plain, want) > 1e-1, "the adapter changes the logits");
            assertTrue(goldenDiff(want, forward(m, ids, mask)) <= TOL, "autograd on");
            try (NoGradGuard g = new NoGradGuard()) {
                assertTrue(goldenDiff(want, forward(m, ids, mask)) <= TOL, "inference");
            }
            m.disableAdapters();
            assertTrue(bitEqual(plain, forward(m, ids, mask)), "disabled: the base model exactly");
            m.enableAdapters();
            m.mergeAdapter();
            assertFalse(bitEqual(embBefore, embeddingWeight(m, embedding)), "merged rows are in the weight");
            assertTrue(goldenDiff(want, forward(m, ids, mask)) <= TOL, "merged");
            m.unmergeAdapter();
            assertTrue(bitEqual(embBefore, embeddingWeight(m, embedding)), "unmerge writes back the original rows");
            assertTrue(goldenDiff(want, forward(m, ids, mask)) <= TOL, "unmerged again");
        }
    }

    @Test
    void savedInPeftsLayoutAndReloadedExactly() throws Exception {
        for (String c : List.of("llama-dict", "gpt2-tied-list")) {
            String baseCase = c.startsWith("gpt2") ? "gpt2-tied" : "llama-gqa-llama3rope";
            Path out = tmp.resolve(c);
            Tensor ids;
            Tensor first;
            try (PreTrainedModel m = AutoModel.fromPretrained(base(baseCase), ScalarType.Float);
                    SafetensorsFile golden = SafetensorsFile.open(adapter(c).resolve("golden.safetensors"))) {
                ids = golden.tensors().get("input_ids").clone();
                m.loadAdapter(adapter(c));
                first = forward(m, ids, null);
                m.saveAdapter(out, null);
            }
            try (SafetensorsFile want = SafetensorsFile.open(adapter(c).resolve("adapter_model.safetensors"));
                    SafetensorsFile got = SafetensorsFile.open(out.resolve("adapter_model.safetensors"))) {
                assertEquals(new TreeSet<>(want.tensors().keySet()), new TreeSet<>(got.tensors().keySet()),
                        c + ": PEFT's keys, the tied head saving nothing");
                for (String k : want.tensors().keySet()) {
                    assertTrue(bitEqual(want.tensors().get(k), got.tensors().get(k)), k);
                }
            }
            String json = java.nio.file.Files.readString(out.resolve("adapter_config.json"));
            assertTrue(json.contains("\"trainable_token_indices\""), json);
            try (PreTrainedModel m = AutoModel.fromPretrained(base(baseCase), ScalarType.Float)) {
                m.loadAdapter(out);
                assertTrue(bitEqual(first, forward(m, ids, null)), c + ": reloaded");
            }
        }
    }

    private static LoraConfig tokens(Object indices) {
        return LoraConfig.builder().r(4).loraAlpha(8).targetModules("c_attn").set("trainable_token_indices", indices)
                .build();
    }

    @Test
    void aFreshAdapterChangesNothingAndTrainsOnlyItsRows() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel m = AutoModel.fromPretrained(base("gpt2-tied"), ScalarType.Float)) {
            Tensor ids = torch.arange(new Scalar(16L)).remainder(new Scalar(5L)).add(new Scalar(3L)).reshape(2, 8);
            Tensor plain = forward(m, ids, null);
            Tensor wte = embeddingWeight(m, "transformer.wte").clone();
            m.addAdapter(tokens(List.of(3L, 4L, 40L)), "fit");
            // the rows start as the base rows and B = 0; the tied head recomputes the set's logit columns with their
            // own product, equal to the full one up to float rounding
            assertTrue(maxAbsDiff(plain, forward(m, ids, null)) <= 1e-6, "a fresh adapter changes nothing");
            TrainableTokensLayer layer = ((TrainableTokensWrapper) m.getSubmodule("transformer.wte")).tokenAdapter();
            Tensor delta0 = layer.delta("fit").clone();
            assertTrue(bitEqual(wte.index_select(0, Tensor.create(new long[] {3, 4, 40}, 3)), delta0));
            assertTrue(layer.delta("fit").requires_grad(), "the rows train");
            assertFalse(embeddingWeight(m, "transformer.wte").requires_grad(), "the embedding is frozen");
            Trainer.TrainOutput out = new Trainer(m, TrainingArguments.builder().learningRate(1e-2).maxSteps(3)
                    .seed(3).build()).train(List.of(Trainer.Batch.causalLM(ids, null)));
            assertEquals(3, out.globalStep());
            assertTrue(maxAbsDiff(delta0, layer.delta("fit")) > 1e-6, "the rows moved");
            assertTrue(bitEqual(wte, embeddingWeight(m, "transformer.wte")), "the embedding weight did not");
            // the tied head reads the trained rows: its logit column for token 40 (never an input) moved too
            Tensor trained = forward(m, ids, null);
            assertTrue(maxAbsDiff(plain.select(2, 40), trained.select(2, 40)) > 1e-6);
            m.saveAdapter(tmp.resolve("fit"), "fit");
            try (SafetensorsFile f = SafetensorsFile.open(tmp.resolve("fit").resolve("adapter_model.safetensors"))) {
                Tensor saved = f.tensors().get("base_model.model.transformer.wte.token_adapter.trainable_tokens_delta");
                assertTrue(bitEqual(layer.delta("fit"), saved), "the trained rows are saved");
                assertFalse(f.tensors().keySet().stream().anyMatch(k -> k.startsWith("base_model.model.lm_head")));
            }
        }
    }

    @Test
    void mixedBatchesOverlapsAndDeletion() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel m = AutoModel.fromPretrained(base("gpt2-tied"), ScalarType.Float)) {
            Tensor ids = torch.arange(new Scalar(16L)).remainder(new Scalar(7L)).add(new Scalar(2L)).reshape(2, 8);
            Tensor plain = forward(m, ids, null);
            m.loadAdapter(adapter("gpt2-tied-list").toString(),
                    LoadAdapterOptions.builder().adapterName("a").build());
            Tensor a = forward(m, ids, null);
            Tensor mixed = m.withAdapterNames(List.of("__base__", "a"), () -> forward(m, ids, null));
            assertTrue(maxAbsDiff(plain.select(0, 0), mixed.select(0, 0)) <= TOL, "row 0: the base");
            assertTrue(maxAbsDiff(a.select(0, 1), mixed.select(0, 1)) <= TOL, "row 1: adapter a");
            // a second adapter whose rows overlap a's: each alone is fine, both at once is PEFT's error
            m.addAdapter(tokens(List.of(5L, 9L)), "b");
            TrainableTokensLayer layer = ((TrainableTokensWrapper) m.getSubmodule("transformer.wte")).tokenAdapter();
            assertEquals(List.of("a", "b"), layer.adapterNames());
            forward(m, ids, null);
            m.setAdapter("a", "b");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> forward(m, ids, null));
            assertEquals("Token indices of adapter b are already defined and would result in undefined merging "
                    + "behavior. Only disjunct token indices are currently supported.", e.getMessage());
            m.deleteAdapter("a", "b");
            assertTrue(bitEqual(plain, forward(m, ids, null)), "no adapter left: the base model");
        }
    }

    @Test
    void theSlotDecodePathSeesTheRows() throws Exception {
        try (PointerScope s = new PointerScope(); InferenceMode g = new InferenceMode();
                PreTrainedModel m = AutoModel.fromPretrained(base("llama-gqa-llama3rope"), ScalarType.Float)) {
            m.loadAdapter(adapter("llama-dict"));
            CausalLM lm = (CausalLM) m;
            try (SlotKVCache slots = lm.newSlotCache(2, 16)) {
                Tensor ids = Tensor.create(new long[] {3, 17, 42, 8, 5, 48}, 1, 6);
                Tensor full = lm.forward(ids, null, null, null);
                Tensor prefill = lm.forwardSlots(ids.narrow(1, 0, 5), slots, new int[] {1}, new long[] {0});
                Tensor step = lm.forwardSlots(ids.narrow(1, 5, 1), slots, new int[] {1}, new long[] {5});
                assertTrue(maxAbsDiff(full.select(1, 4), prefill) <= TOL, "prefill");
                assertTrue(maxAbsDiff(full.select(1, 5), step) <= TOL, "decode step (id 48 is a trained row)");
            }
        }
    }

    @Test
    void theServingEngineRefusesATrainableTokensAdapterAtRegistration() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel m = AutoModel.fromPretrained(base("llama-gqa-llama3rope"), ScalarType.Float);
                dev.peft4j.serve.ServingEngine e = dev.peft4j.serve.ServingEngine.builder(m).maxConcurrent(2)
                        .maxLength(32).threads(1).build()) {
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class,
                    () -> e.register("t", adapter("llama-dict")));
            assertTrue(x.getMessage().contains("trainable_token_indices") && x.getMessage().contains("llama-dict"),
                    x.getMessage());
        }
    }

    @Test
    void bitEqualToTheBaseForTokensOutsideTheSet() {
        try (PointerScope s = new PointerScope(); PreTrainedModel m = MixinSupport.tinyLlama(5)) {
            Tensor ids = Tensor.create(new long[] {1, 2, 3, 4, 5, 6}, 1, 6);
            m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj")
                    .set("trainable_token_indices", List.of(20L, 21L)).build(), "t");
            TrainableTokensLayer layer = ((TrainableTokensWrapper) m.getSubmodule("model.embed_tokens"))
                    .tokenAdapter();
            try (NoGradGuard g = new NoGradGuard()) {
                layer.delta("t").add_(new Scalar(1.0));
            }
            Embedding e = (Embedding) layer.baseLayer();
            assertTrue(bitEqual(e.forward(ids), layer.forward(ids)), "ids outside the set: the base rows exactly");
            Tensor withSet = layer.forward(Tensor.create(new long[] {20, 3}, 1, 2));
            assertTrue(bitEqual(layer.delta("t").select(0, 0), withSet.select(0, 0).select(0, 0)), "id 20: its new row");
        }
    }

    @Test
    void refusalsNameTheProblemAndLeaveTheModelAsItWas() throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj").build(), "keep");
            Map<String, Tensor> before = MixinLoraTest.snapshot(m);
            LoraConfig.Builder b = LoraConfig.builder().r(4).loraAlpha(8).targetModules("v_proj");
            IllegalArgumentException notFound = assertThrows(IllegalArgumentException.class, () -> m.addAdapter(
                    b.set("trainable_token_indices", Map.of("nope", List.of(1L))).build(), "x"));
            assertEquals("Target modules {'nope'} not found in the base model. Please check the target modules and "
                    + "try again.", notFound.getMessage());
            IllegalArgumentException both = assertThrows(IllegalArgumentException.class, () -> m.addAdapter(
                    b.set("trainable_token_indices", Map.of("embed_tokens", List.of(1L)))
                            .modulesToSave(List.of("embed_tokens")).build(), "x"));
            assertTrue(both.getMessage().startsWith("The embedding layer is already marked to be trained fully"),
                    both.getMessage());
            IllegalArgumentException range = assertThrows(IllegalArgumentException.class, () -> m.addAdapter(
                    LoraConfig.builder().r(4).loraAlpha(8).targetModules("v_proj")
                            .set("trainable_token_indices", List.of(1L, 32L)).build(), "x"));
            assertTrue(range.getMessage().contains("token index 32 is out of range") && range.getMessage()
                    .contains("'x'"), range.getMessage());
            UnsupportedOperationException onLora = assertThrows(UnsupportedOperationException.class, () -> m.addAdapter(
                    LoraConfig.builder().r(4).loraAlpha(8).targetModules("embed_tokens")
                            .set("trainable_token_indices", List.of(1L)).build(), "x"));
            assertTrue(onLora.getMessage().contains("'model.embed_tokens'"), onLora.getMessage());
            MixinLoraTest.assertSameState(before, m);
            assertEquals(List.of("keep"), List.copyOf(m.peftAdapters().peftConfig().keySet()));
        }
    }
}
