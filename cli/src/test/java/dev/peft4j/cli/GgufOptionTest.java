package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.io.SafetensorsFile;
import java.nio.file.Path;
import org.bytedeco.javacpp.PointerScope;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --gguf FILE}: {@code logits} and {@code generate} on a model exported by {@code export-gguf} give what they
 * give on its Hugging Face folder (float32: bit for bit), with a LoRA too; text prompts take the tokenizer from
 * {@code --model}; what does not apply is refused.
 */
class GgufOptionTest {
    @Test
    void logitsAndGenerateOnAGgufEqualTheFolders(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 31);
        Path adapter = TinyModels.loraAdapter(tmp.resolve("lora"), false);
        Path gguf = tmp.resolve("tiny.gguf");
        Cli.Result r = Cli.run("export-gguf", "--model", model.toString(), "--out", gguf.toString(), "--outtype",
                "f32");
        assertEquals(0, r.rc(), r.toString());
        for (boolean withLora : new boolean[] {false, true}) {
            Path a = tmp.resolve("folder" + withLora + ".safetensors");
            Path b = tmp.resolve("gguf" + withLora + ".safetensors");
            String[] lora = withLora ? new String[] {"--adapter", adapter.toString()} : new String[0];
            r = Cli.run(concat(new String[] {"logits", "--model", model.toString(), "--input-ids", "1,2,3;4,5,63",
                "--out", a.toString()}, lora));
            assertEquals(0, r.rc(), r.toString());
            r = Cli.run(concat(new String[] {"logits", "--gguf", gguf.toString(), "--input-ids", "1,2,3;4,5,63",
                "--out", b.toString()}, lora));
            assertEquals(0, r.rc(), r.toString());
            try (PointerScope s = new PointerScope(); SafetensorsFile fa = SafetensorsFile.open(a);
                    SafetensorsFile fb = SafetensorsFile.open(b)) {
                assertEquals(0f, LogitsCommandTest.maxAbsDiff(fa.get("logits"), fb.get("logits")),
                        (withLora ? "with the LoRA: " : "") + "the GGUF's logits are the folder's, bit for bit");
            }
        }
        Cli.Result fromFolder = Cli.run("generate", "--model", model.toString(), "--input-ids", "1,2,3",
                "--max-new-tokens", "5");
        Cli.Result fromGguf = Cli.run("generate", "--gguf", gguf.toString(), "--input-ids", "1,2,3",
                "--max-new-tokens", "5");
        assertEquals(0, fromGguf.rc(), fromGguf.toString());
        assertEquals(fromFolder.out(), fromGguf.out());
        assertTrue(fromGguf.out().startsWith("1,2,3,"), fromGguf.out());
        // text: the tokenizer comes from --model, the weights from --gguf
        Cli.Result textFolder = Cli.run("generate", "--model", model.toString(), "--prompt", "hello",
                "--max-new-tokens", "4");
        Cli.Result textGguf = Cli.run("generate", "--gguf", gguf.toString(), "--model", model.toString(), "--prompt",
                "hello", "--max-new-tokens", "4");
        assertEquals(0, textGguf.rc(), textGguf.toString());
        assertEquals(textFolder.out(), textGguf.out());
    }

    @Test
    void whatDoesNotApplyIsRefused(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 32);
        Path gguf = tmp.resolve("tiny.gguf");
        assertEquals(0, Cli.run("export-gguf", "--model", model.toString(), "--out", gguf.toString()).rc());
        Cli.Result r = Cli.run("generate", "--gguf", gguf.toString(), "--prompt", "hello");
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("vocabulary is not read") && r.err().contains("tokenizer.json"), r.err());
        r = Cli.run("logits", "--gguf", gguf.toString(), "--quantize", "int8", "--input-ids", "1", "--out",
                tmp.resolve("x.safetensors").toString());
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("--quantize and --quantize-head do not apply"), r.err());
        // the one model-loading path of every command that loads a model
        r = Cli.run("train", "--gguf", gguf.toString(), "--quantize", "int4", "--data", model.resolve("config.json")
                .toString(), "--out", tmp.resolve("a").toString());
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("--quantize and --quantize-head do not apply"), r.err());
        r = Cli.run("bench", "--gguf", gguf.toString());
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("Unknown options: '--gguf'"), r.err());
        r = Cli.run("logits", "--input-ids", "1", "--out", tmp.resolve("y.safetensors").toString());
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("Missing required option: '--model=<dir>'"), r.err());
        // a file that is not a GGUF: the reader's message, naming it
        r = Cli.run("logits", "--gguf", model.resolve("config.json").toString(), "--input-ids", "1", "--out",
                tmp.resolve("z.safetensors").toString());
        assertTrue(r.rc() != 0 && r.err().contains("config.json: malformed GGUF: the magic is"), r.toString());
    }

    static String[] concat(String[] a, String[] b) {
        String[] out = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
