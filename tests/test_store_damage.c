/*
 * test_store_damage.c -- the Check suite of damaged stores: every refusal
 * objstore_open owes a truncated, bit-flipped, mismatched or incomplete store
 * (ARCHITECTURE.md G3, G4), written against objstore.h and objstore_admin.h.
 *
 * For every kind of damage the open, read-write and read-only alike, must:
 *   - return the status code of that damage (never crash: the suite also runs
 *     under ASan + UBSan);
 *   - leave a message that names the problem and the file;
 *   - change none of the store's files (their bytes are compared);
 * and once the damage is undone, the store opens again with its content
 * intact and verify clean: a refused open destroys nothing.
 *
 * The store layout relied on: one heap file heap.<generation> (heap.1 after
 * create), meta/ an LMDB environment whose main database holds the redo log
 * (keys 0xFE, epoch, seq), a lock file.  Helpers and conventions: test_store.h.
 */
#include "test_store.h"

#include <dirent.h>
#include <lmdb.h>
#include <xxhash.h>

#include "heap_format.h"

#define PAYLOAD 3000   /* the content check object's bytes */

static char *heap_file(void)
{
    DIR *d = opendir(g_store);
    ck_assert_msg(d != NULL, "opendir %s: %s", g_store, strerror(errno));
    char *found = NULL;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "heap.", 5) == 0) {
            ck_assert_msg(found == NULL, "two heap files in the store");
            found = ts_path(g_store, e->d_name);
        }
    }
    closedir(d);
    ck_assert_msg(found != NULL, "no heap.* file in %s", g_store);
    return found;
}

static char *meta_dir(void)
{
    return ts_path(g_store, "meta");
}

static char *meta_data(void)
{
    return ts_path(g_store, "meta/data.mdb");
}

/* A store with a little of everything, closed. */
static void make_store(const char *dir)
{
    create_store(dir, NULL);
    objstore *s = open_store(dir, NULL);
    objstore_txn *t = wbegin(s);
    uint32_t ty;
    OK(objstore_type_register(t, "thing", &ty));
    objstore_oid a = new_obj(t, ty, 2, PAYLOAD), b = new_obj(t, 0, 0, 8);
    void *p;
    uint64_t size;
    OK(objstore_edit(t, a, &p, &size));
    pattern_into(p, size, 5);
    set_ref(t, a, 0, b);
    root_set(t, "a", a);
    OK(objstore_meta_set(t, "owner", 5, "tests", 5));
    commit(t);
    close_store(s);
}

/* The content make_store wrote is all there, and verify finds nothing. */
static void check_content(const char *dir)
{
    objstore *s = open_store(dir, NULL);
    objstore_txn *t = rbegin(s);
    objstore_oid a = root_get(t, "a");
    const void *p;
    uint64_t size;
    OK(objstore_get(t, a, &p, &size));
    ck_assert_uint_eq(size, PAYLOAD);
    uint8_t want[PAYLOAD];
    pattern_into(want, PAYLOAD, 5);
    ck_assert_msg(memcmp(p, want, PAYLOAD) == 0, "the payload changed");
    ck_assert_uint_eq(refcount(t, get_ref(t, a, 0)), 1);
    const void *v;
    size_t vlen;
    OK(objstore_meta_get(t, "owner", 5, &v, &vlen));
    ck_assert(vlen == 5 && memcmp(v, "tests", 5) == 0);
    commit(t);
    verify_clean(s);
    close_store(s);
}

/* ------------------------------------------------------------------ */
/* snapshots of the files a refused open must not change                */

#define MAXSNAP 4

struct snap {
    int n;
    char *path[MAXSNAP];
    uint8_t *bytes[MAXSNAP];   /* NULL: the file did not exist */
    size_t len[MAXSNAP];
};

static void snap_take(struct snap *sn, const char *const *paths)
{
    memset(sn, 0, sizeof *sn);
    for (; *paths != NULL; paths++) {
        ck_assert_int_lt(sn->n, MAXSNAP);
        sn->path[sn->n] = strdup(*paths);
        sn->bytes[sn->n] = read_all(*paths, &sn->len[sn->n]);
        sn->n++;
    }
}

static void snap_check_and_free(struct snap *sn, const char *after_what)
{
    for (int i = 0; i < sn->n; i++) {
        size_t len;
        uint8_t *now = read_all(sn->path[i], &len);
        if (sn->bytes[i] == NULL)
            ck_assert_msg(now == NULL, "%s created %s", after_what, sn->path[i]);
        else
            ck_assert_msg(now != NULL && len == sn->len[i] &&
                              memcmp(now, sn->bytes[i], len) == 0,
                          "%s changed %s", after_what, sn->path[i]);
        free(now);
        free(sn->bytes[i]);
        free(sn->path[i]);
    }
    sn->n = 0;
}

/* Opens g_store read-write, then read-only, and expects both refused with
 * code, a message that contains mention, and the files in paths unchanged. */
static void expect_refused(int code, const char *mention, const char *const *paths)
{
    static const int modes[] = { 0, OBJSTORE_RDONLY };
    for (size_t m = 0; m < 2; m++) {
        struct snap sn;
        snap_take(&sn, paths);
        objstore_options o = { .flags = modes[m] };
        objstore *s = NULL;
        int rc = objstore_open(g_store, &o, &s);
        char msg[512];
        snprintf(msg, sizeof msg, "%s", objstore_errmsg());
        if (rc == OBJSTORE_OK)
            objstore_close(s);
        ck_assert_msg(rc == code, "open (%s) = %d (%s), expected %d (%s): %s",
                      m ? "read-only" : "read-write", rc, objstore_strerror(rc), code,
                      objstore_strerror(code), msg);
        ck_assert_msg(msg[0] != '\0', "the refused open (%s) left no message",
                      m ? "read-only" : "read-write");
        ck_assert_msg(strstr(msg, mention) != NULL,
                      "the message does not mention \"%s\": %s", mention, msg);
        snap_check_and_free(&sn, m ? "a refused read-only open" : "a refused open");
    }
}

