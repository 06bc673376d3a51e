package dev.peft4j.models;

import static dev.peft4j.models.NativeDecodeTest.prompt;
import static dev.peft4j.models.NativeDecodeTest.relErr;
import static dev.peft4j.models.NativeDecodeTest.tinyLlama;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.kernels.DecodeKernels;
import dev.peft4j.nn.Init;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The native prefill of the Llama family's slot path ({@link CausalLM#forwardSlots} of several tokens per row: fused
 * residual add + RMSNorm, RoPE in place, the last layer past its keys and values on the last position only) against
 * the libtorch path it replaces and against {@link CausalLM#forward}: the next-token logits and every layer's cached
 * keys and values, for whole prompts and for chunks continuing cached rows of different lengths in scattered slots,
 * with GQA, a sliding window and LoRA.
 */
class NativePrefillTest {
    @AfterEach
    void restore() {
        DecodeKernels.setEnabled(true);
    }

    @ParameterizedTest
    @ValueSource(strings = {"Float", "BFloat16"})
    void prefillLogitsAndCachesMatchTheLibtorchPathWithAndWithoutLora(String dtype) {
        ScalarType dt = ScalarType.valueOf(dtype);
        // bf16: a few ulps of the largest value, as roundings inside the forward differ (see NativeDecodeTest)
        double tol = dt == ScalarType.Float ? 2e-5 : 3e-2;
        try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = tinyLlama(dt, "", 11)) {
            assertPrefillsMatch(m, dt, tol);
            m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj", "k_proj", "v_proj",
                    "o_proj", "gate_proj", "down_proj").initLoraWeights(new InitLoraWeights.Flag(false)).build());
            assertPrefillsMatch(m, dt, tol);
        }
    }

    @Test
    void aSlidingWindowModelPrefillsUnderItsWindow() {
        String json = "{\"model_type\":\"mistral\",\"architectures\":[\"MistralForCausalLM\"],\"vocab_size\":97,"
                + "\"hidden_size\":64,\"intermediate_size\":112,\"num_hidden_layers\":2,\"num_attention_heads\":8,"
                + "\"num_key_value_heads\":2,\"max_position_embeddings\":256,\"rms_norm_eps\":1e-6,"
                + "\"sliding_window\":4,\"tie_word_embeddings\":false}";
        try (PointerScope scope = new PointerScope();
                LlamaForCausalLM m = (LlamaForCausalLM) AutoModel.fromConfig(ModelConfig.parse(json),
                        Init.cpu(ScalarType.Float))) {
            Init.normal(m, 0.25, 4);
            assertPrefillsMatch(m, ScalarType.Float, 2e-5);
        }
    }

    @Test
    void thePrefillsLastLogitsAreTheFullForwardsLastPosition() {
        try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = tinyLlama(ScalarType.Float, "", 12);
                InferenceMode im = new InferenceMode(); SlotKVCache cache = m.newSlotCache(2, 16)) {
            Tensor ids = prompt(3, 1, 9);
            long before = LlamaModel.nativePrefills();
            Tensor slots = m.forwardSlots(ids, cache, new int[] {1}, new long[] {0});
            assertEquals(1, LlamaModel.nativePrefills() - before, "the prompt took the native prefill");
            Tensor full = m.forward(ids, null, null, null).select(1, 8);
            double e = relErr(slots, full);
            assertTrue(e < 2e-5, "forwardSlots' prefill logits off forward's last position by " + e);
        }
    }

    /**
     * Two prompts of different lengths in scattered slots, then a 4-token chunk continuing both rows in one forward
     * (ragged pasts), on each path: the logits of every forward and the caches of every layer agree.
     */
    static void assertPrefillsMatch(CausalLM m, ScalarType dt, double tol) {
        int[] slotOf = {2, 0};
        long[] lengths = {7, 3};
        Tensor[][] out = new Tensor[2][];
        int layers = m.config().getInt("num_hidden_layers");
        for (int path = 0; path < 2; path++) {
            DecodeKernels.setEnabled(path == 1);
            long before = LlamaModel.nativePrefills();
            try (InferenceMode im = new InferenceMode(); SlotKVCache cache = m.newSlotCache(3, 16)) {
                Tensor[] got = new Tensor[3 + 2 * layers];
                for (int r = 0; r < 2; r++) {
                    got[r] = m.forwardSlots(prompt(40 + r, 1, lengths[r]), cache, new int[] {slotOf[r]},
                            new long[] {0});
                }
                got[2] = m.forwardSlots(prompt(60, 2, 4), cache, slotOf, lengths);
                for (int l = 0; l < layers; l++) {
                    got[3 + 2 * l] = cache.keys(l).clone();
                    got[4 + 2 * l] = cache.values(l).clone();
                }
                out[path] = got;
            }
            assertEquals(path == 1 ? 3 : 0, LlamaModel.nativePrefills() - before, "native prefills on path " + path);
        }
        for (int i = 0; i < out[0].length; i++) {
            double e = relErr(out[1][i], out[0][i]);
            String what = i < 3 ? "logits of forward " + i : "cache tensor " + (i - 3);
            assertTrue(e < tol, dt + " native prefill: " + what + " off by " + e);
        }
    }
}
