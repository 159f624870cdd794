/*
 * peer_util.h -- what the store-against-peers benchmarks (W1-W3) share:
 * bench_store and the bench_peer_* programs (docs/BENCHMARKS.md, "The
 * workloads").  Builds on bench_util.h; header-only, like it, and
 * usable from C and C++.
 *
 * What a program can rely on:
 *   P1 every program derives W1's sizes and every payload from the same
 *      seeds and functions here, so all implementations do identical work.
 *   P2 peer_spawn() runs this same binary again (/proc/self/exe) in a new
 *      process: a W2 reopen really starts cold of the writer's process, and a
 *      library that reads its environment once per process (libpmemobj reads
 *      PMEM_IS_PMEM_FORCE) gets the setting we want.  The child reports
 *      figures as `VAL key=value ...` lines on its stdout, which the parent
 *      reads back with peer_val(); its stderr is the parent's.
 *   P3 peer_result() prints a RESULT line (bench_util.h B4) and keeps it;
 *      peer_save_results() writes the kept lines to <binary>.results beside
 *      the binary.  bench_store, which bench/run.sh runs after the
 *      bench_peer_* programs (name order), reads them back with
 *      peer_load_result() to print its TARGET lines against the peers.
 */
#ifndef OBJSTORE_PEER_UTIL_H
#define OBJSTORE_PEER_UTIL_H

#include <fcntl.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "bench_util.h"

/* ---- the workloads' constants ---- */

#define W1_SEED_SIZES   UINT64_C(0x57A7E0B1)  /* bench_heap's: same sizes */
#define W1_SIZE_LO      16
#define W1_SIZE_HI      256
#define W1_OBJECTS      1000000
#define W1_HOLDER_SLOTS 1000                  /* objects per holder */

/* W2's node is a 64-byte object as objstore holds it: a 16-byte header, one
 * 8-byte slot and W2_PAYLOAD bytes of payload (the 64-byte size class).
 * Every peer stores the same W2_PAYLOAD bytes plus a link of its own
 * (Boost an offset_ptr, libpmemobj a PMEMoid).  bench_store also runs
 * objstore with W2_PAYLOAD_WIDE bytes (an 88-byte object, the 96-byte class).
 * Every program runs W2 at W2_NODES, then at W2_NODES_BIG (-B, through
 * peer_w2_big()), so that the walk targets are judged at both sizes. */
#define W2_NODES        1000000
#define W2_NODES_BIG    10000000              /* the 10x run */
#define W2_PAYLOAD      40
#define W2_PAYLOAD_WIDE 64

#define W3_MAX_COMMITS  6000
#define W3_MAX_SECONDS  6.0
#define W3_PAYLOAD      64

/* The 8 bytes W1 writes into object i: distinct per object, so a lost or
 * overlapping object shows when read back. */
static inline uint64_t peer_stamp(uint64_t i)
{
    return i * UINT64_C(0x9E3779B97F4A7C15) ^ UINT64_C(0xC0FFEE);
}

/* W1's payload sizes, n of them, W1_SIZE_LO..W1_SIZE_HI (P1). */
static inline uint16_t *peer_w1_sizes(size_t n)
{
    uint16_t *size = (uint16_t *)calloc(n, sizeof *size);
    if (size == NULL)
        bench_die("out of memory for %zu sizes", n);
    bench_rng r = bench_rng_seed(W1_SEED_SIZES);
    for (size_t i = 0; i < n; i++)
        size[i] = (uint16_t)bench_rng_range(&r, W1_SIZE_LO, W1_SIZE_HI);
    return size;
}

static inline size_t peer_w1_holders(size_t n)
{
    return (n + W1_HOLDER_SLOTS - 1) / W1_HOLDER_SLOTS;
}

/* The len payload bytes (a multiple of 8, at most 64) of W2 node i, and of
 * W3 commit i. */
static inline void peer_payload(uint64_t i, uint8_t *out, size_t len)
{
    for (size_t k = 0; k < len / 8; k++) {
        uint64_t v = peer_stamp(i * 8 + (uint64_t)k);
        memcpy(out + 8 * k, &v, 8);
    }
}

/* Folds a node's len payload bytes into a walk's checksum; order-sensitive,
 * so a walk that skips or repeats a node gets another sum. */