static void flip_byte(const char *path, off_t off, uint8_t mask)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    uint8_t b;
    ck_assert_int_eq(pread(fd, &b, 1, off), 1);
    b ^= mask;
    ck_assert_int_eq(pwrite(fd, &b, 1, off), 1);
    ck_assert_int_eq(fsync(fd), 0);
    close(fd);
}

/* Rewrites the heap header through fn, then fixes its checksum. */
static void edit_header(const char *path, void (*fn)(struct heap_file_header *))
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    struct heap_file_header hd;
    ck_assert_int_eq(pread(fd, &hd, sizeof hd, 0), (ssize_t)sizeof hd);
    fn(&hd);
    hd.checksum = XXH3_64bits(&hd, offsetof(struct heap_file_header, checksum));
    ck_assert_int_eq(pwrite(fd, &hd, sizeof hd, 0), (ssize_t)sizeof hd);
    ck_assert_int_eq(fsync(fd), 0);
    close(fd);
}

/* ------------------------------------------------------------------ */
/* the heap file                                                        */

enum { TR_HALF, TR_ONE_ARENA, TR_ONE_BYTE_SHORT, TR_HEADER_ONLY, N_TRUNC };

START_TEST(test_a_truncated_heap_is_refused)
{
    make_store(g_store);
    char *heap = heap_file(), *data = meta_data();
    size_t len;
    uint8_t *orig = read_all(heap, &len);
    ck_assert_uint_ge(len, 4 * MiB);
    off_t to = 0;
    switch (_i) {
    case TR_HALF: to = (off_t)len / 2; break;
    case TR_ONE_ARENA: to = (off_t)MiB; break;
    case TR_ONE_BYTE_SHORT: to = (off_t)len - 1; break;
    case TR_HEADER_ONLY: to = HEAP_HEADER_SIZE; break;
    }
    ck_assert_int_eq(truncate(heap, to), 0);
    const char *paths[] = { heap, data, NULL };
    expect_refused(OBJSTORE_ETRUNCATED, "heap", paths);

    write_all(heap, orig, len);
    check_content(g_store);
    free(orig);
    free(heap);
    free(data);
}
END_TEST

START_TEST(test_a_heap_with_a_bad_magic_is_refused)
{
    make_store(g_store);
    char *heap = heap_file(), *data = meta_data();
    flip_byte(heap, 0, 0x20);
    const char *paths[] = { heap, data, NULL };
    expect_refused(OBJSTORE_EBADMAGIC, "heap", paths);
    flip_byte(heap, 0, 0x20);
    check_content(g_store);
    free(heap);
    free(data);
}
END_TEST

/* A flipped byte of the uuid, the generation, the length, the checksum. */
static const off_t k_flip_at[] = { 40, 47, 55, 56, 64, 120, 127 };

START_TEST(test_a_flipped_header_byte_fails_the_checksum)
{
    make_store(g_store);
    char *heap = heap_file(), *data = meta_data();
    off_t at = k_flip_at[_i];
    flip_byte(heap, at, 0x01);
    const char *paths[] = { heap, data, NULL };
    expect_refused(OBJSTORE_ECHECKSUM, "heap", paths);
    flip_byte(heap, at, 0x01);
    check_content(g_store);
    free(heap);
    free(data);
}
END_TEST

static void set_version_2(struct heap_file_header *hd) { hd->version = 2; }
static void set_pool_8k(struct heap_file_header *hd) { hd->pool_size = 8192; }
static void flip_uuid(struct heap_file_header *hd) { hd->uuid[7] ^= 0x80; }

START_TEST(test_a_consistent_header_of_another_version_geometry_or_store_is_refused)
{
    make_store(g_store);
    char *heap = heap_file(), *data = meta_data();
    size_t len;
    uint8_t *orig = read_all(heap, &len);
    const char *paths[] = { heap, data, NULL };

    edit_header(heap, set_version_2);
    expect_refused(OBJSTORE_EVERSION, "heap", paths);
    write_all(heap, orig, len);

    edit_header(heap, set_pool_8k);
    expect_refused(OBJSTORE_EGEOMETRY, "heap", paths);
    write_all(heap, orig, len);

    /* A valid header whose uuid is not the one meta/ names. */
    edit_header(heap, flip_uuid);
    expect_refused(OBJSTORE_EMISMATCH, "heap", paths);
    write_all(heap, orig, len);

    check_content(g_store);
    free(orig);
    free(heap);
    free(data);
}
END_TEST

START_TEST(test_damaged_arena_metadata_is_refused_as_corrupt)
{
    make_store(g_store);
    char *heap = heap_file(), *data = meta_data();
    flip_byte(heap, HEAP_TABLE_OFFSET, 0xff);   /* arena 0's table magic */
    const char *paths[] = { heap, data, NULL };
    expect_refused(OBJSTORE_ECORRUPT, "heap", paths);
    flip_byte(heap, HEAP_TABLE_OFFSET, 0xff);
    check_content(g_store);
    free(heap);
    free(data);
}
END_TEST

