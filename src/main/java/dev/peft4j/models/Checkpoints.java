package dev.peft4j.models;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.ByteVector;
import org.bytedeco.pytorch.GenericDict;
import org.bytedeco.pytorch.GenericDictEntryRef;
import org.bytedeco.pytorch.GenericDictIterator;
import org.bytedeco.pytorch.IValue;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Finds and opens a model folder's weights: {@code model.safetensors}, a sharded
 * {@code model.safetensors.index.json}, or {@code pytorch_model.bin}. Safetensors files are memory-mapped and
 * their tensors are zero-copy read-only views, valid while the {@link Opened} is open: the model copies each
 * once, into its own dtype, when loading.
 *
 * <p>A minimal reader kept local to the models package until the io package's {@code SafetensorsFile} lands; it
 * checks bounds and dtypes but is not the hardened reader.
 */
final class Checkpoints {
    private static final ObjectMapper JSON = new ObjectMapper();

    private Checkpoints() {}

    /** An opened checkpoint: its tensors by key, and what keeps their memory alive. */
    static final class Opened implements AutoCloseable {
        final Map<String, Tensor> tensors = new LinkedHashMap<>();
        final String source;
        private final List<Object> keepAlive = new ArrayList<>();

        Opened(String source) {
            this.source = source;
        }

        @Override
        public void close() {
            for (Tensor t : tensors.values()) {
                t.close();
            }
            tensors.clear();
            keepAlive.clear(); // the mappings are unmapped when collected
        }
    }

    static Opened open(Path dir) throws IOException {
        Path single = dir.resolve("model.safetensors");
        Path index = dir.resolve("model.safetensors.index.json");
        Path bin = dir.resolve("pytorch_model.bin");
        if (Files.isRegularFile(single)) {
            Opened o = new Opened(single.toString());
            readSafetensors(single, o);
            return o;
        }
        if (Files.isRegularFile(index)) {
            Opened o = new Opened(index.toString());
            JsonNode map = JSON.readTree(index.toFile()).get("weight_map");
            if (map == null || !map.isObject()) {
                throw new IOException(index + ": no 'weight_map' object");
            }
            LinkedHashSet<String> files = new LinkedHashSet<>();
            map.fields().forEachRemaining(e -> files.add(e.getValue().asText()));
            try {
                for (String f : files) {
                    Path shard = dir.resolve(f).normalize();
                    if (!shard.startsWith(dir.normalize())) {
                        throw new IOException(index + ": shard '" + f + "' lies outside " + dir);
                    }
                    readSafetensors(shard, o);
                }
            } catch (IOException | RuntimeException e) {
                o.close();
                throw e;
            }
            return o;
        }
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
        Path f = dir.resolve(safetensorsFile);
        Opened o = new Opened(f.toString());
        readSafetensors(f, o);
        return o;
    }

    static void readSafetensors(Path file, Opened into) throws IOException {
        MappedByteBuffer buf;
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            if (ch.size() < 8) {
                throw new IOException(file + ": too short for a safetensors file (" + ch.size() + " bytes)");
            }
            if (ch.size() > Integer.MAX_VALUE) {
                throw new IOException(file + ": files over 2 GiB need the io package's reader");
            }
            buf = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size());
        }
        buf.order(ByteOrder.LITTLE_ENDIAN);
        long headerLen = buf.getLong(0);
        if (headerLen <= 0 || headerLen > buf.capacity() - 8) {
            throw new IOException(file + ": header length " + headerLen + " does not fit in " + buf.capacity() + " bytes");
        }
        byte[] hb = new byte[(int) headerLen];
        buf.get(8, hb);
        JsonNode header = JSON.readTree(new String(hb, StandardCharsets.UTF_8));
        long dataStart = 8 + headerLen;
        BytePointer base = new BytePointer(buf);
        into.keepAlive.add(buf);
        into.keepAlive.add(base);
        for (Iterator<Map.Entry<String, JsonNode>> it = header.fields(); it.hasNext();) {
            Map.Entry<String, JsonNode> e = it.next();
            String key = e.getKey();
            if (key.equals("__metadata__")) {
                continue;
            }
            JsonNode info = e.getValue();
            ScalarType dtype = safetensorsDtype(file, key, info.path("dtype").asText());
            JsonNode shapeNode = info.path("shape");
            long[] shape = new long[shapeNode.size()];
            long numel = 1;
            for (int i = 0; i < shape.length; i++) {
                shape[i] = shapeNode.get(i).asLong();
                numel *= shape[i];
            }
            long begin = info.path("data_offsets").path(0).asLong(-1);
            long end = info.path("data_offsets").path(1).asLong(-1);
            long elem = dtype == ScalarType.Float || dtype == ScalarType.Int ? 4 : dtype == ScalarType.Long
                    || dtype == ScalarType.Double ? 8 : dtype == ScalarType.Byte || dtype == ScalarType.Bool ? 1 : 2;
            if (begin < 0 || end < begin || dataStart + end > buf.capacity() || end - begin != numel * elem) {
                throw new IOException(file + ": tensor '" + key + "' has data_offsets [" + begin + ", " + end
                        + "] inconsistent with shape " + java.util.Arrays.toString(shape) + " of " + dtype
                        + " or the file size " + buf.capacity());
            }
            if (into.tensors.containsKey(key)) {
                throw new IOException(file + ": tensor '" + key + "' also appears in another shard");
            }
            BytePointer at = new BytePointer(base).position(dataStart + begin);
            try (TensorOptions o = new TensorOptions(dtype)) {
                Tensor t = numel == 0 ? torch.empty(shape, o, new org.bytedeco.pytorch.MemoryFormatOptional())
                        : torch.from_blob(at, shape, o);
                ScopeUtil.detach(t);
                into.tensors.put(key, t);
            }
            into.keepAlive.add(at);
        }
    }

    private static ScalarType safetensorsDtype(Path file, String key, String name) throws IOException {
        switch (name) {
            case "F32": return ScalarType.Float;
            case "F16": return ScalarType.Half;
            case "BF16": return ScalarType.BFloat16;
            case "F64": return ScalarType.Double;
            case "I64": return ScalarType.Long;
            case "I32": return ScalarType.Int;
            case "U8": return ScalarType.Byte;
            case "BOOL": return ScalarType.Bool;
            default: throw new IOException(file + ": tensor '" + key + "' has unsupported dtype '" + name + "'");
        }
    }

    /** {@code torch.save}'d zip state dict, through libtorch's unpickler (reads the file into memory). */
    static void readTorchPickle(Path file, Opened into) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        IValue iv;
        try (ByteVector bv = new ByteVector(bytes)) {
            iv = torch.pickle_load(bv);
        } catch (RuntimeException e) {
            throw new IOException(file + ": not a readable torch.save state dict: " + e.getMessage(), e);
        }
        if (!iv.isGenericDict()) {
            throw new IOException(file + ": expected a dict of tensors, got " + iv.tagKind().getString());
        }
        GenericDict d = iv.toGenericDict();
        for (GenericDictIterator it = d.begin(); !it.equals(d.end()); it = it.increment()) {
            GenericDictEntryRef e = it.access();
            String k = e.key().toStringRef().getString();
            if (!e.value().isTensor()) {
                throw new IOException(file + ": entry '" + k + "' is not a tensor");
            }
            into.tensors.put(k, ScopeUtil.detach(e.value().toTensor()));
        }
    }

    /** The keys sorted, for messages. */
    static String keys(Map<String, ?> m) {
        return new TreeSet<>(m.keySet()).toString();
    }
}
