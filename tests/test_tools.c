/*
 * test_tools.c -- inspection, dump/load and backup (store/inspect.c), and the
 * objstore command (tools/objstore.c) run as a user runs it.
 *
 * Content is compared by walking both stores side by side from their roots
 * (same_content): types, metadata, root names, and for every reachable
 * object its type name, slot count, payload and count, with the slots of
 * the two stores required to form the same graph (an isomorphism built as
 * the walk goes).  Nothing here trusts the dump format to check itself.
 */
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <xxhash.h>

#include "test_store.h"
#include "u64map.h"

/* ------------------------------------------------------------------ */
/* comparing two stores                                                 */

struct kv {
    char *k, *v;
    size_t kl, vl;
};
struct kvs {
    struct kv *e;
    size_t n, cap;
};

static void kvs_add(struct kvs *l, const void *k, size_t kl, const void *v, size_t vl)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->e = realloc(l->e, l->cap * sizeof *l->e);
        ck_assert_ptr_nonnull(l->e);
    }
    struct kv *e = &l->e[l->n++];
    e->k = malloc(kl + 1);
    e->v = malloc(vl + 1);
    ck_assert(e->k && e->v);
    memcpy(e->k, k, kl);
    memcpy(e->v, v, vl);
    e->kl = kl;
    e->vl = vl;
}

static void kvs_free(struct kvs *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->e[i].k);
        free(l->e[i].v);
    }
    free(l->e);
}

static int meta_cb(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    kvs_add(arg, k, kl, v, vl);
    return 0;
}

static int root_cb(void *arg, const char *name, objstore_oid oid)
{
    kvs_add(arg, name, strlen(name), &oid, sizeof oid);
    return 0;
}

static void same_kvs(const struct kvs *a, const struct kvs *b, bool values, const char *what)
{
    MUST(a->n == b->n, "%s: %zu entries against %zu", what, a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        MUST(a->e[i].kl == b->e[i].kl && !memcmp(a->e[i].k, b->e[i].k, a->e[i].kl),
             "%s: entry %zu differs in its key", what, i);
        MUST(!values || (a->e[i].vl == b->e[i].vl && !memcmp(a->e[i].v, b->e[i].v, a->e[i].vl)),
             "%s: entry %zu differs in its value", what, i);
    }
}

static const char *type_of(objstore_txn *t, uint32_t id)
{
    const char *name = "";
    if (id)
        OK(objstore_type_name(t, id, &name));
    return name;
}

/* Number of an oid in one store's walk, giving it next if new. */
static uint64_t walk_index(u64map *m, objstore_oid oid, uint64_t next, bool *added)
{
    uint64_t *v = u64map_upsert(m, oid, added);
    ck_assert_ptr_nonnull(v);
    if (*added)
        *v = next;
    return *v;
}

/* Asserts that a and b hold the same logical content; returns the number of
 * reachable objects. */
static uint64_t same_content(objstore *a, objstore *b)
{
    objstore_txn *ta = rbegin(a), *tb = rbegin(b);
    for (uint32_t id = 1;; id++) {
        const char *na, *nb;
        int ra = objstore_type_name(ta, id, &na), rb = objstore_type_name(tb, id, &nb);
        MUST(ra == rb, "type %u exists in one store only", id);
        if (ra)
            break;
        MUST(!strcmp(na, nb), "type %u: '%s' against '%s'", id, na, nb);
    }
    struct kvs ma = {0}, mb = {0}, rta = {0}, rtb = {0};
    OK(objstore_meta_iter(ta, meta_cb, &ma));
    OK(objstore_meta_iter(tb, meta_cb, &mb));
    same_kvs(&ma, &mb, true, "metadata");
    OK(objstore_root_iter(ta, root_cb, &rta));
    OK(objstore_root_iter(tb, root_cb, &rtb));
    same_kvs(&rta, &rtb, false, "roots");

    u64map ia = {0}, ib = {0};
    struct u64vec qa = {0}, qb = {0};
    bool added_a, added_b;
    for (size_t i = 0; i < rta.n; i++) {
        objstore_oid oa, ob;
        memcpy(&oa, rta.e[i].v, 8);
        memcpy(&ob, rtb.e[i].v, 8);
        uint64_t xa = walk_index(&ia, oa, qa.n, &added_a);
        uint64_t xb = walk_index(&ib, ob, qb.n, &added_b);
        MUST(xa == xb && added_a == added_b, "root %zu names different objects", i);
        if (added_a) {
            ck_assert(u64vec_push(&qa, oa) && u64vec_push(&qb, ob));
        }
    }
    for (size_t q = 0; q < qa.n; q++) {
        objstore_objinfo fa, fb;
        OK(objstore_info(ta, qa.v[q], &fa));
        OK(objstore_info(tb, qb.v[q], &fb));
        MUST(!strcmp(type_of(ta, fa.type), type_of(tb, fb.type)) && fa.nrefs == fb.nrefs &&
                 fa.size == fb.size && fa.refcount == fb.refcount,
             "object %zu: type, slots, size or count differ (%u/%u slots, %llu/%llu "
             "bytes, count %llu/%llu)", q, fa.nrefs, fb.nrefs, U(fa.size), U(fb.size),
             U(fa.refcount), U(fb.refcount));
        const void *pa, *pb;
        uint64_t sa, sb;
        OK(objstore_get(ta, qa.v[q], &pa, &sa));
        OK(objstore_get(tb, qb.v[q], &pb, &sb));
        MUST(sa == sb && !memcmp(pa, pb, sa), "object %zu: payloads differ", q);
        for (uint32_t j = 0; j < fa.nrefs; j++) {
            objstore_oid ca = get_ref(ta, qa.v[q], j), cb = get_ref(tb, qb.v[q], j);
            MUST(!ca == !cb, "object %zu slot %u: null in one store only", q, j);
            if (!ca)
                continue;
            uint64_t xa = walk_index(&ia, ca, qa.n, &added_a);
            uint64_t xb = walk_index(&ib, cb, qb.n, &added_b);
            MUST(xa == xb && added_a == added_b, "object %zu slot %u: the graphs differ", q, j);
            if (added_a)
                MUST(u64vec_push(&qa, ca) && u64vec_push(&qb, cb), "out of memory");
        }
    }
    uint64_t n = qa.n;
    u64map_free(&ia);
    u64map_free(&ib);
    free(qa.v);
    free(qb.v);
    kvs_free(&ma);
    kvs_free(&mb);
    kvs_free(&rta);
    kvs_free(&rtb);
    objstore_abort(ta);
    objstore_abort(tb);
    return n;
}

