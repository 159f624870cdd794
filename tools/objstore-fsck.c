/*
 * objstore-fsck -- checks a store and, when asked, repairs it, as e2fsck does
 * a file system.  A thin command line over objstore_check (objstore_admin.h):
 * the passes, the findings and the repairs are the library's; this file
 * parses options, prints and picks the exit code.  docs/TOOLS.md and
 * objstore-fsck(8) describe every flag, pass, kind and exit code.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "objstore_admin.h"
#include "tool.h"

#define LIST_MAX 100        /* -v lists this many findings, groups, repairs */
#define JSON_LIST_MAX 10000 /* --json lists this many */

static const char *prog = "objstore-fsck";

struct out {
    bool verbose, json;
    tool_progress bar;
    uint64_t nfind, ngroup, nrepair, nleft;
    json_t *findings, *groups, *repairs;
};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: %s [options] STORE\n"
            "Checks the store in directory STORE; by default changes nothing.\n"
            "\n"
            "  -n                 check only, read-only (the default)\n"
            "  -p, --preen        fix only what is safe without asking: counts and\n"
            "                     stale zero-count and candidate entries\n"
            "  -y, --repair       fix everything that can be fixed\n"
            "      --lost-found   with -y: link each unreachable group under a root\n"
            "                     lost+found/<oid>\n"
            "      --rebuild-meta with -y: when meta/ is missing or unreadable, build a\n"
            "                     new one from the heap alone (the old one is kept)\n"
            "      --discard-redo-from=EPOCH\n"
            "                     with -y: drop the damaged redo record of EPOCH (or an\n"
            "                     earlier epoch) and every later one\n"
            "  -v, --verbose      list each problem (the first %d), group and repair\n"
            "      --json         print one JSON document instead of words\n"
            "      --progress     show a progress bar on stderr (default: on a terminal)\n"
            "      --no-progress  never show it\n"
            "  -h, --help         this help\n"
            "  -V, --version      the version\n"
            "\n"
            "Exit: 0 no problems, 1 problems found and all corrected, 4 problems left\n"
            "uncorrected, 8 operational error (cannot open, locked, I/O), 16 usage error,\n"
            "32 interrupted.\n",
            prog, LIST_MAX);
}

static void on_pass(void *arg, int pass, const char *title)
{
    struct out *o = arg;
    if (o->json)
        return;
    tool_progress_done(&o->bar);
    printf("Pass %d: %s\n", pass, title);
    fflush(stdout);
}

static void on_finding(void *arg, const objstore_finding *f)
{
    struct out *o = arg;
    if (f->after_repair)
        o->nleft++;
    else
        o->nfind++;
    uint64_t n = f->after_repair ? o->nleft : o->nfind;
    if (o->json) {
        if (n <= JSON_LIST_MAX)
            json_array_append_new(o->findings,
                                  json_pack("{s:s, s:i, s:I, s:I, s:s, s:s, s:b}", "kind",
                                            objstore_check_kind_name(f->kind), "pass", f->pass,
                                            "oid", (json_int_t)f->oid, "value",
                                            (json_int_t)f->value, "text", f->text, "fix",
                                            f->fixable == 2   ? "repair"
                                            : f->fixable == 1 ? "preen"
                                                              : "none",
                                            "after_repair", f->after_repair));
        return;
    }
    if (o->verbose || f->pass <= 2 || n <= 10) {
        if (n > LIST_MAX)
            return;
        tool_progress_done(&o->bar);
        printf("  %s%s\n", f->after_repair ? "left: " : "", f->text);
    } else if (n == 11) {
        printf("  ... (-v lists up to %d)\n", LIST_MAX);
    }
}

static void on_group(void *arg, const objstore_group *g)
{
    struct out *o = arg;
    o->ngroup++;
    json_t *types = NULL;
    if (o->json) {
        if (o->ngroup > JSON_LIST_MAX)
            return;
        types = json_array();
        for (uint32_t i = 0; i < g->ntypes; i++)
            json_array_append_new(types, json_integer(g->types[i]));
        json_array_append_new(o->groups, json_pack("{s:I, s:I, s:I, s:o}", "objects",
                                                   (json_int_t)g->objects, "bytes",
                                                   (json_int_t)g->bytes, "oid",
                                                   (json_int_t)g->oid, "types", types));
        return;
    }
    if (!o->verbose || o->ngroup > LIST_MAX)
        return;
    char a[32], b[32];
    tool_progress_done(&o->bar);
    printf("  unreachable group: %s object%s, %s, look at %" PRIu64 ", type ids",
           tool_commas(a, g->objects), g->objects == 1 ? "" : "s", tool_bytes(b, g->bytes),
           g->oid);
    for (uint32_t i = 0; i < g->ntypes; i++)
        printf(" %u", g->types[i]);
    printf("\n");
}

