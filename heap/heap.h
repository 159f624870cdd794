/*
 * heap.h -- the mapped heap file: the bottom layer of objstore.
 *
 * The heap is one file, mapped MAP_PRIVATE into a virtual range reserved once
 * at open, so the base address never moves while the heap is open.  The file
 * is cut into 1 MiB arenas at offsets k * 1 MiB; each arena is 64 pools of
 * 16 KiB.  Pool 0 of every arena holds metadata (arena 0's also holds the file
 * header); pools 1..63 hold data:
 *
 *   - small blocks, 16..512 bytes in 32 size classes of 16-byte steps; a pool
 *     serves one class, a bitmap in the arena's metadata says which blocks are
 *     allocated;
 *   - runs of 1..63 whole pools inside one arena, for blocks of 513 bytes up to
 *     63 * 16 KiB;
 *   - huge runs that start at pool 1 of an arena and cover whole arenas after
 *     it (their metadata pools included), for anything larger.
 *
 * Invariants the layer keeps (the file's, checked at open by heap_rebuild):
 *   H1 every reference stored in the file is an offset from the heap's start;
 *      0 is null and no block starts at 0.
 *   H2 the allocator's persisted state is the arena tables (pool descriptors
 *      and bitmaps); nothing is threaded through free blocks, so free space may
 *      hold anything.
 *   H3 every byte the layer or its caller changes is marked dirty (64-byte
 *      lines) before the change; the file holds only what was written back.
 *   H4 in-RAM allocator state (free pool lists, arena ordering) is derived from
 *      the persisted state and can be rebuilt from it at any time.
 *
 * Nothing here knows of LMDB, transactions or reference counting: the store
 * drives commit and abort through the dirty-range primitives below.
 * Threading: a heap is used by one thread at a time (the store serialises).
 */
#ifndef OBJSTORE_HEAP_H
#define OBJSTORE_HEAP_H

#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdbool.h>

/* ---- geometry (fixed by the file format, version 1) ---- */
#define HEAP_FORMAT_VERSION   1u
#define HEAP_ALIGN            16u
#define HEAP_POOL_SHIFT       14
#define HEAP_POOL_SIZE        (1u << HEAP_POOL_SHIFT)        /* 16 KiB */
#define HEAP_ARENA_SHIFT      20
#define HEAP_ARENA_SIZE       (1u << HEAP_ARENA_SHIFT)       /* 1 MiB */
#define HEAP_POOLS_PER_ARENA  (HEAP_ARENA_SIZE / HEAP_POOL_SIZE) /* 64 */
#define HEAP_DATA_POOLS       (HEAP_POOLS_PER_ARENA - 1)     /* 63 */
#define HEAP_NCLASSES         32u
#define HEAP_SMALL_MAX        (HEAP_NCLASSES * HEAP_ALIGN)   /* 512 */
#define HEAP_RUN_MAX          ((uint64_t)HEAP_DATA_POOLS * HEAP_POOL_SIZE)
#define HEAP_LINE_SHIFT       6
#define HEAP_LINE_SIZE        (1u << HEAP_LINE_SHIFT)        /* dirty unit */
#define HEAP_PAGE_SHIFT       12
#define HEAP_PAGE_SIZE        (1u << HEAP_PAGE_SHIFT)
#define HEAP_MAX_REFCOUNT     ((UINT64_C(1) << 48) - 1)
#define HEAP_MAX_NREFS        UINT32_MAX