/* ------------------------------------------------------------------ */
/* building stores                                                      */

/* A W2-like list: root "list", n nodes of 1 slot and 40 payload bytes. */
static void build_list(objstore *s, uint64_t n)
{
    objstore_txn *t = wbegin(s);
    uint32_t node;
    OK(objstore_type_register(t, "node", &node));
    objstore_oid head = 0;
    uint8_t payload[40];
    for (uint64_t i = 0; i < n; i++) {
        objstore_oid o = new_obj(t, node, 1, sizeof payload);
        pattern_into(payload, sizeof payload, i);
        MUST(objstore_write(t, o, 0, payload, sizeof payload) == OBJSTORE_OK, "write");
        if (head)
            set_ref(t, o, 0, head);
        head = o;
    }
    root_set(t, "list", head);
    OK(objstore_meta_set(t, "nodes", 5, &n, sizeof n));
    commit(t);
}

/* A random graph: every slot count from 0 to 20 and a few large ones,
 * payloads from 0 bytes to past an arena's pool runs, shared children,
 * cycles (self-loops included), binary root names and metadata. */
static void build_graph(objstore *s, uint64_t seed, unsigned n)
{
    objstore_txn *t = wbegin(s);
    uint32_t types[3];
    OK(objstore_type_register(t, "alpha", &types[0]));
    OK(objstore_type_register(t, "beta with space", &types[1]));
    OK(objstore_type_register(t, "gamma%\x01", &types[2]));
    objstore_oid *o = calloc(n, sizeof *o);
    uint32_t *nrefs = calloc(n, sizeof *nrefs);
    ck_assert(o && nrefs);
    static const uint32_t big_slots[] = {64, 255, 1000};
    for (unsigned i = 0; i < n; i++) {
        uint64_t r = ts_mix64(seed * 1000003 + i);
        nrefs[i] = i < 21 ? i : i % 50 == 0 ? big_slots[i / 50 % 3] : (uint32_t)(r % 9);
        uint64_t size = i % 97 == 5 ? 70000 + r % 5000 : r % 600;
        if (i % 13 == 0)
            size = 0;
        uint32_t type = i % 4 == 3 ? 0 : types[i % 3];
        o[i] = new_obj(t, type, nrefs[i], size);
        if (size) {
            uint8_t *p = malloc(size);
            pattern_into(p, size, r);
            OK(objstore_write(t, o[i], 0, p, size));
            free(p);
        }
    }
    for (unsigned i = 0; i < n; i++)
        for (uint32_t j = 0; j < nrefs[i]; j++) {
            uint64_t r = ts_mix64(seed ^ ((uint64_t)i << 32 | j));
            if (r % 5 == 0)
                continue;   /* some slots stay null */
            unsigned to = r % 7 == 0 ? i : (unsigned)(r % n);   /* self-loops too */
            set_ref(t, o[i], j, o[to]);
        }
    /* Everything reachable: an index object points at all of them. */
    objstore_oid index = new_obj(t, 0, n, 0);
    for (unsigned i = 0; i < n; i++)
        set_ref(t, index, i, o[i]);
    root_set(t, "index", index);
    root_set(t, "first", o[0]);
    root_set(t, "again first", o[0]);
    root_set(t, "%name with\tescapes\xff", o[n / 2]);
    OK(objstore_meta_set(t, "k\0bin ary%", 10, "v\0\xff", 3));
    OK(objstore_meta_set(t, "empty", 5, "", 0));
    OK(objstore_meta_set(t, "text", 4, "hello world", 11));
    commit(t);
    free(o);
    free(nrefs);
}

/* Dumps s into a malloc'd buffer. */
static char *dump_to_buffer(objstore *s, size_t *len, objstore_dump_stats *st)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    ck_assert_ptr_nonnull(f);
    OK(objstore_dump(s, f, st));
    ck_assert_int_eq(fclose(f), 0);
    return buf;
}

static int load_from_buffer(const char *dir, const char *buf, size_t len,
                            objstore_dump_stats *st)
{
    FILE *f = fmemopen((void *)buf, len, "r");
    ck_assert_ptr_nonnull(f);
    int rc = objstore_load(dir, f, NULL, st);
    fclose(f);
    return rc;
}

static char *sub(const char *name)
{
    char *p = ts_path(g_dir, name);
    ck_assert_ptr_nonnull(p);
    return p;
}

