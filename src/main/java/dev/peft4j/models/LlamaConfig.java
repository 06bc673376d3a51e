package dev.peft4j.models;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.Set;

/** The fields of a Llama-family config ({@code llama}, {@code mistral}, {@code qwen2}) the model reads. */
final class LlamaConfig {
    static final Set<String> MODEL_TYPES = Set.of("llama", "mistral", "qwen2");

    final String modelType;
    final long vocabSize;
    final long hiddenSize;
    final long intermediateSize;
    final int numLayers;
    final long numHeads;
    final long numKvHeads;
    final long headDim;
    final double rmsNormEps;
    final String hiddenAct;
    final boolean tieWordEmbeddings;
    /** q/k/v projection bias (qwen2 always; llama when attention_bias). */
    final boolean qkvBias;
    /** o_proj bias (llama's attention_bias). */
    final boolean oBias;
    final boolean mlpBias;
    final long slidingWindow;
    /** Per layer: whether it attends within {@link #slidingWindow} only. */
    final boolean[] slidingLayers;
    final float[] invFreq;

    LlamaConfig(ModelConfig c) {
        modelType = c.modelType();
        vocabSize = c.getLong("vocab_size");
        hiddenSize = c.getLong("hidden_size");
        intermediateSize = c.getLong("intermediate_size");
        numLayers = c.getInt("num_hidden_layers");
        numHeads = c.getLong("num_attention_heads");
        numKvHeads = c.getLong("num_key_value_heads", numHeads);
        if (hiddenSize % numHeads != 0 && !c.has("head_dim")) {
            throw new IllegalArgumentException(c.source() + ": hidden_size " + hiddenSize
                    + " is not divisible by num_attention_heads " + numHeads);
        }
        if (numHeads % numKvHeads != 0) {
            throw new IllegalArgumentException(c.source() + ": num_attention_heads " + numHeads
                    + " is not divisible by num_key_value_heads " + numKvHeads);
        }
        headDim = c.getLong("head_dim", hiddenSize / numHeads);
        rmsNormEps = c.getDouble("rms_norm_eps", 1e-6);
        hiddenAct = c.getString("hidden_act", "silu");
        tieWordEmbeddings = c.getBoolean("tie_word_embeddings", false);
        boolean attentionBias = c.getBoolean("attention_bias", false);
        qkvBias = "qwen2".equals(modelType) || attentionBias;
        oBias = !"qwen2".equals(modelType) && attentionBias;
        mlpBias = c.getBoolean("mlp_bias", false);
        // mistral: every layer slides; qwen2: layers from max_window_layers on, when use_sliding_window
        boolean qwenSliding = "qwen2".equals(modelType) && c.getBoolean("use_sliding_window", false);
        slidingWindow = "mistral".equals(modelType) || qwenSliding ? c.getLong("sliding_window", 0) : 0;
        slidingLayers = new boolean[numLayers];
        int firstSliding = qwenSliding ? c.getInt("max_window_layers", numLayers) : 0;
        for (int i = firstSliding; i < numLayers && slidingWindow > 0; i++) {
            slidingLayers[i] = true;
        }
        invFreq = ropeInvFreq(c, headDim);
    }

    /**
     * transformers' RoPE inverse frequencies for {@code rope_theta} and {@code rope_scaling}: default, {@code linear}
     * (positions divided by the factor) and {@code llama3} (long wavelengths divided, a smooth band between).
     */
    static float[] ropeInvFreq(ModelConfig c, long headDim) {
        double theta = c.getDouble("rope_theta", 10000.0);
        int half = (int) (headDim / 2);
        float[] inv = new float[half];
        for (int i = 0; i < half; i++) {
            // as torch computes it: float32 exponent, float32 power
            float exponent = (float) (2 * i) / (float) headDim;
            inv[i] = (float) (1.0 / (float) Math.pow(theta, exponent));
        }
        JsonNode rs = c.json().get("rope_scaling");
        if (rs == null || rs.isNull()) {
            return inv;
        }
        String type = rs.hasNonNull("rope_type") ? rs.get("rope_type").asText()
                : rs.hasNonNull("type") ? rs.get("type").asText() : "default";
        switch (type) {
            case "default":
                return inv;
            case "linear": {
                double factor = requireNumber(c, rs, "factor");
                for (int i = 0; i < half; i++) {
                    inv[i] = (float) (inv[i] / factor);
                }
                return inv;
            }
            case "llama3": {
                double factor = requireNumber(c, rs, "factor");
                double low = requireNumber(c, rs, "low_freq_factor");
                double high = requireNumber(c, rs, "high_freq_factor");
                double oldCtx = requireNumber(c, rs, "original_max_position_embeddings");
                double lowWavelen = oldCtx / low;
                double highWavelen = oldCtx / high;
                for (int i = 0; i < half; i++) {
                    double f = inv[i];
                    double wavelen = 2 * Math.PI / f;
                    double scaled = wavelen > lowWavelen ? f / factor : f;
                    if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) {
                        double smooth = (oldCtx / wavelen - low) / (high - low);
                        scaled = (1 - smooth) * scaled / factor + smooth * scaled;
                    }
                    inv[i] = (float) scaled;
                }
                return inv;
            }
            default:
                throw new IllegalArgumentException(c.source() + ": rope_scaling type '" + type
                        + "' is not supported; supported: default, linear, llama3");
        }
    }

    private static double requireNumber(ModelConfig c, JsonNode rs, String key) {
        JsonNode n = rs.get(key);
        if (n == null || !n.isNumber()) {
            throw new IllegalArgumentException(c.source() + ": rope_scaling." + key + " is required (a number), got " + n);
        }
        return n.asDouble();
    }
}
