/*
 * inspect.c -- looking inside a store, dumping and loading its logical
 * content, and hot backup.
 *
 * Dump format (docs/FORMAT.md, "Dump format"): one record per line,
 *
 *   objstore-dump 1
 *   type ID NAME                      one per type, ids 1, 2, ... in order
 *   meta KEY HEX                      one per user metadata entry, key order
 *   root NAME N                       one per root, name order
 *   object N TYPE NREFS S1 .. Sk HEX  one per reachable object, N = 1, 2, ...
 *   end COUNT CHECKSUM                objects, XXH3-64 of every byte before
 *
 * NAME and KEY are escaped (%XX for every byte outside '!'..'~' and for
 * '%'); HEX is the payload or value in lowercase hex, "-" when empty; a slot
 * is the number of the object it points at, 0 for null.
 *
 * Rules:
 *   D1 objects are numbered in breadth-first order from the roots in name
 *      order, each the first time it is met; they are written in that order,
 *      so a dump of the same content is the same text, whatever the oids.
 *   D2 no recursion: the queue of the breadth-first walk is the list of
 *      numbered objects itself (8 bytes per object) plus a map oid -> number.
 *   D3 load trusts nothing: every line is parsed with bounds, numbers must be
 *      in order and in range, the end line's count and checksum must match,
 *      and only then is the one transaction committed.
 *   D4 a weak reference's target is an oid, not a slot: the object line
 *      carries a zero payload, and a line "weak N M" after the objects names
 *      its target by number (0: cleared, or a target only weak references
 *      reach, which the dump leaves out); load makes it again with
 *      objstore_weakref_new, so the new store's weak index is whole.
 *   B1 backup copies meta/ (mdb_env_copy2) and the heap file while holding
 *      the read side of the store's lock: no commit runs meanwhile, and a
 *      commit writes its heap bytes before it lets the lock go, so the copied
 *      heap file and the copied LMDB describe the same epoch; redo records
 *      the copy carries are replayed when it is opened, as after a crash.
 */
#include "store_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* ---- info ---- */

static uint64_t db_entries(MDB_txn *txn, MDB_dbi db)
{
    MDB_stat ms;
    return mdb_stat(txn, db, &ms) == 0 ? ms.ms_entries : 0;
}

int objstore_get_store_info(objstore *s, objstore_store_info *info)
{
    memset(info, 0, sizeof *info);
    /* One read lock around both, so the counts describe one epoch (the
     * nested read inside objstore_get_stats does not wait: lock.c K3). */
    bool locked = store_read_lock(s);
    if (!locked)
        store_group_drain(s);   /* this thread's write transaction: LMDB catches up */
    int rc = objstore_get_stats(s, &info->stats);
    if (rc)
        goto out;
    info->format = STORE_FORMAT_VERSION;
    memcpy(info->uuid, s->uuid, 16);
    info->generation = s->generation;
    info->epoch = s->epoch;
    MDB_txn *txn;
    int mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (mrc) {
        rc = store_lmdb_err(mrc, "info");
        goto out;
    }
    /* No leader appends meanwhile: the read lock waits for every sealed
     * group, and a writer has drained (group.c G2). */
    info->journal_entries = s->j_entries;
    info->journal_bytes = store_journal_used(s);
    info->journal_file_bytes = s->j_size;
    info->roots = db_entries(txn, s->db_roots);
    info->types = db_entries(txn, s->db_typeids);
    info->metadata = db_entries(txn, s->db_user);
    MDB_cursor *c;
    if (mdb_cursor_open(txn, s->db_main, &c) == 0) {
        MDB_val k, v;
        for (mrc = store_redo_seek(c, 0, &k, &v); mrc == 0; mrc = store_redo_next(c, &k, &v)) {
            info->redo_records++;
            info->redo_bytes += v.mv_size;
        }
        mdb_cursor_close(c);
    }
    mdb_txn_abort(txn);
    char path[4096];
    snprintf(path, sizeof path, "%s/meta/data.mdb", s->dir);
    struct stat sb;
    if (stat(path, &sb) == 0)
        info->meta_bytes = (uint64_t)sb.st_size;
out:
    if (locked)
        store_read_end(s);
    return rc;
}

