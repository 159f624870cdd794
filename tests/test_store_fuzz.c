/*
 * test_store_fuzz.c -- randomized damage (guarantee G3): a committed store's
 * heap file gets random bytes overwritten — in arena tables, object headers,
 * reference slots, payloads — and the store is then opened, verified, walked
 * and written to.  Every call may fail, but with an error code and a
 * message; nothing may crash, hang, or touch memory outside the mapping (the
 * sanitizer build checks that).  A second test damages meta/ the same way.
 */
#include <lmdb.h>

#include "test_store.h"

static uint64_t g_seed;
static int g_opened, g_refused, g_problems, g_commits_failed;

static uint64_t rnd(void)
{
    g_seed ^= g_seed << 13;
    g_seed ^= g_seed >> 7;
    g_seed ^= g_seed << 17;
    return g_seed;
}

/* A store with a few hundred linked objects of varied sizes, a cycle, a few
 * roots, types and metadata. */
static void build(const char *dir)
{
    OK(objstore_create(dir, NULL));
    objstore *s;
    OK(objstore_open(dir, NULL, &s));
    objstore_txn *t;
    OK(objstore_begin(s, 0, &t));
    uint32_t ty;
    OK(objstore_type_register(t, "thing", &ty));
    objstore_oid prev = 0, first = 0;   /* a list: each node's slot 0 -> the previous */
    for (int i = 0; i < 400; i++) {
        objstore_oid o;
        uint64_t size = (i % 50 == 0) ? 20000 + (uint64_t)i : 8 + (uint64_t)(i % 300);
        OK(objstore_new(t, i % 2 ? ty : 0, 2, size, &o));
        OK(objstore_write(t, o, 0, &i, sizeof i));
        if (prev)
            OK(objstore_set_ref(t, o, 0, prev));
        if (!first)
            first = o;
        prev = o;
    }
    OK(objstore_root_set(t, "list", prev));
    objstore_oid a, b;                          /* a cycle of its own */
    OK(objstore_new(t, ty, 1, 40, &a));
    OK(objstore_new(t, ty, 1, 40, &b));
    OK(objstore_set_ref(t, a, 0, b));
    OK(objstore_set_ref(t, b, 0, a));
    OK(objstore_root_set(t, "cycle", a));
    OK(objstore_set_ref(t, first, 1, a));
    OK(objstore_meta_set(t, "k", 1, "v", 1));
    OK(objstore_commit(t));
    OK(objstore_close(s));
}

static int walk_fn(void *arg, const char *name, objstore_oid oid)
{
    objstore_txn *t = arg;
    (void)name;
    /* Follow slot 0 as far as it goes: each step may fail, none may crash. */
    for (int steps = 0; oid && steps < 1000; steps++) {
        objstore_objinfo info;
        const void *p;
        uint64_t len;
        if (objstore_info(t, oid, &info) || objstore_get(t, oid, &p, &len))
            break;
        volatile uint8_t sum = 0;
        for (uint64_t i = 0; i < len; i++)
            sum += ((const uint8_t *)p)[i];
        if (info.nrefs == 0 || objstore_get_ref(t, oid, 0, &oid))
            break;
    }
    return 0;
}

/* Everything a user might do with a store that may be damaged. */
static void exercise(const char *dir)
{
    objstore *s;
    int rc = objstore_open(dir, NULL, &s);
    if (rc) {
        MUST(objstore_errmsg()[0], "open failed (%d) without a message", rc);
        g_refused++;
        return;
    }
    g_opened++;
    objstore_verify_report r;
    if (objstore_verify(s, &r) == OBJSTORE_OK && r.total_problems) {
        MUST(r.first_problem[0], "verify found problems but described none");
        g_problems++;
    }
    objstore_txn *t;
    if (objstore_begin(s, OBJSTORE_TXN_RDONLY, &t) == OBJSTORE_OK) {
        objstore_root_iter(t, walk_fn, t);
        objstore_commit(t);
    }
    /* A write: unlink the list (may cascade through damaged slots). */
    if (objstore_begin(s, 0, &t) == OBJSTORE_OK) {
        objstore_oid o;
        if (objstore_new(t, 0, 1, 100, &o) == OBJSTORE_OK)
            objstore_root_set(t, "new", o);
        objstore_root_del(t, "list");
        rc = objstore_commit(t);
        if (rc) {
            MUST(objstore_errmsg()[0], "commit failed (%d) without a message", rc);
            g_commits_failed++;
        }
    }
    objstore_stats st;
    objstore_get_stats(s, &st);
    objstore_close(s);
}

/* Plausible-looking words (counts, offsets) over objects' headers and slots. */
static void damage_words(const char *path, int nwords)
{
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    for (int i = 0; i < nwords; i++) {
        uint64_t off = 16384 + (rnd() % (512 * 1024 / 8)) * 8;
        uint64_t w = rnd() % 3 == 0 ? rnd() % 8 : (rnd() % (2 * MiB)) & ~UINT64_C(15);
        ck_assert_int_eq(pwrite(fd, &w, 8, (off_t)off), 8);
    }
    close(fd);
}

