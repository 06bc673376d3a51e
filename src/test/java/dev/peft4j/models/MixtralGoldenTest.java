package dev.peft4j.models;

import static dev.peft4j.models.Goldens.assertClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.AdapterLoadReport;
import java.nio.file.Path;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
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
        Path dir = Goldens.golden(NAME);
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                CausalLM lm = AutoModel.causalLM(dir, ScalarType.Float);
                Checkpoints.Opened golden = Checkpoints.open(dir, "golden.safetensors")) {
            assertTrue(lm instanceof MixtralForCausalLM);
            Tensor ids = golden.tensors.get("input_ids");
            Tensor mask = golden.tensors.get("attention_mask");
            Tensor logits = lm.forward(ids, mask, null, null);
            Tensor expected = golden.tensors.get("logits");
            assertClose(expected.select(0, 0), logits.select(0, 0), TOL, "row 0");
            assertClose(expected.select(0, 1).narrow(0, 2, 5), logits.select(0, 1).narrow(0, 2, 5), TOL, "row 1");
            Tensor alone = lm.forward(ids.narrow(0, 1, 1).narrow(1, 2, 5), null, null, null);
            assertClose(golden.tensors.get("row1_unpadded_logits"), alone, TOL, "unpadded row 1");
        }
    }

    @Test
    void loraOnAttentionAndExpertsAdaptedAndMergedMatchReference() throws Exception {
        Path dir = Goldens.golden(NAME);
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                MixtralForCausalLM lm = (MixtralForCausalLM) AutoModel.causalLM(dir, ScalarType.Float);
                Checkpoints.Opened golden = Checkpoints.open(dir, "golden.safetensors")) {
            Tensor ids = golden.tensors.get("input_ids");
            Tensor mask = golden.tensors.get("attention_mask");
            AdapterLoadReport r = lm.loadAdapter(dir.resolve("lora"));
            assertEquals(List.of(), r.missingKeys());
            assertEquals(List.of(), r.unexpectedKeys());
            // 2 layers x (q, v + 4 experts x 3) Linear modules, each with lora_A and lora_B
            assertEquals(2 * (2 + 4 * 3) * 2, lm.getAdapterStateDict().size());
            assertTrue(lm.getAdapterStateDict().containsKey("model.layers.1.block_sparse_moe.experts.3.w2.lora_B.weight"));
            Tensor adapted = lm.forward(ids, mask, null, null);
            Tensor expected = golden.tensors.get("logits_lora");
            assertClose(expected.select(0, 0), adapted.select(0, 0), TOL, "adapted row 0");
            assertClose(expected.select(0, 1).narrow(0, 2, 5), adapted.select(0, 1).narrow(0, 2, 5), TOL, "adapted row 1");
            lm.mergeAdapter();
            Tensor merged = lm.forward(ids, mask, null, null);
            Tensor expectedMerged = golden.tensors.get("merged_lora");
            assertClose(expectedMerged.select(0, 0), merged.select(0, 0), TOL, "merged row 0");
            assertClose(expectedMerged.select(0, 1).narrow(0, 2, 5), merged.select(0, 1).narrow(0, 2, 5), TOL,
                    "merged row 1");
            lm.unmergeAdapter();
            lm.disableAdapters();
            Tensor base = lm.forward(ids, mask, null, null);
            assertClose(golden.tensors.get("logits").select(0, 0), base.select(0, 0), TOL, "disabled");
        }
    }

    @Test
    void kvCacheDecodingMatchesFullForward() throws Exception {
        Path dir = Goldens.golden(NAME);
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                CausalLM lm = AutoModel.causalLM(dir, ScalarType.Float);
                Checkpoints.Opened golden = Checkpoints.open(dir, "golden.safetensors");
                KVCache cache = lm.newCache()) {
            Tensor ids = golden.tensors.get("input_ids");
            Tensor mask = golden.tensors.get("attention_mask");
            Tensor full = lm.forward(ids, mask, null, null);
            TensorVector steps = new TensorVector();
            steps.push_back(lm.forward(ids.narrow(1, 0, 3), mask.narrow(1, 0, 3), null, cache));
            for (int t = 3; t < 7; t++) {
                steps.push_back(lm.forward(ids.narrow(1, t, 1), mask.narrow(1, 0, t + 1), null, cache));
            }
            assertEquals(7, cache.length());
            Tensor decoded = torch.cat(steps, 1);
            assertClose(full.select(0, 0), decoded.select(0, 0), TOL, "row 0");
            assertClose(full.select(0, 1).narrow(0, 2, 5), decoded.select(0, 1).narrow(0, 2, 5), TOL, "row 1");
        }
    }

    @Test
    void greedyGenerationWithCacheEqualsReferenceWithoutCache() throws Exception {
        Path dir = Goldens.golden(NAME);
        try (PointerScope scope = new PointerScope();
                MixtralForCausalLM lm = (MixtralForCausalLM) AutoModel.causalLM(dir, ScalarType.Float);
                Checkpoints.Opened golden = Checkpoints.open(dir, "golden.safetensors")) {
            Tensor prompt = golden.tensors.get("input_ids").narrow(0, 0, 1);
            Generation.Options greedy = Generation.Options.greedy(8);
            Tensor cached = Generation.generate(lm, prompt, null, greedy);
            assertTrue(torch.equal(golden.tensors.get("greedy_ids"), cached), "cached vs reference");
            assertTrue(torch.equal(uncachedGreedy(lm, prompt, 8), cached), "cached vs uncached");
            lm.loadAdapter(dir.resolve("lora"));
            Tensor adapted = Generation.generate(lm, prompt, null, greedy);
            assertTrue(torch.equal(golden.tensors.get("greedy_ids_lora"), adapted), "LoRA vs reference");
            assertTrue(torch.equal(uncachedGreedy(lm, prompt, 8), adapted), "LoRA cached vs uncached");
        }
    }

    /** Greedy decoding by full forwards over the whole sequence, no cache. */
    static Tensor uncachedGreedy(CausalLM lm, Tensor prompt, int n) {
        try (InferenceMode g = new InferenceMode()) {
            Tensor ids = prompt;
            for (int i = 0; i < n; i++) {
                Tensor logits = lm.forward(ids, null, null, null);
                Tensor next = logits.select(1, logits.size(1) - 1).argmax(new LongOptional(-1), true);
                ids = torch.cat(new TensorVector(ids, next), 1);
            }
            return ids;
        }
    }
}
