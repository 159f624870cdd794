/*
 * peer_boost.cpp -- bench_peer_boost: W1 and W2 with Boost.Interprocess's
 * managed_mapped_file, a heap in a memory-mapped file.
 *
 * What it guarantees: nothing after a crash.  There are no transactions; its
 * flush() is msync(MS_ASYNC) on the whole mapping (Boost 1.74,
 * mapped_region::flush's default), which schedules the write-back and returns
 * before it is done; a crash in the middle of a change leaves the allocator's
 * tree half-updated.  flush() is timed as the peer's "commit" all the same
 * (impl=boost); impl=boost-fsync adds what a durable commit needs.
 *
 * Workloads (docs/BENCHMARKS.md, "The workloads"):
 *   W1  n objects of 16..256 bytes (peer_util.h's sizes): allocate, write the
 *       8-byte stamp, store an offset_ptr in a holder array of 1000 slots;
 *       the holders in a named root array; flush().  An untimed pass reads the
 *       stamps back.  Then deallocate every object and holder, destroy the
 *       root array, flush().  Best of -r reps (5), each on a fresh file.
 *       Two lines: impl=boost times the phases as they are (flush() is an
 *       asynchronous msync: nothing is durable); impl=boost-fsync adds, to
 *       each phase, msync(MS_SYNC) of the whole mapping and fsync of the
 *       file: the floor of what Boost would need to be as durable as a
 *       commit.
 *   W2  a list of {offset_ptr next, 40-byte payload} nodes (48 bytes; the
 *       user data of objstore's 64-byte node, peer_util.h) from a named root,
 *       flush(); then a new process (peer_util.h P2) times opening the file
 *       and finding the root (reopen_ms) and walks the list, checking the
 *       payload checksum.  bytes_per_node is the segment's used bytes (size -
 *       free memory) per node: the file itself is as big as we created it.
 *       Runs at N = 1,000,000 (-N), then at 10,000,000 (-B; 0 = none; halved
 *       while the disk has less than W2_BIG_ROOM bytes a node free, the rule
 *       every program shares: peer_w2_big), so that bench_store judges its
 *       walk against Boost's at both sizes.
 *
 *   bench_peer_boost [-n W1 objects] [-N W2 nodes] [-B W2 big nodes] [-r reps]
 *                    [-w W1|W2]
 */
#include <boost/interprocess/managed_mapped_file.hpp>
#include <boost/version.hpp>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <sys/mman.h>
#include <unistd.h>

#include "peer_util.h"

namespace bip = boost::interprocess;

static const uint64_t MIB = UINT64_C(1) << 20;

/* ---- W1 ---- */

struct w1_times {
    double alloc_s, free_s;
    double alloc_sync_s, free_sync_s;   /* msync(MS_SYNC) + fsync after each phase */
};

/* What a durable store must add to Boost: the mapping's dirty pages to the
 * file and the file to the disk. */
static double w1_sync(bip::managed_mapped_file &seg, const char *path)
{
    double t0 = bench_now();
    if (msync(seg.get_address(), seg.get_size(), MS_SYNC) != 0)
        bench_die("boost W1: msync: %s", strerror(errno));
    peer_fsync_path(path);
    return bench_now() - t0;
}

