package dev.peft4j.models;

import dev.peft4j.nn.Init;

/** transformers' {@code Gemma2Model}: Gemma with pre- and post-norms around attention and MLP, soft-capped attention scores, {@code query_pre_attn_scalar} and a sliding window on alternate layers. */
public final class Gemma2Model extends RopeDecoderModel {
    /**
     * A model of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public Gemma2Model(ModelConfig config, Init init) {
        super(config, init, RopeDecoderConfig.Family.GEMMA2);
    }
}
