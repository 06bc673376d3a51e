package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/** {@link SlotKVCache#moveSlot}: a sequence's cached positions move to another slot; the source is zeroed. */
class SlotKVCacheTest {
    @Test
    void moveSlotCopiesTheCachedPositionsOfEveryLayerAndZeroesTheSource() {
        try (SlotKVCache c = new SlotKVCache(2, 4, 6, 2, 3, ScalarType.Float); PointerScope s = new PointerScope()) {
            Tensor[] before = new Tensor[4];
            for (int l = 0; l < 2; l++) {
                for (Tensor t : new Tensor[] {c.keys(l), c.values(l)}) {
                    t.select(0, 3).copy_(torch.randn(new long[] {2, 6, 3}, new TensorOptions(ScalarType.Float)));
                    t.select(0, 1).fill_(new Scalar(7.0)); // stale data of an earlier sequence in the target
                }
                before[2 * l] = c.keys(l).select(0, 3).clone();
                before[2 * l + 1] = c.values(l).select(0, 3).clone();
            }
            c.clearSlot(1); // as the engine frees a slot before moving another sequence into it
            c.moveSlot(3, 1, 4);
            for (int l = 0; l < 2; l++) {
                Tensor[] now = {c.keys(l), c.values(l)};
                for (int k = 0; k < 2; k++) {
                    Tensor moved = now[k].select(0, 1);
                    assertTrue(torch.equal(moved.narrow(1, 0, 4), before[2 * l + k].narrow(1, 0, 4)),
                            "layer " + l + ": positions 0..3 moved");
                    assertEquals(0.0, moved.narrow(1, 4, 2).abs().sum().item_double(), "positions 4.. stay zero");
                    assertEquals(0.0, now[k].select(0, 3).abs().sum().item_double(), "the source slot is zeroed");
                }
            }
            assertThrows(IllegalArgumentException.class, () -> c.moveSlot(1, 1, 2));
            assertThrows(IllegalArgumentException.class, () -> c.moveSlot(0, 4, 2));
            assertThrows(IllegalArgumentException.class, () -> c.moveSlot(0, 2, 7));
        }
    }
}
