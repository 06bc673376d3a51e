package dev.peft4j.tuners.adalora;

import dev.peft4j.config.AdaLoraConfig;
import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.ModuleSelector;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.AdapterKeys;
import dev.peft4j.tuners.AdapterSizes;
import dev.peft4j.tuners.BaseTuner;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.LinearShape;
import dev.peft4j.tuners.PendingAdapter;
import dev.peft4j.tuners.PendingLayer;
import dev.peft4j.tuners.TunerModel;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Generator;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * PEFT's {@code AdaLoraModel}: SVD triplets ({@link SvdLinear}) on {@code nn.Linear} / {@code Conv1D}; a saved
 * adapter keeps only the rank slots its {@code rank_pattern} marks, and its modules are resized to them on load.
 */
public final class AdaLoraModel extends TunerModel {
    /** The AdaLoRA method on {@code tuner}'s model. */
    public AdaLoraModel(BaseTuner tuner) {
        super(tuner);
    }

    /** {@code rank_pattern} as masks under in-memory module names. */
    private static Map<String, boolean[]> rankMasks(AdaLoraConfig c, String name) {
        Map<String, boolean[]> masks = new LinkedHashMap<>();
        for (Map.Entry<String, List<Boolean>> e : c.rankPattern().entrySet()) {
            boolean[] m = new boolean[e.getValue().size()];
            for (int i = 0; i < m.length; i++) {
                m[i] = e.getValue().get(i);
            }
            masks.put(AdapterKeys.rankPatternModule(e.getKey(), name), m);
        }
        return masks;
    }

    /**
     * {@code AdaLoraModel._create_and_replace}: SVD triplets of rank {@code init_r}; for a load, a module listed in
     * {@code rank_pattern} gets {@code k = count(true)} slots (the kept slices of a fresh init) while its
     * {@code ranknum} stays {@code init_r} (PeftModel's {@code resize_modules_by_rank_pattern}, §5.7).
     */
    @Override
    public PendingAdapter prepare(PeftConfig config, String name, long seed, boolean forLoad,
            Map<String, PeftConfig> existingConfigs) {
        AdaLoraConfig c = (AdaLoraConfig) config;
        // AdaLoraModel._check_new_adapter_config counts every config of the model's shared peft_config, whatever its
        // method (transformers' integration keeps LoRA and IA3 configs there too), the new one included
        int trainable = c.inferenceMode() ? 0 : 1;
        for (PeftConfig e : existingConfigs.values()) {
            trainable += e.inferenceMode() ? 0 : 1;
        }
        if (trainable > 1) {
            throw new IllegalArgumentException("AdaLoraModel supports only 1 trainable adapter. When using "
                    + "multiple adapters, set inference_mode to True for all adapters except the one you want "
                    + "to train.");
        }
        BaseTuner.checkOneBiasAdapter(c.bias(), existingConfigs.values());
        Map<String, boolean[]> masks = forLoad && c.rankPattern() != null ? rankMasks(c, name) : Map.of();
        BaseTuner tuner = tuner();
        Map<String, Module> modules = tuner.model().namedModules();
        List<String> existing = new ArrayList<>(tuner.tunerLayers().keySet());
        ModuleSelector condensed = BaseTuner.condense(c.targetModules(), modules);
        if (condensed != c.targetModules()) {
            c = c.toBuilder().targetModules(condensed).build();
        }
        List<String> selected = BaseTuner.matcher(c, c.targetModules()).selectTargets(modules.keySet(), existing);
        PendingAdapter p = new PendingAdapter(c, name);
        BaseTuner.prepareModulesToSave(p, c.modulesToSave(), modules);
        boolean initFlag = !(c.initLoraWeights() instanceof InitLoraWeights.Flag f) || f.value();
        try (Generator gen = torch.createCPUGenerator(seed)) {
            for (String key : selected) {
                Module m = modules.get(key);
                BaseTuner.refuseTokenWrapper(key, m, name);
                // another method's tuner layer (a LoRA one too) is wrapped, as PEFT's _create_and_replace does
                Module base = BaseTunerLayer.innermost(m);
                AdapterSizes.checkRank("init_r", c.initR(), key, base);
                LinearShape shape = LinearShape.of(base);
                if (shape == null) {
                    throw new IllegalArgumentException("Target module " + base.typeName() + " (" + key + ") is not "
                            + "supported. Currently, only `torch.nn.Linear`, `Conv1D`, and `torch.nn.Conv2d` are "
                            + "supported.");
                }
                long in = shape.in();
                long out = shape.out();
                Tensor w = LinearShape.weight(base);
                int r = c.initR();
                Init cpu = Init.cpu(ScalarType.Float);
                Tensor a = cpu.empty(r, in);
                Tensor e = cpu.empty(r, 1);
                Tensor b = cpu.empty(out, r);
                AdaLoraMath.init(a, e, b, initFlag, gen);
                boolean[] mask = masks.get(key);
                if (mask != null) {
                    AdaLoraMath.Triplet t = AdaLoraMath.sliceByRankPattern(a, e, b, mask);
                    Tensor na = t.a().contiguous().clone();
                    Tensor ne = t.e().contiguous().clone();
                    Tensor nb = t.b().contiguous().clone();
                    a.close();
                    e.close();
                    b.close();
                    a = na;
                    e = ne;
                    b = nb;
                }
                Tensor rn = AdaLoraMath.ranknum(r, ScalarType.Float);
                Tensor[] ts = {a, e, b, rn};
                ScalarType dt = BaseTunerLayer.adapterDtype(w.scalar_type(), false);
                if (dt != ScalarType.Float || !w.is_cpu()) {
                    for (int i = 0; i < ts.length; i++) {
                        Tensor moved = ts[i].to(w.device(), dt);
                        ts[i].close();
                        ts[i] = moved;
                    }
                }
                p.addLayerAfterModulesToSave(key, new PendingTriplet(ts, AdaLoraMath.scaling(c.loraAlpha(), r),
                        c.loraDropout()));
            }
        } catch (RuntimeException ex) {
            p.discard();
            throw ex;
        }
        BaseTuner.fixFanInFanOut(p, modules, selected);
        return p;
    }

