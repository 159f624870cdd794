/*
 * test_fsck.c -- the Check suite of objstore_check and objstore-fsck: every
 * kind of damage made precisely (bytes at the offsets docs/FORMAT.md gives),
 * the promise that a check changes no byte, the tool's command line and exit
 * codes, interruption and crashes during a repair, and randomized damage.
 *
 * For each damage: the check exits 4 naming the problem, -y exits 1, a
 * second check exits 0, and a digest of the content that the damage did not
 * touch is unchanged.  The store's layout relied on: heap.1 (offsets are
 * oids), meta/ LMDB with databases roots, zct, candidates, redo; lock.
 *
 * The randomized test damages 1,000 stores (OBJSTORE_FSCK_FUZZ=N for more,
 * e.g. 10000; OBJSTORE_FSCK_FUZZ_VERBOSE=1 lists what each repair left).
 */
#include "test_store.h"

#include <dirent.h>
#include <ftw.h>
#include <lmdb.h>
#include <signal.h>
#include <xxhash.h>

#include "heap_format.h"

/* ------------------------------------------------------------------ */
/* the store every test starts from                                     */

typedef struct fixture {
    objstore_oid keep;        /* root "keep": a chain of KEEP_LEN nodes */
    objstore_oid chain[8];
    objstore_oid tree;        /* root "tree": a node with 3 leaves */
    objstore_oid leaf[3];
    objstore_oid big;         /* a run (3000-byte payload) under tree's slot 3 */
    objstore_oid cyc[2];      /* an unreachable cycle */
} fixture;

#define KEEP_LEN 8

static void make_store(const char *dir, fixture *f)
{
    objstore_options o = {.initial_size = MiB, .gc_threshold = UINT64_MAX};
    create_store(dir, &o);
    objstore *s = open_store(dir, &o);
    objstore_txn *t = wbegin(s);
    uint32_t node, leaf;
    OK(objstore_type_register(t, "node", &node));
    OK(objstore_type_register(t, "leaf", &leaf));
    for (int i = 0; i < KEEP_LEN; i++) {
        f->chain[i] = new_obj(t, node, 1, 24);
        OK(objstore_write(t, f->chain[i], 0, &i, sizeof i));
        if (i)
            set_ref(t, f->chain[i - 1], 0, f->chain[i]);
    }
    f->keep = f->chain[0];
    root_set(t, "keep", f->keep);
    f->tree = new_obj(t, node, 4, 8);
    for (int i = 0; i < 3; i++) {
        f->leaf[i] = new_obj(t, leaf, 0, 40);
        OK(objstore_write(t, f->leaf[i], 0, "leafdata", 8));
        set_ref(t, f->tree, (uint32_t)i, f->leaf[i]);
    }
    f->big = new_obj(t, leaf, 0, 3000);
    void *p;
    uint64_t size;
    OK(objstore_edit(t, f->big, &p, &size));
    pattern_into(p, size, 9);
    set_ref(t, f->tree, 3, f->big);
    root_set(t, "tree", f->tree);
    f->cyc[0] = new_obj(t, node, 1, 8);
    f->cyc[1] = new_obj(t, node, 1, 8);
    set_ref(t, f->cyc[0], 0, f->cyc[1]);
    set_ref(t, f->cyc[1], 0, f->cyc[0]);
    root_set(t, "cycle", f->cyc[0]);
    commit(t);
    t = wbegin(s);
    OK(objstore_root_del(t, "cycle"));   /* garbage the collector has not seen */
    commit(t);
    close_store(s);
}

/* ------------------------------------------------------------------ */
/* files: bytes, checksums, digests                                     */

static char *heap_path(void) { return ts_path(g_store, "heap.1"); }

static void poke(const char *path, uint64_t off, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY);
    MUST(fd >= 0, "open %s: %s", path, strerror(errno));
    MUST(pwrite(fd, buf, len, (off_t)off) == (ssize_t)len, "pwrite %s", path);
    close(fd);
}

static void peek(const char *path, uint64_t off, void *buf, size_t len)
{
    int fd = open(path, O_RDONLY);
    MUST(fd >= 0, "open %s: %s", path, strerror(errno));
    MUST(pread(fd, buf, len, (off_t)off) == (ssize_t)len, "pread %s", path);
    close(fd);
}

static void heap_poke64(uint64_t off, uint64_t v)
{
    char *h = heap_path();
    poke(h, off, &v, 8);
    free(h);
}

static uint64_t heap_peek64(uint64_t off)
{
    char *h = heap_path();
    uint64_t v;
    peek(h, off, &v, 8);
    free(h);
    return v;
}

static XXH3_state_t *g_sum;
static size_t g_sum_base;

static int sum_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)ftw;
    XXH3_64bits_update(g_sum, path + g_sum_base, strlen(path + g_sum_base) + 1);
    if (flag != FTW_F)
        return 0;
    int fd = open(path, O_RDONLY);
    MUST(fd >= 0, "open %s", path);
    static uint8_t buf[1 << 16];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        XXH3_64bits_update(g_sum, buf, (size_t)n);
    close(fd);
    XXH3_64bits_update(g_sum, &sb->st_size, sizeof sb->st_size);
    return 0;
}

/* A checksum of every file's name and bytes under dir. */
static uint64_t files_sum(const char *dir)
{
    g_sum = XXH3_createState();
    XXH3_64bits_reset(g_sum);
    g_sum_base = strlen(dir);
    MUST(nftw(dir, sum_one, 16, FTW_PHYS) == 0, "nftw %s", dir);
    uint64_t h = XXH3_64bits_digest(g_sum);
    XXH3_freeState(g_sum);
    return h;
}

/* Digest of what root name reaches: type, payload, slots as visit numbers. */
static uint64_t content_digest(const char *name)
{
    objstore *s = open_store(g_store, &(objstore_options){.flags = OBJSTORE_RDONLY});
    objstore_txn *t = rbegin(s);
    XXH3_state_t *x = XXH3_createState();
    XXH3_64bits_reset(x);
    objstore_oid stack[256], seen[256];
    size_t sp = 0, nseen = 0;
    stack[sp++] = root_get(t, name);
    seen[nseen++] = stack[0];
    while (sp) {
        objstore_oid o = stack[--sp];
        objstore_objinfo info;
        OK(objstore_info(t, o, &info));
        const void *p;
        uint64_t size;
        OK(objstore_get(t, o, &p, &size));
        XXH3_64bits_update(x, &info.type, 4);
        XXH3_64bits_update(x, p, size);
        for (uint32_t i = 0; i < info.nrefs; i++) {
            objstore_oid c;
            OK(objstore_get_ref(t, o, i, &c));
            uint64_t visit = 0;
            for (size_t k = 0; c && k < nseen; k++)
                if (seen[k] == c)
                    visit = k + 1;
            if (c && !visit) {
                MUST(nseen < 256 && sp < 256, "digest: too many objects");
                seen[nseen++] = c;
                stack[sp++] = c;
                visit = nseen;
            }
            XXH3_64bits_update(x, &visit, 8);
        }
    }
    uint64_t h = XXH3_64bits_digest(x);
    XXH3_freeState(x);
    objstore_commit(t);
    close_store(s);
    return h;
}

/* ------------------------------------------------------------------ */
/* the tool                                                             */

static char g_out[1 << 16];

static char *tool_path(void)
{
    static char path[4200];
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    MUST(n > 0, "readlink /proc/self/exe");
    exe[n] = 0;
    *strrchr(exe, '/') = 0;   /* build/X/tests */
    *strrchr(exe, '/') = 0;   /* build/X */
    snprintf(path, sizeof path, "%s/tools/objstore-fsck", exe);
    return path;
}

/* Runs objstore-fsck with args (NULL-terminated) and the store last; its
 * stdout and stderr go to g_out.  Returns the exit code. */
static int fsck_v(const char *const *args)
{
    int p[2];
    MUST(pipe(p) == 0, "pipe");
    fflush(NULL);
    pid_t pid = fork();
    MUST(pid >= 0, "fork");
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        const char *argv[32] = {"objstore-fsck"};
        int n = 1;
        for (; args[n - 1]; n++)
            argv[n] = args[n - 1];
        argv[n] = NULL;
        alarm(60);
        execv(tool_path(), (char *const *)argv);
        _exit(126);
    }
    close(p[1]);
    size_t len = 0;
    ssize_t r;
    while ((r = read(p[0], g_out + len, sizeof g_out - 1 - len)) > 0)
        len += (size_t)r;
    g_out[len] = 0;
    close(p[0]);
    int st;
    MUST(waitpid(pid, &st, 0) == pid, "waitpid");
    MUST(WIFEXITED(st), "objstore-fsck died by signal %d; output:\n%s", WTERMSIG(st), g_out);
    return WEXITSTATUS(st);
}

#define FSCK(...) fsck_v((const char *const[]){__VA_ARGS__, NULL})

static void expect_fsck(int code, const char *needle, const char *const *args)
{
    int got = fsck_v(args);
    MUST(got == code, "objstore-fsck exited %d, expected %d; output:\n%s", got, code, g_out);
    if (needle)
        MUST(strstr(g_out, needle) != NULL, "objstore-fsck output lacks '%s':\n%s", needle,
             g_out);
}

#define EXPECT_FSCK(code, needle, ...) \
    expect_fsck(code, needle, (const char *const[]){__VA_ARGS__, NULL})

/* The cycle of damage and repair every damage kind goes through. */
static void check_fix_clean(const char *needle, const char *const *repair_args)
{
    EXPECT_FSCK(4, needle, g_store);
    EXPECT_FSCK(4, needle, "-n", g_store);
    int got = fsck_v(repair_args);
    MUST(got == 1, "repair exited %d, expected 1:\n%s", got, g_out);
    EXPECT_FSCK(0, "0 problems", g_store);
}

