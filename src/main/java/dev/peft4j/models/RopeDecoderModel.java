package dev.peft4j.models;

import dev.peft4j.nn.Init;
import dev.peft4j.nn.Module;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;

/**
 * The bare decoder of the Gemma, Qwen3 and Phi-3 families ({@link GemmaModel}, {@link Gemma2Model},
 * {@link Gemma3TextModel}, {@link Qwen3Model}, {@link Phi3Model}): token embeddings, RoPE attention layers and a
 * final RMSNorm, under transformers' keys ({@code embed_tokens.weight}, {@code layers.N.self_attn.q_proj.weight},
 * {@code layers.N.mlp.down_proj.weight}, {@code norm.weight}, ...).
 */
public abstract class RopeDecoderModel extends PreTrainedModel {
    final RopeDecoderStack stack;

    RopeDecoderModel(ModelConfig config, Init init, RopeDecoderConfig.Family family) {
        super(config);
        stack = new RopeDecoderStack(new RopeDecoderConfig(config, family));
        for (Map.Entry<String, Module> e : stack.modules(init).entrySet()) {
            registerModule(e.getKey(), e.getValue());
        }
    }

    @Override
    public final String baseModelPrefix() {
        return "model";
    }

    @Override
    public final boolean isBaseModel() {
        return true;
    }

    @Override
    protected final boolean alignsDevices() {
        return true;
    }

    @Override
    protected final List<Pattern> ignoredUnexpectedKeys() {
        return List.of(Pattern.compile(".*rotary_emb.*\\.inv_freq"));
    }

    /** The last hidden states; must run inside a {@link PointerScope}. */
    Tensor hiddenStates(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        return stack.hiddenStates(children(), inputIds, attentionMask, positionIds, cache, deviceMapped());
    }

    /** {@link RopeDecoderStack#hiddenStatesSlots}; must run inside a {@link PointerScope}. */
    Tensor hiddenStatesSlots(Tensor inputIds, SlotKVCache cache, int[] slotOf, long[] past) {
        return stack.hiddenStatesSlots(children(), inputIds, cache, slotOf, past, deviceMapped());
    }

    /**
     * The last hidden states {@code [B, T, hidden]} (after the final norm), a tensor the caller owns.
     *
     * @param attentionMask {@code [B, past + T]}, 1 for tokens and 0 for padding, or null
     * @param positionIds {@code [B, T]}, or null to derive them from the mask
     * @param cache past keys and values, appended to; or null
     */
    public final Tensor forward(Tensor inputIds, Tensor attentionMask, Tensor positionIds, KVCache cache) {
        java.util.concurrent.locks.Lock hotswapGuard = forwardLock();
        hotswapGuard.lock();
        try {
            Tensor out;
            try (PointerScope scope = new PointerScope()) {
                out = ScopeUtil.keep(scope, hiddenStates(inputIds, attentionMask, positionIds, cache));
            }
            return ScopeUtil.handToCaller(out);
        } finally {
            hotswapGuard.unlock();
        }
    }

    /** An empty cache for this model. */
    public final KVCache newCache() {
        return new KVCache(stack.cfg.numLayers);
    }

    @Override
    public void close() {
        super.close();
        stack.close();
    }

    @Override
    protected void moveHeldTensors(org.bytedeco.pytorch.Device device) {
        stack.moveTo(device);
    }
}
