package dev.peft4j.models;

import dev.peft4j.nn.Init;

/** transformers' {@code GemmaModel}: embeddings scaled by √hidden, GeGLU MLP, RMSNorm with {@code 1 + weight}. */
public final class GemmaModel extends RopeDecoderModel {
    /**
     * A model of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public GemmaModel(ModelConfig config, Init init) {
        super(config, init, RopeDecoderConfig.Family.GEMMA);
    }
}
