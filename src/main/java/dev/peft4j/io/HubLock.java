package dev.peft4j.io;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;
import java.util.concurrent.locks.ReentrantLock;

/**
 * An exclusive lock on one blob of the cache, held while it is downloaded and linked: the file
 * {@code <cache>/.locks/<repo folder>/<blob>.lock}, where huggingface_hub keeps its own, locked with
 * {@code flock(2)} through the native layer ({@link NativeFs}), as Python's filelock locks it, so that other JVMs and
 * huggingface_hub in Python wait for each other; threads of this JVM wait on a lock per path first. The lock file
 * stays (deleting it would let a waiter lock a file that no one else sees). Where the native layer is missing the
 * lock is {@link FileChannel#lock()} ({@code fcntl(2)}), which excludes other JVMs but not Python, since Linux keeps
 * the two kinds apart: then a JVM and Python can each download a blob once, and the cache stays whole even so, since
 * every download goes to its own file and is renamed into place only when complete and verified.
 */
final class HubLock implements AutoCloseable {
    private static final ConcurrentMap<Path, ReentrantLock> IN_PROCESS = new ConcurrentHashMap<>();

    private final ReentrantLock inProcess;
    private final FileChannel channel; // the fcntl lock's channel, or null under flock
    private final FileLock lock;
    private final int flockFd; // the flock descriptor, or -1

    private HubLock(ReentrantLock inProcess, FileChannel channel, FileLock lock, int flockFd) {
        this.inProcess = inProcess;
        this.channel = channel;
        this.lock = lock;
        this.flockFd = flockFd;
    }

    /** The lock file's path for {@code blob} of the repo in {@code repoFolder} under the cache {@code root}. */
    static Path pathOf(Path root, Path repoFolder, String blob) {
        return root.resolve(".locks").resolve(repoFolder.getFileName().toString()).resolve(blob + ".lock");
    }

    /** Waits for and takes the lock on {@code file}, creating it (and its folders) if needed. */
    static HubLock acquire(Path file) throws IOException {
        Path key = file.toAbsolutePath().normalize();
        ReentrantLock l = IN_PROCESS.computeIfAbsent(key, k -> new ReentrantLock());
        try {
            l.lockInterruptibly();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new java.io.InterruptedIOException("interrupted while waiting for " + key);
        }
        try {
            Files.createDirectories(key.getParent());
            if (NativeFs.LOADED) {
                int fd = NativeFs.lockFile(key, true);
                if (fd < 0) {
                    throw new IOException("cannot lock " + key + ": errno " + (-fd));
                }
                return new HubLock(l, null, null, fd);
            }
            FileChannel ch = FileChannel.open(key, StandardOpenOption.CREATE, StandardOpenOption.WRITE);
            try {
                return new HubLock(l, ch, ch.lock(), -1);
            } catch (IOException | RuntimeException e) {
                ch.close();
                throw e;
            }
        } catch (IOException | RuntimeException e) {
            l.unlock();
            throw e;
        }
    }

    @Override
    public void close() throws IOException {
        if (flockFd >= 0) {
            try {
                int rc = NativeFs.unlockFile(flockFd);
                if (rc != 0) {
                    throw new IOException("cannot unlock a Hub cache lock: errno " + rc);
                }
            } finally {
                inProcess.unlock();
            }
            return;
        }
        try {
            lock.release();
        } finally {
            try {
                channel.close();
            } finally {
                inProcess.unlock();
            }
        }
    }
}