#define REPAIR(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ------------------------------------------------------------------ */
/* a clean store                                                        */

START_TEST(test_a_clean_store_passes_every_pass_and_prints_the_summary)
{
    fixture f;
    make_store(g_store, &f);
    EXPECT_FSCK(0, "Pass 6:", g_store);
    MUST(strstr(g_out, "Pass 1:") && strstr(g_out, "Pass 2:") && strstr(g_out, "Pass 3:"),
         "the passes are printed:\n%s", g_out);
    /* 8 chain + tree + 3 leaves + big + 2 cycle = 15 objects. */
    MUST(strstr(g_out, ": 15 objects, 2 roots, 2 types, 1.0 MiB heap (") != NULL,
         "summary:\n%s", g_out);
    MUST(strstr(g_out, "1 unreachable group (2 objects, 64 bytes), 0 problems") != NULL,
         "summary:\n%s", g_out);
}
END_TEST

struct seen {
    int groups;
    objstore_group g;
    int findings[OBJSTORE_C_NKINDS];
    int passes;
    int progress;
    int stop_at;
};

static void cb_pass(void *arg, int pass, const char *title)
{
    struct seen *s = arg;
    (void)title;
    ck_assert_int_eq(pass, s->passes + 1);
    s->passes = pass;
}

static void cb_finding(void *arg, const objstore_finding *f)
{
    struct seen *s = arg;
    ck_assert(f->kind >= 0 && f->kind < OBJSTORE_C_NKINDS);
    ck_assert(f->text && f->text[0]);
    s->findings[f->kind]++;
}

static void cb_group(void *arg, const objstore_group *g)
{
    struct seen *s = arg;
    s->groups++;
    s->g = *g;
}

static int cb_progress(void *arg, int pass, uint64_t done, uint64_t total)
{
    struct seen *s = arg;
    (void)pass;
    (void)done;
    (void)total;
    return ++s->progress == s->stop_at;
}

START_TEST(test_the_check_call_reports_passes_groups_and_figures_through_callbacks)
{
    fixture f;
    make_store(g_store, &f);
    struct seen seen = {0};
    objstore_check_opts o = {.arg = &seen, .on_pass = cb_pass, .on_finding = cb_finding,
                             .on_group = cb_group, .on_progress = cb_progress};
    objstore_check_report r;
    OK(objstore_check(g_store, &o, &r));
    ck_assert_int_eq(seen.passes, 6);
    ck_assert_int_eq(r.passes_done, 6);
    ck_assert_uint_eq(r.problems, 0);
    ck_assert_uint_eq(r.objects, 15);
    ck_assert_uint_eq(r.reachable, 13);
    ck_assert_uint_eq(r.roots, 2);
    ck_assert_uint_eq(r.types, 2);
    ck_assert_uint_eq(r.groups, 1);
    ck_assert_int_eq(seen.groups, 1);
    ck_assert_uint_eq(seen.g.objects, 2);
    ck_assert_uint_eq(seen.g.bytes, 64);
    ck_assert(seen.g.oid == f.cyc[0] || seen.g.oid == f.cyc[1]);
    ck_assert_uint_eq(seen.g.ntypes, 1);
    ck_assert_uint_eq(seen.g.types[0], 1);
    ck_assert_int_gt(seen.progress, 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* check mode writes nothing                                            */

/* In a child: opens, commits, exits without closing: the redo record stays
 * pending in meta/. */
static int pending_write(objstore_txn *t, int i, void *arg)
{
    (void)i;
    objstore_oid o = 0, leaf = *(const objstore_oid *)arg;
    int rc = objstore_new(t, 0, 0, 4000, &o);
    if (!rc)
        rc = objstore_write(t, leaf, 8, "pending!", 8);
    return rc ? rc : objstore_root_set(t, "late", o);
}

static void commit_and_vanish(objstore_oid leaf)
{
    commits_in_child_then_vanish(1, pending_write, &leaf);
}

START_TEST(test_a_check_changes_no_byte_of_any_file_even_with_redo_pending)
{
    fixture f;
    make_store(g_store, &f);
    commit_and_vanish(f.leaf[0]);
    uint64_t before = files_sum(g_store);
    EXPECT_FSCK(0, "1 redo record pending", g_store);
    EXPECT_FSCK(0, NULL, "-v", "--json", g_store);
    ck_assert_uint_eq(files_sum(g_store), before);
    /* A damaged store too: the check only reads it. */
    heap_poke64(f.leaf[1], 7);
    before = files_sum(g_store);
    EXPECT_FSCK(4, "wrong-count", g_store);
    ck_assert_uint_eq(files_sum(g_store), before);
}
END_TEST

START_TEST(test_pending_redo_is_seen_by_the_check_as_the_store_will_be)
{
    fixture f;
    make_store(g_store, &f);
    commit_and_vanish(f.leaf[0]);
    objstore_check_report r;
    OK(objstore_check(g_store, NULL, &r));
    ck_assert_uint_eq(r.problems, 0);
    ck_assert_uint_eq(r.roots, 3);
    ck_assert_uint_eq(r.objects, 16);
    ck_assert_uint_ge(r.redo_records, 1);
}
END_TEST

/* ------------------------------------------------------------------ */
/* damage, one kind at a time                                           */

START_TEST(test_a_wrong_count_is_found_and_rewritten_to_the_in_degree)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep"), tree = content_digest("tree");
    uint64_t rc = heap_peek64(f.chain[3]);
    heap_poke64(f.chain[3], rc + 5);   /* FORMAT 1.3: rc_bits at offset 0 */
    EXPECT_FSCK(4, "reference points at it", g_store);
    MUST(strstr(g_out, "wrong-count"), "kind named:\n%s", g_out);
    check_fix_clean("wrong-count", REPAIR("-y", g_store));
    ck_assert_uint_eq(heap_peek64(f.chain[3]) & HEAP_RC_MASK, 1);
    ck_assert_uint_eq(content_digest("keep"), keep);
    ck_assert_uint_eq(content_digest("tree"), tree);
}
END_TEST

START_TEST(test_preen_fixes_a_count)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep");
    heap_poke64(f.chain[5], 3);
    check_fix_clean("wrong-count", REPAIR("-p", g_store));
    ck_assert_uint_eq(content_digest("keep"), keep);
}
END_TEST

START_TEST(test_a_dangling_slot_is_set_to_null_and_named)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep");
    /* tree's slot 1 (FORMAT 1.3: offset 16 + 8 * slot) points into a block. */
    heap_poke64(f.tree + 16 + 8, f.leaf[1] + 16);
    EXPECT_FSCK(4, "dangling-slot", g_store);
    char want[128];
    snprintf(want, sizeof want, "object %llu slot 1 points at %llu", U(f.tree),
             U(f.leaf[1] + 16));
    MUST(strstr(g_out, want), "names object, slot, value:\n%s", g_out);
    /* Preen does not touch slots. */
    EXPECT_FSCK(4, "dangling-slot", "-p", g_store);
    EXPECT_FSCK(1, "set to null", "-y", "-v", g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    ck_assert_uint_eq(heap_peek64(f.tree + 16 + 8), 0);
    ck_assert_uint_eq(content_digest("keep"), keep);
}
END_TEST

/* meta/ opened directly (the store closed), for a test to damage: a write
 * transaction on database db.  meta_edit_end commits it and closes. */
static MDB_env *meta_edit(const char *db, MDB_txn **txn, MDB_dbi *dbi)
{
    char *meta = ts_path(g_store, "meta");
    MDB_env *env;
    ck_assert_int_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    mdb_env_set_mapsize(env, UINT64_C(1) << 30);
    ck_assert_int_eq(mdb_env_open(env, meta, 0, 0644), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, txn), 0);
    ck_assert_int_eq(mdb_dbi_open(*txn, db, 0, dbi), 0);
    free(meta);
    return env;
}

static void meta_edit_end(MDB_env *env, MDB_txn *txn)
{
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* Puts key -> val into meta/'s database db directly (the store closed). */
static void lmdb_put(const char *db, const void *key, size_t klen, const void *val,
                     size_t vlen)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_env *env = meta_edit(db, &txn, &dbi);
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    meta_edit_end(env, txn);
}

START_TEST(test_a_root_that_names_no_live_object_is_removed)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep");
    uint64_t bad = f.leaf[0] + 32;
    lmdb_put("roots", "tree", 4, &bad, 8);   /* FORMAT 2: roots name -> u64 oid */
    EXPECT_FSCK(4, "root 'tree' names", g_store);
    EXPECT_FSCK(1, "root 'tree' removed", "-y", "-v", g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    ck_assert_uint_eq(content_digest("keep"), keep);
}
END_TEST

START_TEST(test_stale_zero_count_and_candidate_entries_are_dropped_by_preen)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep");
    uint8_t k1[8], k2[8];
    for (int i = 0; i < 8; i++) {
        k1[i] = (uint8_t)(f.chain[2] >> (56 - 8 * i));   /* big-endian oid */
        k2[i] = (uint8_t)((f.chain[2] + 16) >> (56 - 8 * i));
    }
    lmdb_put("zct", k1, 8, "", 0);
    lmdb_put("candidates", k2, 8, "", 0);
    EXPECT_FSCK(4, "stale-zct", g_store);
    MUST(strstr(g_out, "stale-candidate"), "both named:\n%s", g_out);
    check_fix_clean("stale-zct", REPAIR("-p", g_store));
    ck_assert_uint_eq(content_digest("keep"), keep);
}
END_TEST

/* The weak index (FORMAT: `weak`, key target u64 BE + weak reference u64
 * BE) against the weak references in the heap. */
