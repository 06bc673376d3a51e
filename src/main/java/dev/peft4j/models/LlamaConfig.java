package dev.peft4j.models;

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
        invFreq = RopeScaling.of(c).invFreq(headDim);
    }
}
