package dev.peft4j.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Tensor;

/**
 * Writes safetensors files byte-for-byte as the Rust crate's {@code serialize_to_file} (behind Python's
 * {@code save_file}) does: tensors sorted by dtype descending in the format's dtype order, then by name
 * (UTF-8 byte order); compact JSON header, {@code __metadata__} first, padded with spaces to a multiple
 * of 8; then the tensors' little-endian, row-major bytes back to back.
 *
 * <p>Atomic: the bytes go to a temporary file in the target's directory, which is fsynced and renamed
 * over the target, and the directory is fsynced; a reader sees the old file or the complete new one.
 * Tensor bytes are written straight from libtorch's memory (no copy through the Java heap); overwriting
 * in place, that I/O path runs at {@code dd}'s speed. Atomicity costs a fresh file per save, whose page
 * cache is allocated while the old file's is still held, and freeing the old file at the rename.
 */
final class SafetensorsWriter {
    private static final java.util.Random RANDOM = new java.security.SecureRandom();

    /** Bytes per write call: stays well under the 2 GiB a single ByteBuffer can address. */
    static final long CHUNK = 1L << 30;

    private SafetensorsWriter() {}

    private record Entry(String name, Dtype dtype, Tensor source, Tensor contiguous, long bytes) {}

    static void write(Path file, Map<String, Tensor> tensors, Map<String, String> metadata) throws IOException {
        write(file, tensors, metadata, CHUNK);
    }

