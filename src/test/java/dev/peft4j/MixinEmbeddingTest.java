package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Embedding;
import dev.peft4j.tuners.lora.LoraEmbedding;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** LoRA on {@code embed_tokens} through the mixin. */
class MixinEmbeddingTest {
    @TempDir
    Path tmp;

    static LoraConfig cfg(boolean init) {
        return LoraConfig.builder().r(4).loraAlpha(8).targetModules("embed_tokens", "q_proj")
                .initLoraWeights(new InitLoraWeights.Flag(init)).build();
    }

    @Test
    void embeddingDeltaIsLookupOfATimesBScaled() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(1)) {
            Tensor x = ids(2, 5, 32, 1);
            Tensor base = logits(m, x);
            m.addAdapter(cfg(true));
            assertTrue(bitEqual(base, logits(m, x)), "default init: A = 0");
            m.deleteAdapter("default");
            m.addAdapter(cfg(false), "e");
            LoraEmbedding l = (LoraEmbedding) m.getSubmodule("model.embed_tokens");
            Map<String, Tensor> p = l.adapterParameters("e");
            assertArrayEquals(new long[] {4, 32}, p.get("lora_embedding_A.e").shape());
            assertArrayEquals(new long[] {16, 4}, p.get("lora_embedding_B.e").shape());
            Tensor w = ((Embedding) l.baseLayer()).weight();
            Tensor expect = torch.embedding(w, x).add(torch.embedding(p.get("lora_embedding_A.e").t(), x)
                    .matmul(p.get("lora_embedding_B.e").t()).mul(new Scalar(2.0)));
            assertTrue(maxAbsDiff(expect, l.forward(x)) < 1e-6);
            assertTrue(m.getAdapterStateDict("e").containsKey("model.embed_tokens.lora_embedding_A"));
        }
    }

    @Test
    void mergeMixedBatchAndRoundTrip() throws Exception {
        Path dir = tmp.resolve("emb");
        Tensor x = ids(2, 5, 32, 2);
        Tensor adapted;
        try (PreTrainedModel m = MixinSupport.tinyLlama(2)) {
            m.addAdapter(cfg(false), "e");
            adapted = logits(m, x);
            Tensor mixed = m.withAdapterNames(List.of("__base__", "e"), () -> logits(m, x));
            assertTrue(maxAbsDiff(adapted.narrow(0, 1, 1), mixed.narrow(0, 1, 1)) < 1e-5);
            m.disableAdapters();
            Tensor base = logits(m, x);
            m.enableAdapters();
            assertTrue(maxAbsDiff(base.narrow(0, 0, 1), mixed.narrow(0, 0, 1)) < 1e-5);
            m.mergeAdapter();
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5);
            m.unmergeAdapter();
            m.saveAdapter(dir, "e");
        }
        try (PreTrainedModel m = MixinSupport.tinyLlama(2)) {
            AdapterLoadReport r = m.loadAdapter(dir);
            assertEquals(List.of(), r.missingKeys());
            assertEquals(List.of(), r.unexpectedKeys());
            assertTrue(bitEqual(adapted, logits(m, x)));
        }
    }

    @Test
    void loraBiasOnEmbeddingIsRefused() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.addAdapter(LoraConfig.builder().targetModules("embed_tokens").loraBias(true).build()));
            assertEquals("lora_bias=True is not supported for Embedding.", e.getMessage());
        }
    }
}