static void on_repair(void *arg, const objstore_repair_action *a)
{
    struct out *o = arg;
    o->nrepair++;
    if (o->json) {
        if (o->nrepair <= JSON_LIST_MAX)
            json_array_append_new(o->repairs,
                                  json_pack("{s:s, s:I, s:s}", "kind",
                                            objstore_check_kind_name(a->kind), "oid",
                                            (json_int_t)a->oid, "text", a->text));
        return;
    }
    if (o->verbose ? o->nrepair <= LIST_MAX : o->nrepair <= 10) {
        tool_progress_done(&o->bar);
        printf("  fixed: %s\n", a->text);
    } else if (!o->verbose && o->nrepair == 11) {
        printf("  ... (-v lists up to %d)\n", LIST_MAX);
    }
}

static int on_progress(void *arg, int pass, uint64_t done, uint64_t total)
{
    struct out *o = arg;
    char label[32];
    snprintf(label, sizeof label, "Pass %d", pass);
    tool_progress_update(&o->bar, label, done, total);
    return tool_interrupted != 0;
}

static json_t *kinds_json(const uint64_t *v)
{
    json_t *j = json_object();
    for (int k = 0; k < OBJSTORE_C_NKINDS; k++)
        if (v[k])
            json_object_set_new(j, objstore_check_kind_name(k), json_integer((json_int_t)v[k]));
    return j;
}

static int exit_code(int rc, const objstore_check_report *r)
{
    if (rc)
        return TOOL_EXIT_OPERATIONAL;
    if (r->interrupted)
        return TOOL_EXIT_INTERRUPTED;
    if (r->problems_left)
        return TOOL_EXIT_UNCORRECTED;
    if (r->problems || r->repaired)
        return TOOL_EXIT_FIXED;
    return TOOL_EXIT_OK;
}

