/*
 * peer_pmemobj.c -- bench_peer_pmemobj: W1-W3 with PMDK's libpmemobj, the
 * transactional API, on a pool file in a regular file system.
 *
 * Two ways to run it, each in processes of their own (peer_util.h P2: the
 * library reads PMEM_IS_PMEM_FORCE once per process):
 *
 *   pmemobj-tx-msync   as a user gets it on a disk: libpmemobj sees the file
 *                      is not persistent memory and makes every persist an
 *                      msync(MS_SYNC) of the pages touched.  Durable.
 *   pmemobj-tx-force   PMEM_IS_PMEM_FORCE=1 set before pmemobj_create: it
 *                      believes the mapping is persistent memory and only
 *                      flushes CPU caches (clwb/clflush + fence).  On a
 *                      regular file that is NOT durable: nothing ever asks
 *                      the kernel to write the page cache out.  It shows the
 *                      library's own cost with the disk taken away.
 *
 * Workloads (docs/BENCHMARKS.md, "The workloads"):
 *   W1  n objects of 16..256 bytes (peer_util.h's sizes), each stored as a
 *       PMEMoid in a holder array of 1000 slots, the holders in the root
 *       object, all in one transaction (TX_BEGIN, pmemobj_tx_alloc, TX_END);
 *       then every object and holder freed in a second transaction.  An
 *       untimed pass between them reads every object's 8-byte stamp back.
 *       msync mode runs fewer objects (-m): a persist per allocation, each an
 *       msync, would take many minutes for a million.
 *   W2  (force mode only, same reason) a list of nodes {PMEMoid next,
 *       40-byte payload} (56 bytes; the user data of objstore's 64-byte
 *       node, peer_util.h), built in one transaction; then a new process
 *       times pmemobj_open and walks the list, checking the payload checksum.
 *       bytes_per_node is the heap's allocated bytes (ctl
 *       stats.heap.curr_allocated) per node: the pool file itself is
 *       preallocated at the size we ask for.  Runs at N = 1,000,000 (-N),
 *       then at 10,000,000 (-B; 0 = none; halved while the disk has less
 *       than W2_BIG_ROOM bytes a node free, the rule every program shares:
 *       peer_w2_big), so that bench_store judges its walk against
 *       libpmemobj's at both sizes.
 *   W3  msync mode: one transaction per commit that allocates one 64-byte
 *       object, fills it, and stores its PMEMoid in slot i of the root.
 *
 *   bench_peer_pmemobj [-n W1 objects] [-m W1 objects, msync] [-N W2 nodes]
 *                      [-B W2 big nodes] [-r reps] [-w W1|W2|W3]
 */
#include <inttypes.h>
#include <libpmemobj.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peer_util.h"

#define LAYOUT "objstore-bench"
#define MIB    (UINT64_C(1) << 20)
#define FORCE_ENV "PMEM_IS_PMEM_FORCE"

enum { MODE_MSYNC, MODE_FORCE };
static const char *const impl_name[] = { "pmemobj-tx-msync", "pmemobj-tx-force" };

static PMEMobjpool *pool_create(const char *path, uint64_t bytes)
{
    PMEMobjpool *pop = pmemobj_create(path, LAYOUT, (size_t)bytes, 0600);
    if (pop == NULL)
        bench_die("pmemobj_create %s (%" PRIu64 " bytes): %s", path, bytes,
                  pmemobj_errormsg());
    return pop;
}

/* ---- W1 (child) ---- */

/* The two transactions are functions of their own, so that no local of the
 * caller lives across TX_BEGIN's setjmp. */
static void w1_alloc_tx(PMEMobjpool *pop, PMEMoid root, const uint16_t *size,
                        size_t n)
{
    size_t nh = peer_w1_holders(n);
    PMEMoid *holders = pmemobj_direct(root);
    TX_BEGIN(pop) {
        pmemobj_tx_add_range(root, 0, nh * sizeof(PMEMoid));
        size_t i = 0;
        for (size_t h = 0; h < nh; h++) {
            PMEMoid hold = pmemobj_tx_zalloc(W1_HOLDER_SLOTS * sizeof(PMEMoid), 1);
            PMEMoid *slot = pmemobj_direct(hold);
            for (size_t j = 0; j < W1_HOLDER_SLOTS && i < n; j++, i++) {
                /* New in this transaction: written directly, flushed at
                 * commit, no snapshot needed. */
                PMEMoid o = pmemobj_tx_alloc(size[i], 2);
                uint64_t v = peer_stamp(i);
                memcpy(pmemobj_direct(o), &v, 8);
                slot[j] = o;
            }
            holders[h] = hold;
        }
    } TX_ONABORT {
        bench_die("W1 alloc transaction aborted: %s", pmemobj_errormsg());
    } TX_END
}

