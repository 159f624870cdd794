/*
 * test_store.h -- helpers shared by the store suites (tests/test_store_*.c),
 * written against the public header objstore.h and the admin header.
 *
 * Everything here is static inline so that a suite that uses only part of it
 * compiles without unused-function warnings.
 *
 * Conventions:
 *   - each test case gets a root directory (unchecked fixture, removed by the
 *     runner even when a test failed) and each test a fresh directory below it
 *     (checked fixture); g_store names a path inside it that does not exist
 *     yet, for the test to create a store at;
 *   - OK(expr) asserts OBJSTORE_OK and prints the library's message if not;
 *     EXPECT(code, expr) asserts a given failure and that it left a message;
 *   - hot loops use MUST(), which only reaches Check on failure (a passing
 *     ck_assert talks to the runner, far too slow a million times over).
 */
#ifndef OBJSTORE_TEST_STORE_H
#define OBJSTORE_TEST_STORE_H

#include <check.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "objstore.h"
#include "objstore_admin.h"
#include "support.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define U(x) ((unsigned long long)(x))

#define MUST(cond, ...)                  \
    do {                                 \
        if (!(cond))                     \
            ck_abort_msg(__VA_ARGS__);   \
    } while (0)

/* The message is copied at once: it is valid only until the next call. */
#define OK(expr)                                                             \
    do {                                                                     \
        int ok_rc_ = (expr);                                                 \
        if (ok_rc_ != OBJSTORE_OK) {                                         \
            char ok_msg_[512];                                               \
            snprintf(ok_msg_, sizeof ok_msg_, "%s", objstore_errmsg());      \
            ck_abort_msg("%s = %d (%s): %s", #expr, ok_rc_,                  \
                         objstore_strerror(ok_rc_), ok_msg_);                \
        }                                                                    \
    } while (0)

