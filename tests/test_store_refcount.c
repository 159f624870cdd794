/*
 * test_store_refcount.c -- the Check suite of reference counting in store/,
 * written against objstore.h and objstore_admin.h.
 *
 * The rule under test (objstore.h): an object's persisted count is the number
 * of roots naming it plus the number of slots of live objects pointing at it;
 * a commit frees every object left at 0 and not pinned, then what that frees
 * in turn, iteratively and within options.free_budget per commit, the rest
 * waiting in the persisted zero-count table for later commits or the next
 * open.  A count that falls but stays above 0 makes a cycle candidate.
 *
 * What it covers: counts through chains, diamonds, roots, self-references and
 * overwritten slots; relinking inside a transaction; new objects left
 * unlinked; pins; a million-long chain freed on a 256 KiB stack; bounded
 * commits; the zero-count table across reopen; garbage cycles; and a
 * randomized run checked against a model after every commit.
 *
 * verify (objstore_admin.h) runs after the interesting steps and must find
 * nothing.  Helpers and conventions: test_store.h.
 */
#include "test_store.h"

#include <limits.h>
#include <pthread.h>

/* ------------------------------------------------------------------ */
/* counts                                                               */

START_TEST(test_counts_follow_a_chain_from_a_root)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 8), b = new_obj(t, 0, 1, 8), c = new_obj(t, 0, 1, 8);
    ck_assert_uint_eq(refcount(t, a), 0);   /* a new object starts at 0 */
    root_set(t, "head", a);
    set_ref(t, a, 0, b);
    set_ref(t, b, 0, c);
    ck_assert_uint_eq(refcount(t, a), 1);
    ck_assert_uint_eq(refcount(t, b), 1);
    ck_assert_uint_eq(refcount(t, c), 1);
    root_set(t, "tail", c);
    ck_assert_uint_eq(refcount(t, c), 2);
    commit(t);

    s = reopen(s, NULL);
    t = rbegin(s);
    ck_assert_uint_eq(refcount(t, a), 1);
    ck_assert_uint_eq(refcount(t, b), 1);
    ck_assert_uint_eq(refcount(t, c), 2);
    objstore_objinfo info;
    OK(objstore_info(t, c, &info));
    ck_assert_uint_eq(info.refcount, 2);
    commit(t);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, 3);
    ck_assert_uint_eq(r.references, 2);
    ck_assert_uint_eq(r.roots, 2);
    ck_assert_uint_eq(r.reachable, 3);
    ck_assert_uint_eq(r.unreachable, 0);
    close_store(s);
}
END_TEST

START_TEST(test_counts_follow_a_diamond_and_a_freed_side_releases_its_slots)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 2, 8), b = new_obj(t, 0, 1, 8), c = new_obj(t, 0, 1, 8),
                 d = new_obj(t, 0, 0, 8);
    root_set(t, "top", a);
    set_ref(t, a, 0, b);
    set_ref(t, a, 1, c);
    set_ref(t, b, 0, d);
    set_ref(t, c, 0, d);
    commit(t);
    t = rbegin(s);
    ck_assert_uint_eq(refcount(t, d), 2);
    commit(t);
    verify_clean(s);

    t = wbegin(s);
    set_ref(t, a, 0, 0);   /* b falls to 0: still live until commit */
    ck_assert_uint_eq(refcount(t, b), 0);
    ck_assert(is_live(t, b));
    ck_assert_uint_eq(get_ref(t, b, 0), d);
    ck_assert_uint_eq(refcount(t, d), 2);
    commit(t);

    t = rbegin(s);
    ck_assert(!is_live(t, b));
    ck_assert_uint_eq(refcount(t, d), 1);   /* b's slot was released */
    ck_assert_uint_eq(refcount(t, c), 1);
    commit(t);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, 3);
    ck_assert_uint_eq(get_stats(s).live_objects, 3);
    close_store(s);
}
END_TEST

