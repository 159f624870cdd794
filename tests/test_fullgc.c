/*
 * test_fullgc.c -- full collection (mark from the roots, bounded frees) and
 * the logical digest.
 *
 * What a user relies on: everything the roots do not reach is freed --
 * cycles that never had an outside reference, a million-object ring,
 * garbage hanging off cycles -- and nothing they reach changes: the digest
 * is the same, verify is clean, the live count is exactly the reachable
 * count.  A crash between two of the collection's commits loses nothing
 * reachable.  The digest depends on content only.
 */
#include "test_store.h"

#include <signal.h>


static objstore_gc_stats full_collect(objstore *s, uint64_t batch)
{
    objstore_gc_options o = {.batch = batch};
    objstore_gc_stats st;
    OK(objstore_full_collect(s, &o, &st));
    return st;
}

/* A ring of n objects (1 slot, 8-byte payload holding its index), built in
 * transactions of at most 200,000 objects, hung from root `name`, which is
 * then deleted if drop.  Returns the first object. */
static objstore_oid make_ring(objstore *s, const char *name, uint64_t n, bool drop)
{
    objstore_txn *t = wbegin(s);
    objstore_oid first = new_obj(t, 0, 1, 8), prev = first;
    root_set(t, name, first);
    put_u64(t, first, 0, 0);
    for (uint64_t i = 1; i < n; i++) {
        objstore_oid o;
        MUST(objstore_new(t, 0, 1, 8, &o) == OBJSTORE_OK, "new: %s", objstore_errmsg());
        MUST(objstore_write(t, o, 0, &i, 8) == OBJSTORE_OK, "write");
        MUST(objstore_set_ref(t, prev, 0, o) == OBJSTORE_OK, "link: %s", objstore_errmsg());
        prev = o;
        if (i % 200000 == 0) {
            commit(t);
            t = wbegin(s);
        }
    }
    set_ref(t, prev, 0, first);
    commit(t);
    if (drop) {
        t = wbegin(s);
        OK(objstore_root_del(t, name));
        commit(t);
    }
    return first;
}

/* A two-object cycle made without any outside reference ever. */
static void make_island(objstore_txn *t)
{
    objstore_oid a = new_obj(t, 0, 1, 16), b = new_obj(t, 0, 1, 16);
    set_ref(t, a, 0, b);
    set_ref(t, b, 0, a);
}

START_TEST(test_a_cycle_that_never_had_an_outside_reference_is_freed)
{
    objstore *s = new_store(&manual);
    objstore_txn *t = wbegin(s);
    objstore_oid keep = new_obj(t, 0, 0, 32);
    root_set(t, "keep", keep);
    for (int i = 0; i < 10; i++)
        make_island(t);
    commit(t);
    /* The online collector never hears of it: no count ever went down. */
    OK(objstore_collect(s, NULL));
    ck_assert_uint_eq(get_stats(s).live_objects, 21);
    dig_t before = logical_digest(s);

    objstore_gc_stats st = full_collect(s, 0);
    ck_assert_uint_eq(st.garbage, 20);
    ck_assert_uint_eq(st.freed, 20);
    ck_assert_uint_eq(st.reachable, 1);
    ck_assert_uint_eq(get_stats(s).live_objects, 1);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.unreachable, 0);
    SAME_DIGEST(before, logical_digest(s));
    s = reopen(s, &manual);
    ck_assert_uint_eq(get_stats(s).live_objects, 1);
    SAME_DIGEST(before, logical_digest(s));
    close_store(s);
}
END_TEST

static void ring_case(uint64_t n, uint64_t batch)
{
    objstore *s = new_store(&manual);
    objstore_txn *t = wbegin(s);
    objstore_oid keep = new_obj(t, 0, 2, 8);
    root_set(t, "keep", keep);
    commit(t);
    make_ring(s, "live", 1000, false);
    make_ring(s, "dead", n, true);
    dig_t before = logical_digest(s);
    ck_assert_uint_eq(get_stats(s).live_objects, 1 + 1000 + n);

    objstore_gc_stats st = full_collect(s, batch);
    ck_assert_uint_eq(st.garbage, n);
    ck_assert_uint_eq(st.freed, n);
    ck_assert_uint_eq(get_stats(s).live_objects, 1001);
    ck_assert_uint_eq(get_stats(s).zct_entries, 0);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.unreachable, 0);
    ck_assert_uint_eq(r.reachable, 1001);
    SAME_DIGEST(before, logical_digest(s));
    close_store(s);
}

