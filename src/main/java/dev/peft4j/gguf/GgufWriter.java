package dev.peft4j.gguf;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Writes a GGUF file (version 3, little-endian), as ggml's {@code gguf.h} and gguf-py's {@code GGUFWriter} lay it out:
 * the magic {@code GGUF}, the version, the tensor and key-value counts, the key-values, the tensor infos (name, dims
 * innermost first, ggml type, offset into the data section), padding to {@code general.alignment} (32), then each
 * tensor's bytes, each padded to the alignment.
 *
 * <p>Tensor data is pulled from a {@link TensorSource} while the file is written, one tensor at a time, so a model
 * larger than memory streams through. The file is written beside its destination and moved into place at the end:
 * a failed export leaves no partial file under the destination's name. Not thread-safe: one thread builds and writes.
 */
final class GgufWriter {
    static final int VERSION = 3;
    static final int ALIGNMENT = 32;
    private static final java.security.SecureRandom RANDOM = new java.security.SecureRandom();

    /** GGUF metadata value types ({@code gguf_type}). */
    enum ValueType {
        UINT8(0), INT8(1), UINT16(2), INT16(3), UINT32(4), INT32(5), FLOAT32(6), BOOL(7), STRING(8), ARRAY(9),
        UINT64(10), INT64(11), FLOAT64(12);

        final int id;

        ValueType(int id) {
            this.id = id;
        }
    }

    /**
     * The ggml tensor types this writer emits ({@code ggml_type}), with their block size (elements along the
     * innermost dimension per block) and the bytes of one block.
     */
    enum TensorType {
        F32(0, 1, 4), F16(1, 1, 2), BF16(30, 1, 2), Q4_0(2, 32, 18), Q8_0(8, 32, 34);

        final int id;
        final int blockSize;
        final int blockBytes;

        TensorType(int id, int blockSize, int blockBytes) {
            this.id = id;
            this.blockSize = blockSize;
            this.blockBytes = blockBytes;
        }
    }

    /** Supplies one tensor's bytes, little-endian, exactly {@code byteSize} of them, when the writer reaches it. */
    interface TensorSource {
        /** Writes the tensor's bytes to {@code out} (the caller pads after them). */
        void writeTo(FileChannel out) throws IOException;
    }

    record Value(ValueType type, ValueType elementType, Object value) {}

    record TensorEntry(String name, long[] dims, TensorType type, long byteSize, TensorSource source) {}

    private final Map<String, Value> kv = new LinkedHashMap<>();
    private final List<TensorEntry> tensors = new ArrayList<>();
    private final Map<String, TensorEntry> tensorsByName = new LinkedHashMap<>();

    void putString(String key, String value) {
        put(key, new Value(ValueType.STRING, null, value));
    }

    void putUint32(String key, long value) {
        if (value < 0 || value > 0xFFFF_FFFFL) {
            throw new IllegalArgumentException(key + ": " + value + " does not fit a uint32");
        }
        put(key, new Value(ValueType.UINT32, null, value));
    }

    void putFloat32(String key, float value) {
        put(key, new Value(ValueType.FLOAT32, null, value));
    }

    void putBool(String key, boolean value) {
        put(key, new Value(ValueType.BOOL, null, value));
    }

    void putStringArray(String key, List<String> values) {
        put(key, new Value(ValueType.ARRAY, ValueType.STRING, List.copyOf(values)));
    }

    void putInt32Array(String key, int[] values) {
        put(key, new Value(ValueType.ARRAY, ValueType.INT32, values.clone()));
    }

    void putFloat32Array(String key, float[] values) {
        put(key, new Value(ValueType.ARRAY, ValueType.FLOAT32, values.clone()));
    }

    private void put(String key, Value v) {
        if (key.isEmpty()) {
            throw new IllegalArgumentException("a GGUF key must not be empty");
        }
        if (kv.putIfAbsent(key, v) != null) {
            throw new IllegalArgumentException("GGUF key " + key + " is set twice");
        }
    }

    /**
     * Adds a tensor. {@code shape} is in PyTorch's order (outermost first, e.g. {@code [out, in]} for a Linear
     * weight); GGUF stores it reversed ({@code ne[0]} innermost), as gguf-py does.
     */
    void addTensor(String name, long[] shape, TensorType type, TensorSource source) {
        if (name.getBytes(StandardCharsets.UTF_8).length >= 64) {
            throw new IllegalArgumentException("GGUF tensor name " + name + " is longer than ggml's 63 bytes");
        }
        if (shape.length < 1 || shape.length > 4) {
            throw new IllegalArgumentException("GGUF tensor " + name + ": " + shape.length
                    + " dimensions; ggml takes 1 to 4");
        }
        long[] dims = new long[shape.length];
        long n = 1;
        for (int i = 0; i < shape.length; i++) {
            if (shape[i] < 1) {
                throw new IllegalArgumentException("GGUF tensor " + name + ": dimension " + i + " is " + shape[i]);
            }
            dims[shape.length - 1 - i] = shape[i];
            n = Math.multiplyExact(n, shape[i]);
        }
        if (dims[0] % type.blockSize != 0) {
            throw new IllegalArgumentException("GGUF tensor " + name + ": innermost dimension " + dims[0]
                    + " is not a multiple of " + type + "'s block of " + type.blockSize);
        }
        TensorEntry e = new TensorEntry(name, dims, type, Math.multiplyExact(n / type.blockSize, type.blockBytes),
                source);
        if (tensorsByName.putIfAbsent(name, e) != null) {
            throw new IllegalArgumentException("GGUF tensor " + name + " is added twice");
        }
        tensors.add(e);
    }

