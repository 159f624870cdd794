/*
 * test_store_api.c -- the Check suite of the public API of store/, call by
 * call, written against objstore.h and objstore_admin.h (the contract).
 *
 * What it covers: create and open (fresh and empty directories, an existing
 * store, options); locking (a second writer in this process and in another);
 * read-only stores; transactions (commit, abort, what a reader sees, misuse);
 * every object call and its refusals; roots, types and user metadata; stats;
 * status strings and messages; persistence across reopen; abort restoring
 * every kind of state; readers in other threads never seeing a half-applied
 * transaction.
 *
 * Reference counting as such lives in test_store_refcount.c, damaged stores
 * in test_store_damage.c.  Helpers and conventions: test_store.h.
 */
#include "test_store.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

/* Reads payload bytes [0, len) of o into buf; fails on a short payload. */
static void get_bytes(objstore_txn *t, objstore_oid o, void *buf, uint64_t len)
{
    const void *p = NULL;
    uint64_t size = 0;
    OK(objstore_get(t, o, &p, &size));
    ck_assert_uint_ge(size, len);
    if (len > 0)
        memcpy(buf, p, len);
}

/* ------------------------------------------------------------------ */
/* create, open, close                                                  */

START_TEST(test_create_makes_a_store_in_a_directory_that_does_not_exist)
{
    ck_assert(!path_exists(g_store));
    create_store(g_store, NULL);

    char *heap = ts_path(g_store, "heap.1"), *meta = ts_path(g_store, "meta");
    char *lock = ts_path(g_store, "lock");
    struct stat st;
    ck_assert_msg(stat(heap, &st) == 0 && S_ISREG(st.st_mode), "no heap.1 in the store");
    ck_assert_msg(stat(meta, &st) == 0 && S_ISDIR(st.st_mode), "no meta/ in the store");
    ck_assert_msg(stat(lock, &st) == 0 && S_ISREG(st.st_mode), "no lock file");
    free(heap);
    free(meta);
    free(lock);

    objstore *s = open_store(g_store, NULL);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, 0);
    ck_assert_uint_eq(r.roots, 0);
    objstore_stats st2 = get_stats(s);
    ck_assert_uint_eq(st2.live_objects, 0);
    ck_assert_uint_eq(st2.roots, 0);
    ck_assert_uint_eq(st2.types, 0);
    ck_assert_uint_eq(st2.epoch, objstore_epoch(s));
    close_store(s);
}
END_TEST

START_TEST(test_create_accepts_an_existing_empty_directory)
{
    ck_assert_int_eq(mkdir(g_store, 0700), 0);
    create_store(g_store, NULL);
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = wbegin(s);
    root_set(t, "x", new_obj(t, 0, 0, 8));
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_create_refuses_an_existing_store_and_leaves_it_intact)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid o = new_obj(t, 0, 0, 8);
    put_u64(t, o, 0, 4242);
    root_set(t, "keep", o);
    commit(t);
    close_store(s);

    EXPECT(OBJSTORE_EEXIST, objstore_create(g_store, NULL));

    s = open_store(g_store, NULL);
    t = rbegin(s);
    ck_assert_uint_eq(get_u64(t, root_get(t, "keep"), 0), 4242);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_create_refuses_a_directory_that_holds_other_files)
{
    ck_assert_int_eq(mkdir(g_store, 0700), 0);
    char *f = ts_path(g_store, "notes.txt");
    write_all(f, "mine", 4);
    int rc = objstore_create(g_store, NULL);
    ck_assert_msg(rc != OBJSTORE_OK, "create succeeded in a non-empty directory");
    ck_assert_msg(objstore_errmsg()[0] != '\0', "create failed with no message");
    size_t len;
    uint8_t *b = read_all(f, &len);
    ck_assert_msg(b != NULL && len == 4 && memcmp(b, "mine", 4) == 0,
                  "the refused create changed a file it did not own");
    free(b);
    free(f);
}
END_TEST

START_TEST(test_a_store_opens_and_closes_many_times_keeping_its_content)
{
    objstore *s = new_store(NULL);
    for (uint64_t i = 0; i < 5; i++) {
        objstore_txn *t = wbegin(s);
        objstore_oid o = new_obj(t, 0, 0, 8);
        put_u64(t, o, 0, i);
        char name[16];
        snprintf(name, sizeof name, "r%llu", U(i));
        root_set(t, name, o);
        commit(t);
        s = reopen(s, NULL);
        t = rbegin(s);
        for (uint64_t j = 0; j <= i; j++) {
            snprintf(name, sizeof name, "r%llu", U(j));
            ck_assert_uint_eq(get_u64(t, root_get(t, name), 0), j);
        }
        commit(t);
        ck_assert_uint_eq(get_stats(s).live_objects, i + 1);
    }
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_options_set_the_initial_size_and_null_means_defaults)
{
    objstore_options o = { .initial_size = 16 * MiB };
    objstore *s = new_store(&o);
    ck_assert_uint_ge(get_stats(s).heap_file_bytes, 16 * MiB);
    close_store(s);

    char *other = ts_path(g_dir, "defaults");
    objstore_options zero;
    memset(&zero, 0, sizeof zero);
    create_store(other, &zero);
    s = open_store(other, NULL);
    ck_assert_uint_ge(get_stats(s).heap_file_bytes, 4 * MiB);
    close_store(s);
    free(other);
}
END_TEST

START_TEST(test_a_relaxed_store_keeps_its_commits_after_close)
{
    objstore_options o = { .sync = OBJSTORE_SYNC_RELAXED };
    objstore *s = new_store(&o);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 64);
    put_u64(t, a, 56, 77);
    root_set(t, "a", a);
    commit(t);
    s = reopen(s, &o);
    t = rbegin(s);
    ck_assert_uint_eq(get_u64(t, root_get(t, "a"), 56), 77);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_a_small_checkpoint_interval_checkpoints_while_open)
{
    objstore_options o = { .checkpoint_bytes = 4096 };
    objstore *s = new_store(&o);
    uint8_t buf[4096];
    for (int i = 0; i < 32; i++) {
        objstore_txn *t = wbegin(s);
        objstore_oid x = new_obj(t, 0, 0, sizeof buf);
        pattern_into(buf, sizeof buf, (uint64_t)i);
        OK(objstore_write(t, x, 0, buf, sizeof buf));
        char name[16];
        snprintf(name, sizeof name, "b%02d", i);
        root_set(t, name, x);
        commit(t);
    }
    objstore_stats st = get_stats(s);
    ck_assert_uint_ge(st.redo_bytes + st.direct_bytes, 32 * sizeof buf);
    ck_assert_uint_gt(st.checkpoints, 0);
    OK(objstore_checkpoint(s));
    s = reopen(s, &o);
    objstore_txn *t = rbegin(s);
    for (int i = 0; i < 32; i++) {
        char name[16];
        uint8_t want[4096], got[4096];
        snprintf(name, sizeof name, "b%02d", i);
        pattern_into(want, sizeof want, (uint64_t)i);
        get_bytes(t, root_get(t, name), got, sizeof got);
        ck_assert_msg(memcmp(want, got, sizeof got) == 0, "object %s lost its bytes", name);
    }
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* locking                                                              */

START_TEST(test_a_second_open_in_the_same_process_is_busy)
{
    objstore *s = new_store(NULL);
    objstore *again = (objstore *)(uintptr_t)1;
    EXPECT(OBJSTORE_EBUSY, objstore_open(g_store, NULL, &again));
    objstore_options ro = { .flags = OBJSTORE_RDONLY };
    EXPECT(OBJSTORE_EBUSY, objstore_open(g_store, &ro, &again));

    /* The first handle is unharmed by the refusals. */
    objstore_txn *t = wbegin(s);
    root_set(t, "still", new_obj(t, 0, 0, 1));
    commit(t);
    verify_clean(s);
    close_store(s);

    /* Once closed, the store opens again. */
    s = open_store(g_store, NULL);
    close_store(s);
}
END_TEST

enum { CHILD_OK = 0, CHILD_OPENED = 1, CHILD_NO_MSG = 2, CHILD_STATUS = 10 };

/* In a child: tries to open g_store with flags, reports via the exit code. */
static int child_open(int flags, int expect)
{
    objstore_options o = { .flags = flags };
    objstore *s = NULL;
    int rc = objstore_open(g_store, &o, &s);
    if (rc == OBJSTORE_OK) {
        objstore_close(s);
        return expect == OBJSTORE_OK ? CHILD_OK : CHILD_OPENED;
    }
    if (rc != expect)
        return CHILD_STATUS + rc;
    return objstore_errmsg()[0] != '\0' ? CHILD_OK : CHILD_NO_MSG;
}

static void open_in_child(int flags, int expect)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(child_open(flags, expect));
    int code = wait_child(pid);
    if (code >= CHILD_STATUS)
        ck_abort_msg("open (flags %d) in another process returned %d (%s), expected %d",
                     flags, code - CHILD_STATUS, objstore_strerror(code - CHILD_STATUS),
                     expect);
    ck_assert_msg(code != CHILD_OPENED,
                  "another process opened (flags %d) a store this one holds", flags);
    ck_assert_msg(code != CHILD_NO_MSG, "the refusal in the child left no message");
    ck_assert_int_eq(code, CHILD_OK);
}

/* A child process that holds g_store open (flags) until released. */
struct holder {
    pid_t pid;
    int release_fd;
};

static struct holder hold_in_child(int flags)
{
    int ready[2], release[2];
    ck_assert_int_eq(pipe(ready), 0);
    ck_assert_int_eq(pipe(release), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(ready[0]);
        close(release[1]);
        objstore_options o = { .flags = flags };
        objstore *s = NULL;
        char rc = (char)objstore_open(g_store, &o, &s);
        if (write(ready[1], &rc, 1) != 1 || rc != OBJSTORE_OK)
            _exit(1);
        char c;
        if (read(release[0], &c, 1) != 1)
            _exit(2);
        _exit(objstore_close(s) == OBJSTORE_OK ? 0 : 3);
    }
    close(ready[1]);
    close(release[0]);
    char rc = -1;
    ck_assert_int_eq(read(ready[0], &rc, 1), 1);
    close(ready[0]);
    ck_assert_msg(rc == OBJSTORE_OK, "the holding child could not open: %d", rc);
    return (struct holder){ pid, release[1] };
}

static void release_holder(struct holder h)
{
    ck_assert_int_eq(write(h.release_fd, "x", 1), 1);
    close(h.release_fd);
    ck_assert_int_eq(wait_child(h.pid), 0);
}