int objstore_meta_iter(objstore_txn *t, objstore_meta_fn fn, void *arg)
{
    int rc = store_check_txn(t, false);
    if (rc)
        return rc;
    if (t->write)
        return store_err(OBJSTORE_ETXN, "%s: metadata iteration in a write transaction",
                         t->s->dir);
    MDB_txn *rt = store_rtxn(t, &rc);
    if (!rt)
        return rc;
    MDB_cursor *c;
    int mrc = mdb_cursor_open(rt, t->s->db_user, &c);
    if (mrc)
        return store_lmdb_err(mrc, "metadata iteration");
    MDB_val k, v;
    int ret = 0;
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST); mrc == 0 && !ret;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
        ret = fn(arg, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
    mdb_cursor_close(c);
    if (!ret && mrc != MDB_NOTFOUND)
        ret = store_lmdb_err(mrc, "metadata iteration");
    return ret;
}

/* ---- dump ---- */

struct out {
    FILE *f;
    XXH3_state_t *sum;
    bool err;
};

static void put(struct out *o, const void *p, size_t n)
{
    if (o->err || !n)
        return;
    XXH3_64bits_update(o->sum, p, n);
    if (fwrite(p, 1, n, o->f) != n)
        o->err = true;
}

static void putf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct out *o, const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    put(o, buf, n < (int)sizeof buf ? (size_t)n : sizeof buf - 1);
}

static void put_escaped(struct out *o, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char buf[256];
    size_t b = 0;
    for (size_t i = 0; i < n; i++) {
        if (b > sizeof buf - 4) {
            put(o, buf, b);
            b = 0;
        }
        if (p[i] > ' ' && p[i] < 0x7f && p[i] != '%') {
            buf[b++] = (char)p[i];
        } else {
            buf[b++] = '%';
            buf[b++] = hex[p[i] >> 4];
            buf[b++] = hex[p[i] & 15];
        }
    }
    put(o, buf, b);
}

static void put_hex(struct out *o, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (!n) {
        put(o, "-", 1);
        return;
    }
    char buf[4096];
    size_t b = 0;
    for (size_t i = 0; i < n; i++) {
        if (b == sizeof buf) {
            put(o, buf, b);
            b = 0;
        }
        buf[b++] = hex[p[i] >> 4];
        buf[b++] = hex[p[i] & 15];
    }
    put(o, buf, b);
}

struct dump {
    objstore_txn *t;
    struct out *o;
    u64map num;            /* oid -> number */
    struct u64vec order;   /* number - 1 -> oid: the BFS queue (D2) */
    struct u64vec weak;    /* pairs: a weak reference's number, its target's oid */
    objstore_dump_stats *st;
};

/* The number of oid, numbering (and queueing) it if new.  *n = 0 and an
 * error when oid is not a live object. */
static int number(struct dump *d, uint64_t oid, uint64_t *n, const char *from)
{
    uint64_t *v = u64map_find(&d->num, oid);
    if (v) {
        *n = *v;
        return OBJSTORE_OK;
    }
    objstore_objinfo info;
    int rc = objstore_info(d->t, oid, &info);
    if (rc) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", objstore_errmsg());
        return store_err(rc, "dump: %s names %llu: %s", from, (unsigned long long)oid, msg);
    }
    bool added;
    if (!(v = u64map_upsert(&d->num, oid, &added)) || !u64vec_push(&d->order, oid))
        return store_err(OBJSTORE_ENOMEM, "dump: out of memory");
    *v = *n = d->order.n;
    return OBJSTORE_OK;
}

static int dump_meta(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct dump *d = arg;
    put(d->o, "meta ", 5);
    put_escaped(d->o, key, klen);
    put(d->o, " ", 1);
    put_hex(d->o, val, vlen);
    put(d->o, "\n", 1);
    d->st->metadata++;
    return 0;
}

static int dump_root(void *arg, const char *name, objstore_oid oid)
{
    struct dump *d = arg;
    char from[80];
    snprintf(from, sizeof from, "root '%.60s'", name);
    uint64_t n;
    int rc = number(d, oid, &n, from);
    if (rc)
        return rc;
    put(d->o, "root ", 5);
    put_escaped(d->o, (const uint8_t *)name, strlen(name));
    putf(d->o, " %llu\n", (unsigned long long)n);
    d->st->roots++;
    return 0;
}

