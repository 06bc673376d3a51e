package dev.peft4j.models;

import dev.peft4j.nn.Init;

/** transformers' {@code GemmaForCausalLM}: {@link GemmaModel} and a language-model head (tied by default). */
public final class GemmaForCausalLM extends RopeDecoderForCausalLM {
    /**
     * A model of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public GemmaForCausalLM(ModelConfig config, Init init) {
        super(config, init, new GemmaModel(config, init));
    }
}
