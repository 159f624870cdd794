/*
 * alloc.c -- arenas, pools and blocks: allocation, freeing, placement and the
 * rebuild of the in-RAM state from the arena tables.
 *
 *   size 1..512          small block of class (size-1)/16, stride 16*(c+1),
 *                        in a pool of that class: 16384/stride blocks
 *   513..63*16 KiB       a run of ceil(size/16K) pools inside one arena
 *   larger               a huge run from pool 1 of arena k over n arenas,
 *                        n = ceil((size + 16 KiB) / 1 MiB)
 *
 * Placement (ARCHITECTURE §3, §10): a class allocates from its lowest-address
 * pool with a free block; a new pool or a run comes from the fullest arena
 * that has room (fewest free pools), ties broken by the lowest address; a huge
 * run takes the lowest run of wholly free arenas.  So live data drifts to the
 * front and the tail empties for heap_release_tail.
 *
 * Rules:
 *   A1 every change to an arena table is marked dirty before it is made.
 *   A2 a pool becomes FREE when its last block is freed; a free pool's bitmap
 *      means nothing (it is zeroed when the pool takes a class).
 *   A3 heap_rebuild trusts nothing in the tables: it checks every descriptor
 *      and count before the in-RAM state is derived from them.
 */
#include "heap_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- small containers ---- */

bool bitset_resize(bitset *b, uint64_t nbits)
{
    uint64_t nw = (nbits + 63) >> 6;
    if (nw <= b->nwords)
        return true;
    /* A first allocation comes zeroed (large ones as fresh pages): open
     * does not pay to clear bits for arenas it has not looked at. */
    uint64_t *w = b->w ? realloc(b->w, nw * sizeof *w) : calloc(nw, sizeof *w);
    if (!w)
        return false;
    if (b->w)
        memset(w + b->nwords, 0, (nw - b->nwords) * sizeof *w);
    b->w = w;
    b->nwords = nw;
    return true;
}

uint64_t bitset_next(bitset *b, uint64_t from)
{
    uint64_t wi = from >> 6;
    uint64_t w;
    if (from == 0) {
        wi = b->lo;
        if (wi >= b->nwords)
            return UINT64_MAX;
        w = b->w[wi];
    } else {
        if (wi >= b->nwords)
            return UINT64_MAX;
        w = b->w[wi] & (~UINT64_C(0) << (from & 63));
    }
    while (!w) {
        if (++wi >= b->nwords) {
            if (from == 0)
                b->lo = b->nwords;
            return UINT64_MAX;
        }
        w = b->w[wi];
    }
    if (from == 0)
        b->lo = wi;
    return (wi << 6) + (uint64_t)__builtin_ctzll(w);
}

/* ---- in-RAM arrays ---- */

heap_status heap_ram_resize(heap_t *h, uint64_t narenas)
{
    if (narenas <= h->arena_cap)
        return HEAP_OK;
    uint64_t cap = h->arena_cap ? h->arena_cap : 16;
    while (cap < narenas)
        cap *= 2;
    struct heap_arena *a = h->arena ? realloc(h->arena, cap * sizeof *a)
                                    : calloc(cap, sizeof *a);
    if (!a)
        return heap_seterr(h, HEAP_ENOMEM, "out of memory");
    if (h->arena)
        memset(a + h->arena_cap, 0, (cap - h->arena_cap) * sizeof *a);
    h->arena = a;
    h->arena_cap = cap;
    for (unsigned i = 0; i <= HEAP_DATA_POOLS; i++)
        if (!bitset_resize(&h->bucket[i], cap))
            return heap_seterr(h, HEAP_ENOMEM, "out of memory");
    for (unsigned c = 0; c < HEAP_NCLASSES; c++)
        if (!bitset_resize(&h->usable[c], cap * HEAP_POOLS_PER_ARENA))
            return heap_seterr(h, HEAP_ENOMEM, "out of memory");
    return HEAP_OK;
}

static inline uint32_t class_nblocks(unsigned c)
{
    return heap_class_nblocks[c];
}

