package dev.peft4j.models;

import org.bytedeco.pytorch.Tensor;

/**
 * An encoder-decoder's decoding state (transformers' {@code EncoderDecoderCache}): the decoder's self-attention keys
 * and values of past positions, appended to by each forward, and each decoder layer's cross-attention keys and values
 * over the encoder's output, computed by the first forward and reused by the next ones (so a cache belongs to one
 * encoder output). Owns its tensors: close it when done. Not thread-safe: one decoding loop uses it.
 */
public final class Seq2SeqCache implements AutoCloseable {
    private final KVCache self;
    private final Tensor[] crossKeys;
    private final Tensor[] crossValues;

    /** An empty cache for a decoder of {@code numLayers} layers. */
    public Seq2SeqCache(int numLayers) {
        self = new KVCache(numLayers);
        crossKeys = new Tensor[numLayers];
        crossValues = new Tensor[numLayers];
    }

    /** Number of decoder positions cached. */
    public long length() {
        return self.length();
    }

    /** @return the number of decoder layers this cache holds */
    public int numLayers() {
        return crossKeys.length;
    }

    /** The decoder's self-attention cache. */
    public KVCache selfAttention() {
        return self;
    }

    /** Whether the cross-attention keys and values have been computed (by a first forward). */
    public boolean hasCrossAttention() {
        return crossKeys[crossKeys.length - 1] != null;
    }

    T5Stack.KvStore selfStore() {
        return self::append;
    }

    T5Stack.KvStore crossStore() {
        return new T5Stack.KvStore() {
            @Override
            public Tensor[] update(int layer, Tensor k, Tensor v) {
                crossKeys[layer] = ScopeUtil.detach(k.contiguous());
                crossValues[layer] = ScopeUtil.detach(v.contiguous());
                return new Tensor[] {crossKeys[layer], crossValues[layer]};
            }

            @Override
            public Tensor[] stored(int layer) {
                return crossKeys[layer] == null ? null : new Tensor[] {crossKeys[layer], crossValues[layer]};
            }
        };
    }

    @Override
    public void close() {
        self.close();
        for (int i = 0; i < crossKeys.length; i++) {
            if (crossKeys[i] != null) {
                crossKeys[i].close();
                crossValues[i].close();
                crossKeys[i] = null;
                crossValues[i] = null;
            }
        }
    }
}
