package dev.peft4j.gguf;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The tests' view of a GGUF file: {@link GgufFile} (which checks what the spec and llama.cpp's reader require) as
 * plain maps, plus what the spec leaves open but {@link GgufWriter} promises, checked: the padding after each tensor
 * is zero and the file ends with the last tensor's padding (the header's padding is pinned byte for byte by
 * {@code GgufWriterTest}). Throws {@link IllegalStateException} on any breach.
 */
final class GgufReader {
    /** A tensor info and its bytes. */
    record TensorRecord(String name, long[] dims, int type, long offset, ByteBuffer data) {
        float[] floats() {
            if (type != 0) {
                throw new IllegalStateException(name + " is ggml type " + type + ", not F32");
            }
            float[] out = new float[data.remaining() / 4];
            data.duplicate().order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out);
            return out;
        }

        short[] halves() {
            if (type != 1 && type != 30) {
                throw new IllegalStateException(name + " is ggml type " + type + ", not F16 / BF16");
            }
            short[] out = new short[data.remaining() / 2];
            data.duplicate().order(ByteOrder.LITTLE_ENDIAN).asShortBuffer().get(out);
            return out;
        }
    }

    final int version;
    /** Key to value: Long for integer types, Float / Double, Boolean, String, List for arrays. */
    final Map<String, Object> kv = new LinkedHashMap<>();
    /** Key to the GGUF value type id (for arrays: 9). */
    final Map<String, Integer> kvType = new LinkedHashMap<>();
    /** Array key to its element type id. */
    final Map<String, Integer> arrayType = new LinkedHashMap<>();
    final Map<String, TensorRecord> tensors = new LinkedHashMap<>();
    final long dataStart;
    final long alignment;

    GgufReader(Path file) throws IOException {
        byte[] all = Files.readAllBytes(file);
        ByteBuffer b = ByteBuffer.wrap(all).order(ByteOrder.LITTLE_ENDIAN);
        try (GgufFile g = GgufFile.open(file)) {
            version = g.version();
            alignment = g.alignment();
            dataStart = g.dataOffset();
            for (Map.Entry<String, Object> e : g.metadata().entrySet()) {
                kv.put(e.getKey(), e.getValue());
                kvType.put(e.getKey(), g.valueType(e.getKey()));
                if (g.arrayElementType(e.getKey()) >= 0) {
                    arrayType.put(e.getKey(), g.arrayElementType(e.getKey()));
                }
            }
            long end = dataStart;
            for (GgufFile.TensorInfo t : g.tensors().values()) {
                int from = (int) (dataStart + t.offset());
                for (long p = end; p < from; p++) {
                    check(all[(int) p] == 0, t.name() + ": non-zero padding before its data at " + p);
                }
                ByteBuffer data = b.duplicate().position(from).limit(from + (int) t.byteSize()).slice()
                        .order(ByteOrder.LITTLE_ENDIAN);
                tensors.put(t.name(), new TensorRecord(t.name(), t.dims(), t.type(), t.offset(), data));
                end = from + t.byteSize();
            }
            long padded = dataStart + (end - dataStart + alignment - 1) / alignment * alignment;
            for (long p = end; p < all.length; p++) {
                check(all[(int) p] == 0, "non-zero padding at " + p);
            }
            check(all.length == padded || g.tensors().isEmpty() && all.length == dataStart,
                    "file is " + all.length + " bytes, expected " + padded);
        }
    }

    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException("malformed GGUF: " + what);
        }
    }
}
