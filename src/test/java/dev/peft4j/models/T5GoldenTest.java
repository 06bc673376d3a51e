package dev.peft4j.models;

import static dev.peft4j.models.Goldens.assertClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.AdapterLoadReport;
import java.util.List;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * T5 (ReLU, tied head) and mT5 (gated-gelu, untied) against gen_goldens_t5_mixtral.py's independent reference:
 * base, LoRA (q, v) and IA3 (k, v, wo / wi_1) adapted and merged logits within 1e-5 in float32, the decoder's cache,
 * and greedy generation with and without the cache.
 */
class T5GoldenTest {
    static final float TOL = 1e-5f;

    @ParameterizedTest
    @ValueSource(strings = {"t5-relu-tied", "mt5-gated-untied"})
    void baseLogitsMatchReferenceAndEncoderPaddingIsInvisible(String name) throws Exception {
        try (Goldens.Case<Seq2SeqLM> c = seq2Seq(name, true)) {
            Seq2SeqLM lm = c.model;
            Tensor ids = c.ids;
            Tensor dec = c.golden("decoder_input_ids");
            assertClose(c.golden("logits"), lm.forward(ids, c.mask, dec), TOL, name);
            // row 1's encoder input is right-padded by 2: alone and unpadded it gives the same decoder logits
            Tensor alone = lm.forward(ids.narrow(0, 1, 1).narrow(1, 0, 5), null, dec.narrow(0, 1, 1));
            assertClose(c.golden("row1_unpadded_logits"), alone, TOL, name + " unpadded row");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"t5-relu-tied/lora", "t5-relu-tied/ia3", "mt5-gated-untied/lora", "mt5-gated-untied/ia3"})
    void adaptedAndMergedLogitsMatchReference(String caseAndAdapter) throws Exception {
        String name = caseAndAdapter.substring(0, caseAndAdapter.indexOf('/'));
        String adapter = caseAndAdapter.substring(name.length() + 1);
        try (Goldens.Case<Seq2SeqLM> c = seq2Seq(name, true)) {
            T5ForConditionalGeneration lm = (T5ForConditionalGeneration) c.model;
            Tensor ids = c.ids;
            Tensor mask = c.mask;
            Tensor dec = c.golden("decoder_input_ids");
            AdapterLoadReport r = lm.loadAdapter(c.dir.resolve(adapter));
            assertEquals(List.of(), r.missingKeys(), caseAndAdapter);
            assertEquals(List.of(), r.unexpectedKeys(), caseAndAdapter);
            Tensor adapted = lm.forward(ids, mask, dec);
            assertClose(c.golden("logits_" + adapter), adapted, TOL, caseAndAdapter + " adapted");
            lm.disableAdapters();
            assertClose(c.golden("logits"), lm.forward(ids, mask, dec), TOL, caseAndAdapter + " disabled");
            lm.enableAdapters();
            lm.mergeAdapter();
            assertClose(c.golden("merged_" + adapter), lm.forward(ids, mask, dec), TOL,
                    caseAndAdapter + " merged");
            lm.unmergeAdapter();
            assertClose(adapted, lm.forward(ids, mask, dec), TOL, caseAndAdapter + " unmerged");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"t5-relu-tied", "mt5-gated-untied"})
    void cachedDecodingMatchesFullDecoderForward(String name) throws Exception {
        try (Goldens.Case<Seq2SeqLM> c = seq2Seq(name, true); Seq2SeqCache cache = c.model.newCache()) {
            Seq2SeqLM lm = c.model;
            Tensor ids = c.ids;
            Tensor mask = c.mask;
            Tensor dec = c.golden("decoder_input_ids");
            Tensor enc = lm.encode(ids, mask);
            TensorVector steps = new TensorVector();
            steps.push_back(lm.decode(dec.narrow(1, 0, 2), enc, mask, cache));
            assertEquals(2, cache.length());
            assertTrue(cache.hasCrossAttention());
            for (int t = 2; t < 5; t++) {
                steps.push_back(lm.decode(dec.narrow(1, t, 1), enc, mask, cache));
            }
            assertEquals(5, cache.length());
            assertClose(c.golden("logits"), torch.cat(steps, 1), TOL, name + " cached steps");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"t5-relu-tied", "mt5-gated-untied"})
    void greedyGenerationWithCacheEqualsWithoutAndReference(String name) throws Exception {
        try (Goldens.Case<Seq2SeqLM> c = seq2Seq(name, false)) {
            Seq2SeqLM lm = c.model;
            Tensor prompt = c.ids.narrow(0, 0, 1);
            Generation.Options greedy = Generation.Options.greedy(8);
            Tensor cached = Seq2SeqGeneration.generate(lm, prompt, null, greedy);
            Tensor uncached = Seq2SeqGeneration.generate(lm, prompt, null, greedy, false);
            assertTrue(torch.equal(c.golden("greedy_ids"), cached), name + " cached vs reference");
            assertTrue(torch.equal(cached, uncached), name + " cached vs uncached");
            ((T5ForConditionalGeneration) lm).loadAdapter(c.dir.resolve("lora"));
            Tensor adapted = Seq2SeqGeneration.generate(lm, prompt, null, greedy);
            assertTrue(torch.equal(c.golden("greedy_ids_lora"), adapted), name + " LoRA vs reference");
            assertTrue(torch.equal(adapted, Seq2SeqGeneration.generate(lm, prompt, null, greedy, false)),
                    name + " LoRA cached vs uncached");
        }
    }

    @Test
    void loadsUnderCausalLmIsRefusedNamingSeq2Seq() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> AutoModel.causalLM(Goldens.golden("t5-relu-tied"), ScalarType.Float));
        assertTrue(e.getMessage().contains("encoder-decoder"), e.getMessage());
    }

    private static Goldens.Case<Seq2SeqLM> seq2Seq(String name, boolean inference) throws Exception {
        return Goldens.open(name, dir -> AutoModel.seq2SeqLM(dir, ScalarType.Float), inference);
    }
}
