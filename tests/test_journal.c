/*
 * test_journal.c -- the journal (store/journal.c, rules J1..J6): commits
 * that change only heap bytes go to it, one sync each; killed at every step
 * of a script, during the recovery after, and at random, a store reopens
 * exactly at a commit that returned or the one in flight.
 *
 * The workload: root "a" names an object of A_BYTES raw bytes.  Commit i
 * writes i into its word 0 and pattern(i) into bytes 8..8+PAT; every
 * R_EVERY-th commit also points root "r" at a new object holding i (a
 * commit through meta/, between journal ones), and the child checkpoints
 * after commit CKPT_AT (a new journal run).  So the store is at commit c
 * exactly when word 0 is c, the pattern is pattern(c), and root "r" holds
 * the last multiple of R_EVERY up to c.
 */
#include "test_store.h"

#include <pthread.h>
#include <signal.h>

#define A_BYTES 256
#define PAT 128
#define R_EVERY 5
#define SCRIPT 24
#define CKPT_AT 12

/* ---- the workload ---- */

static void setup_store(void)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    root_set(t, "a", new_obj(t, 0, 0, A_BYTES));
    commit(t);
    close_store(s);
}

static int commit_one(objstore *s, uint64_t i)
{
    objstore_txn *t;
    int rc = objstore_begin(s, 0, &t);
    if (rc)
        return rc;
    objstore_oid a;
    uint8_t pat[PAT];
    pattern_into(pat, PAT, i);
    rc = objstore_root_get(t, "a", &a);
    if (!rc)
        rc = objstore_write(t, a, 0, &i, 8);
    if (!rc)
        rc = objstore_write(t, a, 8, pat, PAT);
    if (!rc && i % R_EVERY == 0) {
        objstore_oid o;
        if (!(rc = objstore_new(t, 0, 0, 8, &o)) && !(rc = objstore_write(t, o, 0, &i, 8)))
            rc = objstore_root_set(t, "r", o);
    }
    if (rc) {
        objstore_abort(t);
        return rc;
    }
    return objstore_commit(t);
}

/* Opens the store (replaying what is pending), checks it is exactly at one
 * commit in lo..hi, and returns it. */
static uint64_t check_state(uint64_t lo, uint64_t hi, const char *when)
{
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = rbegin(s);
    objstore_oid a = root_get(t, "a");
    uint64_t c = get_u64(t, a, 0);
    MUST(c >= lo && c <= hi, "%s: the store is at commit %llu, not in %llu..%llu", when, U(c),
         U(lo), U(hi));
    const void *p;
    uint64_t size;
    OK(objstore_get(t, a, &p, &size));
    uint8_t pat[PAT] = {0};   /* before commit 1: the new object's zeros */
    if (c)
        pattern_into(pat, PAT, c);
    MUST(size == A_BYTES && memcmp((const uint8_t *)p + 8, pat, PAT) == 0,
         "%s: commit %llu's counter is there, its pattern is not (half applied)", when, U(c));
    objstore_oid r = 0;
    int rc = objstore_root_get(t, "r", &r);
    uint64_t want = c / R_EVERY * R_EVERY;
    if (want == 0)
        MUST(rc == OBJSTORE_ENOTFOUND, "%s: root r exists at commit %llu", when, U(c));
    else
        MUST(rc == OBJSTORE_OK && get_u64(t, r, 0) == want,
             "%s: root r does not hold %llu at commit %llu", when, U(want), U(c));
    objstore_abort(t);
    verify_clean(s);
    close_store(s);
    return c;
}

/* ---- a child killed by a crash hook ---- */

static int g_pipe = -1;
static long g_kill_at, g_hooks;

static void say(char c)
{
    if (write(g_pipe, &c, 1) != 1)
        _exit(9);
}

