package dev.peft4j.tuners.lora;

import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LayerIndices;
import dev.peft4j.config.LayersPattern;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.ModuleSelector;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.QuantizedLinear;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.AdapterKeys;
import dev.peft4j.tuners.AdapterSizes;
import dev.peft4j.tuners.BaseTuner;
import dev.peft4j.tuners.BaseTunerLayer;
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
 * PEFT's {@code LoraModel}: LoRA adapters on {@code nn.Linear} and transformers' {@code Conv1D} ({@link LoraLayer})
 * and on {@code nn.Embedding} ({@link LoraEmbedding}), with {@code all-linear}, target condensing, the layer filters,
 * {@code rank_pattern}/{@code alpha_pattern}, rsLoRA, {@code lora_bias}, the simple {@code init_lora_weights} modes
 * and DoRA ({@code use_dora}: a magnitude vector per adapted layer, initialised to {@code ‖W + s·B·A‖} of the
 * initial weights, as PEFT). {@code layer_replication} is refused.
 */
public final class LoraModel extends TunerModel {
    /** The LoRA method on {@code tuner}'s model. */
    public LoraModel(BaseTuner tuner) {
        super(tuner);
    }

    private static Object initValue(LoraConfig lc) {
        InitLoraWeights w = lc.initLoraWeights();
        return w instanceof InitLoraWeights.Flag f ? (Object) f.value() : ((InitLoraWeights.Method) w).name();
    }