START_TEST(test_every_root_naming_an_object_counts)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 8), b = new_obj(t, 0, 0, 8);
    root_set(t, "one", a);
    root_set(t, "two", a);
    root_set(t, "three", a);
    ck_assert_uint_eq(refcount(t, a), 3);
    root_set(t, "three", b);   /* a root moved: one down, one up */
    ck_assert_uint_eq(refcount(t, a), 2);
    ck_assert_uint_eq(refcount(t, b), 1);
    root_set(t, "two", a);     /* set to what it holds: unchanged */
    ck_assert_uint_eq(refcount(t, a), 2);
    commit(t);

    t = wbegin(s);
    OK(objstore_root_del(t, "one"));
    ck_assert_uint_eq(refcount(t, a), 1);
    OK(objstore_root_del(t, "three"));
    ck_assert_uint_eq(refcount(t, b), 0);
    commit(t);
    t = rbegin(s);
    ck_assert_uint_eq(refcount(t, a), 1);
    ck_assert(!is_live(t, b));
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_a_self_reference_counts_once_and_keeps_the_object)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 2, 8);
    root_set(t, "a", a);
    set_ref(t, a, 0, a);
    ck_assert_uint_eq(refcount(t, a), 2);
    set_ref(t, a, 1, a);
    ck_assert_uint_eq(refcount(t, a), 3);
    set_ref(t, a, 1, 0);
    ck_assert_uint_eq(refcount(t, a), 2);
    commit(t);
    verify_clean(s);

    t = wbegin(s);
    OK(objstore_root_del(t, "a"));
    commit(t);
    t = rbegin(s);
    ck_assert(is_live(t, a));   /* held by itself: garbage only a collector sees */
    ck_assert_uint_eq(refcount(t, a), 1);
    commit(t);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.unreachable, 1);
    ck_assert_uint_eq(r.reachable, 0);
    close_store(s);
}
END_TEST

START_TEST(test_overwriting_a_slot_moves_the_count)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 8), b = new_obj(t, 0, 0, 8), c = new_obj(t, 0, 0, 8);
    root_set(t, "a", a);
    root_set(t, "c", c);
    set_ref(t, a, 0, b);
    ck_assert_uint_eq(refcount(t, b), 1);
    set_ref(t, a, 0, b);   /* the same target again: unchanged */
    ck_assert_uint_eq(refcount(t, b), 1);
    commit(t);

    t = wbegin(s);
    set_ref(t, a, 0, c);
    ck_assert_uint_eq(refcount(t, b), 0);
    ck_assert_uint_eq(refcount(t, c), 2);
    commit(t);
    t = rbegin(s);
    ck_assert(!is_live(t, b));
    ck_assert_uint_eq(get_ref(t, a, 0), c);
    ck_assert_uint_eq(refcount(t, c), 2);
    commit(t);
    verify_clean(s);

    t = wbegin(s);
    set_ref(t, a, 0, 0);
    ck_assert_uint_eq(refcount(t, c), 1);
    commit(t);
    verify_clean(s);
    ck_assert_uint_eq(get_stats(s).live_objects, 2);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* relinking, new objects, pins                                         */

START_TEST(test_unlinking_and_relinking_in_one_transaction_keeps_the_object)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 8), b = new_obj(t, 0, 0, 8);
    put_u64(t, a, 0, 0xA);
    put_u64(t, b, 0, 0xB);
    root_set(t, "r", a);
    set_ref(t, a, 0, b);
    commit(t);

    t = wbegin(s);
    OK(objstore_root_del(t, "r"));   /* a at 0 */
    set_ref(t, a, 0, 0);              /* b at 0 */
    ck_assert_uint_eq(refcount(t, a), 0);
    ck_assert_uint_eq(refcount(t, b), 0);
    objstore_oid c = new_obj(t, 0, 1, 8);
    set_ref(t, c, 0, b);              /* b moves under a new parent */
    root_set(t, "c", c);
    root_set(t, "r", a);              /* and a comes back under its name */
    commit(t);

    t = rbegin(s);
    ck_assert(is_live(t, a));
    ck_assert(is_live(t, b));
    ck_assert_uint_eq(get_u64(t, a, 0), 0xA);
    ck_assert_uint_eq(get_u64(t, b, 0), 0xB);
    ck_assert_uint_eq(refcount(t, a), 1);
    ck_assert_uint_eq(refcount(t, b), 1);
    ck_assert_uint_eq(get_ref(t, c, 0), b);
    commit(t);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, 3);
    ck_assert_uint_eq(r.unreachable, 0);
    close_store(s);
}
END_TEST