static w1_times w1_once(size_t n, const uint16_t *size, const char *path)
{
    size_t nh = peer_w1_holders(n);
    typedef bip::offset_ptr<void> optr;
    w1_times t;
    bip::managed_mapped_file seg(bip::create_only, path,
                                 n * 320 + nh * W1_HOLDER_SLOTS * sizeof(optr) + 64 * MIB);

    double t0 = bench_now();
    optr *root = seg.construct<optr>("w1root")[nh](nullptr);
    size_t i = 0;
    for (size_t h = 0; h < nh; h++) {
        optr *slot = static_cast<optr *>(seg.allocate(W1_HOLDER_SLOTS * sizeof(optr)));
        for (size_t j = 0; j < W1_HOLDER_SLOTS; j++, i++) {
            void *p = nullptr;
            if (i < n) {
                p = seg.allocate(size[i]);
                uint64_t v = peer_stamp(i);
                std::memcpy(p, &v, 8);
            }
            new (&slot[j]) optr(p);
        }
        root[h] = slot;
    }
    if (!seg.flush())
        bench_die("boost W1: flush failed");
    t.alloc_s = bench_now() - t0;
    t.alloc_sync_s = w1_sync(seg, path);

    size_t bad = 0;
    for (i = 0; i < n; i++) {
        optr *slot = static_cast<optr *>(root[i / W1_HOLDER_SLOTS].get());
        uint64_t v;
        std::memcpy(&v, slot[i % W1_HOLDER_SLOTS].get(), 8);
        bad += v != peer_stamp(i);
    }
    if (bad != 0)
        bench_die("boost W1: %zu of %zu objects lost their stamp", bad, n);

    t0 = bench_now();
    i = 0;
    for (size_t h = 0; h < nh; h++) {
        optr *slot = static_cast<optr *>(root[h].get());
        for (size_t j = 0; j < W1_HOLDER_SLOTS && i < n; j++, i++)
            seg.deallocate(slot[j].get());
        seg.deallocate(slot);
        root[h] = nullptr;
    }
    seg.destroy<optr>("w1root");
    if (!seg.flush())
        bench_die("boost W1: flush failed");
    t.free_s = bench_now() - t0;
    t.free_sync_s = w1_sync(seg, path);
    return t;
}

static void run_w1(size_t n, int reps, const char *dir)
{
    char path[BENCH_PATH_MAX];
    uint16_t *size = peer_w1_sizes(n);
    w1_times best = { 1e300, 1e300, 1e300, 1e300 };
    double best_alloc_durable = 1e300, best_free_durable = 1e300;
    bench_path(path, dir, "w1.bin");
    for (int r = 0; r < reps; r++) {
        w1_times t = w1_once(n, size, path);
        if (unlink(path) != 0)
            bench_die("cannot remove %s: %s", path, strerror(errno));
        best.alloc_s = t.alloc_s < best.alloc_s ? t.alloc_s : best.alloc_s;
        best.free_s = t.free_s < best.free_s ? t.free_s : best.free_s;
        if (t.alloc_s + t.alloc_sync_s < best_alloc_durable)
            best_alloc_durable = t.alloc_s + t.alloc_sync_s;
        if (t.free_s + t.free_sync_s < best_free_durable)
            best_free_durable = t.free_s + t.free_sync_s;
    }
    free(size);
    peer_result("workload=W1 impl=boost allocs_per_s=%.0f frees_per_s=%.0f n=%zu",
                (double)n / best.alloc_s, (double)n / best.free_s, n);
    /* The same phases made durable: msync(MS_SYNC) + fsync timed in. */
    peer_result("workload=W1 impl=boost-fsync allocs_per_s=%.0f frees_per_s=%.0f n=%zu",
                (double)n / best_alloc_durable, (double)n / best_free_durable, n);
}

/* ---- W2 ---- */

struct node {
    bip::offset_ptr<node> next;
    uint8_t payload[W2_PAYLOAD];
};

/* W2's file: 48-byte nodes at 64 bytes each in the segment, twice over. */
static const size_t W2_FILE_NODE_BYTES = 128;

static void child_w2_build(size_t n, const char *path)
{
    bip::managed_mapped_file seg(bip::create_only, path, n * W2_FILE_NODE_BYTES + 64 * MIB);
    double t0 = bench_now();
    bip::offset_ptr<node> *link = seg.construct<bip::offset_ptr<node>>("w2head")(nullptr);
    for (size_t i = 0; i < n; i++) {
        node *nd = new (seg.allocate(sizeof(node))) node;
        nd->next = nullptr;
        peer_payload(i, nd->payload, W2_PAYLOAD);
        *link = nd;
        link = &nd->next;
    }
    if (!seg.flush())
        bench_die("boost W2: flush failed");
    double build_s = bench_now() - t0;
    printf("VAL build_s=%.9f used=%zu\n", build_s, seg.get_size() - seg.get_free_memory());
}

static void child_w2_walk(size_t n, const char *path)
{
    double t0 = bench_now();
    bip::managed_mapped_file seg(bip::open_only, path);
    bip::offset_ptr<node> *head = seg.find<bip::offset_ptr<node>>("w2head").first;
    if (head == nullptr)
        bench_die("boost W2: no root w2head in %s", path);
    double open_s = bench_now() - t0;

    t0 = bench_now();
    uint64_t sum = 0;
    size_t count = 0;
    for (const node *nd = head->get(); nd != nullptr; nd = nd->next.get()) {
        sum = peer_fold(sum, nd->payload, W2_PAYLOAD);
        count++;
    }
    double walk_s = bench_now() - t0;
    if (count != n)
        bench_die("boost W2: walked %zu nodes, built %zu", count, n);
    printf("VAL open_s=%.9f walk_s=%.9f sum=%" PRIu64 "\n", open_s, walk_s, sum);
}

