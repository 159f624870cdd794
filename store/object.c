/*
 * object.c -- objects and reference counting (ARCHITECTURE §6).
 *
 * Rules:
 *   R1 an object's persisted count = roots naming it + slots of live objects
 *      pointing at it; handles and pins are not in it.
 *   R2 a count that reaches 0 puts the object in the zero-count table (zct);
 *      a decrement that leaves it above 0 makes it a cycle candidate.
 *   R3 at commit, zct members still at 0 and not pinned are freed, their
 *      slots released, iteratively from a work list (never by recursion),
 *      at most free_budget of them; the rest wait in the persisted zct.
 *   R4 every oid from a caller or a slot is checked (heap_check_ref) before
 *      it is used; a bad slot found while freeing is ECORRUPT, not a crash.
 *   R5 a count that drops to 0 from 1 is not written: the object joins the
 *      transaction's `zeroed` set and its header keeps 1, so an object the
 *      commit frees costs no write (no private page, no redo) to its block.
 *      Its count is 0 for every reader (store_refcount).  The drain writes 0
 *      into the header of each zeroed object that survives the commit
 *      (pinned, over budget); an increment just takes it out of the set.
 *      New objects are not put in the zct but listed (created[], tagged
 *      STORE_CREATED_SLOTS when they have slots); the drain
 *      looks at those still at 0 — unless every one of them was linked
 *      (created_at_zero counts those never linked).
 *   R6 inside the commit's frees (s->gc_defer), a decrement that leaves a
 *      count above 0 is not written either: the object joins s->gc_dec (a
 *      bitmap per arena, gc_set.h), whose members' headers are one above
 *      their count and which are this commit's new cycle candidates.  A
 *      cycle the commit's collection frees thus costs no write to its
 *      members; collect.c writes the survivors' counts (and makes them
 *      candidates) before the commit writes anything, or drops the set
 *      with the transaction.  A second decrement, an increment or a free
 *      of a member takes it out of the set.
 *   R8 a write transaction frees nothing until its commit, so an object it
 *      made, or found live and sound (O1, O2), stays so until then:
 *      s->wseen remembers a few (direct-mapped by oid), and their next
 *      check in the same transaction is one compare.  Emptied at write
 *      begin and before the commit's frees; a rollback is followed by a
 *      begin.  Read transactions have the heap's view instead.
 *   R7 inside the drain, a child whose count goes from 1 to 0 with its
 *      parent's free is not decremented at all: it goes on the work list
 *      tagged DRAIN_DIRECT, in no set or map (nothing can reach it before
 *      the drain pops it: no caller code runs, and no other reference to it
 *      exists).  Popped, it is freed without a second check or count look;
 *      if it must wait (over budget, pinned), its 0 is written and it joins
 *      the zct as R3 says.  A leaf (no slots) within the budget and
 *      unpinned is not queued at all: it is freed at once, on the lookup
 *      that checks it when no weak reference, pin or unwritten count is
 *      about (heap_free_leaf), so that a second reference to it (a damaged
 *      count) finds it gone.
 */
#include "store_internal.h"

#include <stdlib.h>
#include <string.h>

#include "gc_set.h"

static inline bool wseen_has(const objstore *s, uint64_t oid)
{
    return s->wseen[(oid >> 4) & (STORE_WSEEN - 1)] == oid;
}
static inline void wseen_put(objstore *s, uint64_t oid)
{
    s->wseen[(oid >> 4) & (STORE_WSEEN - 1)] = oid;
}

static int check_oid(objstore *s, uint64_t oid)
{
    if (oid == 0)
        return store_err(OBJSTORE_EBADOID, "%s: null oid", s->dir);
    heap_status hs = heap_check_ref(s->heap, oid);
    if (hs == HEAP_EBADOFF)
        return store_err(OBJSTORE_EBADOID, "%s: oid %llu is not a live object", s->dir,
                         (unsigned long long)oid);
    return store_heap_err(s, hs);
}

/* ---- counts ---- */