    int tensorCount() {
        return tensors.size();
    }

    static long align(long offset) {
        return (offset + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    }

    /** Writes the file to {@code file}, through a temporary file beside it that is moved into place at the end. */
    void write(Path file) throws IOException {
        Path dir = file.toAbsolutePath().getParent();
        Path tmp = null;
        FileChannel opened = null;
        while (opened == null) {
            // CREATE_NEW with default attributes: the umask applies, as for any new file (createTempFile's are 0600)
            tmp = dir.resolve("." + file.getFileName() + "." + Long.toUnsignedString(RANDOM.nextLong(), 36) + ".tmp");
            try {
                opened = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.CREATE_NEW);
            } catch (java.nio.file.FileAlreadyExistsException e) {
                // another writer's temporary name: draw again
            }
        }
        boolean done = false;
        try {
            try (FileChannel ch = opened) {
                ch.write(header());
                long dataStart = ch.position();
                if (dataStart % ALIGNMENT != 0) {
                    throw new IllegalStateException("header of " + dataStart + " bytes is not padded");
                }
                for (TensorEntry t : tensors) {
                    long begin = ch.position();
                    t.source().writeTo(ch);
                    long written = ch.position() - begin;
                    if (written != t.byteSize()) {
                        throw new IllegalStateException(file + ": tensor " + t.name() + " wrote " + written
                                + " bytes, expected " + t.byteSize());
                    }
                    long pad = align(written) - written;
                    if (pad > 0) {
                        ch.write(ByteBuffer.allocate((int) pad));
                    }
                }
                ch.force(true);
            }
            try {
                Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING);
            }
            done = true;
        } finally {
            if (!done) {
                Files.deleteIfExists(tmp);
            }
        }
    }

    /** Everything before the data section: magic, counts, key-values, tensor infos, padding. */
    ByteBuffer header() {
        Buf b = new Buf();
        b.bytes(new byte[] {'G', 'G', 'U', 'F'});
        b.u32(VERSION);
        b.u64(tensors.size());
        b.u64(kv.size());
        for (Map.Entry<String, Value> e : kv.entrySet()) {
            b.string(e.getKey());
            Value v = e.getValue();
            b.u32(v.type().id);
            if (v.type() == ValueType.ARRAY) {
                b.u32(v.elementType().id);
                switch (v.elementType()) {
                    case STRING -> {
                        List<?> list = (List<?>) v.value();
                        b.u64(list.size());
                        for (Object s : list) {
                            b.string((String) s);
                        }
                    }
                    case INT32 -> {
                        int[] a = (int[]) v.value();
                        b.u64(a.length);
                        for (int x : a) {
                            b.u32(x);
                        }
                    }
                    case FLOAT32 -> {
                        float[] a = (float[]) v.value();
                        b.u64(a.length);
                        for (float x : a) {
                            b.u32(Float.floatToRawIntBits(x));
                        }
                    }
                    default -> throw new IllegalStateException("array of " + v.elementType());
                }
            } else {
                scalar(b, v.type(), v.value());
            }
        }
        long offset = 0;
        for (TensorEntry t : tensors) {
            b.string(t.name());
            b.u32(t.dims().length);
            for (long d : t.dims()) {
                b.u64(d);
            }
            b.u32(t.type().id);
            b.u64(offset);
            offset = align(offset + t.byteSize());
        }
        b.pad();
        return b.done();
    }

    private static void scalar(Buf b, ValueType type, Object value) {
        switch (type) {
            case STRING -> b.string((String) value);
            case UINT32 -> b.u32((int) (long) (Long) value);
            case FLOAT32 -> b.u32(Float.floatToRawIntBits((Float) value));
            case BOOL -> b.bytes(new byte[] {(byte) ((Boolean) value ? 1 : 0)});
            default -> throw new IllegalStateException("scalar of " + type);
        }
    }

    /** A growing little-endian byte buffer. */
    private static final class Buf {
        private ByteBuffer buf = ByteBuffer.allocate(1 << 16).order(ByteOrder.LITTLE_ENDIAN);

        private void room(int n) {
            if (buf.remaining() < n) {
                ByteBuffer bigger = ByteBuffer.allocate(Math.max(buf.capacity() * 2, buf.position() + n))
                        .order(ByteOrder.LITTLE_ENDIAN);
                buf.flip();
                bigger.put(buf);
                buf = bigger;
            }
        }

        void bytes(byte[] b) {
            room(b.length);
            buf.put(b);
        }

        void u32(int v) {
            room(4);
            buf.putInt(v);
        }

        void u64(long v) {
            room(8);
            buf.putLong(v);
        }

        void string(String s) {
            byte[] utf8 = s.getBytes(StandardCharsets.UTF_8);
            u64(utf8.length);
            bytes(utf8);
        }

        void pad() {
            int pad = (int) (align(buf.position()) - buf.position());
            bytes(new byte[pad]);
        }

        ByteBuffer done() {
            buf.flip();
            return buf;
        }
    }
}
