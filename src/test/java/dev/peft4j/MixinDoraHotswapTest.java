package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.tuners.lora.LoraLayer;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/**
 * Hotswap of DoRA adapters ({@code use_dora=True}): PEFT's {@code hotswap_adapter_from_state_dict} treats
 * {@code lora_magnitude_vector} as one more tensor of the adapter (copied in place; zeroed when the new checkpoint
 * lacks it; a checkpoint key the adapter does not have refused), and {@code use_dora} must match
 * ({@code check_hotswap_configs_compatible}). A swapped model computes what a fresh load of the new adapter computes,
 * and a concurrent reader sees the old or the new adapter only.
 */
class MixinDoraHotswapTest {
    private static final String MAG = "base_model.model.model.layers.%d.self_attn.%s.lora_magnitude_vector";

    static LoraConfig dora(int r, double alpha) {
        return LoraConfig.builder().r(r).loraAlpha(alpha).targetModules("q_proj", "v_proj").useDora(true)
                .initLoraWeights(new InitLoraWeights.Flag(false)).build();
    }

    /** {@link MixinHotswapTest#adapter} plus a positive magnitude vector per module (PEFT's key, no .weight). */
    static Map<String, Tensor> doraAdapter(int r, long seed) {
        Map<String, Tensor> sd = MixinHotswapTest.adapter(r, seed);
        for (int layer = 0; layer < 2; layer++) {
            sd.put(String.format(MAG, layer, "q_proj"), torch.rand(16).add_(new Scalar(0.5)));
            sd.put(String.format(MAG, layer, "v_proj"), torch.rand(8).add_(new Scalar(0.5)));
        }
        return sd;
    }