START_TEST(test_a_million_object_ring_is_freed_in_one_batch)
{
    ring_case(ts_under_sanitizer() ? 100000 : 1000000, 0);
}
END_TEST

START_TEST(test_a_ring_larger_than_a_batch_is_freed_over_several_commits)
{
    ring_case(ts_under_sanitizer() ? 30000 : 300000, 7000);
}
END_TEST

START_TEST(test_garbage_hanging_off_a_cycle_is_freed_and_survivors_keep_exact_counts)
{
    objstore *s = new_store(&manual);
    objstore_txn *t = wbegin(s);
    objstore_oid live = new_obj(t, 0, 0, 8);
    root_set(t, "live", live);
    objstore_oid a = new_obj(t, 0, 2, 8), b = new_obj(t, 0, 2, 8);
    set_ref(t, a, 0, b);
    set_ref(t, b, 0, a);
    set_ref(t, b, 1, live);       /* garbage pointing at a survivor */
    objstore_oid prev = a;        /* a 5,000-long chain off the cycle */
    for (int i = 0; i < 5000; i++) {
        objstore_oid c = new_obj(t, 0, 2, 8);
        set_ref(t, prev, 1, c);
        if (i % 100 == 0)
            set_ref(t, c, 0, live);
        prev = c;
    }
    commit(t);
    t = rbegin(s);
    ck_assert_uint_eq(refcount(t, live), 1 + 1 + 50);
    commit(t);
    dig_t before = logical_digest(s);

    objstore_gc_stats st = full_collect(s, 300);
    ck_assert_uint_eq(st.garbage, 5002);
    ck_assert_uint_eq(get_stats(s).live_objects, 1);
    t = rbegin(s);
    ck_assert_uint_eq(refcount(t, live), 1);
    commit(t);
    verify_clean(s);
    SAME_DIGEST(before, logical_digest(s));
    close_store(s);
}
END_TEST

/* A random graph: reachable part under roots, and garbage of every shape. */
static void random_graph(objstore *s, uint64_t seed, int n)
{
    objstore_txn *t = wbegin(s);
    uint32_t ty;
    OK(objstore_type_register(t, "node", &ty));
    objstore_oid *o = calloc((size_t)n, sizeof *o);
    for (int i = 0; i < n; i++) {
        uint64_t r = ts_mix64(seed + (uint64_t)i);
        o[i] = new_obj(t, (r & 1) ? ty : 0, (uint32_t)(r % 4), 8 + (r >> 8) % 300);
        uint8_t *p;
        uint64_t len;
        OK(objstore_edit(t, o[i], (void **)&p, &len));
        pattern_into(p, len, r);
    }
    for (int i = 0; i < n; i++) {
        objstore_objinfo info;
        OK(objstore_info(t, o[i], &info));
        for (uint32_t k = 0; k < info.nrefs; k++) {
            uint64_t r = ts_mix64(seed * 31 + (uint64_t)i * 7 + k);
            if (r % 5)
                set_ref(t, o[i], k, o[r % (uint64_t)n]);
        }
    }
    for (int i = 0; i < 8; i++) {
        char name[16];
        snprintf(name, sizeof name, "root%d", i);
        root_set(t, name, o[ts_mix64(seed + 1000 + (uint64_t)i) % (uint64_t)n]);
    }
    commit(t);
    free(o);
}

