/*
 * test_gc.c -- the online cycle collector: objstore_collect and the commit
 * threshold free garbage cycles and nothing else.
 */
#include <pthread.h>

#include "test_store.h"

static objstore_collect_stats collect(objstore *s)
{
    objstore_collect_stats st;
    OK(objstore_collect(s, &st));
    return st;
}

/* A ring of n objects (slot 0 -> next), returned by its first member. */
static objstore_oid ring(objstore_txn *t, size_t n, uint32_t nrefs)
{
    objstore_oid first = new_obj(t, 0, nrefs, 16), prev = first;
    for (size_t i = 1; i < n; i++) {
        objstore_oid o = new_obj(t, 0, nrefs, 16);
        set_ref(t, prev, 0, o);
        prev = o;
    }
    set_ref(t, prev, 0, first);
    return first;
}

START_TEST(test_an_unlinked_cycle_is_freed_by_a_collection)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    root_set(t, "cycle", ring(t, 2, 1));
    commit(t);
    uint64_t live = get_stats(s).live_objects;
    ck_assert_uint_eq(live, 2);

    t = wbegin(s);
    OK(objstore_root_del(t, "cycle"));
    commit(t);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.unreachable, 2);   /* refcounting alone cannot free it */

    objstore_collect_stats st = collect(s);
    ck_assert_uint_eq(st.freed, 2);
    ck_assert_int_eq(st.incomplete, 0);
    r = verify_clean(s);
    ck_assert_uint_eq(r.objects, 0);
    ck_assert_uint_eq(get_stats(s).cycle_candidates, 0);
    close_store(s);
}
END_TEST

START_TEST(test_a_reachable_cycle_and_a_pinned_one_survive)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid kept = ring(t, 3, 1), pinned = ring(t, 3, 1);
    objstore_oid holder = new_obj(t, 0, 1, 0);
    set_ref(t, holder, 0, kept);
    root_set(t, "holder", holder);
    root_set(t, "kept", kept);
    root_set(t, "pinned", pinned);
    commit(t);

    t = wbegin(s);
    OK(objstore_root_del(t, "kept"));       /* still held by holder */
    OK(objstore_pin(t, pinned));
    OK(objstore_root_del(t, "pinned"));     /* held by the pin only */
    commit(t);
    objstore_collect_stats st = collect(s);
    ck_assert_uint_eq(st.freed, 0);
    ck_assert_uint_eq(get_stats(s).live_objects, 7);
    verify_clean(s);

    t = rbegin(s);                           /* an unpin makes it a candidate again */
    OK(objstore_unpin(t, pinned));
    commit(t);
    st = collect(s);
    ck_assert_uint_eq(st.freed, 3);
    ck_assert_uint_eq(get_stats(s).live_objects, 4);   /* holder + kept ring */
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.unreachable, 0);
    close_store(s);
}
END_TEST

START_TEST(test_what_only_a_cycle_held_goes_with_it)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid c = ring(t, 4, 2);
    objstore_oid tail = new_obj(t, 0, 1, 100), tail2 = new_obj(t, 0, 0, 100);
    set_ref(t, c, 1, tail);                  /* an acyclic chain hangs off the ring */
    set_ref(t, tail, 0, tail2);
    objstore_oid shared = new_obj(t, 0, 0, 8);
    root_set(t, "ring", c);
    root_set(t, "shared", shared);
    objstore_oid self = new_obj(t, 0, 2, 8);  /* a self-reference is a cycle too */
    set_ref(t, self, 0, self);
    set_ref(t, self, 1, shared);             /* and it holds a survivor */
    root_set(t, "self", self);
    commit(t);

    t = wbegin(s);
    OK(objstore_root_del(t, "ring"));
    OK(objstore_root_del(t, "self"));
    commit(t);
    objstore_collect_stats st = collect(s);
    ck_assert_uint_eq(st.freed, 7);          /* 4 ring members, the tail, self */
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, 1);         /* shared, by its root */
    ck_assert_uint_eq(r.unreachable, 0);
    t = rbegin(s);
    ck_assert_uint_eq(refcount(t, shared), 1);
    commit(t);
    close_store(s);
}
END_TEST

struct big_ring_arg {
    objstore *s;
    size_t n;
    objstore_collect_stats st;
};

static void *collect_thread(void *p)
{
    struct big_ring_arg *a = p;
    OK(objstore_collect(a->s, &a->st));
    return NULL;
}