static void find_tool(void);
static int run(char **out, char **err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ------------------------------------------------------------------ */
/* dump and load                                                        */

START_TEST(test_dump_then_load_gives_the_same_content_for_a_list)
{
    objstore *s = new_store(NULL);
    uint64_t n = ts_under_sanitizer() ? 20000 : 100000;
    build_list(s, n);
    size_t len;
    objstore_dump_stats st;
    char *text = dump_to_buffer(s, &len, &st);
    ck_assert_uint_eq(st.objects, n);
    ck_assert_uint_eq(st.roots, 1);
    ck_assert_uint_eq(st.types, 1);
    ck_assert_uint_eq(st.metadata, 1);
    char *copy = sub("copy");
    objstore_dump_stats lst;
    OK(load_from_buffer(copy, text, len, &lst));
    ck_assert_uint_eq(lst.objects, n);
    ck_assert_uint_eq(lst.references, n - 1);
    objstore *c = open_store(copy, NULL);
    verify_clean(c);
    ck_assert_uint_eq(same_content(s, c), n);
    /* The dump of the copy is the same text (objects numbered by the walk). */
    size_t len2;
    char *text2 = dump_to_buffer(c, &len2, NULL);
    ck_assert(len == len2 && !memcmp(text, text2, len));
    free(text);
    free(text2);
    free(copy);
    close_store(c);
    close_store(s);
}
END_TEST

/* Weak references survive a dump and a load: each names the object that
 * holds its target's content, a cleared one stays cleared, one whose
 * target only weak references reach is cleared, and the digests agree. */
START_TEST(test_dump_then_load_keeps_weak_references_and_the_digest)
{
    objstore *s = new_store(NULL);
    OK(objstore_gc_disable(s));
    objstore_txn *t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 0, 8), y = new_obj(t, 0, 0, 8), lone = new_obj(t, 0, 0, 8);
    put_u64(t, x, 0, 11);
    put_u64(t, y, 0, 22);
    root_set(t, "x", x);
    root_set(t, "y", y);
    root_set(t, "lone", lone);
    objstore_oid wx, wy, wl, ww;
    OK(objstore_weakref_new(t, x, &wx));
    OK(objstore_weakref_new(t, y, &wy));
    OK(objstore_weakref_new(t, lone, &wl));
    OK(objstore_weakref_new(t, wx, &ww));   /* a weak reference to a weak reference */
    root_set(t, "wx", wx);
    root_set(t, "wy", wy);
    root_set(t, "wl", wl);
    root_set(t, "ww", ww);
    commit(t);
    t = wbegin(s);
    OK(objstore_root_del(t, "y"));          /* wy is cleared by this commit */
    commit(t);
    uint8_t d1[16], d2[16];
    OK(objstore_digest(s, d1, NULL));
    size_t len;
    char *text = dump_to_buffer(s, &len, NULL);
    char *copy = sub("copy");
    OK(load_from_buffer(copy, text, len, NULL));
    objstore *c = open_store(copy, NULL);
    verify_clean(c);
    OK(objstore_digest(c, d2, NULL));
    ck_assert_msg(memcmp(d1, d2, 16) == 0, "the loaded store has another digest");
    t = rbegin(c);
    objstore_oid target;
    OK(objstore_weakref_get(t, root_get(t, "wx"), &target));
    ck_assert_uint_eq(target, root_get(t, "x"));
    ck_assert_uint_eq(get_u64(t, target, 0), 11);
    OK(objstore_weakref_get(t, root_get(t, "wy"), &target));
    ck_assert_uint_eq(target, 0);
    OK(objstore_weakref_get(t, root_get(t, "wl"), &target));
    ck_assert_uint_eq(target, root_get(t, "lone"));
    OK(objstore_weakref_get(t, root_get(t, "ww"), &target));
    ck_assert_uint_eq(target, root_get(t, "wx"));
    commit(t);
    /* The index of the loaded store is live: freeing x clears wx. */
    t = wbegin(c);
    OK(objstore_root_del(t, "x"));
    commit(t);
    t = rbegin(c);
    OK(objstore_weakref_get(t, root_get(t, "wx"), &target));
    ck_assert_uint_eq(target, 0);
    commit(t);
    close_store(c);
    close_store(s);
    free(text);
    free(copy);
}
END_TEST

START_TEST(test_dump_then_load_gives_the_same_content_for_a_random_graph_with_cycles)
{
    objstore *s = new_store(NULL);
    build_graph(s, 42 + (uint64_t)_i, 600);
    size_t len;
    char *text = dump_to_buffer(s, &len, NULL);
    char *copy = sub("copy");
    OK(load_from_buffer(copy, text, len, NULL));
    objstore *c = open_store(copy, NULL);
    objstore_verify_report r = verify_clean(c);
    ck_assert_uint_eq(r.unreachable, 0);
    ck_assert_uint_eq(same_content(s, c), 601);
    objstore_verify_report ro = verify_clean(s);
    ck_assert_uint_eq(r.objects, ro.objects);
    ck_assert_uint_eq(r.references, ro.references);
    free(text);
    free(copy);
    close_store(c);
    close_store(s);
}
END_TEST

START_TEST(test_a_million_long_list_dumps_without_recursion)
{
    objstore *s = new_store(NULL);
    uint64_t n = ts_under_sanitizer() ? 200000 : 1000000;
    build_list(s, n);
    FILE *devnull = fopen("/dev/null", "w");
    ck_assert_ptr_nonnull(devnull);
    objstore_dump_stats st;
    OK(objstore_dump(s, devnull, &st));
    fclose(devnull);
    ck_assert_uint_eq(st.objects, n);
    ck_assert_uint_eq(st.references, n - 1);
    close_store(s);
}
END_TEST

