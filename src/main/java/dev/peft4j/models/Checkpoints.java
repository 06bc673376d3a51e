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
 * mapped files), else {@code pytorch_model.bin} (through {@link TorchPickle}). The tensors are handles this object owns; the model takes its own
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
        throw new IOException("no weights in " + dir + ": expected model.safetensors, model.safetensors.index.json"
                + " or pytorch_model.bin");
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
