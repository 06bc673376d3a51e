package dev.peft4j.nn;

import java.util.ArrayList;
import java.util.List;

/**
 * {@code torch.nn.ModuleDict}: children under string keys, e.g. PEFT's {@code lora_A} holding one {@link Linear}
 * per adapter name, so that keys read {@code ….lora_A.default.weight}.
 */
public final class ModuleDict<M extends Module> extends Module {
    /** Adds (or replaces, returning the old one unclosed) {@code key}. */
    public M put(String key, M module) {
        @SuppressWarnings("unchecked")
        M old = (M) removeModule(key);
        registerModule(key, module);
        return old;
    }

    /** The module under {@code key}, or null. */
    @SuppressWarnings("unchecked")
    public M get(String key) {
        return (M) children().get(key);
    }

    /** Removes {@code key} and returns its module (not closed), or null. */
    @SuppressWarnings("unchecked")
    public M remove(String key) {
        return (M) removeModule(key);
    }

    /** The keys of the children, in insertion order (a copy). */
    public List<String> keys() {
        return new ArrayList<>(children().keySet());
    }
}
