/*
 * file.c -- the heap file: create, open, validate, map, grow, shrink, close.
 *
 * Rules this file keeps:
 *   F1 the virtual range is reserved once at open (PROT_NONE, NORESERVE); the
 *      file is mapped MAP_PRIVATE|MAP_FIXED at its start and grown in place,
 *      so heap_base() never moves while the heap is open.
 *   F2 only bytes the file really has are mapped: growth allocates disk
 *      blocks with fallocate (falling back to writing zeros) and fdatasyncs
 *      before mapping them, so a full disk is HEAP_ENOSPC, never a SIGBUS.
 *   F3 the header is checked before anything else is read: magic, version,
 *      checksum, geometry, then the file's length against it.
 *   F4 a writer holds an OFD write lock on the file, a reader an OFD read
 *      lock; a forked child closes its copy of the descriptor and cannot
 *      touch the mapping (MADV_DONTFORK), so it can neither keep the lock nor
 *      write.
 *   F5 the range starts on a 2 MiB boundary and every mapping of the file is
 *      advised MADV_HUGEPAGE (heap_advise_mapping): where the kernel keeps
 *      file pages in large folios, a fault then maps up to 2 MiB of the page
 *      cache at once instead of 64 KiB (a walk of a 64 MiB heap: ~1 ms of
 *      faults instead of ~5).  Advice only: where the kernel does not take
 *      it, nothing changes.  Growth ends the file on a 2 MiB boundary (an
 *      even number of arenas), so each region it maps starts on one too: a
 *      region starting 1 MiB off could take no 2 MiB folio whole, and W1's
 *      creation phase, 170 MB of new arenas, ran 14% slower that way.
 *   F6 a transaction whose new arenas pass FRESH_WB_AFTER starts their
 *      write-back as it grows (sync_file_range, SYNC_FILE_RANGE_WRITE: it
 *      does not wait), all but the newest FRESH_WB_KEEP, where objects are
 *      still being placed: the commit's fdatasync then finds most of a bulk
 *      load on the disk already.  Fresh arenas may reach the file at any
 *      time (map_region), so this changes no guarantee; a write-back error
 *      is the commit's fdatasync's.  A smaller transaction keeps its new
 *      arenas in the page cache until its commit, so garbage it frees
 *      itself is never written (G4); a larger one may write some of its
 *      garbage.
 */
#include "heap_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define DEFAULT_RESERVE  (UINT64_C(256) << 30)
#define DEFAULT_INITIAL  (UINT64_C(4) << 20)
#define GROW_MIN_ARENAS  4u
#define GROW_MAX_ARENAS  256u
#define FRESH_WB_AFTER   (UINT64_C(64) << 20)   /* F6 */
#define FRESH_WB_KEEP    (UINT64_C(32) << 20)

void (*heap_crash_hook)(const char *step);

static inline void crash_point(const char *step)
{
    if (heap_crash_hook)
        heap_crash_hook(step);
}

heap_status heap_seterr(heap_t *h, heap_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->msg, sizeof h->msg, fmt, ap);
    va_end(ap);
    return st;
}

