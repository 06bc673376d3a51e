package dev.peft4j.gguf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.kernels.Quantization;
import dev.peft4j.kernels.QuantizedWeight;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.QuantizedLinear;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.function.Function;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.ShortPointer;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link GgufModels#fromGguf}: a tiny Llama exported to GGUF loads back with the logits of the Hugging Face folder
 * (float32 and bfloat16 exactly, tied embeddings too); a GGUF holding Q8_0 / Q4_0 blocks loads into a model whose
 * logits equal, bit for bit, the same model quantized at load; a PEFT LoRA loads on top; bad files and unsupported
 * models are refused naming the file and the tensor or key.
 */
class GgufModelsTest {
    @TempDir
    static Path tmp;
    static Path model;
    static Path lora;
    static Path f32;
    static Tensor ids;

    @BeforeAll
    static void fixtures() throws IOException {
        model = GgufFixtures.llama(tmp.resolve("model"), 21);
        lora = GgufFixtures.lora(tmp.resolve("lora"), 22);
        f32 = GgufExport.exportModel(model, tmp.resolve("model-f32.gguf"), GgufExport.OutType.F32).file();
        long[] t = new long[2 * 12];
        for (int i = 0; i < t.length; i++) {
            t[i] = (5 + 29L * i) % GgufFixtures.VOCAB;
        }
        ids = torch.tensor(t).view(2, 12);
    }

    static Tensor logits(PreTrainedModel m) {
        try (NoGradGuard g = new NoGradGuard()) {
            return ((CausalLM) m).forward(ids, null, null, null).to(ScalarType.Float);
        }
    }

    static void assertBitEqual(Tensor expected, Tensor got, String what) {
        assertEquals(expected.scalar_type().intern(), got.scalar_type().intern(), what);
        assertTrue(torch.equal(expected, got), what + ": max |diff| " + maxDiff(expected, got));
    }

    static double maxDiff(Tensor a, Tensor b) {
        return a.sub(b).abs().max().item_double();
    }

    @Test
    void float32ExportLoadsBackExactly() throws IOException {
        try (PreTrainedModel hf = AutoModel.fromPretrained(model, ScalarType.Float);
                PreTrainedModel gg = GgufModels.fromGguf(f32, ScalarType.Float)) {
            assertInstanceOf(CausalLM.class, gg);
            assertEquals(GgufFixtures.VOCAB, gg.config().getLong("vocab_size"));
            assertEquals(GgufFixtures.KV_HEADS, gg.config().getLong("num_key_value_heads"));
            assertEquals(1e-5, gg.config().getDouble("rms_norm_eps", 0), 0.0);
            assertEquals(256, gg.config().getLong("max_position_embeddings"));
            // every weight as in the folder: the q / k permutation undone
            Map<String, Tensor> want = hf.stateDict();
            Map<String, Tensor> got = gg.stateDict();
            assertEquals(want.keySet(), got.keySet());
            for (String k : want.keySet()) {
                assertBitEqual(want.get(k), got.get(k), k);
            }
            assertBitEqual(logits(hf), logits(gg), "float32 logits");
        }
    }

    @Test
    void bfloat16AndTiedEmbeddingsLoadExactly() throws IOException {
        Path bf16 = GgufExport.exportModel(model, tmp.resolve("model-bf16.gguf"), GgufExport.OutType.BF16).file();
        try (PreTrainedModel hf = AutoModel.fromPretrained(model, ScalarType.BFloat16);
                PreTrainedModel gg = GgufModels.fromGguf(bf16, ScalarType.BFloat16)) {
            assertBitEqual(logits(hf), logits(gg), "bfloat16 logits");
        }
        Path tiedDir = GgufFixtures.llama(tmp.resolve("tied"), 23, ", \"tie_word_embeddings\": true");
        Path tied = GgufExport.exportModel(tiedDir, tmp.resolve("tied.gguf"), GgufExport.OutType.F32).file();
        try (GgufFile g = GgufFile.open(tied)) {
            assertTrue(!g.tensors().containsKey("output.weight"), "a tied export has no output tensor");
        }
        try (PreTrainedModel hf = AutoModel.fromPretrained(tiedDir, ScalarType.Float);
                PreTrainedModel gg = GgufModels.fromGguf(tied, ScalarType.Float)) {
            assertTrue(gg.config().getBoolean("tie_word_embeddings", false));
            assertBitEqual(logits(hf), logits(gg), "tied float32 logits");
        }
    }

