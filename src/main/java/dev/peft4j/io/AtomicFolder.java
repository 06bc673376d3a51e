package dev.peft4j.io;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Replaces the files of a folder all at once: after a crash or a {@code SIGKILL} at any moment, the folder holds
 * either all of the old files or all of the new ones. This is how adapter folders are saved, so that
 * {@code adapter_config.json} and {@code adapter_model.safetensors} always come from the same save.
 *
 * <h2>Mechanism</h2>
 * Two files cannot be renamed in one step, but a directory can. A save of {@code p/name}:
 * <ol>
 *   <li>takes the folder's lock, {@code p/.name.peft4j-lock} (see below);</li>
 *   <li>writes the new files into a sibling staging folder {@code p/.name.peft4j-<id>.new};</li>
 *   <li>brings over everything else the old folder holds (files the user keeps there such as a
 *       {@code README.md}, an older {@code adapter_model.bin}, other adapters' subfolders), as hard links, so nothing
 *       is copied (a copy where the file system has no hard links);</li>
 *   <li>fsyncs, then swaps the staging folder and {@code p/name} in one atomic step: Linux
 *       {@code renameat2(RENAME_EXCHANGE)}, through peft4j's native layer ({@code src/main/cpp/peft4j_fs.h});</li>
 *   <li>deletes the staging name, which now holds the old folder, and releases the lock.</li>
 * </ol>
 * Where the exchange is not available (another OS, or a file system without it, such as NFS), the old folder is
 * renamed aside to {@code p/.name.peft4j-<id>.old} and the staging folder renamed in. A crash between those two
 * renames leaves {@code p/name} missing; the rule is then: <em>while {@code p/name} is missing, its {@code .old}
 * sibling is the folder</em>, and the next save or load of it (any peft4j process) renames it back before anything
 * else. Only there can a reader that is not peft4j (Python) briefly find no folder.
 *
 * <p>The alternative, a versioned subfolder and a pointer file, was rejected: PEFT and Python read the folder
 * directly, so its layout must stay exactly what {@code save_pretrained} writes, with no extra file inside. The folder
 * keeps its path and POSIX permissions; it becomes a new directory, so its owner, ACLs and extended attributes are
 * those of a new directory, and a process whose working directory is the folder keeps the old one.
 *
 * <h2>Leftovers and the lock</h2>
 * A killed save leaves {@code p/.name.peft4j-<id>.new}, {@code .old} or its lock file (and, inside {@code p/name},
 * the locks it took on subfolders). Every save and load of {@code p/name} removes them, under the folder's lock: an
 * OS file lock ({@code flock(2)} through the native layer; Java's {@code fcntl} locks where that library is missing),
 * released by the kernel when its process dies however it dies, and shared with other JVMs, so leftovers are only
 * ever removed when no live save holds the lock (all of a save's staging runs under it). Loads never wait for a save to finish; they skip the
 * clean-up while the lock is held, and only wait when they find the folder missing and an {@code .old} beside it.
 * The lock file is deleted when the save ends ({@link FolderLock} says why that is safe). An age or pid check was
 * rejected: pids are reused and not shared between containers or hosts on one volume; a lock dies with its holder.
 *
 * <h2>Concurrency</h2>
 * Saves of one folder, from threads or processes, run one after the other; the last one wins. A save also takes the
 * lock of each direct subfolder it carries over before reading it, so a save of {@code p/name/other} (PEFT's layout
 * for a second adapter) finishes before, or starts after, a save of {@code p/name} rebuilds it; a load of
 * {@code p/name} also cleans up after killed saves of its direct subfolders. Not covered: folders nested deeper
 * saved at the same time as {@code p/name}, and a subfolder that a save creates for the first time while its parent
 * folder is being saved (it may be left out of the parent's new copy).
 *
 * <p>A folder at rest is always whole. A reader that opens the two files one after the other while a save swaps the
 * folder between its two opens can still pair files of two saves (Python's loader too); a reader that must not
 * can compare the folder's {@code fileKey} before and after its reads, since every swap puts a new directory there.
 */
public final class AtomicFolder {
    private static final SecureRandom RANDOM = new SecureRandom();
    private static final String MARK = ".peft4j-";
    private static final String LOCK_SUFFIX = "lock";
    private static final String NEW_SUFFIX = ".new";
    private static final String OLD_SUFFIX = ".old";
    /** errnos of renameat2 that mean "no exchange here": EINVAL, ENOSYS, EOPNOTSUPP (Linux numbers). */
    /** A folder renamed aside by a save: {@code .<name>.peft4j-<id>.old}. */
    private static final Pattern ASIDE = Pattern.compile("\\.(.+)\\.peft4j-[0-9a-z]+\\.old");
    /** Any save leftover, of the folder named by group 1. */
    private static final Pattern ANY_LEFTOVER = Pattern.compile("\\.(.+)\\.peft4j-(?:lock|[0-9a-z]+\\.(?:new|old))");
    private static final Set<Integer> NO_EXCHANGE = Set.of(NativeFs.UNSUPPORTED, 22, 38, 95);

    /** Tests turn the exchange off to drive the rename-aside path on a file system that has it. */
    static volatile boolean exchangeDisabled;

    private AtomicFolder() {}

    /** Writes a folder's new files. */
    @FunctionalInterface
    public interface Contents {
        /** Writes the new files into {@code staging}, an empty folder on the same file system as the target. */
        void writeInto(Path staging) throws IOException;
    }

    /**
     * Makes {@code dir} hold the files {@code contents} writes, in one atomic step, keeping every other entry of
     * {@code dir} (a file of the same name is replaced). {@code dir} and its parents are created when missing; a
     * symbolic link to a folder stays a link, and the folder it names is replaced. When {@code contents} throws,
     * {@code dir} is left as it was and the exception is passed on.
     *
     * @throws IOException when {@code dir} is a file, or naming the entry that could not be written or carried over
     */
    public static void replace(Path dir, Contents contents) throws IOException {
        Path target = target(dir, true);
        Path parent = target.getParent();
        String name = target.getFileName().toString();
        try (FolderLock lock = FolderLock.acquire(lockFile(parent, name))) {
            cleanUp(parent, name);
            if (Files.exists(target, LinkOption.NOFOLLOW_LINKS) && !Files.isDirectory(target)) {
                throw new IOException(target + ": is a file; an adapter folder is saved into a directory");
            }
            String id = Long.toUnsignedString(RANDOM.nextLong(), 36);
            Path staging = parent.resolve(prefix(name) + id + NEW_SUFFIX);
            Path aside = parent.resolve(prefix(name) + id + OLD_SUFFIX);
            List<FolderLock> subfolderLocks = new ArrayList<>();
            boolean swapped = false;
            Throwable failure = null;
            try {
                Files.createDirectory(staging);
                contents.writeInto(staging);
                boolean exists = Files.isDirectory(target, LinkOption.NOFOLLOW_LINKS);
                if (exists) {
                    keepPermissions(target, staging);
                    Set<String> written = names(staging);
                    carry(target, staging, written, subfolderLocks, true);
                }
                fsyncDirectory(staging);
                if (!exists) {
                    Files.move(staging, target, StandardCopyOption.ATOMIC_MOVE);
                } else {
                    swap(target, staging, aside);
                }
                swapped = true;
                fsyncDirectory(parent);
            } catch (IOException | RuntimeException | Error e) {
                failure = e;
                throw e;
            } finally {
                try {
                    for (FolderLock l : subfolderLocks) {
                        if (swapped) {
                            l.unlockKeepingFile(); // its file went with the old folder
                        } else {
                            l.close();
                        }
                    }
                    deleteTree(staging); // the old folder after an exchange, or a staging folder that was not used
                    deleteTree(aside);
                } catch (IOException | RuntimeException e) {
                    // after the swap the save is done: what is left here goes with the next save or load
                    if (failure != null) {
                        failure.addSuppressed(e);
                    } else if (!swapped) {
                        throw e;
                    }
                }
            }
        }
    }

    /**
     * What a load does first: when a killed save left {@code dir} missing mid-swap, puts the old folder back (waiting
     * for a live save of it to finish first), and removes a killed save's leftovers unless a save of {@code dir} is
     * running now. Clean-up failures (a read-only folder) are ignored; the folder is then read as it is.
     *
     * @throws IOException only when {@code dir} is missing and its old copy cannot be put back
     */
    public static void recover(Path dir) throws IOException {
        Path target;
        try {
            target = target(dir, false);
        } catch (IOException | RuntimeException e) {
            return; // no such parent: nothing was ever saved there
        }
        if (target == null) {
            return;
        }
        recover(target.getParent(), target.getFileName().toString());
        if (!Files.isDirectory(target)) {
            return;
        }
        // what killed saves of its subfolders (PEFT's layout for more adapters) left inside it, such as the lock a
        // killed save of this folder took on a subfolder while carrying it over
        Set<String> subfolders = new HashSet<>();
        try (DirectoryStream<Path> s = Files.newDirectoryStream(target,
                e -> e.getFileName().toString().contains(MARK))) {
            for (Path e : s) {
                Matcher m = ANY_LEFTOVER.matcher(e.getFileName().toString());
                if (m.matches()) {
                    subfolders.add(m.group(1));
                }
            }
        } catch (IOException e) {
            return;
        }
        for (String sub : subfolders) {
            recover(target, sub);
        }
    }

    private static void recover(Path parent, String name) throws IOException {
        Path target = parent.resolve(name);
        List<Path> leftovers;
        try {
            leftovers = leftovers(parent, name, true);
        } catch (IOException e) {
            return;
        }
        if (leftovers.isEmpty()) {
            return;
        }
        boolean halfSwapped = !Files.exists(target, LinkOption.NOFOLLOW_LINKS)
                && leftovers.stream().anyMatch(p -> p.getFileName().toString().endsWith(OLD_SUFFIX));
        try (FolderLock lock = halfSwapped ? FolderLock.acquire(lockFile(parent, name))
                : FolderLock.tryAcquire(lockFile(parent, name))) {
            if (lock != null) {
                cleanUp(parent, name);
            }
        } catch (IOException e) {
            if (halfSwapped && !Files.exists(target, LinkOption.NOFOLLOW_LINKS)) {
                throw new IOException(target + ": missing after an interrupted save, and its previous copy beside it "
                        + "could not be put back: " + e.getMessage(), e);
            }
        }
    }

    /** The absolute, symlink-free path of the folder (its parent created when {@code create}), or null. */
    private static Path target(Path dir, boolean create) throws IOException {
        Path abs = dir.toAbsolutePath().normalize();
        if (abs.getFileName() == null) {
            throw new IOException(dir + ": not a folder an adapter can be saved into");
        }
        if (Files.isSymbolicLink(abs)) {
            if (!Files.exists(abs)) {
                throw new IOException(dir + ": a symbolic link to nothing");
            }
            abs = abs.toRealPath();
        }
        Path parent = abs.getParent();
        if (create) {
            Files.createDirectories(parent);
        } else if (!Files.isDirectory(parent)) {
            return null;
        }
        // one real path per folder, so every process and thread locks the same lock file under the same name
        return parent.toRealPath().resolve(abs.getFileName().toString());
    }

    static String prefix(String name) {
        return "." + name + MARK;
    }

    static Path lockFile(Path parent, String name) {
        return parent.resolve(prefix(name) + LOCK_SUFFIX);
    }

    /** {@code .name.peft4j-lock}, {@code .name.peft4j-<id>.new}, {@code .name.peft4j-<id>.old}: nothing else. */
    private static Pattern leftoverPattern(String name) {
        return Pattern.compile(Pattern.quote(prefix(name)) + "(?:" + LOCK_SUFFIX + "|[0-9a-z]+(\\.new|\\.old))");
    }

    /** The entries beside the folder that saves of it make; the lock file too when {@code withLock}. */
    static List<Path> leftovers(Path parent, String name, boolean withLock) throws IOException {
        Pattern p = leftoverPattern(name);
        List<Path> out = new ArrayList<>();
        String start = prefix(name);
        try (DirectoryStream<Path> s = Files.newDirectoryStream(parent,
                e -> e.getFileName().toString().startsWith(start))) {
            for (Path e : s) {
                Matcher m = p.matcher(e.getFileName().toString());
                if (m.matches() && (withLock || m.group(1) != null)) {
                    out.add(e);
                }
            }
        }
        return out;
    }

    /** Under the folder's lock: puts back a folder a killed save left renamed aside, then deletes the leftovers. */
    private static void cleanUp(Path parent, String name) throws IOException {
        List<Path> leftovers = leftovers(parent, name, false);
        Path target = parent.resolve(name);
        if (!Files.exists(target, LinkOption.NOFOLLOW_LINKS)) {
            Path aside = leftovers.stream().filter(p -> p.getFileName().toString().endsWith(OLD_SUFFIX))
                    .max(Comparator.comparing(AtomicFolder::modified)).orElse(null);
            if (aside != null) {
                Files.move(aside, target, StandardCopyOption.ATOMIC_MOVE);
                fsyncDirectory(parent);
                leftovers.remove(aside);
            }
        }
        for (Path p : leftovers) {
            deleteTree(p);
        }
    }

    private static long modified(Path p) {
        try {
            return Files.getLastModifiedTime(p, LinkOption.NOFOLLOW_LINKS).toMillis();
        } catch (IOException e) {
            return Long.MIN_VALUE;
        }
    }

    private static void swap(Path target, Path staging, Path aside) throws IOException {
        int rc = exchangeDisabled ? NativeFs.UNSUPPORTED : NativeFs.exchange(staging, target);
        if (rc == 0) {
            return;
        }
        if (!NO_EXCHANGE.contains(rc)) {
            throw new IOException(target + ": cannot swap in the new folder " + staging + " (renameat2 errno " + rc
                    + ")");
        }
        move(target, aside);
        try {
            move(staging, target);
        } catch (IOException | RuntimeException e) {
            move(aside, target);
            throw e;
        }
    }

    private static void move(Path from, Path to) throws IOException {
        try {
            Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            throw new IOException(from + ": cannot be renamed to " + to + " in one step", e);
        }
    }

    private static Set<String> names(Path dir) throws IOException {
        Set<String> out = new HashSet<>();
        try (DirectoryStream<Path> s = Files.newDirectoryStream(dir)) {
            for (Path p : s) {
                out.add(p.getFileName().toString());
            }
        }
        return out;
    }

    /**
     * Brings every entry of {@code from} into {@code to}, but the names just written, the temporary files of
     * single-file writers of those names (left by a killed write), and other folders' save leftovers.
     */
    private static void carry(Path from, Path to, Set<String> written, List<FolderLock> locks, boolean top)
            throws IOException {
        if (top) {
            restoreHalfSwappedSubfolders(from);
        }
        try (DirectoryStream<Path> s = Files.newDirectoryStream(from)) {
            for (Path src : s) {
                String n = src.getFileName().toString();
                if (written.contains(n) || isSaveLeftover(n) || isWriterTemp(n, written)) {
                    continue;
                }
                Path dst = to.resolve(n);
                BasicFileAttributes a = Files.readAttributes(src, BasicFileAttributes.class,
                        LinkOption.NOFOLLOW_LINKS);
                if (a.isSymbolicLink()) {
                    Files.createSymbolicLink(dst, Files.readSymbolicLink(src));
                } else if (a.isDirectory()) {
                    if (top) {
                        // a save of this subfolder (another adapter) runs before or after this copy, never during
                        locks.add(FolderLock.acquire(lockFile(from, n)));
                    }
                    Files.createDirectory(dst);
                    keepPermissions(src, dst);
                    carry(src, dst, Set.of(), locks, false);
                    fsyncDirectory(dst);
                } else if (a.isRegularFile()) {
                    link(src, dst);
                } else {
                    throw new IOException(src + ": neither a file, a folder nor a link; an adapter folder holding it "
                            + "cannot be saved atomically");
                }
            }
        }
    }

    /** A subfolder that a killed save left renamed aside is put back first, so that it is carried over. */
    private static void restoreHalfSwappedSubfolders(Path dir) throws IOException {
        Set<String> missing = new HashSet<>();
        try (DirectoryStream<Path> s = Files.newDirectoryStream(dir)) {
            for (Path p : s) {
                Matcher m = ASIDE.matcher(p.getFileName().toString());
                if (m.matches() && !Files.exists(dir.resolve(m.group(1)), LinkOption.NOFOLLOW_LINKS)) {
                    missing.add(m.group(1));
                }
            }
        }
        for (String sub : missing) {
            try (FolderLock lock = FolderLock.acquire(lockFile(dir, sub))) {
                cleanUp(dir, sub);
            }
        }
    }

    /** A staging, aside or lock entry of some folder's save ({@code .x.peft4j-…}). */
    private static boolean isSaveLeftover(String n) {
        return n.startsWith(".") && n.contains(MARK);
    }

    /** {@code .adapter_config.json.<random>.tmp}: what a killed single-file atomic write of a written name leaves. */
    private static boolean isWriterTemp(String n, Set<String> written) {
        if (!n.startsWith(".") || !n.endsWith(".tmp")) {
            return false;
        }
        for (String w : written) {
            if (n.startsWith("." + w + ".")) {
                return true;
            }
        }
        return false;
    }

    private static void link(Path src, Path dst) throws IOException {
        try {
            Files.createLink(dst, src);
        } catch (UnsupportedOperationException | IOException e) {
            // no hard links here (some FUSE and Windows file systems): a copy, synced like the written files
            Files.deleteIfExists(dst);
            Files.copy(src, dst, StandardCopyOption.COPY_ATTRIBUTES, LinkOption.NOFOLLOW_LINKS);
            try (FileChannel c = FileChannel.open(dst, StandardOpenOption.WRITE)) {
                c.force(true);
            }
        }
    }

    private static void keepPermissions(Path from, Path to) {
        try {
            Files.setPosixFilePermissions(to, Files.getPosixFilePermissions(from, LinkOption.NOFOLLOW_LINKS));
        } catch (IOException | UnsupportedOperationException e) {
            // no POSIX permissions here: the new folder's defaults stand
        }
    }

    static void fsyncDirectory(Path dir) {
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true);
        } catch (IOException | UnsupportedOperationException e) {
            // directories cannot be opened here: the files themselves are synced
        }
    }

    /** Deletes {@code root} and everything under it, not following links; nothing when it does not exist. */
    static void deleteTree(Path root) throws IOException {
        if (!Files.exists(root, LinkOption.NOFOLLOW_LINKS)) {
            return;
        }
        Files.walkFileTree(root, new SimpleFileVisitor<>() {
            @Override
            public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                Files.deleteIfExists(file);
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult visitFileFailed(Path file, IOException e) throws IOException {
                if (e instanceof NoSuchFileException) {
                    return FileVisitResult.CONTINUE;
                }
                throw e;
            }

            @Override
            public FileVisitResult postVisitDirectory(Path d, IOException e) throws IOException {
                if (e != null && !(e instanceof NoSuchFileException)) {
                    throw e;
                }
                Files.deleteIfExists(d);
                return FileVisitResult.CONTINUE;
            }
        });
    }
}
