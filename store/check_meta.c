/*
 * check_meta.c -- pass 2 of objstore_check: meta/ read in a child process.
 *
 * LMDB maps data.mdb and follows the page numbers it finds there unchecked,
 * so a damaged file can crash the process that reads it.  The checker
 * therefore forks: the child opens the environment read-only and without
 * LMDB's lock file, validates every database and entry and every redo
 * record with the store's own checks, and writes what it found as lines on
 * a pipe; the parent keeps them for pass 2 to report.
 *
 * Rules:
 *   P1 a child killed by a signal, one that fails, and one that does not
 *      finish within the time limit are each the finding "meta/data.mdb is
 *      damaged", never a dead checker;
 *   P2 the child writes nothing but the pipe: it leaves with _exit, never
 *      runs the parent's atexit handlers or flushes its stdio;
 *   P3 the protocol is lines: "F kind oid value fixable text" for a finding,
 *      "I uuid generation epoch records bytes types roots bad bad_epoch ckpt"
 *      for what the parent needs; a line the parent cannot parse is ignored.
 */
#include "check_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int oom(void) { return store_err(OBJSTORE_ENOMEM, "check: out of memory"); }

static void child_say(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void child_say(int fd, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    for (int i = 0; i < n; i++)
        if (line[i] == '\n')
            line[i] = ' ';
    line[n++] = '\n';
    for (int done = 0; done < n;) {
        ssize_t w = write(fd, line + done, (size_t)(n - done));
        if (w <= 0)
            _exit(3);
        done += (int)w;
    }
}

/* "F kind oid value fixable text": a finding. */
#define CHILD_FINDING(fd, kind, oid, value, fixable, ...)                                 \
    do {                                                                                  \
        char t_[700];                                                                     \
        snprintf(t_, sizeof t_, __VA_ARGS__);                                             \
        child_say(fd, "F %d %" PRIu64 " %" PRIu64 " %d %s", kind, (uint64_t)(oid),        \
                  (uint64_t)(value), fixable, t_);                                        \
    } while (0)

static uint64_t child_walk_db(int fd, MDB_txn *txn, MDB_dbi db, const char *name,
                              size_t kmin, size_t kmax, size_t vmin, size_t vmax)
{
    MDB_cursor *cur;
    uint64_t n = 0, bad = 0;
    int rc = mdb_cursor_open(txn, db, &cur);
    if (rc) {
        CHILD_FINDING(fd, OBJSTORE_C_META, 0, 0, 0, "meta/ database '%s' cannot be read: %s",
                      name, mdb_strerror(rc));
        return 0;
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), n++) {
        if (k.mv_size < kmin || k.mv_size > kmax || v.mv_size < vmin || v.mv_size > vmax) {
            if (bad++ < 100)
                CHILD_FINDING(fd, OBJSTORE_C_META, n, k.mv_size, 0,
                              "meta/ database '%s', entry %" PRIu64 ": malformed (key of %zu "
                              "bytes, value of %zu bytes)", name, n, k.mv_size, v.mv_size);
        }
    }
    if (rc != MDB_NOTFOUND)
        CHILD_FINDING(fd, OBJSTORE_C_META, 0, 0, 0,
                      "meta/ database '%s' cannot be read past entry %" PRIu64 ": %s", name, n,
                      mdb_strerror(rc));
    mdb_cursor_close(cur);
    return n;
}