/* R6: the header of oid is one above its count (only ever at 2 or more). */
static inline bool dec_pending(const objstore *s, uint64_t oid)
{
    return s->gc_dec && s->gc_dec->n && gc_set_has(s->gc_dec, oid);
}

uint64_t store_refcount(objstore *s, uint64_t oid)
{
    uint64_t rc = heap_obj_refcount(heap_obj_at(s->heap, oid));
    if (rc == 1)
        return s->zeroed.n && u64map_find(&s->zeroed, oid) ? 0 : 1;
    return rc > 1 && dec_pending(s, oid) ? rc - 1 : rc;
}

void store_dec_forget(objstore *s, uint64_t oid)
{
    if (s->gc_dec)
        gc_set_remove(s->gc_dec, oid);
}

int store_incref(objstore *s, uint64_t oid)
{
    uint64_t rc = heap_obj_refcount(heap_obj_at(s->heap, oid));
    if (rc == 1 && s->zeroed.n && u64map_del(&s->zeroed, oid))
        return OBJSTORE_OK;   /* from 0 back to the 1 its header still holds (R5) */
    if (rc > 1 && dec_pending(s, oid)) {
        /* The header holds the new count already (R6); the decrement
         * made it a candidate, and it stays one. */
        gc_set_remove(s->gc_dec, oid);
        return oidset_add(&s->cand, oid);
    }
    /* A header at 0 outside the persisted zct is an object of this
     * transaction's, linked for the first time. */
    if (rc == 0 && s->created_at_zero && !u64map_find(&s->zct.committed, oid))
        s->created_at_zero--;
    if (rc >= HEAP_MAX_REFCOUNT)
        return store_err(OBJSTORE_EOVERFLOW, "%s: object %llu: reference count overflow",
                         s->dir, (unsigned long long)oid);
    heap_obj_set_refcount(s->heap, oid, rc + 1);
    return OBJSTORE_OK;
}

int store_decref(objstore *s, uint64_t oid)
{
    uint64_t head = heap_obj_refcount(heap_obj_at(s->heap, oid));
    bool pending = head > 1 && dec_pending(s, oid);
    uint64_t rc = pending ? head - 1 : store_refcount(s, oid);
    if (rc == 0)
        return store_err(OBJSTORE_ECORRUPT, "%s: object %llu: count already 0 when a "
                         "reference to it goes", s->dir, (unsigned long long)oid);
    if (rc > 1 && pending) {
        heap_obj_set_refcount(s->heap, oid, head - 1);   /* still one above (R6) */
        return OBJSTORE_OK;
    }
    if (rc > 1 && s->gc_defer) {
        if (!s->gc_dec && (s->gc_dec = calloc(1, sizeof *s->gc_dec)) &&
            !gc_set_init(s->gc_dec, s->heap)) {
            free(s->gc_dec);
            s->gc_dec = NULL;
        }
        int added = s->gc_dec ? gc_set_add(s->gc_dec, oid) : -1;
        if (added < 0)
            return store_err(OBJSTORE_ENOMEM, "out of memory");
        if (added)
            return OBJSTORE_OK;   /* R6: not written */
        /* else past the set's arenas (the heap grew since): written */
    }
    if (rc > 1) {
        heap_obj_set_refcount(s->heap, oid, rc - 1);
        return oidset_add(&s->cand, oid);
    }
    if (pending) {   /* to 0 from a header of 2: R5 wants 1 there */
        gc_set_remove(s->gc_dec, oid);
        heap_obj_set_refcount(s->heap, oid, 1);
    }
    if (!u64map_upsert(&s->zeroed, oid, NULL))   /* to 0, unwritten (R5) */
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    return oidset_add(&s->zct, oid);
}

/* R7: a child whose one reference goes with the parent being freed.  Its
 * header holds 1 and it is not in `zeroed` (so its count is 1, and no R6
 * decrement is pending: those have headers of 2 or more). */
static inline bool last_ref(objstore *s, uint64_t oid)
{
    return heap_obj_refcount(heap_obj_at(s->heap, oid)) == 1 &&
           !(s->zeroed.n && u64map_find(&s->zeroed, oid));
}

