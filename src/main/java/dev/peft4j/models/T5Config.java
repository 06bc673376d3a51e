package dev.peft4j.models;

import java.util.Set;

/** The fields of a T5 / mT5 config ({@code t5}, {@code mt5}) the model reads, with transformers' defaults. */
final class T5Config {
    static final Set<String> MODEL_TYPES = Set.of("t5", "mt5");

    final String modelType;
    final long vocabSize;
    final long dModel;
    final long dKv;
    final long dFf;
    final int numLayers;
    final int numDecoderLayers;
    final long numHeads;
    final int numBuckets;
    final int maxDistance;
    final double eps;
    /** {@code DenseReluDense} is {@code T5DenseGatedActDense} (wi_0, wi_1, wo) rather than {@code T5DenseActDense}. */
    final boolean gated;
    /** transformers' {@code dense_act_fn}: the part of {@code feed_forward_proj} after "gated-" (gelu → gelu_new). */
    final String activation;
    final boolean tieWordEmbeddings;
    final long decoderStartTokenId;
    final long eosTokenId;
    final long padTokenId;

    T5Config(ModelConfig c) {
        modelType = c.modelType();
        vocabSize = c.getLong("vocab_size");
        dModel = c.getLong("d_model");
        dKv = c.getLong("d_kv");
        dFf = c.getLong("d_ff");
        numLayers = c.getInt("num_layers");
        numDecoderLayers = c.getInt("num_decoder_layers", numLayers);
        numHeads = c.getLong("num_heads");
        numBuckets = c.getInt("relative_attention_num_buckets", 32);
        maxDistance = c.getInt("relative_attention_max_distance", 128);
        eps = c.getDouble("layer_norm_epsilon", 1e-6);
        String proj = c.getString("feed_forward_proj", "relu");
        String[] parts = proj.split("-");
        if (parts.length > 2 || (parts.length == 2 && !"gated".equals(parts[0])) || proj.isEmpty()) {
            throw new IllegalArgumentException(c.source() + ": feed_forward_proj '" + proj + "' is not a valid "
                    + "activation function of the dense layer; use '<act>' or 'gated-<act>' (e.g. 'gated-gelu', 'relu')");
        }
        gated = parts.length == 2;
        activation = "gated-gelu".equals(proj) ? "gelu_new" : parts[parts.length - 1];
        // T5Config defaults to a tied head, MT5Config to an untied one
        tieWordEmbeddings = c.getBoolean("tie_word_embeddings", !"mt5".equals(modelType));
        padTokenId = c.getLong("pad_token_id", 0);
        decoderStartTokenId = c.getLong("decoder_start_token_id", padTokenId);
        eosTokenId = c.getLong("eos_token_id", 1);
        if (numBuckets < 2 || maxDistance < 1) {
            throw new IllegalArgumentException(c.source() + ": relative_attention_num_buckets (" + numBuckets
                    + ") must be ≥ 2 and relative_attention_max_distance (" + maxDistance + ") ≥ 1");
        }
    }
}