static inline uint64_t pool_off(uint64_t k, unsigned i)
{
    return (k << HEAP_ARENA_SHIFT) + ((uint64_t)i << HEAP_POOL_SHIFT);
}

static inline uint64_t table_off(uint64_t k)
{
    return (k << HEAP_ARENA_SHIFT) + HEAP_TABLE_OFFSET;
}

/* heap_mark_dirty of len bytes that lie in one 64-byte line of arena k's
 * table (below the reserve, as every arena is): one bit to test when the
 * line is marked already, as it is after the first change of a pool. */
static inline __attribute__((always_inline)) void mark_table_line(heap_t *h, uint64_t off,
                                                                  uint64_t len)
{
    if (off < h->view.fresh_from &&
        !((h->view.line_mask[off >> HEAP_PAGE_SHIFT] >> ((off >> HEAP_LINE_SHIFT) & 63)) & 1))
        heap_mark_dirty_lines(h, off, len);
}

_Static_assert((HEAP_TABLE_OFFSET + offsetof(struct heap_arena_table, pool)) % 16 == 0 &&
               sizeof(struct heap_pooldesc) == 16,
               "a pool's descriptor lies in one 64-byte line");
_Static_assert((HEAP_TABLE_OFFSET + offsetof(struct heap_arena_table, bitmap)) % 8 == 0,
               "a bitmap word lies in one 64-byte line");

static inline void mark_desc(heap_t *h, uint64_t k, unsigned i, unsigned n)
{
    uint64_t off = table_off(k) + offsetof(struct heap_arena_table, pool) +
                   (uint64_t)i * sizeof(struct heap_pooldesc);
    if (n == 1)
        mark_table_line(h, off, sizeof(struct heap_pooldesc));
    else
        heap_mark_dirty(h, off, (uint64_t)n * sizeof(struct heap_pooldesc));
}

static inline void mark_bitmap_word(heap_t *h, uint64_t k, unsigned i, unsigned w)
{
    mark_table_line(h, table_off(k) + offsetof(struct heap_arena_table, bitmap) +
                           ((uint64_t)i * HEAP_BITMAP_WORDS + w) * 8, 8);
}

/* Recounts an arena's free pools and longest free run; moves it between
 * buckets. */
static void arena_update(heap_t *h, uint64_t k)
{
    struct heap_arena *a = &h->arena[k];
    if (a->nfree)
        bitset_clear(&h->bucket[a->nfree], k);
    const struct heap_arena_table *t = heap_table(h, k);
    unsigned nfree = 0, run = 0, maxrun = 0;
    for (unsigned i = 1; i <= HEAP_DATA_POOLS; i++) {
        if (t->pool[i].kind == HEAP_POOL_FREE) {
            nfree++;
            if (++run > maxrun)
                maxrun = run;
        } else {
            run = 0;
        }
    }
    a->nfree = (uint8_t)nfree;
    a->maxrun = (uint8_t)maxrun;
    if (nfree)
        bitset_set(&h->bucket[nfree], k);
}

/* New, empty arenas [from, to): free, in the emptiest bucket. */
bool heap_arena_grow_ram(heap_t *h, uint64_t from, uint64_t to)
{
    for (uint64_t k = from; k < to; k++) {
        h->arena[k] = (struct heap_arena){.state = ARENA_NORMAL, .nfree = HEAP_DATA_POOLS,
                                          .maxrun = HEAP_DATA_POOLS};
        bitset_set(&h->bucket[HEAP_DATA_POOLS], k);
    }
    return true;
}

/* Popcount of a pool bitmap, with the CPU's instruction where it has one. */
__attribute__((target("popcnt"))) static unsigned popcount_hw(const uint64_t *w)
{
    unsigned n = 0;
    for (unsigned i = 0; i < HEAP_BITMAP_WORDS; i++)
        n += (unsigned)__builtin_popcountll(w[i]);
    return n;
}

static unsigned popcount_sw(const uint64_t *w)
{
    unsigned n = 0;
    for (unsigned i = 0; i < HEAP_BITMAP_WORDS; i++)
        n += (unsigned)__builtin_popcountll(w[i]);
    return n;
}

