package dev.peft4j.tuners.lora;

import static dev.peft4j.tuners.Goldens.assertClose;
import static dev.peft4j.tuners.Goldens.assertSameValues;
import static dev.peft4j.tuners.Goldens.floats;
import static dev.peft4j.tuners.Goldens.goldenCase;
import static dev.peft4j.tuners.Goldens.tensor;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.peft4j.tuners.Goldens;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Tolerances. fp32 against fp32 references: atol = rtol = 1e-5 — the references come from other BLAS/summation
 * orders (pure-Python doubles for peft-rs, torch 1.13 for the goldens); with O(1) values and ≤ 8-term dot products the
 * fp32 disagreement is a few 1e-7. bf16 results: atol = rtol = 2⁻⁷ — one bf16 ulp (8 significant bits); the base
 * bf16 GEMM of libtorch 2.10 and torch 1.13 may round one output to a neighbouring bf16 value, nothing more.
 */
class LoraMathTest {
    static final double FP32 = 1e-5;
    static final double BF16 = 1.0 / 128;
    private PointerScope scope;

    @BeforeEach
    void openScope() {
        scope = new PointerScope();
    }

    @AfterEach
    void closeScope() {
        scope.close();
    }

    static Tensor t(float[] data, long... shape) {
        return Tensor.create(data, shape);
    }

    @Test
    void forwardAndMergeMatchPeftRsParityVectors() {
        JsonNode f = Goldens.json("/dev/peft4j/tuners/lora/lora-layer-parity-peft-rs/lora_fwd_merge.json");
        Tensor a = tensor(f.path("lora_A"));
        Tensor b = tensor(f.path("lora_B"));
        Tensor w = tensor(f.path("base_weight"));
        Tensor x = tensor(f.path("input"));
        double s = LoraMath.scaling(f.path("meta").path("alpha").asDouble(), f.path("meta").path("r").asInt(), false);
        assertEquals(f.path("meta").path("scaling").asDouble(), s);
        double atol = f.path("meta").path("atol").asDouble();
        double rtol = f.path("meta").path("rtol").asDouble();
        LoraMath.Adapter ad = new LoraMath.Adapter(a, b, s);

        Tensor y = LoraMath.forward(torch.linear(x, w), x, List.of(ad), false);
        assertClose(tensor(f.path("forward_output")), y, atol, rtol, "forward");

        Tensor merged = w.clone();
        LoraMath.merge(merged, null, ad, false, false, "default");
        assertClose(tensor(f.path("merged_weight")), merged, atol, rtol, "merged weight");
        assertClose(tensor(f.path("merged_forward_output")), torch.linear(x, merged), atol, rtol, "merged forward");
    }

    @Test
    void handComputedDeltaAndDeltaWeight() {
        // x = [1, 2], A = [[1, 1]], B = [[2], [3]], s = 0.5: x·Aᵀ = 3, ·Bᵀ = [6, 9], ·s = [3, 4.5]
        Tensor x = t(new float[] {1, 2}, 1, 2);
        Tensor a = t(new float[] {1, 1}, 1, 2);
        Tensor b = t(new float[] {2, 3}, 2, 1);
        assertArrayEquals(new float[] {3f, 4.5f}, floats(LoraMath.delta(x, a, b, 0.5)));
        // B·A·s = [[1, 1], [1.5, 1.5]]; transposed for fan_in_fan_out
        assertArrayEquals(new float[] {1f, 1f, 1.5f, 1.5f}, floats(LoraMath.deltaWeight(a, b, 0.5, false)));
        assertArrayEquals(new float[] {1f, 1.5f, 1f, 1.5f}, floats(LoraMath.deltaWeight(a, b, 0.5, true)));
        assertArrayEquals(new long[] {2, 2}, LoraMath.deltaWeight(a, b, 0.5, true).shape());
    }

    @Test
    void zeroBGivesExactlyZeroDeltaAndTheBaseOutputBitForBit() {
        torch.manual_seed(7);
        Tensor x = torch.randn(3, 4, 8);
        Tensor w = torch.randn(6, 8);
        Tensor a = torch.randn(4, 8);
        Tensor b = torch.zeros(6, 4);
        Tensor delta = LoraMath.delta(x, a, b, 3.0);
        assertEquals(0.0, torch.abs(delta).max().item_double());
        Tensor base = torch.linear(x, w);
        assertSameValues(base, LoraMath.forward(base, x, List.of(new LoraMath.Adapter(a, b, 3.0)), false), "forward");
        Tensor merged = w.clone();
        LoraMath.merge(merged, null, new LoraMath.Adapter(a, b, 3.0), false, false, "default");
        assertSameValues(w, merged, "merged weight");
    }

