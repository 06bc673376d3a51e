package dev.peft4j.gguf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.io.SafetensorsFile;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.javacpp.ShortPointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What {@link GgufExport} writes, read back by the spec reader: llama.cpp's metadata keys and values, tensor names,
 * GGUF dims, the q / k row permutation (checked element by element against the formula), the element types and
 * their values, the LoRA pair layout and scaling, and what is refused.
 */
class GgufExportTest {
    @TempDir
    static Path tmp;
    static Path model;
    static Path lora;

    @BeforeAll
    static void fixtures() throws IOException {
        model = GgufFixtures.llama(tmp.resolve("model"), 5);
        lora = GgufFixtures.lora(tmp.resolve("lora"), 6);
    }

    static float[] floats(Tensor t) {
        Tensor c = t.to(ScalarType.Float).contiguous();
        float[] out = new float[(int) c.numel()];
        new FloatPointer(c.data_ptr()).get(out);
        return out;
    }

    static Map<String, float[]> hf(Path file) throws IOException {
        Map<String, float[]> out = new LinkedHashMap<>();
        try (PointerScope s = new PointerScope(); SafetensorsFile f = SafetensorsFile.open(file)) {
            for (String n : f.names()) {
                out.put(n, floats(f.get(n)));
            }
        }
        return out;
    }

    /** Row {@code i} of llama.cpp's layout is row {@code h·d + (i mod d mod 2)·d/2 + (i mod d)/2} of transformers'. */
    static float[] permuteRows(float[] w, int rows, int cols, int heads) {
        int d = rows / heads;
        float[] out = new float[w.length];
        for (int i = 0; i < rows; i++) {
            int h = i / d;
            int within = i % d;
            int src = h * d + (within % 2) * (d / 2) + within / 2;
            System.arraycopy(w, src * cols, out, i * cols, cols);
        }
        return out;
    }

    @Test
    void modelMetadata() throws IOException {
        Path f = GgufExport.exportModel(model, tmp.resolve("meta.gguf"), GgufExport.OutType.F32).file();
        GgufReader r = new GgufReader(f);
        assertEquals("llama", r.kv.get("general.architecture"));
        assertEquals("model", r.kv.get("general.type"));
        assertEquals(0L, r.kv.get("general.file_type"));
        assertEquals(2L, r.kv.get("llama.block_count"));
        assertEquals(256L, r.kv.get("llama.context_length"));
        assertEquals(64L, r.kv.get("llama.embedding_length"));
        assertEquals(96L, r.kv.get("llama.feed_forward_length"));
        assertEquals(4L, r.kv.get("llama.attention.head_count"));
        assertEquals(2L, r.kv.get("llama.attention.head_count_kv"));
        assertEquals(10000f, r.kv.get("llama.rope.freq_base"));
        assertEquals(1e-5f, r.kv.get("llama.attention.layer_norm_rms_epsilon"));
        assertEquals(128L, r.kv.get("llama.vocab_size"));
        assertEquals(16L, r.kv.get("llama.rope.dimension_count"));
        assertEquals("none", r.kv.get("tokenizer.ggml.model"));
        for (String k : r.kv.keySet()) {
            if (k.startsWith("llama.") && !k.endsWith("freq_base") && !k.endsWith("epsilon")) {
                assertEquals(4, r.kvType.get(k), k + " should be a uint32 as gguf-py writes it");
            }
        }
        Set<String> expected = new TreeSet<>(Set.of("token_embd.weight", "output_norm.weight", "output.weight"));
        for (int l = 0; l < 2; l++) {
            for (String t : new String[] {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                    "ffn_gate", "ffn_up", "ffn_down"}) {
                expected.add("blk." + l + "." + t + ".weight");
            }
        }
        assertEquals(expected, new TreeSet<>(r.tensors.keySet()));
        assertEquals("token_embd.weight", r.tensors.keySet().iterator().next());
        assertArrayEquals(new long[] {64, 128}, r.tensors.get("token_embd.weight").dims());
        assertArrayEquals(new long[] {64, 32}, r.tensors.get("blk.1.attn_k.weight").dims());
        assertArrayEquals(new long[] {96, 64}, r.tensors.get("blk.0.ffn_down.weight").dims());
    }

    /** Every float32 tensor holds the checkpoint's values; q and k rows in llama.cpp's RoPE order. */
    @Test
    void float32ValuesAndPermutation() throws IOException {
        Path f = GgufExport.exportModel(model, tmp.resolve("f32.gguf"), GgufExport.OutType.F32).file();
        GgufReader r = new GgufReader(f);
        Map<String, float[]> w = hf(model.resolve("model.safetensors"));
        for (Map.Entry<String, float[]> e : w.entrySet()) {
            String g = GgufExport.modelTensorName(e.getKey(), "test");
            float[] got = r.tensors.get(g).floats();
            float[] want = e.getValue();
            if (g.endsWith("attn_q.weight")) {
                want = permuteRows(want, 64, 64, 4);
            } else if (g.endsWith("attn_k.weight")) {
                want = permuteRows(want, 32, 64, 2);
            }
            assertArrayEquals(want, got, g);
        }
        // the permutation is no identity on this shape
        float[] q = w.get("model.layers.0.self_attn.q_proj.weight");
        assertFalse(java.util.Arrays.equals(q, r.tensors.get("blk.0.attn_q.weight").floats()));
    }