    @Override
    public PendingAdapter prepare(PeftConfig config, String name, long seed, boolean forLoad,
            Map<String, PeftConfig> existingConfigs) {
        LoraConfig lc = (LoraConfig) config;
        boolean dora = lc.useDora();
        BaseTuner.checkOneBiasAdapter(lc.bias(), existingConfigs.values());
        if (lc.layerReplication() != null) {
            throw new UnsupportedOperationException("layer_replication is not supported (adapter '" + name + "')");
        }
        if (lc.targetParameters() != null && !lc.targetParameters().isEmpty()) {
            // PEFT >= 0.17 wraps nn.Parameters (e.g. stacked MoE experts) in ParamWrapper; silently skipping them would
            // load an adapter without its deltas
            throw new UnsupportedOperationException("target_parameters " + lc.targetParameters() + " is not supported "
                    + "(adapter '" + name + "'): only target_modules are; Mixtral's experts are Linear modules here, "
                    + "targeted by name (w1, w2, w3)");
        }
        LoraInit.Mode init = LoraInit.parse(initValue(lc));
        ModuleSelector targets = lc.targetModules();
        boolean allLinear = targets instanceof ModuleSelector.Regex rx && TargetMatcher.isAllLinear(rx.pattern());
        boolean condensing = targets instanceof ModuleSelector.Names tn
                && tn.names().size() >= TargetMatcher.MIN_TARGET_MODULES_FOR_OPTIMIZATION;
        // the adapters already held add nothing a target could match (keys inside tuner layers are skipped): leave
        // their modules out so that a load costs the same however many adapters the model holds; the rarer
        // all-linear expansion and target condensing see every name, as PEFT's do
        BaseTuner tuner = tuner();
        Map<String, Module> modules = allLinear || condensing ? tuner.model().namedModules()
                : tuner.modulesOutsideAdapters();
        List<String> existing = new ArrayList<>(tuner.tunerLayers().keySet());
        if (allLinear) {
            targets = BaseTuner.allLinearTargets(modules,
                    lc.taskType() != null && lc.taskType().name().equals("SEQ_CLS"), existing);
            config = lc.toBuilder().targetModules(targets).build();
            lc = (LoraConfig) config;
        }
        ModuleSelector condensed = BaseTuner.condense(targets, modules);
        if (condensed != targets) {
            targets = condensed;
            config = lc.toBuilder().targetModules(targets).build();
            lc = (LoraConfig) config;
        }
        TargetMatcher.Builder mb = BaseTuner.matcherBuilder(lc, targets);
        if (lc.layersToTransform() instanceof LayerIndices.Single s) {
            mb.layersToTransform(s.index());
        } else if (lc.layersToTransform() instanceof LayerIndices.Listed l) {
            mb.layersToTransform(l.indices());
        }
        if (lc.layersPattern() instanceof LayersPattern.Single s) {
            mb.layersPattern(s.pattern());
        } else if (lc.layersPattern() instanceof LayersPattern.Listed l) {
            mb.layersPattern(l.patterns());
        }
        List<String> selected = mb.build().selectTargets(modules.keySet(), existing);
        PendingAdapter p = new PendingAdapter(config, name);
        BaseTuner.prepareModulesToSave(p, lc.modulesToSave(), modules);
        // Loading: when every target is a CPU Linear / Conv1D, allocate the LoRA weights uninitialised in their final
        // dtype and leave the init to the load, which runs it only if the checkpoint does not fill them all (a
        // complete checkpoint overwrites every value: drawing them, in float32 then converted, is wasted time and
        // leaves the float32 temporaries' memory behind in the allocator).
        boolean defer = forLoad;
        for (String key : selected) {
            Module m = modules.get(key);
            Module base = BaseTunerLayer.innermost(m);
            Tensor w = base instanceof Linear l ? l.weight() : base instanceof Conv1D c ? c.weight() : null;
            if ((w == null || !w.is_cpu()) && !(base instanceof QuantizedLinear)) {
                defer = false;
            }
        }
        List<PendingLinear> linears = new ArrayList<>();
        if (defer) {
            p.deferInit(() -> initDeferred(linears, init, seed));
        }
        try (Generator gen = torch.createCPUGenerator(seed)) {
            for (String key : selected) {
                Module m = modules.get(key);
                BaseTuner.refuseTokenWrapper(key, m, name);
                if (dora && (m instanceof BaseTunerLayer t && !(m instanceof LoraLayer || m instanceof LoraEmbedding)
                        || m instanceof LoraLayer l && l.wrapsTunerLayer())) {
                    BaseTunerLayer inner = m instanceof LoraLayer l ? (BaseTunerLayer) l.baseLayer() : (BaseTunerLayer) m;
                    throw new UnsupportedOperationException("adapter '" + name + "': DoRA (use_dora=True) on module '"
                            + key + "', which holds adapter(s) " + inner.adapterNames() + " of another method ("
                            + inner.typeName() + "), is not supported: PEFT's DoRA layer then rescales the inner "
                            + "layer's output by a norm of the adapted weight alone, which peft4j does not reproduce "
                            + "(the model is unchanged); target other modules, or load the DoRA adapter first");
                }
                // another method's tuner layer (AdaLoRA's too) is wrapped, as PEFT's _create_and_replace does
                Module base = BaseTunerLayer.innermost(m);
                AdapterSizes.checkRank("r", lc.rankFor(key), key, base);
                long in;
                long out;
                Tensor w;
                ScalarType baseDtype;
                if (base instanceof Linear l) {
                    in = l.inFeatures();
                    out = l.outFeatures();
                    w = l.weight();
                    baseDtype = w.scalar_type();
                } else if (base instanceof Conv1D c) {
                    in = c.inFeatures();
                    out = c.outFeatures();
                    w = c.weight();
                    baseDtype = w.scalar_type();
                } else if (base instanceof QuantizedLinear q) {
                    // QLoRA-style: the adapter in the dtype the base was quantized from, on the CPU
                    in = q.inFeatures();
                    out = q.outFeatures();
                    w = null;
                    baseDtype = q.dtype();
                } else if (base instanceof Embedding eb) {
                    if (lc.loraBias()) {
                        throw new IllegalArgumentException("lora_bias=True is not supported for Embedding.");
                    }
                    int r = lc.rankFor(key);
                    double s = LoraMath.scaling(lc.alphaFor(key), r, lc.useRslora());
                    Init cpu = Init.cpu(ScalarType.Float);
                    Tensor ea = cpu.empty(r, eb.numEmbeddings());
                    Tensor ebT = cpu.empty(eb.embeddingDim(), r);
                    LoraInit.initEmbedding(ea, ebT, init, gen);
                    Tensor[] ts = {ea, ebT};
                    Tensor ew = eb.weight();
                    ScalarType edt = BaseTunerLayer.adapterDtype(ew.scalar_type(), false);
                    if (edt != ScalarType.Float || !ew.is_cpu()) {
                        for (int i = 0; i < 2; i++) {
                            Tensor moved = ts[i].to(ew.device(), edt);
                            ts[i].close();
                            ts[i] = moved;
                        }
                    }
                    DoraMagnitude em = dora ? new DoraMagnitude(
                            magnitudeOf(ew, ts[0], ts[1], s, true, edt), true) : null;
                    p.addLayerAfterModulesToSave(key, new PendingEmbedding(ts[0], ts[1], s, em));
                    continue;
                } else {
                    throw new IllegalArgumentException("Target module " + base.typeName() + " (" + key + ") is not "
                            + "supported. Currently, only the following modules are supported: `torch.nn.Linear`, "
                            + "`torch.nn.Embedding`, `torch.nn.Conv1d`, `torch.nn.Conv2d`, `torch.nn.Conv3d`, "
                            + "`transformers.pytorch_utils.Conv1D`, `torch.nn.MultiheadAttention.`.");
                }
                int r = lc.rankFor(key);
                double alpha = lc.alphaFor(key);
                double s = LoraMath.scaling(alpha, r, lc.useRslora());
                ScalarType dt = BaseTunerLayer.adapterDtype(baseDtype, false);
                PendingLinear pl;
                if (defer) {
                    Linear a = new Linear(in, r, false, Init.cpu(dt));
                    Linear b = new Linear(r, out, lc.loraBias(), Init.cpu(dt));
                    // filled by initDeferred, after A and B, when the checkpoint leaves anything unfilled
                    DoraMagnitude mag = dora ? new DoraMagnitude(Init.cpu(dt).empty(out), true) : null;
                    pl = new PendingLinear(a, b, s, lc.loraDropout(), mag, w, base instanceof Conv1D);
                } else {
                    Linear a = new Linear(in, r, false, Init.cpu(ScalarType.Float));
                    Linear b = new Linear(r, out, lc.loraBias(), Init.cpu(ScalarType.Float));
                    LoraInit.initLinear(a.weight(), b.weight(), b.bias(), init, gen);
                    if (w == null) {
                        a.to(dt);
                        b.to(dt);
                    } else if (dt != ScalarType.Float || !w.is_cpu()) {
                        a.to(w.device(), dt);
                        b.to(w.device(), dt);
                    }
                    boolean fif = base instanceof Conv1D;
                    DoraMagnitude mag = dora ? new DoraMagnitude(
                            magnitudeOf(w, a.weight(), b.weight(), s, fif, dt), true) : null;
                    pl = new PendingLinear(a, b, s, lc.loraDropout(), mag, w, fif);
                }
                linears.add(pl);
                p.addLayer(key, pl);
            }
        } catch (RuntimeException e) {
            p.discard();
            throw e;
        }
        BaseTuner.fixFanInFanOut(p, modules, selected);
        return p;
    }

