/*
 * heap_internal.h -- the in-RAM state of an open heap, shared by the heap/ sources.
 *
 * Everything here is derived: from the file (the mapping) or rebuilt from the
 * arena tables by heap_rebuild().  The data structures:
 *
 *   arena[k]         per arena: state, free data pools, longest free run
 *   bucket[n]        bitset over arenas with n free pools (n = 0..63), so the
 *                    fullest arena with room, lowest address first, is a scan
 *                    for the first set bit (placement policy, ARCHITECTURE §3)
 *   usable[c]        bitset over global pool numbers: pools of class c with a
 *                    free block; lowest address first
 *   line_mask[p]     dirty 64-byte lines of 4 KiB page p (bit i = line i)
 *   dirty_pages      the pages whose line_mask is non-zero, unsorted
 *   priv_pages       pages written back but still private copies
 *   view.fresh_from  arenas grown past the file's old end in this transaction
 *                    are mapped MAP_SHARED (file.c map_region), until the
 *                    transaction ends
 */
#ifndef OBJSTORE_HEAP_INTERNAL_H
#define OBJSTORE_HEAP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "heap.h"
#include "heap_format.h"
#include "u64map.h"

enum arena_state {
    ARENA_NORMAL = 0,
    ARENA_HUGE_CONT = 1,  /* covered by a huge run that starts earlier */
};

struct heap_arena {
    uint8_t state;
    uint8_t nfree;        /* free data pools */
    uint8_t maxrun;       /* longest run of free data pools */
    uint8_t pad;
};

typedef struct bitset {
    uint64_t *w;
    uint64_t nwords;
    uint64_t lo;          /* no set bit in words below lo */
} bitset;


struct heap {
    heap_view view;             /* first: see heap.h */
    int fd;
    int flags;
    char *path;
    uint8_t *base;
    uint64_t reserve;       /* bytes of the reserved virtual range */
    uint64_t mapped;        /* bytes mapped from the file (= file size) */
    uint64_t narenas;       /* heap length, as the in-RAM header says */
    uint64_t uuid_gen;      /* unused */
    char msg[HEAP_MSG_MAX];

    /* allocator; arenas [0, valid_upto) are validated (alloc.c) */
    _Atomic uint64_t valid_upto;
    pthread_mutex_t lazy_lock;  /* readers validating more arenas */
    struct heap_arena *arena;
    uint64_t arena_cap;
    bitset bucket[HEAP_DATA_POOLS + 1];
    bitset usable[HEAP_NCLASSES];

    /* dirty tracking */
    uint64_t *line_mask;      /* reserve/4K entries, anonymous NORESERVE */
    uint64_t npages_cap;
    bool grown_unsynced;      /* file grown since the last fdatasync */
    uint64_t wb_upto;         /* fresh bytes below this handed to write-back (F6) */
    struct u64vec dirty_pages;
    struct u64vec priv_pages;
    heap_range *ranges;
    size_t nranges, ranges_cap;
    bool ranges_valid;

    /* registry of open heaps, for fork safety */
    struct heap *next_open;
};

static inline struct heap_file_header *heap_hdr(const heap_t *h)
{
    return (struct heap_file_header *)h->base;
}
static inline struct heap_arena_table *heap_table(const heap_t *h, uint64_t k)
{
    return (struct heap_arena_table *)(h->base + (k << HEAP_ARENA_SHIFT) +
                                       HEAP_TABLE_OFFSET);
}

