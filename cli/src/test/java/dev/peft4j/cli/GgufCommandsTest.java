package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.config.TaskType;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.atomic.AtomicReference;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --gguf FILE} in {@code serve}, {@code train}, {@code merge} and {@code export-gguf}: each gives what the same
 * command gives on the Hugging Face folder the float32 GGUF was exported from (bit for bit where the computation is
 * the same), while {@code --model}, where given, names a different model whose weights must not be used (only its
 * tokenizer.json); a Q8_0 GGUF trains (QLoRA) and refuses a merge as {@code --quantize} does.
 */
class GgufCommandsTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @Test
    void serveOnAGgufServesItsWeightsWithTheTokenizerOfModel(@TempDir Path tmp) throws Exception {
        Path folder = TinyModels.llama(tmp.resolve("tiny"), 31);
        Path other = TinyModels.llamaWithTokenizer(tmp.resolve("other"), 32); // tokenizer only
        Path adapter = TinyModels.loraAdapter(tmp.resolve("lora"), false);
        Path gguf = export(folder, tmp.resolve("tiny31.gguf"));
        Cli.Result expected = Cli.run("generate", "--model", folder.toString(), "--adapter", adapter.toString(),
                "--input-ids", "1,2,3", "--max-new-tokens", "4", "--ignore-eos");
        assertEquals(0, expected.rc(), expected.toString());
        AtomicReference<Cli.Result> result = new AtomicReference<>();
        Thread t = new Thread(() -> result.set(Cli.run("serve", "--gguf", gguf.toString(), "--model", other.toString(),
                "--adapter", adapter + "=support", "--port", "0", "--max-length", "64", "--threads", "1")));
        t.start();
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (ServeCommand.RUNNING.isEmpty() && t.isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertTrue(!ServeCommand.RUNNING.isEmpty(), "not started: " + result.get());
        int port = ServeCommand.RUNNING.keySet().iterator().next();
        try {
            HttpClient http = HttpClient.newHttpClient();
            JsonNode models = JSON.readTree(http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port
                    + "/v1/models")).build(), HttpResponse.BodyHandlers.ofString()).body());
            assertEquals("tiny31", models.get("data").get(0).get("id").asText(), "the base is named after the file");
            JsonNode ids = complete(http, port, "{\"model\": \"support\", \"prompt\": [1, 2, 3], \"max_tokens\": 4, "
                    + "\"temperature\": 0, \"ignore_eos\": true}").get("choices").get(0).get("token_ids");
            StringBuilder got = new StringBuilder("1,2,3");
            ids.forEach(id -> got.append(',').append(id.asLong()));
            assertEquals(expected.out().trim(), got.toString(), "the GGUF's weights (model 31), with the LoRA");
            JsonNode text = complete(http, port, "{\"model\": \"tiny31\", \"prompt\": \"hello\", \"max_tokens\": 2, "
                    + "\"temperature\": 0, \"ignore_eos\": true}");
            assertEquals(2, text.get("choices").get(0).get("token_ids").size(), "text through --model's tokenizer");
        } finally {
            ServeCommand.RUNNING.get(port).countDown();
            t.join(60_000);
        }
        assertEquals(0, result.get().rc(), result.get().toString());
        assertTrue(result.get().out().contains(gguf + " with 1 adapter(s)"), result.get().toString());
    }

    @Test
    void trainOnAGgufTrainsTheFoldersAdapterAndOnQ8ZeroAQLora(@TempDir Path tmp) throws Exception {
        Path folder = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 31);
        Path other = TinyModels.llamaWithTokenizer(tmp.resolve("other"), 32); // tokenizer only
        Path gguf = export(folder, tmp.resolve("tiny31.gguf"));
        Path data = tmp.resolve("data.txt");
        Files.writeString(data, "hello world the adapter is a low rank adapter\n".repeat(8));
        String[] common = {"train", "--data", data.toString(), "--seq-len", "16", "--batch-size", "2", "--lr",
            "1e-2", "--lora-dropout", "0", "--threads", "1"};
        Cli.Result a = Cli.run(GgufOptionTest.concat(common, new String[] {"--max-steps", "4", "--model",
            folder.toString(), "--out",
            tmp.resolve("a").toString()}));
        assertEquals(0, a.rc(), a.toString());
        Cli.Result b = Cli.run(GgufOptionTest.concat(common, new String[] {"--max-steps", "4", "--gguf",
            gguf.toString(), "--model",
            other.toString(), "--out", tmp.resolve("b").toString()}));
        assertEquals(0, b.rc(), b.toString());
        assertArrayEquals(Files.readAllBytes(tmp.resolve("a/adapter_model.safetensors")),
                Files.readAllBytes(tmp.resolve("b/adapter_model.safetensors")),
                "trained on the GGUF: the adapter trained on the folder it came from, bit for bit");
        assertArrayEquals(loss(a.out()), loss(b.out()));
        // a Q8_0 base: its projections stay quantized and the LoRA trains on top
        Path q8 = TinyGguf.q8(gguf, tmp.resolve("tiny31-q8_0.gguf"));
        Cli.Result q = Cli.run(GgufOptionTest.concat(common, new String[] {"--gguf", q8.toString(), "--model",
            other.toString(), "--out", tmp.resolve("q").toString(), "--max-steps", "12"}));
        assertEquals(0, q.rc(), q.toString());
        double[] lq = loss(q.out());
        assertTrue(lq[1] < 0.9 * lq[0], "QLoRA on the Q8_0 GGUF lowers the loss: " + q.out());
        assertTrue(Math.abs(lq[0] - loss(a.out())[0]) > 1e-6, "the Q8_0 blocks are not the float32 weights");
        // without --model there is no tokenizer to read --data with
        Cli.Result none = Cli.run(GgufOptionTest.concat(common, new String[] {"--gguf", gguf.toString(), "--out",
            tmp.resolve("c").toString()}));
        assertEquals(2, none.rc(), none.toString());
        assertTrue(none.err().contains("vocabulary is not read"), none.err());
    }

    @Test
    void mergeIntoAFloatGgufWritesTheFoldersMergeAndAQuantizedOneIsRefused(@TempDir Path tmp) throws Exception {
        // every projection's input a multiple of 32 wide, so --quantize int8 takes the model as the Q8_0 GGUF has it
        Path folder = llama(tmp.resolve("tiny"), 31, TinyModels.TINY_LLAMA.replace("\"intermediate_size\": 48",
                "\"intermediate_size\": 64"));
        Path adapter = TinyModels.loraAdapter(tmp.resolve("lora"), false);
        Path gguf = export(folder, tmp.resolve("tiny31.gguf"));
        Cli.Result r = Cli.run("merge", "--model", folder.toString(), "--adapter", adapter.toString(), "--out",
                tmp.resolve("m-folder").toString());
        assertEquals(0, r.rc(), r.toString());
        r = Cli.run("merge", "--gguf", gguf.toString(), "--adapter", adapter.toString(), "--out",
                tmp.resolve("m-gguf").toString());
        assertEquals(0, r.rc(), r.toString());
        try (PointerScope s = new PointerScope();
                SafetensorsFile a = SafetensorsFile.open(tmp.resolve("m-folder/model.safetensors"));
                SafetensorsFile b = SafetensorsFile.open(tmp.resolve("m-gguf/model.safetensors"))) {
            assertEquals(a.names(), b.names());
            for (String n : a.names()) {
                assertEquals(0f, LogitsCommandTest.maxAbsDiff(a.get(n), b.get(n)), n + ": merged as on the folder");
            }
        }
        try (PointerScope s = new PointerScope();
                SafetensorsFile a = SafetensorsFile.open(tmp.resolve("m-folder/model.safetensors"));
                SafetensorsFile base = SafetensorsFile.open(folder.resolve("model.safetensors"))) {
            assertTrue(LogitsCommandTest.maxAbsDiff(a.get("model.layers.0.self_attn.q_proj.weight"),
                    base.get("model.layers.0.self_attn.q_proj.weight")) > 0, "the merge changed q_proj");
        }
        // a Q8_0 GGUF: refused as a merge into a --quantize base is
        Path q8 = TinyGguf.q8(gguf, tmp.resolve("tiny31-q8_0.gguf"));
        Cli.Result quantized = Cli.run("merge", "--model", folder.toString(), "--quantize", "int8", "--adapter",
                adapter.toString(), "--out", tmp.resolve("m-q").toString());
        Cli.Result fromGguf = Cli.run("merge", "--gguf", q8.toString(), "--adapter", adapter.toString(), "--out",
                tmp.resolve("m-q8").toString());
        assertEquals(1, fromGguf.rc(), fromGguf.toString());
        assertTrue(fromGguf.err().contains("its base layer is quantized (q8_0)"), fromGguf.err());
        assertEquals(quantized.err(), fromGguf.err(), "the --quantize merge's refusal");
        assertTrue(!Files.exists(tmp.resolve("m-q8/model.safetensors")), "nothing written");
    }

    @Test
    void exportGgufWritesAnAdapterAgainstAGgufBase(@TempDir Path tmp) throws Exception {
        Path folder = TinyModels.llama(tmp.resolve("tiny"), 31);
        Path adapter = TinyModels.loraAdapter(tmp.resolve("lora"), false);
        Path gguf = export(folder, tmp.resolve("tiny31.gguf"));
        Path q8 = TinyGguf.q8(gguf, tmp.resolve("tiny31-q8_0.gguf"));
        Cli.Result r = Cli.run("export-gguf", "--model", folder.toString(), "--adapter", adapter.toString(),
                "--adapter-out", tmp.resolve("from-folder.gguf").toString(), "--outtype", "f32");
        assertEquals(0, r.rc(), r.toString());
        byte[] expected = Files.readAllBytes(tmp.resolve("from-folder.gguf"));
        for (Path base : new Path[] {gguf, q8}) {
            Path out = tmp.resolve("from-" + base.getFileName());
            r = Cli.run("export-gguf", "--gguf", base.toString(), "--adapter", adapter.toString(), "--adapter-out",
                    out.toString());
            assertEquals(0, r.rc(), r.toString());
            assertEquals(out + ": LoRA adapter, 8 tensors, f32, " + expected.length + " bytes\n", r.out());
            assertArrayEquals(expected, Files.readAllBytes(out), base + ": the folder's export, byte for byte");
        }
        r = Cli.run("export-gguf", "--gguf", gguf.toString(), "--adapter", adapter.toString(), "--adapter-out",
                tmp.resolve("bf16.gguf").toString(), "--outtype", "bf16");
        assertEquals(0, r.rc(), r.toString());
        assertTrue(r.out().contains(", bf16, "), r.out());
        // what does not apply
        r = Cli.run("export-gguf", "--gguf", gguf.toString(), "--out", tmp.resolve("again.gguf").toString());
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("is one already"), r.err());
        r = Cli.run("export-gguf", "--gguf", gguf.toString(), "--model", folder.toString(), "--adapter",
                adapter.toString(), "--adapter-out", tmp.resolve("x.gguf").toString());
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("--gguf and --model are alternatives"), r.err());
        // a LoRA on lm_head against a base whose head is tied to token_embd (no output.weight): named
        Path tied = llama(tmp.resolve("tied"), 7, TinyModels.TINY_LLAMA.replace("\"tie_word_embeddings\": false",
                "\"tie_word_embeddings\": true"));
        Path tiedGguf = export(tied, tmp.resolve("tied.gguf"));
        Path head = tmp.resolve("head-lora");
        PeftConfigs.write(LoraConfig.builder().r(2).loraAlpha(4).targetModules("lm_head")
                .taskType(TaskType.CAUSAL_LM).build(), head);
        try (PointerScope s = new PointerScope(); TensorOptions o = new TensorOptions(ScalarType.Float)) {
            SafetensorsFile.write(head.resolve("adapter_model.safetensors"), Map.of(
                    "base_model.model.lm_head.lora_A.weight", torch.randn(new long[] {2, 32}, o),
                    "base_model.model.lm_head.lora_B.weight", torch.randn(new long[] {64, 2}, o)));
        }
        r = Cli.run("export-gguf", "--gguf", tiedGguf.toString(), "--adapter", head.toString(), "--adapter-out",
                tmp.resolve("head.gguf").toString());
        assertEquals(1, r.rc(), r.toString());
        assertTrue(r.err().contains("module lm_head adapts output.weight, which the base " + tiedGguf + " has not"),
                r.err());
        assertTrue(!Files.exists(tmp.resolve("head.gguf")));
    }

    /** A Llama folder of {@code config} with seeded N(0, 0.3) weights. */
    static Path llama(Path dir, long seed, String config) throws java.io.IOException {
        try (PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(config), Init.cpu(ScalarType.Float))) {
            Init.normal(m, 0.3, seed);
            m.savePretrained(dir);
        }
        return dir;
    }

    static Path export(Path folder, Path gguf) {
        Cli.Result r = Cli.run("export-gguf", "--model", folder.toString(), "--out", gguf.toString(), "--outtype",
                "f32");
        assertEquals(0, r.rc(), r.toString());
        return gguf;
    }

    private static JsonNode complete(HttpClient http, int port, String body) throws Exception {
        HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port
                + "/v1/completions")).POST(HttpRequest.BodyPublishers.ofString(body)).build(),
                HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode(), r.body());
        return JSON.readTree(r.body());
    }

    private static double[] loss(String out) {
        Matcher m = Pattern.compile("loss on the data ([0-9.]+) -> ([0-9.]+)").matcher(out);
        assertTrue(m.find(), out);
        return new double[] {Double.parseDouble(m.group(1)), Double.parseDouble(m.group(2))};
    }
}
