package dev.peft4j.tuners;

import dev.peft4j.config.AdaLoraConfig;
import dev.peft4j.config.Bias;
import dev.peft4j.config.LoraSettings;
import dev.peft4j.config.ModuleSelector;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * PEFT's {@code BaseTuner}: what every method shares on one model. It finds the model's tuner layers and
 * modules_to_save wrappers, matches targets ({@code all-linear}, target condensing, {@code exclude_modules},
 * {@code modules_to_save}), injects a {@link PendingAdapter} ({@link #commit}, with
 * {@code _mark_only_adapters_as_trainable}) and runs the activation, deletion and merge loops over every tuner layer
 * whatever its method. A method's own part (the layers it creates, what it saves) is its {@link TunerModel} in
 * {@code tuners.<method>}.
 *
 * <p>Not thread-safe: one model's adapters are changed from one thread at a time, as the model itself is.
 */
public final class BaseTuner {
    private static final Logger LOG = LoggerFactory.getLogger(BaseTuner.class);

    private final Module model;
    /** {@link #refreshTree()}'s cache, valid while {@link Module#structureVersion()} equals {@code treeVersion}. */
    private long treeVersion;
    private Map<String, BaseTunerLayer> layerCache;
    private BaseTunerLayer[] layerArray;
    private Map<String, ModulesToSaveWrapper> wrapperCache;
    private ModulesToSaveWrapper[] wrapperArray;

    /** The tuner of {@code model}, which holds no adapter yet. */
    public BaseTuner(Module model) {
        this.model = model;
    }

    /** The model the adapters are injected into. */
    public Module model() {
        return model;
    }

    // ------------------------------------------------------------------ tuner layers

    /**
     * Every tuner layer under its module name, in {@code named_modules()} order (an unmodifiable snapshot: it does
     * not follow later changes of the model).
     */
    public Map<String, BaseTunerLayer> tunerLayers() {
        refreshTree();
        return layerCache;
    }

    /** Every modules_to_save wrapper under its module name (an unmodifiable snapshot, as {@link #tunerLayers()}). */
    public Map<String, ModulesToSaveWrapper> modulesToSaveWrappers() {
        refreshTree();
        return wrapperCache;
    }

    /**
     * The tuner layers and modules_to_save wrappers of the model, found by one walk of the tree and kept while
     * {@link Module#structureVersion()} is unchanged: {@code setAdapter} and the other per-layer loops then cost
     * nothing but the layers' own work (no walk of the whole module tree, no dotted names built).
     */
    private void refreshTree() {
        long version = Module.structureVersion();
        if (layerCache != null && version == treeVersion) {
            return;
        }
        Map<String, BaseTunerLayer> layers = new LinkedHashMap<>();
        Map<String, ModulesToSaveWrapper> wrappers = new LinkedHashMap<>();
        for (Map.Entry<String, Module> e : modulesOutsideAdapters().entrySet()) {
            if (e.getValue() instanceof BaseTunerLayer t) {
                layers.put(e.getKey(), t);
            } else if (e.getValue() instanceof ModulesToSaveWrapper w) {
                wrappers.put(e.getKey(), w);
            }
        }
        layerCache = Collections.unmodifiableMap(layers);
        layerArray = layers.values().toArray(new BaseTunerLayer[0]);
        wrapperCache = Collections.unmodifiableMap(wrappers);
        wrapperArray = wrappers.values().toArray(new ModulesToSaveWrapper[0]);
        treeVersion = version;
    }

    /**
     * {@code named_modules()} less the adapter containers of tuner layers (a tuner layer's children other than
     * {@code base_layer}: {@code lora_A}, {@code ia3_l}, ... and the adapters' modules in them), in the same order.
     * Those hold only the adapters' own Linears and parameter dicts, never a tuner layer or a target, and grow
     * with every adapter loaded: the walk stays the size of the base model.
     */
    public Map<String, Module> modulesOutsideAdapters() {
        Map<String, Module> out = new LinkedHashMap<>();
        collectOutsideAdapters("", model, out, Collections.newSetFromMap(new IdentityHashMap<>()));
        return out;
    }

    private static void collectOutsideAdapters(String prefix, Module m, Map<String, Module> out, Set<Module> seen) {
        if (!seen.add(m)) {
            return;
        }
        out.put(prefix, m);
        boolean tuner = m instanceof BaseTunerLayer;
        for (Map.Entry<String, Module> e : m.children().entrySet()) {
            if (!tuner || e.getKey().equals(BaseTunerLayer.BASE_LAYER)) {
                collectOutsideAdapters(prefix.isEmpty() ? e.getKey() : prefix + "." + e.getKey(), e.getValue(), out, seen);
            }
        }
    }

    // ------------------------------------------------------------------ target matching

    /** The kind of a module (or of a tuner layer's base layer) for {@code all-linear}. */
    public static ModuleType kindOf(Module m) {
        Module base = BaseTunerLayer.innermost(m);
        if (base instanceof Linear || base instanceof dev.peft4j.nn.QuantizedLinear) {
            return ModuleType.LINEAR;
        }
        if (base instanceof Conv1D) {
            return ModuleType.TRANSFORMERS_CONV1D;
        }
        if (base instanceof Embedding) {
            return ModuleType.EMBEDDING;
        }
        return ModuleType.OTHER;
    }

    /**
     * {@code all-linear} expanded to the names of the model's linear layers ({@code _maybe_include_all_linear_layers}):
     * the output embedding {@code lm_head} left out, and for {@code SEQ_CLS} the classifier head too.
     */
    public static ModuleSelector.Names allLinearTargets(Map<String, Module> modules, boolean seqCls,
            List<String> existing) {
        Map<String, ModuleType> kinds = new LinkedHashMap<>();
        for (Map.Entry<String, Module> e : modules.entrySet()) {
            kinds.put(e.getKey(), kindOf(e.getValue()));
        }
        String outEmb = modules.containsKey("lm_head") ? "lm_head" : null;
        return new ModuleSelector.Names(new ArrayList<>(TargetMatcher.allLinearTargets(kinds, outEmb, seqCls, existing)));
    }

    /**
     * {@code _find_minimal_target_modules} (§4.5, not for IA³): a list of 20 or more names is replaced by the minimal
     * suffix set when smaller (sorted, for a reproducible saved config); the same selector object otherwise.
     */
    public static ModuleSelector condense(ModuleSelector targets, Map<String, Module> modules) {
        if (!(targets instanceof ModuleSelector.Names n)
                || n.names().size() < TargetMatcher.MIN_TARGET_MODULES_FOR_OPTIMIZATION) {
            return targets;
        }
        List<String> names = new ArrayList<>(modules.keySet());
        names.remove("");
        Set<String> out = TargetMatcher.condenseTargetModules(n.names(), names, false);
        if (out.size() >= new LinkedHashSet<>(n.names()).size()) {
            return targets;
        }
        return new ModuleSelector.Names(new ArrayList<>(new TreeSet<>(out)));
    }

    /** A matcher for {@code targets} with the config's {@code exclude_modules} and {@code modules_to_save}. */
    public static TargetMatcher matcher(PeftConfig c, ModuleSelector targets) {
        return matcherBuilder(c, targets).build();
    }

    /** {@link #matcher}'s builder, for a method that adds its own filters (LoRA's layer filters). */
    public static TargetMatcher.Builder matcherBuilder(PeftConfig c, ModuleSelector targets) {
        TargetMatcher.Builder mb = TargetMatcher.builder();
        if (targets instanceof ModuleSelector.Names n) {
            mb.targetModules(n.names());
        } else if (targets instanceof ModuleSelector.Regex r) {
            mb.targetModules(r.pattern());
        }
        if (c.excludeModules() instanceof ModuleSelector.Names n) {
            mb.excludeModules(n.names());
        } else if (c.excludeModules() instanceof ModuleSelector.Regex r) {
            mb.excludeModules(r.pattern());
        }
        if (c.modulesToSave() != null) {
            mb.modulesToSave(c.modulesToSave());
        }
        return mb;
    }

    /**
     * PEFT forces {@code fan_in_fan_out} per created layer (false for {@code nn.Linear}, true for {@code Conv1D}, with
     * a warning) on the shared config, so the saved value is the last created wrapper's.
     */
    public static void fixFanInFanOut(PendingAdapter p, Map<String, Module> modules, List<String> selected) {
        Boolean last = null;
        for (String key : selected) {
            Module m = modules.get(key);
            if (m instanceof Linear || m instanceof dev.peft4j.nn.QuantizedLinear) {
                last = false;
            } else if (m instanceof Conv1D) {
                last = true;
            }
            if (last != null && last != p.config().fanInFanOut()) {
                LOG.warn(last ? "fan_in_fan_out is set to False but the target module is `Conv1D`. Setting fan_in_fan_out to True."
                        : "fan_in_fan_out is set to True but the target module is `torch.nn.Linear`. Setting fan_in_fan_out to False.");
                p.config(p.config().toBuilder().fanInFanOut(last).build());
            }
        }
    }

    /**
     * Refuses adapter {@code adapterName} on target {@code key} when the module there is a trainable-tokens wrapper
     * (another method's tuner layer is fine: the new method's layer wraps it, as PEFT's {@code _create_and_replace}
     * does for a target that is a {@code BaseTunerLayer} of another class).
     *
     * @throws UnsupportedOperationException naming the adapter, the module and the adapters it holds
     */
    public static void refuseTokenWrapper(String key, Module m, String adapterName) {
        if (m instanceof TrainableTokensWrapper w) {
            throw new UnsupportedOperationException("adapter '" + adapterName + "': target module '" + key
                    + "' already holds trainable-tokens adapter(s) " + w.tokenAdapter().adapterNames() + " ("
                    + m.typeName() + "), which peft4j does not nest another method's layer around (the model is "
                    + "unchanged): delete those adapters first, or target other modules");
        }
    }

    /** PEFT's {@code _check_new_adapter_config}: at most one adapter with {@code bias != "none"}. */
    public static void checkOneBiasAdapter(Bias bias, Collection<PeftConfig> existing) {
        if (bias == Bias.NONE) {
            return;
        }
        for (PeftConfig c : existing) {
            if (c instanceof LoraSettings ls && ls.bias() != Bias.NONE) {
                throw new IllegalArgumentException((c instanceof AdaLoraConfig ? "AdaLoraModel" : "LoraModel")
                        + " supports only 1 adapter with bias. When using multiple adapters, set bias to 'none' for "
                        + "all adapters.");
            }
        }
    }

    /**
     * {@code _set_trainable}: every module whose name ends with an entry of {@code modules_to_save} (plain
     * {@code endswith}) gets a copy for this adapter; modules inside tuner layers or wrappers are skipped.
     */
    public static void prepareModulesToSave(PendingAdapter p, List<String> entries, Map<String, Module> modules) {
        if (entries == null || entries.isEmpty()) {
            return;
        }
        List<String> inner = new ArrayList<>();
        for (Map.Entry<String, Module> e : modules.entrySet()) {
            if (e.getValue() instanceof BaseTunerLayer || e.getValue() instanceof ModulesToSaveWrapper) {
                inner.add(e.getKey() + ".");
            }
        }
        try {
            for (Map.Entry<String, Module> e : modules.entrySet()) {
                String key = e.getKey();
                if (key.isEmpty() || inner.stream().anyMatch(key::startsWith)
                        || entries.stream().noneMatch(key::endsWith)) {
                    continue;
                }
                Module m = e.getValue();
                if (m instanceof BaseTunerLayer) {
                    throw new IllegalArgumentException("modules_to_save: " + key + " is already a tuner layer");
                }
                Module original = m instanceof ModulesToSaveWrapper w ? w.originalModule() : m;
                p.addModulesToSave(key, ModulesToSaveWrapper.deepCopy(original, key));
            }
        } catch (RuntimeException ex) {
            p.discard();
            throw ex;
        }
    }

    // ------------------------------------------------------------------ injection

    /**
     * Puts a prepared adapter into the model: each target's tuner layer gets it (created where missing), each
     * modules_to_save wrapper its copy, the base values a load prepared are copied in, and only this adapter's
     * parameters are left trainable ({@code _mark_only_adapters_as_trainable}), or none with
     * {@code inference_mode}. Returns the base keys the load filled (after the commit's renaming).
     */
    public List<String> commit(PendingAdapter p) {
        String name = p.name();
        boolean trainable = !p.config().inferenceMode();
        for (Map.Entry<String, PendingLayer> e : p.layers().entrySet()) {
            e.getValue().commit(model, e.getKey(), name, trainable);
        }
        for (Map.Entry<String, Module> e : p.modulesToSave().entrySet()) {
            Module m = model.getSubmodule(e.getKey());
            ModulesToSaveWrapper w;
            if (m instanceof ModulesToSaveWrapper mw) {
                w = mw;
            } else {
                w = new ModulesToSaveWrapper(m);
                model.replaceSubmodule(e.getKey(), w);
            }
            w.addAdapter(name, e.getValue());
            w.setAdapter(List.of(name));
        }
        for (Map.Entry<String, PendingLayer> e : p.lateLayers().entrySet()) {
            e.getValue().commit(model, e.getKey(), name, trainable);
        }
        List<String> committedExtra = new ArrayList<>();
        try (NoGradGuard g = new NoGradGuard()) {
            for (Map.Entry<String, Tensor> e : p.extra.entrySet()) {
                String k = postCommitKey(p, e.getKey());
                model.getParameter(k).copy_(e.getValue());
                e.getValue().close();
                committedExtra.add(k);
            }
        }
        markTrainable(model, "", name, trainable);
        if (p.config() instanceof LoraSettings ls && ls.bias() != Bias.NONE) {
            markBiasTrainable(ls.bias(), trainable);
        }
        return committedExtra;
    }

    /** A base key of the model before this commit, as named after it ({@code base_layer} of wrapped modules). */
    private static String postCommitKey(PendingAdapter p, String baseKey) {
        for (String t : p.targets()) {
            if (baseKey.startsWith(t + ".") && !baseKey.startsWith(t + "." + BaseTunerLayer.BASE_LAYER + ".")) {
                return t + "." + BaseTunerLayer.BASE_LAYER + baseKey.substring(t.length());
            }
        }
        return baseKey;
    }

    /**
     * Freezes every parameter whose key is not an adapter key ({@link AdapterStateDict#isAdapterKey}) and sets
     * {@code requires_grad} of adapter {@code name}'s parameters (adapter keys holding {@code .name.} or ending in
     * {@code .name}) to {@code trainable}, as a loop over {@code named_parameters()} would, without visiting the other
     * adapters: below an adapter container ({@code lora_*}, {@code ia3_l}, {@code modules_to_save}) only the entry
     * named {@code name} is visited, so a load costs the same however many adapters the model holds, and another
     * adapter's parameters are never touched (an adapter named {@code 0} does not match {@code layers.0.}).
     */
    private static void markTrainable(Module m, String prefix, String name, boolean trainable) {
        String p = prefix.isEmpty() ? "" : prefix + ".";
        for (Map.Entry<String, Tensor> e : m.ownParameters().entrySet()) {
            String key = p + e.getKey();
            if (!AdapterStateDict.isAdapterKey(key)) {
                e.getValue().requires_grad_(false);
            } else if (key.contains("." + name + ".") || key.endsWith("." + name)) {
                e.getValue().requires_grad_(trainable);
            }
        }
        for (Map.Entry<String, Module> e : m.children().entrySet()) {
            String c = e.getKey();
            boolean container = !prefix.isEmpty()
                    && (c.startsWith("lora_") || c.equals("ia3_l") || c.equals("modules_to_save")
                            || c.equals(TrainableTokensLayer.DELTA));
            if (!container) {
                markTrainable(e.getValue(), p + c, name, trainable);
                continue;
            }
            // every key below is an adapter key: only this adapter's entry can match
            Module dict = e.getValue();
            Tensor own = dict.ownParameters().get(name);
            if (own != null) {
                own.requires_grad_(trainable);
            }
            Module child = dict.children().get(name);
            if (child != null) {
                setAllRequiresGrad(child, trainable);
            }
        }
    }

    private static void setAllRequiresGrad(Module m, boolean on) {
        for (Tensor t : m.ownParameters().values()) {
            t.requires_grad_(on);
        }
        for (Module c : m.children().values()) {
            setAllRequiresGrad(c, on);
        }
    }

    /** {@code bias="all"}: every {@code bias} parameter trains; {@code "lora_only"}: base biases of adapted layers. */
    private void markBiasTrainable(Bias bias, boolean trainable) {
        for (Map.Entry<String, Tensor> e : model.namedParameters().entrySet()) {
            String k = e.getKey();
            boolean isBias = k.equals("bias") || k.endsWith(".bias");
            if (!isBias || AdapterStateDict.isAdapterKey(k)) {
                continue;
            }
            if (bias == Bias.ALL || k.endsWith("." + BaseTunerLayer.BASE_LAYER + ".bias")) {
                e.getValue().requires_grad_(trainable);
            }
        }
    }

    /** Freezes the parameters of adapter {@code name} in every tuner layer and modules_to_save copy. */
    public void freezeAdapter(String name) {
        for (BaseTunerLayer t : tunerLayers().values()) {
            for (Tensor w : t.adapterParameters(name).values()) {
                w.requires_grad_(false);
            }
        }
        for (ModulesToSaveWrapper w : modulesToSaveWrappers().values()) {
            Module copy = w.adapterCopies().get(name);
            if (copy != null) {
                copy.namedParameters().values().forEach(t -> t.requires_grad_(false));
            }
        }
    }

    // ------------------------------------------------------------------ activation, deletion, merging

    /**
     * {@code set_adapter} over every tuner layer and modules_to_save wrapper: the active list becomes {@code names}
     * (the caller has checked that the adapters exist).
     */
    public void setAdapter(List<String> names) {
        setAdapter(names, null);
    }

    /**
     * PEFT's {@code BaseTuner.set_adapter(names)} as an injection ends with it: only the tuner layers of class
     * {@code layerClass} ({@link BaseTunerLayer#tunerLayerClass()}; null for every layer) and the modules_to_save
     * wrappers get the active list {@code names}; the layers of other methods keep theirs, so an adapter of another
     * method loaded earlier stays active.
     */
    public void setAdapter(List<String> names, String layerClass) {
        refreshTree();
        BaseTunerLayer[] layers = layerArray;
        ModulesToSaveWrapper[] wrappers = wrapperArray;
        if (layers.length == 0 && wrappers.length == 0) {
            throw new IllegalStateException("Did not succeeded in setting the adapter. Please make sure you are using "
                    + "a model that supports adapters.");
        }
        if (wrappers.length != 0 && names.size() > 1) {
            throw new IllegalArgumentException("Attempted to set multiple (" + names + ") adapters at once for "
                    + "modules_to_save.");
        }
        List<String> active = List.copyOf(names); // one immutable list shared by every layer
        for (BaseTunerLayer t : layers) {
            // trainable tokens are PEFT's auxiliary wrappers, which every set_adapter reaches
            if (layerClass == null || layerClass.equals(t.tunerLayerClass()) || t instanceof TrainableTokensLayer) {
                t.setAdapter(active);
            }
        }
        for (ModulesToSaveWrapper w : wrappers) {
            w.setAdapter(active);
        }
    }

    /**
     * {@code enable_adapter_layers} / {@code disable_adapter_layers}. Disabling also disables the modules_to_save
     * wrappers, which enabling does not undo (transformers' asymmetry, §2.6).
     */
    public void enableAdapterLayers(boolean enabled) {
        for (BaseTunerLayer t : tunerLayers().values()) {
            t.enableAdapters(enabled);
        }
        if (!enabled) {
            for (ModulesToSaveWrapper w : modulesToSaveWrappers().values()) {
                w.enableAdapters(false);
            }
        }
    }

    /** {@code active_adapters()}: those of the first tuner layer. */
    public List<String> activeAdapters() {
        for (BaseTunerLayer t : tunerLayers().values()) {
            return List.copyOf(t.activeAdapters());
        }
        throw new IllegalStateException("no tuner layer in the model");
    }

    /** {@code delete_adapter}: removes the adapter from every tuner layer and modules_to_save wrapper. */
    public void deleteAdapter(String name) {
        for (BaseTunerLayer t : tunerLayers().values()) {
            t.deleteAdapter(name);
        }
        for (ModulesToSaveWrapper w : modulesToSaveWrappers().values()) {
            w.deleteAdapter(name);
        }
    }

    /** {@code merge_adapter}: merges {@code names} into every tuner layer's base weight, unless all are merged. */
    public void mergeAdapter(List<String> names, boolean safeMerge) {
        boolean any = false;
        for (BaseTunerLayer t : tunerLayers().values()) {
            if (!t.mergedAdapters().containsAll(names)) {
                any = true;
            }
        }
        if (!any) {
            LOG.warn("All adapters are already merged, nothing to do.");
            return;
        }
        refuseNestedMerge(names, "merge");
        refuseQuantizedMerge(names);
        for (BaseTunerLayer t : tunerLayers().values()) {
            t.merge(names, safeMerge);
        }
    }

    /**
     * Refuses, before anything is merged, a merge of {@code names} (null: any adapter) touching a module where one
     * method's tuner layer wraps another's. PEFT merges every layer of such a stack into the innermost weight, so that
     * with both methods active the merged output differs from the unmerged one (an IA³ vector scales a LoRA delta
     * merged below it, which unmerged it does not), and its {@code merge_and_unload} replaces the outer layer by the
     * innermost module, dropping the inner method's adapters unmerged: peft4j does neither.
     *
     * @throws UnsupportedOperationException naming the module, its layers and the adapters they hold
     */
    private void refuseNestedMerge(List<String> names, String what) {
        for (Map.Entry<String, BaseTunerLayer> e : tunerLayers().entrySet()) {
            BaseTunerLayer outer = e.getValue();
            if (!outer.wrapsTunerLayer() || e.getKey().endsWith("." + BaseTunerLayer.BASE_LAYER)
                    && tunerLayers().get(e.getKey().substring(0, e.getKey().length()
                            - BaseTunerLayer.BASE_LAYER.length() - 1)) != null) {
                continue; // not a stack, or a stack already named by its outermost layer
            }
            List<String> held = new ArrayList<>();
            List<String> types = new ArrayList<>();
            for (Module m = outer; m instanceof BaseTunerLayer t; m = t.baseLayer()) {
                held.addAll(t.adapterNames());
                types.add(t.typeName());
            }
            if (!held.isEmpty() && (names == null || held.stream().anyMatch(names::contains))) {
                throw new UnsupportedOperationException("cannot " + what + " adapter(s) " + (names == null ? held
                        : names) + ": module '" + e.getKey() + "' holds layers of two methods nested (" + String.join(
                        " around ", types) + ", adapters " + held + "); PEFT merges each into the innermost weight, "
                        + "which changes the output when both are active, and its merge_and_unload drops the inner "
                        + "layer's adapters: peft4j refuses (the model is unchanged); delete the adapters of one "
                        + "method first");
            }
        }
    }

    /**
     * Refuses, before anything is merged, a merge of {@code names} into a layer whose base is a
     * {@link dev.peft4j.nn.QuantizedLinear}, naming the first such module.
     */
    private void refuseQuantizedMerge(List<String> names) {
        for (Map.Entry<String, BaseTunerLayer> e : tunerLayers().entrySet()) {
            BaseTunerLayer t = e.getValue();
            boolean holds = t.adapterNames().stream().anyMatch(names::contains);
            if (holds && t.baseLayer() instanceof dev.peft4j.nn.QuantizedLinear q) {
                throw new UnsupportedOperationException("cannot merge adapter(s) " + names + " into module '"
                        + e.getKey() + "': its base layer is quantized (" + q.format().ggmlName() + "), and merging "
                        + "would round the merged weight to " + q.format().ggmlName() + " again (PEFT warns about "
                        + "this rounding for quantized bases); load the base model without quantization to merge");
            }
        }
    }

    /** {@code unmerge_adapter}. */
    public void unmergeAdapter() {
        boolean any = false;
        for (BaseTunerLayer t : tunerLayers().values()) {
            if (t.merged()) {
                t.unmerge();
                any = true;
            }
        }
        if (!any) {
            // PEFT warns from each layer; Python's warnings filter shows it once
            LOG.warn("Already unmerged. Nothing to do.");
        }
    }

    /**
     * {@code merge_and_unload}: merge {@code names}, then put every base layer back in place of its tuner layer and
     * every modules_to_save wrapper's active copy (the original when none is active) in place of the wrapper, with
     * all adapters dropped: the model is a plain model again.
     */
    public void mergeAndUnload(List<String> names, boolean safeMerge) {
        refuseNestedMerge(null, "merge_and_unload");
        refuseQuantizedMerge(names);
        for (Map.Entry<String, BaseTunerLayer> e : tunerLayers().entrySet()) {
            BaseTunerLayer t = e.getValue();
            if (t.disabled() && t.merged()) {
                t.unmerge();
            }
            t.merge(names, safeMerge);
        }
        for (Map.Entry<String, BaseTunerLayer> e : tunerLayers().entrySet()) {
            BaseTunerLayer t = e.getValue();
            Module base = t.baseLayer();
            for (String a : t.adapterNames()) {
                t.deleteAdapter(a);
            }
            String key = e.getKey();
            String parent = key.endsWith("." + TrainableTokensWrapper.TOKEN_ADAPTER)
                    ? key.substring(0, key.length() - TrainableTokensWrapper.TOKEN_ADAPTER.length() - 1) : null;
            if (t instanceof TrainableTokensLayer && parent != null
                    && model.getSubmodule(parent) instanceof TrainableTokensWrapper) {
                key = parent; // the wrapper goes too
            }
            model.replaceSubmodule(key, base);
        }
        for (Map.Entry<String, ModulesToSaveWrapper> e : modulesToSaveWrappers().entrySet()) {
            ModulesToSaveWrapper w = e.getValue();
            String act = w.activeAdapter();
            Module keep = act != null && w.adapterCopies().containsKey(act) && !w.disabled()
                    ? w.adapterCopies().get(act) : w.originalModule();
            model.replaceSubmodule(e.getKey(), keep);
        }
    }
}
