/*
 * store.c -- stores: create, open, close; locking; errors; fork safety.
 *
 * Rules this file keeps:
 *   S1 creation is durable before it reports success: the heap file, the
 *      LMDB commit that names it, the store directory and its parent are
 *      fsynced (ARCHITECTURE §10).  A store whose meta/ lacks that commit is
 *      refused as "not a store" rather than half-used.
 *   S2 the store lock (an OFD lock on STORE/lock) is taken before LMDB is
 *      opened, so a refused second opener never touches LMDB: LMDB's own
 *      POSIX locks would be dropped for the whole process if a second
 *      environment on the same files were opened and closed.  For the same
 *      reason, a process opens a store once (checked by device and inode).
 *   S3 open checks the heap file against meta/ (uuid and generation) and
 *      replays the redo log before any allocator state is built.
 *   S4 a forked child cannot use or keep the store: its copy of the lock
 *      descriptor is closed and the handle failed.
 *   S5 a read-only opener may run beside a writer in another process: it
 *      holds the lock file's byte 1 shared from open to close, and the
 *      writer holds it exclusively whenever it changes the committed files
 *      (a commit, a checkpoint, replay, shrink, compaction).  The reader's
 *      heap file and meta/ therefore stay at one committed state for its
 *      whole life; the writer's commits wait while it reads.
 */
#include "store_internal.h"
#include "gcstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- errors ---- */

static _Thread_local char tl_msg[512];

const char *objstore_errmsg(void) { return tl_msg; }

const char *objstore_version(void) { return OBJSTORE_VERSION_STRING; }

unsigned objstore_format_version(void) { return STORE_FORMAT_VERSION; }

int store_err(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_msg, sizeof tl_msg, fmt, ap);
    va_end(ap);
    return code;
}

int store_heap_err(objstore *s, heap_status st)
{
    if (st == HEAP_OK)
        return OBJSTORE_OK;
    if (st == HEAP_EFAILED && s)
        s->failed = true;
    return store_err((int)st, "%s", s && s->heap ? heap_errmsg(s->heap) : "heap error");
}

int store_lmdb_err(int rc, const char *what)
{
    if (rc == ENOSPC)
        return store_err(OBJSTORE_ENOSPC, "%s: disk full", what);
    if (rc == ENOMEM)
        return store_err(OBJSTORE_ENOMEM, "%s: out of memory", what);
    return store_err(OBJSTORE_ELMDB, "%s: %s", what, mdb_strerror(rc));
}

const char *objstore_strerror(int status)
{
    switch (status) {
    case OBJSTORE_OK: return "success";
    case OBJSTORE_EINVAL: return "invalid argument";
    case OBJSTORE_ENOMEM: return "out of memory or address space";
    case OBJSTORE_EIO: return "input/output error on a store file";
    case OBJSTORE_ENOSPC: return "no space left on the device";
    case OBJSTORE_EBUSY: return "store is open elsewhere";
    case OBJSTORE_EEXIST: return "store already exists";
    case OBJSTORE_ENOENT: return "no such store or file";
    case OBJSTORE_EBADMAGIC: return "not an objstore heap file";
    case OBJSTORE_EVERSION: return "unsupported format version";
    case OBJSTORE_ECHECKSUM: return "heap header checksum mismatch";
    case OBJSTORE_EGEOMETRY: return "heap geometry differs from this build";
    case OBJSTORE_ETRUNCATED: return "heap file is truncated";
    case OBJSTORE_ECORRUPT: return "heap metadata or object is corrupt";
    case OBJSTORE_EBADOID: return "not a live object";
    case OBJSTORE_EREADONLY: return "store or transaction is read-only";
    case OBJSTORE_EFAILED: return "store handle failed; reopen it";
    case OBJSTORE_ENOTFOUND: return "not found";
    case OBJSTORE_EMETA: return "meta/ is missing or not an objstore database";
    case OBJSTORE_EMISMATCH: return "heap file and meta/ belong to different stores";
    case OBJSTORE_EREDO: return "damaged redo record";
    case OBJSTORE_ELMDB: return "LMDB error";
    case OBJSTORE_ETXN: return "transaction misuse";
    case OBJSTORE_EOVERFLOW: return "reference count overflow";
    default: return "unknown status";
    }
}

