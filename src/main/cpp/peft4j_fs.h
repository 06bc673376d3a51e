// File-system calls Java's NIO lacks (dev.peft4j.io.NativeFs binds them): an atomic exchange of two folders and
// a lock file that can be deleted by its holder.
#pragma once

#include <cerrno>

#if defined(__linux__)
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

// Swaps two existing paths (files or directories) in one atomic step: Linux renameat2(RENAME_EXCHANGE).
// Returns 0, or the errno: EINVAL / ENOSYS / EOPNOTSUPP where the kernel or file system cannot exchange.
// Called through syscall(2) because glibc only wraps renameat2 from 2.28 on.
inline int peft4j_rename_exchange(const char* a, const char* b) {
#if defined(__linux__) && defined(SYS_renameat2)
    const unsigned int rename_exchange = 1u << 1; // RENAME_EXCHANGE in <linux/fs.h>
    if (syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, rename_exchange) == 0) {
        return 0;
    }
    return errno;
#else
    (void)a;
    (void)b;
    return ENOSYS;
#endif
}

// Opens (creating it) and locks the lock file `path` exclusively with flock(2), waiting when `wait`, then checks that
// `path` still names the file it locked: a holder deletes its lock file before unlocking, so a waiter may have locked
// a deleted file, and then locks the one now at the path. flock locks belong to the open file, so closing another
// descriptor of the file in the same process does not drop them (fcntl locks would be dropped), and the kernel drops
// them when the process dies. Returns the descriptor, or minus the errno (-EWOULDBLOCK: held, and not `wait`).
inline int peft4j_lock_file(const char* path, int wait) {
#if defined(__linux__)
    for (;;) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0) {
            return -errno;
        }
        int rc;
        do {
            rc = flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB));
        } while (rc != 0 && errno == EINTR);
        if (rc != 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        struct stat locked, named;
        if (fstat(fd, &locked) != 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        if (stat(path, &named) == 0 && named.st_dev == locked.st_dev && named.st_ino == locked.st_ino) {
            return fd;
        }
        close(fd);
    }
#else
    (void)path;
    (void)wait;
    return -ENOSYS;
#endif
}

// Releases a lock of peft4j_lock_file (closing its descriptor). Returns 0 or the errno.
inline int peft4j_unlock_file(int fd) {
#if defined(__linux__)
    return close(fd) == 0 ? 0 : errno;
#else
    (void)fd;
    return ENOSYS;
#endif
}
