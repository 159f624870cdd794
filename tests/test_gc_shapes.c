/*
 * test_gc_shapes.c -- the shapes of CPython's Lib/test/test_gc.py, ported:
 * each builds garbage (or not), collects, and asserts the number collected
 * exactly, the live objects after, and a clean verify.  Also the young
 * collection: cycles that never had an outside reference are freed by the
 * commit of the transaction that made them.
 */
#include "test_store.h"

static objstore_gc_kind_stats kind_stats(objstore *s, int kind)
{
    objstore_gc_kinds st;
    OK(objstore_gc_get_stats(s, &st));
    return st.kind[kind];
}

/* Drops root `name` in a transaction of its own, then collects: returns
 * what the collection freed. */
static uint64_t drop_and_collect(objstore *s, const char *name)
{
    objstore_txn *t = wbegin(s);
    OK(objstore_root_del(t, name));
    commit(t);
    objstore_collect_stats st;
    OK(objstore_collect(s, &st));
    ck_assert_int_eq(st.incomplete, 0);
    return st.freed;
}

static void expect_live(objstore *s, uint64_t n)
{
    ck_assert_uint_eq(get_stats(s).live_objects, n);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, n);
    ck_assert_uint_eq(r.unreachable, 0);
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

/* test_list: l = []; l.append(l) */
START_TEST(test_a_list_holding_itself_is_collected)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid l = new_obj(t, 0, 4, 0);
    set_ref(t, l, 0, l);
    root_set(t, "l", l);
    commit(t);
    ck_assert_uint_eq(drop_and_collect(s, "l"), 1);
    expect_live(s, 0);
    close_store(s);
}
END_TEST

/* test_dict: d = {}; d[1] = d -- a key object and the dict itself. */
START_TEST(test_a_dict_holding_itself_is_collected_with_its_key)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid d = new_obj(t, 0, 8, 0);      /* 4 (key, value) pairs */
    objstore_oid key = new_obj(t, 0, 0, 8);
    set_ref(t, d, 0, key);
    set_ref(t, d, 1, d);
    root_set(t, "d", d);
    commit(t);
    ck_assert_uint_eq(drop_and_collect(s, "d"), 2);
    expect_live(s, 0);
    close_store(s);
}
END_TEST

/* test_tuple: l = []; t = (l,); l.append(t) */
START_TEST(test_a_tuple_and_a_list_holding_each_other_are_collected)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid l = new_obj(t, 0, 2, 0), tu = new_obj(t, 0, 1, 0);
    set_ref(t, tu, 0, l);
    set_ref(t, l, 0, tu);
    root_set(t, "l", l);
    commit(t);
    ck_assert_uint_eq(drop_and_collect(s, "l"), 2);
    expect_live(s, 0);
    close_store(s);
}
END_TEST

/* test_instance / test_newinstance: a.a = a, and a <-> b */
START_TEST(test_instances_in_cycles_are_collected)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    uint32_t cls;
    OK(objstore_type_register(t, "A", &cls));
    objstore_oid a = new_obj(t, cls, 1, 24), b = new_obj(t, cls, 1, 24), c = new_obj(t, cls, 1, 24);
    set_ref(t, a, 0, a);
    set_ref(t, b, 0, c);
    set_ref(t, c, 0, b);
    root_set(t, "a", a);
    root_set(t, "b", b);
    commit(t);
    ck_assert_uint_eq(drop_and_collect(s, "a"), 1);
    ck_assert_uint_eq(drop_and_collect(s, "b"), 2);
    expect_live(s, 0);
    close_store(s);
}
END_TEST

START_TEST(test_a_long_ring_is_collected)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    root_set(t, "ring", ring(t, 10000));
    commit(t);
    ck_assert_uint_eq(drop_and_collect(s, "ring"), 10000);
    expect_live(s, 0);
    close_store(s);
}
END_TEST

