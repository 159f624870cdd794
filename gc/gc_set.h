/*
 * gc_set.h -- a set of objects for the collectors of this layer (cycles.c,
 * young.c): a membership bitmap per arena touched, then dense indexes.
 *
 * An object's bit is its 16-byte unit of the heap, in a bitmap allocated
 * the first time its arena is touched (8 KiB of bits and 4 KiB of ranks per
 * arena, so the set costs at most heap bytes / 85 in RAM, and no hashing).
 * Once the members are known, gc_set_rank numbers them in address order:
 * gc_set_index turns a member's offset into that number, an index into
 * plain arrays of the collector's working state.
 *
 * Rules:
 *   S1 only the collector's own code adds members, each the start of a live
 *      object it checked (or a young object's start): a bit set names a
 *      member, and a lookup of any other offset (out of range, unaligned, a
 *      bad slot) answers "not a member", never reads outside the set.
 *   S2 indexes are valid from gc_set_rank until a member is added or
 *      removed; they are 32 bits (a set of more than 2^32 - 1 members is
 *      refused by gc_set_rank).
 */
#ifndef OBJSTORE_GC_SET_H
#define OBJSTORE_GC_SET_H

#include <stdbool.h>
#include <stdint.h>

#include "heap.h"

#define GC_SET_UNITS (HEAP_ARENA_SIZE / HEAP_ALIGN)   /* 65536 per arena */
#define GC_SET_UNIT_SHIFT 16                          /* log2(GC_SET_UNITS) */
#define GC_SET_WORDS (GC_SET_UNITS / 64)              /* 1024 */

struct gc_set_arena {
    uint64_t bits[GC_SET_WORDS];
    uint32_t rank[GC_SET_WORDS];   /* members before this word (S2) */
};

typedef struct gc_set {
    struct gc_set_arena **arena;   /* by arena number; NULL = no member */
    uint64_t narenas;
    uint64_t n;                    /* members */
} gc_set;

/* Bits set in x.  Inline (no libgcc call where the build does not assume
 * a popcount instruction): it runs for every member and slot. */
static inline uint64_t gc_bits_in(uint64_t x)
{
    x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
    x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
    x = (x + (x >> 4)) & UINT64_C(0x0f0f0f0f0f0f0f0f);
    return (x * UINT64_C(0x0101010101010101)) >> 56;
}

/* The collectors' arrays, one entry per member (n of size bytes; zeroed
 * when zero), to be released with free().  Those of a megabyte or more are
 * advised MADV_HUGEPAGE before their first touch: a collection over a
 * million objects then takes a few 2 MiB faults instead of thousands of
 * 4 KiB ones.  NULL when out of memory (or n * size overflows). */
void *gc_array(size_t n, size_t size, bool zero);

/* An empty set over h's arenas; false when out of memory. */
bool gc_set_init(gc_set *s, const heap_t *h);
void gc_set_free(gc_set *s);

/* The word holding off's bit (and the bit), or NULL when off is out of the
 * set's range, unaligned or in an arena with no member (S1). */
static inline uint64_t *gc_set_word(const gc_set *s, uint64_t off, uint64_t *bit)
{
    uint64_t a = off >> HEAP_ARENA_SHIFT;
    if (a >= s->narenas || (off & (HEAP_ALIGN - 1)) || !s->arena[a])
        return NULL;
    uint64_t unit = (off & (HEAP_ARENA_SIZE - 1)) / HEAP_ALIGN;
    *bit = UINT64_C(1) << (unit % 64);
    return &s->arena[a]->bits[unit / 64];
}

static inline bool gc_set_has(const gc_set *s, uint64_t off)
{
    uint64_t bit, *w = gc_set_word(s, off, &bit);
    return w && (*w & bit);
}

/* Adds off (in range and aligned: a live object's start, S1): 1 if it was
 * new, 0 if a member already, -1 when out of memory. */
int gc_set_add(gc_set *s, uint64_t off);

/* Removes a member (no-op for others).  Indexes are stale after it (S2). */
static inline void gc_set_remove(gc_set *s, uint64_t off)
{
    uint64_t bit, *w = gc_set_word(s, off, &bit);
    if (w && (*w & bit)) {
        *w &= ~bit;
        s->n--;
    }
}

/* Removes off if it is a member: true if it was (one lookup). */
static inline bool gc_set_take(gc_set *s, uint64_t off)
{
    uint64_t bit, *w = gc_set_word(s, off, &bit);
    if (!w || !(*w & bit))
        return false;
    *w &= ~bit;
    s->n--;
    return true;
}

/* Numbers the members in address order; false when there are more than
 * 2^32 - 1 (S2).  If order is not NULL, order[i] gets member i's offset
 * (room for s->n). */
bool gc_set_rank(gc_set *s, uint64_t *order);

/* The members in address order, from unit *i on (start with 0):
 * for (uint64_t i = 0; gc_set_next(s, &i, &off);) */
bool gc_set_next(const gc_set *s, uint64_t *i, uint64_t *off);

/* Member off's index, or -1 if off is not a member (S1). */
static inline int64_t gc_set_index(const gc_set *s, uint64_t off)
{
    uint64_t a = off >> HEAP_ARENA_SHIFT;
    if (a >= s->narenas || (off & (HEAP_ALIGN - 1)) || !s->arena[a])
        return -1;
    const struct gc_set_arena *sa = s->arena[a];
    uint64_t unit = (off & (HEAP_ARENA_SIZE - 1)) / HEAP_ALIGN;
    uint64_t w = sa->bits[unit / 64], bit = UINT64_C(1) << (unit % 64);
    if (!(w & bit))
        return -1;
    return (int64_t)sa->rank[unit / 64] + (int64_t)gc_bits_in(w & (bit - 1));
}

#endif
