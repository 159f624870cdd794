/*
 * object.c -- objects on top of blocks: the 16-byte header, the check that an
 * offset is a live object's start, iteration in address order, statistics.
 *
 * Rules:
 *   O1 an offset from the file or a caller is used only after heap_is_live:
 *      in bounds, 16-byte aligned, in a data pool of a normal arena, on its
 *      class stride with its bit set, or the first byte of a run.
 *   O2 an object's reference slots fit its block: 16 + 8 * nrefs <= size
 *      (heap_check_ref), so walking slots never leaves the block.
 *   O3 a bit of the view's vbits (heap.h) is set only for an allocated
 *      block of a small pool a full check found sound (in a read
 *      transaction), and cleared by heap_free before the block can change;
 *      a pool's pool_cls is reset when it empties.  So a set bit names a
 *      live block of the committed state whose size class pool_cls gives,
 *      and heap_obj_fast checks its slots fit (O2) itself.
 */
#include "heap_internal.h"

#include <string.h>

/* heap_internal.h: blocks of class c in a pool, 1024 / (c + 1). */
const uint16_t heap_class_nblocks[HEAP_NCLASSES] = {
#define N(c) (uint16_t)(HEAP_POOL_SIZE / HEAP_ALIGN / ((c) + 1))
    N(0), N(1), N(2), N(3), N(4), N(5), N(6), N(7), N(8), N(9), N(10),
    N(11), N(12), N(13), N(14), N(15), N(16), N(17), N(18), N(19), N(20),
    N(21), N(22), N(23), N(24), N(25), N(26), N(27), N(28), N(29), N(30), N(31),
#undef N
};

/* heap_internal.h */
const uint32_t heap_unit_recip[HEAP_NCLASSES] = {
#define R(c) (uint32_t)(((UINT32_C(1) << 20) + (c)) / ((c) + 1))
    R(0), R(1), R(2), R(3), R(4), R(5), R(6), R(7), R(8), R(9), R(10),
    R(11), R(12), R(13), R(14), R(15), R(16), R(17), R(18), R(19), R(20),
    R(21), R(22), R(23), R(24), R(25), R(26), R(27), R(28), R(29), R(30), R(31),
#undef R
};

/* heap_live_desc, for callers that need only the descriptor. */
static inline const struct heap_pooldesc *live_desc(const heap_t *h, uint64_t off)
{
    uint64_t k;
    unsigned i, b;
    return heap_live_desc(h, off, &k, &i, &b);
}

bool heap_is_live(const heap_t *h, uint64_t off)
{
    return live_desc(h, off) != NULL;
}

uint64_t heap_block_size(const heap_t *h, uint64_t off)
{
    const struct heap_pooldesc *d = live_desc(h, off);
    if (!d)
        return 0;
    if (d->kind == HEAP_POOL_SMALL)
        return heap_class_size(d->cls);
    return (uint64_t)d->npools * HEAP_POOL_SIZE;
}

uint64_t heap_obj_size(const heap_t *h, uint64_t off)
{
    const struct heap_pooldesc *d = live_desc(h, off);
    return d ? heap_exact_size(h, off, d) : 0;
}

uint64_t heap_obj_payload_size(const heap_t *h, uint64_t off)
{
    uint64_t size = heap_obj_size(h, off);
    uint64_t head = HEAP_OBJ_HEADER + (uint64_t)heap_obj_at(h, off)->nrefs * 8;
    return size > head ? size - head : 0;
}

heap_status heap_check_ref(heap_t *h, uint64_t off)
{
    uint64_t size;
    return off == 0 ? HEAP_OK : heap_check_obj(h, off, &size);
}

