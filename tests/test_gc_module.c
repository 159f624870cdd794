/*
 * test_gc_module.c -- the gc module's calls on a store handle: enable,
 * thresholds, counts, statistics per kind, callbacks, DEBUG_SAVEALL,
 * referents, referrers, every live object, and the allocator report; each
 * call's errors too.
 */
#include <pthread.h>

#include "test_store.h"

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

/* n rooted rings "r0".."r{n-1}" of 2, committed. */
static void rooted_rings(objstore *s, int n)
{
    objstore_txn *t = wbegin(s);
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "r%d", i);
        root_set(t, name, ring(t, 2));
    }
    commit(t);
}

/* Drops them in one transaction: n candidates, 2n garbage. */
static void drop_rings(objstore *s, int n)
{
    objstore_txn *t = wbegin(s);
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "r%d", i);
        OK(objstore_root_del(t, name));
    }
    commit(t);
}

START_TEST(test_a_disabled_collector_runs_no_automatic_collection_until_enabled)
{
    objstore *s = new_store(&(objstore_options){.gc_threshold = 4});
    ck_assert_int_eq(objstore_gc_isenabled(s), 1);
    OK(objstore_gc_disable(s));
    ck_assert_int_eq(objstore_gc_isenabled(s), 0);
    rooted_rings(s, 5);
    drop_rings(s, 5);
    ck_assert_uint_eq(get_stats(s).collections, 0);
    ck_assert_uint_eq(get_stats(s).live_objects, 10);

    objstore_collect_stats st;                /* gc.collect works while disabled */
    OK(objstore_collect(s, &st));
    ck_assert_uint_eq(st.freed, 10);

    OK(objstore_gc_enable(s));
    ck_assert_int_eq(objstore_gc_isenabled(s), 1);
    rooted_rings(s, 5);
    drop_rings(s, 5);
    ck_assert_uint_eq(get_stats(s).collections, 2);
    ck_assert_uint_eq(get_stats(s).live_objects, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_thresholds_change_at_run_time)
{
    objstore *s = new_store(NULL);
    uint64_t th, bu;
    OK(objstore_gc_get_threshold(s, &th, &bu));
    ck_assert_uint_eq(th, 100000);
    ck_assert_uint_eq(bu, 1000000);
    OK(objstore_gc_set_threshold(s, 3, 50));
    OK(objstore_gc_get_threshold(s, &th, &bu));
    ck_assert_uint_eq(th, 3);
    ck_assert_uint_eq(bu, 50);
    rooted_rings(s, 3);
    drop_rings(s, 3);                         /* three candidates: due */
    ck_assert_uint_eq(get_stats(s).collections, 1);
    ck_assert_uint_eq(get_stats(s).live_objects, 0);

    objstore_txn *t = wbegin(s);              /* inside the writer's transaction */
    OK(objstore_gc_set_threshold(s, 0, 0));
    commit(t);
    OK(objstore_gc_get_threshold(s, &th, &bu));
    ck_assert_uint_eq(th, 100000);
    ck_assert_uint_eq(bu, 1000000);
    close_store(s);
}
END_TEST

START_TEST(test_get_count_tells_young_objects_and_candidates)
{
    objstore *s = new_store(&(objstore_options){.gc_threshold = UINT64_MAX});
    rooted_rings(s, 4);
    objstore_gc_count c;
    OK(objstore_gc_get_count(s, &c));
    ck_assert_uint_eq(c.young, 0);
    ck_assert_uint_eq(c.candidates, 0);
    ck_assert_uint_eq(c.pending, 0);

    objstore_txn *t = wbegin(s);
    new_obj(t, 0, 0, 8);
    new_obj(t, 0, 0, 8);
    OK(objstore_root_del(t, "r0"));
    OK(objstore_gc_get_count(s, &c));
    ck_assert_uint_eq(c.young, 2);
    ck_assert_uint_eq(c.candidates, 1);
    ck_assert_uint_eq(c.pending, 1);
    commit(t);
    drop_rings(s, 0);
    t = wbegin(s);
    OK(objstore_root_del(t, "r1"));
    commit(t);
    OK(objstore_gc_get_count(s, &c));
    ck_assert_uint_eq(c.young, 0);
    ck_assert_uint_eq(c.candidates, 2);
    ck_assert_uint_eq(c.pending, 2);
    OK(objstore_collect(s, NULL));
    OK(objstore_gc_get_count(s, &c));
    ck_assert_uint_eq(c.candidates, 0);
    ck_assert_uint_eq(c.pending, 0);
    close_store(s);
}
END_TEST

START_TEST(test_statistics_are_kept_per_kind)
{
    objstore *s = new_store(&(objstore_options){.gc_threshold = 2});
    objstore_txn *t = wbegin(s);
    ring(t, 3);                               /* young garbage */
    commit(t);
    rooted_rings(s, 2);
    drop_rings(s, 2);                         /* an automatic collection */
    rooted_rings(s, 1);
    drop_rings(s, 1);
    OK(objstore_collect(s, NULL));            /* a full one */
    objstore_gc_kinds st;
    OK(objstore_gc_get_stats(s, &st));
    ck_assert_uint_ge(st.kind[OBJSTORE_GC_YOUNG].collections, 1);
    ck_assert_uint_eq(st.kind[OBJSTORE_GC_YOUNG].collected, 3);
    ck_assert_uint_eq(st.kind[OBJSTORE_GC_CANDIDATES].collections, 1);
    ck_assert_uint_eq(st.kind[OBJSTORE_GC_CANDIDATES].collected, 4);
    ck_assert_uint_eq(st.kind[OBJSTORE_GC_CANDIDATES].scanned, 4);
    ck_assert_uint_eq(st.kind[OBJSTORE_GC_COLLECT].collections, 1);
    ck_assert_uint_eq(st.kind[OBJSTORE_GC_COLLECT].collected, 2);
    ck_assert_uint_eq(st.kind[OBJSTORE_GC_COLLECT].incomplete, 0);
    ck_assert_uint_eq(get_stats(s).cycles_freed, 9);

    OK(objstore_gc_disable(s));               /* garbage only a full one finds */
    rooted_rings(s, 2);
    drop_rings(s, 2);
    objstore_gc_stats full;
    OK(objstore_full_collect(s, NULL, &full));
    OK(objstore_gc_get_stats(s, &st));
    ck_assert_uint_eq(st.kind[OBJSTORE_GC_FULL].collections, 1);
    ck_assert_uint_eq(st.kind[OBJSTORE_GC_FULL].collected, 4);
    ck_assert_uint_eq(st.kind[OBJSTORE_GC_FULL].scanned, 4);
    close_store(s);
}
END_TEST

struct cb_log {
    int n;
    objstore_gc_info ev[64];
};

static void record(void *arg, const objstore_gc_info *info)
{
    struct cb_log *l = arg;
    if (l->n < 64)
        l->ev[l->n++] = *info;
}

START_TEST(test_callbacks_see_each_collection_start_and_stop)
{
    objstore *s = new_store(NULL);
    struct cb_log log = {0};
    OK(objstore_gc_callback_add(s, record, &log));
    rooted_rings(s, 3);                       /* a young collection, nothing found */
    drop_rings(s, 3);
    objstore_collect_stats cs;
    OK(objstore_collect(s, &cs));
    ck_assert_int_eq(log.n, 4);
    ck_assert_int_eq(log.ev[0].phase, OBJSTORE_GC_START);
    ck_assert_int_eq(log.ev[0].kind, OBJSTORE_GC_YOUNG);
    ck_assert_uint_eq(log.ev[0].objects, 6);
    ck_assert_int_eq(log.ev[1].phase, OBJSTORE_GC_STOP);
    ck_assert_uint_eq(log.ev[1].collected, 0);
    ck_assert_int_eq(log.ev[2].phase, OBJSTORE_GC_START);
    ck_assert_int_eq(log.ev[2].kind, OBJSTORE_GC_COLLECT);
    ck_assert_uint_eq(log.ev[2].objects, 3);
    ck_assert_int_eq(log.ev[3].phase, OBJSTORE_GC_STOP);
    ck_assert_uint_eq(log.ev[3].collected, 6);
    ck_assert_uint_eq(log.ev[3].scanned, 6);

    OK(objstore_gc_callback_remove(s, record, &log));
    EXPECT(OBJSTORE_ENOTFOUND, objstore_gc_callback_remove(s, record, &log));
    OK(objstore_collect(s, NULL));
    ck_assert_int_eq(log.n, 4);
    EXPECT(OBJSTORE_EINVAL, objstore_gc_callback_add(s, NULL, NULL));
    for (int i = 0; i < 16; i++)
        OK(objstore_gc_callback_add(s, record, &log));
    EXPECT(OBJSTORE_EINVAL, objstore_gc_callback_add(s, record, &log));
    close_store(s);
}
END_TEST

START_TEST(test_saveall_links_the_garbage_under_a_root_instead_of_freeing_it)
{
    objstore *s = new_store(NULL);
    EXPECT(OBJSTORE_EINVAL, objstore_gc_set_debug(s, 0x100));
    OK(objstore_gc_set_debug(s, OBJSTORE_GC_DEBUG_SAVEALL));
    ck_assert_int_eq(objstore_gc_get_debug(s), OBJSTORE_GC_DEBUG_SAVEALL);
    objstore_txn *t = wbegin(s);
    ring(t, 3);                               /* young garbage: saved */
    commit(t);
    rooted_rings(s, 1);
    drop_rings(s, 1);
    objstore_collect_stats cs;
    OK(objstore_collect(s, &cs));
    ck_assert_uint_eq(cs.freed, 2);           /* found */
    /* two gc.garbage objects (3 + 1 slots, 2 + 1 slots) and 5 saved */
    ck_assert_uint_eq(get_stats(s).live_objects, 7);
    ck_assert_uint_eq(get_stats(s).cycles_freed, 0);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.unreachable, 0);
    t = rbegin(s);
    objstore_oid g = root_get(t, OBJSTORE_GC_GARBAGE_ROOT);
    objstore_objinfo info;
    OK(objstore_info(t, g, &info));
    ck_assert_uint_eq(info.nrefs, 3);
    objstore_oid prev = get_ref(t, g, 0);
    OK(objstore_info(t, prev, &info));
    ck_assert_uint_eq(info.nrefs, 4);
    ck_assert_uint_eq(get_ref(t, prev, 0), 0);
    commit(t);

    OK(objstore_gc_set_debug(s, 0));          /* let it all go */
    t = wbegin(s);
    OK(objstore_root_del(t, OBJSTORE_GC_GARBAGE_ROOT));
    commit(t);
    OK(objstore_collect(s, &cs));
    ck_assert_uint_eq(get_stats(s).live_objects, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

struct refs {
    int n;
    char root[4][32];
    objstore_oid from[4];
    uint32_t slot[4];
    int stop_at;
};

static int on_referrer(void *arg, const char *root, objstore_oid from, uint32_t slot)
{
    struct refs *r = arg;
    if (r->n < 4) {
        snprintf(r->root[r->n], sizeof r->root[0], "%s", root ? root : "");
        r->from[r->n] = from;
        r->slot[r->n] = slot;
    }
    r->n++;
    return r->stop_at && r->n == r->stop_at ? 42 : 0;
}

static int count_obj(void *arg, objstore_oid oid)
{
    (void)oid;
    ++*(uint64_t *)arg;
    return 0;
}

START_TEST(test_referents_referrers_and_objects_are_walked)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    uint32_t ty;
    OK(objstore_type_register(t, "node", &ty));
    objstore_oid a = new_obj(t, ty, 4, 0), b = new_obj(t, 0, 0, 8), c = new_obj(t, ty, 1, 0);
    set_ref(t, a, 1, b);
    set_ref(t, a, 3, c);
    set_ref(t, c, 0, b);
    root_set(t, "a", a);
    root_set(t, "b", b);
    commit(t);

    t = rbegin(s);
    objstore_oid out[4];
    size_t n;
    OK(objstore_gc_get_referents(t, a, out, 4, &n));
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(out[0], b);
    ck_assert_uint_eq(out[1], c);
    OK(objstore_gc_get_referents(t, a, NULL, 0, &n));
    ck_assert_uint_eq(n, 2);
    OK(objstore_gc_get_referents(t, b, out, 4, &n));
    ck_assert_uint_eq(n, 0);
    EXPECT(OBJSTORE_EBADOID, objstore_gc_get_referents(t, a + 8, out, 4, &n));

    struct refs r = {0};
    OK(objstore_gc_get_referrers(t, b, on_referrer, &r));
    ck_assert_int_eq(r.n, 3);
    ck_assert_str_eq(r.root[0], "b");
    ck_assert_uint_eq(r.from[0], 0);
    objstore_oid f1 = r.from[1], f2 = r.from[2];
    ck_assert(((f1 == a && r.slot[1] == 1) && (f2 == c && r.slot[2] == 0)) ||
              ((f2 == a && r.slot[2] == 1) && (f1 == c && r.slot[1] == 0)));
    struct refs r2 = {.stop_at = 2};
    ck_assert_int_eq(objstore_gc_get_referrers(t, b, on_referrer, &r2), 42);
    ck_assert_int_eq(r2.n, 2);
    EXPECT(OBJSTORE_EBADOID, objstore_gc_get_referrers(t, 0, on_referrer, &r));
    EXPECT(OBJSTORE_EINVAL, objstore_gc_get_referrers(t, b, NULL, NULL));

    uint64_t all = 0, nodes = 0, plain = 0;
    uint32_t zero = 0;
    OK(objstore_gc_get_objects(t, NULL, count_obj, &all));
    OK(objstore_gc_get_objects(t, &ty, count_obj, &nodes));
    OK(objstore_gc_get_objects(t, &zero, count_obj, &plain));
    ck_assert_uint_eq(all, 3);
    ck_assert_uint_eq(nodes, 2);
    ck_assert_uint_eq(plain, 1);
    EXPECT(OBJSTORE_EINVAL, objstore_gc_get_objects(t, NULL, NULL, NULL));
    commit(t);
    close_store(s);
}
END_TEST

START_TEST(test_the_allocator_report_has_the_shape_of_debugmallocstats)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid list = new_obj(t, 0, 100, 0);
    for (uint32_t i = 0; i < 100; i++)
        set_ref(t, list, i, new_obj(t, 0, 0, i * 4));
    root_set(t, "list", list);
    commit(t);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    OK(objstore_print_mallocstats(s, f));
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "Small block threshold = 512, in 32 size classes."));
    ck_assert_ptr_nonnull(strstr(buf, "class   size   num pools   blocks in use  avail blocks"));
    ck_assert_ptr_nonnull(strstr(buf, "# arenas allocated current"));
    ck_assert_ptr_nonnull(strstr(buf, "# bytes in allocated blocks"));
    ck_assert_ptr_nonnull(strstr(buf, "# fragmentation"));
    /* one row per class in use: 16-byte blocks hold the empty objects */
    ck_assert_ptr_nonnull(strstr(buf, "\n    0     16"));
    free(buf);
    EXPECT(OBJSTORE_EINVAL, objstore_print_mallocstats(s, NULL));
    close_store(s);
}
END_TEST