static inline uint64_t peer_fold(uint64_t sum, const void *payload, size_t len)
{
    const uint8_t *p = (const uint8_t *)payload;
    for (size_t k = 0; k < len / 8; k++) {
        uint64_t v;
        memcpy(&v, p + 8 * k, 8);
        sum = (sum << 7 | sum >> 57) ^ v;
        sum *= UINT64_C(0x100000001B3);
    }
    return sum;
}

/* The checksum a correct walk of n nodes of len payload bytes gets. */
static inline uint64_t peer_w2_expected(uint64_t n, size_t len)
{
    uint64_t sum = 0;
    uint8_t buf[64];
    for (uint64_t i = 0; i < n; i++) {
        peer_payload(i, buf, len);
        sum = peer_fold(sum, buf, len);
    }
    return sum;
}

/* The node count W2's big run gets: big (0 = no big run), halved while the
 * disk under dir has less than W2_BIG_ROOM bytes a node free, and 0 once it
 * would be no more than nodes (the first run's).  One figure for every
 * program -- twice the largest file a node takes, libpmemobj's 160-byte
 * pool share -- so that they shrink together and bench_store finds each
 * peer's line at its own node count.  Each says on stdout when it shrank. */
#define W2_BIG_ROOM 320.0
static inline size_t peer_w2_big(const char *dir, size_t nodes, size_t big)
{
    struct statvfs vs;
    while (big > nodes && statvfs(dir, &vs) == 0 &&
           (double)vs.f_bavail * (double)vs.f_frsize < W2_BIG_ROOM * (double)big) {
        size_t half = big / 2 > nodes ? big / 2 : 0;
        printf("# W2: %.1f GiB free in %s, too little for %zu nodes: %s %zu\n",
               (double)vs.f_bavail * (double)vs.f_frsize / (1 << 30), dir, big,
               half ? "trying" : "skipping the big run, no more than", half ? half : nodes);
        big = half;
    }
    return big > nodes ? big : 0;
}

/* ---- small helpers ---- */

static inline void *peer_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL)
        bench_die("out of memory for %zu x %zu bytes", n, size);
    return p;
}

/* Size in bytes of the file at path (its length, not its blocks). */
static inline uint64_t peer_file_bytes(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        bench_die("cannot stat %s: %s", path, strerror(errno));
    return (uint64_t)st.st_size;
}

/* fsync of a whole file, for a peer whose own "commit" leaves it to us. */
static inline void peer_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0)
        bench_die("cannot fsync %s: %s", path, strerror(errno));
    close(fd);
}

/* ---- child processes (P2) ---- */

#define PEER_OUT_MAX 4096

/* Runs this binary with args (args[0] is its argv[0]; NULL-terminated) in a
 * new process, with env_name=env_value added to its environment when
 * env_name is not NULL.  Returns its stdout (NUL-terminated, in out) and
 * dies if it fails. */