static int dump_objects(struct dump *d)
{
    for (size_t i = 0; i < d->order.n; i++) {
        uint64_t oid = d->order.v[i];
        objstore_objinfo info;
        const void *payload;
        uint64_t size;
        int rc = objstore_info(d->t, oid, &info);
        if (!rc)
            rc = objstore_get(d->t, oid, &payload, &size);
        if (rc)
            return rc;
        if (info.type > d->t->s->ntypes_committed)
            return store_err(OBJSTORE_ECORRUPT, "dump: object %llu: type id %u is not "
                             "registered", (unsigned long long)oid, info.type);
        uint32_t wt = d->t->s->weak_type;
        if (wt && info.type == wt && info.nrefs == 0 && size == 8) {
            /* D4: a weak reference's target is an oid; it goes out as a
             * number once every object has one, and the payload as 0. */
            uint64_t target;
            memcpy(&target, payload, 8);
            if (!u64vec_push(&d->weak, i + 1) || !u64vec_push(&d->weak, target))
                return store_err(OBJSTORE_ENOMEM, "dump: out of memory");
            payload = "\0\0\0\0\0\0\0\0";
        }
        putf(d->o, "object %zu %u %u", i + 1, info.type, info.nrefs);
        for (uint32_t j = 0; j < info.nrefs; j++) {
            uint64_t target, n = 0;
            if ((rc = objstore_get_ref(d->t, oid, j, &target)))
                return rc;
            if (target) {
                char from[80];
                snprintf(from, sizeof from, "object %llu slot %u", (unsigned long long)oid, j);
                if ((rc = number(d, target, &n, from)))
                    return rc;
                d->st->references++;
            }
            putf(d->o, " %llu", (unsigned long long)n);
        }
        put(d->o, " ", 1);
        put_hex(d->o, payload, size);
        put(d->o, "\n", 1);
        d->st->objects++;
        d->st->payload_bytes += size;
        if (d->o->err)
            return store_err(OBJSTORE_EIO, "dump: write: %s", strerror(errno));
    }
    for (size_t i = 0; i < d->weak.n; i += 2) {
        uint64_t *m = d->weak.v[i + 1] ? u64map_find(&d->num, d->weak.v[i + 1]) : NULL;
        putf(d->o, "weak %llu %llu\n", (unsigned long long)d->weak.v[i],
             (unsigned long long)(m ? *m : 0));
    }
    if (d->o->err)
        return store_err(OBJSTORE_EIO, "dump: write: %s", strerror(errno));
    return OBJSTORE_OK;
}

int objstore_dump(objstore *s, FILE *out, objstore_dump_stats *st)
{
    objstore_dump_stats local;
    if (!st)
        st = &local;
    memset(st, 0, sizeof *st);
    struct out o = {.f = out, .sum = XXH3_createState()};
    if (!o.sum)
        return store_err(OBJSTORE_ENOMEM, "dump: out of memory");
    XXH3_64bits_reset(o.sum);
    struct dump d = {.o = &o, .st = st};
    int rc = objstore_begin(s, OBJSTORE_TXN_RDONLY, &d.t);
    if (rc) {
        XXH3_freeState(o.sum);
        return rc;
    }
    st->epoch = s->epoch;
    putf(&o, "objstore-dump 1\n");
    for (uint32_t id = 1; !rc && id <= s->ntypes_committed; id++) {
        const char *name;
        if ((rc = objstore_type_name(d.t, id, &name)))
            break;
        putf(&o, "type %u ", id);
        put_escaped(&o, (const uint8_t *)name, strlen(name));
        put(&o, "\n", 1);
        st->types++;
    }
    if (!rc)
        rc = objstore_meta_iter(d.t, dump_meta, &d);
    if (!rc)
        rc = objstore_root_iter(d.t, dump_root, &d);
    if (!rc)
        rc = dump_objects(&d);
    if (!rc) {
        char end[96];
        snprintf(end, sizeof end, "end %zu %016llx\n", d.order.n,
                 (unsigned long long)XXH3_64bits_digest(o.sum));
        if (fputs(end, out) == EOF || fflush(out) != 0 || o.err)
            rc = store_err(OBJSTORE_EIO, "dump: write: %s", strerror(errno));
    } else if (rc == OBJSTORE_EIO || o.err) {
        rc = store_err(OBJSTORE_EIO, "dump: write: %s", strerror(errno));
    }
    objstore_abort(d.t);
    u64map_free(&d.num);
    free(d.order.v);
    free(d.weak.v);
    XXH3_freeState(o.sum);
    return rc;
}

