package dev.peft4j;

import dev.peft4j.config.Bias;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.ModuleSelector;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.config.PeftType;
import dev.peft4j.io.AdapterFolder;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.AdapterKeys;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.ModuleType;
import dev.peft4j.tuners.TargetMatcher;
import dev.peft4j.tuners.lora.LoraInit;
import dev.peft4j.tuners.lora.LoraLayer;
import dev.peft4j.tuners.lora.LoraMath;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.function.Supplier;
import org.bytedeco.pytorch.Generator;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The adapter state of one model (transformers' {@code peft_config} dict and {@code _hf_peft_config_loaded} flag)
 * and the logic of every {@link PeftAdapterMixin} method. Injection follows PEFT's {@code inject_adapter}; loading
 * prepares every new tensor aside and commits by swapping them in, so a failed load leaves the model as it was.
 *
 * <p>Supported now: LoRA on {@code nn.Linear} and transformers' {@code Conv1D}, {@code bias="none"}, no
 * {@code modules_to_save}. IA³, AdaLoRA, LoRA on Embedding, DoRA, {@code bias != "none"} and {@code modules_to_save}
 * are refused with an explicit "not supported yet" error rather than half-done.
 */
public final class PeftAdapters {
    private static final Logger LOG = LoggerFactory.getLogger(PeftAdapters.class);
    static final String NO_ADAPTER = "No adapter loaded. Please load an adapter first.";

    private final Module model;
    private final LinkedHashMap<String, PeftConfig> peftConfig = new LinkedHashMap<>();
    /** Non-adapter checkpoint keys (embeddings saved alongside, §5.6) each adapter loaded into the base model. */
    private final Map<String, List<String>> extraKeys = new LinkedHashMap<>();
    private boolean loaded;
    private long seed = 0;

    public PeftAdapters(Module model) {
        this.model = model;
    }

    /** {@code peft_config}: adapter name → config (unmodifiable view). */
    public Map<String, PeftConfig> peftConfig() {
        return Collections.unmodifiableMap(peftConfig);
    }

    /** {@code _hf_peft_config_loaded}. */
    public boolean isLoaded() {
        return loaded;
    }

    /** Seeds the generator that initialises the adapters {@code addAdapter} creates (tests reproduce inits). */
    public void seed(long seed) {
        this.seed = seed;
    }

    // ------------------------------------------------------------------ tuner layers

    /** Every tuner layer under its module name, in {@code named_modules()} order. */
    public Map<String, BaseTunerLayer> tunerLayers() {
        Map<String, BaseTunerLayer> out = new LinkedHashMap<>();
        for (Map.Entry<String, Module> e : model.namedModules().entrySet()) {
            if (e.getValue() instanceof BaseTunerLayer t) {
                out.put(e.getKey(), t);
            }
        }
        return out;
    }

    private void requireLoaded() {
        if (!loaded) {
            throw new IllegalStateException(NO_ADAPTER);
        }
    }

    // ------------------------------------------------------------------ add / load

    /** {@code add_adapter(adapter_config, adapter_name)}: inject a freshly initialised adapter and activate only it. */
    public void addAdapter(PeftConfig config, String adapterName) {
        String name = adapterName == null || adapterName.isEmpty() ? "default" : adapterName;
        if (config == null) {
            throw new IllegalArgumentException("adapter_config should be an instance of PeftConfig. Got null instead.");
        }
        if (peftConfig.containsKey(name)) {
            throw new IllegalArgumentException("Adapter with name " + name + " already exists. Please use a different name.");
        }
        Prepared p = prepare(config, name);
        p.commit();
        setAdapter(List.of(name), false);
    }

    /** {@code load_adapter}. */
    public AdapterLoadReport loadAdapter(String pathOrRepoId, LoadAdapterOptions options) throws IOException {
        LoadAdapterOptions o = options == null ? LoadAdapterOptions.DEFAULTS : options;
        String name = o.adapterName() == null ? "default" : o.adapterName();
        if (peftConfig.containsKey(name)) {
            throw new IllegalArgumentException("Adapter with name " + name + " already exists. Please use a different name.");
        }
        if (pathOrRepoId == null && o.adapterStateDict() == null && o.peftConfig() == null) {
            throw new IllegalArgumentException("You should either pass a `peft_model_id` or a `peft_config` and "
                    + "`adapter_state_dict` to load an adapter.");
        }
        PeftConfig config = o.peftConfig();
        Map<String, Tensor> sd = o.adapterStateDict();
        String source = "state_dict";
        if (pathOrRepoId != null) {
            Path dir = Path.of(pathOrRepoId);
            if (!Files.isDirectory(dir)) {
                throw new UnsupportedOperationException("'" + pathOrRepoId + "' is not a local directory, and a "
                        + "Hub download is not available yet: download the adapter folder and pass its path");
            }
            if (config == null && !Files.isRegularFile(dir.resolve(PeftConfigs.CONFIG_FILE_NAME))) {
                throw new IllegalArgumentException("adapter model file not found in " + pathOrRepoId
                        + ". Make sure you are passing the correct path to the adapter model.");
            }
            if (config == null) {
                config = PeftConfigs.read(dir);
            }
            Path weights = AdapterFolder.findWeights(dir);
            if (weights == null) {
                throw new java.nio.file.NoSuchFileException(dir.toString(), null, "adapter folder has neither "
                        + AdapterFolder.SAFETENSORS_NAME + " nor " + AdapterFolder.BIN_NAME);
            }
            sd = AdapterFolder.readWeights(weights); // replaces a passed state dict, as transformers v4 does
            source = pathOrRepoId;
        }
        if (config == null) {
            throw new IllegalArgumentException("You should either pass a `peft_model_id` or a `peft_config` and "
                    + "`adapter_state_dict` to load an adapter.");
        }
        if (sd == null) {
            throw new IllegalArgumentException("no adapter state dict: pass `adapter_state_dict` with `peft_config`");
        }
        config = config.toBuilder().inferenceMode(!o.isTrainable()).build(); // transformers v5: always
        Prepared p = prepare(config, name);
        AdapterLoadReport report;
        try {
            report = p.load(sd, source);
        } catch (RuntimeException e) {
            p.discard();
            throw e;
        }
        p.commit();
        setAdapter(List.of(name), false);
        if (config.inferenceMode()) {
            model.eval();
            for (BaseTunerLayer t : tunerLayers().values()) {
                for (Tensor w : t.adapterParameters(name).values()) {
                    w.requires_grad_(false);
                }
            }
        }
        if (!report.unexpectedKeys().isEmpty()) {
            LOG.warn("Loading adapter weights from {} led to unexpected keys not found in the model: {}. ", source,
                    String.join(", ", report.unexpectedKeys()));
        }
        if (!report.missingKeys().isEmpty()) {
            LOG.warn("Loading adapter weights from {} led to missing keys in the model: {}. ", source,
                    String.join(", ", report.missingKeys()));
        }
        return report;
    }

    /** A new adapter made aside: nothing of the model changes until {@link #commit}. */
    private final class Prepared {
        final String name;
        final PeftConfig config;
        final Map<String, Linear[]> lora = new LinkedHashMap<>(); // module -> {A, B}
        final Map<String, Double> scalings = new LinkedHashMap<>();
        final Map<String, Tensor> extra = new LinkedHashMap<>(); // base key -> prepared value
        final double dropoutP;

        Prepared(PeftConfig config, String name, double dropoutP) {
            this.config = config;
            this.name = name;
            this.dropoutP = dropoutP;
        }

        /** In-memory key → tensor of every new adapter parameter. */
        Map<String, Tensor> params() {
            Map<String, Tensor> out = new LinkedHashMap<>();
            for (Map.Entry<String, Linear[]> e : lora.entrySet()) {
                String m = e.getKey();
                out.put(AdapterKeys.modelKey(m, name, AdapterKeys.Param.LORA_A), e.getValue()[0].weight());
                out.put(AdapterKeys.modelKey(m, name, AdapterKeys.Param.LORA_B), e.getValue()[1].weight());
                if (e.getValue()[1].bias() != null) {
                    out.put(AdapterKeys.modelKey(m, name, AdapterKeys.Param.LORA_B_BIAS), e.getValue()[1].bias());
                }
            }
            return out;
        }

        AdapterLoadReport load(Map<String, Tensor> checkpoint, String source) {
            Map<String, Tensor> own = params();
            Map<String, Tensor> baseState = model.stateDict();
            Set<String> filled = new LinkedHashSet<>();
            List<String> unexpected = new ArrayList<>();
            Map<Tensor, Tensor> values = new java.util.IdentityHashMap<>();
            try (NoGradGuard g = new NoGradGuard()) {
                for (Map.Entry<String, Tensor> e : checkpoint.entrySet()) {
                    String key = AdapterKeys.stripPeftPrefix(e.getKey());
                    Optional<AdapterKeys.ParsedKey> parsed = AdapterKeys.parseCheckpointKey(key);
                    Tensor target = null;
                    String modelKey = null;
                    if (parsed.isPresent()) {
                        AdapterKeys.ParsedKey pk = parsed.get();
                        boolean linearParam = pk.param() == AdapterKeys.Param.LORA_A
                                || pk.param() == AdapterKeys.Param.LORA_B || pk.param() == AdapterKeys.Param.LORA_B_BIAS;
                        if (linearParam) {
                            modelKey = AdapterKeys.modelKey(pk.module(), name, pk.param());
                            target = own.get(modelKey);
                        }
                    } else if (baseState.containsKey(key)) {
                        modelKey = key;
                        target = baseState.get(key);
                    }
                    if (target == null) {
                        unexpected.add(e.getKey());
                        continue;
                    }
                    Tensor src = e.getValue();
                    if (!Arrays.equals(src.shape(), target.shape())) {
                        throw new IllegalArgumentException("Error(s) in loading adapter '" + name + "' from " + source
                                + ": size mismatch for " + e.getKey() + ": copying a param with shape "
                                + Arrays.toString(src.shape()) + " from checkpoint, the shape in current model is "
                                + Arrays.toString(target.shape()) + ".");
                    }
                    if (own.containsKey(modelKey)) {
                        values.put(target, src);
                    } else {
                        Tensor v = src.to(target.scalar_type()).contiguous().clone();
                        Tensor old = extra.put(modelKey, v);
                        if (old != null) {
                            old.close();
                        }
                    }
                    filled.add(modelKey);
                }
                // all checked: fill the (still private) adapter tensors
                for (Map.Entry<Tensor, Tensor> e : values.entrySet()) {
                    e.getKey().copy_(e.getValue());
                }
            }
            List<String> missing = new ArrayList<>();
            for (String k : own.keySet()) {
                if (!filled.contains(k)) {
                    missing.add(k);
                }
            }
            return new AdapterLoadReport(missing, unexpected);
        }

        void discard() {
            for (Linear[] ab : lora.values()) {
                ab[0].close();
                ab[1].close();
            }
            for (Tensor t : extra.values()) {
                t.close();
            }
        }

        void commit() {
            boolean trainable = !config.inferenceMode();
            for (Map.Entry<String, Linear[]> e : lora.entrySet()) {
                Module m = model.getSubmodule(e.getKey());
                LoraLayer layer;
                if (m instanceof LoraLayer l) {
                    layer = l;
                } else {
                    layer = new LoraLayer(m);
                    model.replaceSubmodule(e.getKey(), layer);
                }
                layer.addAdapter(name, e.getValue()[0], e.getValue()[1], scalings.get(e.getKey()), dropoutP);
                layer.train(m.isTraining());
            }
            try (NoGradGuard g = new NoGradGuard()) {
                for (Map.Entry<String, Tensor> e : extra.entrySet()) {
                    model.getParameter(e.getKey()).copy_(e.getValue());
                    e.getValue().close();
                }
            }
            extraKeys.put(name, new ArrayList<>(extra.keySet()));
            // _mark_only_adapters_as_trainable: every base parameter frozen
            for (Map.Entry<String, Tensor> e : model.namedParameters().entrySet()) {
                if (!e.getKey().contains(".lora_")) {
                    e.getValue().requires_grad_(false);
                } else if (e.getKey().contains("." + name + ".")) {
                    e.getValue().requires_grad_(trainable);
                }
            }
            peftConfig.put(name, config);
            loaded = true;
        }
    }

    private Prepared prepare(PeftConfig config, String name) {
        if (config.peftType() != PeftType.LORA) {
            throw new UnsupportedOperationException("peft_type " + config.peftType() + " is not supported yet by "
                    + "peft4j's adapter mixin (only LORA is); adapter '" + name + "' was not added");
        }
        LoraConfig lc = (LoraConfig) config;
        if (lc.useDora()) {
            throw new UnsupportedOperationException("use_dora=True is not supported yet (adapter '" + name + "')");
        }
        if (lc.bias() != Bias.NONE) {
            throw new UnsupportedOperationException("bias=\"" + lc.bias().jsonValue()
                    + "\" is not supported yet (adapter '" + name + "'): only \"none\" is");
        }
        if (lc.modulesToSave() != null && !lc.modulesToSave().isEmpty()) {
            throw new UnsupportedOperationException("modules_to_save " + lc.modulesToSave()
                    + " is not supported yet (adapter '" + name + "')");
        }
        if (lc.layerReplication() != null) {
            throw new UnsupportedOperationException("layer_replication is not supported (adapter '" + name + "')");
        }
        LoraInit.Mode init = LoraInit.parse(initValue(lc));
        Map<String, Module> modules = model.namedModules();
        List<String> existing = new ArrayList<>(tunerLayers().keySet());
        ModuleSelector targets = lc.targetModules();
        if (targets instanceof ModuleSelector.Regex r && TargetMatcher.isAllLinear(r.pattern())) {
            Map<String, ModuleType> kinds = new LinkedHashMap<>();
            for (Map.Entry<String, Module> e : modules.entrySet()) {
                kinds.put(e.getKey(), kindOf(e.getValue()));
            }
            String outEmb = modules.containsKey("lm_head") ? "lm_head" : null;
            Set<String> expanded = TargetMatcher.allLinearTargets(kinds, outEmb,
                    lc.taskType() != null && lc.taskType().name().equals("SEQ_CLS"), existing);
            targets = new ModuleSelector.Names(new ArrayList<>(expanded));
            config = lc.toBuilder().targetModules(targets).build();
            lc = (LoraConfig) config;
        }
        TargetMatcher.Builder mb = TargetMatcher.builder();
        if (targets instanceof ModuleSelector.Names n) {
            mb.targetModules(n.names());
        } else if (targets instanceof ModuleSelector.Regex r) {
            mb.targetModules(r.pattern());
        }
        if (lc.excludeModules() instanceof ModuleSelector.Names n) {
            mb.excludeModules(n.names());
        } else if (lc.excludeModules() instanceof ModuleSelector.Regex r) {
            mb.excludeModules(r.pattern());
        }
        if (lc.layersToTransform() instanceof dev.peft4j.config.LayerIndices.Single s) {
            mb.layersToTransform(s.index());
        } else if (lc.layersToTransform() instanceof dev.peft4j.config.LayerIndices.Listed l) {
            mb.layersToTransform(l.indices());
        }
        if (lc.layersPattern() instanceof dev.peft4j.config.LayersPattern.Single s) {
            mb.layersPattern(s.pattern());
        } else if (lc.layersPattern() instanceof dev.peft4j.config.LayersPattern.Listed l) {
            mb.layersPattern(l.patterns());
        }
        List<String> selected = mb.build().selectTargets(modules.keySet(), existing);
        Prepared p = new Prepared(config, name, lc.loraDropout());
        try (Generator gen = torch.createCPUGenerator(seed)) {
            for (String key : selected) {
                Module m = modules.get(key);
                Module base = m instanceof LoraLayer l ? l.baseLayer() : m;
                long in;
                long out;
                Tensor w;
                if (base instanceof Linear l) {
                    in = l.inFeatures();
                    out = l.outFeatures();
                    w = l.weight();
                } else if (base instanceof Conv1D c) {
                    in = c.inFeatures();
                    out = c.outFeatures();
                    w = c.weight();
                } else if (base instanceof Embedding) {
                    p.discard();
                    throw new UnsupportedOperationException("Target module " + key + " is an Embedding: LoRA on "
                            + "Embedding is not supported yet by peft4j's adapter mixin");
                } else {
                    p.discard();
                    throw new IllegalArgumentException("Target module " + base.typeName() + " (" + key + ") is not "
                            + "supported. Currently, only the following modules are supported: `torch.nn.Linear`, "
                            + "`torch.nn.Embedding`, `torch.nn.Conv1d`, `torch.nn.Conv2d`, `torch.nn.Conv3d`, "
                            + "`transformers.pytorch_utils.Conv1D`, `torch.nn.MultiheadAttention.`.");
                }
                int r = lc.rankFor(key);
                double alpha = lc.alphaFor(key);
                double s = LoraMath.scaling(alpha, r, lc.useRslora());
                ScalarType dt = LoraMath.adapterDtype(w.scalar_type(), false);
                Linear a = new Linear(in, r, false, Init.cpu(ScalarType.Float));
                Linear b = new Linear(r, out, lc.loraBias(), Init.cpu(ScalarType.Float));
                LoraInit.initLinear(a.weight(), b.weight(), b.bias(), init, gen);
                if (dt != ScalarType.Float || !w.is_cpu()) {
                    a.to(w.device(), dt);
                    b.to(w.device(), dt);
                }
                p.lora.put(key, new Linear[] {a, b});
                p.scalings.put(key, s);
            }
        } catch (RuntimeException e) {
            p.discard();
            throw e;
        }
        return p;
    }

    private static Object initValue(LoraConfig lc) {
        dev.peft4j.config.InitLoraWeights w = lc.initLoraWeights();
        return w instanceof dev.peft4j.config.InitLoraWeights.Flag f ? (Object) f.value()
                : ((dev.peft4j.config.InitLoraWeights.Method) w).name();
    }

    private static ModuleType kindOf(Module m) {
        Module base = m instanceof BaseTunerLayer t ? t.baseLayer() : m;
        if (base instanceof Linear) {
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

    // ------------------------------------------------------------------ activation

    /**
     * {@code set_adapter}; {@code asList} chooses transformers' message for an unknown name (a list argument vs a
     * single string).
     */
    public void setAdapter(List<String> names, boolean asList) {
        requireLoaded();
        List<String> missing = new ArrayList<>();
        for (String n : names) {
            if (!peftConfig.containsKey(n)) {
                missing.add(n);
            }
        }
        if (!missing.isEmpty()) {
            if (asList) {
                throw new IllegalArgumentException("Following adapter(s) could not be found: " + String.join(", ", missing)
                        + ". Make sure you are passing the correct adapter name(s). current loaded adapters are: "
                        + pyList(peftConfig.keySet()));
            }
            throw new IllegalArgumentException("Adapter with name " + names.get(0)
                    + " not found. Please pass the correct adapter name among " + pyList(peftConfig.keySet()));
        }
        Map<String, BaseTunerLayer> layers = tunerLayers();
        if (layers.isEmpty()) {
            throw new IllegalStateException("Did not succeeded in setting the adapter. Please make sure you are using "
                    + "a model that supports adapters.");
        }
        for (BaseTunerLayer t : layers.values()) {
            t.setAdapter(names);
        }
    }

    public void disableAdapters() {
        requireLoaded();
        for (BaseTunerLayer t : tunerLayers().values()) {
            t.enableAdapters(false);
        }
    }

    public void enableAdapters() {
        requireLoaded();
        for (BaseTunerLayer t : tunerLayers().values()) {
            t.enableAdapters(true);
        }
    }

    /** {@code active_adapters()}: those of the first tuner layer. */
    public List<String> activeAdapters() {
        requireLoaded();
        for (BaseTunerLayer t : tunerLayers().values()) {
            return List.copyOf(t.activeAdapters());
        }
        throw new IllegalStateException("no tuner layer in the model");
    }

    public <T> T withAdapterNames(List<String> adapterNames, Supplier<T> forward) {
        requireLoaded();
        List<String> unknown = new ArrayList<>();
        for (String n : new LinkedHashSet<>(adapterNames)) {
            if (!n.equals(LoraMath.BASE_ADAPTER_NAME) && !peftConfig.containsKey(n)) {
                unknown.add(n);
            }
        }
        if (!unknown.isEmpty()) {
            throw new IllegalArgumentException("Trying to infer with non-existing adapter(s): "
                    + String.join(", ", unknown));
        }
        return LoraLayer.withAdapterNames(adapterNames, forward);
    }

    // ------------------------------------------------------------------ state dict, save, delete

    /**
     * {@code get_adapter_state_dict(adapter_name)}: keys as saved but without {@code base_model.model.}; the model's
     * own tensors.
     */
    public Map<String, Tensor> getAdapterStateDict(String adapterName) {
        requireLoaded();
        String name = adapterName == null ? activeAdapters().get(0) : adapterName;
        if (!peftConfig.containsKey(name)) {
            throw new IllegalArgumentException("Adapter with name " + name + " not found. Please pass the correct "
                    + "adapter name among " + pyList(peftConfig.keySet()));
        }
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<String, BaseTunerLayer> e : tunerLayers().entrySet()) {
            for (Map.Entry<String, Tensor> p : e.getValue().adapterParameters(name).entrySet()) {
                out.put(AdapterKeys.removeAdapterName(e.getKey() + "." + p.getKey(), name), p.getValue());
            }
        }
        for (String k : extraKeys.getOrDefault(name, List.of())) {
            out.put(k, model.getParameter(k));
        }
        return out;
    }

    /**
     * What transformers' {@code save_pretrained} writes for an adapter model: {@code adapter_config.json}
     * (PEFT's JSON format) and {@code adapter_model.safetensors} with {@code base_model.model.} keys and
     * {@code {"format":"pt"}} metadata, each written atomically. {@code adapterName} null = the single active one.
     */
    public void saveAdapter(Path dir, String adapterName) throws IOException {
        requireLoaded();
        String name = adapterName;
        if (name == null) {
            List<String> act = activeAdapters();
            if (act.size() > 1) {
                throw new IllegalArgumentException("Multiple active adapters detected, saving multiple active adapters "
                        + "is not supported yet. You can save adapters separately one by one by iteratively calling "
                        + "`model.set_adapter(adapter_name)` then `model.save_pretrained(...)`");
            }
            name = act.get(0);
        }
        Map<String, Tensor> sd = getAdapterStateDict(name);
        Map<String, Tensor> prefixed = new LinkedHashMap<>();
        for (Map.Entry<String, Tensor> e : sd.entrySet()) {
            prefixed.put(AdapterKeys.addPeftPrefix(e.getKey()), e.getValue());
        }
        Files.createDirectories(dir);
        SafetensorsFile.write(dir.resolve(AdapterFolder.SAFETENSORS_NAME), prefixed, SafetensorsFile.PT_METADATA);
        PeftConfigs.write(peftConfig.get(name), dir);
    }

    /** {@code delete_adapter(adapter_names)}. */
    public void deleteAdapter(List<String> names) {
        requireLoaded();
        List<String> missing = new ArrayList<>();
        for (String n : names) {
            if (!peftConfig.containsKey(n)) {
                missing.add(n);
            }
        }
        if (!missing.isEmpty()) {
            throw new IllegalArgumentException("The following adapter(s) are not present and cannot be deleted: "
                    + String.join(", ", missing));
        }
        for (String n : new LinkedHashSet<>(names)) {
            for (BaseTunerLayer t : tunerLayers().values()) {
                t.deleteAdapter(n);
            }
            peftConfig.remove(n);
            extraKeys.remove(n);
        }
        if (peftConfig.isEmpty()) {
            loaded = false;
        }
    }

    // ------------------------------------------------------------------ merge

    /** PEFT's {@code merge_adapter(adapter_names)}: default the active adapters. */
    public void mergeAdapter(List<String> names, boolean safeMerge) {
        requireLoaded();
        List<String> todo = names == null ? activeAdapters() : names;
        for (String n : todo) {
            if (!peftConfig.containsKey(n)) {
                throw new IllegalArgumentException("Adapter with name " + n + " not found. Please pass the correct "
                        + "adapter name among " + pyList(peftConfig.keySet()));
            }
        }
        boolean any = false;
        for (BaseTunerLayer t : tunerLayers().values()) {
            if (!t.mergedAdapters().containsAll(todo)) {
                any = true;
            }
        }
        if (!any) {
            LOG.warn("All adapters are already merged, nothing to do.");
            return;
        }
        for (BaseTunerLayer t : tunerLayers().values()) {
            t.merge(todo, safeMerge);
        }
    }

    public void unmergeAdapter() {
        requireLoaded();
        for (BaseTunerLayer t : tunerLayers().values()) {
            t.unmerge();
        }
    }

    /**
     * {@code merge_and_unload}: merge (default the active adapters), then put every base layer back in place of its
     * tuner layer and drop all adapters; the model is a plain model again.
     */
    public void mergeAndUnload(List<String> names, boolean safeMerge) {
        requireLoaded();
        List<String> todo = names == null ? activeAdapters() : names;
        for (Map.Entry<String, BaseTunerLayer> e : tunerLayers().entrySet()) {
            BaseTunerLayer t = e.getValue();
            if (t.disabled() && t.merged()) {
                t.unmerge();
            }
            t.merge(todo, safeMerge);
        }
        for (Map.Entry<String, BaseTunerLayer> e : tunerLayers().entrySet()) {
            BaseTunerLayer t = e.getValue();
            Module base = t.baseLayer();
            for (String a : t.adapterNames()) {
                t.deleteAdapter(a);
            }
            model.replaceSubmodule(e.getKey(), base);
        }
        peftConfig.clear();
        extraKeys.clear();
        loaded = false;
    }

    private static String pyList(java.util.Collection<String> names) {
        StringBuilder sb = new StringBuilder("[");
        for (String n : names) {
            if (sb.length() > 1) {
                sb.append(", ");
            }
            sb.append('\'').append(n).append('\'');
        }
        return sb.append(']').toString();
    }
}