static heap_status msgerr(char *msg, heap_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static heap_status msgerr(char *msg, heap_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (msg)
        vsnprintf(msg, HEAP_MSG_MAX, fmt, ap);
    va_end(ap);
    return st;
}

const char *heap_errmsg(const heap_t *h) { return h->msg; }
uint64_t heap_size(const heap_t *h) { return h->narenas << HEAP_ARENA_SHIFT; }
uint64_t heap_file_size(const heap_t *h) { return h->mapped; }
uint64_t heap_generation(const heap_t *h) { return heap_hdr(h)->generation; }
uint64_t heap_ckpt_epoch(const heap_t *h) { return heap_hdr(h)->ckpt_epoch; }
uint64_t heap_reserve_size(const heap_t *h) { return h->reserve; }
const uint8_t *heap_uuid(const heap_t *h) { return heap_hdr(h)->uuid; }
bool heap_readonly(const heap_t *h) { return h->flags & HEAP_OPEN_RDONLY; }

/* ---- registry of open heaps, for fork safety (F4) ---- */

static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static heap_t *open_list;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_child(void)
{
    /* Single-threaded here; the lock may have been held at fork time. */
    for (heap_t *h = open_list; h; h = h->next_open) {
        if (h->fd >= 0)
            close(h->fd);
        h->fd = -1;
        h->view.failed = true;
    }
    pthread_mutex_init(&open_lock, NULL);
}

static void atfork_register(void)
{
    pthread_atfork(NULL, NULL, atfork_child);
}

static void registry_add(heap_t *h)
{
    pthread_once(&atfork_once, atfork_register);
    pthread_mutex_lock(&open_lock);
    h->next_open = open_list;
    open_list = h;
    pthread_mutex_unlock(&open_lock);
}

static void registry_del(heap_t *h)
{
    pthread_mutex_lock(&open_lock);
    for (heap_t **p = &open_list; *p; p = &(*p)->next_open)
        if (*p == h) {
            *p = h->next_open;
            break;
        }
    pthread_mutex_unlock(&open_lock);
}

/* ---- low-level file I/O ---- */

static heap_status pwrite_all(int fd, const void *buf, uint64_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = pwrite(fd, p, len > (1u << 30) ? (1u << 30) : len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return (errno == ENOSPC || errno == EFBIG || errno == EDQUOT)
                       ? HEAP_ENOSPC : HEAP_EIO;
        }
        p += n;
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return HEAP_OK;
}

/* Gives [off, off+len) real disk blocks (F2). */
static heap_status allocate_blocks(int fd, uint64_t off, uint64_t len)
{
    if (fallocate(fd, 0, (off_t)off, (off_t)len) == 0)
        return HEAP_OK;
    if (errno == ENOSPC || errno == EFBIG || errno == EDQUOT)
        return HEAP_ENOSPC;
    if (errno != EOPNOTSUPP && errno != ENOSYS)
        return HEAP_EIO;
    static const uint8_t zeros[65536];
    for (uint64_t done = 0; done < len;) {
        uint64_t n = len - done < sizeof zeros ? len - done : sizeof zeros;
        heap_status st = pwrite_all(fd, zeros, n, off + done);
        if (st)
            return st;
        done += n;
    }
    return HEAP_OK;
}

static void header_checksum(struct heap_file_header *hd)
{
    hd->checksum = XXH3_64bits(hd, offsetof(struct heap_file_header, checksum));
}

void heap_header_seal(heap_t *h)
{
    heap_mark_dirty(h, 0, HEAP_HEADER_SIZE);
    header_checksum(heap_hdr(h));
}

void heap_table_init(heap_t *h, uint64_t k)
{
    struct heap_arena_table *t = heap_table(h, k);
    heap_mark_dirty(h, (k << HEAP_ARENA_SHIFT) + HEAP_TABLE_OFFSET,
                    offsetof(struct heap_arena_table, bitmap));
    memset(t, 0, offsetof(struct heap_arena_table, bitmap));
    t->magic = HEAP_ARENA_MAGIC;
    t->index = (uint32_t)k;
}

/* ---- create ---- */

heap_status heap_create(const char *path, const heap_create_opts *opts,
                        char msg[HEAP_MSG_MAX])
{
    heap_create_opts o = {0};
    if (opts)
        o = *opts;
    if (!o.initial_bytes)
        o.initial_bytes = DEFAULT_INITIAL;
    uint64_t narenas = (o.initial_bytes + HEAP_ARENA_SIZE - 1) >> HEAP_ARENA_SHIFT;

    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno == EEXIST
                   ? msgerr(msg, HEAP_EEXIST, "%s: heap file already exists", path)
                   : msgerr(msg, errno == ENOENT ? HEAP_ENOENT : HEAP_EIO,
                            "%s: cannot create: %s", path, strerror(errno));

    heap_status st = allocate_blocks(fd, 0, narenas << HEAP_ARENA_SHIFT);
    if (st) {
        msgerr(msg, st, "%s: cannot allocate %llu bytes: %s", path,
               (unsigned long long)(narenas << HEAP_ARENA_SHIFT),
               st == HEAP_ENOSPC ? "disk full" : strerror(errno));
        goto fail;
    }

    /* Pool 0 of each arena: header (arena 0 only) and the arena table. */
    uint8_t *pool0 = calloc(1, HEAP_POOL_SIZE);
    if (!pool0) {
        st = msgerr(msg, HEAP_ENOMEM, "out of memory");
        goto fail;
    }
    struct heap_file_header *hd = (struct heap_file_header *)pool0;
    memcpy(hd->magic, HEAP_MAGIC, 8);
    hd->version = HEAP_FORMAT_VERSION;
    hd->header_size = HEAP_HEADER_SIZE;
    hd->arena_size = HEAP_ARENA_SIZE;
    hd->pool_size = HEAP_POOL_SIZE;
    hd->align = HEAP_ALIGN;
    hd->nclasses = HEAP_NCLASSES;
    hd->table_offset = HEAP_TABLE_OFFSET;
    if (o.uuid)
        memcpy(hd->uuid, o.uuid, 16);
    else if (getrandom(hd->uuid, 16, 0) != 16) {
        st = msgerr(msg, HEAP_EIO, "getrandom: %s", strerror(errno));
        free(pool0);
        goto fail;
    }
    hd->generation = o.generation;
    hd->narenas = narenas;
    header_checksum(hd);

    struct heap_arena_table *t = (struct heap_arena_table *)(pool0 + HEAP_TABLE_OFFSET);
    t->magic = HEAP_ARENA_MAGIC;
    for (uint64_t k = 0; k < narenas && !st; k++) {
        t->index = (uint32_t)k;
        st = pwrite_all(fd, k ? pool0 + HEAP_TABLE_OFFSET : pool0,
                        k ? sizeof *t : HEAP_TABLE_OFFSET + sizeof *t,
                        (k << HEAP_ARENA_SHIFT) + (k ? HEAP_TABLE_OFFSET : 0));
    }
    free(pool0);
    if (st) {
        msgerr(msg, st, "%s: cannot write: %s", path, strerror(errno));
        goto fail;
    }
    if (fsync(fd) != 0) {
        st = msgerr(msg, HEAP_EIO, "%s: fsync: %s", path, strerror(errno));
        goto fail;
    }
    close(fd);
    return HEAP_OK;
fail:
    close(fd);
    unlink(path);
    return st;
}

/* ---- validation (F3) ---- */

static heap_status check_header(const struct heap_file_header *hd, uint64_t fsize,
                                const char *path, char *msg)
{
    if (memcmp(hd->magic, HEAP_MAGIC, 8) != 0)
        return msgerr(msg, HEAP_EBADMAGIC, "%s: not an objstore heap (bad magic)", path);
    if (hd->version != HEAP_FORMAT_VERSION)
        return msgerr(msg, HEAP_EVERSION,
                      "%s: heap format version %u, this build reads version %u",
                      path, hd->version, HEAP_FORMAT_VERSION);
    uint64_t sum = XXH3_64bits(hd, offsetof(struct heap_file_header, checksum));
    if (sum != hd->checksum)
        return msgerr(msg, HEAP_ECHECKSUM,
                      "%s: header checksum mismatch (stored %016llx, computed %016llx)",
                      path, (unsigned long long)hd->checksum, (unsigned long long)sum);
    if (hd->header_size != HEAP_HEADER_SIZE || hd->arena_size != HEAP_ARENA_SIZE ||
        hd->pool_size != HEAP_POOL_SIZE || hd->align != HEAP_ALIGN ||
        hd->nclasses != HEAP_NCLASSES || hd->table_offset != HEAP_TABLE_OFFSET)
        return msgerr(msg, HEAP_EGEOMETRY,
                      "%s: geometry arena=%u pool=%u align=%u classes=%u header=%u "
                      "table=%u differs from this build's %u/%u/%u/%u/%u/%u",
                      path, hd->arena_size, hd->pool_size, hd->align, hd->nclasses,
                      hd->header_size, hd->table_offset, HEAP_ARENA_SIZE,
                      HEAP_POOL_SIZE, HEAP_ALIGN, HEAP_NCLASSES, HEAP_HEADER_SIZE,
                      HEAP_TABLE_OFFSET);
    if (hd->narenas == 0 || hd->narenas > (UINT64_C(1) << 32))
        return msgerr(msg, HEAP_ECORRUPT, "%s: header says %llu arenas", path,
                      (unsigned long long)hd->narenas);
    if (fsize < (hd->narenas << HEAP_ARENA_SHIFT))
        return msgerr(msg, HEAP_ETRUNCATED,
                      "%s: file has %llu bytes, header says %llu arenas (%llu bytes)",
                      path, (unsigned long long)fsize, (unsigned long long)hd->narenas,
                      (unsigned long long)(hd->narenas << HEAP_ARENA_SHIFT));
    return HEAP_OK;
}

/* ---- mapping ---- */

void heap_advise_mapping(void *p, uint64_t len)
{
    madvise(p, len, MADV_DONTFORK);    /* F4 */
    madvise(p, len, MADV_HUGEPAGE);    /* F5 */
}

/* Reserves len bytes of address space starting on a 2 MiB boundary (F5). */
static void *reserve_range(uint64_t len)
{
    const uint64_t align = UINT64_C(2) << 20;
    uint8_t *p = mmap(NULL, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0);
    if (p == MAP_FAILED)
        return MAP_FAILED;
    uint8_t *start = (uint8_t *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
    if (start > p)
        munmap(p, (size_t)(start - p));
    munmap(start + len, (size_t)(p + align - start));
    return start;
}

/* Maps file bytes [h->mapped, upto) at the same place in the range (F1).
 * Fresh arenas (growth) are mapped MAP_SHARED: nothing committed refers to
 * bytes past the old end of the file, so they may reach the file at any time,
 * and writing them costs one page-cache page per page instead of a page plus
 * its private copy, and no pwrite at commit (heap_fresh_from).  Once a
 * transaction ends they are mapped private again (heap_unshare). */
static heap_status map_region(heap_t *h, uint64_t upto, bool fresh)
{
    if (upto <= h->mapped)
        return HEAP_OK;
    if (upto > h->reserve)
        return heap_seterr(h, HEAP_ENOMEM,
                           "%s: heap of %llu bytes exceeds the reserved range (%llu)",
                           h->path, (unsigned long long)upto,
                           (unsigned long long)h->reserve);
    void *p = mmap(h->base + h->mapped, upto - h->mapped, PROT_READ | PROT_WRITE,
                   (fresh ? MAP_SHARED : MAP_PRIVATE | MAP_NORESERVE) | MAP_FIXED, h->fd,
                   (off_t)h->mapped);
    if (p == MAP_FAILED)
        return heap_seterr(h, HEAP_ENOMEM, "%s: mmap: %s", h->path, strerror(errno));
    heap_advise_mapping(p, upto - h->mapped);
    if (fresh && h->view.fresh_from == UINT64_MAX)
        h->view.fresh_from = h->mapped;
    h->mapped = upto;
    return HEAP_OK;
}

uint64_t heap_fresh_from(const heap_t *h)
{
    return h->view.fresh_from;
}

static heap_status map_more(heap_t *h, uint64_t upto)
{
    return map_region(h, upto, false);
}

heap_status heap_unshare(heap_t *h)
{
    if (h->view.fresh_from == UINT64_MAX)
        return HEAP_OK;
    uint64_t from = h->view.fresh_from;
    void *p = mmap(h->base + from, h->mapped - from, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, h->fd, (off_t)from);
    /* (The shared pages' bytes are the file's: nothing is lost.) */
    if (p == MAP_FAILED) {
        h->view.failed = true;
        return heap_seterr(h, HEAP_ENOMEM, "%s: mmap: %s", h->path, strerror(errno));
    }
    heap_advise_mapping(p, h->mapped - from);
    h->view.fresh_from = UINT64_MAX;
    h->wb_upto = 0;
    return HEAP_OK;
}

/* The read path's view (heap.h): where its maps cannot be had, it stays
 * off and every check takes the full path. */
static void alloc_view(heap_t *h)
{
    h->view.base = h->base;
    h->view.reserve = h->reserve;
    void *v = mmap(NULL, h->reserve >> 7, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void *c = mmap(NULL, h->reserve >> HEAP_POOL_SHIFT, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (v == MAP_FAILED || c == MAP_FAILED) {
        if (v != MAP_FAILED)
            munmap(v, h->reserve >> 7);
        if (c != MAP_FAILED)
            munmap(c, h->reserve >> HEAP_POOL_SHIFT);
        return;
    }
    h->view.vbits = v;
    h->view.pool_cls = c;
}

/* The dirty-line masks cover the whole reserved range; the kernel hands out
 * zero pages as they are touched, so their cost follows the heap's size. */
static heap_status alloc_line_masks(heap_t *h)
{
    h->npages_cap = h->reserve >> HEAP_PAGE_SHIFT;
    void *m = mmap(NULL, h->npages_cap * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        h->npages_cap = 0;
        return heap_seterr(h, HEAP_ENOMEM, "cannot reserve dirty-tracking space");
    }
    h->line_mask = m;
    h->view.line_mask = m;
    return HEAP_OK;
}

heap_status heap_open(const char *path, const heap_open_opts *opts, heap_t **out,
                      char msg[HEAP_MSG_MAX])
{
    heap_open_opts o = {0};
    if (opts)
        o = *opts;
    if (!o.reserve_bytes)
        o.reserve_bytes = DEFAULT_RESERVE;
    *out = NULL;
    bool ro = o.flags & HEAP_OPEN_RDONLY;

    int fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0)
        return msgerr(msg, errno == ENOENT ? HEAP_ENOENT : HEAP_EIO,
                      "%s: cannot open: %s", path, strerror(errno));
    if (!(o.flags & HEAP_OPEN_NOLOCK)) {
        struct flock fl = {.l_type = ro ? F_RDLCK : F_WRLCK, .l_whence = SEEK_SET};
        if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
            int e = errno;
            close(fd);
            if (e == EAGAIN || e == EACCES)
                return msgerr(msg, HEAP_EBUSY,
                              "%s: the heap is open %s elsewhere (locked)", path,
                              ro ? "for writing" : "");
            return msgerr(msg, HEAP_EIO, "%s: lock: %s", path, strerror(e));
        }
    }
    struct stat sb;
    struct heap_file_header hd;
    heap_status st;
    if (fstat(fd, &sb) != 0) {
        st = msgerr(msg, HEAP_EIO, "%s: fstat: %s", path, strerror(errno));
        goto fail_fd;
    }
    if ((uint64_t)sb.st_size < HEAP_HEADER_SIZE) {
        st = msgerr(msg, HEAP_ETRUNCATED, "%s: file has %lld bytes, less than a header",
                    path, (long long)sb.st_size);
        goto fail_fd;
    }
    if (pread(fd, &hd, sizeof hd, 0) != (ssize_t)sizeof hd) {
        st = msgerr(msg, HEAP_EIO, "%s: cannot read the header", path);
        goto fail_fd;
    }
    if ((st = check_header(&hd, (uint64_t)sb.st_size, path, msg)))
        goto fail_fd;

    heap_t *h = calloc(1, sizeof *h);
    if (!h || !(h->path = strdup(path))) {
        free(h);
        st = msgerr(msg, HEAP_ENOMEM, "out of memory");
        goto fail_fd;
    }
    h->fd = fd;
    h->flags = o.flags;
    pthread_mutex_init(&h->lazy_lock, NULL);
    h->reserve = o.reserve_bytes & ~(uint64_t)(HEAP_ARENA_SIZE - 1);
    /* Where address space is limited (ulimit -v, valgrind), take the largest
     * range that can be had, as long as it holds the file: growth then stops
     * there with HEAP_ENOMEM. */
    uint64_t need = ((uint64_t)sb.st_size + HEAP_ARENA_SIZE - 1) & ~(uint64_t)(HEAP_ARENA_SIZE - 1);
    void *base;
    while ((base = reserve_range(h->reserve)) == MAP_FAILED &&
           h->reserve / 2 >= need && h->reserve / 2 >= GROW_MAX_ARENAS * (uint64_t)HEAP_ARENA_SIZE)
        h->reserve /= 2;
    if (base == MAP_FAILED) {
        st = msgerr(msg, HEAP_ENOMEM, "cannot reserve %llu bytes of address space",
                    (unsigned long long)h->reserve);
        free(h->path);
        free(h);
        goto fail_fd;
    }
    h->base = base;
    h->view.fresh_from = UINT64_MAX;
    alloc_view(h);
    madvise(base, h->reserve, MADV_DONTFORK);
    if ((st = alloc_line_masks(h))) {
        msgerr(msg, st, "%s", h->msg);
        heap_close(h);
        return st;
    }
    uint64_t fmap = (uint64_t)sb.st_size & ~(uint64_t)(HEAP_ARENA_SIZE - 1);
    if ((st = map_more(h, fmap < h->reserve ? fmap : h->reserve)) ||
        (h->narenas = hd.narenas, st = heap_ram_resize(h, h->narenas))) {
        msgerr(msg, st, "%s", h->msg);
        heap_close(h);
        return st;
    }
    if (h->mapped < (hd.narenas << HEAP_ARENA_SHIFT)) {
        st = msgerr(msg, HEAP_ENOMEM, "%s: heap larger than the reserved range", path);
        heap_close(h);
        return st;
    }
    registry_add(h);
    if (!(o.flags & HEAP_OPEN_NOREBUILD) && (st = heap_rebuild(h))) {
        msgerr(msg, st, "%s", h->msg);
        heap_close(h);
        return st;
    }
    *out = h;
    return HEAP_OK;
fail_fd:
    close(fd);
    return st;
}

void heap_close(heap_t *h)
{
    if (!h)
        return;
    registry_del(h);
    if (h->base)
        munmap(h->base, h->reserve);
    if (h->fd >= 0)
        close(h->fd);
    free(h->arena);
    for (unsigned i = 0; i <= HEAP_DATA_POOLS; i++)
        free(h->bucket[i].w);
    for (unsigned c = 0; c < HEAP_NCLASSES; c++)
        free(h->usable[c].w);
    if (h->line_mask)
        munmap(h->line_mask, h->npages_cap * sizeof(uint64_t));
    if (h->view.vbits)
        munmap((void *)h->view.vbits, h->reserve >> 7);
    if (h->view.pool_cls)
        munmap((void *)h->view.pool_cls, h->reserve >> HEAP_POOL_SHIFT);
    free(h->dirty_pages.v);
    free(h->priv_pages.v);
    free(h->ranges);
    free(h->path);
    pthread_mutex_destroy(&h->lazy_lock);
    free(h);
}

heap_status heap_reload_header(heap_t *h)
{
    char msg[HEAP_MSG_MAX];
    struct stat sb;
    if (fstat(h->fd, &sb) != 0)
        return heap_seterr(h, HEAP_EIO, "%s: fstat: %s", h->path, strerror(errno));
    uint64_t fsize = (uint64_t)sb.st_size > h->mapped ? (uint64_t)sb.st_size : h->mapped;
    heap_status st = check_header(heap_hdr(h), fsize, h->path, msg);
    if (st)
        return heap_seterr(h, st, "%s", msg);
    uint64_t want = (uint64_t)sb.st_size & ~(uint64_t)(HEAP_ARENA_SIZE - 1);
    if ((st = map_more(h, want)))
        return st;
    if (h->mapped < (heap_hdr(h)->narenas << HEAP_ARENA_SHIFT))
        return heap_seterr(h, HEAP_ETRUNCATED, "%s: file shorter than its header says",
                           h->path);
    h->narenas = heap_hdr(h)->narenas;
    return heap_ram_resize(h, h->narenas);
}

/* ---- growth and shrinking ---- */

/* F6: hands fresh bytes [wb_upto, end - FRESH_WB_KEEP) to write-back once
 * the fresh range passes FRESH_WB_AFTER.  Advice: errors are left to the
 * commit's fdatasync. */
static void start_writeback(heap_t *h, uint64_t end)
{
    uint64_t from = h->view.fresh_from;
    if (from == UINT64_MAX || end < from || end - from <= FRESH_WB_AFTER)
        return;
    if (h->wb_upto < from)
        h->wb_upto = from;
    uint64_t to = end - FRESH_WB_KEEP;
    if (to <= h->wb_upto)
        return;
    crash_point("heap-writeback");
    sync_file_range(h->fd, (off_t)h->wb_upto, (off_t)(to - h->wb_upto), SYNC_FILE_RANGE_WRITE);
    h->wb_upto = to;
}

heap_status heap_grow(heap_t *h, uint64_t min_arenas)
{
    if (h->view.failed)
        return heap_seterr(h, HEAP_EFAILED, "%s: handle failed earlier", h->path);
    if (heap_readonly(h))
        return heap_seterr(h, HEAP_EREADONLY, "%s: heap is read-only", h->path);
    /* Steps of an eighth: the file stays within 12.5% (+4 MiB) of its use. */
    uint64_t step = h->narenas / 8;
    if (step < GROW_MIN_ARENAS)
        step = GROW_MIN_ARENAS;
    if (step > GROW_MAX_ARENAS)
        step = GROW_MAX_ARENAS;
    uint64_t n = h->narenas + step;
    if (n < min_arenas)
        n = min_arenas;
    n = (n + 1) & ~(uint64_t)1;   /* F5: the file ends on a 2 MiB boundary */
    if ((n << HEAP_ARENA_SHIFT) > h->reserve) {
        n = h->reserve >> HEAP_ARENA_SHIFT;
        if (n < min_arenas)
            return heap_seterr(h, HEAP_ENOMEM,
                               "%s: heap would exceed the reserved range of %llu bytes",
                               h->path, (unsigned long long)h->reserve);
    }
    uint64_t bytes = n << HEAP_ARENA_SHIFT;
    /* New arenas join the validated prefix: everything below must be in it. */
    heap_status vst = heap_validate_upto(h, UINT64_MAX);
    if (vst)
        return vst;
    if (bytes > h->mapped) {
        heap_status st = allocate_blocks(h->fd, h->mapped, bytes - h->mapped);
        if (st == HEAP_ENOSPC && n > min_arenas) {
            /* Take only what this allocation needs. */
            n = min_arenas > h->narenas ? min_arenas : h->narenas + 1;
            bytes = n << HEAP_ARENA_SHIFT;
            st = bytes > h->mapped ? allocate_blocks(h->fd, h->mapped, bytes - h->mapped)
                                   : HEAP_OK;
        }
        if (st)
            return heap_seterr(h, st, "%s: cannot grow the heap to %llu bytes: %s",
                               h->path, (unsigned long long)bytes,
                               st == HEAP_ENOSPC ? "disk full" : strerror(errno));
        /* The new length must be durable before a commit records it: the
         * store calls heap_sync before its commit point (heap_size_unsynced). */
        h->grown_unsynced = true;
        uint64_t old_end = h->mapped;
        if ((st = map_region(h, bytes, true)))
            return st;
        start_writeback(h, old_end);   /* F6: what is mapped now is being filled */
    }
    heap_status st = heap_ram_resize(h, n);
    if (st)
        return st;
    uint64_t old = h->narenas;
    h->narenas = n;
    for (uint64_t k = old; k < n; k++)
        heap_table_init(h, k);
    heap_arena_grow_ram(h, old, n);
    atomic_store_explicit(&h->valid_upto, n, memory_order_release);
    heap_hdr(h)->narenas = n;
    heap_header_seal(h);
    return HEAP_OK;
}

bool heap_size_unsynced(const heap_t *h)
{
    return h->grown_unsynced;
}

heap_status heap_truncate(heap_t *h)
{
    if (heap_readonly(h))
        return heap_seterr(h, HEAP_EREADONLY, "%s: heap is read-only", h->path);
    uint64_t len = h->narenas << HEAP_ARENA_SHIFT;
    if (h->mapped > len) {
        void *p = mmap(h->base + len, h->mapped - len, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            return heap_seterr(h, HEAP_ENOMEM, "mmap: %s", strerror(errno));
        for (uint64_t pg = len >> HEAP_PAGE_SHIFT; pg < (h->mapped >> HEAP_PAGE_SHIFT); pg++)
            h->line_mask[pg] = 0;
        h->mapped = len;
        if (h->view.fresh_from >= len)
            h->view.fresh_from = UINT64_MAX;
        if (h->wb_upto > len)
            h->wb_upto = len;
    }
    if (ftruncate(h->fd, (off_t)len) != 0)
        return heap_seterr(h, HEAP_EIO, "%s: ftruncate: %s", h->path, strerror(errno));
    return HEAP_OK;
}

/* ---- write-back, sync, replay ---- */

heap_status heap_sync(heap_t *h)
{
    if (h->view.failed)
        return heap_seterr(h, HEAP_EFAILED, "%s: handle failed earlier", h->path);
    if (heap_readonly(h))
        return HEAP_OK;
    crash_point(h->grown_unsynced ? "heap-grow-fdatasync" : "heap-fdatasync");
    if (fdatasync(h->fd) != 0)
        return heap_seterr(h, HEAP_EIO, "%s: fdatasync: %s", h->path, strerror(errno));
    h->grown_unsynced = false;
    return HEAP_OK;
}

heap_status heap_write_ckpt(heap_t *h, uint64_t epoch)
{
    if (h->view.failed)
        return heap_seterr(h, HEAP_EFAILED, "%s: handle failed earlier", h->path);
    if (heap_readonly(h))
        return heap_seterr(h, HEAP_EREADONLY, "%s: heap is read-only", h->path);
    struct heap_file_header hd = *heap_hdr(h);
    hd.ckpt_epoch = epoch;
    header_checksum(&hd);
    /* The header's page is clean (no transaction is open): the new bytes go
     * to the file and to the mapping alike, so the page stays equal to the
     * file (D1) and is dropped with the other written-back private pages. */
    crash_point("heap-ckpt-pwrite");
    heap_status st = pwrite_all(h->fd, &hd, sizeof hd, 0);
    if (st)
        return heap_seterr(h, st, "%s: pwrite of the header: %s", h->path, strerror(errno));
    *heap_hdr(h) = hd;
    u64vec_push(&h->priv_pages, 0);
    return HEAP_OK;
}

heap_status heap_pwrite_span(heap_t *h, uint64_t off, uint64_t len)
{
    crash_point("heap-pwrite");
    heap_status st = pwrite_all(h->fd, h->base + off, len, off);
    if (st)
        return heap_seterr(h, st, "%s: pwrite of %llu bytes at offset %llu: %s", h->path,
                           (unsigned long long)len, (unsigned long long)off,
                           strerror(errno));
    return HEAP_OK;
}

int heap_write_copy(heap_t *h, uint64_t off, const void *src, uint64_t len)
{
    crash_point("heap-pwrite");
    return pwrite_all(h->fd, src, len, off) ? (errno ? errno : EIO) : 0;
}

heap_status heap_apply(heap_t *h, uint64_t off, const void *data, uint64_t len,
                       bool to_file)
{
    if (len == 0)
        return HEAP_OK;
    if (off > h->reserve || len > h->reserve - off)
        return heap_seterr(h, HEAP_EINVAL, "%s: range [%llu, +%llu) is outside the heap",
                           h->path, (unsigned long long)off, (unsigned long long)len);
    if (to_file) {
        if (heap_readonly(h))
            return heap_seterr(h, HEAP_EREADONLY, "%s: heap is read-only", h->path);
        crash_point("replay-pwrite");
        heap_status st = pwrite_all(h->fd, data, len, off);
        if (st)
            return heap_seterr(h, st, "%s: replay pwrite at %llu: %s", h->path,
                               (unsigned long long)off, strerror(errno));
        uint64_t end = (off + len + HEAP_ARENA_SIZE - 1) & ~(uint64_t)(HEAP_ARENA_SIZE - 1);
        if (end > h->mapped) {
            if ((st = allocate_blocks(h->fd, h->mapped, end - h->mapped)) ||
                (st = map_more(h, end)))
                return heap_seterr(h, st ? st : HEAP_EIO, "%s: cannot extend for replay",
                                   h->path);
        }
    } else if (off + len > h->mapped) {
        return heap_seterr(h, HEAP_ETRUNCATED,
                           "%s: redo range [%llu, +%llu) lies past the file's end (%llu)",
                           h->path, (unsigned long long)off, (unsigned long long)len,
                           (unsigned long long)h->mapped);
    }
    memcpy(h->base + off, data, len);
    if (to_file)
        for (uint64_t pg = off >> HEAP_PAGE_SHIFT; pg <= (off + len - 1) >> HEAP_PAGE_SHIFT; pg++)
            u64vec_push(&h->priv_pages, pg);
    return HEAP_OK;
}