/* ---- load ---- */

struct edge {
    uint64_t from, to;   /* object numbers */
    uint32_t slot;
};

struct load {
    objstore_txn *t;
    FILE *in;
    char *line;
    size_t cap;
    uint64_t lineno;
    XXH3_state_t *sum;
    struct u64vec oids;       /* number - 1 -> oid */
    struct edge *edges;
    size_t nedges, edges_cap;
    char **root_names;
    uint64_t *root_nums;
    size_t nroots, roots_cap;
    struct u64vec weak;       /* pairs: weak reference number, target number */
    uint8_t *buf;             /* decoded bytes */
    size_t buf_cap;
    objstore_dump_stats *st;
};

static int bad(struct load *l, const char *what)
{
    return store_err(OBJSTORE_EINVAL, "load: line %llu: %s", (unsigned long long)l->lineno,
                     what);
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static bool grow_buf(struct load *l, size_t n)
{
    if (n <= l->buf_cap)
        return true;
    size_t cap = l->buf_cap ? l->buf_cap : 256;
    while (cap < n)
        cap *= 2;
    uint8_t *p = realloc(l->buf, cap);
    if (!p)
        return false;
    l->buf = p;
    l->buf_cap = cap;
    return true;
}

/* Decodes an escaped token into l->buf; *n its length. */
static int unescape(struct load *l, const char *tok, size_t *n)
{
    size_t len = strlen(tok);
    if (!grow_buf(l, len + 1))
        return store_err(OBJSTORE_ENOMEM, "load: out of memory");
    size_t b = 0;
    for (size_t i = 0; i < len; i++) {
        if (tok[i] == '%') {
            int h = i + 2 < len ? hexval(tok[i + 1]) : -1;
            int g = h >= 0 ? hexval(tok[i + 2]) : -1;
            if (g < 0)
                return bad(l, "bad %-escape");
            l->buf[b++] = (uint8_t)(h << 4 | g);
            i += 2;
        } else {
            l->buf[b++] = (uint8_t)tok[i];
        }
    }
    l->buf[b] = 0;
    *n = b;
    return OBJSTORE_OK;
}

static int unhex(struct load *l, const char *tok, size_t *n)
{
    if (!strcmp(tok, "-")) {
        *n = 0;
        return grow_buf(l, 1) ? OBJSTORE_OK : store_err(OBJSTORE_ENOMEM, "load: out of memory");
    }
    size_t len = strlen(tok);
    if (len % 2)
        return bad(l, "odd number of hex digits");
    if (!grow_buf(l, len / 2 + 1))
        return store_err(OBJSTORE_ENOMEM, "load: out of memory");
    for (size_t i = 0; i < len; i += 2) {
        int h = hexval(tok[i]), g = hexval(tok[i + 1]);
        if (h < 0 || g < 0)
            return bad(l, "bad hex digit");
        l->buf[i / 2] = (uint8_t)(h << 4 | g);
    }
    *n = len / 2;
    return OBJSTORE_OK;
}

/* Parses a decimal number token (no sign, no junk). */
static bool num(const char *tok, uint64_t max, uint64_t *v)
{
    if (!tok || *tok < '0' || *tok > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long x = strtoull(tok, &end, 10);
    if (errno || *end || x > max)
        return false;
    *v = x;
    return true;
}

/* The next space-separated token of the line, or NULL. */
static char *tok(char **p)
{
    char *s = *p;
    if (!s || !*s)
        return NULL;
    char *sp = strchr(s, ' ');
    if (sp) {
        *sp = 0;
        *p = sp + 1;
    } else {
        *p = s + strlen(s);
    }
    return s;
}

static int load_object(struct load *l, char *rest)
{
    uint64_t n, type, nrefs;
    if (!num(tok(&rest), UINT64_MAX, &n) || n != l->oids.n + 1)
        return bad(l, "object numbers must run 1, 2, 3, ...");
    if (!num(tok(&rest), UINT32_MAX, &type) || !num(tok(&rest), UINT32_MAX, &nrefs))
        return bad(l, "bad type or slot count");
    for (uint64_t j = 0; j < nrefs; j++) {
        uint64_t to;
        if (!num(tok(&rest), UINT64_MAX, &to))
            return bad(l, "bad slot");
        if (!to)
            continue;
        if (l->nedges == l->edges_cap) {
            size_t cap = l->edges_cap ? l->edges_cap * 2 : 1024;
            struct edge *e = realloc(l->edges, cap * sizeof *e);
            if (!e)
                return store_err(OBJSTORE_ENOMEM, "load: out of memory");
            l->edges = e;
            l->edges_cap = cap;
        }
        l->edges[l->nedges++] = (struct edge){n, to, (uint32_t)j};
    }
    char *hex = tok(&rest);
    if (!hex || *rest)
        return bad(l, "object line: payload missing, or more than one");
    size_t size;
    int rc = unhex(l, hex, &size);
    if (rc)
        return rc;
    objstore_oid oid;
    if ((rc = objstore_new(l->t, (uint32_t)type, (uint32_t)nrefs, size, &oid)) ||
        (size && (rc = objstore_write(l->t, oid, 0, l->buf, size)))) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s", objstore_errmsg());
        return store_err(rc, "load: line %llu: %s", (unsigned long long)l->lineno, msg);
    }
    if (!u64vec_push(&l->oids, oid))
        return store_err(OBJSTORE_ENOMEM, "load: out of memory");
    l->st->objects++;
    l->st->payload_bytes += size;
    return OBJSTORE_OK;
}

static int load_line(struct load *l, char *line)
{
    char *rest = line;
    const char *kind = tok(&rest);
    int rc;
    size_t n;
    if (!kind)
        return bad(l, "empty line");
    if (!strcmp(kind, "type")) {
        uint64_t id;
        uint32_t got;
        if (!num(tok(&rest), UINT32_MAX, &id))
            return bad(l, "bad type id");
        const char *name = tok(&rest);
        if (!name || *rest)
            return bad(l, "type line: name missing, or more than one");
        if ((rc = unescape(l, name, &n)))
            return rc;
        if (n != strlen((char *)l->buf))
            return bad(l, "a type name holds a NUL byte");
        if ((rc = objstore_type_register(l->t, (char *)l->buf, &got)))
            return rc;
        if (got != id)
            return bad(l, "type ids must run 1, 2, 3, ... and names be distinct");
        l->st->types++;
    } else if (!strcmp(kind, "meta")) {
        const char *key = tok(&rest), *val = tok(&rest);
        if (!key || !val || *rest)
            return bad(l, "meta line: expected a key and a value");
        if ((rc = unescape(l, key, &n)))
            return rc;
        uint8_t *k = malloc(n ? n : 1);
        if (!k)
            return store_err(OBJSTORE_ENOMEM, "load: out of memory");
        memcpy(k, l->buf, n);
        size_t vlen;
        if (!(rc = unhex(l, val, &vlen)))
            rc = objstore_meta_set(l->t, k, n, l->buf, vlen);
        free(k);
        if (rc)
            return rc;
        l->st->metadata++;
    } else if (!strcmp(kind, "root")) {
        const char *name = tok(&rest);
        uint64_t to;
        if (!name || !num(tok(&rest), UINT64_MAX, &to) || !to || *rest)
            return bad(l, "root line: expected a name and an object number");
        if ((rc = unescape(l, name, &n)))
            return rc;
        if (n != strlen((char *)l->buf))
            return bad(l, "a root name holds a NUL byte");
        if (l->nroots == l->roots_cap) {
            size_t cap = l->roots_cap ? l->roots_cap * 2 : 64;
            char **names = realloc(l->root_names, cap * sizeof *names);
            if (names)
                l->root_names = names;
            uint64_t *nums = realloc(l->root_nums, cap * sizeof *nums);
            if (nums)
                l->root_nums = nums;
            if (!names || !nums)
                return store_err(OBJSTORE_ENOMEM, "load: out of memory");
            l->roots_cap = cap;
        }
        if (!(l->root_names[l->nroots] = strdup((char *)l->buf)))
            return store_err(OBJSTORE_ENOMEM, "load: out of memory");
        l->root_nums[l->nroots++] = to;
    } else if (!strcmp(kind, "object")) {
        return load_object(l, rest);
    } else if (!strcmp(kind, "weak")) {
        uint64_t w, to;
        if (!num(tok(&rest), UINT64_MAX, &w) || !num(tok(&rest), UINT64_MAX, &to) || *rest ||
            !w || w > l->oids.n)
            return bad(l, "weak line: expected a weak reference's number and its target's");
        if (!u64vec_push(&l->weak, w) || !u64vec_push(&l->weak, to))
            return store_err(OBJSTORE_ENOMEM, "load: out of memory");
    } else {
        return bad(l, "unknown record (expected type, meta, root, object, weak or end)");
    }
    return OBJSTORE_OK;
}

/* Reads one line into l->line (*len bytes, the newline included). */
static int next_line(struct load *l, bool *eof, size_t *len)
{
    errno = 0;
    ssize_t n = getline(&l->line, &l->cap, l->in);
    if (n < 0) {
        if (ferror(l->in))
            return store_err(OBJSTORE_EIO, "load: read: %s", strerror(errno));
        *eof = true;
        return OBJSTORE_OK;
    }
    l->lineno++;
    *eof = false;
    *len = (size_t)n;
    if (n == 0 || l->line[n - 1] != '\n')
        return bad(l, "the last line has no newline (truncated dump)");
    return OBJSTORE_OK;
}

/* Weak references (D4): each dumped as a cleared one is replaced by a new
 * one to its target, before any slot or root links it; the one it replaces
 * is left at count 0 and freed by the load's commit.  Those whose target
 * is itself a weak reference of the dump go last, so they name the
 * replacement. */
static int load_weak(struct load *l)
{
    u64map pending = {0};
    int rc = OBJSTORE_OK;
    for (size_t i = 0; i < l->weak.n && !rc; i += 2)
        if (!u64map_upsert(&pending, l->weak.v[i], NULL))
            rc = store_err(OBJSTORE_ENOMEM, "load: out of memory");
    for (int pass = 0; pass < 2 && !rc; pass++)
        for (size_t i = 0; i < l->weak.n && !rc; i += 2) {
            uint64_t w = l->weak.v[i], to = l->weak.v[i + 1];
            if (!to || !u64map_find(&pending, w) ||
                (pass == 0 && u64map_find(&pending, to)))
                continue;
            if (to > l->oids.n)
                return store_err(OBJSTORE_EINVAL, "load: weak reference %llu names object "
                                 "%llu; the dump has %zu", (unsigned long long)w,
                                 (unsigned long long)to, l->oids.n);
            objstore_oid nw;
            if ((rc = objstore_weakref_new(l->t, l->oids.v[to - 1], &nw)))
                break;
            l->oids.v[w - 1] = nw;
            u64map_del(&pending, w);
        }
    u64map_free(&pending);
    return rc;
}

static int load_all(struct load *l)
{
    bool eof;
    size_t len;
    int rc = next_line(l, &eof, &len);
    if (rc)
        return rc;
    if (eof || strcmp(l->line, "objstore-dump 1\n"))
        return store_err(OBJSTORE_EINVAL, "load: line 1: not an objstore dump (version 1)");
    XXH3_64bits_update(l->sum, l->line, len);
    for (;;) {
        if ((rc = next_line(l, &eof, &len)))
            return rc;
        if (eof)
            return bad(l, "no end line: the dump is truncated");
        if (!strncmp(l->line, "end ", 4))
            break;
        XXH3_64bits_update(l->sum, l->line, len);
        l->line[len - 1] = 0;
        if ((rc = load_line(l, l->line)))
            return rc;
    }
    /* end COUNT CHECKSUM */
    l->line[len - 1] = 0;
    char *rest = l->line + 4;
    uint64_t count;
    const char *sum = NULL;
    if (!num(tok(&rest), UINT64_MAX, &count) || !(sum = tok(&rest)) || *rest)
        return bad(l, "end line: expected a count and a checksum");
    char want[32];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)XXH3_64bits_digest(l->sum));
    if (count != l->oids.n)
        return bad(l, "the object count of the end line differs: objects are missing");
    if (strcmp(sum, want))
        return bad(l, "checksum mismatch: the dump was changed or damaged");
    if ((rc = next_line(l, &eof, &len)))
        return rc;
    if (!eof)
        return bad(l, "text after the end line");
    if ((rc = load_weak(l)))
        return rc;
    /* Every object exists now: link slots, then roots. */
    for (size_t i = 0; i < l->nedges; i++) {
        struct edge *e = &l->edges[i];
        if (e->to > l->oids.n)
            return store_err(OBJSTORE_EINVAL, "load: object %llu slot %u names object %llu; "
                             "the dump has %zu", (unsigned long long)e->from, e->slot,
                             (unsigned long long)e->to, l->oids.n);
        if ((rc = objstore_set_ref(l->t, l->oids.v[e->from - 1], e->slot,
                                   l->oids.v[e->to - 1])))
            return rc;
        l->st->references++;
    }
    for (size_t i = 0; i < l->nroots; i++) {
        if (l->root_nums[i] > l->oids.n)
            return store_err(OBJSTORE_EINVAL, "load: root '%.200s' names object %llu; the "
                             "dump has %zu", l->root_names[i],
                             (unsigned long long)l->root_nums[i], l->oids.n);
        if ((rc = objstore_root_set(l->t, l->root_names[i], l->oids.v[l->root_nums[i] - 1])))
            return rc;
        l->st->roots++;
    }
    return OBJSTORE_OK;
}