START_TEST(test_a_cycle_kept_alive_from_outside_is_not_collected)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid r = ring(t, 3), outside = new_obj(t, 0, 1, 0);
    set_ref(t, outside, 0, r);
    root_set(t, "outside", outside);
    root_set(t, "ring", r);
    commit(t);
    ck_assert_uint_eq(drop_and_collect(s, "ring"), 0);
    expect_live(s, 4);
    close_store(s);
}
END_TEST

START_TEST(test_a_cycle_reachable_from_a_root_is_not_collected)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid r = ring(t, 5);
    root_set(t, "a", r);
    root_set(t, "b", r);
    commit(t);
    ck_assert_uint_eq(drop_and_collect(s, "b"), 0);
    expect_live(s, 5);
    close_store(s);
}
END_TEST

START_TEST(test_garbage_hanging_off_a_cycle_is_collected_with_it)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 2, 0), b = new_obj(t, 0, 1, 0);
    set_ref(t, a, 0, b);
    set_ref(t, b, 0, a);
    objstore_oid prev = a;
    for (int i = 0; i < 5; i++) {           /* a chain of 5 off the cycle */
        objstore_oid x = new_obj(t, 0, 2, 8);
        set_ref(t, prev, 1, x);
        prev = x;
    }
    root_set(t, "a", a);
    commit(t);
    ck_assert_uint_eq(drop_and_collect(s, "a"), 7);
    expect_live(s, 0);
    close_store(s);
}
END_TEST

START_TEST(test_cycles_made_unreachable_across_a_reopen_are_collected)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    root_set(t, "ring", ring(t, 4));
    objstore_oid self = new_obj(t, 0, 1, 0);
    set_ref(t, self, 0, self);
    root_set(t, "self", self);
    commit(t);
    s = reopen(s, NULL);
    t = wbegin(s);
    OK(objstore_root_del(t, "ring"));
    OK(objstore_root_del(t, "self"));
    commit(t);
    s = reopen(s, NULL);                     /* the candidates were persisted */
    objstore_collect_stats st;
    OK(objstore_collect(s, &st));
    ck_assert_uint_eq(st.freed, 5);
    expect_live(s, 0);
    close_store(s);
}
END_TEST

/* CPython finds these in generation 0; objstore in the young collection of
 * the commit that made them. */
START_TEST(test_cycles_that_never_had_an_outside_reference_are_freed_by_their_commit)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid keep = new_obj(t, 0, 0, 8);
    root_set(t, "keep", keep);
    ring(t, 3);
    objstore_oid self = new_obj(t, 0, 2, 0);
    set_ref(t, self, 0, self);
    set_ref(t, self, 1, keep);               /* young garbage holding a survivor */
    objstore_gc_kind_stats before = kind_stats(s, OBJSTORE_GC_YOUNG);
    commit(t);
    objstore_gc_kind_stats after = kind_stats(s, OBJSTORE_GC_YOUNG);
    ck_assert_uint_eq(after.collections - before.collections, 1);
    ck_assert_uint_eq(after.collected - before.collected, 4);
    expect_live(s, 1);
    t = rbegin(s);
    ck_assert_uint_eq(refcount(t, keep), 1);
    commit(t);
    close_store(s);
}
END_TEST

START_TEST(test_a_young_cycle_linked_and_unlinked_in_one_transaction_is_freed)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid holder = new_obj(t, 0, 1, 0);
    root_set(t, "holder", holder);
    commit(t);
    t = wbegin(s);
    objstore_oid r = ring(t, 6);
    root_set(t, "r", r);
    set_ref(t, holder, 0, r);
    OK(objstore_root_del(t, "r"));
    set_ref(t, holder, 0, 0);
    commit(t);
    expect_live(s, 1);
    close_store(s);
}
END_TEST

