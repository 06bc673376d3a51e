package dev.peft4j.tuners.ia3;

import dev.peft4j.config.IA3Config;
import dev.peft4j.config.ModuleSelector;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.AdapterKeys;
import dev.peft4j.tuners.BaseTuner;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.LinearShape;
import dev.peft4j.tuners.PendingAdapter;
import dev.peft4j.tuners.PendingLayer;
import dev.peft4j.tuners.TargetMatcher;
import dev.peft4j.tuners.TunerModel;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Generator;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * PEFT's {@code IA3Model}: an {@code ia3_l} scaling vector per targeted {@code nn.Linear} / {@code Conv1D}
 * ({@link Ia3Layer}), on the input of {@code feedforward_modules} and on the output of the others.
 */
public final class IA3Model extends TunerModel {
    /** The (IA)³ method on {@code tuner}'s model. */
    public IA3Model(BaseTuner tuner) {
        super(tuner);
    }

    /** {@code IA3Model._create_and_replace}: vectors of ones (or N(0,1) with {@code init_ia3_weights=false}). */
    @Override
    public PendingAdapter prepare(PeftConfig config, String name, long seed, boolean forLoad,
            Map<String, PeftConfig> existingConfigs) {
        IA3Config c = (IA3Config) config;
        BaseTuner tuner = tuner();
        Map<String, Module> modules = tuner.model().namedModules();
        List<String> existing = new ArrayList<>(tuner.tunerLayers().keySet());
        ModuleSelector targets = c.targetModules();
        if (targets instanceof ModuleSelector.Regex r && TargetMatcher.isAllLinear(r.pattern())) {
            targets = BaseTuner.allLinearTargets(modules, false, existing);
        }
        List<String> selected = BaseTuner.matcher(c, targets).selectTargets(modules.keySet(), existing);
        PendingAdapter p = new PendingAdapter(c, name);
        BaseTuner.prepareModulesToSave(p, c.modulesToSave(), modules);
        try (Generator gen = torch.createCPUGenerator(seed)) {
            for (String key : selected) {
                Module m = modules.get(key);
                BaseTuner.refuseTokenWrapper(key, m, name);
                boolean ff;
                // another method's tuner layer is wrapped (PEFT's _create_and_replace): sized by what it adapts
                Module base = BaseTunerLayer.innermost(m);
                if (m instanceof Ia3Layer l) {
                    ff = l.feedForward(); // the layer's flag wins (§4.3)
                } else {
                    ModuleSelector sel = c.feedforwardModules();
                    ff = sel instanceof ModuleSelector.Names n ? Ia3Targets.isFeedForward(key, n.names())
                            : sel instanceof ModuleSelector.Regex r && Ia3Targets.isFeedForward(key, r.pattern());
                }
                LinearShape shape = LinearShape.of(base);
                if (shape == null) {
                    throw new IllegalArgumentException("Target module " + m.typeName() + " (" + key + ") is not "
                            + "supported. Currently, only `torch.nn.Linear`, `torch.nn.Conv2d`, and `Conv1D` are "
                            + "supported.");
                }
                long in = shape.in();
                long out = shape.out();
                Tensor v = Init.cpu(ScalarType.Float).empty(Ia3Math.vectorShape(in, out, ff));
                Ia3Math.init(v, c.initIa3Weights(), gen);
                if (base instanceof dev.peft4j.nn.QuantizedLinear q) { // CPU, in the dtype it was quantized from
                    ScalarType qdt = BaseTunerLayer.adapterDtype(q.dtype(), false);
                    if (qdt != ScalarType.Float) {
                        Tensor moved = v.to(qdt);
                        v.close();
                        v = moved;
                    }
                    p.addLayer(key, new PendingVector(v, ff));
                    continue;
                }
                Tensor w = LinearShape.weight(base);
                ScalarType dt = BaseTunerLayer.adapterDtype(w.scalar_type(), false);
                if (dt != ScalarType.Float || !w.is_cpu()) {
                    Tensor moved = v.to(w.device(), dt);
                    v.close();
                    v = moved;
                }
                p.addLayer(key, new PendingVector(v, ff));
            }
        } catch (RuntimeException e) {
            p.discard();
            throw e;
        }
        BaseTuner.fixFanInFanOut(p, modules, selected);
        return p;
    }

    /** A new IA³ adapter of one target: its {@code ia3_l} vector. */
    private record PendingVector(Tensor vector, boolean feedForward) implements PendingLayer {
        @Override
        public void putParameters(String module, String adapterName, Map<String, Tensor> out) {
            out.put(AdapterKeys.modelKey(module, adapterName, AdapterKeys.Param.IA3_L), vector);
        }

        @Override
        public void commit(Module model, String module, String adapterName, boolean trainable) {
            Module m = model.getSubmodule(module);
            Ia3Layer layer;
            if (m instanceof Ia3Layer l) {
                layer = l;
            } else {
                layer = new Ia3Layer(m, feedForward);
                model.replaceSubmodule(module, layer);
            }
            layer.addAdapter(adapterName, vector, trainable);
        }

        @Override
        public void discard() {
            vector.close();
        }
    }

    /** {@code IA3Layer}. */
    @Override
    public String tunerLayerClass() {
        return "IA3Layer";
    }
}