START_TEST(test_a_heap_from_another_store_is_refused_as_a_mismatch)
{
    char *other = ts_path(g_dir, "other");
    make_store(g_store);
    make_store(other);
    char *heap = heap_file(), *data = meta_data();
    char *other_heap = ts_path(other, strrchr(heap, '/') + 1);
    size_t len, olen;
    uint8_t *orig = read_all(heap, &len), *foreign = read_all(other_heap, &olen);
    ck_assert_ptr_nonnull(foreign);
    write_all(heap, foreign, olen);

    const char *paths[] = { heap, data, NULL };
    expect_refused(OBJSTORE_EMISMATCH, "heap", paths);

    write_all(heap, orig, len);
    check_content(g_store);
    check_content(other);
    free(orig);
    free(foreign);
    free(other_heap);
    free(other);
    free(heap);
    free(data);
}
END_TEST

START_TEST(test_a_missing_heap_file_is_enoent)
{
    make_store(g_store);
    char *heap = heap_file(), *data = meta_data();
    size_t len;
    uint8_t *orig = read_all(heap, &len);
    ck_assert_int_eq(unlink(heap), 0);
    const char *paths[] = { heap, data, NULL };
    expect_refused(OBJSTORE_ENOENT, "heap", paths);
    write_all(heap, orig, len);
    check_content(g_store);
    free(orig);
    free(heap);
    free(data);
}
END_TEST

/* ------------------------------------------------------------------ */
/* the directory and meta/                                              */

START_TEST(test_opening_a_directory_that_does_not_exist_is_enoent_and_creates_nothing)
{
    free(g_store);
    g_store = ts_path(g_dir, "nowhere");
    const char *paths[] = { g_store, NULL };
    expect_refused(OBJSTORE_ENOENT, "nowhere", paths);
    ck_assert(!path_exists(g_store));
}
END_TEST

/* An empty directory is a store without meta/: EMETA, as when meta/ is lost
 * (the header's ENOENT is for a missing directory or heap file). */
START_TEST(test_opening_an_empty_directory_is_emeta_and_creates_nothing)
{
    ck_assert_int_eq(mkdir(g_store, 0700), 0);
    char *meta = meta_dir(), *heap = ts_path(g_store, "heap.1");
    const char *paths[] = { meta, heap, NULL };
    expect_refused(OBJSTORE_EMETA, "store", paths);
    DIR *d = opendir(g_store);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        ck_assert_msg(strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
                          strcmp(e->d_name, "lock") == 0,
                      "a refused open created %s", e->d_name);
    closedir(d);
    free(meta);
    free(heap);
}
END_TEST

static uint8_t *g_meta_bytes;
static size_t g_meta_len;

static void save_meta(void)
{
    char *data = meta_data();
    g_meta_bytes = read_all(data, &g_meta_len);
    ck_assert_ptr_nonnull(g_meta_bytes);
    free(data);
}

static void restore_meta(void)
{
    char *meta = meta_dir(), *data = meta_data();
    ck_assert_int_eq(ts_rmtree(meta), 0);
    ck_assert_int_eq(mkdir(meta, 0700), 0);
    write_all(data, g_meta_bytes, g_meta_len);
    free(g_meta_bytes);
    g_meta_bytes = NULL;
    free(meta);
    free(data);
}

START_TEST(test_a_missing_meta_directory_is_refused)
{
    make_store(g_store);
    save_meta();
    char *heap = heap_file(), *meta = meta_dir();
    ck_assert_int_eq(ts_rmtree(meta), 0);
    const char *paths[] = { heap, meta, NULL };
    expect_refused(OBJSTORE_EMETA, "meta", paths);
    ck_assert_msg(!path_exists(meta), "a refused open created meta/");
    restore_meta();
    check_content(g_store);
    free(heap);
    free(meta);
}
END_TEST

#define LMDB_OK(expr)                                                        \
    do {                                                                     \
        int lm_rc_ = (expr);                                                 \
        ck_assert_msg(lm_rc_ == MDB_SUCCESS, "%s = %d: %s", #expr, lm_rc_,   \
                      mdb_strerror(lm_rc_));                                 \
    } while (0)

enum { FOREIGN_PLAIN, FOREIGN_NAMED, FOREIGN_GARBAGE, N_FOREIGN };

/* Replaces meta/ by an LMDB environment of someone else's (or garbage). */
static void foreign_meta(int kind)
{
    char *meta = meta_dir(), *data = meta_data();
    ck_assert_int_eq(ts_rmtree(meta), 0);
    ck_assert_int_eq(mkdir(meta, 0700), 0);
    if (kind == FOREIGN_GARBAGE) {
        uint8_t junk[64 * 1024];
        pattern_into(junk, sizeof junk, 1234);
        write_all(data, junk, sizeof junk);
    } else {
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        LMDB_OK(mdb_env_create(&env));
        LMDB_OK(mdb_env_set_maxdbs(env, 16));
        LMDB_OK(mdb_env_open(env, meta, 0, 0600));
        LMDB_OK(mdb_txn_begin(env, NULL, 0, &txn));
        /* FOREIGN_NAMED: databases named like ours, holding other things. */
        const char *names[] = { "meta", "roots", "types", "zct" };
        for (int i = 0; i < (kind == FOREIGN_NAMED ? 4 : 1); i++) {
            LMDB_OK(mdb_dbi_open(txn, kind == FOREIGN_NAMED ? names[i] : NULL,
                                 MDB_CREATE, &dbi));
            for (int k = 0; k < 10; k++) {
                char key[16], val[32];
                snprintf(key, sizeof key, "key%d", k);
                snprintf(val, sizeof val, "unrelated value %d", k);
                MDB_val mk = { strlen(key), key }, mv = { strlen(val), val };
                LMDB_OK(mdb_put(txn, dbi, &mk, &mv, 0));
            }
        }
        LMDB_OK(mdb_txn_commit(txn));
        mdb_env_close(env);
    }
    free(meta);
    free(data);
}

