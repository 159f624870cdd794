/*
 * bench_gc.c -- full collection and compaction (docs/BENCHMARKS.md, "C1",
 * "C2").
 *
 *   C1  full collection: W2's list of N nodes (64-byte objects: one slot, 40
 *       payload bytes) from root "list", and beside it a ring of R objects
 *       whose root was deleted (garbage the online collector never hears of:
 *       the collector is off).  objstore_full_collect marks the N live nodes
 *       and frees the ring:
 *         RESULT workload=C1 impl=objstore objects_per_s=(N+R)/s ...
 *       Target: >= 10,000,000 objects/s, CPython's own full collection on
 *       this machine (9.6-11.7 M/s over 1,000,000 live objects).
 *
 *   C2  compaction: M objects of W1's sizes (16..256 payload bytes, one slot
 *       each) held by holder objects of 1,000 slots under root "all"; 90% of
 *       them unlinked at random (freed), leaving a fragmented heap.  Then
 *       objstore_compact, timed; a walk of every live object's payload
 *       before and after (the best of 5, each in a freshly opened store):
 *         RESULT workload=C2 impl=objstore objects_per_s live_data_bytes_per_s
 *                file_bytes_before file_bytes_after live_bytes walk_ms_*
 *       The peer: the same logical data (key = object number, value = its
 *       payload) in LMDB, 90% deleted, copied with `mdb_copy -c` (the
 *       compacting copy), timed as a process:
 *         RESULT workload=C2 impl=lmdb-copy-compact live_data_bytes_per_s ...
 *       Live data = payload bytes + 8 per object (the key; for objstore the
 *       oid), the same logical quantity for both.
 *       Targets: file after <= 1.15 x live bytes + 4 MiB; live bytes per
 *       second >= mdb_copy -c's; the walk after no slower than before.
 *
 *   bench_gc [-N C1 nodes] [-R C1 ring] [-M C2 objects] [-w C1|C2]
 */
#include <inttypes.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "objstore.h"
#include "objstore_admin.h"

#define C1_NODES   10000000
#define C1_RING    1000000
#define C2_OBJECTS 1000000
#define C2_HOLDER  1000
#define C2_SEED    UINT64_C(0xC2C2C2)
#define T_C1_RATE  10000000.0

static void ck(int rc, const char *what)
{
    if (rc)
        bench_die("%s: %s (%s)", what, objstore_strerror(rc), objstore_errmsg());
}

static const objstore_options no_auto = {.gc_threshold = UINT64_MAX,
                                         .sync = OBJSTORE_SYNC_RELAXED};

/* ---- C1 ---- */