static unsigned bitmap_count(const uint64_t *w)
{
    /* Atomic: threads opening different heaps at once may both set it. */
    static _Atomic int hw = -1;
    int v = atomic_load_explicit(&hw, memory_order_relaxed);
    if (v < 0) {
        v = __builtin_cpu_supports("popcnt") ? 1 : 0;
        atomic_store_explicit(&hw, v, memory_order_relaxed);
    }
    return v ? popcount_hw(w) : popcount_sw(w);
}

/* ---- rebuild (A3), lazily ----
 *
 * Arenas are validated in address order: [0, valid_upto) are checked and
 * have their in-RAM state; the rest are looked at when first needed (an
 * address in them, or an allocation that finds no room below).  Address
 * order matters: only the arena where a huge run starts says that the
 * following arenas are its continuation.  Open validates a bounded prefix, so
 * opening costs the same for a 64 MiB heap as for a 1 TiB one.
 */

#define EAGER_ARENAS 64u

/* Only arenas below valid_upto ever got RAM state: clearing stops there. */
static void ram_reset(heap_t *h)
{
    uint64_t v = atomic_load_explicit(&h->valid_upto, memory_order_relaxed);
    if (v > h->arena_cap)
        v = h->arena_cap;
    uint64_t bw = (v + 63) >> 6, uw = (v * HEAP_POOLS_PER_ARENA + 63) >> 6;
    for (unsigned i = 0; i <= HEAP_DATA_POOLS; i++) {
        memset(h->bucket[i].w, 0, (bw < h->bucket[i].nwords ? bw : h->bucket[i].nwords) * 8);
        h->bucket[i].lo = 0;
    }
    for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
        memset(h->usable[c].w, 0, (uw < h->usable[c].nwords ? uw : h->usable[c].nwords) * 8);
        h->usable[c].lo = 0;
    }
    memset(h->arena, 0, v * sizeof *h->arena);
    atomic_store_explicit(&h->valid_upto, 0, memory_order_release);
}