START_TEST(test_load_refuses_a_truncated_or_altered_dump_and_commits_nothing)
{
    objstore *s = new_store(NULL);
    build_graph(s, 7, 50);
    size_t len;
    char *text = dump_to_buffer(s, &len, NULL);
    close_store(s);
    struct {
        const char *name;
        size_t len;
        long flip;   /* byte to change, or -1 */
    } cases[] = {
        {"cut-mid-line", len / 2, -1},
        {"cut-before-end", (size_t)(strstr(text, "\nend ") - text) + 1, -1},
        {"no-header", len, 3},
        {"payload-changed", len, (long)(strstr(text, "\nobject 2 ") - text) + 12},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *buf = malloc(len);
        memcpy(buf, text, len);
        if (cases[i].flip >= 0)
            buf[cases[i].flip] = buf[cases[i].flip] == '1' ? '2' : '1';
        char *dir = sub(cases[i].name);
        int rc = load_from_buffer(dir, buf, cases[i].len, NULL);
        MUST(rc == OBJSTORE_EINVAL, "%s: load = %d, expected EINVAL", cases[i].name, rc);
        MUST(strstr(objstore_errmsg(), "line"), "%s: the message names no line: %s",
             cases[i].name, objstore_errmsg());
        /* Nothing of it was committed: an empty, sound store. */
        objstore *c = open_store(dir, NULL);
        objstore_verify_report r = verify_clean(c);
        ck_assert_uint_eq(r.objects, 0);
        ck_assert_uint_eq(r.roots, 0);
        close_store(c);
        free(dir);
        free(buf);
    }
    /* A slot naming an object the dump does not have (checksum right). */
    char body[256];
    const char *lines = "objstore-dump 1\nobject 1 0 1 5 -\n";
    snprintf(body, sizeof body, "%send 1 %016llx\n", lines,
             (unsigned long long)XXH3_64bits(lines, strlen(lines)));
    char *dir = sub("dangling");
    int rc = load_from_buffer(dir, body, strlen(body), NULL);
    MUST(rc == OBJSTORE_EINVAL && strstr(objstore_errmsg(), "slot 0 names object 5"),
         "load = %d: %s", rc, objstore_errmsg());
    free(dir);
    free(text);
}
END_TEST

START_TEST(test_a_dump_of_a_damaged_store_fails_cleanly_naming_the_object)
{
    objstore *s = new_store(NULL);
    build_list(s, 100);
    objstore_txn *t = rbegin(s);
    objstore_oid head = root_get(t, "list");
    objstore_oid second = get_ref(t, head, 0);
    objstore_abort(t);
    close_store(s);
    /* The second node's slot (just after its 16-byte header) now points into
     * the middle of a block. */
    char *heap = sub("store/heap.1");
    int fd = open(heap, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    uint64_t bogus = head + 8;
    ck_assert_int_eq(pwrite(fd, &bogus, 8, (off_t)(second + 16)), 8);
    close(fd);
    s = open_store(g_store, NULL);
    FILE *devnull = fopen("/dev/null", "w");
    int rc = objstore_dump(s, devnull, NULL);
    fclose(devnull);
    ck_assert_int_ne(rc, OBJSTORE_OK);
    char want[64];
    snprintf(want, sizeof want, "object %llu slot 0", U(second));
    MUST(strstr(objstore_errmsg(), want), "the message does not name %s: %s", want,
         objstore_errmsg());
    close_store(s);

    /* Repaired slot, then a type id no type has: refused too, and show
     * still shows the object. */
    fd = open(heap, O_WRONLY);
    ck_assert_int_eq(pwrite(fd, &head, 8, (off_t)(second + 16)), 8);
    uint32_t type = 99;
    ck_assert_int_eq(pwrite(fd, &type, 4, (off_t)(second + 8)), 4);
    close(fd);
    s = open_store(g_store, NULL);
    devnull = fopen("/dev/null", "w");
    rc = objstore_dump(s, devnull, NULL);
    fclose(devnull);
    ck_assert_int_eq(rc, OBJSTORE_ECORRUPT);
    snprintf(want, sizeof want, "object %llu: type id 99", U(second));
    MUST(strstr(objstore_errmsg(), want), "the message does not name %s: %s", want,
         objstore_errmsg());
    close_store(s);
    find_tool();
    char *out;
    ck_assert_int_eq(run(&out, NULL, "show '%s' %llu", g_store, U(second)), 0);
    MUST(strstr(out, "(unregistered type) (99)"), "%s", out);
    free(out);
    free(heap);
}
END_TEST

/* ------------------------------------------------------------------ */
/* backup                                                               */

#define MAX_COMMITS 100000

struct writer {
    objstore *s;
    atomic_bool stop, failed;
    atomic_uint_fast64_t done;     /* commits made */
    uint64_t epoch_of[MAX_COMMITS + 1];   /* epoch after commit i */
    char err[256];
};

/* Commit i: a node with payload i in front of "list", counter = i, meta n = i. */
static int writer_commit(objstore *s, uint64_t i)
{
    objstore_txn *t;
    int rc = objstore_begin(s, 0, &t);
    if (rc)
        return rc;
    objstore_oid head = 0, node, counter;
    if ((rc = objstore_root_get(t, "list", &head)) && rc != OBJSTORE_ENOTFOUND)
        goto fail;
    if ((rc = objstore_root_get(t, "counter", &counter)) ||
        (rc = objstore_new(t, 0, 1, 8, &node)) ||
        (rc = objstore_write(t, node, 0, &i, 8)) ||
        (head && (rc = objstore_set_ref(t, node, 0, head))) ||
        (rc = objstore_root_set(t, "list", node)) ||
        (rc = objstore_write(t, counter, 0, &i, 8)) ||
        (rc = objstore_meta_set(t, "n", 1, &i, 8)))
        goto fail;
    return objstore_commit(t);
fail:
    objstore_abort(t);
    return rc;
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    for (uint64_t i = 1; i <= MAX_COMMITS && !atomic_load(&w->stop); i++) {
        int rc = writer_commit(w->s, i);
        if (rc) {
            snprintf(w->err, sizeof w->err, "commit %llu: %d %s", U(i), rc, objstore_errmsg());
            atomic_store(&w->failed, true);
            break;
        }
        w->epoch_of[i] = objstore_epoch(w->s);
        atomic_store(&w->done, i);
    }
    return NULL;
}

/* The backup at dir must be the model after commit i. */
static void check_backup(const char *dir, uint64_t i)
{
    objstore *b = open_store(dir, NULL);
    objstore_verify_report r = verify_clean(b);
    ck_assert_uint_eq(r.unreachable, 0);
    ck_assert_uint_eq(r.objects, i + 1);
    objstore_txn *t = rbegin(b);
    ck_assert_uint_eq(get_u64(t, root_get(t, "counter"), 0), i);
    const void *v;
    size_t vl;
    if (i) {
        OK(objstore_meta_get(t, "n", 1, &v, &vl));
        uint64_t n;
        memcpy(&n, v, 8);
        ck_assert_uint_eq(n, i);
    }
    objstore_oid o = 0;
    if (i)
        o = root_get(t, "list");
    for (uint64_t k = i; k > 0; k--) {
        MUST(o, "the list ends early, at %llu", U(k));
        MUST(get_u64(t, o, 0) == k, "list node holds %llu, expected %llu", U(get_u64(t, o, 0)),
             U(k));
        o = get_ref(t, o, 0);
    }
    MUST(!o, "the list is longer than %llu", U(i));
    objstore_abort(t);
    close_store(b);
}

START_TEST(test_backups_taken_while_a_writer_commits_each_match_a_committed_epoch)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    root_set(t, "counter", new_obj(t, 0, 0, 8));
    commit(t);
    struct writer *w = calloc(1, sizeof *w);
    ck_assert_ptr_nonnull(w);
    w->s = s;
    w->epoch_of[0] = objstore_epoch(s);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, writer_main, w), 0);
    enum { BACKUPS = 6 };
    uint64_t epochs[BACKUPS];
    char *dirs[BACKUPS];
    for (int k = 0; k < BACKUPS; k++) {
        /* Let the writer get ahead between backups (progress, not time). */
        uint64_t want = atomic_load(&w->done) + 3;
        while (atomic_load(&w->done) < want && !atomic_load(&w->failed) &&
               atomic_load(&w->done) < MAX_COMMITS)
            sched_yield();
        char name[32];
        snprintf(name, sizeof name, "backup%d", k);
        dirs[k] = sub(name);
        OK(objstore_backup(s, dirs[k], &epochs[k]));
    }
    atomic_store(&w->stop, true);
    pthread_join(th, NULL);
    MUST(!w->err[0], "writer: %s", w->err);
    uint64_t done = atomic_load(&w->done);
    for (int k = 0; k < BACKUPS; k++) {
        uint64_t i = UINT64_MAX;
        for (uint64_t c = 0; c <= done && i == UINT64_MAX; c++)
            if (w->epoch_of[c] == epochs[k])
                i = c;
        MUST(i != UINT64_MAX, "backup %d holds epoch %llu, which no commit made", k,
             U(epochs[k]));
        check_backup(dirs[k], i);
        free(dirs[k]);
    }
    /* Backups were taken at different points of the writer's run. */
    ck_assert_uint_gt(epochs[BACKUPS - 1], epochs[0]);
    free(w);
    close_store(s);
}
END_TEST

