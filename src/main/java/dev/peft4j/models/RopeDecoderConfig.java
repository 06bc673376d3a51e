package dev.peft4j.models;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.Arrays;

/**
 * The fields of a Gemma, Gemma 2, Gemma 3 (text), Qwen3 or Phi-3 config that {@link RopeDecoderStack} reads, with the
 * defaults transformers' config classes give when a key is absent.
 */
final class RopeDecoderConfig {
    /** The decoder families sharing {@link RopeDecoderStack}. */
    enum Family {
        GEMMA("gemma"), GEMMA2("gemma2"), GEMMA3("gemma3_text"), QWEN3("qwen3"), PHI3("phi3");

        final String modelType;

        Family(String modelType) {
            this.modelType = modelType;
        }
    }

    final Family family;
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
    /** Bias on q/k/v/o (Qwen3's attention_bias). */
    final boolean attentionBias;
    /** Attention's query scale: head_dim^-0.5, or query_pre_attn_scalar^-0.5 (Gemma 2 / 3). */
    final double attentionScale;
    /** tanh soft-capping of the attention scores and of the logits; 0 = none. */
    final double attnLogitSoftcap;
    final double finalLogitSoftcap;
    final long slidingWindow;
    /** Per layer: whether it attends within {@link #slidingWindow} only. */
    final boolean[] slidingLayers;
    /** Gemma's RMSNorm: {@code norm(x) · (1 + w)} in float32; else Llama's {@code w · norm(x)}. */
    final boolean gemmaNorm;
    /** Embeddings multiplied by √hidden (Gemma). */
    final boolean scaleEmbeddings;
    /** Pre- and post-norms around attention and MLP (Gemma 2 / 3). */
    final boolean sandwichNorms;
    /** RMSNorm over each head's queries and keys before RoPE (Qwen3, Gemma 3). */
    final boolean qkNorm;
    /** Phi-3's fused {@code qkv_proj} and {@code gate_up_proj}. */
    final boolean fused;
    /** Leading head dimensions RoPE rotates (Phi-3's partial_rotary_factor); the rest pass through. */
    final long rotaryDim;
    /** RoPE inverse frequencies of full-attention layers (and of every layer without {@link #localInvFreq}). */
    final float[] invFreq;
    /** Gemma 3's sliding layers' RoPE (rope_local_base_freq, no scaling); null for the others. */
    final float[] localInvFreq;
    /** Phi-3 long-RoPE: the frequencies used once a sequence passes {@link #originalMaxPositions}; null otherwise. */
    final float[] longInvFreq;
    final long originalMaxPositions;
    /** Multiplies RoPE's cos and sin (long-RoPE's attention factor), 1 otherwise. */
    final double ropeAttentionScaling;

