package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.lang.reflect.Field;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/**
 * Every family's top-level forwards hold the model's hotswap lock (read side), so that a hotswap, which commits under
 * the write side, is seen by a forward entirely or not at all (MixinHotswapTest proves the swap on Llama with a
 * reader thread). Here the test holds the write side itself: a forward started meanwhile must wait for it, and finish
 * once it is released. A forward that did not take the lock would finish while the write side is held.
 */
class ForwardLockTest {
    private static final long[] IDS = {1, 5, 7, 3};

    @Test
    void decoderFamiliesForwardUnderTheLock() throws Exception {
        for (String name : new String[] {"llama-gqa-llama3rope", "gemma2-softcap-sliding", "qwen3-qknorm-sliding",
                "phi3-longrope-partial", "mixtral-top2"}) {
            Path dir = Goldens.golden(name);
            try (PreTrainedModel m = AutoModel.fromPretrained(dir, ScalarType.Float)) {
                CausalLM lm = (CausalLM) m;
                Tensor ids = Tensor.create(IDS, 1, IDS.length);
                assertWaitsForTheWriteSide(name + " forward", m, () -> lm.forward(ids, null, null, null));
                if (lm.supportsSlotCache()) {
                    try (SlotKVCache cache = lm.newSlotCache(1, 8)) {
                        assertWaitsForTheWriteSide(name + " forwardSlots", m,
                                () -> lm.forwardSlots(ids, cache, new int[] {0}, new long[] {0}));
                    }
                }
            }
        }
    }

    @Test
    void seq2SeqForwardEncodeAndDecodeUnderTheLock() throws Exception {
        Path dir = Goldens.golden("t5-relu-tied");
        try (PreTrainedModel m = AutoModel.fromPretrained(dir, ScalarType.Float)) {
            Seq2SeqLM lm = (Seq2SeqLM) m;
            Tensor ids = Tensor.create(IDS, 1, IDS.length);
            Tensor dec = Tensor.create(new long[] {0, 4}, 1, 2);
            assertWaitsForTheWriteSide("t5 forward", m, () -> lm.forward(ids, null, dec));
            assertWaitsForTheWriteSide("t5 encode", m, () -> lm.encode(ids, null));
            Tensor enc = lm.encode(ids, null);
            assertWaitsForTheWriteSide("t5 decode", m, () -> lm.decode(dec, enc, null, null));
        }
    }

    private static void assertWaitsForTheWriteSide(String what, PreTrainedModel m, java.util.function.Supplier<Tensor>
            forward) throws Exception {
        ReentrantReadWriteLock lock = swapLock(m);
        lock.writeLock().lock();
        CompletableFuture<Tensor> f;
        try {
            f = CompletableFuture.supplyAsync(() -> {
                try (org.bytedeco.pytorch.NoGradGuard g = new org.bytedeco.pytorch.NoGradGuard()) {
                    return forward.get();
                }
            });
            Throwable early = null;
            try {
                f.get(300, TimeUnit.MILLISECONDS);
            } catch (TimeoutException expected) {
                early = expected;
            }
            assertEquals(TimeoutException.class, early == null ? null : early.getClass(),
                    what + " finished while a hotswap held the write side");
            assertFalse(f.isDone(), what);
        } finally {
            lock.writeLock().unlock();
        }
        Tensor out = f.get(60, TimeUnit.SECONDS);
        assertEquals(ScalarType.Float, out.scalar_type().intern(), what + " ran once the write side was released");
        out.close();
    }

    private static ReentrantReadWriteLock swapLock(PreTrainedModel m) throws ReflectiveOperationException {
        Field f = PreTrainedModel.class.getDeclaredField("adapterSwapLock");
        f.setAccessible(true);
        return (ReentrantReadWriteLock) f.get(m);
    }
}
