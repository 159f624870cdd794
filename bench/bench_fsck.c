/*
 * bench_fsck.c -- workload F1: objstore-fsck's check of W2's stores (a list
 * of N nodes from root "list", each a 64-byte object: header, one slot, 40
 * payload bytes), warm cache.
 *
 *   bench_fsck [-N nodes,nodes,...]     (default 1000000,10000000)
 *
 * For each N: the store is built and closed, read once (the cache warm),
 * then checked REPS times, each in a fresh process (this program run with
 * --check STORE) so that its peak RSS is the check's alone.  The best time
 * counts.  Two memory figures: peak RSS (VmHWM, which also counts the heap
 * file's pages the walk maps from the page cache) and the peak of the
 * process's anonymous memory (RssAnon, sampled at each progress callback:
 * what the checker itself allocates).
 *
 *   RESULT workload=F1 impl=objstore-fsck nodes=N objects_per_s=X
 *          peak_rss_bytes_per_object=Y peak_anon_bytes_per_object=Z
 *
 * and TARGET lines against the targets: 5,000,000 objects/s (half
 * CPython's full gc pass over 1,000,000 live objects, about 10,000,000/s on
 * the reference machine) and 16 bytes of RAM per object.
 */
#include <inttypes.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "bench_util.h"
#include "objstore_admin.h"

#define REPS 3
#define F1_PAYLOAD 40
#define TARGET_RATE 5000000.0
#define CPYTHON_GC_RATE 10000000.0
#define TARGET_BYTES 16.0

static void ck(int rc, const char *what)
{
    if (rc)
        bench_die("%s: %s", what, objstore_errmsg());
}

static uint64_t rss_anon_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    uint64_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "RssAnon: %" SCNu64, &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static uint64_t g_anon_peak;

static int sample(void *arg, int pass, uint64_t done, uint64_t total)
{
    (void)arg;
    (void)pass;
    (void)done;
    (void)total;
    uint64_t kb = rss_anon_kb();
    if (kb > g_anon_peak)
        g_anon_peak = kb;
    return 0;
}

/* The child: one check; prints "seconds objects anon_peak_kb". */
static int check_main(const char *store)
{
    objstore_check_opts o = {.on_progress = sample};
    objstore_check_report r;
    g_anon_peak = rss_anon_kb();
    double t0 = bench_now();
    ck(objstore_check(store, &o, &r), "check");
    double s = bench_now() - t0;
    if (r.problems || r.passes_done != 6)
        bench_die("F1: the check found %" PRIu64 " problems: %s", r.problems, r.first_problem);
    printf("%.6f %" PRIu64 " %" PRIu64 "\n", s, r.objects, g_anon_peak);
    return 0;
}

static void build(const char *path, size_t n)
{
    objstore *s;
    objstore_txn *t;
    uint8_t payload[F1_PAYLOAD];
    ck(objstore_create(path, NULL), "create");
    ck(objstore_open(path, NULL, &s), "open");
    ck(objstore_begin(s, 0, &t), "begin");
    objstore_oid prev = 0;
    for (size_t i = 0; i < n; i++) {
        objstore_oid o;
        memset(payload, (int)(i & 0xFF), sizeof payload);
        int rc = objstore_new(t, 0, 1, F1_PAYLOAD, &o);
        if (!rc)
            rc = objstore_write(t, o, 0, payload, sizeof payload);
        if (!rc)
            rc = i == 0 ? objstore_root_set(t, "list", o) : objstore_set_ref(t, prev, 0, o);
        ck(rc, "F1 build");
        prev = o;
    }
    ck(objstore_commit(t), "commit");
    ck(objstore_close(s), "close");
}

/* Reads every file of the store once, so the checks run on a warm cache. */
static void warm(const char *path)
{
    char f[BENCH_PATH_MAX];
    const char *names[] = {"heap.1", "meta/data.mdb"};
    static char buf[1 << 20];
    for (int i = 0; i < 2; i++) {
        int fd = open(bench_path(f, path, names[i]), O_RDONLY);
        if (fd < 0)
            bench_die("open %s: %s", f, strerror(errno));
        while (read(fd, buf, sizeof buf) > 0)
            ;
        close(fd);
    }
}

