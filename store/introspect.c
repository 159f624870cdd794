/*
 * introspect.c -- the gc and sys module's walks over a store: referents,
 * referrers, every live object, and the allocator report in the shape of
 * sys._debugmallocstats().
 *
 * Rules:
 *   I1 walks run inside the caller's transaction and only read; a live
 *      block whose header does not fit it (heap_check_obj) is ECORRUPT,
 *      never a read past the block.
 *   I2 referrers and objects walk the heap in address order (heap/
 *      heap_next_live): O(live objects + their slots), as CPython's
 *      gc.get_referrers walks every tracked object.
 */
#include "store_internal.h"

#include <stdlib.h>
#include <string.h>

static int check_target(objstore_txn *t, objstore_oid oid)
{
    int rc = store_check_txn(t, false);
    if (rc)
        return rc;
    if (!oid || heap_check_ref(t->s->heap, oid) != HEAP_OK)
        return store_err(OBJSTORE_EBADOID, "%s: oid %llu is not a live object", t->s->dir,
                         (unsigned long long)oid);
    return OBJSTORE_OK;
}

int objstore_gc_get_referents(objstore_txn *t, objstore_oid oid, objstore_oid *out,
                              size_t cap, size_t *n)
{
    *n = 0;
    int rc = check_target(t, oid);
    if (rc)
        return rc;
    heap_t *h = t->s->heap;
    uint32_t nrefs = heap_obj_at(h, oid)->nrefs;
    const uint64_t *slot = heap_obj_slots(h, oid);
    size_t k = 0;
    for (uint32_t i = 0; i < nrefs; i++)
        if (slot[i]) {
            if (k < cap)
                out[k] = slot[i];
            k++;
        }
    *n = k;
    return OBJSTORE_OK;
}

struct root_match {
    objstore_oid oid;
    objstore_referrer_fn fn;
    void *arg;
};

static int root_match(void *arg, const char *name, objstore_oid oid)
{
    struct root_match *m = arg;
    return oid == m->oid ? m->fn(m->arg, name, 0, 0) : 0;
}

/* The next live object (I1); 0 at the end, *rc on damage. */
static uint64_t next_object(objstore *s, uint64_t *cursor, int *rc)
{
    uint64_t off, size;
    *rc = OBJSTORE_OK;
    if (!heap_next_live(s->heap, cursor, &off))
        return 0;
    if (heap_check_obj(s->heap, off, &size) != HEAP_OK) {
        *rc = store_err(OBJSTORE_ECORRUPT, "%s: live block at %llu does not hold a valid "
                        "object", s->dir, (unsigned long long)off);
        return 0;
    }
    return off;
}

int objstore_gc_get_referrers(objstore_txn *t, objstore_oid oid, objstore_referrer_fn fn,
                              void *arg)
{
    int rc = check_target(t, oid);
    if (rc)
        return rc;
    if (!fn)
        return store_err(OBJSTORE_EINVAL, "gc_get_referrers: no function");
    struct root_match m = {oid, fn, arg};
    if ((rc = objstore_root_iter(t, root_match, &m)))
        return rc;
    objstore *s = t->s;
    uint64_t cursor = 0, x;
    while ((x = next_object(s, &cursor, &rc))) {
        uint32_t nrefs = heap_obj_at(s->heap, x)->nrefs;
        const uint64_t *slot = heap_obj_slots(s->heap, x);
        for (uint32_t i = 0; i < nrefs; i++)
            if (slot[i] == oid && (rc = fn(arg, NULL, x, i)))
                return rc;
    }
    return rc;
}

int objstore_gc_get_objects(objstore_txn *t, const uint32_t *type, objstore_object_fn fn,
                            void *arg)
{
    int rc = store_check_txn(t, false);
    if (rc)
        return rc;
    if (!fn)
        return store_err(OBJSTORE_EINVAL, "gc_get_objects: no function");
    objstore *s = t->s;
    uint64_t cursor = 0, x;
    while ((x = next_object(s, &cursor, &rc)))
        if ((!type || heap_obj_at(s->heap, x)->type == *type) && (rc = fn(arg, x)))
            return rc;
    return rc;
}

static void line(FILE *out, const char *label, uint64_t v)
{
    fprintf(out, "%-35s= %20llu\n", label, (unsigned long long)v);
}

int objstore_print_mallocstats(objstore *s, FILE *out)
{
    if (!s || !out)
        return store_err(OBJSTORE_EINVAL, "print_mallocstats: no store or no stream");
    bool locked = store_read_lock(s);
    heap_stats hs;
    heap_get_stats(s->heap, &hs);
    if (locked)
        store_read_end(s);

    fprintf(out, "Small block threshold = %u, in %u size classes.\n\n", HEAP_SMALL_MAX,
            HEAP_NCLASSES);
    fprintf(out, "class   size   num pools   blocks in use  avail blocks\n"
                 "-----   ----   ---------   -------------  ------------\n");
    uint64_t small_used = 0, small_free = 0, small_pools = 0;
    for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
        const heap_class_stats *k = &hs.cls[c];
        if (!k->pools)
            continue;
        fprintf(out, "%5u %6u %11llu %15llu %13llu\n", c, k->block_size,
                (unsigned long long)k->pools, (unsigned long long)k->blocks_used,
                (unsigned long long)k->blocks_free);
        small_used += k->blocks_used * k->block_size;
        small_free += k->blocks_free * k->block_size;
        small_pools += k->pools;
    }
    uint64_t arena_bytes = hs.arenas * HEAP_ARENA_SIZE;
    uint64_t headers = hs.arenas * HEAP_POOL_SIZE;   /* pool 0: the arena's table */
    uint64_t unused = hs.pools_free * HEAP_POOL_SIZE;
    uint64_t tails = small_pools * HEAP_POOL_SIZE - small_used - small_free;
    uint64_t quant = hs.live_bytes > hs.requested_bytes ? hs.live_bytes - hs.requested_bytes : 0;
    char label[64];
    fprintf(out, "\n");
    line(out, "# arenas allocated current", hs.arenas);
    line(out, "# arenas with no live block", hs.arenas_free);
    snprintf(label, sizeof label, "%llu arenas * %u bytes/arena", (unsigned long long)hs.arenas,
             HEAP_ARENA_SIZE);
    line(out, label, arena_bytes);
    fprintf(out, "\n");
    line(out, "# bytes in allocated blocks", hs.live_bytes);
    snprintf(label, sizeof label, "#   of which in %llu runs of pools",
             (unsigned long long)hs.run_blocks);
    line(out, label, hs.run_bytes);
    line(out, "# bytes in available blocks", small_free);
    snprintf(label, sizeof label, "%llu unused pools * %u bytes", (unsigned long long)hs.pools_free,
             HEAP_POOL_SIZE);
    line(out, label, unused);
    line(out, "# bytes lost to pool headers", headers);
    line(out, "# bytes lost to pool tails", tails);
    line(out, "Total", hs.live_bytes + small_free + unused + headers + tails);
    fprintf(out, "\n");
    line(out, "# bytes lost to quantization", quant);
    line(out, "# heap file bytes", hs.file_bytes);
    fprintf(out, "%-35s= %19.1f%%\n", "# fragmentation", hs.fragmentation * 100.0);
    return ferror(out) ? store_err(OBJSTORE_EIO, "print_mallocstats: write failed")
                       : OBJSTORE_OK;
}
