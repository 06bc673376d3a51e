package dev.peft4j.models;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A key/value cache for serving: preallocated once, one <em>slot</em> per concurrent sequence, written in place.
 *
 * <p>Layout, per layer: keys and values are each one contiguous tensor {@code [slots, kv_heads, max_length,
 * head_dim]} of the model's dtype (row-major: a slot's positions of one head are {@code max_length × head_dim}
 * consecutive elements). A forward over some slots ({@link CausalLM#forwardSlots}) gives each batch row a slot index
 * and the number of positions it has cached ({@code past}); its new keys and values are written at positions
 * {@code past .. past + new - 1} of that slot (one {@code index_copy_} per layer, no concatenation) and attention
 * reads positions {@code 0 .. past + new - 1} of each row's slot, a per-row mask hiding the positions of shorter
 * rows. A one-token step on the native decode path ({@link dev.peft4j.kernels.DecodeKernels#attention}) writes and
 * reads the same memory directly, without a mask or a gather: element {@code (slot, head, pos, d)} of layer
 * {@code l}'s keys is at {@code keys(l).data_ptr() + ((slot·kv_heads + head)·max_length + pos)·head_dim + d}.
 *
 * <p>Invariant kept by its users: positions at or past a slot's length hold zeros or finite values of an earlier
 * sequence (masked out, never read as data); {@link #clearSlot} zeroes a slot when its sequence ends.
 *
 * <p>Memory is {@code 2 · layers · slots · kv_heads · max_length · head_dim · element size}, all allocated here.
 * Not thread-safe: one thread (a serving engine's scheduler) uses it. Owns its tensors: close it.
 */
public final class SlotKVCache implements AutoCloseable {
    private final Tensor[] keys;
    private final Tensor[] values;
    private final int slots;
    private final int maxLength;
    private final long kvHeads;
    private final long headDim;

    /**
     * Zero-filled storage for {@code slots} sequences of at most {@code maxLength} positions.
     *
     * @throws IllegalArgumentException for a size below 1
     */
    public SlotKVCache(int numLayers, int slots, int maxLength, long kvHeads, long headDim, ScalarType dtype) {
        this(numLayers, slots, maxLength, kvHeads, headDim, dtype, null);
    }

    /**
     * As {@link #SlotKVCache(int, int, int, long, long, ScalarType)}, layer {@code l}'s keys and values on
     * {@code devices[l]} (beside that layer's weights, for a model placed across devices; null: the CPU).
     *
     * @throws IllegalArgumentException for a size below 1, or devices not one per layer
     */
    public SlotKVCache(int numLayers, int slots, int maxLength, long kvHeads, long headDim, ScalarType dtype,
            org.bytedeco.pytorch.Device[] devices) {
        if (devices != null && devices.length != numLayers) {
            throw new IllegalArgumentException("slot cache of " + numLayers + " layers given " + devices.length
                    + " devices");
        }
        if (numLayers < 1 || slots < 1 || maxLength < 1 || kvHeads < 1 || headDim < 1) {
            throw new IllegalArgumentException("slot cache sizes must be ≥ 1: layers=" + numLayers + " slots=" + slots
                    + " maxLength=" + maxLength + " kvHeads=" + kvHeads + " headDim=" + headDim);
        }
        this.slots = slots;
        this.maxLength = maxLength;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        keys = new Tensor[numLayers];
        values = new Tensor[numLayers];
        long[] shape = {slots, kvHeads, maxLength, headDim};
        for (int l = 0; l < numLayers; l++) {
            try (TensorOptions o = new TensorOptions(dtype); TensorOptions on = devices == null || devices[l] == null ? null
                    : o.device(new org.bytedeco.pytorch.DeviceOptional(devices[l]))) {
                keys[l] = ScopeUtil.detach(torch.zeros(shape, on == null ? o : on));
                values[l] = ScopeUtil.detach(torch.zeros(shape, on == null ? o : on));
            }
        }
    }

    /** Bytes held by the cache (keys and values of every layer). */
    public static long bytes(int numLayers, int slots, int maxLength, long kvHeads, long headDim, ScalarType dtype) {
        long elem = dtype == ScalarType.Float || dtype == ScalarType.Int ? 4 : dtype == ScalarType.Double
                || dtype == ScalarType.Long ? 8 : 2;
        return 2L * numLayers * slots * kvHeads * maxLength * headDim * elem;
    }

    /** @return the number of request slots (rows of the first dimension) */
    public int slots() {
        return slots;
    }

    /** @return the positions each slot holds, prompt and generated tokens together */
    public int maxLength() {
        return maxLength;
    }

    /** @return the number of decoder layers cached */
    public int numLayers() {
        return keys.length;
    }

    /** Layer {@code layer}'s keys {@code [slots, kv_heads, max_length, head_dim]} (the cache's own tensor). */
    public Tensor keys(int layer) {
        return keys[layer];
    }

    /** Layer {@code layer}'s values, laid out as {@link #keys}. */
    public Tensor values(int layer) {
        return values[layer];
    }

    /** Zeroes slot {@code slot} of every layer (its sequence ended). */
    public void clearSlot(int slot) {
        checkSlot(slot);
        for (int l = 0; l < keys.length; l++) {
            try (Tensor k = keys[l].select(0, slot); Tensor v = values[l].select(0, slot)) {
                k.zero_();
                v.zero_();
            }
        }
    }

    /**
     * Moves the first {@code length} positions of slot {@code from} to slot {@code to} in every layer, then zeroes
     * slot {@code from}. Slot {@code to} must be free (zeroed by {@link #clearSlot}): its positions from
     * {@code length} on are left as they are.
     *
     * @throws IllegalArgumentException for a slot out of range, {@code from == to}, or a length outside
     *     {@code [0, maxLength]}
     */
    public void moveSlot(int from, int to, long length) {
        checkSlot(from);
        checkSlot(to);
        if (from == to) {
            throw new IllegalArgumentException("cannot move slot " + from + " onto itself");
        }
        if (length < 0 || length > maxLength) {
            throw new IllegalArgumentException("length " + length + " out of range [0, " + maxLength + "]");
        }
        if (length > 0) {
            for (int l = 0; l < keys.length; l++) {
                for (Tensor t : new Tensor[] {keys[l], values[l]}) {
                    try (Tensor src = t.select(0, from); Tensor srcPos = src.narrow(1, 0, length);
                            Tensor dst = t.select(0, to); Tensor dstPos = dst.narrow(1, 0, length)) {
                        dstPos.copy_(srcPos);
                    }
                }
            }
        }
        clearSlot(from);
    }

    private void checkSlot(int slot) {
        if (slot < 0 || slot >= slots) {
            throw new IllegalArgumentException("slot " + slot + " out of range [0, " + slots + ")");
        }
    }

    /**
     * Where a forward writes: for batch row {@code i} (slot {@code slotOf[i]}, {@code past[i]} cached positions) and
     * its {@code t}-th new token, the flat row of {@code [slots · kv_heads · max_length, head_dim]} for each head,
     * ordered as {@code k.reshape(B · kv_heads · T, head_dim)} of a {@code [B, kv_heads, T, head_dim]} tensor.
     */
    Tensor writeIndex(int[] slotOf, long[] past, long newTokens) {
        long[] idx = new long[Math.toIntExact(slotOf.length * kvHeads * newTokens)];
        int n = 0;
        for (int i = 0; i < slotOf.length; i++) {
            checkSlot(slotOf[i]);
            if (past[i] < 0 || past[i] + newTokens > maxLength) {
                throw new IllegalArgumentException("row " + i + " (slot " + slotOf[i] + "): " + past[i] + " cached + "
                        + newTokens + " new positions exceed the slot cache's max length " + maxLength);
            }
            for (long h = 0; h < kvHeads; h++) {
                long base = ((long) slotOf[i] * kvHeads + h) * maxLength + past[i];
                for (long t = 0; t < newTokens; t++) {
                    idx[n++] = base + t;
                }
            }
        }
        return Tensor.create(idx, idx.length);
    }

    /**
     * Writes {@code k}, {@code v} ({@code [B, kv_heads, T, head_dim]}) of layer {@code layer} in place and returns the
     * keys and values that the batch attends to, {@code [B, kv_heads, keyLength, head_dim]}: a view of the slot
     * range when the slots are consecutive, else a gathered copy. Temporaries go to the caller's scope.
     */
    Tensor[] writeAndRead(int layer, Tensor index, int[] slotOf, long keyLength, Tensor k, Tensor v) {
        index = PreTrainedModel.onDeviceOfTensor(index, keys[layer]); // the layer's device (a split model)
        try (Tensor kf = keys[layer].view(-1, headDim); Tensor vf = values[layer].view(-1, headDim)) {
            kf.index_copy_(0, index, k.reshape(-1, headDim));
            vf.index_copy_(0, index, v.reshape(-1, headDim));
        }
        boolean consecutive = true;
        for (int i = 1; i < slotOf.length; i++) {
            consecutive &= slotOf[i] == slotOf[0] + i;
        }
        Tensor rk;
        Tensor rv;
        if (consecutive) {
            rk = keys[layer].narrow(0, slotOf[0], slotOf.length).narrow(2, 0, keyLength);
            rv = values[layer].narrow(0, slotOf[0], slotOf.length).narrow(2, 0, keyLength);
        } else {
            long[] s = new long[slotOf.length];
            for (int i = 0; i < s.length; i++) {
                s[i] = slotOf[i];
            }
            Tensor idx = PreTrainedModel.onDeviceOfTensor(Tensor.create(s, s.length), keys[layer]);
            rk = keys[layer].narrow(2, 0, keyLength).index_select(0, idx);
            rv = values[layer].narrow(2, 0, keyLength).index_select(0, idx);
        }
        return new Tensor[] {rk, rv};
    }

    @Override
    public void close() {
        for (int l = 0; l < keys.length; l++) {
            if (keys[l] != null) {
                keys[l].close();
                values[l].close();
                keys[l] = null;
                values[l] = null;
            }
        }
    }
}
