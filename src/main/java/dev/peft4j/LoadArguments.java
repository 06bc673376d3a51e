package dev.peft4j;

import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The placement and Hub arguments of {@code load_adapter} checked and resolved as transformers v4 does:
 * {@code adapter_kwargs}' {@code revision} and {@code token} merged with the arguments, {@code device},
 * {@code device_map} and {@code max_memory} checked against the devices present ({@link dev.peft4j.nn.Devices}),
 * disk offload ({@code "disk"} modules with an {@code offload_folder}) checked for {@link AdapterOffload}.
 */
final class LoadArguments {
    private static final Logger LOG = LoggerFactory.getLogger(LoadArguments.class);

    /** The {@code adapter_kwargs} keys peft4j applies; any other is refused rather than silently ignored. */
    static final Set<String> KNOWN_KWARGS = Set.of("cache_dir", "subfolder", "local_files_only", "force_download",
            "key_mapping", "revision", "token", "device");

    /** accelerate's {@code device_map} strategies: an adapter's tensors follow the layers they adapt under each. */
    private static final Set<String> STRATEGIES = Set.of("auto", "balanced", "balanced_low_0", "sequential");

    private static final Pattern SIZE = Pattern.compile("(?i)^\\s*(\\d+(?:\\.\\d+)?)\\s*([kmgt]i?b|b)?\\s*$");

    private LoadArguments() {
    }

    /**
     * The options with {@code revision} and {@code token} as the load uses them: {@code adapter_kwargs['revision']}
     * wins over the argument (logged as transformers does when they differ), {@code adapter_kwargs['token']} replaces
     * the argument.
     *
     * @throws IllegalArgumentException an argument this build cannot honour, named with its value
     */
    static LoadAdapterOptions resolve(LoadAdapterOptions o) {
        Map<String, Object> kw = o.adapterKwargs() == null ? Map.of() : o.adapterKwargs();
        for (String key : kw.keySet()) {
            if (!KNOWN_KWARGS.contains(key)) {
                throw new IllegalArgumentException("adapter_kwargs['" + key + "'] is not supported by peft4j (it would "
                        + "be ignored); supported keys: " + String.join(", ", new java.util.TreeSet<>(KNOWN_KWARGS))
                        + (key.equals("proxies") ? ". Set the JVM's proxy properties (https.proxyHost, ...) instead"
                        : ""));
            }
        }
        checkDevice(kw.get("device"));
        checkDeviceMap(o.deviceMap());
        List<String> disk = diskKeys(o.deviceMap());
        if (!disk.isEmpty() && o.offloadFolder() == null) {
            throw new IllegalArgumentException("device_map['" + disk.get(0) + "'] = disk needs an offload_folder: the "
                    + "adapter's tensors in that module are written there and memory-mapped");
        }
        if (o.offloadFolder() != null && disk.isEmpty()) {
            throw new IllegalArgumentException("offload_folder=" + o.offloadFolder() + ": device_map maps no module "
                    + "to \"disk\", so nothing would be offloaded; map the modules whose adapter tensors go to disk");
        }
        if (o.offloadIndex() != null) {
            throw new IllegalArgumentException("offload_index=" + o.offloadIndex() + ": peft4j does not read "
                    + "accelerate's index of weights already offloaded (its .dat files); give offload_folder and "
                    + "\"disk\" modules in device_map, and the adapter's offloaded tensors are written there");
        }
        maxCpuBytes(o.maxMemory()); // checked now, applied once the weights are read
        String revision = o.revision();
        Object kwRevision = kw.get("revision");
        if (kwRevision != null) {
            if (!(kwRevision instanceof String r)) {
                throw new IllegalArgumentException("adapter_kwargs['revision']: expected a string, got " + kwRevision);
            }
            if (revision != null && !revision.equals(r)) {
                LOG.error("You passed a `revision` argument both in `adapter_kwargs` and as a standalone argument. "
                        + "The one in `adapter_kwargs` will be used.");
            }
            revision = r;
        }
        String token = o.token();
        if (kw.containsKey("token")) {
            Object t = kw.get("token");
            if (t != null && !(t instanceof String)) {
                throw new IllegalArgumentException("adapter_kwargs['token']: expected a string, got "
                        + t.getClass().getSimpleName());
            }
            token = (String) t;
        }
        if (Objects.equals(revision, o.revision()) && Objects.equals(token, o.token())) {
            return o;
        }
        return new LoadAdapterOptions(o.adapterName(), revision, token, o.deviceMap(), o.maxMemory(),
                o.offloadFolder(), o.offloadIndex(), o.peftConfig(), o.adapterStateDict(), o.lowCpuMemUsage(),
                o.isTrainable(), o.adapterKwargs(), o.hotswap());
    }