    @Test
    void twoAdaptersWithLoraBiasSumAndMergeLikeTorchGolden() {
        JsonNode c = goldenCase("lora_linear_fp32_two_adapters");
        Tensor x = tensor(c.path("x"));
        Tensor w = tensor(c.path("W"));
        Tensor bias = tensor(c.path("bias"));
        LoraMath.Adapter ad1 = new LoraMath.Adapter(tensor(c.path("A1")), tensor(c.path("B1")), c.path("s1").asDouble());
        LoraMath.Adapter ad2 = new LoraMath.Adapter(tensor(c.path("A2")), tensor(c.path("B2")), tensor(c.path("bB2")),
                c.path("s2").asDouble(), 0.0);
        Tensor base = torch.linear(x, w, new TensorOptional(bias));
        Tensor y = LoraMath.forward(base, x, List.of(ad1, ad2), false);
        assertClose(tensor(c.path("forward")), y, FP32, FP32, "forward");
        assertClose(tensor(c.path("delta_weight_1")), LoraMath.deltaWeight(ad1.a(), ad1.b(), ad1.scaling(), false),
                FP32, FP32, "delta weight");

        Tensor wm = w.clone();
        Tensor bm = bias.clone();
        LoraMath.merge(wm, bm, ad1, false, false, "one");
        LoraMath.merge(wm, bm, ad2, false, true, "two");
        assertClose(tensor(c.path("merged_W")), wm, FP32, FP32, "merged W");
        assertClose(tensor(c.path("merged_bias")), bm, FP32, FP32, "merged bias");
        Tensor merged = torch.linear(x, wm, new TensorOptional(bm));
        assertClose(tensor(c.path("merged_forward")), merged, FP32, FP32, "merged forward");
        assertClose(y, merged, FP32, FP32, "merged == unmerged");

        LoraMath.unmerge(wm, bm, ad2, false);
        LoraMath.unmerge(wm, bm, ad1, false);
        assertClose(w, wm, 1e-6, 0, "unmerged weight restored");
        assertClose(bias, bm, 1e-6, 0, "unmerged bias restored");
    }

    @Test
    void bf16BaseWithFp32AdapterAccumulatesInFp32AndRoundsOnce() {
        JsonNode c = goldenCase("lora_bf16_base_fp32_adapter");
        Tensor x = tensor(c.path("x"));
        Tensor w = tensor(c.path("W"));
        LoraMath.Adapter ad = new LoraMath.Adapter(tensor(c.path("A")), tensor(c.path("B")), c.path("s").asDouble());
        Tensor y = LoraMath.forward(torch.linear(x, w), x, List.of(ad), false);
        assertEquals(ScalarType.BFloat16, y.scalar_type().intern());
        assertClose(tensor(c.path("forward")), y, BF16, BF16, "forward");

        Tensor unsafe = w.clone();
        LoraMath.merge(unsafe, null, ad, false, false, "default");
        assertEquals(ScalarType.BFloat16, unsafe.scalar_type().intern());
        assertClose(tensor(c.path("merged_W_unsafe")), unsafe, BF16, BF16, "unsafe merge");
        Tensor safe = w.clone();
        LoraMath.merge(safe, null, ad, false, true, "default");
        assertClose(tensor(c.path("merged_W_safe")), safe, BF16, BF16, "safe merge");
    }

