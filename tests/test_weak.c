/*
 * test_weak.c -- weak references: they read as their target while it lives
 * and as 0 after the commit that freed it, whatever freed it (a count at 0,
 * the cycle collector, the young collection), across aborts, reopens and
 * crashes; caches drop entries whose value died; a cycle with one weak
 * edge needs no collector.
 */
#include "test_store.h"

static objstore_oid wget(objstore_txn *t, objstore_oid w)
{
    objstore_oid x;
    OK(objstore_weakref_get(t, w, &x));
    return x;
}

static objstore_oid weak(objstore_txn *t, objstore_oid target)
{
    objstore_oid w;
    OK(objstore_weakref_new(t, target, &w));
    return w;
}

START_TEST(test_a_weak_reference_reads_its_target_until_the_commit_that_frees_it)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 0, 8);
    root_set(t, "x", x);
    objstore_oid w = weak(t, x);
    root_set(t, "w", w);
    ck_assert_uint_eq(wget(t, w), x);
    ck_assert_uint_eq(refcount(t, x), 1);     /* it does not count */
    commit(t);

    t = wbegin(s);
    ck_assert_uint_eq(wget(t, w), x);
    OK(objstore_root_del(t, "x"));
    ck_assert_uint_eq(wget(t, w), x);         /* freed at commit, not before */
    commit(t);
    t = rbegin(s);
    ck_assert_uint_eq(wget(t, w), 0);
    commit(t);

    t = wbegin(s);                            /* the freed block may be reused ... */
    objstore_oid y = new_obj(t, 0, 0, 8);
    root_set(t, "y", y);
    commit(t);
    t = rbegin(s);
    ck_assert_uint_eq(wget(t, w), 0);         /* ... and the weak one stays 0 */
    commit(t);
    verify_clean(s);
    s = reopen(s, NULL);
    t = rbegin(s);
    ck_assert_uint_eq(wget(t, w), 0);
    commit(t);
    close_store(s);
}
END_TEST

START_TEST(test_weak_references_survive_a_reopen_and_are_cleared_after_it)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 0, 8);
    root_set(t, "x", x);
    root_set(t, "w1", weak(t, x));
    root_set(t, "w2", weak(t, x));
    commit(t);
    s = reopen(s, NULL);
    t = wbegin(s);
    objstore_oid w1 = root_get(t, "w1"), w2 = root_get(t, "w2");
    ck_assert_uint_eq(wget(t, w1), x);
    ck_assert_uint_eq(wget(t, w2), x);
    OK(objstore_root_del(t, "w2"));           /* one weak reference goes first */
    OK(objstore_root_del(t, "x"));
    commit(t);
    t = rbegin(s);
    ck_assert_uint_eq(wget(t, w1), 0);
    commit(t);
    s = reopen(s, NULL);
    ck_assert_uint_eq(get_stats(s).live_objects, 1);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_an_aborted_transaction_leaves_weak_references_as_they_were)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 0, 8);
    root_set(t, "x", x);
    objstore_oid w = weak(t, x);
    root_set(t, "w", w);
    commit(t);
    t = wbegin(s);
    root_set(t, "w2", weak(t, x));
    objstore_abort(t);
    t = wbegin(s);                            /* a free that is rolled back */
    OK(objstore_root_del(t, "x"));
    objstore_abort(t);
    t = rbegin(s);
    ck_assert_uint_eq(wget(t, w), x);
    commit(t);
    t = wbegin(s);
    OK(objstore_root_del(t, "x"));
    commit(t);
    t = rbegin(s);
    ck_assert_uint_eq(wget(t, w), 0);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* A cache: key -> weak reference to a value held elsewhere; an entry reads
 * 0 once its value is gone. */