    RopeDecoderConfig(ModelConfig c, Family family) {
        this.family = family;
        if (!family.modelType.equals(c.modelType())) {
            throw new IllegalArgumentException(c.source() + ": model_type '" + c.modelType() + "' is not "
                    + family.modelType);
        }
        boolean gemma = family == Family.GEMMA || family == Family.GEMMA2 || family == Family.GEMMA3;
        vocabSize = c.getLong("vocab_size");
        hiddenSize = c.getLong("hidden_size");
        intermediateSize = c.getLong("intermediate_size");
        numLayers = c.getInt("num_hidden_layers");
        numHeads = c.getLong("num_attention_heads");
        numKvHeads = c.getLong("num_key_value_heads", numHeads);
        if (numHeads % numKvHeads != 0) {
            throw new IllegalArgumentException(c.source() + ": num_attention_heads " + numHeads
                    + " is not divisible by num_key_value_heads " + numKvHeads);
        }
        if (!c.has("head_dim") && hiddenSize % numHeads != 0) {
            throw new IllegalArgumentException(c.source() + ": hidden_size " + hiddenSize
                    + " is not divisible by num_attention_heads " + numHeads + " and head_dim is not given");
        }
        headDim = c.getLong("head_dim", hiddenSize / numHeads);
        rmsNormEps = c.getDouble("rms_norm_eps", 1e-6);
        // Gemma reads hidden_activation (hidden_act is the legacy key it ignores)
        hiddenAct = gemma ? c.getString("hidden_activation", "gelu_pytorch_tanh") : c.getString("hidden_act", "silu");
        tieWordEmbeddings = c.getBoolean("tie_word_embeddings", gemma);
        attentionBias = c.getBoolean("attention_bias", false);
        if (attentionBias && family == Family.PHI3) {
            throw new IllegalArgumentException(c.source() + ": phi3 with attention_bias=true is not supported");
        }
        boolean scalar = family == Family.GEMMA2 || family == Family.GEMMA3;
        double queryPreAttn = scalar ? c.getDouble("query_pre_attn_scalar", headDim) : headDim;
        attentionScale = 1.0 / Math.sqrt(queryPreAttn);
        attnLogitSoftcap = scalar ? c.getDouble("attn_logit_softcapping", family == Family.GEMMA2 ? 50.0 : 0) : 0;
        finalLogitSoftcap = scalar ? c.getDouble("final_logit_softcapping", family == Family.GEMMA2 ? 30.0 : 0) : 0;
        if (family == Family.GEMMA3 && c.getBoolean("use_bidirectional_attention", false)) {
            throw new IllegalArgumentException(c.source() + ": gemma3_text with use_bidirectional_attention=true is "
                    + "not supported");
        }
        gemmaNorm = gemma;
        scaleEmbeddings = gemma;
        sandwichNorms = scalar;
        qkNorm = family == Family.QWEN3 || family == Family.GEMMA3;
        fused = family == Family.PHI3;
        slidingLayers = new boolean[numLayers];
        slidingWindow = slidingLayers(c, family, slidingLayers);
        double partial = family == Family.PHI3 ? c.getDouble("partial_rotary_factor", 1.0) : 1.0;
        rotaryDim = (long) (headDim * partial);
        if (rotaryDim <= 0 || rotaryDim % 2 != 0 || rotaryDim > headDim) {
            throw new IllegalArgumentException(c.source() + ": partial_rotary_factor " + partial + " gives "
                    + rotaryDim + " rotary dimensions of head_dim " + headDim + " (must be even and positive)");
        }
        RopeScaling rope = RopeScaling.of(c);
        if (family == Family.PHI3 && rope.isLongRope()) {
            RopeScaling.LongRope longRope = rope.longRope(rotaryDim);
            invFreq = longRope.shortInvFreq;
            longInvFreq = longRope.longInvFreq;
            originalMaxPositions = longRope.originalMaxPositions;
            ropeAttentionScaling = longRope.attentionScaling;
        } else {
            invFreq = rope.invFreq(rotaryDim);
            longInvFreq = null;
            originalMaxPositions = 0;
            ropeAttentionScaling = 1.0;
        }
        localInvFreq = family == Family.GEMMA3
                ? RopeScaling.scaledInvFreq(c.getDouble("rope_local_base_freq", 10000.0), rotaryDim, null) : null;
    }

    /** Which layers slide (from {@code layer_types}, else the family's rule); returns the window (0 = none). */
    private static long slidingLayers(ModelConfig c, Family family, boolean[] out) {
        long window = c.getLong("sliding_window", 0);
        if (family == Family.QWEN3 && !c.getBoolean("use_sliding_window", false)) {
            window = 0;
        }
        JsonNode types = c.json().get("layer_types");
        if (types != null && !types.isNull()) {
            if (!types.isArray() || types.size() != out.length) {
                throw new IllegalArgumentException(c.source() + ": layer_types must list one type per layer ("
                        + out.length + "), got " + types);
            }
            for (int i = 0; i < out.length; i++) {
                String t = types.get(i).asText();
                if (!"sliding_attention".equals(t) && !"full_attention".equals(t)) {
                    throw new IllegalArgumentException(c.source() + ": layer_types[" + i + "] '" + t
                            + "' is not supported; supported: sliding_attention, full_attention");
                }
                out[i] = "sliding_attention".equals(t) && window > 0;
            }
            return window;
        }
        switch (family) {
            case GEMMA2:
            case GEMMA3: {
                int pattern = family == Family.GEMMA2 ? 2 : c.getInt("sliding_window_pattern", 6);
                window = c.getLong("sliding_window", 4096);
                for (int i = 0; i < out.length; i++) {
                    out[i] = (i + 1) % pattern != 0;
                }
                return window;
            }
            case QWEN3: {
                if (!c.getBoolean("use_sliding_window", false) || window <= 0) {
                    return 0;
                }
                int from = c.getInt("max_window_layers", out.length);
                for (int i = from; i < out.length; i++) {
                    out[i] = true;
                }
                return window;
            }
            case PHI3:
                Arrays.fill(out, window > 0);
                return window;
            default:
                return 0;
        }
    }
}