static void run_f1(const char *self, const char *dir, size_t n)
{
    char path[BENCH_PATH_MAX], nbuf[32];
    snprintf(nbuf, sizeof nbuf, "f1-%zu", n);
    bench_path(path, dir, nbuf);
    double t0 = bench_now();
    build(path, n);
    printf("# F1 nodes=%zu: store built in %.1f s\n", n, bench_now() - t0);
    warm(path);
    double best = 1e300;
    uint64_t best_rss = UINT64_MAX, best_anon = UINT64_MAX, objects = 0;
    for (int k = 0; k < REPS; k++) {
        int p[2];
        if (pipe(p))
            bench_die("pipe");
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            dup2(p[1], 1);
            close(p[0]);
            execl(self, self, "--check", path, (char *)NULL);
            _exit(127);
        }
        close(p[1]);
        char out[256] = "";
        ssize_t len = read(p[0], out, sizeof out - 1);
        close(p[0]);
        int st;
        struct rusage ru;
        if (wait4(pid, &st, 0, &ru) != pid || !WIFEXITED(st) || WEXITSTATUS(st) || len <= 0)
            bench_die("F1: the check process failed");
        out[len] = 0;
        double s;
        uint64_t anon;
        if (sscanf(out, "%lf %" SCNu64 " %" SCNu64, &s, &objects, &anon) != 3)
            bench_die("F1: unreadable child output: %s", out);
        if (s < best)
            best = s;
        if ((uint64_t)ru.ru_maxrss < best_rss)
            best_rss = (uint64_t)ru.ru_maxrss;
        if (anon < best_anon)
            best_anon = anon;
        printf("# F1 nodes=%zu check %d: %.3f s, peak RSS %.1f MiB, peak anon %.1f MiB\n", n, k,
               s, (double)ru.ru_maxrss / 1024, (double)anon / 1024);
    }
    double rate = (double)objects / best;
    double rss_per = (double)best_rss * 1024 / (double)objects;
    double anon_per = (double)best_anon * 1024 / (double)objects;
    bench_result("workload=F1 impl=objstore-fsck nodes=%zu objects_per_s=%.0f "
                 "peak_rss_bytes_per_object=%.1f peak_anon_bytes_per_object=%.1f",
                 n, rate, rss_per, anon_per);
    printf("# F1 nodes=%zu: %.2fx CPython's full gc rate (%.0f objects/s)\n", n,
           rate / CPYTHON_GC_RATE, CPYTHON_GC_RATE);
    printf("TARGET F1 nodes=%zu objects_per_s >= %.0f: %s (%.0f, %.2fx the target)\n", n,
           TARGET_RATE, rate >= TARGET_RATE ? "met" : "NOT met", rate, rate / TARGET_RATE);
    printf("TARGET F1 nodes=%zu RAM bytes/object <= %.0f: anon %s (%.1f); "
           "RSS with the mapped heap %s (%.1f)\n",
           n, TARGET_BYTES, anon_per <= TARGET_BYTES ? "met" : "NOT met", anon_per,
           rss_per <= TARGET_BYTES ? "met" : "NOT met", rss_per);
    fflush(stdout);
    bench_rmtree(path);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--check") == 0)
        return check_main(argv[2]);
    char list[256] = "1000000,10000000";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-N") == 0 && i + 1 < argc)
            snprintf(list, sizeof list, "%s", argv[++i]);
        else
            bench_die("usage: bench_fsck [-N nodes,nodes,...]");
    }
    char self[BENCH_PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        bench_die("readlink /proc/self/exe");
    self[n] = 0;
    const char *dir = bench_tmpdir("fsck");
    printf("# F1 on %s\n", bench_fs_name(dir));
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ","))
        run_f1(self, dir, bench_parse_count(tok, "nodes"));
    return 0;
}
