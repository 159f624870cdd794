/*
 * objstore-gc -- full collection, compaction and the logical digest of a
 * store, from the command line (docs/man/objstore-gc.8).
 *
 *   objstore-gc [options] STORE
 *
 * Rules:
 *   1. a damaged store is refused before anything is written or even mapped
 *      in this process: objstore_check (the checker behind objstore-fsck,
 *      read-only, LMDB read in a child process so that a damaged data.mdb
 *      cannot crash this one) must find no problem, or the exit code is 4;
 *      only then is the store opened, read-only for --digest and
 *      --dry-run, for writing otherwise;
 *   2. SIGINT is a request: the library stops at its next clean point (the
 *      end of a commit; before compaction's switch) and the exit code is 32;
 *   3. the logic is the library's (objstore_full_collect, objstore_compact,
 *      objstore_digest): this file parses, prints and maps errors to codes.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "objstore.h"
#include "objstore_admin.h"
#include "tool.h"

static const char *prog = "objstore-gc";

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: %s [options] STORE\n"
            "Frees every object of STORE that its roots do not reach (a full\n"
            "collection: garbage cycles and leaks included).\n"
            "\n"
            "  -c, --compact    then copy the live objects into a new heap file in\n"
            "                   traversal order and switch to it: the file shrinks;\n"
            "                   oids change\n"
            "  -n, --dry-run    say what would be freed and how large the file would\n"
            "                   be; write nothing\n"
            "  -d, --digest     print the store's logical digest and exit\n"
            "  -b, --batch N    objects freed per commit (default: 1,000,000)\n"
            "  -j, --json       print the summary as one JSON document\n"
            "  -p, --progress   show the progress bar even when stderr is not a terminal\n"
            "  -q, --quiet      no progress bar\n"
            "  -h, --help       this text\n"
            "  -V, --version    the version\n"
            "\n"
            "Exit codes: 0 done; 4 the store is damaged (run objstore-fsck; nothing\n"
            "was changed); 8 operational error (locked, I/O, full disk; nothing lost);\n"
            "16 usage; 32 interrupted (stopped at a clean point).\n",
            prog);
}

/* Damage (exit 4) or an operational problem (exit 8). */
static int code_for(int rc)
{
    switch (rc) {
    case OBJSTORE_EBADMAGIC:
    case OBJSTORE_EVERSION:
    case OBJSTORE_ECHECKSUM:
    case OBJSTORE_EGEOMETRY:
    case OBJSTORE_ETRUNCATED:
    case OBJSTORE_ECORRUPT:
    case OBJSTORE_EBADOID:
    case OBJSTORE_EMETA:
    case OBJSTORE_EMISMATCH:
    case OBJSTORE_EREDO:
        return TOOL_EXIT_UNCORRECTED;
    default:
        return TOOL_EXIT_OPERATIONAL;
    }
}

static tool_progress bar;

