/*
 * fault_shim.c -- an LD_PRELOAD library that makes one I/O call fail, for
 * tests/test_faults.c.
 *
 * It interposes the calls that change files or make them durable: pwrite,
 * pwritev, write, writev, fsync, fdatasync, msync, ftruncate, fallocate,
 * posix_fallocate (and their *64 names), and open/openat when they may
 * create a file.  Both the program and the shared libraries it loads
 * (liblmdb) reach libc through these names, so LMDB's own writes and syncs
 * are counted too.
 *
 * Environment:
 *   OBJSTORE_FAULT_DIR     only calls on files below this directory count
 *                          (the descriptor's path, from /proc/self/fd; for
 *                          msync the mapping's file, from /proc/self/maps)
 *   OBJSTORE_FAULT_AT      the number (1, 2, ...) of the counted call that
 *                          fails; 0 or unset: none fails, only count
 *   OBJSTORE_FAULT_ERRNO   ENOSPC (default) or EIO
 *   OBJSTORE_FAULT_REPORT  a file (outside the directory) where the shim
 *                          writes, at exit, "count N\n", "calls NAME K ...\n"
 *                          (the counted calls by name) and, when it failed a
 *                          call, "failed N NAME\n"
 *
 * Rules:
 *   F1 the failing call does nothing: it returns -1 with errno set (or the
 *      error number, for posix_fallocate), as a full or failing disk would
 *      before touching anything.  Every other call goes to libc unchanged.
 *   F2 only calls on descriptors that name a file below the directory count,
 *      so the test's own files (its report, Check's pipes) never fail.
 *   F3 the shim allocates nothing and writes through no stdio stream, so it
 *      cannot recurse into itself.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static char g_dir[PATH_MAX];
static size_t g_dirlen;
static unsigned long g_at;
static int g_errno = ENOSPC;
static _Atomic unsigned long g_count;
static unsigned long g_failed_at;
static const char *g_failed_name;

enum { C_PWRITE, C_PWRITEV, C_WRITE, C_WRITEV, C_FSYNC, C_FDATASYNC, C_MSYNC,
       C_FTRUNCATE, C_FALLOCATE, C_POSIX_FALLOCATE, C_OPEN, C_OPENAT, C_N };
static const char *const g_names[C_N] = {
    "pwrite", "pwritev", "write", "writev", "fsync", "fdatasync", "msync",
    "ftruncate", "fallocate", "posix_fallocate", "open", "openat"};
static _Atomic unsigned long g_by_name[C_N];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

#define REAL(name) real_##name
#define DECLARE_REAL(ret, name, ...) static ret (*real_##name)(__VA_ARGS__)

DECLARE_REAL(ssize_t, pwrite, int, const void *, size_t, off_t);
DECLARE_REAL(ssize_t, pwritev, int, const struct iovec *, int, off_t);
DECLARE_REAL(ssize_t, write, int, const void *, size_t);
DECLARE_REAL(ssize_t, writev, int, const struct iovec *, int);
DECLARE_REAL(int, fsync, int);
DECLARE_REAL(int, fdatasync, int);
DECLARE_REAL(int, msync, void *, size_t, int);
DECLARE_REAL(int, ftruncate, int, off_t);
DECLARE_REAL(int, fallocate, int, int, off_t, off_t);
DECLARE_REAL(int, posix_fallocate, int, off_t, off_t);
DECLARE_REAL(int, open, const char *, int, ...);
DECLARE_REAL(int, openat, int, const char *, int, ...);

static void init(void)
{
#define LOOKUP(name) real_##name = dlsym(RTLD_NEXT, #name)
    LOOKUP(pwrite);
    LOOKUP(pwritev);
    LOOKUP(write);
    LOOKUP(writev);
    LOOKUP(fsync);
    LOOKUP(fdatasync);
    LOOKUP(msync);
    LOOKUP(ftruncate);
    LOOKUP(fallocate);
    LOOKUP(posix_fallocate);
    LOOKUP(open);
    LOOKUP(openat);
#undef LOOKUP
    const char *d = getenv("OBJSTORE_FAULT_DIR");
    if (d && realpath(d, g_dir)) {
        g_dirlen = strlen(g_dir);
        while (g_dirlen > 1 && g_dir[g_dirlen - 1] == '/')
            g_dir[--g_dirlen] = '\0';
    }
    const char *at = getenv("OBJSTORE_FAULT_AT");
    if (at)
        g_at = strtoul(at, NULL, 10);
    const char *e = getenv("OBJSTORE_FAULT_ERRNO");
    if (e && strcmp(e, "EIO") == 0)
        g_errno = EIO;
}

static int below_dir(const char *path)
{
    return g_dirlen && strncmp(path, g_dir, g_dirlen) == 0 &&
           (path[g_dirlen] == '/' || path[g_dirlen] == '\0');
}

static int fd_below_dir(int fd)
{
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return 0;
    path[n] = '\0';
    return below_dir(path);
}

/* The file mapped at addr, from /proc/self/maps (read with plain read: F3). */
static int addr_below_dir(const void *addr)
{
    int fd = REAL(open)("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    static char buf[1 << 16];
    char line[PATH_MAX + 256];
    size_t ll = 0;
    int found = 0;
    ssize_t n;
    uintptr_t a = (uintptr_t)addr;
    while (!found && (n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n && !found; i++) {
            if (buf[i] != '\n') {
                if (ll < sizeof line - 1)
                    line[ll++] = buf[i];
                continue;
            }
            line[ll] = '\0';
            ll = 0;
            unsigned long lo, hi;
            int off = 0;
            if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &off) >= 2 && off &&
                a >= lo && a < hi)
                found = below_dir(line + off) ? 1 : -1;
        }
    }
    close(fd);
    return found == 1;
}