START_TEST(test_backup_refuses_a_destination_that_is_not_empty)
{
    objstore *s = new_store(NULL);
    char *dest = sub("dest");
    ck_assert_int_eq(mkdir(dest, 0755), 0);
    char *f = ts_path(dest, "file");
    write_all(f, "x", 1);
    uint64_t e;
    EXPECT(OBJSTORE_EEXIST, objstore_backup(s, dest, &e));
    objstore_txn *t = wbegin(s);
    EXPECT(OBJSTORE_ETXN, objstore_backup(s, g_dir, &e));
    objstore_abort(t);
    free(f);
    free(dest);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* the objstore command                                                 */

static char tool[4200];

static void find_tool(void)
{
    char exe[4000];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    ck_assert_int_gt(n, 0);
    exe[n] = 0;
    *strrchr(exe, '/') = 0;   /* .../tests */
    *strrchr(exe, '/') = 0;
    snprintf(tool, sizeof tool, "%s/tools/objstore", exe);
    ck_assert_msg(access(tool, X_OK) == 0, "%s is not built", tool);
}

/* Runs the tool through the shell; stdout into *out, stderr into *err
 * (malloc'd, may be NULL); returns the exit code (128 + signal if killed). */
static int run(char **out, char **err, const char *fmt, ...)
{
    char args[4096], cmdline[9000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *o = sub("tool.out"), *e = sub("tool.err");
    snprintf(cmdline, sizeof cmdline, "'%s' %s >'%s' 2>'%s'", tool, args, o, e);
    int st = system(cmdline);
    size_t len;
    if (out) {
        *out = (char *)read_all(o, &len);
        *out = realloc(*out, len + 1);
        (*out)[len] = 0;
    }
    if (err) {
        *err = (char *)read_all(e, &len);
        *err = realloc(*err, len + 1);
        (*err)[len] = 0;
    }
    free(o);
    free(e);
    ck_assert(st != -1);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs python3 on the tool's last stdout: json.load it, then assert expr
 * (d is the document). */
static void json_check(const char *expr)
{
    char *o = sub("tool.out"), *py = sub("check.py"), cmdline[8192];
    FILE *f = fopen(py, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "import json, sys\nd = json.load(open(sys.argv[1]))\nassert %s, d\n", expr);
    fclose(f);
    snprintf(cmdline, sizeof cmdline, "python3 '%s' '%s' 2>&1", py, o);
    FILE *p = popen(cmdline, "r");
    char buf[2048] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    int st = pclose(p);
    MUST(WIFEXITED(st) && WEXITSTATUS(st) == 0, "json check '%s' failed: %s", expr, buf);
    free(o);
    free(py);
}

static const char *subcommands[] = {"create", "info", "stats", "roots", "types",
                                    "meta", "show", "dump", "load", "backup"};

START_TEST(test_every_subcommand_answers_help_and_the_tool_its_version)
{
    find_tool();
    char *out;
    for (size_t i = 0; i < sizeof subcommands / sizeof *subcommands; i++) {
        ck_assert_int_eq(run(&out, NULL, "%s --help", subcommands[i]), 0);
        char want[64];
        snprintf(want, sizeof want, "usage: objstore %s", subcommands[i]);
        MUST(strstr(out, want), "%s --help printed: %s", subcommands[i], out);
        MUST(strstr(out, "--json"), "%s --help does not mention --json", subcommands[i]);
        free(out);
    }
    ck_assert_int_eq(run(&out, NULL, "--version"), 0);
    MUST(strstr(out, OBJSTORE_VERSION_STRING) && strstr(out, "store format"), "%s", out);
    free(out);
    ck_assert_int_eq(run(NULL, NULL, "frobnicate"), 16);
    ck_assert_int_eq(run(NULL, NULL, "info --bogus x"), 16);
    ck_assert_int_eq(run(NULL, NULL, "info"), 16);
}
END_TEST

START_TEST(test_every_read_subcommand_prints_json_that_a_parser_reads)
{
    find_tool();
    char *out, *err;
    int rc = run(&out, &err, "create '%s' --size 8M --json", g_store);
    MUST(rc == 0, "create: %d %s", rc, err);
    free(out);
    free(err);
    json_check("d['created'] is True");
    objstore *s = open_store(g_store, NULL);
    build_graph(s, 3, 40);
    objstore_txn *t = rbegin(s);
    objstore_oid first = root_get(t, "first");
    uint64_t first_count = refcount(t, first);
    objstore_abort(t);
    close_store(s);

    ck_assert_int_eq(run(NULL, NULL, "info '%s' --json", g_store), 0);
    json_check("d['format'] == 4 and d['roots'] == 4 and d['types'] == 3 and "
               "d['metadata'] == 3 and d['live_objects'] == 41 and d['epoch'] >= 1 and "
               "len(d['uuid']) == 36 and d['redo_records'] == 0");
    ck_assert_int_eq(run(NULL, NULL, "stats '%s' --json", g_store), 0);
    json_check("len(d['classes']) == 32 and sum(c['blocks_in_use'] for c in d['classes']) > 0");
    ck_assert_int_eq(run(NULL, NULL, "roots '%s' --json", g_store), 0);
    json_check("[r.get('name') for r in d][1:] == ['again first', 'first', 'index'] and "
               "d[1]['oid'] == d[2]['oid'] and 'name_hex' in d[0]");
    ck_assert_int_eq(run(NULL, NULL, "types '%s' --json", g_store), 0);
    json_check("[t['name'] for t in d] == ['alpha', 'beta with space', 'gamma%\\x01']");
    ck_assert_int_eq(run(NULL, NULL, "meta '%s' --json", g_store), 0);
    json_check("[m.get('key') for m in d] == ['empty', 'k\\x00bin ary%', 'text']");
    ck_assert_int_eq(run(&out, NULL, "meta '%s' text", g_store), 0);
    ck_assert_str_eq(out, "hello world");
    free(out);
    ck_assert_int_eq(run(NULL, NULL, "meta '%s' text --json", g_store), 0);
    json_check("d['value'] == 'hello world' and d['size'] == 11");
    ck_assert_int_eq(run(NULL, NULL, "show '%s' first --depth 1 --json", g_store), 0);
    char expr[256];
    snprintf(expr, sizeof expr, "d[0]['oid'] == %llu and d[0]['depth'] == 0 and "
             "all(o['depth'] <= 1 for o in d) and d[0]['type'] == 'alpha'", U(first));
    json_check(expr);
    ck_assert_int_eq(run(NULL, NULL, "show '%s' %llu --json", g_store, U(first)), 0);
    snprintf(expr, sizeof expr, "len(d) == 1 and d[0]['refcount'] == %llu", U(first_count));
    json_check(expr);
    char *dump = sub("dump.txt"), *copy = sub("copy"), *bk = sub("bk");
    ck_assert_int_eq(run(NULL, NULL, "dump '%s' -o '%s' --json", g_store, dump), 0);
    json_check("d['objects'] == 41 and d['roots'] == 4");
    ck_assert_int_eq(run(NULL, NULL, "load '%s' -i '%s' --json", copy, dump), 0);
    json_check("d['objects'] == 41 and d['references'] > 40");
    ck_assert_int_eq(run(NULL, NULL, "backup '%s' '%s' --json", g_store, bk), 0);
    json_check("d['epoch'] >= 1");
    objstore *a = open_store(g_store, NULL), *b = open_store(copy, NULL),
             *c = open_store(bk, NULL);
    verify_clean(b);
    verify_clean(c);
    ck_assert_uint_eq(same_content(a, b), 41);
    ck_assert_uint_eq(same_content(a, c), 41);
    close_store(a);
    close_store(b);
    close_store(c);
    free(dump);
    free(copy);
    free(bk);
}
END_TEST

START_TEST(test_the_text_output_shows_what_a_person_needs)
{
    find_tool();
    objstore *s = new_store(NULL);
    build_list(s, 5);
    close_store(s);
    char *out;
    ck_assert_int_eq(run(&out, NULL, "info '%s'", g_store), 0);
    MUST(strstr(out, "live objects      5") && strstr(out, "uuid") && strstr(out, "epoch"),
         "%s", out);
    free(out);
    ck_assert_int_eq(run(&out, NULL, "stats '%s'", g_store), 0);
    MUST(strstr(out, "class   size   num pools") && strstr(out, "    64 "), "%s", out);
    free(out);
    ck_assert_int_eq(run(&out, NULL, "show '%s' list --depth 10", g_store), 0);
    /* Five nodes, each once, with payload bytes in hex and ASCII. */
    size_t objects = 0;
    for (char *p = out; (p = strstr(p, "object ")); p++)
        objects++;
    MUST(objects == 5 && strstr(out, "type       node (1)") && strstr(out, "|"), "%s", out);
    free(out);
    ck_assert_int_eq(run(&out, NULL, "roots '%s'", g_store), 0);
    MUST(!strncmp(out, "list\t", 5), "%s", out);
    free(out);
    ck_assert_int_eq(run(&out, NULL, "dump '%s'", g_store), 0);
    const char *head = "objstore-dump 1\ntype 1 node\nmeta nodes 0500000000000000\n"
                       "root list 1\nobject 1 1 1 2 ";
    MUST(!strncmp(out, head, strlen(head)), "%s", out);
    free(out);
}
END_TEST

START_TEST(test_subcommands_report_a_missing_store_with_exit_8_and_a_message)
{
    find_tool();
    char *err;
    const char *cmds[] = {"info", "stats", "roots", "types", "meta", "show %s 1", "dump",
                          "backup %s dest"};
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        char args[512];
        char *missing = sub("missing");
        if (strchr(cmds[i], '%')) {
            char fmt[64];
            snprintf(fmt, sizeof fmt, "%s", cmds[i]);
            char *sp = strchr(fmt, ' ');
            *sp = 0;
            snprintf(args, sizeof args, "%s '%s' %s", fmt, missing, sp + 4);
        } else {
            snprintf(args, sizeof args, "%s '%s'", cmds[i], missing);
        }
        int rc = run(NULL, &err, "%s", args);
        MUST(rc == 8, "%s: exit %d: %s", args, rc, err);
        MUST(strstr(err, "no such store"), "%s: %s", args, err);
        free(err);
        free(missing);
    }
    /* create over an existing store, load into one */
    create_store(g_store, NULL);
    ck_assert_int_eq(run(NULL, NULL, "create '%s'", g_store), 8);
    ck_assert_int_eq(run(NULL, NULL, "load '%s' </dev/null", g_store), 8);
    ck_assert_int_eq(run(NULL, NULL, "show '%s' nosuchroot", g_store), 8);
    ck_assert_int_eq(run(NULL, NULL, "meta '%s' nosuchkey", g_store), 8);
}
END_TEST

/* A store open for writing by another process (here: this one) can be
 * looked at: the tool sees the last committed state, and the writer's next
 * commit waits until the tool has closed the store. */
START_TEST(test_subcommands_work_beside_a_writer_in_another_process)
{
    find_tool();
    objstore *s = new_store(NULL);
    build_list(s, 3);
    char *err;
    const char *cmds[] = {"info", "stats", "roots", "types", "meta", "dump"};
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        int rc = run(NULL, &err, "%s '%s'", cmds[i], g_store);
        MUST(rc == 0, "%s beside a writer: exit %d: %s", cmds[i], rc, err);
        free(err);
    }
    char *dest = sub("dest"), *dest2 = sub("dest2");
    ck_assert_int_eq(run(NULL, NULL, "backup '%s' '%s'", g_store, dest), 0);
    build_list(s, 5);   /* the writer goes on */
    ck_assert_int_eq(run(NULL, NULL, "backup '%s' '%s'", g_store, dest2), 0);
    close_store(s);
    const char *copies[] = {dest, dest2};
    for (int k = 0; k < 2; k++) {
        objstore *c = open_store(copies[k], NULL);
        verify_clean(c);
        objstore_txn *t = rbegin(c);
        const void *v;
        size_t vlen;
        uint64_t n;
        OK(objstore_meta_get(t, "nodes", 5, &v, &vlen));
        ck_assert_uint_eq(vlen, 8);
        memcpy(&n, v, 8);
        ck_assert_uint_eq(n, k ? 5 : 3);
        commit(t);
        close_store(c);
    }
    free(dest2);
    /* Beside a read-only opener in another process, they work. */
    objstore_options ro = {.flags = OBJSTORE_RDONLY};
    s = open_store(g_store, &ro);
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        int rc = run(NULL, &err, "%s '%s'", cmds[i], g_store);
        MUST(rc == 0, "%s beside a reader: exit %d: %s", cmds[i], rc, err);
        free(err);
    }
    char *dest3 = sub("dest3");
    ck_assert_int_eq(run(NULL, NULL, "backup '%s' '%s'", g_store, dest3), 0);
    close_store(s);
    free(dest);
    free(dest3);
}
END_TEST