START_TEST(test_a_cache_of_weak_references_drops_entries_whose_value_died)
{
    enum { N = 100 };
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid cache = new_obj(t, 0, N, 0), owner = new_obj(t, 0, N, 0);
    for (uint32_t i = 0; i < N; i++) {
        objstore_oid v = new_obj(t, 0, 0, 64);
        set_ref(t, owner, i, v);
        set_ref(t, cache, i, weak(t, v));
    }
    root_set(t, "cache", cache);
    root_set(t, "owner", owner);
    commit(t);
    t = wbegin(s);
    for (uint32_t i = 0; i < N; i += 2)
        set_ref(t, owner, i, 0);              /* half the values die */
    commit(t);
    t = rbegin(s);
    for (uint32_t i = 0; i < N; i++) {
        objstore_oid v = wget(t, get_ref(t, cache, i));
        if (i % 2)
            ck_assert_uint_eq(v, get_ref(t, owner, i));
        else
            ck_assert_uint_eq(v, 0);
    }
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 2 + N + N / 2);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* parent -> child strongly, child -> parent weakly: no cycle to collect. */
START_TEST(test_a_cycle_with_one_weak_edge_is_freed_without_the_collector)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid parent = new_obj(t, 0, 1, 8), child = new_obj(t, 0, 1, 8);
    set_ref(t, parent, 0, child);
    set_ref(t, child, 0, weak(t, parent));
    root_set(t, "parent", parent);
    commit(t);
    t = wbegin(s);
    OK(objstore_root_del(t, "parent"));
    commit(t);
    objstore_stats st = get_stats(s);
    ck_assert_uint_eq(st.live_objects, 0);
    ck_assert_uint_eq(st.cycles_freed, 0);
    ck_assert_uint_eq(st.objects_freed, 3);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_targets_freed_by_the_collectors_clear_their_weak_references)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 8), b = new_obj(t, 0, 1, 8);
    set_ref(t, a, 0, b);
    set_ref(t, b, 0, a);
    root_set(t, "a", a);
    objstore_oid wa = weak(t, a);
    root_set(t, "wa", wa);
    commit(t);
    t = wbegin(s);
    OK(objstore_root_del(t, "a"));
    commit(t);
    t = rbegin(s);
    ck_assert_uint_eq(wget(t, wa), a);        /* a garbage cycle, not yet found */
    commit(t);
    OK(objstore_collect(s, NULL));
    t = wbegin(s);
    ck_assert_uint_eq(wget(t, wa), 0);
    /* a young cycle with a weak reference to it, freed by its commit */
    objstore_oid c = new_obj(t, 0, 1, 8);
    set_ref(t, c, 0, c);
    objstore_oid wc = weak(t, c);
    root_set(t, "wc", wc);
    commit(t);
    t = rbegin(s);
    ck_assert_uint_eq(wget(t, wc), 0);
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 2);
    verify_clean(s);
    s = reopen(s, NULL);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_weak_reference_calls_refuse_what_is_not_one)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 0, 8), w;
    root_set(t, "x", x);
    objstore_oid out;
    EXPECT(OBJSTORE_EBADOID, objstore_weakref_get(t, x, &out));   /* no such type yet */
    EXPECT(OBJSTORE_EBADOID, objstore_weakref_new(t, 0, &w));
    EXPECT(OBJSTORE_EBADOID, objstore_weakref_new(t, x + 16, &w));
    w = weak(t, x);
    EXPECT(OBJSTORE_EBADOID, objstore_weakref_get(t, x, &out));
    EXPECT(OBJSTORE_EBADOID, objstore_weakref_get(t, 0, &out));
    commit(t);                                /* w was never linked: freed */
    t = rbegin(s);
    EXPECT(OBJSTORE_EREADONLY, objstore_weakref_new(t, x, &w));
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 1);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* A weak reference's payload overwritten by hand (the API says not to):
 * reads are refused, and neither it nor its old target is stuck. */
