package dev.peft4j.tuners;

import dev.peft4j.nn.Module;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;

/** PyTorch's {@code nn.ParameterDict}: bare per-adapter parameters under the adapter's name ({@code ia3_l.default}). */
public final class ParameterDict extends Module {
    /** Takes {@code t} over as parameter {@code name}. */
    public Tensor put(String name, Tensor t, boolean trainable) {
        return registerParameter(name, t, trainable);
    }

    /** Removes parameter {@code name} and frees it. */
    public void delete(String name) {
        Tensor t = removeParameter(name);
        if (t == null) {
            throw new IllegalArgumentException("no adapter parameter '" + name + "'; there are " + ownParameterNames());
        }
        t.close();
    }

    public Tensor get(String name) {
        return paramOrNull(name);
    }

    public boolean contains(String name) {
        return ownParameterNames().contains(name);
    }

    public Map<String, Tensor> entries() {
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (String n : ownParameterNames()) {
            out.put(n, paramOrNull(n));
        }
        return out;
    }
}