    static Tensor fresh(LoraConfig c, Map<String, Tensor> sd, Tensor x) throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            MixinHotswapTest.load(m, c, sd);
            return logits(m, x);
        }
    }

    @Test
    void aDoraSwapGivesWhatAFreshLoadGivesAndAMissingMagnitudeIsZeroed() throws Exception {
        Tensor x = ids(2, 5, 32, 1);
        Map<String, Tensor> a = doraAdapter(4, 11);
        Map<String, Tensor> b = doraAdapter(4, 12);
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            MixinHotswapTest.load(m, dora(4, 8), a);
            Tensor before = logits(m, x);
            LoraLayer q0 = (LoraLayer) m.getSubmodule("model.layers.0.self_attn.q_proj");
            Tensor magTensor = q0.magnitude("default");
            AdapterLoadReport r = m.loadAdapter(null, MixinHotswapTest.swap(dora(4, 16), b));
            assertEquals(List.of(), r.missingKeys());
            Tensor after = logits(m, x);
            assertTrue(bitEqual(fresh(dora(4, 16), b, x), after), "same as a fresh load of b: max diff "
                    + maxAbsDiff(fresh(dora(4, 16), b, x), after));
            assertTrue(maxAbsDiff(before, after) > 1e-3, "the adapter changed");
            assertTrue(magTensor == q0.magnitude("default"), "the magnitude is swapped in place");
            assertTrue(bitEqual(b.get(String.format(MAG, 0, "q_proj")), q0.magnitude("default")));
            // a checkpoint without v_proj's magnitudes: PEFT zero-fills every tensor of the old adapter it lacks
            Map<String, Tensor> noVMag = new LinkedHashMap<>(b);
            noVMag.keySet().removeIf(k -> k.contains("v_proj.lora_magnitude_vector"));
            m.loadAdapter(null, MixinHotswapTest.swap(dora(4, 16), noVMag));
            assertTrue(bitEqual(torch.zeros(8), m.getAdapterStateDict("default")
                    .get("model.layers.1.self_attn.v_proj.lora_magnitude_vector")));
            // the layout with ".weight" (PEFT's in-memory name) is the same key
            Map<String, Tensor> withWeight = new LinkedHashMap<>();
            b.forEach((k, v) -> withWeight.put(k.endsWith("lora_magnitude_vector") ? k + ".weight" : k, v));
            m.loadAdapter(null, MixinHotswapTest.swap(dora(4, 16), withWeight));
            assertTrue(bitEqual(after, logits(m, x)));
        }
    }

    @Test
    void doraRefusalsLeaveTheModelAsItWas() throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            MixinHotswapTest.load(m, dora(4, 8), doraAdapter(4, 21));
            Map<String, Tensor> before = MixinLoraTest.snapshot(m);
            assertEquals("Configs are incompatible: for use_dora, True != False", assertThrows(
                    IllegalArgumentException.class, () -> m.loadAdapter(null, MixinHotswapTest.swap(
                            MixinHotswapTest.cfg(4, 8), MixinHotswapTest.adapter(4, 2)))).getMessage());
            Map<String, Tensor> wrong = doraAdapter(4, 22);
            wrong.put(String.format(MAG, 1, "v_proj"), torch.ones(16));
            String msg = assertThrows(IllegalArgumentException.class,
                    () -> m.loadAdapter(null, MixinHotswapTest.swap(dora(4, 8), wrong))).getMessage();
            assertTrue(msg.contains("layers.1.self_attn.v_proj.lora_magnitude_vector: [8] vs [16]"), msg);
            Map<String, Tensor> extra = doraAdapter(4, 23);
            extra.put(String.format(MAG, 0, "k_proj"), torch.ones(8));
            assertEquals("Hot swapping the adapter did not succeed, unexpected keys found: "
                    + String.format(MAG, 0, "k_proj") + ".", assertThrows(IllegalArgumentException.class,
                    () -> m.loadAdapter(null, MixinHotswapTest.swap(dora(4, 8), extra))).getMessage());
            MixinLoraTest.assertSameState(before, m);
        }
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) { // a plain adapter has no magnitude to swap into
            MixinHotswapTest.load(m, MixinHotswapTest.cfg(4, 8), MixinHotswapTest.adapter(4, 24));
            Map<String, Tensor> before = MixinLoraTest.snapshot(m);
            Map<String, Tensor> mags = MixinHotswapTest.adapter(4, 25);
            mags.put(String.format(MAG, 0, "q_proj"), torch.ones(16));
            assertEquals("Hot swapping the adapter did not succeed, unexpected keys found: "
                    + String.format(MAG, 0, "q_proj") + ".", assertThrows(IllegalArgumentException.class,
                    () -> m.loadAdapter(null, MixinHotswapTest.swap(MixinHotswapTest.cfg(4, 8), mags))).getMessage());
            MixinLoraTest.assertSameState(before, m);
        }
    }

    @Test
    void enablePeftHotswapPadsDoraFactorsAndKeepsTheMagnitude() throws Exception {
        Tensor x = ids(2, 5, 32, 2);
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            m.enablePeftHotswap(8);
            MixinHotswapTest.load(m, dora(4, 8), doraAdapter(4, 31));
            LoraLayer q0 = (LoraLayer) m.getSubmodule("model.layers.0.self_attn.q_proj");
            assertEquals(8, q0.rank("default"));
            assertTrue(maxAbsDiff(fresh(dora(4, 8), doraAdapter(4, 31), x), logits(m, x)) < 1e-5,
                    "zero rank slots change neither B·A nor the weight norm");
            m.loadAdapter(null, LoadAdapterOptions.builder().adapterName("default").peftConfig(dora(2, 8))
                    .adapterStateDict(doraAdapter(2, 32)).build());
            assertEquals(8, q0.rank("default"));
            assertTrue(maxAbsDiff(fresh(dora(2, 8), doraAdapter(2, 32), x), logits(m, x)) < 1e-5);
        }
    }

    /**
     * A reader thread runs forwards while the main thread hot swaps 1,000 times between two DoRA adapters (other
     * factors, magnitudes and scaling): every logits it gets is bit-equal to the old adapter's or the new one's.
     */
    @Test
    void concurrentForwardSeesTheOldOrTheNewDoraAdapterNeverAMix() throws Exception {
        Tensor x = ids(1, 4, 32, 5);
        Map<String, Tensor> a = doraAdapter(4, 41);
        Map<String, Tensor> b = doraAdapter(4, 42);
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            MixinHotswapTest.load(m, dora(4, 8), a);
            Tensor refA = logits(m, x);
            m.loadAdapter(null, MixinHotswapTest.swap(dora(4, 16), b));
            Tensor refB = logits(m, x);
            m.loadAdapter(null, MixinHotswapTest.swap(dora(4, 8), a));
            assertTrue(bitEqual(refA, logits(m, x)), "a forward is deterministic");
            assertFalse(bitEqual(refA, refB));
            AtomicBoolean stop = new AtomicBoolean();
            AtomicInteger seenA = new AtomicInteger();
            AtomicInteger seenB = new AtomicInteger();
            AtomicInteger mixed = new AtomicInteger();
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Thread reader = new Thread(() -> {
                try {
                    while (!stop.get()) {
                        try (Tensor y = logits(m, x)) {
                            if (bitEqual(y, refA)) {
                                seenA.incrementAndGet();
                            } else if (bitEqual(y, refB)) {
                                seenB.incrementAndGet();
                            } else {
                                mixed.incrementAndGet();
                            }
                        }
                    }
                } catch (Throwable t) {
                    failure.set(t);
                }
            }, "dora-hotswap-reader");
            reader.start();
            try {
                for (int i = 0; i < 1000; i++) {
                    boolean toB = i % 2 == 0;
                    m.loadAdapter(null, MixinHotswapTest.swap(toB ? dora(4, 16) : dora(4, 8), toB ? b : a));
                }
            } finally {
                stop.set(true);
                reader.join();
            }
            assertEquals(null, failure.get());
            assertEquals(0, mixed.get(), "forwards that saw a mix of the two adapters");
            assertTrue(seenA.get() > 0 && seenB.get() > 0, "the reader ran during the swaps: A " + seenA + ", B "
                    + seenB);
            assertTrue(bitEqual(refA, logits(m, x)), "the last swap put a back");
        }
    }
}
