package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.kernels.Quantization;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import java.io.IOException;
import java.nio.file.Path;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code --quantize int8|int4}: the commands load the model quantized, as {@link AutoModel} does; bad values refused. */
class QuantizeOptionTest {
    /** The tiny Llama of {@link TinyModels} with an intermediate size of 64, so that every Linear can be quantized. */
    static Path llama(Path dir, long seed) throws IOException {
        String json = TinyModels.TINY_LLAMA.replace("\"intermediate_size\": 48", "\"intermediate_size\": 64");
        try (PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(ScalarType.Float))) {
            Init.normal(m, 0.3, seed);
            m.savePretrained(dir);
        }
        return dir;
    }

    @Test
    void logitsWithQuantizeEqualTheQuantizedModelsForwardWithAndWithoutALora(@TempDir Path tmp) throws Exception {
        Path model = llama(tmp.resolve("tiny"), 21);
        Path adapter = TinyModels.loraAdapter(tmp.resolve("lora"), false);
        Path plain = tmp.resolve("plain.safetensors");
        assertEquals(0, Cli.run("logits", "--model", model.toString(), "--input-ids", "1,2,3", "--out",
                plain.toString()).rc());
        for (Quantization q : Quantization.values()) {
            for (boolean withLora : new boolean[] {false, true}) {
                String name = q.name().toLowerCase(java.util.Locale.ROOT);
                Path out = tmp.resolve(name + withLora + ".safetensors");
                Cli.Result r = withLora
                        ? Cli.run("logits", "--model", model.toString(), "--quantize", name, "--adapter",
                                adapter.toString(), "--input-ids", "1,2,3", "--out", out.toString())
                        : Cli.run("logits", "--model", model.toString(), "--quantize", name, "--input-ids", "1,2,3",
                                "--out", out.toString());
                assertEquals(0, r.rc(), r.toString());
                try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode();
                        SafetensorsFile f = SafetensorsFile.open(out); SafetensorsFile p = SafetensorsFile.open(plain);
                        CausalLM lm = AutoModel.causalLM(model, ScalarType.Float, q)) {
                    if (withLora) {
                        ((PreTrainedModel) lm).loadAdapter(adapter);
                    }
                    Tensor expected = lm.forward(TokenIds.rectangular(new long[][] {{1, 2, 3}}), null, null, null);
                    assertEquals(0f, LogitsCommandTest.maxAbsDiff(expected, f.get("logits")),
                            q + (withLora ? " + LoRA" : "") + ": the quantized model's forward, bit for bit");
                    float vsPlain = LogitsCommandTest.maxAbsDiff(p.get("logits"), f.get("logits"));
                    assertNotEquals(0f, vsPlain, "the weights really were quantized");
                }
            }
        }
    }

    @Test
    void generateRunsOnAQuantizedModel(@TempDir Path tmp) throws Exception {
        Path model = llama(tmp.resolve("tiny"), 22);
        Cli.Result r = Cli.run("generate", "--model", model.toString(), "--quantize", "int4", "--input-ids", "1,2,3",
                "--max-new-tokens", "4");
        assertEquals(0, r.rc(), r.toString());
        assertTrue(r.out().startsWith("1,2,3,") && r.out().trim().split(",").length == 7, r.out());
    }

    @Test
    void badValuesAndUnquantizableModelsAreRefusedClearly(@TempDir Path tmp) throws Exception {
        Path model = llama(tmp.resolve("tiny"), 23);
        Cli.Result r = Cli.run("logits", "--model", model.toString(), "--quantize", "int3", "--input-ids", "1",
                "--out", tmp.resolve("x.safetensors").toString());
        assertNotEquals(0, r.rc());
        assertTrue(r.err().contains("--quantize") && r.err().contains("int3"), r.toString());
        // TinyModels' own Llama has intermediate_size 48: down_proj's input is not a multiple of 32
        Path odd = TinyModels.llama(tmp.resolve("odd"), 24);
        r = Cli.run("logits", "--model", odd.toString(), "--quantize", "int8", "--input-ids", "1", "--out",
                tmp.resolve("y.safetensors").toString());
        assertNotEquals(0, r.rc());
        assertTrue(r.err().contains("model.layers.0.mlp.down_proj") && r.err().contains("multiple of 32"),
                r.toString());
    }

    @Test
    void quantizeHeadQuantizesLmHeadAsAutoModelDoesAndIsRefusedAloneOrWithABadValue(@TempDir Path tmp)
            throws Exception {
        Path model = llama(tmp.resolve("tiny"), 25);
        Path bodyOnly = tmp.resolve("body.safetensors");
        Path withHead = tmp.resolve("head.safetensors");
        assertEquals(0, Cli.run("logits", "--model", model.toString(), "--quantize", "int4", "--quantize-head", "none",
                "--input-ids", "1,2,3", "--out", bodyOnly.toString()).rc());
        Cli.Result r = Cli.run("logits", "--model", model.toString(), "--quantize", "int4", "--quantize-head", "int8",
                "--input-ids", "1,2,3", "--out", withHead.toString());
        assertEquals(0, r.rc(), r.toString());
        try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode();
                SafetensorsFile f = SafetensorsFile.open(withHead); SafetensorsFile b = SafetensorsFile.open(bodyOnly);
                PreTrainedModel m = AutoModel.fromPretrained(model, ScalarType.Float)) {
            java.util.List<String> names = AutoModel.quantize(m, Quantization.INT4, Quantization.INT8);
            assertEquals("lm_head", names.get(names.size() - 1));
            Tensor expected = ((CausalLM) m).forward(TokenIds.rectangular(new long[][] {{1, 2, 3}}), null, null, null);
            assertEquals(0f, LogitsCommandTest.maxAbsDiff(expected, f.get("logits")), "AutoModel's int4 + int8 head");
            assertNotEquals(0f, LogitsCommandTest.maxAbsDiff(b.get("logits"), f.get("logits")),
                    "the head really was quantized");
        }
        r = Cli.run("logits", "--model", model.toString(), "--quantize-head", "int8", "--input-ids", "1", "--out",
                tmp.resolve("x.safetensors").toString());
        assertNotEquals(0, r.rc());
        assertTrue(r.err().contains("--quantize-head") && r.err().contains("needs --quantize"), r.toString());
        r = Cli.run("generate", "--model", model.toString(), "--quantize", "int8", "--quantize-head", "int2",
                "--input-ids", "1", "--max-new-tokens", "1");
        assertNotEquals(0, r.rc());
        assertTrue(r.err().contains("--quantize-head") && r.err().contains("int2"), r.toString());
    }
}
