package dev.peft4j.models;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;

/**
 * Keys and values of past positions for a decoder, one pair per layer, each {@code [batch, kv_heads, length, head_dim]}.
 * A forward given a cache attends over the cached positions plus the new ones and appends the new ones.
 * Owns its tensors: close it when done.
 */
public final class KVCache implements AutoCloseable {
    private final Tensor[] keys;
    private final Tensor[] values;
    private long length;

    /** An empty cache for a model of {@code numLayers} decoder layers. */
    public KVCache(int numLayers) {
        keys = new Tensor[numLayers];
        values = new Tensor[numLayers];
    }

    /** Number of positions cached (equal across layers once a forward has completed). */
    public long length() {
        return length;
    }

    /** @return the number of decoder layers this cache holds */
    public int numLayers() {
        return keys.length;
    }

    /** The cached keys of {@code layer}, or null before the first forward. */
    public Tensor keys(int layer) {
        return keys[layer];
    }

    /** The cached values of {@code layer}, or null before the first forward. */
    public Tensor values(int layer) {
        return values[layer];
    }

    /**
     * Appends {@code k}, {@code v} ({@code [B, H, T, D]}) to layer {@code layer} and returns the full keys and values
     * (owned by the cache). The previous tensors are freed.
     */
    Tensor[] append(int layer, Tensor k, Tensor v) {
        Tensor nk;
        Tensor nv;
        if (keys[layer] == null) {
            nk = k.contiguous();
            nv = v.contiguous();
        } else {
            try (TensorVector kv = new TensorVector(keys[layer], k); TensorVector vv = new TensorVector(values[layer], v)) {
                nk = torch.cat(kv, 2);
                nv = torch.cat(vv, 2);
            }
            keys[layer].close();
            values[layer].close();
        }
        ScopeUtil.detach(nk);
        ScopeUtil.detach(nv);
        keys[layer] = nk;
        values[layer] = nv;
        if (layer == keys.length - 1) {
            length = nk.size(2);
        }
        return new Tensor[] {nk, nv};
    }

    /** Forgets every position from {@code newLength} on (to re-decode from there, or reuse a prefilled prompt). */
    public void truncate(long newLength) {
        if (newLength < 0 || newLength > length) {
            throw new IllegalArgumentException("cannot truncate a cache of " + length + " positions to " + newLength);
        }
        for (int i = 0; i < keys.length; i++) {
            if (keys[i] != null) {
                Tensor k = ScopeUtil.detach(keys[i].narrow(2, 0, newLength));
                Tensor v = ScopeUtil.detach(values[i].narrow(2, 0, newLength));
                keys[i].close();
                values[i].close();
                keys[i] = k;
                values[i] = v;
            }
        }
        length = newLength;
    }

    @Override
    public void close() {
        for (int i = 0; i < keys.length; i++) {
            if (keys[i] != null) {
                keys[i].close();
                values[i].close();
                keys[i] = null;
                values[i] = null;
            }
        }
        length = 0;
    }
}
