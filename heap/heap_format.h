/*
 * heap_format.h -- the bytes of a heap file (format version 1).
 *
 * Little-endian, as written by x86-64 and arm64.  docs/FORMAT.md draws it.
 *
 *   offset 0 of the file: struct heap_file_header (128 bytes)
 *   offset k MiB + 4096:  struct heap_arena_table of arena k
 *   pools 1..63 of an arena: data
 *
 * A huge run that starts at pool 1 of arena k and spans n arenas covers the
 * metadata pools of arenas k+1 .. k+n-1: those arenas have no table.
 */
#ifndef OBJSTORE_HEAP_FORMAT_H
#define OBJSTORE_HEAP_FORMAT_H

#include <stdint.h>
#include "heap.h"

#define HEAP_MAGIC        "OBJHEAP1"   /* 8 bytes, no terminator stored */
#define HEAP_HEADER_SIZE  128u
#define HEAP_TABLE_OFFSET 4096u        /* arena table, inside pool 0 */
#define HEAP_ARENA_MAGIC  0x414E5241u  /* "ARNA" */

struct heap_file_header {
    char magic[8];          /*   0 HEAP_MAGIC */
    uint32_t version;       /*   8 HEAP_FORMAT_VERSION */
    uint32_t header_size;   /*  12 HEAP_HEADER_SIZE */
    uint32_t arena_size;    /*  16 1 MiB */
    uint32_t pool_size;     /*  20 16 KiB */
    uint32_t align;         /*  24 16 */
    uint32_t nclasses;      /*  28 32 */
    uint32_t table_offset;  /*  32 4096 */
    uint32_t flags;         /*  36 0 */
    uint8_t uuid[16];       /*  40 the heap's identity, shared with meta/ */
    uint64_t generation;    /*  56 bumped by compaction */
    uint64_t narenas;       /*  64 heap length in arenas */
    uint64_t ckpt_epoch;    /*  72 every commit up to this epoch is in the
                               file (written at each checkpoint; 0 = none) */
    uint64_t reserved[5];   /*  80 zero */
    uint64_t checksum;      /* 120 XXH3_64bits of bytes 0..119 */
};
_Static_assert(sizeof(struct heap_file_header) == HEAP_HEADER_SIZE, "header");

enum heap_pool_kind {
    HEAP_POOL_FREE = 0,     /* no block */
    HEAP_POOL_SMALL = 1,    /* blocks of one size class, see the bitmap */
    HEAP_POOL_RUN = 2,      /* first pool of a run inside this arena */
    HEAP_POOL_RUNCONT = 3,  /* a later pool of that run */
    HEAP_POOL_HUGE = 4,     /* pool 1 only: a run over whole arenas */
};

struct heap_pooldesc {      /* 16 bytes */
    uint8_t kind;           /* enum heap_pool_kind */
    uint8_t cls;            /* SMALL: size class 0..31 */
    uint16_t nalloc;        /* SMALL: allocated blocks (= bitmap popcount) */
    uint32_t npools;        /* RUN/HUGE: pools covered; RUNCONT: distance
                               back to the RUN pool */
    uint64_t size;          /* RUN/HUGE: bytes asked at allocation */
};
_Static_assert(sizeof(struct heap_pooldesc) == 16, "pooldesc");

#define HEAP_BITMAP_WORDS (HEAP_POOL_SIZE / HEAP_ALIGN / 64)   /* 16 */

struct heap_arena_table {
    uint32_t magic;         /* HEAP_ARENA_MAGIC */
    uint32_t index;         /* k: guards against a misplaced table */
    uint64_t reserved[7];
    struct heap_pooldesc pool[HEAP_POOLS_PER_ARENA];          /* [0] unused */
    uint64_t bitmap[HEAP_POOLS_PER_ARENA][HEAP_BITMAP_WORDS]; /* [0] unused */
};
_Static_assert(sizeof(struct heap_arena_table) == 64 + 1024 + 8192, "table");
_Static_assert(HEAP_TABLE_OFFSET + sizeof(struct heap_arena_table) <= HEAP_POOL_SIZE,
               "the arena table fits its pool");

#endif