    /**
     * bf16 neighbours of 256 are 256 and 258. A fp32 delta of 1 + 2⁻⁸ added once gives 257.0039 → 258; rounded to
     * bf16 first (1.0) it gives the tie 257 → 256 (round half to even). Two deltas of 0.75: summed in fp32, 257.5 →
     * 258; rounded after each adapter (PEFT ≤ 0.8), 256.75 → 256 twice.
     */
    @Test
    void bf16BaseSumIsRoundedOnceNotPerAdapter() {
        Tensor x = t(new float[] {1}, 1, 1).to(ScalarType.BFloat16);
        Tensor w = t(new float[] {256}, 1, 1).to(ScalarType.BFloat16);
        Tensor one = t(new float[] {1}, 1, 1);
        Tensor base = torch.linear(x, w);
        LoraMath.Adapter odd = new LoraMath.Adapter(one, t(new float[] {1.00390625f}, 1, 1), 1.0);
        assertArrayEquals(new float[] {258}, floats(LoraMath.forward(base, x, List.of(odd), false)));
        LoraMath.Adapter quarter = new LoraMath.Adapter(one, t(new float[] {0.75f}, 1, 1), 1.0);
        Tensor two = LoraMath.forward(base, x, List.of(quarter, quarter), false);
        assertEquals(ScalarType.BFloat16, two.scalar_type().intern());
        assertArrayEquals(new float[] {258}, floats(two));
        // unsafe merge adds the fp32 delta and rounds once; safe merge rounds the delta to bf16 first
        Tensor unsafe = w.clone();
        LoraMath.merge(unsafe, null, odd, false, false, "default");
        assertArrayEquals(new float[] {258}, floats(unsafe));
        Tensor safe = w.clone();
        LoraMath.merge(safe, null, odd, false, true, "default");
        assertArrayEquals(new float[] {256}, floats(safe));
    }

    @Test
    void bf16AdapterDeltaWeightIsComputedInFp32AndCastBack() {
        JsonNode c = goldenCase("lora_bf16_adapter");
        Tensor x = tensor(c.path("x"));
        Tensor w = tensor(c.path("W"));
        LoraMath.Adapter ad = new LoraMath.Adapter(tensor(c.path("A")), tensor(c.path("B")), c.path("s").asDouble());
        Tensor dw = LoraMath.deltaWeight(ad.a(), ad.b(), ad.scaling(), false);
        assertEquals(ScalarType.BFloat16, dw.scalar_type().intern());
        // r = 2 products of bf16 values are exact in fp32: the single rounding to bf16 matches bit for bit
        assertSameValues(tensor(c.path("delta_weight")), dw, "delta weight");
        assertClose(tensor(c.path("forward")), LoraMath.forward(torch.linear(x, w), x, List.of(ad), false),
                BF16, BF16, "forward");
        Tensor wm = w.clone();
        LoraMath.merge(wm, null, ad, false, false, "default");
        assertSameValues(tensor(c.path("merged_W")), wm, "merged W");
    }