static void report(void)
{
    const char *path = getenv("OBJSTORE_FAULT_REPORT");
    if (!path)
        return;
    int fd = REAL(open)(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    char line[128];
    int n = snprintf(line, sizeof line, "count %lu\n", (unsigned long)atomic_load(&g_count));
    REAL(write)(fd, line, (size_t)n);
    n = snprintf(line, sizeof line, "calls");
    REAL(write)(fd, line, (size_t)n);
    for (int i = 0; i < C_N; i++) {
        n = snprintf(line, sizeof line, " %s %lu", g_names[i],
                     (unsigned long)atomic_load(&g_by_name[i]));
        REAL(write)(fd, line, (size_t)n);
    }
    REAL(write)(fd, "\n", 1);
    if (g_failed_at) {
        n = snprintf(line, sizeof line, "failed %lu %s\n", g_failed_at, g_failed_name);
        REAL(write)(fd, line, (size_t)n);
    }
    close(fd);
}

__attribute__((constructor)) static void shim_start(void)
{
    pthread_once(&g_once, init);
    atexit(report);
}

/* Counts one call on a file below the directory; true if it must fail. */
static int fail_now(int counted, int which)
{
    if (!counted)
        return 0;
    atomic_fetch_add(&g_by_name[which], 1);
    unsigned long k = atomic_fetch_add(&g_count, 1) + 1;
    if (k != g_at)
        return 0;
    g_failed_at = k;
    g_failed_name = g_names[which];
    return 1;
}

#define FD_CALL(which, fd) (pthread_once(&g_once, init), fail_now(fd_below_dir(fd), which))

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (FD_CALL(C_PWRITE, fd))
        return errno = g_errno, -1;
    return REAL(pwrite)(fd, buf, n, off);
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) __attribute__((alias("pwrite")));

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    if (FD_CALL(C_PWRITEV, fd))
        return errno = g_errno, -1;
    return REAL(pwritev)(fd, iov, cnt, off);
}
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
    __attribute__((alias("pwritev")));

ssize_t write(int fd, const void *buf, size_t n)
{
    if (FD_CALL(C_WRITE, fd))
        return errno = g_errno, -1;
    return REAL(write)(fd, buf, n);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (FD_CALL(C_WRITEV, fd))
        return errno = g_errno, -1;
    return REAL(writev)(fd, iov, cnt);
}

int fsync(int fd)
{
    if (FD_CALL(C_FSYNC, fd))
        return errno = g_errno, -1;
    return REAL(fsync)(fd);
}

int fdatasync(int fd)
{
    if (FD_CALL(C_FDATASYNC, fd))
        return errno = g_errno, -1;
    return REAL(fdatasync)(fd);
}

int msync(void *addr, size_t len, int flags)
{
    pthread_once(&g_once, init);
    if (fail_now(addr_below_dir(addr), C_MSYNC))
        return errno = g_errno, -1;
    return REAL(msync)(addr, len, flags);
}

int ftruncate(int fd, off_t len)
{
    if (FD_CALL(C_FTRUNCATE, fd))
        return errno = g_errno, -1;
    return REAL(ftruncate)(fd, len);
}
int ftruncate64(int fd, off_t len) __attribute__((alias("ftruncate")));

int fallocate(int fd, int mode, off_t off, off_t len)
{
    if (FD_CALL(C_FALLOCATE, fd))
        return errno = g_errno, -1;
    return REAL(fallocate)(fd, mode, off, len);
}
int fallocate64(int fd, int mode, off_t off, off_t len) __attribute__((alias("fallocate")));

int posix_fallocate(int fd, off_t off, off_t len)
{
    if (FD_CALL(C_POSIX_FALLOCATE, fd))
        return g_errno;
    return REAL(posix_fallocate)(fd, off, len);
}
int posix_fallocate64(int fd, off_t off, off_t len) __attribute__((alias("posix_fallocate")));

/* open/openat count only when they may create a file below the directory
 * (a relative path is resolved against the working directory). */
static int creates_below_dir(int dirfd, const char *path, int flags)
{
    if (!(flags & O_CREAT) || !path)
        return 0;
    char full[2 * PATH_MAX + 2];
    if (path[0] == '/') {
        snprintf(full, sizeof full, "%s", path);
    } else {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (!getcwd(base, sizeof base))
                return 0;
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, base, sizeof base - 1);
            if (n <= 0)
                return 0;
            base[n] = '\0';
        }
        snprintf(full, sizeof full, "%s/%s", base, path);
    }
    return below_dir(full);
}

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    pthread_once(&g_once, init);
    if (fail_now(creates_below_dir(AT_FDCWD, path, flags), C_OPEN))
        return errno = g_errno, -1;
    return REAL(open)(path, flags, mode);
}
int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    pthread_once(&g_once, init);
    if (fail_now(creates_below_dir(dirfd, path, flags), C_OPENAT))
        return errno = g_errno, -1;
    return REAL(openat)(dirfd, path, flags, mode);
}
int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));
