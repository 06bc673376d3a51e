package dev.peft4j.models;

import dev.peft4j.nn.Init;

/** transformers' {@code Gemma2ForCausalLM}: {@link Gemma2Model} and a language-model head (tied by default) with final-logit soft-capping. */
public final class Gemma2ForCausalLM extends RopeDecoderForCausalLM {
    /**
     * A model of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public Gemma2ForCausalLM(ModelConfig config, Init init) {
        super(config, init, new Gemma2Model(config, init));
    }
}
