package dev.peft4j.models;

import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;

/**
 * What the causal LMs share (transformers' {@code *ForCausalLM}): a decoder body under {@link #baseModelPrefix()} and
 * an {@code lm_head} Linear, tied to the body's token embedding when the config says so; a forward that runs the body,
 * moves its last hidden states to the head's device (a model placed per module by {@link #dispatch}) and applies the
 * head, all under the hotswap read lock ({@link #forwardLock()}) so that a forward sees an adapter swap entirely or
 * not at all.
 */
public abstract class PreTrainedCausalLM extends PreTrainedModel implements CausalLM {
    private final String prefix;
    private String tiedEmbedding; // the key lm_head.weight is tied to, or null

    PreTrainedCausalLM(ModelConfig config, String prefix) {
        super(config);
        this.prefix = prefix;
    }

    /** Registers {@code lm_head} ({@code hidden → vocab}, no bias), tied to parameter {@code embedding} when given. */
    final void registerHead(long hidden, long vocab, String embedding, Init init) {
        registerModule("lm_head", new Linear(hidden, vocab, false, init));
        if (embedding != null) {
            setParameter("lm_head.weight", getParameter(embedding), false).close();
            tiedEmbedding = embedding;
        }
    }

    /** The body's last hidden states {@code [B, T, hidden]}; runs inside the caller's {@link PointerScope}. */
    abstract Tensor hiddenStates(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache);

    /** The head over hidden states already on its device; temporaries go to the caller's scope. */
    Tensor head(Tensor h) {
        return layer("lm_head").forward(h);
    }

    @Override
    public final String baseModelPrefix() {
        return prefix;
    }

    @Override
    public final boolean isBaseModel() {
        return false;
    }

    @Override
    public final Map<String, String> tiedKeys() {
        return tiedEmbedding != null ? Map.of("lm_head.weight", tiedEmbedding) : Map.of();
    }

    @Override
    public final Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor logits;
            try (PointerScope scope = new PointerScope()) {
                Tensor h = hiddenStates(inputIds, attentionMask, positionIds, cache);
                logits = ScopeUtil.keep(scope, head(aligned(h, child("lm_head"))));
            }
            return ScopeUtil.handToCaller(logits);
        } finally {
            hotswapGuard.unlock();
        }
    }

    /** The slot-cache body ({@link #forwardSlots}); only the models with a slot cache override it. */
    Tensor hiddenStatesSlots(Tensor inputIds, SlotKVCache cache, int[] slotOf, long[] past) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no slot KV cache (only the RoPE "
                + "decoders have one: the Llama family, Qwen3, Gemma, Phi-3)");
    }

    @Override
    public Tensor forwardSlots(Tensor inputIds, SlotKVCache cache, int[] slotOf, long[] past) {
        if (!supportsSlotCache()) {
            return CausalLM.super.forwardSlots(inputIds, cache, slotOf, past);
        }
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor logits;
            try (PointerScope scope = new PointerScope()) {
                Tensor h = hiddenStatesSlots(inputIds, cache, slotOf, past);
                Tensor last = h.select(1, h.size(1) - 1);
                logits = ScopeUtil.keep(scope, head(aligned(last, child("lm_head"))));
            }
            return ScopeUtil.handToCaller(logits);
        } finally {
            hotswapGuard.unlock();
        }
    }

    /**
     * The device of each decoder layer's first parameter (for a {@link SlotKVCache} whose layers live beside them),
     * the layers being the elements of module list {@code layers}.
     */
    final org.bytedeco.pytorch.Device[] layerDevices(String layers) {
        dev.peft4j.nn.Module list = getSubmodule(layers);
        org.bytedeco.pytorch.Device[] out = new org.bytedeco.pytorch.Device[list.children().size()];
        int i = 0;
        for (dev.peft4j.nn.Module l : list.children().values()) {
            Tensor w = firstParameter(l);
            out[i++] = w == null ? null : w.device();
        }
        return out;
    }

    @Override
    protected final boolean alignsDevices() {
        return true;
    }
}
