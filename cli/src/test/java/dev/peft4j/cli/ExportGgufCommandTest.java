package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code peft4j export-gguf} on a tiny Llama and a LoRA adapter: what it prints, the files' GGUF headers, the output
 * type from the config, and its usage errors. The files' contents are checked by the library's tests
 * ({@code dev.peft4j.gguf}), which also run llama.cpp on them.
 */
class ExportGgufCommandTest {
    @TempDir
    static Path tmp;
    static Path model;
    static Path lora;

    @BeforeAll
    static void fixtures() throws Exception {
        model = TinyModels.llama(tmp.resolve("tiny"), 21);
        lora = TinyModels.loraAdapter(tmp.resolve("lora"), false, 3);
    }

    /** Magic, version, tensor count and key-value count of a GGUF file. */
    static long[] header(Path f) throws IOException {
        byte[] b = new byte[24];
        try (InputStream in = Files.newInputStream(f)) {
            assertEquals(24, in.readNBytes(b, 0, 24));
        }
        ByteBuffer bb = ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
        return new long[] {bb.getInt(), bb.getInt(), bb.getLong(), bb.getLong()};
    }

    static final long MAGIC = 0x46554747L; // "GGUF" read little-endian

    @Test
    void writesModelAndAdapter() throws Exception {
        Path m = tmp.resolve("m.gguf");
        Path a = tmp.resolve("a.gguf");
        Cli.Result r = Cli.run("export-gguf", "--model", model.toString(), "--out", m.toString(), "--adapter",
                lora.toString(), "--adapter-out", a.toString(), "--outtype", "bf16");
        assertEquals(0, r.rc(), r.toString());
        // 2 layers x 9 tensors + token_embd, output_norm, output
        assertTrue(r.out().contains(m + ": model, 21 tensors, bf16, " + Files.size(m) + " bytes"), r.out());
        // lora_a and lora_b of q_proj and v_proj in both layers
        assertTrue(r.out().contains(a + ": LoRA adapter, 8 tensors, bf16, " + Files.size(a) + " bytes"), r.out());
        assertEquals(MAGIC, header(m)[0]);
        assertEquals(3, header(m)[1]);
        assertEquals(21, header(m)[2]);
        assertEquals(8, header(a)[2]);
        try (var list = Files.list(tmp)) {
            assertFalse(list.anyMatch(p -> p.getFileName().toString().endsWith(".tmp")), "temporary file left");
        }
    }

    /** auto takes the config's torch_dtype: the tiny model says float32, so 4-byte elements. */
    @Test
    void autoTypeFollowsTheConfig() throws Exception {
        Path f32 = tmp.resolve("auto.gguf");
        Path bf16 = tmp.resolve("bf16.gguf");
        assertEquals(0, Cli.run("export-gguf", "--model", model.toString(), "--out", f32.toString()).rc());
        assertEquals(0, Cli.run("export-gguf", "--model", model.toString(), "--out", bf16.toString(),
                "--outtype", "bfloat16").rc());
        // token_embd 64x32 and output 32x64 and the 2x7 projections halve; the norms stay float32
        assertTrue(Files.size(f32) > 1.8 * Files.size(bf16), Files.size(f32) + " vs " + Files.size(bf16));
    }

    @Test
    void usageErrors() {
        String m = model.toString();
        String[][] cases = {
            {"nothing to write", "export-gguf", "--model", m},
            {"--adapter needs --adapter-out", "export-gguf", "--model", m, "--adapter", lora.toString()},
            {"--adapter-out needs --adapter", "export-gguf", "--model", m, "--adapter-out", "x.gguf"},
            {"--outtype: unsupported GGUF output type 'q4'", "export-gguf", "--model", m, "--out", "x.gguf",
                "--outtype", "q4"},
            {"is a folder", "export-gguf", "--model", m, "--out", tmp.toString()},
            {"no such folder", "export-gguf", "--model", m, "--adapter", tmp.resolve("none").toString(),
                "--adapter-out", "x.gguf"},
        };
        for (String[] c : cases) {
            String[] args = java.util.Arrays.copyOfRange(c, 1, c.length);
            Cli.Result r = Cli.run(args);
            assertEquals(2, r.rc(), r.toString());
            assertTrue(r.err().contains(c[0]), c[0] + " not in: " + r.err());
        }
    }

    /** A refused adapter (IA3) fails with the library's message naming the folder, and writes nothing. */
    @Test
    void refusesANonLoraAdapter() throws Exception {
        Path ia3 = Files.createDirectories(tmp.resolve("ia3"));
        dev.peft4j.config.PeftConfigs.write(dev.peft4j.config.IA3Config.builder().targetModules("q_proj")
                .feedforwardModules().build(), ia3);
        Path out = tmp.resolve("ia3.gguf");
        Cli.Result r = Cli.run("export-gguf", "--model", model.toString(), "--adapter", ia3.toString(),
                "--adapter-out", out.toString());
        assertEquals(1, r.rc(), r.toString());
        assertTrue(r.err().contains("peft_type IA3 cannot be exported to GGUF"), r.err());
        assertFalse(Files.exists(out));
    }
}
