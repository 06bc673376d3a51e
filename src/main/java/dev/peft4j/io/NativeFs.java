package dev.peft4j.io;

import java.nio.charset.Charset;
import java.nio.file.Path;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * JavaCPP binding of {@code src/main/cpp/peft4j_fs.h}: the atomic exchange of two paths and a deletable lock file.
 * Its own small JNI library (no libtorch needed), loaded on first use; where it cannot load, {@link #exchange} reports
 * {@link #UNSUPPORTED} and {@link #LOADED} is false.
 */
@Platform(include = "peft4j_fs.h", compiler = "cpp17")
final class NativeFs {
    /** What {@link #exchange} returns where no native exchange exists (library missing, or not Linux). */
    static final int UNSUPPORTED = -1;

    /** Whether the library loaded; where not, {@link FolderLock} uses Java's file locks instead. */
    static final boolean LOADED = load();

    private NativeFs() {}

    private static boolean load() {
        try {
            Loader.load(NativeFs.class);
            return true;
        } catch (UnsatisfiedLinkError | RuntimeException e) {
            return false;
        }
    }

    static native int peft4j_rename_exchange(@Cast("const char*") BytePointer a, @Cast("const char*") BytePointer b);

    static native int peft4j_lock_file(@Cast("const char*") BytePointer path, int wait);

    static native int peft4j_unlock_file(int fd);

    /** EWOULDBLOCK on Linux: the lock is held by another open file. */
    static final int EWOULDBLOCK = 11;

    /**
     * Locks the lock file {@code file} ({@code peft4j_lock_file}): a descriptor, or minus the errno
     * ({@code -EWOULDBLOCK} when held and not {@code wait}). Only where {@link #LOADED}.
     */
    static int lockFile(Path file, boolean wait) {
        try (BytePointer p = new BytePointer(file.toString(), names())) {
            return peft4j_lock_file(p, wait ? 1 : 0);
        }
    }

    static int unlockFile(int fd) {
        return peft4j_unlock_file(fd);
    }

    private static Charset names() {
        return Charset.forName(System.getProperty("sun.jnu.encoding", "UTF-8"));
    }

    /**
     * Swaps {@code a} and {@code b} atomically; both must exist.
     *
     * @return 0 on success, else the errno (or {@link #UNSUPPORTED})
     */
    static int exchange(Path a, Path b) {
        if (!LOADED) {
            return UNSUPPORTED;
        }
        // file names go to the kernel in the JVM's file-name encoding, as NIO sends them
        try (BytePointer pa = new BytePointer(a.toString(), names());
                BytePointer pb = new BytePointer(b.toString(), names())) {
            return peft4j_rename_exchange(pa, pb);
        }
    }
}