#define DRAIN_DIRECT UINT64_C(1)   /* work-list tag: oids are 16-byte aligned */

bool store_any_pins(objstore *s)
{
    pthread_mutex_lock(&s->pin_lock);
    bool any = s->pins.n != 0;
    pthread_mutex_unlock(&s->pin_lock);
    return any;
}

static bool pinned(objstore *s, uint64_t oid)
{
    pthread_mutex_lock(&s->pin_lock);
    bool p = u64map_find(&s->pins, oid) != NULL;
    pthread_mutex_unlock(&s->pin_lock);
    return p;
}

static int push(struct u64vec *w, uint64_t x)
{
    return u64vec_push(w, x) ? OBJSTORE_OK
                             : store_err(OBJSTORE_ENOMEM, "out of memory freeing objects");
}

/* Keeps oid in the zero-count table, its count of 0 written (R5). */
static int keep_in_zct(objstore *s, uint64_t oid)
{
    if (u64map_del(&s->zeroed, oid))
        heap_obj_set_refcount(s->heap, oid, 0);
    return oidset_add(&s->zct, oid);
}

/* Frees the drain's dead objects, a batch at a time: objects freed one
 * after the other often lie together, so a pool is looked up once for many
 * (heap_free_many). */
#define DRAIN_BATCH 1024
static int free_dead(objstore *s, struct u64vec *dead)
{
    heap_status hs = heap_free_many(s->heap, dead->v, dead->n, NULL);
    dead->n = 0;
    return hs ? store_heap_err(s, hs) : OBJSTORE_OK;
}

/* The last steps of a free, before its block goes: weak references to it
 * are cleared and it leaves the candidates.  Weak references and candidates
 * rarely know it: when their sets are empty they cost no call. */
static inline int forget(objstore *s, uint64_t oid)
{
    int rc = OBJSTORE_OK;
    if ((s->weak_cnt.n || s->weak_type) && (rc = store_weak_freeing(s, oid)))
        return rc;
    if (s->cand.added.n || s->cand.committed.n)
        oidset_remove(&s->cand, oid);
    return rc;
}

/* forget, and the block goes with the next batch (its bytes stay as they
 * are until then, and nothing live refers to it). */
static int let_go(objstore *s, uint64_t oid, struct u64vec *dead)
{
    int rc = forget(s, oid);
    if (rc || (rc = push(dead, oid)))
        return rc;
    return dead->n >= DRAIN_BATCH ? free_dead(s, dead) : OBJSTORE_OK;
}

/* let_go, the block freed at once rather than with the batch: a leaf met
 * through its parent's slot, so that a second reference to it (its count
 * below its references: damage) finds it gone and says so. */
static int free_now(objstore *s, uint64_t oid)
{
    int rc = forget(s, oid);
    if (rc)
        return rc;
    heap_status hs = heap_free(s->heap, oid);
    return hs ? store_heap_err(s, hs) : OBJSTORE_OK;
}

