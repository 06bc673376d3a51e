package dev.peft4j.tuners.ia3;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

class Ia3TargetsTest {

    @Test
    void listEntriesMatchWithPlainEndsWithNoDotBoundary() {
        List<String> ff = List.of("wo", "mlp.c_proj");
        assertTrue(Ia3Targets.isFeedForward("encoder.block.0.layer.1.DenseReluDense.wo", ff));
        assertTrue(Ia3Targets.isFeedForward("decoder.block.0.layer.1.DenseReluDense.xwo", ff));
        assertTrue(Ia3Targets.isFeedForward("transformer.h.0.mlp.c_proj", ff));
        assertFalse(Ia3Targets.isFeedForward("transformer.h.0.attn.c_proj", ff));
        assertFalse(Ia3Targets.isFeedForward("encoder.block.0.layer.0.SelfAttention.k", ff));
        assertFalse(Ia3Targets.isFeedForward("x.wo", (List<String>) null));
    }

    @Test
    void regexMustMatchTheWholeKey() {
        // PEFT's test_feedforward_matching_ia3 model, with a regex for feedforward_modules
        String ff = ".*DenseReluDense\\.(wo|wi)";
        assertTrue(Ia3Targets.isFeedForward("encoder.block.0.layer.1.DenseReluDense.wi", ff));
        assertFalse(Ia3Targets.isFeedForward("encoder.block.0.layer.1.DenseReluDense.wi.extra", ff));
        assertFalse(Ia3Targets.isFeedForward("encoder.block.0.layer.0.SelfAttention.q", ff));
    }
}
