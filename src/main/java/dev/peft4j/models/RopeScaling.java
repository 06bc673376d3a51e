package dev.peft4j.models;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * The RoPE parameters of a config as transformers reads them: {@code rope_theta} and the {@code rope_scaling} dict of
 * transformers 4 (its kind under {@code rope_type}, or the legacy {@code type}; none means {@code default}), or the
 * flat {@code rope_parameters} dict of transformers 5 (which carries {@code rope_theta} itself). Computes the inverse
 * frequencies of {@code default}, {@code linear}, {@code llama3} and {@code longrope}; {@code dynamic}, {@code yarn}
 * and any other kind are refused with the kind named.
 */
final class RopeScaling {
    /** The kinds whose frequencies {@link #invFreq} computes. */
    static final String STATIC_KINDS = "default, linear, llama3";

    private final ModelConfig config;
    /** The dict the scaling keys come from, or null when there is none. */
    private final JsonNode params;
    /** {@code rope_scaling} or {@code rope_parameters}: which key {@link #params} is, for messages. */
    private final String paramsKey;
    /** The scaling kind: {@code default}, {@code linear}, {@code llama3}, {@code longrope}, {@code su}, ... */
    final String type;
    final double theta;

    private RopeScaling(ModelConfig config, JsonNode params, String paramsKey, String type, double theta) {
        this.config = config;
        this.params = params;
        this.paramsKey = paramsKey;
        this.type = type;
        this.theta = theta;
    }

    /**
     * Reads {@code config}'s RoPE keys.
     *
     * @throws IllegalArgumentException naming the file and key when {@code rope_scaling} or {@code rope_parameters}
     *     is not an object, when both are given and differ, or when {@code rope_parameters} is keyed by layer type
     */
    static RopeScaling of(ModelConfig config) {
        JsonNode scaling = dict(config, "rope_scaling");
        JsonNode parameters = dict(config, "rope_parameters");
        if (scaling != null && parameters != null && !scaling.equals(parameters)) {
            throw new IllegalArgumentException(config.source() + ": both rope_scaling and rope_parameters are given "
                    + "and differ; give one of them");
        }
        double topTheta = config.getDouble("rope_theta", 10000.0);
        if (parameters != null) {
            if (parameters.has("full_attention") || parameters.has("sliding_attention")) {
                throw new IllegalArgumentException(config.source() + ": rope_parameters keyed by layer type "
                        + "(full_attention / sliding_attention) is not supported; give rope_theta and rope_scaling");
            }
            JsonNode t = parameters.get("rope_theta");
            if (t != null && !t.isNull() && !t.isNumber()) {
                throw new IllegalArgumentException(config.source() + ": rope_parameters.rope_theta must be a number, "
                        + "got " + t);
            }
            double theta = t == null || t.isNull() ? topTheta : t.asDouble();
            return new RopeScaling(config, parameters, "rope_parameters", kind(parameters), theta);
        }
        return new RopeScaling(config, scaling, "rope_scaling", scaling == null ? "default" : kind(scaling), topTheta);
    }

    private static JsonNode dict(ModelConfig config, String key) {
        JsonNode n = config.json().get(key);
        if (n == null || n.isNull()) {
            return null;
        }
        if (!n.isObject()) {
            throw new IllegalArgumentException(config.source() + ": " + key + " must be an object, got " + n);
        }
        return n;
    }

    /** transformers' {@code rope_scaling.get("rope_type", rope_scaling.get("type"))}, {@code default} when neither. */
    private static String kind(JsonNode dict) {
        return dict.hasNonNull("rope_type") ? dict.get("rope_type").asText()
                : dict.hasNonNull("type") ? dict.get("type").asText() : "default";
    }

    /** Whether the kind is long-RoPE ({@code longrope}, or Phi-3's earlier name {@code su}). */
    boolean isLongRope() {
        return "longrope".equals(type) || "su".equals(type);
    }