    /**
     * The init {@code prepare} skipped, as it would have run it: every LoRA Linear in order, drawn in float32 from
     * one generator seeded as then, converted to the adapter dtype.
     */
    private static void initDeferred(List<PendingLinear> linears, LoraInit.Mode init, long seed) {
        Init f32 = Init.cpu(ScalarType.Float);
        try (Generator gen = torch.createCPUGenerator(seed)) {
            for (PendingLinear pl : linears) {
                Tensor bias = pl.b.bias();
                try (Tensor a = f32.empty(pl.a.weight().shape()); Tensor b = f32.empty(pl.b.weight().shape());
                        Tensor bb = bias == null ? null : f32.empty(bias.shape())) {
                    LoraInit.initLinear(a, b, bb, init, gen);
                    pl.a.weight().copy_(a);
                    pl.b.weight().copy_(b);
                    if (bias != null) {
                        bias.copy_(bb);
                    }
                    if (pl.magnitude != null) {
                        try (Tensor m = magnitudeOf(pl.baseWeight, pl.a.weight(), pl.b.weight(), pl.scaling,
                                pl.fanInFanOut, pl.magnitude.weight().scalar_type())) {
                            pl.magnitude.weight().copy_(m);
                        }
                    }
                }
            }
        }
    }

    /**
     * DoRA's initial magnitude ({@code DoraLinearLayer.update_layer}): the detached weight norm
     * {@code ‖W + s·B·A‖} of the freshly initialised adapter, per output feature, in the adapter's dtype.
     */
    private static Tensor magnitudeOf(Tensor w, Tensor a, Tensor b, double s, boolean fanInFanOut, ScalarType dt) {
        try (Tensor n = DoraMath.weightNorm(w, a.to(w.scalar_type()), b.to(w.scalar_type()), s, fanInFanOut)) {
            return n.to(w.device(), dt).contiguous().clone();
        }
    }

