package dev.peft4j.models;

import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.io.ShardedCheckpoint;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import dev.peft4j.io.TorchPickle;
import org.bytedeco.pytorch.Tensor;

/**
 * Finds and opens a model folder's weights: {@code model.safetensors} or a sharded
 * {@code model.safetensors.index.json} (through {@link ShardedCheckpoint}: zero-copy, copy-on-write views of the
 * mapped files), else {@code pytorch_model.bin} or its sharded {@code pytorch_model.bin.index.json} (through
 * {@link TorchPickle}). The tensors are handles this object owns; the model takes its own
 * handles on the ones it keeps, so closing this never invalidates a loaded model.
 */
final class Checkpoints {
    private Checkpoints() {}

    /** An opened checkpoint: its tensors by key. */
    static final class Opened implements AutoCloseable {
        final Map<String, Tensor> tensors = new LinkedHashMap<>();
        final String source;
        private AutoCloseable file;

        Opened(String source) {
            this.source = source;
        }

        @Override
        public void close() {
            for (Tensor t : tensors.values()) {
                t.close();
            }
            tensors.clear();
            if (file != null) {
                try {
                    file.close();
                } catch (Exception e) {
                    throw new IllegalStateException(source + ": " + e.getMessage(), e);
                }
                file = null;
            }
        }
    }

    static Opened open(Path dir) throws IOException {
        if (Files.isRegularFile(dir.resolve(ShardedCheckpoint.SINGLE_FILE))
                || Files.isRegularFile(dir.resolve(ShardedCheckpoint.INDEX_FILE))) {
            ShardedCheckpoint ckpt = ShardedCheckpoint.open(dir);
            Opened o = new Opened(ckpt.path().toString());
            o.file = ckpt;
            try {
                for (Map.Entry<String, Tensor> e : ckpt.tensors().entrySet()) {
                    o.tensors.put(e.getKey(), ScopeUtil.detach(e.getValue()));
                }
            } catch (RuntimeException e) {
                o.close();
                throw e;
            }
            return o;
        }
        Path bin = dir.resolve("pytorch_model.bin");
        if (Files.isRegularFile(bin)) {
            Opened o = new Opened(bin.toString());
            readTorchPickle(bin, o);
            return o;
        }
        Path binIndex = dir.resolve("pytorch_model.bin.index.json");
        if (Files.isRegularFile(binIndex)) {
            return openBinShards(dir, binIndex);
        }
        throw new IOException("no weights in " + dir + ": expected model.safetensors, model.safetensors.index.json,"
                + " pytorch_model.bin or pytorch_model.bin.index.json");
    }

    /** Shards listed by {@code pytorch_model.bin.index.json}; each shard must hold exactly the keys listed for it. */
    private static Opened openBinShards(Path dir, Path index) throws IOException {
        com.fasterxml.jackson.databind.JsonNode map = new com.fasterxml.jackson.databind.ObjectMapper()
                .readTree(index.toFile()).get("weight_map");
        if (map == null || !map.isObject()) {
            throw new IOException(index + ": no 'weight_map' object");
        }
        Map<String, java.util.Set<String>> keysByShard = new LinkedHashMap<>();
        map.fields().forEachRemaining(e -> keysByShard.computeIfAbsent(e.getValue().asText(),
                f -> new java.util.TreeSet<>()).add(e.getKey()));
        Opened o = new Opened(index.toString());
        try {
            for (Map.Entry<String, java.util.Set<String>> shard : keysByShard.entrySet()) {
                Path file = dir.resolve(shard.getKey()).normalize();
                if (!file.startsWith(dir.normalize())) {
                    throw new IOException(index + ": shard '" + shard.getKey() + "' lies outside " + dir);
                }
                Opened part = new Opened(file.toString());
                readTorchPickle(file, part);
                if (!new java.util.TreeSet<>(part.tensors.keySet()).equals(shard.getValue())) {
                    part.close();
                    throw new IOException(index + ": shard '" + shard.getKey() + "' holds " + part.tensors.keySet()
                            + ", the index lists " + shard.getValue());
                }
                o.tensors.putAll(part.tensors);
            }
        } catch (IOException | RuntimeException e) {
            o.close();
            throw e;
        }
        return o;
    }

    /** Opens one safetensors file of {@code dir} (e.g. a test's golden tensors). */
    static Opened open(Path dir, String safetensorsFile) throws IOException {
        SafetensorsFile f = SafetensorsFile.open(dir.resolve(safetensorsFile));
        Opened o = new Opened(f.path().toString());
        o.file = f;
        for (Map.Entry<String, Tensor> e : f.tensors().entrySet()) {
            o.tensors.put(e.getKey(), ScopeUtil.detach(e.getValue()));
        }
        return o;
    }

    /**
     * A {@code torch.save}'d state dict through io's restricted unpickler ({@link TorchPickle}: no code runs); its
     * tensors own their memory and are adopted by the model without a further copy when their dtype matches.
     */
    static void readTorchPickle(Path file, Opened into) throws IOException {
        for (Map.Entry<String, Tensor> e : TorchPickle.loadStateDict(file).entrySet()) {
            into.tensors.put(e.getKey(), ScopeUtil.detach(e.getValue()));
        }
    }
}
