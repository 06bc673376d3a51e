package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.kernels.DecodeKernels;
import dev.peft4j.kernels.Isa;
import dev.peft4j.kernels.Kernels;
import dev.peft4j.kernels.NativeGemv;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.RMSNorm;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The native decode path against the libtorch path it replaces: each op (RMSNorm, residual add + RMSNorm, RoPE,
 * slot-cache attention, the small-row GEMV) on every ISA level, float32 tightly and bfloat16 within stated
 * tolerances, and whole models (generate's greedy tokens, forwardSlots' logits) with and without LoRA, with GQA,
 * per-row lengths and a sliding window.
 */
class NativeDecodeTest {
    // float32: the native sums run in another order than libtorch's; bf16: one unit in the last place (2^-8
    // relative) where an intermediate rounds the other way, measured on the scale of the output
    static final double FP32 = 2e-6;
    static final double BF16 = 1.6e-2;

    @AfterEach
    void restore() {
        DecodeKernels.setEnabled(true);
        Kernels.setActiveIsa(Kernels.bestIsa());
    }

    static Tensor randn(long seed, ScalarType dt, long... shape) {
        torch.manual_seed(seed);
        return torch.randn(shape).to(dt);
    }

    /** max |a - b| over max |b|, in float32 */
    static double relErr(Tensor a, Tensor b) {
        Tensor af = a.to(ScalarType.Float);
        Tensor bf = b.to(ScalarType.Float);
        double scale = Math.max(1e-30, bf.abs().max().item_double());
        return af.sub(bf).abs().max().item_double() / scale;
    }

    static List<Isa> isas() {
        List<Isa> out = new ArrayList<>();
        for (Isa i : Isa.values()) {
            if (i.ordinal() <= Kernels.bestIsa().ordinal()) {
                out.add(i);
            }
        }
        return out;
    }

    static double tol(ScalarType dt) {
        return dt == ScalarType.Float ? FP32 : BF16;
    }

    @ParameterizedTest
    @ValueSource(strings = {"Float", "BFloat16"})
    void rmsNormAndTheFusedResidualAddMatchLibtorch(String dtype) {
        ScalarType dt = ScalarType.valueOf(dtype);
        try (PointerScope scope = new PointerScope(); NoGradGuard g = new NoGradGuard();
                RMSNorm norm = new RMSNorm(300, 1e-6, Init.cpu(dt))) {
            norm.weight().copy_(randn(1, dt, 300));
            Tensor x = randn(2, dt, 3, 1, 300).mul_(new Scalar(4));
            Tensor a = randn(3, dt, 3, 1, 300);
            Tensor want = norm.forward(x);
            Tensor r = x.add(a);
            Tensor wantAfterAdd = norm.forward(r);
            for (Isa isa : isas()) {
                Kernels.setActiveIsa(isa);
                double e = relErr(DecodeKernels.rmsNorm(x, norm.weight(), norm.eps()), want);
                assertTrue(e < tol(dt), dtype + " rmsNorm on " + isa + " off by " + e);
                Tensor residual = x.clone();
                Tensor y = DecodeKernels.addRmsNorm(residual, a, norm.weight(), norm.eps());
                assertTrue(residual.equal(r), dtype + " the residual must be libtorch's x.add(a) bit for bit, " + isa);
                e = relErr(y, wantAfterAdd);
                assertTrue(e < tol(dt), dtype + " addRmsNorm on " + isa + " off by " + e);
            }
            assertThrows(IllegalArgumentException.class, () -> DecodeKernels.rmsNorm(x, randn(4, dt, 299), 1e-6),
                    "a weight of the wrong width");
        }
    }

