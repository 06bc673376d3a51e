package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * {@link RopeScaling}: each RoPE kind's config gives transformers' inverse frequencies (worked out by hand below from
 * its formulas, head_dim 8 and theta 10000, so the default frequencies are 1, 0.1, 0.01, 0.001), and the three
 * config readers (Llama / Mistral / Qwen2 and the Gemma / Qwen3 / Phi-3 stack; Mixtral calls the same method, which
 * MixtralGoldenTest covers end to end) all take them from it.
 */
class RopeScalingTest {
    /** A config of {@code modelType} with head_dim 8 and the RoPE keys given. */
    private static ModelConfig config(String modelType, String ropeKeys) {
        return ModelConfig.parse("{\"model_type\": \"" + modelType + "\", \"vocab_size\": 8, \"hidden_size\": 16,"
                + " \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
                + " \"max_position_embeddings\": 64" + (ropeKeys.isEmpty() ? "" : ", " + ropeKeys) + "}");
    }

    static Stream<Arguments> kinds() {
        // llama3 with original_max_position_embeddings 1000, low 1, high 4: wavelengths 2π·{1, 10, 100, 1000};
        // the first two are under 1000/4 (kept), 628.3 is in the band (smooth = (1000/628.32 - 1) / 3 = 0.197183,
        // 0.01 · (0.802817/8 + 0.197183) = 0.00297535), 6283 is over 1000 (divided by 8)
        String llama3 = "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
                + " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 1000}";
        return Stream.of(
                Arguments.of("no rope_scaling", "", new float[] {1f, 0.1f, 0.01f, 0.001f}),
                Arguments.of("null rope_scaling", "\"rope_scaling\": null", new float[] {1f, 0.1f, 0.01f, 0.001f}),
                Arguments.of("default", "\"rope_scaling\": {\"rope_type\": \"default\"}",
                        new float[] {1f, 0.1f, 0.01f, 0.001f}),
                Arguments.of("theta 100", "\"rope_theta\": 100.0", new float[] {1f, 0.31622776f, 0.1f, 0.031622776f}),
                Arguments.of("linear", "\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 4.0}",
                        new float[] {0.25f, 0.025f, 0.0025f, 0.00025f}),
                Arguments.of("linear, legacy type key", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}",
                        new float[] {0.5f, 0.05f, 0.005f, 0.0005f}),
                Arguments.of("rope_type wins over type",
                        "\"rope_scaling\": {\"rope_type\": \"linear\", \"type\": \"dynamic\", \"factor\": 2.0}",
                        new float[] {0.5f, 0.05f, 0.005f, 0.0005f}),
                Arguments.of("llama3", "\"rope_scaling\": " + llama3,
                        new float[] {1f, 0.1f, 0.00297535f, 0.000125f}),
                Arguments.of("transformers 5 rope_parameters, theta inside",
                        "\"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 2.0, \"rope_theta\": 100.0}",
                        new float[] {0.5f, 0.15811388f, 0.05f, 0.015811388f}),
                Arguments.of("rope_parameters theta wins over rope_theta", "\"rope_theta\": 10000.0,"
                        + " \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 100.0}",
                        new float[] {1f, 0.31622776f, 0.1f, 0.031622776f}),
                Arguments.of("rope_parameters without theta", "\"rope_theta\": 100.0,"
                        + " \"rope_parameters\": {\"rope_type\": \"default\"}",
                        new float[] {1f, 0.31622776f, 0.1f, 0.031622776f}),
                Arguments.of("rope_scaling equal to rope_parameters", "\"rope_scaling\": " + llama3
                        + ", \"rope_parameters\": " + llama3, new float[] {1f, 0.1f, 0.00297535f, 0.000125f}));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("kinds")
    void eachKindGivesTransformersFrequenciesInEveryReader(String what, String ropeKeys, float[] expected) {
        float[] parsed = RopeScaling.of(config("qwen3", ropeKeys)).invFreq(8);
        for (int i = 0; i < expected.length; i++) {
            assertEquals(expected[i], parsed[i], expected[i] * 2e-6f, what + ": frequency " + i);
        }
        assertArrayEquals(parsed, new LlamaConfig(config("llama", ropeKeys)).invFreq, what + ": LlamaConfig");
        assertArrayEquals(parsed, new RopeDecoderConfig(config("qwen3", ropeKeys), RopeDecoderConfig.Family.QWEN3)
                .invFreq, what + ": RopeDecoderConfig");
    }

