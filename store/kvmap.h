/*
 * kvmap.h -- a transaction's pending changes to an LMDB database (roots, user
 * metadata): byte-string key -> value or deletion.  Lookups by key; a sorted
 * walk for merging with an LMDB cursor; cleared at commit or abort.
 */
#ifndef OBJSTORE_KVMAP_H
#define OBJSTORE_KVMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kv_entry {
    struct kv_entry *next;   /* hash chain */
    uint64_t hash;
    size_t klen, vlen;
    bool deleted;
    uint8_t *key;            /* klen bytes, then vlen bytes of value */
    uint8_t *val;
} kv_entry;

typedef struct kvmap {
    kv_entry **bucket;
    size_t nbuckets, n;
    kv_entry **sorted;       /* built by kvmap_sorted */
} kvmap;

/* Sets key to val (vlen bytes) or, with deleted, to a deletion. 0 or -1 (ENOMEM). */
int kvmap_put(kvmap *m, const void *key, size_t klen, const void *val, size_t vlen,
              bool deleted);
kv_entry *kvmap_get(const kvmap *m, const void *key, size_t klen);
/* Entries in key order (memcmp, shorter first on a tie: LMDB's default). */
kv_entry **kvmap_sorted(kvmap *m);
void kvmap_clear(kvmap *m);
int kvmap_keycmp(const void *a, size_t alen, const void *b, size_t blen);

#endif
