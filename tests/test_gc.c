/*
 * test_gc.c -- the online cycle collector: objstore_collect and the commit
 * threshold free garbage cycles and nothing else.
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include "gc.h"
#include "gc_set.h"
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

/* A cut scan must not be the last word: repeated calls finish it. */
START_TEST(test_a_ring_one_past_the_budget_is_freed_by_repeated_collections)
{
    objstore_options o = {.gc_budget = 100, .gc_threshold = UINT64_MAX};
    objstore *s = new_store(&o);
    objstore_txn *t = wbegin(s);
    root_set(t, "ring", ring(t, 101, 1));
    commit(t);
    t = wbegin(s);
    OK(objstore_root_del(t, "ring"));
    commit(t);

    objstore_collect_stats st = collect(s);
    ck_assert_int_eq(st.incomplete, 1);
    ck_assert_uint_eq(st.freed, 0);
    st = collect(s);                          /* twice the budget: it fits */
    ck_assert_int_eq(st.incomplete, 0);
    ck_assert_uint_eq(st.freed, 101);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, 0);
    ck_assert_uint_eq(get_stats(s).cycle_candidates, 0);
    close_store(s);
}
END_TEST

/* The budget of the default options, one object short: a million-object
 * ring plus one is freed by a few calls. */
START_TEST(test_a_ring_of_a_million_and_one_is_freed_at_the_default_budget)
{
    /* Under the sanitizer a tenth of it, with a tenth of the budget. */
    uint64_t budget = ts_under_sanitizer() ? 100000 : 0;
    size_t n = ts_under_sanitizer() ? 100001 : 1000001;
    objstore_options o = {.gc_budget = budget};
    objstore *s = new_store(&o);
    objstore_txn *t = wbegin(s);
    root_set(t, "ring", ring(t, n, 1));
    commit(t);
    t = wbegin(s);
    OK(objstore_root_del(t, "ring"));
    commit(t);

    int calls = 0;
    uint64_t freed = 0;
    objstore_collect_stats st;
    do {
        st = collect(s);
        freed += st.freed;
        calls++;
    } while (st.incomplete && calls < 10);
    ck_assert_int_eq(st.incomplete, 0);
    ck_assert_int_le(calls, 2);
    ck_assert_uint_eq(freed, n);
    ck_assert_uint_eq(get_stats(s).live_objects, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* A live structure larger than the budget behind the pending candidates:
 * the automatic collection it cuts is not run again by every commit after
 * it, in this session or the next. */
START_TEST(test_a_cut_automatic_collection_is_not_repeated_by_small_commits)
{
    objstore_options o = {.gc_budget = 100, .gc_threshold = 10};
    objstore *s = new_store(&o);
    objstore_txn *t = wbegin(s);
    objstore_oid chain = new_obj(t, 0, 1, 8), prev = chain;
    for (int i = 1; i < 1000; i++) {
        objstore_oid x = new_obj(t, 0, 1, 8);
        set_ref(t, prev, 0, x);
        prev = x;
    }
    root_set(t, "chain", chain);
    for (int i = 0; i < 10; i++) {
        char a[16], b[16];
        snprintf(a, sizeof a, "a%d", i);
        snprintf(b, sizeof b, "b%d", i);
        objstore_oid h = new_obj(t, 0, 1, 8);
        set_ref(t, h, 0, chain);
        root_set(t, a, h);
        root_set(t, b, h);
    }
    commit(t);
    t = wbegin(s);
    for (int i = 0; i < 10; i++) {           /* ten candidates, all live */
        char b[16];
        snprintf(b, sizeof b, "b%d", i);
        OK(objstore_root_del(t, b));
    }
    commit(t);
    objstore_stats st = get_stats(s);
    ck_assert_uint_eq(st.collections, 1);     /* the threshold ran it, cut */
    ck_assert_uint_ge(st.cycle_candidates, 10);

    for (int i = 0; i < 5; i++) {
        t = wbegin(s);
        OK(objstore_meta_set(t, "k", 1, &i, sizeof i));
        commit(t);
    }
    ck_assert_uint_eq(get_stats(s).collections, 1);

    s = reopen(s, &o);
    for (int i = 0; i < 5; i++) {
        t = wbegin(s);
        OK(objstore_meta_set(t, "k", 1, &i, sizeof i));
        commit(t);
    }
    ck_assert_uint_eq(get_stats(s).collections, 0);   /* since this open */
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, 1010);
    close_store(s);
}
END_TEST

/* An object whose count fell to 0 is not a cycle: the drain frees it, and
 * the statistics say so. */
START_TEST(test_an_acyclic_candidate_at_zero_is_not_counted_as_a_cycle)
{
    objstore *s = new_store(&(objstore_options){.gc_threshold = 1});
    objstore_txn *t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 0, 8);
    root_set(t, "a", x);
    root_set(t, "b", x);
    commit(t);
    objstore_stats before = get_stats(s);
    t = wbegin(s);
    OK(objstore_root_del(t, "a"));            /* a candidate at 1 */
    OK(objstore_root_del(t, "b"));            /* then 0 */
    commit(t);
    objstore_stats after = get_stats(s);
    ck_assert_uint_eq(after.cycles_freed - before.cycles_freed, 0);
    ck_assert_uint_eq(after.objects_freed - before.objects_freed, 1);
    ck_assert_uint_eq(after.live_objects, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* Dropping many cycles at once past the threshold: the same commit frees
 * them (the collection runs after the drain that made them candidates). */
START_TEST(test_a_commit_that_drops_cycles_past_the_threshold_leaves_no_garbage)
{
    enum { N = 500 };
    objstore *s = new_store(&(objstore_options){.gc_threshold = 100});
    objstore_txn *t = wbegin(s);
    objstore_oid holder = new_obj(t, 0, N, 0);
    for (int i = 0; i < N; i++)
        set_ref(t, holder, (uint32_t)i, ring(t, 2, 2));
    objstore_oid tail = new_obj(t, 0, 0, 8);   /* held by one cycle only */
    set_ref(t, get_ref(t, holder, 0), 1, tail);
    root_set(t, "holder", holder);
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 2 * N + 2);
    uint64_t collections = get_stats(s).collections;

    t = wbegin(s);
    OK(objstore_root_del(t, "holder"));
    commit(t);
    objstore_stats st = get_stats(s);
    ck_assert_uint_eq(st.collections, collections + 1);
    ck_assert_uint_eq(st.cycles_freed, 2 * N + 1);   /* the tail was found with them */
    ck_assert_uint_eq(st.objects_freed, 1);           /* the holder, by the drain */
    ck_assert_uint_eq(st.live_objects, 0);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, 0);
    ck_assert_uint_eq(st.cycle_candidates, 0);
    close_store(s);
}
END_TEST

