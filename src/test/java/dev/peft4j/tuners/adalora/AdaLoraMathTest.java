package dev.peft4j.tuners.adalora;

import static dev.peft4j.tuners.Goldens.assertClose;
import static dev.peft4j.tuners.Goldens.assertSameValues;
import static dev.peft4j.tuners.Goldens.floats;
import static dev.peft4j.tuners.Goldens.goldenCase;
import static dev.peft4j.tuners.Goldens.tensor;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** Tolerances as in the LoRA tests: fp32 1e-5 (summation order), bf16 one ulp (rtol 2⁻⁷). */
class AdaLoraMathTest {
    static final double FP32 = 1e-5;
    private PointerScope scope;

    @BeforeEach
    void openScope() {
        scope = new PointerScope();
    }

    @AfterEach
    void closeScope() {
        scope.close();
    }

    static AdaLoraMath.Adapter adapter(JsonNode c) {
        return new AdaLoraMath.Adapter(tensor(c.path("A")), tensor(c.path("E")), tensor(c.path("B")),
                tensor(c.path("ranknum")), c.path("s").asDouble(), 0.0);
    }

    @Test
    void forwardDeltaWeightAndMergeMatchTorchGolden() {
        JsonNode c = goldenCase("adalora_linear");
        Tensor x = tensor(c.path("x"));
        Tensor w = tensor(c.path("W"));
        Tensor bias = tensor(c.path("bias"));
        AdaLoraMath.Adapter ad = adapter(c);
        Tensor base = torch.linear(x, w, new TensorOptional(bias));
        Tensor y = AdaLoraMath.forward(base, x, List.of(ad), false);
        assertClose(tensor(c.path("forward")), y, FP32, FP32, "forward");
        assertClose(tensor(c.path("delta_weight")), AdaLoraMath.deltaWeight(ad, false), FP32, FP32, "delta weight");
        assertClose(tensor(c.path("delta_weight_fifo")), AdaLoraMath.deltaWeight(ad, true), FP32, FP32,
                "delta weight, fan_in_fan_out");
        Tensor wm = w.clone();
        AdaLoraMath.merge(wm, ad, false, true, "default");
        assertClose(tensor(c.path("merged_W")), wm, FP32, FP32, "merged W");
        assertClose(y, torch.linear(x, wm, new TensorOptional(bias)), FP32, FP32, "merged == unmerged");
        AdaLoraMath.unmerge(wm, ad, false);
        assertClose(w, wm, 1e-6, 0, "unmerged");
    }

    @Test
    void bf16BaseKeepsItsDtype() {
        JsonNode c = goldenCase("adalora_bf16_base_fp32_adapter");
        Tensor x = tensor(c.path("x"));
        Tensor base = torch.linear(x, tensor(c.path("W")));
        Tensor y = AdaLoraMath.forward(base, x, List.of(adapter(c)), false);
        assertEquals(ScalarType.BFloat16, y.scalar_type().intern());
        assertClose(tensor(c.path("forward")), y, 0, 1.0 / 128, "forward");
    }

    @Test
    void handComputedEffectiveScaleIsAlphaOverRanknumPlusEpsilon() {
        // A = [[1, 1]], E = [[2]], B = [[3]], x = [1, 1], alpha = 8, ranknum = 4:
        // x·(A⊙E)ᵀ = 4, ·Bᵀ = 12, ·8 / (4 + 1e-5)
        Tensor a = Tensor.create(new float[] {1, 1}, 1, 2);
        Tensor e = Tensor.create(new float[] {2}, 1, 1);
        Tensor b = Tensor.create(new float[] {3}, 1, 1);
        AdaLoraMath.Adapter ad = new AdaLoraMath.Adapter(a, e, b, AdaLoraMath.ranknum(4, ScalarType.Float),
                AdaLoraMath.scaling(8, 4), 0.0);
        float expected = (float) (12.0 * 8 / (4 + 1e-5));
        assertEquals(expected, floats(AdaLoraMath.delta(Tensor.create(new float[] {1, 1}, 1, 2), ad, false))[0],
                Math.ulp(expected));
        assertEquals(8.0, AdaLoraMath.scaling(8, 4));
        assertEquals(4.0, AdaLoraMath.scaling(0, 4));
    }

    @Test
    void inPlaceSumRoundsIntoTheBaseDtypeAfterEachAdapter() {
        // bf16 neighbours of 256 are 256 and 258: 256 + 0.75 rounds back to 256 after every adapter
        Tensor x = Tensor.create(new float[] {1}, 1, 1).to(ScalarType.BFloat16);
        Tensor base = Tensor.create(new float[] {256}, 1, 1).to(ScalarType.BFloat16);
        Tensor one = Tensor.create(new float[] {1}, 1, 1);
        Tensor b = Tensor.create(new float[] {0.75f}, 1, 1);
        AdaLoraMath.Adapter ad = new AdaLoraMath.Adapter(one, one, b, AdaLoraMath.ranknum(1, ScalarType.Float), 1.0, 0.0);
        // each term is 0.75 / (1 + 1e-5): summed in fp32 first it would give 257.49999 -> 258
        Tensor y = AdaLoraMath.forward(base, x, List.of(ad, ad), false);
        assertArrayEquals(new float[] {256}, floats(y));
        assertArrayEquals(new float[] {256}, floats(base), "the base output is not modified");
    }

