/*
 * bench_heap.c -- W1 "alloc churn": the heap layer against glibc malloc.
 *
 * N objects (default 1,000,000) of a random size in 16..256 bytes (fixed
 * seed) are allocated, 8 bytes are written into each, then all are freed,
 * once in allocation order and once in a shuffled order (Fisher-Yates, fixed
 * seed).  Three implementations run in the same process, interleaved rep by
 * rep, the one that goes first rotating, so that drift in the machine and
 * the after-effects of one run on the next (memory the kernel just got back,
 * a file just deleted) hit them alike:
 *
 *   malloc                    malloc + the 8-byte write; free.  Each rep
 *                             starts after malloc_trim(0), with no memory
 *                             kept from the last.
 *   objstore-heap             on a fresh heap file of 4 MiB (so growing the
 *                             file is part of the work): heap_alloc +
 *                             heap_mark_dirty of the 8 bytes + the write;
 *                             heap_free.  Nothing is written back: this is
 *                             the allocator alone.
 *   objstore-heap-writeback   the same, and each phase ends with one
 *                             heap_writeback + heap_sync: what making the
 *                             phase durable costs.
 *
 * The alloc phase is the same work in both orders; only the free order
 * differs.  Each configuration runs 3 times (-r); each phase reports its best
 * rep, so a page-cache or VM hiccup in one rep does not decide the figure.
 * Only the alloc and free loops are timed.  Between them an untimed pass reads
 * every object's 8 bytes back: it checks that no two blocks overlap and feeds
 * a checksum printed at the end, so no write (nor malloc) can be optimised
 * away.
 *
 * Target (the issue's): objstore-heap's allocs/s >= 0.5 x malloc's, in both
 * orders; a TARGET line says whether it was met.
 *
 *   bench_heap [-n objects] [-r reps] [-i impl] [-v]
 *
 * -i runs one impl only (for a profiler), -v prints every rep's times.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "heap.h"

#define SEED_SIZES   UINT64_C(0x57A7E0B1)
#define SEED_SHUFFLE UINT64_C(0x5AFF1E)
#define SIZE_LO      16
#define SIZE_HI      256
#define HEAP_INITIAL (UINT64_C(4) << 20)
#define TARGET_RATIO 0.5

enum { ORDER_ALLOC, ORDER_SHUFFLED, NORDERS };
enum { IMPL_HEAP, IMPL_HEAP_WB, IMPL_MALLOC, NIMPLS };

static const char *const order_name[NORDERS] = { "alloc", "shuffled" };
static const char *const impl_name[NIMPLS] = {
    "objstore-heap", "objstore-heap-writeback", "malloc",
};

typedef struct workload {
    size_t n;
    uint16_t *size;            /* bytes asked for object i */
    uint32_t *perm[NORDERS];   /* free order: perm[order][k] is freed k-th */
} workload;

typedef struct phase_times {
    double alloc_s;
    double free_s;
} phase_times;

static uint64_t checksum;

/* The 8 bytes object i holds: distinct per object, so an overlap shows. */
static inline uint64_t stamp(size_t i)
{
    return (uint64_t)i * UINT64_C(0x9E3779B97F4A7C15) ^ UINT64_C(0xC0FFEE);
}

/* Reads every object's 8 bytes back (untimed) into the checksum. */
static void verify(const workload *w, const char *impl, uint8_t *const *ptr)
{
    size_t bad = 0;
    for (size_t i = 0; i < w->n; i++) {
        uint64_t v;
        memcpy(&v, ptr[i], 8);
        bad += v != stamp(i);
        checksum += v;
    }
    if (bad != 0)
        bench_die("%s: %zu of %zu objects lost their 8 bytes (overlapping blocks?)",
                  impl, bad, w->n);
}

/* ---- malloc ---- */

static phase_times run_malloc(const workload *w, int order, uint8_t **ptr)
{
    phase_times t;
    const uint32_t *perm = w->perm[order];

    /* Hand the previous rep's memory back to the kernel (a shuffled free
     * leaves it parked in glibc's bins), so that malloc starts each rep as
     * the heap does, on memory it has to get from the kernel. */
    malloc_trim(0);

    double t0 = bench_now();
    for (size_t i = 0; i < w->n; i++) {
        uint8_t *p = malloc(w->size[i]);
        if (p == NULL)
            bench_die("malloc(%u) failed after %zu objects", w->size[i], i);
        uint64_t v = stamp(i);
        memcpy(p, &v, 8);
        ptr[i] = p;
    }
    t.alloc_s = bench_now() - t0;

    verify(w, "malloc", ptr);

    t0 = bench_now();
    if (order == ORDER_ALLOC) {
        for (size_t i = 0; i < w->n; i++)
            free(ptr[i]);
    } else {
        for (size_t k = 0; k < w->n; k++)
            free(ptr[perm[k]]);
    }
    t.free_s = bench_now() - t0;
    return t;
}