START_TEST(test_an_unlinked_new_object_is_freed_at_commit)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid q = new_obj(t, 0, 0, 8);
    root_set(t, "q", q);
    commit(t);
    objstore_stats st0 = get_stats(s);

    t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 0, 100);               /* never linked */
    objstore_oid y = new_obj(t, 0, 0, 8);                 /* linked, unlinked */
    root_set(t, "y", y);
    OK(objstore_root_del(t, "y"));
    objstore_oid p = new_obj(t, 0, 1, 8);                 /* holds q */
    set_ref(t, p, 0, q);
    objstore_oid c1 = new_obj(t, 0, 1, 8), c2 = new_obj(t, 0, 1, 8),
                 c3 = new_obj(t, 0, 0, 5000);             /* a new chain */
    set_ref(t, c1, 0, c2);
    set_ref(t, c2, 0, c3);
    ck_assert_uint_eq(refcount(t, q), 2);
    commit(t);

    t = rbegin(s);
    objstore_oid gone[] = { x, y, p, c1, c2, c3 };
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
        ck_assert_msg(!is_live(t, gone[i]), "unlinked new object %zu survived commit", i);
    ck_assert_uint_eq(refcount(t, q), 1);
    commit(t);
    objstore_stats st1 = get_stats(s);
    ck_assert_uint_eq(st1.live_objects, st0.live_objects);
    ck_assert_uint_eq(st1.live_bytes, st0.live_bytes);
    ck_assert_uint_eq(st1.objects_freed, st0.objects_freed + 6);
    ck_assert_uint_eq(st1.zct_entries, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_a_pinned_object_at_count_zero_survives_until_the_commit_after_unpin)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 1, 8), y = new_obj(t, 0, 0, 8);
    set_ref(t, x, 0, y);
    put_u64(t, y, 0, 77);
    OK(objstore_pin(t, x));
    commit(t);

    t = rbegin(s);
    ck_assert(is_live(t, x));
    ck_assert(is_live(t, y));
    ck_assert_uint_eq(refcount(t, x), 0);
    ck_assert_uint_eq(refcount(t, y), 1);
    commit(t);
    ck_assert_uint_ge(get_stats(s).zct_entries, 1);
    verify_clean(s);   /* a pinned 0 is in the zero-count table: no leak */

    empty_commit(s);
    empty_commit(s);
    t = rbegin(s);
    ck_assert_uint_eq(get_u64(t, y, 0), 77);
    commit(t);

    t = wbegin(s);
    OK(objstore_unpin(t, x));
    ck_assert(is_live(t, x));   /* until the commit */
    commit(t);
    t = rbegin(s);
    ck_assert(!is_live(t, x));
    ck_assert(!is_live(t, y));
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 0);
    ck_assert_uint_eq(get_stats(s).zct_entries, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* R7: a child whose last reference goes with its parent's free is freed
 * straight from the drain's work list; pinned, it must instead stay, at a
 * count of 0 written to its header, in the zero-count table. */
START_TEST(test_a_pinned_child_whose_parent_is_freed_waits_at_zero)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 2, 8), y = new_obj(t, 0, 0, 8), z = new_obj(t, 0, 0, 8);
    set_ref(t, x, 0, y);
    set_ref(t, x, 1, z);
    put_u64(t, y, 0, 91);
    root_set(t, "x", x);
    commit(t);

    t = wbegin(s);
    OK(objstore_pin(t, y));
    OK(objstore_root_del(t, "x"));
    commit(t);
    t = rbegin(s);
    ck_assert(!is_live(t, x));
    ck_assert(!is_live(t, z));   /* freed from the work list */
    ck_assert(is_live(t, y));
    ck_assert_uint_eq(refcount(t, y), 0);
    ck_assert_uint_eq(get_u64(t, y, 0), 91);
    commit(t);
    ck_assert_uint_eq(get_stats(s).zct_entries, 1);
    verify_clean(s);   /* its 0 is written and it is in the table: no leak */

    s = reopen(s, NULL);   /* the pin goes with the handle */
    empty_commit(s);
    t = rbegin(s);
    ck_assert(!is_live(t, y));
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 0);
    ck_assert_uint_eq(get_stats(s).zct_entries, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_a_pin_keeps_a_committed_object_whose_last_link_goes)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 8);
    root_set(t, "a", a);
    commit(t);

    t = wbegin(s);
    OK(objstore_pin(t, a));
    OK(objstore_root_del(t, "a"));
    commit(t);
    t = rbegin(s);
    ck_assert(is_live(t, a));
    ck_assert_uint_eq(refcount(t, a), 0);
    commit(t);
    verify_clean(s);

    t = wbegin(s);
    root_set(t, "again", a);   /* relinked, then unpinned: stays */
    OK(objstore_unpin(t, a));
    commit(t);
    t = rbegin(s);
    ck_assert(is_live(t, a));
    ck_assert_uint_eq(refcount(t, a), 1);
    commit(t);
    ck_assert_uint_eq(get_stats(s).zct_entries, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_pins_do_not_outlive_the_handle)
{
    objstore *s = new_store(NULL);
    objstore_stats st0 = get_stats(s);
    objstore_txn *t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 1, 8), y = new_obj(t, 0, 0, 8);
    set_ref(t, x, 0, y);
    OK(objstore_pin(t, x));
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, st0.live_objects + 2);

    s = reopen(s, NULL);   /* no pin survives: open drains the table */
    objstore_stats st1 = get_stats(s);
    ck_assert_uint_eq(st1.live_objects, st0.live_objects);
    ck_assert_uint_eq(st1.zct_entries, 0);
    t = rbegin(s);
    ck_assert(!is_live(t, x));
    ck_assert(!is_live(t, y));
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* long chains and bounded commits                                      */