int objstore_load(const char *dir, FILE *in, const objstore_options *opts,
                  objstore_dump_stats *st)
{
    objstore_dump_stats local;
    if (!st)
        st = &local;
    memset(st, 0, sizeof *st);
    int rc = objstore_create(dir, opts);
    if (rc)
        return rc;
    objstore *s;
    if ((rc = objstore_open(dir, opts, &s)))
        return rc;
    struct load l = {.in = in, .st = st, .sum = XXH3_createState()};
    if (!l.sum) {
        objstore_close(s);
        return store_err(OBJSTORE_ENOMEM, "load: out of memory");
    }
    XXH3_64bits_reset(l.sum);
    if (!(rc = objstore_begin(s, 0, &l.t))) {
        rc = load_all(&l);
        if (rc) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", objstore_errmsg());
            objstore_abort(l.t);
            store_err(rc, "%s", msg);
        } else {
            rc = objstore_commit(l.t);
        }
    }
    st->epoch = s->epoch;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", objstore_errmsg());
    int crc = objstore_close(s);
    if (rc)
        store_err(rc, "%s", msg);
    else
        rc = crc;
    for (size_t i = 0; i < l.nroots; i++)
        free(l.root_names[i]);
    free(l.root_names);
    free(l.root_nums);
    free(l.edges);
    free(l.oids.v);
    free(l.weak.v);
    free(l.buf);
    free(l.line);
    XXH3_freeState(l.sum);
    return rc;
}

