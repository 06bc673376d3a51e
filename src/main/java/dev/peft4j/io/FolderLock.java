package dev.peft4j.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.SecureRandom;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.locks.ReentrantLock;

/**
 * An exclusive lock on a lock file, between threads of this JVM and between processes (an OS file lock,
 * {@code fcntl} on Linux, released by the kernel when its process dies, even by {@code SIGKILL}).
 *
 * <p>The holder may delete the lock file before releasing it, so that no lock file outlives its use. That is safe
 * because a lock only counts once its holder has checked that the path still names the file it locked: the holder
 * writes a random token into its locked file and reads the path back; a file unlinked (or replaced) while it waited
 * does not show the token, and the waiter starts over on the file now at that path.
 */
final class FolderLock implements AutoCloseable {
    private static final SecureRandom RANDOM = new SecureRandom();
    /** Threads of this JVM queue here first: two channels of one process cannot both hold OS locks on a file. */
    private static final Map<Path, JvmLock> JVM_LOCKS = new HashMap<>();

    private final Path file;
    private final JvmLock jvmLock;
    private final FileChannel channel;
    private final FileLock osLock;

    private static final class JvmLock {
        final ReentrantLock lock = new ReentrantLock();
        int users;
    }

    private FolderLock(Path file, JvmLock jvmLock, FileChannel channel, FileLock osLock) {
        this.file = file;
        this.jvmLock = jvmLock;
        this.channel = channel;
        this.osLock = osLock;
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
            if (wait) {
                jvm.lock.lock();
                locked = true;
            } else {
                locked = jvm.lock.tryLock();
            }
            if (locked) {
                result = lockFile(key, jvm, wait);
            }
            return result;
        } finally {
            if (result == null) {
                release(key, jvm, locked);
            }
        }
    }

    private static FolderLock lockFile(Path key, JvmLock jvm, boolean wait) throws IOException {
        while (true) {
            FileChannel ch = FileChannel.open(key, StandardOpenOption.CREATE, StandardOpenOption.READ,
                    StandardOpenOption.WRITE);
            try {
                FileLock os = wait ? ch.lock() : ch.tryLock();
                if (os == null) {
                    return null;
                }
                if (namesLockedFile(key, ch)) {
                    FolderLock held = new FolderLock(key, jvm, ch, os);
                    ch = null;
                    return held;
                }
            } finally {
                if (ch != null) {
                    ch.close(); // releases its OS lock too
                }
            }
        }
    }

    private static boolean namesLockedFile(Path path, FileChannel ch) throws IOException {
        byte[] token = new byte[16];
        RANDOM.nextBytes(token);
        ch.truncate(0);
        ByteBuffer buf = ByteBuffer.wrap(token);
        while (buf.hasRemaining()) {
            ch.write(buf, buf.position());
        }
        byte[] seen;
        try {
            seen = Files.readAllBytes(path);
        } catch (NoSuchFileException e) {
            return false;
        }
        return Arrays.equals(seen, token);
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

    /** Deletes the lock file, then releases the lock. */
    @Override
    public void close() throws IOException {
        try {
            Files.deleteIfExists(file);
        } finally {
            unlockKeepingFile();
        }
    }

    /** Releases the lock and leaves the lock file where it is (it goes with a folder that is deleted anyway). */
    void unlockKeepingFile() throws IOException {
        try {
            channel.close(); // releases osLock
        } finally {
            release(file, jvmLock, true);
        }
    }
}