    /**
     * transformers' inverse frequencies over {@code dim} rotary dimensions for the {@code default}, {@code linear}
     * (frequencies divided by {@code factor}) and {@code llama3} (long wavelengths divided by {@code factor}, a smooth
     * band between) kinds, in float32 as torch computes them.
     *
     * @throws IllegalArgumentException naming the kind when it is another one, or the key that is missing
     */
    float[] invFreq(long dim) {
        float[] inv = scaledInvFreq(theta, dim, null);
        switch (type) {
            case "default":
                return inv;
            case "linear": {
                double factor = number("factor");
                for (int i = 0; i < inv.length; i++) {
                    inv[i] = (float) (inv[i] / factor);
                }
                return inv;
            }
            case "llama3": {
                double factor = number("factor");
                double low = number("low_freq_factor");
                double high = number("high_freq_factor");
                double oldCtx = number("original_max_position_embeddings");
                double lowWavelen = oldCtx / low;
                double highWavelen = oldCtx / high;
                for (int i = 0; i < inv.length; i++) {
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
                throw new IllegalArgumentException(config.source() + ": " + paramsKey + " type '" + type
                        + "' is not supported; supported: " + STATIC_KINDS);
        }
    }

    /** Long-RoPE's two frequency sets, the length that switches between them, and its cos / sin factor. */
    static final class LongRope {
        final float[] shortInvFreq;
        final float[] longInvFreq;
        /** Sequences longer than this use {@link #longInvFreq}. */
        final long originalMaxPositions;
        final double attentionScaling;

        private LongRope(float[] shortInvFreq, float[] longInvFreq, long originalMaxPositions, double scaling) {
            this.shortInvFreq = shortInvFreq;
            this.longInvFreq = longInvFreq;
            this.originalMaxPositions = originalMaxPositions;
            this.attentionScaling = scaling;
        }
    }

    /**
     * transformers' long-RoPE over {@code dim} rotary dimensions: {@code short_factor} and {@code long_factor}
     * divide the default frequencies; the attention factor is {@code attention_factor}, else
     * {@code sqrt(1 + ln(factor) / ln(original_max_position_embeddings))} with the factor the ratio of
     * {@code max_position_embeddings} to {@code original_max_position_embeddings} when the config has the latter
     * (Phi-3), else {@code factor}.
     *
     * @throws IllegalArgumentException naming the key that is missing or of the wrong length
     */
    LongRope longRope(long dim) {
        float[] shortF = factors("short_factor", dim / 2);
        float[] longF = factors("long_factor", dim / 2);
        long maxPos = config.getLong("max_position_embeddings");
        long originalMax;
        double factor;
        if (config.has("original_max_position_embeddings")) {
            originalMax = config.getLong("original_max_position_embeddings");
            factor = (double) maxPos / originalMax;
        } else if ("rope_parameters".equals(paramsKey) && params.hasNonNull("original_max_position_embeddings")) {
            originalMax = (long) number("original_max_position_embeddings");
            factor = (double) maxPos / originalMax;
        } else {
            originalMax = maxPos;
            factor = params.hasNonNull("factor") ? number("factor") : 1.0;
        }
        double scaling;
        if (params.hasNonNull("attention_factor")) {
            scaling = number("attention_factor");
        } else {
            scaling = factor <= 1.0 ? 1.0 : Math.sqrt(1 + Math.log(factor) / Math.log(originalMax));
        }
        return new LongRope(scaledInvFreq(theta, dim, shortF), scaledInvFreq(theta, dim, longF), originalMax,
                scaling);
    }

    private double number(String key) {
        JsonNode n = params.get(key);
        if (n == null || !n.isNumber()) {
            throw new IllegalArgumentException(config.source() + ": " + paramsKey + "." + key
                    + " is required (a number), got " + n);
        }
        return n.asDouble();
    }

    private float[] factors(String key, long expected) {
        JsonNode n = params.get(key);
        if (n == null || !n.isArray() || n.size() != expected) {
            throw new IllegalArgumentException(config.source() + ": " + paramsKey + "." + key + " must be a list of "
                    + expected + " numbers (rotary dims / 2), got " + n);
        }
        float[] f = new float[(int) expected];
        for (int i = 0; i < f.length; i++) {
            if (!n.get(i).isNumber()) {
                throw new IllegalArgumentException(config.source() + ": " + paramsKey + "." + key + "[" + i
                        + "] must be a number, got " + n.get(i));
            }
            f[i] = (float) n.get(i).asDouble();
        }
        return f;
    }

    /** {@code 1 / (factor · theta^(2i/dim))} in float32 as torch computes it; factor 1 when {@code factors} is null. */
    static float[] scaledInvFreq(double theta, long dim, float[] factors) {
        float[] inv = new float[(int) (dim / 2)];
        for (int i = 0; i < inv.length; i++) {
            float exponent = (float) (2 * i) / (float) dim;
            float pow = (float) Math.pow(theta, exponent);
            inv[i] = factors == null ? (float) (1.0 / pow) : 1.0f / (factors[i] * pow);
        }
        return inv;
    }
}