/* ---- status codes (the public OBJSTORE_E* codes use the same numbers) ---- */
typedef enum heap_status {
    HEAP_OK = 0,
    HEAP_EINVAL = 1,      /* bad argument: size, offset, flag */
    HEAP_ENOMEM = 2,      /* out of RAM or of reserved address space */
    HEAP_EIO = 3,         /* a system call on the file failed */
    HEAP_ENOSPC = 4,      /* the disk (or a file-size limit) is full */
    HEAP_EBUSY = 5,       /* another opener holds the file's lock */
    HEAP_EEXIST = 6,      /* create: the file already exists */
    HEAP_ENOENT = 7,      /* open: no such file */
    HEAP_EBADMAGIC = 8,   /* not a heap file */
    HEAP_EVERSION = 9,    /* a format version this build cannot read */
    HEAP_ECHECKSUM = 10,  /* the header's checksum does not match */
    HEAP_EGEOMETRY = 11,  /* arena/pool/class geometry differs from ours */
    HEAP_ETRUNCATED = 12, /* the file is shorter than its header says */
    HEAP_ECORRUPT = 13,   /* allocator metadata or an object is inconsistent */
    HEAP_EBADOFF = 14,    /* an offset is not the start of a live object */
    HEAP_EREADONLY = 15,  /* a write on a read-only heap */
    HEAP_EFAILED = 16,    /* the handle failed earlier; only reopen clears it */
} heap_status;

#define HEAP_MSG_MAX 256

/* ---- the object header: 16 bytes at the start of every block ----
 *
 *   word 0: bits  0..47 reference count (persisted count, see store)
 *           bits 48..51 tail padding of a small block (block - exact size)
 *           bits 52..63 flags (reserved, zero in format 1)
 *   word 1: bits  0..31 type id, bits 32..63 number of reference slots
 *
 * then nrefs 64-bit reference slots (heap offsets, 0 = null), then raw bytes.
 */
typedef struct heap_obj {
    uint64_t rc_bits;
    uint32_t type;
    uint32_t nrefs;
} heap_obj;

#define HEAP_OBJ_HEADER 16u
#define HEAP_RC_MASK    HEAP_MAX_REFCOUNT
#define HEAP_PAD_SHIFT  48
#define HEAP_PAD_MASK   (UINT64_C(0xF) << HEAP_PAD_SHIFT)

typedef struct heap heap_t;

typedef struct heap_create_opts {
    uint64_t initial_bytes;  /* rounded up to whole arenas; 0 = 4 MiB */
    uint64_t generation;     /* recorded in the header */
    const uint8_t *uuid;     /* 16 bytes, or NULL for a fresh random one */
} heap_create_opts;

enum {
    HEAP_OPEN_RDONLY = 1,    /* read lock, never writes the file */
    HEAP_OPEN_NOLOCK = 2,    /* take no lock (tests, offline tools) */
    HEAP_OPEN_NOREBUILD = 4, /* caller applies redo, then heap_rebuild() */
};

typedef struct heap_open_opts {
    int flags;               /* HEAP_OPEN_* */
    uint64_t reserve_bytes;  /* virtual range to reserve; 0 = 256 GiB.  Where
                                that much address space cannot be had, the
                                largest range of at least the file's size
                                (halving down to 256 MiB) */
} heap_open_opts;

/* Creates a new heap file (fails with HEAP_EEXIST if it exists), writes and
 * fsyncs it.  Does not open it.  The caller fsyncs the directory. */
heap_status heap_create(const char *path, const heap_create_opts *opts,
                        char msg[HEAP_MSG_MAX]);

/* Opens and maps a heap, validates its header and (unless NOREBUILD) its
 * allocator metadata.  On failure *out is NULL and msg names the problem. */
heap_status heap_open(const char *path, const heap_open_opts *opts,
                      heap_t **out, char msg[HEAP_MSG_MAX]);

/* Closes: unmaps, releases the lock.  Discards dirty, unwritten changes. */
void heap_close(heap_t *h);

/* Rebuilds the in-RAM allocator state from the arena tables, validating the
 * first 64 arenas now and the others when first touched (an address in them,
 * an allocation that needs them): open costs the same for any heap size.  A
 * damaged table found later makes the call that touched it fail with
 * HEAP_ECORRUPT.  Called by heap_open unless NOREBUILD; after replay; after an
 * abort. */
heap_status heap_rebuild(heap_t *h);

/* The same, validating every arena now (verification). */
heap_status heap_rebuild_full(heap_t *h);

/* Arenas validated so far, in address order: after heap_rebuild_full
 * failed, the index of the arena whose table failed (a checker's repair
 * starts there). */
uint64_t heap_arenas_validated(const heap_t *h);

/* Message of the last error on this handle. */
const char *heap_errmsg(const heap_t *h);