int store_drain_zct(objstore *s, uint64_t budget)
{
    struct u64vec w = {0}, dead = {0};
    uint64_t oid;
    int rc = OBJSTORE_OK;
    bool pins = store_any_pins(s);
    /* Usually every new object got linked: then the list need not be read. */
    for (size_t i = 0; !rc && s->created_at_zero && i < s->ncreated; i++) {
        if (i + 8 < s->ncreated)
            __builtin_prefetch(heap_ptr(s->heap, s->created[i + 8] & ~STORE_CREATED_SLOTS));
        uint64_t c = s->created[i] & ~STORE_CREATED_SLOTS;
        if (heap_is_live(s->heap, c) && store_refcount(s, c) == 0)
            rc = push(&w, c);
    }
    for (size_t i = 0; !rc && u64map_next(&s->zct.added, &i, &oid, NULL);)
        rc = push(&w, oid);
    for (size_t i = 0; !rc && u64map_next(&s->zct.committed, &i, &oid, NULL);)
        if (!u64map_find(&s->zct.removed, oid))
            rc = push(&w, oid);
    uint64_t freed = 0;
    while (!rc && w.n) {
        oid = w.v[--w.n];
        bool direct = oid & DRAIN_DIRECT;
        oid &= ~DRAIN_DIRECT;
        heap_status hs = direct ? HEAP_OK   /* checked when its parent went */
                                : heap_check_ref(s->heap, oid);   /* live, slots fit */
        if (hs == HEAP_EBADOFF) {
            oidset_remove(&s->zct, oid);   /* freed already, or a stale entry */
            continue;
        }
        if (hs) {
            rc = store_heap_err(s, hs);
            break;
        }
        if (!direct && store_refcount(s, oid) != 0) {
            oidset_remove(&s->zct, oid);   /* relinked in this transaction */
            continue;
        }
        if (freed >= budget || (pins && pinned(s, oid))) {
            if (direct) {   /* at 0 now, recorded nowhere yet */
                /* Only a damaged count could have queued it after it went;
                 * with the batch freed, its check says so (R4). */
                if ((rc = free_dead(s, &dead)))
                    break;
                if (heap_check_ref(s->heap, oid) != HEAP_OK) {
                    rc = store_err(OBJSTORE_ECORRUPT, "%s: object %llu is referenced more "
                                   "often than its count says", s->dir,
                                   (unsigned long long)oid);
                    break;
                }
                heap_obj_set_refcount(s->heap, oid, 0);
                rc = oidset_add(&s->zct, oid);
            } else {
                rc = keep_in_zct(s, oid);
            }
            continue;
        }
        uint32_t nrefs = heap_obj_at(s->heap, oid)->nrefs;
        const uint64_t *slot = heap_obj_slots(s->heap, oid);
        uint64_t size = heap_size(s->heap);   /* the drain does not grow the heap */
        for (uint32_t i = 0; i < nrefs && !rc; i++) {
            /* The children's headers are cache misses: ask for them early. */
            if (i + 16 < nrefs && slot[i + 16] < size)
                __builtin_prefetch(heap_ptr(s->heap, slot[i + 16]));
            uint64_t child = slot[i];
            if (!child)
                continue;
            /* R7's common case, a leaf whose one reference goes with its
             * parent, is checked and freed on one lookup when nothing else
             * must hear of it first: no weak reference, no pin, no unwritten
             * count (freed + 1: the parent's own free is counted after). */
            bool gone = false;
            bool quick = !pins && !s->weak_cnt.n && !s->weak_type && freed + 1 < budget &&
                         !(s->zeroed.n && u64map_find(&s->zeroed, child));
            heap_status hs = quick ? heap_free_leaf(s->heap, child, 1, &gone)
                                   : heap_check_ref(s->heap, child);
            if (hs != HEAP_OK) {
                /* A dangling slot, or a child whose count was below the
                 * references to it, freed already with an earlier one. */
                rc = store_err(OBJSTORE_ECORRUPT, "%s: object %llu slot %u points at "
                               "%llu, not a live object (a dangling reference, or a count "
                               "below the references to it)", s->dir,
                               (unsigned long long)oid, i, (unsigned long long)child);
                break;
            }
            if (gone) {
                if (s->cand.added.n || s->cand.committed.n)
                    oidset_remove(&s->cand, child);
                freed++;
                continue;
            }
            if (last_ref(s, child)) {   /* R7 */
                if (heap_obj_at(s->heap, child)->nrefs == 0 && freed + 1 < budget &&
                    !(pins && pinned(s, child))) {
                    rc = free_now(s, child);   /* a leaf: nothing to visit */
                    freed += !rc;
                } else {
                    rc = push(&w, child | DRAIN_DIRECT);
                }
                continue;
            }
            if ((rc = store_decref(s, child)))
                break;
            if (store_refcount(s, child) == 0)
                rc = push(&w, child);
        }
        if (rc)
            break;
        if (!direct) {
            oidset_remove(&s->zct, oid);
            u64map_del(&s->zeroed, oid);
        }
        if ((rc = let_go(s, oid, &dead)))
            break;
        freed++;
    }
    if (!rc)
        rc = free_dead(s, &dead);
    free(dead.v);
    free(w.v);
    /* Every zeroed object was in the work list; none may leave the
     * transaction with an unwritten 0 (R5). */
    for (size_t i = 0; !rc && u64map_next(&s->zeroed, &i, &oid, NULL); i = 0)
        rc = keep_in_zct(s, oid);
    if (!rc)
        s->st_freed += freed;   /* a failed drain is rolled back */
    s->ncreated = 0;
    s->created_at_zero = 0;
    return rc;
}

