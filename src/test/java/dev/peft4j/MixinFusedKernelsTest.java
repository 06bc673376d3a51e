package dev.peft4j;

import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.AdaLoraConfig;
import dev.peft4j.config.IA3Config;
import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.kernels.FusedLoraLinear;
import dev.peft4j.kernels.Kernels;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.KVCache;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import dev.peft4j.tuners.adalora.SvdLinear;
import dev.peft4j.tuners.ia3.Ia3Layer;
import dev.peft4j.tuners.lora.LoraLayer;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The mixin's adapted layers run their inference forwards on the native kernels, and those agree with the composed
 * libtorch path (the autograd path and reference) through every adapter operation.
 *
 * <p>Tolerances. float32: the kernels accumulate in float32 in another order than OpenBLAS / libtorch (and fuse base
 * and deltas into one sum), so each dot product differs by a few ulps (~1e-7 relative); through two decoder layers,
 * RMSNorm and the LM head that stays below 1e-5 of the logits' magnitude, which is what we allow. bfloat16 (8-bit
 * mantissa, one ulp ~ 4e-3 relative): the kernel rounds base + deltas once where the composed ops round the base
 * output, each delta and the sum separately, so single activations differ by an ulp or two and the logits by a few
 * percent of their magnitude at most; we allow 5e-2 of the largest logit — still far below what a wrong or missing
 * adapter changes (asserted alongside where it matters).
 */
class MixinFusedKernelsTest {
    static final double FP32 = 1e-5;
    static final double BF16 = 5e-2;

    @AfterEach
    void restoreSwitch() {
        Kernels.setFusedLayers(true);
    }

