/*
 * gcstore.h -- what the store's whole-heap operations share (fullgc.c,
 * compact.c, digest.c): the roots of the committed state as a gc_roots
 * iterator, read once from an LMDB snapshot into RAM so that a mark can be
 * run again without a cursor held open.
 */
#ifndef OBJSTORE_GCSTORE_H
#define OBJSTORE_GCSTORE_H

#include "gc.h"
#include "store_internal.h"

typedef struct store_rootlist {
    char **name;        /* NULL for a hold (a pin) */
    size_t *len;
    uint64_t *oid;
    size_t n, cap, pos;
} store_rootlist;

/* Reads every root of the snapshot txn, in name order; with pins, adds
 * every pinned object as a hold.  A root whose value is not 8 bytes is
 * OBJSTORE_ECORRUPT. */
int store_rootlist_load(objstore *s, MDB_txn *txn, bool pins, store_rootlist *l);
void store_rootlist_free(store_rootlist *l);
/* An iterator over l from its start (l->pos is reset). */
gc_roots store_rootlist_iter(store_rootlist *l);

/* Store-level words for a heap status from gc/ (the heap's message). */
int store_gc_err(objstore *s, heap_status st, const char *what);

/* compact.c: removes heap files of other generations than the current one
 * (what a compaction that crashed left), then fsyncs the directory. */
int store_remove_stray_heaps(objstore *s);

#endif
