package dev.peft4j.models;

import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;

/**
 * transformers' {@code T5ForConditionalGeneration} (and {@code MT5ForConditionalGeneration}): {@code shared}
 * embeddings, an {@code encoder} and a {@code decoder} stack (relative position buckets, bidirectional in the
 * encoder and causal in the decoder; cross-attention; {@code DenseReluDense} or its gated variant of T5 v1.1 / mT5)
 * and {@code lm_head}. With {@code tie_word_embeddings} (T5's default, not mT5's) the head is {@code shared} and the
 * decoder output is scaled by {@code d_model^-0.5} first, as transformers does.
 *
 * <p>Training-time dropout is not applied (the model is meant for inference with adapters), and float16's
 * activation clamping is not either: run T5 in float32 or bfloat16.
 */
public final class T5ForConditionalGeneration extends PreTrainedModel implements Seq2SeqLM {
    private final T5Config cfg;
    private final T5Stack encoder;
    private final T5Stack decoder;

    /**
     * A T5 / mT5 model of {@code config}'s shape, its parameters made by {@code init}.
     *
     * @throws IllegalArgumentException naming the config key that is missing, wrongly typed or unsupported
     */
    public T5ForConditionalGeneration(ModelConfig config, Init init) {
        super(config);
        cfg = new T5Config(config);
        registerModule("shared", new Embedding(cfg.vocabSize, cfg.dModel, init));
        encoder = registerModule("encoder", new T5Stack(cfg, false, init));
        decoder = registerModule("decoder", new T5Stack(cfg, true, init));
        registerModule("lm_head", new Linear(cfg.dModel, cfg.vocabSize, false, init));
        Tensor shared = getParameter("shared.weight");
        setParameter("encoder.embed_tokens.weight", shared, false).close();
        setParameter("decoder.embed_tokens.weight", shared, false).close();
        if (cfg.tieWordEmbeddings) {
            setParameter("lm_head.weight", shared, false).close();
        }
    }

    @Override
    public String baseModelPrefix() {
        return "transformer";
    }

    @Override
    public boolean isBaseModel() {
        return false;
    }

    @Override
    public Map<String, String> tiedKeys() {
        Map<String, String> tied = new LinkedHashMap<>();
        tied.put("encoder.embed_tokens.weight", "shared.weight");
        tied.put("decoder.embed_tokens.weight", "shared.weight");
        if (cfg.tieWordEmbeddings) {
            tied.put("lm_head.weight", "shared.weight");
        }
        return tied;
    }

    @Override
    protected boolean alignsDevices() {
        return true;
    }

    @Override
    protected List<Pattern> ignoredUnexpectedKeys() {
        // transformers' _keys_to_ignore_on_load_unexpected: old checkpoints carry a bias the cross-attention never uses
        return List.of(Pattern.compile("decoder\\.block\\.0\\.layer\\.1\\.EncDecAttention\\.relative_attention_bias\\.weight"));
    }

    @Override
    public Tensor encode(Tensor inputIds, Tensor attentionMask) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Attention.checkIds("input_ids", inputIds);
            Attention.checkMask(attentionMask, inputIds.size(0), inputIds.size(1));
            Tensor out;
            try (PointerScope scope = new PointerScope()) {
                out = ScopeUtil.keep(scope, encoder.forward(inputIds, attentionMask, null, null, null, deviceMapped()));
            }
            return ScopeUtil.handToCaller(out);
        } finally {
            hotswapGuard.unlock();
        }
    }

    @Override
    public Tensor decode(Tensor decoderInputIds, Tensor encoderHidden, Tensor attentionMask, Seq2SeqCache cache) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Attention.checkIds("decoder_input_ids", decoderInputIds);
            long batch = decoderInputIds.size(0);
            if (encoderHidden == null || encoderHidden.dim() != 3 || encoderHidden.size(0) != batch
                    || encoderHidden.size(2) != cfg.dModel) {
                throw new IllegalArgumentException("encoder hidden states must be [batch=" + batch + ", src, d_model="
                        + cfg.dModel + "], got " + (encoderHidden == null ? "null"
                        : java.util.Arrays.toString(encoderHidden.shape())));
            }
            Attention.checkMask(attentionMask, batch, encoderHidden.size(1));
            if (cache != null && cache.numLayers() != cfg.numDecoderLayers) {
                throw new IllegalArgumentException("cache has " + cache.numLayers() + " layers, the decoder "
                        + cfg.numDecoderLayers);
            }
            Tensor logits;
            try (PointerScope scope = new PointerScope()) {
                Tensor h = decoder.forward(decoderInputIds, null, encoderHidden, attentionMask, cache, deviceMapped());
                if (cfg.tieWordEmbeddings) {
                    h = h.mul(new Scalar(Math.pow(cfg.dModel, -0.5)));
                }
                logits = ScopeUtil.keep(scope, layer("lm_head").forward(aligned(h, child("lm_head"))));
            }
            return ScopeUtil.handToCaller(logits);
        } finally {
            hotswapGuard.unlock();
        }
    }

    @Override
    public Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor decoderInputIds) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor logits;
            try (PointerScope scope = new PointerScope()) {
                Tensor enc = encode(inputIds, attentionMask);
                logits = ScopeUtil.keep(scope, decode(decoderInputIds, enc, attentionMask, null));
            }
            return ScopeUtil.handToCaller(logits);
        } finally {
            hotswapGuard.unlock();
        }
    }

    @Override
    public Seq2SeqCache newCache() {
        return new Seq2SeqCache(cfg.numDecoderLayers);
    }

    @Override
    public long decoderStartTokenId() {
        return cfg.decoderStartTokenId;
    }

    /** The end-of-sequence id of the config ({@code eos_token_id}, 1 by default). */
    public long eosTokenId() {
        return cfg.eosTokenId;
    }

    /** The padding id of the config ({@code pad_token_id}, 0 by default). */
    public long padTokenId() {
        return cfg.padTokenId;
    }
}