START_TEST(test_a_weak_index_that_disagrees_with_the_weak_references_is_rebuilt)
{
    fixture f;
    make_store(g_store, &f);
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid holder = new_obj(t, 0, 2, 0), a, b;
    OK(objstore_weakref_new(t, f.leaf[0], &a));
    OK(objstore_weakref_new(t, f.chain[1], &b));
    set_ref(t, holder, 0, a);
    set_ref(t, holder, 1, b);
    root_set(t, "weak", holder);
    commit(t);
    close_store(s);
    EXPECT_FSCK(0, "0 problems", g_store);
    uint64_t keep = content_digest("keep");

    /* An entry whose weak reference is no weak reference, and a weak
     * reference whose payload (FORMAT: the target oid, at offset 16) names
     * no live object, its own entry now naming another target. */
    uint8_t key[16];
    for (int i = 0; i < 8; i++) {
        key[i] = (uint8_t)(f.tree >> (56 - 8 * i));
        key[8 + i] = (uint8_t)(f.leaf[1] >> (56 - 8 * i));
    }
    lmdb_put("weak", key, 16, "", 0);
    heap_poke64(b + 16, f.leaf[0] + 32);
    EXPECT_FSCK(4, "bad-weak", g_store);
    MUST(strstr(g_out, "that object is no weak reference"), "the stray entry:\n%s", g_out);
    MUST(strstr(g_out, "no live object (it would read"), "the bad payload:\n%s", g_out);
    EXPECT_FSCK(1, "weak index rebuilt from the 1 live", "-y", "-v", g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    ck_assert_uint_eq(content_digest("keep"), keep);

    /* The repaired store: a still reads as its target, b as none, and
     * freeing a's target clears a (the index holds it again). */
    s = open_store(g_store, NULL);
    t = wbegin(s);
    objstore_oid got;
    OK(objstore_weakref_get(t, a, &got));
    ck_assert_uint_eq(got, f.leaf[0]);
    OK(objstore_weakref_get(t, b, &got));
    ck_assert_uint_eq(got, 0);
    set_ref(t, f.tree, 0, 0);   /* tree's slot 0 held leaf 0, its only reference */
    commit(t);
    t = rbegin(s);
    OK(objstore_weakref_get(t, a, &got));
    ck_assert_uint_eq(got, 0);
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

START_TEST(test_an_object_with_a_header_beyond_use_is_removed_and_references_to_it_nulled)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep");
    /* FORMAT 1.3: nrefs, u32 at offset 12. */
    uint32_t huge = 0x7FFFFFFF;
    char *h = heap_path();
    poke(h, f.leaf[2] + 12, &huge, 4);
    free(h);
    EXPECT_FSCK(4, "bad-object", g_store);
    EXPECT_FSCK(1, "removed", "-y", "-v", g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    ck_assert_uint_eq(heap_peek64(f.tree + 16 + 16), 0);
    ck_assert_uint_eq(content_digest("keep"), keep);
}
END_TEST

START_TEST(test_an_unregistered_type_is_named_and_the_object_kept_untyped)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep");
    uint32_t t = 999;
    char *h = heap_path();
    poke(h, f.leaf[0] + 8, &t, 4);   /* FORMAT 1.3: type, u32 at offset 8 */
    free(h);
    EXPECT_FSCK(4, "type id 999 is not registered", g_store);
    EXPECT_FSCK(4, "bad-type", "-p", g_store);   /* not preen's to decide */
    EXPECT_FSCK(1, "type id 999 (not registered) set to 0", "-y", "-v", g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    ck_assert_uint_eq(heap_peek64(f.leaf[0] + 8) & 0xFFFFFFFF, 0);
    ck_assert_uint_eq(heap_peek64(f.leaf[0] + 16), heap_peek64(f.leaf[1] + 16));   /* payload */
    ck_assert_uint_eq(content_digest("keep"), keep);
}
END_TEST

START_TEST(test_an_object_cut_off_by_damage_is_a_group_and_lost_found_keeps_it)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep");
    heap_poke64(f.tree + 16 + 24, 0);   /* tree's slot 3 no longer names big */
    EXPECT_FSCK(4, "wrong-count", g_store);
    EXPECT_FSCK(1, "lost+found/", "-y", "--lost-found", "-v", g_store);
    EXPECT_FSCK(0, "0 unreachable groups", g_store);
    char name[64];
    snprintf(name, sizeof name, "lost+found/%llu", U(f.big));
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = rbegin(s);
    ck_assert_uint_eq(root_get(t, name), f.big);
    const void *p;
    uint64_t size;
    OK(objstore_get(t, f.big, &p, &size));
    ck_assert_uint_eq(size, 3000);
    uint8_t want[3000];
    pattern_into(want, sizeof want, 9);
    ck_assert_int_eq(memcmp(p, want, 3000), 0);
    objstore_commit(t);
    close_store(s);
    ck_assert_uint_eq(content_digest("keep"), keep);
}
END_TEST

START_TEST(test_without_lost_found_an_object_cut_off_is_kept_at_count_zero)
{
    fixture f;
    make_store(g_store, &f);
    heap_poke64(f.tree + 16 + 24, 0);
    check_fix_clean("wrong-count", REPAIR("-y", g_store));
    MUST(strstr(g_out, "2 unreachable groups (3 objects"), "big is kept:\n%s", g_out);
    /* Kept in the zero-count table: still there for a look before an open. */
    ck_assert_uint_eq(heap_peek64(f.big) & HEAP_RC_MASK, 0);
}
END_TEST

START_TEST(test_a_damaged_heap_header_is_rebuilt_from_meta_and_the_old_bytes_kept)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep"), tree = content_digest("tree");
    uint8_t old[128], b;
    char *h = heap_path();
    peek(h, 0, old, sizeof old);
    peek(h, 64, &b, 1);   /* FORMAT 1.1: narenas; the checksum no longer matches */
    b ^= 4;
    poke(h, 64, &b, 1);
    EXPECT_FSCK(4, "heap-header", g_store);
    MUST(strstr(g_out, "checksum mismatch"), "names the problem:\n%s", g_out);
    MUST(strstr(g_out, "Passes 2 to 6 did not run") || strstr(g_out, "Passes 3 to 6 did not run"),
         "says what did not run:\n%s", g_out);
    EXPECT_FSCK(1, "rebuilt from meta/", "-y", "-v", g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    uint8_t now[128];
    peek(h, 0, now, sizeof now);
    ck_assert_int_eq(memcmp(now, old, sizeof old), 0);   /* exactly the lost header */
    char *kept = ts_path(g_store, "old-header.heap.1");
    uint8_t saved[128];
    peek(kept, 0, saved, sizeof saved);
    ck_assert_int_eq(saved[64], old[64] ^ 4);
    free(kept);
    free(h);
    ck_assert_uint_eq(content_digest("keep"), keep);
    ck_assert_uint_eq(content_digest("tree"), tree);
}
END_TEST

START_TEST(test_a_truncated_heap_file_is_named_and_its_header_left_alone)
{
    fixture f;
    make_store(g_store, &f);
    char *h = heap_path();
    ck_assert_int_eq(truncate(h, 512 * 1024), 0);
    free(h);
    EXPECT_FSCK(4, "heap-header", g_store);
    EXPECT_FSCK(4, "heap-header", "-y", g_store);
    char *kept = ts_path(g_store, "old-header.heap.1");
    ck_assert_int_ne(access(kept, F_OK), 0);
    free(kept);
}
END_TEST

START_TEST(test_damaged_arena_metadata_is_rebuilt_from_what_the_objects_say)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep"), tree = content_digest("tree");
    /* FORMAT 1.2: the arena table at 4096; descriptors from +64, 16 bytes
     * each (kind at +0, nalloc at +2); pool 1 holds the first objects. */
    uint16_t nalloc, bad = 999;
    uint8_t kind, bogus = 9;
    char *h = heap_path();
    peek(h, 4096 + 64 + 16 + 2, &nalloc, 2);
    peek(h, 4096 + 64 + 16, &kind, 1);
    ck_assert_uint_eq(kind, 1);   /* small */
    poke(h, 4096 + 64 + 16 + 2, &bad, 2);
    EXPECT_FSCK(4, "heap-structure", g_store);
    MUST(strstr(g_out, "count 999 but bitmap holds"), "names it:\n%s", g_out);
    EXPECT_FSCK(4, "heap-structure", "-p", g_store);   /* not preen's */
    EXPECT_FSCK(1, "count 999 set to", "-y", "-v", g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    uint16_t now;
    peek(h, 4096 + 64 + 16 + 2, &now, 2);
    ck_assert_uint_eq(now, nalloc);
    /* An unknown kind and a bad table magic. */
    poke(h, 4096 + 64 + 16, &bogus, 1);
    uint32_t magic = 0x12345678;
    poke(h, 4096, &magic, 4);
    EXPECT_FSCK(4, "heap-structure", g_store);
    EXPECT_FSCK(1, "set to small", "-y", "-v", g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    peek(h, 4096 + 64 + 16, &kind, 1);
    ck_assert_uint_eq(kind, 1);
    free(h);
    ck_assert_uint_eq(content_digest("keep"), keep);
    ck_assert_uint_eq(content_digest("tree"), tree);
}
END_TEST

START_TEST(test_garbage_in_meta_data_mdb_is_a_finding_not_a_crash)
{
    fixture f;
    make_store(g_store, &f);
    char *data = ts_path(g_store, "meta/data.mdb");
    uint8_t junk[8192];
    pattern_into(junk, sizeof junk, 77);
    poke(data, 0, junk, sizeof junk);   /* both LMDB meta pages */
    free(data);
    EXPECT_FSCK(4, "meta/data.mdb is damaged", g_store);
    EXPECT_FSCK(4, "meta", "--json", g_store);
    MUST(strstr(g_out, "\"exit\": 4"), "json exit:\n%s", g_out);
}
END_TEST

START_TEST(test_a_stray_heap_generation_is_renamed_not_deleted)
{
    fixture f;
    make_store(g_store, &f);
    char *stray = ts_path(g_store, "heap.7");
    int fd = open(stray, O_CREAT | O_WRONLY, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "old", 3), 3);
    close(fd);
    EXPECT_FSCK(4, "heap.7 is a stray heap generation", g_store);
    check_fix_clean("stray-heap", REPAIR("-y", g_store));
    char *kept = ts_path(g_store, "stray-heap.7");
    struct stat sb;
    ck_assert_int_eq(stat(kept, &sb), 0);
    ck_assert_int_eq(sb.st_size, 3);
    free(kept);
    free(stray);
}
END_TEST

START_TEST(test_a_missing_lock_file_is_recreated)
{
    fixture f;
    make_store(g_store, &f);
    char *lock = ts_path(g_store, "lock");
    ck_assert_int_eq(unlink(lock), 0);
    check_fix_clean("lock-file", REPAIR("-y", g_store));
    ck_assert_int_eq(access(lock, F_OK), 0);
    free(lock);
}
END_TEST

/* Puts c on the oldest redo record, in meta/'s main database after the
 * named databases (FORMAT 2.1: key 0xFE, epoch u64 BE, seq u32 BE); returns
 * its epoch. */
static uint64_t first_redo(MDB_cursor *c, MDB_val *k, MDB_val *v)
{
    uint8_t prefix = 0xFE;
    *k = (MDB_val){1, &prefix};
    ck_assert_int_eq(mdb_cursor_get(c, k, v, MDB_SET_RANGE), 0);
    ck_assert_uint_eq(k->mv_size, 13);
    ck_assert_uint_eq(((uint8_t *)k->mv_data)[0], 0xFE);
    uint64_t epoch = 0;
    for (int i = 1; i < 9; i++)
        epoch = epoch << 8 | ((uint8_t *)k->mv_data)[i];
    return epoch;
}

/* Flips a byte of the idx-th pending redo record (FORMAT 2.1: data after the
 * 80-byte header and the ranges); returns its epoch. */
static uint64_t damage_redo(int idx)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *c;
    MDB_env *env = meta_edit(NULL, &txn, &dbi);
    ck_assert_int_eq(mdb_cursor_open(txn, dbi, &c), 0);
    MDB_val k, v;
    uint64_t epoch = first_redo(c, &k, &v);
    for (int i = 0; i < idx; i++) {
        ck_assert_int_eq(mdb_cursor_get(c, &k, &v, MDB_NEXT), 0);
        ck_assert_uint_eq(k.mv_size, 13);
        epoch = 0;
        for (int b = 1; b < 9; b++)
            epoch = epoch << 8 | ((uint8_t *)k.mv_data)[b];
    }
    uint8_t *copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    copy[v.mv_size - 1] ^= 0x10;
    MDB_val nv = {v.mv_size, copy};
    ck_assert_int_eq(mdb_cursor_put(c, &k, &nv, MDB_CURRENT), 0);
    mdb_cursor_close(c);
    meta_edit_end(env, txn);
    free(copy);
    return epoch;
}

