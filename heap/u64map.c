/*
 * u64map.c -- see u64map.h.  Linear probing, load factor at most 1/2.
 */
#include "u64map.h"

#include <stdlib.h>
#include <string.h>

static inline size_t slot_of(uint64_t key, size_t cap)
{
    key ^= key >> 33;
    key *= UINT64_C(0xff51afd7ed558ccd);
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

static bool grow(u64map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    uint64_t *k = calloc(cap, sizeof *k), *v = malloc(cap * sizeof *v);
    if (!k || !v) {
        free(k);
        free(v);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t j = slot_of(m->keys[i], cap);
        while (k[j])
            j = (j + 1) & (cap - 1);
        k[j] = m->keys[i];
        v[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = k;
    m->vals = v;
    m->cap = cap;
    return true;
}

uint64_t *u64map_find(const u64map *m, uint64_t key)
{
    if (!m->n || !key)
        return NULL;
    for (size_t j = slot_of(key, m->cap);; j = (j + 1) & (m->cap - 1)) {
        if (m->keys[j] == key)
            return &m->vals[j];
        if (!m->keys[j])
            return NULL;
    }
}

uint64_t *u64map_upsert(u64map *m, uint64_t key, bool *added)
{
    bool dummy;
    if (!added)
        added = &dummy;
    *added = false;
    uint64_t *v = u64map_find(m, key);
    if (v)
        return v;
    if ((m->n + 1) * 2 > m->cap && !grow(m))
        return NULL;
    size_t j = slot_of(key, m->cap);
    while (m->keys[j])
        j = (j + 1) & (m->cap - 1);
    m->keys[j] = key;
    m->vals[j] = 0;
    m->n++;
    *added = true;
    return &m->vals[j];
}

bool u64map_del(u64map *m, uint64_t key)
{
    uint64_t *v = u64map_find(m, key);
    if (!v)
        return false;
    size_t i = (size_t)(v - m->vals), mask = m->cap - 1;
    /* Backward-shift: pull later members of the probe run into the hole. */
    for (size_t j = (i + 1) & mask; m->keys[j]; j = (j + 1) & mask) {
        size_t home = slot_of(m->keys[j], m->cap);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            i = j;
        }
    }
    m->keys[i] = 0;
    m->n--;
    return true;
}

void u64map_clear(u64map *m)
{
    if (m->cap > 4096) {     /* a big transaction's set: give the RAM back */
        u64map_free(m);
        return;
    }
    if (m->n)
        memset(m->keys, 0, m->cap * sizeof *m->keys);
    m->n = 0;
}

void u64map_free(u64map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

bool u64map_next(const u64map *m, size_t *i, uint64_t *key, uint64_t *val)
{
    for (; *i < m->cap; (*i)++)
        if (m->keys[*i]) {
            *key = m->keys[*i];
            if (val)
                *val = m->vals[*i];
            (*i)++;
            return true;
        }
    return false;
}

bool u64vec_push(struct u64vec *v, uint64_t x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        uint64_t *p = realloc(v->v, cap * sizeof *p);
        if (!p)
            return false;
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = x;
    return true;
}
