package dev.peft4j.models;

import dev.peft4j.nn.Init;

/** transformers' {@code Qwen3Model}: Llama's layers with a per-head RMSNorm on queries and keys before RoPE, {@code head_dim} from the config, and a sliding window on layers from {@code max_window_layers} when {@code use_sliding_window}. */
public final class Qwen3Model extends RopeDecoderModel {
    /**
     * A model of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public Qwen3Model(ModelConfig config, Init init) {
        super(config, init, RopeDecoderConfig.Family.QWEN3);
    }
}