/* ---- whole reads and writes ---- */

int store_pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = pwrite(fd, b, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        b += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

int store_pread_all(int fd, void *p, size_t n, uint64_t off)
{
    uint8_t *b = p;
    while (n) {
        ssize_t r = pread(fd, b, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = EIO;   /* shorter than fstat said: changed under us */
            return -1;
        }
        b += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* ---- crash hook (tests) ---- */

static void (*store_crash_hook)(const char *step);

void objstore_set_crash_hook(void (*fn)(const char *step))
{
    store_crash_hook = fn;
    heap_crash_hook = fn;
}

void store_hook(const char *step)
{
    if (store_crash_hook)
        store_crash_hook(step);
}

/* ---- registry of open stores (S2, S4) ---- */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static objstore *reg_list;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;

static void reg_atfork_child(void)
{
    /* The child inherits handles it must not use (S4): it may open the store
     * itself once the parent lets go, so they leave the registry too. */
    for (objstore *s = reg_list; s; s = s->next_open) {
        if (s->lock_fd >= 0)
            close(s->lock_fd);
        s->lock_fd = -1;
        s->failed = true;
        s->forked = true;
    }
    reg_list = NULL;
    pthread_mutex_init(&reg_lock, NULL);
}

static void reg_init(void) { pthread_atfork(NULL, NULL, reg_atfork_child); }

/* Adds s unless its store is already open in this process. */
static bool reg_add(objstore *s)
{
    pthread_once(&reg_once, reg_init);
    pthread_mutex_lock(&reg_lock);
    for (objstore *o = reg_list; o; o = o->next_open)
        if (o->dev == s->dev && o->ino == s->ino) {
            pthread_mutex_unlock(&reg_lock);
            return false;
        }
    s->next_open = reg_list;
    reg_list = s;
    pthread_mutex_unlock(&reg_lock);
    return true;
}

static void reg_del(objstore *s)
{
    pthread_mutex_lock(&reg_lock);
    for (objstore **p = &reg_list; *p; p = &(*p)->next_open)
        if (*p == s) {
            *p = s->next_open;
            break;
        }
    pthread_mutex_unlock(&reg_lock);
}

/* ---- paths and fsync ---- */

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int fsync_parent(const char *dir)
{
    char *copy = strdup(dir);
    if (!copy)
        return -1;
    char *slash = strrchr(copy, '/');
    int rc;
    if (!slash)
        rc = fsync_path(".");
    else if (slash == copy)
        rc = fsync_path("/");
    else {
        *slash = 0;
        rc = fsync_path(copy);
    }
    free(copy);
    return rc;
}

static bool dir_is_empty(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return false;
    }
    struct dirent *e;
    bool empty = true;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            empty = false;
            break;
        }
    closedir(d);
    return empty;
}

/* ---- create ---- */

int objstore_create(const char *dir, const objstore_options *opts)
{
    objstore_options o = {0};
    if (opts)
        o = *opts;
    if (!dir || !*dir)
        return store_err(OBJSTORE_EINVAL, "create: empty store path");
    bool made = false;
    if (mkdir(dir, 0755) == 0) {
        made = true;
    } else if (errno == EEXIST) {
        struct stat sb;
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return store_err(OBJSTORE_EEXIST, "%s: exists and is not a directory", dir);
        if (!dir_is_empty(dir))
            return store_err(OBJSTORE_EEXIST,
                             "%s: directory is not empty (a store already, or other files)",
                             dir);
    } else {
        return store_err(errno == ENOENT ? OBJSTORE_ENOENT : OBJSTORE_EIO,
                         "%s: cannot create directory: %s", dir, strerror(errno));
    }

    objstore s = {.lock_fd = -1};
    int rc = OBJSTORE_OK;
    char *heap_path = join(dir, "heap.1"), *meta = join(dir, "meta"),
         *lock = join(dir, "lock");
    if (!heap_path || !meta || !lock) {
        rc = store_err(OBJSTORE_ENOMEM, "out of memory");
        goto out;
    }
    if (getrandom(s.uuid, sizeof s.uuid, 0) != (ssize_t)sizeof s.uuid) {
        rc = store_err(OBJSTORE_EIO, "getrandom: %s", strerror(errno));
        goto out;
    }
    char hmsg[HEAP_MSG_MAX];
    heap_create_opts ho = {.initial_bytes = o.initial_size, .generation = 1, .uuid = s.uuid};
    heap_status hs = heap_create(heap_path, &ho, hmsg);
    if (hs) {
        rc = store_err((int)hs, "%s", hmsg);
        goto out;
    }
    if ((rc = store_journal_create(dir, s.uuid, 1)))
        goto out;
    int lfd = open(lock, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (lfd < 0) {
        rc = store_err(OBJSTORE_EIO, "%s: %s", lock, strerror(errno));
        goto out;
    }
    close(lfd);
    if (mkdir(meta, 0755) != 0) {
        rc = store_err(OBJSTORE_EIO, "%s: %s", meta, strerror(errno));
        goto out;
    }
    s.generation = 1;
    if ((rc = store_env_open(&s, meta, true)))
        goto out;
    MDB_txn *txn;
    int mrc = mdb_txn_begin(s.env, NULL, 0, &txn);
    if (mrc) {
        rc = store_lmdb_err(mrc, meta);
        goto out;
    }
    if ((rc = store_dbs_open(&s, txn, true)) ||
        (rc = store_put_u64(txn, s.db_meta, "format", STORE_FORMAT_VERSION)) ||
        (rc = store_put_u64(txn, s.db_meta, "generation", 1)) ||
        (rc = store_put_u64(txn, s.db_meta, "epoch", 0))) {
        mdb_txn_abort(txn);
        goto out;
    }
    MDB_val k = {4, "uuid"}, v = {16, s.uuid};
    if ((mrc = mdb_put(txn, s.db_meta, &k, &v, 0)) || (mrc = mdb_txn_commit(txn))) {
        if (mrc && txn)
            rc = store_lmdb_err(mrc, meta);
        goto out;
    }
    if (fsync_path(meta) || fsync_path(dir) || (made && fsync_parent(dir)))
        rc = store_err(OBJSTORE_EIO, "%s: fsync: %s", dir, strerror(errno));
out:
    if (s.env)
        mdb_env_close(s.env);
    free(heap_path);
    free(meta);
    free(lock);
    return rc;
}

/* ---- open ---- */

/* The lock file's bytes (S5):
 *   byte 0  the owner: a writer holds it exclusively; a read-only opener
 *           shared when it can (then no writer can start while it reads);
 *   byte 1  the freeze: a read-only opener holds it shared from open to
 *           close; a writer takes it exclusively around every change of the
 *           committed files (store_freeze).  So a read-only opener beside a
 *           writer in another process sees the committed state of its open
 *           for its whole life, and that writer's commits wait for it. */
static int lock_byte(int fd, short type, off_t at, bool wait)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = at, .l_len = 1};
    int rc;
    while ((rc = fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl)) != 0 && errno == EINTR)
        ;
    return rc;
}