START_TEST(test_everything_reachable_is_untouched_and_the_live_count_is_exact)
{
    objstore *s = new_store(&manual);
    random_graph(s, 42, 20000);
    objstore_verify_report r0 = verify_clean(s);
    dig_t before = logical_digest(s);
    uint64_t nobj;
    uint8_t d[16];
    OK(objstore_digest(s, d, &nobj));
    ck_assert_uint_eq(nobj, r0.reachable);

    objstore_gc_stats st = full_collect(s, 1000);
    ck_assert_uint_eq(st.reachable, r0.reachable);
    ck_assert_uint_eq(st.garbage, r0.unreachable);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.unreachable, 0);
    ck_assert_uint_eq(r.objects, r0.reachable);
    ck_assert_uint_eq(get_stats(s).live_objects, r0.reachable);
    SAME_DIGEST(before, logical_digest(s));
    s = reopen(s, &manual);
    SAME_DIGEST(before, logical_digest(s));
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_a_dry_run_counts_the_garbage_and_writes_nothing)
{
    objstore *s = new_store(&manual);
    random_graph(s, 7, 5000);
    objstore_verify_report r0 = verify_clean(s);
    uint64_t epoch = objstore_epoch(s);
    dig_t before = logical_digest(s);
    objstore_gc_options o = {.dry_run = 1};
    objstore_gc_stats st;
    OK(objstore_full_collect(s, &o, &st));
    ck_assert_uint_eq(st.garbage, r0.unreachable);
    ck_assert_uint_eq(st.freed, 0);
    ck_assert_uint_eq(st.commits, 0);
    ck_assert(st.compacted_bytes > 0 && st.compacted_bytes <= st.file_bytes_before);
    ck_assert_uint_eq(objstore_epoch(s), epoch);
    ck_assert_uint_eq(verify_clean(s).unreachable, r0.unreachable);
    SAME_DIGEST(before, logical_digest(s));
    close_store(s);
}
END_TEST

START_TEST(test_a_pinned_unreachable_object_survives_a_full_collection)
{
    objstore *s = new_store(&manual);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 8), b = new_obj(t, 0, 1, 8);
    set_ref(t, a, 0, b);
    set_ref(t, b, 0, a);
    OK(objstore_pin(t, a));
    make_island(t);
    commit(t);
    objstore_gc_stats st = full_collect(s, 0);
    ck_assert_uint_eq(st.freed, 2);
    t = rbegin(s);
    ck_assert(is_live(t, a));
    ck_assert(is_live(t, b));
    OK(objstore_unpin(t, a));
    commit(t);
    st = full_collect(s, 0);
    ck_assert_uint_eq(st.freed, 2);
    ck_assert_uint_eq(get_stats(s).live_objects, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_a_damaged_slot_is_refused_before_anything_is_freed)
{
    objstore *s = new_store(&manual);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 8);
    root_set(t, "a", a);
    make_island(t);
    commit(t);
    close_store(s);
    /* Point a's slot into the middle of nowhere, in the file itself. */
    char *heap = ts_path(g_store, "heap.1");
    int fd = open(heap, O_RDWR);
    uint64_t bad = a + 8;
    ck_assert_int_eq(pwrite(fd, &bad, 8, (off_t)(a + 16)), 8);
    close(fd);
    free(heap);
    s = open_store(g_store, &manual);
    uint64_t live = get_stats(s).live_objects, epoch = objstore_epoch(s);
    EXPECT(OBJSTORE_ECORRUPT, objstore_full_collect(s, NULL, NULL));
    ck_assert_uint_eq(get_stats(s).live_objects, live);
    ck_assert_uint_eq(objstore_epoch(s), epoch);
    uint8_t d[16];
    EXPECT(OBJSTORE_ECORRUPT, objstore_digest(s, d, NULL));
    close_store(s);
}
END_TEST


static int stop_after_first(void *arg, const char *phase, uint64_t done, uint64_t total)
{
    (void)done;
    (void)total;
    int *calls = arg;
    return strcmp(phase, "free") == 0 && ++*calls >= 1;
}