    /** transformers' rotate: cos / sin in float32 from positions · inv_freq, cast to the dtype, three ops. */
    static Tensor ropeReference(Tensor x, long[] positions, Tensor invFreq) {
        ScalarType dt = x.scalar_type().intern();
        long half = invFreq.numel();
        Tensor pos = Tensor.create(positions, positions.length, 1, 1).to(ScalarType.Float);
        Tensor freqs = pos.mul(invFreq);
        Tensor emb = torch.cat(new TensorVector(freqs, freqs), -1);
        Tensor cos = emb.cos().to(dt);
        Tensor sin = emb.sin().to(dt);
        Tensor x1 = x.narrow(-1, 0, half);
        Tensor x2 = x.narrow(-1, half, half);
        Tensor rotated = torch.cat(new TensorVector(x2.neg(), x1), -1);
        return x.mul(cos).add_(rotated.mul_(sin));
    }

    @ParameterizedTest
    @ValueSource(strings = {"Float", "BFloat16"})
    void ropeMatchesTransformersRotateHalf(String dtype) {
        ScalarType dt = ScalarType.valueOf(dtype);
        try (PointerScope scope = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            float[] inv = RopeScaling.of(ModelConfig.parse("{\"rope_theta\": 10000.0}")).invFreq(16);
            Tensor invFreq = Tensor.create(inv);
            long[] positions = {0, 5, 1234};
            Tensor x = randn(5, dt, 3, 6, 16); // rows, heads, head_dim
            Tensor want = ropeReference(x, positions, invFreq);
            Tensor got = x.clone();
            DecodeKernels.rope(got, 6, positions, invFreq);
            // cos / sin: glibc's float32 against libtorch's vectorised ones, at most an ulp apart
            double e = relErr(got, want);
            assertTrue(e < tol(dt), dtype + " rope off by " + e);
            assertTrue(got.select(0, 0).equal(x.select(0, 0)), "position 0 is the identity");
        }
    }

    /** The libtorch path's attention for the same step: write, gather each row's slot, mask, SDPA over repeated kv. */
    static Tensor attentionReference(Tensor q, Tensor k, Tensor v, Tensor keys, Tensor values, int[] slotOf,
            long[] past, long window, long heads) {
        long rows = slotOf.length;
        long kvHeads = keys.size(1);
        long dim = keys.size(3);
        long keyLength = 0;
        for (long p : past) {
            keyLength = Math.max(keyLength, p + 1);
        }
        List<Tensor> outs = new ArrayList<>();
        for (int i = 0; i < rows; i++) {
            keys.select(0, slotOf[i]).select(1, past[i]).copy_(k.view(rows, kvHeads, dim).select(0, i));
            values.select(0, slotOf[i]).select(1, past[i]).copy_(v.view(rows, kvHeads, dim).select(0, i));
        }
        for (int i = 0; i < rows; i++) {
            Tensor kk = keys.select(0, slotOf[i]).narrow(1, 0, keyLength).unsqueeze(0);
            Tensor vv = values.select(0, slotOf[i]).narrow(1, 0, keyLength).unsqueeze(0);
            Tensor qq = q.view(rows, heads, 1, dim).select(0, i).unsqueeze(0);
            Tensor kp = Attention.arange(0, keyLength, q);
            Tensor mask = kp.le(new Scalar(past[i]));
            if (window > 0) {
                mask = mask.logical_and(kp.gt(new Scalar(past[i] - window)));
            }
            long groups = heads / kvHeads;
            outs.add(Attention.sdpa(qq, Attention.repeatKv(kk, groups), Attention.repeatKv(vv, groups),
                    mask.view(1, 1, 1, keyLength), 1.0 / Math.sqrt(dim)));
        }
        TensorVector tv = new TensorVector();
        for (Tensor t : outs) {
            tv.push_back(t);
        }
        return torch.cat(tv, 0).view(rows, 1, heads * dim);
    }

