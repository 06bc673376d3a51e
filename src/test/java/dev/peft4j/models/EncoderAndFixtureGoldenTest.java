package dev.peft4j.models;

import static dev.peft4j.models.Goldens.assertClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.nn.Init;
import java.nio.file.Path;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** BERT heads against gen_goldens.py, and the lm-buddy checkpoints loaded and run against the same reference. */
class EncoderAndFixtureGoldenTest {
    static final float TOL = 1e-5f;

    @Test
    void bertMaskedLmLogitsMatchReferenceAndRightPaddingKeepsRowLogits() throws Exception {
        Path dir = Goldens.golden("bert-mlm");
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                PreTrainedModel m = AutoModel.fromPretrained(dir);
                Checkpoints.Opened golden = Checkpoints.open(dir, "golden.safetensors")) {
            BertForMaskedLM mlm = assertInstanceOf(BertForMaskedLM.class, m);
            Tensor ids = golden.tensors.get("input_ids");
            Tensor logits = mlm.forward(ids, golden.tensors.get("attention_mask"), null);
            Tensor expected = golden.tensors.get("logits");
            assertClose(expected.select(0, 0), logits.select(0, 0), TOL, "row 0");
            assertClose(expected.select(0, 1).narrow(0, 0, 5), logits.select(0, 1).narrow(0, 0, 5), TOL, "row 1");
            Tensor alone = mlm.forward(ids.narrow(0, 1, 1).narrow(1, 0, 5), null, null);
            assertClose(golden.tensors.get("row1_unpadded_logits"), alone, TOL, "row 1 unpadded");
        }
    }

    @Test
    void bertSequenceClassificationLogitsMatchReference() throws Exception {
        Path dir = Goldens.golden("bert-seqcls");
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                PreTrainedModel m = AutoModel.fromPretrained(dir);
                Checkpoints.Opened golden = Checkpoints.open(dir, "golden.safetensors")) {
            BertForSequenceClassification cls = assertInstanceOf(BertForSequenceClassification.class, m);
            assertEquals(3, cls.numLabels());
            Tensor ids = golden.tensors.get("input_ids");
            Tensor logits = cls.forward(ids, golden.tensors.get("attention_mask"), null);
            assertClose(golden.tensors.get("logits"), logits, TOL, "padded batch");
            Tensor alone = cls.forward(ids.narrow(0, 1, 1).narrow(1, 0, 5), null, null);
            assertClose(golden.tensors.get("row1_unpadded_logits"), alone, TOL, "row 1 unpadded");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"hf-tiny-gpt2-lmbuddy", "hf-fake-gpt2-lmhead-lmbuddy", "hf-bert-tiniest-lmbuddy"})
    void lmBuddyCheckpointLogitsMatchReference(String name) throws Exception {
        Path dir = Goldens.resource("fixtures/" + name);
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                Checkpoints.Opened golden = Checkpoints.open(dir, "golden.safetensors")) {
            Tensor ids = golden.tensors.get("input_ids");
            Tensor mask = golden.tensors.get("attention_mask");
            Tensor logits;
            PreTrainedModel model;
            if (name.equals("hf-tiny-gpt2-lmbuddy")) {
                // a bare GPT2Model checkpoint loaded into the LM-head model: prefix added, head tied
                model = AutoModel.fromConfig(ModelConfig.read(dir).withArchitecture("GPT2LMHeadModel"),
                        Init.meta(ScalarType.Float));
                try (Checkpoints.Opened ckpt = Checkpoints.open(dir)) {
                    assertEquals(java.util.List.of(), model.loadWeights(ckpt.tensors, ckpt.source).unexpectedKeys());
                }
            } else {
                model = AutoModel.fromPretrained(dir);
            }
            try (model) {
                logits = model instanceof BertForMaskedLM ? ((BertForMaskedLM) model).forward(ids, mask, null)
                        : ((CausalLM) model).forward(ids, mask, null, null);
                long real = 5;
                long start = name.contains("bert") ? 0 : 2;
                Tensor head = logits.narrow(2, 0, Math.min(2048, logits.size(2)));
                Tensor lse = logits.logsumexp(new long[] {-1}, false);
                Tensor eHead = golden.tensors.get("logits_head");
                Tensor eLse = golden.tensors.get("logsumexp");
                assertClose(eHead.select(0, 0), head.select(0, 0), TOL, name + " row 0");
                assertClose(eLse.select(0, 0), lse.select(0, 0), TOL, name + " row 0 logsumexp");
                assertClose(eHead.select(0, 1).narrow(0, start, real), head.select(0, 1).narrow(0, start, real), TOL,
                        name + " row 1");
                assertClose(eLse.select(0, 1).narrow(0, start, real), lse.select(0, 1).narrow(0, start, real), TOL,
                        name + " row 1 logsumexp");
            }
        }
    }

    @Test
    void bareGpt2CheckpointLoadsAsGpt2ModelWithHfKeys() throws Exception {
        Path dir = Goldens.resource("fixtures/hf-tiny-gpt2-lmbuddy");
        try (PointerScope scope = new PointerScope(); PreTrainedModel m = AutoModel.fromPretrained(dir)) {
            assertInstanceOf(GPT2Model.class, m);
            Map<String, Tensor> sd = m.stateDict();
            assertEquals(16, sd.size());
            assertTrue(sd.containsKey("h.0.attn.c_attn.weight"), sd.keySet().toString());
            assertEquals(java.util.List.of(2L, 6L), java.util.Arrays.stream(sd.get("h.0.attn.c_attn.weight").shape())
                    .boxed().toList());
            assertEquals("Conv1D", m.getSubmodule("h.0.attn.c_attn").typeName());
            assertEquals(ScalarType.Float, sd.get("wte.weight").scalar_type().intern());
        }
    }
}
