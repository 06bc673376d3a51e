package dev.peft4j.gguf;

import java.io.IOException;
import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A GGUF file (versions 2 and 3, little-endian, as ggml's {@code docs/gguf.md} and {@code gguf.cpp} define it), read:
 * the header, every metadata key-value, the tensor infos and, through a private memory mapping of the file, each
 * tensor's bytes without a copy.
 *
 * <p>Checked as llama.cpp's own reader checks it, each breach a {@link GgufFormatException} naming the file and the
 * key or tensor at fault: the magic {@code GGUF}, the version, truncation anywhere in the header, value type ids
 * (arrays of arrays are refused, as ggml refuses them), UTF-8 strings, duplicate keys and tensor names,
 * {@code general.alignment} (a uint32 power of two, default 32), 1 to 4 dimensions, known ggml tensor types with an
 * innermost dimension that is a multiple of their block, tensor offsets (each the aligned end of the one before, as
 * {@code gguf.cpp} requires) and data that ends within the file.
 *
 * <p>Metadata values are {@link Long} for every integer type (a {@code uint64} above {@link Long#MAX_VALUE} keeps
 * its bits), {@link Float}, {@link Double}, {@link Boolean}, {@link String}, and an unmodifiable {@link List} of
 * those for arrays. Immutable once opened; {@link #get} and {@link #bytes} may be called from several threads. The
 * tensors handed out hold the mapping until they are closed, {@link #close()} or not.
 */
public final class GgufFile implements AutoCloseable {
    /** The metadata value type ids of {@code gguf_type}. */
    private static final int UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
            BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12;
    private static final int DEFAULT_ALIGNMENT = 32;
    private static final int MAX_DIMS = 4;

    /**
     * A tensor's entry in the header.
     *
     * @param name its name
     * @param dims its dimensions as GGUF stores them, innermost first ({@code ne[0]} is a row's length)
     * @param type its ggml type id ({@code ggml_type}: 0 F32, 1 F16, 2 Q4_0, 8 Q8_0, 30 BF16, …)
     * @param offset where its bytes start, relative to {@link #dataOffset()}
     * @param byteSize how many bytes it holds
     */
    public record TensorInfo(String name, long[] dims, int type, long offset, long byteSize) {
        /** The dimensions in PyTorch's order, outermost first: a {@code [out, in]} weight has {@code dims [in, out]}. */
        public long[] shape() {
            long[] s = new long[dims.length];
            for (int i = 0; i < dims.length; i++) {
                s[i] = dims[dims.length - 1 - i];
            }
            return s;
        }

        /** The ggml name of {@link #type()}: {@code F32}, {@code Q8_0}, {@code Q4_K}, … */
        public String typeName() {
            return GgmlType.nameOf(type);
        }

        /** The number of elements. */
        public long elements() {
            long n = 1;
            for (long d : dims) {
                n *= d;
            }
            return n;
        }

        @Override
        public String toString() {
            return name + " " + typeName() + " " + Arrays.toString(shape());
        }
    }

    private final Path path;
    private final int version;
    private final long alignment;
    private final long dataOffset;
    private final Map<String, Object> metadata;
    private final Map<String, Integer> valueTypes;
    private final Map<String, Integer> elementTypes;
    private final Map<String, TensorInfo> tensors;
    private Tensor mapping;

    private GgufFile(Path path, int version, long alignment, long dataOffset, Map<String, Object> metadata,
            Map<String, Integer> valueTypes, Map<String, Integer> elementTypes, Map<String, TensorInfo> tensors,
            Tensor mapping) {
        this.path = path;
        this.version = version;
        this.alignment = alignment;
        this.dataOffset = dataOffset;
        this.metadata = Collections.unmodifiableMap(metadata);
        this.valueTypes = valueTypes;
        this.elementTypes = elementTypes;
        this.tensors = Collections.unmodifiableMap(tensors);
        this.mapping = mapping;
    }

    /**
     * Opens and checks {@code file}: its header is read in full, its data mapped (privately: nothing written to a
     * tensor reaches the file).
     *
     * @throws java.nio.file.NoSuchFileException when there is no such file
     * @throws GgufFormatException naming the file and the key or tensor, when the file breaks the format
     * @throws IOException when it cannot be read
     */
    public static GgufFile open(Path file) throws IOException {
        long size;
        ByteBuffer head;
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            size = ch.size();
            head = ch.map(FileChannel.MapMode.READ_ONLY, 0, Math.min(size, Integer.MAX_VALUE - 8))
                    .order(ByteOrder.LITTLE_ENDIAN);
        }
        Header h = new Header(file, head, size);
        h.read();
        Tensor mapping = h.tensors.isEmpty() ? null : map(file, size);
        return new GgufFile(file, h.version, h.alignment, h.dataOffset, h.kv, h.types, h.elementTypes, h.tensors,
                mapping);
    }

    private static Tensor map(Path file, long size) throws IOException {
        try (org.bytedeco.javacpp.BytePointer name = new org.bytedeco.javacpp.BytePointer(
                        file.toAbsolutePath().toString(), fileNameCharset());
                BoolOptional shared = new BoolOptional(false);
                LongOptional elements = new LongOptional(size);
                TensorOptions bytes = new TensorOptions(ScalarType.Byte)) {
            return torch.from_file(name, shared, elements, bytes);
        } catch (RuntimeException e) {
            String why = e.getMessage() == null ? e.toString() : e.getMessage().lines().findFirst().orElse("");
            throw new IOException(file + ": cannot map the file: " + why, e);
        }
    }

    private static java.nio.charset.Charset fileNameCharset() {
        try {
            return java.nio.charset.Charset.forName(System.getProperty("sun.jnu.encoding", "UTF-8"));
        } catch (IllegalArgumentException e) {
            return StandardCharsets.UTF_8;
        }
    }

    /** The file this was opened from. */
    public Path path() {
        return path;
    }

    /** The format version (2 or 3). */
    public int version() {
        return version;
    }

    /** The alignment of the data section and of each tensor's offset ({@code general.alignment}, default 32). */
    public long alignment() {
        return alignment;
    }

    /** Where the data section starts in the file, in bytes. */
    public long dataOffset() {
        return dataOffset;
    }

    /** Every metadata key and its value (see the class comment for the value types), in file order. */
    public Map<String, Object> metadata() {
        return metadata;
    }

    /**
     * The GGUF value type id of {@code key} ({@code gguf_type}: 0 uint8, 1 int8, 2 uint16, 3 int16, 4 uint32, 5 int32,
     * 6 float32, 7 bool, 8 string, 9 array, 10 uint64, 11 int64, 12 float64), or -1 when the file has no such key.
     */
    public int valueType(String key) {
        return valueTypes.getOrDefault(key, -1);
    }

    /** The element type id of array {@code key}, or -1 when {@code key} is not an array of this file. */
    public int arrayElementType(String key) {
        return elementTypes.getOrDefault(key, -1);
    }

    /** The tensor infos by name, in file order. */
    public Map<String, TensorInfo> tensors() {
        return tensors;
    }

    /**
     * The info of tensor {@code name}.
     *
     * @throws IllegalArgumentException naming the file when it holds no such tensor
     */
    public TensorInfo tensor(String name) {
        TensorInfo t = tensors.get(name);
        if (t == null) {
            throw new IllegalArgumentException(path + ": no tensor named " + name + " (the file holds "
                    + tensors.size() + " tensors)");
        }
        return t;
    }

    /**
     * Tensor {@code name}'s bytes as a uint8 {@code [byteSize]} view of the mapped file (no copy; close it when done).
     *
     * @throws IllegalArgumentException naming the file when it holds no such tensor
     * @throws IllegalStateException when this file was closed
     */
    public synchronized Tensor bytes(String name) {
        TensorInfo t = tensor(name);
        if (mapping == null) {
            throw new IllegalStateException(path + ": closed; cannot read tensor " + name);
        }
        return mapping.narrow(0, dataOffset + t.offset(), t.byteSize());
    }

    /**
     * Tensor {@code name} of type F32, F16 or BF16 as a view of the mapped file (no copy; close it when done) of
     * float32, float16 or bfloat16 with its {@link TensorInfo#shape()}.
     *
     * @throws IllegalArgumentException naming the file when it holds no such tensor
     * @throws UnsupportedOperationException naming the file, the tensor and its type when it is of another type
     *     (quantized blocks: read them with {@link #bytes})
     * @throws IllegalStateException when this file was closed
     */
    public Tensor get(String name) {
        TensorInfo t = tensor(name);
        ScalarType st = switch (t.type()) {
            case 0 -> ScalarType.Float;
            case 1 -> ScalarType.Half;
            case 30 -> ScalarType.BFloat16;
            default -> throw new UnsupportedOperationException(path + ": tensor " + name + " is " + t.typeName()
                    + ", not F32, F16 or BF16");
        };
        try (Tensor raw = bytes(name); Tensor typed = raw.view(st)) {
            return typed.view(t.shape());
        }
    }

    /** Releases this handle's hold on the mapping (tensors still open keep it); idempotent. */
    @Override
    public synchronized void close() {
        if (mapping != null) {
            mapping.close();
            mapping = null;
        }
    }

    @Override
    public String toString() {
        return "GgufFile[" + path + ", v" + version + ", " + metadata.size() + " keys, " + tensors.size()
                + " tensors]";
    }

    /** Parses and checks the header; the fields hold the result. */
    private static final class Header {
        final Path file;
        final ByteBuffer b;
        final long fileSize;
        int version;
        long alignment = DEFAULT_ALIGNMENT;
        long dataOffset;
        final Map<String, Object> kv = new LinkedHashMap<>();
        final Map<String, Integer> types = new LinkedHashMap<>();
        final Map<String, Integer> elementTypes = new LinkedHashMap<>();
        final Map<String, TensorInfo> tensors = new LinkedHashMap<>();
        /** What is being read, for truncation messages. */
        String what = "the magic";

        Header(Path file, ByteBuffer b, long fileSize) {
            this.file = file;
            this.b = b;
            this.fileSize = fileSize;
        }

        void read() throws GgufFormatException {
            try {
                readAll();
            } catch (BufferUnderflowException e) {
                throw fail("the file ends (" + fileSize + " bytes) while reading " + what);
            }
        }

        private void readAll() throws GgufFormatException {
            byte[] magic = new byte[4];
            if (b.remaining() < 4) {
                throw fail("the file is " + fileSize + " bytes, too short for the magic GGUF");
            }
            b.get(magic);
            if (!Arrays.equals(magic, new byte[] {'G', 'G', 'U', 'F'})) {
                throw fail("the magic is " + printable(magic) + ", not GGUF");
            }
            what = "the version";
            version = b.getInt();
            if (version != 2 && version != 3) {
                throw fail("version " + Integer.toUnsignedString(version)
                        + (Integer.reverseBytes(version) == 3 || Integer.reverseBytes(version) == 2
                                ? " (a big-endian file, which this reader does not take)"
                                : " is not supported (versions 2 and 3 are)"));
            }
            what = "the tensor count";
            long nTensors = b.getLong();
            what = "the key-value count";
            long nKv = b.getLong();
            // every key-value takes at least 13 bytes, every tensor info 28: counts beyond that cannot be right
            if (nKv < 0 || nKv > b.remaining() / 13) {
                throw fail("key-value count " + Long.toUnsignedString(nKv) + " does not fit the file");
            }
            if (nTensors < 0 || nTensors > b.remaining() / 28) {
                throw fail("tensor count " + Long.toUnsignedString(nTensors) + " does not fit the file");
            }
            for (long i = 0; i < nKv; i++) {
                what = "the key of key-value " + i;
                String key = string();
                what = "the type of key " + key;
                int type = b.getInt();
                if (kv.containsKey(key)) {
                    throw fail("key " + key + " appears twice");
                }
                what = "the value of key " + key;
                if (type == ARRAY) {
                    int et = b.getInt();
                    long n = b.getLong();
                    if (et == ARRAY) {
                        throw fail("key " + key + " is an array of arrays, which ggml does not read");
                    }
                    if (n < 0 || n > b.remaining()) {
                        throw fail("key " + key + ": array of " + Long.toUnsignedString(n)
                                + " elements does not fit the file");
                    }
                    List<Object> list = new ArrayList<>((int) Math.min(n, 1 << 16));
                    for (long j = 0; j < n; j++) {
                        list.add(value(et, key));
                    }
                    elementTypes.put(key, et);
                    kv.put(key, Collections.unmodifiableList(list));
                } else {
                    kv.put(key, value(type, key));
                }
                types.put(key, type);
            }
            if (kv.containsKey("general.alignment")) {
                Object a = kv.get("general.alignment");
                if (types.get("general.alignment") != UINT32 || (Long) a <= 0 || Long.bitCount((Long) a) != 1) {
                    throw fail("general.alignment " + a + " (type " + types.get("general.alignment")
                            + ") is not a uint32 power of two");
                }
                alignment = (Long) a;
            }
            List<TensorInfo> infos = new ArrayList<>();
            for (long i = 0; i < nTensors; i++) {
                what = "the name of tensor " + i;
                String name = string();
                what = "the info of tensor " + name;
                int nDims = b.getInt();
                if (nDims < 1 || nDims > MAX_DIMS) {
                    throw fail("tensor " + name + ": " + Integer.toUnsignedString(nDims) + " dimensions (1 to "
                            + MAX_DIMS + " allowed)");
                }
                long[] dims = new long[nDims];
                for (int d = 0; d < nDims; d++) {
                    dims[d] = b.getLong();
                    if (dims[d] < 0) {
                        throw fail("tensor " + name + ": dimension " + d + " is " + Long.toUnsignedString(dims[d]));
                    }
                }
                int type = b.getInt();
                long offset = b.getLong();
                GgmlType t = GgmlType.byId(type);
                if (t == null) {
                    throw fail("tensor " + name + " has unknown ggml type " + Integer.toUnsignedString(type));
                }
                if (dims[0] % t.blockSize != 0) {
                    throw fail("tensor " + name + ": row length " + dims[0] + " is not a multiple of " + t
                            + "'s block of " + t.blockSize);
                }
                long bytes;
                try {
                    long n = 1;
                    for (long d : dims) {
                        n = Math.multiplyExact(n, d);
                    }
                    bytes = Math.multiplyExact(n / t.blockSize, (long) t.blockBytes);
                } catch (ArithmeticException e) {
                    throw fail("tensor " + name + ": dimensions " + Arrays.toString(dims) + " overflow");
                }
                if (tensors.containsKey(name)) {
                    throw fail("tensor " + name + " appears twice");
                }
                TensorInfo info = new TensorInfo(name, dims, type, offset, bytes);
                tensors.put(name, info);
                infos.add(info);
            }
            long afterInfos = b.position();
            dataOffset = align(afterInfos);
            long expected = 0;
            for (TensorInfo t : infos) {
                // gguf.cpp: each tensor starts where the one before ends, padded to the alignment
                if (t.offset() != expected) {
                    throw fail("tensor " + t.name() + " has offset " + Long.toUnsignedString(t.offset())
                            + ", expected " + expected + " (the aligned end of the tensor before it)");
                }
                long end = dataOffset + t.offset() + t.byteSize();
                if (end > fileSize || end < 0) {
                    throw fail("tensor " + t.name() + " (" + t.typeName() + " " + Arrays.toString(t.shape())
                            + ", " + t.byteSize() + " bytes at " + (dataOffset + t.offset())
                            + ") ends past the end of the file (" + fileSize + " bytes): truncated?");
                }
                expected = align(t.offset() + t.byteSize());
            }
        }

        private long align(long x) {
            return (x + alignment - 1) / alignment * alignment;
        }

        private Object value(int type, String key) throws GgufFormatException {
            return switch (type) {
                case UINT8 -> (long) Byte.toUnsignedInt(b.get());
                case INT8 -> (long) b.get();
                case UINT16 -> (long) Short.toUnsignedInt(b.getShort());
                case INT16 -> (long) b.getShort();
                case UINT32 -> Integer.toUnsignedLong(b.getInt());
                case INT32 -> (long) b.getInt();
                case FLOAT32 -> b.getFloat();
                case BOOL -> {
                    byte v = b.get();
                    if (v != 0 && v != 1) {
                        throw fail("key " + key + ": bool byte " + v + " is not 0 or 1");
                    }
                    yield v == 1;
                }
                case STRING -> string();
                case UINT64, INT64 -> b.getLong();
                case FLOAT64 -> b.getDouble();
                default -> throw fail("key " + key + " has unknown value type " + Integer.toUnsignedString(type));
            };
        }

        private String string() throws GgufFormatException {
            long n = b.getLong();
            if (n < 0 || n > b.remaining()) {
                throw fail("string of " + Long.toUnsignedString(n) + " bytes in " + what + " runs past the end of "
                        + "the file (" + fileSize + " bytes)");
            }
            byte[] s = new byte[(int) n];
            b.get(s);
            try {
                return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(s)).toString();
            } catch (CharacterCodingException e) {
                throw fail(what + " is not valid UTF-8");
            }
        }

        private GgufFormatException fail(String problem) {
            return new GgufFormatException(file, problem);
        }

        private static String printable(byte[] magic) {
            StringBuilder s = new StringBuilder();
            for (byte x : magic) {
                s.append(x >= 0x20 && x < 0x7f ? String.valueOf((char) x) : String.format("\\x%02x", x & 0xff));
            }
            return "'" + s + "'";
        }
    }
}