/* Builds a chain of n one-slot objects under root name; returns its head. */
static objstore_oid build_chain(objstore *s, const char *name, uint64_t n)
{
    objstore_txn *t = wbegin(s);
    objstore_oid prev = 0;
    for (uint64_t i = 0; i < n; i++) {
        objstore_oid o = 0;
        int rc = objstore_new(t, 0, 1, 0, &o);
        MUST(rc == OBJSTORE_OK, "objstore_new #%llu = %d: %s", U(i), rc, objstore_errmsg());
        if (prev != 0) {
            rc = objstore_set_ref(t, o, 0, prev);
            MUST(rc == OBJSTORE_OK, "objstore_set_ref #%llu = %d: %s", U(i), rc,
                 objstore_errmsg());
        }
        prev = o;
    }
    root_set(t, name, prev);
    commit(t);
    return prev;
}

#define CHAIN_LEN 1000000u

struct chain_run {
    uint64_t start_live, built_live, end_live, freed, zct;
};

static void *million_chain_main(void *arg)
{
    struct chain_run *run = arg;
    objstore_options o = { .free_budget = 2000000 };
    objstore *s = new_store(&o);
    objstore_stats st0 = get_stats(s);
    run->start_live = st0.live_objects;
    build_chain(s, "chain", CHAIN_LEN);
    run->built_live = get_stats(s).live_objects;

    objstore_txn *t = wbegin(s);
    OK(objstore_root_del(t, "chain"));
    commit(t);
    objstore_stats st1 = get_stats(s);
    run->end_live = st1.live_objects;
    run->freed = st1.objects_freed - st0.objects_freed;
    run->zct = st1.zct_entries;
    close_store(s);
    return NULL;
}

START_TEST(test_decref_to_zero_frees_the_whole_chain)
{
    /* A small stack: freeing by recursion would overflow it long before the
     * millionth link.  The sanitizer's frames are larger, so it gets more. */
    size_t stack = ts_under_sanitizer() ? 1024 * 1024 : 256 * 1024;
    if (stack < (size_t)PTHREAD_STACK_MIN)
        stack = PTHREAD_STACK_MIN;
    pthread_attr_t attr;
    ck_assert_int_eq(pthread_attr_init(&attr), 0);
    ck_assert_int_eq(pthread_attr_setstacksize(&attr, stack), 0);
    struct chain_run run = { 0 };
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, &attr, million_chain_main, &run), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    pthread_attr_destroy(&attr);

    ck_assert_uint_eq(run.built_live, run.start_live + CHAIN_LEN);
    ck_assert_uint_eq(run.end_live, run.start_live);
    ck_assert_uint_eq(run.freed, CHAIN_LEN);
    ck_assert_uint_eq(run.zct, 0);

    objstore_options o = { .free_budget = 2000000 };
    objstore *s = open_store(g_store, &o);
    ck_assert_uint_eq(get_stats(s).live_objects, run.start_live);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, run.start_live);
    close_store(s);
}
END_TEST

/* The budget counts every free, a parent's leaves freed with it included:
 * holders of 150 leaves put a holder's free at the budget's edge. */
