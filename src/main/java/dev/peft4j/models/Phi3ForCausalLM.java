package dev.peft4j.models;

import dev.peft4j.nn.Init;

/** transformers' {@code Phi3ForCausalLM}: {@link Phi3Model} and a language-model head. */
public final class Phi3ForCausalLM extends RopeDecoderForCausalLM {
    /**
     * A model of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public Phi3ForCausalLM(ModelConfig config, Init init) {
        super(config, init, new Phi3Model(config, init));
    }
}