/* Checks arena k (the first not yet valid) and derives its RAM state. */
static heap_status validate_arena(heap_t *h, uint64_t k)
{
    uint64_t next = k + 1;
    {
        const struct heap_arena_table *t = heap_table(h, k);
        if (t->magic != HEAP_ARENA_MAGIC || t->index != (uint32_t)k)
            return heap_seterr(h, HEAP_ECORRUPT,
                               "%s: arena %llu (offset %llu): bad arena table "
                               "(magic %08x, index %u)", h->path, (unsigned long long)k,
                               (unsigned long long)table_off(k), t->magic, t->index);
        for (unsigned i = 1; i <= HEAP_DATA_POOLS; i++) {
            const struct heap_pooldesc *d = &t->pool[i];
            uint64_t at = pool_off(k, i);
            switch (d->kind) {
            case HEAP_POOL_FREE:
                break;
            case HEAP_POOL_SMALL: {
                if (d->cls >= HEAP_NCLASSES)
                    return heap_seterr(h, HEAP_ECORRUPT,
                                       "%s: pool at offset %llu: size class %u out of range",
                                       h->path, (unsigned long long)at, d->cls);
                uint32_t nb = class_nblocks(d->cls);
                /* Only the last word that holds blocks can have bits past
                 * them; the words after it must be zero. */
                unsigned lastw = (nb - 1) / 64;
                uint64_t tail = nb % 64 ? ~((UINT64_C(1) << (nb % 64)) - 1) : 0;
                bool stray = t->bitmap[i][lastw] & tail;
                for (unsigned w = lastw + 1; w < HEAP_BITMAP_WORDS; w++)
                    stray |= t->bitmap[i][w] != 0;
                if (stray)
                    return heap_seterr(h, HEAP_ECORRUPT,
                                       "%s: pool at offset %llu: bitmap marks blocks "
                                       "past the pool's %u", h->path,
                                       (unsigned long long)at, nb);
                unsigned count = bitmap_count(t->bitmap[i]);
                if (count != d->nalloc)
                    return heap_seterr(h, HEAP_ECORRUPT,
                                       "%s: pool at offset %llu: count %u but bitmap "
                                       "holds %u blocks", h->path, (unsigned long long)at,
                                       d->nalloc, count);
                if (count < nb)
                    bitset_set(&h->usable[d->cls], at >> HEAP_POOL_SHIFT);
                break;
            }
            case HEAP_POOL_RUN:
                if (d->npools < 1 || d->npools > HEAP_DATA_POOLS + 1 - i ||
                    d->size == 0 || d->size > (uint64_t)d->npools * HEAP_POOL_SIZE)
                    return heap_seterr(h, HEAP_ECORRUPT,
                                       "%s: run at offset %llu: %u pools, %llu bytes do not fit "
                                       "the arena", h->path, (unsigned long long)at,
                                       d->npools, (unsigned long long)d->size);
                for (unsigned j = 1; j < d->npools; j++)
                    if (t->pool[i + j].kind != HEAP_POOL_RUNCONT || t->pool[i + j].npools != j)
                        return heap_seterr(h, HEAP_ECORRUPT,
                                           "%s: run at offset %llu: pool %u of the run is "
                                           "not marked as its continuation", h->path,
                                           (unsigned long long)at, j);
                i += d->npools - 1;
                break;
            case HEAP_POOL_HUGE: {
                uint64_t n = ((uint64_t)d->npools + 1) / HEAP_POOLS_PER_ARENA;
                if (i != 1 || ((uint64_t)d->npools + 1) % HEAP_POOLS_PER_ARENA || n < 2 ||
                    n > h->narenas - k || d->size <= HEAP_RUN_MAX ||
                    d->size > (uint64_t)d->npools * HEAP_POOL_SIZE)
                    return heap_seterr(h, HEAP_ECORRUPT,
                                       "%s: huge run at offset %llu: %u pools, %llu bytes "
                                       "do not fit the heap", h->path,
                                       (unsigned long long)at, d->npools,
                                       (unsigned long long)d->size);
                for (unsigned j = 2; j <= HEAP_DATA_POOLS; j++)
                    if (t->pool[j].kind != HEAP_POOL_RUNCONT || t->pool[j].npools != j - 1)
                        return heap_seterr(h, HEAP_ECORRUPT,
                                           "%s: huge run at offset %llu: pool %u not marked "
                                           "as its continuation", h->path,
                                           (unsigned long long)at, j);
                for (uint64_t m = 1; m < n; m++)
                    h->arena[k + m].state = ARENA_HUGE_CONT;
                next = k + n;
                i = HEAP_DATA_POOLS;
                break;
            }
            default:
                return heap_seterr(h, HEAP_ECORRUPT,
                                   "%s: pool at offset %llu: %s pool kind %u", h->path,
                                   (unsigned long long)at,
                                   d->kind == HEAP_POOL_RUNCONT ? "orphan" : "unknown",
                                   d->kind);
            }
        }
        arena_update(h, k);
    }
    atomic_store_explicit(&h->valid_upto, next, memory_order_release);
    return HEAP_OK;
}

/* Validates every arena up to and including k (or to the end). */
heap_status heap_validate_upto(heap_t *h, uint64_t k)
{
    heap_status st = heap_ram_resize(h, h->narenas);
    uint64_t v = atomic_load_explicit(&h->valid_upto, memory_order_relaxed);
    while (!st && v <= k && v < h->narenas) {
        if ((st = validate_arena(h, v))) {
            /* Pools of the rejected arena that the check had already listed
             * as having room must not serve allocations. */
            for (unsigned c = 0; c < HEAP_NCLASSES; c++)
                for (unsigned i = 1; i <= HEAP_DATA_POOLS; i++)
                    bitset_clear(&h->usable[c], v * HEAP_POOLS_PER_ARENA + i);
            break;
        }
        v = atomic_load_explicit(&h->valid_upto, memory_order_relaxed);
    }
    return st;
}

uint64_t heap_arenas_validated(const heap_t *h)
{
    return atomic_load_explicit(&((heap_t *)h)->valid_upto, memory_order_acquire);
}

