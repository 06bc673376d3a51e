package dev.peft4j.models;

import static dev.peft4j.models.Goldens.assertClose;
import static dev.peft4j.models.Goldens.assertPaddedClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Decoder (Llama family, GPT-2, OPT) logits against gen_goldens.py's independent reference (tiny seeded models), within 1e-5 in fp32. */
class DecoderGoldenTest {
    static final float TOL = 1e-5f;

    @ParameterizedTest
    @ValueSource(strings = {"llama-gqa-llama3rope", "qwen2-bias-tied-linearrope", "mistral-slidingwindow", "gpt2-tied",
        "gpt2-inverse-layer-scale", "opt-prenorm", "opt-postnorm-projected"})
    void paddedBatchLogitsMatchReference(String name) throws Exception {
        try (Goldens.Case<CausalLM> c = Goldens.causalLM(name)) {
            assertPaddedClose(c.golden("logits"), c.model.forward(c.ids, c.mask, null, null), TOL, name);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama-gqa-llama3rope", "qwen2-bias-tied-linearrope", "mistral-slidingwindow", "gpt2-tied",
        "gpt2-inverse-layer-scale", "opt-prenorm", "opt-postnorm-projected"})
    void paddedRowGivesItsUnpaddedLogits(String name) throws Exception {
        try (Goldens.Case<CausalLM> c = Goldens.causalLM(name)) {
            Tensor padded = c.model.forward(c.ids, c.mask, null, null);
            Tensor alone = c.model.forward(c.ids.narrow(0, 1, 1).narrow(1, 2, 5), null, null, null);
            assertClose(c.golden("row1_unpadded_logits"), alone, TOL, name + " unpadded vs reference");
            assertClose(alone.select(0, 0), padded.select(0, 1).narrow(0, 2, 5), TOL, name + " padded vs unpadded");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama-gqa-llama3rope", "qwen2-bias-tied-linearrope", "mistral-slidingwindow", "gpt2-tied",
        "gpt2-inverse-layer-scale", "opt-prenorm", "opt-postnorm-projected"})
    void kvCacheDecodingMatchesFullForward(String name) throws Exception {
        try (Goldens.Case<CausalLM> c = Goldens.causalLM(name); KVCache cache = c.model.newCache()) {
            CausalLM lm = c.model;
            Tensor ids = c.ids;
            Tensor mask = c.mask;
            Tensor full = lm.forward(ids, mask, null, null);
            // prefill 3 tokens (row 1: two pads and one token), then one token per step
            assertPaddedClose(full, Goldens.decodeStepwise(lm, ids, mask, cache), TOL, name);
            assertTrue(Goldens.maxAbsDiff(full.select(0, 0), c.golden("logits").select(0, 0)) <= TOL);
            // truncating back to 5 positions and decoding token 5 again gives the same logits
            cache.truncate(5);
            Tensor again = lm.forward(ids.narrow(1, 5, 1), mask.narrow(1, 0, 6), null, cache);
            assertEquals(6, cache.length());
            assertClose(full.narrow(1, 5, 1), again, TOL, name + " after truncate");
            // a single row decodes through the layers' one-row (gemv) path: same logits
            try (KVCache one = lm.newCache()) {
                lm.forward(ids.narrow(0, 0, 1).narrow(1, 0, 6), null, null, one);
                Tensor last = lm.forward(ids.narrow(0, 0, 1).narrow(1, 6, 1), null, null, one);
                assertClose(full.narrow(0, 0, 1).narrow(1, 6, 1), last, TOL, name + " single-row decode");
            }
        }
    }
}
