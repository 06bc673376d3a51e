package dev.peft4j.kernels;

import static dev.peft4j.kernels.KernelChecks.assertClose;
import static dev.peft4j.kernels.KernelChecks.randn;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.tuners.lora.LoraMath;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * {@link LoraDelta} (any M) and {@link FusedLoraLinear}'s mixed batches against PEFT's composed math
 * ({@link LoraMath#forward}, {@link LoraMath#mixedBatchForward}) run in float64 on the same rounded inputs.
 *
 * <p>Tolerances. float32: weights are scaled so every output is O(1); libtorch's GEMM and our float32 dot products
 * (length K ≤ 257, r ≤ 64) differ from float64 by accumulation rounding, ≈ sqrt(K)·2⁻²⁴ ≈ 1e-6 relative; we allow
 * 3e-5·(1 + |ref|). bfloat16: the base output is rounded once by libtorch (half an ulp, 2⁻⁹ of |base|) and the sum
 * once more by the kernel (2⁻⁹ of |result|); we allow 2⁻⁸·(|ref| + |base|) plus the float32 allowance (the base
 * magnitude matters: the delta may cancel most of it).
 */
class LoraDeltaTest {
    private PointerScope scope;

    @BeforeEach
    void openScope() {
        scope = new PointerScope();
    }

    @AfterEach
    void closeScope() {
        Kernels.setActiveIsa(Kernels.bestIsa());
        scope.close();
    }

    static double relTol(ScalarType dt) {
        return dt == ScalarType.BFloat16 ? Math.pow(2, -8) : 3e-5;
    }

    static List<FusedLoraLinear.Adapter> adapters(Random rnd, ScalarType dt, long k, long n, int... ranks) {
        List<FusedLoraLinear.Adapter> out = new ArrayList<>();
        for (int r : ranks) {
            out.add(new FusedLoraLinear.Adapter(randn(rnd, 1 / Math.sqrt(k), r, k).to(dt),
                    randn(rnd, 1 / Math.sqrt(r), n, r).to(dt), (float) (0.5 + rnd.nextDouble())));
        }
        return out;
    }

    static List<LoraMath.Adapter> asDouble(List<FusedLoraLinear.Adapter> ads) {
        List<LoraMath.Adapter> out = new ArrayList<>();
        for (FusedLoraLinear.Adapter a : ads) {
            out.add(new LoraMath.Adapter(a.a().to(ScalarType.Double), a.b().to(ScalarType.Double), a.scale()));
        }
        return out;
    }

    static Tensor baseDouble(Tensor x, Tensor w, Tensor b) {
        Tensor xd = x.to(ScalarType.Double);
        return b == null ? torch.linear(xd, w.to(ScalarType.Double))
                : torch.linear(xd, w.to(ScalarType.Double), new TensorOptional(b.to(ScalarType.Double)));
    }

    private static void checkAllRows(ScalarType dt, long m, long k, long n, int[] ranks, boolean bias, long seed) {
        Random rnd = new Random(seed);
        Tensor w = randn(rnd, 1 / Math.sqrt(k), n, k).to(dt);
        Tensor b = bias ? randn(rnd, 0.5, n).to(dt) : null;
        Tensor x = randn(rnd, 1, m, k).to(dt);
        List<FusedLoraLinear.Adapter> ads = adapters(rnd, dt, k, n, ranks);
        Tensor base = baseDouble(x, w, b);
        Tensor want = LoraMath.forward(base, x.to(ScalarType.Double), asDouble(ads), false);
        Tensor got = LoraDelta.linear(x, w, b, ads, null);
        assertEquals(dt, got.scalar_type().intern());
        // bf16: the base output is rounded before the delta is added, and t may be rounded to bf16 (even ranks)
        Tensor extra = dt == ScalarType.BFloat16 ? base.abs().add(KernelChecks.loraTermsAbs(x, ads)) : base;
        assertClose(want, got, 3e-5, relTol(dt), extra, String.format("%s M=%d K=%d N=%d r=%s bias=%b", dt, m, k, n,
                java.util.Arrays.toString(ranks), bias));
    }

    @Test
    void deltaForAnyRowCountMatchesComposedLoraAcrossShapesRanksDtypesAndIsas() {
        long[] ms = {1, 2, 17, 100, 1024};
        long[][] kn = {{1, 1}, {17, 65}, {130, 33}, {257, 300}};
        int[][] rankSets = {{1}, {7}, {16}, {64}, {3, 16}};
        long seed = 1;
        for (Isa isa : KernelChecks.supportedIsas()) {
            Kernels.setActiveIsa(isa);
            for (ScalarType dt : new ScalarType[] {ScalarType.Float, ScalarType.BFloat16}) {
                for (long[] s : kn) {
                    for (int[] ranks : rankSets) {
                        long m = ms[(int) (seed % ms.length)];
                        if (m == 1024 && isa != Kernels.bestIsa()) {
                            m = 300; // the scalar path on 1024 rows is slow; the best path takes the full size
                        }
                        checkAllRows(dt, m, s[0], s[1], ranks, seed % 2 == 0, seed++);
                    }
                }
            }
        }
    }

    @Test
    void everyRowCountFromOneTo1024IsHandled() {
        for (long m : new long[] {1, 3, 4, 5, 15, 16, 17, 31, 33, 64, 255, 1024}) {
            checkAllRows(ScalarType.Float, m, 33, 70, new int[] {5}, true, 500 + m);
        }
    }

    /** Row i gets adapter rowSlot[i] only; -1 rows stay the base output. */
    private static void checkMixed(ScalarType dt, long m, long k, long n, boolean decode, long seed) {
        Random rnd = new Random(seed);
        Tensor w = randn(rnd, 1 / Math.sqrt(k), n, k).to(dt);
        Tensor b = randn(rnd, 0.5, n).to(dt);
        Tensor x = randn(rnd, 1, m, k).to(dt);
        List<FusedLoraLinear.Adapter> ads = adapters(rnd, dt, k, n, 1, 8, 16, 3, 64, 2, 5, 16);
        int[] rowSlot = new int[(int) m];
        List<String> names = new ArrayList<>();
        Map<String, LoraMath.Adapter> byName = new HashMap<>();
        List<LoraMath.Adapter> dbl = asDouble(ads);
        for (int i = 0; i < ads.size(); i++) {
            byName.put("a" + i, dbl.get(i));
        }
        for (int i = 0; i < m; i++) {
            rowSlot[i] = rnd.nextInt(ads.size() + 1) - 1; // skewed segments, some base rows
            names.add(rowSlot[i] < 0 ? LoraMath.BASE_ADAPTER_NAME : "a" + rowSlot[i]);
        }
        Tensor base = baseDouble(x, w, b);
        Tensor want = LoraMath.mixedBatchForward(base, x.to(ScalarType.Double), names, byName, false);
        Tensor got;
        if (decode) {
            try (FusedLoraLinear layer = new FusedLoraLinear(w, b)) {
                layer.setAdapters(ads);
                got = layer.forward(x, rowSlot);
            }
        } else {
            got = LoraDelta.linear(x, w, b, ads, rowSlot);
        }
        assertClose(want, got, 3e-5, relTol(dt), base, String.format("mixed %s %s M=%d K=%d N=%d",
                decode ? "decode" : "delta", dt, m, k, n));
    }

    @Test
    void mixedBatchGivesEachRowOnlyItsAdapterInBothKernels() {
        long seed = 40;
        for (Isa isa : KernelChecks.supportedIsas()) {
            Kernels.setActiveIsa(isa);
            for (ScalarType dt : new ScalarType[] {ScalarType.Float, ScalarType.BFloat16}) {
                for (long m : new long[] {1, 5, 16}) {
                    checkMixed(dt, m, 67, 130, true, seed++);
                }
                for (long m : new long[] {1, 16, 77, 300}) {
                    checkMixed(dt, m, 67, 130, false, seed++);
                }
            }
        }
    }

    @Test
    void allBaseRowsLeaveTheOutputBitIdentical() {
        Random rnd = new Random(3);
        List<FusedLoraLinear.Adapter> ads = adapters(rnd, ScalarType.Float, 40, 24, 8, 4);
        Tensor x = randn(rnd, 1, 20, 40);
        Tensor y = randn(rnd, 1, 20, 24);
        Tensor before = y.clone();
        int[] none = new int[20];
        java.util.Arrays.fill(none, -1);
        LoraDelta.apply(y, x, ads, none);
        assertTrue(before.equal(y), "rows mapped to -1 must not change");
        // and a zero B changes nothing either
        LoraDelta.apply(y, x, List.of(new FusedLoraLinear.Adapter(ads.get(0).a(), torch.zeros(24, 8), 3f)), null);
        assertTrue(before.equal(y), "B = 0 must leave y bit-identical");
    }

    @Test
    void leadingBatchDimensionsAreFlattenedAndNonContiguousInputIsCopiedByLinear() {
        Random rnd = new Random(11);
        List<FusedLoraLinear.Adapter> ads = adapters(rnd, ScalarType.Float, 16, 12, 4);
        Tensor w = randn(rnd, 0.25, 12, 16);
        Tensor xt = randn(rnd, 1, 16, 2, 9).permute(1, 2, 0); // [2, 9, 16], not contiguous
        assertTrue(!xt.is_contiguous());
        Tensor got = LoraDelta.linear(xt, w, null, ads, null);
        assertEquals("[2, 9, 12]", java.util.Arrays.toString(got.shape()));
        Tensor want = LoraDelta.linear(xt.contiguous(), w, null, ads, null);
        assertTrue(want.equal(got));
    }

    @Test
    void refusesBadArgumentsNamingThem() {
        Random rnd = new Random(2);
        List<FusedLoraLinear.Adapter> ads = adapters(rnd, ScalarType.Float, 8, 6, 2);
        Tensor x = torch.ones(4, 8);
        Tensor y = torch.zeros(4, 6);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraDelta.apply(y, torch.ones(8, 4).t(), ads, null));
        assertTrue(e.getMessage().startsWith("x: tensor of shape [4, 8]") && e.getMessage().contains("not contiguous"),
                e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LoraDelta.apply(y, x, ads, new int[] {0, 0, 1, -1}));
        assertTrue(e.getMessage().startsWith("rowSlot[2]: 1 is not -1 or an index below 1"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LoraDelta.apply(y, x, ads, new int[] {0}));
        assertTrue(e.getMessage().startsWith("rowSlot: 1 entries for 4 rows"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> LoraDelta.apply(y, x.to(ScalarType.BFloat16), ads, null));
        assertTrue(e.getMessage().startsWith("x: dtype BFloat16 does not match y's Float"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LoraDelta.apply(y, x,
                List.of(new FusedLoraLinear.Adapter(torch.ones(2, 8), torch.ones(5, 2), 1f)), null));
        assertTrue(e.getMessage().startsWith("slots[0].b: expected shape [6, 2], got [5, 2]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LoraDelta.apply(y, torch.ones(3, 8), ads, null));
        assertTrue(e.getMessage().startsWith("x: shape [3, 8] does not have y's leading dimensions [4]"),
                e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> LoraDelta.apply(y.to(ScalarType.Half), x.to(ScalarType.Half), ads, null));
        assertTrue(e.getMessage().startsWith("y: dtype Half not supported"), e.getMessage());
        Tensor shared = torch.zeros(4, 8);
        e = assertThrows(IllegalArgumentException.class, () -> LoraDelta.apply(shared, shared,
                List.of(new FusedLoraLinear.Adapter(torch.ones(2, 8), torch.ones(8, 2), 1f)), null));
        assertTrue(e.getMessage().startsWith("x: memory overlaps y's"), e.getMessage());
        try (FusedLoraLinear layer = new FusedLoraLinear(torch.ones(6, 8), null)) {
            layer.setAdapters(ads);
            e = assertThrows(IllegalArgumentException.class, () -> layer.forward(x, new int[] {0, 0, 0, 2}));
            assertTrue(e.getMessage().startsWith("rowSlot[3]: 2"), e.getMessage());
        }
    }

    @Test
    void slotsCheckedOnceGiveTheListPathsResultAndSeeInPlaceUpdates() {
        for (ScalarType dt : new ScalarType[] {ScalarType.Float, ScalarType.BFloat16}) {
            Random rnd = new Random(21);
            List<FusedLoraLinear.Adapter> ads = adapters(rnd, dt, 40, 24, 4, 8);
            Tensor w = randn(rnd, 1 / Math.sqrt(40), 24, 40).to(dt);
            Tensor bias = randn(rnd, 0.5, 24).to(dt);
            Tensor x = randn(rnd, 1, 3, 7, 40).to(dt);
            LoraDelta.Slots slots = LoraDelta.Slots.of(ads, 40, 24, dt);
            int[] rowSlot = new int[21];
            for (int i = 0; i < rowSlot.length; i++) {
                rowSlot[i] = i % 3 - 1;
            }
            for (int[] rs : new int[][] {null, rowSlot}) {
                Tensor want = LoraDelta.linear(x, w, bias, ads, rs);
                assertTrue(want.equal(LoraDelta.linear(x, w, bias, slots, rs)), dt + " linear, rowSlot " + (rs != null));
                Tensor y = torch.linear(x, w, new TensorOptional(bias));
                LoraDelta.apply(y, x, slots, rs);
                assertTrue(want.equal(y), dt + " apply, rowSlot " + (rs != null));
            }
            // the slots hold pointers: a B zeroed in place takes that adapter's term away on the next call
            ads.get(0).b().zero_();
            Tensor want = LoraDelta.linear(x, w, bias, List.of(ads.get(1)), null);
            assertTrue(want.equal(LoraDelta.linear(x, w, bias, slots, null)), dt + " after an in-place update");
        }
    }

    @Test
    void theDecodeKernelTakesSlotsCheckedOnceAndRefusesAnotherLayersSlots() {
        Random rnd = new Random(23);
        List<FusedLoraLinear.Adapter> ads = adapters(rnd, ScalarType.Float, 40, 24, 4, 8);
        Tensor w = randn(rnd, 1 / Math.sqrt(40), 24, 40);
        Tensor x = randn(rnd, 1, 3, 40);
        try (FusedLoraLinear byList = new FusedLoraLinear(w, null); FusedLoraLinear bySlots = new FusedLoraLinear(w, null)) {
            byList.setAdapters(ads);
            bySlots.setAdapters(LoraDelta.Slots.of(ads, 40, 24, ScalarType.Float));
            assertTrue(byList.forward(x).equal(bySlots.forward(x)), "the same adapters either way");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> bySlots.setAdapters(LoraDelta.Slots.of(List.of(), 40, 25, ScalarType.Float)));
            assertTrue(e.getMessage().startsWith("slots made for a [25, 40] Float layer, this one is [24, 40]"),
                    e.getMessage());
        }
    }

    @Test
    void slotsRefuseInputsOfAnotherLayer() {
        Random rnd = new Random(22);
        List<FusedLoraLinear.Adapter> ads = adapters(rnd, ScalarType.Float, 8, 6, 2);
        LoraDelta.Slots slots = LoraDelta.Slots.of(ads, 8, 6, ScalarType.Float);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraDelta.Slots.of(ads, 8, 5, ScalarType.Float));
        assertTrue(e.getMessage().startsWith("slots[0].b: expected shape [5, 2], got [6, 2]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LoraDelta.Slots.of(ads, 8, 6, ScalarType.BFloat16));
        assertTrue(e.getMessage().startsWith("slots[0].a: dtype Float does not match the layer's BFloat16"),
                e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> LoraDelta.linear(torch.ones(4, 8), torch.ones(7, 8), null, slots, null));
        assertTrue(e.getMessage().startsWith("weight: expected shape [6, 8], got [7, 8]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> LoraDelta.linear(torch.ones(4, 9), torch.ones(6, 8), null, slots, null));
        assertTrue(e.getMessage().startsWith("x: expected shape [..., 8], got [4, 9]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> LoraDelta.apply(torch.zeros(4, 5), torch.ones(4, 8), slots, null));
        assertTrue(e.getMessage().startsWith("y: expected shape [..., 6], got [4, 5]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LoraDelta.apply(torch.zeros(4, 6),
                torch.ones(4, 8).to(ScalarType.BFloat16), slots, null));
        assertTrue(e.getMessage().startsWith("x: dtype BFloat16 does not match the slots' Float"), e.getMessage());
        Tensor wg = torch.ones(6, 8).requires_grad_(true);
        e = assertThrows(IllegalArgumentException.class,
                () -> LoraDelta.linear(torch.ones(4, 8), wg, null, slots, null));
        assertTrue(e.getMessage().startsWith("weight: requires grad"), e.getMessage());
    }
}
