package dev.peft4j.models;

import org.bytedeco.pytorch.Tensor;

/** A decoder with a language-model head: next-token logits, with an optional {@link KVCache}. */
public interface CausalLM extends AutoCloseable {
    /**
     * Logits {@code [batch, seq, vocab]} (a new tensor the caller owns) for {@code inputIds} {@code [batch, seq]}.
     *
     * @param attentionMask {@code [batch, past + seq]}, 1 for tokens and 0 for padding (left or right), or null
     * @param positionIds {@code [batch, seq]}, or null to derive them from the mask (see the model's docs)
     * @param cache past keys and values, appended to; or null for a forward without cache
     */
    Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache);

    /** An empty cache for this model. */
    KVCache newCache();

    ModelConfig config();

    @Override
    void close();
}