static void damage_file(const char *path, int nbytes, bool tables_only)
{
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    struct stat sb;
    ck_assert_int_eq(fstat(fd, &sb), 0);
    uint64_t len = (uint64_t)sb.st_size;
    for (int i = 0; i < nbytes; i++) {
        uint64_t off;
        if (tables_only) /* arena 0's table and the first data pools */
            off = 4096 + rnd() % (16384 + 65536 - 4096);
        else
            off = 128 + rnd() % (len > 4 * MiB ? 4 * MiB - 128 : len - 128);
        uint8_t b = (uint8_t)rnd();
        ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)off), 1);
    }
    close(fd);
}

START_TEST(test_random_damage_to_the_heap_never_crashes)
{
    int rounds = ts_under_sanitizer() ? 40 : 150;
    char *dir = ts_path(ts_root, "heapfuzz");
    char *heap = ts_path(dir, "heap.1");
    g_seed = 0x9E3779B97F4A7C15ull;
    g_opened = g_refused = g_problems = g_commits_failed = 0;
    for (int i = 0; i < rounds; i++) {
        ts_rmtree(dir);
        build(dir);
        if (i % 3 == 2)
            damage_words(heap, 1 + (int)(rnd() % 200));
        else
            damage_file(heap, 1 + (int)(rnd() % 64), i % 3 == 0);
        exercise(dir);
    }
    printf("heap damage: %d rounds, %d refused at open, %d opened (verify found "
           "problems in %d), %d commits refused\n", rounds, g_refused, g_opened,
           g_problems, g_commits_failed);
    fflush(stdout);
    /* The damage must have reached both the open checks and the objects. */
    ck_assert_int_gt(g_refused, 0);
    ck_assert_int_gt(g_problems, 0);
    ck_assert_int_gt(g_commits_failed, 0);
    free(heap);
    free(dir);
}
END_TEST

START_TEST(test_random_damage_to_meta_never_crashes_the_caller)
{
    /* LMDB itself is not hardened against hostile files (ARCHITECTURE G3):
     * the damage here stays in the values objstore reads — root oids, type
     * names, metadata — which objstore must check. */
    int rounds = ts_under_sanitizer() ? 20 : 60;
    char *dir = ts_path(ts_root, "metafuzz");
    g_opened = g_refused = g_problems = g_commits_failed = 0;
    g_seed = 0xD1B54A32D192ED03ull;
    for (int i = 0; i < rounds; i++) {
        ts_rmtree(dir);
        build(dir);
        /* Rewrite root values with random oids (valid LMDB, hostile data). */
        char *meta = ts_path(dir, "meta");
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi roots;
        ck_assert_int_eq(mdb_env_create(&env), 0);
        mdb_env_set_maxdbs(env, 16);
        ck_assert_int_eq(mdb_env_open(env, meta, 0, 0644), 0);
        ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
        ck_assert_int_eq(mdb_dbi_open(txn, "roots", 0, &roots), 0);
        uint64_t bad = (i % 3 == 0) ? rnd() : (rnd() % (4 * MiB)) & ~UINT64_C(15);
        MDB_val k = {4, "list"}, v = {i % 5 == 0 ? 3 : 8, &bad};
        ck_assert_int_eq(mdb_put(txn, roots, &k, &v, 0), 0);
        ck_assert_int_eq(mdb_txn_commit(txn), 0);
        mdb_env_close(env);
        free(meta);
        exercise(dir);
    }
    printf("meta damage: %d rounds, %d opened, verify found problems in %d\n", rounds,
           g_opened, g_problems);
    fflush(stdout);
    ck_assert_int_gt(g_problems, 0);
    free(dir);
}
END_TEST

/* A zero-count or candidate entry that names no live object (damage, or an
 * old bug) is dropped by the first commit, not kept forever. */
START_TEST(test_stale_set_entries_are_dropped_by_the_first_commit)
{
    char *dir = ts_path(ts_root, "stale");
    build(dir);
    char *meta = ts_path(dir, "meta");
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi zct, cand;
    ck_assert_int_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    ck_assert_int_eq(mdb_env_open(env, meta, 0, 0644), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, "zct", 0, &zct), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, "candidates", 0, &cand), 0);
    uint8_t key[8] = {0, 0, 0, 0, 0, 0x30, 0, 0x10};   /* a free offset */
    MDB_val k = {8, key}, v = {0, ""};
    ck_assert_int_eq(mdb_put(txn, zct, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_put(txn, cand, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    objstore *s;
    OK(objstore_open(dir, NULL, &s));
    objstore_verify_report r;
    OK(objstore_verify(s, &r));
    ck_assert_uint_eq(r.problems[OBJSTORE_P_BADZCT], 1);
    ck_assert_uint_eq(r.problems[OBJSTORE_P_BADCAND], 1);
    objstore_txn *t;
    OK(objstore_begin(s, 0, &t));
    OK(objstore_meta_set(t, "x", 1, "y", 1));
    OK(objstore_commit(t));
    OK(objstore_verify(s, &r));
    ck_assert_uint_eq(r.total_problems, 0);
    OK(objstore_close(s));
    free(meta);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("store_fuzz");
    TCase *tc = tcase_create("damage");
    tcase_add_unchecked_fixture(tc, ts_root_setup, ts_root_teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_random_damage_to_the_heap_never_crashes);
    tcase_add_test(tc, test_random_damage_to_meta_never_crashes_the_caller);
    tcase_add_test(tc, test_stale_set_entries_are_dropped_by_the_first_commit);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