    @ParameterizedTest
    @ValueSource(strings = {"Float", "BFloat16"})
    void slotAttentionMatchesLibtorchWithGqaRaggedRowsAndASlidingWindow(String dtype) {
        ScalarType dt = ScalarType.valueOf(dtype);
        try (PointerScope scope = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            long heads = 6;
            long kvHeads = 2;
            long dim = 16;
            int[] slotOf = {2, 0, 3};
            long[] past = {9, 0, 40};
            for (long window : new long[] {0, 4}) {
                Tensor keys0 = randn(6, dt, 4, kvHeads, 48, dim);
                Tensor values0 = randn(7, dt, 4, kvHeads, 48, dim);
                Tensor q = randn(8, dt, 3, 1, heads * dim);
                Tensor k = randn(9, dt, 3, 1, kvHeads * dim);
                Tensor v = randn(10, dt, 3, 1, kvHeads * dim);
                Tensor refKeys = keys0.clone();
                Tensor refValues = values0.clone();
                Tensor want = attentionReference(q, k, v, refKeys, refValues, slotOf, past, window, heads);
                for (Isa isa : isas()) {
                    Kernels.setActiveIsa(isa);
                    Tensor keys = keys0.clone();
                    Tensor values = values0.clone();
                    Tensor got = DecodeKernels.attention(q, k, v, keys, values, slotOf, past, window,
                            1.0 / Math.sqrt(dim));
                    assertTrue(keys.equal(refKeys) && values.equal(refValues), "the cache written in place, " + isa);
                    double e = relErr(got, want);
                    // bf16: libtorch rounds the probabilities to bf16 before multiplying v, the kernel keeps them
                    // in float32
                    assertTrue(e < tol(dt), dtype + " attention on " + isa + " window " + window + " off by " + e);
                }
            }
            Tensor keys = randn(6, dt, 4, kvHeads, 48, dim);
            Tensor q = randn(8, dt, 2, 1, heads * dim);
            Tensor k = randn(9, dt, 2, 1, kvHeads * dim);
            assertThrows(IllegalArgumentException.class, () -> DecodeKernels.attention(q, k, k, keys, keys.clone(),
                    new int[] {1, 1}, new long[] {0, 0}, 0, 1.0), "two rows on one slot");
            assertThrows(IllegalArgumentException.class, () -> DecodeKernels.attention(q, k, k, keys, keys.clone(),
                    new int[] {0, 1}, new long[] {48, 0}, 0, 1.0), "a position past the cache");
        }
    }