    /** A small Llama with dimensions that are not multiples of the SIMD width (hidden 72, 4 heads of 18, GQA). */
    static PreTrainedModel llama(long seed) {
        String json = "{\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":64,"
                + "\"hidden_size\":72,\"intermediate_size\":136,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
                + "\"num_key_value_heads\":2,\"max_position_embeddings\":128,\"rms_norm_eps\":1e-6,"
                + "\"tie_word_embeddings\":false}";
        PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(ScalarType.Float));
        Init.normal(m, 0.1, seed);
        return m;
    }

    static LoraConfig lora(int r, String... targets) {
        return LoraConfig.builder().r(r).loraAlpha(2 * r).targetModules(targets)
                .initLoraWeights(new InitLoraWeights.Flag(false)).build();
    }

    static final String[] QKVO = {"q_proj", "k_proj", "v_proj", "o_proj"};

    /** Runs {@code f} without autograd on the fused (or composed) path; returns what it returned. */
    static <T> T run(boolean fused, Supplier<T> f) {
        boolean before = Kernels.fusedLayers();
        Kernels.setFusedLayers(fused);
        try (NoGradGuard g = new NoGradGuard()) {
            return f.get();
        } finally {
            Kernels.setFusedLayers(before);
        }
    }

    /** The fused logits (asserting that {@code layers} native layer forwards served them) vs the composed ones. */
    static Tensor assertFusedMatches(PreTrainedModel m, Tensor ids, long layerCalls, double tol, String what) {
        long before = Kernels.layerCalls();
        Tensor fused = run(true, () -> logits(m, ids));
        assertEquals(layerCalls, Kernels.layerCalls() - before, what + ": native layer forwards");
        long mid = Kernels.layerCalls();
        Tensor composed = run(false, () -> logits(m, ids));
        assertEquals(mid, Kernels.layerCalls(), what + ": the composed switch runs no kernel");
        assertClose(composed, fused, tol, what);
        return fused;
    }

    static void assertClose(Tensor want, Tensor got, double tol, String what) {
        Tensor w = want.to(ScalarType.Float);
        Tensor g = got.to(ScalarType.Float);
        double scale = Math.max(1.0, w.abs().max().item_double());
        double diff = w.sub(g).abs().max().item_double();
        assertTrue(diff <= tol * scale, what + ": max |fused - composed| = " + diff + " for logits up to " + scale);
    }

    static double maxDiff(Tensor a, Tensor b) {
        return a.to(ScalarType.Float).sub(b.to(ScalarType.Float)).abs().max().item_double();
    }

    @Test
    void llamaPrefillAndKvCacheDecodeStepsRunOnTheKernelsAndMatchComposed() {
        try (PreTrainedModel m = llama(1)) {
            m.addAdapter(lora(8, QKVO));
            CausalLM lm = (CausalLM) m;
            Tensor prompt = ids(1, 20, 64, 1); // 20 rows > 16: libtorch GEMM + native delta
            try (KVCache fc = lm.newCache(); KVCache cc = lm.newCache()) {
                long before = Kernels.layerCalls();
                Tensor fused = run(true, () -> lm.forward(prompt, null, null, fc));
                assertEquals(8, Kernels.layerCalls() - before, "2 layers × q, k, v, o");
                Tensor composed = run(false, () -> lm.forward(prompt, null, null, cc));
                assertClose(composed, fused, FP32, "prefill");
                Tensor token = ids(1, 1, 64, 2);
                for (int step = 0; step < 4; step++) { // M = 1: one fused native call per layer
                    long b = Kernels.layerCalls();
                    Tensor f = run(true, () -> lm.forward(token, null, null, fc));
                    assertEquals(8, Kernels.layerCalls() - b, "decode step " + step);
                    Tensor c = run(false, () -> lm.forward(token, null, null, cc));
                    assertClose(c, f, FP32, "decode step " + step);
                }
            }
            assertFusedMatches(m, ids(2, 5, 64, 3), 8, FP32, "10 rows in one decode-kernel call");
        }
    }

    @Test
    void twoActiveAdaptersAndSetAdapterSwitchesMatchComposed() {
        try (PreTrainedModel m = llama(2)) {
            m.peftAdapters().seed(1);
            m.addAdapter(lora(8, QKVO), "a");
            m.peftAdapters().seed(2);
            m.addAdapter(lora(4, "q_proj", "v_proj"), "b");
            Tensor x = ids(1, 3, 64, 4);
            Tensor onlyB = assertFusedMatches(m, x, 4, FP32, "b only (q, v)");
            m.setAdapter("a", "b");
            Tensor both = assertFusedMatches(m, x, 8, FP32, "a and b");
            m.setAdapter("a");
            Tensor onlyA = assertFusedMatches(m, x, 8, FP32, "a after switching");
            m.setAdapter("b");
            assertClose(onlyB, run(true, () -> logits(m, x)), 0, "switching back to b reproduces it bit for bit");
            assertTrue(maxDiff(both, onlyA) > 1e-3 && maxDiff(both, onlyB) > 1e-3, "the adapters matter");
            assertFusedMatches(m, ids(2, 12, 64, 5), 4, FP32, "b (q, v), 24 rows");
        }
    }

    @Test
    void mixedBatchWithBaseRowsMatchesComposedOnBothKernelPaths() {
        try (PreTrainedModel m = llama(3)) {
            m.peftAdapters().seed(1);
            m.addAdapter(lora(8, QKVO), "a");
            m.peftAdapters().seed(2);
            m.addAdapter(lora(4, "q_proj", "v_proj"), "b");
            List<String> names = List.of("b", "__base__", "a");
            for (int seq : new int[] {4, 9}) { // 12 rows: decode kernel with row slots; 27 rows: GEMM + delta
                Tensor x = ids(3, seq, 64, seq);
                long before = Kernels.layerCalls();
                Tensor fused = run(true, () -> m.withAdapterNames(names, () -> logits(m, x)));
                assertEquals(8, Kernels.layerCalls() - before, seq + " tokens: every LoRA layer natively");
                Tensor composed = run(false, () -> m.withAdapterNames(names, () -> logits(m, x)));
                assertClose(composed, fused, FP32, "mixed batch, " + seq + " tokens");
                m.disableAdapters();
                Tensor base = run(true, () -> logits(m, x.narrow(0, 1, 1)));
                m.enableAdapters();
                assertClose(base, fused.narrow(0, 1, 1), FP32, "the __base__ row is the base model's");
            }
        }
    }

    @Test
    void disableEnableMergeUnmergeAndDeleteKeepFusedEqualToComposed() {
        try (PreTrainedModel m = llama(4)) {
            m.peftAdapters().seed(1);
            m.addAdapter(lora(8, QKVO), "a");
            m.peftAdapters().seed(2);
            m.addAdapter(lora(8, QKVO), "b");
            m.setAdapter("a", "b");
            Tensor x = ids(1, 6, 64, 6);
            Tensor both = assertFusedMatches(m, x, 8, FP32, "a and b");
            m.disableAdapters();
            Tensor base = assertFusedMatches(m, x, 0, FP32, "disabled: the base layers alone");
            m.enableAdapters();
            assertClose(both, assertFusedMatches(m, x, 8, FP32, "enabled again"), FP32, "enable restores a + b");
            m.mergeAdapter();
            assertClose(both, assertFusedMatches(m, x, 0, FP32, "merged: the base path"), FP32, "merged == unmerged");
            m.unmergeAdapter();
            assertClose(both, assertFusedMatches(m, x, 8, FP32, "unmerged"), FP32, "unmerge restores the kernels' view");
            m.deleteAdapter("a");
            Tensor onlyB = assertFusedMatches(m, x, 8, FP32, "after deleting a");
            assertTrue(maxDiff(onlyB, both) > 1e-3 && maxDiff(onlyB, base) > 1e-3, "a is gone, b remains");
        }
    }

    @Test
    void inPlaceAdapterUpdatesAndReplacedTensorsAreSeen() {
        try (PreTrainedModel m = llama(5)) {
            m.addAdapter(lora(8, QKVO));
            Tensor x = ids(1, 2, 64, 7);
            Tensor first = assertFusedMatches(m, x, 8, FP32, "built");
            LoraLayer q = (LoraLayer) m.getSubmodule("model.layers.0.self_attn.q_proj");
            try (NoGradGuard g = new NoGradGuard()) {
                q.adapterParameters("default").get("lora_B.default.weight").mul_(new Scalar(3.0)); // a training step
            }
            Tensor scaled = assertFusedMatches(m, x, 8, FP32, "after an in-place update of lora_B");
            assertTrue(maxDiff(first, scaled) > 1e-4, "the kernels read the updated values");
            m.to(ScalarType.BFloat16); // every tensor replaced: the native state must be rebuilt on the new ones
            assertFusedMatches(m, x, 8, BF16, "after to(bfloat16)");
        }
    }

    @Test
    void bfloat16LlamaMatchesComposedWithinBfloat16Rounding() {
        try (PreTrainedModel m = llama(6)) {
            m.to(ScalarType.BFloat16);
            m.addAdapter(lora(8, QKVO));
            Tensor x = ids(1, 4, 64, 8);
            Tensor fused = assertFusedMatches(m, x, 8, BF16, "bf16, 4 rows");
            assertFusedMatches(m, ids(1, 24, 64, 9), 8, BF16, "bf16, 24 rows");
            m.disableAdapters();
            Tensor base = run(true, () -> logits(m, x));
            assertTrue(maxDiff(fused, base) > 10 * BF16, "the adapter moves the logits more than the tolerance");
        }
    }

    @Test
    void gpt2Conv1DLoraRunsBaseGemmPlusNativeDeltaAndMatchesComposed() throws Exception {
        try (PreTrainedModel m = MixinSupport.model("dev/peft4j/models/adapters/gpt2.config.json",
                Map.of("vocab_size", 64, "n_positions", 32, "n_ctx", 32, "n_embd", 40, "n_layer", 2, "n_head", 2), 1)) {
            m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules("c_attn", "c_proj")
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build());
            assertTrue(((LoraLayer) m.getSubmodule("transformer.h.0.attn.c_attn")).fanInFanOut());
            // c_attn, attn.c_proj and mlp.c_proj match "c_proj": 3 layers × 2
            assertFusedMatches(m, ids(1, 1, 64, 10), 6, FP32, "Conv1D, 1 row");
            assertFusedMatches(m, ids(2, 11, 64, 11), 6, FP32, "Conv1D, 22 rows");
        }
    }

    @Test
    void ia3FeedForwardAndAttentionLayersFoldTheirVectorsAndMatchComposed() {
        try (PreTrainedModel m = llama(7)) {
            IA3Config cfg = IA3Config.builder().targetModules("k_proj", "v_proj", "down_proj")
                    .feedforwardModules("down_proj").initIa3Weights(false).build();
            m.peftAdapters().seed(1);
            m.addAdapter(cfg, "a");
            m.peftAdapters().seed(2);
            m.addAdapter(cfg, "b");
            Tensor x = ids(1, 5, 64, 12);
            assertFusedMatches(m, x, 6, FP32, "IA3 b: k, v output scaling, down_proj input scaling");
            m.setAdapter("a", "b");
            Tensor both = assertFusedMatches(m, x, 6, FP32, "IA3 a·b folded");
            assertFusedMatches(m, ids(1, 20, 64, 13), 6, FP32, "IA3, 20 rows");
            Ia3Layer down = (Ia3Layer) m.getSubmodule("model.layers.1.mlp.down_proj");
            try (NoGradGuard g = new NoGradGuard()) {
                down.adapterParameters("a").get("ia3_l.a").mul_(new Scalar(0.5));
            }
            Tensor halved = assertFusedMatches(m, x, 6, FP32, "after an in-place update of a vector");
            assertTrue(maxDiff(both, halved) > 1e-4, "the folded product was refreshed");
        }
    }

    @Test
    void adaLoraUsesItsCachedEffectiveAAndSeesRankMaskingOfE() {
        try (PreTrainedModel m = llama(8)) {
            m.addAdapter(AdaLoraConfig.builder().initR(6).targetR(2).totalStep(100).loraAlpha(8)
                    .targetModules("q_proj", "v_proj").initLoraWeights(new InitLoraWeights.Flag(false)).build());
            Tensor x = ids(1, 3, 64, 14);
            Tensor before = assertFusedMatches(m, x, 4, FP32, "AdaLoRA, 3 rows");
            assertFusedMatches(m, ids(1, 18, 64, 15), 4, FP32, "AdaLoRA, 18 rows");
            SvdLinear v = (SvdLinear) m.getSubmodule("model.layers.0.self_attn.v_proj");
            try (NoGradGuard g = new NoGradGuard()) { // what the rank allocator does: mask E in place
                v.adapterParameters("default").get("lora_E.default").narrow(0, 0, 3).zero_();
            }
            Tensor masked = assertFusedMatches(m, x, 4, FP32, "after masking E");
            assertTrue(maxDiff(before, masked) > 1e-4, "the effective A was rebuilt");
        }
    }

    @Test
    void adaptersCreatedUnderInferenceModeHaveNoVersionCounterAndAreRefreshedOnEveryCall() {
        try (PreTrainedModel ia3 = llama(13); PreTrainedModel ada = llama(14); InferenceMode im = new InferenceMode()) {
            ia3.addAdapter(IA3Config.builder().targetModules("k_proj", "down_proj").feedforwardModules("down_proj")
                    .initIa3Weights(false).build());
            ada.addAdapter(AdaLoraConfig.builder().initR(4).targetR(2).totalStep(10).targetModules("v_proj")
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build());
            Tensor x = ids(1, 3, 64, 22);
            Tensor ia3Before = assertFusedMatches(ia3, x, 4, FP32, "IA3 vectors that are inference tensors");
            Tensor adaBefore = assertFusedMatches(ada, x, 2, FP32, "AdaLoRA tensors that are inference tensors");
            ((Ia3Layer) ia3.getSubmodule("model.layers.0.self_attn.k_proj")).adapterParameters("default")
                    .get("ia3_l.default").mul_(new Scalar(2.0));
            ((SvdLinear) ada.getSubmodule("model.layers.1.self_attn.v_proj")).adapterParameters("default")
                    .get("lora_E.default").mul_(new Scalar(3.0));
            assertTrue(maxDiff(ia3Before, assertFusedMatches(ia3, x, 4, FP32, "IA3 after an update")) > 1e-4);
            assertTrue(maxDiff(adaBefore, assertFusedMatches(ada, x, 2, FP32, "AdaLoRA after an update")) > 1e-4);
        }
    }

    @Test
    void activationChangesOnlyMarkTheNativeStateStaleAndTheNextInferenceForwardRebuildsIt() {
        try (PreTrainedModel m = llama(15)) {
            m.peftAdapters().seed(1);
            m.addAdapter(lora(4, QKVO), "a");
            m.peftAdapters().seed(2);
            m.addAdapter(lora(4, QKVO), "b");
            Tensor x = ids(1, 2, 64, 23);
            long none = FusedLoraLinear.liveHandles();
            Tensor b = run(true, () -> logits(m, x));
            long built = FusedLoraLinear.liveHandles();
            assertEquals(none + 8, built, "one native state per adapted layer, built by the forward");
            m.setAdapter("a");
            m.disableAdapters();
            m.enableAdapters();
            m.setAdapter("a", "b");
            m.setAdapter("b");
            assertEquals(built, FusedLoraLinear.liveHandles(), "no native work in the activation calls");
            assertClose(b, run(true, () -> logits(m, x)), 0, "rebuilt for b alone: the same numbers");
            assertEquals(built, FusedLoraLinear.liveHandles(), "the stale states were replaced, not added to");
        }
    }

    @Test
    void autogradForwardsStayOnTheComposedPath() {
        try (PreTrainedModel m = llama(9)) {
            m.addAdapter(lora(8, QKVO));
            Tensor x = ids(1, 2, 64, 16);
            long before = Kernels.layerCalls();
            Tensor y = logits(m, x); // grad mode on: the trainable adapters need the graph
            assertEquals(before, Kernels.layerCalls());
            assertTrue(y.requires_grad());
            assertClose(y.detach(), run(true, () -> logits(m, x)), FP32, "same numbers either way");
        }
    }

    private static void gc() {
        System.gc();
        try {
            Thread.sleep(200); // JavaCPP's deallocator thread frees what the GC found
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @Test
    void createForwardCloseLoopFreesEveryNativeLayerState() {
        Runnable once = () -> {
            try (PointerScope s = new PointerScope(); PreTrainedModel m = llama(10); PreTrainedModel ada = llama(11);
                    PreTrainedModel ia3 = llama(12)) {
                m.peftAdapters().seed(1);
                m.addAdapter(lora(4, QKVO), "a");
                m.addAdapter(lora(4, "q_proj"), "b");
                run(true, () -> logits(m, ids(1, 2, 64, 17)));
                run(true, () -> logits(m, ids(1, 20, 64, 18)));
                m.deleteAdapter("b"); // a layer's state freed by delete, the others by close
                run(true, () -> m.withAdapterNames(List.of("a", "__base__"), () -> logits(m, ids(2, 2, 64, 19))));
                ada.addAdapter(AdaLoraConfig.builder().initR(4).targetR(2).totalStep(10).targetModules("up_proj")
                        .initLoraWeights(new InitLoraWeights.Flag(false)).build());
                run(true, () -> logits(ada, ids(1, 2, 64, 20)));
                ia3.addAdapter(IA3Config.builder().targetModules("k_proj", "down_proj").feedforwardModules("down_proj")
                        .initIa3Weights(false).build());
                run(true, () -> logits(ia3, ids(1, 20, 64, 21)));
            }
        };
        once.run(); // first use: lazily initialised statics
        long handles = FusedLoraLinear.liveHandles();
        long calls = Kernels.layerCalls();
        gc();
        long before = Pointer.totalCount();
        for (int i = 0; i < 10; i++) {
            once.run();
            assertEquals(handles, FusedLoraLinear.liveHandles(), "every native layer state freed, iteration " + i);
        }
        gc();
        long after = Pointer.totalCount();
        // the composed path leaves a few objects to the GC too; what the layers own must not pile up
        assertTrue(after <= before + 5, "native objects grew from " + before + " to " + after);
        // per iteration: b on 2 q_proj × 2 forwards, a on 8 layers, AdaLoRA on 2 up_proj, IA3 on 2 k + 2 down
        assertEquals(10 * 18, Kernels.layerCalls() - calls, "the loop ran on the kernels");
    }
}