START_TEST(test_a_collection_asked_to_stop_stops_after_a_commit_and_loses_nothing)
{
    /* A small free budget: the first commit's drain cannot free the rest. */
    objstore_options small = manual;
    small.free_budget = 200;
    objstore *s = new_store(&small);
    random_graph(s, 5, 4000);
    make_ring(s, "ring", 5000, true);
    objstore_verify_report r0 = verify_clean(s);
    dig_t before = logical_digest(s);
    int calls = 0;
    objstore_gc_options o = {.batch = 500, .progress = stop_after_first, .progress_arg = &calls};
    objstore_gc_stats st;
    OK(objstore_full_collect(s, &o, &st));
    ck_assert_int_eq(st.interrupted, 1);
    ck_assert_uint_eq(st.commits, 1);
    ck_assert(st.freed > 0 && st.freed < r0.unreachable);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.reachable, r0.reachable);
    ck_assert_uint_eq(r.unreachable, r0.unreachable - st.freed);
    SAME_DIGEST(before, logical_digest(s));
    /* the next run finishes */
    st = full_collect(s, 0);
    ck_assert_uint_eq(verify_clean(s).unreachable, 0);
    SAME_DIGEST(before, logical_digest(s));
    close_store(s);
}
END_TEST

/* ---- the digest ---- */

static void build_small(objstore *s, bool reversed, const char *payload, int target)
{
    objstore_txn *t = wbegin(s);
    uint32_t ty;
    OK(objstore_type_register(t, "pair", &ty));
    objstore_oid o[4];
    for (int i = 0; i < 4; i++) {
        int k = reversed ? 3 - i : i;
        o[k] = new_obj(t, ty, 2, 12);
        OK(objstore_write(t, o[k], 0, payload, 12));
        if (reversed)   /* garbage between them: other offsets */
            new_obj(t, 0, 0, 100);
    }
    set_ref(t, o[0], 0, o[1]);
    set_ref(t, o[0], 1, o[2]);
    set_ref(t, o[1], 0, o[3]);
    set_ref(t, o[2], 1, o[target]);
    set_ref(t, o[3], 0, o[0]);
    root_set(t, "b", o[2]);
    root_set(t, "a", o[0]);
    commit(t);
}

START_TEST(test_the_digest_depends_on_content_not_on_where_objects_live)
{
    objstore *s = new_store(&manual);
    build_small(s, false, "hello world!", 3);
    dig_t d1 = logical_digest(s);
    close_store(s);
    ts_rmtree(g_store);
    s = new_store(&manual);
    build_small(s, true, "hello world!", 3);
    SAME_DIGEST(d1, logical_digest(s));
    close_store(s);
}
END_TEST

START_TEST(test_the_digest_changes_with_any_change_of_content)
{
    objstore *s = new_store(&manual);
    build_small(s, false, "hello world!", 3);
    dig_t d0 = logical_digest(s);
    objstore_txn *t = wbegin(s);
    objstore_oid a = root_get(t, "a");
    OK(objstore_write(t, a, 11, "?", 1));            /* one payload byte */
    commit(t);
    dig_t d1 = logical_digest(s);
    OTHER_DIGEST(d0, d1);
    t = wbegin(s);
    OK(objstore_write(t, a, 11, "!", 1));
    commit(t);
    SAME_DIGEST(d0, logical_digest(s));
    t = wbegin(s);
    objstore_oid b = root_get(t, "b");
    set_ref(t, b, 1, get_ref(t, a, 1));               /* one slot's target */
    commit(t);
    OTHER_DIGEST(d0, logical_digest(s));
    close_store(s);

    ts_rmtree(g_store);
    s = new_store(&manual);
    build_small(s, false, "hello world!", 3);
    t = wbegin(s);
    OK(objstore_root_set(t, "c", root_get(t, "b")));  /* one more root */
    commit(t);
    OTHER_DIGEST(d0, logical_digest(s));
    close_store(s);

    ts_rmtree(g_store);
    s = new_store(&manual);
    t = wbegin(s);
    uint32_t ty;
    OK(objstore_type_register(t, "other", &ty));     /* type ids shift: same names */
    commit(t);
    build_small(s, false, "hello world!", 3);
    SAME_DIGEST(d0, logical_digest(s));
    close_store(s);
}
END_TEST

/* ---- crashes between commits ---- */

static int crash_at = -1, crash_seen;

static void crash_hook(const char *step)
{
    (void)step;
    if (++crash_seen == crash_at)
        _exit(77);
}

