/*
 * gc_set.c -- the collectors' sets of objects (gc_set.h has the rules).
 */
#include "gc_set.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

_Static_assert(GC_SET_UNITS == 1u << GC_SET_UNIT_SHIFT, "units per arena");

void *gc_array(size_t n, size_t size, bool zero)
{
    if (!n)
        n = 1;
    if (n > SIZE_MAX / size)
        return NULL;
    size_t bytes = n * size;
    uint8_t *p = malloc(bytes);
    if (!p)
        return NULL;
    const uintptr_t huge = (uintptr_t)2 << 20;
    if (bytes >= ((size_t)1 << 20)) {
        uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1);
        uintptr_t b = ((uintptr_t)p + bytes) & ~(huge - 1);
        if (b > a)
            madvise((void *)a, b - a, MADV_HUGEPAGE);   /* advice: may be refused */
    }
    if (zero)
        memset(p, 0, bytes);
    return p;
}

bool gc_set_init(gc_set *s, const heap_t *h)
{
    s->narenas = heap_size(h) >> HEAP_ARENA_SHIFT;
    s->n = 0;
    s->arena = calloc(s->narenas ? s->narenas : 1, sizeof *s->arena);
    return s->arena != NULL;
}

void gc_set_free(gc_set *s)
{
    for (uint64_t a = 0; s->arena && a < s->narenas; a++)
        free(s->arena[a]);
    free(s->arena);
    s->arena = NULL;
    s->narenas = s->n = 0;
}

int gc_set_add(gc_set *s, uint64_t off)
{
    uint64_t a = off >> HEAP_ARENA_SHIFT;
    if (a >= s->narenas || (off & (HEAP_ALIGN - 1)))
        return 0;   /* S1: the caller checked it; nothing to add */
    if (!s->arena[a] && !(s->arena[a] = calloc(1, sizeof *s->arena[a])))
        return -1;
    uint64_t unit = (off & (HEAP_ARENA_SIZE - 1)) / HEAP_ALIGN;
    uint64_t *w = &s->arena[a]->bits[unit / 64], bit = UINT64_C(1) << (unit % 64);
    if (*w & bit)
        return 0;
    *w |= bit;
    s->n++;
    return 1;
}

bool gc_set_rank(gc_set *s, uint64_t *order)
{
    if (s->n > UINT32_MAX)
        return false;
    uint64_t m = 0;
    for (uint64_t a = 0; a < s->narenas; a++) {
        struct gc_set_arena *sa = s->arena[a];
        if (!sa)
            continue;
        for (unsigned w = 0; w < GC_SET_WORDS; w++) {
            sa->rank[w] = (uint32_t)m;
            uint64_t x = sa->bits[w];
            if (!x)
                continue;
            if (!order) {
                m += gc_bits_in(x);
                continue;
            }
            uint64_t base = (a << HEAP_ARENA_SHIFT) + (uint64_t)w * 64 * HEAP_ALIGN;
            for (; x; x &= x - 1)
                order[m++] = base + (uint64_t)__builtin_ctzll(x) * HEAP_ALIGN;
        }
    }
    return true;
}

bool gc_set_next(const gc_set *s, uint64_t *i, uint64_t *off)
{
    for (uint64_t u = *i; (u >> GC_SET_UNIT_SHIFT) < s->narenas;) {
        const struct gc_set_arena *sa = s->arena[u >> GC_SET_UNIT_SHIFT];
        if (!sa) {
            u = ((u >> GC_SET_UNIT_SHIFT) + 1) << GC_SET_UNIT_SHIFT;   /* the next arena */
            continue;
        }
        uint64_t x = sa->bits[(u & (GC_SET_UNITS - 1)) >> 6] & (~UINT64_C(0) << (u & 63));
        if (x) {
            u = (u & ~UINT64_C(63)) + (uint64_t)__builtin_ctzll(x);
            *off = u * HEAP_ALIGN;
            *i = u + 1;
            return true;
        }
        u = (u | 63) + 1;
    }
    *i = s->narenas << GC_SET_UNIT_SHIFT;
    return false;
}
