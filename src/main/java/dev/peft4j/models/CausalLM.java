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

    /** @return the model's {@code config.json}, as loaded */
    ModelConfig config();

    /**
     * Whether this model implements {@link #newSlotCache} and {@link #forwardSlots} (the RoPE decoders do: Llama,
     * Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3, Phi-3).
     */
    default boolean supportsSlotCache() {
        return false;
    }

    /**
     * A preallocated serving cache of {@code slots} sequences of at most {@code maxLength} positions each, of the
     * model's dtype.
     *
     * @throws UnsupportedOperationException when {@link #supportsSlotCache()} is false
     */
    default SlotKVCache newSlotCache(int slots, int maxLength) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no slot KV cache (only the RoPE "
                + "decoders have one: the Llama family, Qwen3, Gemma, Phi-3)");
    }

    /**
     * Next-token logits {@code [batch, vocab]} (a new tensor the caller owns) of each row's last position, for
     * {@code inputIds} {@code [batch, seq]} continuing the sequences held in a {@link SlotKVCache}: row {@code i}
     * continues slot {@code slotOf[i]}, which holds {@code past[i]} positions; its tokens take positions
     * {@code past[i] ..}, their keys and values are written into the slot, and they attend to that slot only. Rows
     * of different lengths share the forward. Call it from one thread at a time per cache.
     *
     * @throws IllegalArgumentException when a row would pass the cache's max length, or a slot is out of range
     * @throws UnsupportedOperationException when {@link #supportsSlotCache()} is false
     */
    default Tensor forwardSlots(Tensor inputIds, SlotKVCache cache, int[] slotOf, long[] past) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no slot KV cache (only the RoPE "
                + "decoders have one: the Llama family, Qwen3, Gemma, Phi-3)");
    }

    @Override
    void close();
}
