package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.PeftAdapterMixin;
import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.kernels.DecodeKernels;
import java.nio.file.Path;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The native one-token step of the RoPE decoder families (Gemma's scaled embeddings and (1 + w) norms, Gemma 2's
 * soft-capped scores and norms around each branch, Gemma 3's q / k norms and local RoPE on sliding layers, Qwen3's
 * q / k norms, Phi-3's fused projections, partial rotary dims and long-RoPE factors, sliding windows) against the
 * libtorch step on the golden models of {@link FamilyGoldenTest}: forwardSlots' logits over ragged rows on scattered
 * slots, base and with the golden LoRA adapter, in float32 and bfloat16; greedy generation's tokens in float32.
 */
class FamilyNativeDecodeTest {
    @AfterEach
    void restore() {
        DecodeKernels.setEnabled(true);
    }

    @ParameterizedTest
    @CsvSource({"gemma-mqa-headdim, Float", "gemma2-softcap-sliding, Float", "gemma3-qknorm-localrope, Float",
        "qwen3-qknorm-sliding, Float", "phi3-longrope-partial, Float", "phi3-longrope-long, Float",
        "gemma2-softcap-sliding, BFloat16", "gemma3-qknorm-localrope, BFloat16", "phi3-longrope-partial, BFloat16"})
    void nativeStepEqualsTheLibtorchStep(String name, String dtype) throws Exception {
        ScalarType dt = ScalarType.valueOf(dtype);
        // float32: summation order only; bf16: a few ulps of the largest logit (NativeDecodeTest's bound)
        double tol = dt == ScalarType.Float ? 2e-5 : 3e-2;
        Path dir = Goldens.golden(name);
        try (PointerScope scope = new PointerScope(); CausalLM lm = AutoModel.causalLM(dir, dt)) {
            int layers = (int) ((RopeDecoderForCausalLM) lm).modelStack().cfg.numLayers;
            long calls = DecodeKernels.attentionCalls();
            long groups = DecodeKernels.groupCalls();
            NativeDecodeTest.assertSlotStepsMatch(lm, dt, tol, 50);
            // 5 three-row steps and row 1's one-token prompt took the native step, on every layer
            assertEquals(6L * layers, DecodeKernels.attentionCalls() - calls, name + ": steps on the native path");
            // and each of those layers ran its gate and up (or fused gate_up) as one gated call
            assertTrue(DecodeKernels.groupCalls() - groups >= 6L * layers, name + ": MLP inputs grouped");
            ((PeftAdapterMixin) lm).loadAdapter(dir.resolve("adapter"));
            groups = DecodeKernels.groupCalls();
            NativeDecodeTest.assertSlotStepsMatch(lm, dt, tol, 50);
            assertTrue(DecodeKernels.groupCalls() - groups >= 6L * layers, name + ": grouped with the adapter");
        }
    }

    @ParameterizedTest
    @CsvSource({"gemma2-softcap-sliding", "qwen3-qknorm-sliding"})
    void aWrappedEmbeddingStaysOnTheNativeStep(String name) throws Exception {
        try (PointerScope scope = new PointerScope(); CausalLM lm = AutoModel.causalLM(Goldens.golden(name),
                ScalarType.Float)) {
            int layers = (int) ((RopeDecoderForCausalLM) lm).modelStack().cfg.numLayers;
            // modules_to_save wraps the module: its weight is no longer at embed_tokens.weight
            ((PeftAdapterMixin) lm).addAdapter(LoraConfig.builder().r(2).targetModules("q_proj", "o_proj")
                    .modulesToSave(List.of("embed_tokens")).initLoraWeights(new InitLoraWeights.Flag(false)).build(),
                    "emb");
            long calls = DecodeKernels.attentionCalls();
            NativeDecodeTest.assertSlotStepsMatch(lm, ScalarType.Float, 2e-5, 50);
            assertEquals(6L * layers, DecodeKernels.attentionCalls() - calls, name + ": wrapped embedding, native");
        }
    }

    @ParameterizedTest
    @CsvSource({"gemma2-softcap-sliding", "gemma3-qknorm-localrope", "qwen3-qknorm-sliding", "phi3-longrope-long"})
    void greedyGenerateGivesTheLibtorchPathsTokens(String name) throws Exception {
        try (PointerScope scope = new PointerScope(); CausalLM lm = AutoModel.causalLM(Goldens.golden(name),
                ScalarType.Float)) {
            Tensor ids = NativeDecodeTest.prompt(7, 2, 5, 50);
            DecodeKernels.setEnabled(false);
            long[] old = NativeDecodeTest.tokens(Generation.generate(lm, ids, null, Generation.Options.greedy(9)));
            DecodeKernels.setEnabled(true);
            long[] now = NativeDecodeTest.tokens(Generation.generate(lm, ids, null, Generation.Options.greedy(9)));
            assertArrayEquals(old, now, name + ": greedy tokens of the native path");
        }
    }
}