bool heap_arena_ready_slow(const heap_t *h, uint64_t k)
{
    heap_t *m = (heap_t *)h;   /* derived state only: see heap_internal.h */
    pthread_mutex_lock(&m->lazy_lock);
    heap_status st = heap_validate_upto(m, k);
    pthread_mutex_unlock(&m->lazy_lock);
    return st == HEAP_OK && k < atomic_load_explicit(&h->valid_upto, memory_order_acquire);
}

heap_status heap_rebuild(heap_t *h)
{
    heap_status st = heap_ram_resize(h, h->narenas);
    if (st)
        return st;
    ram_reset(h);
    return heap_validate_upto(h, EAGER_ARENAS - 1);
}

heap_status heap_rebuild_full(heap_t *h)
{
    heap_status st = heap_ram_resize(h, h->narenas);
    if (st)
        return st;
    ram_reset(h);
    return heap_validate_upto(h, UINT64_MAX);
}

/* ---- placement ---- */

/* The fullest arena with a run of need free pools, lowest address first;
 * UINT64_MAX if none. */
static uint64_t pick_arena(heap_t *h, unsigned need)
{
    for (unsigned n = need; n <= HEAP_DATA_POOLS; n++) {
        bitset *b = &h->bucket[n];
        for (uint64_t k = bitset_first(b); k != UINT64_MAX; k = bitset_next(b, k + 1))
            if (k < h->narenas && h->arena[k].maxrun >= need)
                return k;
    }
    return UINT64_MAX;
}

/* First pool index of a run of need free pools in arena k. */
static unsigned find_run(const heap_t *h, uint64_t k, unsigned need)
{
    const struct heap_arena_table *t = heap_table(h, k);
    unsigned run = 0;
    for (unsigned i = 1; i <= HEAP_DATA_POOLS; i++) {
        run = t->pool[i].kind == HEAP_POOL_FREE ? run + 1 : 0;
        if (run == need)
            return i + 1 - need;
    }
    return 0;
}

/* An arena with a run of need free pools, growing the heap if none. */
static heap_status arena_with_room(heap_t *h, unsigned need, uint64_t *k)
{
    *k = pick_arena(h, need);
    if (*k != UINT64_MAX)
        return HEAP_OK;
    if (atomic_load(&h->valid_upto) < h->narenas) {
        /* Room may wait in arenas not looked at yet. */
        heap_status st = heap_validate_upto(h, UINT64_MAX);
        if (st)
            return st;
        if ((*k = pick_arena(h, need)) != UINT64_MAX)
            return HEAP_OK;
    }
    uint64_t first_new = h->narenas;
    heap_status st = heap_grow(h, h->narenas + 1);
    if (st)
        return st;
    *k = first_new;
    return HEAP_OK;
}

static inline void zero_block(heap_t *h, uint64_t off, uint64_t len)
{
    len = (len + HEAP_ALIGN - 1) & ~(uint64_t)(HEAP_ALIGN - 1);
    heap_mark_dirty(h, off, len);
    uint8_t *p = h->base + off;
    if (len > HEAP_SMALL_MAX) {
        memset(p, 0, len);
        return;
    }
    /* A small block: 16-byte stores (an inlined memset of unknown length
     * is a `rep stos`, whose start-up costs more than these blocks). */
    for (uint64_t i = 0; i < len; i += HEAP_ALIGN)
        memset(p + i, 0, HEAP_ALIGN);
}