/* ---- object calls ---- */

int objstore_new(objstore_txn *t, uint32_t type, uint32_t nrefs, uint64_t size,
                 objstore_oid *oid)
{
    *oid = 0;
    int rc = store_check_txn(t, true);
    if (rc)
        return rc;
    objstore *s = t->s;
    if (type > s->ntypes)
        return store_err(OBJSTORE_EINVAL, "%s: new object: type id %u is not registered",
                         s->dir, type);
    uint64_t off;
    heap_status hs = heap_obj_new(s->heap, type, nrefs, size, &off);
    if (hs)
        return store_heap_err(s, hs);
    if (s->ncreated == s->created_cap) {
        size_t cap = s->created_cap ? s->created_cap * 2 : 1024;
        uint64_t *p = realloc(s->created, cap * sizeof *p);
        if (!p) {
            heap_free(s->heap, off);
            return store_err(OBJSTORE_ENOMEM, "out of memory");
        }
        s->created = p;
        s->created_cap = cap;
    }
    s->created[s->ncreated++] = off | (nrefs ? STORE_CREATED_SLOTS : 0);
    s->created_at_zero++;
    wseen_put(s, off);   /* R8 */
    *oid = off;
    return OBJSTORE_OK;
}

/* Checks the transaction and the oid; *payload_size (may be NULL) gets the
 * object's payload bytes from the same lookup. */
static int prepare(objstore_txn *t, objstore_oid oid, bool write, uint64_t *payload_size)
{
    int rc = store_check_txn(t, write);
    if (rc)
        return rc;
    uint64_t size;
    if (write && !payload_size && oid && wseen_has(t->s, oid))
        return OBJSTORE_OK;   /* R8 */
    /* A read transaction records what it found sound (heap O3); a write
     * transaction must not: an abort would leave the record stale. */
    heap_status hs = !oid ? HEAP_EBADOFF
                     : t->write ? heap_check_obj(t->s->heap, oid, &size)
                                : heap_check_obj_mark(t->s->heap, oid, &size);
    if (hs)
        return check_oid(t->s, oid);   /* words the error */
    if (t->write)
        wseen_put(t->s, oid);
    if (payload_size)
        *payload_size = size - HEAP_OBJ_HEADER - (uint64_t)heap_obj_at(t->s->heap, oid)->nrefs * 8;
    return OBJSTORE_OK;
}

/* The read path: in a read transaction, an object found sound before is
 * known by heap_obj_fast without the allocator's tables.  objstore_get and
 * objstore_get_ref take it inline and leave everything else (the first look
 * at a pool, write transactions, errors) to a function of its own, so that
 * their common case saves no registers and makes no call. */
static inline bool read_fast(objstore_txn *t, objstore_oid oid, uint64_t *size)
{
    if (!t || !t->fast)
        return false;
    if (oid == t->seen) {
        *size = t->seen_size;
        return true;
    }
    if (!heap_obj_fast(t->fast, oid, size))
        return false;
    t->seen = oid;
    t->seen_size = *size;
    return true;
}

static __attribute__((noinline)) int get_checked(objstore_txn *t, objstore_oid oid,
                                                 const void **payload, uint64_t *size)
{
    uint64_t n;
    int rc = prepare(t, oid, false, &n);
    if (rc)
        return rc;
    *payload = heap_obj_payload(t->s->heap, oid);
    if (size)
        *size = n;
    return OBJSTORE_OK;
}

int objstore_get(objstore_txn *t, objstore_oid oid, const void **payload, uint64_t *size)
{
    uint64_t n;
    if (read_fast(t, oid, &n)) {
        const heap_obj *o = heap_obj_at(t->fast, oid);
        uint64_t head = HEAP_OBJ_HEADER + (uint64_t)o->nrefs * 8;
        *payload = (const uint8_t *)o + head;
        if (size)
            *size = n - head;
        return OBJSTORE_OK;
    }
    return get_checked(t, oid, payload, size);
}