int main(int argc, char **argv)
{
    enum { O_JSON = 256, O_PROGRESS, O_NOPROGRESS, O_LOSTFOUND, O_DISCARD, O_REBUILDMETA };
    static const struct option longs[] = {
        {"repair", no_argument, NULL, 'y'},
        {"preen", no_argument, NULL, 'p'},
        {"verbose", no_argument, NULL, 'v'},
        {"json", no_argument, NULL, O_JSON},
        {"progress", no_argument, NULL, O_PROGRESS},
        {"no-progress", no_argument, NULL, O_NOPROGRESS},
        {"lost-found", no_argument, NULL, O_LOSTFOUND},
        {"rebuild-meta", no_argument, NULL, O_REBUILDMETA},
        {"discard-redo-from", required_argument, NULL, O_DISCARD},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {0, 0, 0, 0},
    };
    objstore_check_opts opts = {0};
    struct out o = {0};
    int progress = -1, nmodes = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "nypvhV", longs, NULL)) != -1) {
        switch (c) {
        case 'n': nmodes++; opts.mode = OBJSTORE_CHECK_READONLY; break;
        case 'y': nmodes++; opts.mode = OBJSTORE_CHECK_REPAIR; break;
        case 'p': nmodes++; opts.mode = OBJSTORE_CHECK_PREEN; break;
        case 'v': o.verbose = true; break;
        case O_JSON: o.json = true; break;
        case O_PROGRESS: progress = 1; break;
        case O_NOPROGRESS: progress = 0; break;
        case O_LOSTFOUND: opts.flags |= OBJSTORE_CHECK_LOST_FOUND; break;
        case O_REBUILDMETA: opts.flags |= OBJSTORE_CHECK_REBUILD_META; break;
        case O_DISCARD: {
            char *end;
            opts.discard_redo_from = strtoull(optarg, &end, 10);
            if (!*optarg || *end || !opts.discard_redo_from) {
                fprintf(stderr, "%s: --discard-redo-from wants an epoch (a number above 0), "
                        "not '%s'\n", prog, optarg);
                return TOOL_EXIT_USAGE;
            }
            break;
        }
        case 'h': usage(stdout); return TOOL_EXIT_OK;
        case 'V': tool_print_version(prog); return TOOL_EXIT_OK;
        default:
            fprintf(stderr, "%s: unknown option '%s'\n", prog, argv[optind - 1]);
            usage(stderr);
            return TOOL_EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "%s: %s\n", prog, optind >= argc ? "which store? (STORE missing)"
                                                          : "one STORE only");
        usage(stderr);
        return TOOL_EXIT_USAGE;
    }
    if (nmodes > 1) {
        fprintf(stderr, "%s: -n, -p and -y exclude each other\n", prog);
        return TOOL_EXIT_USAGE;
    }
    if ((opts.flags || opts.discard_redo_from) && opts.mode != OBJSTORE_CHECK_REPAIR) {
        fprintf(stderr, "%s: --lost-found, --rebuild-meta and --discard-redo-from need -y\n",
                prog);
        return TOOL_EXIT_USAGE;
    }
    const char *store = argv[optind];
    tool_catch_sigint();
    tool_progress_init(&o.bar, o.json ? (progress > 0 ? 1 : 0) : progress);
    if (o.json) {
        o.findings = json_array();
        o.groups = json_array();
        o.repairs = json_array();
    }
    opts.arg = &o;
    opts.on_pass = on_pass;
    opts.on_finding = on_finding;
    opts.on_group = on_group;
    opts.on_repair = on_repair;
    opts.on_progress = on_progress;
    objstore_check_report r;
    int rc = objstore_check(store, &opts, &r);
    tool_progress_done(&o.bar);
    int code = exit_code(rc, &r);
    static const char *modes[] = {"check", "preen", "repair"};

    if (o.json) {
        json_t *j = json_pack(
            "{s:s, s:s, s:i, s:b, s:i, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
            "s:I, s:I, s:I, s:I}, s:o, s:o, s:I, s:I, s:I, s:b, s:I}",
            "store", store, "mode", modes[opts.mode], "exit", code, "interrupted",
            r.interrupted, "passes_done", r.passes_done, "summary", "objects",
            (json_int_t)r.objects, "bytes", (json_int_t)r.bytes, "heap_bytes",
            (json_int_t)r.heap_bytes, "free_bytes", (json_int_t)r.free_bytes, "references",
            (json_int_t)r.references, "roots", (json_int_t)r.roots, "types",
            (json_int_t)r.types, "reachable", (json_int_t)r.reachable, "groups",
            (json_int_t)r.groups, "group_objects", (json_int_t)r.group_objects, "group_bytes",
            (json_int_t)r.group_bytes, "epoch", (json_int_t)r.epoch, "redo_records",
            (json_int_t)r.redo_records, "redo_bytes", (json_int_t)r.redo_bytes, "found",
            kinds_json(r.found), "left", kinds_json(r.left), "problems",
            (json_int_t)r.problems, "problems_left", (json_int_t)r.problems_left, "repairs_made",
            (json_int_t)r.repairs, "repaired", r.repaired, "lost_commits",
            (json_int_t)r.lost_commits);
        if (!j)
            return TOOL_EXIT_OPERATIONAL;
        if (rc)
            json_object_set_new(j, "error", json_string(objstore_errmsg()));
        json_object_set_new(j, "findings", o.findings);
        json_object_set_new(j, "groups", o.groups);
        json_object_set_new(j, "repairs", o.repairs);
        if (tool_json_print(j))
            return TOOL_EXIT_OPERATIONAL;
        return code;
    }

    if (rc) {
        fprintf(stderr, "%s: %s\n", prog, objstore_errmsg());
        return code;
    }
    if (r.interrupted) {
        printf("%s: interrupted; %s\n", store,
               r.repaired ? "the repair was committed whole before the interruption"
                          : "nothing was changed");
        return code;
    }
    char a[32], b[32], cbuf[32], d[32], e[32], f[32], g[32];
    if (r.problems) {
        printf("Problems by kind:\n");
        for (int k = 0; k < OBJSTORE_C_NKINDS; k++)
            if (r.found[k])
                printf("  %-16s %s found, %s left\n", objstore_check_kind_name(k),
                       tool_commas(a, r.found[k]), tool_commas(b, r.left[k]));
    }
    if (r.passes_done < 6)
        printf("Passes %d to 6 did not run: the problems above must be fixed first.\n",
               r.passes_done + 1);
    if (r.redo_records && opts.mode == OBJSTORE_CHECK_READONLY)
        printf("%s redo record%s pending (applied in RAM for this check; the next "
               "read-write open replays them).\n",
               tool_commas(a, r.redo_records), r.redo_records == 1 ? "" : "s");
    if (r.repaired || r.lost_commits || r.repairs)
        printf("%s repair%s made.\n", tool_commas(a, r.repairs), r.repairs == 1 ? "" : "s");
    unsigned pct = r.heap_bytes ? (unsigned)(100.0 * (double)r.free_bytes /
                                             (double)r.heap_bytes + 0.5)
                                : 0;
    printf("%s: %s objects, %s roots, %s types, %s heap (%u%% free), %s unreachable "
           "group%s (%s objects, %s), ",
           store, tool_commas(a, r.objects), tool_commas(b, r.roots),
           tool_commas(cbuf, r.types), tool_bytes(d, r.heap_bytes), pct,
           tool_commas(e, r.groups), r.groups == 1 ? "" : "s",
           tool_commas(f, r.group_objects), tool_bytes(g, r.group_bytes));
    if (opts.mode == OBJSTORE_CHECK_READONLY || !r.problems)
        printf("%s problem%s\n", tool_commas(a, r.problems), r.problems == 1 ? "" : "s");
    else
        printf("%s problem%s, %s corrected, %s left\n", tool_commas(a, r.problems),
               r.problems == 1 ? "" : "s",
               tool_commas(b, r.problems > r.problems_left ? r.problems - r.problems_left : 0),
               tool_commas(cbuf, r.problems_left));
    return code;
}