START_TEST(test_a_second_open_from_another_process_is_busy)
{
    /* The holder is this process, the opener a child of it ... */
    objstore *s = new_store(NULL);
    open_in_child(0, OBJSTORE_EBUSY);
    open_in_child(OBJSTORE_RDONLY, OBJSTORE_OK);   /* a reader beside the writer (S5) */
    objstore_txn *t = wbegin(s);
    root_set(t, "after", new_obj(t, 0, 0, 1));
    commit(t);
    verify_clean(s);
    close_store(s);
    open_in_child(0, OBJSTORE_OK);

    /* ... and the other way round: a holder that never shared our memory. */
    struct holder h = hold_in_child(0);
    objstore *again = NULL;
    objstore_options ro = { .flags = OBJSTORE_RDONLY };
    EXPECT(OBJSTORE_EBUSY, objstore_open(g_store, NULL, &again));
    OK(objstore_open(g_store, &ro, &again));
    OK(objstore_close(again));
    release_holder(h);
    s = open_store(g_store, NULL);
    close_store(s);
}
END_TEST

/* S5: a writer in a child commits without pause: object a, object b and
 * metadata "i" all hold i after commit i.  Read-only opens in this process
 * beside it each see one committed state, whole, that does not move while
 * they hold the store, and the writer goes on between them. */
static void writer_child(int started, int stop)
{
    objstore *s = NULL;
    if (objstore_open(g_store, NULL, &s) != OBJSTORE_OK)
        _exit(1);
    for (uint64_t i = 1; i < 1000000; i++) {
        objstore_txn *t;
        objstore_oid a, b;
        if (objstore_begin(s, 0, &t) || objstore_new(t, 0, 0, 8, &a) ||
            objstore_new(t, 0, 0, 8, &b) || objstore_write(t, a, 0, &i, 8) ||
            objstore_write(t, b, 0, &i, 8) || objstore_root_set(t, "a", a) ||
            objstore_root_set(t, "b", b) || objstore_meta_set(t, "i", 1, &i, 8) ||
            objstore_commit(t))
            _exit(2);
        if (i == 1 && write(started, "x", 1) != 1)
            _exit(3);
        char c;
        if (read(stop, &c, 1) == 1)
            break;
    }
    _exit(objstore_close(s) == OBJSTORE_OK ? 0 : 4);
}

static uint64_t read_state(objstore *s)
{
    objstore_txn *t = rbegin(s);
    uint64_t a = get_u64(t, root_get(t, "a"), 0), b = get_u64(t, root_get(t, "b"), 0), i;
    const void *v;
    size_t vlen;
    OK(objstore_meta_get(t, "i", 1, &v, &vlen));
    ck_assert_uint_eq(vlen, 8);
    memcpy(&i, v, 8);
    commit(t);
    MUST(a == b && b == i, "a reader saw a half-applied state: a=%llu b=%llu i=%llu", U(a),
         U(b), U(i));
    return a;
}

START_TEST(test_a_reader_beside_a_writer_in_another_process_sees_one_whole_committed_state)
{
    create_store(g_store, NULL);
    int started[2], stop[2];
    ck_assert_int_eq(pipe(started), 0);
    ck_assert_int_eq(pipe(stop), 0);
    ck_assert_int_eq(fcntl(stop[0], F_SETFL, O_NONBLOCK), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(started[0]);
        close(stop[1]);
        writer_child(started[1], stop[0]);
    }
    close(started[1]);
    close(stop[0]);
    char c;
    ck_assert_int_eq(read(started[0], &c, 1), 1);
    objstore_options ro = { .flags = OBJSTORE_RDONLY };
    uint64_t first = 0, last = 0;
    for (int round = 0; round < 20; round++) {
        objstore *s = open_store(g_store, &ro);
        uint64_t seen = read_state(s);
        verify_clean(s);
        usleep(5000);   /* the writer tries to commit meanwhile */
        ck_assert_uint_eq(read_state(s), seen);
        close_store(s);
        MUST(seen >= last, "the state went back from %llu to %llu", U(last), U(seen));
        if (!round)
            first = seen;
        last = seen;
        usleep(5000);   /* and commits once the reader has gone */
    }
    ck_assert_int_eq(write(stop[1], "x", 1), 1);
    ck_assert_int_eq(wait_child(pid), 0);
    MUST(last > first, "the writer made no progress between readers (%llu)", U(last));
    close(started[0]);
    close(stop[1]);
}
END_TEST

START_TEST(test_read_only_openers_in_different_processes_share_a_store)
{
    create_store(g_store, NULL);
    struct holder h = hold_in_child(OBJSTORE_RDONLY);
    objstore_options ro = { .flags = OBJSTORE_RDONLY };
    objstore *s = open_store(g_store, &ro);
    commit(rbegin(s));
    objstore *again = NULL;
    EXPECT(OBJSTORE_EBUSY, objstore_open(g_store, NULL, &again));
    close_store(s);
    release_holder(h);
}
END_TEST

START_TEST(test_a_child_may_open_read_only_a_store_its_parent_opened_read_only)
{
    create_store(g_store, NULL);
    objstore_options ro = { .flags = OBJSTORE_RDONLY };
    objstore *s = open_store(g_store, &ro);
    open_in_child(OBJSTORE_RDONLY, OBJSTORE_OK);
    open_in_child(0, OBJSTORE_EBUSY);
    close_store(s);
}
END_TEST

START_TEST(test_a_child_forked_while_the_store_was_open_opens_it_once_the_parent_closed)
{
    objstore *s = new_store(NULL);
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(go[1]);
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(CHILD_NO_MSG);
        _exit(child_open(0, OBJSTORE_OK));
    }
    close(go[0]);
    close_store(s);   /* the store is no longer open anywhere */
    ck_assert_int_eq(write(go[1], "x", 1), 1);
    close(go[1]);
    int code = wait_child(pid);
    ck_assert_msg(code == CHILD_OK, "the child's open after the parent closed returned "
                  "%d (%s)", code - CHILD_STATUS, objstore_strerror(code - CHILD_STATUS));
}
END_TEST

/* ------------------------------------------------------------------ */
/* read-only stores                                                     */

START_TEST(test_a_read_only_store_refuses_write_transactions_and_writes_nothing)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 16);
    put_u64(t, a, 0, 99);
    root_set(t, "a", a);
    uint32_t ty;
    OK(objstore_type_register(t, "thing", &ty));
    OK(objstore_meta_set(t, "k", 1, "v", 1));
    commit(t);
    close_store(s);

    char *heap = ts_path(g_store, "heap.1"), *data = ts_path(g_store, "meta/data.mdb");
    size_t hlen, dlen;
    uint8_t *hbefore = read_all(heap, &hlen), *dbefore = read_all(data, &dlen);
    ck_assert_ptr_nonnull(hbefore);
    ck_assert_ptr_nonnull(dbefore);

    objstore_options ro = { .flags = OBJSTORE_RDONLY };
    s = open_store(g_store, &ro);
    objstore_txn *w = (objstore_txn *)(uintptr_t)1;
    EXPECT(OBJSTORE_EREADONLY, objstore_begin(s, 0, &w));

    t = rbegin(s);
    ck_assert_uint_eq(root_get(t, "a"), a);
    ck_assert_uint_eq(get_u64(t, a, 0), 99);
    uint32_t id;
    OK(objstore_type_id(t, "thing", &id));
    ck_assert_uint_eq(id, ty);
    objstore_oid x = 0;
    EXPECT(OBJSTORE_EREADONLY, objstore_new(t, 0, 0, 8, &x));
    EXPECT(OBJSTORE_EREADONLY, objstore_write(t, a, 0, "z", 1));
    EXPECT(OBJSTORE_EREADONLY, objstore_set_ref(t, a, 0, a));
    EXPECT(OBJSTORE_EREADONLY, objstore_root_set(t, "b", a));
    EXPECT(OBJSTORE_EREADONLY, objstore_root_del(t, "a"));
    EXPECT(OBJSTORE_EREADONLY, objstore_meta_set(t, "k", 1, "w", 1));
    uint32_t id2;
    EXPECT(OBJSTORE_EREADONLY, objstore_type_register(t, "other", &id2));
    commit(t);
    verify_clean(s);
    close_store(s);

    size_t hlen2, dlen2;
    uint8_t *hafter = read_all(heap, &hlen2), *dafter = read_all(data, &dlen2);
    ck_assert_msg(hlen == hlen2 && memcmp(hbefore, hafter, hlen) == 0,
                  "a read-only open changed heap.1");
    ck_assert_msg(dlen == dlen2 && memcmp(dbefore, dafter, dlen) == 0,
                  "a read-only open changed meta/data.mdb");
    free(hbefore);
    free(hafter);
    free(dbefore);
    free(dafter);
    free(heap);
    free(data);
}
END_TEST

/* Child: opens, commits a value, exits without closing (the redo record stays
 * in meta/ and the heap file may not have it until a checkpoint). */
static int vanished_value(objstore_txn *t, int i, void *arg)
{
    (void)i;
    objstore_oid o = 0;
    int rc = objstore_new(t, 0, 0, 8, &o);
    if (!rc)
        rc = objstore_write(t, o, 0, arg, 8);
    return rc ? rc : objstore_root_set(t, "vanished", o);
}

static void commit_and_vanish(uint64_t value)
{
    commits_in_child_then_vanish(1, vanished_value, &value);
}

START_TEST(test_a_read_only_open_sees_commits_still_in_the_redo_log)
{
    create_store(g_store, NULL);
    commit_and_vanish(31337);

    char *heap = ts_path(g_store, "heap.1");
    size_t hlen, hlen2;
    uint8_t *before = read_all(heap, &hlen);

    objstore_options ro = { .flags = OBJSTORE_RDONLY };
    objstore *s = open_store(g_store, &ro);
    objstore_txn *t = rbegin(s);
    ck_assert_uint_eq(get_u64(t, root_get(t, "vanished"), 0), 31337);
    commit(t);
    verify_clean(s);
    close_store(s);

    uint8_t *after = read_all(heap, &hlen2);
    ck_assert_msg(hlen == hlen2 && memcmp(before, after, hlen) == 0,
                  "a read-only open wrote the heap file");
    free(before);
    free(after);

    /* A read-write open replays it for good. */
    s = open_store(g_store, NULL);
    t = rbegin(s);
    ck_assert_uint_eq(get_u64(t, root_get(t, "vanished"), 0), 31337);
    commit(t);
    verify_clean(s);
    close_store(s);
    free(heap);
}
END_TEST

/* ------------------------------------------------------------------ */
/* transactions                                                         */