static void c1(size_t n, size_t ring)
{
    const char *dir = bench_tmpdir("c1");
    char path[BENCH_PATH_MAX];
    bench_path(path, dir, "store");
    ck(objstore_create(path, NULL), "C1 create");
    objstore *s;
    ck(objstore_open(path, &no_auto, &s), "C1 open");
    objstore_txn *t;
    uint8_t payload[40] = {0};
    /* The list, built back to front, in commits of 1,000,000. */
    objstore_oid next = 0;
    for (size_t i = 0; i < n;) {
        ck(objstore_begin(s, 0, &t), "C1 begin");
        for (size_t k = 0; k < 1000000 && i < n; k++, i++) {
            objstore_oid o;
            ck(objstore_new(t, 0, 1, sizeof payload, &o), "C1 new");
            memcpy(payload, &i, 8);
            ck(objstore_write(t, o, 0, payload, sizeof payload), "C1 write");
            if (next)
                ck(objstore_set_ref(t, o, 0, next), "C1 link");
            next = o;
            /* keep the head rooted between commits */
        }
        ck(objstore_root_set(t, "list", next), "C1 root");
        ck(objstore_commit(t), "C1 commit");
    }
    /* The ring, rooted while it is built, then dropped. */
    objstore_oid first = 0, prev = 0;
    for (size_t i = 0; i < ring;) {
        ck(objstore_begin(s, 0, &t), "C1 begin");
        for (size_t k = 0; k < 1000000 && i < ring; k++, i++) {
            objstore_oid o;
            ck(objstore_new(t, 0, 1, sizeof payload, &o), "C1 new");
            if (!first) {
                first = o;
                ck(objstore_root_set(t, "ring", o), "C1 root");
            } else {
                ck(objstore_set_ref(t, prev, 0, o), "C1 link");
            }
            prev = o;
        }
        ck(objstore_commit(t), "C1 commit");
    }
    ck(objstore_begin(s, 0, &t), "C1 begin");
    ck(objstore_set_ref(t, prev, 0, first), "C1 close ring");
    ck(objstore_root_del(t, "ring"), "C1 drop ring");
    ck(objstore_commit(t), "C1 commit");
    ck(objstore_close(s), "C1 close");
    ck(objstore_open(path, &no_auto, &s), "C1 reopen");

    objstore_gc_stats st;
    double t0 = bench_now();
    ck(objstore_full_collect(s, NULL, &st), "C1 full collection");
    double secs = bench_now() - t0;
    if (st.freed != ring || st.reachable != n)
        bench_die("C1: freed %" PRIu64 " of %zu, reachable %" PRIu64 " of %zu", st.freed,
                  ring, st.reachable, n);
    ck(objstore_close(s), "C1 close");
    double rate = (double)(n + ring) / secs;
    printf("# C1 nodes=%zu ring=%zu: full collection %.3f s (%" PRIu64 " commits)\n", n,
           ring, secs, st.commits);
    bench_result("workload=C1 impl=objstore nodes=%zu ring=%zu objects_per_s=%.0f "
                 "collect_s=%.3f", n, ring, rate, secs);
    printf("TARGET C1 objstore objects_per_s >= %.0f: %s (%.0f, %.2fx)\n", T_C1_RATE,
           rate >= T_C1_RATE ? "met" : "NOT met", rate, rate / T_C1_RATE);
    bench_rmtree(path);
}

/* ---- C2 ---- */

static uint16_t *c2_sizes(size_t m)
{
    uint16_t *size = calloc(m, sizeof *size);
    if (!size)
        bench_die("out of memory");
    bench_rng r = bench_rng_seed(C2_SEED);
    for (size_t i = 0; i < m; i++)
        size[i] = (uint16_t)bench_rng_range(&r, 16, 256);
    return size;
}

/* Which objects stay: 10%, the same set for both implementations. */
static bool *c2_keep(size_t m)
{
    bool *keep = calloc(m, sizeof *keep);
    bench_rng r = bench_rng_seed(C2_SEED + 1);
    for (size_t i = 0; i < m; i++)
        keep[i] = bench_rng_below(&r, 10) == 0;
    return keep;
}

static void c2_payload(size_t i, uint8_t *p, size_t len)
{
    for (size_t k = 0; k < len; k += 8) {
        uint64_t v = (uint64_t)i * UINT64_C(0x9E3779B97F4A7C15) + k;
        memcpy(p + k, &v, len - k < 8 ? len - k : 8);
    }
}

static double c2_walk_once(const char *path, uint64_t *sum);

/* The best of C2_WALKS walks, each in a fresh open (the machine is shared:
 * one walk of ~50 ms is at the mercy of a neighbour's burst). */
#define C2_WALKS 5
static double c2_walk(const char *path, uint64_t *sum)
{
    double best = 1e300;
    for (int i = 0; i < C2_WALKS; i++) {
        double ms = c2_walk_once(path, sum);
        if (ms < best)
            best = ms;
    }
    return best;
}