START_TEST(test_a_foreign_meta_environment_is_refused)
{
    make_store(g_store);
    save_meta();
    foreign_meta(_i);
    char *heap = heap_file(), *data = meta_data();
    const char *paths[] = { heap, data, NULL };
    expect_refused(OBJSTORE_EMETA, "meta", paths);
    restore_meta();
    check_content(g_store);
    free(heap);
    free(data);
}
END_TEST

static MDB_env *open_meta_env(void);

/* A store whose meta/ says format 2 is refused as another format, its
 * files untouched.  (test_fsck's test_a_store_of_another_format_... gives it
 * format 2's "redo" database too, and runs the checker and repairs on it.) */
START_TEST(test_a_store_of_an_older_format_is_refused_as_eversion)
{
    make_store(g_store);
    save_meta();
    MDB_env *env = open_meta_env();
    MDB_txn *txn;
    MDB_dbi dbi;
    LMDB_OK(mdb_txn_begin(env, NULL, 0, &txn));
    LMDB_OK(mdb_dbi_open(txn, "meta", 0, &dbi));
    uint64_t two = 2;
    MDB_val k = { 6, "format" }, v = { 8, &two };
    LMDB_OK(mdb_put(txn, dbi, &k, &v, 0));
    LMDB_OK(mdb_txn_commit(txn));
    mdb_env_close(env);
    char *heap = heap_file(), *data = meta_data();
    const char *paths[] = { heap, data, NULL };
    expect_refused(OBJSTORE_EVERSION, "store format 2, this build reads 4", paths);
    restore_meta();
    check_content(g_store);
    free(heap);
    free(data);
}
END_TEST

/* data.mdb cut short at every page boundary and at lengths in between:
 * LMDB would follow its meta page past the end of the file (SIGBUS), or
 * write into a file too short for the meta pages; open must refuse first. */
#define N_META_CUTS 24

START_TEST(test_a_truncated_meta_data_file_is_refused_before_lmdb_reads_it)
{
    make_store(g_store);
    save_meta();
    char *heap = heap_file(), *data = meta_data();
    size_t pages = g_meta_len / 4096;
    ck_assert_uint_ge(pages, 4);
    /* _i < pages: the boundary of page _i; past that, pseudo-random lengths. */
    size_t cut;
    if ((size_t)_i < pages)
        cut = (size_t)_i * 4096;
    else
        cut = (size_t)(((uint64_t)_i * 2654435761u) % g_meta_len);
    if (cut >= g_meta_len)
        cut = g_meta_len - 1;
    ck_assert_int_eq(truncate(data, (off_t)cut), 0);
    const char *paths[] = { heap, data, NULL };
    expect_refused(OBJSTORE_EMETA, "data.mdb", paths);
    restore_meta();
    check_content(g_store);
    free(heap);
    free(data);
}
END_TEST

/* A heap file put back from an earlier copy, beside the newer meta/ that
 * dropped the redo records which would bring it forward. */
START_TEST(test_a_restored_older_heap_file_is_refused_as_a_mismatch)
{
    make_store(g_store);
    char *heap = heap_file();
    size_t old_len;
    uint8_t *old = read_all(heap, &old_len);
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid a = root_get(t, "a");
    void *p;
    uint64_t size;
    OK(objstore_edit(t, a, &p, &size));
    pattern_into(p, size, 77);
    commit(t);
    close_store(s);   /* checkpoints: the records go */
    size_t new_len;
    uint8_t *cur = read_all(heap, &new_len);
    write_all(heap, old, old_len);
    char *data = meta_data();
    const char *paths[] = { heap, data, NULL };
    expect_refused(OBJSTORE_EMISMATCH, "older than meta/", paths);
    write_all(heap, cur, new_len);
    s = open_store(g_store, NULL);
    t = rbegin(s);
    const void *q;
    OK(objstore_get(t, root_get(t, "a"), &q, &size));
    uint8_t want[PAYLOAD];
    pattern_into(want, PAYLOAD, 77);
    ck_assert_msg(memcmp(q, want, PAYLOAD) == 0, "the newer content is not there");
    commit(t);
    verify_clean(s);
    close_store(s);
    free(old);
    free(cur);
    free(heap);
    free(data);
}
END_TEST

/* meta/ put back from an earlier copy beside a newer heap file. */
START_TEST(test_a_restored_older_meta_is_refused_as_a_mismatch)
{
    make_store(g_store);
    save_meta();
    size_t old_len = g_meta_len;
    uint8_t *old = malloc(old_len);
    memcpy(old, g_meta_bytes, old_len);
    free(g_meta_bytes);
    g_meta_bytes = NULL;
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = wbegin(s);
    root_set(t, "b", new_obj(t, 0, 0, 16));
    commit(t);
    close_store(s);
    save_meta();   /* the newer one, to put back */
    char *heap = heap_file(), *data = meta_data();
    write_all(data, old, old_len);
    const char *paths[] = { heap, data, NULL };
    expect_refused(OBJSTORE_EMISMATCH, "meta/ is older", paths);
    restore_meta();
    check_content(g_store);
    free(old);
    free(heap);
    free(data);
}
END_TEST