    @Test
    void longRopeGivesShortAndLongFrequenciesAndTheAttentionFactor() {
        // Phi-3, rotary dim 4: short {1, 1.5} and long {2, 5.5} divide the default {1, 0.01}; the factor is
        // max_position_embeddings / original = 64 / 4 = 16, so the attention factor is sqrt(1 + ln 16 / ln 4) = √3
        ModelConfig c = ModelConfig.parse("{\"model_type\": \"phi3\", \"vocab_size\": 8, \"hidden_size\": 8,"
                + " \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
                + " \"max_position_embeddings\": 64, \"original_max_position_embeddings\": 4,"
                + " \"rope_scaling\": {\"type\": \"longrope\", \"short_factor\": [1.0, 1.5], \"long_factor\": [2.0, 5.5]}}");
        RopeDecoderConfig phi3 = new RopeDecoderConfig(c, RopeDecoderConfig.Family.PHI3);
        assertArrayEquals(new float[] {1f, 1f / 150f}, phi3.invFreq, 1e-8f);
        assertArrayEquals(new float[] {0.5f, 1f / 550f}, phi3.longInvFreq, 1e-8f);
        assertEquals(4, phi3.originalMaxPositions);
        assertEquals(Math.sqrt(3), phi3.ropeAttentionScaling, 1e-12);

        // without original_max_position_embeddings: rope_scaling.factor; an explicit attention_factor wins
        ModelConfig factor = ModelConfig.parse(c.json().toString().replace("\"original_max_position_embeddings\":4,", "")
                .replace("\"type\":\"longrope\"", "\"type\":\"su\",\"factor\":4.0"));
        RopeScaling.LongRope lr = RopeScaling.of(factor).longRope(4);
        assertEquals(64, lr.originalMaxPositions);
        assertEquals(Math.sqrt(1 + Math.log(4) / Math.log(64)), lr.attentionScaling, 1e-12);
        ModelConfig explicit = ModelConfig.parse(c.json().toString()
                .replace("\"type\":\"longrope\"", "\"rope_type\":\"longrope\",\"attention_factor\":1.25"));
        assertEquals(1.25, RopeScaling.of(explicit).longRope(4).attentionScaling);

        // a Llama-family model has no long-RoPE switch: refused, naming the kind
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new LlamaConfig(ModelConfig.parse(c.json().toString().replace("\"phi3\"", "\"llama\""))));
        assertTrue(e.getMessage().contains("'longrope'"), e.getMessage());
        ModelConfig shortList = ModelConfig.parse(c.json().toString().replace("[1.0,1.5]", "[1.0]"));
        e = assertThrows(IllegalArgumentException.class,
                () -> new RopeDecoderConfig(shortList, RopeDecoderConfig.Family.PHI3));
        assertTrue(e.getMessage().contains("rope_scaling.short_factor must be a list of 2"), e.getMessage());
    }

    @Test
    void gemma3LocalLayersUseRopeLocalBaseFreqUnscaled() {
        ModelConfig c = ModelConfig.parse("{\"model_type\": \"gemma3_text\", \"vocab_size\": 8, \"hidden_size\": 16,"
                + " \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"head_dim\": 8,"
                + " \"rope_local_base_freq\": 100.0, \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 2.0}}");
        RopeDecoderConfig g = new RopeDecoderConfig(c, RopeDecoderConfig.Family.GEMMA3);
        assertArrayEquals(new float[] {1f, 0.31622776f, 0.1f, 0.031622776f}, g.localInvFreq, 1e-7f);
        assertArrayEquals(new float[] {0.5f, 0.05f, 0.005f, 0.0005f}, g.invFreq, 1e-8f);
        assertNull(new RopeDecoderConfig(config("qwen3", ""), RopeDecoderConfig.Family.QWEN3).localInvFreq);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("refusals")
    void unsupportedOrMalformedRopeKeysAreRefusedNamingTheKey(String ropeKeys, String expectedInMessage) {
        for (ModelConfig c : new ModelConfig[] {config("llama", ropeKeys), config("qwen3", ropeKeys)}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> {
                if ("llama".equals(c.modelType())) {
                    new LlamaConfig(c);
                } else {
                    new RopeDecoderConfig(c, RopeDecoderConfig.Family.QWEN3);
                }
            });
            assertTrue(e.getMessage().contains(expectedInMessage), e.getMessage());
        }
    }

    static Stream<Arguments> refusals() {
        return Stream.of(
                Arguments.of("\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}",
                        "rope_scaling type 'yarn' is not supported; supported: default, linear, llama3"),
                Arguments.of("\"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 4.0}", "type 'dynamic'"),
                Arguments.of("\"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4.0}",
                        "rope_parameters type 'yarn'"),
                Arguments.of("\"rope_scaling\": {\"rope_type\": \"linear\"}", "rope_scaling.factor is required"),
                Arguments.of("\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
                        + " \"high_freq_factor\": 4.0}", "rope_scaling.original_max_position_embeddings is required"),
                Arguments.of("\"rope_scaling\": \"linear\"", "rope_scaling must be an object"),
                Arguments.of("\"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 2.0, \"rope_theta\": \"x\"}",
                        "rope_parameters.rope_theta must be a number"),
                Arguments.of("\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 2.0},"
                        + " \"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 4.0}",
                        "both rope_scaling and rope_parameters"),
                Arguments.of("\"rope_parameters\": {\"full_attention\": {\"rope_type\": \"default\"},"
                        + " \"sliding_attention\": {\"rope_type\": \"default\"}}", "keyed by layer type"));
    }
}