    @Test
    void conv1dTargetUsesTheSameTermAndMergesTransposed() {
        JsonNode c = goldenCase("lora_conv1d");
        Tensor x = tensor(c.path("x"));
        Tensor w = tensor(c.path("W")); // (in, out)
        Tensor bias = tensor(c.path("bias"));
        LoraMath.Adapter ad = new LoraMath.Adapter(tensor(c.path("A")), tensor(c.path("B")), c.path("s").asDouble());
        Tensor base = x.matmul(w).add(bias);
        Tensor y = LoraMath.forward(base, x, List.of(ad), false);
        assertClose(tensor(c.path("forward")), y, FP32, FP32, "forward");
        Tensor wm = w.clone();
        LoraMath.merge(wm, null, ad, true, false, "default");
        assertClose(tensor(c.path("merged_W")), wm, FP32, FP32, "merged W");
        assertClose(y, x.matmul(wm).add(bias), FP32, FP32, "merged == unmerged");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraMath.merge(w.clone(), null, ad, false, false, "default"));
        assertTrue(e.getMessage().contains("[6, 5]"), e.getMessage());
    }

    @Test
    void embeddingForwardAndMergeMatchTorchGolden() {
        JsonNode c = goldenCase("lora_embedding");
        Tensor ids = tensor(c.path("ids"));
        Tensor w = tensor(c.path("W"));
        Tensor ea = tensor(c.path("A"));
        Tensor eb = tensor(c.path("B"));
        double s = c.path("s").asDouble();
        Tensor base = torch.embedding(w, ids);
        LoraMath.Adapter ad = new LoraMath.Adapter(ea, eb, s);
        assertClose(tensor(c.path("forward")), LoraMath.embeddingForward(base, ids, List.of(ad), -1, null),
                FP32, FP32, "forward");
        assertClose(tensor(c.path("forward_embed_scale")),
                LoraMath.embeddingForward(base, ids, List.of(ad), -1, c.path("embed_scale").asDouble()),
                FP32, FP32, "forward with embed_scale");
        Tensor wm = w.clone();
        LoraMath.mergeEmbedding(wm, ea, eb, s, true, "default");
        assertClose(tensor(c.path("merged_W")), wm, FP32, FP32, "merged W");
        assertClose(LoraMath.embeddingForward(base, ids, List.of(ad), -1, null), torch.embedding(wm, ids), FP32, FP32,
                "merged == unmerged");
        LoraMath.unmergeEmbedding(wm, ea, eb, s);
        assertClose(w, wm, 1e-6, 0, "unmerged");
    }

    @Test
    void mergedEqualsUnmergedForRandomShapes() {
        torch.manual_seed(11);
        for (int r : new int[] {1, 8, 16}) {
            Tensor x = torch.randn(4, 7, 32);
            Tensor w = torch.randn(24, 32).mul_(new Scalar(0.2));
            Tensor bias = torch.randn(24);
            LoraMath.Adapter ad = new LoraMath.Adapter(torch.randn(r, 32).mul_(new Scalar(0.2)),
                    torch.randn(24, r).mul_(new Scalar(0.2)), LoraMath.scaling(16, r, true));
            Tensor y = LoraMath.forward(torch.linear(x, w, new TensorOptional(bias)), x, List.of(ad), false);
            Tensor wm = w.clone();
            LoraMath.merge(wm, null, ad, false, false, "default");
            // 32-term dot products of O(1) values: fp32 reassociation error stays below 1e-5
            assertClose(y, torch.linear(x, wm, new TensorOptional(bias)), FP32, FP32, "r=" + r);
        }
    }

    @Test
    void mixedBatchGivesEachSampleItsAdapterRows() {
        torch.manual_seed(12);
        Tensor x = torch.randn(4, 3, 8);
        Tensor w = torch.randn(6, 8);
        LoraMath.Adapter one = new LoraMath.Adapter(torch.randn(2, 8), torch.randn(6, 2), 2.0);
        LoraMath.Adapter two = new LoraMath.Adapter(torch.randn(4, 8), torch.randn(6, 4), 0.5);
        Tensor base = torch.linear(x, w);
        Tensor y = LoraMath.mixedBatchForward(base, x, List.of("two", "__base__", "one", "two"),
                java.util.Map.of("one", one, "two", two), false);
        Tensor y1 = LoraMath.forward(base, x, List.of(one), false);
        Tensor y2 = LoraMath.forward(base, x, List.of(two), false);
        assertSameValues(y2.select(0, 0), y.select(0, 0), "row 0: two");
        assertSameValues(base.select(0, 1), y.select(0, 1), "row 1: base");
        assertSameValues(y1.select(0, 2), y.select(0, 2), "row 2: one");
        assertSameValues(y2.select(0, 3), y.select(0, 3), "row 3: two");
        // an adapter the layer does not hold leaves its rows at the base output
        assertSameValues(base, LoraMath.mixedBatchForward(base, x, List.of("x", "x", "x", "x"),
                java.util.Map.of("one", one), false), "unknown adapter");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraMath.mixedBatchForward(base, x, List.of("one"), java.util.Map.of("one", one), false));
        assertEquals("Length of `adapter_names` should be the same as the number of inputs, but got 1 and 4 "
                + "respectively.", e.getMessage());
    }

    @Test
    void mixedBatchCastsEachTermToTheBaseDtypeBeforeAdding() {
        // the fp32 term 1 + 2⁻⁸ becomes bf16 1.0 first: 256 + 1 is the tie 257 -> 256 (forward() gives 258)
        Tensor x = t(new float[] {1}, 1, 1).to(ScalarType.BFloat16);
        Tensor base = torch.linear(x, t(new float[] {256}, 1, 1).to(ScalarType.BFloat16));
        LoraMath.Adapter odd = new LoraMath.Adapter(t(new float[] {1}, 1, 1), t(new float[] {1.00390625f}, 1, 1), 1.0);
        Tensor y = LoraMath.mixedBatchForward(base, x, List.of("a"), java.util.Map.of("a", odd), false);
        assertEquals(ScalarType.BFloat16, y.scalar_type().intern());
        assertArrayEquals(new float[] {256}, floats(y));
    }

    @Test
    void safeMergeRefusesNonFiniteWeightsAndLeavesTheWeightUntouched() {
        Tensor w = torch.ones(2, 2);
        Tensor a = t(new float[] {Float.NaN, 0}, 1, 2);
        Tensor b = t(new float[] {1, 1}, 2, 1);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraMath.merge(w, null, new LoraMath.Adapter(a, b, 1.0), false, true, "broken"));
        assertEquals("NaNs detected in the merged weights. The adapter broken seems to be broken", e.getMessage());
        assertArrayEquals(new float[] {1, 1, 1, 1}, floats(w));
    }

    @Test
    void loraBiasNeedsABaseBiasToMerge() {
        LoraMath.Adapter ad = new LoraMath.Adapter(torch.ones(1, 2), torch.ones(2, 1), torch.ones(2), 1.0, 0.0);
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> LoraMath.merge(torch.ones(2, 2), null, ad, false, false, "default"));
        assertEquals("Impossible to merge LoRA with `lora_bias=True` because the base layer has no bias.", e.getMessage());
    }

    @Test
    void scalingIsAlphaOverRankOrOverSqrtRankWithRslora() {
        assertEquals(2.0, LoraMath.scaling(16, 8, false));
        assertEquals(16 / Math.sqrt(8), LoraMath.scaling(16, 8, true));
        assertEquals(17.0 / 9, LoraMath.scaling(17, 9, false));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LoraMath.scaling(8, 0, false));
        assertEquals("`r` should be a positive integer value but the value passed is 0", e.getMessage());
    }

    @Test
    void dropoutIsIdentityInEvalAndInvertedDropoutInTraining() {
        torch.manual_seed(3);
        Tensor x = torch.randn(1, 1000);
        Tensor eye = torch.eye(1000);
        LoraMath.Adapter ad = new LoraMath.Adapter(eye, eye, null, 1.0, 0.5);
        assertSameValues(x, LoraMath.delta(x, ad, false), "eval");
        float[] in = floats(x);
        float[] out = floats(LoraMath.delta(x, ad, true));
        int zeros = 0;
        for (int i = 0; i < in.length; i++) {
            if (out[i] == 0f) {
                zeros++;
            } else {
                assertEquals(in[i] * 2f, out[i], 1e-6f * Math.abs(in[i] * 2f) + 1e-7f, "kept element scaled by 1/(1-p)");
            }
        }
        // Binomial(1000, 0.5): mean 500, sd ≈ 15.8; ±100 is over 6 sd
        assertTrue(zeros > 400 && zeros < 600, "dropped " + zeros);
    }

    @Test
    void deltaIsDifferentiableInAAndB() {
        torch.manual_seed(5);
        Tensor x = torch.randn(3, 4);
        Tensor a = torch.randn(2, 4).requires_grad_(true);
        Tensor b = torch.randn(5, 2).requires_grad_(true);
        LoraMath.delta(x, a, b, 0.5).sum().backward();
        assertNotNull(a.grad());
        assertTrue(a.grad().defined() && b.grad().defined());
        // d/dB sum((x·Aᵀ)·Bᵀ·s) = s · (column sums of x·Aᵀ), the same for every output row
        Tensor h = x.matmul(a.detach().t()).sum(0).mul(new Scalar(0.5));
        assertClose(h.unsqueeze(0).expand(5, 2), b.grad(), 1e-6, 1e-6, "grad B");
    }

    @Test
    void adapterDtypeFollowsBaseAndPeftModelUpcast() {
        assertEquals(ScalarType.Float, LoraMath.adapterDtype(ScalarType.BFloat16, true));
        assertEquals(ScalarType.BFloat16, LoraMath.adapterDtype(ScalarType.BFloat16, false));
        assertEquals(ScalarType.Float, LoraMath.adapterDtype(ScalarType.Half, true));
        assertEquals(ScalarType.Half, LoraMath.adapterDtype(ScalarType.Half, false));
        assertEquals(ScalarType.Double, LoraMath.adapterDtype(ScalarType.Double, true));
        assertEquals(ScalarType.Float, LoraMath.adapterDtype(ScalarType.Char, false));
        assertFalse(LoraMath.adapterDtype(ScalarType.Float, false) != ScalarType.Float);
    }
}