START_TEST(test_a_commit_freeing_holders_of_leaves_frees_no_more_than_its_budget)
{
    objstore_options o = { .free_budget = 1000 };
    objstore *s = new_store(&o);
    uint64_t start = get_stats(s).live_objects;
    objstore_txn *t = wbegin(s);
    objstore_oid root = new_obj(t, 0, 10, 0);
    for (uint32_t h = 0; h < 10; h++) {
        objstore_oid hold = new_obj(t, 0, 150, 0);
        set_ref(t, root, h, hold);
        for (uint32_t j = 0; j < 150; j++)
            set_ref(t, hold, j, new_obj(t, 0, 0, 8));
    }
    root_set(t, "r", root);
    commit(t);
    const uint64_t all = 1 + 10 + 1500;
    ck_assert_uint_eq(get_stats(s).live_objects, start + all);

    t = wbegin(s);
    OK(objstore_root_del(t, "r"));
    commit(t);
    uint64_t left = get_stats(s).live_objects - start;
    ck_assert_msg(all - left == 1000, "the first commit freed %llu (budget 1000)",
                  U(all - left));
    verify_clean(s);   /* what waits is at a written 0, in the table */
    empty_commit(s);
    ck_assert_uint_eq(get_stats(s).live_objects, start);
    ck_assert_uint_eq(get_stats(s).zct_entries, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_a_commit_frees_at_most_its_budget_and_later_commits_drain_the_rest)
{
    objstore_options o = { .free_budget = 1000 };
    objstore *s = new_store(&o);
    uint64_t start = get_stats(s).live_objects;
    build_chain(s, "chain", 10000);
    ck_assert_uint_eq(get_stats(s).live_objects, start + 10000);
    verify_clean(s);

    objstore_txn *t = wbegin(s);
    OK(objstore_root_del(t, "chain"));
    commit(t);

    /* garbage: chain objects still live, waiting in the zero-count table */
    uint64_t garbage = get_stats(s).live_objects - start, commits = 1;
    objstore_oid small = 0;
    ck_assert_msg(10000 - garbage <= 1000, "the first commit freed %llu (budget 1000)",
                  U(10000 - garbage));
    ck_assert_msg(garbage < 10000, "the first commit freed nothing");
    while (garbage > 0) {
        ck_assert_uint_gt(get_stats(s).zct_entries, 0);
        verify_clean(s);   /* the leftovers' slots still count: counts stay exact */
        ck_assert_msg(commits <= 30, "still %llu to free after %llu commits",
                      U(garbage), U(commits));

        t = wbegin(s);
        if (commits == 3) {   /* a small change rides along with the cascade */
            small = new_obj(t, 0, 0, 8);
            put_u64(t, small, 0, 5);
            root_set(t, "small", small);
        }
        commit(t);
        commits++;
        uint64_t now = get_stats(s).live_objects - start - (small != 0);
        ck_assert_msg(now < garbage, "commit %llu freed nothing (%llu left)", U(commits),
                      U(garbage));
        ck_assert_msg(garbage - now <= 1000, "commit %llu freed %llu (budget 1000)",
                      U(commits), U(garbage - now));
        garbage = now;
    }
    ck_assert_uint_ge(commits, 10);
    objstore_stats st = get_stats(s);
    ck_assert_uint_eq(st.live_objects, start + 1);
    ck_assert_uint_eq(st.zct_entries, 0);
    t = rbegin(s);
    ck_assert_uint_eq(get_u64(t, root_get(t, "small"), 0), 5);
    commit(t);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, start + 1);
    ck_assert_uint_eq(r.unreachable, 0);
    close_store(s);
}
END_TEST

START_TEST(test_the_zero_count_table_survives_a_reopen_and_is_drained_at_open)
{
    objstore_options o = { .free_budget = 1000 };
    objstore *s = new_store(&o);
    uint64_t start = get_stats(s).live_objects;
    build_chain(s, "chain", 10000);
    objstore_txn *t = wbegin(s);
    OK(objstore_root_del(t, "chain"));
    commit(t);
    objstore_stats st = get_stats(s);
    ck_assert_uint_gt(st.zct_entries, 0);
    ck_assert_uint_gt(st.live_objects, start);
    close_store(s);

    s = open_store(g_store, NULL);
    st = get_stats(s);
    ck_assert_uint_eq(st.live_objects, start);
    ck_assert_uint_eq(st.zct_entries, 0);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, start);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* cycles                                                               */

