/*
 * mark.c -- whole-heap graph algorithms: mark from the roots (full
 * collection), which garbage a bounded batch may free, and the canonical
 * walk of the logical digest.  gc.h has the rules M1..M3.
 *
 * The digest's byte stream (docs/FORMAT.md draws it), every integer a
 * little-endian u64:
 *
 *   "objstore-digest-1"
 *   per root, in the iterator's order:
 *     'R' namelen name  number-of-its-object
 *     then, before the next root, every object this root's walk meets:
 *   per object, when the walk takes it off its stack:
 *     'O' number typenamelen typename nrefs payloadlen payload
 *         number-of-each-slot's-target (0 = null)
 *
 * Numbers are given at first sight, from 1 up: a root's object when the root
 * is read, an object's slot targets in slot order when the object is
 * written.  Newly numbered targets go on the stack so that the first slot's
 * target is walked next (depth first).  Nothing in the stream depends on an
 * offset, so the digest is a function of the logical content only.
 */
#include "gc.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ---- mark ---- */

static inline int mark_bit(gc_marks *m, uint64_t off)
{
    uint64_t g = off >> 4;
    uint64_t bit = UINT64_C(1) << (g & 63);
    if (m->bits[g >> 6] & bit)
        return 0;
    m->bits[g >> 6] |= bit;
    return 1;
}

void gc_marks_free(gc_marks *m)
{
    free(m->bits);
    *m = (gc_marks){0};
}

heap_status gc_mark(heap_t *h, const gc_roots *roots, gc_marks *m,
                    void (*tick)(void *ctx, uint64_t marked), void *tick_ctx)
{
    *m = (gc_marks){0};
    m->nwords = (heap_size(h) >> 4) / 64 + 1;
    m->bits = calloc(m->nwords, sizeof *m->bits);
    if (!m->bits)
        return HEAP_ENOMEM;
    struct u64vec stack = {0};
    heap_status st = HEAP_OK;
    uint64_t oid;
    const char *name;
    size_t len;
    int more;
    while (!st && (more = roots->next(roots->ctx, &oid, &name, &len)) > 0) {
        if (!oid)
            continue;
        uint64_t size;
        if ((st = heap_check_obj(h, oid, &size)))
            break;
        if (mark_bit(m, oid)) {
            m->marked++;
            m->marked_bytes += heap_block_size(h, oid);
            if (!u64vec_push(&stack, oid))
                st = HEAP_ENOMEM;
        }
        while (!st && stack.n) {
            uint64_t x = stack.v[--stack.n];
            uint32_t nrefs = heap_obj_at(h, x)->nrefs;
            const uint64_t *slot = heap_obj_slots(h, x);
            for (uint32_t i = 0; i < nrefs; i++) {
                uint64_t y = slot[i];
                if (!y)
                    continue;
                /* A marked target was checked when it was marked (an
                 * aligned offset is the only one of its granule). */
                uint64_t g = y >> 4;
                if (!(y & (HEAP_ALIGN - 1)) && (g >> 6) < m->nwords &&
                    ((m->bits[g >> 6] >> (g & 63)) & 1))
                    continue;
                uint64_t size;
                if ((st = heap_check_obj(h, y, &size)))
                    break;
                mark_bit(m, y);
                m->marked++;
                /* A small block's size follows from the object's (one lookup). */
                m->marked_bytes += size <= HEAP_SMALL_MAX
                                       ? heap_class_size(heap_size_class(size))
                                       : heap_block_size(h, y);
                if (!u64vec_push(&stack, y)) {
                    st = HEAP_ENOMEM;
                    break;
                }
                if (tick && (m->marked & 0xFFFFF) == 0)
                    tick(tick_ctx, m->marked);
            }
        }
    }
    if (!st && more < 0)
        st = HEAP_EIO;
    if (st == HEAP_EBADOFF)
        st = HEAP_ECORRUPT;   /* a root or slot that names no object (M2) */
    free(stack.v);
    if (st)
        gc_marks_free(m);
    return st;
}

/* ---- which garbage a batch may free ---- */

heap_status gc_batch_freeable(heap_t *h, const uint64_t *batch, size_t n,
                              uint64_t (*count)(void *ctx, uint64_t oid), void *ctx,
                              uint8_t *free_)
{
    /* index: oid -> position + 1; trial counts in a parallel array. */
    u64map index = {0};
    int64_t *trial = malloc((n + 1) * sizeof *trial);
    struct u64vec stack = {0};
    heap_status st = HEAP_OK;
    if (!trial)
        return HEAP_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint64_t *v = u64map_upsert(&index, batch[i], NULL);
        if (!v) {
            st = HEAP_ENOMEM;
            goto out;
        }
        *v = i + 1;
        uint64_t c = count(ctx, batch[i]);
        trial[i] = c > (UINT64_C(1) << 60) ? (INT64_C(1) << 60) : (int64_t)c;
        free_[i] = 1;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t nrefs = heap_obj_at(h, batch[i])->nrefs;
        const uint64_t *slot = heap_obj_slots(h, batch[i]);
        for (uint32_t k = 0; k < nrefs; k++) {
            uint64_t *v = slot[k] ? u64map_find(&index, slot[k]) : NULL;
            if (v)
                trial[*v - 1]--;
        }
    }
    /* Held from outside the batch: it stays, and so does what it reaches. */
    for (size_t i = 0; i < n; i++)
        if (trial[i] > 0 && free_[i]) {
            free_[i] = 0;
            if (!u64vec_push(&stack, i)) {
                st = HEAP_ENOMEM;
                goto out;
            }
            while (stack.n) {
                uint64_t x = batch[stack.v[--stack.n]];
                uint32_t nrefs = heap_obj_at(h, x)->nrefs;
                const uint64_t *slot = heap_obj_slots(h, x);
                for (uint32_t k = 0; k < nrefs; k++) {
                    uint64_t *v = slot[k] ? u64map_find(&index, slot[k]) : NULL;
                    if (v && free_[*v - 1]) {
                        free_[*v - 1] = 0;
                        if (!u64vec_push(&stack, *v - 1)) {
                            st = HEAP_ENOMEM;
                            goto out;
                        }
                    }
                }
            }
        }