/* Records in the view (heap.h) that the small block at off is sound.  The
 * first time an arena is seen, the allocation bitmaps of all its small
 * pools that hold blocks are copied in, so a walk pays the tables once per
 * arena (1 MiB), reading them in order, not once per object or pool; the
 * slots-fit rule (O2) of those blocks is then checked by heap_obj_fast
 * itself.  An empty pool is left out: it may take another class in a later
 * write transaction without a free to reset its pool_cls.
 *
 * Readers record concurrently with plain loads and stores, no locked
 * instruction: one may overwrite a bit another just set, which only costs
 * that block one more full check.  No bit can be set wrongly: blocks are
 * freed, and pools change class, only in write transactions, which no
 * reader runs beside. */
/* Per class, the units where a full pool's blocks start. */
static uint64_t full_pattern[HEAP_NCLASSES][HEAP_BITMAP_WORDS];
static pthread_once_t full_once = PTHREAD_ONCE_INIT;

static void full_init(void)
{
    for (unsigned c = 0; c < HEAP_NCLASSES; c++)
        for (uint64_t u = 0; u + (c + 1) <= HEAP_POOL_SIZE / HEAP_ALIGN; u += c + 1)
            full_pattern[c][u >> 6] |= UINT64_C(1) << (u & 63);
}

/* Copies small pool gp's block starts (descriptor d, bitmap bm) into vbits. */
static void view_record_pool(heap_t *h, uint64_t gp, const struct heap_pooldesc *d,
                             const uint64_t *bm)
{
    unsigned c = d->cls;
    _Atomic uint64_t *vw = &h->view.vbits[(gp << HEAP_POOL_SHIFT) >> 10];   /* 16 words */
    uint64_t words[HEAP_BITMAP_WORDS] = {0};
    if (d->nalloc == heap_class_nblocks[c]) {
        /* A full pool (the common case of a walk): every block start. */
        pthread_once(&full_once, full_init);
        memcpy(words, full_pattern[c], sizeof words);
    } else {
        for (unsigned w = 0; w < HEAP_BITMAP_WORDS; w++)
            for (uint64_t m = bm[w]; m; m &= m - 1) {
                uint64_t u = (uint64_t)(w * 64 + (unsigned)__builtin_ctzll(m)) * (c + 1);
                if (u < HEAP_POOL_SIZE / HEAP_ALIGN)
                    words[u >> 6] |= UINT64_C(1) << (u & 63);
            }
    }
    for (unsigned w = 0; w < HEAP_BITMAP_WORDS; w++)
        if (words[w])
            atomic_store_explicit(&vw[w], atomic_load_explicit(&vw[w], memory_order_relaxed) |
                                              words[w], memory_order_release);
    atomic_store_explicit(&h->view.pool_cls[gp], (uint8_t)(c + 1), memory_order_release);
}

static void view_record(heap_t *h, uint64_t off, const struct heap_pooldesc *d)
{
    uint64_t gp = off >> HEAP_POOL_SHIFT;
    if (atomic_load_explicit(&h->view.pool_cls[gp], memory_order_relaxed) == d->cls + 1) {
        _Atomic uint64_t *vw = &h->view.vbits[(gp << HEAP_POOL_SHIFT) >> 10];
        uint64_t u = (off & (HEAP_POOL_SIZE - 1)) >> 4, bit = UINT64_C(1) << (u & 63);
        uint64_t old = atomic_load_explicit(&vw[u >> 6], memory_order_relaxed);
        if (!(old & bit))
            atomic_store_explicit(&vw[u >> 6], old | bit, memory_order_release);
        return;
    }
    /* First look at this pool: bring in every small pool of its arena not
     * yet recorded (off's own among them: it holds a live block). */
    uint64_t first = gp & ~(uint64_t)(HEAP_POOLS_PER_ARENA - 1);
    const struct heap_arena_table *t = heap_table(h, off >> HEAP_ARENA_SHIFT);
    for (unsigned i = 1; i < HEAP_POOLS_PER_ARENA; i++) {
        const struct heap_pooldesc *di = &t->pool[i];
        if (di->kind == HEAP_POOL_SMALL && di->nalloc > 0 &&
            atomic_load_explicit(&h->view.pool_cls[first + i], memory_order_relaxed) == 0)
            view_record_pool(h, first + i, di, t->bitmap[i]);
    }
}