    /**
     * {@code resize_state_dict_by_rank_pattern}: a module listed in {@code rank_pattern} saves its kept rank slots
     * only (new tensors; as is when already {@code k}).
     */
    @Override
    public Map<String, Map<String, Tensor>> layerStateDicts(PeftConfig config, String name) {
        Map<String, Map<String, Tensor>> out = super.layerStateDicts(config, name);
        if (!(config instanceof AdaLoraConfig ac) || ac.rankPattern() == null) {
            return out;
        }
        Map<String, boolean[]> masks = rankMasks(ac, name);
        for (Map.Entry<String, BaseTunerLayer> e : tuner().tunerLayers().entrySet()) {
            Map<String, Tensor> params = out.get(e.getKey());
            boolean[] mask = masks.get(e.getKey());
            if (mask != null && e.getValue() instanceof SvdLinear && !params.isEmpty()) {
                AdaLoraMath.Triplet t = AdaLoraMath.sliceByRankPattern(params.get("lora_A." + name),
                        params.get("lora_E." + name), params.get("lora_B." + name), mask);
                params = new LinkedHashMap<>(params);
                params.put("lora_A." + name, t.a());
                params.put("lora_E." + name, t.e());
                params.put("lora_B." + name, t.b());
                out.put(e.getKey(), params);
            }
        }
        return out;
    }

    /** PEFT strips {@code .<adapter>} from {@code rank_pattern} keys when saving (§5.7). */
    @Override
    public PeftConfig configToSave(PeftConfig config, String name) {
        if (config instanceof AdaLoraConfig ac && ac.rankPattern() != null) {
            Map<String, List<Boolean>> rp = new LinkedHashMap<>();
            for (Map.Entry<String, List<Boolean>> e : ac.rankPattern().entrySet()) {
                rp.put(AdapterKeys.rankPatternSaveKey(e.getKey(), name), e.getValue());
            }
            return ac.toBuilder().rankPattern(rp).build();
        }
        return config;
    }

    /** A new AdaLoRA adapter of one target: {@code lora_A}, {@code lora_E}, {@code lora_B}, {@code ranknum}. */
    private record PendingTriplet(Tensor[] tensors, double scaling, double dropout) implements PendingLayer {
        @Override
        public void putParameters(String module, String adapterName, Map<String, Tensor> out) {
            out.put(AdapterKeys.modelKey(module, adapterName, AdapterKeys.Param.ADALORA_A), tensors[0]);
            out.put(AdapterKeys.modelKey(module, adapterName, AdapterKeys.Param.ADALORA_E), tensors[1]);
            out.put(AdapterKeys.modelKey(module, adapterName, AdapterKeys.Param.ADALORA_B), tensors[2]);
        }

        @Override
        public void commit(Module model, String module, String adapterName, boolean trainable) {
            Module m = model.getSubmodule(module);
            SvdLinear layer;
            if (m instanceof SvdLinear l) {
                layer = l;
            } else {
                layer = new SvdLinear(m);
                model.replaceSubmodule(module, layer);
            }
            Tensor[] t = tensors;
            layer.addAdapter(adapterName, t[0], t[1], t[2], t[3], scaling, dropout, trainable);
        }

        @Override
        public void discard() {
            for (Tensor t : tensors) {
                t.close();
            }
        }
    }

    /** {@code LoraLayer} (AdaLoraModel inherits LoraModel's, and AdaLoraLayer is a LoraLayer). */
    @Override
    public String tunerLayerClass() {
        return "LoraLayer";
    }
}