START_TEST(test_a_damaged_redo_record_is_named_and_discarded_on_request)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep");
    commit_and_vanish(f.leaf[0]);
    uint64_t epoch = damage_redo(0);
    char want[64], arg[64];
    snprintf(want, sizeof want, "(epoch %llu)", U(epoch));
    EXPECT_FSCK(4, want, g_store);
    MUST(strstr(g_out, "checksum mismatch") && strstr(g_out, "ranges "), "epoch, ranges:\n%s",
         g_out);
    EXPECT_FSCK(4, "redo", "-y", g_store);   /* not without being asked */
    snprintf(arg, sizeof arg, "--discard-redo-from=%llu", U(epoch + 1));
    EXPECT_FSCK(4, "redo", "-y", arg, g_store);   /* must include the damaged one */
    snprintf(arg, sizeof arg, "--discard-redo-from=%llu", U(epoch));
    EXPECT_FSCK(1, "the last 1 commit is lost", "-y", arg, g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    objstore_close(open_store(g_store, NULL));
    ck_assert_uint_eq(content_digest("keep"), keep);
}
END_TEST


static void commit_writes_and_vanish(objstore_oid leaf, int n, int flags);

/* Whether leaf's payload holds text at offset, in the store as it opens. */
static bool payload_holds(objstore_oid leaf, uint64_t offset, const char *text)
{
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = rbegin(s);
    const void *p;
    uint64_t size;
    OK(objstore_get(t, leaf, &p, &size));
    bool holds = offset + strlen(text) <= size &&
                 memcmp((const uint8_t *)p + offset, text, strlen(text)) == 0;
    objstore_abort(t);
    objstore_close(s);
    return holds;
}

/* A key in the log's range (0xFE first) of the wrong size is a damaged
 * record: named with the epoch it sorts at, dropped on request with
 * everything after it.  One sorts before the pending records (epoch 1: all
 * go), one after them (only it goes). */
static const struct {
    uint8_t key[9];
    size_t len;
    uint64_t epoch;
    const char *says;
} k_bad_keys[] = {
    {{0xFE, 0x00}, 2, 1, "the last 2 commits are lost"},
    {{0xFE, 0, 0, 0, 0, 0, 0, 0x10, 0x00}, 9, 4096, "the last 0 commits are lost"},
};

START_TEST(test_a_redo_key_of_the_wrong_size_is_named_and_discarded_on_request)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep");
    commit_writes_and_vanish(f.leaf[0], 2, OBJSTORE_NO_JOURNAL);
    uint8_t val[96] = {0};
    lmdb_put(NULL, k_bad_keys[_i].key, k_bad_keys[_i].len, val, sizeof val);
    char want[64], arg[64];
    snprintf(want, sizeof want, "(epoch %llu)", U(k_bad_keys[_i].epoch));
    EXPECT_FSCK(4, want, g_store);
    MUST(strstr(g_out, "redo key of"), "names the key's size:\n%s", g_out);
    EXPECT_FSCK(4, "redo", "-y", g_store);   /* not without being asked */
    snprintf(arg, sizeof arg, "--discard-redo-from=%llu", U(k_bad_keys[_i].epoch));
    EXPECT_FSCK(1, k_bad_keys[_i].says, "-y", arg, g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    objstore_close(open_store(g_store, NULL));
    ck_assert_uint_eq(content_digest("keep"), keep);
    if (_i == 1)   /* nothing but the bad key went: both commits are there */
        ck_assert(payload_holds(f.leaf[0], 8, "pending!pending!"));
}
END_TEST

/* Three commits pending; the middle one's record damaged: discarding from
 * it keeps the first, and the log's head then names the first. */
START_TEST(test_discarding_from_the_middle_of_the_log_keeps_the_commits_before)
{
    fixture f;
    make_store(g_store, &f);
    commit_writes_and_vanish(f.leaf[0], 3, OBJSTORE_NO_JOURNAL);
    /* Damage the second record (the log holds one per commit here). */
    uint64_t second = damage_redo(1);
    char want[64], arg[64];
    snprintf(want, sizeof want, "(epoch %llu)", U(second));
    EXPECT_FSCK(4, want, g_store);
    snprintf(arg, sizeof arg, "--discard-redo-from=%llu", U(second));
    EXPECT_FSCK(1, "the last 2 commits are lost", "-y", arg, g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    /* The first commit's record was kept and the head names it: the store
     * opens (replaying it) and the first commit is there.  (The later two
     * reached the heap file before the records were dropped: what of them
     * is there is not asserted.) */
    ck_assert(payload_holds(f.leaf[0], 8, "pending!"));
}
END_TEST

/* A store of format 2 (its redo log in a named database "redo", its head
 * under "redo-head") is refused as another format by the check and by
 * every repair, --rebuild-meta included: nothing of it is changed. */
START_TEST(test_a_store_of_another_format_is_refused_and_never_repaired)
{
    fixture f;
    make_store(g_store, &f);
    MDB_txn *txn;
    MDB_dbi dbi, redo;
    MDB_env *env = meta_edit("meta", &txn, &dbi);
    uint64_t two = 2;
    MDB_val k = {6, "format"}, v = {8, &two};
    ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, "redo", MDB_CREATE, &redo), 0);
    meta_edit_end(env, txn);
    uint64_t before = files_sum(g_store);
    EXPECT_FSCK(8, "store format 2, this build reads 4", g_store);
    EXPECT_FSCK(8, "store format 2, this build reads 4", "-y", g_store);
    EXPECT_FSCK(8, "store format 2, this build reads 4", "-y", "--rebuild-meta", g_store);
    EXPECT_FSCK(8, "\"error\"", "--json", g_store);
    ck_assert_uint_eq(files_sum(g_store), before);
    objstore_check_report r;
    ck_assert_int_eq(objstore_check(g_store, NULL, &r), OBJSTORE_EVERSION);
    ck_assert_uint_eq(files_sum(g_store), before);
}
END_TEST