START_TEST(test_commit_publishes_and_abort_discards)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 8);
    put_u64(t, a, 0, 1);
    root_set(t, "a", a);
    commit(t);

    t = wbegin(s);
    put_u64(t, a, 0, 2);
    root_set(t, "b", a);
    ck_assert_uint_eq(get_u64(t, a, 0), 2);   /* the writer sees its own change */
    objstore_abort(t);

    t = rbegin(s);
    ck_assert_uint_eq(get_u64(t, a, 0), 1);
    objstore_oid b;
    EXPECT(OBJSTORE_ENOTFOUND, objstore_root_get(t, "b", &b));
    commit(t);

    t = wbegin(s);
    put_u64(t, a, 0, 3);
    commit(t);
    t = rbegin(s);
    ck_assert_uint_eq(get_u64(t, a, 0), 3);
    objstore_abort(t);   /* ending a read transaction by abort is fine too */
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_commits_count_and_advance_the_epoch)
{
    objstore *s = new_store(NULL);
    objstore_stats st0 = get_stats(s);
    uint64_t e0 = objstore_epoch(s);
    ck_assert_uint_eq(st0.epoch, e0);

    objstore_txn *t = wbegin(s);
    root_set(t, "a", new_obj(t, 0, 0, 8));
    commit(t);
    t = wbegin(s);
    OK(objstore_meta_set(t, "k", 1, "v", 1));
    commit(t);
    objstore_stats st1 = get_stats(s);
    ck_assert_uint_eq(st1.commits, st0.commits + 2);
    ck_assert_uint_eq(st1.epoch, e0 + 2);
    ck_assert_uint_eq(objstore_epoch(s), e0 + 2);
    ck_assert_uint_eq(st1.live_objects, st0.live_objects + 1);
    ck_assert_uint_eq(st1.roots, 1);

    t = wbegin(s);
    new_obj(t, 0, 0, 8);
    objstore_abort(t);
    objstore_stats st2 = get_stats(s);
    ck_assert_uint_eq(st2.aborts, st1.aborts + 1);
    ck_assert_uint_eq(st2.epoch, st1.epoch);
    ck_assert_uint_eq(st2.live_objects, st1.live_objects);

    commit(rbegin(s));
    ck_assert_uint_eq(get_stats(s).epoch, st1.epoch);   /* reads are not commits */

    /* The epoch counts commits in the store's life, across reopen. */
    s = reopen(s, NULL);
    ck_assert_uint_eq(objstore_epoch(s), e0 + 2);
    t = wbegin(s);
    OK(objstore_meta_set(t, "k", 1, "w", 1));
    commit(t);
    ck_assert_uint_eq(objstore_epoch(s), e0 + 3);
    ck_assert_uint_eq(get_stats(s).epoch, e0 + 3);
    close_store(s);
}
END_TEST

START_TEST(test_a_second_transaction_from_the_writing_thread_is_etxn)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_txn *t2 = (objstore_txn *)(uintptr_t)1;
    EXPECT(OBJSTORE_ETXN, objstore_begin(s, 0, &t2));
    EXPECT(OBJSTORE_ETXN, objstore_begin(s, OBJSTORE_TXN_RDONLY, &t2));
    root_set(t, "a", new_obj(t, 0, 0, 8));   /* the first one goes on */
    commit(t);
    t = wbegin(s);   /* and once it ended, a new one begins */
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_several_read_transactions_may_be_open_at_once)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 8);
    put_u64(t, a, 0, 5);
    root_set(t, "a", a);
    commit(t);
    objstore_txn *r1 = rbegin(s), *r2 = rbegin(s);
    ck_assert_uint_eq(get_u64(r1, a, 0), 5);
    ck_assert_uint_eq(get_u64(r2, a, 0), 5);
    commit(r1);
    commit(r2);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* objects                                                              */

static const uint64_t k_sizes[] = { 0, 1, 15, 16, 100, 496, 497, 5000, 2 * MiB };
#define NSIZES (sizeof k_sizes / sizeof k_sizes[0])

static void check_object_shape(objstore_txn *t, objstore_oid o, uint32_t type,
                               uint32_t nrefs, uint64_t size)
{
    const void *p = NULL;
    uint64_t got = UINT64_MAX;
    OK(objstore_get(t, o, &p, &got));
    ck_assert_msg(got == size, "object of %llu bytes reports %llu", U(size), U(got));
    objstore_objinfo info;
    OK(objstore_info(t, o, &info));
    ck_assert_uint_eq(info.type, type);
    ck_assert_uint_eq(info.nrefs, nrefs);
    ck_assert_uint_eq(info.size, size);
    uint64_t bytes = 0;
    OK(objstore_getsizeof(t, o, &bytes));
    ck_assert_msg(bytes >= 16 + 8 * (uint64_t)nrefs + size,
                  "getsizeof of (nrefs %u, size %llu) is %llu", nrefs, U(size), U(bytes));
    ck_assert_uint_eq(info.sizeof_, bytes);
    ck_assert_uint_eq(info.refcount, refcount(t, o));
    for (uint32_t i = 0; i < nrefs; i++)
        ck_assert_uint_eq(get_ref(t, o, i), 0);
}

START_TEST(test_get_returns_the_exact_size_asked_at_creation)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    uint32_t ty;
    OK(objstore_type_register(t, "blob", &ty));
    objstore_oid o[NSIZES][2];
    for (size_t i = 0; i < NSIZES; i++) {
        for (uint32_t k = 0; k < 2; k++) {
            uint32_t nrefs = k * 3;
            o[i][k] = new_obj(t, k ? ty : 0, nrefs, k_sizes[i]);
            check_object_shape(t, o[i][k], k ? ty : 0, nrefs, k_sizes[i]);
            /* A new payload is zeroed. */
            const void *p;
            uint64_t size;
            OK(objstore_get(t, o[i][k], &p, &size));
            for (uint64_t b = 0; b < size; b++)
                MUST(((const uint8_t *)p)[b] == 0, "payload byte %llu of a new "
                     "object of %llu bytes is not zero", U(b), U(size));
            char name[32];
            snprintf(name, sizeof name, "o%zu.%u", i, k);
            root_set(t, name, o[i][k]);
        }
    }
    commit(t);

    s = reopen(s, NULL);
    t = rbegin(s);
    for (size_t i = 0; i < NSIZES; i++)
        for (uint32_t k = 0; k < 2; k++)
            check_object_shape(t, o[i][k], k ? ty : 0, k * 3, k_sizes[i]);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_write_and_edit_change_payloads_that_persist)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid small = new_obj(t, 0, 2, 100), big = new_obj(t, 0, 0, 3 * MiB);
    root_set(t, "small", small);
    root_set(t, "big", big);
    OK(objstore_write(t, small, 10, "hello", 5));
    void *p = NULL;
    uint64_t size = 0;
    OK(objstore_edit(t, big, &p, &size));
    ck_assert_uint_eq(size, 3 * MiB);
    pattern_into(p, size, 7);
    commit(t);

    t = wbegin(s);
    OK(objstore_write(t, big, MiB + 3, "abc", 3));   /* a few bytes far inside */
    OK(objstore_write(t, small, 99, "!", 1));         /* the last byte */
    OK(objstore_write(t, small, 0, "", 0));
    commit(t);

    s = reopen(s, NULL);
    t = rbegin(s);
    uint8_t got[100];
    get_bytes(t, small, got, 100);
    ck_assert_int_eq(memcmp(got + 10, "hello", 5), 0);
    ck_assert_int_eq(got[99], '!');
    ck_assert_int_eq(got[0], 0);
    uint8_t *want = malloc(3 * MiB);
    ck_assert_ptr_nonnull(want);
    pattern_into(want, 3 * MiB, 7);
    memcpy(want + MiB + 3, "abc", 3);
    const void *q;
    OK(objstore_get(t, big, &q, &size));
    ck_assert_uint_eq(size, 3 * MiB);
    ck_assert_msg(memcmp(q, want, size) == 0, "the 3 MiB payload differs after reopen");
    free(want);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_writing_past_the_payload_is_einval_and_changes_nothing)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 32), z = new_obj(t, 0, 0, 0);
    root_set(t, "a", a);
    root_set(t, "z", z);
    OK(objstore_write(t, a, 0, "0123456789abcdef0123456789abcdef", 32));
    commit(t);

    t = wbegin(s);
    char buf[64];
    memset(buf, 'X', sizeof buf);
    EXPECT(OBJSTORE_EINVAL, objstore_write(t, a, 31, buf, 2));
    EXPECT(OBJSTORE_EINVAL, objstore_write(t, a, 32, buf, 1));
    EXPECT(OBJSTORE_EINVAL, objstore_write(t, a, 0, buf, 33));
    EXPECT(OBJSTORE_EINVAL, objstore_write(t, a, UINT64_MAX, buf, 2));
    EXPECT(OBJSTORE_EINVAL, objstore_write(t, a, 8, buf, UINT64_MAX - 4));
    EXPECT(OBJSTORE_EINVAL, objstore_write(t, z, 0, buf, 1));
    ck_assert_uint_eq(get_ref(t, a, 0), 0);   /* the slot before it is untouched */
    commit(t);

    t = rbegin(s);
    char got[32];
    get_bytes(t, a, got, 32);
    ck_assert_int_eq(memcmp(got, "0123456789abcdef0123456789abcdef", 32), 0);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_a_slot_index_out_of_range_is_einval)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 2, 8), none = new_obj(t, 0, 0, 8);
    root_set(t, "a", a);
    root_set(t, "none", none);
    objstore_oid got = 0;
    EXPECT(OBJSTORE_EINVAL, objstore_set_ref(t, a, 2, none));
    EXPECT(OBJSTORE_EINVAL, objstore_set_ref(t, a, UINT32_MAX, none));
    EXPECT(OBJSTORE_EINVAL, objstore_get_ref(t, a, 2, &got));
    EXPECT(OBJSTORE_EINVAL, objstore_set_ref(t, none, 0, a));
    EXPECT(OBJSTORE_EINVAL, objstore_get_ref(t, none, 0, &got));
    ck_assert_uint_eq(refcount(t, none), 1);   /* the refused link counted nothing */
    ck_assert_uint_eq(refcount(t, a), 1);
    set_ref(t, a, 1, none);
    ck_assert_uint_eq(get_ref(t, a, 1), none);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* Every call that takes an oid refuses o with EBADOID. */
static void expect_badoid_everywhere(objstore_txn *t, objstore_oid o, objstore_oid good)
{
    const void *cp;
    void *p;
    uint64_t size, n;
    objstore_oid target;
    objstore_objinfo info;
    char buf[8] = { 0 };
    ck_assert_msg(o != good, "test bug: the bad oid is the good one");
    EXPECT(OBJSTORE_EBADOID, objstore_get(t, o, &cp, &size));
    EXPECT(OBJSTORE_EBADOID, objstore_edit(t, o, &p, &size));
    EXPECT(OBJSTORE_EBADOID, objstore_write(t, o, 0, buf, 1));
    EXPECT(OBJSTORE_EBADOID, objstore_set_ref(t, o, 0, good));
    EXPECT(OBJSTORE_EBADOID, objstore_get_ref(t, o, 0, &target));
    EXPECT(OBJSTORE_EBADOID, objstore_info(t, o, &info));
    EXPECT(OBJSTORE_EBADOID, objstore_getsizeof(t, o, &n));
    EXPECT(OBJSTORE_EBADOID, objstore_getrefcount(t, o, &n));
    EXPECT(OBJSTORE_EBADOID, objstore_pin(t, o));
    EXPECT(OBJSTORE_EBADOID, objstore_unpin(t, o));
    if (o != 0) {   /* as a target, 0 is null and allowed */
        EXPECT(OBJSTORE_EBADOID, objstore_set_ref(t, good, 0, o));
        EXPECT(OBJSTORE_EBADOID, objstore_root_set(t, "bad", o));
    }
}

