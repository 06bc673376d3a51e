package dev.peft4j.models;

import static dev.peft4j.models.Goldens.assertClose;
import static dev.peft4j.models.Goldens.assertPaddedClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.AdapterLoadReport;
import java.util.List;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/**
 * Mixtral (4 experts, top-2 routing, sliding window 4) against gen_goldens_t5_mixtral.py's independent reference:
 * base, LoRA (attention and every expert's w1 / w2 / w3) adapted and merged logits within 1e-5 in float32, the KV
 * cache, and greedy generation with the cache against the reference's generation without one.
 */
class MixtralGoldenTest {
    static final float TOL = 1e-5f;
    static final String NAME = "mixtral-top2";

    @Test
    void paddedBatchAndUnpaddedRowMatchReference() throws Exception {
        try (Goldens.Case<CausalLM> c = Goldens.causalLM(NAME)) {
            assertTrue(c.model instanceof MixtralForCausalLM);
            assertPaddedClose(c.golden("logits"), c.model.forward(c.ids, c.mask, null, null), TOL, "padded batch");
            Tensor alone = c.model.forward(c.ids.narrow(0, 1, 1).narrow(1, 2, 5), null, null, null);
            assertClose(c.golden("row1_unpadded_logits"), alone, TOL, "unpadded row 1");
        }
    }

    @Test
    void loraOnAttentionAndExpertsAdaptedAndMergedMatchReference() throws Exception {
        try (Goldens.Case<MixtralForCausalLM> c = mixtral(true)) {
            MixtralForCausalLM lm = c.model;
            Tensor ids = c.ids;
            Tensor mask = c.mask;
            AdapterLoadReport r = lm.loadAdapter(c.dir.resolve("lora"));
            assertEquals(List.of(), r.missingKeys());
            assertEquals(List.of(), r.unexpectedKeys());
            // 2 layers x (q, v + 4 experts x 3) Linear modules, each with lora_A and lora_B
            assertEquals(2 * (2 + 4 * 3) * 2, lm.getAdapterStateDict().size());
            assertTrue(lm.getAdapterStateDict().containsKey("model.layers.1.block_sparse_moe.experts.3.w2.lora_B.weight"));
            assertPaddedClose(c.golden("logits_lora"), lm.forward(ids, mask, null, null), TOL, "adapted");
            lm.mergeAdapter();
            assertPaddedClose(c.golden("merged_lora"), lm.forward(ids, mask, null, null), TOL, "merged");
            lm.unmergeAdapter();
            lm.disableAdapters();
            Tensor base = lm.forward(ids, mask, null, null);
            assertClose(c.golden("logits").select(0, 0), base.select(0, 0), TOL, "disabled");
        }
    }

    @Test
    void kvCacheDecodingMatchesFullForward() throws Exception {
        try (Goldens.Case<CausalLM> c = Goldens.causalLM(NAME); KVCache cache = c.model.newCache()) {
            Tensor full = c.model.forward(c.ids, c.mask, null, null);
            assertPaddedClose(full, Goldens.decodeStepwise(c.model, c.ids, c.mask, cache), TOL, "cached decode");
        }
    }

    @Test
    void greedyGenerationWithCacheEqualsReferenceWithoutCache() throws Exception {
        try (Goldens.Case<MixtralForCausalLM> c = mixtral(false)) {
            MixtralForCausalLM lm = c.model;
            Tensor prompt = c.ids.narrow(0, 0, 1);
            Generation.Options greedy = Generation.Options.greedy(8);
            Tensor cached = Generation.generate(lm, prompt, null, greedy);
            assertTrue(torch.equal(c.golden("greedy_ids"), cached), "cached vs reference");
            assertTrue(torch.equal(Goldens.uncachedGreedy(lm, prompt, 8), cached), "cached vs uncached");
            lm.loadAdapter(c.dir.resolve("lora"));
            Tensor adapted = Generation.generate(lm, prompt, null, greedy);
            assertTrue(torch.equal(c.golden("greedy_ids_lora"), adapted), "LoRA vs reference");
            assertTrue(torch.equal(Goldens.uncachedGreedy(lm, prompt, 8), adapted), "LoRA cached vs uncached");
        }
    }

    private static Goldens.Case<MixtralForCausalLM> mixtral(boolean inference) throws Exception {
        return Goldens.open(NAME, dir -> (MixtralForCausalLM) AutoModel.causalLM(dir, ScalarType.Float), inference);
    }
}