    /**
     * A copy of the float32 GGUF {@code src} with the tensors {@code typeOf} names in Q8_0 / Q4_0 (quantized by our
     * quantizer, whose values and scales are ggml's, written as ggml's blocks) and those it maps to null left out.
     */
    static Path requantize(Path src, Path out, Function<String, GgufWriter.TensorType> typeOf) throws IOException {
        try (GgufFile g = GgufFile.open(src)) {
            GgufWriter w = new GgufWriter();
            for (Map.Entry<String, Object> e : g.metadata().entrySet()) {
                switch (g.valueType(e.getKey())) {
                    case 8 -> w.putString(e.getKey(), (String) e.getValue());
                    case 4 -> w.putUint32(e.getKey(), (Long) e.getValue());
                    case 6 -> w.putFloat32(e.getKey(), (Float) e.getValue());
                    default -> throw new IllegalStateException(e.getKey());
                }
            }
            for (GgufFile.TensorInfo t : g.tensors().values()) {
                GgufWriter.TensorType type = typeOf.apply(t.name());
                if (type == null) {
                    continue;
                }
                byte[] bytes;
                try (Tensor v = g.get(t.name())) {
                    bytes = type == GgufWriter.TensorType.F32 ? rawBytes(v) : blocks(v, type);
                }
                w.addTensor(t.name(), t.shape(), type, ch -> {
                    ByteBuffer b = ByteBuffer.wrap(bytes);
                    while (b.hasRemaining()) {
                        ch.write(b);
                    }
                });
            }
            w.write(out);
        }
        return out;
    }

    static byte[] rawBytes(Tensor t) {
        Tensor c = t.contiguous();
        byte[] out = new byte[(int) c.nbytes()];
        new BytePointer(c.data_ptr()).capacity(out.length).get(out);
        return out;
    }

    /** ggml's blocks of {@code w} ({@code [out, in]} float32): per row and block of 32, the fp16 scale, the values. */
    static byte[] blocks(Tensor w, GgufWriter.TensorType type) {
        Quantization q = type == GgufWriter.TensorType.Q8_0 ? Quantization.INT8 : Quantization.INT4;
        QuantizedWeight qw = QuantizedWeight.quantize(w.contiguous().view(-1, w.size(w.dim() - 1)), q);
        byte[] values = rawBytes(qw.values());
        short[] scales = new short[(int) (qw.outFeatures() * qw.inFeatures() / 32)];
        try (Tensor s = qw.scales()) {
            new ShortPointer(s.data_ptr()).capacity(scales.length).get(scales);
        }
        int per = (int) q.rowBytes(32);
        ByteBuffer out = ByteBuffer.allocate(scales.length * (2 + per)).order(ByteOrder.LITTLE_ENDIAN);
        for (int blk = 0; blk < scales.length; blk++) {
            out.putShort(scales[blk]);
            out.put(values, blk * per, per);
        }
        return out.array();
    }

    static GgufWriter.TensorType blockType(String name, GgufWriter.TensorType linears) {
        boolean linear = name.startsWith("blk.") && !name.endsWith("_norm.weight");
        return linear ? linears : GgufWriter.TensorType.F32;
    }

    /** The float32 model with each block Linear, and the head when {@code head} is set, quantized at load. */
    static PreTrainedModel quantizedAtLoad(Quantization blocks, Quantization head) throws IOException {
        PreTrainedModel m = AutoModel.fromPretrained(model, ScalarType.Float);
        AutoModel.quantize(m, blocks, head);
        return m;
    }

