/*
 * u64map.h -- an open-addressing hash map from non-zero 64-bit keys (heap
 * offsets) to 64-bit values: the layers above keep their sets of objects in
 * it (zero-count table, cycle candidates, pins, the collector's work state).
 * Key 0 marks an empty slot; deletion uses backward-shift, so there are no
 * tombstones and lookups stay short.  Also the growable array they use as
 * work lists.
 */
#ifndef OBJSTORE_U64MAP_H
#define OBJSTORE_U64MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct u64map {
    uint64_t *keys;
    uint64_t *vals;
    size_t cap;     /* power of two, or 0 */
    size_t n;
} u64map;

/* Returns a pointer to the value of key, inserting it with value 0 if absent
 * (NULL when out of memory).  *added tells which. */
uint64_t *u64map_upsert(u64map *m, uint64_t key, bool *added);
uint64_t *u64map_find(const u64map *m, uint64_t key);
bool u64map_del(u64map *m, uint64_t key);
void u64map_clear(u64map *m);
void u64map_free(u64map *m);

/* Iteration: for (size_t i = 0; u64map_next(m, &i, &k, &v);) */
bool u64map_next(const u64map *m, size_t *i, uint64_t *key, uint64_t *val);

/* A growable array of 64-bit values: work lists and stacks. */
struct u64vec {
    uint64_t *v;
    size_t n, cap;
};

/* Appends x; false when out of memory (v unchanged). */
bool u64vec_push(struct u64vec *v, uint64_t x);

#endif
