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
import dev.peft4j.nn.Linear;
import dev.peft4j.tuners.ModulesToSaveWrapper;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code modules_to_save=["lm_head"]} through the mixin. */
class MixinModulesToSaveTest {
    @TempDir
    Path tmp;

    static LoraConfig cfg() {
        return LoraConfig.builder().r(2).targetModules("q_proj").modulesToSave(List.of("lm_head"))
                .initLoraWeights(new InitLoraWeights.Flag(false)).build();
    }

    static void bump(PreTrainedModel m, String adapter) {
        ModulesToSaveWrapper w = (ModulesToSaveWrapper) m.getSubmodule("lm_head");
        try (NoGradGuard g = new NoGradGuard()) {
            ((Linear) w.adapterCopies().get(adapter)).weight().add_(new Scalar(0.05));
        }
    }

    @Test
    void copyIsTrainedSavedUnderModuleKeyAndOriginalUsedWhenDisabled() throws Exception {
        Path dir = tmp.resolve("mts");
        Tensor x = ids(2, 4, 32, 1);
        Tensor adapted;
        try (PreTrainedModel m = MixinSupport.tinyLlama(1)) {
            Tensor base = logits(m, x);
            m.addAdapter(cfg());
            assertTrue(m.namedParameters().containsKey("lm_head.original_module.weight"));
            assertTrue(m.namedParameters().get("lm_head.modules_to_save.default.weight").requires_grad());
            assertFalse(m.namedParameters().get("lm_head.original_module.weight").requires_grad());
            bump(m, "default");
            adapted = logits(m, x);
            Map<String, Tensor> sd = m.getAdapterStateDict();
            assertTrue(sd.containsKey("lm_head.weight"));
            assertEquals(5, sd.size(), "2 q_proj pairs + lm_head.weight");
            m.disableAdapters();
            assertTrue(bitEqual(base, logits(m, x)));
            m.enableAdapters();
            assertTrue(((ModulesToSaveWrapper) m.getSubmodule("lm_head")).disabled(),
                    "transformers' enable_adapters leaves modules_to_save wrappers disabled");
            m.setAdapter("default"); // set_adapter does not re-enable them either; the next add/load does not matter here
            m.saveAdapter(dir, "default");
        }
        try (PreTrainedModel m = MixinSupport.tinyLlama(1)) {
            AdapterLoadReport r = m.loadAdapter(dir);
            assertEquals(List.of(), r.unexpectedKeys());
            assertEquals(List.of(), r.missingKeys());
            assertTrue(bitEqual(adapted, logits(m, x)), "the copy's values come back under lm_head.weight");
            m.mergeAndUnload();
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5);
            assertTrue(m.getSubmodule("lm_head") instanceof Linear, "unloaded to the active copy");
        }
    }

    @Test
    void twoAdaptersEachHaveTheirCopyAndOnlyOneMayBeActive() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(2)) {
            m.addAdapter(cfg(), "a");
            m.addAdapter(cfg(), "b");
            bump(m, "b");
            ModulesToSaveWrapper w = (ModulesToSaveWrapper) m.getSubmodule("lm_head");
            assertEquals("b", w.activeAdapter());
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.setAdapter("a", "b"));
            assertTrue(e.getMessage().startsWith("Attempted to set multiple"), e.getMessage());
            Tensor x = ids(1, 3, 32, 2);
            Tensor withB = logits(m, x);
            m.setAdapter("a");
            assertTrue(maxAbsDiff(withB, logits(m, x)) > 1e-4);
            Tensor xx = ids(2, 3, 32, 3);
            Tensor mixed = m.withAdapterNames(List.of("b", "a"), () -> logits(m, xx));
            m.setAdapter("b");
            assertTrue(maxAbsDiff(logits(m, xx.narrow(0, 0, 1)), mixed.narrow(0, 0, 1)) < 1e-5);
            m.setAdapter("a");
            assertTrue(maxAbsDiff(logits(m, xx.narrow(0, 1, 1)), mixed.narrow(0, 1, 1)) < 1e-5);
            m.deleteAdapter("a");
            assertEquals(List.of("b"), List.copyOf(w.adapterCopies().keySet()));
        }
    }

    /**
     * PEFT's order in {@code ModulesToSaveWrapper.forward}: when the active adapter has no copy of the module, every
     * row of a mixed batch takes the original module; when it has one, a row naming an adapter without a copy is a
     * {@code KeyError} (the {@code ModuleDict} lookup), not a silent base row.
     */
    @Test
    void mixedBatchFollowsPeftForAdaptersWithoutACopy() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(2)) {
            m.addAdapter(cfg(), "a");
            m.addAdapter(LoraConfig.builder().r(2).targetModules("q_proj")
                    .initLoraWeights(new InitLoraWeights.Flag(false)).build(), "c");
            bump(m, "a");
            ModulesToSaveWrapper w = (ModulesToSaveWrapper) m.getSubmodule("lm_head");
            Tensor xx = ids(2, 3, 32, 3);
            m.setAdapter("a");
            assertEquals("a", w.activeAdapter());
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.withAdapterNames(List.of("a", "c"), () -> logits(m, xx)));
            assertTrue(e.getMessage().startsWith("KeyError: 'c'"), e.getMessage());
            // __base__ rows are fine, and give the original module's rows
            Tensor mixed = m.withAdapterNames(List.of("a", "__base__"), () -> logits(m, xx));
            assertTrue(maxAbsDiff(logits(m, xx.narrow(0, 0, 1)), mixed.narrow(0, 0, 1)) < 1e-5);
            // active c (no copy here): the original module for every row, a's row included
            m.setAdapter("c");
            Tensor viaOriginal = m.withAdapterNames(List.of("a", "c"), () -> logits(m, xx));
            m.setAdapter("a");
            Tensor aRow = logits(m, xx.narrow(0, 0, 1));
            w.enableAdapters(false);
            Tensor originalHeadRow = m.withAdapterNames(List.of("a"), () -> logits(m, xx.narrow(0, 0, 1)));
            w.enableAdapters(true);
            assertTrue(maxAbsDiff(originalHeadRow, viaOriginal.narrow(0, 0, 1)) < 1e-5,
                    "row a under active c takes the original lm_head");
            assertTrue(maxAbsDiff(aRow, viaOriginal.narrow(0, 0, 1)) > 1e-4, "a's own copy differs from the original");
        }
    }
}
