package dev.peft4j.models;

import dev.peft4j.nn.Module;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A transformers model: a module tree under Hugging Face's parameter names, with its config, its tied weights and
 * transformers' rules for loading a checkpoint saved with or without the base model's prefix.
 */
public abstract class PreTrainedModel extends Module implements dev.peft4j.PeftAdapterMixin {
    private static final Logger LOG = LoggerFactory.getLogger(PreTrainedModel.class);
    private final ModelConfig config;
    private dev.peft4j.PeftAdapters peftAdapters;
    private volatile boolean deviceMapped;
    /** Read side: every top-level forward; write side: a hotswap's commit ({@link dev.peft4j.PeftAdapters#forwardLock}). */
    private final java.util.concurrent.locks.ReentrantReadWriteLock adapterSwapLock =
            new java.util.concurrent.locks.ReentrantReadWriteLock();

    /** @param config the model's {@code config.json}, kept for {@link #config()} and the adapters' {@code name_or_path} */
    protected PreTrainedModel(ModelConfig config) {
        this.config = config;
    }

    /** This model's adapters (transformers' {@code PeftAdapterMixin} state), created on first use. */
    @Override
    public final synchronized dev.peft4j.PeftAdapters peftAdapters() {
        if (peftAdapters == null) {
            peftAdapters = new dev.peft4j.PeftAdapters(this, () -> config.getString("_name_or_path", null),
                    adapterSwapLock);
        }
        return peftAdapters;
    }

    /**
     * The lock each top-level forward of this model holds (read side, shared by concurrent forwards) so that a
     * hotswap of an adapter, which commits under the write side, is seen by a forward entirely or not at all.
     */
    protected final java.util.concurrent.locks.Lock forwardLock() {
        return adapterSwapLock.readLock();
    }