static const char *self_name;

static void run_child(const char *job, size_t n, const char *path, char out[PEER_OUT_MAX])
{
    char nbuf[32];
    snprintf(nbuf, sizeof nbuf, "%zu", n);
    char *args[] = { const_cast<char *>(self_name), const_cast<char *>("-c"),
                     const_cast<char *>(job), nbuf, const_cast<char *>(path), nullptr };
    peer_spawn(args, nullptr, nullptr, out);
}

static void run_w2(size_t n, const char *dir)
{
    char path[BENCH_PATH_MAX], out[PEER_OUT_MAX];
    bench_path(path, dir, "w2.bin");
    run_child("w2build", n, path, out);
    double build_s = peer_val(out, "build_s"), used = peer_val(out, "used");
    run_child("w2walk", n, path, out);
    if (peer_val_u64(out, "sum") != peer_w2_expected(n, W2_PAYLOAD))
        bench_die("boost W2: the walk's checksum is wrong");
    if (unlink(path) != 0)
        bench_die("cannot remove %s: %s", path, strerror(errno));
    peer_result("workload=W2 impl=boost payload=%d build_nodes_per_s=%.0f "
                "reopen_ms=%.2f walk_ms=%.1f bytes_per_node=%.1f nodes=%zu",
                W2_PAYLOAD, (double)n / build_s, peer_val(out, "open_s") * 1e3,
                peer_val(out, "walk_s") * 1e3, used / (double)n, n);
}

/* ---- driver ---- */

static int run(int argc, char **argv)
{
    self_name = argv[0];
    if (argc == 5 && std::strcmp(argv[1], "-c") == 0) {
        size_t n = bench_parse_count(argv[3], "count");
        if (std::strcmp(argv[2], "w2build") == 0)
            child_w2_build(n, argv[4]);
        else if (std::strcmp(argv[2], "w2walk") == 0)
            child_w2_walk(n, argv[4]);
        else
            bench_die("no job %s", argv[2]);
        return 0;
    }

    size_t n = W1_OBJECTS, nodes = W2_NODES, big = W2_NODES_BIG;
    int reps = 5, c;
    const char *only = nullptr;
    while ((c = getopt(argc, argv, "n:N:B:r:w:")) != -1) {
        switch (c) {
        case 'n': n = bench_parse_count(optarg, "object count"); break;
        case 'N': nodes = bench_parse_count(optarg, "node count"); break;
        case 'B':   /* 0: no big run */
            big = std::strcmp(optarg, "0") == 0 ? 0 : bench_parse_count(optarg, "node count");
            break;
        case 'r': reps = (int)bench_parse_count(optarg, "rep count"); break;
        case 'w': only = optarg; break;
        default:
            fprintf(stderr, "usage: %s [-n W1 objects] [-N W2 nodes] [-B W2 big nodes, "
                    "0 = none] [-r reps] [-w W1|W2]\n", argv[0]);
            return 2;
        }
    }

    const char *dir = bench_tmpdir("boost");
    printf("# Boost %d.%d managed_mapped_file, files in %s (%s); flush() is "
           "msync(MS_ASYNC): not durable\n", BOOST_VERSION / 100000,
           BOOST_VERSION / 100 % 1000, dir, bench_fs_name(dir));
    fflush(stdout);
    double start = bench_now();
    if (only == nullptr || std::strcmp(only, "W1") == 0)
        run_w1(n, reps, dir);
    if (only == nullptr || std::strcmp(only, "W2") == 0) {
        run_w2(nodes, dir);
        /* One file at a time: the first run's is gone before this one. */
        big = peer_w2_big(dir, nodes, big);
        if (big != 0)
            run_w2(big, dir);
    }
    peer_save_results();
    printf("# %.1f s\n", bench_now() - start);
    return 0;
}

int main(int argc, char **argv)
{
    try {
        return run(argc, argv);
    } catch (const std::exception &e) {
        bench_die("boost: %s", e.what());
    }
}
