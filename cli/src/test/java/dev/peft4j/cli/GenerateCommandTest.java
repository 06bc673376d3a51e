package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.Generation;
import java.nio.file.Path;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code peft4j generate}: the ids it prints, greedy and sampled, single rows and ragged batches. */
class GenerateCommandTest {
    @Test
    void greedyPrintsPromptThenTheNewIdsOfGeneration(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 5);
        Cli.Result r = Cli.run("generate", "--model", model.toString(), "--input-ids", "1,2,3", "--max-new-tokens", "6");
        assertEquals(0, r.rc(), r.toString());
        String expected;
        try (PointerScope s = new PointerScope(); CausalLM lm = AutoModel.causalLM(model, ScalarType.Float)) {
            Tensor out = Generation.generate(lm, TokenIds.rectangular(new long[][] {{1, 2, 3}}), null,
                    Generation.Options.greedy(6));
            expected = TokenIds.join(TokenIds.row(out, 0));
        }
        assertEquals(expected + "\n", r.out(), "one line: the prompt and 6 new ids, nothing else");
        assertTrue(r.out().startsWith("1,2,3,"));
    }

    @Test
    void eachAddedDecoderFamilyGeneratesTheReferenceGreedyTokens() throws Exception {
        // greedy_tokens: gen_family_goldens.py's 6 tokens after row 0's first 4 (models/PROVENANCE.md)
        for (String name : new String[] {"gemma-mqa-headdim", "gemma2-softcap-sliding", "gemma3-qknorm-localrope",
            "qwen3-qknorm-sliding", "phi3-longrope-partial", "qwen2-slidingwindow"}) {
            Path dir = Cli.resource("models/golden/" + name);
            String prompt;
            String expected;
            try (PointerScope s = new PointerScope();
                    dev.peft4j.io.SafetensorsFile gold = dev.peft4j.io.SafetensorsFile.open(dir.resolve("golden.safetensors"))) {
                prompt = TokenIds.join(java.util.Arrays.copyOf(TokenIds.row(gold.get("input_ids"), 0), 4));
                expected = prompt + "," + TokenIds.join(TokenIds.row(gold.get("greedy_tokens"), 0));
            }
            Cli.Result r = Cli.run("generate", "--model", dir.toString(), "--input-ids", prompt, "--max-new-tokens", "6");
            assertEquals(0, r.rc(), r.toString());
            assertEquals(expected + "\n", r.out(), name);
        }
    }

    @Test
    void aRaggedBatchGivesEachRowWhatItGetsAlone(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 5);
        Cli.Result both = Cli.run("generate", "--model", model.toString(), "--input-ids", "1,2,3,4;9,8",
                "--max-new-tokens", "5");
        Cli.Result a = Cli.run("generate", "--model", model.toString(), "--input-ids", "1,2,3,4", "--max-new-tokens", "5");
        Cli.Result b = Cli.run("generate", "--model", model.toString(), "--input-ids", "9,8", "--max-new-tokens", "5");
        assertEquals(0, both.rc(), both.toString());
        assertEquals(a.out() + b.out(), both.out());
    }

    @Test
    void seededSamplingIsReproducibleAndTheSeedMatters(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 5);
        String m = model.toString();
        Cli.Result x = Cli.run("generate", "--model", m, "--input-ids", "1,2", "--max-new-tokens", "12", "--do-sample",
                "--seed", "7", "--temperature", "2.0");
        Cli.Result y = Cli.run("generate", "--model", m, "--input-ids", "1,2", "--max-new-tokens", "12", "--do-sample",
                "--seed", "7", "--temperature", "2.0");
        assertEquals(0, x.rc(), x.toString());
        assertEquals(x.out(), y.out());
        boolean anyDiffers = false;
        for (int seed = 8; seed < 12 && !anyDiffers; seed++) {
            Cli.Result z = Cli.run("generate", "--model", m, "--input-ids", "1,2", "--max-new-tokens", "12",
                    "--do-sample", "--seed", Integer.toString(seed), "--temperature", "2.0");
            anyDiffers = !z.out().equals(x.out());
        }
        assertTrue(anyDiffers, "other seeds, other samples");
    }

    @Test
    void samplingOptionsWithoutDoSampleAreAUsageError(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 5);
        Cli.Result r = Cli.run("generate", "--model", model.toString(), "--input-ids", "1,2", "--seed", "3");
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("--do-sample"), r.toString());
        assertNotEquals("", r.err());
        assertEquals("", r.out());
    }
}