/* R8: a write transaction remembers the oids it made or checked; an
 * abort, or a commit's frees, must leave none of them accepted. */
START_TEST(test_an_oid_made_in_an_aborted_transaction_is_ebadoid_after_it)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid good = new_obj(t, 0, 1, 8);
    root_set(t, "good", good);
    commit(t);

    t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 1, 8), y = new_obj(t, 0, 1, 8);
    set_ref(t, x, 0, y);
    set_ref(t, good, 0, x);
    objstore_abort(t);

    t = wbegin(s);
    expect_badoid_everywhere(t, x, good);
    expect_badoid_everywhere(t, y, good);
    ck_assert_uint_eq(get_ref(t, good, 0), 0);
    objstore_oid z = new_obj(t, 0, 0, 8);   /* made and dropped: freed by the commit */
    set_ref(t, good, 0, z);
    set_ref(t, good, 0, 0);
    commit(t);
    t = wbegin(s);
    expect_badoid_everywhere(t, z, good);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_oids_that_name_no_live_object_are_ebadoid)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid good = new_obj(t, 0, 1, 100), gone = new_obj(t, 0, 0, 8);
    root_set(t, "good", good);
    commit(t);   /* gone had count 0: freed by this commit */
    ck_assert_uint_eq(get_stats(s).live_objects, 1);

    t = wbegin(s);
    expect_badoid_everywhere(t, 0, good);
    expect_badoid_everywhere(t, 8, good);
    expect_badoid_everywhere(t, gone, good);
    expect_badoid_everywhere(t, good + 16, good);   /* inside an object */
    expect_badoid_everywhere(t, good + 8, good);
    expect_badoid_everywhere(t, 4096, good);        /* arena metadata */
    expect_badoid_everywhere(t, 64 * MiB, good);    /* past the end */
    expect_badoid_everywhere(t, UINT64_MAX, good);
    expect_badoid_everywhere(t, UINT64_MAX & ~UINT64_C(15), good);
    expect_badoid_everywhere(t, UINT64_C(1) << 63, good);
    uint64_t x = 12345;
    for (int i = 0; i < 2000; i++) {
        x = ts_mix64(x);
        objstore_oid r = (i & 1) ? x : (x % (8 * MiB)) & ~UINT64_C(15);
        if (r == good)
            continue;
        objstore_objinfo info;
        EXPECT(OBJSTORE_EBADOID, objstore_info(t, r, &info));
        const void *cp;
        uint64_t size;
        EXPECT(OBJSTORE_EBADOID, objstore_get(t, r, &cp, &size));
        if (r != 0)
            EXPECT(OBJSTORE_EBADOID, objstore_set_ref(t, good, 0, r));
    }
    /* Nothing was changed by the refusals. */
    ck_assert_uint_eq(get_ref(t, good, 0), 0);
    ck_assert_uint_eq(refcount(t, good), 1);
    objstore_oid b;
    EXPECT(OBJSTORE_ENOTFOUND, objstore_root_get(t, "bad", &b));
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 1);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_write_calls_in_a_read_transaction_are_ereadonly)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 8);
    root_set(t, "a", a);
    OK(objstore_meta_set(t, "k", 1, "v", 1));
    commit(t);

    t = rbegin(s);
    objstore_oid x = 0;
    void *p;
    uint64_t size;
    uint32_t id;
    EXPECT(OBJSTORE_EREADONLY, objstore_new(t, 0, 0, 8, &x));
    EXPECT(OBJSTORE_EREADONLY, objstore_edit(t, a, &p, &size));
    EXPECT(OBJSTORE_EREADONLY, objstore_write(t, a, 0, "x", 1));
    EXPECT(OBJSTORE_EREADONLY, objstore_set_ref(t, a, 0, a));
    EXPECT(OBJSTORE_EREADONLY, objstore_root_set(t, "b", a));
    EXPECT(OBJSTORE_EREADONLY, objstore_root_del(t, "a"));
    EXPECT(OBJSTORE_EREADONLY, objstore_type_register(t, "t", &id));
    EXPECT(OBJSTORE_EREADONLY, objstore_meta_set(t, "k", 1, "w", 1));
    EXPECT(OBJSTORE_EREADONLY, objstore_meta_del(t, "k", 1));
    /* Reads still work in it. */
    ck_assert_uint_eq(root_get(t, "a"), a);
    ck_assert_uint_eq(get_u64(t, a, 0), 0);
    commit(t);

    t = rbegin(s);
    ck_assert_uint_eq(get_ref(t, a, 0), 0);
    ck_assert_uint_eq(refcount(t, a), 1);
    const void *v;
    size_t vlen;
    OK(objstore_meta_get(t, "k", 1, &v, &vlen));
    ck_assert(vlen == 1 && memcmp(v, "v", 1) == 0);
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 1);
    ck_assert_uint_eq(get_stats(s).types, 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_get_ref_returns_what_set_ref_stored_across_reopen)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 4, 0), b = new_obj(t, 0, 0, 8), c = new_obj(t, 0, 0, 600);
    root_set(t, "a", a);
    set_ref(t, a, 0, b);
    set_ref(t, a, 3, c);
    set_ref(t, a, 2, a);
    ck_assert_uint_eq(get_ref(t, a, 0), b);
    ck_assert_uint_eq(get_ref(t, a, 1), 0);
    commit(t);
    s = reopen(s, NULL);
    t = rbegin(s);
    ck_assert_uint_eq(get_ref(t, a, 0), b);
    ck_assert_uint_eq(get_ref(t, a, 1), 0);
    ck_assert_uint_eq(get_ref(t, a, 2), a);
    ck_assert_uint_eq(get_ref(t, a, 3), c);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* roots                                                                */

struct seen {
    int n, stop_at;
    char names[16][600];
    objstore_oid oids[16];
};

static int collect(void *arg, const char *name, objstore_oid oid)
{
    struct seen *s = arg;
    if (s->n < 16) {
        snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
        s->oids[s->n] = oid;
    }
    s->n++;
    return s->n == s->stop_at ? 77 : 0;
}

START_TEST(test_roots_are_set_read_deleted_and_iterated_in_name_order)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    struct seen seen = { 0 };
    ck_assert_int_eq(objstore_root_iter(t, collect, &seen), 0);
    ck_assert_int_eq(seen.n, 0);

    objstore_oid a = new_obj(t, 0, 0, 8), b = new_obj(t, 0, 0, 8);
    const char *names[] = { "zz", "b", "a", "aa", "B", "a b", "\xc3\xa9t\xc3\xa9" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        root_set(t, names[i], i % 2 ? b : a);
    commit(t);

    t = rbegin(s);
    memset(&seen, 0, sizeof seen);
    ck_assert_int_eq(objstore_root_iter(t, collect, &seen), 0);
    const char *order[] = { "B", "a", "a b", "aa", "b", "zz", "\xc3\xa9t\xc3\xa9" };
    ck_assert_int_eq(seen.n, 7);
    for (int i = 0; i < 7; i++)
        ck_assert_str_eq(seen.names[i], order[i]);
    ck_assert_uint_eq(seen.oids[0], a);   /* "B" was names[4] */
    ck_assert_uint_eq(seen.oids[3], b);   /* "aa" was names[3] */
    ck_assert_uint_eq(root_get(t, "zz"), a);
    ck_assert_uint_eq(root_get(t, "b"), b);

    /* fn's non-zero return stops the walk and is returned. */
    memset(&seen, 0, sizeof seen);
    seen.stop_at = 3;
    ck_assert_int_eq(objstore_root_iter(t, collect, &seen), 77);
    ck_assert_int_eq(seen.n, 3);
    commit(t);

    t = wbegin(s);
    objstore_oid o;
    EXPECT(OBJSTORE_ENOTFOUND, objstore_root_get(t, "nope", &o));
    EXPECT(OBJSTORE_ENOTFOUND, objstore_root_del(t, "nope"));
    OK(objstore_root_del(t, "zz"));
    EXPECT(OBJSTORE_ENOTFOUND, objstore_root_get(t, "zz", &o));
    EXPECT(OBJSTORE_ENOTFOUND, objstore_root_del(t, "zz"));
    root_set(t, "b", a);                   /* replacing moves the count */
    ck_assert_uint_eq(root_get(t, "b"), a);
    commit(t);
    ck_assert_uint_eq(get_stats(s).roots, 6);

    s = reopen(s, NULL);
    t = rbegin(s);
    memset(&seen, 0, sizeof seen);
    objstore_root_iter(t, collect, &seen);
    ck_assert_int_eq(seen.n, 6);
    ck_assert_str_eq(seen.names[5], "\xc3\xa9t\xc3\xa9");
    ck_assert_uint_eq(root_get(t, "b"), a);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_root_names_must_be_1_to_511_bytes)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 8);
    char name[600];
    memset(name, 'n', sizeof name);
    name[511] = '\0';
    root_set(t, name, a);
    ck_assert_uint_eq(root_get(t, name), a);
    name[511] = 'n';
    name[512] = '\0';
    objstore_oid o;
    EXPECT(OBJSTORE_EINVAL, objstore_root_set(t, name, a));
    EXPECT(OBJSTORE_EINVAL, objstore_root_get(t, name, &o));
    EXPECT(OBJSTORE_EINVAL, objstore_root_del(t, name));
    name[599] = '\0';
    EXPECT(OBJSTORE_EINVAL, objstore_root_set(t, name, a));
    EXPECT(OBJSTORE_EINVAL, objstore_root_set(t, "", a));
    EXPECT(OBJSTORE_EINVAL, objstore_root_get(t, "", &o));
    EXPECT(OBJSTORE_EINVAL, objstore_root_del(t, ""));
    ck_assert_uint_eq(refcount(t, a), 1);
    commit(t);

    s = reopen(s, NULL);
    t = rbegin(s);
    name[511] = '\0';
    ck_assert_uint_eq(root_get(t, name), a);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_root_iteration_in_a_write_transaction_shows_its_pending_changes)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 8);
    root_set(t, "keep", a);
    root_set(t, "drop", a);
    root_set(t, "move", a);
    commit(t);

    t = wbegin(s);
    objstore_oid b = new_obj(t, 0, 0, 8);
    root_set(t, "new", b);
    OK(objstore_root_del(t, "drop"));
    root_set(t, "move", b);
    struct seen seen = { 0 };
    ck_assert_int_eq(objstore_root_iter(t, collect, &seen), 0);
    ck_assert_int_eq(seen.n, 3);
    ck_assert_str_eq(seen.names[0], "keep");
    ck_assert_uint_eq(seen.oids[0], a);
    ck_assert_str_eq(seen.names[1], "move");
    ck_assert_uint_eq(seen.oids[1], b);
    ck_assert_str_eq(seen.names[2], "new");
    ck_assert_uint_eq(seen.oids[2], b);
    objstore_abort(t);

    t = rbegin(s);
    memset(&seen, 0, sizeof seen);
    objstore_root_iter(t, collect, &seen);
    ck_assert_int_eq(seen.n, 3);
    ck_assert_str_eq(seen.names[0], "drop");
    ck_assert_str_eq(seen.names[1], "keep");
    ck_assert_str_eq(seen.names[2], "move");
    ck_assert_uint_eq(seen.oids[2], a);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* types                                                                */