/* ---- addressing ---- */

/* The fields the inline read path uses.  It is the first member of every
 * heap (heap_internal.h), so a heap_t pointer is a heap_view pointer.
 *
 *   vbits     1 bit per 16-byte unit of the reserved range: set for the
 *             allocated blocks of a small pool once a read transaction's
 *             full check (heap_check_obj_mark) passed on one of them,
 *             cleared when the block is freed.  Never set by a write
 *             transaction, so an abort leaves no stale bit.
 *   pool_cls  per pool: 1 + the size class of a small pool whose bits are
 *             in vbits; 0 otherwise (reset when the pool empties).
 * Both are anonymous NORESERVE memory over the reserved range (NULL where
 * it could not be had: every check then takes the full path). */
typedef struct heap_view {
    uint8_t *base;              /* the mapping; never moves while open */
    uint64_t reserve;           /* bytes of the reserved range */
    _Atomic uint64_t *vbits;
    _Atomic uint8_t *pool_cls;
    const uint64_t *line_mask;  /* heap_internal.h: for heap_mark_dirty's test */
    uint64_t fresh_from;        /* see heap_fresh_from */
    bool failed;                /* see heap_failed */
} heap_view;

static inline uint8_t *heap_base(const heap_t *h)
{
    return ((const heap_view *)h)->base;
}
static inline void *heap_ptr(const heap_t *h, uint64_t off)
{
    return heap_base(h) + off;
}
uint64_t heap_size(const heap_t *h);       /* bytes in use: narenas * 1 MiB */
uint64_t heap_file_size(const heap_t *h);  /* bytes of the file on disk */
uint64_t heap_generation(const heap_t *h);
/* The epoch of the last checkpoint recorded in the header: every commit up
 * to it is in the file.  Read right after open, it is the file's own value. */
uint64_t heap_ckpt_epoch(const heap_t *h);
/* Size of the reserved virtual range: no heap offset can reach past it. */
uint64_t heap_reserve_size(const heap_t *h);
/* Records a checkpoint: writes the header with ckpt_epoch = epoch to the
 * file (pwrite only: the caller's next heap_sync makes it durable together
 * with the bytes it vouches for).  No transaction may be open. */
heap_status heap_write_ckpt(heap_t *h, uint64_t epoch);
const uint8_t *heap_uuid(const heap_t *h); /* 16 bytes */
bool heap_readonly(const heap_t *h);

/* ---- allocation ---- */

/* Allocates a block of at least size bytes (size >= 1; 0 is taken as 1),
 * 16-byte aligned, with its first size bytes zeroed (a small block: all of
 * it; the rest of a run is unspecified), and marks those bytes and the
 * allocator metadata dirty.
 * Grows the file when needed (HEAP_ENOSPC when the disk is full). */
heap_status heap_alloc(heap_t *h, uint64_t size, uint64_t *off);

/* Frees a block that heap_alloc returned; HEAP_EBADOFF if off is not the start
 * of a live block.  The block's bytes are left as they are. */
heap_status heap_free(heap_t *h, uint64_t off);

/* heap_free of offs[0..n), each as heap_free checks it; offsets in one small
 * pool that follow each other (a list in address order) share one lookup of
 * the pool and one update of its descriptor.  On an error the offsets before
 * the bad one are freed, and *done (if not NULL) says how many. */
heap_status heap_free_many(heap_t *h, const uint64_t *offs, size_t n, size_t *done);

/* heap_check_ref of a non-null reference (its status and message); then,
 * when the object has no slots and its count is `count`, frees it on the
 * check's own lookup (*freed = true).  Anything else is left as it is
 * (*freed = false).  The commit's drain frees a leaf whose last reference
 * goes with its parent this way. */
heap_status heap_free_leaf(heap_t *h, uint64_t off, uint64_t count, bool *freed);

/* Size of the live block at off (its size class, or its run's bytes). */
uint64_t heap_block_size(const heap_t *h, uint64_t off);

/* Size the caller asked for when the block was allocated as an object, i.e.
 * heap_obj_new's header + slots + payload (0 if off is not live). */