/* A commit's frees decrement without writing (object.c R6): what survives
 * has its count written before the commit, with or without a collection,
 * twice decremented or decremented to 0, and after a reopen. */
START_TEST(test_counts_a_commit_s_frees_decrement_are_exact_with_or_without_a_collection)
{
    {
        int collects = _i;   /* loop test: 0 without, 1 with a collection */
        objstore_options o = {.gc_threshold = collects ? 2 : UINT64_MAX};
        objstore *s = new_store(&o);
        objstore_txn *t = wbegin(s);
        objstore_oid holder = new_obj(t, 0, 8, 0);
        objstore_oid kept = new_obj(t, 0, 0, 8), twice = new_obj(t, 0, 0, 8);
        objstore_oid gone = new_obj(t, 0, 0, 8), cyc = ring(t, 2, 2);
        set_ref(t, holder, 0, kept);      /* 2 -> 1: a candidate that lives */
        set_ref(t, holder, 1, twice);     /* 3 -> 1: two decrements */
        set_ref(t, holder, 2, twice);
        set_ref(t, holder, 3, gone);      /* 2 -> 0 in the same commit */
        set_ref(t, holder, 4, gone);
        set_ref(t, holder, 5, cyc);       /* a cycle dropped */
        set_ref(t, cyc, 1, kept);         /* which holds a survivor */
        root_set(t, "holder", holder);
        root_set(t, "kept", kept);
        root_set(t, "twice", twice);
        commit(t);
        ck_assert_uint_eq(get_stats(s).live_objects, 6);

        t = wbegin(s);
        OK(objstore_root_del(t, "holder"));
        commit(t);
        if (!collects) {
            /* holder and gone by the drain; the cycle waits, a candidate */
            ck_assert_uint_eq(get_stats(s).live_objects, 4);
            ck_assert_uint_ge(get_stats(s).cycle_candidates, 2);
            verify_clean(s);
            t = rbegin(s);
            ck_assert_uint_eq(refcount(t, kept), 2);
            ck_assert_uint_eq(refcount(t, twice), 1);
            commit(t);
            s = reopen(s, &o);
            verify_clean(s);
            collect(s);
        }
        ck_assert_uint_eq(get_stats(s).live_objects, 2);
        verify_clean(s);
        t = rbegin(s);
        ck_assert_uint_eq(refcount(t, kept), 1);
        ck_assert_uint_eq(refcount(t, twice), 1);
        commit(t);
        s = reopen(s, &o);
        objstore_verify_report r = verify_clean(s);
        ck_assert_uint_eq(r.objects, 2);
        close_store(s);
    }
}
END_TEST