static inline void peer_spawn(char *const args[], const char *env_name,
                              const char *env_value, char out[PEER_OUT_MAX])
{
    int fds[2];
    fflush(stdout);
    fflush(stderr);
    if (pipe(fds) != 0)
        bench_die("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        bench_die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(fds[0]);
        if (dup2(fds[1], 1) < 0)
            _exit(126);
        close(fds[1]);
        if (env_name != NULL && setenv(env_name, env_value, 1) != 0)
            _exit(126);
        execv("/proc/self/exe", args);
        fprintf(stderr, "bench: cannot exec /proc/self/exe: %s\n", strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    for (;;) {
        ssize_t k = read(fds[0], out + len, PEER_OUT_MAX - 1 - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        len += (size_t)k;
        if (len == PEER_OUT_MAX - 1)
            break;
    }
    out[len] = '\0';
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            bench_die("waitpid: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        bench_die("child '%s %s' failed (status 0x%x)", args[0],
                  args[1] ? args[1] : "", status);
}

/* The number after " key=" in text (a VAL or RESULT line); dies if absent. */
static inline double peer_val(const char *text, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, " %s=", key);
    const char *p = strstr(text, pat);
    if (p == NULL)
        bench_die("no %s in the child's output: %s", key, text);
    return strtod(p + strlen(pat), NULL);
}

/* The same, for an exact 64-bit integer (a checksum). */
static inline uint64_t peer_val_u64(const char *text, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, " %s=", key);
    const char *p = strstr(text, pat);
    if (p == NULL)
        bench_die("no %s in the child's output: %s", key, text);
    return strtoull(p + strlen(pat), NULL, 10);
}

/* ---- results kept for bench_store (P3) ---- */

#define PEER_MAX_RESULTS 32
static char peer__results[PEER_MAX_RESULTS][256];
static int peer__nresults;

static inline void peer_result(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static inline void peer_result(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    bench_result("%s", line);
    if (peer__nresults < PEER_MAX_RESULTS)
        memcpy(peer__results[peer__nresults++], line, sizeof line);
}

/* The directory of this binary, into dir (BENCH_PATH_MAX bytes), and its
 * file name into name (may be NULL). */
static inline void peer_self(char *dir, char *name)
{
    char exe[BENCH_PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0)
        bench_die("readlink /proc/self/exe: %s", strerror(errno));
    exe[k] = '\0';
    char *slash = strrchr(exe, '/');
    *slash = '\0';
    snprintf(dir, BENCH_PATH_MAX, "%s", exe);
    if (name != NULL)
        snprintf(name, BENCH_PATH_MAX, "%s", slash + 1);
}

/* Writes the kept RESULT lines to <binary>.results (replacing it). */
static inline void peer_save_results(void)
{
    char dir[BENCH_PATH_MAX], name[BENCH_PATH_MAX], path[2 * BENCH_PATH_MAX + 16];
    peer_self(dir, name);
    snprintf(path, sizeof path, "%s/%s.results", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        bench_die("cannot write %s: %s", path, strerror(errno));
    for (int i = 0; i < peer__nresults; i++)
        fprintf(f, "RESULT %s\n", peer__results[i]);
    if (fclose(f) != 0)
        bench_die("cannot write %s: %s", path, strerror(errno));
}

/* Reads `key` of the RESULT line of workload wl and implementation impl from
 * prog.results beside this binary; with also (a `key=value` pair, NULL for
 * none), only from a line that holds it too: W2 leaves a line per node
 * count, told apart by "nodes=N".  Returns false (and says why in why) when
 * there is no such file, it is older than max_age_s, or it has no such line;
 * else stores the value and the file's age in seconds. */
static inline bool peer_load_result(const char *prog, const char *wl,
                                    const char *impl, const char *also,
                                    const char *key, double max_age_s,
                                    double *value, double *age_s, char *why,
                                    size_t whylen)
{
    char dir[BENCH_PATH_MAX], path[BENCH_PATH_MAX + 128], line[512];
    char want_wl[64], want_impl[96], want_also[96] = "";
    struct stat st;
    peer_self(dir, NULL);
    snprintf(path, sizeof path, "%s/%s.results", dir, prog);
    if (stat(path, &st) != 0) {
        snprintf(why, whylen, "no %s.results (run %s first)", prog, prog);
        return false;
    }
    *age_s = difftime(time(NULL), st.st_mtime);
    if (*age_s > max_age_s) {
        snprintf(why, whylen, "%s.results is %.0f s old (run %s again)", prog,
                 *age_s, prog);
        return false;
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(why, whylen, "cannot read %s.results", prog);
        return false;
    }
    snprintf(want_wl, sizeof want_wl, " workload=%s ", wl);
    snprintf(want_impl, sizeof want_impl, " impl=%s ", impl);
    /* Left "" without also: strstr finds the empty string in every line. */
    if (also != NULL)
        snprintf(want_also, sizeof want_also, " %s ", also);
    bool found = false;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        /* The line's end becomes a space, so that every key=value, the
         * last too, is followed by one; a line without its newline (a
         * truncated file) keeps its terminator. */
        size_t end = strcspn(line, "\n");
        if (end + 1 < sizeof line) {
            line[end] = ' ';
            line[end + 1] = '\0';
        }
        if (strstr(line, want_wl) != NULL && strstr(line, want_impl) != NULL &&
            strstr(line, want_also) != NULL) {
            char pat[64];
            snprintf(pat, sizeof pat, " %s=", key);
            const char *p = strstr(line, pat);
            if (p != NULL) {
                *value = strtod(p + strlen(pat), NULL);
                found = true;
            }
        }
    }
    fclose(f);
    if (!found)
        snprintf(why, whylen, "no workload=%s impl=%s%s%s %s in %s.results", wl,
                 impl, also != NULL ? " " : "", also != NULL ? also : "", key, prog);
    return found;
}

#endif
