package dev.peft4j.models;

import dev.peft4j.nn.Init;

/** transformers' {@code Gemma3ForCausalLM} (text-only Gemma 3, {@code gemma3_text}): {@link Gemma3TextModel} and a language-model head (tied by default). */
public final class Gemma3ForCausalLM extends RopeDecoderForCausalLM {
    /**
     * A model of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public Gemma3ForCausalLM(ModelConfig config, Init init) {
        super(config, init, new Gemma3TextModel(config, init));
    }
}
