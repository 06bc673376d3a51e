package dev.peft4j.io;

import java.io.IOException;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A safetensors file, memory-mapped: {@link #get} wraps each tensor's bytes in a libtorch {@link Tensor}
 * without copying them.
 *
 * <p><b>Mapping.</b> The whole file is mapped once by libtorch ({@code at::from_file}, the mapping
 * {@code torch.from_file} uses), as one {@code uint8} tensor; every tensor handed out is a view of
 * its storage. libtorch reference-counts that storage, so the mapping lives until {@link #close()}
 * has been called <em>and</em> every tensor handed out has been released: tensors stay valid after
 * {@code close()}. No 2 GiB limit applies (unlike {@code MappedByteBuffer}).
 *
 * <p><b>Writes.</b> The mapping is private and copy-on-write ({@code MAP_PRIVATE}): tensors are
 * writable, a write copies the touched page and never reaches the file or other readers.
 *
 * <p><b>Alignment.</b> A tensor whose bytes do not start at a multiple of its element size within
 * the file (possible only in files whose header is not padded, i.e. not written by the Rust writer
 * or ours) is copied into a fresh tensor instead, so no libtorch kernel ever sees a misaligned pointer.
 *
 * <p><b>Validation.</b> {@link #open} checks the whole header before handing anything out (header
 * length against the file and a 100 MB cap, JSON syntax, duplicate names, dtypes, shapes against
 * byte spans, offsets tiling the data section with no gap, overlap or trailing bytes, and that
 * {@code BOOL} bytes are 0 or 1); each failure is a {@link SafetensorsException} naming the file and
 * tensor. The file must not be truncated while mapped (the OS would then fault on access, as for
 * any memory-mapped reader).
 */
public final class SafetensorsFile implements AutoCloseable {
    /** The metadata PEFT and transformers write: {@code {"format": "pt"}}. */
    public static final Map<String, String> PT_METADATA = Map.of("format", "pt");

    private final Path path;
    private final long dataStart;
    private final List<TensorInfo> tensors;
    private final Map<String, TensorInfo> byName;
    private final Map<String, String> metadata;
    private final boolean hasMetadata;
    private Tensor mapping; // uint8, the whole file; null once closed

    private SafetensorsFile(Path path, Tensor mapping, long dataStart, SafetensorsHeader.Parsed header) {
        this.path = path;
        this.mapping = mapping;
        this.dataStart = dataStart;
        this.tensors = header.tensors();
        this.metadata = header.metadata();
        this.hasMetadata = header.hasMetadata();
        Map<String, TensorInfo> index = new HashMap<>();
        for (TensorInfo t : tensors) {
            index.put(t.name(), t);
        }
        this.byName = index;
    }

    /**
     * Maps {@code file} and validates its header.
     *
     * @throws SafetensorsException if the file is not a well-formed safetensors file
     * @throws IOException if it cannot be read
     */
    public static SafetensorsFile open(Path file) throws IOException {
        Objects.requireNonNull(file, "file");
        checkLittleEndian();
        if (!Files.isRegularFile(file)) {
            if (!Files.exists(file)) {
                throw new java.nio.file.NoSuchFileException(file.toString());
            }
            throw new SafetensorsException(file, null, "not a regular file");
        }
        if (!Files.isReadable(file)) {
            throw new java.nio.file.AccessDeniedException(file.toString());
        }
        long size = Files.size(file);
        if (size < 8) {
            throw new SafetensorsException(file, null, "file is " + size
                    + " bytes, too short for the 8-byte header length");
        }
        Tensor mapping = map(file, size);
        try {
            BytePointer bytes = new BytePointer(mapping.data_ptr()).capacity(size);
            long headerLength = bytes.getLong(0); // JavaCPP reads in native order: little-endian here
            if (headerLength < 0 || headerLength > SafetensorsHeader.MAX_HEADER_BYTES) {
                throw new SafetensorsException(file, null, "header length " + Long.toUnsignedString(headerLength)
                        + " exceeds the " + SafetensorsHeader.MAX_HEADER_BYTES + "-byte cap");
            }
            if (headerLength > size - 8) {
                throw new SafetensorsException(file, null, "header length " + headerLength
                        + " runs beyond the end of the file (" + size + " bytes)");
            }
            byte[] header = new byte[(int) headerLength];
            bytes.position(8).get(header);
            long dataStart = 8 + headerLength;
            SafetensorsHeader.Parsed parsed = SafetensorsHeader.parse(file, header, size - dataStart);
            for (TensorInfo t : parsed.tensors()) {
                if (t.dtype().equals("BOOL")) {
                    checkBools(file, t, bytes, dataStart);
                }
            }
            return new SafetensorsFile(file, mapping, dataStart, parsed);
        } catch (IOException | RuntimeException | Error e) {
            mapping.close();
            throw e;
        }
    }

    private static Tensor map(Path file, long size) throws SafetensorsException {
        // the path bytes the JDK itself uses for file names, not JavaCPP's default string charset
        try (BytePointer name = new BytePointer(file.toAbsolutePath().toString(), fileNameCharset());
                BoolOptional shared = new BoolOptional(false); // MAP_PRIVATE: copy-on-write, never writes the file
                LongOptional elements = new LongOptional(size);
                TensorOptions bytes = new TensorOptions(ScalarType.Byte)) {
            return torch.from_file(name, shared, elements, bytes);
        } catch (RuntimeException e) {
            String why = e.getMessage() == null ? e.toString() : e.getMessage().lines().findFirst().orElse("");
            throw new SafetensorsException(file, null, "cannot map the file: " + why, e);
        }
    }

    private static java.nio.charset.Charset fileNameCharset() {
        try {
            return java.nio.charset.Charset.forName(System.getProperty("sun.jnu.encoding", "UTF-8"));
        } catch (IllegalArgumentException e) {
            return java.nio.charset.StandardCharsets.UTF_8;
        }
    }

    /** libtorch's bool is one byte that must be 0 or 1; anything else is undefined behaviour in kernels. */
    private static void checkBools(Path file, TensorInfo t, BytePointer bytes, long dataStart) throws SafetensorsException {
        byte[] chunk = new byte[(int) Math.min(t.byteSize(), 1 << 16)];
        for (long done = 0; done < t.byteSize(); done += chunk.length) {
            int n = (int) Math.min(chunk.length, t.byteSize() - done);
            bytes.position(dataStart + t.begin() + done).get(chunk, 0, n);
            for (int i = 0; i < n; i++) {
                if (chunk[i] != 0 && chunk[i] != 1) {
                    throw new SafetensorsException(file, t.name(), "BOOL element " + (done + i) + " is byte "
                            + (chunk[i] & 0xff) + ", not 0 or 1");
                }
            }
        }
    }

    /** The file this was opened from. */
    public Path path() {
        return path;
    }

    /** Tensor names in file order (the order of their bytes in the data section). */
    public List<String> names() {
        List<String> names = new ArrayList<>(tensors.size());
        for (TensorInfo t : tensors) {
            names.add(t.name());
        }
        return Collections.unmodifiableList(names);
    }

    /** The header's {@code __metadata__} entries in header order; empty if it has none. */
    public Map<String, String> metadata() {
        return metadata;
    }

    /**
     * Whether the header has a {@code __metadata__} entry (an empty one included): pass
     * {@code hasMetadata() ? metadata() : null} to {@link #write} to reproduce the header exactly.
     */
    public boolean hasMetadata() {
        return hasMetadata;
    }

    /** Header entries in file order. */
    public List<TensorInfo> infos() {
        return tensors;
    }

    /**
     * The header entry of tensor {@code name}.
     *
     * @throws IllegalArgumentException naming the file if it holds no such tensor
     */
    public TensorInfo info(String name) {
        TensorInfo t = byName.get(name);
        if (t == null) {
            throw new IllegalArgumentException(path + ": no tensor named \"" + name + "\" (the file holds "
                    + tensors.size() + " tensors)");
        }
        return t;
    }

    /** Whether the file holds a tensor named {@code name}. */
    public boolean contains(String name) {
        return byName.containsKey(name);
    }

    /**
     * Tensor {@code name} as a view of the mapped file: no copy (see the class comment for the one
     * exception, misaligned data). Each call returns a new {@code Tensor} handle; close it (or let it be
     * collected) to release its hold on the mapping. The tensor is writable copy-on-write.
     *
     * @throws IllegalArgumentException naming the file if it holds no such tensor
     * @throws UnsupportedOperationException naming the file and tensor if libtorch has no type for its
     *     dtype ({@code F4}, {@code F6_E2M3}, {@code F6_E3M2})
     * @throws IllegalStateException if this file was closed
     */
    public synchronized Tensor get(String name) {
        TensorInfo info = info(name);
        if (mapping == null) {
            throw new IllegalStateException(path + ": closed; cannot get tensor \"" + name + "\"");
        }
        Dtype dtype = Dtype.byName(info.dtype());
        if (dtype.scalarType == null) {
            throw new UnsupportedOperationException(path + ": tensor \"" + name + "\": dtype " + info.dtype()
                    + " (" + dtype.bits + "-bit elements) has no matching libtorch type");
        }
        long[] shape = info.shape();
        long bytes = info.byteSize();
        long at = dataStart + info.begin();
        if (bytes == 0) {
            return empty(shape, dtype.scalarType);
        }
        if (at % dtype.elementBytes() != 0) {
            Tensor copy = empty(shape, dtype.scalarType);
            Pointer.memcpy(copy.data_ptr(), new BytePointer(mapping.data_ptr()).position(at), bytes);
            return copy;
        }
        try (Tensor slice = mapping.narrow(0, at, bytes)) {
            if (dtype.scalarType == ScalarType.Byte) {
                return slice.view(shape);
            }
            try (Tensor typed = slice.view(dtype.scalarType)) {
                return typed.view(shape);
            }
        }
    }

    private static Tensor empty(long[] shape, ScalarType type) {
        try (TensorOptions options = new TensorOptions(type);
                MemoryFormatOptional format = new MemoryFormatOptional()) {
            return torch.empty(shape, options, format);
        }
    }

    /** Every tensor, in file order, as {@link #get} returns them. */
    public Map<String, Tensor> tensors() {
        Map<String, Tensor> all = new LinkedHashMap<>();
        for (TensorInfo t : tensors) {
            all.put(t.name(), get(t.name()));
        }
        return all;
    }

    /**
     * Releases this file's hold on the mapping. Tensors already handed out stay valid: the mapping is
     * unmapped when the last of them is released too. Idempotent.
     */
    @Override
    public synchronized void close() {
        if (mapping != null) {
            mapping.close();
            mapping = null;
        }
    }

    /**
     * Writes {@code tensors} to {@code file} atomically, in the layout of Python's {@code safetensors}
     * writer: tensors sorted by dtype (widest first, in the format's
     * dtype order) then by name, header padded with spaces to 8 bytes so every tensor is aligned; a file
     * Python wrote comes out byte-identical when its tensors are written back. Atomic: a temporary file
     * in the same directory is written, fsynced and renamed over {@code file}, then the directory is
     * fsynced. Non-contiguous or non-CPU tensors are copied to contiguous CPU memory first; others are
     * written straight from their memory.
     *
     * @param metadata the {@code __metadata__} entries, written in the map's iteration order; {@code null}
     *     writes no {@code __metadata__} (as Python's {@code save_file} without metadata). PEFT and
     *     transformers write {@link #PT_METADATA}.
     * @throws IllegalArgumentException naming the tensor if one cannot be stored (undefined, a dtype the
     *     format lacks, the reserved name {@code __metadata__})
     */
    public static void write(Path file, Map<String, Tensor> tensors, Map<String, String> metadata) throws IOException {
        checkLittleEndian();
        SafetensorsWriter.write(file, tensors, metadata);
    }

    /** {@link #write(Path, Map, Map)} with {@link #PT_METADATA}, as PEFT's {@code save_pretrained} does. */
    public static void write(Path file, Map<String, Tensor> tensors) throws IOException {
        write(file, tensors, PT_METADATA);
    }

    private static void checkLittleEndian() {
        if (ByteOrder.nativeOrder() != ByteOrder.LITTLE_ENDIAN) {
            throw new UnsupportedOperationException("safetensors data is little-endian; this platform is not");
        }
    }

    @Override
    public String toString() {
        return "SafetensorsFile[" + path + ", " + tensors.size() + " tensors]";
    }
}