/* ---- backup ---- */

static int copy_heap(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return store_err(OBJSTORE_EIO, "backup: %s: %s", from, strerror(errno));
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        close(in);
        return store_err(OBJSTORE_EIO, "backup: %s: %s", to, strerror(errno));
    }
    struct stat sb;
    int rc = OBJSTORE_OK;
    if (fstat(in, &sb) != 0 || ftruncate(out, sb.st_size) != 0) {
        rc = store_err(errno == ENOSPC ? OBJSTORE_ENOSPC : OBJSTORE_EIO, "backup: %s: %s", to,
                       strerror(errno));
        goto out;
    }
    /* Data extents only: released arenas are holes and stay holes. */
    off_t pos = 0, end = sb.st_size;
    while (pos < end) {
        off_t data = lseek(in, pos, SEEK_DATA);
        if (data < 0 && errno == ENXIO)
            break;
        if (data < 0)
            data = pos;   /* no SEEK_DATA: copy everything */
        off_t hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0 || hole > end)
            hole = end;
        off_t a = data, b = data;
        while (a < hole) {
            ssize_t n = copy_file_range(in, &a, out, &b, (size_t)(hole - a), 0);
            if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL)) {
                char buf[1 << 16];
                size_t want = hole - a < (off_t)sizeof buf ? (size_t)(hole - a) : sizeof buf;
                n = pread(in, buf, want, a);
                if (n > 0 && pwrite(out, buf, (size_t)n, b) != n)
                    n = -1;
                if (n > 0) {
                    a += n;
                    b += n;
                }
            }
            if (n <= 0) {
                rc = store_err(errno == ENOSPC ? OBJSTORE_ENOSPC : OBJSTORE_EIO,
                               "backup: copy %s: %s", from,
                               n == 0 ? "file shrank while copied" : strerror(errno));
                goto out;
            }
        }
        pos = hole;
    }
    if (fsync(out) != 0)
        rc = store_err(OBJSTORE_EIO, "backup: fsync %s: %s", to, strerror(errno));