void heap_view_pool_freed(heap_t *h, uint64_t gp)
{
    if (h->view.pool_cls && (gp << HEAP_POOL_SHIFT) < h->reserve)
        atomic_store_explicit(&h->view.pool_cls[gp], 0, memory_order_relaxed);
}

static inline __attribute__((always_inline)) heap_status
check_obj(heap_t *h, uint64_t off, uint64_t *out, bool mark)
{
    struct heap_pooldesc *d;
    uint64_t k = 0;
    unsigned i = 0, b = 0;
    heap_status st = heap_check_core(h, off, &d, &k, &i, &b, out);
    if (!st && mark && d->kind == HEAP_POOL_SMALL && h->view.vbits)
        view_record(h, off, d);
    return st;
}

heap_status heap_check_obj(heap_t *h, uint64_t off, uint64_t *out)
{
    return check_obj(h, off, out, false);
}

heap_status heap_check_obj_mark(heap_t *h, uint64_t off, uint64_t *out)
{
    return check_obj(h, off, out, true);
}


heap_status heap_obj_new(heap_t *h, uint32_t type, uint32_t nrefs, uint64_t payload,
                         uint64_t *off)
{
    *off = 0;
    uint64_t size = HEAP_OBJ_HEADER + (uint64_t)nrefs * 8;
    if (payload > (UINT64_C(1) << 56) - size)
        return heap_seterr(h, HEAP_EINVAL, "%s: object payload of %llu bytes is too large",
                           h->path, (unsigned long long)payload);
    size += payload;
    heap_status st = heap_alloc(h, size, off);
    if (st)
        return st;
    heap_obj *o = heap_obj_at(h, *off);   /* zeroed and dirty */
    if (size <= HEAP_SMALL_MAX)
        o->rc_bits = (heap_class_size(heap_size_class(size)) - size) << HEAP_PAD_SHIFT;
    o->type = type;
    o->nrefs = nrefs;
    return HEAP_OK;
}

heap_status heap_obj_set_refcount(heap_t *h, uint64_t off, uint64_t rc)
{
    if (rc > HEAP_MAX_REFCOUNT)
        return heap_seterr(h, HEAP_EINVAL,
                           "%s: object at offset %llu: reference count overflow", h->path,
                           (unsigned long long)off);
    heap_obj *o = heap_obj_at(h, off);
    heap_mark_dirty(h, off, 8);
    o->rc_bits = (o->rc_bits & ~HEAP_RC_MASK) | rc;
    return HEAP_OK;
}

/* ---- iteration ---- */

bool heap_next_live(const heap_t *h, uint64_t *cursor, uint64_t *off)
{
    uint64_t pos = *cursor;
    uint64_t end = h->narenas << HEAP_ARENA_SHIFT;
    while (pos < end) {
        uint64_t k = pos >> HEAP_ARENA_SHIFT;
        if (!heap_arena_ready(h, k))
            break;   /* a damaged table ends the walk; h->msg says where */
        if (h->arena[k].state != ARENA_NORMAL) {
            pos = (k + 1) << HEAP_ARENA_SHIFT;
            continue;
        }
        unsigned i = (unsigned)((pos >> HEAP_POOL_SHIFT) & (HEAP_POOLS_PER_ARENA - 1));
        if (i == 0) {
            pos = (k << HEAP_ARENA_SHIFT) + HEAP_POOL_SIZE;
            i = 1;
        }
        const struct heap_arena_table *t = heap_table(h, k);
        const struct heap_pooldesc *d = &t->pool[i];
        uint64_t pstart = pos & ~(uint64_t)(HEAP_POOL_SIZE - 1);
        switch (d->kind) {
        case HEAP_POOL_SMALL: {
            uint32_t sz = heap_class_size(d->cls);
            uint64_t nb = HEAP_POOL_SIZE / sz;
            uint64_t b = (pos - pstart + sz - 1) / sz;
            while (b < nb) {
                uint64_t w = t->bitmap[i][b >> 6] >> (b & 63);
                if (w) {
                    b += (uint64_t)__builtin_ctzll(w);
                    if (b >= nb)
                        break;
                    *off = pstart + b * sz;
                    *cursor = *off + sz;
                    return true;
                }
                b = (b | 63) + 1;
            }
            pos = pstart + HEAP_POOL_SIZE;
            break;
        }
        case HEAP_POOL_RUN:
        case HEAP_POOL_HUGE:
            if (pos == pstart) {
                *off = pos;
                *cursor = pos + (uint64_t)d->npools * HEAP_POOL_SIZE;
                return true;
            }
            pos = pstart + (uint64_t)d->npools * HEAP_POOL_SIZE;
            break;
        default:
            pos = pstart + HEAP_POOL_SIZE;
            break;
        }
    }
    *cursor = end;
    return false;
}