uint64_t heap_obj_size(const heap_t *h, uint64_t off);

/* True when off is the start of a live block: in bounds, aligned, in a data
 * pool, its class stride and allocated bit (or the start of a run). */
bool heap_is_live(const heap_t *h, uint64_t off);

/* Checks a reference: 0 is accepted (null), otherwise heap_is_live, and the
 * header's nrefs must fit the block.  Fills msg on failure. */
heap_status heap_check_ref(heap_t *h, uint64_t off);

/* heap_check_ref for a non-null object, also giving its exact size (as
 * heap_obj_size) from the same lookup. */
heap_status heap_check_obj(heap_t *h, uint64_t off, uint64_t *size);

/* heap_check_obj that also records a small object it finds sound in the
 * view (vbits, pool_cls), so that heap_obj_fast knows it from then on.
 * Only for read transactions: see heap_view. */
heap_status heap_check_obj_mark(heap_t *h, uint64_t off, uint64_t *size);

/* ---- objects ---- */

/* Allocates an object: header (count 0, type, nrefs), nrefs zero slots and a
 * zeroed payload of payload bytes. */
heap_status heap_obj_new(heap_t *h, uint32_t type, uint32_t nrefs,
                         uint64_t payload, uint64_t *off);

static inline heap_obj *heap_obj_at(const heap_t *h, uint64_t off)
{
    return (heap_obj *)heap_ptr(h, off);
}
static inline uint64_t *heap_obj_slots(const heap_t *h, uint64_t off)
{
    return (uint64_t *)((uint8_t *)heap_ptr(h, off) + HEAP_OBJ_HEADER);
}
static inline uint64_t heap_obj_refcount(const heap_obj *o)
{
    return o->rc_bits & HEAP_RC_MASK;
}
/* Payload bytes of the object at off (exact size asked at creation). */
uint64_t heap_obj_payload_size(const heap_t *h, uint64_t off);
static inline uint8_t *heap_obj_payload(const heap_t *h, uint64_t off)
{
    const heap_obj *o = heap_obj_at(h, off);
    return (uint8_t *)heap_ptr(h, off) + HEAP_OBJ_HEADER + (uint64_t)o->nrefs * 8;
}

/* Sets the count (marks the header dirty); fails above HEAP_MAX_REFCOUNT. */
heap_status heap_obj_set_refcount(heap_t *h, uint64_t off, uint64_t rc);

/* Iterates over live blocks in address order: start with *cursor = 0; each
 * call stores the next live block's offset in *off and returns true, or
 * returns false at the end. */
bool heap_next_live(const heap_t *h, uint64_t *cursor, uint64_t *off);

/* ---- dirty tracking and the commit primitives ---- */

/* Marks [off, off+len) dirty; must be called before the bytes change.
 * Inline, the common case of a range within one page whose lines are all
 * marked already (a new object's header, its slots, a count changed twice)
 * costs one load and returns.  Bytes in the fresh range (heap_fresh_from)
 * are not tracked at all: they are in the page cache already, and a commit
 * needs only heap_sync for them. */
void heap_mark_dirty_lines(heap_t *h, uint64_t off, uint64_t len);
static inline void heap_mark_dirty(heap_t *h, uint64_t off, uint64_t len)
{
    const heap_view *v = (const heap_view *)h;
    if (off >= v->fresh_from)
        return;   /* mapped shared: in the page cache already (heap_fresh_from) */
    uint64_t end = off + len - 1;
    if (len && off < v->reserve && (off >> 12) == (end >> 12)) {
        uint64_t lo = (off >> 6) & 63, hi = (end >> 6) & 63;
        uint64_t mask = (~UINT64_C(0) >> (63 - hi)) & (~UINT64_C(0) << lo);
        if ((v->line_mask[off >> 12] & mask) == mask)
            return;
    }
    heap_mark_dirty_lines(h, off, len);
}

typedef struct heap_range {
    uint64_t off;
    uint64_t len;
} heap_range;

/* The dirty ranges, in address order, made of whole 64-byte lines and
 * coalesced.  The array stays valid until the next call that changes the
 * dirty set.  Returns the count. */