/* ------------------------------------------------------------------ */
/* redo records                                                         */

/* In a child: opens, commits value under root "late", exits without closing:
 * the redo record stays in meta/ until a checkpoint. */
static int late_value(objstore_txn *t, int i, void *arg)
{
    (void)i;
    uint64_t value = *(const uint64_t *)arg;
    objstore_oid o = 0;
    int rc = objstore_new(t, 0, 0, 4000, &o);
    if (!rc)
        rc = objstore_write(t, o, 0, &value, 8);
    if (!rc)
        rc = objstore_write(t, o, 3992, &value, 8);
    return rc ? rc : objstore_root_set(t, "late", o);
}

static void commit_and_vanish(uint64_t value)
{
    commits_in_child_then_vanish(1, late_value, &value);
}

enum { REDO_PEEK = -2, REDO_RESTORE = -1, REDO_FLIP, REDO_TRUNCATE, REDO_EMPTY, N_REDO };

/* Opens meta/ with liblmdb directly (the store must be closed). */
static MDB_env *open_meta_env(void)
{
    char *meta = meta_dir(), *data = meta_data();
    struct stat st;
    ck_assert_int_eq(stat(data, &st), 0);
    MDB_env *env;
    LMDB_OK(mdb_env_create(&env));
    LMDB_OK(mdb_env_set_maxdbs(env, 16));
    LMDB_OK(mdb_env_set_mapsize(env, (size_t)st.st_size + 256 * MiB));
    LMDB_OK(mdb_env_open(env, meta, 0, 0600));
    free(meta);
    free(data);
    return env;
}

/* The redo log is in meta/'s main database, after the named databases:
 * each record's key is 0xFE, epoch u64 BE, seq u32 BE (FORMAT.md 2.1).
 * Puts cur on the idx-th record; MDB_NOTFOUND when there are fewer. */
static int redo_at(MDB_cursor *cur, size_t idx, MDB_val *k, MDB_val *v)
{
    uint8_t prefix = 0xFE;
    *k = (MDB_val){ 1, &prefix };
    int rc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
    for (size_t i = 0; rc == MDB_SUCCESS && i < idx; i++)
        rc = mdb_cursor_get(cur, k, v, MDB_NEXT);
    if (rc == MDB_SUCCESS && (k->mv_size != 13 || ((uint8_t *)k->mv_data)[0] != 0xFE))
        rc = MDB_NOTFOUND;
    return rc;
}

/* Records in meta/'s redo log. */
static size_t count_redo(void)
{
    MDB_env *env = open_meta_env();
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, v;
    size_t n = 0;
    LMDB_OK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
    LMDB_OK(mdb_dbi_open(txn, NULL, 0, &dbi));
    LMDB_OK(mdb_cursor_open(txn, dbi, &cur));
    while (redo_at(cur, n, &k, &v) == MDB_SUCCESS)
        n++;
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return n;
}

/* Rewrites the first record of meta/'s redo log: damaged per how,
 * back to saved (REDO_RESTORE), or not at all (REDO_PEEK).  Returns the
 * value it found (malloc'd). */
static uint8_t *edit_first_redo(int how, const uint8_t *saved, size_t saved_len,
                                size_t *len)
{
    MDB_env *env = open_meta_env();
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    LMDB_OK(mdb_txn_begin(env, NULL, 0, &txn));
    LMDB_OK(mdb_dbi_open(txn, NULL, 0, &dbi));
    LMDB_OK(mdb_cursor_open(txn, dbi, &cur));
    MDB_val k, v;
    int rc = redo_at(cur, 0, &k, &v);
    ck_assert_msg(rc == MDB_SUCCESS, "no redo record is pending after a commit "
                  "without close: %s", mdb_strerror(rc));
    uint8_t *orig = malloc(v.mv_size + 1);
    ck_assert_ptr_nonnull(orig);
    memcpy(orig, v.mv_data, v.mv_size);
    *len = v.mv_size;
    uint8_t *key = malloc(k.mv_size);
    ck_assert_ptr_nonnull(key);
    memcpy(key, k.mv_data, k.mv_size);
    MDB_val nk = { k.mv_size, key };
    mdb_cursor_close(cur);

    uint8_t *nv = malloc(v.mv_size + 1);
    ck_assert_ptr_nonnull(nv);
    memcpy(nv, orig, v.mv_size);
    MDB_val val = { v.mv_size, nv };
    if (how == REDO_RESTORE) {
        val.mv_size = saved_len;
        val.mv_data = (void *)saved;
    } else if (how == REDO_FLIP) {
        ck_assert_uint_gt(v.mv_size, 0);
        nv[v.mv_size / 2] ^= 0x10;
    } else if (how == REDO_TRUNCATE) {
        val.mv_size = v.mv_size / 2;
    } else {
        val.mv_size = 0;
    }
    if (how == REDO_PEEK) {
        mdb_txn_abort(txn);
    } else {
        LMDB_OK(mdb_put(txn, dbi, &nk, &val, 0));
        LMDB_OK(mdb_txn_commit(txn));
    }
    mdb_env_close(env);
    free(nv);
    free(key);
    return orig;
}