/* Reads every live object's payload from root "all"; returns ms. */
static double c2_walk_once(const char *path, uint64_t *sum)
{
    objstore *s;
    ck(objstore_open(path, &no_auto, &s), "C2 open");
    objstore_txn *t;
    double t0 = bench_now();
    ck(objstore_begin(s, OBJSTORE_TXN_RDONLY, &t), "C2 begin");
    objstore_oid all;
    ck(objstore_root_get(t, "all", &all), "C2 root");
    objstore_objinfo ai;
    ck(objstore_info(t, all, &ai), "C2 info");
    uint64_t acc = 0;
    for (uint32_t h = 0; h < ai.nrefs; h++) {
        objstore_oid holder;
        ck(objstore_get_ref(t, all, h, &holder), "C2 holder");
        objstore_objinfo hi;
        ck(objstore_info(t, holder, &hi), "C2 info");
        for (uint32_t k = 0; k < hi.nrefs; k++) {
            objstore_oid o;
            ck(objstore_get_ref(t, holder, k, &o), "C2 ref");
            if (!o)
                continue;
            const void *p;
            uint64_t len;
            ck(objstore_get(t, o, &p, &len), "C2 get");
            const uint8_t *b = p;
            for (uint64_t q = 0; q < len; q++)
                acc = acc * 31 + b[q];
        }
    }
    ck(objstore_commit(t), "C2 end");
    double ms = (bench_now() - t0) * 1e3;
    ck(objstore_close(s), "C2 close");
    *sum = acc;
    return ms;
}

/* The compaction's steps, timed through the crash hook (it names each step
 * before it is taken): when the old file's deletion begins and ends. */
static double t_unlink, t_unlinked;

static void step_hook(const char *step)
{
    if (!strcmp(step, "compact-unlink"))
        t_unlink = bench_now();
    else if (!strcmp(step, "compact-dirsync") && t_unlink > 0 && t_unlinked == 0)
        t_unlinked = bench_now();
}

static void c2_objstore(size_t m, const uint16_t *size, const bool *keep, uint64_t *live_payload)
{
    const char *dir = bench_tmpdir("c2");
    char path[BENCH_PATH_MAX];
    bench_path(path, dir, "store");
    ck(objstore_create(path, NULL), "C2 create");
    objstore *s;
    ck(objstore_open(path, &no_auto, &s), "C2 open");
    objstore_txn *t;
    size_t nh = (m + C2_HOLDER - 1) / C2_HOLDER;
    ck(objstore_begin(s, 0, &t), "C2 begin");
    objstore_oid all;
    ck(objstore_new(t, 0, (uint32_t)nh, 0, &all), "C2 new");
    ck(objstore_root_set(t, "all", all), "C2 root");
    uint8_t buf[256];
    for (size_t h = 0; h < nh; h++) {
        objstore_oid holder;
        ck(objstore_new(t, 0, C2_HOLDER, 0, &holder), "C2 holder");
        ck(objstore_set_ref(t, all, (uint32_t)h, holder), "C2 link");
        for (size_t k = 0; k < C2_HOLDER && h * C2_HOLDER + k < m; k++) {
            size_t i = h * C2_HOLDER + k;
            objstore_oid o;
            ck(objstore_new(t, 0, 1, size[i], &o), "C2 new");
            c2_payload(i, buf, size[i]);
            ck(objstore_write(t, o, 0, buf, size[i]), "C2 write");
            ck(objstore_set_ref(t, holder, (uint32_t)k, o), "C2 link");
        }
    }
    ck(objstore_commit(t), "C2 commit");
    /* Free 90% at random. */
    ck(objstore_begin(s, 0, &t), "C2 begin");
    *live_payload = 0;
    for (size_t h = 0; h < nh; h++) {
        objstore_oid holder;
        ck(objstore_get_ref(t, all, (uint32_t)h, &holder), "C2 holder");
        for (size_t k = 0; k < C2_HOLDER && h * C2_HOLDER + k < m; k++) {
            size_t i = h * C2_HOLDER + k;
            if (!keep[i])
                ck(objstore_set_ref(t, holder, (uint32_t)k, 0), "C2 unlink");
            else
                *live_payload += size[i];
        }
    }
    ck(objstore_commit(t), "C2 commit");
    objstore_stats ss;
    ck(objstore_get_stats(s, &ss), "C2 stats");
    ck(objstore_close(s), "C2 close");

    uint64_t sum0, sum1;
    double walk0 = c2_walk(path, &sum0);
    ck(objstore_open(path, &no_auto, &s), "C2 open");
    objstore_gc_stats st;
    t_unlink = t_unlinked = 0;
    objstore_set_crash_hook(step_hook);
    double t0 = bench_now();
    ck(objstore_compact(s, NULL, NULL, NULL, &st), "C2 compact");
    double secs = bench_now() - t0;
    objstore_set_crash_hook(NULL);
    double del = t_unlinked > t_unlink ? t_unlinked - t_unlink : 0;
    ck(objstore_get_stats(s, &ss), "C2 stats");
    ck(objstore_close(s), "C2 close");
    double walk1 = c2_walk(path, &sum1);
    if (sum0 != sum1)
        bench_die("C2: the walk after compaction reads other bytes");
    /* Live data as the peer counts it: payload bytes + 8 (a key, an oid)
     * per object kept. */
    uint64_t kept = 0;
    for (size_t i = 0; i < m; i++)
        kept += keep[i];
    double rate = (double)st.reachable / secs;
    double brate = (double)(*live_payload + 8 * kept) / secs;
    printf("# C2 objects=%zu: %" PRIu64 " live objects (%.1f MiB of blocks, %.1f MiB of "
           "payload); compaction %.3f s (of which deleting the old file %.3f s); file %.1f -> "
           "%.1f MiB; walk %.1f -> %.1f ms\n", m,
           st.reachable, ss.live_bytes / 1048576.0, *live_payload / 1048576.0, secs, del,
           st.file_bytes_before / 1048576.0, st.file_bytes_after / 1048576.0, walk0, walk1);
    bench_result("workload=C2 impl=objstore objects=%zu objects_per_s=%.0f "
                 "live_data_bytes_per_s=%.0f file_bytes_before=%" PRIu64 " file_bytes_after=%" PRIu64
                 " live_bytes=%" PRIu64 " walk_ms_before=%.1f walk_ms_after=%.1f compact_s=%.3f"
                 " delete_old_s=%.3f", m, rate, brate, st.file_bytes_before, st.file_bytes_after,
                 ss.live_bytes, walk0, walk1, secs, del);
    double bound = 1.15 * (double)ss.live_bytes + 4.0 * 1048576.0;
    printf("TARGET C2 objstore file_bytes_after <= 1.15 x live_bytes + 4 MiB: %s "
           "(%" PRIu64 " <= %.0f)\n", (double)st.file_bytes_after <= bound ? "met" : "NOT met",
           st.file_bytes_after, bound);
    printf("TARGET C2 objstore walk_ms_after <= walk_ms_before: %s (%.1f vs %.1f ms)\n",
           walk1 <= walk0 ? "met" : "NOT met", walk1, walk0);
    bench_rmtree(path);
    /* for the peer's TARGET line */
    char rbuf[64];
    snprintf(rbuf, sizeof rbuf, "%.0f", brate);
    setenv("BENCH_GC_C2_RATE", rbuf, 1);
}

