package dev.peft4j.io;

import java.nio.charset.Charset;
import java.nio.file.Path;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * JavaCPP binding of {@code src/main/cpp/peft4j_fs.h}: the atomic exchange of two paths. Its own small JNI library
 * (no libtorch needed), loaded on first use; where it cannot load, {@link #exchange} reports {@link #UNSUPPORTED}.
 */
@Platform(include = "peft4j_fs.h", compiler = "cpp17")
final class NativeFs {
    /** What {@link #exchange} returns where no native exchange exists (library missing, or not Linux). */
    static final int UNSUPPORTED = -1;

    private static final boolean LOADED = load();

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
        Charset names = Charset.forName(System.getProperty("sun.jnu.encoding", "UTF-8"));
        try (BytePointer pa = new BytePointer(a.toString(), names);
                BytePointer pb = new BytePointer(b.toString(), names)) {
            return peft4j_rename_exchange(pa, pb);
        }
    }
}