    /**
     * The fused call (RoPE of q and k, then the attention) equals the two RoPE calls and the attention call bit for
     * bit, on every ISA, with full and partial rotary dims, scaled and not, soft-capped and not, and for a repeated
     * step (the per-thread tables reused) and a new one; bad inverse frequencies are refused.
     */
    @ParameterizedTest
    @ValueSource(strings = {"Float", "BFloat16"})
    void ropeAttentionEqualsRopeThenAttention(String dtype) {
        ScalarType dt = ScalarType.valueOf(dtype);
        try (PointerScope scope = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            long heads = 8;
            long kvHeads = 2;
            long dim = 16;
            int[] slotOf = {1, 0};
            Tensor keys0 = randn(16, dt, 2, kvHeads, 40, dim);
            Tensor values0 = randn(17, dt, 2, kvHeads, 40, dim);
            Tensor q0 = randn(18, dt, 2, 1, heads * dim);
            Tensor k0 = randn(19, dt, 2, 1, kvHeads * dim);
            Tensor v = randn(20, dt, 2, 1, kvHeads * dim);
            float[] full = RopeScaling.of(ModelConfig.parse("{\"rope_theta\": 10000.0}")).invFreq(16);
            float[] partial = RopeScaling.of(ModelConfig.parse("{\"rope_theta\": 10000.0}")).invFreq(8);
            for (Isa isa : isas()) {
                Kernels.setActiveIsa(isa);
                for (long[] past : new long[][] {{7, 30}, {7, 30}, {8, 31}}) {
                    for (float[] inv : new float[][] {full, partial}) {
                        for (double ropeScale : new double[] {1.0, 1.25}) {
                            for (double softcap : new double[] {0, 3.0}) {
                                Tensor invFreq = Tensor.create(inv);
                                Tensor qa = q0.clone();
                                Tensor ka = k0.clone();
                                Tensor keysA = keys0.clone();
                                Tensor valuesA = values0.clone();
                                DecodeKernels.rope(qa, heads, past, invFreq, dim, ropeScale);
                                DecodeKernels.rope(ka, kvHeads, past, invFreq, dim, ropeScale);
                                Tensor want = DecodeKernels.attention(qa, ka, v, keysA, valuesA, slotOf, past, 0,
                                        0.25, softcap);
                                Tensor qb = q0.clone();
                                Tensor kb = k0.clone();
                                Tensor keysB = keys0.clone();
                                Tensor valuesB = values0.clone();
                                Tensor got = DecodeKernels.ropeAttention(qb, kb, v, keysB, valuesB, slotOf, past, 0,
                                        0.25, softcap, invFreq, ropeScale);
                                String what = dtype + " " + isa + " rot " + 2 * inv.length + " scale " + ropeScale
                                        + " softcap " + softcap + " past " + past[0];
                                assertTrue(got.equal(want), what + ": output");
                                assertTrue(qb.equal(qa) && kb.equal(ka), what + ": q and k rotated in place");
                                assertTrue(keysB.equal(keysA) && valuesB.equal(valuesA), what + ": the cache");
                            }
                        }
                    }
                }
            }
            Tensor q = q0.clone();
            Tensor k = k0.clone();
            Tensor keys = keys0.clone();
            Tensor values = values0.clone();
            long[] past = {1, 2};
            assertThrows(IllegalArgumentException.class, () -> DecodeKernels.ropeAttention(q, k, v, keys, values,
                    slotOf, past, 0, 0.25, 0, Tensor.create(new float[10]), 1.0), "20 rotary dims in heads of 16");
            assertThrows(IllegalArgumentException.class, () -> DecodeKernels.ropeAttention(q, k, v, keys, values,
                    slotOf, past, 0, 0.25, 0, Tensor.create(new double[] {1, 0.1}), 1.0), "float64 frequencies");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"Float", "BFloat16"})
    void smallRowLinearsRunOnTheNativeGemvAndRebuildWhenTheWeightIsReplaced(String dtype) {
        ScalarType dt = ScalarType.valueOf(dtype);
        long handles = NativeGemv.liveHandles();
        try (PointerScope scope = new PointerScope(); NoGradGuard g = new NoGradGuard();
                Linear lin = new Linear(40, 24, true, Init.cpu(dt))) {
            Init.normal(lin, 0.2, 3);
            Tensor x = randn(11, dt, 3, 40);
            Tensor want = torch.linear(x, lin.weight(), new org.bytedeco.pytorch.TensorOptional(lin.bias()));
            Tensor got = inference(() -> lin.forward(x));
            assertEquals(handles + 1, NativeGemv.liveHandles(), "a GEMV state built by the first inference forward");
            assertTrue(relErr(got, want) < tol(dt), "GEMV off by " + relErr(got, want));
            // merge-like in-place update: read by the next forward, same state
            lin.weight().mul_(new Scalar(2));
            Tensor want2 = torch.linear(x, lin.weight(), new org.bytedeco.pytorch.TensorOptional(lin.bias()));
            assertTrue(relErr(inference(() -> lin.forward(x)), want2) < tol(dt), "in-place update seen");
            // a replaced weight (to(dtype) round trip, a load) rebuilds the state
            lin.setParameter("weight", randn(12, dt, 24, 40), false).close();
            Tensor want3 = torch.linear(x, lin.weight(), new org.bytedeco.pytorch.TensorOptional(lin.bias()));
            assertTrue(relErr(inference(() -> lin.forward(x)), want3) < tol(dt), "replaced weight used");
            assertEquals(handles + 1, NativeGemv.liveHandles(), "the old state replaced, not leaked");
            lin.to(dt == ScalarType.Float ? ScalarType.BFloat16 : ScalarType.Float);
            Tensor x2 = x.to(lin.weight().scalar_type().intern());
            Tensor want4 = torch.linear(x2, lin.weight(), new org.bytedeco.pytorch.TensorOptional(lin.bias()));
            assertTrue(relErr(inference(() -> lin.forward(x2)), want4) < BF16, "after to(dtype)");
            // 17 rows and autograd forwards stay on libtorch (no state needed for them)
            Tensor big = randn(13, lin.weight().scalar_type().intern(), 17, 40);
            assertTrue(inference(() -> lin.forward(big)).equal(torch.linear(big, lin.weight(),
                    new org.bytedeco.pytorch.TensorOptional(lin.bias()))), "17 rows: libtorch's linear");
        }
        assertEquals(handles, NativeGemv.liveHandles(), "close frees the GEMV state");
    }