START_TEST(test_a_pending_redo_record_is_replayed_at_open)
{
    make_store(g_store);
    ck_assert_uint_eq(count_redo(), 0);   /* close checkpointed */
    commit_and_vanish(0xC0FFEE);
    size_t len;
    free(edit_first_redo(REDO_PEEK, NULL, 0, &len));   /* it is there */
    ck_assert_uint_gt(len, 0);

    check_content(g_store);
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = rbegin(s);
    objstore_oid o = root_get(t, "late");
    ck_assert_uint_eq(get_u64(t, o, 0), 0xC0FFEE);
    ck_assert_uint_eq(get_u64(t, o, 3992), 0xC0FFEE);
    commit(t);
    verify_clean(s);
    close_store(s);
    ck_assert_uint_eq(count_redo(), 0);   /* and close leaves nothing to replay */
}
END_TEST

START_TEST(test_a_damaged_redo_record_refuses_the_open_and_spares_the_heap)
{
    make_store(g_store);
    commit_and_vanish(0xC0FFEE);
    size_t len;
    uint8_t *orig = edit_first_redo(_i, NULL, 0, &len);

    char *heap = heap_file();
    const char *paths[] = { heap, NULL };
    expect_refused(OBJSTORE_EREDO, "redo", paths);

    /* Undamaged again, the record replays: the refusal destroyed nothing. */
    size_t dlen;
    free(edit_first_redo(REDO_RESTORE, orig, len, &dlen));
    check_content(g_store);
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = rbegin(s);
    objstore_oid o = root_get(t, "late");
    ck_assert_uint_eq(get_u64(t, o, 0), 0xC0FFEE);
    ck_assert_uint_eq(get_u64(t, o, 3992), 0xC0FFEE);
    commit(t);
    verify_clean(s);
    close_store(s);
    free(orig);
    free(heap);
}
END_TEST


/* In a child: opens, makes n commits (each a new object under root
 * "late<i>" holding i), exits without closing: n redo records stay. */
static int late_i(objstore_txn *t, int i, void *arg)
{
    (void)arg;
    objstore_oid o = 0;
    uint64_t v = (uint64_t)i + 1;
    char name[16];
    snprintf(name, sizeof name, "late%d", i);
    int rc = objstore_new(t, 0, 0, 64, &o);
    if (!rc)
        rc = objstore_write(t, o, 0, &v, 8);
    return rc ? rc : objstore_root_set(t, name, o);
}

static void commits_and_vanish(int n)
{
    commits_in_child_then_vanish(n, late_i, NULL);
}

/* Deletes (save != NULL: saves first) or puts back the idx-th record of the
 * redo log. */
static void redo_take(size_t idx, uint8_t **key, size_t *klen, uint8_t **val, size_t *vlen)
{
    MDB_env *env = open_meta_env();
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    LMDB_OK(mdb_txn_begin(env, NULL, 0, &txn));
    LMDB_OK(mdb_dbi_open(txn, NULL, 0, &dbi));
    LMDB_OK(mdb_cursor_open(txn, dbi, &cur));
    MDB_val k, v;
    LMDB_OK(redo_at(cur, idx, &k, &v));
    *klen = k.mv_size;
    *vlen = v.mv_size;
    *key = malloc(k.mv_size);
    *val = malloc(v.mv_size);
    memcpy(*key, k.mv_data, k.mv_size);
    memcpy(*val, v.mv_data, v.mv_size);
    LMDB_OK(mdb_cursor_del(cur, 0));
    mdb_cursor_close(cur);
    LMDB_OK(mdb_txn_commit(txn));
    mdb_env_close(env);
}

static void redo_put_back(const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    MDB_env *env = open_meta_env();
    MDB_txn *txn;
    MDB_dbi dbi;
    LMDB_OK(mdb_txn_begin(env, NULL, 0, &txn));
    LMDB_OK(mdb_dbi_open(txn, NULL, 0, &dbi));
    MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
    LMDB_OK(mdb_put(txn, dbi, &k, &v, 0));
    LMDB_OK(mdb_txn_commit(txn));
    mdb_env_close(env);
}

enum { GAP_OLDEST, GAP_MIDDLE, GAP_NEWEST, N_GAP };

/* Replaying the others would write older bytes over newer ones. */
START_TEST(test_a_missing_redo_record_anywhere_in_the_log_refuses_the_open)
{
    make_store(g_store);
    commits_and_vanish(3);
    ck_assert_uint_eq(count_redo(), 3);
    size_t idx = _i == GAP_OLDEST ? 0 : _i == GAP_MIDDLE ? 1 : 2;
    uint8_t *key, *val;
    size_t klen, vlen;
    redo_take(idx, &key, &klen, &val, &vlen);
    char *heap = heap_file();
    const char *paths[] = { heap, NULL };
    expect_refused(OBJSTORE_EREDO, "missing", paths);
    redo_put_back(key, klen, val, vlen);
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = rbegin(s);
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "late%d", i);
        ck_assert_uint_eq(get_u64(t, root_get(t, name), 0), (uint64_t)i + 1);
    }
    commit(t);
    verify_clean(s);
    close_store(s);
    free(key);
    free(val);
    free(heap);
}
END_TEST

/* A record whose checksum is right but whose range lies past any heap. */
START_TEST(test_a_redo_range_past_the_reserved_range_is_a_redo_error)
{
    make_store(g_store);
    commit_and_vanish(0xC0FFEE);
    size_t len;
    uint8_t *orig = edit_first_redo(REDO_PEEK, NULL, 0, &len);
    ck_assert_uint_ge(len, 96);
    uint8_t *rec = malloc(len);
    memcpy(rec, orig, len);
    uint64_t far = UINT64_C(1) << 45;   /* 32 TiB: past the reserved range */
    memcpy(rec + 80, &far, 8);          /* the first range's offset */
    uint64_t zero = 0;
    memcpy(rec + 72, &zero, 8);
    uint64_t sum = XXH3_64bits_withSeed(rec + 80, len - 80, XXH3_64bits(rec, 80));
    memcpy(rec + 72, &sum, 8);
    size_t dlen;
    free(edit_first_redo(REDO_RESTORE, rec, len, &dlen));
    char *heap = heap_file();
    const char *paths[] = { heap, NULL };
    expect_refused(OBJSTORE_EREDO, "outside the heap", paths);
    free(edit_first_redo(REDO_RESTORE, orig, len, &dlen));
    check_content(g_store);
    free(rec);
    free(orig);
    free(heap);
}
END_TEST

