// File-system calls Java's NIO lacks (dev.peft4j.io.NativeFs binds them).
#pragma once

#include <cerrno>

#if defined(__linux__)
#include <fcntl.h>
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