/* file.c */
heap_status heap_seterr(heap_t *h, heap_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
heap_status heap_grow(heap_t *h, uint64_t min_arenas);
void heap_header_seal(heap_t *h);  /* recompute the checksum (marks dirty) */
void heap_table_init(heap_t *h, uint64_t k);
heap_status heap_pwrite_span(heap_t *h, uint64_t off, uint64_t len);
heap_status heap_unshare(heap_t *h);  /* map the fresh tail private again */
bool heap_arena_grow_ram(heap_t *h, uint64_t from, uint64_t to);

/* alloc.c */
heap_status heap_ram_resize(heap_t *h, uint64_t narenas);
heap_status heap_validate_upto(heap_t *h, uint64_t k);
bool heap_arena_ready_slow(const heap_t *h, uint64_t k);

/* True when arena k is validated, validating up to it if needed (readers may
 * race here: the slow path is serialised by lazy_lock). */
static inline bool heap_arena_ready(const heap_t *h, uint64_t k)
{
    return k < atomic_load_explicit(&((heap_t *)h)->valid_upto, memory_order_acquire) ||
           heap_arena_ready_slow(h, k);
}

/* object.c: 2^20 / (c + 1), rounded up: (u * heap_unit_recip[c]) >> 20 ==
 * u / (c + 1) exactly for every u < 1024 (a pool's 16-byte units), so a
 * block's number within its pool costs a multiply, not a division. */
extern const uint32_t heap_unit_recip[HEAP_NCLASSES];
extern const uint16_t heap_class_nblocks[HEAP_NCLASSES];   /* 1024 / (c + 1) */

/* Rule O1 (object.c), the one lookup both the checks and the frees make:
 * the descriptor of the pool holding the live block that starts at off, or
 * NULL when off is not a live block's start.  On success *k, *i are its
 * arena and pool, and *b its block number in a small pool (0 otherwise). */
/* True when off (16-byte aligned) is the start of an allocated block of a
 * small pool of class cls whose bitmap is bm; *b is then its number. */
static inline bool heap_small_live(unsigned cls, const uint64_t *bm, uint64_t off, unsigned *b)
{
    unsigned c = cls & (HEAP_NCLASSES - 1);
    uint32_t units = (uint32_t)((off & (HEAP_POOL_SIZE - 1)) >> 4);   /* 16-byte units */
    *b = (uint32_t)(((uint64_t)units * heap_unit_recip[c]) >> 20);    /* units / (c + 1) */
    return *b * (c + 1) == units && *b < heap_class_nblocks[c] && ((bm[*b >> 6] >> (*b & 63)) & 1);
}

static inline __attribute__((always_inline)) struct heap_pooldesc *
heap_live_desc(const heap_t *h, uint64_t off, uint64_t *k, unsigned *i, unsigned *b)
{
    if (off == 0 || (off & (HEAP_ALIGN - 1)) || off >= (h->narenas << HEAP_ARENA_SHIFT))
        return NULL;
    *k = off >> HEAP_ARENA_SHIFT;
    *i = (unsigned)((off >> HEAP_POOL_SHIFT) & (HEAP_POOLS_PER_ARENA - 1));
    if (*i == 0 || !heap_arena_ready(h, *k) || h->arena[*k].state != ARENA_NORMAL)
        return NULL;
    struct heap_arena_table *t = heap_table(h, *k);
    struct heap_pooldesc *d = &t->pool[*i];
    uint32_t units = (uint32_t)((off & (HEAP_POOL_SIZE - 1)) >> 4);   /* 16-byte units */
    *b = 0;
    switch (d->kind) {
    case HEAP_POOL_SMALL:
        return heap_small_live(d->cls, t->bitmap[*i], off, b) ? d : NULL;
    case HEAP_POOL_RUN:
    case HEAP_POOL_HUGE:
        return units == 0 ? d : NULL;
    default:
        return NULL;
    }
}

/* The exact size asked for the object at off, whose pool's descriptor is d. */
static inline uint64_t heap_exact_size(const heap_t *h, uint64_t off,
                                       const struct heap_pooldesc *d)
{
    if (d->kind == HEAP_POOL_SMALL) {
        uint64_t pad = (heap_obj_at(h, off)->rc_bits & HEAP_PAD_MASK) >> HEAP_PAD_SHIFT;
        return heap_class_size(d->cls) - pad;
    }
    return d->size;
}

/* Rules O1 and O2 (object.c): off is a live object's start and its slots fit
 * its block.  On success *d is its pool's descriptor, *k, *i, *b where it
 * is (heap_live_desc) and *size its exact size.  Inlined where it is used,
 * so that the check and what follows share one lookup. */
static inline __attribute__((always_inline)) heap_status
heap_check_core(heap_t *h, uint64_t off, struct heap_pooldesc **d, uint64_t *k, unsigned *i,
                unsigned *b, uint64_t *size)
{
    *d = heap_live_desc(h, off, k, i, b);
    if (!*d && off < (h->narenas << HEAP_ARENA_SHIFT) &&
        !heap_arena_ready(h, off >> HEAP_ARENA_SHIFT))
        return HEAP_ECORRUPT;   /* the arena's table is damaged: h->msg says how */
    if (!*d)
        return heap_seterr(h, HEAP_EBADOFF,
                           "%s: offset %llu is not the start of a live object", h->path,
                           (unsigned long long)off);
    *size = heap_exact_size(h, off, *d);
    const heap_obj *o = heap_obj_at(h, off);
    if (*size < HEAP_OBJ_HEADER || (uint64_t)o->nrefs * 8 > *size - HEAP_OBJ_HEADER)
        return heap_seterr(h, HEAP_ECORRUPT,
                           "%s: object at offset %llu: %u reference slots do not fit its "
                           "%llu bytes", h->path, (unsigned long long)off, o->nrefs,
                           (unsigned long long)*size);
    return HEAP_OK;
}

/* Clears the view's bit of a block being freed (O3).  Frees run under the
 * store's write lock, with no reader beside them (readers record with plain
 * loads and stores too, object.c): a load and a store do, without a locked
 * instruction per free. */
static inline void heap_view_forget(heap_t *h, uint64_t off)
{
    if (!h->view.vbits || off >= h->reserve)
        return;
    _Atomic uint64_t *w = &h->view.vbits[off >> 10];
    uint64_t bit = UINT64_C(1) << ((off >> 4) & 63);
    uint64_t old = atomic_load_explicit(w, memory_order_relaxed);
    if (old & bit)
        atomic_store_explicit(w, old & ~bit, memory_order_relaxed);
}
/* alloc.c: a small pool emptied; it may come back with another class. */
void heap_view_pool_freed(heap_t *h, uint64_t gp);

/* bitsets */
bool bitset_resize(bitset *b, uint64_t nbits);
static inline void bitset_set(bitset *b, uint64_t i)
{
    b->w[i >> 6] |= UINT64_C(1) << (i & 63);
    if ((i >> 6) < b->lo)
        b->lo = i >> 6;
}
static inline void bitset_clear(bitset *b, uint64_t i)
{
    b->w[i >> 6] &= ~(UINT64_C(1) << (i & 63));
}
static inline bool bitset_test(const bitset *b, uint64_t i)
{
    return (b->w[i >> 6] >> (i & 63)) & 1;
}
/* First set bit at or after from, or UINT64_MAX. */
uint64_t bitset_next(bitset *b, uint64_t from);
/* bitset_next(b, 0), its common case (the lowest word it remembers has a
 * bit) inline. */
static inline uint64_t bitset_first(bitset *b)
{
    return b->lo < b->nwords && b->w[b->lo] ? (b->lo << 6) + (uint64_t)__builtin_ctzll(b->w[b->lo])
                                            : bitset_next(b, 0);
}


/* file.c: advice for every mapping of the heap file (rules F4, F5). */
void heap_advise_mapping(void *p, uint64_t len);

#endif
