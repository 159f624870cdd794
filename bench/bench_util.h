/*
 * bench_util.h -- the few helpers every objstore benchmark shares.
 *
 * Header-only: each bench/bench_*.c is built as a program of its own, so the
 * helpers are static inline and carry no state across programs.
 *
 * What a benchmark can rely on:
 *   B1 bench_now() is monotonic seconds; only differences mean anything.
 *   B2 the RNG is splitmix64: the same seed gives the same sequence on every
 *      machine and build, so every implementation in a run (and every run)
 *      sees the same sizes and the same orders.
 *   B3 a temp dir made by bench_tmpdir() is removed at exit, also after
 *      bench_die(); it lives under $OBJSTORE_BENCH_DIR, else $TMPDIR, else
 *      /tmp (bench/run.sh points OBJSTORE_BENCH_DIR at the build dir, a real
 *      disk, so that fsync costs what it costs there).
 *   B4 a result is one line, `RESULT key=value ...`, the format bench/run.sh
 *      reads: `impl=` names the implementation, keys ending in `_per_s` are
 *      rates (higher is better), keys ending in `_s`, `_ms`, `_us`, `_ns`,
 *      `_bytes`, `_per_node` or `_per_object` are times and sizes (lower is
 *      better), keys ending in `_pct` are shown but not compared, and every
 *      other key (workload=, order=, payload=, nodes=, ...) describes the
 *      configuration: only lines with the same configuration are compared.
 */
#ifndef OBJSTORE_BENCH_UTIL_H
#define OBJSTORE_BENCH_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#define BENCH_PATH_MAX 4096

/* ---- failing ---- */

/* Prints "bench: <message>" to stderr and exits 1 (the atexit handlers
 * remove the temp dirs). */
static inline void bench_die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
static inline void bench_die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* ---- time ---- */

/* A count from the command line: 1..2^32-1, or the program stops. */
static inline size_t bench_parse_count(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v == 0 || v > UINT32_MAX)
        bench_die("bad %s: %s", what, s);
    return (size_t)v;
}

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- random numbers: splitmix64 (Steele, Lea, Flood 2014) ---- */

typedef struct bench_rng {
    uint64_t s;
} bench_rng;

static inline bench_rng bench_rng_seed(uint64_t seed)
{
    bench_rng r = { seed };
    return r;
}

static inline uint64_t bench_rng_next(bench_rng *r)
{
    uint64_t z = (r->s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Uniform in [0, n), n >= 1.  The modulo's bias is below n / 2^64: nothing a
 * benchmark can see. */
static inline uint64_t bench_rng_below(bench_rng *r, uint64_t n)
{
    return bench_rng_next(r) % n;
}

/* Uniform in [lo, hi], lo <= hi. */
static inline uint64_t bench_rng_range(bench_rng *r, uint64_t lo, uint64_t hi)
{
    return lo + bench_rng_below(r, hi - lo + 1);
}

/* Fills perm with a uniformly random permutation of 0..n-1 (Fisher-Yates). */
static inline void bench_permutation(uint32_t *perm, size_t n, bench_rng *r)
{
    for (size_t i = 0; i < n; i++)
        perm[i] = (uint32_t)i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)bench_rng_below(r, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

/* ---- temp dirs ---- */

static inline int bench__rm_one(const char *path, const struct stat *st,
                                int type, struct FTW *ftw)
{
    (void)st; (void)type; (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        fprintf(stderr, "bench: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

/* Removes path and everything under it (not following symlinks). */
static inline void bench_rmtree(const char *path)
{
    nftw(path, bench__rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#define BENCH_MAX_TMPDIRS 8
static char bench__tmpdirs[BENCH_MAX_TMPDIRS][BENCH_PATH_MAX];
static int bench__ntmpdirs;

static inline void bench__remove_tmpdirs(void)
{
    for (int i = bench__ntmpdirs; i-- > 0;)
        bench_rmtree(bench__tmpdirs[i]);
    bench__ntmpdirs = 0;
}

/* Makes a fresh directory <base>/objstore-bench-<tag>-XXXXXX (see B3) and
 * returns its path, valid until exit, when the directory is removed. */
static inline const char *bench_tmpdir(const char *tag)
{
    const char *base = getenv("OBJSTORE_BENCH_DIR");
    if (base == NULL || base[0] == '\0')
        base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    if (bench__ntmpdirs == BENCH_MAX_TMPDIRS)
        bench_die("more than %d temp dirs", BENCH_MAX_TMPDIRS);
    char *dir = bench__tmpdirs[bench__ntmpdirs];
    int n = snprintf(dir, BENCH_PATH_MAX, "%s/objstore-bench-%s-XXXXXX", base, tag);
    if (n < 0 || n >= BENCH_PATH_MAX)
        bench_die("temp dir path too long under %s", base);
    if (mkdtemp(dir) == NULL)
        bench_die("cannot make a temp dir under %s: %s", base, strerror(errno));
    if (bench__ntmpdirs++ == 0)
        atexit(bench__remove_tmpdirs);
    return dir;
}

/* Writes dir/name into out (BENCH_PATH_MAX bytes) and returns out. */
static inline char *bench_path(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, BENCH_PATH_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= BENCH_PATH_MAX)
        bench_die("path too long: %s/%s", dir, name);
    return out;
}

/* Name of the file system holding path, so a reader knows what an fsync
 * there was worth (tmpfs makes it free). */
static inline const char *bench_fs_name(const char *path)
{
    static char other[32];
    struct statfs sf;
    if (statfs(path, &sf) != 0)
        return "unknown";
    switch ((unsigned long)sf.f_type) {
    case 0x01021994UL: return "tmpfs";
    case 0xEF53UL:     return "ext4";
    case 0x58465342UL: return "xfs";
    case 0x9123683EUL: return "btrfs";
    case 0x794C7630UL: return "overlayfs";
    case 0x2FC12FC1UL: return "zfs";
    case 0x6969UL:     return "nfs";
    case 0x65735546UL: return "fuse";
    default:
        snprintf(other, sizeof other, "0x%lx", (unsigned long)sf.f_type);
        return other;
    }
}

/* Lets the disk settle before an fsync-bound measurement: writes out what
 * the file system under dir still holds dirty (syncfs) and waits a second,
 * so that the write-back and discards of the stores a workload just built
 * and deleted do not land on the next workload's fsyncs. */
static inline void bench_settle(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        syncfs(fd);
        close(fd);
    }
    sleep(1);
}

/* ---- reporting ---- */

/* Prints "RESULT <formatted>\n" (see B4) and flushes, so a reader piping the
 * output sees each result as it comes. */
static inline void bench_result(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static inline void bench_result(const char *fmt, ...)
{
    va_list ap;
    fputs("RESULT ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

#endif