START_TEST(test_subcommands_report_a_damaged_store_with_exit_4_never_a_crash)
{
    find_tool();
    objstore *s = new_store(NULL);
    build_list(s, 50);
    close_store(s);
    char *damaged = sub("damaged"), *garbage = sub("garbage"), *slot = sub("slot");
    char *err;
    /* 1: the heap header's magic; 2: meta/data.mdb overwritten with noise;
     * 3: an object's slot pointing into the middle of a block. */
    ck_assert_int_eq(run(NULL, NULL, "backup '%s' '%s'", g_store, damaged), 0);
    ck_assert_int_eq(run(NULL, NULL, "backup '%s' '%s'", g_store, garbage), 0);
    ck_assert_int_eq(run(NULL, NULL, "backup '%s' '%s'", g_store, slot), 0);
    char *p = ts_path(damaged, "heap.1");
    int fd = open(p, O_WRONLY);
    ck_assert_int_eq(pwrite(fd, "XXXXXXXX", 8, 0), 8);
    close(fd);
    free(p);
    p = ts_path(garbage, "meta/data.mdb");
    size_t len;
    uint8_t *m = read_all(p, &len);
    pattern_into(m, len, 99);
    write_all(p, m, len);
    free(m);
    free(p);
    s = open_store(slot, NULL);
    objstore_txn *t = rbegin(s);
    objstore_oid head = root_get(t, "list");
    objstore_abort(t);
    close_store(s);
    p = ts_path(slot, "heap.1");
    fd = open(p, O_WRONLY);
    uint64_t bogus = head + 8;
    ck_assert_int_eq(pwrite(fd, &bogus, 8, (off_t)(head + 16)), 8);
    close(fd);
    free(p);

    const char *cmds[] = {"info", "stats", "roots", "types", "meta", "dump"};
    const char *stores[] = {damaged, garbage};
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
            int rc = run(NULL, &err, "%s '%s'", cmds[i], stores[k]);
            MUST(rc == 4 && strlen(err) > 10, "%s on damaged store %zu: exit %d: %s", cmds[i],
                 k, rc, err);
            free(err);
        }
    int rc = run(NULL, &err, "dump '%s'", slot);
    MUST(rc == 4 && strstr(err, "slot 0"), "dump of a dangling slot: exit %d: %s", rc, err);
    free(err);
    rc = run(NULL, &err, "show '%s' list --depth 3", slot);
    MUST(rc == 4 && strstr(err, "not a live object"), "show of a dangling slot: exit %d: %s",
         rc, err);
    free(err);
    /* A damaged dump is refused by load with exit 4. */
    char *dump = sub("d.txt");
    ck_assert_int_eq(run(NULL, NULL, "dump '%s' -o '%s'", g_store, dump), 0);
    uint8_t *d = read_all(dump, &len);
    write_all(dump, d, len - 10);
    free(d);
    char *copy = sub("copy");
    rc = run(NULL, &err, "load '%s' -i '%s'", copy, dump);
    MUST(rc == 4 && strstr(err, "line"), "load of a truncated dump: exit %d: %s", rc, err);
    free(err);
    free(copy);
    free(dump);
    free(damaged);
    free(garbage);
    free(slot);
}
END_TEST

