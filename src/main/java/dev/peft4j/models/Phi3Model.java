package dev.peft4j.models;

import dev.peft4j.nn.Init;

/** transformers' {@code Phi3Model}: fused {@code qkv_proj} and {@code gate_up_proj} (adapters target the fused modules, as PEFT sees them), long-RoPE ({@code longrope} / {@code su}) scaling with short and long factors, {@code partial_rotary_factor}, {@code sliding_window}. */
public final class Phi3Model extends RopeDecoderModel {
    /**
     * A model of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public Phi3Model(ModelConfig config, Init init) {
        super(config, init, RopeDecoderConfig.Family.PHI3);
    }
}