START_TEST(test_a_lost_meta_is_rebuilt_from_the_heap_and_the_old_one_kept)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep"), tree = content_digest("tree");
    if (_i == 0) {
        char *data = ts_path(g_store, "meta/data.mdb");
        uint8_t junk[8192];
        pattern_into(junk, sizeof junk, 5);
        poke(data, 0, junk, sizeof junk);
        free(data);
    } else {
        char *meta = ts_path(g_store, "meta");
        ck_assert_int_eq(ts_rmtree(meta), 0);
        free(meta);
    }
    EXPECT_FSCK(4, "meta", g_store);
    EXPECT_FSCK(4, "meta", "-y", g_store);   /* only when asked */
    EXPECT_FSCK(1, "meta/ rebuilt from", "-y", "--rebuild-meta", "-v", g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    MUST(strstr(g_out, "0 unreachable groups"), "everything is linked:\n%s", g_out);
    char *old = ts_path(g_store, "meta.damaged-1");
    ck_assert_int_eq(access(old, F_OK), _i == 0 ? 0 : -1);
    free(old);
    /* The content under its lost+found roots, type ids kept. */
    char name[64];
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = rbegin(s);
    snprintf(name, sizeof name, "lost+found/%llu", U(f.keep));
    ck_assert_uint_eq(root_get(t, name), f.keep);
    snprintf(name, sizeof name, "lost+found/%llu", U(f.tree));
    ck_assert_uint_eq(root_get(t, name), f.tree);
    const char *tn;
    OK(objstore_type_name(t, 2, &tn));
    ck_assert_str_eq(tn, "type#2");
    objstore_commit(t);
    /* Renamed back, the digests are those of before. */
    t = wbegin(s);
    snprintf(name, sizeof name, "lost+found/%llu", U(f.keep));
    root_set(t, "keep", f.keep);
    OK(objstore_root_del(t, name));
    snprintf(name, sizeof name, "lost+found/%llu", U(f.tree));
    root_set(t, "tree", f.tree);
    OK(objstore_root_del(t, name));
    commit(t);
    close_store(s);
    ck_assert_uint_eq(content_digest("keep"), keep);
    ck_assert_uint_eq(content_digest("tree"), tree);
}
END_TEST


static void copy_tree_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    MUST(in >= 0 && out >= 0, "copy %s: %s", from, strerror(errno));
    static uint8_t buf[1 << 16];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        MUST(write(out, buf, (size_t)n) == n, "write %s", to);
    close(in);
    close(out);
}

START_TEST(test_a_heap_file_older_than_meta_is_a_mismatch)
{
    fixture f;
    make_store(g_store, &f);
    char *h = heap_path(), *saved = ts_path(g_dir, "heap.saved");
    copy_tree_file(h, saved);
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = wbegin(s);
    OK(objstore_write(t, f.leaf[0], 0, "newer!!!", 8));
    commit(t);
    close_store(s);   /* a checkpoint: meta/ vouches for the newer heap */
    copy_tree_file(saved, h);   /* a restored, older copy of the heap */
    EXPECT_FSCK(4, "heap-mismatch", g_store);
    MUST(strstr(g_out, "older than meta/"), "says which is older:\n%s", g_out);
    EXPECT_FSCK(4, "heap-mismatch", "-y", g_store);   /* not guessed at */
    free(h);
    free(saved);
}
END_TEST

/* ------------------------------------------------------------------ */
/* the command line                                                     */

START_TEST(test_the_command_line_gives_e2fsck_exit_codes)
{
    fixture f;
    make_store(g_store, &f);
    EXPECT_FSCK(0, "Usage:", "--help");
    EXPECT_FSCK(0, "objstore-fsck (objstore)", "--version");
    EXPECT_FSCK(16, "unknown option", "--frobnicate", g_store);
    EXPECT_FSCK(16, "STORE missing", "-n");
    EXPECT_FSCK(16, "exclude each other", "-n", "-y", g_store);
    EXPECT_FSCK(16, "need -y", "--lost-found", g_store);
    EXPECT_FSCK(16, "need -y", "--rebuild-meta", g_store);
    EXPECT_FSCK(16, "epoch", "-y", "--discard-redo-from=x", g_store);
    char *none = ts_path(g_dir, "nothing-here");
    EXPECT_FSCK(8, "no such store directory", none);
    free(none);
    EXPECT_FSCK(0, "\"problems\": 0", "--json", g_store);
    MUST(g_out[0] == '{', "one JSON document:\n%s", g_out);
    EXPECT_FSCK(0, "0 problems", "--no-progress", "-v", g_store);
}
END_TEST

START_TEST(test_a_store_held_by_a_writer_is_exit_8_with_a_sentence_and_a_reader_blocks_only_repair)
{
    fixture f;
    make_store(g_store, &f);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        objstore *s;
        if (objstore_open(g_store, NULL, &s))
            _exit(1);
        char c = 1;
        if (write(p[1], &c, 1) != 1)
            _exit(2);
        pause();
        _exit(0);
    }
    char c;
    ck_assert_int_eq(read(p[0], &c, 1), 1);
    char want[64];
    snprintf(want, sizeof want, "open for writing by process %d", (int)pid);
    EXPECT_FSCK(8, want, g_store);
    EXPECT_FSCK(8, "open", "-y", g_store);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);

    /* A reader shares the store with a check, not with a repair. */
    heap_poke64(f.chain[2], 5);
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        objstore *s;
        if (objstore_open(g_store, &(objstore_options){.flags = OBJSTORE_RDONLY}, &s))
            _exit(1);
        char c = 1;
        if (write(p[1], &c, 1) != 1)
            _exit(2);
        pause();
        _exit(0);
    }
    ck_assert_int_eq(read(p[0], &c, 1), 1);
    EXPECT_FSCK(4, "wrong-count", g_store);
    snprintf(want, sizeof want, "is open by process %d", (int)pid);
    EXPECT_FSCK(8, want, "-y", g_store);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    EXPECT_FSCK(1, "count 5 set to 1", "-y", "-v", g_store);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* Runs objstore-fsck [mode] STORE, sends it SIGINT delay microseconds after
 * it printed its first pass (its handler is in place by then), and returns
 * its exit code; its output is in g_out.  Dying of a signal fails the test. */
static int fsck_interrupted(const char *mode, int delay)
{
    g_out[0] = 0;
    int pp[2];
    ck_assert_int_eq(pipe(pp), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pp[1], 1);
        dup2(pp[1], 2);
        close(pp[0]);
        if (mode)
            execl(tool_path(), "objstore-fsck", mode, g_store, (char *)NULL);
        else
            execl(tool_path(), "objstore-fsck", g_store, (char *)NULL);
        _exit(126);
    }
    close(pp[1]);
    size_t len = 0;
    ssize_t r;
    while (!strstr(g_out, "Pass 1") &&
           (r = read(pp[0], g_out + len, sizeof g_out - 1 - len)) > 0) {
        len += (size_t)r;
        g_out[len] = 0;
    }
    usleep((useconds_t)delay);
    kill(pid, SIGINT);
    while ((r = read(pp[0], g_out + len, sizeof g_out - 1 - len)) > 0)
        len += (size_t)r;
    g_out[len] = 0;
    close(pp[0]);
    int st;
    waitpid(pid, &st, 0);
    MUST(WIFEXITED(st), "objstore-fsck %s died of a signal:\n%s", mode ? mode : "", g_out);
    return WEXITSTATUS(st);
}

