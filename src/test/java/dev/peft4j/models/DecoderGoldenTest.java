package dev.peft4j.models;

import static dev.peft4j.models.Goldens.assertClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Decoder (Llama family, GPT-2, OPT) logits against gen_goldens.py's independent reference (tiny seeded models), within 1e-5 in fp32. */
class DecoderGoldenTest {
    static final float TOL = 1e-5f;

    @ParameterizedTest
    @ValueSource(strings = {"llama-gqa-llama3rope", "qwen2-bias-tied-linearrope", "mistral-slidingwindow", "gpt2-tied",
        "gpt2-inverse-layer-scale", "opt-prenorm", "opt-postnorm-projected"})
    void paddedBatchLogitsMatchReference(String name) throws Exception {
        Path dir = Goldens.golden(name);
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                CausalLM lm = AutoModel.causalLM(dir, ScalarType.Float);
                Checkpoints.Opened golden = Checkpoints.open(dir, "golden.safetensors")) {
            Tensor ids = golden.tensors.get("input_ids");
            Tensor mask = golden.tensors.get("attention_mask");
            Tensor logits = lm.forward(ids, mask, null, null);
            Tensor expected = golden.tensors.get("logits");
            assertClose(expected.select(0, 0), logits.select(0, 0), TOL, name + " row 0");
            // row 1 is left-padded by 2: only its real positions are defined
            assertClose(expected.select(0, 1).narrow(0, 2, 5), logits.select(0, 1).narrow(0, 2, 5), TOL, name + " row 1");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama-gqa-llama3rope", "qwen2-bias-tied-linearrope", "mistral-slidingwindow", "gpt2-tied",
        "gpt2-inverse-layer-scale", "opt-prenorm", "opt-postnorm-projected"})
    void paddedRowGivesItsUnpaddedLogits(String name) throws Exception {
        Path dir = Goldens.golden(name);
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                CausalLM lm = AutoModel.causalLM(dir, ScalarType.Float);
                Checkpoints.Opened golden = Checkpoints.open(dir, "golden.safetensors")) {
            Tensor ids = golden.tensors.get("input_ids");
            Tensor mask = golden.tensors.get("attention_mask");
            Tensor padded = lm.forward(ids, mask, null, null);
            Tensor alone = lm.forward(ids.narrow(0, 1, 1).narrow(1, 2, 5), null, null, null);
            assertClose(golden.tensors.get("row1_unpadded_logits"), alone, TOL, name + " unpadded vs reference");
            assertClose(alone.select(0, 0), padded.select(0, 1).narrow(0, 2, 5), TOL, name + " padded vs unpadded");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama-gqa-llama3rope", "qwen2-bias-tied-linearrope", "mistral-slidingwindow", "gpt2-tied",
        "gpt2-inverse-layer-scale", "opt-prenorm", "opt-postnorm-projected"})
    void kvCacheDecodingMatchesFullForward(String name) throws Exception {
        Path dir = Goldens.golden(name);
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                CausalLM lm = AutoModel.causalLM(dir, ScalarType.Float);
                Checkpoints.Opened golden = Checkpoints.open(dir, "golden.safetensors");
                KVCache cache = lm.newCache()) {
            Tensor ids = golden.tensors.get("input_ids");
            Tensor mask = golden.tensors.get("attention_mask");
            Tensor full = lm.forward(ids, mask, null, null);
            // prefill 3 tokens (row 1: two pads and one token), then one token per step
            TensorVector steps = new TensorVector();
            steps.push_back(lm.forward(ids.narrow(1, 0, 3), mask.narrow(1, 0, 3), null, cache));
            assertEquals(3, cache.length());
            for (int t = 3; t < 7; t++) {
                steps.push_back(lm.forward(ids.narrow(1, t, 1), mask.narrow(1, 0, t + 1), null, cache));
            }
            assertEquals(7, cache.length());
            Tensor decoded = torch.cat(steps, 1);
            assertClose(full.select(0, 0), decoded.select(0, 0), TOL, name + " row 0");
            assertClose(full.select(0, 1).narrow(0, 2, 5), decoded.select(0, 1).narrow(0, 2, 5), TOL, name + " row 1");
            assertTrue(Goldens.maxAbsDiff(full.select(0, 0), golden.tensors.get("logits").select(0, 0)) <= TOL);
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
