package dev.peft4j.tuners.lora;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.kernels.Kernels;
import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/**
 * DoRA on one layer: the fused path against the composed ops (which the goldens pin), the cached factor's refresh
 * rule, the order rule for several active adapters, and safe merge.
 */
class DoraLayerTest {
    static final int IN = 20;
    static final int OUT = 24;

    private static Linear lin(long in, long out, boolean bias, double scale) {
        Linear l = new Linear(in, out, bias, Init.cpu(ScalarType.Float));
        try (NoGradGuard g = new NoGradGuard()) {
            l.weight().copy_(torch.randn(out, in).mul(new Scalar(scale)));
            if (bias) {
                l.bias().copy_(torch.randn(out).mul(new Scalar(scale)));
            }
        }
        return l;
    }

    private static DoraMagnitude mag(long out) {
        return new DoraMagnitude(torch.rand(out).add(new Scalar(0.5)), true);
    }

    private static double diff(Tensor a, Tensor b) {
        return a.sub(b).abs().max().item_double();
    }

    /** A layer with adapters "d" (DoRA) and "p" (plain), in that insertion order. */
    private static LoraLayer layer(boolean bias) {
        torch.manual_seed(11);
        LoraLayer l = new LoraLayer(lin(IN, OUT, bias, 0.3));
        l.addAdapter("d", lin(IN, 3, false, 0.3), lin(3, OUT, false, 0.3), 1.5, 0.0, mag(OUT));
        l.addAdapter("p", lin(IN, 2, false, 0.3), lin(2, OUT, false, 0.3), 0.5, 0.0);
        l.eval();
        return l;
    }

    private static Tensor composed(LoraLayer l, Tensor x) {
        return l.forward(x).detach(); // grad mode on: the composed ops
    }

    private static Tensor fused(LoraLayer l, Tensor x) {
        try (NoGradGuard g = new NoGradGuard()) {
            return l.forward(x);
        }
    }

    @Test
    void theFusedPathMatchesTheComposedOpsAndSeesInPlaceUpdates() {
        try (PointerScope s = new PointerScope(); LoraLayer l = layer(true)) {
            l.setAdapter(List.of("p", "d")); // DoRA last: fusable
            Tensor x = torch.randn(3, IN);
            long calls = Kernels.layerCalls();
            Tensor f = fused(l, x);
            assertTrue(Kernels.layerCalls() > calls, "the native kernel ran");
            assertTrue(diff(composed(l, x), f) < 1e-5, "fused " + diff(composed(l, x), f));
            Tensor before = f.clone();
            try (NoGradGuard g = new NoGradGuard()) {
                l.magnitude("d").mul_(new Scalar(1.5)); // a training step's in-place update
            }
            Tensor after = fused(l, x);
            assertTrue(diff(before, after) > 1e-3, "the new magnitude is used");
            assertTrue(diff(composed(l, x), after) < 1e-5);
            // 40 rows: libtorch's GEMM, the native delta and the native rescale
            Tensor big = torch.randn(40, IN);
            assertTrue(diff(composed(l, big), fused(l, big)) < 1e-5, "GEMM path");
        }
    }

    @Test
    void doraRescalesWhatCameBeforeItSoTheOrderOfActiveAdaptersMatters() {
        try (PointerScope s = new PointerScope(); LoraLayer l = layer(true)) {
            Tensor x = torch.randn(2, IN);
            l.setAdapter(List.of("d", "p")); // not fusable: the plain adapter's term comes after the rescale
            Tensor dp = fused(l, x);
            assertTrue(diff(composed(l, x), dp) < 1e-5);
            l.setAdapter(List.of("p", "d"));
            Tensor pd = fused(l, x);
            assertTrue(diff(dp, pd) > 1e-4, "PEFT's order: DoRA scales the earlier adapters' output too");
            // by hand: y = f ⊙ (W x + s_p B_p A_p x + s_d B_d A_d x) + b, f = m / ‖W + s_d B_d A_d‖
            Tensor w = ((Linear) l.baseLayer()).weight();
            Tensor b = ((Linear) l.baseLayer()).bias();
            Tensor m = l.magnitude("d");
            Tensor ad = l.adapterParameters("d").get("lora_A.d.weight");
            Tensor bd = l.adapterParameters("d").get("lora_B.d.weight");
            Tensor ap = l.adapterParameters("p").get("lora_A.p.weight");
            Tensor bp = l.adapterParameters("p").get("lora_B.p.weight");
            Tensor sum = w.add(bd.matmul(ad).mul(new Scalar(1.5)));
            Tensor norm = sum.mul(sum).sum(new long[] {1}, false, new org.bytedeco.pytorch.ScalarTypeOptional()).sqrt();
            Tensor fvec = m.div(norm);
            Tensor inner = x.matmul(w.t()).add(x.matmul(ap.t()).matmul(bp.t()).mul(new Scalar(0.5)))
                    .add(x.matmul(ad.t()).matmul(bd.t()).mul(new Scalar(1.5)));
            Tensor want = inner.mul(fvec).add(b);
            assertTrue(diff(want, pd) < 1e-5, "by hand " + diff(want, pd));
        }
    }