    /** bf16 and f16 hold torch's rounding of each value; 1-D norms stay float32. */
    @Test
    void halfTypes() throws IOException {
        for (GgufExport.OutType t : new GgufExport.OutType[] {GgufExport.OutType.BF16, GgufExport.OutType.F16}) {
            Path f = GgufExport.exportModel(model, tmp.resolve(t + ".gguf"), t).file();
            GgufReader r = new GgufReader(f);
            assertEquals((long) t.fileType, r.kv.get("general.file_type"));
            try (PointerScope s = new PointerScope();
                    SafetensorsFile ck = SafetensorsFile.open(model.resolve("model.safetensors"))) {
                Tensor v = ck.get("model.layers.1.self_attn.v_proj.weight").to(t.scalarType).contiguous();
                short[] want = new short[(int) v.numel()];
                new ShortPointer(v.data_ptr()).get(want);
                GgufReader.TensorRecord got = r.tensors.get("blk.1.attn_v.weight");
                assertEquals(t == GgufExport.OutType.BF16 ? 30 : 1, got.type());
                assertArrayEquals(want, got.halves(), t.name());
                assertEquals(0, r.tensors.get("blk.1.ffn_norm.weight").type());
                assertArrayEquals(floats(ck.get("model.layers.1.post_attention_layernorm.weight")),
                        r.tensors.get("blk.1.ffn_norm.weight").floats());
            }
        }
    }

    @Test
    void adapterLayout() throws IOException {
        Path f = GgufExport.exportAdapter(lora, model, tmp.resolve("lora.gguf"), GgufExport.OutType.F32).file();
        GgufReader r = new GgufReader(f);
        assertEquals("llama", r.kv.get("general.architecture"));
        assertEquals("adapter", r.kv.get("general.type"));
        assertEquals("lora", r.kv.get("adapter.type"));
        assertEquals(8f, r.kv.get("adapter.lora.alpha"));
        assertEquals(6, r.kvType.get("adapter.lora.alpha"));
        assertEquals(2 * 7 * 2, r.tensors.size());
        Map<String, float[]> w = hf(lora.resolve("adapter_model.safetensors"));
        String p = "base_model.model.model.layers.1.";
        // lora_a [r, in] as ne [in, r]; lora_b [out, r] as ne [r, out]
        assertArrayEquals(new long[] {64, 4}, r.tensors.get("blk.1.attn_k.weight.lora_a").dims());
        assertArrayEquals(new long[] {4, 32}, r.tensors.get("blk.1.attn_k.weight.lora_b").dims());
        assertArrayEquals(new long[] {96, 4}, r.tensors.get("blk.1.ffn_down.weight.lora_a").dims());
        assertArrayEquals(w.get(p + "self_attn.q_proj.lora_A.weight"),
                r.tensors.get("blk.1.attn_q.weight.lora_a").floats());
        assertArrayEquals(permuteRows(w.get(p + "self_attn.q_proj.lora_B.weight"), 64, 4, 4),
                r.tensors.get("blk.1.attn_q.weight.lora_b").floats());
        assertArrayEquals(permuteRows(w.get(p + "self_attn.k_proj.lora_B.weight"), 32, 4, 2),
                r.tensors.get("blk.1.attn_k.weight.lora_b").floats());
        assertArrayEquals(w.get(p + "self_attn.v_proj.lora_B.weight"),
                r.tensors.get("blk.1.attn_v.weight.lora_b").floats());
        assertArrayEquals(w.get(p + "mlp.down_proj.lora_B.weight"),
                r.tensors.get("blk.1.ffn_down.weight.lora_b").floats());
    }