START_TEST(test_a_young_cycle_held_by_an_old_object_or_a_pin_survives)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid holder = new_obj(t, 0, 1, 0);
    root_set(t, "holder", holder);
    commit(t);
    t = wbegin(s);
    set_ref(t, holder, 0, ring(t, 3));       /* an old object points in */
    objstore_oid pinned = ring(t, 2);
    OK(objstore_pin(t, pinned));
    commit(t);
    ck_assert_uint_eq(kind_stats(s, OBJSTORE_GC_YOUNG).collected, 0);
    ck_assert_uint_eq(get_stats(s).live_objects, 6);

    t = rbegin(s);
    OK(objstore_unpin(t, pinned));           /* its last pin: a candidate */
    commit(t);
    objstore_collect_stats st;
    OK(objstore_collect(s, &st));
    ck_assert_uint_eq(st.freed, 2);
    expect_live(s, 4);
    close_store(s);
}
END_TEST

START_TEST(test_a_disabled_collector_leaves_young_cycles_alone)
{
    objstore *s = new_store(NULL);
    OK(objstore_gc_disable(s));
    objstore_txn *t = wbegin(s);
    ring(t, 3);
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 3);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.unreachable, 3);
    OK(objstore_gc_enable(s));
    t = wbegin(s);
    ring(t, 2);
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 3);   /* the new one went */
    close_store(s);
}
END_TEST

/* Many young 2-cycles and a structure of young objects rooted: the commit
 * frees exactly the garbage. */
START_TEST(test_a_large_transaction_frees_exactly_its_young_garbage)
{
    enum { N = 20000 };
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid list = new_obj(t, 0, N, 0);
    root_set(t, "list", list);
    for (uint32_t i = 0; i < N; i++) {
        objstore_oid a = new_obj(t, 0, 1, 8), b = new_obj(t, 0, 1, 8);
        set_ref(t, a, 0, b);
        set_ref(t, b, 0, a);
        if (i % 2)
            set_ref(t, list, i, a);          /* half of them kept */
    }
    commit(t);
    ck_assert_uint_eq(kind_stats(s, OBJSTORE_GC_YOUNG).collected, N);
    expect_live(s, 1 + N);
    close_store(s);
}
END_TEST

/* Leaves (no slots) are not scanned: one hanging off young garbage goes
 * with it, freed by the drain when the garbage lets go of it. */
START_TEST(test_a_leaf_hanging_off_a_young_cycle_goes_in_the_same_commit)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 2, 8), b = new_obj(t, 0, 1, 8);
    objstore_oid leaf = new_obj(t, 0, 0, 100);
    set_ref(t, a, 0, b);
    set_ref(t, b, 0, a);
    set_ref(t, a, 1, leaf);
    commit(t);
    objstore_gc_kind_stats k = kind_stats(s, OBJSTORE_GC_YOUNG);
    ck_assert_uint_eq(k.scanned, 2);
    ck_assert_uint_eq(k.collected, 2);
    objstore_stats st = get_stats(s);
    ck_assert_uint_eq(st.objects_freed, 1);
    expect_live(s, 0);
    close_store(s);
}
END_TEST

/* Objects left at count 0 by the free budget are the drain's, not
 * garbage the young collection frees (nor what they hold). */
