package dev.peft4j.models;

import static dev.peft4j.models.Goldens.assertClose;
import static dev.peft4j.models.Goldens.assertPaddedClose;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.PeftAdapterMixin;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Gemma, Gemma 2, Gemma 3 (text), Qwen3, Phi-3 and sliding-window Qwen2 against gen_family_goldens.py's independent
 * torch reference (tiny seeded models): base, LoRA-adapted and merged logits within 1e-5 in fp32, the KV cache, and
 * greedy generation.
 */
class FamilyGoldenTest {
    static final float TOL = 1e-5f;

    @ParameterizedTest
    @CsvSource({"gemma-mqa-headdim, GemmaForCausalLM", "gemma2-softcap-sliding, Gemma2ForCausalLM",
        "gemma3-qknorm-localrope, Gemma3ForCausalLM", "qwen3-qknorm-sliding, Qwen3ForCausalLM",
        "phi3-longrope-partial, Phi3ForCausalLM", "phi3-longrope-long, Phi3ForCausalLM",
        "qwen2-slidingwindow, LlamaForCausalLM"})
    void baseAdaptedAndMergedLogitsMatchReference(String name, String type) throws Exception {
        try (Goldens.Case<CausalLM> c = Goldens.causalLM(name)) {
            CausalLM lm = c.model;
            Tensor ids = c.ids;
            Tensor mask = c.mask;
            assertEquals(type, lm.getClass().getSimpleName());
            assertPaddedClose(c.golden("logits"), lm.forward(ids, mask, null, null), TOL, name + " base");
            Tensor alone = lm.forward(ids.narrow(0, 1, 1).narrow(1, 2, 5), null, null, null);
            assertClose(c.golden("row1_unpadded_logits"), alone, TOL, name + " unpadded row");

            PeftAdapterMixin peft = (PeftAdapterMixin) lm;
            peft.loadAdapter(c.dir.resolve("adapter"));
            assertPaddedClose(c.golden("adapted_logits"), lm.forward(ids, mask, null, null), TOL, name + " adapted");
            peft.disableAdapters();
            assertPaddedClose(c.golden("logits"), lm.forward(ids, mask, null, null), TOL, name + " disabled");
            peft.enableAdapters();
            peft.mergeAdapter();
            assertPaddedClose(c.golden("merged_logits"), lm.forward(ids, mask, null, null), TOL, name + " merged");
            peft.unmergeAdapter();
            assertPaddedClose(c.golden("adapted_logits"), lm.forward(ids, mask, null, null), TOL, name + " unmerged");
        }
    }

    // phi3-longrope-long is left out: long-RoPE switches factors once the sequence passes the original context, so
    // (as in transformers) keys cached under the short factors differ from a full forward's
    @ParameterizedTest
    @ValueSource(strings = {"gemma-mqa-headdim", "gemma2-softcap-sliding", "gemma3-qknorm-localrope",
        "qwen3-qknorm-sliding", "phi3-longrope-partial", "qwen2-slidingwindow"})
    void kvCacheDecodingMatchesFullForward(String name) throws Exception {
        try (Goldens.Case<CausalLM> c = Goldens.causalLM(name); KVCache cache = c.model.newCache()) {
            Tensor full = c.model.forward(c.ids, c.mask, null, null);
            assertPaddedClose(full, Goldens.decodeStepwise(c.model, c.ids, c.mask, cache), TOL, name + " cached decode");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"gemma-mqa-headdim", "gemma2-softcap-sliding", "gemma3-qknorm-localrope",
        "qwen3-qknorm-sliding", "phi3-longrope-partial", "qwen2-slidingwindow"})
    void greedyGenerationWithCacheEqualsReferenceWithoutCache(String name) throws Exception {
        try (Goldens.Case<CausalLM> c = Goldens.causalLM(name)) {
            CausalLM lm = c.model;
            Tensor prompt = c.ids.narrow(0, 0, 1).narrow(1, 0, 4);
            Tensor out = Generation.generate(lm, prompt, null, Generation.Options.greedy(6));
            Tensor expected = c.golden("greedy_tokens");
            assertTrue(torch.equal(expected, out.narrow(1, 4, 6)), name + ": cached greedy tokens differ from the "
                    + "reference's (full forward per step)");
            // and without the cache: the argmax of a full forward over each prefix
            Tensor seq = Goldens.uncachedGreedy(lm, prompt, 6);
            assertArrayEquals(new long[] {1, 10}, seq.shape());
            assertTrue(torch.equal(out, seq), name + ": greedy with and without the cache differ");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"gemma-mqa-headdim", "gemma2-softcap-sliding", "gemma3-qknorm-localrope",
        "qwen3-qknorm-sliding", "phi3-longrope-partial", "qwen2-slidingwindow"})
    void slotCacheServesRowsOfDifferentLengthsAsSeparateForwards(String name) throws Exception {
        try (Goldens.Case<CausalLM> c = Goldens.causalLM(name); SlotKVCache slots = c.model.newSlotCache(3, 16)) {
            CausalLM lm = c.model;
            assertTrue(lm.supportsSlotCache());
            Tensor ids = c.ids;
            Tensor a = ids.narrow(0, 0, 1); // 7 tokens
            Tensor b = ids.narrow(0, 1, 1).narrow(1, 2, 5); // 5 tokens
            // prefill each into its own slot (slot 1 stays empty), then one ragged decode step of both rows
            Tensor pa = lm.forwardSlots(a.narrow(1, 0, 6), slots, new int[] {0}, new long[] {0});
            Tensor pb = lm.forwardSlots(b.narrow(1, 0, 4), slots, new int[] {2}, new long[] {0});
            Tensor fa = lm.forward(a, null, null, null);
            Tensor fb = lm.forward(b, null, null, null);
            assertClose(fa.select(1, 5), pa, TOL, name + " slot 0 prefill");
            assertClose(fb.select(1, 3), pb, TOL, name + " slot 2 prefill");
            Tensor step = torch.cat(new TensorVector(b.narrow(1, 4, 1), a.narrow(1, 6, 1)), 0);
            Tensor both = lm.forwardSlots(step, slots, new int[] {2, 0}, new long[] {4, 6});
            assertClose(fb.select(1, 4), both.narrow(0, 0, 1), TOL, name + " ragged step, slot 2");
            assertClose(fa.select(1, 6), both.narrow(0, 1, 1), TOL, name + " ragged step, slot 0");
        }
    }

    @org.junit.jupiter.api.Test
    void gemma2AlternatesSlidingLayersAndGemma3FollowsItsPattern() throws Exception {
        try (PreTrainedModel m = AutoModel.fromConfig(ModelConfig.read(Goldens.golden("gemma3-qknorm-localrope")),
                dev.peft4j.nn.Init.meta(ScalarType.Float))) {
            RopeDecoderConfig cfg = ((RopeDecoderForCausalLM) m).modelStack().cfg;
            assertArrayEquals(new boolean[] {true, false, true}, cfg.slidingLayers);
            assertInstanceOf(Gemma3ForCausalLM.class, m);
        }
    }
}
