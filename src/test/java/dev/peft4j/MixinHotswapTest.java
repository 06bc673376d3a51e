package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.IA3Config;
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
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/**
 * Hotswap ({@code load_adapter(hotswap=True)}, {@code enable_peft_hotswap}) on a small seeded Llama: the swapped
 * model computes what a fresh load of the new adapter computes, ranks are padded, every refusal leaves the model as it
 * was, and a concurrent reader only ever sees the old or the new adapter's logits.
 */
class MixinHotswapTest {
    private static final String Q = "base_model.model.model.layers.%d.self_attn.q_proj.lora_%s.weight";
    private static final String V = "base_model.model.model.layers.%d.self_attn.v_proj.lora_%s.weight";

    static LoraConfig cfg(int r, double alpha) {
        return LoraConfig.builder().r(r).loraAlpha(alpha).targetModules("q_proj", "v_proj")
                .initLoraWeights(new InitLoraWeights.Flag(false)).build();
    }

    /** A rank-{@code r} LoRA checkpoint on q_proj and v_proj of both layers (hidden 16, kv out 8). */
    static Map<String, Tensor> adapter(int r, long seed) {
        torch.manual_seed(seed);
        Map<String, Tensor> sd = new LinkedHashMap<>();
        for (int layer = 0; layer < 2; layer++) {
            sd.put(String.format(Q, layer, "A"), torch.randn(r, 16).mul_(new org.bytedeco.pytorch.Scalar(0.3)));
            sd.put(String.format(Q, layer, "B"), torch.randn(16, r).mul_(new org.bytedeco.pytorch.Scalar(0.3)));
            sd.put(String.format(V, layer, "A"), torch.randn(r, 16).mul_(new org.bytedeco.pytorch.Scalar(0.3)));
            sd.put(String.format(V, layer, "B"), torch.randn(8, r).mul_(new org.bytedeco.pytorch.Scalar(0.3)));
        }
        return sd;
    }

    static LoadAdapterOptions swap(LoraConfig c, Map<String, Tensor> sd) {
        return LoadAdapterOptions.builder().adapterName("default").peftConfig(c).adapterStateDict(sd).hotswap(true)
                .build();
    }

    static void load(PreTrainedModel m, LoraConfig c, Map<String, Tensor> sd) throws Exception {
        m.loadAdapter(null, LoadAdapterOptions.builder().adapterName("default").peftConfig(c).adapterStateDict(sd)
                .build());
    }