START_TEST(test_an_overwritten_weak_reference_blocks_no_free)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 0, 8), y = new_obj(t, 0, 0, 8);
    root_set(t, "x", x);
    root_set(t, "y", y);
    objstore_oid w = weak(t, x);
    root_set(t, "w", w);
    commit(t);
    t = wbegin(s);
    uint64_t bogus = x + 8;
    OK(objstore_write(t, w, 0, &bogus, 8));
    objstore_oid out;
    EXPECT(OBJSTORE_ECORRUPT, objstore_weakref_get(t, w, &out));
    OK(objstore_write(t, w, 0, &y, 8));       /* names another object now */
    commit(t);
    t = wbegin(s);
    OK(objstore_root_del(t, "x"));            /* its index entry says x */
    commit(t);
    t = wbegin(s);
    ck_assert_uint_eq(wget(t, w), y);         /* the heap was left as written */
    OK(objstore_root_del(t, "w"));
    OK(objstore_root_del(t, "y"));
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_a_full_collection_clears_the_weak_references_to_what_it_frees)
{
    objstore *s = new_store(NULL);
    OK(objstore_gc_disable(s));               /* only the full collection frees */
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 8), b = new_obj(t, 0, 1, 8);
    set_ref(t, a, 0, b);
    set_ref(t, b, 0, a);
    root_set(t, "a", a);
    objstore_oid w = weak(t, a);
    root_set(t, "w", w);
    commit(t);
    t = wbegin(s);
    OK(objstore_root_del(t, "a"));
    commit(t);
    objstore_gc_stats st;
    OK(objstore_full_collect(s, NULL, &st));
    ck_assert_uint_eq(st.freed, 2);
    t = rbegin(s);
    ck_assert_uint_eq(wget(t, w), 0);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_a_compaction_moves_weak_references_with_their_targets)
{
    objstore *s = new_store(NULL);
    OK(objstore_gc_disable(s));
    objstore_txn *t = wbegin(s);
    objstore_oid pad = new_obj(t, 0, 0, 4000);   /* so that oids move */
    root_set(t, "pad", pad);
    objstore_oid x = new_obj(t, 0, 0, 8), g = new_obj(t, 0, 1, 8);
    set_ref(t, g, 0, g);
    root_set(t, "x", x);
    root_set(t, "g", g);
    root_set(t, "wx", weak(t, x));
    root_set(t, "wg", weak(t, g));
    commit(t);
    t = wbegin(s);
    OK(objstore_root_del(t, "pad"));
    OK(objstore_root_del(t, "g"));           /* a cycle: garbage, not collected */
    commit(t);
    uint8_t before[16], after[16];
    OK(objstore_digest(s, before, NULL));
    objstore_gc_stats st;
    OK(objstore_compact(s, NULL, NULL, NULL, &st));
    OK(objstore_digest(s, after, NULL));
    ck_assert_msg(memcmp(before, after, 16) == 0,
                  "a compaction changed the digest of a store with weak references");
    t = rbegin(s);
    objstore_oid nx = root_get(t, "x");
    ck_assert_uint_ne(nx, x);
    ck_assert_uint_eq(wget(t, root_get(t, "wx")), nx);
    ck_assert_uint_eq(wget(t, root_get(t, "wg")), 0);   /* its target was left behind */
    commit(t);
    verify_clean(s);
    s = reopen(s, NULL);
    t = wbegin(s);
    OK(objstore_root_del(t, "x"));           /* the rebuilt index clears it */
    objstore_oid wx = root_get(t, "wx");
    commit(t);
    t = rbegin(s);
    ck_assert_uint_eq(wget(t, wx), 0);
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 2);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* Crashes at each durability step of a commit that frees targets of weak
 * references: after recovery each reads its target (before) or 0 (after),
 * never a freed object, and keeps reading so after new objects reuse the
 * space. */
static int g_crash_at, g_steps;
static void crash_hook(const char *step)
{
    (void)step;
    if (++g_steps == g_crash_at)
        _exit(77);
}