/* Every key of meta/'s main database that begins with byte 0xFE is the
 * log's (FORMAT.md 2): one of another size is a damaged record, never
 * skipped as something else's. */
static const struct {
    uint8_t key[14];
    size_t len;
} k_bad_redo_keys[] = {
    { { 0xFE }, 1 },                                      /* before every record */
    { { 0xFE, 0, 0, 0, 1 }, 5 },                          /* after them */
    { { 0xFE, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 9 }, 14 },   /* among them */
};

START_TEST(test_a_key_of_the_wrong_size_in_the_logs_range_refuses_the_open)
{
    make_store(g_store);
    commit_and_vanish(0xC0FFEE);
    save_meta();
    uint8_t val[96] = { 0 };
    redo_put_back(k_bad_redo_keys[_i].key, k_bad_redo_keys[_i].len, val, sizeof val);
    char *heap = heap_file(), *data = meta_data();
    const char *paths[] = { heap, data, NULL };
    char want[40];
    snprintf(want, sizeof want, "redo key of %zu bytes", k_bad_redo_keys[_i].len);
    expect_refused(OBJSTORE_EREDO, want, paths);
    restore_meta();
    check_content(g_store);
    free(heap);
    free(data);
}
END_TEST

/* Writes `to` over the count of the object at oid in the closed store's heap
 * file, which must hold `from` (FORMAT 1.3: the count is rc_bits' low 48
 * bits). */
static void damage_count(objstore_oid oid, uint64_t from, uint64_t to)
{
    char *heap = heap_file();
    int fd = open(heap, O_RDWR | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    uint64_t rc;
    ck_assert_int_eq(pread(fd, &rc, 8, (off_t)oid), 8);
    ck_assert_uint_eq(rc & HEAP_RC_MASK, from);
    rc = (rc & ~HEAP_RC_MASK) | to;
    ck_assert_int_eq(pwrite(fd, &rc, 8, (off_t)oid), 8);
    ck_assert_int_eq(fsync(fd), 0);
    close(fd);
    free(heap);
}

/* A count lower than the references to an object (here 1 for two slots):
 * when a commit frees the holder, the second slot must not find the object
 * as if it were still there.  The commit fails with ECORRUPT, its message
 * naming the count, rolls back, and the store is as it was.  Both ways a
 * child goes are met: a leaf is freed at once with the first slot, so the
 * second finds it gone; a child with slots of its own is queued twice, and
 * its second turn comes after its batch was freed (budget 3: the holder, the
 * grandchild and the child). */
static void count_below_references(bool leaf, uint64_t budget, const char *want)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid p = new_obj(t, 0, 2, 0), c = new_obj(t, 0, leaf ? 0 : 1, 8);
    set_ref(t, p, 0, c);
    set_ref(t, p, 1, c);
    if (!leaf)
        set_ref(t, c, 0, new_obj(t, 0, 0, 8));
    root_set(t, "p", p);
    commit(t);
    close_store(s);

    damage_count(c, 2, 1);

    objstore_options o = { .free_budget = budget };
    s = open_store(g_store, &o);
    t = wbegin(s);
    OK(objstore_root_del(t, "p"));
    EXPECT(OBJSTORE_ECORRUPT, objstore_commit(t));
    ck_assert_msg(strstr(objstore_errmsg(), want), "message: %s", objstore_errmsg());
    t = rbegin(s);
    objstore_oid back;
    OK(objstore_root_get(t, "p", &back));   /* rolled back: all of it is there */
    ck_assert_uint_eq(back, p);
    ck_assert_uint_eq(get_ref(t, p, 1), c);
    commit(t);
    close_store(s);
}

START_TEST(test_a_count_below_its_references_is_ecorrupt_when_the_holder_goes)
{
    count_below_references(true, 2, "a count below the references to it");
    ts_rmtree(g_store);
    count_below_references(false, 3, "more often than its count");
}
END_TEST

/* The same damage reached through two parents: each holds one of the two
 * references the count should have counted.  With a pin held elsewhere the
 * drain takes its slower path (each pin asked about), and must say the same. */
