package dev.peft4j.io;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.locks.ReentrantLock;

/**
 * An exclusive lock on a lock file, between threads of this JVM and between processes, released by the kernel when
 * its process dies, even by {@code SIGKILL}.
 *
 * <p>With peft4j's native library (Linux), the lock is {@code flock(2)} and its holder deletes the lock file before
 * releasing it, so no lock file outlives its use. That is safe because a lock only counts once its holder has checked
 * that the path still names the file it locked ({@code peft4j_lock_file} in {@code src/main/cpp/peft4j_fs.h}); one
 * that waited on a deleted file starts over on the file now at that path. Java's own file locks cannot do this:
 * they are {@code fcntl} locks, which the process loses when it closes any descriptor of the file, so the path cannot
 * be checked by reading it. Without the native library they are used all the same, and the lock file is kept.
 */
final class FolderLock implements AutoCloseable {
    /** Threads of this JVM queue here first, so that one process never contends with itself in the kernel. */
    private static final Map<Path, JvmLock> JVM_LOCKS = new HashMap<>();

    private final Path file;
    private final JvmLock jvmLock;
    /** The native lock's descriptor, or -1 with {@link #channel}. */
    private final int fd;
    private final FileChannel channel;

    private static final class JvmLock {
        final ReentrantLock lock = new ReentrantLock();
        int users;
    }

    private FolderLock(Path file, JvmLock jvmLock, int fd, FileChannel channel) {
        this.file = file;
        this.jvmLock = jvmLock;
        this.fd = fd;
        this.channel = channel;
    }

    /** Waits for the lock on {@code file} (created if missing). */
    static FolderLock acquire(Path file) throws IOException {
        return lock(file, true);
    }

    /** The lock on {@code file} if no one holds it now, else null. */
    static FolderLock tryAcquire(Path file) throws IOException {
        return lock(file, false);
    }

    private static FolderLock lock(Path file, boolean wait) throws IOException {
        Path key = file.toAbsolutePath().normalize();
        JvmLock jvm;
        synchronized (JVM_LOCKS) {
            jvm = JVM_LOCKS.computeIfAbsent(key, k -> new JvmLock());
            jvm.users++;
        }
        boolean locked = false;
        FolderLock result = null;
        try {
            if (jvm.lock.isHeldByCurrentThread()) {
                if (wait) {
                    throw new IllegalStateException(key + ": this thread already holds the lock");
                }
                return null;
            }
            if (wait) {
                jvm.lock.lock();
                locked = true;
            } else {
                locked = jvm.lock.tryLock();
            }
            if (locked) {
                result = NativeFs.LOADED ? lockNative(key, jvm, wait) : lockChannel(key, jvm, wait);
            }
            return result;
        } finally {
            if (result == null) {
                release(key, jvm, locked);
            }
        }
    }

    private static FolderLock lockNative(Path key, JvmLock jvm, boolean wait) throws IOException {
        int fd = NativeFs.lockFile(key, wait);
        if (fd == -NativeFs.EWOULDBLOCK && !wait) {
            return null;
        }
        if (fd < 0) {
            throw new IOException(key + ": cannot lock (errno " + -fd + ")");
        }
        return new FolderLock(key, jvm, fd, null);
    }

    private static FolderLock lockChannel(Path key, JvmLock jvm, boolean wait) throws IOException {
        FileChannel ch = FileChannel.open(key, StandardOpenOption.CREATE, StandardOpenOption.WRITE);
        try {
            FileLock os = wait ? ch.lock() : ch.tryLock();
            if (os == null) {
                return null;
            }
            FolderLock held = new FolderLock(key, jvm, -1, ch);
            ch = null;
            return held;
        } finally {
            if (ch != null) {
                ch.close();
            }
        }
    }

    private static void release(Path key, JvmLock jvm, boolean held) {
        if (held) {
            jvm.lock.unlock();
        }
        synchronized (JVM_LOCKS) {
            if (--jvm.users == 0) {
                JVM_LOCKS.remove(key);
            }
        }
    }

    /** The lock file this lock is held on. */
    Path file() {
        return file;
    }

    /** Deletes the lock file (where that is safe, see the class comment), then releases the lock. */
    @Override
    public void close() throws IOException {
        try {
            if (channel == null) {
                Files.deleteIfExists(file);
            }
        } finally {
            unlockKeepingFile();
        }
    }

    /** Releases the lock and leaves the lock file where it is (it goes with a folder that is deleted anyway). */
    void unlockKeepingFile() throws IOException {
        try {
            if (channel != null) {
                channel.close(); // releases its lock
            } else {
                int rc = NativeFs.unlockFile(fd);
                if (rc != 0) {
                    throw new IOException(file + ": closing the lock failed (errno " + rc + ")");
                }
            }
        } finally {
            release(file, jvmLock, true);
        }
    }
}