int objstore_edit(objstore_txn *t, objstore_oid oid, void **payload, uint64_t *size)
{
    uint64_t n;
    int rc = prepare(t, oid, true, &n);
    if (rc)
        return rc;
    heap_t *h = t->s->heap;
    uint8_t *p = heap_obj_payload(h, oid);
    heap_mark_dirty(h, (uint64_t)(p - heap_base(h)), n);
    *payload = p;
    if (size)
        *size = n;
    return OBJSTORE_OK;
}

int objstore_write(objstore_txn *t, objstore_oid oid, uint64_t off, const void *buf,
                   uint64_t len)
{
    uint64_t n;
    int rc = prepare(t, oid, true, &n);
    if (rc)
        return rc;
    heap_t *h = t->s->heap;
    if (off > n || len > n - off)
        return store_err(OBJSTORE_EINVAL, "%s: object %llu: write of %llu bytes at %llu "
                         "past its %llu-byte payload", t->s->dir, (unsigned long long)oid,
                         (unsigned long long)len, (unsigned long long)off,
                         (unsigned long long)n);
    uint8_t *p = heap_obj_payload(h, oid) + off;
    heap_mark_dirty(h, (uint64_t)(p - heap_base(h)), len);
    if (len)
        memcpy(p, buf, len);
    return OBJSTORE_OK;
}

static int check_slot(objstore *s, objstore_oid oid, uint32_t slot)
{
    uint32_t nrefs = heap_obj_at(s->heap, oid)->nrefs;
    if (slot >= nrefs)
        return store_err(OBJSTORE_EINVAL, "%s: object %llu has %u slots, not slot %u",
                         s->dir, (unsigned long long)oid, nrefs, slot);
    return OBJSTORE_OK;
}

int objstore_set_ref(objstore_txn *t, objstore_oid oid, uint32_t slot, objstore_oid target)
{
    int rc = prepare(t, oid, true, NULL);
    objstore *s = t->s;
    if (rc || (rc = check_slot(s, oid, slot)) ||
        (target && !wseen_has(s, target) && (rc = check_oid(s, target))))
        return rc;
    if (target)
        wseen_put(s, target);
    uint64_t *slots = heap_obj_slots(s->heap, oid);
    uint64_t old = slots[slot];
    if (old == target)
        return OBJSTORE_OK;
    if (old && heap_check_ref(s->heap, old) != HEAP_OK)
        return store_err(OBJSTORE_ECORRUPT, "%s: object %llu slot %u holds %llu, not a "
                         "live object", s->dir, (unsigned long long)oid, slot,
                         (unsigned long long)old);
    if (target && (rc = store_incref(s, target)))
        return rc;
    heap_mark_dirty(s->heap, oid + HEAP_OBJ_HEADER + (uint64_t)slot * 8, 8);
    slots[slot] = target;
    return old ? store_decref(s, old) : OBJSTORE_OK;
}

static __attribute__((noinline)) int get_ref_checked(objstore_txn *t, objstore_oid oid,
                                                     uint32_t slot, objstore_oid *target)
{
    *target = 0;
    int rc = prepare(t, oid, false, NULL);
    if (rc || (rc = check_slot(t->s, oid, slot)))
        return rc;
    *target = heap_obj_slots(t->s->heap, oid)[slot];
    return OBJSTORE_OK;
}

int objstore_get_ref(objstore_txn *t, objstore_oid oid, uint32_t slot, objstore_oid *target)
{
    uint64_t n;
    if (read_fast(t, oid, &n)) {
        const heap_obj *o = heap_obj_at(t->fast, oid);
        if (slot < o->nrefs) {
            *target = ((const uint64_t *)(o + 1))[slot];
            return OBJSTORE_OK;
        }
    }
    return get_ref_checked(t, oid, slot, target);
}