START_TEST(test_young_objects_left_at_zero_by_the_free_budget_are_not_collected)
{
    objstore *s = new_store(&(objstore_options){.free_budget = 1});
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 8), b = new_obj(t, 0, 1, 8), c = new_obj(t, 0, 0, 8);
    set_ref(t, a, 0, b);                      /* a (count 0) -> b -> c */
    set_ref(t, b, 0, c);
    commit(t);
    ck_assert_uint_eq(kind_stats(s, OBJSTORE_GC_YOUNG).collected, 0);
    objstore_stats st = get_stats(s);
    ck_assert_uint_eq(st.live_objects, 2);    /* a went; b waits at 0, holding c */
    ck_assert_uint_eq(st.objects_freed, 1);
    ck_assert_uint_eq(st.zct_entries, 1);
    verify_clean(s);
    empty_commit(s);
    empty_commit(s);
    st = get_stats(s);
    ck_assert_uint_eq(st.live_objects, 0);
    ck_assert_uint_eq(st.objects_freed, 3);
    ck_assert_uint_eq(st.cycles_freed, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* Links n new objects of size payload bytes, each with one slot, into a
 * list under root `name`, the i-th holding i at byte `at`; each must come
 * zeroed (payload and slot). */
static void numbered_list(objstore_txn *t, const char *name, uint64_t n, uint64_t size,
                          uint64_t at)
{
    objstore_oid list = 0;
    for (uint64_t i = 0; i < n; i++) {
        objstore_oid x = new_obj(t, 0, 1, size);
        for (uint64_t b = 0; b + 8 <= size; b += 8)
            ck_assert_uint_eq(get_u64(t, x, b), 0);
        ck_assert_uint_eq(get_ref(t, x, 0), 0);
        put_u64(t, x, at, i);
        if (list)
            set_ref(t, x, 0, list);
        list = x;
    }
    root_set(t, name, list);
}

/* Checks numbered_list's list in a read transaction of its own. */
static void check_numbered_list(objstore *s, const char *name, uint64_t n, uint64_t at)
{
    objstore_txn *t = rbegin(s);
    uint64_t k = 0;
    for (objstore_oid o = root_get(t, name); o; o = get_ref(t, o, 0), k++)
        ck_assert_uint_eq(get_u64(t, o, at), n - 1 - k);
    ck_assert_uint_eq(k, n);
    commit(t);
}

/* Young garbage in a heap with room: the pools it filled are free again at
 * commit, so their pages need neither redo nor write (heap_forget_free),
 * and dropping them must leave every other object, and the next
 * allocations in those pools, as they should be. */
START_TEST(test_young_garbage_costs_its_commit_no_heap_writes)
{
    enum { KEEP = 2000, PAIRS = 20000 };
    objstore *s = new_store(&(objstore_options){.initial_size = 32 << 20});
    objstore_txn *t = wbegin(s);
    objstore_oid head = 0;
    for (uint64_t i = 0; i < KEEP; i++) {
        objstore_oid k = new_obj(t, 0, 1, 8);
        put_u64(t, k, 0, i * 7 + 1);
        if (head)
            set_ref(t, k, 0, head);
        head = k;
    }
    root_set(t, "keep", head);
    commit(t);
    objstore_stats st0 = get_stats(s);

    t = wbegin(s);
    put_u64(t, head, 0, 12345);   /* one real change rides along */
    for (int i = 0; i < PAIRS; i++) {
        objstore_oid a = new_obj(t, 0, 1, 24), b = new_obj(t, 0, 1, 24);
        put_u64(t, a, 0, 0xdeadbeef);
        set_ref(t, a, 0, b);
        set_ref(t, b, 0, a);
    }
    commit(t);
    ck_assert_uint_eq(kind_stats(s, OBJSTORE_GC_YOUNG).collected, 2 * PAIRS);
    objstore_stats st1 = get_stats(s);
    uint64_t written = st1.redo_bytes + st1.direct_bytes - st0.redo_bytes - st0.direct_bytes;
    /* The garbage filled 1.9 MB of blocks; only tables and one line remain. */
    ck_assert_msg(written < 256 * 1024, "the commit wrote %llu heap bytes",
                  (unsigned long long)written);
    ck_assert_uint_eq(st1.live_objects, KEEP);

    s = reopen(s, NULL);
    verify_clean(s);
    t = wbegin(s);
    objstore_oid o = root_get(t, "keep");
    ck_assert_uint_eq(get_u64(t, o, 0), 12345);
    for (uint64_t i = KEEP - 1; (o = get_ref(t, o, 0)); i--)
        ck_assert_uint_eq(get_u64(t, o, 0), (i - 1) * 7 + 1);
    /* New blocks in the pools the garbage left come zeroed. */
    numbered_list(t, "new", 2 * PAIRS, 24, 8);
    commit(t);
    s = reopen(s, NULL);
    verify_clean(s);
    check_numbered_list(s, "new", 2 * PAIRS, 8);
    close_store(s);
}
END_TEST

/* Young garbage that made the heap grow: the arenas it grew are empty
 * again at commit and are cut off (heap_cut_fresh_tail), so the file keeps
 * its length; a later transaction grows it again for real. */
START_TEST(test_young_garbage_that_grew_the_heap_leaves_the_file_its_length)
{
    enum { PAIRS = 150000 };   /* 9.6 MB of blocks: past the 4 MiB start */
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid keep = new_obj(t, 0, 0, 8);
    put_u64(t, keep, 0, 4242);
    root_set(t, "keep", keep);
    commit(t);
    uint64_t len0 = get_stats(s).heap_file_bytes;

    t = wbegin(s);
    for (int i = 0; i < PAIRS; i++) {
        objstore_oid a = new_obj(t, 0, 1, 40), b = new_obj(t, 0, 1, 40);
        set_ref(t, a, 0, b);
        set_ref(t, b, 0, a);
    }
    ck_assert_uint_gt(get_stats(s).heap_file_bytes, len0);   /* it grew */
    commit(t);
    ck_assert_uint_eq(kind_stats(s, OBJSTORE_GC_YOUNG).collected, 2 * PAIRS);
    ck_assert_uint_eq(get_stats(s).heap_file_bytes, len0);
    char path[4096];
    snprintf(path, sizeof path, "%s/heap.1", g_store);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_uint_eq((uint64_t)sb.st_size, len0);

    s = reopen(s, NULL);
    verify_clean(s);
    t = wbegin(s);
    ck_assert_uint_eq(get_u64(t, root_get(t, "keep"), 0), 4242);
    numbered_list(t, "list", PAIRS, 40, 0);   /* now for real */
    commit(t);
    ck_assert_uint_gt(get_stats(s).heap_file_bytes, len0);
    s = reopen(s, NULL);
    verify_clean(s);
    check_numbered_list(s, "list", PAIRS, 0);
    close_store(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gc_shapes");
    TCase *tc = ts_tcase(s, "shapes", 120);
    tcase_add_test(tc, test_a_list_holding_itself_is_collected);
    tcase_add_test(tc, test_a_dict_holding_itself_is_collected_with_its_key);
    tcase_add_test(tc, test_a_tuple_and_a_list_holding_each_other_are_collected);
    tcase_add_test(tc, test_instances_in_cycles_are_collected);
    tcase_add_test(tc, test_a_long_ring_is_collected);
    tcase_add_test(tc, test_a_cycle_kept_alive_from_outside_is_not_collected);
    tcase_add_test(tc, test_a_cycle_reachable_from_a_root_is_not_collected);
    tcase_add_test(tc, test_garbage_hanging_off_a_cycle_is_collected_with_it);
    tcase_add_test(tc, test_cycles_made_unreachable_across_a_reopen_are_collected);
    tc = ts_tcase(s, "young", 120);
    tcase_add_test(tc, test_cycles_that_never_had_an_outside_reference_are_freed_by_their_commit);
    tcase_add_test(tc, test_a_young_cycle_linked_and_unlinked_in_one_transaction_is_freed);
    tcase_add_test(tc, test_a_young_cycle_held_by_an_old_object_or_a_pin_survives);
    tcase_add_test(tc, test_a_disabled_collector_leaves_young_cycles_alone);
    tcase_add_test(tc, test_a_large_transaction_frees_exactly_its_young_garbage);
    tcase_add_test(tc, test_young_objects_left_at_zero_by_the_free_budget_are_not_collected);
    tcase_add_test(tc, test_a_leaf_hanging_off_a_young_cycle_goes_in_the_same_commit);
    tcase_add_test(tc, test_young_garbage_costs_its_commit_no_heap_writes);
    tcase_add_test(tc, test_young_garbage_that_grew_the_heap_leaves_the_file_its_length);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