out:
    close(in);
    if (close(out) != 0 && !rc)
        rc = store_err(OBJSTORE_EIO, "backup: %s: %s", to, strerror(errno));
    return rc;
}

static int fsync_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int make_dest(const char *dest, bool *made)
{
    *made = mkdir(dest, 0755) == 0;
    if (*made)
        return OBJSTORE_OK;
    if (errno != EEXIST)
        return store_err(errno == ENOENT ? OBJSTORE_ENOENT : OBJSTORE_EIO,
                         "backup: %s: cannot create directory: %s", dest, strerror(errno));
    int fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return store_err(OBJSTORE_EEXIST, "backup: %s exists and is not a directory", dest);
    DIR *d = fdopendir(fd);
    bool empty = d != NULL;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            empty = false;
    if (d)
        closedir(d);
    else
        close(fd);
    return empty ? OBJSTORE_OK
                 : store_err(OBJSTORE_EEXIST, "backup: %s is not empty", dest);
}

/* After a failed backup: removes the names backup creates in dest, which
 * was empty (or new) when it began, so a retry finds it empty again. */
static void unmake_dest(const char *dest, uint64_t generation, bool made)
{
    char p[4096];
    static const char *names[] = {"lock", "journal", "meta/data.mdb", "meta/lock.mdb",
                                  "meta"};
    snprintf(p, sizeof p, "%s/heap.%llu", dest, (unsigned long long)generation);
    unlink(p);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(p, sizeof p, "%s/%s", dest, names[i]);
        if (unlink(p) != 0 && errno == EISDIR)
            rmdir(p);   /* only when empty: nothing but what backup made */
    }
    if (made)
        rmdir(dest);
}