size_t heap_dirty_ranges(heap_t *h, const heap_range **ranges);
uint64_t heap_dirty_bytes(const heap_t *h);

/* Writes every dirty range into the file (pwrite), then forgets the dirty
 * set.  The written pages stay private until heap_drop_clean(). */
heap_status heap_writeback(heap_t *h);

/* Writes [off, off+len) of the mapping into the file (pwrite), leaving the
 * dirty set as it is.  With heap_mark_clean, the pieces of a commit that
 * writes some ranges before its commit point and the rest after it. */
heap_status heap_write_range(heap_t *h, uint64_t off, uint64_t len);

/* heap_write_range of ranges r[0..n) (some of the dirty ranges, in address
 * order), one pwrite for ranges that share a page or lie in pages next to
 * each other: the clean lines between them hold the file's bytes already
 * (D1), and those pages are written back anyway. */
heap_status heap_write_ranges(heap_t *h, const heap_range *r, size_t n);

/* Writes len bytes from src (a copy of committed bytes) at offset off of the
 * file: an errno value, or 0.  It touches neither the mapping nor the
 * handle's state, so it may run beside the thread that owns them (the
 * store's group commit writes a sealed transaction's bytes back so while the
 * next transaction changes the mapping). */
int heap_write_copy(heap_t *h, uint64_t off, const void *src, uint64_t len);

/* Forgets the dirty set after its ranges were written with heap_write_range;
 * the pages stay private until heap_drop_clean().  Fails (and fails the
 * handle) when the fresh tail cannot be mapped private again. */
heap_status heap_mark_clean(heap_t *h);

/* True once the handle failed (out of RAM tracking a change, a mapping that
 * could not be restored): its RAM no longer matches what a commit would
 * write, and only a reopen clears it. */
static inline bool heap_failed(const heap_t *h)
{
    return ((const heap_view *)h)->failed;
}

/* Forgets the dirty pages of the private range that lie in a free data
 * pool (rule A2: a free pool's bytes mean nothing) and drops their private
 * copies, so the mapping shows the file's bytes there again (D1): objects a
 * transaction made and freed itself then cost no redo and no write.  For a
 * commit with no other commit's write-back pending; call it after the
 * transaction's last free.  Pages of the fresh range are left as they are. */
heap_status heap_forget_free(heap_t *h);

/* Abort: drops every dirty page so the file's committed bytes come back,
 * restores the heap length from the header and rebuilds the allocator. */
heap_status heap_discard(heap_t *h);

/* Debug check (ARCHITECTURE §10): finds a page of the mapping that was
 * written (it is a private copy, per /proc/self/pagemap) although none of its
 * lines is dirty and it is not a written-back page: a write through a pointer
 * nobody marked, which would silently never reach the file.  HEAP_ECORRUPT
 * with the page's offset, or HEAP_OK.  Costs a read of 8 bytes per mapped
 * page: the store runs it at every commit in debug and sanitizer builds. */
heap_status heap_check_unmarked(heap_t *h);

/* Returns the private copies of written-back pages to the page cache. */
void heap_drop_clean(heap_t *h);
uint64_t heap_private_bytes(const heap_t *h);

/* fdatasync the file. */
heap_status heap_sync(heap_t *h);

/* Offset from which the heap is mapped MAP_SHARED because it grew past the
 * file's end in this transaction (UINT64_MAX: nowhere).  Bytes written there
 * are in the file's page cache already: a commit needs no redo and no pwrite
 * for them, only heap_sync before its commit point, and heap_mark_dirty does
 * not track them (they never appear in heap_dirty_ranges).  heap_mark_clean
 * and heap_discard map the range private again. */
uint64_t heap_fresh_from(const heap_t *h);

/* True when the file grew since the last heap_sync: its new length must be
 * made durable (heap_sync) before a commit records it. */
bool heap_size_unsynced(const heap_t *h);

/* Replay: copies len bytes into the heap at off.  With to_file, also pwrites
 * them to the file (extending it if needed); without, into RAM only (a
 * read-only opener).  Bounds are checked against the reserved range. */
heap_status heap_apply(heap_t *h, uint64_t off, const void *data, uint64_t len,
                       bool to_file);