static heap_status alloc_small(heap_t *h, unsigned c, uint64_t *off)
{
    uint64_t gp = bitset_first(&h->usable[c]);
    if (gp == UINT64_MAX || gp >= h->narenas * HEAP_POOLS_PER_ARENA) {
        uint64_t k;
        heap_status st = arena_with_room(h, 1, &k);
        if (st)
            return st;
        unsigned i = find_run(h, k, 1);
        struct heap_arena_table *t = heap_table(h, k);
        mark_desc(h, k, i, 1);
        t->pool[i] = (struct heap_pooldesc){.kind = HEAP_POOL_SMALL, .cls = (uint8_t)c};
        heap_mark_dirty(h, table_off(k) + offsetof(struct heap_arena_table, bitmap[i]),
                        sizeof t->bitmap[i]);
        memset(t->bitmap[i], 0, sizeof t->bitmap[i]);
        arena_update(h, k);
        gp = (k << (HEAP_ARENA_SHIFT - HEAP_POOL_SHIFT)) + i;
        bitset_set(&h->usable[c], gp);
    }
    uint64_t k = gp / HEAP_POOLS_PER_ARENA;
    unsigned i = (unsigned)(gp % HEAP_POOLS_PER_ARENA);
    struct heap_arena_table *t = heap_table(h, k);
    struct heap_pooldesc *d = &t->pool[i];
    uint32_t nb = class_nblocks(c);
    uint64_t *bm = t->bitmap[i];
    unsigned w = 0;
    while (bm[w] == ~UINT64_C(0))
        w++;
    unsigned b = w * 64 + (unsigned)__builtin_ctzll(~bm[w]);
    mark_bitmap_word(h, k, i, w);
    bm[w] |= UINT64_C(1) << (b & 63);
    mark_desc(h, k, i, 1);
    if (++d->nalloc == nb)
        bitset_clear(&h->usable[c], gp);
    *off = pool_off(k, i) + (uint64_t)b * heap_class_size(c);
    zero_block(h, *off, heap_class_size(c));
    return HEAP_OK;
}

static heap_status alloc_run(heap_t *h, uint64_t size, uint64_t *off)
{
    unsigned need = (unsigned)((size + HEAP_POOL_SIZE - 1) >> HEAP_POOL_SHIFT);
    uint64_t k;
    heap_status st = arena_with_room(h, need, &k);
    if (st)
        return st;
    unsigned i = find_run(h, k, need);
    struct heap_arena_table *t = heap_table(h, k);
    mark_desc(h, k, i, need);
    t->pool[i] = (struct heap_pooldesc){.kind = HEAP_POOL_RUN, .npools = need, .size = size};
    for (unsigned j = 1; j < need; j++)
        t->pool[i + j] = (struct heap_pooldesc){.kind = HEAP_POOL_RUNCONT, .npools = j};
    arena_update(h, k);
    *off = pool_off(k, i);
    zero_block(h, *off, size);
    return HEAP_OK;
}

static heap_status alloc_huge(heap_t *h, uint64_t size, uint64_t *off)
{
    uint64_t n = (size + HEAP_POOL_SIZE + HEAP_ARENA_SIZE - 1) >> HEAP_ARENA_SHIFT;
    heap_status vst = heap_validate_upto(h, UINT64_MAX);
    if (vst)
        return vst;
    uint64_t k = 0, run = 0;
    for (uint64_t m = 0; m < h->narenas && run < n; m++) {
        bool free_arena = h->arena[m].state == ARENA_NORMAL &&
                          h->arena[m].nfree == HEAP_DATA_POOLS;
        run = free_arena ? run + 1 : 0;
        if (run == 1)
            k = m;
    }
    if (run < n) {
        if (run == 0)
            k = h->narenas;
        heap_status st = heap_grow(h, k + n);
        if (st)
            return st;
    }
    struct heap_arena_table *t = heap_table(h, k);
    mark_desc(h, k, 1, HEAP_DATA_POOLS);
    t->pool[1] = (struct heap_pooldesc){.kind = HEAP_POOL_HUGE,
                                        .npools = (uint32_t)(n * HEAP_POOLS_PER_ARENA - 1),
                                        .size = size};
    for (unsigned j = 2; j <= HEAP_DATA_POOLS; j++)
        t->pool[j] = (struct heap_pooldesc){.kind = HEAP_POOL_RUNCONT, .npools = j - 1};
    arena_update(h, k);
    for (uint64_t m = 1; m < n; m++) {
        struct heap_arena *a = &h->arena[k + m];
        if (a->nfree)
            bitset_clear(&h->bucket[a->nfree], k + m);
        a->nfree = 0;
        a->maxrun = 0;
        a->state = ARENA_HUGE_CONT;
    }
    *off = pool_off(k, 1);
    zero_block(h, *off, size);
    return HEAP_OK;
}

