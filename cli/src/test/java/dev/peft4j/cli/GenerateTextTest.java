package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.Generation;
import dev.peft4j.tokenizers.Tokenizer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code peft4j generate --prompt}: text in through the model folder's tokenizer.json, text out. */
class GenerateTextTest {
    private static long[] ids(String line) {
        assertTrue(line.startsWith("ids: "), line);
        return Arrays.stream(line.substring("ids: ".length()).split(",")).mapToLong(Long::parseLong).toArray();
    }

    @Test
    void aPromptIsEncodedGeneratedFromAndDecodedBack(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 5);
        Cli.Result r = Cli.run("generate", "--model", model.toString(), "--prompt", "hello world",
                "--max-new-tokens", "6", "--print-ids");
        assertEquals(0, r.rc(), r.toString());
        String[] lines = r.out().split("\n", -1);
        assertEquals(3, lines.length, "the text, the ids, and the final newline: " + r.out());
        assertEquals("", lines[2]);
        long[] printed = ids(lines[1]);

        long[] expected;
        String expectedText;
        try (Tokenizer t = Tokenizer.fromPretrained(model).orElseThrow(); PointerScope s = new PointerScope();
                CausalLM lm = AutoModel.causalLM(model, ScalarType.Float)) {
            long[] prompt = t.encode("hello world");
            assertArrayEquals(new long[] {1, 41, 46}, prompt, "<s> ▁hello ▁world: see the fixture's PROVENANCE.md");
            Tensor out = Generation.generate(lm, TokenIds.rectangular(new long[][] {prompt}), null,
                    Generation.Options.greedy(6));
            expected = TokenIds.row(out, 0);
            expectedText = t.decode(expected, true);
        }
        assertEquals(9, expected.length);
        assertArrayEquals(expected, printed, "the ids printed: the encoded prompt, then generate's 6 new ids");
        assertEquals(expectedText, lines[0], "the text printed: the tokenizer's decode of those ids");
        assertTrue(lines[0].startsWith("hello world") && lines[0].length() > "hello world".length(), lines[0]);

        Cli.Result plain = Cli.run("generate", "--model", model.toString(), "--prompt", "hello world",
                "--max-new-tokens", "6");
        assertEquals(0, plain.rc(), plain.toString());
        assertEquals(lines[0] + "\n", plain.out(), "without --print-ids: the text alone");

