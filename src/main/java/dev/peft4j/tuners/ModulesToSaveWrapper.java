package dev.peft4j.tuners;

import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.ModuleDict;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;

/**
 * PEFT's {@code ModulesToSaveWrapper} ({@code utils/other.py}): keeps the module as {@code original_module} and a
 * trainable copy per adapter under {@code modules_to_save.<name>}; forward uses the active adapter's copy, or the
 * original when disabled or when no held adapter is active. At most one adapter is active.
 */
public final class ModulesToSaveWrapper extends Module implements Layer {
    private String active;
    private boolean disabled;

    /**
     * Wraps {@code original}, registered as child {@code original_module}, with no copy yet.
     * @throws IllegalArgumentException if {@code original} is not a {@link Layer}
     */
    public ModulesToSaveWrapper(Module original) {
        if (!(original instanceof Layer)) {
            throw new IllegalArgumentException("modules_to_save: " + original.typeName() + " is not a Layer");
        }
        registerModule("original_module", original);
        registerModule("modules_to_save", new ModuleDict<Module>());
    }

    @Override
    public String typeName() {
        return "ModulesToSaveWrapper";
    }

    /** The wrapped module, used when no adapter's copy is active. */
    public Module originalModule() {
        return child("original_module");
    }

    @SuppressWarnings("unchecked")
    private ModuleDict<Module> copies() {
        return (ModuleDict<Module>) child("modules_to_save");
    }

    /** The per-adapter copies (unmodifiable). */
    public Map<String, Module> adapterCopies() {
        return copies().children();
    }

    /**
     * A detached copy of {@code m} ({@code copy.deepcopy}): Linear, transformers Conv1D and Embedding are supported.
     *
     * @throws UnsupportedOperationException naming the module type otherwise
     */
    public static Module deepCopy(Module m, String name) {
        Module copy;
        Tensor w;
        if (m instanceof Linear l) {
            w = l.weight();
            copy = new Linear(l.inFeatures(), l.outFeatures(), l.bias() != null, init(w));
        } else if (m instanceof Conv1D c) {
            w = c.weight();
            copy = new Conv1D(c.outFeatures(), c.inFeatures(), init(w));
        } else if (m instanceof Embedding e) {
            w = e.weight();
            copy = new Embedding(e.numEmbeddings(), e.embeddingDim(), init(w));
        } else {
            throw new UnsupportedOperationException("modules_to_save: " + name + " is a " + m.typeName()
                    + "; only Linear, Conv1D and Embedding modules can be saved alongside an adapter for now");
        }
        Map<String, Tensor> src = m.stateDict();
        try (NoGradGuard g = new NoGradGuard()) {
            for (Map.Entry<String, Tensor> e : copy.stateDict().entrySet()) {
                e.getValue().copy_(src.get(e.getKey()));
            }
        }
        return copy;
    }

    private static Init init(Tensor w) {
        return new Init(w.scalar_type().intern(), w.device().str().getString());
    }

    /** Registers {@code copy} as adapter {@code name}'s module, replacing (without closing) any copy of that name. */
    public void addAdapter(String name, Module copy) {
        copies().put(name, copy);
    }

    /** Removes and closes adapter {@code name}'s copy, if any; when it was active, the original is used again. */
    public void deleteAdapter(String name) {
        if ((copies().get(name) != null)) {
            copies().remove(name).close();
        }
        if (name.equals(active)) {
            active = null;
        }
    }

    /** {@code set_adapter}: one name or none. */
    public void setAdapter(List<String> names) {
        if (names.size() > 1) {
            throw new IllegalArgumentException("Attempted to set multiple (" + names + ") adapters at once for "
                    + "modules_to_save.");
        }
        active = names.isEmpty() ? null : names.get(0);
        for (Map.Entry<String, Module> e : copies().children().entrySet()) {
            boolean on = e.getKey().equals(active);
            for (Tensor t : e.getValue().namedParameters().values()) {
                t.requires_grad_(on);
            }
        }
    }

    /** The adapter whose copy forward uses, or null when none is. */
    public String activeAdapter() {
        return active;
    }

    /** Enables or disables the copies; while disabled, forward uses the original module. */
    public void enableAdapters(boolean enabled) {
        disabled = !enabled;
    }

    /** Whether the copies are disabled. */
    public boolean disabled() {
        return disabled;
    }

    @Override
    public Tensor forward(Tensor x) {
        // PEFT's order: disabled, or an active adapter without a copy here, runs the original module for every
        // row, a mixed batch included; only then do a mixed batch's rows take their own adapters' copies
        if (disabled || active == null || copies().get(active) == null) {
            return ((Layer) originalModule()).forward(x);
        }
        List<String> perSample = BaseTunerLayer.currentAdapterNames();
        if (perSample != null) {
            return mixedBatchForward(x, perSample);
        }
        return ((Layer) copies().get(active)).forward(x);
    }

    /**
     * {@code _mixed_batch_forward}: row i through the copy of adapter i, the original for {@code __base__}; a row
     * naming an adapter without a copy of this module is refused, as PEFT's {@code ModuleDict} lookup raises.
     */
    private Tensor mixedBatchForward(Tensor x, List<String> names) {
        if (names.size() != x.size(0)) {
            throw new IllegalArgumentException("Length of `adapter_names` should be the same as the number of inputs, "
                    + "but got " + names.size() + " and " + x.size(0) + " respectively.");
        }
        for (String n : names) {
            if (!BaseTunerLayer.BASE_ADAPTER_NAME.equals(n) && copies().get(n) == null) {
                throw new IllegalArgumentException("KeyError: '" + n + "': adapter_names names adapter '" + n
                        + "', which has no copy of this modules_to_save module (copies: "
                        + copies().children().keySet() + ")");
            }
        }
        List<Tensor> rows = new java.util.ArrayList<>();
        for (int i = 0; i < names.size(); i++) {
            Module m = BaseTunerLayer.BASE_ADAPTER_NAME.equals(names.get(i)) ? originalModule()
                    : copies().get(names.get(i));
            try (Tensor row = x.narrow(0, i, 1)) {
                rows.add(((Layer) m).forward(row));
            }
        }
        try (org.bytedeco.pytorch.TensorVector v = new org.bytedeco.pytorch.TensorVector(rows.toArray(new Tensor[0]))) {
            Tensor out = org.bytedeco.pytorch.global.torch.cat(new org.bytedeco.pytorch.TensorArrayRef(v), 0);
            for (Tensor r : rows) {
                r.close();
            }
            return out;
        }
    }
}