START_TEST(test_an_unlinked_cycle_stays_alive_and_verify_reports_it_unreachable)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 8), b = new_obj(t, 0, 1, 8);
    root_set(t, "a", a);
    set_ref(t, a, 0, b);
    set_ref(t, b, 0, a);
    ck_assert_uint_eq(refcount(t, a), 2);
    ck_assert_uint_eq(refcount(t, b), 1);
    commit(t);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.reachable, 2);
    ck_assert_uint_eq(r.unreachable, 0);

    t = wbegin(s);
    OK(objstore_root_del(t, "a"));
    commit(t);
    t = rbegin(s);
    ck_assert(is_live(t, a));
    ck_assert(is_live(t, b));
    ck_assert_uint_eq(refcount(t, a), 1);
    ck_assert_uint_eq(refcount(t, b), 1);
    commit(t);
    r = verify_clean(s);
    ck_assert_uint_eq(r.objects, 2);
    ck_assert_uint_eq(r.unreachable, 2);
    ck_assert_uint_eq(r.reachable, 0);
    ck_assert_uint_gt(r.unreachable_bytes, 0);
    ck_assert_uint_gt(get_stats(s).cycle_candidates, 0);

    /* The candidate set is persisted: a restart does not forget the cycle. */
    s = reopen(s, NULL);
    ck_assert_uint_gt(get_stats(s).cycle_candidates, 0);
    r = verify_clean(s);
    ck_assert_uint_eq(r.unreachable, 2);
    close_store(s);
}
END_TEST

