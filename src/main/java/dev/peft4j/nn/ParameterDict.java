package dev.peft4j.nn;

import java.util.ArrayList;
import java.util.List;
import org.bytedeco.pytorch.Tensor;

/**
 * {@code torch.nn.ParameterDict}: parameters under string keys, e.g. PEFT's {@code lora_embedding_A} holding one
 * tensor per adapter name ({@code ….lora_embedding_A.default}), or IA³'s {@code ia3_l}.
 */
public final class ParameterDict extends Module {
    /** Takes ownership of {@code tensor} under {@code key} (trainable or frozen); returns the one replaced, unclosed. */
    public Tensor put(String key, Tensor tensor, boolean trainable) {
        Tensor old = removeParameter(key);
        registerParameter(key, tensor, trainable);
        return old;
    }

    /** The tensor under {@code key}, or null. */
    public Tensor get(String key) {
        return paramOrNull(key);
    }

    /** Removes {@code key} and returns its tensor (the caller owns it now), or null. */
    public Tensor remove(String key) {
        return removeParameter(key);
    }

    /** The keys of the parameters, in insertion order (a copy). */
    public List<String> keys() {
        return new ArrayList<>(ownParameterNames());
    }
}
