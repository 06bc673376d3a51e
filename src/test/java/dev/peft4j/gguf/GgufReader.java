package dev.peft4j.gguf;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A GGUF reader written from the format's specification (ggml's docs/gguf.md), independent of {@link GgufWriter}:
 * it checks what the spec requires of a file (magic, version 3, string and array encodings, the value type ids,
 * tensor offsets aligned to {@code general.alignment} and in bounds, the data section starting at the first aligned
 * offset after the tensor infos, zero padding) and throws {@link IllegalStateException} on any breach.
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

    private final ByteBuffer b;

    GgufReader(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            b = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size()).order(ByteOrder.LITTLE_ENDIAN);
        }
        byte[] magic = new byte[4];
        b.get(magic);
        check(new String(magic, StandardCharsets.US_ASCII).equals("GGUF"), "magic is not GGUF");
        version = b.getInt();
        check(version == 3, "version " + version);
        long nTensors = b.getLong();
        long nKv = b.getLong();
        for (long i = 0; i < nKv; i++) {
            String key = string();
            int type = b.getInt();
            kvType.put(key, type);
            check(!kv.containsKey(key), "duplicate key " + key);
            if (type == 9) {
                int et = b.getInt();
                long n = b.getLong();
                arrayType.put(key, et);
                List<Object> list = new ArrayList<>();
                for (long j = 0; j < n; j++) {
                    list.add(value(et));
                }
                kv.put(key, list);
            } else {
                kv.put(key, value(type));
            }
        }
        Object al = kv.getOrDefault("general.alignment", 32L);
        alignment = (Long) al;
        List<long[]> infos = new ArrayList<>();
        List<String> names = new ArrayList<>();
        List<Integer> types = new ArrayList<>();
        for (long i = 0; i < nTensors; i++) {
            String name = string();
            int nDims = b.getInt();
            check(nDims >= 1 && nDims <= 4, name + ": n_dims " + nDims);
            long[] dims = new long[nDims];
            for (int d = 0; d < nDims; d++) {
                dims[d] = b.getLong();
            }
            int type = b.getInt();
            long offset = b.getLong();
            check(offset % alignment == 0, name + ": offset " + offset + " not aligned to " + alignment);
            names.add(name);
            types.add(type);
            long[] rec = new long[nDims + 1];
            System.arraycopy(dims, 0, rec, 0, nDims);
            rec[nDims] = offset;
            infos.add(rec);
        }
        long afterInfos = b.position();
        dataStart = (afterInfos + alignment - 1) / alignment * alignment;
        for (long p = afterInfos; p < dataStart; p++) {
            check(b.get((int) p) == 0, "non-zero padding before the data section at " + p);
        }
        long expectedOffset = 0;
        for (int i = 0; i < names.size(); i++) {
            long[] rec = infos.get(i);
            long[] dims = java.util.Arrays.copyOf(rec, rec.length - 1);
            long offset = rec[rec.length - 1];
            long n = 1;
            for (long d : dims) {
                n *= d;
            }
            int type = types.get(i);
            long bytes = switch (type) {
                case 0 -> 4 * n;
                case 1, 30 -> 2 * n;
                default -> throw new IllegalStateException(names.get(i) + ": unexpected ggml type " + type);
            };
            // gguf-py and this writer lay tensors out in info order, each at the next aligned offset
            check(offset == expectedOffset, names.get(i) + ": offset " + offset + ", expected " + expectedOffset);
            long end = dataStart + offset + bytes;
            check(end <= b.capacity(), names.get(i) + ": data beyond the end of the file");
            long padEnd = Math.min(b.capacity(), (offset + bytes + alignment - 1) / alignment * alignment + dataStart);
            for (long p = end; p < padEnd; p++) {
                check(b.get((int) p) == 0, names.get(i) + ": non-zero padding at " + p);
            }
            ByteBuffer data = b.duplicate().position((int) (dataStart + offset)).limit((int) end).slice()
                    .order(ByteOrder.LITTLE_ENDIAN);
            check(!tensors.containsKey(names.get(i)), "duplicate tensor " + names.get(i));
            tensors.put(names.get(i), new TensorRecord(names.get(i), dims, type, offset, data));
            expectedOffset = (offset + bytes + alignment - 1) / alignment * alignment;
        }
        check(b.capacity() == dataStart + expectedOffset || names.isEmpty() && b.capacity() == dataStart,
                "file is " + b.capacity() + " bytes, expected " + (dataStart + expectedOffset));
    }

    private Object value(int type) {
        return switch (type) {
            case 0 -> (long) Byte.toUnsignedInt(b.get());
            case 1 -> (long) b.get();
            case 2 -> (long) Short.toUnsignedInt(b.getShort());
            case 3 -> (long) b.getShort();
            case 4 -> Integer.toUnsignedLong(b.getInt());
            case 5 -> (long) b.getInt();
            case 6 -> b.getFloat();
            case 7 -> {
                byte v = b.get();
                check(v == 0 || v == 1, "bool byte " + v);
                yield v == 1;
            }
            case 8 -> string();
            case 10, 11 -> b.getLong();
            case 12 -> b.getDouble();
            default -> throw new IllegalStateException("unknown GGUF value type " + type);
        };
    }

    private String string() {
        long n = b.getLong();
        check(n >= 0 && n <= b.remaining(), "string length " + n);
        byte[] s = new byte[(int) n];
        b.get(s);
        return new String(s, StandardCharsets.UTF_8);
    }

    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException("malformed GGUF: " + what);
        }
    }
}