static void w1_free_tx(PMEMobjpool *pop, PMEMoid root, size_t n)
{
    size_t nh = peer_w1_holders(n);
    PMEMoid *holders = pmemobj_direct(root);
    TX_BEGIN(pop) {
        pmemobj_tx_add_range(root, 0, nh * sizeof(PMEMoid));
        size_t i = 0;
        for (size_t h = 0; h < nh; h++) {
            PMEMoid *slot = pmemobj_direct(holders[h]);
            for (size_t j = 0; j < W1_HOLDER_SLOTS && i < n; j++, i++)
                pmemobj_tx_free(slot[j]);
            pmemobj_tx_free(holders[h]);
            holders[h] = OID_NULL;
        }
    } TX_ONABORT {
        bench_die("W1 free transaction aborted: %s", pmemobj_errormsg());
    } TX_END
}

static void child_w1(size_t n, const char *path)
{
    uint16_t *size = peer_w1_sizes(n);
    size_t nh = peer_w1_holders(n);
    /* Allocation classes round a 16..256-byte object (+16 of header) up to
     * at most twice; holders are 16 KB each. */
    PMEMobjpool *pop = pool_create(path, (uint64_t)n * 512 + nh * 20000 + 64 * MIB);
    PMEMoid root = pmemobj_root(pop, nh * sizeof(PMEMoid));
    if (OID_IS_NULL(root))
        bench_die("pmemobj_root: %s", pmemobj_errormsg());
    const PMEMoid *holders = pmemobj_direct(root);

    double t0 = bench_now();
    w1_alloc_tx(pop, root, size, n);
    double alloc_s = bench_now() - t0;

    uint64_t sum = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const PMEMoid *slot = pmemobj_direct(holders[i / W1_HOLDER_SLOTS]);
        uint64_t v;
        memcpy(&v, pmemobj_direct(slot[i % W1_HOLDER_SLOTS]), 8);
        bad += v != peer_stamp(i);
        sum += v;
    }
    if (bad != 0)
        bench_die("pmemobj W1: %zu of %zu objects lost their stamp", bad, n);

    t0 = bench_now();
    w1_free_tx(pop, root, n);
    double free_s = bench_now() - t0;

    pmemobj_close(pop);
    free(size);
    printf("VAL alloc_s=%.9f free_s=%.9f sum=%" PRIu64 "\n", alloc_s, free_s, sum);
}

/* ---- W2 (children: build, then walk in another process) ---- */

struct node {
    PMEMoid next;
    uint8_t payload[W2_PAYLOAD];
};

/* W2's pool: 56-byte nodes at 128 bytes each in the heap (bytes_per_node),
 * with room for the rest.  The file takes all of it on disk. */
#define W2_POOL_NODE_BYTES 160

static void child_w2_build(size_t n, const char *path)
{
    PMEMobjpool *pop = pool_create(path, (uint64_t)n * W2_POOL_NODE_BYTES + 64 * MIB);
    enum pobj_stats_enabled on = POBJ_STATS_ENABLED_BOTH;
    if (pmemobj_ctl_set(pop, "stats.enabled", &on) != 0)
        bench_die("pmemobj_ctl_set stats.enabled: %s", pmemobj_errormsg());
    PMEMoid root = pmemobj_root(pop, sizeof(PMEMoid));
    if (OID_IS_NULL(root))
        bench_die("pmemobj_root: %s", pmemobj_errormsg());
    PMEMoid *head = pmemobj_direct(root);

    double t0 = bench_now();
    TX_BEGIN(pop) {
        pmemobj_tx_add_range(root, 0, sizeof(PMEMoid));
        PMEMoid *link = head;
        for (size_t i = 0; i < n; i++) {
            PMEMoid o = pmemobj_tx_alloc(sizeof(struct node), 3);
            struct node *nd = pmemobj_direct(o);
            nd->next = OID_NULL;
            peer_payload(i, nd->payload, W2_PAYLOAD);
            *link = o;
            link = &nd->next;
        }
    } TX_ONABORT {
        bench_die("W2 build transaction aborted: %s", pmemobj_errormsg());
    } TX_END
    double build_s = bench_now() - t0;

    uint64_t allocated = 0;
    if (pmemobj_ctl_get(pop, "stats.heap.curr_allocated", &allocated) != 0)
        bench_die("pmemobj_ctl_get stats.heap.curr_allocated: %s", pmemobj_errormsg());
    pmemobj_close(pop);
    printf("VAL build_s=%.9f allocated=%" PRIu64 "\n", build_s, allocated);
}