    @Test
    void q8BlocksLoadBitExactAsQuantizedAtLoad() throws IOException {
        Path q8 = requantize(f32, tmp.resolve("q8.gguf"), n -> n.equals("output.weight")
                ? GgufWriter.TensorType.Q8_0 : blockType(n, GgufWriter.TensorType.Q8_0));
        try (GgufFile g = GgufFile.open(q8)) {
            assertEquals("Q8_0", g.tensor("blk.1.attn_k.weight").typeName());
            assertEquals(34L * 64 / 32 * 32, g.tensor("blk.1.attn_k.weight").byteSize());
        }
        try (PreTrainedModel ref = quantizedAtLoad(Quantization.INT8, Quantization.INT8);
                PreTrainedModel gg = GgufModels.fromGguf(q8, ScalarType.Float)) {
            QuantizedLinear k = (QuantizedLinear) gg.getSubmodule("model.layers.1.self_attn.k_proj");
            assertEquals(Quantization.INT8, k.format());
            assertInstanceOf(QuantizedLinear.class, gg.getSubmodule("lm_head"));
            // the blocks as the quantizer made them, rows back in the Hugging Face order
            for (String name : new String[] {"model.layers.1.self_attn.k_proj", "model.layers.0.self_attn.q_proj",
                    "model.layers.0.mlp.down_proj", "lm_head"}) {
                QuantizedLinear a = (QuantizedLinear) ref.getSubmodule(name);
                QuantizedLinear b = (QuantizedLinear) gg.getSubmodule(name);
                assertBitEqual(a.weight().panels(), b.weight().panels(), name + " panels");
                assertBitEqual(a.weight().panelScales(), b.weight().panelScales(), name + " scales");
            }
            assertBitEqual(logits(ref), logits(gg), "Q8_0 logits");
        }
    }

    @Test
    void q4BlocksAndAQuantizedEmbeddingLoadBitExact() throws IOException {
        Path q4 = requantize(f32, tmp.resolve("q4.gguf"), n -> n.equals("token_embd.weight")
                ? GgufWriter.TensorType.Q8_0 : blockType(n, GgufWriter.TensorType.Q4_0));
        try (PreTrainedModel ref = quantizedAtLoad(Quantization.INT4, null);
                PreTrainedModel gg = GgufModels.fromGguf(q4, ScalarType.Float)) {
            // the reference's embedding: the Q8_0 blocks dequantized, as llama.cpp reads them
            Embedding e = (Embedding) ref.getSubmodule("model.embed_tokens");
            try (NoGradGuard ng = new NoGradGuard();
                    Tensor deq = QuantizedWeight.quantize(e.weight(), Quantization.INT8).dequantize(ScalarType.Float)) {
                assertTrue(maxDiff(deq, e.weight()) > 0, "the embedding's rounding is visible");
                e.weight().copy_(deq);
            }
            assertEquals(Quantization.INT4,
                    ((QuantizedLinear) gg.getSubmodule("model.layers.0.mlp.up_proj")).format());
            assertBitEqual(logits(ref), logits(gg), "Q4_0 logits");
        }
        // in bfloat16 the layers compute in bfloat16, as quantizing a bfloat16 model at load gives
        try (PreTrainedModel gg = GgufModels.fromGguf(q4, ScalarType.BFloat16)) {
            assertEquals(ScalarType.BFloat16,
                    ((QuantizedLinear) gg.getSubmodule("model.layers.0.mlp.up_proj")).dtype());
            assertTrue(torch.isfinite(logits(gg)).all().item_bool());
        }
        IllegalArgumentException half = assertThrows(IllegalArgumentException.class,
                () -> GgufModels.fromGguf(q4, ScalarType.Half));
        assertTrue(half.getMessage().contains("float32 or bfloat16"), half.getMessage());
    }