static void child_redo(int fd, objstore *s, MDB_txn *txn, struct metainfo *mi)
{
    MDB_cursor *cur;
    if (mdb_cursor_open(txn, s->db_main, &cur))
        return;
    MDB_val k, v;
    uint64_t last = 0;
    int rc;
    for (rc = store_redo_seek(cur, 0, &k, &v); rc == 0; rc = store_redo_next(cur, &k, &v)) {
        mi->redo_records++;
        mi->redo_bytes += v.mv_size;
        if (store_redo_check(s, &k, &v) == OBJSTORE_OK) {
            last = store_redo_key_epoch(&k);
            continue;
        }
        uint64_t epoch = store_redo_key_epoch(&k);
        /* Its ranges, as far as the record can be read (FORMAT.md 2.1:
         * nranges at 20, the ranges from 80, 16 bytes each). */
        char ranges[200] = "";
        size_t used = 0;
        if (v.mv_size >= 80) {
            uint32_t nr;
            memcpy(&nr, (const uint8_t *)v.mv_data + 20, 4);
            for (uint32_t i = 0; i < nr && i < 4 && 80 + (i + 1) * 16 <= v.mv_size; i++) {
                uint64_t ro, rl;
                memcpy(&ro, (const uint8_t *)v.mv_data + 80 + i * 16, 8);
                memcpy(&rl, (const uint8_t *)v.mv_data + 88 + i * 16, 8);
                int w = snprintf(ranges + used, sizeof ranges - used, "%s%" PRIu64 "+%" PRIu64,
                                 i ? ", " : "; ranges ", ro, rl);
                if (w < 0 || (size_t)w >= sizeof ranges - used)
                    break;
                used += (size_t)w;
            }
            if (nr > 4 && used + 8 < sizeof ranges)
                snprintf(ranges + used, sizeof ranges - used, ", ...");
        }
        if (!mi->redo_bad)
            mi->redo_bad_epoch = epoch;
        mi->redo_bad = true;
        CHILD_FINDING(fd, OBJSTORE_C_REDO, epoch, v.mv_size, 2, "%s%s (epoch %" PRIu64 ")",
                      objstore_errmsg(), ranges, epoch);
    }
    if (rc != MDB_NOTFOUND)
        CHILD_FINDING(fd, OBJSTORE_C_META, 0, 0, 0,
                      "meta/ redo log cannot be read past record %" PRIu64 ": %s",
                      mi->redo_records, mdb_strerror(rc));
    mdb_cursor_close(cur);
    if (last > mi->epoch)
        mi->epoch = last;
}

static void child_types(int fd, objstore *s, MDB_txn *txn, struct metainfo *mi)
{
    if (store_types_load(s, txn)) {
        CHILD_FINDING(fd, OBJSTORE_C_META, 0, 0, 0, "%s", objstore_errmsg());
        return;
    }
    mi->types = s->ntypes;
    MDB_cursor *cur;
    if (mdb_cursor_open(txn, s->db_types, &cur))
        return;
    MDB_val k, v;
    uint64_t n = 0;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), n++) {
        uint32_t id = 0;
        if (v.mv_size == 4) {
            const uint8_t *p = v.mv_data;
            id = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        }
        if (!id || id > s->ntypes || strlen(s->type_names[id - 1]) != k.mv_size ||
            memcmp(s->type_names[id - 1], k.mv_data, k.mv_size))
            CHILD_FINDING(fd, OBJSTORE_C_META, id, n, 0,
                          "meta/ types: '%.*s' does not match typeids (id %u)",
                          (int)(k.mv_size > 100 ? 100 : k.mv_size), (const char *)k.mv_data,
                          id);
    }
    mdb_cursor_close(cur);
    if (n != s->ntypes)
        CHILD_FINDING(fd, OBJSTORE_C_META, 0, n, 0,
                      "meta/ has %" PRIu64 " type names but %u type ids", n, s->ntypes);
}