static int take_lock(objstore *s, const char *lock)
{
    s->lock_fd = open(lock, (s->ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (s->lock_fd < 0 && errno == ENOENT && !s->ro)
        s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0)
        return store_err(errno == ENOENT ? OBJSTORE_ENOENT : OBJSTORE_EIO,
                         "%s: cannot open the lock file: %s", lock, strerror(errno));
    if (s->ro) {
        /* The freeze first: a commit under way finishes before we look. */
        if (lock_byte(s->lock_fd, F_RDLCK, 1, true) != 0)
            return store_err(errno == EAGAIN || errno == EACCES ? OBJSTORE_EBUSY : OBJSTORE_EIO,
                             "%s: lock: %s", lock, strerror(errno));
        s->beside_writer = lock_byte(s->lock_fd, F_RDLCK, 0, false) != 0;
        if (s->beside_writer && errno != EAGAIN && errno != EACCES)
            return store_err(OBJSTORE_EIO, "%s: lock: %s", lock, strerror(errno));
    } else if (lock_byte(s->lock_fd, F_WRLCK, 0, false) != 0) {
        if (errno == EAGAIN || errno == EACCES)
            return store_err(OBJSTORE_EBUSY, "%s: store is open by another process", s->dir);
        return store_err(OBJSTORE_EIO, "%s: lock: %s", lock, strerror(errno));
    }
    struct stat sb;
    if (fstat(s->lock_fd, &sb) != 0)
        return store_err(OBJSTORE_EIO, "%s: fstat: %s", lock, strerror(errno));
    s->dev = sb.st_dev;
    s->ino = sb.st_ino;
    return OBJSTORE_OK;
}

int store_freeze(objstore *s)
{
    if (s->ro || s->lock_fd < 0 || s->freeze_depth++ > 0)
        return OBJSTORE_OK;
    if (lock_byte(s->lock_fd, F_WRLCK, 1, true) != 0) {
        s->freeze_depth--;
        return store_err(OBJSTORE_EIO, "%s/lock: cannot take the freeze lock: %s", s->dir,
                         strerror(errno));
    }
    return OBJSTORE_OK;
}

void store_thaw(objstore *s)
{
    if (s->ro || s->lock_fd < 0 || s->freeze_depth == 0 || --s->freeze_depth > 0)
        return;
    lock_byte(s->lock_fd, F_UNLCK, 1, false);
}

static void store_free(objstore *s)
{
    store_journal_close(s);
    if (s->heap)
        heap_close(s->heap);
    /* In a forked child, closing the parent's LMDB environment would drop
     * the POSIX locks of any environment the child opened on the same files:
     * LMDB's rule is not to touch it after fork.  Its memory is left. */
    if (s->env && !s->forked)
        mdb_env_close(s->env);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    for (uint32_t i = 0; i < s->ntypes; i++)
        free(s->type_names[i]);
    free(s->type_names);
    for (size_t i = 0; i < s->ndead; i++)
        free(s->dead_names[i]);
    free(s->dead_names);
    kvmap_clear(&s->type_ids);
    kvmap_clear(&s->roots_pending);
    kvmap_clear(&s->user_pending);
    oidset_free(&s->zct);
    oidset_free(&s->cand);
    u64map_free(&s->pins);
    u64map_free(&s->unpinned);
    free(s->created);
    u64map_free(&s->zeroed);
    store_weak_free(s);
    free(s->pinlog.oid);
    free(s->pinlog.delta);
    store_lock_destroy(&s->lock);
    store_group_destroy(s);
    pthread_mutex_destroy(&s->pin_lock);
    free(s->dir);
    free(s);
}

static int open_heap(objstore *s)
{
    char name[32];
    snprintf(name, sizeof name, "heap.%llu", (unsigned long long)s->generation);
    char *path = join(s->dir, name);
    if (!path)
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    heap_open_opts ho = {.flags = HEAP_OPEN_NOLOCK | HEAP_OPEN_NOREBUILD |
                                  (s->ro ? HEAP_OPEN_RDONLY : 0),
                         .reserve_bytes = s->opts.max_heap_size};
    char msg[HEAP_MSG_MAX];
    heap_status hs = heap_open(path, &ho, &s->heap, msg);
    int rc = OBJSTORE_OK;
    if (hs == HEAP_ENOENT)
        rc = store_err(OBJSTORE_ENOENT, "%s: the heap file meta/ names is missing", path);
    else if (hs)
        rc = store_err((int)hs, "%s", msg);
    else if (memcmp(heap_uuid(s->heap), s->uuid, 16) != 0)
        rc = store_err(OBJSTORE_EMISMATCH,
                       "%s: heap file belongs to another store (uuid differs from meta/)",
                       path);
    else if (heap_generation(s->heap) != s->generation)
        rc = store_err(OBJSTORE_EMISMATCH,
                       "%s: heap generation %llu, meta/ names generation %llu", path,
                       (unsigned long long)heap_generation(s->heap),
                       (unsigned long long)s->generation);
    free(path);
    return rc;
}

int objstore_open(const char *dir, const objstore_options *opts, objstore **out)
{
    *out = NULL;
    if (!dir || !*dir)
        return store_err(OBJSTORE_EINVAL, "open: empty store path");
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return store_err(OBJSTORE_ENOENT, "%s: no such store directory", dir);

    objstore *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    }
    s->lock_fd = -1;
    if (opts)
        s->opts = *opts;
    if (!s->opts.free_budget)
        s->opts.free_budget = 1000000;
    if (!s->opts.checkpoint_bytes)
        s->opts.checkpoint_bytes = UINT64_C(64) << 20;
    if (!s->opts.gc_threshold)
        s->opts.gc_threshold = 100000;
    if (!s->opts.gc_budget)
        s->opts.gc_budget = 1000000;
    s->ro = s->opts.flags & OBJSTORE_RDONLY;
    store_lock_init(&s->lock);
    store_group_init(s);
    pthread_mutex_init(&s->pin_lock, NULL);

    int rc;
    char *lock = join(dir, "lock"), *meta = join(dir, "meta"), *data = join(meta ? meta : "", "data.mdb");
    if (!lock || !meta || !data) {
        rc = store_err(OBJSTORE_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = take_lock(s, lock)))
        goto fail;
    if (!reg_add(s)) {
        rc = store_err(OBJSTORE_EBUSY, "%s: store is already open in this process", dir);
        close(s->lock_fd);
        s->lock_fd = -1;
        goto fail;
    }
    if (stat(meta, &sb) != 0 || !S_ISDIR(sb.st_mode) || stat(data, &sb) != 0) {
        rc = store_err(OBJSTORE_EMETA, "%s: no meta/ LMDB environment (not a store, or "
                       "its creation did not finish)", dir);
        goto fail_reg;
    }
    if ((rc = store_meta_precheck(dir, data)))
        goto fail_reg;
    if ((rc = store_env_open(s, meta, false)))
        goto fail_reg;
    MDB_txn *txn;
    int mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (mrc) {
        rc = store_lmdb_err(mrc, meta);
        goto fail_reg;
    }
    if ((rc = store_dbs_open(s, txn, false)) || (rc = store_meta_load(s, txn))) {
        mdb_txn_abort(txn);
        goto fail_reg;
    }
    /* Committing (not aborting) keeps the database handles open. */
    if ((mrc = mdb_txn_commit(txn))) {
        rc = store_lmdb_err(mrc, meta);
        goto fail_reg;
    }
    /* A writer changes the files from here on: readers in other processes
     * wait (S5).  A compaction that crashed leaves a heap file of another
     * generation. */
    if ((rc = store_freeze(s)) || (rc = store_remove_stray_heaps(s)) || (rc = open_heap(s)) ||
        (rc = store_replay(s)))
        goto fail_reg;
    heap_status hs = heap_reload_header(s->heap);
    if (!hs)
        hs = heap_rebuild(s->heap);
    if (hs) {
        rc = store_heap_err(s, hs);
        goto fail_reg;
    }
    if ((mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))) {
        rc = store_lmdb_err(mrc, meta);
        goto fail_reg;
    }
    rc = store_types_load(s, txn);
    if (!rc)
        rc = store_sets_load(s, txn);
    mdb_txn_abort(txn);
    if (rc)
        goto fail_reg;
    /* No pin survives a process: what the zero-count table holds is freed. */
    if (!s->ro && oidset_count(&s->zct)) {
        /* (The drain runs inside commit.) */
        objstore_txn *t;
        if ((rc = store_write_begin(s, &t)) || (rc = objstore_commit(t)))
            goto fail_reg;
    }
    store_thaw(s);
    free(lock);
    free(meta);
    free(data);
    *out = s;
    return OBJSTORE_OK;
