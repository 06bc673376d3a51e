package dev.peft4j.io;

import static dev.peft4j.io.PickleTestTensors.doubles;
import static dev.peft4j.io.PickleTestTensors.fixture;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/**
 * Real files written by Python PEFT 0.5: adapter state dicts and saved logits, checked against
 * their adapter configs and the listings in their PROVENANCE.md.
 */
class TorchPickleAdaptersTest {

    @Test
    void loraOpt125mAdapterHasQAndVProjectionsOfRank8() throws Exception {
        Map<String, Tensor> sd = TorchPickle.loadStateDict(fixture("peft-regression-lora-opt125m/adapter_model.bin"));
        // adapter_config.json: r=8, target_modules [q_proj, v_proj]; OPT-125m has 12 layers of width 768
        assertEquals(48, sd.size());
        List<String> expected = new ArrayList<>();
        for (int layer = 0; layer < 12; layer++) {
            for (String proj : new String[] {"v_proj", "q_proj"}) {
                for (String ab : new String[] {"A", "B"}) {
                    expected.add("base_model.model.model.decoder.layers." + layer + ".self_attn." + proj + ".lora_" + ab
                            + ".weight");
                }
            }
        }
        assertEquals(expected, List.copyOf(sd.keySet()), "keys in file order");
        for (Map.Entry<String, Tensor> e : sd.entrySet()) {
            Tensor t = e.getValue();
            assertEquals(ScalarType.Float, t.scalar_type().intern(), e.getKey());
            long[] shape = e.getKey().contains("lora_A") ? new long[] {8, 768} : new long[] {768, 8};
            assertArrayEquals(shape, t.shape(), e.getKey());
            assertTrue(t.is_contiguous(), e.getKey());
            assertTrue(t.is_cpu(), "saved from cuda:0, loaded to the CPU: " + e.getKey());
        }
        // init_lora_weights=false: B is random, not zero, so the adapter really changes the output
        double maxAbs = 0;
        for (double v : doubles(sd.get("base_model.model.model.decoder.layers.0.self_attn.q_proj.lora_B.weight"))) {
            maxAbs = Math.max(maxAbs, Math.abs(v));
        }
        assertTrue(maxAbs > 0, "lora_B is non-zero");
    }

    @Test
    void ia3Mt0LargeAdapterHasOneVectorPerTargetModule() throws Exception {
        Map<String, Tensor> sd = TorchPickle.loadStateDict(fixture("peft-ia3-mt0-large/adapter_model.bin"));
        // 24 encoder blocks x {k, v, wi_1} + 24 decoder blocks x {self k, v, cross k, v, wi_1}
        assertEquals(24 * 3 + 24 * 5, sd.size());
        int ffn = 0;
        for (Map.Entry<String, Tensor> e : sd.entrySet()) {
            String k = e.getKey();
            assertTrue(k.startsWith("base_model.model.") && k.endsWith(".ia3_l"), k);
            assertTrue(k.matches(".*\\.(k|v|wi_1)\\.ia3_l"), "target_modules are k, v, wi_1: " + k);
            // feedforward_modules is empty, so every vector scales the output: [out_features, 1]
            long[] shape = k.contains(".wi_1.") ? new long[] {2816, 1} : new long[] {1024, 1};
            ffn += k.contains(".wi_1.") ? 1 : 0;
            assertArrayEquals(shape, e.getValue().shape(), k);
            assertEquals(ScalarType.Float, e.getValue().scalar_type().intern(), k);
        }
        assertEquals(48, ffn);
        assertTrue(sd.containsKey("base_model.model.encoder.block.0.layer.0.SelfAttention.k.ia3_l"));
        assertTrue(sd.containsKey("base_model.model.decoder.block.23.layer.1.EncDecAttention.v.ia3_l"));
    }

    @Test
    void savedLogitsAreABareTensorWithTheListedFirstValues() throws Exception {
        Tensor fp32 = assertInstanceOf(Tensor.class,
                TorchPickle.load(fixture("peft-regression-lora-opt125m/output_bnb_4bit.pt")));
        assertEquals(ScalarType.Float, fp32.scalar_type().intern());
        assertArrayEquals(new long[] {1, 6, 50272}, fp32.shape());
        double[] first4 = {-6.301156, -6.300793, 2.2437594, -6.2968736, 4.368558, 4.524743, 5.9784107, 3.027009};
        double[] v = doubles(fp32);
        for (int i = 0; i < first4.length; i++) {
            assertEquals(first4[i], v[i], 1e-6, "4-bit logits[" + i + "]");
        }
        Tensor fp16 = assertInstanceOf(Tensor.class,
                TorchPickle.load(fixture("peft-regression-lora-opt125m/output_bnb_8bit.pt")));
        assertEquals(ScalarType.Half, fp16.scalar_type().intern());
        assertArrayEquals(new long[] {1, 6, 50272}, fp16.shape());
        double[] first8 = {-4.895, -4.9, 2.914, -4.895, 5.066, 2.93, 5.176, 2.727};
        double[] h = doubles(fp16);
        for (int i = 0; i < first8.length; i++) {
            assertEquals(first8[i], h[i], 2e-3, "8-bit logits[" + i + "] (fp16, printed to 4 digits)");
        }
    }
}
