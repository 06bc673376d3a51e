package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/** Native objects do not pile up across forwards; gradients reach exactly the trainable parameters. */
class LifetimeAndAutogradTest {
    @Test
    void decodingAndGeneratingLeaveNoNativeObjectsBehind() throws Exception {
        try (CausalLM lm = AutoModel.causalLM(Goldens.golden("llama-gqa-llama3rope"), ScalarType.Float);
                Checkpoints.Opened gold = Checkpoints.open(Goldens.golden("llama-gqa-llama3rope"), "golden.safetensors");
                KVCache cache = lm.newCache(); InferenceMode g = new InferenceMode()) {
            Tensor ids = gold.tensors.get("input_ids").narrow(0, 0, 1);
            try (PointerScope s = new PointerScope()) {
                lm.forward(ids, null, null, cache); // prefill; the cache now holds its 2 × layers tensors
            }
            Tensor token = ids.narrow(1, 0, 1);
            long before = Pointer.totalCount();
            for (int i = 0; i < 40; i++) {
                try (PointerScope s = new PointerScope()) {
                    lm.forward(token, null, null, cache);
                    cache.truncate(7);
                }
            }
            for (int i = 0; i < 5; i++) {
                try (PointerScope s = new PointerScope()) {
                    Generation.generate(lm, ids, null, Generation.Options.sampling(5, 1.0, 5, 0.9, i));
                }
            }
            long after = Pointer.totalCount();
            assertTrue(after <= before + 2, "native objects grew from " + before + " to " + after);
        }
    }

    @Test
    void closingAModelFreesItsTensors() throws Exception {
        PreTrainedModel m = AutoModel.fromPretrained(Goldens.golden("gpt2-tied"));
        Map<String, Tensor> sd = m.stateDict();
        m.close();
        for (Map.Entry<String, Tensor> e : sd.entrySet()) {
            assertTrue(e.getValue().isNull(), e.getKey() + " still allocated");
        }
    }

    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(strings = {"llama-gqa-llama3rope", "qwen2-bias-tied-linearrope",
        "gpt2-tied", "opt-prenorm", "opt-postnorm-projected", "bert-mlm", "bert-seqcls"})
    void backwardInTrainingModeReachesEveryParameter(String name) throws Exception {
        try (PointerScope s = new PointerScope(); PreTrainedModel m = AutoModel.fromPretrained(Goldens.golden(name));
                Checkpoints.Opened gold = Checkpoints.open(Goldens.golden(name), "golden.safetensors")) {
            m.train(true); // dropout active: in-place ops must not clobber what autograd saved
            Tensor ids = gold.tensors.get("input_ids");
            Tensor mask = gold.tensors.get("attention_mask");
            Tensor out = m instanceof CausalLM ? ((CausalLM) m).forward(ids, mask, null, null)
                    : m instanceof BertForMaskedLM ? ((BertForMaskedLM) m).forward(ids, mask, null)
                    : ((BertForSequenceClassification) m).forward(ids, mask, null);
            out.pow(new org.bytedeco.pytorch.Scalar(2)).mean().backward();
            for (Map.Entry<String, Tensor> e : m.namedParameters().entrySet()) {
                assertTrue(e.getValue().grad().defined(), name + ": no gradient for " + e.getKey());
            }
        }
    }

    @Test
    void gradientsReachOnlyTrainableParameters() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel m = AutoModel.fromPretrained(Goldens.golden("llama-gqa-llama3rope"));
                Checkpoints.Opened gold = Checkpoints.open(Goldens.golden("llama-gqa-llama3rope"), "golden.safetensors")) {
            for (Tensor t : m.namedParameters().values()) {
                t.requires_grad_(false);
            }
            Tensor q = m.getParameter("model.layers.0.self_attn.q_proj.weight");
            Tensor up = m.getParameter("model.layers.1.mlp.up_proj.weight");
            q.requires_grad_(true);
            up.requires_grad_(true);
            m.train(true);
            Tensor logits = ((CausalLM) m).forward(gold.tensors.get("input_ids"), gold.tensors.get("attention_mask"),
                    null, null);
            logits.pow(new org.bytedeco.pytorch.Scalar(2)).mean().backward();
            assertTrue(q.grad().defined() && q.grad().abs().sum().item_float() > 0, "q_proj got no gradient");
            assertTrue(up.grad().defined() && up.grad().abs().sum().item_float() > 0, "up_proj got no gradient");
            assertFalse(m.getParameter("model.layers.0.self_attn.k_proj.weight").grad().defined());
            assertEquals(ScalarType.Float, q.grad().scalar_type().intern());
        }
    }
}
