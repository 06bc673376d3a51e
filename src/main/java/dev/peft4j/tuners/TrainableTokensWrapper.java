package dev.peft4j.tuners;

import dev.peft4j.nn.Layer;
import dev.peft4j.nn.Module;
import org.bytedeco.pytorch.Tensor;

/**
 * PEFT's {@code TrainableTokensWrapper} ({@code utils/other.py}): what stands at the module's name in place of an
 * embedding (or tied output embedding) whose rows an adapter's {@code trainable_token_indices} trains. It holds the
 * {@link TrainableTokensLayer} as child {@code token_adapter}, so the keys are PEFT's
 * ({@code model.embed_tokens.token_adapter.trainable_tokens_delta.default} in memory,
 * {@code base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta} saved), and forwards to it: the
 * layer applies its active adapters, nothing when none is active or the adapters are disabled, and the mixed-batch
 * rows.
 */
public final class TrainableTokensWrapper extends Module implements Layer {
    /** The child holding the layer, as in PEFT's keys. */
    public static final String TOKEN_ADAPTER = "token_adapter";

    /** Wraps {@code layer}, registered as child {@value #TOKEN_ADAPTER}. */
    public TrainableTokensWrapper(TrainableTokensLayer layer) {
        registerModule(TOKEN_ADAPTER, layer);
    }

    @Override
    public String typeName() {
        return "TrainableTokensWrapper";
    }

    /** The trainable-tokens layer. */
    public TrainableTokensLayer tokenAdapter() {
        return (TrainableTokensLayer) child(TOKEN_ADAPTER);
    }

    /** The wrapped module (the embedding or output embedding itself). */
    public Module originalModule() {
        return tokenAdapter().baseLayer();
    }

    @Override
    public Tensor forward(Tensor x) {
        return tokenAdapter().forward(x);
    }
}