static void child_main(int fd, const char *dir)
{
    /* Static, not malloc'd: the child leaves with _exit, and what it holds
     * goes with it (a leak checker sees it as still reachable). */
    static objstore child_store;
    objstore *s = &child_store;
    char meta[4096];
    snprintf(meta, sizeof meta, "%s/meta", dir);
    struct stat sb;
    char data[4200];
    snprintf(data, sizeof data, "%s/data.mdb", meta);
    if (stat(meta, &sb) != 0 || !S_ISDIR(sb.st_mode) || stat(data, &sb) != 0) {
        CHILD_FINDING(fd, OBJSTORE_C_META, 0, 0, 0, "%s: meta/data.mdb is missing", dir);
        _exit(0);
    }
    if (!s || !(s->dir = strdup(dir)))
        _exit(2);
    /* The library's own look at data.mdb before LMDB maps it (meta.c M3). */
    if (store_meta_precheck(dir, data)) {
        CHILD_FINDING(fd, OBJSTORE_C_META, 0, 0, 0, "meta/data.mdb is damaged: %s",
                      objstore_errmsg());
        _exit(0);
    }
    s->ro = true;
    s->lmdb_nolock = true;
    struct metainfo mi = {0};
    MDB_txn *txn;
    int rc;
    if (store_env_open(s, meta, false)) {
        CHILD_FINDING(fd, OBJSTORE_C_META, 0, 0, 0, "meta/data.mdb is damaged: %s",
                      objstore_errmsg());
        _exit(0);
    }
    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))) {
        CHILD_FINDING(fd, OBJSTORE_C_META, 0, 0, 0, "meta/data.mdb is damaged: %s",
                      mdb_strerror(rc));
        _exit(0);
    }
    if ((rc = store_dbs_open(s, txn, false)) || (rc = store_meta_load(s, txn))) {
        if (rc == OBJSTORE_EVERSION)
            child_say(fd, "V %s", objstore_errmsg());   /* not damage: nothing to repair */
        else
            CHILD_FINDING(fd, OBJSTORE_C_META, 0, 0, 0, "%s", objstore_errmsg());
        _exit(0);
    }
    memcpy(mi.uuid, s->uuid, 16);
    mi.generation = s->generation;
    mi.epoch = s->epoch;
    mi.ckpt = s->meta_ckpt;
    mi.roots = child_walk_db(fd, txn, s->db_roots, "roots", 1, STORE_NAME_MAX, 8, 8);
    child_walk_db(fd, txn, s->db_user, "user", 1, STORE_NAME_MAX, 0, STORE_META_VALUE_MAX);
    child_walk_db(fd, txn, s->db_zct, "zct", 8, 8, 0, 0);
    child_walk_db(fd, txn, s->db_cand, "candidates", 8, 8, 0, 0);
    child_walk_db(fd, txn, s->db_meta, "meta", 1, 511, 0, 4096);
    child_walk_db(fd, txn, s->db_types, "types", 1, STORE_TYPE_NAME_MAX, 4, 4);
    child_types(fd, s, txn, &mi);
    child_redo(fd, s, txn, &mi);
    char hex[33];
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", mi.uuid[i]);
    child_say(fd, "I %s %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
                  " %d %" PRIu64 " %" PRIu64,
              hex, mi.generation, mi.epoch, mi.redo_records, mi.redo_bytes, mi.types, mi.roots,
              mi.redo_bad ? 1 : 0, mi.redo_bad_epoch, mi.ckpt);
    _exit(0);
}


