package dev.peft4j.tuners;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.tuners.lora.LoraMath;
import java.util.List;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

class ScopedTest {

    @Test
    void resultGoesToTheCallersScopeAndTemporariesAreFreed() {
        Tensor kept;
        try (PointerScope outer = new PointerScope()) {
            kept = Scoped.compute(() -> torch.ones(3).add(torch.ones(3)));
            assertEquals(6.0, kept.sum().item_double());
        }
        assertTrue(kept.isNull(), "closed with the caller's scope");
    }

    @Test
    void withoutACallerScopeTheCallerOwnsTheResult() {
        Tensor t = Scoped.compute(() -> torch.ones(2));
        assertFalse(t.isNull());
        assertEquals(2.0, t.sum().item_double());
        t.close();
        assertTrue(t.isNull());
        Tensor owned;
        try (PointerScope outer = new PointerScope()) {
            owned = Scoped.computeOwned(() -> torch.ones(2));
        }
        assertFalse(owned.isNull(), "an owned result outlives the caller's scope");
        owned.close();
    }

    @Test
    void repeatedForwardsLeaveNoNativeObjectsBehind() {
        torch.manual_seed(1);
        Tensor x = torch.randn(4, 16);
        Tensor w = torch.randn(8, 16);
        LoraMath.Adapter ad = new LoraMath.Adapter(torch.randn(2, 16), torch.randn(8, 2), 2.0);
        Tensor base = torch.linear(x, w);
        for (int i = 0; i < 10; i++) { // warm-up: lazily created singletons
            try (PointerScope step = new PointerScope()) {
                LoraMath.forward(base, x, List.of(ad), false);
            }
        }
        long before = Pointer.totalCount();
        for (int i = 0; i < 500; i++) {
            try (PointerScope step = new PointerScope()) {
                LoraMath.forward(base, x, List.of(ad), false);
                LoraMath.deltaWeight(ad.a(), ad.b(), 2.0, false);
            }
        }
        // every Tensor/Scalar/options object made in the loop was deallocated (none left to the GC)
        assertTrue(Pointer.totalCount() - before < 10, "native objects left: " + (Pointer.totalCount() - before));
    }
}