    /** The logits of a fresh model of the same seed with only {@code sd} loaded. */
    static Tensor fresh(LoraConfig c, Map<String, Tensor> sd, Tensor x) throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            load(m, c, sd);
            return logits(m, x);
        }
    }

    @Test
    void hotswapGivesWhatAFreshLoadOfTheNewAdapterGives() throws Exception {
        Tensor x = ids(2, 5, 32, 1);
        Map<String, Tensor> a = adapter(4, 11);
        Map<String, Tensor> b = adapter(4, 12);
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            load(m, cfg(4, 8), a);
            Tensor before = logits(m, x);
            AdapterLoadReport r = m.loadAdapter(null, swap(cfg(4, 16), b)); // new alpha: new scaling
            assertEquals(List.of(), r.missingKeys());
            Tensor after = logits(m, x);
            assertTrue(bitEqual(fresh(cfg(4, 16), b, x), after), "same as a fresh load of b");
            assertTrue(maxAbsDiff(before, after) > 1e-3, "the adapter changed");
            LoraLayer q0 = (LoraLayer) m.getSubmodule("model.layers.0.self_attn.q_proj");
            assertEquals(4.0, q0.scaling("default"), 0.0);
            assertEquals(16.0, m.peftAdapters().peftConfig().get("default").toJsonObject().get("lora_alpha") instanceof
                    Number n ? n.doubleValue() : -1, 0.0);
            assertEquals(List.of("default"), m.activeAdapters());
            // a checkpoint lacking some factors: those become zeros (PEFT), so v_proj adds nothing
            Map<String, Tensor> qOnly = new LinkedHashMap<>(b);
            qOnly.keySet().removeIf(k -> k.contains("v_proj"));
            m.loadAdapter(null, swap(cfg(4, 16), qOnly));
            assertTrue(bitEqual(torch.zeros(8, 4), m.getAdapterStateDict("default")
                    .get("model.layers.1.self_attn.v_proj.lora_B.weight")));
        }
    }

    @Test
    void enablePeftHotswapPadsRanksAndAutoSwapsByName() throws Exception {
        Tensor x = ids(2, 5, 32, 2);
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            m.enablePeftHotswap(8);
            load(m, cfg(4, 8), adapter(4, 21));
            LoraLayer q0 = (LoraLayer) m.getSubmodule("model.layers.0.self_attn.q_proj");
            assertEquals(8, q0.rank("default"), "padded to the target rank");
            assertEquals(8, ((LoraConfig) m.peftAdapters().peftConfig().get("default")).r(), "PEFT sets r");
            assertTrue(maxAbsDiff(fresh(cfg(4, 8), adapter(4, 21), x), logits(m, x)) < 1e-6, "padding adds zeros");
            // "auto": a load under the loaded name swaps in place; a rank-2 adapter is zero-padded into rank 8
            m.loadAdapter(null, LoadAdapterOptions.builder().adapterName("default").peftConfig(cfg(2, 8))
                    .adapterStateDict(adapter(2, 22)).build());
            assertEquals(8, q0.rank("default"));
            assertSame(q0, m.getSubmodule("model.layers.0.self_attn.q_proj"));
            assertTrue(maxAbsDiff(fresh(cfg(2, 8), adapter(2, 22), x), logits(m, x)) < 1e-6);
            // a rank above the target gets new tensors, as PEFT swaps them in
            m.loadAdapter(null, swap(cfg(12, 8), adapter(12, 23)));
            assertEquals(12, q0.rank("default"));
            assertTrue(maxAbsDiff(fresh(cfg(12, 8), adapter(12, 23), x), logits(m, x)) < 1e-6);
            // no name given: transformers never auto-swaps, and "default" exists
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.loadAdapter(null,
                    LoadAdapterOptions.builder().peftConfig(cfg(4, 8)).adapterStateDict(adapter(4, 1)).build()));
            assertEquals("Adapter with name default already exists. Please use a different name.", e.getMessage());
        }
    }

    private static void assertSame(Object a, Object b) {
        assertTrue(a == b, "the same layer object");
    }

    @Test
    void refusalsAreTransformersAndPeftsAndLeaveTheModelAsItWas() throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            IllegalArgumentException none = assertThrows(IllegalArgumentException.class,
                    () -> m.loadAdapter(null, swap(cfg(4, 8), adapter(4, 1))));
            assertEquals("To hotswap an adapter, there must already be an existing adapter with the same adapter name.",
                    none.getMessage());
            load(m, cfg(4, 8), adapter(4, 31));
            assertEquals("Call `enable_peft_hotswap` before loading the first adapter.",
                    assertThrows(IllegalStateException.class, () -> m.enablePeftHotswap(8)).getMessage());
            assertEquals("check_compiles should be one of 'error', 'warn', or 'ignore', got 'maybe' instead.",
                    assertThrows(IllegalArgumentException.class, () -> m.enablePeftHotswap(8, "maybe")).getMessage());
            Map<String, Tensor> before = MixinLoraTest.snapshot(m);
            LoraConfig rs = LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj", "v_proj").useRslora(true)
                    .build();
            assertEquals("Configs are incompatible: for use_rslora, False != True", assertThrows(
                    IllegalArgumentException.class, () -> m.loadAdapter(null, swap(rs, adapter(4, 2)))).getMessage());
            LoraConfig drop = LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj", "v_proj").loraDropout(0.1)
                    .build();
            assertEquals("Configs are incompatible: for lora_dropout, 0.0 != 0.1", assertThrows(
                    IllegalArgumentException.class, () -> m.loadAdapter(null, swap(drop, adapter(4, 2)))).getMessage());
            Map<String, Tensor> extra = adapter(4, 3);
            extra.put("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", torch.zeros(4, 16));
            assertEquals("Hot swapping the adapter did not succeed, unexpected keys found: "
                    + "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight.", assertThrows(
                    IllegalArgumentException.class, () -> m.loadAdapter(null, swap(cfg(4, 8), extra))).getMessage());
            Map<String, Tensor> wrong = adapter(4, 4);
            wrong.put(String.format(V, 1, "B"), torch.zeros(16, 4)); // v_proj's out is 8: a shape, not a rank, differs
            String msg = assertThrows(IllegalArgumentException.class,
                    () -> m.loadAdapter(null, swap(cfg(4, 8), wrong))).getMessage();
            assertTrue(msg.contains("layers.1.self_attn.v_proj.lora_B.weight: [8, 4] vs [16, 4]"), msg);
            MixinLoraTest.assertSameState(before, m);
            m.mergeAdapter();
            assertThrows(IllegalStateException.class, () -> m.loadAdapter(null, swap(cfg(4, 8), adapter(4, 5))));
            m.unmergeAdapter();
            m.addAdapter(IA3Config.builder().targetModules("k_proj").feedforwardModules().build(), "ia3");
            assertEquals("Hotswapping is currently only supported for LoRA, please set `hotswap=False`.",
                    assertThrows(IllegalArgumentException.class,
                            () -> m.loadAdapter(null, swap(cfg(4, 8), adapter(4, 6)))).getMessage());
        }
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            m.enablePeftHotswap(2);
            String msg = assertThrows(IllegalArgumentException.class, () -> load(m, cfg(4, 8), adapter(4, 7)))
                    .getMessage();
            assertTrue(msg.startsWith("Trying to pad the adapter to the target rank 2, but the original rank is larger"
                    + " (4). This is not possible."), msg);
            assertFalse(m.peftAdapters().isLoaded(), "the load was undone");
            assertFalse(m.getSubmodule("model.layers.0.self_attn.q_proj") instanceof LoraLayer);
        }
    }

    /**
     * A reader thread runs forwards while the main thread hot swaps 1,000 times between two adapters: every logits
     * the reader gets is bit-equal to the old adapter's or the new one's (a forward that saw some layers before a swap
     * and some after would match neither).
     */
    @Test
    void concurrentForwardSeesTheOldOrTheNewAdapterNeverAMix() throws Exception {
        Tensor x = ids(1, 4, 32, 5);
        Map<String, Tensor> a = adapter(4, 41);
        Map<String, Tensor> b = adapter(4, 42);
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            load(m, cfg(4, 8), a);
            Tensor refA = logits(m, x);
            m.loadAdapter(null, swap(cfg(4, 16), b));
            Tensor refB = logits(m, x);
            m.loadAdapter(null, swap(cfg(4, 8), a));
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
            }, "hotswap-reader");
            reader.start();
            try {
                for (int i = 0; i < 1000; i++) {
                    boolean toB = i % 2 == 0;
                    m.loadAdapter(null, swap(toB ? cfg(4, 16) : cfg(4, 8), toB ? b : a));
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