#define EXPECT(code, expr)                                                   \
    do {                                                                     \
        int ex_rc_ = (expr);                                                 \
        char ex_msg_[512];                                                   \
        snprintf(ex_msg_, sizeof ex_msg_, "%s", objstore_errmsg());          \
        int ex_want_ = (code);                                               \
        MUST(ex_rc_ == ex_want_, "%s = %d (%s), expected %d (%s): %s",       \
             #expr, ex_rc_, objstore_strerror(ex_rc_), ex_want_,             \
             objstore_strerror(ex_want_), ex_msg_);                          \
        MUST(ex_msg_[0] != '\0', "%s failed with %d but left no message",    \
             #expr, ex_rc_);                                                 \
    } while (0)


/* ------------------------------------------------------------------ */
/* fixtures                                                             */

static char *g_dir;      /* one per test */
static char *g_store;    /* g_dir/store: does not exist before the test */



static inline void dir_setup(void)
{
    g_dir = ts_test_dir();
    g_store = ts_path(g_dir, "store");
    ck_assert_ptr_nonnull(g_store);
}

static inline void dir_teardown(void)
{
    ts_rmtree(g_dir);
    free(g_dir);
    free(g_store);
    g_dir = g_store = NULL;
}

static inline TCase *ts_tcase(Suite *s, const char *name, double timeout)
{
    TCase *tc = tcase_create(name);
    tcase_add_unchecked_fixture(tc, ts_root_setup, ts_root_teardown);
    tcase_add_checked_fixture(tc, dir_setup, dir_teardown);
    tcase_set_timeout(tc, timeout);
    suite_add_tcase(s, tc);
    return tc;
}

/* ------------------------------------------------------------------ */
/* stores and transactions                                              */

static inline void create_store(const char *dir, const objstore_options *o)
{
    OK(objstore_create(dir, o));
}

static inline objstore *open_store(const char *dir, const objstore_options *o)
{
    objstore *s = NULL;
    OK(objstore_open(dir, o, &s));
    ck_assert_ptr_nonnull(s);
    return s;
}

/* Creates g_store with o and opens it with o. */
static inline objstore *new_store(const objstore_options *o)
{
    create_store(g_store, o);
    return open_store(g_store, o);
}

static inline void close_store(objstore *s)
{
    OK(objstore_close(s));
}

static inline objstore *reopen(objstore *s, const objstore_options *o)
{
    close_store(s);
    return open_store(g_store, o);
}

static inline objstore_txn *wbegin(objstore *s)
{
    objstore_txn *t = NULL;
    OK(objstore_begin(s, 0, &t));
    ck_assert_ptr_nonnull(t);
    return t;
}

static inline objstore_txn *rbegin(objstore *s)
{
    objstore_txn *t = NULL;
    OK(objstore_begin(s, OBJSTORE_TXN_RDONLY, &t));
    ck_assert_ptr_nonnull(t);
    return t;
}

static inline void commit(objstore_txn *t)
{
    OK(objstore_commit(t));
}

/* An empty write transaction, committed: drives bounded frees. */
static inline void empty_commit(objstore *s)
{
    commit(wbegin(s));
}

static inline objstore_stats get_stats(objstore *s)
{
    objstore_stats st;
    memset(&st, 0, sizeof st);
    OK(objstore_get_stats(s, &st));
    return st;
}

/* Runs verify and insists on no problem at all; returns the report. */
#define verify_clean(s) verify_clean_at((s), __FILE__, __LINE__)
static inline objstore_verify_report verify_clean_at(objstore *s, const char *file,
                                                     int line)
{
    objstore_verify_report r;
    memset(&r, 0, sizeof r);
    OK(objstore_verify(s, &r));
    MUST(r.total_problems == 0,
         "%s:%d: verify found %llu problems (heap %llu, badslots %llu, dangling "
         "%llu, badroot %llu, count %llu, leak %llu, badzct %llu, badcand %llu, "
         "badtype %llu); first: %s", file, line, U(r.total_problems),
         U(r.problems[OBJSTORE_P_HEAP]), U(r.problems[OBJSTORE_P_BADSLOTS]),
         U(r.problems[OBJSTORE_P_DANGLING]), U(r.problems[OBJSTORE_P_BADROOT]),
         U(r.problems[OBJSTORE_P_COUNT]), U(r.problems[OBJSTORE_P_LEAK]),
         U(r.problems[OBJSTORE_P_BADZCT]), U(r.problems[OBJSTORE_P_BADCAND]),
         U(r.problems[OBJSTORE_P_BADTYPE]), r.first_problem);
    return r;
}

/* ------------------------------------------------------------------ */
/* objects                                                              */

static inline objstore_oid new_obj(objstore_txn *t, uint32_t type, uint32_t nrefs,
                                   uint64_t size)
{
    objstore_oid o = 0;
    int rc = objstore_new(t, type, nrefs, size, &o);
    MUST(rc == OBJSTORE_OK, "objstore_new(type %u, nrefs %u, size %llu) = %d: %s",
         type, nrefs, U(size), rc, objstore_errmsg());
    MUST(o != 0, "objstore_new returned oid 0");
    return o;
}

static inline void set_ref(objstore_txn *t, objstore_oid o, uint32_t slot,
                           objstore_oid target)
{
    int rc = objstore_set_ref(t, o, slot, target);
    MUST(rc == OBJSTORE_OK, "objstore_set_ref(%llu, %u, %llu) = %d: %s", U(o), slot,
         U(target), rc, objstore_errmsg());
}

static inline objstore_oid get_ref(objstore_txn *t, objstore_oid o, uint32_t slot)
{
    objstore_oid target = 0;
    int rc = objstore_get_ref(t, o, slot, &target);
    MUST(rc == OBJSTORE_OK, "objstore_get_ref(%llu, %u) = %d: %s", U(o), slot, rc,
         objstore_errmsg());
    return target;
}

static inline uint64_t refcount(objstore_txn *t, objstore_oid o)
{
    uint64_t c = 0;
    int rc = objstore_getrefcount(t, o, &c);
    MUST(rc == OBJSTORE_OK, "objstore_getrefcount(%llu) = %d: %s", U(o), rc,
         objstore_errmsg());
    return c;
}

static inline void root_set(objstore_txn *t, const char *name, objstore_oid o)
{
    int rc = objstore_root_set(t, name, o);
    MUST(rc == OBJSTORE_OK, "objstore_root_set(%s, %llu) = %d: %s", name, U(o), rc,
         objstore_errmsg());
}

static inline objstore_oid root_get(objstore_txn *t, const char *name)
{
    objstore_oid o = 0;
    int rc = objstore_root_get(t, name, &o);
    MUST(rc == OBJSTORE_OK, "objstore_root_get(%s) = %d: %s", name, rc,
         objstore_errmsg());
    return o;
}

/* True when oid names a live object (objstore_info succeeds); any failure
 * other than OBJSTORE_EBADOID fails the test. */
static inline bool is_live(objstore_txn *t, objstore_oid o)
{
    objstore_objinfo info;
    int rc = objstore_info(t, o, &info);
    MUST(rc == OBJSTORE_OK || rc == OBJSTORE_EBADOID,
         "objstore_info(%llu) = %d: %s", U(o), rc, objstore_errmsg());
    return rc == OBJSTORE_OK;
}

static inline void put_u64(objstore_txn *t, objstore_oid o, uint64_t off, uint64_t v)
{
    int rc = objstore_write(t, o, off, &v, sizeof v);
    MUST(rc == OBJSTORE_OK, "objstore_write(%llu, +%llu, 8) = %d: %s", U(o), U(off),
         rc, objstore_errmsg());
}

static inline uint64_t get_u64(objstore_txn *t, objstore_oid o, uint64_t off)
{
    const void *p = NULL;
    uint64_t size = 0, v;
    int rc = objstore_get(t, o, &p, &size);
    MUST(rc == OBJSTORE_OK, "objstore_get(%llu) = %d: %s", U(o), rc, objstore_errmsg());
    MUST(off + 8 <= size, "object %llu has %llu payload bytes, wanted +%llu..+%llu",
         U(o), U(size), U(off), U(off + 8));
    memcpy(&v, (const uint8_t *)p + off, 8);
    return v;
}

/* ------------------------------------------------------------------ */
/* files                                                                */

static inline uint64_t ts_mix64(uint64_t x)
{
    x += UINT64_C(0x9E3779B97F4A7C15);
    x = (x ^ (x >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94D049BB133111EB);
    return x ^ (x >> 31);
}

static inline void pattern_into(uint8_t *p, uint64_t len, uint64_t seed)
{
    for (uint64_t i = 0; i < len; i += 8) {
        uint64_t w = ts_mix64(seed + i);
        memcpy(p + i, &w, len - i < 8 ? len - i : 8);
    }
}

static inline bool path_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* The whole file, malloc'd (NULL and *len 0 when it cannot be read). */
static inline uint8_t *read_all(const char *path, size_t *len)
{
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    uint8_t *buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    ck_assert_ptr_nonnull(buf);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    *len = got;
    return buf;
}

static inline void write_all(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)done);
        ck_assert_msg(n > 0, "write %s: %s", path, strerror(errno));
        done += (size_t)n;
    }
    ck_assert_int_eq(fsync(fd), 0);
    close(fd);
}

