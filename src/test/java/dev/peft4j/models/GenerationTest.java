package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** generate: greedy against full forwards, padded batches against single rows, seeded sampling, eos. */
class GenerationTest {
    static long[] row(Tensor ids, int r) {
        Tensor x = ids.select(0, r).contiguous();
        long[] out = new long[(int) x.numel()];
        x.data_ptr_long().capacity(out.length).get(out);
        return out;
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama-gqa-llama3rope", "gpt2-tied", "opt-postnorm-projected"})
    void greedyTokensAreTheArgmaxOfAFullForwardAndPaddedRowsMatchSingleRows(String name) throws Exception {
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                CausalLM lm = AutoModel.causalLM(Goldens.golden(name), ScalarType.Float);
                Checkpoints.Opened gold = Checkpoints.open(Goldens.golden(name), "golden.safetensors")) {
            Tensor ids = gold.tensors.get("input_ids");
            Tensor mask = gold.tensors.get("attention_mask");
            Tensor out = Generation.generate(lm, ids, mask, Generation.Options.greedy(6));
            assertArrayEquals(new long[] {2, 13}, out.shape());
            // row 0, no padding: every new token is the argmax of a full forward over the prefix
            long[] r0 = row(out, 0);
            for (int t = 7; t < 13; t++) {
                Tensor prefix = out.narrow(0, 0, 1).narrow(1, 0, t);
                Tensor logits = lm.forward(prefix, null, null, null);
                assertEquals(logits.select(1, t - 1).argmax().item_long(), r0[t], name + " token " + t);
            }
            // row 1, left-padded by 2: the same tokens as generating from its unpadded prompt
            Tensor alone = Generation.generate(lm, ids.narrow(0, 1, 1).narrow(1, 2, 5), null,
                    Generation.Options.greedy(6));
            long[] r1 = row(out, 1);
            assertArrayEquals(row(alone, 0), java.util.Arrays.copyOfRange(r1, 2, 13), name + " padded row");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama-gqa-llama3rope"})
    void seededSamplingIsReproducibleAndStaysInsideTopK(String name) throws Exception {
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                CausalLM lm = AutoModel.causalLM(Goldens.golden(name), ScalarType.Float);
                Checkpoints.Opened gold = Checkpoints.open(Goldens.golden(name), "golden.safetensors")) {
            Tensor prompt = gold.tensors.get("input_ids").narrow(0, 0, 1);
            Generation.Options hot = Generation.Options.sampling(12, 1.5, 3, 1.0, 42);
            long[] a = row(Generation.generate(lm, prompt, null, hot), 0);
            long[] b = row(Generation.generate(lm, prompt, null, hot), 0);
            assertArrayEquals(a, b, "same seed, same tokens");
            boolean differs = false;
            for (long seed = 1; seed <= 5 && !differs; seed++) {
                long[] c = row(Generation.generate(lm, prompt, null, Generation.Options.sampling(12, 1.5, 3, 1.0, seed)), 0);
                differs = !java.util.Arrays.equals(a, c);
            }
            assertTrue(differs, "five other seeds all reproduced seed 42's tokens");
            // every sampled token is among the 3 most likely after its prefix
            for (int t = 7; t < a.length; t++) {
                Tensor logits = lm.forward(fromLongs(java.util.Arrays.copyOf(a, t)), null, null, null);
                Tensor lastRow = logits.select(1, t - 1).select(0, 0);
                Tensor sorted = lastRow.sort(-1, true).get1();
                long[] top3 = row(sorted.narrow(0, 0, 3).view(1, 3), 0);
                long tok = a[t];
                assertTrue(java.util.Arrays.stream(top3).anyMatch(v -> v == tok), "token " + t + " outside top-3");
            }
            // top-k 1 sampling is greedy; top-p tiny keeps only the most likely token too
            long[] greedy = row(Generation.generate(lm, prompt, null, Generation.Options.greedy(8)), 0);
            assertArrayEquals(greedy, row(Generation.generate(lm, prompt, null,
                    Generation.Options.sampling(8, 2.0, 1, 1.0, 3)), 0));
            assertArrayEquals(greedy, row(Generation.generate(lm, prompt, null,
                    Generation.Options.sampling(8, 1.0, 0, 1e-6, 3)), 0));
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"gpt2-tied"})
    void rowsStopAtEosAndArePaddedAfterIt(String name) throws Exception {
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                CausalLM lm = AutoModel.causalLM(Goldens.golden(name), ScalarType.Float);
                Checkpoints.Opened gold = Checkpoints.open(Goldens.golden(name), "golden.safetensors")) {
            Tensor ids = gold.tensors.get("input_ids");
            Tensor mask = gold.tensors.get("attention_mask");
            long[] greedy = row(Generation.generate(lm, ids, mask, Generation.Options.greedy(6)), 0);
            long eos = greedy[8]; // row 0's second new token
            Tensor out = Generation.generate(lm, ids, mask, Generation.Options.greedy(6).withEos(eos, 49));
            long[] r0 = row(out, 0);
            int firstEos = 7;
            while (r0[firstEos] != eos) {
                firstEos++;
            }
            assertTrue(firstEos <= 8);
            for (int t = firstEos + 1; t < r0.length; t++) {
                assertEquals(49, r0[t], "padding after eos at " + t);
            }
            assertFalse(out.size(1) > 13);
        }
    }

    static Tensor fromLongs(long[] v) {
        return org.bytedeco.pytorch.AbstractTensor.create(v).view(1, v.length);
    }
}