START_TEST(test_a_ring_of_a_hundred_thousand_is_collected_without_recursion)
{
    size_t n = ts_under_sanitizer() ? 20000 : 100000;
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    root_set(t, "ring", ring(t, n, 1));
    commit(t);
    t = wbegin(s);
    OK(objstore_root_del(t, "ring"));
    commit(t);

    /* On a small stack: recursion over the ring would overflow it. */
    struct big_ring_arg a = {.s = s, .n = n};
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, ts_under_sanitizer() ? 1 << 20 : 256 << 10);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, &at, collect_thread, &a), 0);
    pthread_join(th, NULL);
    pthread_attr_destroy(&at);
    ck_assert_uint_eq(a.st.freed, n);
    ck_assert_uint_eq(get_stats(s).live_objects, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_a_scan_cut_by_its_budget_frees_nothing_wrong)
{
    objstore_options o = {.gc_budget = 100, .gc_threshold = UINT64_MAX};
    objstore *s = new_store(&o);
    objstore_txn *t = wbegin(s);
    root_set(t, "ring", ring(t, 1000, 1));
    objstore_oid live = ring(t, 50, 1);
    root_set(t, "live", live);
    commit(t);
    t = wbegin(s);
    OK(objstore_root_del(t, "ring"));
    root_set(t, "alias", live);
    commit(t);
    t = wbegin(s);
    OK(objstore_root_del(t, "alias"));        /* a candidate in the live ring too */
    commit(t);

    objstore_collect_stats st = collect(s);
    ck_assert_int_eq(st.incomplete, 1);
    ck_assert_uint_eq(st.freed, 0);           /* the big ring was cut: kept for later */
    verify_clean(s);
    ck_assert_uint_ge(get_stats(s).cycle_candidates, 1);

    /* With room to scan, the next collection frees it, and only it. */
    s = reopen(s, &(objstore_options){.gc_threshold = UINT64_MAX});
    st = collect(s);
    ck_assert_int_eq(st.incomplete, 0);
    ck_assert_uint_eq(st.freed, 1000);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, 50);
    close_store(s);
}
END_TEST

START_TEST(test_commits_collect_when_candidates_reach_the_threshold)
{
    objstore_options o = {.gc_threshold = 20};
    objstore *s = new_store(&o);
    for (int round = 0; round < 10; round++) {
        objstore_txn *t = wbegin(s);
        for (int i = 0; i < 5; i++) {
            char name[32];
            snprintf(name, sizeof name, "c%d", i);
            root_set(t, name, ring(t, 3, 1));   /* replaces (and orphans) last round's */
        }
        commit(t);
    }
    objstore_stats st = get_stats(s);
    ck_assert_uint_gt(st.collections, 0);
    ck_assert_uint_gt(st.cycles_freed, 0);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_lt(r.unreachable, 20 * 3 + 15);
    ck_assert_uint_eq(collect(s).incomplete, 0);
    r = verify_clean(s);
    ck_assert_uint_eq(r.unreachable, 0);
    ck_assert_uint_eq(r.objects, 15);
    close_store(s);
}
END_TEST

static uint64_t g_rng;
static uint32_t rnd(uint32_t n)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33) % n;
}

/* Random graphs with cycles: after a full collection, nothing unreachable
 * is left and every count is exact (verify), across aborts and reopens. */
START_TEST(test_random_graphs_leave_nothing_unreachable_after_a_collection)
{
    objstore *s = new_store(&(objstore_options){.gc_threshold = 64});
    g_rng = 42;
    enum { NOBJ = 300, SLOTS = 3 };
    int rounds = ts_under_sanitizer() ? 40 : 120;
    for (int round = 0; round < rounds; round++) {
        objstore_txn *t = wbegin(s);
        objstore_oid holder;
        if (objstore_root_get(t, "holder", &holder) == OBJSTORE_ENOTFOUND) {
            holder = new_obj(t, 0, NOBJ, 0);
            root_set(t, "holder", holder);
        }
        for (int k = 0; k < 40; k++) {
            uint32_t i = rnd(NOBJ), j = rnd(NOBJ);
            objstore_oid cur = get_ref(t, holder, i);
            switch (rnd(4)) {
            case 0:   /* a new object, held by the holder */
                set_ref(t, holder, i, new_obj(t, 0, SLOTS, rnd(100)));
                break;
            case 1:   /* an edge between two held objects (cycles welcome) */
                if (cur && get_ref(t, holder, j))
                    set_ref(t, cur, rnd(SLOTS), get_ref(t, holder, j));
                break;
            case 2:   /* let go of one: it may now live only through cycles */
                set_ref(t, holder, i, 0);
                break;
            default:  /* drop an edge */
                if (cur)
                    set_ref(t, cur, rnd(SLOTS), 0);
                break;
            }
        }
        if (rnd(6) == 0)
            objstore_abort(t);
        else
            commit(t);
        if (rnd(15) == 0)
            s = reopen(s, &(objstore_options){.gc_threshold = 64});
        verify_clean(s);
    }
    objstore_collect_stats st = collect(s);
    ck_assert_int_eq(st.incomplete, 0);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.unreachable, 0);
    ck_assert_uint_eq(r.objects, r.reachable);
    close_store(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gc");
    TCase *tc = ts_tcase(s, "cycles", 300);
    tcase_add_test(tc, test_an_unlinked_cycle_is_freed_by_a_collection);
    tcase_add_test(tc, test_a_reachable_cycle_and_a_pinned_one_survive);
    tcase_add_test(tc, test_what_only_a_cycle_held_goes_with_it);
    tcase_add_test(tc, test_a_ring_of_a_hundred_thousand_is_collected_without_recursion);
    tcase_add_test(tc, test_a_scan_cut_by_its_budget_frees_nothing_wrong);
    tcase_add_test(tc, test_commits_collect_when_candidates_reach_the_threshold);
    tcase_add_test(tc, test_random_graphs_leave_nothing_unreachable_after_a_collection);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