static int on_progress(void *arg, const char *phase, uint64_t done, uint64_t total)
{
    (void)arg;
    tool_progress_update(&bar, phase, done, total);
    return tool_interrupted != 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void hex(char out[33], const uint8_t d[16])
{
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"compact", no_argument, NULL, 'c'},  {"dry-run", no_argument, NULL, 'n'},
        {"digest", no_argument, NULL, 'd'},   {"batch", required_argument, NULL, 'b'},
        {"json", no_argument, NULL, 'j'},     {"progress", no_argument, NULL, 'p'},
        {"quiet", no_argument, NULL, 'q'},    {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},  {NULL, 0, NULL, 0},
    };
    bool compact = false, dry = false, digest = false, json = false;
    int bar_mode = -1;
    uint64_t batch = 0;
    int c;
    while ((c = getopt_long(argc, argv, "cndb:jpqhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': compact = true; break;
        case 'n': dry = true; break;
        case 'd': digest = true; break;
        case 'j': json = true; break;
        case 'p': bar_mode = 1; break;
        case 'q': bar_mode = 0; break;
        case 'b': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || *end || !v || optarg[0] == '-') {
                fprintf(stderr, "%s: --batch wants a positive number, not '%s'\n", prog,
                        optarg);
                return TOOL_EXIT_USAGE;
            }
            batch = v;
            break;
        }
        case 'h': usage(stdout); return TOOL_EXIT_OK;
        case 'V': tool_print_version(prog); return TOOL_EXIT_OK;
        default: usage(stderr); return TOOL_EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "%s: %s\n", prog, optind >= argc ? "no STORE given" : "one STORE only");
        usage(stderr);
        return TOOL_EXIT_USAGE;
    }
    const char *dir = argv[optind];
    /* A file-size limit is a full disk for the library, not a signal. */
    signal(SIGXFSZ, SIG_IGN);
    tool_catch_sigint();

    /* Rule 1: check first; unreachable objects are what a collection is
     * for, not problems. */
    objstore_check_report cr;
    int rc = objstore_check(dir, NULL, &cr);
    if (rc) {
        fprintf(stderr, "%s: %s: cannot check the store: %s\n", prog, dir, objstore_errmsg());
        return code_for(rc);
    }
    if (cr.problems || cr.passes_done < 6) {
        fprintf(stderr, "%s: %s: the store is damaged (%llu problem%s; first: %s); nothing "
                "was changed: run objstore-fsck\n", prog, dir, (unsigned long long)cr.problems,
                cr.problems == 1 ? "" : "s", cr.first_problem);
        return TOOL_EXIT_UNCORRECTED;
    }
    objstore_options oo = {.flags = digest || dry ? OBJSTORE_RDONLY : 0,
                           .gc_threshold = UINT64_MAX};
    objstore *s;
    if ((rc = objstore_open(dir, &oo, &s))) {
        fprintf(stderr, "%s: %s: %s\n", prog, dir, objstore_errmsg());
        return code_for(rc);
    }

    if (digest) {
        uint8_t d[16];
        uint64_t n = 0;
        char h[33];
        rc = objstore_digest(s, d, &n);
        if (rc) {
            fprintf(stderr, "%s: digest: %s\n", prog, objstore_errmsg());
            objstore_close(s);
            return code_for(rc);
        }
        hex(h, d);
        if (json) {
            json_t *j = json_pack("{s:s, s:s, s:I}", "store", dir, "digest", h, "objects",
                                  (json_int_t)n);
            tool_json_print(j);
        } else {
            printf("%s  %s\n", h, dir);
        }
        objstore_close(s);
        return TOOL_EXIT_OK;
    }

    tool_progress_init(&bar, json ? 0 : bar_mode);
    objstore_gc_options go = {.dry_run = dry, .batch = batch, .progress = on_progress};
    objstore_gc_stats st;
    double t0 = now_s();
    rc = compact ? objstore_compact(s, &go, NULL, NULL, &st)
                 : objstore_full_collect(s, &go, &st);
    double secs = now_s() - t0;
    tool_progress_done(&bar);
    if (rc) {
        fprintf(stderr, "%s: %s: %s\n", prog, dir, objstore_errmsg());
        objstore_close(s);
        return code_for(rc);
    }
    int crc = objstore_close(s);
    if (crc) {
        fprintf(stderr, "%s: %s: close: %s\n", prog, dir, objstore_errmsg());
        return code_for(crc);
    }
    uint64_t after = dry && compact ? st.compacted_bytes : st.file_bytes_after;
    const char *what = dry ? (compact ? "dry run (compact)" : "dry run")
                           : (compact ? "compact" : "collect");
    if (json) {
        json_t *j = json_pack(
            "{s:s, s:s, s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
            "store", dir, "operation", what, "dry_run", dry, "interrupted", st.interrupted,
            "objects_before", (json_int_t)st.objects_before, "reachable",
            (json_int_t)st.reachable, "garbage", (json_int_t)st.garbage, "garbage_bytes",
            (json_int_t)st.garbage_bytes, "freed", (json_int_t)st.freed, "freed_bytes",
            (json_int_t)st.freed_bytes, "file_bytes_before", (json_int_t)st.file_bytes_before,
            "file_bytes_after", (json_int_t)after, "commits", (json_int_t)st.commits,
            "generation", (json_int_t)st.generation, "seconds", secs);
        tool_json_print(j);
    } else {
        char a[32], b[32], x[32], y[32];
        if (dry)
            printf("%s: would free %s objects (%s); file %s -> %s%s\n", dir,
                   tool_commas(a, st.garbage), tool_bytes(b, st.garbage_bytes),
                   tool_bytes(x, st.file_bytes_before), tool_bytes(y, after),
                   compact ? " after compaction" : "");
        else
            printf("%s: freed %s objects (%s); file %s -> %s", dir,
                   tool_commas(a, st.freed), tool_bytes(b, st.freed_bytes),
                   tool_bytes(x, st.file_bytes_before), tool_bytes(y, after));
        if (!dry) {
            char r[32];
            printf("; %s live objects; %.2f s%s\n", tool_commas(r, st.reachable), secs,
                   st.interrupted ? "; interrupted, stopped at a clean point" : "");
        }
    }
    return st.interrupted ? TOOL_EXIT_INTERRUPTED : TOOL_EXIT_OK;
}