START_TEST(test_info_shows_the_redo_a_crash_left_and_a_backup_of_it_replays_it)
{
    find_tool();
    objstore *s = new_store(NULL);
    build_list(s, 10);
    close_store(s);
    /* A child commits and dies without closing: its redo stays in meta/. */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        objstore *c;
        objstore_txn *t;
        if (objstore_open(g_store, NULL, &c) || objstore_begin(c, 0, &t))
            _exit(1);
        objstore_oid o;
        uint64_t v = 4242;
        if (objstore_new(t, 0, 0, 8, &o) || objstore_write(t, o, 0, &v, 8) ||
            objstore_root_set(t, "late", o) || objstore_commit(t))
            _exit(2);
        _exit(0);
    }
    ck_assert_int_eq(wait_child(pid), 0);
    ck_assert_int_eq(run(NULL, NULL, "info '%s' --json", g_store), 0);
    json_check("d['redo_records'] >= 1 and d['roots'] == 2 and d['live_objects'] == 11");
    char *bk = sub("bk");
    ck_assert_int_eq(run(NULL, NULL, "backup '%s' '%s' --json", g_store, bk), 0);
    json_check("d['epoch'] == 2");
    objstore *b = open_store(bk, NULL);
    verify_clean(b);
    objstore_txn *t = rbegin(b);
    ck_assert_uint_eq(get_u64(t, root_get(t, "late"), 0), 4242);
    objstore_abort(t);
    close_store(b);
    /* The original was only read: its redo is still pending. */
    ck_assert_int_eq(run(NULL, NULL, "info '%s' --json", g_store), 0);
    json_check("d['redo_records'] >= 1");
    free(bk);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tools");
    TCase *tc = ts_tcase(s, "dump_load", 300);
    tcase_add_test(tc, test_dump_then_load_gives_the_same_content_for_a_list);
    tcase_add_test(tc, test_dump_then_load_keeps_weak_references_and_the_digest);
    tcase_add_loop_test(tc, test_dump_then_load_gives_the_same_content_for_a_random_graph_with_cycles, 0, 3);
    tcase_add_test(tc, test_a_million_long_list_dumps_without_recursion);
    tcase_add_test(tc, test_load_refuses_a_truncated_or_altered_dump_and_commits_nothing);
    tcase_add_test(tc, test_a_dump_of_a_damaged_store_fails_cleanly_naming_the_object);
    tc = ts_tcase(s, "backup", 300);
    tcase_add_test(tc, test_backups_taken_while_a_writer_commits_each_match_a_committed_epoch);
    tcase_add_test(tc, test_backup_refuses_a_destination_that_is_not_empty);
    tc = ts_tcase(s, "command", 300);
    tcase_add_test(tc, test_every_subcommand_answers_help_and_the_tool_its_version);
    tcase_add_test(tc, test_every_read_subcommand_prints_json_that_a_parser_reads);
    tcase_add_test(tc, test_the_text_output_shows_what_a_person_needs);
    tcase_add_test(tc, test_subcommands_report_a_missing_store_with_exit_8_and_a_message);
    tcase_add_test(tc, test_subcommands_work_beside_a_writer_in_another_process);
    tcase_add_test(tc, test_subcommands_report_a_damaged_store_with_exit_4_never_a_crash);
    tcase_add_test(tc, test_info_shows_the_redo_a_crash_left_and_a_backup_of_it_replays_it);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
