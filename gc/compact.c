/*
 * compact.c -- the copying half of compaction: everything the roots reach in
 * one heap is copied into another, breadth first (Cheney's order: an object
 * is given its new place when first seen, so the objects a root reaches lie
 * front to back in the new file in the order a walk meets them).
 *
 * Rules:
 *   P1 the source heap is only read; every root and slot is checked
 *      (heap_check_ref) before it is followed (HEAP_ECORRUPT otherwise).
 *   P2 counts in the copy are recomputed from what is copied: one per
 *      counted root naming the object, one per slot of a copied object
 *      pointing at it.  Holds (NULL-named roots, i.e. pins) are copied but
 *      not counted, as pins are not in the persisted count.
 *   P3 the destination's dirty bytes go to its file every COPY_FLUSH bytes copied:
 *      the new file is not part of the store until the caller's LMDB switch,
 *      so writing it early is free of any ordering concern.
 *   P4 no recursion: a FIFO of old offsets (the queue is the copy order).
 */
#include "gc.h"

#include <stdlib.h>
#include <string.h>

#define COPY_FLUSH (UINT64_C(64) << 20)

/* The new place of old (allocating and queueing it when first seen). */
static heap_status place(heap_t *src, heap_t *dst, u64map *map, struct u64vec *queue,
                         uint64_t old, uint64_t *out, uint64_t *bytes)
{
    uint64_t *v = u64map_find(map, old);
    if (v) {
        *out = *v;
        return HEAP_OK;
    }
    uint64_t size;   /* header + slots + payload, from the same lookup */
    heap_status st = heap_check_obj(src, old, &size);
    if (st)
        return st == HEAP_EBADOFF ? HEAP_ECORRUPT : st;
    const heap_obj *o = heap_obj_at(src, old);
    uint64_t nw;
    if ((st = heap_obj_new(dst, o->type, o->nrefs,
                           size - HEAP_OBJ_HEADER - (uint64_t)o->nrefs * 8, &nw)))
        return st;
    *bytes += heap_block_size(dst, nw);
    if (!(v = u64map_upsert(map, old, NULL)) || !u64vec_push(queue, old))
        return HEAP_ENOMEM;
    *v = nw;
    *out = nw;
    return HEAP_OK;
}

static heap_status count_one(heap_t *dst, uint64_t nw)
{
    return heap_obj_set_refcount(dst, nw, heap_obj_refcount(heap_obj_at(dst, nw)) + 1);
}

heap_status gc_copy(heap_t *src, heap_t *dst, const gc_roots *roots, u64map *map,
                    int (*tick)(void *ctx, uint64_t copied), void *tick_ctx,
                    uint64_t *copied_bytes)
{
    struct u64vec queue = {0};
    size_t head = 0;
    heap_status st = HEAP_OK;
    uint64_t bytes = 0, flushed = 0, done = 0, oid, nw;
    const char *name;
    size_t len;
    int more;
    while (!st && (more = roots->next(roots->ctx, &oid, &name, &len)) > 0) {
        if (!oid)
            continue;
        if ((st = place(src, dst, map, &queue, oid, &nw, &bytes)))
            break;
        if (name && (st = count_one(dst, nw)))
            break;
        /* Each root's structure is copied before the next root's. */
        while (!st && head < queue.n) {
            uint64_t old = queue.v[head++];
            uint64_t to = *u64map_find(map, old);
            const heap_obj *o = heap_obj_at(src, old);
            uint64_t psize = heap_obj_payload_size(dst, to);   /* = the old one's */
            if (psize)
                memcpy(heap_obj_payload(dst, to), heap_obj_payload(src, old), psize);
            const uint64_t *slot = heap_obj_slots(src, old);
            for (uint32_t i = 0; i < o->nrefs && !st; i++) {
                if (!slot[i])
                    continue;
                uint64_t t;
                if ((st = place(src, dst, map, &queue, slot[i], &t, &bytes)) ||
                    (st = count_one(dst, t)))
                    break;
                /* heap_obj_new marked the whole new object dirty. */
                heap_obj_slots(dst, to)[i] = t;
            }
            if (st)
                break;
            if ((++done & 0xFFFF) == 0 && tick && tick(tick_ctx, done)) {
                st = HEAP_EINVAL;
                break;
            }
            if (bytes - flushed >= COPY_FLUSH) {   /* (counting dirty lines costs more) */
                flushed = bytes;
                if ((st = heap_writeback(dst)))
                    break;
                heap_drop_clean(dst);
            }
        }
        /* The queue's consumed prefix is not needed again. */
        if (head == queue.n)
            head = queue.n = 0;
    }
    if (!st && more < 0)
        st = HEAP_EIO;
    free(queue.v);
    if (copied_bytes)
        *copied_bytes = bytes;
    return st;
}