int objstore_info(objstore_txn *t, objstore_oid oid, objstore_objinfo *info)
{
    int rc = prepare(t, oid, false, NULL);
    if (rc)
        return rc;
    heap_t *h = t->s->heap;
    const heap_obj *o = heap_obj_at(h, oid);
    info->type = o->type;
    info->nrefs = o->nrefs;
    info->size = heap_obj_payload_size(h, oid);
    info->refcount = store_refcount(t->s, oid);
    info->sizeof_ = heap_obj_size(h, oid);
    return OBJSTORE_OK;
}

int objstore_getsizeof(objstore_txn *t, objstore_oid oid, uint64_t *bytes)
{
    objstore_objinfo info;
    int rc = objstore_info(t, oid, &info);
    *bytes = rc ? 0 : info.sizeof_;
    return rc;
}

int objstore_getrefcount(objstore_txn *t, objstore_oid oid, uint64_t *count)
{
    objstore_objinfo info;
    int rc = objstore_info(t, oid, &info);
    *count = rc ? 0 : info.refcount;
    return rc;
}

/* ---- pins ---- */

int store_take_unpinned(objstore *s)
{
    int rc = OBJSTORE_OK;
    uint64_t oid;
    pthread_mutex_lock(&s->pin_lock);
    for (size_t i = 0; !rc && u64map_next(&s->unpinned, &i, &oid, NULL);)
        if (heap_is_live(s->heap, oid) && !u64map_find(&s->pins, oid) &&
            store_refcount(s, oid) > 0)
            rc = oidset_add(&s->cand, oid);
    pthread_mutex_unlock(&s->pin_lock);
    return rc;
}

static int log_pin(objstore *s, uint64_t oid, int8_t delta)
{
    struct pinlog *l = &s->pinlog;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        uint64_t *o = realloc(l->oid, cap * sizeof *o);
        if (!o)
            return store_err(OBJSTORE_ENOMEM, "out of memory");
        l->oid = o;
        int8_t *d = realloc(l->delta, cap * sizeof *d);
        if (!d)
            return store_err(OBJSTORE_ENOMEM, "out of memory");
        l->delta = d;
        l->cap = cap;
    }
    l->oid[l->n] = oid;
    l->delta[l->n++] = delta;
    return OBJSTORE_OK;
}

int objstore_pin(objstore_txn *t, objstore_oid oid)
{
    int rc = prepare(t, oid, false, NULL);
    if (rc)
        return rc;
    objstore *s = t->s;
    if (t->write && (rc = log_pin(s, oid, 1)))
        return rc;
    pthread_mutex_lock(&s->pin_lock);
    uint64_t *v = u64map_upsert(&s->pins, oid, NULL);
    if (v)
        ++*v;
    pthread_mutex_unlock(&s->pin_lock);
    if (!v) {
        if (t->write)
            s->pinlog.n--;
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    }
    return OBJSTORE_OK;
}

int objstore_unpin(objstore_txn *t, objstore_oid oid)
{
    int rc = store_check_txn(t, false);
    if (rc)
        return rc;
    objstore *s = t->s;
    pthread_mutex_lock(&s->pin_lock);
    uint64_t *v = u64map_find(&s->pins, oid);
    if (!v) {
        pthread_mutex_unlock(&s->pin_lock);
        if ((rc = check_oid(s, oid)))
            return rc;
        return store_err(OBJSTORE_EINVAL, "%s: object %llu is not pinned", s->dir,
                         (unsigned long long)oid);
    }
    if (t->write && (rc = log_pin(s, oid, -1))) {
        pthread_mutex_unlock(&s->pin_lock);
        return rc;
    }
    if (--*v == 0) {
        u64map_del(&s->pins, oid);
        /* Letting go of a pin is letting go of a reference: the object may
         * now be garbage in a cycle.  The next commit makes it a candidate. */
        if (!u64map_upsert(&s->unpinned, oid, NULL)) {
            pthread_mutex_unlock(&s->pin_lock);
            return store_err(OBJSTORE_ENOMEM, "out of memory");
        }
    }
    pthread_mutex_unlock(&s->pin_lock);
    return OBJSTORE_OK;
}