/* ---- the heap ---- */

static void heap_check(heap_t *h, heap_status st, const char *what, size_t i)
{
    if (st != HEAP_OK)
        bench_die("%s of object %zu failed (status %d): %s", what, i, (int)st,
                  heap_errmsg(h));
}

static void durable(heap_t *h)
{
    heap_status st = heap_writeback(h);
    if (st == HEAP_OK)
        st = heap_sync(h);
    if (st != HEAP_OK)
        bench_die("write-back failed (status %d): %s", (int)st, heap_errmsg(h));
}

/* One rep on a fresh heap file.  off[] holds the offsets, ptr[] (for the
 * verify pass) the addresses; the base never moves while the heap is open.
 * The first rep also prints the heap's shape once everything is allocated. */
static phase_times run_heap(const workload *w, int order, bool writeback,
                            const char *dir, uint64_t *off, uint8_t **ptr)
{
    static bool shown;
    char path[BENCH_PATH_MAX], msg[HEAP_MSG_MAX];
    heap_create_opts copts = { .initial_bytes = HEAP_INITIAL };
    heap_open_opts oopts = { 0 };
    heap_t *h;
    heap_status st;
    phase_times t;
    const uint32_t *perm = w->perm[order];

    bench_path(path, dir, "w1.heap");
    if ((st = heap_create(path, &copts, msg)) != HEAP_OK)
        bench_die("heap_create %s (status %d): %s", path, (int)st, msg);
    if ((st = heap_open(path, &oopts, &h, msg)) != HEAP_OK)
        bench_die("heap_open %s (status %d): %s", path, (int)st, msg);
    uint8_t *base = heap_base(h);

    double t0 = bench_now();
    for (size_t i = 0; i < w->n; i++) {
        uint64_t o;
        st = heap_alloc(h, w->size[i], &o);
        if (st != HEAP_OK)
            heap_check(h, st, "heap_alloc", i);
        heap_mark_dirty(h, o, 8);
        uint64_t v = stamp(i);
        memcpy(base + o, &v, 8);
        off[i] = o;
    }
    if (writeback)
        durable(h);
    t.alloc_s = bench_now() - t0;

    if (base != heap_base(h))
        bench_die("the heap's base moved while it was open");
    for (size_t i = 0; i < w->n; i++)
        ptr[i] = base + off[i];
    verify(w, writeback ? "heap (writeback)" : "heap", ptr);

    if (!shown) {
        heap_stats hs;
        shown = true;
        heap_get_stats(h, &hs);
        printf("# heap after %zu allocs: %" PRIu64 " arenas, file %.1f MiB, "
               "live %.1f MiB in %" PRIu64 " blocks, fragmentation %.3f\n",
               w->n, hs.arenas, (double)hs.file_bytes / (1 << 20),
               (double)hs.live_bytes / (1 << 20), hs.live_blocks,
               hs.fragmentation);
    }

    t0 = bench_now();
    if (order == ORDER_ALLOC) {
        for (size_t i = 0; i < w->n; i++) {
            st = heap_free(h, off[i]);
            if (st != HEAP_OK)
                heap_check(h, st, "heap_free", i);
        }
    } else {
        for (size_t k = 0; k < w->n; k++) {
            st = heap_free(h, off[perm[k]]);
            if (st != HEAP_OK)
                heap_check(h, st, "heap_free", perm[k]);
        }
    }
    if (writeback)
        durable(h);
    t.free_s = bench_now() - t0;

    heap_close(h);
    if (unlink(path) != 0)
        bench_die("cannot remove %s: %s", path, strerror(errno));
    return t;
}

/* ---- driver ---- */

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL)
        bench_die("out of memory for %zu x %zu bytes", n, size);
    return p;
}