START_TEST(test_types_get_stable_ids_that_survive_reopen)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    uint32_t point, line, again, id;
    OK(objstore_type_register(t, "point", &point));
    OK(objstore_type_register(t, "line", &line));
    OK(objstore_type_register(t, "point", &again));
    ck_assert_uint_eq(point, 1);
    ck_assert_uint_eq(line, 2);
    ck_assert_uint_eq(again, point);
    OK(objstore_type_id(t, "line", &id));
    ck_assert_uint_eq(id, line);
    const char *name = NULL;
    OK(objstore_type_name(t, point, &name));
    ck_assert_str_eq(name, "point");
    EXPECT(OBJSTORE_ENOTFOUND, objstore_type_id(t, "circle", &id));
    EXPECT(OBJSTORE_ENOTFOUND, objstore_type_name(t, 999, &name));
    root_set(t, "p", new_obj(t, point, 0, 16));
    commit(t);
    ck_assert_uint_eq(get_stats(s).types, 2);

    s = reopen(s, NULL);
    t = wbegin(s);
    OK(objstore_type_id(t, "point", &id));
    ck_assert_uint_eq(id, point);
    OK(objstore_type_name(t, line, &name));
    ck_assert_str_eq(name, "line");
    OK(objstore_type_register(t, "line", &again));
    ck_assert_uint_eq(again, line);
    uint32_t circle;
    OK(objstore_type_register(t, "circle", &circle));
    ck_assert_uint_eq(circle, 3);
    objstore_objinfo info;
    OK(objstore_info(t, root_get(t, "p"), &info));
    ck_assert_uint_eq(info.type, point);
    commit(t);

    t = rbegin(s);
    OK(objstore_type_name(t, circle, &name));
    ck_assert_str_eq(name, "circle");
    EXPECT(OBJSTORE_ENOTFOUND, objstore_type_id(t, "square", &id));
    commit(t);
    ck_assert_uint_eq(get_stats(s).types, 3);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_type_names_must_be_1_to_255_bytes_and_ids_registered)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    char name[300];
    memset(name, 't', sizeof name);
    name[255] = '\0';
    uint32_t id, id2;
    OK(objstore_type_register(t, name, &id));
    OK(objstore_type_id(t, name, &id2));
    ck_assert_uint_eq(id, id2);
    name[255] = 't';
    name[256] = '\0';
    EXPECT(OBJSTORE_EINVAL, objstore_type_register(t, name, &id2));
    EXPECT(OBJSTORE_EINVAL, objstore_type_register(t, "", &id2));
    /* An object of a type never registered would fail verify: refused. */
    objstore_oid o;
    EXPECT(OBJSTORE_EINVAL, objstore_new(t, id + 100, 0, 8, &o));
    commit(t);
    ck_assert_uint_eq(get_stats(s).types, 1);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* user metadata                                                        */

static void expect_meta(objstore_txn *t, const void *key, size_t klen, const void *val,
                        size_t vlen)
{
    const void *v = NULL;
    size_t len = SIZE_MAX;
    OK(objstore_meta_get(t, key, klen, &v, &len));
    ck_assert_uint_eq(len, vlen);
    ck_assert_msg(vlen == 0 || memcmp(v, val, vlen) == 0, "metadata value differs");
}

START_TEST(test_metadata_keeps_binary_keys_empty_and_large_values_across_reopen)
{
    objstore *s = new_store(NULL);
    const uint8_t bkey[] = { 0, 1, 2, 0, 0xff };
    size_t big_len = MiB;
    uint8_t *big = malloc(big_len);
    ck_assert_ptr_nonnull(big);
    pattern_into(big, big_len, 99);
    char longkey[511];
    memset(longkey, 'k', sizeof longkey);

    objstore_txn *t = wbegin(s);
    OK(objstore_meta_set(t, "plain", 5, "value", 5));
    OK(objstore_meta_set(t, bkey, sizeof bkey, "\0\0binary\0", 9));
    OK(objstore_meta_set(t, "empty", 5, "", 0));
    OK(objstore_meta_set(t, "big", 3, big, big_len));
    OK(objstore_meta_set(t, longkey, sizeof longkey, "L", 1));
    OK(objstore_meta_set(t, "gone", 4, "x", 1));
    expect_meta(t, "plain", 5, "value", 5);   /* visible inside its transaction */
    commit(t);

    t = wbegin(s);
    const void *v;
    size_t vlen;
    EXPECT(OBJSTORE_ENOTFOUND, objstore_meta_get(t, "missing", 7, &v, &vlen));
    EXPECT(OBJSTORE_ENOTFOUND, objstore_meta_del(t, "missing", 7));
    /* A binary key is its bytes: a prefix up to the NUL is another key. */
    EXPECT(OBJSTORE_ENOTFOUND, objstore_meta_get(t, bkey, 1, &v, &vlen));
    EXPECT(OBJSTORE_EINVAL, objstore_meta_set(t, "", 0, "x", 1));
    EXPECT(OBJSTORE_EINVAL, objstore_meta_get(t, "", 0, &v, &vlen));
    char toolong[512];
    memset(toolong, 'k', sizeof toolong);
    EXPECT(OBJSTORE_EINVAL, objstore_meta_set(t, toolong, sizeof toolong, "x", 1));
    OK(objstore_meta_del(t, "gone", 4));
    EXPECT(OBJSTORE_ENOTFOUND, objstore_meta_get(t, "gone", 4, &v, &vlen));
    OK(objstore_meta_set(t, "plain", 5, "other value", 11));   /* overwrite */
    commit(t);

    s = reopen(s, NULL);
    t = rbegin(s);
    expect_meta(t, "plain", 5, "other value", 11);
    expect_meta(t, bkey, sizeof bkey, "\0\0binary\0", 9);
    expect_meta(t, "empty", 5, "", 0);
    expect_meta(t, "big", 3, big, big_len);
    expect_meta(t, longkey, sizeof longkey, "L", 1);
    EXPECT(OBJSTORE_ENOTFOUND, objstore_meta_get(t, "gone", 4, &v, &vlen));
    commit(t);
    verify_clean(s);
    close_store(s);
    free(big);
}
END_TEST

/* ------------------------------------------------------------------ */
/* status strings and messages                                          */

static const int k_codes[] = {
    OBJSTORE_OK, OBJSTORE_EINVAL, OBJSTORE_ENOMEM, OBJSTORE_EIO, OBJSTORE_ENOSPC,
    OBJSTORE_EBUSY, OBJSTORE_EEXIST, OBJSTORE_ENOENT, OBJSTORE_EBADMAGIC,
    OBJSTORE_EVERSION, OBJSTORE_ECHECKSUM, OBJSTORE_EGEOMETRY, OBJSTORE_ETRUNCATED,
    OBJSTORE_ECORRUPT, OBJSTORE_EBADOID, OBJSTORE_EREADONLY, OBJSTORE_EFAILED,
    OBJSTORE_ENOTFOUND, OBJSTORE_EMETA, OBJSTORE_EMISMATCH, OBJSTORE_EREDO,
    OBJSTORE_ELMDB, OBJSTORE_ETXN, OBJSTORE_EOVERFLOW,
};
#define NCODES (sizeof k_codes / sizeof k_codes[0])

START_TEST(test_strerror_describes_every_code_distinctly)
{
    for (size_t i = 0; i < NCODES; i++) {
        const char *m = objstore_strerror(k_codes[i]);
        ck_assert_msg(m != NULL && m[0] != '\0', "no description of code %d", k_codes[i]);
        for (size_t j = 0; j < i; j++)
            ck_assert_msg(strcmp(m, objstore_strerror(k_codes[j])) != 0,
                          "codes %d and %d share the description \"%s\"", k_codes[j],
                          k_codes[i], m);
    }
    const int unknown[] = { -1, 17, 19, 27, 1000, INT32_MAX, INT32_MIN };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *m = objstore_strerror(unknown[i]);
        ck_assert_msg(m != NULL && m[0] != '\0', "no description of unknown code %d",
                      unknown[i]);
    }
}
END_TEST

/* The message is thread-local: it is read inside the thread. */
static void *errmsg_of_new_thread(void *arg)
{
    (void)arg;
    const char *m = objstore_errmsg();
    return m != NULL && m[0] == '\0' ? (void *)1 : NULL;
}

static void *fail_in_thread(void *arg)
{
    objstore *again = NULL;
    int rc = objstore_open((const char *)arg, NULL, &again);
    return rc == OBJSTORE_EBUSY && objstore_errmsg()[0] != '\0' ? (void *)1 : NULL;
}