    @Test
    void aPeftLoraLoadsOnTop() throws IOException {
        Path q8 = requantize(f32, tmp.resolve("q8-lora.gguf"), n -> blockType(n, GgufWriter.TensorType.Q8_0));
        try (PreTrainedModel hf = AutoModel.fromPretrained(model, ScalarType.Float);
                PreTrainedModel gg = GgufModels.fromGguf(f32, ScalarType.Float);
                PreTrainedModel ref = quantizedAtLoad(Quantization.INT8, null);
                PreTrainedModel gq = GgufModels.fromGguf(q8, ScalarType.Float)) {
            Tensor hfBase = logits(hf);
            Tensor qBase = logits(gq);
            for (PreTrainedModel m : new PreTrainedModel[] {hf, gg, ref, gq}) {
                m.loadAdapter(lora);
            }
            Tensor hfLora = logits(hf);
            // float32 GGUF: the same model, so the same adapted logits
            assertBitEqual(hfLora, logits(gg), "float32 GGUF + LoRA");
            // Q8_0 GGUF: bit for bit the model quantized at load with the same LoRA
            Tensor qLora = logits(gq);
            assertBitEqual(logits(ref), qLora, "Q8_0 GGUF + LoRA");
            // and the LoRA moves the quantized model's logits as it moves the float model's: the two deltas agree
            // within the quantization's noise (int8 weights and activations through two layers: measured 2.6 % of
            // the delta's largest entry here, bounded at 5 %)
            Tensor floatDelta = hfLora.sub(hfBase);
            Tensor quantDelta = qLora.sub(qBase);
            double size = floatDelta.abs().max().item_double();
            assertTrue(size > 0.1, "the LoRA should change the logits: " + size);
            double diff = maxDiff(floatDelta, quantDelta);
            assertTrue(diff < 0.05 * size, "LoRA delta on Q8_0 differs by " + diff + " of " + size);
        }
    }

    // ---------------------------------------------------------------- refusals

    static Path patched(String name, java.util.function.Consumer<byte[]> edit) throws IOException {
        byte[] b = Files.readAllBytes(f32);
        edit.accept(b);
        return Files.write(tmp.resolve(name), b);
    }

    /** Where tensor {@code name}'s info stores its ggml type in {@code file}. */
    static int typeField(byte[] file, String name) {
        byte[] n = name.getBytes(StandardCharsets.US_ASCII);
        int at = indexOf(file, n, 0);
        while (file[at - 8] != n.length) {
            at = indexOf(file, n, at + 1);
        }
        int dims = ByteBuffer.wrap(file, at + n.length, 4).order(ByteOrder.LITTLE_ENDIAN).getInt();
        return at + n.length + 4 + 8 * dims;
    }

    static int indexOf(byte[] hay, byte[] needle, int from) {
        outer:
        for (int i = from; i <= hay.length - needle.length; i++) {
            for (int j = 0; j < needle.length; j++) {
                if (hay[i + j] != needle[j]) {
                    continue outer;
                }
            }
            return i;
        }
        throw new IllegalStateException("not found: " + new String(needle, StandardCharsets.UTF_8));
    }

    static void putInt(byte[] b, int at, int v) {
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putInt(at, v);
    }

    static String refused(Class<? extends Exception> type, Path file) {
        Exception e = assertThrows(type, () -> GgufModels.fromGguf(file, ScalarType.Float).close());
        assertTrue(e.getMessage().contains(file.toString()), "names the file: " + e.getMessage());
        return e.getMessage();
    }

    @Test
    void anUnsupportedTensorTypeIsRefusedNamingTheTensor() throws IOException {
        // I32 has F32's size, so the file stays well-formed: the loader refuses the type
        Path f = patched("i32.gguf", b -> putInt(b, typeField(b, "blk.1.ffn_up.weight"), 26));
        String m = refused(IllegalArgumentException.class, f);
        assertTrue(m.contains("blk.1.ffn_up.weight") && m.contains("I32") && m.contains("Q8_0"), m);
    }