int main(int argc, char **argv)
{
    size_t n = 1000000;
    int reps = 3, c;
    bool verbose = false, run[NIMPLS] = { true, true, true };
    while ((c = getopt(argc, argv, "n:r:i:v")) != -1) {
        switch (c) {
        case 'n': n = bench_parse_count(optarg, "object count"); break;
        case 'r': reps = (int)bench_parse_count(optarg, "rep count"); break;
        case 'i':
            for (int k = 0; k < NIMPLS; k++)
                run[k] = strcmp(optarg, impl_name[k]) == 0;
            if (!run[IMPL_HEAP] && !run[IMPL_HEAP_WB] && !run[IMPL_MALLOC])
                bench_die("no impl named %s", optarg);
            break;
        case 'v': verbose = true; break;
        default:
            fprintf(stderr, "usage: %s [-n objects] [-r reps] [-i impl] [-v]\n",
                    argv[0]);
            return 2;
        }
    }

    workload w = { .n = n };
    w.size = xcalloc(n, sizeof *w.size);
    bench_rng r = bench_rng_seed(SEED_SIZES);
    for (size_t i = 0; i < n; i++)
        w.size[i] = (uint16_t)bench_rng_range(&r, SIZE_LO, SIZE_HI);
    w.perm[ORDER_ALLOC] = NULL;  /* the loops free 0..n-1 directly */
    w.perm[ORDER_SHUFFLED] = xcalloc(n, sizeof(uint32_t));
    r = bench_rng_seed(SEED_SHUFFLE);
    bench_permutation(w.perm[ORDER_SHUFFLED], n, &r);

    uint64_t *off = xcalloc(n, sizeof *off);
    uint8_t **ptr = xcalloc(n, sizeof *ptr);
    const char *dir = bench_tmpdir("heap");

    printf("# W1 alloc churn: %zu objects of %d..%d bytes, best of %d reps, "
           "heap files in %s (%s)\n", n, SIZE_LO, SIZE_HI, reps, dir,
           bench_fs_name(dir));
    fflush(stdout);

    double start = bench_now();
    phase_times best[NORDERS][NIMPLS];
    for (int o = 0; o < NORDERS; o++) {
        for (int k = 0; k < NIMPLS; k++)
            best[o][k] = (phase_times){ 1e300, 1e300 };
        for (int rep = 0; rep < reps; rep++) {
            for (int j = 0; j < NIMPLS; j++) {
                int k = (j + rep) % NIMPLS;
                if (!run[k])
                    continue;
                phase_times t;
                if (k == IMPL_MALLOC)
                    t = run_malloc(&w, o, ptr);
                else
                    t = run_heap(&w, o, k == IMPL_HEAP_WB, dir, off, ptr);
                if (verbose)
                    printf("# order=%s impl=%s rep %d: alloc %.3f s, free %.3f s\n",
                           order_name[o], impl_name[k], rep + 1, t.alloc_s,
                           t.free_s);
                if (t.alloc_s < best[o][k].alloc_s)
                    best[o][k].alloc_s = t.alloc_s;
                if (t.free_s < best[o][k].free_s)
                    best[o][k].free_s = t.free_s;
            }
        }
        for (int k = 0; k < NIMPLS; k++)
            if (run[k])
                bench_result("workload=W1 order=%s impl=%s allocs_per_s=%.0f "
                             "frees_per_s=%.0f", order_name[o], impl_name[k],
                             (double)n / best[o][k].alloc_s,
                             (double)n / best[o][k].free_s);
    }

    /* Rates share n, so the ratio of rates is the inverse ratio of times. */
    if (run[IMPL_HEAP] && run[IMPL_MALLOC]) {
        double ratio[NORDERS];
        bool met = true;
        for (int o = 0; o < NORDERS; o++) {
            ratio[o] = best[o][IMPL_MALLOC].alloc_s / best[o][IMPL_HEAP].alloc_s;
            met = met && ratio[o] >= TARGET_RATIO;
        }
        printf("TARGET W1 objstore-heap allocs_per_s >= %.1fx malloc: %s "
               "(order=alloc %.2fx, order=shuffled %.2fx)\n", TARGET_RATIO,
               met ? "met" : "NOT met", ratio[ORDER_ALLOC], ratio[ORDER_SHUFFLED]);
    }
    printf("# checksum %016" PRIx64 ", %.1f s\n", checksum, bench_now() - start);

    free(ptr);
    free(off);
    free(w.perm[ORDER_SHUFFLED]);
    free(w.size);
    return 0;
}
