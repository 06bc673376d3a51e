package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.io.TensorInfo;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code peft4j logits}: the file it writes, against a direct forward and against the Python reference. */
class LogitsCommandTest {
    static float maxAbsDiff(Tensor a, Tensor b) {
        assertArrayEquals(a.shape(), b.shape());
        return a.to(ScalarType.Float).sub(b.to(ScalarType.Float)).abs().max().item_float();
    }

    @Test
    void logitsWritesFloat32SafetensorsUnderKeyLogitsEqualToADirectForward(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 11);
        Path out = tmp.resolve("logits.safetensors");
        Cli.Result r = Cli.run("logits", "--model", model.toString(), "--input-ids", "1,2,3;4,5,63", "--out",
                out.toString());
        assertEquals(0, r.rc(), r.toString());
        assertEquals("", r.out(), "stdout is not a terminal: no output but the result (the file)");
        try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode();
                SafetensorsFile f = SafetensorsFile.open(out);
                CausalLM lm = AutoModel.causalLM(model, ScalarType.Float)) {
            assertEquals(List.of("logits"), f.names());
            TensorInfo info = f.info("logits");
            assertEquals("F32", info.dtype());
            assertArrayEquals(new long[] {2, 3, 64}, info.shape());
            Tensor expected = lm.forward(TokenIds.rectangular(new long[][] {{1, 2, 3}, {4, 5, 63}}), null, null, null);
            assertEquals(0f, maxAbsDiff(expected, f.get("logits")), "the same forward, bit for bit");
        }
    }

    @Test
    void logitsMatchThePythonReferenceForALlamaAndABertClassifier(@TempDir Path tmp) throws Exception {
        // golden.safetensors: input_ids and logits from a plain-torch restatement of transformers (models/PROVENANCE.md)
        for (String name : new String[] {"llama-gqa-llama3rope", "bert-seqcls"}) {
            Path dir = Cli.resource("models/golden/" + name);
            try (PointerScope s = new PointerScope(); SafetensorsFile gold = SafetensorsFile.open(dir.resolve("golden.safetensors"))) {
                long[] row0 = TokenIds.row(gold.get("input_ids"), 0); // row 0 is unpadded
                Path out = tmp.resolve(name + ".safetensors");
                Cli.Result r = Cli.run("logits", "--model", dir.toString(), "--input-ids", TokenIds.join(row0), "--out",
                        out.toString());
                assertEquals(0, r.rc(), r.toString());
                try (SafetensorsFile f = SafetensorsFile.open(out)) {
                    Tensor expected = gold.get("logits").narrow(0, 0, 1);
                    float d = maxAbsDiff(expected, f.get("logits"));
                    assertTrue(d <= 1e-4f, name + ": max |diff| " + d);
                }
            }
        }
        try (SafetensorsFile f = SafetensorsFile.open(tmp.resolve("bert-seqcls.safetensors"))) {
            assertArrayEquals(new long[] {1, 3}, f.info("logits").shape(), "classification: batch x labels");
        }
    }

    @Test
    void logitsMatchThePythonReferenceForEachAddedDecoderFamily(@TempDir Path tmp) throws Exception {
        // golden.safetensors from gen_family_goldens.py (models/PROVENANCE.md)
        for (String name : new String[] {"gemma-mqa-headdim", "gemma2-softcap-sliding", "gemma3-qknorm-localrope",
            "qwen3-qknorm-sliding", "phi3-longrope-partial", "qwen2-slidingwindow"}) {
            Path dir = Cli.resource("models/golden/" + name);
            try (PointerScope s = new PointerScope(); SafetensorsFile gold = SafetensorsFile.open(dir.resolve("golden.safetensors"))) {
                long[] row0 = TokenIds.row(gold.get("input_ids"), 0); // row 0 is unpadded
                Path out = tmp.resolve(name + ".safetensors");
                Cli.Result r = Cli.run("logits", "--model", dir.toString(), "--input-ids", TokenIds.join(row0), "--out",
                        out.toString());
                assertEquals(0, r.rc(), r.toString());
                try (SafetensorsFile f = SafetensorsFile.open(out)) {
                    float d = maxAbsDiff(gold.get("logits").narrow(0, 0, 1), f.get("logits"));
                    assertTrue(d <= 1e-5f, name + ": max |diff| " + d);
                }
            }
        }
    }

    @Test
    void raggedRowsAndIdsOutsideTheVocabularyAreUsageErrors(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 11);
        Path out = tmp.resolve("o.safetensors");
        Cli.Result ragged = Cli.run("logits", "--model", model.toString(), "--input-ids", "1,2,3;4,5", "--out",
                out.toString());
        assertEquals(2, ragged.rc(), ragged.toString());
        assertTrue(ragged.err().contains("same length"), ragged.toString());
        Cli.Result oov = Cli.run("logits", "--model", model.toString(), "--input-ids", "1,64", "--out", out.toString());
        assertEquals(2, oov.rc(), oov.toString());
        assertTrue(oov.err().contains("vocab_size 64"), oov.toString());
        Cli.Result junk = Cli.run("logits", "--model", model.toString(), "--input-ids", "1,x", "--out", out.toString());
        assertEquals(2, junk.rc(), junk.toString());
        assertTrue(Files.notExists(out), "nothing written on a usage error");
    }

    @Test
    void aBareBaseModelHasNoLogitsAndFailsWithExitOne(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 11);
        String cfg = Files.readString(model.resolve("config.json")).replace("LlamaForCausalLM", "LlamaModel");
        Files.writeString(model.resolve("config.json"), cfg);
        Cli.Result r = Cli.run("logits", "--model", model.toString(), "--input-ids", "1,2", "--out",
                tmp.resolve("o.safetensors").toString());
        assertEquals(1, r.rc(), r.toString());
        assertTrue(r.err().contains("LlamaModel has no language-model or classification head"), r.toString());
    }
}
