package dev.peft4j.models;

import org.bytedeco.pytorch.Tensor;

/**
 * An encoder-decoder with a language-model head (T5, mT5): the encoder reads the input ids once, the decoder
 * produces next-token logits over its own ids, attending to the encoder's output.
 */
public interface Seq2SeqLM extends AutoCloseable {
    /**
     * The encoder's last hidden states {@code [batch, src, d_model]} (a new tensor the caller owns).
     *
     * @param attentionMask {@code [batch, src]}, 1 for tokens and 0 for padding, or null
     */
    Tensor encode(Tensor inputIds, Tensor attentionMask);

    /**
     * The decoder's logits {@code [batch, seq, vocab]} (a new tensor the caller owns) for {@code decoderInputIds}
     * {@code [batch, seq]} (unpadded, starting with the decoder start token), over {@code encoderHidden} from
     * {@link #encode}.
     *
     * @param attentionMask the encoder's attention mask, or null
     * @param cache the decoder's past (appended to), or null for a forward without cache
     */
    Tensor decode(Tensor decoderInputIds, Tensor encoderHidden, Tensor attentionMask, Seq2SeqCache cache);

    /** {@link #encode} then {@link #decode} without cache: the decoder's logits {@code [batch, seq, vocab]}. */
    Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor decoderInputIds);

    /** An empty decoder cache for this model. */
    Seq2SeqCache newCache();

    /** The id the decoder starts from ({@code decoder_start_token_id}, T5's pad id 0 by default). */
    long decoderStartTokenId();

    /** @return the model's {@code config.json}, as loaded */
    ModelConfig config();

    @Override
    void close();
}
