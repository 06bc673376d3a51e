package dev.peft4j.io;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.Objects;
import java.util.TreeMap;
import org.bytedeco.pytorch.Tensor;

/**
 * A checkpoint stored as one {@code model.safetensors} or split into shards listed by
 * {@code model.safetensors.index.json} (transformers' {@code save_pretrained} layout:
 * {@code {"metadata": {...}, "weight_map": {"<tensor>": "<shard file>", ...}}}). Every shard is
 * memory-mapped through {@link SafetensorsFile}; tensors are zero-copy views of the shards.
 *
 * <p>The index must agree with the shards exactly: every tensor it lists must be in the shard it names,
 * every tensor of a shard must be listed for that shard, and shard names must stay inside the
 * index's directory; each disagreement is a {@link SafetensorsException} naming the index, tensor and shard.
 */
public final class ShardedCheckpoint implements AutoCloseable {
    /** transformers' names: the single file, and the index of a sharded checkpoint. */
    public static final String SINGLE_FILE = "model.safetensors";
    /** transformers' name for the index of a sharded checkpoint (its {@code weight_map} names each tensor's shard). */
    public static final String INDEX_FILE = "model.safetensors.index.json";

    private static final long MAX_INDEX_BYTES = 100_000_000L;
    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);

    private final Path path;
    private final List<SafetensorsFile> shards;
    private final Map<String, SafetensorsFile> shardOf;
    private final List<String> names;
    private final Map<String, String> metadata;

    private ShardedCheckpoint(Path path, List<SafetensorsFile> shards, Map<String, String> metadata) {
        this.path = path;
        this.shards = List.copyOf(shards);
        this.metadata = metadata;
        Map<String, SafetensorsFile> index = new HashMap<>();
        List<String> all = new ArrayList<>();
        for (SafetensorsFile shard : shards) {
            for (String name : shard.names()) {
                index.put(name, shard);
                all.add(name);
            }
        }
        this.shardOf = index;
        this.names = Collections.unmodifiableList(all);
    }

    /**
     * Opens a checkpoint: a directory (its {@code model.safetensors}, else its
     * {@code model.safetensors.index.json}), an index file ({@code *.json}), or one safetensors file.
     */
    public static ShardedCheckpoint open(Path indexJsonOrDir) throws IOException {
        Objects.requireNonNull(indexJsonOrDir, "indexJsonOrDir");
        Path target = indexJsonOrDir;
        if (Files.isDirectory(target)) {
            if (Files.isRegularFile(target.resolve(SINGLE_FILE))) {
                target = target.resolve(SINGLE_FILE);
            } else if (Files.isRegularFile(target.resolve(INDEX_FILE))) {
                target = target.resolve(INDEX_FILE);
            } else {
                throw new java.nio.file.NoSuchFileException(target.toString(), null,
                        "holds neither " + SINGLE_FILE + " nor " + INDEX_FILE);
            }
        }
        if (!target.getFileName().toString().endsWith(".json")) {
            SafetensorsFile single = SafetensorsFile.open(target);
            return new ShardedCheckpoint(target, List.of(single), single.metadata());
        }
        return openIndex(target);
    }

    private static ShardedCheckpoint openIndex(Path index) throws IOException {
        long size = Files.size(index);
        if (size > MAX_INDEX_BYTES) {
            throw new SafetensorsException(index, null, "index is " + size + " bytes, over the "
                    + MAX_INDEX_BYTES + "-byte cap");
        }
        JsonNode root;
        try {
            root = JSON.readTree(Files.readAllBytes(index));
        } catch (JsonProcessingException e) {
            throw new SafetensorsException(index, null, "index is not valid JSON: " + e.getOriginalMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw new SafetensorsException(index, null, "index is not a JSON object");
        }
        JsonNode weightMap = root.get("weight_map");
        if (weightMap == null || !weightMap.isObject()) {
            throw new SafetensorsException(index, null, "index has no \"weight_map\" object");
        }
        Map<String, String> metadata = new LinkedHashMap<>();
        JsonNode meta = root.get("metadata");
        if (meta != null && !meta.isNull()) {
            if (!meta.isObject()) {
                throw new SafetensorsException(index, null, "index \"metadata\" is not an object");
            }
            for (Iterator<Map.Entry<String, JsonNode>> it = meta.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                metadata.put(e.getKey(), e.getValue().isTextual() ? e.getValue().textValue() : e.getValue().toString());
            }
        }
        Path dir = index.toAbsolutePath().getParent();
        // shard file -> tensors the index assigns to it; shards in file-name order (model-00001-of-…, …)
        Map<String, List<String>> byShard = new TreeMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = weightMap.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (!e.getValue().isTextual()) {
                throw new SafetensorsException(index, e.getKey(), "weight_map value must be a shard file name, found "
                        + e.getValue());
            }
            String shard = e.getValue().textValue();
            Path resolved;
            try {
                resolved = shard.isEmpty() || Path.of(shard).isAbsolute() ? null : dir.resolve(shard).normalize();
            } catch (java.nio.file.InvalidPathException bad) {
                throw new SafetensorsException(index, e.getKey(), "shard \"" + shard + "\" is not a valid file name");
            }
            if (resolved == null || !resolved.startsWith(dir) || resolved.equals(dir)) {
                throw new SafetensorsException(index, e.getKey(), "shard \"" + shard
                        + "\" is not a file inside the index's directory");
            }
            byShard.computeIfAbsent(shard, k -> new ArrayList<>()).add(e.getKey());
        }
        List<SafetensorsFile> opened = new ArrayList<>();
        try {
            for (Map.Entry<String, List<String>> e : byShard.entrySet()) {
                Path shardPath = dir.resolve(e.getKey()).normalize();
                if (!Files.isRegularFile(shardPath)) {
                    throw new SafetensorsException(index, e.getValue().get(0), "shard \"" + e.getKey()
                            + "\" does not exist (" + e.getValue().size() + " tensors are mapped to it)");
                }
                SafetensorsFile shard = SafetensorsFile.open(shardPath);
                opened.add(shard);
                for (String name : e.getValue()) {
                    if (!shard.contains(name)) {
                        throw new SafetensorsException(index, name, "listed in shard \"" + e.getKey()
                                + "\", which does not hold it");
                    }
                }
                if (shard.names().size() != e.getValue().size()) {
                    List<String> unlisted = new ArrayList<>(shard.names());
                    unlisted.removeAll(e.getValue());
                    throw new SafetensorsException(index, unlisted.get(0), "held by shard \"" + e.getKey()
                            + "\" but not listed for it in the weight_map (" + unlisted.size() + " such tensors)");
                }
            }
            return new ShardedCheckpoint(index, opened, Collections.unmodifiableMap(metadata));
        } catch (IOException | RuntimeException e) {
            for (SafetensorsFile s : opened) {
                s.close();
            }
            throw e;
        }
    }

    /** The index file, or the single safetensors file. */
    public Path path() {
        return path;
    }

    /** The shards, in file-name order (one for a single-file checkpoint). */
    public List<SafetensorsFile> shards() {
        return shards;
    }

    /** Tensor names: shard by shard in file-name order, each shard in its file order. */
    public List<String> names() {
        return names;
    }

    /** The index's {@code metadata} (values as text, e.g. {@code total_size}); a single file's {@code __metadata__}. */
    public Map<String, String> metadata() {
        return metadata;
    }

    /** Whether the checkpoint holds {@code name}. */
    public boolean contains(String name) {
        return shardOf.containsKey(name);
    }

    /** Header entry of {@code name} within its shard. */
    public TensorInfo info(String name) {
        return shard(name).info(name);
    }

    /**
     * Tensor {@code name}, a zero-copy view of its shard (see {@link SafetensorsFile#get}).
     *
     * @throws IllegalArgumentException naming the checkpoint if it holds no such tensor
     */
    public Tensor get(String name) {
        return shard(name).get(name);
    }

    /** Every tensor, in {@link #names()} order. */
    public Map<String, Tensor> tensors() {
        Map<String, Tensor> all = new LinkedHashMap<>();
        for (String name : names) {
            all.put(name, get(name));
        }
        return all;
    }

    private SafetensorsFile shard(String name) {
        SafetensorsFile shard = shardOf.get(name);
        if (shard == null) {
            throw new IllegalArgumentException(path + ": no tensor named \"" + name + "\" (the checkpoint holds "
                    + names.size() + " tensors)");
        }
        return shard;
    }

    /**
     * Saves {@code tensors} in {@code dir} as transformers' {@code save_pretrained} does: one
     * {@code model.safetensors} if they fit in {@code maxShardBytes}, else shards
     * {@code model-0000k-of-0000n.safetensors} filled greedily in the map's order (huggingface_hub's
     * {@code split_torch_state_dict_into_shards}: a tensor that does not fit in the current shard starts
     * the next; one larger than the limit gets a shard of its own) and {@code model.safetensors.index.json}
     * ({@code {"metadata": {"total_size": …}, "weight_map": {…}}}, sorted keys, two-space indent).
     * Each file is written atomically, the index last; shard files of an earlier save that the new one does
     * not use are deleted. Every shard carries {@code __metadata__ {"format": "pt"}}.
     */
    public static void write(Path dir, Map<String, Tensor> tensors, long maxShardBytes) throws IOException {
        Objects.requireNonNull(dir, "dir");
        Objects.requireNonNull(tensors, "tensors");
        if (maxShardBytes <= 0) {
            throw new IllegalArgumentException("maxShardBytes must be positive, got " + maxShardBytes);
        }
        Files.createDirectories(dir);
        List<Map<String, Tensor>> shards = new ArrayList<>();
        Map<String, Tensor> current = new LinkedHashMap<>();
        long currentBytes = 0;
        long totalBytes = 0;
        for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
            Tensor t = e.getValue();
            if (t == null || t.isNull() || !t.defined()) {
                throw new IllegalArgumentException(dir + ": tensor \"" + e.getKey() + "\": null or undefined");
            }
            long bytes = t.numel() * t.element_size();
            totalBytes += bytes;
            if (bytes > maxShardBytes) {
                shards.add(Map.of(e.getKey(), t));
                continue;
            }
            if (currentBytes + bytes > maxShardBytes) {
                shards.add(current);
                current = new LinkedHashMap<>();
                currentBytes = 0;
            }
            current.put(e.getKey(), t);
            currentBytes += bytes;
        }
        if (!current.isEmpty() || shards.isEmpty()) {
            shards.add(current);
        }
        Set<String> written = new HashSet<>();
        if (shards.size() == 1) {
            SafetensorsFile.write(dir.resolve(SINGLE_FILE), shards.get(0));
        } else {
            Map<String, String> weightMap = new TreeMap<>(ShardedCheckpoint::compareCodePoints);
            for (int i = 0; i < shards.size(); i++) {
                String name = String.format(Locale.ROOT, "model-%05d-of-%05d.safetensors", i + 1, shards.size());
                SafetensorsFile.write(dir.resolve(name), shards.get(i));
                written.add(name);
                for (String tensor : shards.get(i).keySet()) {
                    weightMap.put(tensor, name);
                }
            }
            writeIndex(dir.resolve(INDEX_FILE), totalBytes, weightMap);
        }
        if (shards.size() == 1) {
            Files.deleteIfExists(dir.resolve(INDEX_FILE)); // would point at the stale shards deleted below
        }
        try (java.util.stream.Stream<Path> files = Files.list(dir)) {
            for (Path f : (Iterable<Path>) files::iterator) {
                String name = f.getFileName().toString();
                if (STALE_SHARD.matcher(name).matches() && !written.contains(name)) {
                    Files.deleteIfExists(f);
                }
            }
        }
    }

    private static final java.util.regex.Pattern STALE_SHARD =
            java.util.regex.Pattern.compile("model-\\d{5}-of-\\d{5}\\.safetensors");

    /** Python's string order (code points), which {@code sort_keys} uses; Java's is by UTF-16 units. */
    private static int compareCodePoints(String a, String b) {
        return java.util.Arrays.compare(a.codePoints().toArray(), b.codePoints().toArray());
    }

    /** The index as Python's {@code json.dumps(index, indent=2, sort_keys=True) + "\n"} writes it. */
    static String indexJson(long totalBytes, Map<String, String> sortedWeightMap) {
        StringBuilder out = new StringBuilder();
        out.append("{\n  \"metadata\": {\n    \"total_size\": ").append(totalBytes).append("\n  },\n  \"weight_map\": {");
        boolean first = true;
        for (Map.Entry<String, String> e : sortedWeightMap.entrySet()) {
            out.append(first ? "\n    " : ",\n    ");
            appendPythonAsciiString(out, e.getKey());
            out.append(": ");
            appendPythonAsciiString(out, e.getValue());
            first = false;
        }
        out.append(first ? "}\n}\n" : "\n  }\n}\n");
        return out.toString();
    }

    /** A JSON string as Python's json module writes it (ensure_ascii): non-ASCII as {@code \\uXXXX}. */
    private static void appendPythonAsciiString(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                case '\b' -> out.append("\\b");
                case '\f' -> out.append("\\f");
                default -> {
                    if (c < 0x20 || c > 0x7e) {
                        out.append(String.format(Locale.ROOT, "\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        out.append('"');
    }

    private static void writeIndex(Path index, long totalBytes, Map<String, String> weightMap) throws IOException {
        Path tmp = index.resolveSibling("." + index.getFileName() + "." + System.nanoTime() + ".tmp");
        try {
            try (java.nio.channels.FileChannel out = java.nio.channels.FileChannel.open(tmp,
                    java.nio.file.StandardOpenOption.WRITE, java.nio.file.StandardOpenOption.CREATE_NEW)) {
                java.nio.ByteBuffer bytes = java.nio.ByteBuffer.wrap(
                        indexJson(totalBytes, weightMap).getBytes(java.nio.charset.StandardCharsets.UTF_8));
                while (bytes.hasRemaining()) {
                    out.write(bytes);
                }
                out.force(true);
            }
            Files.move(tmp, index, java.nio.file.StandardCopyOption.ATOMIC_MOVE,
                    java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    /** Closes every shard; tensors already handed out stay valid (see {@link SafetensorsFile#close()}). */
    @Override
    public void close() {
        for (SafetensorsFile s : shards) {
            s.close();
        }
    }
}