    @Test
    void aQuantizedNormIsRefusedNamingIt() throws IOException {
        Path f = requantize(f32, tmp.resolve("q8-norm.gguf"), n -> n.equals("blk.0.ffn_norm.weight")
                ? GgufWriter.TensorType.Q8_0 : GgufWriter.TensorType.F32);
        String m = refused(IllegalArgumentException.class, f);
        assertTrue(m.contains("blk.0.ffn_norm.weight Q8_0 [64]") && m.contains("norm is not supported"), m);
    }

    @Test
    void otherArchitecturesAndAdaptersAreRefused() throws IOException {
        Path qwen = patched("qwen.gguf", b -> {
            int at = indexOf(b, "llama".getBytes(StandardCharsets.US_ASCII), 0);
            System.arraycopy("qwen2".getBytes(StandardCharsets.US_ASCII), 0, b, at, 5);
        });
        String m = refused(IllegalArgumentException.class, qwen);
        assertTrue(m.contains("general.architecture 'qwen2'"), m);
        Path adapter = GgufExport.exportAdapter(lora, model, tmp.resolve("lora.gguf"), GgufExport.OutType.F32).file();
        m = refused(IllegalArgumentException.class, adapter);
        assertTrue(m.contains("general.type 'adapter'"), m);
    }

    @Test
    void missingTensorsAreRefusedByName() throws IOException {
        Path f = requantize(f32, tmp.resolve("missing.gguf"),
                n -> n.equals("blk.1.ffn_down.weight") ? null : GgufWriter.TensorType.F32);
        String m = refused(IllegalArgumentException.class, f);
        assertTrue(m.contains("missing tensors [blk.1.ffn_down.weight]"), m);
    }

    @Test
    void malformedFilesAreRefusedNamingWhatBreaks() throws IOException {
        byte[] whole = Files.readAllBytes(f32);
        long dataOffset;
        try (GgufFile g = GgufFile.open(f32)) {
            dataOffset = g.dataOffset();
            assertEquals(3, g.version());
            assertEquals(32, g.alignment());
        }
        Path cutData = Files.write(tmp.resolve("cut-data.gguf"), Arrays.copyOf(whole, whole.length - 100));
        String m = refused(GgufFormatException.class, cutData);
        assertTrue(m.contains("tensor output_norm.weight") && m.contains("past the end of the file"), m);
        // cut inside the last tensor info (its dimensions)
        Path cutHeader = Files.write(tmp.resolve("cut-header.gguf"),
                Arrays.copyOf(whole, typeField(whole, "output_norm.weight") - 4));
        m = refused(GgufFormatException.class, cutHeader);
        assertTrue(m.contains("the file ends") && m.contains("the info of tensor output_norm.weight"), m);
        m = refused(GgufFormatException.class, patched("magic.gguf", b -> b[0] = 'X'));
        assertTrue(m.contains("magic is 'XGUF'"), m);
        m = refused(GgufFormatException.class, patched("version.gguf", b -> putInt(b, 4, 1)));
        assertTrue(m.contains("version 1"), m);
        m = refused(GgufFormatException.class, patched("type.gguf", b -> putInt(b, typeField(b, "blk.0.attn_q.weight"),
                99)));
        assertTrue(m.contains("tensor blk.0.attn_q.weight has unknown ggml type 99"), m);
        // an offset that does not follow the tensor before it (past the end, or overlapping)
        m = refused(GgufFormatException.class, patched("offset.gguf", b -> ByteBuffer.wrap(b)
                .order(ByteOrder.LITTLE_ENDIAN).putLong(typeField(b, "output_norm.weight") + 4, 1L << 40)));
        assertTrue(m.contains("tensor output_norm.weight has offset 1099511627776"), m);
        assertThrows(java.nio.file.NoSuchFileException.class,
                () -> GgufModels.fromGguf(tmp.resolve("absent.gguf"), ScalarType.Float));
    }
}
