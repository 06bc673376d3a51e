package dev.peft4j.gguf;

import com.fasterxml.jackson.databind.JsonNode;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.LoraFields;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.io.AdapterFolder;
import dev.peft4j.io.ShardedCheckpoint;
import dev.peft4j.models.ModelConfig;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Writes a Hugging Face Llama model folder, and a PEFT LoRA adapter of it, as GGUF files that llama.cpp loads: the
 * layout of llama.cpp's own {@code convert_hf_to_gguf.py} (architecture {@code llama}) and
 * {@code convert_lora_to_gguf.py}.
 *
 * <ul>
 *   <li>Tensor names: {@code token_embd}, {@code blk.N.attn_norm / attn_q / attn_k / attn_v / attn_output /
 *       ffn_norm / ffn_gate / ffn_up / ffn_down}, {@code output_norm}, {@code output} (absent when the embeddings are
 *       tied).</li>
 *   <li>The rows of {@code q_proj} and {@code k_proj} are permuted from the Hugging Face RoPE layout (rotate halves)
 *       to llama.cpp's (rotate adjacent pairs); a LoRA's {@code lora_B} of q and k is permuted the same way, its
 *       {@code lora_A} is not.</li>
 *   <li>Norms and other 1-D tensors stay float32 in every output type, as the converter keeps them.</li>
 *   <li>The vocabulary is not exported: the file says {@code tokenizer.ggml.model = none} with
 *       {@code llama.vocab_size}, which llama.cpp loads and runs on token ids (its tokenizer functions then have no
 *       tokens to work with).</li>
 *   <li>An adapter file has {@code general.type = adapter}, {@code adapter.type = lora}, {@code adapter.lora.alpha}
 *       and the pair {@code <base tensor>.lora_a} ({@code [r, in]}) / {@code .lora_b} ({@code [out, r]}). llama.cpp
 *       scales each pair by {@code alpha / r} (r the pair's rank); where PEFT's scaling differs
 *       ({@code use_rslora}, {@code rank_pattern}, {@code alpha_pattern}), the ratio is folded into {@code lora_b},
 *       so the product llama.cpp applies equals PEFT's.</li>
 * </ul>
 *
 * <p>Refused, with a message naming the key: other architectures, biases ({@code attention_bias},
 * {@code mlp_bias}), {@code rope_scaling} other than default / linear / llama3, a {@code head_dim} that is not
 * {@code hidden_size / num_attention_heads}; adapters other than LoRA, DoRA, LoRA bias, adapted embeddings, and
 * any module that is not one of the seven projections or {@code lm_head}.
 *
 * <p>Tensors stream one at a time (a model larger than memory exports); each output file appears under its name only
 * when complete. Stateless and thread-safe; two exports to one file race as two writers of any file would.
 */
public final class GgufExport {
    private GgufExport() {}

    /** The element type of the exported matrices (1-D tensors stay float32). */
    public enum OutType {
        /** float32. */
        F32(GgufWriter.TensorType.F32, ScalarType.Float, 0),
        /** float16 (IEEE half; values beyond ±65504 become infinite). */
        F16(GgufWriter.TensorType.F16, ScalarType.Half, 1),
        /** bfloat16. */
        BF16(GgufWriter.TensorType.BF16, ScalarType.BFloat16, 32);

        final GgufWriter.TensorType tensorType;
        final ScalarType scalarType;
        /** llama.cpp's {@code general.file_type} ({@code LLAMA_FTYPE_ALL_F32}, {@code MOSTLY_F16}, {@code MOSTLY_BF16}). */
        final int fileType;

        OutType(GgufWriter.TensorType tensorType, ScalarType scalarType, int fileType) {
            this.tensorType = tensorType;
            this.scalarType = scalarType;
            this.fileType = fileType;
        }

        /**
         * {@code f32} / {@code float32}, {@code f16} / {@code float16}, {@code bf16} / {@code bfloat16}.
         *
         * @throws IllegalArgumentException naming the value and the accepted ones
         */
        public static OutType parse(String name) {
            switch (name.toLowerCase(Locale.ROOT)) {
                case "f32": case "float32": return F32;
                case "f16": case "float16": return F16;
                case "bf16": case "bfloat16": return BF16;
                default: throw new IllegalArgumentException("unsupported GGUF output type '" + name
                        + "'; supported: f32, f16, bf16");
            }
        }
    }

    /**
     * What an export wrote.
     *
     * @param file the GGUF file
     * @param tensors how many tensors it holds
     * @param bytes its size in bytes
     */
    public record Written(Path file, int tensors, long bytes) {}

    private static final String ARCH = "llama";
    private static final Pattern LAYER = Pattern.compile("model\\.layers\\.(\\d+)\\.(.+)\\.weight");
    private static final Map<String, String> LAYER_TENSORS = Map.of(
            "input_layernorm", "attn_norm",
            "post_attention_layernorm", "ffn_norm",
            "self_attn.q_proj", "attn_q",
            "self_attn.k_proj", "attn_k",
            "self_attn.v_proj", "attn_v",
            "self_attn.o_proj", "attn_output",
            "mlp.gate_proj", "ffn_gate",
            "mlp.up_proj", "ffn_up",
            "mlp.down_proj", "ffn_down");

    /** The Llama config fields the export needs, checked. */
    record Shape(ModelConfig config, long vocab, long hidden, long intermediate, int layers, long heads, long kvHeads,
            double rmsEps, boolean tied) {
        static Shape of(ModelConfig c) {
            String type = c.modelType();
            if (!"llama".equals(type) && !"mistral".equals(type)) {
                throw new IllegalArgumentException(c.source() + ": model_type '" + type
                        + "' cannot be exported to GGUF; supported: llama (and mistral without sliding_window)");
            }
            if ("mistral".equals(type) && c.json().hasNonNull("sliding_window")) {
                throw new IllegalArgumentException(c.source() + ": sliding_window " + c.json().get("sliding_window")
                        + ": llama.cpp's llama architecture has no sliding window");
            }
            for (String bias : List.of("attention_bias", "mlp_bias")) {
                if (c.getBoolean(bias, false)) {
                    throw new IllegalArgumentException(c.source() + ": " + bias + " = true is not supported by the "
                            + "GGUF export");
                }
            }
            long hidden = c.getLong("hidden_size");
            long heads = c.getLong("num_attention_heads");
            long kv = c.getLong("num_key_value_heads", heads);
            if (hidden % heads != 0 || heads % kv != 0) {
                throw new IllegalArgumentException(c.source() + ": hidden_size " + hidden + ", num_attention_heads "
                        + heads + ", num_key_value_heads " + kv + " do not divide");
            }
            if (c.has("head_dim") && c.json().hasNonNull("head_dim") && c.getLong("head_dim") != hidden / heads) {
                throw new IllegalArgumentException(c.source() + ": head_dim " + c.getLong("head_dim")
                        + " is not hidden_size / num_attention_heads = " + hidden / heads
                        + "; not supported by the GGUF export");
            }
            if ((hidden / heads) % 2 != 0) {
                throw new IllegalArgumentException(c.source() + ": odd head dimension " + hidden / heads);
            }
            return new Shape(c, c.getLong("vocab_size"), hidden, c.getLong("intermediate_size"),
                    c.getInt("num_hidden_layers"), heads, kv, c.getDouble("rms_norm_eps", 1e-6),
                    c.getBoolean("tie_word_embeddings", false));
        }

        long headDim() {
            return hidden / heads;
        }
    }

    /**
     * Writes the model in {@code modelDir} ({@code config.json} and {@code model.safetensors}, sharded or not) to
     * {@code out} as a GGUF model of type {@code type}.
     *
     * @throws IOException when the folder cannot be read or the file written
     * @throws IllegalArgumentException naming the key or tensor when the model is not one the export supports, or
     *     its weights do not match its config
     */
    public static Written exportModel(Path modelDir, Path out, OutType type) throws IOException {
        Shape s = Shape.of(ModelConfig.read(modelDir.resolve("config.json")));
        if (!Files.isRegularFile(modelDir.resolve(ShardedCheckpoint.SINGLE_FILE))
                && !Files.isRegularFile(modelDir.resolve(ShardedCheckpoint.INDEX_FILE))) {
            throw new NoSuchFileException(modelDir.toString(), null, "the GGUF export reads "
                    + ShardedCheckpoint.SINGLE_FILE + " or " + ShardedCheckpoint.INDEX_FILE + "; neither is there");
        }
        GgufWriter w = new GgufWriter();
        w.putString("general.architecture", ARCH);
        w.putString("general.type", "model");
        w.putString("general.name", modelDir.toAbsolutePath().normalize().getFileName().toString());
        w.putUint32("general.file_type", type.fileType);
        w.putUint32("general.quantization_version", 2);
        w.putUint32(ARCH + ".block_count", s.layers());
        w.putUint32(ARCH + ".context_length", s.config().getLong("max_position_embeddings", 2048));
        w.putUint32(ARCH + ".embedding_length", s.hidden());
        w.putUint32(ARCH + ".feed_forward_length", s.intermediate());
        w.putUint32(ARCH + ".attention.head_count", s.heads());
        w.putUint32(ARCH + ".attention.head_count_kv", s.kvHeads());
        w.putFloat32(ARCH + ".rope.freq_base", (float) s.config().getDouble("rope_theta", 10000.0));
        w.putFloat32(ARCH + ".attention.layer_norm_rms_epsilon", (float) s.rmsEps());
        w.putUint32(ARCH + ".vocab_size", s.vocab());
        w.putUint32(ARCH + ".rope.dimension_count", s.headDim());
        float[] ropeFactors = rope(s, w);
        w.putString("tokenizer.ggml.model", "none");

        try (ShardedCheckpoint ckpt = ShardedCheckpoint.open(modelDir)) {
            Map<String, String> names = new TreeMap<>(GgufExport::byLayer);
            for (String name : ckpt.names()) {
                String g = modelTensorName(name, ckpt.path());
                if (g != null) {
                    names.put(g, name);
                }
            }
            List<String> missing = new ArrayList<>();
            for (String g : expectedModelTensors(s)) {
                if (!names.containsKey(g)) {
                    missing.add(g);
                }
            }
            if (!missing.isEmpty()) {
                throw new IllegalArgumentException(ckpt.path() + ": missing weights for " + missing);
            }
            if (ropeFactors != null) {
                w.addTensor("rope_freqs.weight", new long[] {ropeFactors.length}, GgufWriter.TensorType.F32,
                        ch -> writeFloats(ch, ropeFactors));
            }
            for (Map.Entry<String, String> e : names.entrySet()) {
                String g = e.getKey();
                String hf = e.getValue();
                long[] shape = ckpt.info(hf).shape();
                checkShape(ckpt.path() + ": " + hf, shape, expectedShape(g, s));
                GgufWriter.TensorType tt = shape.length == 1 ? GgufWriter.TensorType.F32 : type.tensorType;
                ScalarType st = shape.length == 1 ? ScalarType.Float : type.scalarType;
                long permuteHeads = g.endsWith(".attn_q.weight") ? s.heads()
                        : g.endsWith(".attn_k.weight") ? s.kvHeads() : 0;
                w.addTensor(g, shape, tt, ch -> {
                    try (Tensor t = ckpt.get(hf)) {
                        writeConverted(ch, t, st, permuteHeads);
                    }
                });
            }
            w.write(out);
        }
        return new Written(out, w.tensorCount(), Files.size(out));
    }

    /**
     * Writes the PEFT LoRA adapter in {@code adapterDir} ({@code adapter_config.json} and its weights), for the model
     * in {@code modelDir} (its {@code config.json} only: head counts and shapes), to {@code out} as a GGUF LoRA
     * adapter of type {@code type}.
     *
     * @throws IOException when a folder cannot be read or the file written
     * @throws IllegalArgumentException naming the config key or tensor when the adapter is not one the export
     *     supports, or does not fit the model
     */
    public static Written exportAdapter(Path adapterDir, Path modelDir, Path out, OutType type) throws IOException {
        return exportAdapter(adapterDir, Shape.of(ModelConfig.read(modelDir.resolve("config.json"))), null, out,
                type);
    }

    /**
     * Writes the PEFT LoRA adapter in {@code adapterDir} for the GGUF model {@code baseGguf} (a llama model file as
     * {@link GgufModels#fromGguf} loads it, of any tensor types: its metadata gives the head counts and shapes) to
     * {@code out} as a GGUF LoRA adapter of type {@code type}: the file {@link #exportAdapter(Path, Path, Path,
     * OutType)} writes for the Hugging Face model the base came from. Each adapted weight must be a tensor of the
     * base, of the shape the adapter's pair fits.
     *
     * @throws GgufFormatException when the base breaks the GGUF format
     * @throws IOException when a file cannot be read or written
     * @throws IllegalArgumentException naming the file and the key or tensor when the base is not a model {@link
     *     GgufModels} loads, the adapter is not one the export supports, or it does not fit the base
     */
    public static Written exportAdapterForGguf(Path adapterDir, Path baseGguf, Path out, OutType type)
            throws IOException {
        try (GgufFile g = GgufFile.open(baseGguf)) {
            Shape s = Shape.of(GgufModels.config(g, ScalarType.Float));
            GgufModels.checkedNames(g, s);
            return exportAdapter(adapterDir, s, g, out, type);
        }
    }

    /**
     * The type {@code export-gguf}'s {@code --outtype auto} picks for an adapter of the GGUF model {@code baseGguf}:
     * its {@code general.file_type}'s float type (F16, BF16), float32 for an F32 or quantized model, or one that names
     * none.
     *
     * @throws GgufFormatException when the file breaks the GGUF format
     * @throws IOException when it cannot be read
     */
    public static OutType defaultAdapterType(Path baseGguf) throws IOException {
        try (GgufFile g = GgufFile.open(baseGguf)) {
            Object ft = g.metadata().get("general.file_type");
            long v = ft instanceof Number n ? n.longValue() : 0;
            return v == OutType.F16.fileType ? OutType.F16 : v == OutType.BF16.fileType ? OutType.BF16 : OutType.F32;
        }
    }

    /** The adapter's export for the model {@code s}; with {@code base}, each pair's weight checked against it. */
    private static Written exportAdapter(Path adapterDir, Shape s, GgufFile base, Path out, OutType type)
            throws IOException {
        PeftConfig pc = PeftConfigs.read(adapterDir);
        if (!(pc instanceof LoraConfig lc)) {
            throw new IllegalArgumentException(adapterDir + ": peft_type " + pc.peftType()
                    + " cannot be exported to GGUF; llama.cpp's adapters are LoRA");
        }
        LoraFields f = lc.loraFields();
        if (f.useDora()) {
            throw new IllegalArgumentException(adapterDir + ": use_dora = true: llama.cpp's LoRA has no DoRA");
        }
        if (f.loraBias()) {
            throw new IllegalArgumentException(adapterDir + ": lora_bias = true: llama.cpp's LoRA has no bias");
        }
        if (f.bias() != dev.peft4j.config.Bias.NONE) {
            throw new IllegalArgumentException(adapterDir + ": bias = " + f.bias()
                    + ": the adapter trains biases, which a llama.cpp LoRA cannot carry");
        }
        if (f.layerReplication() != null && !f.layerReplication().isEmpty()) {
            throw new IllegalArgumentException(adapterDir + ": layer_replication is not supported by the GGUF export");
        }
        float alpha = (float) f.loraAlpha();
        if (!(alpha > 0)) {
            throw new IllegalArgumentException(adapterDir + ": lora_alpha " + f.loraAlpha()
                    + ": llama.cpp reads alpha 0 as no scaling; export needs alpha > 0");
        }
        AdapterFolder folder = AdapterFolder.read(adapterDir);
        try {
            Map<String, Tensor[]> pairs = new TreeMap<>(GgufExport::byLayer);
            Map<String, String> moduleOf = new LinkedHashMap<>();
            for (Map.Entry<String, Tensor> e : folder.stateDict().entrySet()) {
                String key = e.getKey();
                boolean isA = key.endsWith(".lora_A.weight");
                boolean isB = key.endsWith(".lora_B.weight");
                if (!isA && !isB) {
                    throw new IllegalArgumentException(folder.weightsFile() + ": tensor " + key
                            + " is not a lora_A / lora_B weight; the GGUF export carries LoRA pairs only"
                            + (key.contains("embed") || key.contains("lm_head")
                                    ? " (trained embeddings or head cannot go into a llama.cpp LoRA)" : ""));
                }
                String module = key.substring(0, key.length() - ".lora_A.weight".length());
                String rel = module.startsWith("base_model.model.") ? module.substring("base_model.model.".length())
                        : module;
                String g = modelTensorName(rel + ".weight", folder.weightsFile());
                if (g == null || g.endsWith("_norm.weight") || g.equals("token_embd.weight")) {
                    throw new IllegalArgumentException(folder.weightsFile() + ": tensor " + key + ": module " + rel
                            + " has no GGUF LoRA counterpart (supported: q/k/v/o_proj, gate/up/down_proj, lm_head)");
                }
                moduleOf.put(g, rel);
                pairs.computeIfAbsent(g, k -> new Tensor[2])[isA ? 0 : 1] = e.getValue();
            }
            if (pairs.isEmpty()) {
                throw new IllegalArgumentException(folder.weightsFile() + ": no LoRA tensors");
            }
            GgufWriter w = new GgufWriter();
            w.putString("general.architecture", ARCH);
            w.putString("general.type", "adapter");
            w.putString("general.name", adapterDir.toAbsolutePath().normalize().getFileName().toString());
            w.putUint32("general.file_type", type.fileType);
            w.putUint32("general.quantization_version", 2);
            w.putString("adapter.type", "lora");
            w.putFloat32("adapter.lora.alpha", alpha);
            for (Map.Entry<String, Tensor[]> e : pairs.entrySet()) {
                String g = e.getKey();
                String rel = moduleOf.get(g);
                Tensor a = e.getValue()[0];
                Tensor b = e.getValue()[1];
                if (a == null || b == null) {
                    throw new IllegalArgumentException(folder.weightsFile() + ": module " + rel + " has "
                            + (a == null ? "lora_B but no lora_A" : "lora_A but no lora_B"));
                }
                long[] expected = expectedShape(g, s);
                long[] as = a.shape();
                long[] bs = b.shape();
                if (as.length != 2 || bs.length != 2 || as[0] != bs[1] || as[1] != expected[1] || bs[0] != expected[0]) {
                    throw new IllegalArgumentException(folder.weightsFile() + ": module " + rel + ": lora_A "
                            + java.util.Arrays.toString(as) + " and lora_B " + java.util.Arrays.toString(bs)
                            + " do not fit the model's weight " + java.util.Arrays.toString(expected));
                }
                if (base != null) {
                    GgufFile.TensorInfo t = base.tensors().get(g);
                    if (t == null) {
                        throw new IllegalArgumentException(folder.weightsFile() + ": module " + rel + " adapts "
                                + g + ", which the base " + base.path() + " has not"
                                + (g.equals("output.weight") ? " (its head is tied to token_embd)" : ""));
                    }
                    if (!java.util.Arrays.equals(t.shape(), expected)) {
                        throw new IllegalArgumentException(base.path() + ": tensor " + t + " does not fit module "
                                + rel + "'s lora_A " + java.util.Arrays.toString(as) + " and lora_B "
                                + java.util.Arrays.toString(bs));
                    }
                }
                long r = as[0];
                // llama.cpp applies alpha / r with this pair's rank; PEFT applies lc.scaling(rel)
                double fold = lc.scaling(rel) / (alpha / (double) r);
                long permuteHeads = g.endsWith(".attn_q.weight") ? s.heads()
                        : g.endsWith(".attn_k.weight") ? s.kvHeads() : 0;
                w.addTensor(g + ".lora_a", as, type.tensorType, ch -> writeConverted(ch, a, type.scalarType, 0));
                w.addTensor(g + ".lora_b", bs, type.tensorType, ch -> {
                    if (fold == 1.0) {
                        writeConverted(ch, b, type.scalarType, permuteHeads);
                    } else {
                        try (Tensor scaled = b.to(ScalarType.Float).mul(new org.bytedeco.pytorch.Scalar(fold))) {
                            writeConverted(ch, scaled, type.scalarType, permuteHeads);
                        }
                    }
                });
            }
            w.write(out);
            return new Written(out, w.tensorCount(), Files.size(out));
        } finally {
            for (Tensor t : folder.stateDict().values()) {
                t.close();
            }
        }
    }

    /**
     * The rope keys and, for {@code llama3} scaling, the {@code rope_freqs} factors llama.cpp divides its frequencies
     * by (as the converter computes them); null when there is no such tensor.
     */
    private static float[] rope(Shape s, GgufWriter w) {
        JsonNode rs = s.config().json().get("rope_scaling");
        if (rs == null || rs.isNull()) {
            return null;
        }
        String kind = rs.hasNonNull("rope_type") ? rs.get("rope_type").asText()
                : rs.hasNonNull("type") ? rs.get("type").asText() : "default";
        switch (kind) {
            case "default":
                return null;
            case "linear":
                w.putString(ARCH + ".rope.scaling.type", "linear");
                w.putFloat32(ARCH + ".rope.scaling.factor", (float) number(s, rs, "factor"));
                return null;
            case "llama3": {
                double factor = number(s, rs, "factor");
                double low = number(s, rs, "low_freq_factor");
                double high = number(s, rs, "high_freq_factor");
                double oldCtx = number(s, rs, "original_max_position_embeddings");
                double base = s.config().getDouble("rope_theta", 10000.0);
                int half = (int) (s.headDim() / 2);
                float[] factors = new float[half];
                double lowWavelen = oldCtx / low;
                double highWavelen = oldCtx / high;
                for (int i = 0; i < half; i++) {
                    double freq = 1.0 / Math.pow(base, (2.0 * i) / s.headDim());
                    double wavelen = 2 * Math.PI / freq;
                    if (wavelen < highWavelen) {
                        factors[i] = 1f;
                    } else if (wavelen > lowWavelen) {
                        factors[i] = (float) factor;
                    } else {
                        double smooth = (oldCtx / wavelen - low) / (high - low);
                        factors[i] = (float) (1.0 / ((1 - smooth) / factor + smooth));
                    }
                }
                return factors;
            }
            default:
                throw new IllegalArgumentException(s.config().source() + ": rope_scaling type '" + kind
                        + "' is not supported by the GGUF export; supported: default, linear, llama3");
        }
    }

    private static double number(Shape s, JsonNode rs, String key) {
        JsonNode n = rs.get(key);
        if (n == null || !n.isNumber()) {
            throw new IllegalArgumentException(s.config().source() + ": rope_scaling." + key
                    + " is required (a number), got " + n);
        }
        return n.asDouble();
    }

    /** The GGUF name of a Hugging Face Llama weight; null for buffers the converter skips. */
    static String modelTensorName(String hf, Object where) {
        switch (hf) {
            case "model.embed_tokens.weight": return "token_embd.weight";
            case "model.norm.weight": return "output_norm.weight";
            case "lm_head.weight": return "output.weight";
            default: break;
        }
        if (hf.endsWith(".rotary_emb.inv_freq")) {
            return null;
        }
        Matcher m = LAYER.matcher(hf);
        if (m.matches()) {
            String g = LAYER_TENSORS.get(m.group(2));
            if (g != null) {
                return "blk." + Integer.parseInt(m.group(1)) + "." + g + ".weight";
            }
        }
        throw new IllegalArgumentException(where + ": tensor " + hf + " has no place in a GGUF llama model");
    }

    private static List<String> expectedModelTensors(Shape s) {
        List<String> out = new ArrayList<>(List.of("token_embd.weight", "output_norm.weight"));
        if (!s.tied()) {
            out.add("output.weight");
        }
        for (int i = 0; i < s.layers(); i++) {
            for (String g : LAYER_TENSORS.values()) {
                out.add("blk." + i + "." + g + ".weight");
            }
        }
        return out;
    }

    /** The PyTorch shape the model's config implies for GGUF tensor {@code g}. */
    static long[] expectedShape(String g, Shape s) {
        long kvDim = s.kvHeads() * s.headDim();
        if (g.equals("token_embd.weight") || g.equals("output.weight")) {
            return new long[] {s.vocab(), s.hidden()};
        }
        if (g.equals("output_norm.weight")) {
            return new long[] {s.hidden()};
        }
        Matcher m = Pattern.compile("blk\\.(\\d+)\\.(\\w+)\\.weight").matcher(g);
        if (!m.matches() || Integer.parseInt(m.group(1)) >= s.layers()) {
            throw new IllegalArgumentException(g + ": not a tensor of a " + s.layers() + "-layer model");
        }
        switch (m.group(2)) {
            case "attn_norm": case "ffn_norm": return new long[] {s.hidden()};
            case "attn_q": case "attn_output": return new long[] {s.hidden(), s.hidden()};
            case "attn_k": case "attn_v": return new long[] {kvDim, s.hidden()};
            case "ffn_gate": case "ffn_up": return new long[] {s.intermediate(), s.hidden()};
            case "ffn_down": return new long[] {s.hidden(), s.intermediate()};
            default: throw new IllegalStateException(g);
        }
    }

    private static void checkShape(String what, long[] got, long[] expected) {
        if (!java.util.Arrays.equals(got, expected)) {
            throw new IllegalArgumentException(what + " has shape " + java.util.Arrays.toString(got)
                    + "; the config implies " + java.util.Arrays.toString(expected));
        }
    }

    /** Orders GGUF names as the converter writes them: global tensors first, then block by block. */
    private static int byLayer(String a, String b) {
        int la = layerOf(a);
        int lb = layerOf(b);
        return la != lb ? Integer.compare(la, lb) : a.compareTo(b);
    }

    private static int layerOf(String g) {
        if (!g.startsWith("blk.")) {
            return g.startsWith("output") ? Integer.MAX_VALUE : -1;
        }
        return Integer.parseInt(g.substring(4, g.indexOf('.', 4)));
    }

    /**
     * Writes {@code t} converted to {@code type}; with {@code heads > 0}, its rows permuted first from the Hugging Face
     * RoPE layout to llama.cpp's: {@code reshape(heads, 2, rows / heads / 2, ...).swapaxes(1, 2)}.
     */
    static void writeConverted(FileChannel ch, Tensor t, ScalarType type, long heads) throws IOException {
        try (org.bytedeco.javacpp.PointerScope scope = new org.bytedeco.javacpp.PointerScope()) {
            Tensor x = t;
            if (heads > 0) {
                long[] shape = t.shape();
                long[] split = new long[shape.length + 2];
                split[0] = heads;
                split[1] = 2;
                split[2] = shape[0] / heads / 2;
                System.arraycopy(shape, 1, split, 3, shape.length - 1);
                x = t.reshape(split).transpose(1, 2).reshape(shape);
            }
            Tensor c = x.to(type).contiguous();
            long n = c.nbytes();
            long chunk = 64L << 20;
            for (long done = 0; done < n; done += chunk) {
                long len = Math.min(chunk, n - done);
                try (BytePointer p = new BytePointer(c.data_ptr())) {
                    ByteBuffer buf = p.position(done).limit(done + len).capacity(done + len).asBuffer();
                    while (buf.hasRemaining()) {
                        ch.write(buf);
                    }
                }
            }
            java.lang.ref.Reference.reachabilityFence(c);
        }
    }

    private static void writeFloats(FileChannel ch, float[] values) throws IOException {
        ByteBuffer buf = ByteBuffer.allocate(values.length * 4).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (float v : values) {
            buf.putFloat(v);
        }
        buf.flip();
        while (buf.hasRemaining()) {
            ch.write(buf);
        }
    }
}