static void child_w2_walk(size_t n, const char *path)
{
    double t0 = bench_now();
    PMEMobjpool *pop = pmemobj_open(path, LAYOUT);
    if (pop == NULL)
        bench_die("pmemobj_open %s: %s", path, pmemobj_errormsg());
    double open_s = bench_now() - t0;

    t0 = bench_now();
    PMEMoid o = *(PMEMoid *)pmemobj_direct(pmemobj_root(pop, sizeof(PMEMoid)));
    uint64_t sum = 0;
    size_t count = 0;
    while (!OID_IS_NULL(o)) {
        const struct node *nd = pmemobj_direct(o);
        sum = peer_fold(sum, nd->payload, W2_PAYLOAD);
        count++;
        o = nd->next;
    }
    double walk_s = bench_now() - t0;
    pmemobj_close(pop);
    if (count != n)
        bench_die("pmemobj W2: walked %zu nodes, built %zu", count, n);
    printf("VAL open_s=%.9f walk_s=%.9f sum=%" PRIu64 "\n", open_s, walk_s, sum);
}

/* ---- W3 (child) ---- */

static void child_w3(const char *path)
{
    PMEMobjpool *pop = pool_create(path, 32 * MIB);
    PMEMoid root = pmemobj_root(pop, W3_MAX_COMMITS * sizeof(PMEMoid));
    if (OID_IS_NULL(root))
        bench_die("pmemobj_root: %s", pmemobj_errormsg());
    PMEMoid *slot = pmemobj_direct(root);
    uint8_t buf[W3_PAYLOAD];

    double t0 = bench_now(), t = 0;
    size_t i = 0;
    for (; i < W3_MAX_COMMITS && (t = bench_now() - t0) < W3_MAX_SECONDS; i++) {
        peer_payload(i, buf, W3_PAYLOAD);
        TX_BEGIN(pop) {
            PMEMoid o = pmemobj_tx_alloc(W3_PAYLOAD, 4);
            memcpy(pmemobj_direct(o), buf, W3_PAYLOAD);
            pmemobj_tx_add_range(root, i * sizeof(PMEMoid), sizeof(PMEMoid));
            slot[i] = o;
        } TX_ONABORT {
            bench_die("W3 transaction %zu aborted: %s", i, pmemobj_errormsg());
        } TX_END
    }
    t = bench_now() - t0;
    pmemobj_close(pop);
    printf("VAL commits=%zu secs=%.9f\n", i, t);
}

/* ---- driver ---- */

static const char *self_name;

/* Runs `self -c job mode n path` in a new process (force mode gets
 * PMEM_IS_PMEM_FORCE=1) and returns its VAL output. */
static void run_child(const char *job, int mode, size_t n, const char *path,
                      char out[PEER_OUT_MAX])
{
    char nbuf[32], mbuf[8];
    snprintf(nbuf, sizeof nbuf, "%zu", n);
    snprintf(mbuf, sizeof mbuf, "%d", mode);
    char *args[] = { (char *)self_name, (char *)"-c", (char *)job, mbuf, nbuf,
                     (char *)path, NULL };
    peer_spawn(args, mode == MODE_FORCE ? FORCE_ENV : NULL, "1", out);
}

static void run_w1(int mode, size_t n, int reps, const char *dir)
{
    char path[BENCH_PATH_MAX], out[PEER_OUT_MAX];
    double best_alloc = 1e300, best_free = 1e300;
    bench_path(path, dir, "w1.pool");
    for (int r = 0; r < reps; r++) {
        run_child("w1", mode, n, path, out);
        if (unlink(path) != 0)
            bench_die("cannot remove %s: %s", path, strerror(errno));
        double a = peer_val(out, "alloc_s"), f = peer_val(out, "free_s");
        best_alloc = a < best_alloc ? a : best_alloc;
        best_free = f < best_free ? f : best_free;
    }
    peer_result("workload=W1 impl=%s allocs_per_s=%.0f frees_per_s=%.0f n=%zu",
                impl_name[mode], (double)n / best_alloc, (double)n / best_free, n);
}