    static <T> T inference(Supplier<T> f) {
        try (InferenceMode im = new InferenceMode()) {
            return f.get();
        }
    }

    static LlamaForCausalLM tinyLlama(ScalarType dt, String extra, long seed) {
        String json = "{\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":97,"
                + "\"hidden_size\":64,\"intermediate_size\":112,\"num_hidden_layers\":3,\"num_attention_heads\":8,"
                + "\"num_key_value_heads\":2,\"max_position_embeddings\":256,\"rms_norm_eps\":1e-6,"
                + "\"tie_word_embeddings\":false" + extra + "}";
        LlamaForCausalLM m = (LlamaForCausalLM) AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(dt));
        Init.normal(m, 0.25, seed);
        return m;
    }

    static long[] tokens(Tensor ids) {
        Tensor c = ids.contiguous();
        long[] out = new long[(int) c.numel()];
        c.data_ptr_long().capacity(out.length).get(out);
        return out;
    }

    static Tensor prompt(long seed, long rows, long length) {
        return prompt(seed, rows, length, 97);
    }

    static Tensor prompt(long seed, long rows, long length, long vocab) {
        torch.manual_seed(seed);
        try (TensorOptions o = new TensorOptions(ScalarType.Long)) {
            return torch.randint(vocab, new long[] {rows, length}, o);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"base", "lora"})
    void greedyGenerateGivesTheOldPathsTokens(String variant) {
        try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = tinyLlama(ScalarType.Float, "", 21)) {
            if (variant.equals("lora")) {
                m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj", "k_proj", "v_proj",
                        "o_proj").initLoraWeights(new InitLoraWeights.Flag(false)).build());
            }
            Tensor ids = prompt(5, 2, 9);
            DecodeKernels.setEnabled(false);
            long[] old = tokens(Generation.generate(m, ids, null, Generation.Options.greedy(12)));
            DecodeKernels.setEnabled(true);
            long calls = DecodeKernels.attentionCalls();
            long[] now = tokens(Generation.generate(m, ids, null, Generation.Options.greedy(12)));
            assertEquals(11 * 3, DecodeKernels.attentionCalls() - calls, "11 one-token steps of 3 layers, native");
            assertArrayEquals(old, now, variant + ": greedy tokens of the native path");
        }
    }

    @Test
    void slidingWindowModelsUseTheWindowOnTheNativePath() {
        // the model_type decides whether sliding_window applies: Mistral's does
        String json = "{\"model_type\":\"mistral\",\"architectures\":[\"MistralForCausalLM\"],\"vocab_size\":97,"
                + "\"hidden_size\":64,\"intermediate_size\":112,\"num_hidden_layers\":2,\"num_attention_heads\":8,"
                + "\"num_key_value_heads\":2,\"max_position_embeddings\":256,\"rms_norm_eps\":1e-6,"
                + "\"sliding_window\":4,\"tie_word_embeddings\":false}";
        try (PointerScope scope = new PointerScope();
                LlamaForCausalLM m = (LlamaForCausalLM) AutoModel.fromConfig(ModelConfig.parse(json),
                        Init.cpu(ScalarType.Float))) {
            Init.normal(m, 0.25, 4);
            assertSlotStepsMatch(m, ScalarType.Float, 2e-5);
            Tensor ids = prompt(6, 1, 7);
            DecodeKernels.setEnabled(false);
            long[] old = tokens(Generation.generate(m, ids, null, Generation.Options.greedy(10)));
            DecodeKernels.setEnabled(true);
            assertArrayEquals(old, tokens(Generation.generate(m, ids, null, Generation.Options.greedy(10))));
        }
    }

    /** forwardSlots' one-token logits, native vs libtorch path, over ragged rows and non-consecutive slots. */
    static void assertSlotStepsMatch(CausalLM m, ScalarType dt, double tol) {
        assertSlotStepsMatch(m, dt, tol, 97);
    }

    /** The same, with token ids below {@code vocab}. */
    static void assertSlotStepsMatch(CausalLM m, ScalarType dt, double tol, long vocab) {
        int[] slotOf = {3, 0, 1};
        long[] promptLengths = {6, 1, 11};
        Tensor[] caches = new Tensor[2];
        Tensor[] logits = new Tensor[2];
        for (int path = 0; path < 2; path++) {
            DecodeKernels.setEnabled(path == 1);
            try (InferenceMode im = new InferenceMode(); SlotKVCache cache = m.newSlotCache(4, 32)) {
                long[] past = new long[3];
                // prompts one row at a time (libtorch path for T > 1), then 5 one-token steps of all three rows
                for (int r = 0; r < 3; r++) {
                    m.forwardSlots(prompt(30 + r, 1, promptLengths[r], vocab), cache, new int[] {slotOf[r]},
                            new long[] {0}).close();
                    past[r] = promptLengths[r];
                }
                List<Tensor> steps = new ArrayList<>();
                for (int s = 0; s < 5; s++) {
                    steps.add(m.forwardSlots(prompt(50 + s, 3, 1, vocab), cache, slotOf, past));
                    for (int r = 0; r < 3; r++) {
                        past[r]++;
                    }
                }
                TensorVector tv = new TensorVector();
                steps.forEach(tv::push_back);
                logits[path] = torch.stack(tv);
                caches[path] = cache.keys(0).clone();
            }
        }
        double e = relErr(logits[1], logits[0]);
        assertTrue(e < tol, dt + " native step logits off by " + e);
        assertTrue(relErr(caches[1], caches[0]) < tol, "the slot caches hold the same keys");
    }

    @ParameterizedTest
    @ValueSource(strings = {"Float", "BFloat16"})
    void forwardSlotsOneTokenStepsMatchTheLibtorchPathWithAndWithoutLora(String dtype) {
        ScalarType dt = ScalarType.valueOf(dtype);
        try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = tinyLlama(dt, "", 8)) {
            // bf16 logits: a few ulps of the largest logit, as roundings inside the step differ (see BF16)
            double tol = dt == ScalarType.Float ? 2e-5 : 3e-2;
            long calls = DecodeKernels.attentionCalls();
            assertSlotStepsMatch(m, dt, tol);
            // 5 steps of 3 layers, and the 1-token prompt of row 1, on the native path
            assertEquals(6 * 3, DecodeKernels.attentionCalls() - calls, "one-token forwards on the native path");
            m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj", "k_proj", "v_proj",
                    "o_proj", "down_proj").initLoraWeights(new InitLoraWeights.Flag(false)).build());
            assertSlotStepsMatch(m, dt, tol);
        }
    }

    @Test
    void aWrappedEmbeddingStaysOnTheNativeStep() {
        try (PointerScope scope = new PointerScope(); LlamaForCausalLM m = tinyLlama(ScalarType.Float, "", 9)) {
            // modules_to_save wraps embed_tokens: its weight moves under original_module
            m.addAdapter(LoraConfig.builder().r(2).targetModules("q_proj").modulesToSave(List.of("embed_tokens"))
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build());
            long calls = DecodeKernels.attentionCalls();
            assertSlotStepsMatch(m, ScalarType.Float, 2e-5);
            assertEquals(6 * 3, DecodeKernels.attentionCalls() - calls, "one-token forwards on the native path");
        }
    }
}