    /**
     * Refuses an adapter whose tensors take more bytes than {@code max_memory['cpu']}.
     *
     * @throws IllegalArgumentException over the limit, with both sizes
     */
    static void checkFits(LoadAdapterOptions o, Map<String, Tensor> weights, String source) {
        long limit = maxCpuBytes(o.maxMemory());
        if (limit < 0 || weights == null) {
            return;
        }
        long bytes = 0;
        for (Tensor t : weights.values()) {
            bytes += t.nbytes();
        }
        if (bytes > limit) {
            throw new IllegalArgumentException("max_memory['cpu'] = " + o.maxMemory().get("cpu") + " (" + limit
                    + " bytes) is less than the " + bytes + " bytes of the adapter's tensors in " + source
                    + "; the adapter was not loaded");
        }
    }

    private static void checkDevice(Object device) {
        if (device != null) {
            dev.peft4j.nn.Devices.canonical("adapter_kwargs['device']", device);
        }
    }

    private static void checkDeviceMap(Object deviceMap) {
        if (deviceMap == null) {
            return;
        }
        if (deviceMap instanceof String s) {
            if (!STRATEGIES.contains(s.toLowerCase(Locale.ROOT))) {
                dev.peft4j.nn.Devices.canonical("device_map", s);
            }
            return;
        }
        if (deviceMap instanceof Map<?, ?> m) {
            for (Map.Entry<?, ?> e : m.entrySet()) {
                if (!(e.getKey() instanceof String)) {
                    throw new IllegalArgumentException("device_map: keys are module names, got " + e.getKey());
                }
                if (!"disk".equals(e.getValue())) {
                    dev.peft4j.nn.Devices.canonical("device_map['" + e.getKey() + "']", e.getValue());
                }
            }
            return;
        }
        throw new IllegalArgumentException("device_map: expected a string or a map of module names to devices, got "
                + deviceMap.getClass().getSimpleName());
    }

    /** The module names a {@code device_map} given as a map sends to {@code "disk"}, in its order. */
    static List<String> diskKeys(Object deviceMap) {
        List<String> out = new java.util.ArrayList<>();
        if (deviceMap instanceof Map<?, ?> m) {
            for (Map.Entry<?, ?> e : m.entrySet()) {
                if ("disk".equals(e.getValue()) && e.getKey() instanceof String k) {
                    out.add(k);
                }
            }
        }
        return out;
    }

    /** {@code max_memory['cpu']} in bytes, or -1 for no limit. */
    private static long maxCpuBytes(Map<String, Object> maxMemory) {
        if (maxMemory == null) {
            return -1;
        }
        long limit = -1;
        for (Map.Entry<String, Object> e : maxMemory.entrySet()) {
            if (!"cpu".equals(e.getKey())) {
                // a device's limit: checked (a CUDA device must be present), the adapter's bytes are bounded on the CPU
                dev.peft4j.nn.Devices.canonical("max_memory['" + e.getKey() + "']", e.getKey());
                parseSize(e.getValue());
                continue;
            }
            limit = parseSize(e.getValue());
        }
        return limit;
    }

    /** accelerate's {@code convert_file_size_to_int}: bytes, or a size with KB/MB/GB/TB (10³) or KiB/... (2¹⁰). */
    static long parseSize(Object size) {
        if (size instanceof Number n && n.longValue() >= 0) {
            return n.longValue();
        }
        Matcher m = size instanceof String s ? SIZE.matcher(s) : null;
        if (m == null || !m.matches()) {
            throw new IllegalArgumentException("max_memory['cpu'] = " + size + ": expected a number of bytes or a "
                    + "size such as \"2GiB\" or \"500MB\"");
        }
        double v = Double.parseDouble(m.group(1));
        String unit = m.group(2) == null ? "b" : m.group(2).toLowerCase(Locale.ROOT);
        boolean binary = unit.contains("i");
        int power = switch (unit.charAt(0)) {
            case 'k' -> 1;
            case 'm' -> 2;
            case 'g' -> 3;
            case 't' -> 4;
            default -> 0;
        };
        double bytes = v * Math.pow(binary ? 1024 : 1000, power);
        return (long) bytes;
    }
}