START_TEST(test_a_decref_that_leaves_a_positive_count_makes_a_cycle_candidate)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 8), p = new_obj(t, 0, 1, 8);
    root_set(t, "one", a);
    root_set(t, "two", a);
    root_set(t, "p", p);
    set_ref(t, p, 0, a);
    commit(t);
    uint64_t c0 = get_stats(s).cycle_candidates;

    t = wbegin(s);
    OK(objstore_root_del(t, "two"));
    commit(t);
    ck_assert_uint_gt(get_stats(s).cycle_candidates, c0);
    verify_clean(s);

    t = wbegin(s);
    set_ref(t, p, 0, 0);   /* a slot, not a root, going away counts the same */
    commit(t);
    ck_assert_uint_gt(get_stats(s).cycle_candidates, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* a randomized run against a model                                     */

#define M_MAXOBJ 6000
#define M_SLOTS 4
#define M_ROOTS 8

struct mobj {
    objstore_oid oid;
    uint32_t nrefs;
    int slot[M_SLOTS];   /* model indices, -1 = null; always older objects */
    bool live, pinned;
};

struct model {
    int n;
    int root[M_ROOTS];
    struct mobj o[M_MAXOBJ];
};

static uint64_t g_rng;
static uint32_t rnd(uint32_t n)
{
    g_rng = ts_mix64(g_rng);
    return (uint32_t)(g_rng % n);
}

static void model_counts(const struct model *m, uint64_t *count)
{
    memset(count, 0, sizeof(uint64_t) * (size_t)m->n);
    for (int r = 0; r < M_ROOTS; r++)
        if (m->root[r] >= 0)
            count[m->root[r]]++;
    for (int i = 0; i < m->n; i++)
        if (m->o[i].live)
            for (uint32_t k = 0; k < m->o[i].nrefs; k++)
                if (m->o[i].slot[k] >= 0)
                    count[m->o[i].slot[k]]++;
}

/* What a commit frees: everything at 0 and not pinned, then what that
 * releases; marks them in freed[] and returns how many. */
static int model_commit(struct model *m, bool *freed, uint64_t *count)
{
    model_counts(m, count);
    int n = 0;
    bool again = true;
    memset(freed, 0, sizeof(bool) * (size_t)m->n);
    while (again) {
        again = false;
        for (int i = m->n - 1; i >= 0; i--) {
            struct mobj *o = &m->o[i];
            if (o->live && !o->pinned && count[i] == 0) {
                o->live = false;
                freed[i] = true;
                n++;
                for (uint32_t k = 0; k < o->nrefs; k++)
                    if (o->slot[k] >= 0)
                        count[o->slot[k]]--;
                again = true;
            }
        }
    }
    return n;
}

static void model_check(objstore *s, const struct model *m, const bool *freed,
                        uint64_t *count, int step)
{
    model_counts(m, count);
    uint64_t live = 0;
    objstore_txn *t = rbegin(s);
    for (int i = 0; i < m->n; i++) {
        const struct mobj *o = &m->o[i];
        if (freed != NULL && freed[i]) {
            objstore_objinfo info;
            int rc = objstore_info(t, o->oid, &info);
            MUST(rc == OBJSTORE_EBADOID, "step %d: object %d (oid %llu) should be "
                 "freed, info = %d", step, i, U(o->oid), rc);
        }
        if (!o->live)
            continue;
        live++;
        objstore_objinfo info;
        int rc = objstore_info(t, o->oid, &info);
        MUST(rc == OBJSTORE_OK, "step %d: object %d (oid %llu) should be live: %d %s",
             step, i, U(o->oid), rc, objstore_errmsg());
        MUST(info.refcount == count[i], "step %d: object %d has count %llu, model %llu",
             step, i, U(info.refcount), U(count[i]));
        MUST(info.nrefs == o->nrefs, "step %d: object %d nrefs %u", step, i, info.nrefs);
        for (uint32_t k = 0; k < o->nrefs; k++) {
            objstore_oid want = o->slot[k] >= 0 ? m->o[o->slot[k]].oid : 0;
            objstore_oid got = get_ref(t, o->oid, k);
            MUST(got == want, "step %d: object %d slot %u = %llu, model %llu", step, i,
                 k, U(got), U(want));
        }
        MUST(get_u64(t, o->oid, 0) == (uint64_t)i, "step %d: object %d lost its tag",
             step, i);
    }
    for (int r = 0; r < M_ROOTS; r++) {
        char name[16];
        snprintf(name, sizeof name, "r%d", r);
        objstore_oid got = 0;
        int rc = objstore_root_get(t, name, &got);
        if (m->root[r] < 0)
            MUST(rc == OBJSTORE_ENOTFOUND, "step %d: root %s should be absent: %d",
                 step, name, rc);
        else
            MUST(rc == OBJSTORE_OK && got == m->o[m->root[r]].oid,
                 "step %d: root %s = %llu (rc %d), model %llu", step, name, U(got), rc,
                 U(m->o[m->root[r]].oid));
    }
    commit(t);
    objstore_verify_report rep = verify_clean(s);
    MUST(rep.objects == live, "step %d: verify counts %llu objects, model %llu", step,
         U(rep.objects), U(live));
    MUST(get_stats(s).live_objects == live, "step %d: live_objects %llu, model %llu",
         step, U(get_stats(s).live_objects), U(live));
}

static int pick_live(const struct model *m)
{
    if (m->n == 0)
        return -1;
    for (int tries = 0; tries < 64; tries++) {
        int i = (int)rnd((uint32_t)m->n);
        if (m->o[i].live)
            return i;
    }
    for (int i = m->n - 1; i >= 0; i--)
        if (m->o[i].live)
            return i;
    return -1;
}

START_TEST(test_random_graph_edits_keep_counts_equal_to_a_model)
{
    struct model *m = calloc(1, sizeof *m), *saved = malloc(sizeof *m);
    bool *freed = calloc(M_MAXOBJ, sizeof *freed);
    uint64_t *count = calloc(M_MAXOBJ, sizeof *count);
    ck_assert(m && saved && freed && count);
    for (int r = 0; r < M_ROOTS; r++)
        m->root[r] = -1;
    g_rng = 20240601;
    objstore *s = new_store(NULL);
    const int txns = ts_under_sanitizer() ? 150 : 400;

    for (int step = 0; step < txns; step++) {
        memcpy(saved, m, sizeof *m);
        objstore_txn *t = wbegin(s);
        int ops = 1 + (int)rnd(25);
        for (int k = 0; k < ops; k++) {
            uint32_t what = rnd(100);
            int a = pick_live(m);
            if (what < 30 || a < 0) {
                if (m->n >= M_MAXOBJ)
                    continue;
                int i = m->n++;
                struct mobj *o = &m->o[i];
                o->nrefs = rnd(M_SLOTS + 1);
                o->live = true;
                o->pinned = false;
                for (int j = 0; j < M_SLOTS; j++)
                    o->slot[j] = -1;
                uint64_t size = 8 + (rnd(4) == 0 ? rnd(3000) : rnd(200));
                o->oid = new_obj(t, 0, o->nrefs, size);
                put_u64(t, o->oid, 0, (uint64_t)i);
            } else if (what < 60) {
                struct mobj *o = &m->o[a];
                if (o->nrefs == 0)
                    continue;
                uint32_t slot = rnd(o->nrefs);
                int b = a > 0 ? (int)rnd((uint32_t)a) : -1;   /* older: no cycle */
                if (b >= 0 && (!m->o[b].live || rnd(5) == 0))
                    b = -1;
                set_ref(t, o->oid, slot, b >= 0 ? m->o[b].oid : 0);
                o->slot[slot] = b;
            } else if (what < 75) {
                int r = (int)rnd(M_ROOTS);
                char name[16];
                snprintf(name, sizeof name, "r%d", r);
                root_set(t, name, m->o[a].oid);
                m->root[r] = a;
            } else if (what < 85) {
                int r = (int)rnd(M_ROOTS);
                char name[16];
                snprintf(name, sizeof name, "r%d", r);
                if (m->root[r] < 0) {
                    EXPECT(OBJSTORE_ENOTFOUND, objstore_root_del(t, name));
                } else {
                    OK(objstore_root_del(t, name));
                    m->root[r] = -1;
                }
            } else if (what < 93) {
                if (m->o[a].pinned)
                    OK(objstore_unpin(t, m->o[a].oid));
                else
                    OK(objstore_pin(t, m->o[a].oid));
                m->o[a].pinned = !m->o[a].pinned;
            } else {
                model_counts(m, count);
                uint64_t c = refcount(t, m->o[a].oid);
                MUST(c == count[a], "step %d: in-transaction count of %d is %llu, "
                     "model %llu", step, a, U(c), U(count[a]));
            }
        }
        if (rnd(5) == 0) {
            objstore_abort(t);
            /* Objects created by the aborted transaction are gone ... */
            t = rbegin(s);
            for (int i = saved->n; i < m->n; i++) {
                objstore_objinfo info;
                int rc = objstore_info(t, m->o[i].oid, &info);
                MUST(rc == OBJSTORE_EBADOID, "step %d: object %d (oid %llu) of an "
                     "aborted transaction is still there: %d", step, i, U(m->o[i].oid),
                     rc);
            }
            commit(t);
            /* ... and everything else is as before it. */
            memcpy(m, saved, sizeof *m);
            model_check(s, m, NULL, count, step);
        } else {
            commit(t);
            model_commit(m, freed, count);
            model_check(s, m, freed, count, step);
        }
        if (step % 50 == 49) {   /* pins end with the handle */
            s = reopen(s, NULL);
            for (int i = 0; i < m->n; i++)
                m->o[i].pinned = false;
            model_commit(m, freed, count);
            model_check(s, m, freed, count, step);
        }
    }
    close_store(s);
    free(m);
    free(saved);
    free(freed);
    free(count);
}
END_TEST

/* ------------------------------------------------------------------ */

static Suite *store_refcount_suite(void)
{
    Suite *s = suite_create("store_refcount");
    double slow = ts_under_sanitizer() ? 600 : 120;

    TCase *tc = ts_tcase(s, "counts", 60);
    tcase_add_test(tc, test_counts_follow_a_chain_from_a_root);
    tcase_add_test(tc, test_counts_follow_a_diamond_and_a_freed_side_releases_its_slots);
    tcase_add_test(tc, test_every_root_naming_an_object_counts);
    tcase_add_test(tc, test_a_self_reference_counts_once_and_keeps_the_object);
    tcase_add_test(tc, test_overwriting_a_slot_moves_the_count);

    tc = ts_tcase(s, "lifetime", 60);
    tcase_add_test(tc, test_unlinking_and_relinking_in_one_transaction_keeps_the_object);
    tcase_add_test(tc, test_an_unlinked_new_object_is_freed_at_commit);
    tcase_add_test(tc, test_a_pinned_object_at_count_zero_survives_until_the_commit_after_unpin);
    tcase_add_test(tc, test_a_pin_keeps_a_committed_object_whose_last_link_goes);
    tcase_add_test(tc, test_a_pinned_child_whose_parent_is_freed_waits_at_zero);
    tcase_add_test(tc, test_pins_do_not_outlive_the_handle);

    tc = ts_tcase(s, "cascades", slow);
    tcase_add_test(tc, test_decref_to_zero_frees_the_whole_chain);
    tcase_add_test(tc, test_a_commit_frees_at_most_its_budget_and_later_commits_drain_the_rest);
    tcase_add_test(tc, test_a_commit_freeing_holders_of_leaves_frees_no_more_than_its_budget);
    tcase_add_test(tc, test_the_zero_count_table_survives_a_reopen_and_is_drained_at_open);

    tc = ts_tcase(s, "cycles", 60);
    tcase_add_test(tc, test_an_unlinked_cycle_stays_alive_and_verify_reports_it_unreachable);
    tcase_add_test(tc, test_a_decref_that_leaves_a_positive_count_makes_a_cycle_candidate);

    tc = ts_tcase(s, "model", slow);
    tcase_add_test(tc, test_random_graph_edits_keep_counts_equal_to_a_model);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(store_refcount_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
