package dev.peft4j.models;

import dev.peft4j.nn.Init;

/** transformers' {@code Gemma3TextModel} ({@code gemma3_text}): Gemma 2's layers with per-head q / k norms, a sliding window on all but every {@code sliding_window_pattern}-th layer, and local ({@code rope_local_base_freq}) and global ({@code rope_theta}, {@code rope_scaling}) RoPE. */
public final class Gemma3TextModel extends RopeDecoderModel {
    /**
     * A model of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public Gemma3TextModel(ModelConfig config, Init init) {
        super(config, init, RopeDecoderConfig.Family.GEMMA3);
    }
}