/* Re-reads the header after replay (the length may have changed), checks it,
 * maps what the file now holds. */
heap_status heap_reload_header(heap_t *h);

/* ---- shrinking ---- */

/* Lowers the heap length past the empty arenas at the tail (header change,
 * marked dirty).  Returns how many arenas were released.  The file keeps its
 * size until heap_truncate(), which the caller runs once the new header is
 * durable. */
uint64_t heap_release_tail(heap_t *h);

/* At commit: cuts the wholly free arenas at the tail that lie past
 * `committed` (the heap length the last commit recorded), which the
 * transaction grew and filled only with objects it freed itself.  Nothing
 * committed lies there, so the file is cut back (heap_truncate) before the
 * commit writes anything, and their pages, never written, are dropped
 * unwritten.  The header's new arena count is the commit's to write.  Cut
 * back to `committed` itself, the growth owes no sync any more
 * (heap_size_unsynced is false again). */
heap_status heap_cut_fresh_tail(heap_t *h, uint64_t committed);

/* Shrinks the file to the heap length (remaps the tail PROT_NONE first). */
heap_status heap_truncate(heap_t *h);

/* ---- statistics, in the spirit of sys._debugmallocstats ---- */
typedef struct heap_class_stats {
    uint32_t block_size;
    uint64_t pools;        /* pools serving this class */
    uint64_t blocks_used;
    uint64_t blocks_free;  /* free blocks inside those pools */
} heap_class_stats;

typedef struct heap_stats {
    heap_class_stats cls[HEAP_NCLASSES];
    uint64_t arenas;            /* arenas in the heap */
    uint64_t arenas_free;       /* arenas with no live block */
    uint64_t pools_total;       /* data pools */
    uint64_t pools_free;
    uint64_t run_blocks;        /* live pool runs and huge runs */
    uint64_t run_bytes;
    uint64_t live_blocks;
    uint64_t live_bytes;        /* bytes of live blocks */
    uint64_t requested_bytes;   /* exact object sizes (heap_obj_size) */
    uint64_t file_bytes;
    double fragmentation;       /* 1 - live_bytes / bytes of used pools */
} heap_stats;

void heap_get_stats(const heap_t *h, heap_stats *st);

/* Size class helpers. */
static inline unsigned heap_size_class(uint64_t size)
{
    return size == 0 ? 0 : (unsigned)((size - 1) >> 4);
}
static inline uint32_t heap_class_size(unsigned cls)
{
    return (cls + 1) * HEAP_ALIGN;
}

/* The read path's check (O3): true when off starts a small object a read
 * transaction already found sound, with its exact size in *size.  It reads
 * one word of vbits, one byte of pool_cls and the object's own header;
 * false sends the caller to heap_check_obj_mark.  Sound on a damaged file:
 * a bit is set only after the full check, and off is bounded by the
 * reserved range before any load. */
static inline bool heap_obj_fast(const heap_t *h, uint64_t off, uint64_t *size)
{
    const heap_view *v = (const heap_view *)h;
    if ((off & (HEAP_ALIGN - 1)) || off >= v->reserve || !v->vbits)
        return false;
    uint64_t u = off >> 4;
    if (!((atomic_load_explicit(&v->vbits[u >> 6], memory_order_acquire) >> (u & 63)) & 1))
        return false;
    unsigned c = atomic_load_explicit(&v->pool_cls[off >> HEAP_POOL_SHIFT], memory_order_relaxed);
    const heap_obj *o = (const heap_obj *)(v->base + off);
    uint64_t n = heap_class_size(c - 1) - ((o->rc_bits & HEAP_PAD_MASK) >> HEAP_PAD_SHIFT);
    if (c == 0 || HEAP_OBJ_HEADER + (uint64_t)o->nrefs * 8 > n)
        return false;   /* O2 fails: the full check words the error */
    *size = n;
    return true;
}

/* Test-only hook: called with a name before each durability step (pwrite,
 * fdatasync) so crash tests can stop the process there.  NULL = none. */
extern void (*heap_crash_hook)(const char *step);

#endif
