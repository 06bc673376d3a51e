package dev.peft4j.gguf;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.peft4j.kernels.Quantization;
import dev.peft4j.kernels.QuantizedWeight;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.QuantizedLinear;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Loads llama.cpp's GGUF model files: the {@code llama} architecture as llama.cpp's {@code convert_hf_to_gguf.py}
 * and {@code peft4j export-gguf} write it (and {@code llama-quantize} requantizes it), into a {@code
 * LlamaForCausalLM} that PEFT adapters load on as on the Hugging Face model (the q / k row permutation of llama.cpp's
 * RoPE layout is undone, and the names mapped back, see {@link GgufExport}).
 *
 * <ul>
 *   <li>Config from the {@code llama.*} metadata: {@code block_count}, {@code embedding_length}, {@code
 *       feed_forward_length}, {@code attention.head_count}, {@code attention.head_count_kv}, {@code rope.freq_base},
 *       {@code attention.layer_norm_rms_epsilon}, {@code context_length}, linear {@code rope.scaling}; the vocabulary
 *       size from {@code token_embd}'s shape; the embeddings tied when the file has no {@code output} tensor.</li>
 *   <li>F32, F16 and BF16 tensors are loaded in the dtype asked for (an F32 tensor loaded in float32 stays a view of
 *       the mapped file).</li>
 *   <li>Q8_0 and Q4_0 weights of the transformer blocks' projections, and of {@code output}, become {@link
 *       QuantizedLinear}s holding the file's blocks as they are (same values, same half-precision scales: llama.cpp's
 *       blocks are {@link Quantization#INT8} / {@link Quantization#INT4} exactly, nothing is requantized); they compute
 *       in the dtype asked for, which must then be float32 or bfloat16. A Q8_0 / Q4_0 {@code token_embd} is
 *       dequantized to that dtype (a row lookup reads no more of it than the rows it needs).</li>
 *   <li>The file's tokenizer ({@code tokenizer.ggml.*}) is not read: tokenize with the Hugging Face tokenizer of the
 *       same model ({@code tokenizer.json}).</li>
 * </ul>
 *
 * <p>Refused with an {@link IllegalArgumentException} naming the file and the key or tensor: another architecture
 * or file type (a LoRA adapter GGUF: load the PEFT adapter folder instead), any other tensor type (Q4_1, Q5_0, Q5_1,
 * the K-quants such as Q4_K_M's Q4_K / Q6_K, the IQ types, …), {@code rope_freqs} (llama 3's RoPE scaling), RoPE
 * scaling other than linear, experts, a head size other than {@code embedding_length / head_count}, missing or
 * extra tensors, and shapes that do not fit the metadata. A file that breaks the format is a {@link
 * GgufFormatException}.
 *
 * <p>Stateless and thread-safe.
 */
public final class GgufModels {
    private GgufModels() {}

    private static final String ARCH = "llama";
    private static final Map<String, String> LAYER_NAMES = new LinkedHashMap<>();

    static {
        LAYER_NAMES.put("attn_norm", "input_layernorm");
        LAYER_NAMES.put("attn_q", "self_attn.q_proj");
        LAYER_NAMES.put("attn_k", "self_attn.k_proj");
        LAYER_NAMES.put("attn_v", "self_attn.v_proj");
        LAYER_NAMES.put("attn_output", "self_attn.o_proj");
        LAYER_NAMES.put("ffn_norm", "post_attention_layernorm");
        LAYER_NAMES.put("ffn_gate", "mlp.gate_proj");
        LAYER_NAMES.put("ffn_up", "mlp.up_proj");
        LAYER_NAMES.put("ffn_down", "mlp.down_proj");
    }

    /**
     * Loads the GGUF model {@code file} in {@code dtype} (float32, bfloat16 or float16; null: float32), as described
     * in the class comment. The model is a {@link dev.peft4j.models.CausalLM} in eval mode.
     *
     * @throws GgufFormatException when the file breaks the GGUF format
     * @throws IllegalArgumentException naming the file and the key or tensor, when the model is not one this loader
     *     supports (see the class comment)
     * @throws IOException when the file cannot be read
     */
    public static PreTrainedModel fromGguf(Path file, ScalarType dtype) throws IOException {
        ScalarType dt = dtype == null ? ScalarType.Float : dtype.intern();
        if (dt != ScalarType.Float && dt != ScalarType.BFloat16 && dt != ScalarType.Half) {
            throw new IllegalArgumentException("dtype " + dt + " not supported; use Float, BFloat16 or Half");
        }
        try (GgufFile g = GgufFile.open(file)) {
            ModelConfig config = config(g, dt);
            GgufExport.Shape shape = GgufExport.Shape.of(config);
            Map<String, String> names = checkedNames(g, shape);
            for (Map.Entry<String, String> e : names.entrySet()) {
                GgufFile.TensorInfo t = g.tensor(e.getKey());
                boolean quantized = t.type() == GgmlType.Q8_0.id || t.type() == GgmlType.Q4_0.id;
                boolean linear = e.getKey().startsWith("blk.") && !e.getKey().endsWith("_norm.weight")
                        || e.getKey().equals("output.weight");
                boolean outer = e.getKey().equals("output.weight") || e.getKey().equals("token_embd.weight");
                if (t.type() == GgmlType.Q6_K.id && outer) {
                    continue; // dequantized at load: llama-quantize's output tensor of a Q4_0 model
                }
                if (quantized && !linear && !outer) {
                    throw new IllegalArgumentException(file + ": tensor " + t + ": a " + t.typeName()
                            + " norm is not supported (llama.cpp's converters keep norms in F32)");
                }
                if (quantized && linear && dt == ScalarType.Half) {
                    throw new IllegalArgumentException(file + ": tensor " + t + ": quantized layers compute in "
                            + "float32 or bfloat16; load this file in one of those, not float16");
                }
                if (!quantized && t.type() != GgmlType.F32.id && t.type() != GgmlType.F16.id
                        && t.type() != GgmlType.BF16.id) {
                    throw new IllegalArgumentException(file + ": tensor " + t + ": ggml type " + t.typeName()
                            + " is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, and Q6_K for token_embd / "
                            + "output; requantize the F16 / BF16 GGUF to Q8_0 or Q4_0 with llama-quantize)");
                }
            }
            PreTrainedModel model = AutoModel.fromConfig(config, Init.meta(dt));
            List<Tensor> owned = new ArrayList<>();
            try {
                Map<String, Tensor> checkpoint = new LinkedHashMap<>();
                for (Map.Entry<String, String> e : names.entrySet()) {
                    String gname = e.getKey();
                    String hf = e.getValue();
                    GgufFile.TensorInfo t = g.tensor(gname);
                    long heads = gname.endsWith(".attn_q.weight") ? shape.heads()
                            : gname.endsWith(".attn_k.weight") ? shape.kvHeads() : 0;
                    Quantization q = t.type() == GgmlType.Q8_0.id ? Quantization.INT8
                            : t.type() == GgmlType.Q4_0.id ? Quantization.INT4 : null;
                    if (t.type() == GgmlType.Q6_K.id) {
                        Tensor w = dequantizeQ6K(g, t);
                        owned.add(w);
                        checkpoint.put(hf, w);
                    } else if (q == null) {
                        Tensor w = g.get(gname);
                        owned.add(w);
                        if (heads > 0) {
                            w = unpermuteRows(w, heads);
                            owned.add(w);
                        }
                        checkpoint.put(hf, w);
                    } else {
                        QuantizedWeight qw = quantized(g, t, q, heads);
                        String module = hf.substring(0, hf.length() - ".weight".length());
                        if (gname.equals("token_embd.weight")) {
                            Tensor w = qw.dequantize(dt == ScalarType.BFloat16 ? dt : ScalarType.Float);
                            owned.add(w);
                            closeWeight(qw);
                            checkpoint.put(hf, w);
                        } else {
                            model.replaceSubmodule(module, QuantizedLinear.of(qw, null, dt)).close();
                        }
                    }
                }
                // the quantized layers' own buffers fill their slots as they are
                for (Map.Entry<String, Tensor> e : model.stateDict().entrySet()) {
                    if (e.getKey().endsWith(".qpanels") || e.getKey().endsWith(".qpanel_scales")) {
                        checkpoint.put(e.getKey(), e.getValue());
                    }
                }
                model.loadWeights(checkpoint, file.toString());
            } catch (RuntimeException e) {
                model.close();
                throw e;
            } finally {
                for (Tensor t : owned) {
                    t.close();
                }
            }
            model.eval();
            return model;
        }
    }

    /** The Llama config the metadata describes, checked. */
    static ModelConfig config(GgufFile g, ScalarType dtype) {
        Path file = g.path();
        String arch = string(g, "general.architecture", null);
        if (!ARCH.equals(arch)) {
            throw new IllegalArgumentException(file + ": general.architecture '" + arch + "' is not supported; "
                    + "supported: llama");
        }
        String type = string(g, "general.type", "model");
        if (!type.equals("model")) {
            throw new IllegalArgumentException(file + ": general.type '" + type + "': not a model file"
                    + (type.equals("adapter") ? " but a llama.cpp LoRA adapter; load the base model's GGUF and the "
                            + "PEFT adapter folder on it" : ""));
        }
        long hidden = uint(g, ARCH + ".embedding_length", -1);
        long heads = uint(g, ARCH + ".attention.head_count", -1);
        long kvHeads = uint(g, ARCH + ".attention.head_count_kv", heads);
        if (heads <= 0 || kvHeads <= 0 || hidden % heads != 0 || heads % kvHeads != 0) {
            throw new IllegalArgumentException(file + ": " + ARCH + ".embedding_length " + hidden
                    + ", .attention.head_count " + heads + ", .attention.head_count_kv " + kvHeads + " do not divide");
        }
        long headDim = hidden / heads;
        for (String k : List.of(".rope.dimension_count", ".attention.key_length", ".attention.value_length")) {
            long v = uint(g, ARCH + k, headDim);
            if (v != headDim) {
                throw new IllegalArgumentException(file + ": " + ARCH + k + " = " + v + " is not embedding_length / "
                        + "head_count = " + headDim + "; not supported");
            }
        }
        if (uint(g, ARCH + ".expert_count", 0) > 0) {
            throw new IllegalArgumentException(file + ": " + ARCH + ".expert_count = "
                    + g.metadata().get(ARCH + ".expert_count") + ": mixture-of-experts GGUFs are not supported");
        }
        if (g.tensors().containsKey("rope_freqs.weight")) {
            throw new IllegalArgumentException(file + ": tensor rope_freqs.weight (llama 3's RoPE scaling, as "
                    + "frequency factors) is not supported");
        }
        if (!g.tensors().containsKey("token_embd.weight")) {
            throw new IllegalArgumentException(file + ": no tensor token_embd.weight");
        }
        GgufFile.TensorInfo embd = g.tensor("token_embd.weight");
        if (embd.dims().length != 2 || embd.dims()[0] != hidden) {
            throw new IllegalArgumentException(file + ": tensor " + embd + " is not [vocab, " + hidden + "]");
        }
        long vocab = embd.dims()[1];
        long declaredVocab = uint(g, ARCH + ".vocab_size", vocab);
        if (declaredVocab != vocab) {
            throw new IllegalArgumentException(file + ": " + ARCH + ".vocab_size " + declaredVocab
                    + " does not match token_embd.weight's " + vocab + " rows");
        }
        ObjectNode c = new ObjectMapper().createObjectNode();
        c.put("model_type", "llama");
        c.putArray("architectures").add("LlamaForCausalLM");
        c.put("vocab_size", vocab);
        c.put("hidden_size", hidden);
        c.put("intermediate_size", uint(g, ARCH + ".feed_forward_length", -1));
        c.put("num_hidden_layers", uint(g, ARCH + ".block_count", -1));
        c.put("num_attention_heads", heads);
        c.put("num_key_value_heads", kvHeads);
        c.put("max_position_embeddings", uint(g, ARCH + ".context_length", -1));
        c.put("rms_norm_eps", number(g, ARCH + ".attention.layer_norm_rms_epsilon", Double.NaN));
        c.put("rope_theta", number(g, ARCH + ".rope.freq_base", 10000.0));
        c.put("hidden_act", "silu");
        c.put("tie_word_embeddings", !g.tensors().containsKey("output.weight"));
        c.put("torch_dtype", dtype == ScalarType.BFloat16 ? "bfloat16" : dtype == ScalarType.Half ? "float16"
                : "float32");
        String scaling = string(g, ARCH + ".rope.scaling.type", "none");
        switch (scaling) {
            case "none" -> { }
            case "linear" -> {
                ObjectNode rs = c.putObject("rope_scaling");
                rs.put("rope_type", "linear");
                rs.put("factor", number(g, ARCH + ".rope.scaling.factor", Double.NaN));
            }
            default -> throw new IllegalArgumentException(file + ": " + ARCH + ".rope.scaling.type '" + scaling
                    + "' is not supported; supported: none, linear");
        }
        return ModelConfig.parse(c.toString(), file + " (GGUF metadata)");
    }

    /**
     * {@link #hfNames}, with every tensor's shape checked against the one the metadata implies: the file's tensors,
     * whatever their types, are those of the model {@code s} describes.
     */
    static Map<String, String> checkedNames(GgufFile g, GgufExport.Shape s) {
        Map<String, String> names = hfNames(g, s);
        for (String name : names.keySet()) {
            GgufFile.TensorInfo t = g.tensor(name);
            long[] want = GgufExport.expectedShape(name, s);
            if (!java.util.Arrays.equals(t.shape(), want)) {
                throw new IllegalArgumentException(g.path() + ": tensor " + t + " does not fit the metadata, which "
                        + "implies " + java.util.Arrays.toString(want));
            }
        }
        return names;
    }

    /** GGUF tensor name → Hugging Face name, for every tensor of the file; any other tensor is refused. */
    private static Map<String, String> hfNames(GgufFile g, GgufExport.Shape s) {
        Map<String, String> out = new LinkedHashMap<>();
        out.put("token_embd.weight", "model.embed_tokens.weight");
        for (int i = 0; i < s.layers(); i++) {
            for (Map.Entry<String, String> e : LAYER_NAMES.entrySet()) {
                out.put("blk." + i + "." + e.getKey() + ".weight", "model.layers." + i + "." + e.getValue() + ".weight");
            }
        }
        out.put("output_norm.weight", "model.norm.weight");
        if (!s.tied()) {
            out.put("output.weight", "lm_head.weight");
        }
        List<String> missing = new ArrayList<>();
        for (String name : out.keySet()) {
            if (!g.tensors().containsKey(name)) {
                missing.add(name);
            }
        }
        if (!missing.isEmpty()) {
            throw new IllegalArgumentException(g.path() + ": missing tensors " + missing + " of a " + s.layers()
                    + "-layer llama model");
        }
        for (String name : g.tensors().keySet()) {
            if (!out.containsKey(name)) {
                throw new IllegalArgumentException(g.path() + ": tensor " + g.tensor(name) + " has no place in a "
                        + s.layers() + "-layer llama model");
            }
        }
        return out;
    }

    /**
     * A Q8_0 / Q4_0 tensor as a {@link QuantizedWeight} from its blocks as they are: each block is the half-precision
     * scale, then the values in the byte order of {@link QuantizedWeight#values()}; rows (whole blocks) put back in
     * the Hugging Face order first when {@code heads > 0}.
     */
    static QuantizedWeight quantized(GgufFile g, GgufFile.TensorInfo t, Quantization q, long heads) {
        long out = t.dims()[1];
        long in = t.dims()[0];
        long blocks = in / QuantizedWeight.BLOCK;
        long blockBytes = q == Quantization.INT8 ? GgmlType.Q8_0.blockBytes : GgmlType.Q4_0.blockBytes;
        Tensor values;
        Tensor scales;
        try (Tensor bytes = g.bytes(t.name()); Tensor raw = bytes.view(out, blocks, blockBytes);
                Tensor s = raw.narrow(2, 0, 2); Tensor sc = s.contiguous(); Tensor s16 = sc.view(ScalarType.Short);
                Tensor v = raw.narrow(2, 2, blockBytes - 2); Tensor vc = v.contiguous();
                Tensor v8 = q == Quantization.INT8 ? vc.view(ScalarType.Char) : vc.view(ScalarType.Byte)) {
            scales = heads > 0 ? unpermuteRows(s16.view(out, blocks), heads) : s16.view(out, blocks);
            values = heads > 0 ? unpermuteRows(v8.view(out, q.rowBytes(in)), heads) : v8.view(out, q.rowBytes(in));
        }
        try {
            return new QuantizedWeight(values, scales, q);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(g.path() + ": tensor " + t + ": " + e.getMessage(), e);
        } finally {
            values.close();
            scales.close();
        }
    }

    /** Q6_K's block: 256 weights in 210 bytes. */
    private static final int QK_K = 256;

    /**
     * A Q6_K tensor {@code [out, in]} as a new float32 tensor, as ggml's {@code dequantize_row_q6_K} computes it:
     * per block of 256, {@code ql[128]} (low 4 bits), {@code qh[64]} (high 2 bits), {@code scales[16]} (int8, one
     * per 16 weights), {@code d} (half); {@code w = d·scale·(q − 32)}.
     */
    static Tensor dequantizeQ6K(GgufFile g, GgufFile.TensorInfo t) {
        int rows = Math.toIntExact(t.dims()[1]);
        int cols = Math.toIntExact(t.dims()[0]);
        int rowBytes = cols / QK_K * GgmlType.Q6_K.blockBytes;
        Tensor out;
        try (org.bytedeco.pytorch.TensorOptions o = new org.bytedeco.pytorch.TensorOptions(ScalarType.Float);
                org.bytedeco.pytorch.MemoryFormatOptional mf = new org.bytedeco.pytorch.MemoryFormatOptional()) {
            out = org.bytedeco.pytorch.global.torch.empty(new long[] {rows, cols}, o, mf);
        }
        byte[] row = new byte[rowBytes];
        float[] y = new float[cols];
        try (Tensor bytes = g.bytes(t.name());
                org.bytedeco.javacpp.BytePointer src = new org.bytedeco.javacpp.BytePointer(bytes.data_ptr());
                org.bytedeco.javacpp.FloatPointer dst = new org.bytedeco.javacpp.FloatPointer(out.data_ptr())) {
            for (int r = 0; r < rows; r++) {
                src.position((long) r * rowBytes).get(row);
                dequantizeQ6KRow(row, y);
                dst.position((long) r * cols).put(y);
            }
        }
        return out;
    }

    /** One row of Q6_K blocks ({@code x}) into {@code y}, as ggml's {@code dequantize_row_q6_K}. */
    static void dequantizeQ6KRow(byte[] x, float[] y) {
        int blocks = y.length / QK_K;
        for (int i = 0; i < blocks; i++) {
            int b = i * GgmlType.Q6_K.blockBytes;
            int ql = b;
            int qh = b + 128;
            int sc = b + 192;
            float d = halfToFloat((x[b + 208] & 0xff) | (x[b + 209] & 0xff) << 8);
            int yo = i * QK_K;
            for (int n = 0; n < QK_K; n += 128) {
                for (int l = 0; l < 32; l++) {
                    int is = l / 16;
                    int h = x[qh + l] & 0xff;
                    int q1 = ((x[ql + l] & 0xF) | ((h & 3) << 4)) - 32;
                    int q2 = ((x[ql + l + 32] & 0xF) | (((h >> 2) & 3) << 4)) - 32;
                    int q3 = (((x[ql + l] & 0xff) >> 4) | (((h >> 4) & 3) << 4)) - 32;
                    int q4 = (((x[ql + l + 32] & 0xff) >> 4) | (((h >> 6) & 3) << 4)) - 32;
                    y[yo + l] = d * x[sc + is] * q1;
                    y[yo + l + 32] = d * x[sc + is + 2] * q2;
                    y[yo + l + 64] = d * x[sc + is + 4] * q3;
                    y[yo + l + 96] = d * x[sc + is + 6] * q4;
                }
                yo += 128;
                ql += 64;
                qh += 32;
                sc += 8;
            }
        }
    }

    /** IEEE half-precision bits to float (exact: every half is a float). */
    static float halfToFloat(int h) {
        int sign = (h & 0x8000) << 16;
        int exp = (h >> 10) & 0x1f;
        int mant = h & 0x3ff;
        if (exp == 0x1f) {
            return Float.intBitsToFloat(sign | 0x7f80_0000 | mant << 13);
        }
        if (exp == 0) {
            float m = mant * 0x1p-24f; // subnormal (or zero): mant · 2^-24, exact
            return sign != 0 ? -m : m;
        }
        return Float.intBitsToFloat(sign | (exp + 112) << 23 | mant << 13);
    }

    /**
     * Rows from llama.cpp's RoPE layout back to the Hugging Face one: the inverse of the converter's
     * {@code reshape(heads, 2, d / 2, ...).swapaxes(1, 2)}, as a new contiguous tensor.
     */
    static Tensor unpermuteRows(Tensor w, long heads) {
        long[] shape = w.shape();
        long[] split = new long[shape.length + 2];
        split[0] = heads;
        split[1] = shape[0] / heads / 2;
        split[2] = 2;
        System.arraycopy(shape, 1, split, 3, shape.length - 1);
        try (Tensor v = w.reshape(split); Tensor tr = v.transpose(1, 2); Tensor c = tr.contiguous()) {
            return c.view(shape);
        }
    }

    private static void closeWeight(QuantizedWeight w) {
        w.panels().close();
        w.panelScales().close();
    }

    private static String string(GgufFile g, String key, String fallback) {
        Object v = g.metadata().get(key);
        if (v == null) {
            if (fallback == null) {
                throw new IllegalArgumentException(g.path() + ": metadata key " + key + " is missing");
            }
            return fallback;
        }
        if (!(v instanceof String s)) {
            throw new IllegalArgumentException(g.path() + ": metadata key " + key + " is " + v + ", not a string");
        }
        return s;
    }

    /** An unsigned integer key; {@code fallback} −1: required. */
    private static long uint(GgufFile g, String key, long fallback) {
        Object v = g.metadata().get(key);
        if (v == null) {
            if (fallback < 0) {
                throw new IllegalArgumentException(g.path() + ": metadata key " + key + " is missing");
            }
            return fallback;
        }
        if (!(v instanceof Long n) || n < 0 || n > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(g.path() + ": metadata key " + key + " is " + v + " (GGUF type "
                    + g.valueType(key) + "), expected a non-negative integer");
        }
        return n;
    }

    /**
     * A float key as the decimal it was written from ({@code 1e-5f} is {@code 1e-5}, not {@code 9.99999974e-6}),
     * as transformers' config would hold it; {@code fallback} NaN: required.
     */
    private static double number(GgufFile g, String key, double fallback) {
        Object v = g.metadata().get(key);
        if (v == null) {
            if (Double.isNaN(fallback)) {
                throw new IllegalArgumentException(g.path() + ": metadata key " + key + " is missing");
            }
            return fallback;
        }
        if (v instanceof Float f && Float.isFinite(f)) {
            return Double.parseDouble(Float.toString(f));
        }
        if (v instanceof Double d && Double.isFinite(d)) {
            return d;
        }
        throw new IllegalArgumentException(g.path() + ": metadata key " + key + " is " + v + ", expected a number");
    }
}
