package dev.peft4j.tuners;

import dev.peft4j.config.PeftConfig;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;

/**
 * A method's part of PEFT's {@code BaseTuner} subclass ({@code LoraModel}, {@code IA3Model}, {@code AdaLoraModel}):
 * which modules its adapter wraps and with which new tensors ({@code _prepare_adapter_config},
 * {@code _check_new_adapter_config}, {@code _create_and_replace}), and what of its layers is saved. Everything the
 * methods share (the tuner layers found in the model, injection, activation, deletion, merging) is the
 * {@link BaseTuner}'s. A new method is one new package {@code tuners.<method>} with a subclass of this, its
 * {@link BaseTunerLayer} and its {@link PendingLayer}s.
 */
public abstract class TunerModel {
    private final BaseTuner tuner;

    /** A method on {@code tuner}'s model. */
    protected TunerModel(BaseTuner tuner) {
        this.tuner = tuner;
    }

    /** The model's shared tuner. */
    public final BaseTuner tuner() {
        return tuner;
    }

    /**
     * Makes adapter {@code name} aside, nothing of the model changed: the targets matched, a {@link PendingLayer} per
     * target with freshly initialised tensors (from a CPU generator seeded with {@code seed}), the modules_to_save
     * copies. Refuses a config the method cannot take, naming the adapter.
     *
     * @param existing the configs of the adapters the model holds already
     * @param forLoad whether a checkpoint follows (the method may then skip or adapt the init)
     */
    public abstract PendingAdapter prepare(PeftConfig config, String name, long seed, boolean forLoad,
            Map<String, PeftConfig> existing);

    /**
     * Each tuner layer's share of the saved state of adapter {@code name}, under its module name, with local
     * in-memory keys ({@code lora_A.default.weight}); the layers' own tensors or, where the method saves a
     * transformed value, new ones.
     */
    public Map<String, Map<String, Tensor>> layerStateDicts(PeftConfig config, String name) {
        Map<String, Map<String, Tensor>> out = new LinkedHashMap<>();
        for (Map.Entry<String, BaseTunerLayer> e : tuner.tunerLayers().entrySet()) {
            out.put(e.getKey(), e.getValue().adapterParameters(name));
        }
        return out;
    }

    /**
     * PEFT's {@code tuner_layer_cls} of this method ({@link BaseTunerLayer#tunerLayerClass()}): the layers the
     * activation ending an injection reaches.
     */
    public abstract String tunerLayerClass();

    /** The config as {@code save_pretrained} writes it for adapter {@code name}. */
    public PeftConfig configToSave(PeftConfig config, String name) {
        return config;
    }
}
