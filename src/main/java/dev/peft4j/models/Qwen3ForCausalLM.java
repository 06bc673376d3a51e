package dev.peft4j.models;

import dev.peft4j.nn.Init;

/** transformers' {@code Qwen3ForCausalLM}: {@link Qwen3Model} and a language-model head. */
public final class Qwen3ForCausalLM extends RopeDecoderForCausalLM {
    /**
     * A model of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public Qwen3ForCausalLM(ModelConfig config, Init init) {
        super(config, init, new Qwen3Model(config, init));
    }
}