    @Test
    void theCachedFactorIsRecomputedOnlyWhenATensorChanges() {
        try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            torch.manual_seed(5);
            Tensor w = torch.randn(OUT, IN);
            Tensor a = torch.randn(3, IN);
            Tensor b = torch.randn(OUT, 3);
            Tensor m = torch.rand(OUT);
            DoraScale ds = new DoraScale(w, a, b, m, 2.0, false);
            float[] f1 = ds.current();
            assertSame(f1, ds.current(), "unchanged: the cached array");
            assertEquals(1, ds.refreshes());
            b.mul_(new Scalar(2.0));
            float[] f2 = ds.current();
            assertNotSame(f1, f2);
            assertEquals(2, ds.refreshes());
            Tensor want = DoraMath.factor(m, w, a, b, 2.0, false);
            for (int i = 0; i < OUT; i++) {
                assertEquals(want.get(i).item_float(), f2[i], 1e-6f);
            }
            // Conv1D layout: the norm of the transposed (in, out) weight, per output feature
            Tensor wt = w.t().contiguous();
            Tensor fc = DoraMath.factor(m, wt, a, b, 2.0, true);
            assertTrue(diff(want, fc) < 1e-6, "fan_in_fan_out transposes before the norm");
        }
    }

    @Test
    void safeMergeRefusesNonFiniteWeightsAndLeavesTheBaseAsItWas() {
        try (PointerScope s = new PointerScope(); LoraLayer l = layer(false)) {
            Tensor w = ((Linear) l.baseLayer()).weight();
            Tensor before = w.clone();
            try (NoGradGuard g = new NoGradGuard()) {
                l.magnitude("d").get(0).fill_(new Scalar(Float.NaN));
            }
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> l.merge(List.of("d"), true));
            assertEquals("NaNs detected in the merged weights. The adapter d seems to be broken", e.getMessage());
            assertTrue(torch.equal(before, w), "untouched");
            assertEquals(List.of(), l.mergedAdapters());
        }
    }

    @Test
    void conv1dMergeScalesColumnsAndUnmergeRestoresTheWeight() {
        try (PointerScope s = new PointerScope()) {
            torch.manual_seed(9);
            Conv1D c = new Conv1D(OUT, IN, Init.cpu(ScalarType.Float)); // weight (in, out)
            try (NoGradGuard g = new NoGradGuard()) {
                c.weight().copy_(torch.randn(IN, OUT).mul(new Scalar(0.3)));
                c.bias().copy_(torch.randn(OUT));
            }
            try (LoraLayer l = new LoraLayer(c)) {
                l.addAdapter("d", lin(IN, 3, false, 0.3), lin(3, OUT, false, 0.3), 2.0, 0.0, mag(OUT));
                l.setAdapter(List.of("d"));
                l.eval();
                Tensor x = torch.randn(4, IN);
                Tensor unmerged = composed(l, x);
                Tensor w0 = c.weight().clone();
                l.merge(List.of("d"), false);
                assertTrue(diff(unmerged, l.forward(x).detach()) < 1e-5, "merged = unmerged");
                l.unmerge();
                assertTrue(diff(w0, c.weight()) < 1e-6, "unmerge restores W");
                assertTrue(diff(unmerged, fused(l, x)) < 1e-5, "fused after the round trip");
            }
        }
    }
}
