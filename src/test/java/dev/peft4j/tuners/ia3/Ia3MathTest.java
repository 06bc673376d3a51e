package dev.peft4j.tuners.ia3;

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
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Tolerances: fp32 cases atol = rtol = 1e-5 (5-term dot products of O(1) values against torch 1.13's summation order:
 * disagreement of a few 1e-7); bf16 outputs one bf16 ulp, rtol = 2⁻⁷ (libtorch 2.10 and torch 1.13 bf16 GEMMs may
 * round an output to a neighbouring value).
 */
class Ia3MathTest {
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

    @ParameterizedTest
    @CsvSource({"ia3_linear_out, false", "ia3_linear_ff, false", "ia3_conv1d_out, true", "ia3_conv1d_ff, true"})
    void forwardAndMergeMatchTorchGolden(String name, boolean fanInFanOut) {
        JsonNode c = goldenCase(name);
        boolean ff = c.path("feedforward").asBoolean();
        Tensor x = tensor(c.path("x"));
        Tensor w = tensor(c.path("W"));
        Tensor bias = tensor(c.path("bias"));
        Tensor l = tensor(c.path("l"));
        Tensor y = Ia3Math.forward(x, w, bias, List.of(l), ff, fanInFanOut);
        assertClose(tensor(c.path("forward")), y, FP32, FP32, name + " forward");
        Tensor wm = w.clone();
        Tensor bm = bias.clone();
        Ia3Math.merge(wm, bm, l, ff, fanInFanOut, true, "default");
        assertClose(tensor(c.path("merged_W")), wm, FP32, FP32, name + " merged W");
        assertClose(tensor(c.path("merged_bias")), bm, FP32, FP32, name + " merged bias");
        assertClose(y, Ia3Math.base(x, wm, bm, fanInFanOut), FP32, FP32, name + " merged == unmerged");
        Ia3Math.unmerge(wm, bm, l, ff, fanInFanOut);
        assertClose(w, wm, 1e-6, 1e-6, name + " unmerged W");
        assertClose(bias, bm, 1e-6, 1e-6, name + " unmerged bias");
    }

    @Test
    void severalActiveVectorsMultiply() {
        JsonNode c = goldenCase("ia3_two_adapters_out");
        Tensor x = tensor(c.path("x"));
        Tensor w = tensor(c.path("W"));
        Tensor bias = tensor(c.path("bias"));
        Tensor y = Ia3Math.forward(x, w, bias, List.of(tensor(c.path("l1")), tensor(c.path("l2"))), false, false);
        assertClose(tensor(c.path("forward")), y, FP32, FP32, "two adapters");
    }

    @Test
    void bf16BaseWithFp32VectorCastsBackToTheBaseDtype() {
        JsonNode c = goldenCase("ia3_bf16_base_fp32_vector");
        Tensor x = tensor(c.path("x"));
        Tensor w = tensor(c.path("W"));
        Tensor out = Ia3Math.forward(x, w, null, List.of(tensor(c.path("l_out"))), false, false);
        Tensor ff = Ia3Math.forward(x, w, null, List.of(tensor(c.path("l_ff"))), true, false);
        assertEquals(ScalarType.BFloat16, out.scalar_type().intern());
        assertEquals(ScalarType.BFloat16, ff.scalar_type().intern());
        assertClose(tensor(c.path("forward_out")), out, 0, 1.0 / 128, "output scaling");
        assertClose(tensor(c.path("forward_ff")), ff, 0, 1.0 / 128, "input scaling");
    }