/* A commit's collection that saves its garbage (DEBUG_SAVEALL) links it
 * under gc.garbage: the increments meet counts the frees left unwritten. */
START_TEST(test_saved_garbage_keeps_exact_counts_when_its_drop_decremented_it)
{
    enum { N = 40 };
    objstore *s = new_store(&(objstore_options){.gc_threshold = 10});
    OK(objstore_gc_set_debug(s, OBJSTORE_GC_DEBUG_SAVEALL));
    objstore_txn *t = wbegin(s);
    objstore_oid holder = new_obj(t, 0, N, 0);
    for (int i = 0; i < N; i++)
        set_ref(t, holder, (uint32_t)i, ring(t, 2, 1));
    root_set(t, "holder", holder);
    commit(t);

    t = wbegin(s);
    OK(objstore_root_del(t, "holder"));
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 2 * N + 1);   /* + the gc.garbage list */
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.unreachable, 0);
    s = reopen(s, NULL);
    verify_clean(s);
    t = wbegin(s);
    OK(objstore_root_del(t, OBJSTORE_GC_GARBAGE_ROOT));
    commit(t);
    collect(s);
    ck_assert_uint_eq(get_stats(s).live_objects, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* Writes v into the heap file at off (the store closed). */
static void poke_heap(uint64_t off, uint64_t v)
{
    DIR *d = opendir(g_store);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    char *path = NULL;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "heap.", 5) == 0)
            path = ts_path(g_store, e->d_name);
    closedir(d);
    ck_assert_ptr_nonnull(path);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, &v, 8, (off_t)off), 8);
    ck_assert_int_eq(fsync(fd), 0);
    close(fd);
    free(path);
}

/* A slot the collector reaches that names no object ends the collection
 * with ECORRUPT: nothing is freed, nothing read outside the heap. */
START_TEST(test_a_collection_that_meets_a_damaged_slot_is_ecorrupt_and_frees_nothing)
{
    static const uint64_t bad[] = {8, UINT64_C(1) << 40, 4096 + 24};
    objstore *s = new_store(&manual);
    objstore_txn *t = wbegin(s);
    objstore_oid first = ring(t, 4, 1);
    root_set(t, "ring", first);
    commit(t);
    t = rbegin(s);
    objstore_oid second = get_ref(t, first, 0), third = get_ref(t, second, 0);
    commit(t);
    close_store(s);
    poke_heap(third + 16, bad[_i]);   /* slot 0, past the 16-byte header */

    s = open_store(g_store, &manual);
    t = wbegin(s);
    OK(objstore_root_del(t, "ring"));
    commit(t);
    objstore_collect_stats st;
    EXPECT(OBJSTORE_ECORRUPT, objstore_collect(s, &st));
    ck_assert_uint_eq(get_stats(s).live_objects, 4);
    close_store(s);
}
END_TEST

/* The collectors' set (gc/gc_set.h): members in address order across
 * arenas, dense indexes in that order, and any other value -- unaligned,
 * out of range, in an arena with no member -- answers "not a member". */
/* The young pass keeps its trial counts in 32 bits: a count too large for
 * them must still read as referenced from outside, never as garbage. */
struct young_counts {
    uint64_t oid[4], count[4];
};

static uint64_t young_count(void *ctx, uint64_t oid)
{
    const struct young_counts *c = ctx;
    for (int i = 0; i < 4; i++)
        if (c->oid[i] == oid)
            return c->count[i];
    return 0;
}

START_TEST(test_the_young_pass_keeps_an_object_whatever_its_outside_count)
{
    char *path = ts_path(g_dir, "heap.1"), msg[HEAP_MSG_MAX];
    ck_assert_ptr_nonnull(path);
    ck_assert_int_eq(heap_create(path, NULL, msg), HEAP_OK);
    heap_t *h;
    ck_assert_int_eq(heap_open(path, NULL, &h, msg), HEAP_OK);
    /* a <-> b, nothing else: garbage.  c <-> d, with c counted 2^40 (one
     * from d, the rest from outside) and 2^31 + 1 in a second round. */
    struct young_counts yc;
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(heap_obj_new(h, 0, 1, 8, &yc.oid[i]), HEAP_OK);
    for (int i = 0; i < 4; i++) {
        uint64_t *slot = heap_obj_slots(h, yc.oid[i]);
        heap_mark_dirty(h, yc.oid[i] + HEAP_OBJ_HEADER, 8);
        slot[0] = yc.oid[i ^ 1];
        yc.count[i] = 1;
    }
    const uint64_t big[] = {UINT64_C(1) << 40, (UINT64_C(1) << 31) + 1, 1};
    for (int round = 0; round < 3; round++) {
        yc.count[2] = big[round];
        gc_env env = {.heap = h, .count = young_count, .ctx = &yc};
        gc_result r;
        ck_assert_int_eq(gc_find_young(&env, yc.oid, 4, &r), HEAP_OK);
        size_t want = round < 2 ? 2 : 4;   /* the last round: c <-> d is garbage too */
        ck_assert_uint_eq(r.ngarbage, want);
        ck_assert_uint_eq(r.garbage[0], yc.oid[0]);
        ck_assert_uint_eq(r.garbage[1], yc.oid[1]);
        for (int i = 0; i < 4; i++)
            ck_assert_int_eq(gc_is_garbage(&r, yc.oid[i]), i < 2 || round == 2);
        gc_result_free(&r);
    }
    heap_close(h);
    free(path);
}
END_TEST

