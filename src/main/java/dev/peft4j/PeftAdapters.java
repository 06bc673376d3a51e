package dev.peft4j;

import dev.peft4j.config.Bias;
import dev.peft4j.config.AdaLoraConfig;
import dev.peft4j.config.IA3Config;
import dev.peft4j.tuners.adalora.AdaLoraMath;
import dev.peft4j.tuners.adalora.SvdLinear;
import dev.peft4j.tuners.ia3.Ia3Layer;
import dev.peft4j.tuners.ia3.Ia3Math;
import dev.peft4j.tuners.ia3.Ia3Targets;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.ModuleSelector;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.config.PeftType;
import dev.peft4j.io.AdapterFolder;
import dev.peft4j.io.AtomicFolder;
import dev.peft4j.io.HubCache;
import dev.peft4j.io.HubDownload;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.AdapterKeys;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.LinearShape;
import dev.peft4j.tuners.ModuleType;
import dev.peft4j.tuners.ModulesToSaveWrapper;
import dev.peft4j.tuners.TargetMatcher;
import dev.peft4j.tuners.lora.LoraEmbedding;
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
 * <p>Supported now: LoRA, IA³ and AdaLoRA on {@code nn.Linear} and transformers' {@code Conv1D}, LoRA on
 * {@code nn.Embedding}, {@code bias} none/all/lora_only (PEFT main's saving),
 * {@code modules_to_save} of Linear/Conv1D/Embedding modules. DoRA is refused with an explicit "not supported yet" error rather than half-done.
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
    /** {@link #refreshTree()}'s cache, valid while {@link Module#structureVersion()} equals {@code treeVersion}. */
    private long treeVersion;
    private Map<String, BaseTunerLayer> layerCache;
    private BaseTunerLayer[] layerArray;
    private Map<String, ModulesToSaveWrapper> wrapperCache;
    private ModulesToSaveWrapper[] wrapperArray;

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

    /**
     * Every tuner layer under its module name, in {@code named_modules()} order (an unmodifiable snapshot: it does
     * not follow later changes of the model).
     */
    public Map<String, BaseTunerLayer> tunerLayers() {
        refreshTree();
        return layerCache;
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
    private Map<String, Module> modulesOutsideAdapters() {
        Map<String, Module> out = new LinkedHashMap<>();
        collectOutsideAdapters("", model, out, java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>()));
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
        // transformers overwrites base_model_name_or_path with the model's name_or_path (or None)
        String nameOrPath = model instanceof dev.peft4j.models.PreTrainedModel ptm
                ? ptm.config().getString("_name_or_path", null) : null;
        config = config.toBuilder().baseModelNameOrPath(nameOrPath).build();
        Prepared p = prepare(config, name, false);
        p.commit();
        setAdapter(List.of(name), false);
    }

    // a string-valued entry of load_adapter's adapter_kwargs (cache_dir, subfolder), or null
    private static String stringKwarg(LoadAdapterOptions o, String key) {
        Object v = o.adapterKwargs() == null ? null : o.adapterKwargs().get(key);
        if (v == null) {
            return null;
        }
        if (v instanceof String str) {
            return str;
        }
        if (v instanceof Path path) {
            return path.toString();
        }
        throw new IllegalArgumentException("adapter_kwargs['" + key + "']: expected a string or a Path, got "
                + v.getClass().getSimpleName());
    }

    // the snapshot folder (subfolder included) holding the adapter's config (when needed) and weights: safetensors,
    // else .bin, as load_peft_weights looks for them on the Hub
    private static Path fromHub(String repoId, LoadAdapterOptions o, String subfolder, boolean needConfig)
            throws IOException {
        Path root = HubCache.root(stringKwarg(o, "cache_dir"));
        HubDownload.Settings hub = HubDownload.Settings.fromEnvironment(o.token());
        Object localOnly = o.adapterKwargs() == null ? null : o.adapterKwargs().get("local_files_only");
        if (Boolean.TRUE.equals(localOnly)) {
            hub = new HubDownload.Settings(hub.endpoint(), hub.token(), true);
        } else if (localOnly != null && !Boolean.FALSE.equals(localOnly)) {
            throw new IllegalArgumentException("adapter_kwargs['local_files_only']: expected a boolean, got "
                    + localOnly);
        }
        Object force = o.adapterKwargs() == null ? null : o.adapterKwargs().get("force_download");
        if (force != null && !(force instanceof Boolean)) {
            throw new IllegalArgumentException("adapter_kwargs['force_download']: expected a boolean, got " + force);
        }
        hub = hub.withForceDownload(Boolean.TRUE.equals(force));
        String prefix = subfolder == null || subfolder.isEmpty() ? "" : subfolder.replaceAll("/+$", "") + "/";
        String revision = o.revision();
        if (needConfig) {
            Path cfg = HubDownload.file(root, repoId, revision, prefix + PeftConfigs.CONFIG_FILE_NAME, hub);
            if (cfg == null) {
                throw new IllegalArgumentException("adapter model file not found in " + repoId
                        + ". Make sure you are passing the correct path to the adapter model.");
            }
            // the weights at the config's commit, whatever the branch does meanwhile
            revision = HubCache.commitOf(root, repoId, cfg);
        }
        Path weights = HubDownload.file(root, repoId, revision, prefix + AdapterFolder.SAFETENSORS_NAME, hub);
        if (weights == null) {
            weights = HubDownload.file(root, repoId, revision, prefix + AdapterFolder.BIN_NAME, hub);
        }
        if (weights == null) {
            throw new IllegalArgumentException("Can't find weights for " + repoId + " in " + repoId + " or in the "
                    + "Hugging Face Hub. Please check that the file adapter_model.bin or adapter_model.safetensors is "
                    + "present at " + repoId + ".");
        }
        return weights.getParent();
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
            AtomicFolder.recover(dir); // a save killed mid-way: its leftovers removed, a half swap undone
            if (Files.exists(dir) && !Files.isDirectory(dir)) {
                throw new IllegalArgumentException("adapter model file not found in " + pathOrRepoId + ": it is a "
                        + "file; pass the folder holding adapter_config.json and the weights");
            }
            String subfolder = stringKwarg(o, "subfolder");
            if (HubCache.refersToHub(pathOrRepoId)) {
                // a repo id: its files fetched into the Hugging Face cache (adapter_kwargs' cache_dir, as in
                // transformers) at `revision`, or taken from it when offline or the Hub is unreachable
                dir = fromHub(pathOrRepoId, o, subfolder, config == null);
            } else if (subfolder != null && !subfolder.isEmpty()) {
                dir = dir.resolve(subfolder);
                if (!Files.isDirectory(dir)) {
                    throw new IllegalArgumentException("adapter model file not found in " + pathOrRepoId
                            + ": no subfolder '" + subfolder + "' (" + dir + ")");
                }
            }
            if (config == null && !Files.isRegularFile(dir.resolve(PeftConfigs.CONFIG_FILE_NAME))) {
                throw new IllegalArgumentException("adapter model file not found in " + pathOrRepoId
                        + ". Make sure you are passing the correct path to the adapter model.");
            }
            if (config == null) {
                refusePromptLearning(dir.resolve(PeftConfigs.CONFIG_FILE_NAME));
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
        if (o.adapterKwargs() != null && o.adapterKwargs().get("key_mapping") != null) {
            sd = applyKeyMapping(sd, o.adapterKwargs().get("key_mapping"));
        }
        boolean ownTensors = pathOrRepoId != null; // read here: freed once copied in
        AdapterLoadReport report;
        Prepared p;
        try {
            p = prepare(config, name, true);
            try {
                report = p.load(sd, source);
            } catch (RuntimeException e) {
                p.discard();
                throw e;
            }
        } finally {
            if (ownTensors) {
                for (Tensor t : sd.values()) {
                    t.close();
                }
            }
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
            for (ModulesToSaveWrapper w : modulesToSaveWrappers().values()) {
                Module copy = w.adapterCopies().get(name);
                if (copy != null) {
                    copy.namedParameters().values().forEach(t -> t.requires_grad_(false));
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

    /**
     * transformers ≥ 4.52 {@code key_mapping} ({@code adapter_kwargs["key_mapping"]}): after the
     * {@code base_model.model.} prefix is stripped, the regex patterns are tried in order and the first that
     * substitutes at least once wins (Java regex syntax; replacements use {@code $1}).
     */
    static Map<String, Tensor> applyKeyMapping(Map<String, Tensor> sd, Object mapping) {
        if (!(mapping instanceof Map<?, ?> m)) {
            throw new IllegalArgumentException("adapter_kwargs key_mapping must be a map of regex to replacement, got "
                    + mapping.getClass().getSimpleName());
        }
        List<Map.Entry<java.util.regex.Pattern, String>> rules = new ArrayList<>();
        for (Map.Entry<?, ?> e : m.entrySet()) {
            rules.add(Map.entry(java.util.regex.Pattern.compile(String.valueOf(e.getKey())), String.valueOf(e.getValue())));
        }
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<String, Tensor> e : sd.entrySet()) {
            String key = AdapterKeys.stripPeftPrefix(e.getKey());
            for (Map.Entry<java.util.regex.Pattern, String> r : rules) {
                java.util.regex.Matcher mt = r.getKey().matcher(key);
                if (mt.find()) {
                    key = mt.replaceAll(r.getValue());
                    break;
                }
            }
            out.put(key, e.getValue());
        }
        return out;
    }

    private static final Set<String> NOT_INJECTABLE = Set.of("PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "P_TUNING",
            "PREFIX_TUNING", "CPT", "ADAPTION_PROMPT");

    /** {@code inject_adapter_in_model}'s refusal of prompt-learning and adaption-prompt configs, in its words. */
    private static void refusePromptLearning(Path configFile) throws IOException {
        com.fasterxml.jackson.databind.JsonNode root;
        try {
            root = new com.fasterxml.jackson.databind.ObjectMapper().readTree(configFile.toFile());
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            return; // PeftConfigs.read reports it, naming the file
        }
        if (root != null && root.isObject() && root.path("peft_type").isTextual()
                && NOT_INJECTABLE.contains(root.get("peft_type").asText())) {
            throw new IllegalArgumentException(configFile + ": `create_and_replace` does not support prompt learning "
                    + "and adaption prompt yet.");
        }
    }

    /** A new adapter made aside: nothing of the model changes until {@link #commit}. */
    private final class Prepared {
        final String name;
        PeftConfig config;
        final Map<String, Linear[]> lora = new LinkedHashMap<>(); // module -> {A, B}
        final Map<String, Tensor> ia3 = new LinkedHashMap<>(); // module -> ia3_l
        final Map<String, Boolean> ia3FeedForward = new LinkedHashMap<>();
        final Map<String, Tensor[]> ada = new LinkedHashMap<>(); // module -> {A, E, B, ranknum}
        final Map<String, Tensor[]> emb = new LinkedHashMap<>(); // module -> {lora_embedding_A, lora_embedding_B}
        final Map<String, Module> mts = new LinkedHashMap<>(); // modules_to_save: module -> its copy
        final Map<String, Double> scalings = new LinkedHashMap<>();
        final Map<String, Tensor> extra = new LinkedHashMap<>(); // base key -> prepared value
        final double dropoutP;
        /**
         * Set when the LoRA weights were allocated uninitialised for a load: the init prepare would have run
         * (mode and seed), replayed by {@link #load} only when the checkpoint leaves some weight unfilled.
         */
        LoraInit.Mode deferredInit;
        long deferredSeed;

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
            for (Map.Entry<String, Tensor> e : ia3.entrySet()) {
                out.put(AdapterKeys.modelKey(e.getKey(), name, AdapterKeys.Param.IA3_L), e.getValue());
            }
            for (Map.Entry<String, Module> e : mts.entrySet()) {
                for (Map.Entry<String, Tensor> t : e.getValue().stateDict().entrySet()) {
                    out.put(AdapterKeys.modulesToSaveModelKey(e.getKey(), name, t.getKey()), t.getValue());
                }
            }
            for (Map.Entry<String, Tensor[]> e : emb.entrySet()) {
                out.put(AdapterKeys.modelKey(e.getKey(), name, AdapterKeys.Param.LORA_EMBEDDING_A), e.getValue()[0]);
                out.put(AdapterKeys.modelKey(e.getKey(), name, AdapterKeys.Param.LORA_EMBEDDING_B), e.getValue()[1]);
            }
            for (Map.Entry<String, Tensor[]> e : ada.entrySet()) {
                out.put(AdapterKeys.modelKey(e.getKey(), name, AdapterKeys.Param.ADALORA_A), e.getValue()[0]);
                out.put(AdapterKeys.modelKey(e.getKey(), name, AdapterKeys.Param.ADALORA_E), e.getValue()[1]);
                out.put(AdapterKeys.modelKey(e.getKey(), name, AdapterKeys.Param.ADALORA_B), e.getValue()[2]);
            }
            return out;
        }

        AdapterLoadReport load(Map<String, Tensor> checkpoint, String source) {
            Map<String, Tensor> own = params();
            Map<String, Tensor> baseState = null; // the model's whole state dict: built only for a non-adapter key
            Set<String> filled = new LinkedHashSet<>();
            List<String> unexpected = new ArrayList<>();
            Map<Tensor, Tensor> values = new java.util.IdentityHashMap<>();
            try (NoGradGuard g = new NoGradGuard()) {
                for (Map.Entry<String, Tensor> e : checkpoint.entrySet()) {
                    String key = AdapterKeys.stripPeftPrefix(e.getKey());
                    Optional<AdapterKeys.ParsedKey> parsed = AdapterKeys.parseCheckpointKey(key);
                    Tensor target = null;
                    String modelKey = null;
                    String wrapper = null;
                    for (String w : mts.keySet()) {
                        if (key.startsWith(w + ".")) {
                            wrapper = w;
                        }
                    }
                    if (wrapper != null) {
                        modelKey = AdapterKeys.modulesToSaveModelKey(wrapper, name, key.substring(wrapper.length() + 1));
                        target = own.get(modelKey);
                    } else if (parsed.isPresent()) {
                        AdapterKeys.ParsedKey pk = parsed.get();
                        boolean linearParam = pk.param() == AdapterKeys.Param.LORA_A
                                || pk.param() == AdapterKeys.Param.LORA_B || pk.param() == AdapterKeys.Param.LORA_B_BIAS
                                || pk.param() == AdapterKeys.Param.IA3_L || pk.param() == AdapterKeys.Param.ADALORA_A
                                || pk.param() == AdapterKeys.Param.ADALORA_B || pk.param() == AdapterKeys.Param.ADALORA_E
                                || pk.param() == AdapterKeys.Param.LORA_EMBEDDING_A
                                || pk.param() == AdapterKeys.Param.LORA_EMBEDDING_B;
                        if (linearParam) {
                            modelKey = AdapterKeys.modelKey(pk.module(), name, pk.param());
                            target = own.get(modelKey);
                        }
                    } else if ((baseState == null ? baseState = model.stateDict() : baseState).containsKey(key)) {
                        modelKey = key;
                        target = baseState.get(key);
                    } else if (key.contains(".base_layer.") && baseState.containsKey(key.replace(".base_layer.", "."))) {
                        // a base-layer bias saved from a wrapped module (bias="all"/"lora_only") into a fresh model
                        modelKey = key.replace(".base_layer.", ".");
                        target = baseState.get(modelKey);
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
                List<String> missing = new ArrayList<>();
                for (String k : own.keySet()) {
                    if (!filled.contains(k)) {
                        missing.add(k);
                    }
                }
                if (deferredInit != null && !missing.isEmpty()) {
                    initDeferred(); // the missing weights keep the values addAdapter's init gives them
                }
                // all checked: fill the (still private) adapter tensors
                for (Map.Entry<Tensor, Tensor> e : values.entrySet()) {
                    e.getKey().copy_(e.getValue());
                }
                return new AdapterLoadReport(missing, unexpected);
            }
        }

        /**
         * The init {@code prepare} skipped, as it would have run it: every LoRA module in order, drawn in float32
         * from one generator seeded as then, converted to the adapter dtype.
         */
        private void initDeferred() {
            Init f32 = Init.cpu(ScalarType.Float);
            try (Generator gen = torch.createCPUGenerator(deferredSeed)) {
                for (Linear[] ab : lora.values()) {
                    Tensor bias = ab[1].bias();
                    try (Tensor a = f32.empty(ab[0].weight().shape()); Tensor b = f32.empty(ab[1].weight().shape());
                            Tensor bb = bias == null ? null : f32.empty(bias.shape())) {
                        LoraInit.initLinear(a, b, bb, deferredInit, gen);
                        ab[0].weight().copy_(a);
                        ab[1].weight().copy_(b);
                        if (bias != null) {
                            bias.copy_(bb);
                        }
                    }
                }
            }
            deferredInit = null;
        }

        void discard() {
            for (Linear[] ab : lora.values()) {
                ab[0].close();
                ab[1].close();
            }
            for (Tensor t : extra.values()) {
                t.close();
            }
            for (Tensor t : ia3.values()) {
                t.close();
            }
            for (Tensor[] ts : emb.values()) {
                for (Tensor t : ts) {
                    t.close();
                }
            }
            for (Module m : mts.values()) {
                m.close();
            }
            for (Tensor[] ts : ada.values()) {
                for (Tensor t : ts) {
                    t.close();
                }
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
                if (layer != m) {
                    layer.train(m.isTraining());
                } else { // an existing layer: only the new modules take its mode (the others have it already)
                    e.getValue()[0].train(m.isTraining());
                    e.getValue()[1].train(m.isTraining());
                }
            }
            for (Map.Entry<String, Tensor> e : ia3.entrySet()) {
                Module m = model.getSubmodule(e.getKey());
                Ia3Layer layer;
                if (m instanceof Ia3Layer l) {
                    layer = l;
                } else {
                    layer = new Ia3Layer(m, ia3FeedForward.get(e.getKey()));
                    model.replaceSubmodule(e.getKey(), layer);
                }
                layer.addAdapter(name, e.getValue(), trainable);
            }
            for (Map.Entry<String, Module> e : mts.entrySet()) {
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
            for (Map.Entry<String, Tensor[]> e : emb.entrySet()) {
                Module m = model.getSubmodule(e.getKey());
                LoraEmbedding layer;
                if (m instanceof LoraEmbedding l) {
                    layer = l;
                } else {
                    layer = new LoraEmbedding((Embedding) m);
                    model.replaceSubmodule(e.getKey(), layer);
                }
                layer.addAdapter(name, e.getValue()[0], e.getValue()[1], scalings.get(e.getKey()), trainable);
            }
            for (Map.Entry<String, Tensor[]> e : ada.entrySet()) {
                Module m = model.getSubmodule(e.getKey());
                SvdLinear layer;
                if (m instanceof SvdLinear l) {
                    layer = l;
                } else {
                    layer = new SvdLinear(m);
                    model.replaceSubmodule(e.getKey(), layer);
                }
                Tensor[] t = e.getValue();
                layer.addAdapter(name, t[0], t[1], t[2], t[3], scalings.get(e.getKey()), dropoutP, trainable);
            }
            List<String> committedExtra = new ArrayList<>();
            try (NoGradGuard g = new NoGradGuard()) {
                for (Map.Entry<String, Tensor> e : extra.entrySet()) {
                    String k = postCommitKey(e.getKey());
                    model.getParameter(k).copy_(e.getValue());
                    e.getValue().close();
                    committedExtra.add(k);
                }
            }
            extraKeys.put(name, committedExtra);
            // _mark_only_adapters_as_trainable: every base parameter frozen, this adapter's trainable or not
            markTrainable(model, "", name, trainable);
            if (config instanceof dev.peft4j.config.LoraSettings ls && ls.bias() != Bias.NONE) {
                markBiasTrainable(ls.bias(), trainable);
            }
            peftConfig.put(name, config);
            loaded = true;
        }

        /** A base key of the model before this commit, as named after it ({@code base_layer} of wrapped modules). */
        String postCommitKey(String baseKey) {
            List<String> targets = new ArrayList<>();
            targets.addAll(lora.keySet());
            targets.addAll(ia3.keySet());
            targets.addAll(ada.keySet());
            targets.addAll(emb.keySet());
            for (String t : targets) {
                if (baseKey.startsWith(t + ".") && !baseKey.startsWith(t + "." + BaseTunerLayer.BASE_LAYER + ".")) {
                    return t + "." + BaseTunerLayer.BASE_LAYER + baseKey.substring(t.length());
                }
            }
            return baseKey;
        }
    }

    /**
     * Freezes every parameter whose key is not an adapter key ({@link #isAdapterKey}) and sets {@code requires_grad}
     * of adapter {@code name}'s parameters (adapter keys holding {@code .name.} or ending in {@code .name}) to
     * {@code trainable}, as a loop over {@code named_parameters()} would, without visiting the other adapters:
     * below an adapter container ({@code lora_*}, {@code ia3_l}, {@code modules_to_save}) only the entry named
     * {@code name} is visited, so a load costs the same however many adapters the model holds. (The loop over every
     * key also matched {@code .name.} elsewhere in another adapter's key, e.g. an adapter named {@code 0} matched
     * {@code layers.0.}: other adapters' parameters are no longer touched.)
     */
    private static void markTrainable(Module m, String prefix, String name, boolean trainable) {
        String p = prefix.isEmpty() ? "" : prefix + ".";
        for (Map.Entry<String, Tensor> e : m.ownParameters().entrySet()) {
            String key = p + e.getKey();
            if (!isAdapterKey(key)) {
                e.getValue().requires_grad_(false);
            } else if (key.contains("." + name + ".") || key.endsWith("." + name)) {
                e.getValue().requires_grad_(trainable);
            }
        }
        for (Map.Entry<String, Module> e : m.children().entrySet()) {
            String c = e.getKey();
            boolean container = !prefix.isEmpty()
                    && (c.startsWith("lora_") || c.equals("ia3_l") || c.equals("modules_to_save"));
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
            if (!isBias || isAdapterKey(k)) {
                continue;
            }
            if (bias == Bias.ALL || k.endsWith("." + BaseTunerLayer.BASE_LAYER + ".bias")) {
                e.getValue().requires_grad_(trainable);
            }
        }
    }

    /** The bias keys PEFT (main) saves with an adapter of {@code bias != "none"} (§5.4). */
    private List<String> savedBiasKeys(String adapterName, Bias bias) {
        List<String> out = new ArrayList<>();
        if (bias == Bias.ALL) {
            for (String k : model.stateDict().keySet()) {
                if ((k.equals("bias") || k.endsWith(".bias")) && !isAdapterKey(k)) {
                    out.add(k);
                }
            }
        } else if (bias == Bias.LORA_ONLY) {
            for (Map.Entry<String, BaseTunerLayer> e : tunerLayers().entrySet()) {
                String k = e.getKey() + "." + BaseTunerLayer.BASE_LAYER + ".bias";
                if (!e.getValue().adapterParameters(adapterName).isEmpty() && model.stateDict().containsKey(k)) {
                    out.add(k);
                }
            }
        }
        return out;
    }

    /**
     * {@code _find_minimal_target_modules} (§4.5, not for IA³): a list of 20 or more names is replaced by the minimal
     * suffix set when smaller (sorted, for a reproducible saved config); the same selector object otherwise.
     */
    private static ModuleSelector condense(ModuleSelector targets, Map<String, Module> modules) {
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
        return new ModuleSelector.Names(new ArrayList<>(new java.util.TreeSet<>(out)));
    }

    /**
     * PEFT forces {@code fan_in_fan_out} per created layer (false for {@code nn.Linear}, true for {@code Conv1D}, with
     * a warning) on the shared config, so the saved value is the last created wrapper's.
     */
    private static void fixFanInFanOut(Prepared p, Map<String, Module> modules, List<String> selected) {
        Boolean last = null;
        for (String key : selected) {
            Module m = modules.get(key);
            if (m instanceof Linear) {
                last = false;
            } else if (m instanceof Conv1D) {
                last = true;
            }
            if (last != null && last != p.config.fanInFanOut()) {
                LOG.warn(last ? "fan_in_fan_out is set to False but the target module is `Conv1D`. Setting fan_in_fan_out to True."
                        : "fan_in_fan_out is set to True but the target module is `torch.nn.Linear`. Setting fan_in_fan_out to False.");
                p.config = p.config.toBuilder().fanInFanOut(last).build();
            }
        }
    }

    /** PEFT's {@code _check_new_adapter_config}: at most one adapter with {@code bias != "none"}. */
    private void checkOneBiasAdapter(Bias bias) {
        if (bias == Bias.NONE) {
            return;
        }
        for (PeftConfig c : peftConfig.values()) {
            if (c instanceof dev.peft4j.config.LoraSettings ls && ls.bias() != Bias.NONE) {
                throw new IllegalArgumentException((c instanceof AdaLoraConfig ? "AdaLoraModel" : "LoraModel")
                        + " supports only 1 adapter with bias. When using multiple adapters, set bias to 'none' for "
                        + "all adapters.");
            }
        }
    }

    static boolean isAdapterKey(String key) {
        return key.contains(".lora_") || key.contains(".ia3_l.") || key.contains(".modules_to_save.");
    }

    /** @param forLoad whether a checkpoint follows: only then does AdaLoRA resize modules by {@code rank_pattern}. */
    private Prepared prepare(PeftConfig config, String name, boolean forLoad) {
        if (config instanceof IA3Config ia) {
            return prepareIa3(ia, name);
        }
        if (config instanceof AdaLoraConfig ac) {
            return prepareAdaLora(ac, name, forLoad);
        }
        if (config.peftType() != PeftType.LORA) {
            throw new UnsupportedOperationException("peft_type " + config.peftType() + " is not supported yet by "
                    + "peft4j's adapter mixin (only LORA is); adapter '" + name + "' was not added");
        }
        LoraConfig lc = (LoraConfig) config;
        if (lc.useDora()) {
            throw new UnsupportedOperationException("use_dora=True is not supported yet (adapter '" + name + "')");
        }
        checkOneBiasAdapter(lc.bias());
        if (lc.layerReplication() != null) {
            throw new UnsupportedOperationException("layer_replication is not supported (adapter '" + name + "')");
        }
        LoraInit.Mode init = LoraInit.parse(initValue(lc));
        ModuleSelector targets = lc.targetModules();
        boolean allLinear = targets instanceof ModuleSelector.Regex rx && TargetMatcher.isAllLinear(rx.pattern());
        boolean condensing = targets instanceof ModuleSelector.Names tn
                && tn.names().size() >= TargetMatcher.MIN_TARGET_MODULES_FOR_OPTIMIZATION;
        // the adapters already held add nothing a target could match (keys inside tuner layers are skipped): leave
        // their modules out so that a load costs the same however many adapters the model holds; the rarer
        // all-linear expansion and target condensing see every name, as PEFT's do
        Map<String, Module> modules = allLinear || condensing ? model.namedModules() : modulesOutsideAdapters();
        List<String> existing = new ArrayList<>(tunerLayers().keySet());
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
        ModuleSelector condensed = condense(targets, modules);
        if (condensed != targets) {
            targets = condensed;
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
        if (lc.modulesToSave() != null) {
            mb.modulesToSave(lc.modulesToSave());
        }
        List<String> selected = mb.build().selectTargets(modules.keySet(), existing);
        Prepared p = new Prepared(config, name, lc.loraDropout());
        prepareModulesToSave(p, lc.modulesToSave(), modules);
        // Loading: when every target is a CPU Linear / Conv1D, allocate the LoRA weights uninitialised in their final
        // dtype and leave the init to the load, which runs it only if the checkpoint does not fill them all (a
        // complete checkpoint overwrites every value: drawing them, in float32 then converted, is wasted time and
        // leaves the float32 temporaries' memory behind in the allocator).
        boolean defer = forLoad;
        for (String key : selected) {
            Module m = modules.get(key);
            Module base = m instanceof LoraLayer l ? l.baseLayer() : m;
            Tensor w = base instanceof Linear l ? l.weight() : base instanceof Conv1D c ? c.weight() : null;
            if (w == null || !w.is_cpu()) {
                defer = false;
            }
        }
        if (defer) {
            p.deferredInit = init;
            p.deferredSeed = seed;
        }
        try (Generator gen = torch.createCPUGenerator(seed)) {
            for (String key : selected) {
                Module m = modules.get(key);
                Module base = m instanceof LoraLayer l ? l.baseLayer() : m instanceof LoraEmbedding le ? le.baseLayer() : m;
                if (base instanceof BaseTunerLayer) {
                    throw new IllegalArgumentException("Target module " + base.typeName() + " (" + key + ") is not "
                            + "supported: it already holds adapters of another method");
                }
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
                    ScalarType edt = LoraMath.adapterDtype(ew.scalar_type(), false);
                    if (edt != ScalarType.Float || !ew.is_cpu()) {
                        for (int i = 0; i < 2; i++) {
                            Tensor moved = ts[i].to(ew.device(), edt);
                            ts[i].close();
                            ts[i] = moved;
                        }
                    }
                    p.emb.put(key, ts);
                    p.scalings.put(key, s);
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
                ScalarType dt = LoraMath.adapterDtype(w.scalar_type(), false);
                if (defer) {
                    Linear a = new Linear(in, r, false, Init.cpu(dt));
                    Linear b = new Linear(r, out, lc.loraBias(), Init.cpu(dt));
                    p.lora.put(key, new Linear[] {a, b});
                    p.scalings.put(key, s);
                    continue;
                }
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
        fixFanInFanOut(p, modules, selected);
        return p;
    }

    private TargetMatcher matcher(PeftConfig c, ModuleSelector targets) {
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
        return mb.build();
    }

    /**
     * {@code _set_trainable}: every module whose name ends with an entry of {@code modules_to_save} (plain
     * {@code endswith}) gets a copy for this adapter; modules inside tuner layers or wrappers are skipped.
     */
    private void prepareModulesToSave(Prepared p, List<String> entries, Map<String, Module> modules) {
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
                p.mts.put(key, ModulesToSaveWrapper.deepCopy(original, key));
            }
        } catch (RuntimeException ex) {
            p.discard();
            throw ex;
        }
    }

    /** Every modules_to_save wrapper under its module name (an unmodifiable snapshot, as {@link #tunerLayers()}). */
    public Map<String, ModulesToSaveWrapper> modulesToSaveWrappers() {
        refreshTree();
        return wrapperCache;
    }

    /** IA³ ({@code IA3Model._create_and_replace}): vectors of ones (or N(0,1) with {@code init_ia3_weights=false}). */
    private Prepared prepareIa3(IA3Config c, String name) {
        Map<String, Module> modules = model.namedModules();
        List<String> existing = new ArrayList<>(tunerLayers().keySet());
        ModuleSelector targets = c.targetModules();
        if (targets instanceof ModuleSelector.Regex r && TargetMatcher.isAllLinear(r.pattern())) {
            Map<String, ModuleType> kinds = new LinkedHashMap<>();
            for (Map.Entry<String, Module> e : modules.entrySet()) {
                kinds.put(e.getKey(), kindOf(e.getValue()));
            }
            targets = new ModuleSelector.Names(new ArrayList<>(TargetMatcher.allLinearTargets(kinds,
                    modules.containsKey("lm_head") ? "lm_head" : null, false, existing)));
        }
        List<String> selected = matcher(c, targets).selectTargets(modules.keySet(), existing);
        Prepared p = new Prepared(c, name, 0.0);
        prepareModulesToSave(p, c.modulesToSave(), modules);
        try (Generator gen = torch.createCPUGenerator(seed)) {
            for (String key : selected) {
                Module m = modules.get(key);
                boolean ff;
                Module base;
                if (m instanceof Ia3Layer l) {
                    ff = l.feedForward(); // the layer's flag wins (§4.3)
                    base = l.baseLayer();
                } else {
                    base = m;
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
                Tensor w = LinearShape.weight(base);
                Tensor v = Init.cpu(ScalarType.Float).empty(Ia3Math.vectorShape(in, out, ff));
                Ia3Math.init(v, c.initIa3Weights(), gen);
                ScalarType dt = LoraMath.adapterDtype(w.scalar_type(), false);
                if (dt != ScalarType.Float || !w.is_cpu()) {
                    Tensor moved = v.to(w.device(), dt);
                    v.close();
                    v = moved;
                }
                p.ia3.put(key, v);
                p.ia3FeedForward.put(key, ff);
            }
        } catch (RuntimeException e) {
            p.discard();
            throw e;
        }
        fixFanInFanOut(p, modules, selected);
        return p;
    }

    /**
     * AdaLoRA ({@code AdaLoraModel._create_and_replace}): SVD triplets of rank {@code init_r}; a module listed in
     * {@code rank_pattern} gets {@code k = count(true)} slots (the kept slices of a fresh init) while its
     * {@code ranknum} stays {@code init_r} (PeftModel's {@code resize_modules_by_rank_pattern}, §5.7).
     */
    private Prepared prepareAdaLora(AdaLoraConfig c, String name, boolean forLoad) {
        if (!c.inferenceMode()) {
            for (Map.Entry<String, PeftConfig> e : peftConfig.entrySet()) {
                if (e.getValue() instanceof AdaLoraConfig && !e.getValue().inferenceMode()) {
                    throw new IllegalArgumentException("AdaLoraModel supports only 1 trainable adapter. When using "
                            + "multiple adapters, set inference_mode to True for all adapters except the one you want "
                            + "to train.");
                }
            }
        }
        checkOneBiasAdapter(c.bias());
        Map<String, boolean[]> masks = new LinkedHashMap<>();
        if (forLoad && c.rankPattern() != null) {
            for (Map.Entry<String, List<Boolean>> e : c.rankPattern().entrySet()) {
                boolean[] m = new boolean[e.getValue().size()];
                for (int i = 0; i < m.length; i++) {
                    m[i] = e.getValue().get(i);
                }
                masks.put(AdapterKeys.rankPatternModule(e.getKey(), name), m);
            }
        }
        Map<String, Module> modules = model.namedModules();
        List<String> existing = new ArrayList<>(tunerLayers().keySet());
        ModuleSelector condensed = condense(c.targetModules(), modules);
        if (condensed != c.targetModules()) {
            c = c.toBuilder().targetModules(condensed).build();
        }
        List<String> selected = matcher(c, c.targetModules()).selectTargets(modules.keySet(), existing);
        Prepared p = new Prepared(c, name, c.loraDropout());
        prepareModulesToSave(p, c.modulesToSave(), modules);
        boolean initFlag = !(c.initLoraWeights() instanceof dev.peft4j.config.InitLoraWeights.Flag f) || f.value();
        try (Generator gen = torch.createCPUGenerator(seed)) {
            for (String key : selected) {
                Module m = modules.get(key);
                Module base = m instanceof SvdLinear l ? l.baseLayer() : m;
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
                ScalarType dt = LoraMath.adapterDtype(w.scalar_type(), false);
                if (dt != ScalarType.Float || !w.is_cpu()) {
                    for (int i = 0; i < ts.length; i++) {
                        Tensor moved = ts[i].to(w.device(), dt);
                        ts[i].close();
                        ts[i] = moved;
                    }
                }
                p.ada.put(key, ts);
                p.scalings.put(key, AdaLoraMath.scaling(c.loraAlpha(), r));
            }
        } catch (RuntimeException ex) {
            p.discard();
            throw ex;
        }
        fixFanInFanOut(p, modules, selected);
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
            t.setAdapter(active);
        }
        for (ModulesToSaveWrapper w : wrappers) {
            w.setAdapter(active);
        }
    }

    public void disableAdapters() {
        requireLoaded();
        for (PeftConfig c : peftConfig.values()) {
            if (c instanceof dev.peft4j.config.LoraSettings ls && ls.bias() != Bias.NONE) {
                LOG.warn("Careful, disabling adapter layers with bias configured to be '{}' does not produce the same "
                        + "output as the base model would without adaption.", ls.bias().jsonValue());
            }
        }
        for (BaseTunerLayer t : tunerLayers().values()) {
            t.enableAdapters(false);
        }
        for (ModulesToSaveWrapper w : modulesToSaveWrappers().values()) {
            w.enableAdapters(false); // enableAdapters does not undo this (transformers' asymmetry, §2.6)
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
        Map<String, boolean[]> masks = new LinkedHashMap<>();
        if (peftConfig.get(name) instanceof AdaLoraConfig ac && ac.rankPattern() != null) {
            for (Map.Entry<String, List<Boolean>> e : ac.rankPattern().entrySet()) {
                boolean[] m = new boolean[e.getValue().size()];
                for (int i = 0; i < m.length; i++) {
                    m[i] = e.getValue().get(i);
                }
                masks.put(AdapterKeys.rankPatternModule(e.getKey(), name), m);
            }
        }
        for (Map.Entry<String, BaseTunerLayer> e : tunerLayers().entrySet()) {
            Map<String, Tensor> params = e.getValue().adapterParameters(name);
            boolean[] mask = masks.get(e.getKey());
            if (mask != null && e.getValue() instanceof SvdLinear && !params.isEmpty()) {
                // resize_state_dict_by_rank_pattern: kept rank slots only (new tensors; as is when already k)
                AdaLoraMath.Triplet t = AdaLoraMath.sliceByRankPattern(params.get("lora_A." + name),
                        params.get("lora_E." + name), params.get("lora_B." + name), mask);
                params = new LinkedHashMap<>(params);
                params.put("lora_A." + name, t.a());
                params.put("lora_E." + name, t.e());
                params.put("lora_B." + name, t.b());
            }
            for (Map.Entry<String, Tensor> p : params.entrySet()) {
                out.put(AdapterKeys.removeAdapterName(e.getKey() + "." + p.getKey(), name), p.getValue());
            }
        }
        for (Map.Entry<String, ModulesToSaveWrapper> e : modulesToSaveWrappers().entrySet()) {
            Module copy = e.getValue().adapterCopies().get(name);
            if (copy != null) {
                for (Map.Entry<String, Tensor> t : copy.stateDict().entrySet()) {
                    out.put(e.getKey() + "." + t.getKey(), t.getValue());
                }
            }
        }
        for (String k : extraKeys.getOrDefault(name, List.of())) {
            out.put(k, model.getParameter(k));
        }
        if (peftConfig.get(name) instanceof dev.peft4j.config.LoraSettings ls && ls.bias() != Bias.NONE) {
            for (String k : savedBiasKeys(name, ls.bias())) {
                out.put(k, model.stateDict().get(k));
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
        if (cfg instanceof AdaLoraConfig ac && ac.rankPattern() != null) {
            // PEFT strips ".<adapter>" from rank_pattern keys when saving (§5.7)
            Map<String, List<Boolean>> rp = new LinkedHashMap<>();
            for (Map.Entry<String, List<Boolean>> e : ac.rankPattern().entrySet()) {
                rp.put(AdapterKeys.rankPatternSaveKey(e.getKey(), name), e.getValue());
            }
            cfg = ac.toBuilder().rankPattern(rp).build();
        }
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
            for (BaseTunerLayer t : tunerLayers().values()) {
                t.deleteAdapter(n);
            }
            for (ModulesToSaveWrapper w : modulesToSaveWrappers().values()) {
                w.deleteAdapter(n);
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
        // a modules_to_save wrapper is replaced by its active copy (the original when none is active)
        for (Map.Entry<String, ModulesToSaveWrapper> e : modulesToSaveWrappers().entrySet()) {
            ModulesToSaveWrapper w = e.getValue();
            String act = w.activeAdapter();
            Module keep = act != null && w.adapterCopies().containsKey(act) && !w.disabled()
                    ? w.adapterCopies().get(act) : w.originalModule();
            model.replaceSubmodule(e.getKey(), keep);
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