START_TEST(test_settings_from_a_thread_in_a_read_transaction_are_refused)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = rbegin(s);
    EXPECT(OBJSTORE_ETXN, objstore_gc_set_threshold(s, 10, 10));
    EXPECT(OBJSTORE_ETXN, objstore_gc_callback_add(s, record, NULL));
    objstore_gc_count c;
    OK(objstore_gc_get_count(s, &c));           /* reads are fine */
    objstore_gc_kinds st;
    OK(objstore_gc_get_stats(s, &st));
    commit(t);
    EXPECT(OBJSTORE_EINVAL, objstore_gc_set_threshold(NULL, 1, 1));
    EXPECT(OBJSTORE_EINVAL, objstore_gc_disable(NULL));
    ck_assert_int_eq(objstore_gc_isenabled(NULL), 0);
    close_store(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gc_module");
    TCase *tc = ts_tcase(s, "module", 120);
    tcase_add_test(tc, test_a_disabled_collector_runs_no_automatic_collection_until_enabled);
    tcase_add_test(tc, test_thresholds_change_at_run_time);
    tcase_add_test(tc, test_get_count_tells_young_objects_and_candidates);
    tcase_add_test(tc, test_statistics_are_kept_per_kind);
    tcase_add_test(tc, test_callbacks_see_each_collection_start_and_stop);
    tcase_add_test(tc, test_saveall_links_the_garbage_under_a_root_instead_of_freeing_it);
    tcase_add_test(tc, test_referents_referrers_and_objects_are_walked);
    tcase_add_test(tc, test_the_allocator_report_has_the_shape_of_debugmallocstats);
    tcase_add_test(tc, test_settings_from_a_thread_in_a_read_transaction_are_refused);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