static void kill_hook(const char *step)
{
    say('H');
    if (!strcmp(step, "journal-committed") || !strcmp(step, "lmdb-committed"))
        say('C');
    if (++g_hooks == g_kill_at) {
        say('K');
        if (write(g_pipe, step, strlen(step)) < 0 || write(g_pipe, "\n", 1) < 0)
            _exit(9);
        kill(getpid(), SIGKILL);
    }
}

typedef struct child_run {
    long hooks, committed, acked;
    bool killed;
    char step[64];
} child_run;

/* Forks a child that runs fn and then exits, saying what it does into a
 * pipe whose read end goes to *rfd; with kill_at >= 0 the crash hook kills
 * it at hook number kill_at (0: never, but the hooks are told). */
static pid_t spawn(void (*fn)(void), long kill_at, int *rfd)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        g_pipe = p[1];
        g_kill_at = kill_at;
        g_hooks = 0;
        if (kill_at >= 0)
            objstore_set_crash_hook(kill_hook);
        fn();
        _exit(0);
    }
    close(p[1]);
    *rfd = p[0];
    return pid;
}

/* Everything the child said, until it ended; returns the length. */
static size_t read_said(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    ssize_t n;
    while ((n = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = 0;
    close(fd);
    return len;
}

/* Runs fn in a child with the hook killing it at hook number kill_at (0:
 * never) and reports what it said. */
static child_run in_child(long kill_at, void (*fn)(void))
{
    int fd;
    pid_t pid = spawn(fn, kill_at, &fd);
    child_run r = {0};
    char buf[4096];
    size_t len = read_said(fd, buf, sizeof buf);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    for (size_t i = 0; i < len; i++) {
        r.hooks += buf[i] == 'H';
        r.committed += buf[i] == 'C';
        r.acked += buf[i] == 'A';
        if (buf[i] == 'K') {
            r.killed = true;
            snprintf(r.step, sizeof r.step, "%.*s", (int)strcspn(buf + i + 1, "\n"),
                     buf + i + 1);
            break;
        }
    }
    MUST(r.killed ? WIFSIGNALED(st) : WIFEXITED(st) && WEXITSTATUS(st) == 0,
         "the child ended with status %#x", st);
    return r;
}

static void run_script(void)
{
    objstore *s = NULL;
    if (objstore_open(g_store, NULL, &s))
        _exit(1);
    for (uint64_t i = 1; i <= SCRIPT; i++) {
        if (commit_one(s, i))
            _exit(2);
        say('A');
        if (i == CKPT_AT && objstore_checkpoint(s))
            _exit(3);
    }
    if (objstore_close(s))
        _exit(4);
}

/* A fresh store, the script in a child stopped at hook k of points; when
 * says where, for messages. */
static child_run cut_at(long k, long points, void (*fn)(void), const char *how, char *when,
                        size_t n)
{
    ts_rmtree(g_store);
    setup_store();
    child_run r = in_child(k, fn);
    MUST(r.killed, "point %ld of %ld: the child was not stopped", k, points);
    snprintf(when, n, "%s at hook %ld (%s), %ld commits acknowledged", how, k, r.step, r.acked);
    return r;
}

static void just_open(void)
{
    objstore *s = NULL;
    if (objstore_open(g_store, NULL, &s) || objstore_close(s))
        _exit(1);
}

/* The script went to the journal: count its commits there. */
START_TEST(test_heap_only_commits_go_to_the_journal_and_others_to_meta)
{
    setup_store();
    objstore *s = open_store(g_store, NULL);
    for (uint64_t i = 1; i <= 10; i++)
        OK(commit_one(s, i));
    objstore_stats st = get_stats(s);
    ck_assert_uint_eq(st.journal_commits, 8);   /* 5 and 10 set root "r" */
    ck_assert_uint_eq(st.commits, 10);
    close_store(s);
    ck_assert_uint_eq(check_state(10, 10, "reopened"), 10);
    s = open_store(g_store, &(objstore_options){.flags = OBJSTORE_NO_JOURNAL});
    OK(commit_one(s, 11));
    ck_assert_uint_eq(get_stats(s).journal_commits, 0);
    close_store(s);
    ck_assert_uint_eq(check_state(11, 11, "without the journal"), 11);
}
END_TEST

/* A kill at every hook of the script, then at every hook of the recovery
 * that follows (for every third point), then a clean open. */
START_TEST(test_a_kill_at_any_step_of_journal_commits_keeps_exactly_the_committed_state)
{
    setup_store();
    child_run full = in_child(0, run_script);
    ck_assert_int_eq(full.acked, SCRIPT);
    ck_assert_uint_eq(check_state(SCRIPT, SCRIPT, "the whole script"), SCRIPT);
    long points = full.hooks, recoveries = 0, kept_in_flight = 0;
    for (long k = 1; k <= points; k++) {
        char when[128];
        child_run r = cut_at(k, points, run_script, "killed", when, sizeof when);
        /* A commit whose entry was written is there after a kill (the page
         * cache keeps it); one whose commit point passed must be. */
        uint64_t lo = (uint64_t)r.committed;
        uint64_t hi = lo + (!strcmp(r.step, "journal-fdatasync") ? 1 : 0);
        MUST(lo >= (uint64_t)r.acked, "%s: fewer commit points than acknowledgements", when);
        if (k % 3 == 0) {
            /* Kill the recovery at each of its steps in turn. */
            for (long q = 1;; q++) {
                child_run rr = in_child(q, just_open);
                if (!rr.killed)
                    break;
                recoveries++;
            }
        }
        uint64_t c = check_state(lo, hi, when);
        kept_in_flight += c > lo;
    }
    printf("journal crash points: %ld, recovery kills: %ld, in-flight commits kept: %ld\n",
           points, recoveries, kept_in_flight);
    MUST(recoveries > 0, "no recovery was killed");
}
END_TEST

/* ---- many threads: groups in the journal (group.c G9) ---- */

#define GT 4          /* threads */
#define GT_COMMITS 1500

typedef struct gthread {
    objstore *s;
    objstore_oid o;   /* the thread's object: word 0 counts its commits */
    int t, rc;
} gthread;

static void *gthread_run(void *arg)
{
    gthread *g = arg;
    uint8_t line[56];
    for (uint64_t i = 1; i <= GT_COMMITS && !g->rc; i++) {
        objstore_txn *t;
        pattern_into(line, sizeof line, (uint64_t)g->t << 32 | i);
        if ((g->rc = objstore_begin(g->s, 0, &t)))
            break;
        if ((g->rc = objstore_write(t, g->o, 0, &i, 8)) ||
            (g->rc = objstore_write(t, g->o, 8, line, sizeof line))) {
            objstore_abort(t);
            break;
        }
        g->rc = objstore_commit(t);
    }
    return NULL;
}

/* Threads commit heap bytes only: their groups go to the journal and fill
 * its run; past three quarters the next commit runs alone and checkpoints,
 * a new run begins, and the groups go on.  Every commit is there after a
 * reopen. */
START_TEST(test_a_journal_filled_by_groups_checkpoints_and_groups_go_on)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid h = new_obj(t, 0, GT, 0);
    root_set(t, "h", h);
    gthread g[GT];
    for (int i = 0; i < GT; i++) {
        g[i] = (gthread){.s = s, .o = new_obj(t, 0, 0, 64), .t = i};
        set_ref(t, h, (uint32_t)i, g[i].o);
    }
    commit(t);
    pthread_t th[GT];
    for (int i = 0; i < GT; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, gthread_run, &g[i]), 0);
    for (int i = 0; i < GT; i++) {
        pthread_join(th[i], NULL);
        MUST(g[i].rc == OBJSTORE_OK, "thread %d: %d (%s)", i, g[i].rc, objstore_errmsg());
    }
    objstore_stats st = get_stats(s);
    objstore_store_info in;
    OK(objstore_get_store_info(s, &in));
    printf("groups in the journal: %llu commits, %llu grouped in %llu syncs, %llu through "
           "the journal, %llu checkpoints\n", U(st.commits), U(st.grouped_commits),
           U(st.group_syncs), U(st.journal_commits), U(st.checkpoints));
    MUST(st.grouped_commits > 0 && st.journal_commits > st.commits / 2 && st.checkpoints >= 1,
         "%llu grouped, %llu through the journal, %llu checkpoints", U(st.grouped_commits),
         U(st.journal_commits), U(st.checkpoints));
    MUST(in.journal_bytes <= in.journal_file_bytes / 4 * 3 + 64 * KiB,
         "the journal's run holds %llu bytes of %llu", U(in.journal_bytes),
         U(in.journal_file_bytes));
    close_store(s);
    s = open_store(g_store, NULL);
    t = rbegin(s);
    for (int i = 0; i < GT; i++) {
        uint8_t line[56];
        pattern_into(line, sizeof line, (uint64_t)i << 32 | GT_COMMITS);
        const void *p;
        uint64_t size;
        OK(objstore_get(t, get_ref(t, h, (uint32_t)i), &p, &size));
        MUST(get_u64(t, get_ref(t, h, (uint32_t)i), 0) == GT_COMMITS &&
             memcmp((const uint8_t *)p + 8, line, sizeof line) == 0,
             "thread %d's last commit is not there whole", i);
    }
    objstore_abort(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* ---- power loss, as far as a test can make it ---- */

/* What a power cut may leave: any subset of the blocks written since the
 * last sync.  The child keeps a copy of the heap file as of its last sync
 * (at start, and once each checkpoint's heap sync is done) and of the
 * journal as of before each entry's write; where it is killed, it first
 * puts back a random half of the heap's 4 KiB pages that changed since, and
 * -- killed between an entry's write and its sync -- a random half of the
 * entry's 512-byte sectors.  meta/ is left alone: LMDB syncs each commit. */
static uint8_t *g_heap_snap, *g_j_snap;
static size_t g_heap_len, g_j_len;
static uint64_t g_coin;
static char *g_heap_file, *g_journal_file;

static void snap(const char *path, uint8_t **buf, size_t *len)
{
    free(*buf);
    *buf = read_all(path, len);
}

/* Writes back old's bytes over path's, unit by unit where they differ,
 * each with probability one half. */
static void scatter_back(const char *path, const uint8_t *old, size_t oldlen, size_t unit)
{
    size_t len;
    uint8_t *cur = read_all(path, &len);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (!cur || fd < 0)
        _exit(8);
    for (size_t off = 0; off + unit <= len && off + unit <= oldlen; off += unit) {
        g_coin = ts_mix64(g_coin + off);
        if (memcmp(cur + off, old + off, unit) && (g_coin & 1) &&
            pwrite(fd, old + off, unit, (off_t)off) != (ssize_t)unit)
            _exit(8);
    }
    close(fd);
    free(cur);
}

static void power_hook(const char *step)
{
    if (!strcmp(step, "checkpoint-commit") || !strcmp(step, "replay-commit"))
        snap(g_heap_file, &g_heap_snap, &g_heap_len);   /* the heap was just synced */
    if (!strcmp(step, "journal-write"))
        snap(g_journal_file, &g_j_snap, &g_j_len);
    if (g_hooks + 1 == g_kill_at) {
        scatter_back(g_heap_file, g_heap_snap, g_heap_len, 4096);
        if (!strcmp(step, "journal-fdatasync"))
            scatter_back(g_journal_file, g_j_snap, g_j_len, 512);
    }
    kill_hook(step);
}

static void run_script_power(void)
{
    g_heap_file = ts_path(g_store, "heap.1");
    g_journal_file = ts_path(g_store, "journal");
    snap(g_heap_file, &g_heap_snap, &g_heap_len);   /* closed cleanly: synced */
    g_coin = ts_mix64((uint64_t)g_kill_at);
    objstore_set_crash_hook(power_hook);
    run_script();
}

START_TEST(test_a_power_cut_at_any_step_of_journal_commits_keeps_exactly_the_committed_state)
{
    setup_store();
    child_run full = in_child(0, run_script);
    long points = full.hooks, torn = 0, kept = 0;
    for (long k = 1; k <= points; k++) {
        char when[128];
        child_run r = cut_at(k, points, run_script_power, "power cut", when, sizeof when);
        bool in_flight = !strcmp(r.step, "journal-fdatasync");
        uint64_t lo = (uint64_t)r.committed;
        uint64_t c = check_state(lo, lo + in_flight, when);
        torn += in_flight && c == lo;
        kept += c > lo;
    }
    printf("power cuts: %ld points, entries torn away: %ld, kept whole: %ld\n", points, torn,
           kept);
    MUST(torn > 0, "no cut ever tore an entry");
}
END_TEST

/* ---- kill -9 at random ---- */

static void run_forever(void)
{
    objstore *s = NULL;
    if (objstore_open(g_store, NULL, &s))
        _exit(1);
    objstore_txn *t;
    if (objstore_begin(s, OBJSTORE_TXN_RDONLY, &t))
        _exit(2);
    objstore_oid a;
    uint64_t c = 0;
    const void *p;
    uint64_t size;
    if (objstore_root_get(t, "a", &a) || objstore_get(t, a, &p, &size))
        _exit(3);
    memcpy(&c, p, 8);
    objstore_abort(t);
    for (uint64_t i = c + 1;; i++) {
        if (commit_one(s, i))
            _exit(4);
        say('A');
        if (i % 50 == 0 && objstore_checkpoint(s))
            _exit(5);
    }
}

START_TEST(test_kill_9_at_random_during_journal_commits_loses_no_acknowledged_commit)
{
    setup_store();
    uint64_t seed = UINT64_C(0x10C0FFEE) ^ (uint64_t)getpid();
    int rounds = ts_under_sanitizer() ? 8 : 25;
    uint64_t c = 0, total = 0;
    for (int round = 0; round < rounds; round++) {
        int fd;
        pid_t pid = spawn(run_forever, -1, &fd);
        seed = ts_mix64(seed);
        ts_sleep_ms(5 + (unsigned)(seed % 60));
        kill(pid, SIGKILL);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        MUST(WIFSIGNALED(st), "round %d: the child ended on its own (status %#x)", round, st);
        static char buf[1 << 20];
        size_t len = read_said(fd, buf, sizeof buf);
        long acked = 0;
        for (size_t i = 0; i < len; i++)
            acked += buf[i] == 'A';
        char when[96];
        snprintf(when, sizeof when, "round %d, %ld commits acknowledged after %llu", round,
                 acked, U(c));
        uint64_t now = check_state(c + (uint64_t)acked, c + (uint64_t)acked + 1, when);
        total += now - c;
        c = now;
    }
    printf("kill -9: %d rounds, %llu commits kept\n", rounds, U(total));
    MUST(total > (uint64_t)rounds, "too few commits ran to test anything");
}
END_TEST

static Suite *journal_suite(void)
{
    Suite *s = suite_create("journal");
    TCase *tc = ts_tcase(s, "journal", 600);
    tcase_add_test(tc, test_heap_only_commits_go_to_the_journal_and_others_to_meta);
    tcase_add_test(tc, test_a_journal_filled_by_groups_checkpoints_and_groups_go_on);
    tcase_add_test(tc, test_a_kill_at_any_step_of_journal_commits_keeps_exactly_the_committed_state);
    tcase_add_test(tc, test_a_power_cut_at_any_step_of_journal_commits_keeps_exactly_the_committed_state);
    tcase_add_test(tc, test_kill_9_at_random_during_journal_commits_loses_no_acknowledged_commit);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(journal_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
