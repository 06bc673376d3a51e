package dev.peft4j.tuners;

import dev.peft4j.nn.Module;
import java.util.Map;

/** PyTorch's {@code nn.ModuleDict}: per-adapter modules under the adapter's name ({@code lora_A.default}). */
public final class ModuleDict extends Module {
    /** Adds {@code module} under {@code name}; returns it. */
    public <M extends Module> M put(String name, M module) {
        return registerModule(name, module);
    }

    /** Removes and returns the module under {@code name} (not closed). */
    public Module remove(String name) {
        Module m = removeModule(name);
        if (m == null) {
            throw new IllegalArgumentException("no adapter module '" + name + "'; there are " + children().keySet());
        }
        return m;
    }

    public Module get(String name) {
        return children().get(name);
    }

    public boolean contains(String name) {
        return children().containsKey(name);
    }

    public Map<String, Module> entries() {
        return children();
    }
}