        // the same prompt as ids: the same generation
        Cli.Result asIds = Cli.run("generate", "--model", model.toString(), "--input-ids", "1,41,46",
                "--max-new-tokens", "6");
        assertEquals(TokenIds.join(expected) + "\n", asIds.out());
    }

    @Test
    void withoutSpecialTokensThePromptHasNoBos(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 5);
        Cli.Result r = Cli.run("generate", "--model", model.toString(), "--prompt", "hello world",
                "--no-add-special-tokens", "--max-new-tokens", "2", "--print-ids");
        assertEquals(0, r.rc(), r.toString());
        long[] printed = ids(r.out().split("\n")[1]);
        assertArrayEquals(new long[] {41, 46}, Arrays.copyOf(printed, 2));
        assertEquals(4, printed.length);
    }

    @Test
    void eachPromptIsARowAndARaggedBatchGivesWhatEachGetsAlone(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 5);
        String m = model.toString();
        Cli.Result both = Cli.run("generate", "--model", m, "--prompt", "the low rank adapter", "--prompt", "café",
                "--max-new-tokens", "4", "--print-ids");
        Cli.Result a = Cli.run("generate", "--model", m, "--prompt", "the low rank adapter", "--max-new-tokens", "4",
                "--print-ids");
        Cli.Result b = Cli.run("generate", "--model", m, "--prompt", "café", "--max-new-tokens", "4", "--print-ids");
        assertEquals(0, both.rc(), both.toString());
        assertEquals(a.out() + b.out(), both.out());
        assertTrue(b.out().startsWith("café"), b.out());
    }

    @Test
    void aPromptWithoutTokenizerJsonIsAUsageErrorPointingToInputIds(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 5);
        Cli.Result r = Cli.run("generate", "--model", model.toString(), "--prompt", "hello");
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().startsWith("peft4j generate: --prompt needs a tokenizer, and " + model
                + " has no tokenizer.json: give the prompt as token ids with --input-ids"), r.toString());
        assertEquals("", r.out());
    }

    @Test
    void promptAndInputIdsAreAlternatives(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 5);
        String m = model.toString();
        Cli.Result both = Cli.run("generate", "--model", m, "--prompt", "hello", "--input-ids", "1,2");
        assertEquals(2, both.rc(), both.toString());
        assertTrue(both.err().contains("--prompt and --input-ids are alternatives"), both.toString());
        Cli.Result neither = Cli.run("generate", "--model", m);
        assertEquals(2, neither.rc(), neither.toString());
        assertTrue(neither.err().contains("--prompt TEXT") && neither.err().contains("--input-ids"), neither.toString());
        Cli.Result idsWithPrintIds = Cli.run("generate", "--model", m, "--input-ids", "1,2", "--print-ids");
        assertEquals(2, idsWithPrintIds.rc(), idsWithPrintIds.toString());
        assertTrue(idsWithPrintIds.err().contains("--print-ids applies to --prompt"), idsWithPrintIds.toString());
        Cli.Result empty = Cli.run("generate", "--model", m, "--prompt", "", "--no-add-special-tokens");
        assertEquals(2, empty.rc(), empty.toString());
        assertTrue(empty.err().contains("encodes to no tokens"), empty.toString());
    }

    @Test
    void aMalformedTokenizerJsonIsAnErrorNamingIt(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 5);
        Files.writeString(model.resolve("tokenizer.json"), "{\"version\": \"1.0\"}");
        Cli.Result r = Cli.run("generate", "--model", model.toString(), "--prompt", "hello");
        assertEquals(1, r.rc(), r.toString());
        assertTrue(r.err().startsWith("peft4j generate: " + model.resolve("tokenizer.json") + ": not a valid tokenizer: "),
                r.toString());
        assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
    }

    @Test
    void aTokenizerWhoseIdsTheModelLacksIsAnError(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 5);
        // the llama fixture with <s> moved to id 100, beyond the tiny model's 64
        ObjectMapper om = new ObjectMapper();
        ObjectNode json = (ObjectNode) om.readTree(Cli.resource("tokenizers/llama-bpe/tokenizer.json").toFile());
        ((ObjectNode) json.get("added_tokens").get(1)).put("id", 100);
        ((ObjectNode) json.at("/model/vocab")).put("<s>", 100);
        ((ArrayNode) json.at("/post_processor/special_tokens/<s>/ids")).set(0, 100);
        om.writeValue(model.resolve("tokenizer.json").toFile(), json);
        Cli.Result r = Cli.run("generate", "--model", model.toString(), "--prompt", "hello");
        assertEquals(1, r.rc(), r.toString());
        assertTrue(r.err().contains(model.resolve("tokenizer.json") + " does not fit the model")
                && r.err().contains("vocab_size 64"), r.toString());
    }

    @Test
    void theTextStopsAtTheFirstEos() {
        assertArrayEquals(new long[] {1, 5, 9, 2}, GenerateCommand.throughFirstEos(new long[] {1, 5, 9, 2, 2, 2}, 2, 2));
        assertArrayEquals(new long[] {2, 5, 9}, GenerateCommand.throughFirstEos(new long[] {2, 5, 9}, 1, 2),
                "an eos in the prompt does not count");
        assertArrayEquals(new long[] {1, 5, 2, 2}, GenerateCommand.throughFirstEos(new long[] {1, 5, 2, 2}, 2, -1));
    }
}