START_TEST(test_sigint_during_a_check_exits_32_and_changes_nothing)
{
    /* A store big enough for the walk to take a while. */
    objstore_options o = {.initial_size = 8 * MiB};
    create_store(g_store, &o);
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid prev = 0;
    for (int i = 0; i < 200000; i++) {
        objstore_oid n = new_obj(t, 0, 1, 8);
        if (prev)
            set_ref(t, n, 0, prev);
        prev = n;
    }
    root_set(t, "list", prev);
    commit(t);
    close_store(s);
    heap_poke64(prev, 9);   /* damage, so that a repair has work */
    uint64_t before = files_sum(g_store);
    bool interrupted = false;
    for (int delay = 0; delay <= 64000 && !interrupted; delay = delay * 2 + 1000) {
        int code = fsck_interrupted(NULL, delay);
        MUST(code == 32 || code == 4, "exit %d:\n%s", code, g_out);
        if (code == 32) {
            interrupted = true;
            MUST(strstr(g_out, "interrupted; nothing was changed"), "says so:\n%s", g_out);
        }
        ck_assert_uint_eq(files_sum(g_store), before);
    }
    ck_assert(interrupted);

    /* During a repair: exit 32 with the store as it was, or 1 repaired. */
    interrupted = false;
    bool repaired = false;
    for (int delay = 0; delay <= 256000 && !repaired; delay = delay * 2 + 1000) {
        int code = fsck_interrupted("-y", delay);
        MUST(code == 32 || code == 1, "fsck -y exit %d:\n%s", code, g_out);
        if (code == 32 && strstr(g_out, "nothing was changed")) {
            interrupted = true;
            EXPECT_FSCK(4, "wrong-count", g_store);   /* as it was */
        } else {
            repaired = true;
            EXPECT_FSCK(0, "0 problems", g_store);
        }
    }
    /* Under a slow (sanitizer) build every interrupt may land mid-repair:
     * the store was left as it was each time, and a run left alone
     * repairs it. */
    if (!repaired) {
        ck_assert(interrupted);
        EXPECT_FSCK(1, "", "-y", g_store);
        EXPECT_FSCK(0, "0 problems", g_store);
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* interruption and crashes during a repair                             */

static uint64_t rnd(uint64_t *x);

static void copy_tree(const char *from, const char *to)
{
    MUST(mkdir(to, 0755) == 0, "mkdir %s: %s", to, strerror(errno));
    DIR *d = opendir(from);
    MUST(d != NULL, "opendir %s", from);
    struct dirent *e;
    static uint8_t buf[1 << 20];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *a = ts_path(from, e->d_name), *b = ts_path(to, e->d_name);
        struct stat sb;
        MUST(lstat(a, &sb) == 0, "lstat %s", a);
        if (S_ISDIR(sb.st_mode)) {
            copy_tree(a, b);
        } else {
            int in = open(a, O_RDONLY), out = open(b, O_WRONLY | O_CREAT | O_EXCL, 0644);
            MUST(in >= 0 && out >= 0, "copy %s: %s", a, strerror(errno));
            ssize_t n;
            while ((n = read(in, buf, sizeof buf)) > 0)
                MUST(write(out, buf, (size_t)n) == n, "write %s", b);
            close(in);
            close(out);
        }
        free(a);
        free(b);
    }
    closedir(d);
}

static void copy_store(const char *from, const char *to)
{
    MUST(ts_rmtree(to) == 0, "rm %s", to);
    copy_tree(from, to);
}

/* A store with several problems a repair fixes in one commit. */
static void damage_for_repair(const fixture *f)
{
    heap_poke64(f->chain[3], 9);
    heap_poke64(f->tree + 16 + 8, f->leaf[1] + 16);
    uint32_t huge = 0x7FFFFFFF;
    char *h = heap_path();
    poke(h, f->leaf[2] + 12, &huge, 4);
    free(h);
}

START_TEST(test_an_interrupted_repair_leaves_the_store_as_it_was)
{
    fixture f;
    make_store(g_store, &f);
    damage_for_repair(&f);
    objstore_check_report r0;
    OK(objstore_check(g_store, NULL, &r0));
    ck_assert_uint_gt(r0.problems, 2);
    char *work = ts_path(g_dir, "work");
    char *saved = g_store;
    bool finished = false;
    for (int stop = 1; stop < 200 && !finished; stop++) {
        copy_store(saved, work);
        struct seen seen = {.stop_at = stop};
        objstore_check_opts o = {.mode = OBJSTORE_CHECK_REPAIR, .arg = &seen,
                                 .on_progress = cb_progress};
        objstore_check_report r;
        OK(objstore_check(work, &o, &r));
        finished = !r.interrupted;
        objstore_check_report after;
        OK(objstore_check(work, NULL, &after));
        if (r.interrupted && !r.repaired)
            ck_assert_uint_eq(after.problems, r0.problems);   /* as it was */
        else
            ck_assert_uint_eq(after.problems, 0);             /* repaired */
    }
    ck_assert(finished);
    free(work);
}
END_TEST

static int g_crash_at, g_crash_calls;

static void crash_hook(const char *step)
{
    (void)step;
    if (++g_crash_calls == g_crash_at)
        _exit(77);
}

START_TEST(test_a_crash_at_each_durability_step_of_a_repair_leaves_old_or_repaired)
{
    fixture f;
    make_store(g_store, &f);
    if (_i == 0) {
        damage_for_repair(&f);
        /* Redo pending too, so that the repair's open replays it. */
        commit_and_vanish(f.chain[7]);
    } else if (_i == 2) {
        /* An arena table to fix, and a count. */
        heap_poke64(f.chain[3], 9);
        uint16_t bad = 999;
        char *h = heap_path();
        poke(h, 4096 + 64 + 16 + 2, &bad, 2);
        free(h);
    } else {
        /* A header to rebuild, and a count to fix after it. */
        heap_poke64(f.chain[3], 9);
        uint8_t b;
        char *h = heap_path();
        peek(h, 64, &b, 1);
        b ^= 4;
        poke(h, 64, &b, 1);
        free(h);
    }
    objstore_check_report r0;
    OK(objstore_check(g_store, NULL, &r0));
    ck_assert_uint_ge(r0.problems, _i ? 1 : 3);   /* pass 3 stops the first check */
    char *work = ts_path(g_dir, "work");
    int crashes = 0;
    for (int at = 1; at < 100; at++) {
        copy_store(g_store, work);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            g_crash_at = at;
            objstore_set_crash_hook(crash_hook);
            objstore_check_opts o = {.mode = OBJSTORE_CHECK_REPAIR};
            objstore_check_report r;
            int rc = objstore_check(work, &o, &r);
            _exit(rc ? 2 : r.problems_left ? 3 : 0);
        }
        int code = wait_child(pid);
        objstore_check_report after;
        OK(objstore_check(work, NULL, &after));
        /* A header rebuilt but its repair walk not committed: the count is
         * still wrong (1 problem): a whole step, not a mix. */
        MUST(after.problems == 0 || after.problems == r0.problems ||
             (_i == 1 && after.problems == 1 && after.found[OBJSTORE_C_COUNT] == 1),
             "crash at step %d: %llu problems after (before %llu): %s", at,
             U(after.problems), U(r0.problems), after.first_problem);
        if (code == 77) {
            crashes++;
            continue;
        }
        ck_assert_int_eq(code, 0);
        ck_assert_uint_eq(after.problems, 0);
        break;
    }
    ck_assert_int_gt(crashes, 2);
    fprintf(stderr, "crash during repair (%s): %d crash points\n",
            _i == 1 ? "header rebuilt" : _i == 2 ? "arena table" : "slots, objects, counts",
            crashes);
    free(work);
}
END_TEST


START_TEST(test_kill_9_at_random_instants_of_a_repair_leaves_old_or_repaired)
{
    fixture f;
    make_store(g_store, &f);
    damage_for_repair(&f);
    objstore_check_report r0;
    OK(objstore_check(g_store, NULL, &r0));
    char *work = ts_path(g_dir, "work");
    uint64_t x = 12345;
    int old = 0, fixed = 0;
    for (int i = 0; i < 40; i++) {
        copy_store(g_store, work);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            objstore_check_opts o = {.mode = OBJSTORE_CHECK_REPAIR};
            objstore_check_report r;
            _exit(objstore_check(work, &o, &r) ? 2 : 0);
        }
        usleep((useconds_t)(rnd(&x) % 10000));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        objstore_check_report after;
        OK(objstore_check(work, NULL, &after));
        MUST(after.problems == 0 || after.problems == r0.problems,
             "kill %d: %llu problems after (before %llu): %s", i, U(after.problems),
             U(r0.problems), after.first_problem);
        old += after.problems != 0;
        fixed += after.problems == 0;
    }
    fprintf(stderr, "kill -9 during repair: %d old, %d repaired\n", old, fixed);
    free(work);
}
END_TEST

static char g_text[512];

static void keep_meta_text(void *arg, const objstore_finding *f)
{
    (void)arg;
    if (f->kind == OBJSTORE_C_META)
        snprintf(g_text, sizeof g_text, "%s", f->text);
}

START_TEST(test_a_meta_reader_that_hangs_or_dies_is_the_finding_meta_damaged)
{
    fixture f;
    make_store(g_store, &f);
    /* A FIFO for data.mdb: opening it blocks, as a reader stuck in a damaged
     * file would. */
    char *data = ts_path(g_store, "meta/data.mdb");
    ck_assert_int_eq(unlink(data), 0);
    ck_assert_int_eq(mkfifo(data, 0644), 0);
    objstore_check_opts o = {.meta_timeout_s = 1, .on_finding = keep_meta_text};
    objstore_check_report r;
    OK(objstore_check(g_store, &o, &r));
    ck_assert_uint_eq(r.found[OBJSTORE_C_META], 1);
    MUST(strstr(g_text, "meta/data.mdb is damaged: reading it did not finish in 1 s"),
         "%s", g_text);
    ck_assert_int_eq(r.passes_done, 2);

    /* The reader killed by a signal (as LMDB faulting on a bad page would
     * be; SIGKILL, since a sanitizer turns a SIGSEGV into an exit). */
    fflush(NULL);
    pid_t checker = fork();
    if (checker == 0) {
        g_text[0] = 0;
        objstore_check_opts o2 = {.meta_timeout_s = 60, .on_finding = keep_meta_text};
        objstore_check_report r2;
        if (objstore_check(g_store, &o2, &r2))
            _exit(2);
        _exit(strstr(g_text, "meta/data.mdb is damaged: reading it killed the reading "
                             "process (signal 9") ? 0 : 3);
    }
    /* Its reader is its child: find it and kill it. */
    pid_t reader = 0;
    for (int tries = 0; tries < 500 && !reader; tries++) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d)) && !reader) {
            char path[300], buf[512];
            snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
            FILE *fp = fopen(path, "r");
            if (!fp)
                continue;
            int pid, ppid;
            char state;
            if (fgets(buf, sizeof buf, fp)) {
                char *rp = strrchr(buf, ')');
                if (rp && sscanf(buf, "%d", &pid) == 1 &&
                    sscanf(rp + 2, "%c %d", &state, &ppid) == 2 && ppid == checker)
                    reader = pid;
            }
            fclose(fp);
        }
        if (d)
            closedir(d);
        if (!reader)
            usleep(10000);
    }
    ck_assert_int_gt(reader, 0);
    kill(reader, SIGKILL);
    ck_assert_int_eq(wait_child(checker), 0);
    free(data);
}
END_TEST

/* In a child: two commits, each leaving redo records, then an exit without
 * a close. */
/* n commits of 8 bytes each, in a child that then exits without closing:
 * through meta/'s redo log with OBJSTORE_NO_JOURNAL, else the journal. */
static void commit_writes_and_vanish(objstore_oid leaf, int n, int flags)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        objstore *s = NULL;
        objstore_txn *t = NULL;
        if (objstore_open(g_store, &(objstore_options){.flags = flags}, &s))
            _exit(1);
        for (int i = 0; i < n; i++)
            if (objstore_begin(s, 0, &t) ||
                objstore_write(t, leaf, 8 + (uint64_t)i * 8, "pending!", 8) ||
                objstore_commit(t))
                _exit(2);
        _exit(0);
    }
    ck_assert_int_eq(wait_child(pid), 0);
}


/* ---- the journal (FORMAT.md 2.4) ---- */

#define JOURNAL_ENTRY(i) (4096 + 512 * (uint64_t)(i))   /* an 8-byte write's entry */

static uint64_t store_epoch(void)
{
    objstore *s = open_store(g_store, NULL);
    uint64_t e = objstore_epoch(s);
    objstore_close(s);
    return e;
}