    @Test
    void handComputedInputVersusOutputScaling() {
        // W = [[1, 2], [3, 4]], b = [10, 20], x = [1, 1]
        Tensor w = Tensor.create(new float[] {1, 2, 3, 4}, 2, 2);
        Tensor b = Tensor.create(new float[] {10, 20}, 2);
        Tensor x = Tensor.create(new float[] {1, 1}, 1, 2);
        // output scaling l = [[2], [3]]: (x·Wᵀ + b) ⊙ l = [13, 27] ⊙ [2, 3] = [26, 81]
        Tensor lOut = Tensor.create(new float[] {2, 3}, 2, 1);
        assertArrayEquals(new float[] {26, 81}, floats(Ia3Math.forward(x, w, b, List.of(lOut), false, false)));
        // input scaling l = [[2, 3]]: x' = [2, 3]; x'·Wᵀ + b = [8 + 10, 18 + 20]
        Tensor lIn = Tensor.create(new float[] {2, 3}, 1, 2);
        assertArrayEquals(new float[] {18, 38}, floats(Ia3Math.forward(x, w, b, List.of(lIn), true, false)));
        // merge: rows for (out, 1), columns for (1, in); the bias only for output scaling
        Tensor wm = w.clone();
        Tensor bm = b.clone();
        Ia3Math.merge(wm, bm, lOut, false, false, false, "default");
        assertArrayEquals(new float[] {2, 4, 9, 12}, floats(wm));
        assertArrayEquals(new float[] {20, 60}, floats(bm));
        wm = w.clone();
        bm = b.clone();
        Ia3Math.merge(wm, bm, lIn, true, false, false, "default");
        assertArrayEquals(new float[] {2, 6, 6, 12}, floats(wm));
        assertArrayEquals(new float[] {10, 20}, floats(bm));
    }

    @Test
    void onesVectorIsTheIdentityBitForBit() {
        torch.manual_seed(4);
        Tensor x = torch.randn(2, 3, 8);
        Tensor w = torch.randn(5, 8);
        Tensor b = torch.randn(5);
        Tensor lOut = torch.empty(Ia3Math.vectorShape(8, 5, false));
        Tensor lIn = torch.empty(Ia3Math.vectorShape(8, 5, true));
        Ia3Math.init(lOut, true, torch.createCPUGenerator(0));
        Ia3Math.init(lIn, true, torch.createCPUGenerator(0));
        Tensor base = Ia3Math.base(x, w, b, false);
        assertSameValues(base, Ia3Math.forward(x, w, b, List.of(lOut), false, false), "output scaling by ones");
        assertSameValues(base, Ia3Math.forward(x, w, b, List.of(lIn), true, false), "input scaling by ones");
        assertSameValues(base, Ia3Math.forward(x, w, b, List.of(), false, false), "no active adapter");
        Tensor wm = w.clone();
        Ia3Math.merge(wm, b.clone(), lOut, false, false, false, "default");
        assertSameValues(w, wm, "merge of ones");
    }

    @Test
    void randomInitIsStandardNormalAndSeeded() {
        Tensor l1 = torch.empty(1, 4096);
        Tensor l2 = torch.empty(1, 4096);
        Ia3Math.init(l1, false, torch.createCPUGenerator(5));
        Ia3Math.init(l2, false, torch.createCPUGenerator(5));
        assertArrayEquals(floats(l1), floats(l2));
        // sample std of 4096 N(0, 1) draws: standard error ≈ 1.1 %, band 10 %
        assertEquals(1.0, l1.std().item_double(), 0.1);
    }

    @Test
    void wrongVectorShapeNamesBothShapes() {
        Tensor w = torch.ones(5, 8);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Ia3Math.forward(torch.ones(1, 8), w, null, List.of(torch.ones(5, 1)), true, false));
        assertTrue(e.getMessage().contains("[5, 1]") && e.getMessage().contains("[1, 8]"), e.getMessage());
    }

    @Test
    void safeMergeRefusesNonFiniteWeights() {
        Tensor w = torch.ones(2, 2);
        Tensor l = Tensor.create(new float[] {Float.POSITIVE_INFINITY, 1}, 2, 1);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Ia3Math.merge(w, null, l, false, false, true, "bad"));
        assertEquals("NaNs detected in the merged weights. The adapter bad seems to be broken", e.getMessage());
        assertArrayEquals(new float[] {1, 1, 1, 1}, floats(w));
    }
}