    @Test
    void defaultInitIsAnExactNoOp() {
        torch.manual_seed(8);
        Tensor a = torch.empty(6, 16);
        Tensor e = torch.empty(6, 1);
        Tensor b = torch.empty(12, 6);
        AdaLoraMath.init(a, e, b, true, torch.createCPUGenerator(1));
        AdaLoraMath.Adapter ad = new AdaLoraMath.Adapter(a, e, b, AdaLoraMath.ranknum(6, ScalarType.Float),
                AdaLoraMath.scaling(8, 6), 0.0);
        Tensor x = torch.randn(3, 16);
        Tensor base = torch.randn(3, 12);
        assertSameValues(base, AdaLoraMath.forward(base, x, List.of(ad), false), "E = 0: identity");
        assertEquals(0.0, torch.abs(e).max().item_double());
        // A ~ N(0, 0.02²): all 96 draws well inside ±0.2 (10 sd)
        assertTrue(torch.abs(a).max().item_double() < 0.2);
        assertTrue(torch.abs(a).max().item_double() > 0);
    }

    @Test
    void rankPatternSliceKeepsMarkedSlotsAndMatchesPrunedDelta() {
        torch.manual_seed(9);
        Tensor a = torch.randn(4, 6);
        Tensor e = torch.randn(4, 1);
        Tensor b = torch.randn(5, 4);
        boolean[] kept = {true, false, false, true};
        AdaLoraMath.Triplet t = AdaLoraMath.sliceByRankPattern(a, e, b, kept);
        assertArrayEquals(new long[] {2, 6}, t.a().shape());
        assertArrayEquals(new long[] {2, 1}, t.e().shape());
        assertArrayEquals(new long[] {5, 2}, t.b().shape());
        assertSameValues(a.select(0, 3), t.a().select(0, 1), "row 3 of A kept as row 1");
        assertSameValues(b.select(1, 3), t.b().select(1, 1), "column 3 of B kept as column 1");
        // training zeroes pruned E entries; the sliced adapter with the same ranknum (init_r) has the same delta
        Tensor ePruned = e.clone();
        ePruned.mul_(Tensor.create(new float[] {1, 0, 0, 1}, 4, 1));
        Tensor ranknum = AdaLoraMath.ranknum(4, ScalarType.Float);
        Tensor pruned = AdaLoraMath.deltaWeight(new AdaLoraMath.Adapter(a, ePruned, b, ranknum, 8, 0), false);
        Tensor sliced = AdaLoraMath.deltaWeight(new AdaLoraMath.Adapter(t.a(), t.e(), t.b(), ranknum, 8, 0), false);
        assertClose(pruned, sliced, 1e-6, 1e-6, "pruned == sliced");
        // already sliced: unchanged
        AdaLoraMath.Triplet again = AdaLoraMath.sliceByRankPattern(t.a(), t.e(), t.b(), kept);
        assertSameValues(t.a(), again.a(), "A unchanged");
        assertSameValues(t.b(), again.b(), "B unchanged");
        // nothing kept: empty tensors
        AdaLoraMath.Triplet none = AdaLoraMath.sliceByRankPattern(a, e, b, new boolean[4]);
        assertArrayEquals(new long[] {0, 6}, none.a().shape());
        assertArrayEquals(new long[] {5, 0}, none.b().shape());
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class,
                () -> AdaLoraMath.sliceByRankPattern(a, e, b, new boolean[] {true, false, true}));
        assertTrue(ex.getMessage().startsWith("lora_A has 4 rank slots"), ex.getMessage());
    }

    @Test
    void orthogonalRegularizationMatchesTorchGoldenAndSelectsByName() {
        JsonNode c = goldenCase("adalora_orth_reg");
        java.util.Map<String, Tensor> params = new java.util.LinkedHashMap<>();
        c.path("params").fields().forEachRemaining(e -> params.put(e.getKey(), tensor(e.getValue())));
        Tensor reg = AdaLoraMath.orthogonalRegularization(params, c.path("adapter").asText());
        // four fp32 Frobenius norms of 3x3/2x2 matrices, averaged: a few fp32 ulps apart at most
        assertEquals(c.path("reg").asDouble(), reg.item_double(), 1e-5 * c.path("reg").asDouble());
        assertEquals(0.0, AdaLoraMath.orthogonalRegularization(params, "missing").item_double());
        // an orthonormal A (rows) and B (columns) cost nothing
        java.util.Map<String, Tensor> ortho = java.util.Map.of("q.lora_A.default", torch.eye(3),
                "q.lora_B.default", torch.eye(3));
        assertEquals(0.0, AdaLoraMath.orthogonalRegularization(ortho, "default").item_double());
    }

    @Test
    void mismatchedShapesAreRejected() {
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class,
                () -> new AdaLoraMath.Adapter(torch.ones(3, 4), torch.ones(2, 1), torch.ones(5, 3),
                        AdaLoraMath.ranknum(3, ScalarType.Float), 1.0, 0.0));
        assertTrue(ex.getMessage().contains("lora_E [2, 1]"), ex.getMessage());
        AdaLoraMath.Adapter ad = new AdaLoraMath.Adapter(torch.ones(3, 4), torch.ones(3, 1), torch.ones(5, 3),
                AdaLoraMath.ranknum(3, ScalarType.Float), 1.0, 0.0);
        assertThrows(IllegalArgumentException.class, () -> AdaLoraMath.merge(torch.ones(4, 5), ad, false, false, "x"));
    }
}
