package dev.peft4j;

import dev.peft4j.config.Bias;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftType;
import dev.peft4j.config.LoraSettings;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.io.AdapterFolder;
import dev.peft4j.io.AtomicFolder;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.AdapterKeys;
import dev.peft4j.tuners.AdapterStateDict;
import dev.peft4j.tuners.BaseTuner;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.ModulesToSaveWrapper;
import dev.peft4j.tuners.PendingAdapter;
import dev.peft4j.tuners.TrainableTokens;
import dev.peft4j.tuners.TunerModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReadWriteLock;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.Supplier;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The adapter state of one model (transformers' {@code peft_config} dict and {@code _hf_peft_config_loaded} flag)
 * and the logic of every {@link PeftAdapterMixin} method, as transformers' {@code integrations/peft.py}: it checks
 * the names and the state, then hands the work to the model's {@link BaseTuner} (what every method shares) and to
 * the {@link TunerModel} of the adapter's method ({@link TunerModels}: LoRA, IA³, AdaLoRA).
 * Loading prepares every new tensor aside and commits by swapping them in, so a failed load leaves the model as it
 * was.
 *
 * <p>Supported now: LoRA, IA³ and AdaLoRA on {@code nn.Linear} and transformers' {@code Conv1D}, LoRA on
 * {@code nn.Embedding}, {@code bias} none/all/lora_only (PEFT main's saving), {@code modules_to_save} of
 * Linear/Conv1D/Embedding modules, DoRA ({@code use_dora}) on LoRA Linear, Conv1D and Embedding layers.
 */
public final class PeftAdapters {
    private static final Logger LOG = LoggerFactory.getLogger(PeftAdapters.class);
    static final String NO_ADAPTER = "No adapter loaded. Please load an adapter first.";

    private final Supplier<String> nameOrPath;
    private final BaseTuner tuner;
    private final TunerModels methods;
    private final LinkedHashMap<String, PeftConfig> peftConfig = new LinkedHashMap<>();
    /** Non-adapter checkpoint keys (embeddings saved alongside, §5.6) each adapter loaded into the base model. */
    private final Map<String, List<String>> extraKeys = new LinkedHashMap<>();
    private boolean loaded;
    private long seed = 0;
    /** {@code enable_peft_hotswap}'s target rank; null until it is called. */
    private Integer hotswapTargetRank;
    /** Read side held by the model's forwards; write side by a hotswap's commit (see {@link #forwardLock()}). */
    private final ReadWriteLock swapLock;

    /** The adapters of {@code model}, whose saved configs get no {@code base_model_name_or_path}. */
    public PeftAdapters(Module model) {
        this(model, () -> null);
    }

    /**
     * The adapters of {@code model}; {@code nameOrPath} gives the model's {@code name_or_path}, which
     * {@code addAdapter} writes into the config as {@code base_model_name_or_path} (null for none), as transformers
     * does.
     */
    public PeftAdapters(Module model, Supplier<String> nameOrPath) {
        this(model, nameOrPath, new ReentrantReadWriteLock());
    }

    /**
     * The adapters of {@code model}, as {@link #PeftAdapters(Module, Supplier)}; {@code swapLock}'s read side is the
     * one the model's forwards hold ({@link #forwardLock()}), so that a hotswap never runs during one.
     */
    public PeftAdapters(Module model, Supplier<String> nameOrPath, ReadWriteLock swapLock) {
        this.swapLock = swapLock;
        this.nameOrPath = nameOrPath;
        this.tuner = new BaseTuner(model);
        this.methods = new TunerModels(tuner);
    }

    /**
     * The lock a forward of the model holds (read side) from its start to its end, so that a hotswap, which commits
     * under the write side, is seen by each forward entirely or not at all. The models of {@code dev.peft4j.models}
     * take it in their top-level {@code forward}; a caller running a bare module tree takes it itself.
     */
    public Lock forwardLock() {
        return swapLock.readLock();
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

    /**
     * Every tuner layer under its module name, in {@code named_modules()} order (an unmodifiable snapshot: it does
     * not follow later changes of the model).
     */
    public Map<String, BaseTunerLayer> tunerLayers() {
        return tuner.tunerLayers();
    }

    /** Every modules_to_save wrapper under its module name (an unmodifiable snapshot, as {@link #tunerLayers()}). */
    public Map<String, ModulesToSaveWrapper> modulesToSaveWrappers() {
        return tuner.modulesToSaveWrappers();
    }

    private void requireLoaded() {
        if (!loaded) {
            throw new IllegalStateException(NO_ADAPTER);
        }
    }

    /** @param forLoad whether a checkpoint follows: only then does AdaLoRA resize modules by {@code rank_pattern}. */
    private PendingAdapter prepare(PeftConfig config, String name, boolean forLoad) {
        PendingAdapter p = methods.of(config, name).prepare(config, name, seed, forLoad, peftConfig());
        if (p.config() instanceof LoraSettings ls && ls.trainableTokenIndices() != null) {
            try { // after the method's layers, as PEFT's set_additional_trainable_modules
                TrainableTokens.prepare(p, tuner, ls.trainableTokenIndices(), p.config().modulesToSave());
            } catch (RuntimeException e) {
                p.discard();
                throw e;
            }
        }
        return p;
    }

    private void commit(PendingAdapter p) {
        extraKeys.put(p.name(), tuner.commit(p));
        peftConfig.put(p.name(), p.config());
        loaded = true;
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
        // transformers overwrites base_model_name_or_path with the model's name_or_path (or None)
        config = config.toBuilder().baseModelNameOrPath(nameOrPath.get()).build();
        config = ConfigFieldChecks.check(config, name, false, "add_adapter");
        commit(prepare(config, name, false));
        setAdapter(List.of(name), false);
    }

    /** {@code load_adapter}; with hotswap, the loaded adapter of that name is swapped in place. */
    public AdapterLoadReport loadAdapter(String pathOrRepoId, LoadAdapterOptions options) throws IOException {
        LoadAdapterOptions o = LoadArguments.resolve(options == null ? LoadAdapterOptions.DEFAULTS : options);
        boolean hotswap = o.hotswap() == null
                ? hotswapTargetRank != null && loaded && o.adapterName() != null && peftConfig.containsKey(o.adapterName())
                : o.hotswap();
        if (hotswap) {
            // transformers checks the name before defaulting it: hotswap needs the name given
            if (!loaded || o.adapterName() == null || !peftConfig.containsKey(o.adapterName())) {
                throw new IllegalArgumentException("To hotswap an adapter, there must already be an existing adapter "
                        + "with the same adapter name.");
            }
            for (PeftConfig c : peftConfig.values()) {
                if (c.peftType() != PeftType.LORA) {
                    throw new IllegalArgumentException("Hotswapping is currently only supported for LoRA, please set "
                            + "`hotswap=False`.");
                }
            }
        }
        String name = o.adapterName() == null ? "default" : o.adapterName();
        if (!hotswap && peftConfig.containsKey(name)) {
            throw new IllegalArgumentException("Adapter with name " + name + " already exists. Please use a different name.");
        }
        if (pathOrRepoId == null && o.adapterStateDict() == null && o.peftConfig() == null) {
            throw new IllegalArgumentException("You should either pass a `peft_model_id` or a `peft_config` and "
                    + "`adapter_state_dict` to load an adapter.");
        }
        List<String> disk = LoadArguments.diskKeys(o.deviceMap());
        if (!disk.isEmpty()) {
            if (hotswap) {
                throw new IllegalArgumentException("device_map with \"disk\" modules: a hotswap replaces the loaded "
                        + "adapter's tensors in place in memory; load without hotswap to offload");
            }
            AdapterOffload.checkKeys(tuner.model(), disk);
        }
        AdapterSource.Read read = AdapterSource.read(pathOrRepoId, o);
        boolean ownTensors = read.ownWeights(); // read here: freed once copied in
        try {
            LoadArguments.checkFits(o, read.weights(), read.source());
            PeftConfig config = read.config().toBuilder().inferenceMode(!o.isTrainable()).build(); // transformers v5: always
            Map<String, Tensor> sd = read.weights();
            if (o.adapterKwargs() != null && o.adapterKwargs().get("key_mapping") != null) {
                sd = AdapterStateDict.applyKeyMapping(sd, o.adapterKwargs().get("key_mapping"));
            }
            if (hotswap) {
                PeftConfig checked = ConfigFieldChecks.check(config, name, true, read.source());
                Hotswap.swap(tuner, name, peftConfig.get(name), checked, sd, swapLock);
                if (hotswapTargetRank != null && config instanceof LoraConfig lc) { // the factors stay padded
                    config = Hotswap.withRank(lc, hotswapTargetRank);
                }
                peftConfig.put(name, config);
                return new AdapterLoadReport(List.of(), List.of());
            }
            java.util.IdentityHashMap<Tensor, Boolean> before = disk.isEmpty() ? null
                    : AdapterOffload.snapshot(tuner.model());
            List<String> active = loaded ? activeAdapters() : null;
            AdapterLoadReport report = load(name, config, sd, read.source());
            if (!disk.isEmpty()) {
                try {
                    AdapterOffload.offload(tuner.model(), name, disk, o.offloadFolder(), before);
                } catch (IOException | RuntimeException e) {
                    deleteAdapter(List.of(name)); // the model stays as it was
                    if (active != null) {
                        setAdapter(active, true);
                    }
                    throw e;
                }
            }
            return report;
        } finally {
            if (ownTensors) {
                for (Tensor t : read.weights().values()) {
                    t.close();
                }
            }
        }
    }

    private AdapterLoadReport load(String name, PeftConfig config, Map<String, Tensor> sd, String source) {
        PeftConfig injected = ConfigFieldChecks.check(config, name, true, source);
        AdapterStateDict.LoadResult result;
        PendingAdapter p = prepare(injected, name, true);
        try {
            result = AdapterStateDict.load(p, tuner.model(), sd, source);
            if (injected != config) { // an init-only method injected as plain LoRA: the config keeps its own init
                p.config(p.config().toBuilder().set("init_lora_weights",
                        config.toJsonObject().get("init_lora_weights")).build());
            }
            if (hotswapTargetRank != null) {
                Hotswap.checkPaddable(p, name, hotswapTargetRank);
            }
        } catch (RuntimeException e) {
            p.discard();
            throw e;
        }
        commit(p);
        // transformers' load_adapter activates nothing itself: the injection ends with the tuner's set_adapter, which
        // reaches only its own method's layers, so an adapter of another method stays active where it is
        tuner.setAdapter(List.of(name), methods.of(p.config(), name).tunerLayerClass());
        if (p.config().inferenceMode()) {
            tuner.model().eval();
            tuner.freezeAdapter(name);
        }
        if (hotswapTargetRank != null && p.config() instanceof LoraConfig lc) {
            // transformers' prepare_model_for_compiled_hotswap after the first load: ranks padded to the target
            peftConfig.put(name, Hotswap.padToTargetRank(tuner, name, lc, hotswapTargetRank, swapLock));
        }
        AdapterLoadReport report = new AdapterLoadReport(result.missingKeys(), result.unexpectedKeys());
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

    /**
     * transformers' {@code enable_peft_hotswap(target_rank, check_compiled)}: later loads under the name of a loaded
     * adapter swap it in place, and every LoRA adapter loaded from now on is padded with zeros to
     * {@code targetRank}, so that adapters of any rank up to it swap in without new tensors.
     *
     * @param checkCompiled what to do when an adapter is loaded already: {@code "error"}, {@code "warn"},
     *     {@code "ignore"}
     * @throws IllegalStateException {@code "error"} and an adapter is loaded already
     * @throws IllegalArgumentException an unknown {@code checkCompiled}, or {@code targetRank} below 1
     */
    public void enablePeftHotswap(int targetRank, String checkCompiled) {
        if (!peftConfig.isEmpty()) {
            switch (String.valueOf(checkCompiled)) {
                case "error" -> throw new IllegalStateException("Call `enable_peft_hotswap` before loading the first "
                        + "adapter.");
                case "warn" -> LOG.warn("It is recommended to call `enable_peft_hotswap` before loading the first "
                        + "adapter to avoid recompilation.");
                case "ignore" -> { }
                default -> throw new IllegalArgumentException("check_compiles should be one of 'error', 'warn', or "
                        + "'ignore', got '" + checkCompiled + "' instead.");
            }
        }
        if (targetRank < 1) {
            throw new IllegalArgumentException("target_rank must be a positive integer, got " + targetRank);
        }
        hotswapTargetRank = targetRank;
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
            throw notFound(names.get(0));
        }
        tuner.setAdapter(names);
    }

    /**
     * {@code disable_adapters}: every tuner layer passes its input to the base layer alone until
     * {@link #enableAdapters}, and the modules_to_save wrappers use their original modules (which enabling does not
     * undo, as in transformers). Warns, as transformers does, when an adapter trains biases, since their effect
     * stays.
     * @throws IllegalStateException if no adapter is loaded
     */
    public void disableAdapters() {
        requireLoaded();
        for (PeftConfig c : peftConfig.values()) {
            if (c instanceof LoraSettings ls && ls.bias() != Bias.NONE) {
                LOG.warn("Careful, disabling adapter layers with bias configured to be '{}' does not produce the same "
                        + "output as the base model would without adaption.", ls.bias().jsonValue());
            }
        }
        tuner.enableAdapterLayers(false);
    }

    /**
     * {@code enable_adapters}: the tuner layers apply their active adapters again (the modules_to_save wrappers stay on
     * their original modules, as in transformers).
     * @throws IllegalStateException if no adapter is loaded
     */
    public void enableAdapters() {
        requireLoaded();
        tuner.enableAdapterLayers(true);
    }

    /** {@code active_adapters()}: those of the first tuner layer. */
    public List<String> activeAdapters() {
        requireLoaded();
        return tuner.activeAdapters();
    }

    /**
     * transformers v4's deprecated {@code active_adapter()}: the first active adapter, with its deprecation warning.
     */
    public String activeAdapter() {
        LOG.warn("The `active_adapter` method is deprecated and will be removed in a future version.");
        return activeAdapters().get(0);
    }

    /**
     * Runs {@code forward} with per-sample adapter names (PEFT's {@code adapter_names=}), after checking that each
     * is loaded or {@value BaseTunerLayer#BASE_ADAPTER_NAME}; see {@link BaseTunerLayer#withAdapterNames}.
     */
    public <T> T withAdapterNames(List<String> adapterNames, Supplier<T> forward) {
        requireLoaded();
        List<String> unknown = new ArrayList<>();
        for (String n : new LinkedHashSet<>(adapterNames)) {
            if (!n.equals(BaseTunerLayer.BASE_ADAPTER_NAME) && !peftConfig.containsKey(n)) {
                unknown.add(n);
            }
        }
        if (!unknown.isEmpty()) {
            throw new IllegalArgumentException("Trying to infer with non-existing adapter(s): "
                    + String.join(", ", unknown));
        }
        return BaseTunerLayer.withAdapterNames(adapterNames, forward);
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
            throw notFound(name);
        }
        PeftConfig config = peftConfig.get(name);
        return AdapterStateDict.of(methods.of(config, name), config, name, extraKeys.getOrDefault(name, List.of()));
    }

    /**
     * {@code get_adapter_state_dict(adapter_name, state_dict)}: as {@link #getAdapterStateDict(String)}, with the
     * values taken from {@code stateDict} (keyed as the model's own state dict, adapter names included) instead of the
     * model; a key the adapter saves that {@code stateDict} lacks is left out, as PEFT iterates the given dict.
     */
    public Map<String, Tensor> getAdapterStateDict(String adapterName, Map<String, Tensor> stateDict) {
        Map<String, Tensor> own = getAdapterStateDict(adapterName);
        if (stateDict == null) {
            return own;
        }
        String name = adapterName == null ? activeAdapters().get(0) : adapterName;
        List<String> named = new ArrayList<>();
        for (String k : stateDict.keySet()) {
            if (k.contains(name)) {
                named.add(k);
            }
        }
        Map<String, String> toModel = AdapterKeys.checkpointToModelKeys(named, name);
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (String k : own.keySet()) {
            String modelKey = toModel.get(k);
            Tensor v = modelKey != null ? stateDict.get(modelKey) : stateDict.get(k);
            if (v != null) {
                out.put(k, v);
            }
        }
        return out;
    }

    /**
     * What transformers' {@code save_pretrained} writes for an adapter model: {@code adapter_config.json}
     * (PEFT's JSON format) and {@code adapter_model.safetensors} with {@code base_model.model.} keys and
     * {@code {"format":"pt"}} metadata, swapped in together ({@link AtomicFolder}: after a crash the folder holds
     * the old adapter or the new one; other files in {@code dir} are kept). {@code adapterName} null = the single
     * active one.
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
        PeftConfig cfg = peftConfig.get(name);
        cfg = methods.of(cfg, name).configToSave(cfg, name);
        PeftConfig saved = cfg;
        AtomicFolder.replace(dir, staging -> { // both files or neither: see AtomicFolder
            SafetensorsFile.write(staging.resolve(AdapterFolder.SAFETENSORS_NAME), prefixed,
                    SafetensorsFile.PT_METADATA);
            PeftConfigs.write(saved, staging);
        });
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
            tuner.deleteAdapter(n);
            peftConfig.remove(n);
            extraKeys.remove(n);
        }
        if (peftConfig.isEmpty()) {
            loaded = false;
        }
    }

    // ------------------------------------------------------------------ add_weighted_adapter

    /**
     * The seed of the generator that
     * {@link #addWeightedAdapter(List, List, String, String, Integer, Double, Double, String)} draws the
     * {@code dare_*} masks from: a call without a generator is reproducible.
     */
    public static final long DEFAULT_DARE_SEED = 0L;

    /**
     * {@link #addWeightedAdapter(List, List, String, String, Integer, Double, Double, String, Generator)} with the
     * {@code dare_*} masks drawn from a libtorch CPU generator seeded with {@link #DEFAULT_DARE_SEED}.
     *
     * @param adapters the LoRA adapters to combine
     * @param weights one weight per adapter (negative subtracts)
     * @param name the new adapter's name (nothing happens when it exists)
     * @param combinationType see the overload
     * @param svdRank the svd types' rank, or null for the largest of the adapters'
     * @param svdClamp the quantile clamping the svd factors, or null
     * @param density the fraction kept by the ties, magnitude_prune and dare types
     * @param majoritySignMethod {@code total} or {@code frequency} (ties, dare_ties)
     */
    public void addWeightedAdapter(List<String> adapters, List<Double> weights, String name, String combinationType,
            Integer svdRank, Double svdClamp, Double density, String majoritySignMethod) {
        if (combinationType.startsWith("dare_") && adapters.size() > 1) {
            try (org.bytedeco.pytorch.Generator g = org.bytedeco.pytorch.global.torch.createCPUGenerator(
                    DEFAULT_DARE_SEED)) {
                addWeightedAdapter(adapters, weights, name, combinationType, svdRank, svdClamp, density,
                        majoritySignMethod, g);
            }
        } else {
            addWeightedAdapter(adapters, weights, name, combinationType, svdRank, svdClamp, density,
                    majoritySignMethod, null);
        }
    }

    /**
     * PEFT's {@code LoraModel.add_weighted_adapter}: a new LoRA adapter {@code name} made from {@code adapters} with
     * {@code weights} (see {@link dev.peft4j.tuners.lora.WeightedAdapters}); it is injected with the first adapter's
     * config (rank and alpha the new rank, target modules the union, no rank or alpha patterns), frozen, and not
     * activated. Nothing happens when an adapter of that name exists, as in PEFT. DoRA adapters combine as in PEFT:
     * their A and B only (their magnitude vectors are not combined); the new adapter is a DoRA adapter when the first
     * one is, with the magnitude a fresh DoRA adapter starts with (the weight norm of the base plus its initial delta,
     * which is the base weight's norm when {@code init_lora_weights} is true).
     *
     * <p>The {@code dare_*} types keep each entry with probability {@code density} (a Bernoulli mask drawn from
     * {@code generator}) and divide the kept ones by {@code density}. The same generator state gives the same
     * adapter, but not the adapter PEFT gives from the same seed: PEFT draws from torch's global generator in
     * Python, and the random stream differs between builds as it differs between torch devices.
     *
     * @param adapters the LoRA adapters to combine
     * @param weights one weight per adapter (negative subtracts)
     * @param name the new adapter's name (nothing happens when it exists)
     * @param combinationType {@code cat}, {@code linear}, {@code svd}, {@code ties}, {@code ties_svd},
     *     {@code dare_linear}, {@code dare_ties}, {@code dare_linear_svd}, {@code dare_ties_svd},
     *     {@code magnitude_prune}, {@code magnitude_prune_svd}; with one adapter always {@code linear}, as in PEFT
     * @param svdRank the svd types' rank, or null for the largest of the adapters'
     * @param svdClamp the quantile clamping the svd factors, or null
     * @param density the fraction kept by the ties, magnitude_prune and dare types
     * @param majoritySignMethod {@code total} or {@code frequency} (ties, dare_ties)
     * @param generator the generator the dare types draw their masks from (not used by other types; use it from one
     *     thread at a time for a reproducible result)
     * @throws IllegalArgumentException PEFT's errors: an unknown adapter or type, ranks that differ where they must
     *     not, target_modules of different kinds, two adapters saving the same module (modules_to_save); a missing
     *     density or generator; a dare type with density 0 (PEFT would divide by it)
     * @throws UnsupportedOperationException a non-LoRA adapter
     */
    public void addWeightedAdapter(List<String> adapters, List<Double> weights, String name, String combinationType,
            Integer svdRank, Double svdClamp, Double density, String majoritySignMethod,
            org.bytedeco.pytorch.Generator generator) {
        requireLoaded();
        if (peftConfig.containsKey(name)) {
            return;
        }
        if (adapters.size() != weights.size()) {
            throw new IllegalArgumentException("adapters and weights differ in length: " + adapters.size() + " and "
                    + weights.size());
        }
        for (String a : adapters) {
            if (!peftConfig.containsKey(a)) {
                throw new IllegalArgumentException("Adapter " + a + " does not exist");
            }
        }
        for (String a : adapters) {
            if (!(peftConfig.get(a) instanceof LoraConfig lc)) {
                throw new UnsupportedOperationException("add_weighted_adapter combines LoRA adapters; '" + a
                        + "' is " + peftConfig.get(a).peftType());
            }
            if (lc.targetParameters() != null && !lc.targetParameters().isEmpty()) {
                throw new IllegalArgumentException("add_weighted_adapter does not support targeting nn.Parameter "
                        + "(problematic adapter '" + a + "')");
            }
        }
        int problematic = 0;
        for (ModulesToSaveWrapper w : tuner.modulesToSaveWrappers().values()) {
            if (adapters.stream().filter(w.adapterCopies()::containsKey).count() > 1) {
                problematic++;
            }
        }
        if (problematic > 0) {
            throw new IllegalArgumentException("Cannot add weighted adapters if they target the same module with "
                    + "modules_to_save, but found " + problematic + " such instance(s).");
        }
        String type = adapters.size() == 1 ? "linear" : combinationType;
        List<Integer> ranks = new ArrayList<>();
        for (String a : adapters) {
            LoraConfig lc = (LoraConfig) peftConfig.get(a);
            int r = lc.r();
            for (int pr : lc.rankPattern().values()) {
                r = Math.max(r, pr);
            }
            ranks.add(r);
        }
        int newRank;
        switch (type) {
            case "linear", "ties", "dare_ties", "dare_linear", "magnitude_prune" -> {
                if (new LinkedHashSet<>(ranks).size() != 1) {
                    throw new IllegalArgumentException("All adapters must have the same r value when using "
                            + "combination_type linear, ties, dare_ties or dare_linear.");
                }
                newRank = ranks.get(0);
            }
            case "cat" -> newRank = ranks.stream().mapToInt(Integer::intValue).sum();
            case "svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd" ->
                    newRank = svdRank != null ? svdRank : ranks.stream().mapToInt(Integer::intValue).max().orElse(0);
            default -> throw new IllegalArgumentException("Invalid combination_type: " + type);
        }
        boolean dare = type.startsWith("dare_");
        if ((type.startsWith("ties") || type.startsWith("magnitude_prune") || dare) && density == null) {
            throw new IllegalArgumentException("combination_type " + type + " needs a density in [0, 1]");
        }
        boolean prunes = type.startsWith("ties") || type.startsWith("magnitude_prune") || dare;
        if (density != null && density >= 1 && prunes) {
            LOG.warn("The density {} is greater than or equal to 1, no pruning will be performed.", density);
        }
        if (dare && density == 0) {
            throw new IllegalArgumentException("combination_type " + type + " with density 0 divides the kept "
                    + "entries by 0 (PEFT's random_pruning rescale); use a density in (0, 1]");
        }
        if (dare && generator == null) {
            throw new IllegalArgumentException("combination_type " + type + " needs a generator for its masks");
        }
        if (density != null && density < 0) {
            throw new IllegalArgumentException("Density should be >= 0, got " + density);
        }
        dev.peft4j.config.ModuleSelector targets = null;
        for (String a : adapters) {
            dev.peft4j.config.ModuleSelector t = peftConfig.get(a).targetModules();
            if (targets != null && targets.getClass() != t.getClass()) {
                throw new IllegalArgumentException("all adapter configs should follow the same target modules type. "
                        + "Combining adapters with `target_modules` type being a mix of list/set and string is not "
                        + "supported.");
            }
            targets = t;
        }
        if (targets instanceof dev.peft4j.config.ModuleSelector.Regex) {
            StringBuilder sb = new StringBuilder();
            for (String a : adapters) {
                sb.append(sb.length() == 0 ? "" : "|").append('(')
                        .append(((dev.peft4j.config.ModuleSelector.Regex) peftConfig.get(a).targetModules()).pattern())
                        .append(')');
            }
            targets = new dev.peft4j.config.ModuleSelector.Regex(sb.toString());
        } else {
            java.util.TreeSet<String> union = new java.util.TreeSet<>();
            for (String a : adapters) {
                union.addAll(((dev.peft4j.config.ModuleSelector.Names) peftConfig.get(a).targetModules()).names());
            }
            targets = new dev.peft4j.config.ModuleSelector.Names(new ArrayList<>(union));
        }
        LoraConfig first = (LoraConfig) peftConfig.get(adapters.get(0));
        PeftConfig config = first.toBuilder().r(newRank).loraAlpha(newRank).targetModules(targets)
                .set("alpha_pattern", Map.of()).set("rank_pattern", Map.of()).build();
        commit(prepare(config, name, false)); // the layers keep their active adapters: the new one is not active
        for (BaseTunerLayer t : tuner.tunerLayers().values()) {
            dev.peft4j.tuners.lora.WeightedAdapters.combine(t, name, adapters, weights, type, newRank, svdClamp,
                    density, majoritySignMethod, dare ? generator : null);
        }
        tuner.freezeAdapter(name);
    }

    // ------------------------------------------------------------------ merge

    /** PEFT's {@code merge_adapter(adapter_names)}: default the active adapters. */
    public void mergeAdapter(List<String> names, boolean safeMerge) {
        requireLoaded();
        List<String> todo = names == null ? activeAdapters() : names;
        for (String n : todo) {
            if (!peftConfig.containsKey(n)) {
                throw notFound(n);
            }
        }
        tuner.mergeAdapter(todo, safeMerge);
    }

    /**
     * PEFT's {@code unmerge_adapter}: subtracts every merged adapter from its base weight again, in every tuner layer.
     * @throws IllegalStateException if no adapter is loaded
     */
    public void unmergeAdapter() {
        requireLoaded();
        tuner.unmergeAdapter();
    }

    /**
     * {@code merge_and_unload}: merge (default the active adapters), then put every base layer back in place of its
     * tuner layer and drop all adapters; the model is a plain model again.
     */
    public void mergeAndUnload(List<String> names, boolean safeMerge) {
        requireLoaded();
        List<String> todo = names == null ? activeAdapters() : names;
        tuner.mergeAndUnload(todo, safeMerge);
        peftConfig.clear();
        extraKeys.clear();
        loaded = false;
    }

    private IllegalArgumentException notFound(String name) {
        return new IllegalArgumentException("Adapter with name " + name + " not found. Please pass the correct "
                + "adapter name among " + pyList(peftConfig.keySet()));
    }

    private static String pyList(Collection<String> names) {
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