static void run_w2(int mode, size_t n, const char *dir)
{
    char path[BENCH_PATH_MAX], out[PEER_OUT_MAX];
    bench_path(path, dir, "w2.pool");
    run_child("w2build", mode, n, path, out);
    double build_s = peer_val(out, "build_s"), allocated = peer_val(out, "allocated");
    run_child("w2walk", mode, n, path, out);
    if (peer_val_u64(out, "sum") != peer_w2_expected(n, W2_PAYLOAD))
        bench_die("pmemobj W2: the walk's checksum is wrong");
    if (unlink(path) != 0)
        bench_die("cannot remove %s: %s", path, strerror(errno));
    peer_result("workload=W2 impl=%s payload=%d build_nodes_per_s=%.0f "
                "reopen_ms=%.2f walk_ms=%.1f bytes_per_node=%.1f nodes=%zu",
                impl_name[mode], W2_PAYLOAD, (double)n / build_s,
                peer_val(out, "open_s") * 1e3, peer_val(out, "walk_s") * 1e3,
                allocated / (double)n, n);
}

static void run_w3(int mode, const char *dir)
{
    char path[BENCH_PATH_MAX], out[PEER_OUT_MAX];
    bench_path(path, dir, "w3.pool");
    run_child("w3", mode, 1, path, out);
    if (unlink(path) != 0)
        bench_die("cannot remove %s: %s", path, strerror(errno));
    double commits = peer_val(out, "commits"), secs = peer_val(out, "secs");
    printf("# W3 %s: %.0f commits in %.2f s\n", impl_name[mode], commits, secs);
    peer_result("workload=W3 impl=%s commits_per_s=%.0f", impl_name[mode],
                commits / secs);
}

int main(int argc, char **argv)
{
    self_name = argv[0];
    if (argc == 6 && strcmp(argv[1], "-c") == 0) {
        size_t n = bench_parse_count(argv[4], "count");
        const char *path = argv[5];
        (void)argv[3];  /* the mode is in the environment */
        if (strcmp(argv[2], "w1") == 0)
            child_w1(n, path);
        else if (strcmp(argv[2], "w2build") == 0)
            child_w2_build(n, path);
        else if (strcmp(argv[2], "w2walk") == 0)
            child_w2_walk(n, path);
        else if (strcmp(argv[2], "w3") == 0)
            child_w3(path);
        else
            bench_die("no job %s", argv[2]);
        return 0;
    }

    size_t n = W1_OBJECTS, n_msync = 10000, nodes = W2_NODES, big = W2_NODES_BIG;
    int reps = 3, c;
    const char *only = NULL;
    while ((c = getopt(argc, argv, "n:m:N:B:r:w:")) != -1) {
        switch (c) {
        case 'n': n = bench_parse_count(optarg, "object count"); break;
        case 'm': n_msync = bench_parse_count(optarg, "object count"); break;
        case 'N': nodes = bench_parse_count(optarg, "node count"); break;
        case 'B':   /* 0: no big run */
            big = strcmp(optarg, "0") == 0 ? 0 : bench_parse_count(optarg, "node count");
            break;
        case 'r': reps = (int)bench_parse_count(optarg, "rep count"); break;
        case 'w': only = optarg; break;
        default:
            fprintf(stderr, "usage: %s [-n W1 objects] [-m W1 objects, msync] "
                    "[-N W2 nodes] [-B W2 big nodes, 0 = none] [-r reps] "
                    "[-w W1|W2|W3]\n", argv[0]);
            return 2;
        }
    }

    const char *dir = bench_tmpdir("pmemobj");
    printf("# libpmemobj (API %d.%d), pools in %s (%s); msync mode is durable, "
           "force mode is not\n", PMEMOBJ_MAJOR_VERSION, PMEMOBJ_MINOR_VERSION,
           dir, bench_fs_name(dir));
    fflush(stdout);
    double start = bench_now();

    if (only == NULL || strcmp(only, "W1") == 0) {
        run_w1(MODE_MSYNC, n_msync, 1, dir);
        run_w1(MODE_FORCE, n, reps, dir);
    }
    if (only == NULL || strcmp(only, "W2") == 0) {
        run_w2(MODE_FORCE, nodes, dir);
        /* One pool at a time: the first run's is gone before this one. */
        big = peer_w2_big(dir, nodes, big);
        if (big != 0)
            run_w2(MODE_FORCE, big, dir);
    }
    if (only == NULL || strcmp(only, "W3") == 0) {
        bench_settle(dir);
        run_w3(MODE_MSYNC, dir);
    }

    peer_save_results();
    printf("# %.1f s\n", bench_now() - start);
    return 0;
}