START_TEST(test_errmsg_is_per_thread_and_set_by_every_failure)
{
    objstore *s = new_store(NULL);
    objstore *again;
    EXPECT(OBJSTORE_EBUSY, objstore_open(g_store, NULL, &again));
    char mine[512];
    snprintf(mine, sizeof mine, "%s", objstore_errmsg());

    pthread_t th;
    void *res = NULL;
    ck_assert_int_eq(pthread_create(&th, NULL, errmsg_of_new_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(th, &res), 0);
    ck_assert_msg(res != NULL, "a fresh thread sees a message it never caused");
    ck_assert_int_eq(pthread_create(&th, NULL, fail_in_thread, g_store), 0);
    ck_assert_int_eq(pthread_join(th, &res), 0);
    ck_assert_msg(res != NULL, "the thread's open was not EBUSY with a message");

    /* Errors of several kinds all leave a message (EXPECT checks it). */
    objstore_txn *t = wbegin(s);
    objstore_oid o, a = new_obj(t, 0, 1, 8);
    const void *v;
    size_t vlen;
    uint32_t id;
    EXPECT(OBJSTORE_EBADOID, objstore_get_ref(t, 8, 0, &o));
    EXPECT(OBJSTORE_ENOTFOUND, objstore_root_get(t, "x", &o));
    EXPECT(OBJSTORE_ENOTFOUND, objstore_meta_get(t, "x", 1, &v, &vlen));
    EXPECT(OBJSTORE_ENOTFOUND, objstore_type_id(t, "x", &id));
    EXPECT(OBJSTORE_EINVAL, objstore_root_set(t, "", a));
    EXPECT(OBJSTORE_EINVAL, objstore_set_ref(t, a, 1, a));
    objstore_abort(t);
    EXPECT(OBJSTORE_EEXIST, objstore_create(g_store, NULL));
    char *nowhere = ts_path(g_dir, "nowhere");
    EXPECT(OBJSTORE_ENOENT, objstore_open(nowhere, NULL, &again));
    free(nowhere);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* persistence and abort                                                */

START_TEST(test_everything_persists_across_close_and_reopen)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    uint32_t node;
    OK(objstore_type_register(t, "node", &node));
    objstore_oid head = new_obj(t, node, 2, 24), prev = head;
    for (int i = 1; i < 100; i++) {
        objstore_oid n = new_obj(t, node, 2, 24);
        put_u64(t, n, 0, (uint64_t)i);
        set_ref(t, prev, 0, n);
        set_ref(t, n, 1, head);
        prev = n;
    }
    root_set(t, "list", head);
    root_set(t, "tail", prev);
    OK(objstore_meta_set(t, "version", 7, "1.0", 3));
    commit(t);
    objstore_stats before = get_stats(s);
    objstore_verify_report r1 = verify_clean(s);

    s = reopen(s, NULL);
    objstore_stats after = get_stats(s);
    ck_assert_uint_eq(after.live_objects, before.live_objects);
    ck_assert_uint_eq(after.live_bytes, before.live_bytes);
    ck_assert_uint_eq(after.roots, 2);
    ck_assert_uint_eq(after.types, 1);
    ck_assert_uint_eq(after.epoch, before.epoch);
    t = rbegin(s);
    ck_assert_uint_eq(root_get(t, "list"), head);
    ck_assert_uint_eq(refcount(t, head), 100);   /* root + 99 back links */
    objstore_oid n = head;
    for (uint64_t i = 0; i < 100; i++) {
        objstore_objinfo info;
        OK(objstore_info(t, n, &info));
        ck_assert_uint_eq(info.type, node);
        ck_assert_uint_eq(get_u64(t, n, 0), i);
        if (i > 0)
            ck_assert_uint_eq(refcount(t, n), i == 99 ? 2 : 1);
        n = get_ref(t, n, 0);
    }
    ck_assert_uint_eq(n, 0);
    expect_meta(t, "version", 7, "1.0", 3);
    commit(t);
    objstore_verify_report r2 = verify_clean(s);
    ck_assert_uint_eq(r2.objects, r1.objects);
    ck_assert_uint_eq(r2.references, r1.references);
    ck_assert_uint_eq(r2.reachable, 100);
    ck_assert_uint_eq(r2.unreachable, 0);
    close_store(s);
}
END_TEST

START_TEST(test_abort_restores_objects_counts_roots_types_metadata_and_pins)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    uint32_t ty;
    OK(objstore_type_register(t, "t1", &ty));
    objstore_oid a = new_obj(t, ty, 2, 16), b = new_obj(t, 0, 0, 8), c = new_obj(t, 0, 0, 8);
    root_set(t, "r", a);
    set_ref(t, a, 0, b);
    put_u64(t, a, 0, 1111);
    OK(objstore_pin(t, c));   /* c lives at count 0, pinned */
    OK(objstore_meta_set(t, "k", 1, "v1", 2));
    commit(t);
    objstore_stats st0 = get_stats(s);
    ck_assert_uint_eq(st0.live_objects, 3);

    t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 1, 8), big = new_obj(t, 0, 0, 5 * MiB);
    for (int i = 0; i < 1000; i++)
        new_obj(t, 0, 0, (uint64_t)(i % 700));
    root_set(t, "x", x);
    set_ref(t, x, 0, big);
    set_ref(t, a, 0, x);      /* b falls to 0 */
    set_ref(t, a, 1, c);      /* c rises to 1 */
    OK(objstore_root_del(t, "r"));
    root_set(t, "r2", a);
    put_u64(t, a, 0, 2222);
    uint32_t ty2;
    OK(objstore_type_register(t, "t2", &ty2));
    OK(objstore_meta_set(t, "k", 1, "v2", 2));
    OK(objstore_meta_set(t, "k2", 2, "new", 3));
    OK(objstore_unpin(t, c));
    OK(objstore_pin(t, b));
    objstore_abort(t);

    t = rbegin(s);
    ck_assert(!is_live(t, x));
    ck_assert(!is_live(t, big));
    ck_assert_uint_eq(root_get(t, "r"), a);
    objstore_oid o;
    EXPECT(OBJSTORE_ENOTFOUND, objstore_root_get(t, "x", &o));
    EXPECT(OBJSTORE_ENOTFOUND, objstore_root_get(t, "r2", &o));
    ck_assert_uint_eq(get_ref(t, a, 0), b);
    ck_assert_uint_eq(get_ref(t, a, 1), 0);
    ck_assert_uint_eq(refcount(t, a), 1);
    ck_assert_uint_eq(refcount(t, b), 1);
    ck_assert_uint_eq(refcount(t, c), 0);
    ck_assert_uint_eq(get_u64(t, a, 0), 1111);
    uint32_t id;
    EXPECT(OBJSTORE_ENOTFOUND, objstore_type_id(t, "t2", &id));
    OK(objstore_type_id(t, "t1", &id));
    ck_assert_uint_eq(id, ty);
    expect_meta(t, "k", 1, "v1", 2);
    const void *v;
    size_t vlen;
    EXPECT(OBJSTORE_ENOTFOUND, objstore_meta_get(t, "k2", 2, &v, &vlen));
    commit(t);

    objstore_stats st1 = get_stats(s);
    ck_assert_uint_eq(st1.live_objects, st0.live_objects);
    ck_assert_uint_eq(st1.live_bytes, st0.live_bytes);
    ck_assert_uint_eq(st1.roots, st0.roots);
    ck_assert_uint_eq(st1.types, st0.types);
    ck_assert_uint_eq(st1.zct_entries, st0.zct_entries);
    verify_clean(s);

    /* c's pin is back: it survives a commit at count 0. */
    empty_commit(s);
    t = rbegin(s);
    ck_assert(is_live(t, c));
    commit(t);
    /* b's pin was undone: unlinked, it goes at the next commit. */
    t = wbegin(s);
    set_ref(t, a, 0, 0);
    commit(t);
    t = rbegin(s);
    ck_assert(!is_live(t, b));
    ck_assert(is_live(t, c));
    commit(t);
    verify_clean(s);

    /* A type registered after the abort gets a fresh, working id. */
    t = wbegin(s);
    OK(objstore_type_register(t, "t3", &id));
    ck_assert_uint_ne(id, ty);
    const char *name;
    OK(objstore_type_name(t, id, &name));
    ck_assert_str_eq(name, "t3");
    root_set(t, "t3obj", new_obj(t, id, 0, 8));
    commit(t);
    s = reopen(s, NULL);
    verify_clean(s);
    t = rbegin(s);
    ck_assert(!is_live(t, c));   /* pins do not outlive the process's handle */
    commit(t);
    close_store(s);
}
END_TEST

START_TEST(test_objects_created_after_an_abort_reuse_the_space_cleanly)
{
    objstore *s = new_store(NULL);
    for (int round = 0; round < 5; round++) {
        objstore_txn *t = wbegin(s);
        for (int i = 0; i < 2000; i++) {
            objstore_oid o = new_obj(t, 0, 1, (uint64_t)(16 + i % 3000));
            char name[32];
            snprintf(name, sizeof name, "r%d", i);
            root_set(t, name, o);
        }
        objstore_abort(t);
        ck_assert_uint_eq(get_stats(s).live_objects, 0);
        verify_clean(s);
    }
    objstore_txn *t = wbegin(s);
    objstore_oid o = new_obj(t, 0, 0, 100);
    root_set(t, "one", o);
    commit(t);
    ck_assert_uint_eq(get_stats(s).live_objects, 1);
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.objects, 1);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* readers in other threads                                             */

struct blocked_reader {
    objstore *s;
    objstore_oid a, b;
    uint64_t got_a, got_b;
    int rc;
    atomic_int done;
};

static void *blocked_reader_main(void *arg)
{
    struct blocked_reader *r = arg;
    objstore_txn *t = NULL;
    r->rc = objstore_begin(r->s, OBJSTORE_TXN_RDONLY, &t);
    if (r->rc == OBJSTORE_OK) {
        const void *p;
        uint64_t size;
        if (objstore_get(t, r->a, &p, &size) == OBJSTORE_OK && size >= 8)
            memcpy(&r->got_a, p, 8);
        if (objstore_get(t, r->b, &p, &size) == OBJSTORE_OK && size >= 8)
            memcpy(&r->got_b, p, 8);
        r->rc = objstore_commit(t);
    }
    atomic_store(&r->done, 1);
    return NULL;
}

START_TEST(test_a_reader_in_another_thread_never_sees_an_open_write_transaction)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 8), b = new_obj(t, 0, 0, 8);
    put_u64(t, a, 0, 1);
    put_u64(t, b, 0, 1);
    root_set(t, "a", a);
    root_set(t, "b", b);
    commit(t);

    for (int round = 0; round < 5; round++) {
        uint64_t old = (uint64_t)round + 1, new = old + 1;
        t = wbegin(s);
        put_u64(t, a, 0, new);   /* half the change is made ... */
        struct blocked_reader r = { .s = s, .a = a, .b = b };
        atomic_init(&r.done, 0);
        pthread_t th;
        ck_assert_int_eq(pthread_create(&th, NULL, blocked_reader_main, &r), 0);
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);     /* ... the reader has had time to look ... */
        put_u64(t, b, 0, new);   /* ... and now the other half */
        commit(t);
        ck_assert_int_eq(pthread_join(th, NULL), 0);
        ck_assert_int_eq(r.rc, OBJSTORE_OK);
        ck_assert_msg((r.got_a == old && r.got_b == old) ||
                      (r.got_a == new && r.got_b == new),
                      "round %d: the reader saw a=%llu b=%llu (old %llu, new %llu)",
                      round, U(r.got_a), U(r.got_b), U(old), U(new));
    }
    verify_clean(s);
    close_store(s);
}
END_TEST

#define NREADERS 3
#define WRITES 300

struct race {
    objstore *s;
    objstore_oid a, b;
    atomic_int stop;
    atomic_long reads, mixed, errors;
    char first_error[256];
    atomic_int have_error;
};

static void race_error(struct race *r, const char *what, int rc)
{
    atomic_fetch_add(&r->errors, 1);
    if (atomic_exchange(&r->have_error, 1) == 0)
        snprintf(r->first_error, sizeof r->first_error, "%s = %d: %s", what, rc,
                 objstore_errmsg());
}

