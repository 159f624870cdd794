/*
 * test_gc_crash.c -- crashes during a commit that collects: a child runs
 * one transaction that makes young cycles (freed by its commit's young
 * collection), links one young cycle (kept), and drops an old rooted ring
 * past the threshold (freed by the candidate collection), then closes; it
 * _exit()s at its N-th durability step (objstore_set_crash_hook), for
 * N = 1, 2, ... until it finishes.  After each crash the reopened store is
 * exactly the state before that commit or the state after it: counts exact,
 * nothing unreachable (no young garbage and no half-freed cycle).
 */
#include "test_store.h"

static int g_crash_at, g_steps;

static void crash_hook(const char *step)
{
    (void)step;
    if (++g_steps == g_crash_at)
        _exit(77);
}

static objstore_oid ring(objstore_txn *t, size_t n)
{
    objstore_oid first = new_obj(t, 0, 1, 16), prev = first;
    for (size_t i = 1; i < n; i++) {
        objstore_oid o = new_obj(t, 0, 1, 16);
        set_ref(t, prev, 0, o);
        prev = o;
    }
    set_ref(t, prev, 0, first);
    return first;
}

/* Runs in the child: no Check calls, exit codes only. */
static void child(const char *dir, int crash_at)
{
    objstore *s;
    objstore_options o = {.gc_threshold = 1};
    if (objstore_open(dir, &o, &s))
        _exit(2);
    g_crash_at = crash_at;
    g_steps = 0;
    objstore_set_crash_hook(crash_hook);
    objstore_txn *t;
    if (objstore_begin(s, 0, &t))
        _exit(3);
    objstore_oid holder, x;
    if (objstore_root_get(t, "keep", &holder))
        _exit(4);
    for (int i = 0; i < 50; i++) {            /* young garbage: 50 2-cycles */
        objstore_oid a, b;
        if (objstore_new(t, 0, 1, 32, &a) || objstore_new(t, 0, 1, 32, &b) ||
            objstore_set_ref(t, a, 0, b) || objstore_set_ref(t, b, 0, a))
            _exit(5);
    }
    if (objstore_new(t, 0, 1, 32, &x) || objstore_set_ref(t, x, 0, x) ||
        objstore_set_ref(t, holder, 0, x))    /* a young cycle kept */
        _exit(6);
    if (objstore_root_del(t, "old"))          /* an old ring, now garbage */
        _exit(7);
    if (objstore_commit(t))
        _exit(8);
    if (objstore_close(s))
        _exit(9);
    _exit(0);
}

START_TEST(test_a_crash_in_a_commit_that_collects_leaves_before_or_after)
{
    int finished = 0, before = 0, after = 0, n;
    for (n = 1; n < 200 && !finished; n++) {
        objstore *s = new_store(NULL);
        objstore_txn *t = wbegin(s);
        objstore_oid holder = new_obj(t, 0, 1, 8);
        root_set(t, "keep", holder);
        root_set(t, "old", ring(t, 3));
        commit(t);
        close_store(s);

        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0)
            child(g_store, n);
        int code = wait_child(pid);
        MUST(code == 0 || code == 77, "child exited with %d at step %d", code, n);
        finished = code == 0;

        s = open_store(g_store, NULL);
        objstore_verify_report r = verify_clean(s);
        ck_assert_uint_eq(r.unreachable, 0);
        t = rbegin(s);
        holder = root_get(t, "keep");
        objstore_oid old = 0;
        bool has_old = objstore_root_get(t, "old", &old) == OBJSTORE_OK;
        objstore_oid kept = get_ref(t, holder, 0);
        commit(t);
        uint64_t live = get_stats(s).live_objects;
        if (has_old) {                         /* before: holder + ring */
            MUST(kept == 0 && live == 4, "step %d: before, but slot %llu, %llu live", n,
                 U(kept), U(live));
            before++;
        } else {                               /* after: holder + the kept self-cycle */
            MUST(kept != 0 && live == 2, "step %d: after, but slot %llu, %llu live", n,
                 U(kept), U(live));
            after++;
        }
        close_store(s);
        ts_rmtree(g_store);
    }
    printf("gc crash points: %d (store before the commit %d times, after it %d)\n",
           before + after, before, after);
    ck_assert_int_eq(finished, 1);
    ck_assert_int_gt(before, 0);
    ck_assert_int_gt(after, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gc_crash");
    TCase *tc = ts_tcase(s, "crash", 300);
    tcase_add_test(tc, test_a_crash_in_a_commit_that_collects_leaves_before_or_after);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