START_TEST(test_a_crash_in_a_commit_that_clears_weak_references_leaves_none_dangling)
{
    enum { N = 20 };
    int finished = 0, before = 0, after = 0;
    for (int n = 1; n < 100 && !finished; n++) {
        objstore *s = new_store(NULL);
        objstore_txn *t = wbegin(s);
        objstore_oid list = new_obj(t, 0, N, 0), weaks = new_obj(t, 0, N, 0);
        for (uint32_t i = 0; i < N; i++) {
            objstore_oid v = new_obj(t, 0, 0, 32);
            set_ref(t, list, i, v);
            set_ref(t, weaks, i, weak(t, v));
        }
        root_set(t, "list", list);
        root_set(t, "weaks", weaks);
        commit(t);
        close_store(s);

        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            objstore *c;
            if (objstore_open(g_store, NULL, &c))
                _exit(2);
            g_crash_at = n;
            objstore_set_crash_hook(crash_hook);
            objstore_txn *ct;
            if (objstore_begin(c, 0, &ct) || objstore_root_del(ct, "list") ||
                objstore_commit(ct) || objstore_close(c))
                _exit(3);
            _exit(0);
        }
        int code = wait_child(pid);
        MUST(code == 0 || code == 77, "child exited with %d at step %d", code, n);
        finished = code == 0;

        s = open_store(g_store, NULL);
        verify_clean(s);
        t = wbegin(s);
        bool has_list = objstore_root_get(t, "list", &list) == OBJSTORE_OK;
        weaks = root_get(t, "weaks");
        for (uint32_t i = 0; i < N; i++) {
            objstore_oid v = wget(t, get_ref(t, weaks, i));
            if (has_list)
                MUST(v == get_ref(t, list, i), "step %d: weak %u reads %llu", n, i, U(v));
            else
                MUST(v == 0, "step %d: weak %u reads %llu after its target went", n, i, U(v));
        }
        for (uint32_t i = 0; i < N; i++)       /* reuse the space */
            root_set(t, "new", new_obj(t, 0, 0, 32));
        commit(t);
        t = rbegin(s);
        for (uint32_t i = 0; i < N && !has_list; i++)
            MUST(wget(t, get_ref(t, weaks, i)) == 0, "step %d: weak %u revived", n, i);
        commit(t);
        verify_clean(s);
        has_list ? before++ : after++;
        close_store(s);
        ts_rmtree(g_store);
    }
    printf("weak crash points: %d (before the commit %d, after it %d)\n", before + after,
           before, after);
    ck_assert_int_eq(finished, 1);
    ck_assert_int_gt(before, 0);
    ck_assert_int_gt(after, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("weak");
    TCase *tc = ts_tcase(s, "weak", 300);
    tcase_add_test(tc, test_a_weak_reference_reads_its_target_until_the_commit_that_frees_it);
    tcase_add_test(tc, test_weak_references_survive_a_reopen_and_are_cleared_after_it);
    tcase_add_test(tc, test_an_aborted_transaction_leaves_weak_references_as_they_were);
    tcase_add_test(tc, test_a_cache_of_weak_references_drops_entries_whose_value_died);
    tcase_add_test(tc, test_a_cycle_with_one_weak_edge_is_freed_without_the_collector);
    tcase_add_test(tc, test_targets_freed_by_the_collectors_clear_their_weak_references);
    tcase_add_test(tc, test_weak_reference_calls_refuse_what_is_not_one);
    tcase_add_test(tc, test_an_overwritten_weak_reference_blocks_no_free);
    tcase_add_test(tc, test_a_full_collection_clears_the_weak_references_to_what_it_frees);
    tcase_add_test(tc, test_a_compaction_moves_weak_references_with_their_targets);
    tcase_add_test(tc, test_a_crash_in_a_commit_that_clears_weak_references_leaves_none_dangling);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