    /** As {@link #write(Path, Map, Map)}, at most {@code chunkBytes} per write call (tests use small chunks). */
    static void write(Path file, Map<String, Tensor> tensors, Map<String, String> metadata, long chunkBytes)
            throws IOException {
        Objects.requireNonNull(file, "file");
        Objects.requireNonNull(tensors, "tensors");
        List<Entry> entries = new ArrayList<>(tensors.size());
        try {
            for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
                entries.add(entry(file, e.getKey(), e.getValue()));
            }
            if (metadata != null) {
                for (Map.Entry<String, String> m : metadata.entrySet()) {
                    if (m.getKey() == null || m.getValue() == null) {
                        throw new IllegalArgumentException(file + ": metadata entry " + m.getKey() + "=" + m.getValue()
                                + " has a null key or value");
                    }
                }
            }
            entries.sort((a, b) -> {
                int byDtype = Integer.compare(b.dtype.ordinal(), a.dtype.ordinal());
                return byDtype != 0 ? byDtype : compareUtf8(a.name, b.name);
            });
            List<TensorInfo> layout = new ArrayList<>(entries.size());
            long offset = 0;
            for (Entry e : entries) {
                layout.add(new TensorInfo(e.name, e.dtype.name(), e.source.shape(), offset, offset + e.bytes));
                offset += e.bytes;
            }
            byte[] header = SafetensorsHeader.format(layout, metadata);
            writeAtomically(file, header, entries, chunkBytes);
        } finally {
            for (Entry e : entries) {
                if (e.contiguous != e.source) {
                    e.contiguous.close();
                }
            }
        }
    }

    private static Entry entry(Path file, String name, Tensor t) {
        if (name == null) {
            throw new IllegalArgumentException(file + ": a tensor name is null");
        }
        String at = file + ": tensor \"" + name + "\": ";
        if (name.equals(SafetensorsHeader.METADATA_KEY)) {
            throw new IllegalArgumentException(at + "the name is reserved for the metadata");
        }
        if (t == null || t.isNull() || !t.defined()) {
            throw new IllegalArgumentException(at + "null or undefined");
        }
        Dtype dtype = Dtype.of(t.scalar_type());
        if (dtype == null) {
            throw new IllegalArgumentException(at + "libtorch type " + t.scalar_type().intern()
                    + " has no safetensors dtype");
        }
        if (t.is_sparse() || t.is_quantized()) {
            throw new IllegalArgumentException(at + "sparse and quantized tensors cannot be stored");
        }
        Tensor dense = t;
        if (!t.is_cpu() || !t.is_contiguous()) {
            // copies only what needs copying: a CPU contiguous tensor is written from its own memory
            try (Tensor cpu = t.cpu()) {
                dense = cpu.contiguous();
            }
        }
        return new Entry(name, dtype, t, dense, t.numel() * dense.element_size());
    }

    /** Orders names as Rust's {@code String} ordering does: by UTF-8 bytes (not UTF-16 units). */
    static int compareUtf8(String a, String b) {
        return Arrays.compareUnsigned(a.getBytes(StandardCharsets.UTF_8), b.getBytes(StandardCharsets.UTF_8));
    }

    private static void writeAtomically(Path target, byte[] header, List<Entry> entries, long chunkBytes)
            throws IOException {
        // through a symlink, as Python's writer (open + truncate) does: the link stays, its target changes
        Path file = Files.isSymbolicLink(target) && Files.exists(target) ? target.toRealPath() : target;
        Path dir = file.toAbsolutePath().getParent();
        Path tmp = null;
        boolean done = false;
        try {
            FileChannel out = null;
            while (out == null) {
                // CREATE_NEW with default attributes: the umask applies, as for any new file (createTempFile
                // would force 0600 and the final file would keep it)
                tmp = dir.resolve("." + file.getFileName() + "." + Long.toUnsignedString(RANDOM.nextLong(), 36) + ".tmp");
                try {
                    out = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.CREATE_NEW);
                } catch (java.nio.file.FileAlreadyExistsException e) {
                    tmp = null; // another writer's temp name: draw again
                }
            }
            try (FileChannel channel = out) {
                ByteBuffer head = ByteBuffer.allocate(8 + header.length).order(java.nio.ByteOrder.LITTLE_ENDIAN);
                head.putLong(header.length).put(header).flip();
                writeFully(channel, head);
                for (Entry e : entries) {
                    writeTensor(channel, e, chunkBytes);
                }
                channel.force(true);
            }
            keepPermissionsOf(file, tmp);
            try {
                Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING);
            }
            done = true;
            fsyncDirectory(dir);
        } finally {
            if (!done && tmp != null) {
                Files.deleteIfExists(tmp);
            }
        }
    }

    private static void writeTensor(FileChannel out, Entry e, long chunkBytes) throws IOException {
        if (e.bytes == 0) {
            return; // an empty tensor has no data pointer
        }
        for (long done = 0; done < e.bytes; done += chunkBytes) {
            long n = Math.min(chunkBytes, e.bytes - done);
            // a direct buffer over libtorch's memory: the channel writes from it without a heap copy
            try (BytePointer chunk = new BytePointer(e.contiguous.data_ptr())) {
                ByteBuffer buf = chunk.position(done).limit(done + n).capacity(done + n).asBuffer();
                if (buf.remaining() != n) {
                    throw new IllegalStateException("tensor \"" + e.name + "\": direct buffer of " + buf.remaining()
                            + " bytes, expected " + n);
                }
                writeFully(out, buf);
            }
        }
        java.lang.ref.Reference.reachabilityFence(e.contiguous);
    }

    private static void writeFully(FileChannel out, ByteBuffer buf) throws IOException {
        while (buf.hasRemaining()) {
            out.write(buf);
        }
    }

    /** A replaced file keeps its permissions, as it would if it were truncated and rewritten in place. */
    private static void keepPermissionsOf(Path existing, Path replacement) {
        try {
            Files.setPosixFilePermissions(replacement, Files.getPosixFilePermissions(existing));
        } catch (IOException | UnsupportedOperationException e) {
            // no existing file, or no POSIX permissions here: the new file's defaults stand
        }
    }

    /** Makes the rename itself durable (Linux; a no-op where directories cannot be opened). */
    private static void fsyncDirectory(Path dir) {
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true);
        } catch (IOException | UnsupportedOperationException e) {
            // not supported on this platform/filesystem: the data itself is already fsynced
        }
    }
}