heap_status heap_alloc(heap_t *h, uint64_t size, uint64_t *off)
{
    *off = 0;
    if (h->view.failed)
        return heap_seterr(h, HEAP_EFAILED, "%s: handle failed earlier", h->path);
    if (heap_readonly(h))
        return heap_seterr(h, HEAP_EREADONLY, "%s: heap is read-only", h->path);
    if (size == 0)
        size = 1;
    if (size <= HEAP_SMALL_MAX)
        return alloc_small(h, heap_size_class(size), off);
    if (size <= HEAP_RUN_MAX)
        return alloc_run(h, size, off);
    if (size > h->reserve)
        return heap_seterr(h, HEAP_ENOMEM, "%s: %llu bytes exceed the reserved range",
                           h->path, (unsigned long long)size);
    return alloc_huge(h, size, off);
}

/* ---- freeing ---- */

/* Accounts for `freed` blocks just cleared in small pool i of arena k. */
static inline __attribute__((always_inline)) void
small_freed(heap_t *h, uint64_t k, unsigned i, struct heap_pooldesc *d, unsigned freed)
{
    if (!freed)
        return;
    unsigned c = d->cls;
    uint64_t gp = (k << (HEAP_ARENA_SHIFT - HEAP_POOL_SHIFT)) + i;
    mark_desc(h, k, i, 1);
    if (d->nalloc == class_nblocks(c))
        bitset_set(&h->usable[c], gp);
    d->nalloc = d->nalloc > freed ? d->nalloc - freed : 0;
    if (d->nalloc == 0) {
        heap_view_pool_freed(h, gp);
        d->kind = HEAP_POOL_FREE;
        d->cls = 0;
        bitset_clear(&h->usable[c], gp);
        arena_update(h, k);
    }
}

/* Clears live block b (at off) of small pool i of arena k in its bitmap bm;
 * O3: a freed block's view bit is cleared. */
static inline void clear_block(heap_t *h, uint64_t k, unsigned i, uint64_t *bm, uint64_t off,
                               unsigned b)
{
    heap_view_forget(h, off);
    mark_bitmap_word(h, k, i, b / 64);
    bm[b >> 6] &= ~(UINT64_C(1) << (b & 63));
}

heap_status heap_free(heap_t *h, uint64_t off)
{
    if (heap_readonly(h))
        return heap_seterr(h, HEAP_EREADONLY, "%s: heap is read-only", h->path);
    uint64_t k;
    unsigned i, b;
    struct heap_pooldesc *d = heap_live_desc(h, off, &k, &i, &b);   /* one lookup */
    if (!d)
        return heap_seterr(h, HEAP_EBADOFF, "%s: free of offset %llu: not a live block",
                           h->path, (unsigned long long)off);
    struct heap_arena_table *t = heap_table(h, k);
    if (d->kind == HEAP_POOL_SMALL) {
        clear_block(h, k, i, t->bitmap[i], off, b);
        small_freed(h, k, i, d, 1);
        return HEAP_OK;
    }
    heap_view_forget(h, off);
    switch (d->kind) {
    case HEAP_POOL_RUN: {
        unsigned n = d->npools;
        mark_desc(h, k, i, n);
        memset(d, 0, (size_t)n * sizeof *d);
        arena_update(h, k);
        return HEAP_OK;
    }
    default: { /* HEAP_POOL_HUGE */
        uint64_t n = ((uint64_t)d->npools + 1) / HEAP_POOLS_PER_ARENA;
        mark_desc(h, k, 1, HEAP_DATA_POOLS);
        memset(&t->pool[1], 0, HEAP_DATA_POOLS * sizeof *d);
        arena_update(h, k);
        for (uint64_t m = 1; m < n; m++) {
            h->arena[k + m].state = ARENA_NORMAL;
            heap_table_init(h, k + m);
            arena_update(h, k + m);
        }
        return HEAP_OK;
    }
    }
}