    /**
     * Places this model's modules on devices by {@code deviceMap}, as accelerate's {@code dispatch_model}: each key is
     * a module name ({@code ""}: the whole model, {@code "model.layers.3"}, {@code "lm_head"}), each value a device
     * ({@link dev.peft4j.nn.Devices#canonical}: {@code "cpu"}, {@code "cuda:N"}, {@code "meta"}, an integer for a
     * CUDA index); a parameter or buffer goes to the device of the longest key that is its module or a module above
     * it. When the map spans several devices, the forward moves the activations (hidden states, masks, RoPE tables)
     * to each placed module's device before it runs, as accelerate's {@code AlignDevicesHook} does; the output is on
     * the device of the last module (the head). Models that do not align devices accept a map of one device only.
     *
     * @return this
     * @throws IllegalArgumentException a key naming no module of this model, a parameter no key covers (naming its
     *         module), tied parameters mapped to different devices, or an unknown device
     * @throws UnsupportedOperationException a map of several devices for a model whose forward does not align devices
     */
    public final PreTrainedModel dispatch(Map<String, ?> deviceMap) {
        try {
            return dispatch(deviceMap, null);
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e); // unreachable: no folder, nothing written
        }
    }

    /**
     * {@link #dispatch(Map)} where a value may also be {@code "disk"} (accelerate's offload): those modules run on the
     * CPU, their parameters and persistent buffers written to {@code offloadFolder/offloaded.safetensors} and
     * replaced by views of that file mapped copy-on-write ({@link dev.peft4j.io.SafetensorsFile}), so their pages are
     * read on demand and can be evicted rather than held in the process's memory. The file must stay in place while
     * the model is used.
     *
     * @param offloadFolder where {@code "disk"} modules' weights go (created if absent); null: {@code "disk"} refused
     * @return this
     * @throws IllegalArgumentException as {@link #dispatch(Map)}; {@code "disk"} without a folder
     * @throws UnsupportedOperationException as {@link #dispatch(Map)}; a key under a {@code "disk"} one naming
     *         another device
     * @throws java.io.IOException the folder or file cannot be written
     */
    public final PreTrainedModel dispatch(Map<String, ?> deviceMap, java.nio.file.Path offloadFolder)
            throws java.io.IOException {
        Map<String, String> devices = new java.util.LinkedHashMap<>();
        List<String> diskKeys = new java.util.ArrayList<>();
        Map<String, dev.peft4j.nn.Module> modules = namedModules();
        for (Map.Entry<String, ?> e : deviceMap.entrySet()) {
            String key = e.getKey();
            if (!key.isEmpty() && !modules.containsKey(key)) {
                throw new IllegalArgumentException("device_map key '" + key + "' names no module of "
                        + getClass().getSimpleName());
            }
            if (e.getValue() instanceof String v && v.trim().equalsIgnoreCase("disk")) {
                if (offloadFolder == null) {
                    throw new IllegalArgumentException("device_map['" + key + "'] = disk needs an offload_folder");
                }
                diskKeys.add(key);
                devices.put(key, "cpu"); // offloaded modules run on the CPU, over the mapped file
            } else {
                devices.put(key, dev.peft4j.nn.Devices.canonical("device_map['" + key + "']", e.getValue()));
            }
        }
        for (String disk : diskKeys) {
            for (String k : devices.keySet()) {
                boolean under = disk.isEmpty() ? !k.isEmpty() : k.startsWith(disk + ".");
                if (under && !diskKeys.contains(k)) {
                    throw new UnsupportedOperationException("device_map['" + k + "'] lies inside the offloaded module '"
                            + disk + "' (disk); offload whole modules only");
                }
            }
        }
        Map<String, String> placed = new java.util.LinkedHashMap<>();
        List<String> uncovered = new java.util.ArrayList<>();
        Map<String, Tensor> tensors = new java.util.LinkedHashMap<>(namedParameters());
        tensors.putAll(namedBuffers());
        for (String name : tensors.keySet()) {
            String device = deviceOf(devices, name);
            if (device == null) {
                int dot = name.lastIndexOf('.');
                uncovered.add((dot < 0 ? "" : name.substring(0, dot)) + " (" + name + ")");
            } else {
                placed.put(name, device);
            }
        }
        if (!uncovered.isEmpty()) {
            throw new IllegalArgumentException("device_map gives no device for module" + (uncovered.size() == 1 ? " " : "s ")
                    + String.join(", ", uncovered) + "; add its name or a module above it (\"\" for the whole model)");
        }
        for (Map.Entry<String, String> tie : tiedKeys().entrySet()) {
            String a = deviceOf(devices, tie.getKey());
            String b = deviceOf(devices, tie.getValue());
            if (a != null && b != null && !a.equals(b)) {
                throw new IllegalArgumentException("device_map puts tied parameters " + tie.getKey() + " on " + a
                        + " and " + tie.getValue() + " on " + b + "; tied parameters share one tensor, map them to one "
                        + "device");
            }
        }
        boolean several = new java.util.HashSet<>(placed.values()).size() > 1;
        if (several && !alignsDevices()) {
            throw new UnsupportedOperationException(getClass().getSimpleName() + " does not move activations between "
                    + "devices; device_map must name one device for it (got " + devices + ")");
        }
        if (several) {
            checkUnitsWhole(placed);
        }
        Map<String, org.bytedeco.pytorch.Device> opened = new java.util.HashMap<>();
        try {
            for (String d : new java.util.HashSet<>(devices.values())) {
                opened.put(d, new org.bytedeco.pytorch.Device(d));
            }
            toDevices(name -> {
                String d = deviceOf(devices, name);
                return d == null ? null : opened.get(d);
            });
        } finally {
            opened.values().forEach(org.bytedeco.pytorch.Device::close);
        }
        // a per-module map (even of one device) takes the aligned forward, so that a cpu/cpu split runs its moves
        boolean perModule = several || devices.size() > 1;
        for (dev.peft4j.nn.Module m : namedModules().values()) {
            if (m instanceof PreTrainedModel p) {
                p.deviceMapped = perModule;
            }
        }
        if (!diskKeys.isEmpty()) {
            offload(diskKeys, offloadFolder);
        }
        return this;
    }

    /** Writes the modules of {@code keys} into one safetensors file in {@code folder}, then adopts its mapped views. */
    private void offload(List<String> keys, java.nio.file.Path folder) throws java.io.IOException {
        List<String> outer = new java.util.ArrayList<>(); // a key inside another offloaded one is covered by it
        for (String k : keys) {
            if (keys.stream().noneMatch(o -> !o.equals(k) && (o.isEmpty() || k.startsWith(o + ".")))) {
                outer.add(k);
            }
        }
        Map<String, Tensor> all = new java.util.LinkedHashMap<>();
        java.util.IdentityHashMap<Tensor, Boolean> written = new java.util.IdentityHashMap<>();
        for (String k : outer) {
            for (Map.Entry<String, Tensor> e : (k.isEmpty() ? this : getSubmodule(k)).stateDict().entrySet()) {
                if (written.put(e.getValue(), Boolean.TRUE) == null) { // a tied tensor is written once
                    all.put(k.isEmpty() ? e.getKey() : k + "." + e.getKey(), e.getValue());
                }
            }
        }
        java.nio.file.Files.createDirectories(folder);
        java.nio.file.Path file = folder.resolve(OFFLOAD_FILE);
        dev.peft4j.io.SafetensorsFile.write(file, all);
        try (dev.peft4j.io.SafetensorsFile mapped = dev.peft4j.io.SafetensorsFile.open(file)) {
            for (String k : outer) {
                Map<String, Tensor> views = new java.util.LinkedHashMap<>();
                String p = k.isEmpty() ? "" : k + ".";
                for (String name : mapped.names()) {
                    if (name.startsWith(p)) {
                        views.put(name.substring(p.length()), mapped.get(name));
                    }
                }
                // assign: a contiguous view of the same dtype is adopted as it is, not copied
                (k.isEmpty() ? this : getSubmodule(k)).loadStateDict(views, true);
                views.values().forEach(Tensor::close);
            }
        }
    }

    /**
     * A device map for {@link #dispatch} that fills devices in order under {@code maxMemory} (accelerate's
     * {@code infer_auto_device_map} with {@code max_memory}, greedy): the model is cut into units in module order (each
     * element of a module list, such as a decoder layer, is one; so is each other module holding parameters of its
     * own, or a leaf), each unit's bytes are its parameters' and buffers' (a tensor shared with an earlier unit
     * counted there), and units go to the first device in {@code maxMemory}'s order until the next one would exceed
     * its budget, then to the next device, then to {@code "disk"}. Unlike accelerate, no room is kept back for the
     * largest layer's activations, and tied parameters are not pulled together (a map that splits them is refused by
     * {@link #dispatch}).
     *
     * @param maxMemory device ({@link dev.peft4j.nn.Devices#canonical} names) to the bytes it may hold, in order
     * @return module name to device or {@code "disk"}, in module order
     * @throws IllegalArgumentException an unknown device or a negative budget, naming it
     */
    public final Map<String, String> inferDeviceMap(Map<String, Long> maxMemory) {
        List<String> names = new java.util.ArrayList<>();
        List<Long> budgets = new java.util.ArrayList<>();
        for (Map.Entry<String, Long> e : maxMemory.entrySet()) {
            if (e.getValue() == null || e.getValue() < 0) {
                throw new IllegalArgumentException("max_memory['" + e.getKey() + "'] = " + e.getValue()
                        + ": expected a number of bytes >= 0");
            }
            names.add(dev.peft4j.nn.Devices.canonical("max_memory['" + e.getKey() + "']", e.getKey()));
            budgets.add(e.getValue());
        }
        Map<String, dev.peft4j.nn.Module> units = new java.util.LinkedHashMap<>();
        collectUnits("", this, units);
        java.util.IdentityHashMap<Tensor, Boolean> counted = new java.util.IdentityHashMap<>();
        Map<String, String> out = new java.util.LinkedHashMap<>();
        int device = 0;
        long used = 0;
        for (Map.Entry<String, dev.peft4j.nn.Module> u : units.entrySet()) {
            long bytes = 0;
            List<Tensor> tensors = new java.util.ArrayList<>(u.getValue().namedParameters().values());
            tensors.addAll(u.getValue().namedBuffers().values());
            for (Tensor t : tensors) {
                if (counted.put(t, Boolean.TRUE) == null) {
                    bytes += t.numel() * t.element_size();
                }
            }
            while (device < names.size() && used + bytes > budgets.get(device)) {
                device++;
                used = 0;
            }
            if (device < names.size()) {
                used += bytes;
                out.put(u.getKey(), names.get(device));
            } else {
                out.put(u.getKey(), "disk");
            }
        }
        return out;
    }

    /**
     * The placement units under {@code m} (named {@code name}), in module order: what the forwards move activations
     * into (transformers' {@code _no_split_modules}): each element of a module list (a decoder layer), a module with
     * parameters of its own, a module whose children are all leaves (BERT's embeddings), a leaf.
     */
    private static void collectUnits(String name, dev.peft4j.nn.Module m, Map<String, dev.peft4j.nn.Module> out) {
        String p = name.isEmpty() ? "" : name + ".";
        if (m instanceof dev.peft4j.nn.ModuleList<?>) {
            m.children().forEach((k, c) -> out.put(p + k, c));
        } else if (m.children().isEmpty() || !m.ownParameters().isEmpty()
                || m.children().values().stream().allMatch(c -> c.children().isEmpty())) {
            out.put(name, m);
        } else {
            m.children().forEach((k, c) -> collectUnits(p + k, c, out));
        }
    }

    /**
     * Refuses a placement ({@code placed}: tensor name → device) that puts one placement unit's tensors on several
     * devices: the forwards move activations between units, not inside one.
     */
    private void checkUnitsWhole(Map<String, String> placed) {
        Map<String, dev.peft4j.nn.Module> units = new java.util.LinkedHashMap<>();
        collectUnits("", this, units);
        for (String unit : units.keySet()) {
            String prefix = unit.isEmpty() ? "" : unit + ".";
            String first = null;
            String firstDevice = null;
            for (Map.Entry<String, String> e : placed.entrySet()) {
                if (!e.getKey().startsWith(prefix)) {
                    continue;
                }
                if (firstDevice == null) {
                    first = e.getKey();
                    firstDevice = e.getValue();
                } else if (!firstDevice.equals(e.getValue())) {
                    throw new IllegalArgumentException("device_map splits module " + unit + " across devices (" + first
                            + " on " + firstDevice + ", " + e.getKey() + " on " + e.getValue() + "); activations move "
                            + "between devices at whole modules only (a decoder layer, an embedding, a norm, a head): "
                            + "map " + unit + " or a module above it to one device");
                }
            }
        }
    }

    /** The file {@link #dispatch(Map, java.nio.file.Path)} writes offloaded weights to, in the offload folder. */
    public static final String OFFLOAD_FILE = "offloaded.safetensors";

    /** The device of the longest key of {@code devices} that is {@code name} or a module above it; null: none. */
    static String deviceOf(Map<String, String> devices, String name) {
        String best = null;
        String device = null;
        for (Map.Entry<String, String> e : devices.entrySet()) {
            String k = e.getKey();
            boolean covers = k.isEmpty() || name.equals(k) || name.startsWith(k + ".");
            if (covers && (best == null || k.length() > best.length())) {
                best = k;
                device = e.getValue();
            }
        }
        return device;
    }

    /**
     * Whether this model's forward moves activations to each module's device ({@link #dispatch} with several
     * devices); false by default.
     */
    protected boolean alignsDevices() {
        return false;
    }

    /** Whether {@link #dispatch} placed this model's modules by a per-module map (its forward then aligns devices). */
    final boolean deviceMapped() {
        return deviceMapped;
    }

    /** {@code t} on the device of {@code module}'s first parameter (itself when already there or it has none). */
    static Tensor onDeviceOf(Tensor t, dev.peft4j.nn.Module module) {
        if (t == null) {
            return null;
        }
        Tensor w = firstParameter(module);
        return w == null ? t : onDeviceOfTensor(t, w);
    }

    /** {@code t} on the device of {@code like} (itself when already there). */
    static Tensor onDeviceOfTensor(Tensor t, Tensor like) {
        if (t == null) {
            return null;
        }
        org.bytedeco.pytorch.Device d = like.device();
        return t.device().str().getString().equals(d.str().getString()) ? t : t.to(d, t.scalar_type().intern());
    }

    /** The first parameter of {@code module} in module order (its own, then its children's), or null. */
    static Tensor firstParameter(dev.peft4j.nn.Module module) {
        java.util.Iterator<Tensor> own = module.ownParameters().values().iterator();
        if (own.hasNext()) {
            return own.next();
        }
        for (dev.peft4j.nn.Module c : module.children().values()) {
            Tensor t = firstParameter(c);
            if (t != null) {
                return t;
            }
        }
        return null;
    }

    /**
     * {@code t} on {@code module}'s device when this model is placed per module by {@link #dispatch} (as
     * accelerate's {@code AlignDevicesHook} moves a module's inputs), else {@code t} itself.
     */
    final Tensor aligned(Tensor t, dev.peft4j.nn.Module module) {
        return deviceMapped ? onDeviceOf(t, module) : t;
    }

    /** @return the model's {@code config.json}, as loaded */
    public final ModelConfig config() {
        return config;
    }

    /** transformers' {@code base_model_prefix}: {@code model}, {@code transformer}, {@code bert}. */
    public abstract String baseModelPrefix();

    /** True for a bare base model ({@code LlamaModel}, {@code GPT2Model}): its keys carry no prefix. */
    public abstract boolean isBaseModel();

    /**
     * Keys that share another key's tensor (target → source, e.g. {@code lm_head.weight →
     * model.embed_tokens.weight}); a checkpoint may omit either. Saving writes the source only, as transformers does.
     */
    public Map<String, String> tiedKeys() {
        return Map.of();
    }

    /**
     * Writes {@code dir/config.json} and {@code dir/model.safetensors} (each file atomically) as transformers'
     * {@code save_pretrained} does: Hugging Face keys, tied duplicates written once (under the source key),
     * {@code {"format": "pt"}} metadata, {@code torch_dtype} set to the weights' dtype.
     */
    public void savePretrained(java.nio.file.Path dir) throws java.io.IOException {
        java.nio.file.Files.createDirectories(dir);
        Map<String, Tensor> sd = new LinkedHashMap<>(stateDict());
        for (String tiedTarget : tiedKeys().keySet()) {
            sd.remove(tiedTarget);
        }
        com.fasterxml.jackson.databind.node.ObjectNode json = config.json().deepCopy();
        Tensor any = sd.values().iterator().next();
        org.bytedeco.pytorch.global.torch.ScalarType dt = any.scalar_type().intern();
        json.put("torch_dtype", dt == org.bytedeco.pytorch.global.torch.ScalarType.BFloat16 ? "bfloat16"
                : dt == org.bytedeco.pytorch.global.torch.ScalarType.Half ? "float16" : "float32");
        java.nio.file.Path tmp = dir.resolve("config.json.tmp");
        new com.fasterxml.jackson.databind.ObjectMapper().writerWithDefaultPrettyPrinter().writeValue(tmp.toFile(), json);
        java.nio.file.Files.move(tmp, dir.resolve("config.json"), java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        dev.peft4j.io.SafetensorsFile.write(dir.resolve("model.safetensors"), sd);
    }

    /** Unused checkpoint keys not worth a warning (transformers' {@code _keys_to_ignore_on_load_unexpected}). */
    protected List<Pattern> ignoredUnexpectedKeys() {
        return List.of();
    }

    /**
     * Loads a checkpoint's state dict (all or nothing), adopting each tensor already of the model's dtype (a
     * mapped file's copy-on-write view: no copy) and converting the others once. As
     * transformers does, a base model accepts a task model's checkpoint (prefix stripped, head keys unused) and a
     * task model a base model's checkpoint (prefix added; the head must then be tied or it is missing).
     *
     * @throws IllegalArgumentException listing missing keys, or naming a key whose shape does not match
     * @return the unused keys, also logged as a warning
     */
    public LoadReport loadWeights(Map<String, Tensor> checkpoint, String source) {
        String prefix = baseModelPrefix() + ".";
        boolean anyPrefixed = checkpoint.keySet().stream().anyMatch(k -> k.startsWith(prefix));
        Map<String, Tensor> sd = checkpoint;
        if (isBaseModel() && anyPrefixed) {
            sd = new LinkedHashMap<>();
            for (Map.Entry<String, Tensor> e : checkpoint.entrySet()) {
                String k = e.getKey();
                sd.put(k.startsWith(prefix) ? k.substring(prefix.length()) : "<head>." + k, e.getValue());
            }
        } else if (!isBaseModel() && !anyPrefixed) {
            sd = new LinkedHashMap<>();
            Map<String, Tensor> own = stateDict();
            for (Map.Entry<String, Tensor> e : checkpoint.entrySet()) {
                String k = e.getKey();
                sd.put(own.containsKey(k) ? k : prefix + k, e.getValue());
            }
        }
        LoadReport report;
        try {
            report = loadStateDict(sd, true);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(source + ": " + e.getMessage(), e);
        }
        List<String> unexpected = new ArrayList<>();
        for (String k : report.unexpectedKeys()) {
            String original = k.startsWith("<head>.") ? k.substring("<head>.".length()) : k;
            if (ignoredUnexpectedKeys().stream().noneMatch(p -> p.matcher(original).matches())) {
                unexpected.add(original);
            }
        }
        if (!unexpected.isEmpty()) {
            LOG.warn("Some weights of the checkpoint at {} were not used when initializing {}: {}", source, typeName(),
                    unexpected);
        }
        return new LoadReport(List.copyOf(unexpected));
    }
}
