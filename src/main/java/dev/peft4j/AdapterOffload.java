package dev.peft4j;

import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.nn.Module;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;

/**
 * Disk offload of an adapter ({@code load_adapter}'s {@code offload_folder} with {@code "disk"} modules in its
 * {@code device_map}, as transformers re-dispatches the model through accelerate after the load): the adapter's
 * tensors inside the {@code "disk"} modules are written to {@code offload_folder/adapter-<name>.safetensors} and
 * replaced by copy-on-write views of that file's mapping, so their pages are read on demand and can be evicted
 * rather than held in the process's memory. The values, hence the outputs, are unchanged. The file must stay in place
 * while the adapter is loaded; a later offload of the same adapter name replaces it atomically (a mapping already
 * made keeps the old file's pages).
 */
final class AdapterOffload {
    private AdapterOffload() {
    }

    /** The file the adapter {@code name}'s offloaded tensors go to, in {@code folder}. */
    static Path file(Path folder, String name) {
        return folder.resolve("adapter-" + name + ".safetensors");
    }

    /**
     * Refuses {@code "disk"} keys that name no module of {@code model}, before anything is loaded.
     *
     * @throws IllegalArgumentException naming the key
     */
    static void checkKeys(Module model, List<String> diskKeys) {
        Map<String, Module> modules = model.namedModules();
        for (String k : diskKeys) {
            if (!k.isEmpty() && !modules.containsKey(k)) {
                throw new IllegalArgumentException("device_map key '" + k + "' (disk) names no module of "
                        + model.typeName());
            }
        }
    }

    /** The tensors of {@code model} now (parameters and buffers), by identity: what an adapter load adds is not among them. */
    static IdentityHashMap<Tensor, Boolean> snapshot(Module model) {
        IdentityHashMap<Tensor, Boolean> seen = new IdentityHashMap<>();
        model.namedParameters().values().forEach(t -> seen.put(t, Boolean.TRUE));
        model.namedBuffers().values().forEach(t -> seen.put(t, Boolean.TRUE));
        return seen;
    }

    /**
     * Writes the parameters added since {@code before} (the adapter {@code name}'s) that sit inside a module of
     * {@code diskKeys} into {@link #file} and makes each one a mapped view of it.
     *
     * @return the number of tensors offloaded
     * @throws IllegalArgumentException a tensor to offload that is not on the CPU (the disk modules run on the CPU)
     * @throws IOException the folder or file cannot be written
     */
    static int offload(Module model, String name, List<String> diskKeys, Path folder,
            IdentityHashMap<Tensor, Boolean> before) throws IOException {
        Map<String, Tensor> chosen = new LinkedHashMap<>();
        IdentityHashMap<Tensor, Boolean> taken = new IdentityHashMap<>();
        for (Map.Entry<String, Tensor> e : model.namedParameters().entrySet()) {
            String n = e.getKey();
            Tensor t = e.getValue();
            boolean underDisk = diskKeys.stream().anyMatch(k -> k.isEmpty() || n.startsWith(k + "."));
            if (underDisk && !before.containsKey(t) && taken.put(t, Boolean.TRUE) == null) {
                if (!t.is_cpu()) {
                    throw new IllegalArgumentException("adapter '" + name + "': " + n + " is on "
                            + t.device().str().getString() + " beside the weight it adapts; only modules that run on "
                            + "the CPU can be offloaded to disk");
                }
                chosen.put(n, t);
            }
        }
        if (chosen.isEmpty()) {
            return 0;
        }
        Files.createDirectories(folder);
        Path file = file(folder, name);
        SafetensorsFile.write(file, chosen);
        try (SafetensorsFile mapped = SafetensorsFile.open(file)) {
            for (String n : chosen.keySet()) {
                // the mapped view becomes the parameter (same dtype, shape and requires_grad): no copy
                model.setParameter(n, mapped.get(n), false).close();
            }
        }
        return chosen.size();
    }
}
