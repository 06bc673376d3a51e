package dev.peft4j.tuners;

import dev.peft4j.config.PeftConfig;
import dev.peft4j.nn.Module;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;

/**
 * A new adapter made aside by a method's {@link TunerModel#prepare}: nothing of the model changes until
 * {@link BaseTuner#commit}, so a load that fails ({@link AdapterStateDict#load}) leaves the model as it was once
 * {@link #discard} has freed the tensors.
 *
 * <p>Its parameters are listed (and committed) in this order: the layers added with {@link #addLayer}, the
 * modules_to_save copies, then the layers added with {@link #addLayerAfterModulesToSave}.
 */
public final class PendingAdapter {
    private final String name;
    private PeftConfig config;
    private final Map<String, PendingLayer> layers = new LinkedHashMap<>();
    private final Map<String, Module> modulesToSave = new LinkedHashMap<>(); // module -> its copy
    private final Map<String, PendingLayer> lateLayers = new LinkedHashMap<>();
    /** Non-adapter checkpoint keys (base keys before the commit) → the value a load prepared for them. */
    final Map<String, Tensor> extra = new LinkedHashMap<>();
    private Runnable deferredInit;

    /** An empty adapter {@code name} with {@code config}. */
    public PendingAdapter(PeftConfig config, String name) {
        this.config = config;
        this.name = name;
    }

    /** The adapter's name. */
    public String name() {
        return name;
    }

    /** The config the adapter is registered with (a method may adjust it while preparing, as PEFT does). */
    public PeftConfig config() {
        return config;
    }

    /** Replaces the config the adapter is registered with. */
    public void config(PeftConfig adjusted) {
        this.config = adjusted;
    }

    /** Adds the layer that adapts module {@code module}, listed before the modules_to_save copies. */
    public void addLayer(String module, PendingLayer layer) {
        layers.put(module, layer);
    }

    /** Adds the layer that adapts module {@code module}, listed after the modules_to_save copies. */
    public void addLayerAfterModulesToSave(String module, PendingLayer layer) {
        lateLayers.put(module, layer);
    }

    void addModulesToSave(String module, Module copy) {
        modulesToSave.put(module, copy);
    }

    Map<String, Module> modulesToSave() {
        return modulesToSave;
    }

    /**
     * An initialisation the method skipped because a load follows (the weights were allocated uninitialised); the
     * load runs it only when the checkpoint leaves some weight unfilled.
     */
    public void deferInit(Runnable init) {
        this.deferredInit = init;
    }

    /** Runs the deferred initialisation, if any, once. */
    void runDeferredInit() {
        if (deferredInit != null) {
            deferredInit.run();
            deferredInit = null;
        }
    }

    boolean hasDeferredInit() {
        return deferredInit != null;
    }

    /** In-memory key → tensor of every new adapter parameter (its own tensors: do not close them). */
    public Map<String, Tensor> parameters() {
        return params();
    }

    /** In-memory key → tensor of every new adapter parameter. */
    Map<String, Tensor> params() {
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<String, PendingLayer> e : layers.entrySet()) {
            e.getValue().putParameters(e.getKey(), name, out);
        }
        for (Map.Entry<String, Module> e : modulesToSave.entrySet()) {
            for (Map.Entry<String, Tensor> t : e.getValue().stateDict().entrySet()) {
                out.put(AdapterKeys.modulesToSaveModelKey(e.getKey(), name, t.getKey()), t.getValue());
            }
        }
        for (Map.Entry<String, PendingLayer> e : lateLayers.entrySet()) {
            e.getValue().putParameters(e.getKey(), name, out);
        }
        return out;
    }

    /** The target modules that get a tuner layer. */
    List<String> targets() {
        List<String> out = new ArrayList<>(layers.keySet());
        out.addAll(lateLayers.keySet());
        return out;
    }

    Map<String, PendingLayer> layers() {
        return layers;
    }

    Map<String, PendingLayer> lateLayers() {
        return lateLayers;
    }

    /** Frees every tensor made for this adapter. */
    public void discard() {
        for (PendingLayer l : layers.values()) {
            l.discard();
        }
        for (Tensor t : extra.values()) {
            t.close();
        }
        for (Module m : modulesToSave.values()) {
            m.close();
        }
        for (PendingLayer l : lateLayers.values()) {
            l.discard();
        }
    }
}