static void *race_reader(void *arg)
{
    struct race *r = arg;
    while (!atomic_load(&r->stop)) {
        objstore_txn *t = NULL;
        int rc = objstore_begin(r->s, OBJSTORE_TXN_RDONLY, &t);
        if (rc != OBJSTORE_OK) {
            race_error(r, "objstore_begin(RDONLY)", rc);
            break;
        }
        const void *p;
        uint64_t size, va = 0, vb = 0, vr = 0;
        objstore_oid root = 0;
        if ((rc = objstore_get(t, r->a, &p, &size)) == OBJSTORE_OK)
            memcpy(&va, p, 8);
        else
            race_error(r, "objstore_get(a)", rc);
        sched_yield();
        if ((rc = objstore_get(t, r->b, &p, &size)) == OBJSTORE_OK)
            memcpy(&vb, p, 8);
        else
            race_error(r, "objstore_get(b)", rc);
        const void *v;
        size_t vlen;
        if ((rc = objstore_meta_get(t, "gen", 3, &v, &vlen)) == OBJSTORE_OK && vlen == 8)
            memcpy(&vr, v, 8);
        else
            race_error(r, "objstore_meta_get(gen)", rc);
        if ((rc = objstore_root_get(t, "which", &root)) != OBJSTORE_OK)
            race_error(r, "objstore_root_get(which)", rc);
        if (va != vb || va != vr || root != ((va & 1) ? r->a : r->b))
            atomic_fetch_add(&r->mixed, 1);
        objstore_commit(t);
        atomic_fetch_add(&r->reads, 1);
        struct timespec ts = { 0, 100 * 1000 };   /* let the writer in */
        nanosleep(&ts, NULL);
    }
    return NULL;
}

START_TEST(test_readers_in_other_threads_see_fully_old_or_fully_new_state)
{
    objstore_options o = { .sync = OBJSTORE_SYNC_RELAXED };
    objstore *s = new_store(&o);
    objstore_txn *t = wbegin(s);
    struct race r = { .s = s };
    r.a = new_obj(t, 0, 0, 8);
    r.b = new_obj(t, 0, 0, 8);
    root_set(t, "a", r.a);
    root_set(t, "b", r.b);
    root_set(t, "which", r.b);
    uint64_t zero = 0;
    OK(objstore_meta_set(t, "gen", 3, &zero, 8));
    commit(t);

    pthread_t th[NREADERS];
    for (int i = 0; i < NREADERS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, race_reader, &r), 0);
    for (uint64_t gen = 1; gen <= WRITES; gen++) {
        t = wbegin(s);
        put_u64(t, r.a, 0, gen);
        sched_yield();
        OK(objstore_meta_set(t, "gen", 3, &gen, 8));
        root_set(t, "which", (gen & 1) ? r.a : r.b);
        sched_yield();
        put_u64(t, r.b, 0, gen);
        if (gen % 7 == 0) {
            objstore_abort(t);   /* an aborted write must not show either */
            t = wbegin(s);
            put_u64(t, r.a, 0, gen);
            put_u64(t, r.b, 0, gen);
            OK(objstore_meta_set(t, "gen", 3, &gen, 8));
            root_set(t, "which", (gen & 1) ? r.a : r.b);
        }
        commit(t);
    }
    atomic_store(&r.stop, 1);
    for (int i = 0; i < NREADERS; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    ck_assert_msg(atomic_load(&r.errors) == 0, "%ld reader errors; first: %s",
                  atomic_load(&r.errors), r.first_error);
    ck_assert_msg(atomic_load(&r.mixed) == 0, "%ld of %ld reads saw a mixed state",
                  atomic_load(&r.mixed), atomic_load(&r.reads));
    ck_assert_int_gt(atomic_load(&r.reads), 0);
    verify_clean(s);
    close_store(s);
}
END_TEST

struct stream {
    objstore *s;
    atomic_int stop, errors, entries;
};

/* Two such readers pass a baton: each ends its read transaction only once
 * the other has begun one (or after ~5 ms, so that a lock that lets a
 * waiting writer go first cannot deadlock them).  The read lock is thus
 * never free, and a reader-preferring lock never lets the writer in. */
static void *stream_reader(void *arg)
{
    struct stream *r = arg;
    while (!atomic_load(&r->stop)) {
        objstore_txn *t = NULL;
        if (objstore_begin(r->s, OBJSTORE_TXN_RDONLY, &t) != OBJSTORE_OK) {
            atomic_fetch_add(&r->errors, 1);
            break;
        }
        int mine = atomic_fetch_add(&r->entries, 1) + 1;
        for (int spin = 0; spin < 50 && atomic_load(&r->entries) == mine &&
                           !atomic_load(&r->stop); spin++) {
            struct timespec ts = { 0, 100 * 1000 };
            nanosleep(&ts, NULL);
        }
        objstore_commit(t);
    }
    return NULL;
}

START_TEST(test_a_stream_of_readers_does_not_starve_the_writer)
{
    objstore_options o = { .sync = OBJSTORE_SYNC_RELAXED };
    objstore *s = new_store(&o);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 8);
    root_set(t, "a", a);
    commit(t);

    struct stream r = { .s = s };
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, stream_reader, &r), 0);
    while (atomic_load(&r.entries) < 10)   /* the readers are streaming */
        sched_yield();
    for (uint64_t i = 1; i <= 20; i++) {   /* hangs (test timeout) if starved */
        t = wbegin(s);
        put_u64(t, a, 0, i);
        commit(t);
    }
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    ck_assert_int_eq(atomic_load(&r.errors), 0);
    t = rbegin(s);
    ck_assert_uint_eq(get_u64(t, a, 0), 20);
    commit(t);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */

/* The heap grows up to max_heap_size and no further: past it an allocation
 * is an error, the transaction can be aborted, and the store goes on. */
START_TEST(test_a_heap_at_its_size_limit_refuses_allocation_cleanly)
{
    objstore_options o = {.max_heap_size = 8 * MiB};
    objstore *s = new_store(&o);
    objstore_txn *t = wbegin(s);
    objstore_oid holder = new_obj(t, 0, 1000, 0);
    root_set(t, "h", holder);
    commit(t);

    t = wbegin(s);
    int rc = OBJSTORE_OK;
    uint32_t made = 0;
    for (; made < 1000 && rc == OBJSTORE_OK; made++) {
        objstore_oid o;
        rc = objstore_new(t, 0, 0, 64 * KiB, &o);
        if (rc == OBJSTORE_OK)
            set_ref(t, holder, made, o);
    }
    MUST(rc == OBJSTORE_ENOMEM, "allocation past max_heap_size gave %d (%s)", rc,
         objstore_errmsg());
    MUST(objstore_errmsg()[0], "no message");
    ck_assert_uint_lt(made, 1000);
    objstore_abort(t);

    t = wbegin(s);                       /* the store goes on */
    objstore_oid small = new_obj(t, 0, 0, 100);
    set_ref(t, holder, 0, small);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* A transaction may end on another thread than the one that began it, and
 * the store is then free for everyone (the lock belongs to no thread). */
struct xthread { objstore_txn *t; int rc; };

static void *commit_elsewhere(void *p)
{
    struct xthread *x = p;
    x->rc = objstore_commit(x->t);
    return NULL;
}

START_TEST(test_a_transaction_may_be_committed_by_another_thread)
{
    objstore *s = new_store(NULL);
    for (int round = 0; round < 3; round++) {
        objstore_txn *t = wbegin(s);
        objstore_oid o = new_obj(t, 0, 0, 8);
        root_set(t, "r", o);
        struct xthread x = {.t = t};
        pthread_t th;
        ck_assert_int_eq(pthread_create(&th, NULL, commit_elsewhere, &x), 0);
        pthread_join(th, NULL);
        OK(x.rc);
    }
    objstore_txn *t = wbegin(s);   /* this thread is not "still the writer" */
    objstore_abort(t);
    t = rbegin(s);
    objstore_oid o;
    OK(objstore_root_get(t, "r", &o));
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

struct waiting_writer { objstore *s; int rc; };

static void *write_once(void *p)
{
    struct waiting_writer *w = p;
    objstore_txn *t;
    w->rc = objstore_begin(w->s, 0, &t);
    if (!w->rc)
        w->rc = objstore_commit(t);
    return NULL;
}

/* A thread that reads may read again while a writer waits (no deadlock),
 * and may not start a write transaction that would wait for itself. */
START_TEST(test_nested_reads_go_on_while_a_writer_waits)
{
    objstore *s = new_store(NULL);
    objstore_txn *r1 = rbegin(s);
    struct waiting_writer w = {.s = s};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, write_once, &w), 0);
    usleep(50 * 1000);                 /* the writer now waits for r1 */
    objstore_txn *r2 = rbegin(s);      /* nested: must not wait behind it */
    objstore_stats st;
    OK(objstore_get_stats(s, &st));
    objstore_txn *wt;
    EXPECT(OBJSTORE_ETXN, objstore_begin(s, 0, &wt));
    commit(r2);
    commit(r1);
    pthread_join(th, NULL);
    OK(w.rc);
    close_store(s);
}
END_TEST

/* Where the process cannot have 256 GiB of address space (ulimit -v,
 * valgrind), the store opens with a smaller range and works. */
START_TEST(test_a_store_opens_under_an_address_space_limit)
{
    if (ts_under_sanitizer())
        return;   /* the sanitizer's own shadow memory needs the address space */
    create_store(g_store, NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct rlimit rl = {UINT64_C(8) << 30, UINT64_C(8) << 30};
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(20);
        objstore *s;
        objstore_txn *t;
        objstore_oid o;
        if (objstore_open(g_store, NULL, &s))
            _exit(21);
        if (objstore_begin(s, 0, &t) || objstore_new(t, 0, 0, 1 << 20, &o) ||
            objstore_root_set(t, "big", o) || objstore_commit(t))
            _exit(22);
        _exit(objstore_close(s) ? 23 : 0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child under an 8 GiB address-space limit: status %d", status);
    objstore *s = open_store(g_store, NULL);
    verify_clean(s);
    close_store(s);
}
END_TEST


/* ------------------------------------------------------------------ */
/* the read path: what a read transaction found sound is remembered     */

/* get and get_ref through a read transaction, as a program calls them. */
static int read_get(objstore *s, objstore_oid o, uint64_t *size)
{
    objstore_txn *t = rbegin(s);
    const void *p;
    int rc = objstore_get(t, o, &p, size);
    commit(t);
    return rc;
}

/* The first read in an arena records all its pools that hold blocks; pools
 * that take a class after that are recorded when first read. */
START_TEST(test_pools_filled_after_their_arena_was_first_read_read_right)
{
    enum { N = 3000 };
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 16);
    put_u64(t, a, 0, 7);
    root_set(t, "a", a);
    commit(t);
    uint64_t size;
    OK(read_get(s, a, &size));   /* the arena is now known to the read path */
    ck_assert_uint_eq(size, 16);

    t = wbegin(s);
    objstore_oid list = 0;
    for (uint64_t i = 0; i < N; i++) {   /* new pools of other classes */
        objstore_oid x = new_obj(t, 0, 1, 24 + 8 * (i % 12));
        put_u64(t, x, 16, i);
        if (list)
            set_ref(t, x, 0, list);
        list = x;
    }
    root_set(t, "list", list);
    commit(t);

    t = rbegin(s);
    uint64_t k = 0;
    for (objstore_oid o = root_get(t, "list"); o; o = get_ref(t, o, 0), k++) {
        const void *p;
        uint64_t i = N - 1 - k, v;
        OK(objstore_get(t, o, &p, &size));
        ck_assert_uint_eq(size, 24 + 8 * (i % 12));
        memcpy(&v, (const uint8_t *)p + 16, 8);
        ck_assert_uint_eq(v, i);
    }
    ck_assert_uint_eq(k, N);
    ck_assert_uint_eq(get_u64(t, a, 0), 7);
    commit(t);
    close_store(s);
}
END_TEST

START_TEST(test_a_read_object_freed_later_is_ebadoid_to_the_next_reader)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 40), b = new_obj(t, 0, 0, 40);
    root_set(t, "a", a);
    root_set(t, "b", b);
    commit(t);
    uint64_t size;
    OK(read_get(s, a, &size));   /* the pool is now known to the read path */
    OK(read_get(s, b, &size));
    ck_assert_uint_eq(size, 40);
    t = wbegin(s);
    OK(objstore_root_del(t, "b"));
    commit(t);                    /* b is freed */
    objstore_txn *r = rbegin(s);
    const void *p;
    EXPECT(OBJSTORE_EBADOID, objstore_get(r, b, &p, &size));
    objstore_oid x;
    EXPECT(OBJSTORE_EBADOID, objstore_get_ref(r, b, 0, &x));
    OK(objstore_get(r, a, &p, &size));
    commit(r);
    close_store(s);
}
END_TEST