out:
    u64map_free(&index);
    free(trial);
    free(stack.v);
    return st;
}

/* ---- the canonical walk ---- */

static void put_u64(XXH3_state_t *x, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    XXH3_128bits_update(x, b, 8);
}

static void put_tag(XXH3_state_t *x, char tag) { XXH3_128bits_update(x, &tag, 1); }

heap_status gc_digest(heap_t *h, const gc_roots *roots,
                      const char *(*type_name)(void *ctx, uint32_t type, size_t *len),
                      void *ctx, uint32_t weak_type, uint8_t out[16], uint64_t *objects)
{
    XXH3_state_t *x = XXH3_createState();
    if (!x)
        return HEAP_ENOMEM;
    XXH3_128bits_reset(x);
    static const char domain[] = "objstore-digest-1";
    XXH3_128bits_update(x, domain, sizeof domain - 1);
    u64map num = {0};               /* oid -> visit number */
    struct u64vec stack = {0}, fresh = {0};
    struct u64vec weak = {0};       /* pairs: weak reference's number, target oid */
    uint64_t next = 1;
    heap_status st = HEAP_OK;
    uint64_t oid;
    const char *name;
    size_t len;
    int more;
    while (!st && (more = roots->next(roots->ctx, &oid, &name, &len)) > 0) {
        if (!name)
            continue;   /* a hold, not content */
        put_tag(x, 'R');
        put_u64(x, len);
        XXH3_128bits_update(x, name, len);
        if (!oid) {
            put_u64(x, 0);
            continue;
        }
        if ((st = heap_check_ref(h, oid)))
            break;
        bool added;
        uint64_t *v = u64map_upsert(&num, oid, &added);
        if (!v) {
            st = HEAP_ENOMEM;
            break;
        }
        if (added) {
            *v = next++;
            if (!u64vec_push(&stack, oid)) {
                st = HEAP_ENOMEM;
                break;
            }
        }
        put_u64(x, *v);
        while (!st && stack.n) {
            uint64_t o = stack.v[--stack.n];
            const heap_obj *ob = heap_obj_at(h, o);
            size_t tlen = 0;
            const char *tname = ob->type ? type_name(ctx, ob->type, &tlen) : "";
            if (!tname) {
                st = HEAP_ECORRUPT;
                break;
            }
            uint64_t psize = heap_obj_payload_size(h, o);
            put_tag(x, 'O');
            put_u64(x, *u64map_find(&num, o));
            put_u64(x, tlen);
            XXH3_128bits_update(x, tname, tlen);
            put_u64(x, ob->nrefs);
            put_u64(x, psize);
            if (weak_type && ob->type == weak_type && ob->nrefs == 0 && psize == 8) {
                uint64_t target;
                memcpy(&target, heap_obj_payload(h, o), 8);
                if (!u64vec_push(&weak, *u64map_find(&num, o)) || !u64vec_push(&weak, target)) {
                    st = HEAP_ENOMEM;
                    break;
                }
            } else {
                XXH3_128bits_update(x, heap_obj_payload(h, o), psize);
            }
            const uint64_t *slot = heap_obj_slots(h, o);
            fresh.n = 0;
            for (uint32_t i = 0; i < ob->nrefs; i++) {
                uint64_t y = slot[i];
                if (!y) {
                    put_u64(x, 0);
                    continue;
                }
                uint64_t *w = u64map_find(&num, y);
                if (!w) {
                    if ((st = heap_check_ref(h, y)))
                        break;
                    if (!(w = u64map_upsert(&num, y, NULL)) || !u64vec_push(&fresh, y)) {
                        st = HEAP_ENOMEM;
                        break;
                    }
                    *w = next++;
                }
                put_u64(x, *w);
            }
            /* The first new target is walked next: push in reverse. */
            for (size_t i = fresh.n; !st && i-- > 0;)
                if (!u64vec_push(&stack, fresh.v[i]))
                    st = HEAP_ENOMEM;
        }
    }
    /* Weak references, once every reachable object has its number. */
    for (size_t i = 0; !st && i < weak.n; i += 2) {
        uint64_t *w = weak.v[i + 1] ? u64map_find(&num, weak.v[i + 1]) : NULL;
        put_tag(x, 'W');
        put_u64(x, weak.v[i]);
        put_u64(x, w ? *w : 0);
    }
    if (!st && more < 0)
        st = HEAP_EIO;
    if (st == HEAP_EBADOFF)
        st = HEAP_ECORRUPT;
    if (!st) {
        XXH128_hash_t d = XXH3_128bits_digest(x);
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, d);
        memcpy(out, c.digest, 16);
        if (objects)
            *objects = next - 1;
    }
    XXH3_freeState(x);
    u64map_free(&num);
    free(stack.v);
    free(fresh.v);
    free(weak.v);
    return st;
}