/* The commits went to the journal, one entry each; all three replay. */
START_TEST(test_journal_commits_are_seen_by_the_check_and_replayed_at_open)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t e0 = store_epoch();
    commit_writes_and_vanish(f.leaf[0], 3, 0);
    char *jp = ts_path(g_store, "journal");
    uint32_t magic;
    for (int i = 0; i < 3; i++) {
        peek(jp, JOURNAL_ENTRY(i), &magic, 4);
        ck_assert_uint_eq(magic, 0x4E454A4Fu);   /* "OJEN" */
    }
    EXPECT_FSCK(0, "0 problems", g_store);
    /* A reader replays them in RAM, and info counts them pending. */
    objstore *r = open_store(g_store, &(objstore_options){.flags = OBJSTORE_RDONLY});
    objstore_store_info in;
    OK(objstore_get_store_info(r, &in));
    ck_assert_uint_eq(in.journal_entries, 3);
    ck_assert_uint_eq(in.journal_bytes, 3 * 512);
    ck_assert_uint_eq(in.journal_file_bytes, 1 << 20);
    ck_assert_uint_eq(in.epoch, e0 + 3);
    objstore_close(r);
    ck_assert(payload_holds(f.leaf[0], 8, "pending!pending!pending!"));
    ck_assert_uint_eq(store_epoch(), e0 + 3);
    r = open_store(g_store, &(objstore_options){.flags = OBJSTORE_RDONLY});
    OK(objstore_get_store_info(r, &in));
    ck_assert_uint_eq(in.journal_entries, 0);   /* a writer's open checkpointed them */
    objstore_close(r);
    free(jp);
}
END_TEST

/* A torn last entry is a commit that never returned: the store opens at the
 * one before, and the check finds nothing wrong. */
START_TEST(test_a_torn_last_journal_entry_is_a_commit_that_never_happened)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t e0 = store_epoch();
    commit_writes_and_vanish(f.leaf[0], 2, 0);
    char *jp = ts_path(g_store, "journal");
    uint8_t zero[64] = {0};
    poke(jp, JOURNAL_ENTRY(1) + 100, zero, sizeof zero);
    EXPECT_FSCK(0, "0 problems", g_store);
    ck_assert(payload_holds(f.leaf[0], 8, "pending!"));
    ck_assert(!payload_holds(f.leaf[0], 16, "pending!"));
    ck_assert_uint_eq(store_epoch(), e0 + 1);
    free(jp);
}
END_TEST

/* An entry damaged with whole ones after it: commits that returned would
 * be lost, so the open is refused, the check names it, and the repair drops
 * it and what follows only when asked. */
START_TEST(test_a_damaged_journal_entry_before_whole_ones_is_named_and_discarded_on_request)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep");
    uint64_t e0 = store_epoch();
    commit_writes_and_vanish(f.leaf[0], 3, 0);
    char *jp = ts_path(g_store, "journal");
    uint8_t b;
    peek(jp, JOURNAL_ENTRY(1) + 150, &b, 1);
    b ^= 0x40;
    poke(jp, JOURNAL_ENTRY(1) + 150, &b, 1);
    objstore *s = NULL;
    ck_assert_int_eq(objstore_open(g_store, NULL, &s), OBJSTORE_EREDO);
    MUST(strstr(objstore_errmsg(), "journal") && strstr(objstore_errmsg(), "is damaged"),
         "names the journal: %s", objstore_errmsg());
    char arg[64];
    snprintf(arg, sizeof arg, "--discard-redo-from=%llu", U(e0 + 2));
    EXPECT_FSCK(4, arg, g_store);   /* the message says which epoch to give */
    EXPECT_FSCK(4, "journal", "-y", g_store);   /* not without being asked */
    EXPECT_FSCK(1, "the last 2 commits are lost", "-y", arg, g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    ck_assert(payload_holds(f.leaf[0], 8, "pending!"));
    ck_assert(!payload_holds(f.leaf[0], 16, "pending!"));
    ck_assert_uint_eq(content_digest("keep"), keep);
    free(jp);
}
END_TEST

/* No journal: the commits it held cannot be known, so the open is refused;
 * the repair makes a new one when asked. */
START_TEST(test_a_missing_journal_refuses_the_open_and_is_made_anew_on_request)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep");
    char *jp = ts_path(g_store, "journal");
    ck_assert_int_eq(unlink(jp), 0);
    objstore *s = NULL;
    ck_assert_int_eq(objstore_open(g_store, NULL, &s), OBJSTORE_EREDO);
    MUST(strstr(objstore_errmsg(), "journal: missing"), "names it: %s", objstore_errmsg());
    EXPECT_FSCK(4, "journal: missing", g_store);
    EXPECT_FSCK(1, NULL, "-y", "--discard-redo-from=1", g_store);
    ck_assert_int_eq(access(jp, F_OK), 0);
    EXPECT_FSCK(0, "0 problems", g_store);
    ck_assert_uint_eq(content_digest("keep"), keep);
    free(jp);
}
END_TEST

/* A journal whose header names another store is refused, never replayed. */
START_TEST(test_a_journal_of_another_store_is_a_mismatch)
{
    fixture f;
    make_store(g_store, &f);
    char *other = ts_path(g_store, "../other");
    objstore_options o = {0};
    ck_assert_int_eq(objstore_create(other, &o), OBJSTORE_OK);
    char *jp = ts_path(g_store, "journal"), *ojp = ts_path(other, "journal");
    ck_assert_int_eq(rename(ojp, jp), 0);
    objstore *s = NULL;
    ck_assert_int_eq(objstore_open(g_store, NULL, &s), OBJSTORE_EMISMATCH);
    MUST(strstr(objstore_errmsg(), "another store"), "says so: %s", objstore_errmsg());
    free(jp);
    free(ojp);
    free(other);
}
END_TEST

/* Object bytes that spell whole entries for the journal's current run, at
 * the offsets that come next, are written through the journal as a
 * commit's data: the checkpoint at close begins a new run with a new nonce,
 * so they never pass for entries, and the store opens. */
START_TEST(test_object_bytes_that_spell_journal_entries_never_pass_for_them)
{
    fixture f;
    make_store(g_store, &f);
    char *jp = ts_path(g_store, "journal");
    uint8_t slot[2][72];
    peek(jp, 0, slot[0], 72);
    peek(jp, 512, slot[1], 72);
    uint64_t run[2], nonce[2];
    for (int i = 0; i < 2; i++) {
        memcpy(&run[i], slot[i] + 32, 8);
        memcpy(&nonce[i], slot[i] + 56, 8);
    }
    uint64_t n = run[1] > run[0] ? nonce[1] : nonce[0];
    /* Frames with that nonce for epochs far ahead, each with a tiny record
     * (its checksum right, its content junk), 512 bytes apart. */
    uint8_t payload[4096] = {0};
    for (int i = 0; i < 8; i++) {
        uint8_t *e = payload + 512 * i;
        uint32_t magic = 0x4E454A4Fu, len = 96;
        uint64_t epoch = 1000 + (uint64_t)i;
        memcpy(e, &magic, 4);
        memcpy(e + 4, &len, 4);
        memcpy(e + 8, &n, 8);
        memcpy(e + 16, &epoch, 8);
        /* A record whole by its own checksum (FORMAT 2.1: the 80-byte
         * header hashed with its checksum field zero seeds the rest). */
        uint8_t *rec = e + 32;
        memset(rec, 0x5A, len);
        memset(rec + 72, 0, 8);
        uint64_t rsum = XXH3_64bits_withSeed(rec + 80, len - 80, XXH3_64bits(rec, 80));
        memcpy(rec + 72, &rsum, 8);
        uint64_t sum = XXH3_64bits_withSeed(e, 24, rsum);
        memcpy(e + 24, &sum, 8);
    }
    objstore *s = open_store(g_store, NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid big = new_obj(t, 0, 0, sizeof payload + 512);
    root_set(t, "forged", big);
    commit(t);
    /* Written once to find where the payload lands in the journal, then
     * again shifted so that the frames sit at entry offsets (multiples of
     * 512): the second entry has the first's layout, 512-aligned. */
    size_t jlen;
    uint64_t shift = 0;
    for (int pass = 0; pass < 2; pass++) {
        t = wbegin(s);
        OK(objstore_write(t, big, shift, payload, sizeof payload));
        commit(t);
        uint8_t *j = read_all(jp, &jlen);
        uint64_t at = UINT64_MAX;
        for (size_t q = 4096; q + 24 <= jlen && at == UINT64_MAX; q++)
            if (!memcmp(j + q, payload, 24) && q % 512 != 0)
                at = q;
        free(j);
        MUST(pass == 1 || at != UINT64_MAX, "the payload is not in the journal");
        if (pass == 0)
            shift = (512 - at % 512) % 512;
    }
    ck_assert_uint_ge(get_stats(s).journal_commits, 2);
    close_store(s);
    objstore_close(open_store(g_store, NULL));
    EXPECT_FSCK(0, "0 problems", g_store);
    free(jp);
}
END_TEST

START_TEST(test_a_missing_redo_record_is_found_by_the_chain_and_can_be_discarded)
{
    fixture f;
    make_store(g_store, &f);
    uint64_t keep = content_digest("keep");
    commit_writes_and_vanish(f.leaf[0], 2, OBJSTORE_NO_JOURNAL);
    /* Delete the older commit's record: the newer one's predecessor is gone. */
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *c;
    MDB_env *env = meta_edit(NULL, &txn, &dbi);
    ck_assert_int_eq(mdb_cursor_open(txn, dbi, &c), 0);
    MDB_val k, v;
    uint64_t first = first_redo(c, &k, &v);
    ck_assert_int_eq(mdb_cursor_del(c, 0), 0);
    mdb_cursor_close(c);
    meta_edit_end(env, txn);
    char want[80], arg[64];
    snprintf(want, sizeof want, "the records of epoch %llu are missing", U(first));
    EXPECT_FSCK(4, want, g_store);
    EXPECT_FSCK(4, "redo", "-y", g_store);
    snprintf(arg, sizeof arg, "--discard-redo-from=%llu", U(first));
    EXPECT_FSCK(1, "the last 1 commit is lost", "-y", arg, g_store);
    EXPECT_FSCK(0, "0 problems", g_store);
    objstore_close(open_store(g_store, NULL));
    ck_assert_uint_eq(content_digest("keep"), keep);
}
END_TEST

/* ------------------------------------------------------------------ */
/* randomized damage                                                    */

static unsigned fuzz_cases(void)
{
    const char *e = getenv("OBJSTORE_FSCK_FUZZ");
    return e && atoi(e) > 0 ? (unsigned)atoi(e) : 1000;
}

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* One case, in a child with a time limit: damage, repair, check. */
static void fuzz_case(const char *work, uint64_t seed, const fixture *f)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    char *heap = ts_path(work, "heap.1"), *data = ts_path(work, "meta/data.mdb");
    int nflips = 1 + (int)(rnd(&x) % 6);
    for (int i = 0; i < nflips; i++) {
        uint64_t where = rnd(&x) % 100, off;
        const char *path = heap;
        if (where < 50)   /* an object's header or slots */
            off = f->chain[rnd(&x) % KEEP_LEN] + rnd(&x) % 24;
        else if (where < 70)   /* some object of the first pool */
            off = 16384 + rnd(&x) % 4096;
        else if (where < 85)   /* the arena table */
            off = 4096 + rnd(&x) % 1100;
        else if (where < 90)   /* the header */
            off = rnd(&x) % 128;
        else {                 /* meta/ */
            struct stat sb;
            MUST(stat(data, &sb) == 0, "stat");
            path = data;
            off = rnd(&x) % (uint64_t)sb.st_size;
        }
        uint8_t b;
        peek(path, off, &b, 1);
        b ^= (uint8_t)(1u << (rnd(&x) % 8));
        if (rnd(&x) % 4 == 0)
            b = (uint8_t)rnd(&x);
        poke(path, off, &b, 1);
    }
    free(heap);
    free(data);
}