/* In a child: open, full collection in small batches with the hook, exit 0
 * when it finished.  Returns the exit status. */
static int collect_in_child(int at)
{
    pid_t pid = fork();
    if (pid == 0) {
        objstore_options o = manual;
        objstore *s;
        if (objstore_open(g_store, &o, &s))
            _exit(3);
        crash_at = at;
        crash_seen = 0;
        objstore_set_crash_hook(crash_hook);
        objstore_gc_options go = {.batch = 400};
        objstore_gc_stats st;
        if (objstore_full_collect(s, &go, &st))
            _exit(4);
        objstore_set_crash_hook(NULL);
        if (objstore_close(s))
            _exit(5);
        if (at < 0) {   /* report how many steps there were */
            FILE *f = fopen(ts_path(g_dir, "steps"), "w");
            fprintf(f, "%d\n", crash_seen);
            fclose(f);
        }
        _exit(0);
    }
    return wait_child(pid);
}

START_TEST(test_a_crash_at_any_step_of_a_full_collection_loses_nothing_reachable)
{
    objstore *s = new_store(&manual);
    random_graph(s, 99, 3000);
    make_ring(s, "ring", 2000, true);
    objstore_verify_report r0 = verify_clean(s);
    dig_t before = logical_digest(s);
    close_store(s);
    char *copy = ts_path(g_dir, "pristine");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", g_store, copy);
    ck_assert_int_eq(system(cmd), 0);

    ck_assert_int_eq(collect_in_child(-1), 0);
    char *stepf = ts_path(g_dir, "steps");
    FILE *f = fopen(stepf, "r");
    int steps = 0;
    ck_assert(fscanf(f, "%d", &steps) == 1);
    fclose(f);
    free(stepf);
    ck_assert_int_gt(steps, 4);
    for (int at = 1; at <= steps; at++) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", g_store, copy, g_store);
        ck_assert_int_eq(system(cmd), 0);
        int rc = collect_in_child(at);
        MUST(rc == 77, "step %d: child ended with %d, not at the crash", at, rc);
        s = open_store(g_store, &manual);
        objstore_verify_report r = verify_clean(s);
        MUST(r.reachable == r0.reachable, "step %d: reachable %llu, was %llu", at,
             U(r.reachable), U(r0.reachable));
        SAME_DIGEST(before, logical_digest(s));
        /* and a new collection finishes the job */
        full_collect(s, 0);
        ck_assert_uint_eq(verify_clean(s).unreachable, 0);
        SAME_DIGEST(before, logical_digest(s));
        close_store(s);
    }
    free(copy);
}
END_TEST

static Suite *fullgc_suite(void)
{
    Suite *s = suite_create("fullgc");
    TCase *tc = ts_tcase(s, "collect", 120);
    tcase_add_test(tc, test_a_cycle_that_never_had_an_outside_reference_is_freed);
    tcase_add_test(tc, test_a_million_object_ring_is_freed_in_one_batch);
    tcase_add_test(tc, test_a_ring_larger_than_a_batch_is_freed_over_several_commits);
    tcase_add_test(tc, test_garbage_hanging_off_a_cycle_is_freed_and_survivors_keep_exact_counts);
    tcase_add_test(tc, test_everything_reachable_is_untouched_and_the_live_count_is_exact);
    tcase_add_test(tc, test_a_dry_run_counts_the_garbage_and_writes_nothing);
    tcase_add_test(tc, test_a_pinned_unreachable_object_survives_a_full_collection);
    tcase_add_test(tc, test_a_damaged_slot_is_refused_before_anything_is_freed);
    tcase_add_test(tc, test_a_collection_asked_to_stop_stops_after_a_commit_and_loses_nothing);

    tc = ts_tcase(s, "digest", 60);
    tcase_add_test(tc, test_the_digest_depends_on_content_not_on_where_objects_live);
    tcase_add_test(tc, test_the_digest_changes_with_any_change_of_content);

    tc = ts_tcase(s, "crash", 240);
    tcase_add_test(tc, test_a_crash_at_any_step_of_a_full_collection_loses_nothing_reachable);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fullgc_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