int objstore_backup(objstore *s, const char *dest, uint64_t *epoch)
{
    if (epoch)
        *epoch = 0;
    if (!s || !dest || !*dest)
        return store_err(OBJSTORE_EINVAL, "backup: no store or destination");
    if (s->failed)
        return store_err(OBJSTORE_EFAILED, "%s: the store handle failed earlier", s->dir);
    if (store_is_writer(s))
        return store_err(OBJSTORE_ETXN, "%s: backup inside this thread's write transaction",
                         s->dir);
    bool made;
    int rc = make_dest(dest, &made);
    if (rc)
        return rc;
    size_t plen = strlen(s->dir) + strlen(dest) + 64;
    char *from = malloc(plen), *to = malloc(plen), *meta = malloc(plen);
    if (!from || !to || !meta) {
        rc = store_err(OBJSTORE_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(meta, plen, "%s/meta", dest);
    if (mkdir(meta, 0755) != 0) {
        rc = store_err(OBJSTORE_EIO, "backup: %s: %s", meta, strerror(errno));
        goto out;
    }
    store_read_begin(s);   /* B1: no commit until both copies are taken */
    uint64_t at = s->epoch;
    snprintf(from, plen, "%s/heap.%llu", s->dir, (unsigned long long)s->generation);
    snprintf(to, plen, "%s/heap.%llu", dest, (unsigned long long)s->generation);
    int mrc = mdb_env_copy2(s->env, meta, MDB_CP_COMPACT);
    if (mrc)
        rc = store_lmdb_err(mrc, "backup: copy meta/");
    else
        rc = copy_heap(from, to);
    if (!rc) {   /* the journal's run, as it stands (journal.c) */
        snprintf(from, plen, "%s/journal", s->dir);
        snprintf(to, plen, "%s/journal", dest);
        rc = copy_heap(from, to);
    }
    store_read_end(s);
    if (rc)
        goto out;
    snprintf(to, plen, "%s/lock", dest);
    int fd = open(to, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 || fsync(fd) != 0) {
        rc = store_err(OBJSTORE_EIO, "backup: %s: %s", to, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto out;
    }
    close(fd);
    snprintf(to, plen, "%s/meta/data.mdb", dest);
    if (fsync_file(to) || fsync_file(meta) || fsync_file(dest)) {
        rc = store_err(OBJSTORE_EIO, "backup: fsync %s: %s", dest, strerror(errno));
        goto out;
    }
    /* The parent, so that dest's own entry is durable. */
    snprintf(to, plen, "%s/..", dest);
    if (fsync_file(to)) {
        rc = store_err(OBJSTORE_EIO, "backup: fsync %s: %s", to, strerror(errno));
        goto out;
    }
    if (epoch)
        *epoch = at;
out:
    if (rc)
        unmake_dest(dest, s->generation, made);
    free(from);
    free(to);
    free(meta);
    return rc;
}