fail_reg:
    reg_del(s);
fail:
    free(lock);
    free(meta);
    free(data);
    store_free(s);
    return rc;
}

int objstore_close(objstore *s)
{
    if (!s)
        return OBJSTORE_OK;
    int rc = OBJSTORE_OK;
    if (!s->ro)
        store_group_drain(s);   /* even failed: no thread may still wait on it */
    if (!s->ro && !s->failed) {
        store_write_lock(s);
        store_group_drain(s);
        rc = store_freeze(s);
        if (!rc)
            rc = store_checkpoint_all(s);
        if (!rc && s->opts.sync == OBJSTORE_SYNC_RELAXED) {
            int mrc = mdb_env_sync(s->env, 1);
            if (mrc)
                rc = store_lmdb_err(mrc, "close: sync meta/");
        }
        store_thaw(s);
        store_write_unlock(s);
    }
    reg_del(s);
    store_free(s);
    return rc;
}

uint64_t objstore_epoch(objstore *s) { return store_epoch(s); }

int store_exclusive(objstore *s, int (*fn)(objstore *), const char *what)
{
    if (s->ro)
        return store_err(OBJSTORE_EREADONLY, "%s: %s: store opened read-only", s->dir, what);
    if (s->failed)
        return store_err(OBJSTORE_EFAILED, "%s: %s: the store handle failed earlier",
                         s->dir, what);
    if (store_is_writer(s) || store_is_reader(s))
        return store_err(OBJSTORE_ETXN, "%s: %s inside a transaction", s->dir, what);
    store_write_lock(s);
    store_group_drain(s);   /* G2 */
    int rc = s->failed ? store_err(OBJSTORE_EFAILED, "%s: %s: a commit failed; reopen the "
                                   "store", s->dir, what)
                       : store_freeze(s);
    if (!rc)
        rc = fn(s);
    store_thaw(s);
    store_write_unlock(s);
    return rc;
}