    @Override
    public Map<String, Map<String, Tensor>> layerStateDicts(PeftConfig config, String name) {
        Map<String, Map<String, Tensor>> out = super.layerStateDicts(config, name);
        if (config instanceof LoraConfig lc && lc.useDora()) {
            // PEFT saves the magnitude without ".weight" (the layout from before it became a module's parameter)
            String moduleKey = "lora_magnitude_vector." + name + ".weight";
            for (Map.Entry<String, Map<String, Tensor>> e : out.entrySet()) {
                Map<String, Tensor> renamed = new java.util.LinkedHashMap<>();
                for (Map.Entry<String, Tensor> p : e.getValue().entrySet()) {
                    String k = p.getKey().equals(moduleKey) ? "lora_magnitude_vector." + name : p.getKey();
                    renamed.put(k, p.getValue());
                }
                e.setValue(renamed);
            }
        }
        return out;
    }

    /**
     * A new LoRA adapter of a Linear / Conv1D target: {@code lora_A}, {@code lora_B}, and with DoRA the magnitude
     * (its initial value needs the base weight and layout).
     */
    private record PendingLinear(Linear a, Linear b, double scaling, double dropout, DoraMagnitude magnitude,
            Tensor baseWeight, boolean fanInFanOut) implements PendingLayer {
        @Override
        public void putParameters(String module, String adapterName, Map<String, Tensor> out) {
            out.put(AdapterKeys.modelKey(module, adapterName, AdapterKeys.Param.LORA_A), a.weight());
            out.put(AdapterKeys.modelKey(module, adapterName, AdapterKeys.Param.LORA_B), b.weight());
            if (magnitude != null) {
                out.put(AdapterKeys.modelKey(module, adapterName, AdapterKeys.Param.LORA_MAGNITUDE_VECTOR),
                        magnitude.weight());
            }
            if (b.bias() != null) {
                out.put(AdapterKeys.modelKey(module, adapterName, AdapterKeys.Param.LORA_B_BIAS), b.bias());
            }
        }

        @Override
        public void commit(Module model, String module, String adapterName, boolean trainable) {
            Module m = model.getSubmodule(module);
            LoraLayer layer;
            if (m instanceof LoraLayer l) {
                layer = l;
            } else {
                layer = new LoraLayer(m);
                model.replaceSubmodule(module, layer);
            }
            layer.addAdapter(adapterName, a, b, scaling, dropout, magnitude);
            if (layer != m) {
                layer.train(m.isTraining());
            } else { // an existing layer: only the new modules take its mode (the others have it already)
                a.train(m.isTraining());
                b.train(m.isTraining());
                if (magnitude != null) {
                    magnitude.train(m.isTraining());
                }
            }
        }

        @Override
        public void discard() {
            a.close();
            b.close();
            if (magnitude != null) {
                magnitude.close();
            }
        }
    }

    /** A new LoRA adapter of an Embedding target: {@code lora_embedding_A}, {@code lora_embedding_B}. */
    private record PendingEmbedding(Tensor a, Tensor b, double scaling, DoraMagnitude magnitude)
            implements PendingLayer {
        @Override
        public void putParameters(String module, String adapterName, Map<String, Tensor> out) {
            out.put(AdapterKeys.modelKey(module, adapterName, AdapterKeys.Param.LORA_EMBEDDING_A), a);
            out.put(AdapterKeys.modelKey(module, adapterName, AdapterKeys.Param.LORA_EMBEDDING_B), b);
            if (magnitude != null) {
                out.put(AdapterKeys.modelKey(module, adapterName, AdapterKeys.Param.LORA_MAGNITUDE_VECTOR),
                        magnitude.weight());
            }
        }

        @Override
        public void commit(Module model, String module, String adapterName, boolean trainable) {
            Module m = model.getSubmodule(module);
            LoraEmbedding layer;
            if (m instanceof LoraEmbedding l) {
                layer = l;
            } else {
                layer = new LoraEmbedding((Embedding) m);
                model.replaceSubmodule(module, layer);
            }
            if (magnitude != null) {
                magnitude.weight().requires_grad_(trainable);
            }
            layer.addAdapter(adapterName, a, b, scaling, trainable, magnitude);
        }

        @Override
        public void discard() {
            a.close();
            b.close();
            if (magnitude != null) {
                magnitude.close();
            }
        }
    }

    /** {@code LoraLayer}. */
    @Override
    public String tunerLayerClass() {
        return "LoraLayer";
    }
}