static void count_below_through_two_parents(bool pin_elsewhere)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    root_set(t, "other", new_obj(t, 0, 0, 8));
    objstore_oid p = new_obj(t, 0, 2, 0), q1 = new_obj(t, 0, 1, 0), q2 = new_obj(t, 0, 1, 0);
    objstore_oid c = new_obj(t, 0, 0, 8);
    set_ref(t, p, 0, q1);
    set_ref(t, p, 1, q2);
    set_ref(t, q1, 0, c);
    set_ref(t, q2, 0, c);
    root_set(t, "p", p);
    commit(t);
    close_store(s);

    damage_count(c, 2, 1);

    s = open_store(g_store, NULL);
    if (pin_elsewhere) {   /* held past its transaction, until unpinned */
        t = rbegin(s);
        OK(objstore_pin(t, root_get(t, "other")));
        commit(t);
    }
    objstore_stats before = get_stats(s);
    t = wbegin(s);
    OK(objstore_root_del(t, "p"));
    EXPECT(OBJSTORE_ECORRUPT, objstore_commit(t));
    ck_assert_msg(strstr(objstore_errmsg(), "a count below the references to it"),
                  "message: %s", objstore_errmsg());
    objstore_stats after = get_stats(s);
    ck_assert_uint_eq(after.live_objects, before.live_objects);   /* rolled back */
    ck_assert_uint_eq(after.objects_freed, before.objects_freed);
    t = rbegin(s);
    ck_assert_uint_eq(root_get(t, "p"), p);
    ck_assert_uint_eq(get_ref(t, q1, 0), c);
    ck_assert_uint_eq(get_ref(t, q2, 0), c);
    if (pin_elsewhere)
        OK(objstore_unpin(t, root_get(t, "other")));
    commit(t);
    close_store(s);
}

START_TEST(test_a_count_below_its_references_through_two_parents_is_ecorrupt)
{
    count_below_through_two_parents(false);
    ts_rmtree(g_store);
    count_below_through_two_parents(true);
}
END_TEST

/* A root entry LMDB holds that names no object can still be deleted. */
START_TEST(test_a_damaged_root_entry_can_be_deleted)
{
    make_store(g_store);
    MDB_env *env = open_meta_env();
    MDB_txn *txn;
    MDB_dbi dbi;
    LMDB_OK(mdb_txn_begin(env, NULL, 0, &txn));
    LMDB_OK(mdb_dbi_open(txn, "roots", 0, &dbi));
    uint64_t bogus = 12345;   /* not an object's start */
    MDB_val k1 = { 3, "bad" }, v1 = { 8, &bogus }, k2 = { 5, "short" }, v2 = { 3, "abc" };
    LMDB_OK(mdb_put(txn, dbi, &k1, &v1, 0));
    LMDB_OK(mdb_put(txn, dbi, &k2, &v2, 0));
    LMDB_OK(mdb_txn_commit(txn));
    mdb_env_close(env);

    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid o;
    EXPECT(OBJSTORE_ECORRUPT, objstore_root_get(t, "bad", &o));
    OK(objstore_root_del(t, "bad"));
    OK(objstore_root_del(t, "short"));
    EXPECT(OBJSTORE_ENOTFOUND, objstore_root_get(t, "bad", &o));
    commit(t);
    verify_clean(s);
    close_store(s);
    check_content(g_store);
}
END_TEST

/* ------------------------------------------------------------------ */

static Suite *store_damage_suite(void)
{
    Suite *s = suite_create("store_damage");
    double t = ts_under_sanitizer() ? 300 : 60;

    TCase *tc = ts_tcase(s, "heap", t);
    tcase_add_loop_test(tc, test_a_truncated_heap_is_refused, 0, N_TRUNC);
    tcase_add_test(tc, test_a_heap_with_a_bad_magic_is_refused);
    tcase_add_loop_test(tc, test_a_flipped_header_byte_fails_the_checksum, 0,
                        (int)(sizeof k_flip_at / sizeof k_flip_at[0]));
    tcase_add_test(tc, test_a_consistent_header_of_another_version_geometry_or_store_is_refused);
    tcase_add_test(tc, test_damaged_arena_metadata_is_refused_as_corrupt);
    tcase_add_test(tc, test_a_heap_from_another_store_is_refused_as_a_mismatch);
    tcase_add_test(tc, test_a_missing_heap_file_is_enoent);

    tc = ts_tcase(s, "meta", t);
    tcase_add_test(tc, test_opening_a_directory_that_does_not_exist_is_enoent_and_creates_nothing);
    tcase_add_test(tc, test_opening_an_empty_directory_is_emeta_and_creates_nothing);
    tcase_add_test(tc, test_a_missing_meta_directory_is_refused);
    tcase_add_loop_test(tc, test_a_foreign_meta_environment_is_refused, 0, N_FOREIGN);
    tcase_add_loop_test(tc, test_a_truncated_meta_data_file_is_refused_before_lmdb_reads_it,
                        0, N_META_CUTS);
    tcase_add_test(tc, test_a_store_of_an_older_format_is_refused_as_eversion);
    tcase_add_test(tc, test_a_restored_older_heap_file_is_refused_as_a_mismatch);
    tcase_add_test(tc, test_a_restored_older_meta_is_refused_as_a_mismatch);
    tcase_add_test(tc, test_a_damaged_root_entry_can_be_deleted);
    tcase_add_test(tc, test_a_count_below_its_references_is_ecorrupt_when_the_holder_goes);
    tcase_add_test(tc, test_a_count_below_its_references_through_two_parents_is_ecorrupt);

    tc = ts_tcase(s, "redo", t);
    tcase_add_test(tc, test_a_pending_redo_record_is_replayed_at_open);
    tcase_add_loop_test(tc, test_a_damaged_redo_record_refuses_the_open_and_spares_the_heap,
                        0, N_REDO);
    tcase_add_loop_test(tc, test_a_missing_redo_record_anywhere_in_the_log_refuses_the_open,
                        0, N_GAP);
    tcase_add_test(tc, test_a_redo_range_past_the_reserved_range_is_a_redo_error);
    tcase_add_loop_test(tc, test_a_key_of_the_wrong_size_in_the_logs_range_refuses_the_open, 0,
                        (int)(sizeof k_bad_redo_keys / sizeof k_bad_redo_keys[0]));
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(store_damage_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