START_TEST(test_randomized_damage_never_crashes_and_repair_leaves_clean_or_named)
{
    fixture f;
    make_store(g_store, &f);
    char *work = ts_path(g_dir, "work");
    unsigned n = fuzz_cases();
    unsigned clean = 0, named = 0, repaired = 0;
    for (unsigned i = 0; i < n; i++) {
        copy_store(g_store, work);
        fuzz_case(work, i + 1, &f);
        int p[2];
        ck_assert_int_eq(pipe(p), 0);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            alarm(20);   /* a hang is a failure: SIGALRM kills the case */
            objstore_check_opts o = {.mode = OBJSTORE_CHECK_REPAIR,
                                     .flags = OBJSTORE_CHECK_LOST_FOUND |
                                              OBJSTORE_CHECK_REBUILD_META};
            objstore_check_report r, again;
            int rc = objstore_check(work, &o, &r);
            int code = 0;
            if (rc)
                code = 2;   /* operational: must not happen on a damaged store */
            else if (objstore_check(work, NULL, &again))
                code = 3;
            else if (again.problems != r.problems_left)
                code = 4;   /* the report must agree with a fresh check */
            else if (again.problems && !again.first_problem[0])
                code = 5;   /* left problems must be named */
            else
                code = again.problems ? 10 : r.repaired ? 11 : 12;
            char msg[256];
            snprintf(msg, sizeof msg, "%s", rc ? objstore_errmsg() : again.first_problem);
            if (write(p[1], msg, strlen(msg)) < 0)
                code = 6;
            _exit(code);
        }
        close(p[1]);
        char msg[257] = "";
        ssize_t len = read(p[0], msg, 256);
        msg[len > 0 ? len : 0] = 0;
        close(p[0]);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        MUST(WIFEXITED(st), "case %u: the check died of signal %d (%s)", i + 1,
             WIFSIGNALED(st) ? WTERMSIG(st) : 0, msg);
        int code = WEXITSTATUS(st);
        MUST(code >= 10, "case %u: failed with %d: %s", i + 1, code, msg);
        if (code == 10 && getenv("OBJSTORE_FSCK_FUZZ_VERBOSE"))
            fprintf(stderr, "case %u left: %s\n", i + 1, msg);
        clean += code == 12;
        named += code == 10;
        repaired += code == 11;
    }
    fprintf(stderr, "fuzz: %u cases: %u untouched or clean, %u repaired, %u left named\n", n,
            clean, repaired, named);
    free(work);
}
END_TEST

/* ------------------------------------------------------------------ */

static Suite *fsck_suite(void)
{
    Suite *s = suite_create("fsck");
    double t = ts_under_sanitizer() ? 600 : 120;
    TCase *tc = ts_tcase(s, "check", t);
    tcase_add_test(tc, test_a_clean_store_passes_every_pass_and_prints_the_summary);
    tcase_add_test(tc, test_the_check_call_reports_passes_groups_and_figures_through_callbacks);
    tcase_add_test(tc, test_a_check_changes_no_byte_of_any_file_even_with_redo_pending);
    tcase_add_test(tc, test_pending_redo_is_seen_by_the_check_as_the_store_will_be);

    tc = ts_tcase(s, "damage", t);
    tcase_add_test(tc, test_a_wrong_count_is_found_and_rewritten_to_the_in_degree);
    tcase_add_test(tc, test_preen_fixes_a_count);
    tcase_add_test(tc, test_a_dangling_slot_is_set_to_null_and_named);
    tcase_add_test(tc, test_a_root_that_names_no_live_object_is_removed);
    tcase_add_test(tc, test_stale_zero_count_and_candidate_entries_are_dropped_by_preen);
    tcase_add_test(tc, test_a_weak_index_that_disagrees_with_the_weak_references_is_rebuilt);
    tcase_add_test(tc, test_an_object_with_a_header_beyond_use_is_removed_and_references_to_it_nulled);
    tcase_add_test(tc, test_an_unregistered_type_is_named_and_the_object_kept_untyped);
    tcase_add_test(tc, test_an_object_cut_off_by_damage_is_a_group_and_lost_found_keeps_it);
    tcase_add_test(tc, test_without_lost_found_an_object_cut_off_is_kept_at_count_zero);
    tcase_add_test(tc, test_a_damaged_heap_header_is_rebuilt_from_meta_and_the_old_bytes_kept);
    tcase_add_test(tc, test_a_truncated_heap_file_is_named_and_its_header_left_alone);
    tcase_add_test(tc, test_damaged_arena_metadata_is_rebuilt_from_what_the_objects_say);
    tcase_add_test(tc, test_garbage_in_meta_data_mdb_is_a_finding_not_a_crash);
    tcase_add_test(tc, test_a_stray_heap_generation_is_renamed_not_deleted);
    tcase_add_test(tc, test_a_missing_lock_file_is_recreated);
    tcase_add_test(tc, test_a_damaged_redo_record_is_named_and_discarded_on_request);
    tcase_add_test(tc, test_a_missing_redo_record_is_found_by_the_chain_and_can_be_discarded);
    tcase_add_loop_test(tc, test_a_redo_key_of_the_wrong_size_is_named_and_discarded_on_request,
                        0, (int)(sizeof k_bad_keys / sizeof k_bad_keys[0]));
    tcase_add_test(tc, test_discarding_from_the_middle_of_the_log_keeps_the_commits_before);
    tcase_add_test(tc, test_journal_commits_are_seen_by_the_check_and_replayed_at_open);
    tcase_add_test(tc, test_a_torn_last_journal_entry_is_a_commit_that_never_happened);
    tcase_add_test(tc,
                   test_a_damaged_journal_entry_before_whole_ones_is_named_and_discarded_on_request);
    tcase_add_test(tc, test_a_missing_journal_refuses_the_open_and_is_made_anew_on_request);
    tcase_add_test(tc, test_a_journal_of_another_store_is_a_mismatch);
    tcase_add_test(tc, test_object_bytes_that_spell_journal_entries_never_pass_for_them);
    tcase_add_test(tc, test_a_store_of_another_format_is_refused_and_never_repaired);
    tcase_add_test(tc, test_a_meta_reader_that_hangs_or_dies_is_the_finding_meta_damaged);
    tcase_add_test(tc, test_a_heap_file_older_than_meta_is_a_mismatch);
    tcase_add_loop_test(tc, test_a_lost_meta_is_rebuilt_from_the_heap_and_the_old_one_kept, 0, 2);

    tc = ts_tcase(s, "tool", t);
    tcase_add_test(tc, test_the_command_line_gives_e2fsck_exit_codes);
    tcase_add_test(tc, test_a_store_held_by_a_writer_is_exit_8_with_a_sentence_and_a_reader_blocks_only_repair);
    tcase_add_test(tc, test_sigint_during_a_check_exits_32_and_changes_nothing);

    tc = ts_tcase(s, "repair-safety", t);
    tcase_add_test(tc, test_an_interrupted_repair_leaves_the_store_as_it_was);
    tcase_add_loop_test(tc, test_a_crash_at_each_durability_step_of_a_repair_leaves_old_or_repaired,
                        0, 3);
    tcase_add_test(tc, test_kill_9_at_random_instants_of_a_repair_leaves_old_or_repaired);

    tc = ts_tcase(s, "fuzz", ts_under_sanitizer() ? 1800 : 300);
    tcase_add_test(tc, test_randomized_damage_never_crashes_and_repair_leaves_clean_or_named);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fsck_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