int objstore_shrink(objstore *s)
{
    return store_exclusive(s, store_shrink, "shrink");
}

bool store_read_lock(objstore *s)
{
    if (store_is_writer(s))
        return false;   /* this thread's own write transaction excludes the rest */
    store_read_begin(s);
    return true;
}

int objstore_get_stats(objstore *s, objstore_stats *st)
{
    memset(st, 0, sizeof *st);
    bool locked = store_read_lock(s);
    if (!locked)
        store_group_drain(s);   /* this thread's write transaction: LMDB catches up */
    heap_stats hs;
    heap_get_stats(s->heap, &hs);
    st->heap_file_bytes = hs.file_bytes;
    st->heap_arenas = hs.arenas;
    st->heap_arenas_free = hs.arenas_free;
    st->heap_pools_total = hs.pools_total;
    st->heap_pools_free = hs.pools_free;
    st->live_objects = hs.live_blocks;
    st->live_bytes = hs.live_bytes;
    st->fragmentation = hs.fragmentation;
    for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
        st->size_class[c].block_size = hs.cls[c].block_size;
        st->size_class[c].pools = hs.cls[c].pools;
        st->size_class[c].blocks_used = hs.cls[c].blocks_used;
        st->size_class[c].blocks_free = hs.cls[c].blocks_free;
    }
    st->commits = s->st_commits;
    st->aborts = s->st_aborts;
    st->redo_bytes = s->st_redo_bytes;
    st->direct_bytes = s->st_direct_bytes;
    st->checkpoints = s->st_checkpoints;
    st->objects_freed = s->st_freed;
    st->epoch = s->epoch;
    st->zct_entries = oidset_count(&s->zct);
    st->cycle_candidates = oidset_count(&s->cand);
    st->collections = s->st_collections;
    st->cycles_freed = s->st_cycles_freed;
    st->types = s->ntypes_committed;
    pthread_mutex_lock(&s->g_mutex);
    st->grouped_commits = s->st_grouped;
    st->group_syncs = s->st_group_syncs;
    st->commits = s->st_commits;
    st->journal_commits = s->st_journal_commits;
    pthread_mutex_unlock(&s->g_mutex);
    MDB_txn *txn;
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) == 0) {
        MDB_stat ms;
        if (mdb_stat(txn, s->db_roots, &ms) == 0)
            st->roots = ms.ms_entries;
        mdb_txn_abort(txn);
    }
    if (locked)
        store_read_end(s);
    return OBJSTORE_OK;
}