    /**
     * llama.cpp scales a pair by alpha / r; where PEFT's scaling differs (rslora: alpha / sqrt(r); alpha_pattern;
     * rank_pattern) the ratio is folded into lora_b.
     */
    @Test
    void scalingFoldsIntoB() throws IOException {
        Path rs = GgufFixtures.lora(tmp.resolve("rslora"), 6, b -> b.useRslora(true)
                .alphaPattern(Map.of("v_proj", 16)).rankPattern(Map.of("o_proj", 2)));
        GgufReader r = new GgufReader(GgufExport.exportAdapter(rs, model, tmp.resolve("rs.gguf"),
                GgufExport.OutType.F32).file());
        assertEquals(8f, r.kv.get("adapter.lora.alpha"));
        Map<String, float[]> w = hf(rs.resolve("adapter_model.safetensors"));
        String p = "base_model.model.model.layers.0.";
        // q: PEFT 8 / sqrt(4) = 4, llama.cpp 8 / 4 = 2: B times 2
        assertArrayEquals(scaled(permuteRows(w.get(p + "self_attn.q_proj.lora_B.weight"), 64, 4, 4), 2f),
                r.tensors.get("blk.0.attn_q.weight.lora_b").floats(), 1e-6f);
        // v: PEFT 16 / sqrt(4) = 8, llama.cpp 8 / 4 = 2: B times 4
        assertArrayEquals(scaled(w.get(p + "self_attn.v_proj.lora_B.weight"), 4f),
                r.tensors.get("blk.0.attn_v.weight.lora_b").floats(), 1e-6f);
        // o: rank 2, PEFT 8 / sqrt(2), llama.cpp 8 / 2: B times sqrt(2)
        assertArrayEquals(new long[] {2, 64}, r.tensors.get("blk.0.attn_output.weight.lora_b").dims());
        assertArrayEquals(scaled(w.get(p + "self_attn.o_proj.lora_B.weight"), (float) Math.sqrt(2)),
                r.tensors.get("blk.0.attn_output.weight.lora_b").floats(), 1e-6f);
        // A is never scaled
        assertArrayEquals(w.get(p + "self_attn.o_proj.lora_A.weight"),
                r.tensors.get("blk.0.attn_output.weight.lora_a").floats());
    }

    private static float[] scaled(float[] v, float s) {
        float[] out = v.clone();
        for (int i = 0; i < out.length; i++) {
            out[i] *= s;
        }
        return out;
    }

    @Test
    void refusals() throws IOException {
        Path dora = GgufFixtures.lora(tmp.resolve("dora"), 7, b -> b.useDora(true));
        assertMessage(() -> GgufExport.exportAdapter(dora, model, tmp.resolve("x.gguf"), GgufExport.OutType.F32),
                "use_dora = true");
        Path qwen = Files.createDirectories(tmp.resolve("qwen"));
        Files.writeString(qwen.resolve("config.json"), GgufFixtures.config("").replace("\"llama\"", "\"qwen2\""));
        assertMessage(() -> GgufExport.exportModel(qwen, tmp.resolve("x.gguf"), GgufExport.OutType.F32),
                "model_type 'qwen2' cannot be exported");
        Path biased = GgufFixtures.llama(tmp.resolve("biased"), 5, ", \"attention_bias\": true");
        assertMessage(() -> GgufExport.exportModel(biased, tmp.resolve("x.gguf"), GgufExport.OutType.F32),
                "attention_bias = true");
        Path yarn = Files.createDirectories(tmp.resolve("yarn"));
        Files.writeString(yarn.resolve("config.json"),
                GgufFixtures.config(", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2.0}"));
        Files.copy(model.resolve("model.safetensors"), yarn.resolve("model.safetensors"));
        assertMessage(() -> GgufExport.exportModel(yarn, tmp.resolve("x.gguf"), GgufExport.OutType.F32),
                "rope_scaling type 'yarn' is not supported");
        // a checkpoint that lacks a tensor, and one whose tensor disagrees with the config
        Path partial = Files.createDirectories(tmp.resolve("partial"));
        Files.copy(model.resolve("config.json"), partial.resolve("config.json"));
        Map<String, Tensor> t = new LinkedHashMap<>();
        try (PointerScope s = new PointerScope(); SafetensorsFile ck = SafetensorsFile.open(
                model.resolve("model.safetensors"))) {
            t.putAll(ck.tensors());
            t.remove("model.layers.1.mlp.up_proj.weight");
            SafetensorsFile.write(partial.resolve("model.safetensors"), t);
            assertMessage(() -> GgufExport.exportModel(partial, tmp.resolve("x.gguf"), GgufExport.OutType.F32),
                    "missing weights for [blk.1.ffn_up.weight]");
            t.put("model.layers.1.mlp.up_proj.weight", ck.get("model.layers.1.mlp.gate_proj.weight").t());
            SafetensorsFile.write(partial.resolve("model.safetensors"), t);
            assertMessage(() -> GgufExport.exportModel(partial, tmp.resolve("x.gguf"), GgufExport.OutType.F32),
                    "model.layers.1.mlp.up_proj.weight has shape [64, 96]; the config implies [96, 64]");
        }
        // an adapter trained for another width
        Path wide = GgufFixtures.lora(tmp.resolve("wide"), 8);
        Path other = Files.createDirectories(tmp.resolve("other"));
        Files.writeString(other.resolve("config.json"), GgufFixtures.config("").replace("\"intermediate_size\": 96",
                "\"intermediate_size\": 80"));
        assertMessage(() -> GgufExport.exportAdapter(wide, other, tmp.resolve("x.gguf"), GgufExport.OutType.F32),
                "model.layers.0.mlp.down_proj: lora_A [4, 96] and lora_B [64, 4] do not fit the model's weight [64, 80]");
        assertFalse(Files.exists(tmp.resolve("x.gguf")), "a refused export must write nothing");
    }

    private static void assertMessage(org.junit.jupiter.api.function.Executable e, String part) {
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class, e);
        assertTrue(ex.getMessage().contains(part), "expected '" + part + "' in: " + ex.getMessage());
    }
}
