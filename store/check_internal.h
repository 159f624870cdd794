/*
 * check_internal.h -- what check.c (the passes) and repair.c (the repairs)
 * share: the walk over a store's objects and what it remembers for a repair.
 *
 * The walk's index is the array of live offsets in address order (the heap
 * iterates that way) with, per 16 KiB pool, the index of its first object:
 * finding an object is a short binary search inside one pool.  Per object
 * the walk keeps 13 bytes: its offset, its in-degree (u32, saturating; the
 * few above that live in a map) and a flag byte.
 */
#ifndef OBJSTORE_CHECK_INTERNAL_H
#define OBJSTORE_CHECK_INTERNAL_H

#include "store_internal.h"

#define CK_NONE SIZE_MAX

enum {
    CK_MARK = 1,     /* reached from a root */
    CK_BAD = 2,      /* header beyond use: its slots are not read */
};

struct ck_root {     /* a root the repair removes */
    char *name;
    size_t len;
    uint64_t oid;
};

struct ck {
    const objstore_check_opts *o;
    objstore_check_report *r;
    bool final;              /* the check after a repair: counts go to left[] */
    bool quiet;              /* the walk inside a repair: no findings */
    bool stop;               /* interrupted */
    bool redo_bad;           /* replay refused the redo log */
    bool header_bad;         /* the heap header can be rebuilt from meta/ */
    bool heap_bad;           /* pass 3 failed: a repair rebuilds the tables */
    bool tables_fixed;       /* arena tables fixed in the mapping (dirty) */
    bool weak_bad;           /* pass 5 found the weak index wrong */
    int pass;
    uint64_t ticks;

    objstore *s;
    uint64_t *off;           /* live objects, ascending */
    size_t n;
    uint64_t *pidx;          /* pool p's objects are off[pidx[p] .. pidx[p+1]) */
    uint64_t npools;
    uint32_t *indeg;
    u64map big;              /* index -> in-degree, for those >= UINT32_MAX */
    uint8_t *fl;

    struct ck_root *badroots;     /* roots naming no live object, or a bad one */
    size_t nbadroots, badroots_cap;
};

/* What pass 2's child found about meta/ (check_meta.c). */
struct metainfo {
    bool usable;             /* env, databases and meta keys all sound */
    bool redo_bad;           /* a damaged redo record */
    uint64_t redo_bad_epoch; /* the first damaged record's epoch */
    uint8_t uuid[16];
    uint64_t generation, epoch, redo_records, redo_bytes, types, roots;
    uint64_t ckpt;           /* meta/ "ckpt": the heap file holds every commit
                                up to this epoch */
};

/* The child's findings, kept until pass 2 reports them. */
struct childres {
    char **lines;
    size_t n, cap;
    struct metainfo mi;
};

/* check_meta.c */
int ck_meta_run(struct ck *c, const char *dir, struct childres *cr);
void ck_meta_report(struct ck *c, struct childres *cr);
void ck_meta_free(struct childres *cr);

/* check.c */
void ck_finding(struct ck *c, int kind, uint64_t oid, uint64_t value, int fixable,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));
size_t ck_find(const struct ck *c, uint64_t off);
uint64_t ck_indeg(const struct ck *c, size_t i);
void ck_indeg_add(struct ck *c, size_t i);
/* Marks what object i reaches (explicit stack).  Returns an error code. */
int ck_mark_from(struct ck *c, size_t i);
/* Passes 4..6 over an open store whose allocator state is rebuilt; txn is an
 * LMDB read transaction of its committed state. */
int ck_walk(struct ck *c, MDB_txn *txn);
void ck_free(struct ck *c);
bool ck_progress(struct ck *c, uint64_t done, uint64_t total);

/* repair.c */
/* Applies the repairs the walk c found (mode preen or repair) inside a write
 * transaction of c->s, and commits it. */
int ck_repair_store(struct ck *c);
/* Drops redo records of epoch >= from (one LMDB transaction); *lost gets
 * the number of commits dropped. */
int ck_discard_redo(struct ck *c, const char *dir, uint64_t from, const uint8_t *uuid,
                    uint64_t generation, uint64_t *lost);
/* Renames a stray heap file out of the way, creates a missing lock file. */
int ck_repair_files(struct ck *c, const char *dir, uint64_t generation);
/* Writes a new heap header from meta/'s uuid and generation, its geometry
 * and the arenas whose tables validate (the old 128 bytes are kept in
 * old-header.heap.<generation>). */
int ck_rebuild_header(struct ck *c, const char *dir, uint64_t generation,
                      const uint8_t uuid[16], uint64_t ckpt);
/* Repair: arena tables that fail validation, fixed from their other fields
 * and the object headers in the store's private mapping (dirty: the
 * repair's commit writes them); then the allocator state is rebuilt. */
int ck_fix_tables(struct ck *c, objstore *s);
/* Builds a new meta/ from heap.<generation> alone, swaps it in (the old one
 * kept as meta.damaged-<n>); *uuid and *ckpt get what it recorded. */
int ck_rebuild_meta(struct ck *c, const char *dir, uint64_t generation, uint8_t uuid[16],
                    uint64_t *ckpt);
void ck_action(struct ck *c, int kind, uint64_t oid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