/* ---- statistics ---- */

void heap_get_stats(const heap_t *h, heap_stats *st)
{
    memset(st, 0, sizeof *st);
    for (unsigned c = 0; c < HEAP_NCLASSES; c++)
        st->cls[c].block_size = heap_class_size(c);
    st->arenas = h->narenas;
    st->file_bytes = h->mapped;
    if (h->narenas)
        heap_arena_ready(h, h->narenas - 1);   /* statistics cover every arena */
    uint64_t used_pool_bytes = 0;
    uint64_t valid = atomic_load(&((heap_t *)h)->valid_upto);
    for (uint64_t k = 0; k < valid && k < h->narenas; k++) {
        if (h->arena[k].state != ARENA_NORMAL)
            continue;
        const struct heap_arena_table *t = heap_table(h, k);
        st->pools_total += HEAP_DATA_POOLS;
        st->pools_free += h->arena[k].nfree;
        if (h->arena[k].nfree == HEAP_DATA_POOLS)
            st->arenas_free++;
        for (unsigned i = 1; i <= HEAP_DATA_POOLS; i++) {
            const struct heap_pooldesc *d = &t->pool[i];
            if (d->kind == HEAP_POOL_SMALL) {
                heap_class_stats *cs = &st->cls[d->cls];
                uint32_t nb = HEAP_POOL_SIZE / cs->block_size;
                cs->pools++;
                cs->blocks_used += d->nalloc;
                cs->blocks_free += nb - d->nalloc;
                st->live_blocks += d->nalloc;
                st->live_bytes += (uint64_t)d->nalloc * cs->block_size;
                used_pool_bytes += HEAP_POOL_SIZE;
                uint64_t base = (k << HEAP_ARENA_SHIFT) + ((uint64_t)i << HEAP_POOL_SHIFT);
                for (uint32_t b = 0; b < nb; b++)
                    if ((t->bitmap[i][b >> 6] >> (b & 63)) & 1) {
                        uint64_t pad = (heap_obj_at(h, base + (uint64_t)b * cs->block_size)
                                            ->rc_bits & HEAP_PAD_MASK) >> HEAP_PAD_SHIFT;
                        st->requested_bytes += cs->block_size - pad;
                    }
            } else if (d->kind == HEAP_POOL_RUN || d->kind == HEAP_POOL_HUGE) {
                uint64_t bytes = (uint64_t)d->npools * HEAP_POOL_SIZE;
                st->run_blocks++;
                st->run_bytes += bytes;
                st->live_blocks++;
                st->live_bytes += bytes;
                st->requested_bytes += d->size;
                used_pool_bytes += bytes;
                if (d->kind == HEAP_POOL_HUGE) {
                    uint64_t n = ((uint64_t)d->npools + 1) / HEAP_POOLS_PER_ARENA;
                    st->pools_total += (n - 1) * HEAP_DATA_POOLS;
                }
            }
        }
    }
    st->fragmentation = used_pool_bytes ? 1.0 - (double)st->live_bytes / used_pool_bytes : 0;
}