static void lck(int rc, const char *what)
{
    if (rc)
        bench_die("LMDB %s: %s", what, mdb_strerror(rc));
}

static void c2_lmdb(size_t m, const uint16_t *size, const bool *keep)
{
    const char *dir = bench_tmpdir("c2l");
    char src[BENCH_PATH_MAX], dst[BENCH_PATH_MAX];
    bench_path(src, dir, "src");
    bench_path(dst, dir, "dst");
    if (mkdir(src, 0755) || mkdir(dst, 0755))
        bench_die("mkdir: %s", strerror(errno));
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    lck(mdb_env_create(&env), "env_create");
    lck(mdb_env_set_mapsize(env, UINT64_C(4) << 30), "mapsize");
    lck(mdb_env_open(env, src, MDB_NOSYNC, 0644), "env_open");
    lck(mdb_txn_begin(env, NULL, 0, &txn), "begin");
    lck(mdb_dbi_open(txn, NULL, 0, &dbi), "dbi");
    uint8_t buf[256], key[8];
    for (size_t i = 0; i < m; i++) {
        for (int b = 0; b < 8; b++)
            key[b] = (uint8_t)((uint64_t)i >> (56 - 8 * b));
        c2_payload(i, buf, size[i]);
        MDB_val k = {8, key}, v = {size[i], buf};
        lck(mdb_put(txn, dbi, &k, &v, MDB_APPEND), "put");
    }
    lck(mdb_txn_commit(txn), "commit");
    lck(mdb_txn_begin(env, NULL, 0, &txn), "begin");
    uint64_t live = 0, nlive = 0;
    for (size_t i = 0; i < m; i++) {
        if (keep[i]) {
            live += size[i];
            nlive++;
            continue;
        }
        for (int b = 0; b < 8; b++)
            key[b] = (uint8_t)((uint64_t)i >> (56 - 8 * b));
        MDB_val k = {8, key};
        lck(mdb_del(txn, dbi, &k, NULL), "del");
    }
    lck(mdb_txn_commit(txn), "commit");
    lck(mdb_env_sync(env, 1), "sync");
    mdb_env_close(env);
    char data[BENCH_PATH_MAX], out[BENCH_PATH_MAX];
    bench_path(data, src, "data.mdb");
    bench_path(out, dst, "data.mdb");
    uint64_t before = 0;
    FILE *f = fopen(data, "rb");
    if (f) {
        fseek(f, 0, SEEK_END);
        before = (uint64_t)ftell(f);
        fclose(f);
    }
    double t0 = bench_now();
    pid_t pid = fork();
    if (pid == 0) {
        execlp("mdb_copy", "mdb_copy", "-c", src, dst, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    double secs = bench_now() - t0;
    if (!WIFEXITED(st) || WEXITSTATUS(st)) {
        printf("# C2 lmdb-copy-compact skipped: mdb_copy -c failed (status %d; is lmdb-utils "
               "installed?)\n", st);
        bench_rmtree(src);
        bench_rmtree(dst);
        return;
    }
    uint64_t after = 0;
    if ((f = fopen(out, "rb"))) {
        fseek(f, 0, SEEK_END);
        after = (uint64_t)ftell(f);
        fclose(f);
    }
    /* Live data: values and keys (8 bytes each). */
    uint64_t live_bytes = live + 8 * nlive;
    double brate = (double)live_bytes / secs;
    printf("# C2 lmdb: %" PRIu64 " live entries, %.1f MiB of keys+values; mdb_copy -c "
           "%.3f s; file %.1f -> %.1f MiB\n", nlive, live_bytes / 1048576.0, secs,
           before / 1048576.0, after / 1048576.0);
    bench_result("workload=C2 impl=lmdb-copy-compact objects=%zu objects_per_s=%.0f "
                 "live_data_bytes_per_s=%.0f file_bytes_before=%" PRIu64 " file_bytes_after=%" PRIu64
                 " live_data_bytes=%" PRIu64, m, (double)nlive / secs, brate, before, after,
                 live_bytes);
    const char *ours = getenv("BENCH_GC_C2_RATE");
    if (ours && *ours) {
        double o = atof(ours);
        printf("TARGET C2 objstore live_data_bytes_per_s >= mdb_copy -c's: %s (%.0f vs %.0f, "
               "%.2fx)\n", o >= brate ? "met" : "NOT met", o, brate, o / brate);
    }
    bench_rmtree(src);
    bench_rmtree(dst);
}

int main(int argc, char **argv)
{
    size_t n = C1_NODES, ring = C1_RING, m = C2_OBJECTS;
    const char *only = NULL;
    int c;
    while ((c = getopt(argc, argv, "N:R:M:w:")) != -1) {
        switch (c) {
        case 'N': n = bench_parse_count(optarg, "-N"); break;
        case 'R': ring = bench_parse_count(optarg, "-R"); break;
        case 'M': m = bench_parse_count(optarg, "-M"); break;
        case 'w': only = optarg; break;
        default:
            fprintf(stderr, "usage: bench_gc [-N C1 nodes] [-R C1 ring] [-M C2 objects] "
                    "[-w C1|C2]\n");
            return 2;
        }
    }
    if (!only || !strcmp(only, "C1"))
        c1(n, ring);
    if (!only || !strcmp(only, "C2")) {
        uint16_t *size = c2_sizes(m);
        bool *keep = c2_keep(m);
        uint64_t live;
        c2_objstore(m, size, keep, &live);
        c2_lmdb(m, size, keep);
        free(size);
        free(keep);
    }
    return 0;
}
