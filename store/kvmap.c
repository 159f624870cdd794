/*
 * kvmap.c -- see kvmap.h.
 */
#include "kvmap.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int kvmap_keycmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

kv_entry *kvmap_get(const kvmap *m, const void *key, size_t klen)
{
    if (!m->n)
        return NULL;
    uint64_t h = XXH3_64bits(key, klen);
    for (kv_entry *e = m->bucket[h & (m->nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    return NULL;
}

static int rehash(kvmap *m)
{
    size_t nb = m->nbuckets ? m->nbuckets * 2 : 64;
    kv_entry **b = calloc(nb, sizeof *b);
    if (!b)
        return -1;
    for (size_t i = 0; i < m->nbuckets; i++)
        for (kv_entry *e = m->bucket[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    free(m->bucket);
    m->bucket = b;
    m->nbuckets = nb;
    return 0;
}

int kvmap_put(kvmap *m, const void *key, size_t klen, const void *val, size_t vlen,
              bool deleted)
{
    if (deleted)
        vlen = 0;
    kv_entry *old = kvmap_get(m, key, klen);
    kv_entry *e = malloc(sizeof *e + klen + vlen);
    if (!e)
        return -1;
    e->hash = XXH3_64bits(key, klen);
    e->klen = klen;
    e->vlen = vlen;
    e->deleted = deleted;
    e->key = (uint8_t *)(e + 1);
    e->val = e->key + klen;
    memcpy(e->key, key, klen);
    if (vlen)
        memcpy(e->val, val, vlen);
    free(m->sorted);
    m->sorted = NULL;
    if (old) {   /* replace in its chain */
        kv_entry **p = &m->bucket[old->hash & (m->nbuckets - 1)];
        while (*p != old)
            p = &(*p)->next;
        e->next = old->next;
        *p = e;
        free(old);
        return 0;
    }
    if (m->n + 1 > m->nbuckets && rehash(m) != 0) {
        free(e);
        return -1;
    }
    size_t b = e->hash & (m->nbuckets - 1);
    e->next = m->bucket[b];
    m->bucket[b] = e;
    m->n++;
    return 0;
}

static int cmp_entries(const void *a, const void *b)
{
    const kv_entry *x = *(kv_entry *const *)a, *y = *(kv_entry *const *)b;
    return kvmap_keycmp(x->key, x->klen, y->key, y->klen);
}

kv_entry **kvmap_sorted(kvmap *m)
{
    if (m->sorted || !m->n)
        return m->sorted;
    m->sorted = malloc(m->n * sizeof *m->sorted);
    if (!m->sorted)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < m->nbuckets; i++)
        for (kv_entry *e = m->bucket[i]; e; e = e->next)
            m->sorted[k++] = e;
    qsort(m->sorted, m->n, sizeof *m->sorted, cmp_entries);
    return m->sorted;
}

void kvmap_clear(kvmap *m)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (kv_entry *e = m->bucket[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    free(m->bucket);
    free(m->sorted);
    memset(m, 0, sizeof *m);
}