/* Waits for a child and returns its exit code; a signal fails the test. */
static inline int wait_child(pid_t pid)
{
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    MUST(!WIFSIGNALED(st), "the child died of signal %d", WTERMSIG(st));
    ck_assert(WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* ------------------------------------------------------------------ */
/* the logical digest, for collection and compaction suites              */

/* Options that leave all collection to explicit calls. */
static const objstore_options manual __attribute__((unused)) = {.gc_threshold = UINT64_MAX};

typedef struct { uint8_t d[16]; } dig_t;

static inline dig_t logical_digest(objstore *s)
{
    dig_t d;
    OK(objstore_digest(s, d.d, NULL));
    return d;
}

#define SAME_DIGEST(a, b) MUST(memcmp((a).d, (b).d, 16) == 0, "digests differ")
#define OTHER_DIGEST(a, b) MUST(memcmp((a).d, (b).d, 16) != 0, "digests are equal")

/* ------------------------------------------------------------------ */
/* commits a crash leaves behind                                        */

/* In a child process: opens g_store, makes n commits, each a write
 * transaction in which fn(t, i, arg) makes its changes, then exits without
 * closing, so the redo records stay in meta/ as a crash leaves them.  The
 * test fails if the child could not (the exit code names the step: 1 open,
 * 2 begin, 3 fn, 4 commit). */
typedef int (*ts_commit_fn)(objstore_txn *t, int i, void *arg);

static inline void commits_in_child_then_vanish(int n, ts_commit_fn fn, void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        objstore *s = NULL;
        if (objstore_open(g_store, NULL, &s) != OBJSTORE_OK)
            _exit(1);
        for (int i = 0; i < n; i++) {
            objstore_txn *t = NULL;
            if (objstore_begin(s, 0, &t) != OBJSTORE_OK)
                _exit(2);
            if (fn(t, i, arg) != OBJSTORE_OK)
                _exit(3);
            if (objstore_commit(t) != OBJSTORE_OK)
                _exit(4);
        }
        _exit(0);
    }
    int code = wait_child(pid);
    ck_assert_msg(code == 0, "the committing child failed at step %d", code);
}

/* ------------------------------------------------------------------ */
/* the fault shim (tests/fault_shim.c)                                  */

/* fault_shim.so, built beside the test programs. */
static inline char *fault_shim_path(void)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    ck_assert(n > 0);
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    return ts_path(exe, "fault_shim.so");
}

/* In a forked child: runs this test program again with argv, the shim
 * preloaded: calls on files below dir count, call number `at` fails with
 * err ("ENOSPC" or "EIO"; 0: none fails), the shim writes its report to
 * report at exit.  Does not return. */
static inline void exec_with_fault_shim(const char *shim, const char *dir, unsigned long at,
                                        const char *err, const char *report, char **argv)
{
    char atbuf[32];
    snprintf(atbuf, sizeof atbuf, "%lu", at);
    setenv("LD_PRELOAD", shim, 1);
    setenv("OBJSTORE_FAULT_DIR", dir, 1);
    setenv("OBJSTORE_FAULT_AT", atbuf, 1);
    setenv("OBJSTORE_FAULT_ERRNO", err, 1);
    setenv("OBJSTORE_FAULT_REPORT", report, 1);
    /* The shim comes before the sanitizer's runtime in the list, and a
     * child may leave its store open on purpose. */
    const char *asan = getenv("ASAN_OPTIONS");
    char opts[1024];
    snprintf(opts, sizeof opts, "%s%sverify_asan_link_order=0:detect_leaks=0",
             asan ? asan : "", asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    execv("/proc/self/exe", argv);
    _exit(127);
}

#endif