START_TEST(test_an_object_of_an_aborted_transaction_is_ebadoid_to_readers)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 40);
    root_set(t, "a", a);
    commit(t);
    uint64_t size;
    OK(read_get(s, a, &size));
    t = wbegin(s);
    objstore_oid b = new_obj(t, 0, 0, 40);   /* same pool as a */
    OK(objstore_pin(t, b));
    objstore_abort(t);
    EXPECT(OBJSTORE_EBADOID, read_get(s, b, &size));
    /* and an object the aborted transaction freed is live again */
    t = wbegin(s);
    OK(objstore_root_del(t, "a"));
    objstore_abort(t);
    OK(read_get(s, a, &size));
    ck_assert_uint_eq(size, 40);
    close_store(s);
}
END_TEST

/* A pool that empties may come back with another size class: an oid of the
 * old class is then no object, or the start of a new one of a new size. */
START_TEST(test_a_pool_reused_for_another_size_gives_the_new_sizes_and_refuses_old_oids)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    enum { N = 200 };
    objstore_oid small[N];
    objstore_oid keep = new_obj(t, 0, N, 0);
    root_set(t, "keep", keep);
    for (int i = 0; i < N; i++) {
        small[i] = new_obj(t, 0, 0, 16);   /* 32-byte blocks */
        set_ref(t, keep, (uint32_t)i, small[i]);
    }
    commit(t);
    uint64_t size;
    for (int i = 0; i < N; i++)
        OK(read_get(s, small[i], &size));
    t = wbegin(s);
    OK(objstore_root_del(t, "keep"));
    commit(t);                            /* every small block freed */
    t = wbegin(s);
    objstore_oid big[N];
    objstore_oid keep2 = new_obj(t, 0, N, 0);
    root_set(t, "keep2", keep2);
    for (int i = 0; i < N; i++) {
        big[i] = new_obj(t, 0, 0, 100);   /* 128-byte blocks */
        set_ref(t, keep2, (uint32_t)i, big[i]);
    }
    commit(t);
    for (int i = 0; i < N; i++) {
        bool reused = false;
        for (int j = 0; j < N && !reused; j++)
            reused = big[j] == small[i];
        if (reused)
            continue;
        uint64_t sz;
        objstore_txn *r = rbegin(s);
        const void *p;
        int rc = objstore_get(r, small[i], &p, &sz);
        commit(r);
        MUST(rc == OBJSTORE_EBADOID, "old oid %llu read as %d", U(small[i]), rc);
    }
    for (int i = 0; i < N; i++) {
        OK(read_get(s, big[i], &size));
        MUST(size == 100, "new object %d has %llu bytes", i, U(size));
    }
    verify_clean(s);
    close_store(s);
}
END_TEST

/* A damaged header beside sound objects of its pool: the read path that
 * knows the pool still refuses it, every time. */
START_TEST(test_a_damaged_header_in_a_known_pool_is_refused_on_every_read)
{
    create_store(g_store, NULL);
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 40), b = new_obj(t, 0, 1, 40);
    root_set(t, "a", a);
    root_set(t, "b", b);
    commit(t);
    close_store(s);
    /* b's nrefs (header word 1, high half) made far too large */
    char *heap = ts_path(g_store, "heap.1");
    int fd = open(heap, O_RDWR | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    uint32_t nrefs = 1000;
    ck_assert_int_eq(pwrite(fd, &nrefs, 4, (off_t)b + 12), 4);
    close(fd);
    free(heap);
    s = open_store(g_store, NULL);
    uint64_t size;
    OK(read_get(s, a, &size));   /* the pool becomes known */
    for (int i = 0; i < 3; i++) {
        objstore_txn *r = rbegin(s);
        const void *p;
        objstore_oid x;
        EXPECT(OBJSTORE_ECORRUPT, objstore_get(r, b, &p, &size));
        EXPECT(OBJSTORE_ECORRUPT, objstore_get_ref(r, b, 0, &x));
        commit(r);
    }
    close_store(s);
}
END_TEST

static Suite *store_api_suite(void)
{
    Suite *s = suite_create("store_api");
    double slow = ts_under_sanitizer() ? 300 : 60;

    TCase *tc = ts_tcase(s, "create", 60);
    tcase_add_test(tc, test_create_makes_a_store_in_a_directory_that_does_not_exist);
    tcase_add_test(tc, test_create_accepts_an_existing_empty_directory);
    tcase_add_test(tc, test_create_refuses_an_existing_store_and_leaves_it_intact);
    tcase_add_test(tc, test_create_refuses_a_directory_that_holds_other_files);
    tcase_add_test(tc, test_a_store_opens_and_closes_many_times_keeping_its_content);
    tcase_add_test(tc, test_options_set_the_initial_size_and_null_means_defaults);
    tcase_add_test(tc, test_a_relaxed_store_keeps_its_commits_after_close);
    tcase_add_test(tc, test_a_small_checkpoint_interval_checkpoints_while_open);

    tc = ts_tcase(s, "locking", 60);
    tcase_add_test(tc, test_a_second_open_in_the_same_process_is_busy);
    tcase_add_test(tc, test_a_second_open_from_another_process_is_busy);
    tcase_add_test(tc, test_read_only_openers_in_different_processes_share_a_store);
    tcase_add_test(tc, test_a_reader_beside_a_writer_in_another_process_sees_one_whole_committed_state);
    tcase_add_test(tc, test_a_child_may_open_read_only_a_store_its_parent_opened_read_only);
    tcase_add_test(tc, test_a_child_forked_while_the_store_was_open_opens_it_once_the_parent_closed);
    tcase_add_test(tc, test_a_read_only_store_refuses_write_transactions_and_writes_nothing);
    tcase_add_test(tc, test_a_read_only_open_sees_commits_still_in_the_redo_log);

    tc = ts_tcase(s, "transactions", 60);
    tcase_add_test(tc, test_commit_publishes_and_abort_discards);
    tcase_add_test(tc, test_commits_count_and_advance_the_epoch);
    tcase_add_test(tc, test_a_second_transaction_from_the_writing_thread_is_etxn);
    tcase_add_test(tc, test_several_read_transactions_may_be_open_at_once);

    tc = ts_tcase(s, "objects", slow);
    tcase_add_test(tc, test_get_returns_the_exact_size_asked_at_creation);
    tcase_add_test(tc, test_write_and_edit_change_payloads_that_persist);
    tcase_add_test(tc, test_writing_past_the_payload_is_einval_and_changes_nothing);
    tcase_add_test(tc, test_a_slot_index_out_of_range_is_einval);
    tcase_add_test(tc, test_oids_that_name_no_live_object_are_ebadoid);
    tcase_add_test(tc, test_an_oid_made_in_an_aborted_transaction_is_ebadoid_after_it);
    tcase_add_test(tc, test_write_calls_in_a_read_transaction_are_ereadonly);
    tcase_add_test(tc, test_get_ref_returns_what_set_ref_stored_across_reopen);

    tc = ts_tcase(s, "read path", slow);
    tcase_add_test(tc, test_a_read_object_freed_later_is_ebadoid_to_the_next_reader);
    tcase_add_test(tc, test_pools_filled_after_their_arena_was_first_read_read_right);
    tcase_add_test(tc, test_an_object_of_an_aborted_transaction_is_ebadoid_to_readers);
    tcase_add_test(tc, test_a_pool_reused_for_another_size_gives_the_new_sizes_and_refuses_old_oids);
    tcase_add_test(tc, test_a_damaged_header_in_a_known_pool_is_refused_on_every_read);

    tc = ts_tcase(s, "names", 60);
    tcase_add_test(tc, test_roots_are_set_read_deleted_and_iterated_in_name_order);
    tcase_add_test(tc, test_root_names_must_be_1_to_511_bytes);
    tcase_add_test(tc, test_root_iteration_in_a_write_transaction_shows_its_pending_changes);
    tcase_add_test(tc, test_types_get_stable_ids_that_survive_reopen);
    tcase_add_test(tc, test_type_names_must_be_1_to_255_bytes_and_ids_registered);
    tcase_add_test(tc, test_metadata_keeps_binary_keys_empty_and_large_values_across_reopen);

    tc = ts_tcase(s, "errors", 60);
    tcase_add_test(tc, test_strerror_describes_every_code_distinctly);
    tcase_add_test(tc, test_errmsg_is_per_thread_and_set_by_every_failure);

    tc = ts_tcase(s, "persistence", slow);
    tcase_add_test(tc, test_everything_persists_across_close_and_reopen);
    tcase_add_test(tc, test_abort_restores_objects_counts_roots_types_metadata_and_pins);
    tcase_add_test(tc, test_objects_created_after_an_abort_reuse_the_space_cleanly);
    tcase_add_test(tc, test_a_heap_at_its_size_limit_refuses_allocation_cleanly);
    tcase_add_test(tc, test_a_store_opens_under_an_address_space_limit);

    tc = ts_tcase(s, "threads", slow);
    tcase_add_test(tc, test_a_reader_in_another_thread_never_sees_an_open_write_transaction);
    tcase_add_test(tc, test_readers_in_other_threads_see_fully_old_or_fully_new_state);
    tcase_add_test(tc, test_a_transaction_may_be_committed_by_another_thread);
    tcase_add_test(tc, test_nested_reads_go_on_while_a_writer_waits);

    tc = ts_tcase(s, "liveness", 30);   /* a starved writer hangs: the timeout */
    tcase_add_test(tc, test_a_stream_of_readers_does_not_starve_the_writer);
    return s;
}



int main(void)
{
    SRunner *sr = srunner_create(store_api_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