heap_status heap_free_many(heap_t *h, const uint64_t *offs, size_t n, size_t *done)
{
    size_t j = 0;
    heap_status st = HEAP_OK;
    if (n && heap_readonly(h))
        st = heap_seterr(h, HEAP_EREADONLY, "%s: heap is read-only", h->path);
    while (j < n && !st) {
        uint64_t off = offs[j], k;
        unsigned i, b;
        struct heap_pooldesc *d = heap_live_desc(h, off, &k, &i, &b);
        if (!d || d->kind != HEAP_POOL_SMALL) {
            if (!(st = heap_free(h, off)))   /* its checks and its message */
                j++;
            continue;
        }
        /* The run of offsets in this pool: the first was checked by
         * heap_live_desc, the rest are checked as it does, with the pool's
         * lookup done once. */
        unsigned c = d->cls, freed = 1;
        uint64_t *bm = heap_table(h, k)->bitmap[i], pool = off >> HEAP_POOL_SHIFT;
        clear_block(h, k, i, bm, off, b);
        for (j++; j < n && (offs[j] >> HEAP_POOL_SHIFT) == pool; j++, freed++) {
            off = offs[j];
            if ((off & (HEAP_ALIGN - 1)) || !heap_small_live(c, bm, off, &b)) {
                st = heap_seterr(h, HEAP_EBADOFF, "%s: free of offset %llu: not a live block",
                                 h->path, (unsigned long long)off);
                break;
            }
            clear_block(h, k, i, bm, off, b);
        }
        small_freed(h, k, i, d, freed);
    }
    if (done)
        *done = j;
    return st;
}

heap_status heap_free_leaf(heap_t *h, uint64_t off, uint64_t count, bool *freed)
{
    struct heap_pooldesc *d;
    uint64_t k = 0, size;
    unsigned i = 0, b = 0;
    *freed = false;
    heap_status st = heap_check_core(h, off, &d, &k, &i, &b, &size);
    if (st)
        return st;
    const heap_obj *o = heap_obj_at(h, off);
    if (o->nrefs || heap_obj_refcount(o) != count)
        return HEAP_OK;
    if (d->kind != HEAP_POOL_SMALL || (h->flags & HEAP_OPEN_RDONLY)) {
        st = heap_free(h, off);   /* a run, or its message */
        *freed = st == HEAP_OK;
        return st;
    }
    /* The check's lookup: pool i of arena k, block b, its bit set. */
    clear_block(h, k, i, heap_table(h, k)->bitmap[i], off, b);
    small_freed(h, k, i, d, 1);
    *freed = true;
    return HEAP_OK;
}

/* ---- shrinking ---- */

/* Releases the wholly free arenas at the tail, down to no fewer than
 * `least` (and 1): the count released. */
static uint64_t release_down_to(heap_t *h, uint64_t least)
{
    if (heap_readonly(h) || h->view.failed || heap_validate_upto(h, UINT64_MAX))
        return 0;
    uint64_t n = h->narenas;
    while (n > 1 && n > least && h->arena[n - 1].state == ARENA_NORMAL &&
           h->arena[n - 1].nfree == HEAP_DATA_POOLS)
        n--;
    uint64_t released = h->narenas - n;
    if (!released)
        return 0;
    for (uint64_t k = n; k < h->narenas; k++) {
        bitset_clear(&h->bucket[h->arena[k].nfree], k);
        h->arena[k].nfree = 0;
        h->arena[k].maxrun = 0;
    }
    h->narenas = n;
    heap_mark_dirty(h, 0, HEAP_HEADER_SIZE);
    heap_hdr(h)->narenas = n;
    heap_header_seal(h);
    return released;
}

uint64_t heap_release_tail(heap_t *h)
{
    return release_down_to(h, 1);
}

heap_status heap_cut_fresh_tail(heap_t *h, uint64_t committed)
{
    uint64_t least = (committed + HEAP_ARENA_SIZE - 1) >> HEAP_ARENA_SHIFT;
    if (h->narenas <= least || !release_down_to(h, least))
        return h->view.failed ? heap_seterr(h, HEAP_EFAILED, "%s: handle failed earlier", h->path)
                         : HEAP_OK;
    heap_status st = heap_truncate(h);
    /* Back to the committed length, which the commit that recorded it made
     * durable: no sync is owed for the growth (after a crash the file is at
     * least that long, whether or not the cut reached the disk). */
    if (!st && h->narenas == least)
        h->grown_unsynced = false;
    return st;
}