START_TEST(test_the_collectors_set_numbers_its_members_in_address_order)
{
    const uint64_t A = HEAP_ARENA_SIZE;
    gc_set set = {.arena = calloc(4, sizeof(struct gc_set_arena *)), .narenas = 4};
    ck_assert_ptr_nonnull(set.arena);
    const uint64_t in[] = {2 * A + 5 * 16, 16, A + 64 * 16, A + 63 * 16, 16};
    const int added[] = {1, 1, 1, 1, 0};
    for (unsigned i = 0; i < 5; i++)
        ck_assert_int_eq(gc_set_add(&set, in[i]), added[i]);
    ck_assert_int_eq(gc_set_add(&set, 4 * A), 0);   /* past the set's arenas */
    ck_assert_uint_eq(set.n, 4);

    const uint64_t sorted[] = {16, A + 63 * 16, A + 64 * 16, 2 * A + 5 * 16};
    uint64_t off, i = 0, k = 0, order[4];
    while (gc_set_next(&set, &i, &off))
        ck_assert_uint_eq(off, sorted[k++]);
    ck_assert_uint_eq(k, 4);
    ck_assert(gc_set_rank(&set, order));
    for (k = 0; k < 4; k++) {
        ck_assert_uint_eq(order[k], sorted[k]);
        ck_assert_int_eq(gc_set_index(&set, sorted[k]), (int64_t)k);
    }
    const uint64_t other[] = {0, 8, 32, A, 3 * A + 16, 4 * A + 16, UINT64_MAX};
    for (k = 0; k < sizeof other / sizeof other[0]; k++) {
        ck_assert_int_eq(gc_set_index(&set, other[k]), -1);
        ck_assert(!gc_set_has(&set, other[k]));
        ck_assert(!gc_set_take(&set, other[k]));
    }
    ck_assert(gc_set_take(&set, A + 63 * 16));
    ck_assert(!gc_set_take(&set, A + 63 * 16));
    gc_set_remove(&set, 2 * A + 5 * 16);
    gc_set_remove(&set, 2 * A + 5 * 16);
    ck_assert_uint_eq(set.n, 2);
    i = 0;
    ck_assert(gc_set_next(&set, &i, &off) && off == 16);
    ck_assert(gc_set_next(&set, &i, &off) && off == A + 64 * 16);
    ck_assert(!gc_set_next(&set, &i, &off));
    gc_set_free(&set);
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
    tcase_add_test(tc, test_a_ring_one_past_the_budget_is_freed_by_repeated_collections);
    tcase_add_test(tc, test_a_ring_of_a_million_and_one_is_freed_at_the_default_budget);
    tcase_add_test(tc, test_a_cut_automatic_collection_is_not_repeated_by_small_commits);
    tcase_add_test(tc, test_an_acyclic_candidate_at_zero_is_not_counted_as_a_cycle);
    tcase_add_test(tc, test_a_commit_that_drops_cycles_past_the_threshold_leaves_no_garbage);
    tcase_add_loop_test(tc, test_counts_a_commit_s_frees_decrement_are_exact_with_or_without_a_collection, 0, 2);
    tcase_add_test(tc, test_saved_garbage_keeps_exact_counts_when_its_drop_decremented_it);
    tcase_add_loop_test(tc, test_a_collection_that_meets_a_damaged_slot_is_ecorrupt_and_frees_nothing, 0, 3);
    TCase *ts = ts_tcase(s, "set", 30);
    tcase_add_test(ts, test_the_collectors_set_numbers_its_members_in_address_order);
    tcase_add_test(ts, test_the_young_pass_keeps_an_object_whatever_its_outside_count);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