static int keep_line(struct childres *cr, const char *line, size_t len)
{
    if (cr->n == cr->cap) {
        size_t cap = cr->cap ? cr->cap * 2 : 16;
        char **p = realloc(cr->lines, cap * sizeof *p);
        if (!p)
            return oom();
        cr->lines = p;
        cr->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return oom();
    memcpy(copy, line, len);
    copy[len] = 0;
    cr->lines[cr->n++] = copy;
    return OBJSTORE_OK;
}

void ck_meta_free(struct childres *cr)
{
    for (size_t i = 0; i < cr->n; i++)
        free(cr->lines[i]);
    free(cr->lines);
    memset(cr, 0, sizeof *cr);
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs the child; its findings stay in cr->lines until pass 2 reports them. */
int ck_meta_run(struct ck *c, const char *dir, struct childres *cr)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return store_err(OBJSTORE_EIO, "check: pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return store_err(OBJSTORE_EIO, "check: fork: %s", strerror(errno));
    }
    if (pid == 0) {
        /* The child keeps only stdio and its pipe: an inherited descriptor
         * of the store's lock file would keep the store locked after the
         * parent died (OFD locks belong to the shared file description). */
        int fd = p[1];
        if (fd != 3 && (fd = dup2(p[1], 3)) != 3)
            _exit(3);
        close_range(4, ~0U, 0);
        child_main(fd, dir);
        _exit(0);
    }
    close(p[1]);
    unsigned limit = c->o->meta_timeout_s ? c->o->meta_timeout_s : 300;
    double deadline = mono() + limit;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int err = buf ? OBJSTORE_OK : oom();
    bool timed_out = false;
    while (!err) {
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        int pr = poll(&pf, 1, 100);
        if (pr < 0 && errno != EINTR) {
            err = store_err(OBJSTORE_EIO, "check: poll: %s", strerror(errno));
            break;
        }
        if (ck_progress(c, 0, 1))
            break;
        if (mono() > deadline) {
            timed_out = true;
            break;
        }
        if (pr <= 0)
            continue;
        if (len + 1024 > cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                err = oom();
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(p[0], buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(p[0]);
    int status = 0;
    if (err || c->stop || timed_out)
        kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    for (size_t at = 0; !err && at < len;) {
        char *nl = memchr(buf + at, '\n', len - at);
        size_t l = nl ? (size_t)(nl - (buf + at)) : len - at;
        buf[at + l] = 0;
        if (buf[at] == 'I') {
            char hex[40] = "";
            int bad = 0;
            struct metainfo *mi = &cr->mi;
            if (sscanf(buf + at, "I %32s %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                                 " %" SCNu64 " %" SCNu64 " %d %" SCNu64 " %" SCNu64,
                       hex, &mi->generation, &mi->epoch, &mi->redo_records, &mi->redo_bytes,
                       &mi->types, &mi->roots, &bad, &mi->redo_bad_epoch, &mi->ckpt) == 10 &&
                strlen(hex) == 32) {
                for (int i = 0; i < 16; i++) {
                    unsigned x;
                    sscanf(hex + 2 * i, "%2x", &x);
                    mi->uuid[i] = (uint8_t)x;
                }
                mi->redo_bad = bad;
                mi->usable = true;
            }
        } else if (buf[at] == 'F') {
            err = keep_line(cr, buf + at, l);
        } else if (buf[at] == 'V' && l > 2) {
            /* Another format: objstore_check refuses it as open does. */
            err = store_err(OBJSTORE_EVERSION, "%s", buf + at + 2);
        }
        at += l + 1;
    }
    free(buf);
    if (c->stop || err)
        return err;
    char line[300];
    if (timed_out) {
        snprintf(line, sizeof line, "F %d 0 0 0 meta/data.mdb is damaged: reading it did not "
                 "finish in %u s (the reading process was stopped)", OBJSTORE_C_META, limit);
        cr->mi.usable = false;
        return keep_line(cr, line, strlen(line));
    }
    if (WIFSIGNALED(status)) {
        snprintf(line, sizeof line, "F %d 0 %d 0 meta/data.mdb is damaged: reading it killed "
                 "the reading process (signal %d, %s)", OBJSTORE_C_META, WTERMSIG(status),
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
        cr->mi.usable = false;
        return keep_line(cr, line, strlen(line));
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        /* (Under a sanitizer a fault is reported and ends in an exit.) */
        snprintf(line, sizeof line, "F %d 0 0 0 meta/data.mdb is damaged: the reading process "
                 "failed (exit status %d)", OBJSTORE_C_META,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        cr->mi.usable = false;
        return keep_line(cr, line, strlen(line));
    }
    return OBJSTORE_OK;
}

void ck_meta_report(struct ck *c, struct childres *cr)
{
    for (size_t i = 0; i < cr->n; i++) {
        int kind, fixable, pos = 0;
        uint64_t oid, value;
        if (sscanf(cr->lines[i], "F %d %" SCNu64 " %" SCNu64 " %d %n", &kind, &oid, &value,
                   &fixable, &pos) < 4 || kind < 0 || kind >= OBJSTORE_C_NKINDS)
            continue;
        ck_finding(c, kind, oid, value, fixable, "%s", cr->lines[i] + pos);
    }
}

