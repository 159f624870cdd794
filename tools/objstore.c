/*
 * objstore.c -- one command to look inside a store (objstore(1)):
 *
 *   objstore create DIR [--size N]
 *   objstore info STORE             identity, heap geometry, counts
 *   objstore stats STORE            the per-size-class table
 *   objstore roots STORE            objstore types STORE
 *   objstore meta STORE [KEY]       objstore show STORE OID|ROOT [--depth N]
 *   objstore dump STORE [-o FILE]   objstore load DIR [-i FILE]
 *   objstore backup STORE DEST
 *
 * Each subcommand has --help and --json.  The work is done by library calls
 * (objstore.h, objstore_admin.h); this file parses, prints and maps status
 * codes to exit codes (tool.h).
 *
 * Rules:
 *   O1 subcommands that only read open the store OBJSTORE_RDONLY (shared
 *      lock): they work beside other readers, never change a byte.
 *   O2 a damaged store is normal input: each subcommand runs in a child
 *      process, so that even a crash inside LMDB on a hostile meta/
 *      (ARCHITECTURE G3) becomes a message and exit code 4, not a core.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "objstore.h"
#include "objstore_admin.h"
#include "tool.h"

static const char *cmd = "objstore";
static bool json;

/* ---- errors and exit codes ---- */

static int exit_for(int rc)
{
    switch (rc) {
    case OBJSTORE_OK:
        return TOOL_EXIT_OK;
    case OBJSTORE_EBADMAGIC: case OBJSTORE_EVERSION: case OBJSTORE_ECHECKSUM:
    case OBJSTORE_EGEOMETRY: case OBJSTORE_ETRUNCATED: case OBJSTORE_ECORRUPT:
    case OBJSTORE_EBADOID: case OBJSTORE_EMETA: case OBJSTORE_EMISMATCH:
    case OBJSTORE_EREDO:
        return TOOL_EXIT_UNCORRECTED;   /* the store (or dump) is damaged */
    default:
        return TOOL_EXIT_OPERATIONAL;
    }
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "objstore %s: %s: %s: %s\n", cmd, what, objstore_strerror(rc),
            objstore_errmsg());
    return exit_for(rc);
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "objstore %s: %s (try 'objstore %s --help')\n", cmd, msg, cmd);
    return TOOL_EXIT_USAGE;
}

static int open_ro(const char *dir, objstore **s)
{
    objstore_options o = {.flags = OBJSTORE_RDONLY};
    return objstore_open(dir, &o, s);
}

/* Sets key to the bytes as a JSON string, or key_hex when they are not
 * UTF-8 (jansson refuses those). */
static void json_bytes(json_t *obj, const char *key, const void *p, size_t n)
{
    json_t *str = json_stringn(p, n);
    if (str) {
        json_object_set_new(obj, key, str);
        return;
    }
    char *hex = malloc(2 * n + 1), k[64];
    for (size_t i = 0; hex && i < n; i++)
        sprintf(hex + 2 * i, "%02x", ((const uint8_t *)p)[i]);
    if (hex)
        hex[2 * n] = 0;
    snprintf(k, sizeof k, "%s_hex", key);
    json_object_set_new(obj, k, json_string(hex ? hex : ""));
    free(hex);
}

/* Prints bytes for a terminal: printable ASCII as is, the rest as \xNN. */
static void print_name(FILE *f, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\')
            fputc(b[i], f);
        else
            fprintf(f, "\\x%02x", b[i]);
}

static bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return false;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    }
    if (*end == 'i' && end[1] == 'B')
        end += 2;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return false;
    *out = (uint64_t)v << shift;
    return true;
}

/* ---- option parsing shared by the subcommands ---- */

struct opts {
    uint64_t size, depth, bytes;
    const char *file;
    bool root;
};

/* Parses argv for the subcommand; positional arguments are left at
 * argv[optind..].  Returns -1 to go on, or an exit code. */
static int parse(int argc, char **argv, const char *usage, const char *accept,
                 struct opts *o)
{
    static const struct option longs[] = {
        {"help", no_argument, NULL, 'h'},   {"json", no_argument, NULL, 'j'},
        {"size", required_argument, NULL, 's'}, {"depth", required_argument, NULL, 'd'},
        {"bytes", required_argument, NULL, 'b'}, {"output", required_argument, NULL, 'o'},
        {"input", required_argument, NULL, 'i'}, {"root", no_argument, NULL, 'r'},
        {"version", no_argument, NULL, 'V'},    {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "hjs:d:b:o:i:rV", longs, NULL)) != -1) {
        if (c == 'h') {
            printf("%s", usage);
            return TOOL_EXIT_OK;
        }
        if (c == 'V') {
            tool_print_version("objstore");
            return TOOL_EXIT_OK;
        }
        if (c == '?' || !strchr(accept, c)) {
            char msg[80];
            snprintf(msg, sizeof msg, "unknown option '%s'", argv[optind - 1]);
            return usage_error(msg);
        }
        switch (c) {
        case 'j': json = true; break;
        case 'r': o->root = true; break;
        case 'o': case 'i': o->file = optarg; break;
        case 's': case 'd': case 'b': {
            uint64_t v;
            if (!parse_size(optarg, &v))
                return usage_error("a number is expected after --size, --depth, --bytes");
            *(c == 's' ? &o->size : c == 'd' ? &o->depth : &o->bytes) = v;
            break;
        }
        }
    }
    return -1;
}

/* ---- create ---- */

static const char create_usage[] =
    "usage: objstore create DIR [--size N] [--json]\n"
    "Creates a new, empty store in DIR (which must not exist, or be empty).\n"
    "  --size N   initial heap size in bytes (suffixes K, M, G; default 4M)\n"
    "  --json     print the result as JSON\n";

static int do_create(int argc, char **argv)
{
    struct opts o = {0};
    int x = parse(argc, argv, create_usage, "js", &o);
    if (x >= 0)
        return x;
    if (argc - optind != 1)
        return usage_error("expected one directory");
    const char *dir = argv[optind];
    objstore_options opts = {.initial_size = o.size};
    int rc = objstore_create(dir, &opts);
    if (rc)
        return fail(dir, rc);
    if (json) {
        json_t *j = json_object();
        json_object_set_new(j, "store", json_string(dir));
        json_object_set_new(j, "created", json_true());
        json_object_set_new(j, "format", json_integer(objstore_format_version()));
        return tool_json_print(j) ? TOOL_EXIT_OPERATIONAL : TOOL_EXIT_OK;
    }
    printf("created store %s (format %u)\n", dir, objstore_format_version());
    return TOOL_EXIT_OK;
}

/* ---- info ---- */

/* The start of a read-only subcommand over one store: its options (--json
 * only), the store's name, the store opened read-only.  Returns an exit
 * code, or -1 with *s open. */
static int open_one(int argc, char **argv, const char *usage, const char **dir, objstore **s)
{
    struct opts o = {0};
    int x = parse(argc, argv, usage, "j", &o);
    if (x >= 0)
        return x;
    if (argc - optind != 1)
        return usage_error("expected one store");
    *dir = argv[optind];
    int rc = open_ro(*dir, s);
    return rc ? fail(*dir, rc) : -1;
}

static const char info_usage[] =
    "usage: objstore info STORE [--json]\n"
    "Shows the store's format, uuid, generation, epoch, heap geometry, live\n"
    "objects and bytes, fragmentation, pending redo and the counts of roots,\n"
    "types and metadata.  Opens the store read-only.\n";

static void uuid_str(const uint8_t u[16], char out[37])
{
    int p = 0;
    for (int i = 0; i < 16; i++) {
        p += sprintf(out + p, "%02x", u[i]);
        if (i == 3 || i == 5 || i == 7 || i == 9)
            out[p++] = '-';
    }
    out[p] = 0;
}

static int do_info(int argc, char **argv)
{
    const char *dir;
    objstore *s;
    int rc, x = open_one(argc, argv, info_usage, &dir, &s);
    if (x >= 0)
        return x;
    objstore_store_info in;
    rc = objstore_get_store_info(s, &in);
    objstore_close(s);
    if (rc)
        return fail(dir, rc);
    char uuid[37];
    uuid_str(in.uuid, uuid);
    const objstore_stats *st = &in.stats;
    if (json) {
        json_t *j = json_pack(
            "{s:s, s:i, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I, "
            "s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
            "store", dir, "format", (json_int_t)in.format, "uuid", uuid,
            "generation", (json_int_t)in.generation, "epoch", (json_int_t)in.epoch,
            "heap_file_bytes", (json_int_t)st->heap_file_bytes,
            "arenas", (json_int_t)st->heap_arenas, "arenas_free", (json_int_t)st->heap_arenas_free,
            "pools", (json_int_t)st->heap_pools_total, "pools_free", (json_int_t)st->heap_pools_free,
            "live_objects", (json_int_t)st->live_objects, "live_bytes", (json_int_t)st->live_bytes,
            "fragmentation", st->fragmentation,
            "redo_records", (json_int_t)in.redo_records, "redo_bytes", (json_int_t)in.redo_bytes,
            "journal_entries", (json_int_t)in.journal_entries,
            "journal_bytes", (json_int_t)in.journal_bytes,
            "journal_file_bytes", (json_int_t)in.journal_file_bytes,
            "roots", (json_int_t)in.roots, "types", (json_int_t)in.types,
            "metadata", (json_int_t)in.metadata, "zero_count", (json_int_t)st->zct_entries,
            "cycle_candidates", (json_int_t)st->cycle_candidates,
            "meta_file_bytes", (json_int_t)in.meta_bytes);
        return tool_json_print(j) ? TOOL_EXIT_OPERATIONAL : TOOL_EXIT_OK;
    }
    char a[32], b[32], f[32];
    printf("store             %s\n", dir);
    printf("format            %u\n", in.format);
    printf("uuid              %s\n", uuid);
    printf("generation        %" PRIu64 " (heap.%" PRIu64 ")\n", in.generation, in.generation);
    printf("epoch             %s\n", tool_commas(a, in.epoch));
    printf("heap file         %s (%s bytes)\n", tool_bytes(a, st->heap_file_bytes),
           tool_commas(b, st->heap_file_bytes));
    printf("arenas            %s (%" PRIu64 " empty)\n", tool_commas(a, st->heap_arenas),
           st->heap_arenas_free);
    printf("pools             %s (%s free)\n", tool_commas(a, st->heap_pools_total),
           tool_commas(b, st->heap_pools_free));
    printf("live objects      %s\n", tool_commas(a, st->live_objects));
    printf("live bytes        %s (%s bytes)\n", tool_bytes(a, st->live_bytes),
           tool_commas(b, st->live_bytes));
    printf("fragmentation     %.1f%%\n", 100.0 * st->fragmentation);
    printf("redo pending      %s records, %s\n", tool_commas(a, in.redo_records),
           tool_bytes(b, in.redo_bytes));
    printf("journal pending   %s entries, %s (file %s)\n", tool_commas(a, in.journal_entries),
           tool_bytes(b, in.journal_bytes), tool_bytes(f, in.journal_file_bytes));
    printf("roots             %s\n", tool_commas(a, in.roots));
    printf("types             %s\n", tool_commas(a, in.types));
    printf("metadata          %s\n", tool_commas(a, in.metadata));
    printf("zero-count        %s\n", tool_commas(a, st->zct_entries));
    printf("cycle candidates  %s\n", tool_commas(a, st->cycle_candidates));
    printf("meta/ file        %s\n", tool_bytes(a, in.meta_bytes));
    return TOOL_EXIT_OK;
}

/* ---- stats ---- */

static const char stats_usage[] =
    "usage: objstore stats STORE [--json]\n"
    "Prints the heap's per-size-class table (as Python's sys._debugmallocstats):\n"
    "block size, pools, blocks in use and free blocks of each class in use.\n";

static int do_stats(int argc, char **argv)
{
    const char *dir;
    objstore *s;
    int rc, x = open_one(argc, argv, stats_usage, &dir, &s);
    if (x >= 0)
        return x;
    objstore_stats st;
    rc = objstore_get_stats(s, &st);
    objstore_close(s);
    if (rc)
        return fail(dir, rc);
    uint64_t pools = 0, used = 0, avail = 0;
    json_t *classes = json ? json_array() : NULL;
    if (!json) {
        printf("Small block threshold = 512, in 32 size classes.\n\n");
        printf("class   size   num pools   blocks in use  avail blocks\n");
        printf("-----   ----   ---------   -------------  ------------\n");
    }
    for (unsigned c = 0; c < 32; c++) {
        const __typeof__(st.size_class[0]) *k = &st.size_class[c];
        pools += k->pools;
        used += k->blocks_used;
        avail += k->blocks_free;
        if (json)
            json_array_append_new(classes, json_pack("{s:i, s:i, s:I, s:I, s:I}", "class", c,
                                                     "size", (int)k->block_size, "pools",
                                                     (json_int_t)k->pools, "blocks_in_use",
                                                     (json_int_t)k->blocks_used, "avail_blocks",
                                                     (json_int_t)k->blocks_free));
        else if (k->pools)
            printf("%5u %6u %11" PRIu64 " %15" PRIu64 " %13" PRIu64 "\n", c, k->block_size,
                   k->pools, k->blocks_used, k->blocks_free);
    }
    if (json) {
        json_t *j = json_pack("{s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "store",
                              dir, "classes", classes, "pools_in_classes", (json_int_t)pools,
                              "blocks_in_use", (json_int_t)used, "avail_blocks",
                              (json_int_t)avail, "arenas", (json_int_t)st.heap_arenas,
                              "arenas_free", (json_int_t)st.heap_arenas_free, "pools_total",
                              (json_int_t)st.heap_pools_total, "pools_free",
                              (json_int_t)st.heap_pools_free, "fragmentation",
                              st.fragmentation);
        return tool_json_print(j) ? TOOL_EXIT_OPERATIONAL : TOOL_EXIT_OK;
    }
    char a[32];
    printf("\n# arenas allocated total           = %15s\n", tool_commas(a, st.heap_arenas));
    printf("# arenas with no live block        = %15s\n", tool_commas(a, st.heap_arenas_free));
    printf("# pools in size classes            = %15s\n", tool_commas(a, pools));
    printf("# pools free                       = %15s\n", tool_commas(a, st.heap_pools_free));
    printf("# blocks in use                    = %15s\n", tool_commas(a, used));
    printf("# free blocks in used pools        = %15s\n", tool_commas(a, avail));
    printf("# live objects (with large ones)   = %15s\n", tool_commas(a, st.live_objects));
    printf("# bytes in live blocks             = %15s\n", tool_commas(a, st.live_bytes));
    printf("# fragmentation                    = %14.1f%%\n", 100.0 * st.fragmentation);
    return TOOL_EXIT_OK;
}

/* ---- roots, types ---- */

static const char roots_usage[] =
    "usage: objstore roots STORE [--json]\n"
    "Lists the roots in name order: name, oid, type, refcount, payload size.\n";

struct roots_ctx {
    objstore_txn *t;
    json_t *arr;
};

static int print_root(void *arg, const char *name, objstore_oid oid)
{
    struct roots_ctx *c = arg;
    objstore_objinfo info = {0};
    const char *tname = "";
    int rc = objstore_info(c->t, oid, &info);
    if (!rc && info.type && objstore_type_name(c->t, info.type, &tname))
        tname = "(unregistered type)";   /* a damaged header */
    if (c->arr) {
        json_t *r = json_object();
        json_bytes(r, "name", name, strlen(name));
        json_object_set_new(r, "oid", json_integer((json_int_t)oid));
        if (rc) {
            json_object_set_new(r, "error", json_string(objstore_errmsg()));
        } else {
            json_object_set_new(r, "type", json_string(tname));
            json_object_set_new(r, "type_id", json_integer(info.type));
            json_object_set_new(r, "refcount", json_integer((json_int_t)info.refcount));
            json_object_set_new(r, "size", json_integer((json_int_t)info.size));
        }
        json_array_append_new(c->arr, r);
        return 0;
    }
    print_name(stdout, name, strlen(name));
    if (rc)
        printf("\t%" PRIu64 "\t(not a live object: %s)\n", oid, objstore_strerror(rc));
    else
        printf("\t%" PRIu64 "\t%s\trefcount %" PRIu64 "\t%" PRIu64 " bytes\n", oid,
               *tname ? tname : "-", info.refcount, info.size);
    return 0;
}

static int do_roots(int argc, char **argv)
{
    const char *dir;
    objstore *s;
    int rc, x = open_one(argc, argv, roots_usage, &dir, &s);
    if (x >= 0)
        return x;
    struct roots_ctx c = {.arr = json ? json_array() : NULL};
    if (!(rc = objstore_begin(s, OBJSTORE_TXN_RDONLY, &c.t))) {
        rc = objstore_root_iter(c.t, print_root, &c);
        objstore_abort(c.t);
    }
    objstore_close(s);
    if (rc) {
        json_decref(c.arr);
        return fail(dir, rc);
    }
    return json && tool_json_print(c.arr) ? TOOL_EXIT_OPERATIONAL : TOOL_EXIT_OK;
}

static const char types_usage[] =
    "usage: objstore types STORE [--json]\n"
    "Lists the registered types: id and name.\n";

static int do_types(int argc, char **argv)
{
    const char *dir;
    objstore *s;
    int rc, x = open_one(argc, argv, types_usage, &dir, &s);
    if (x >= 0)
        return x;
    objstore_txn *t;
    json_t *arr = json ? json_array() : NULL;
    if (!(rc = objstore_begin(s, OBJSTORE_TXN_RDONLY, &t))) {
        const char *name;
        for (uint32_t id = 1; objstore_type_name(t, id, &name) == OBJSTORE_OK; id++) {
            if (arr) {
                json_t *e = json_pack("{s:i}", "id", (int)id);
                json_bytes(e, "name", name, strlen(name));
                json_array_append_new(arr, e);
            } else {
                printf("%u\t", id);
                print_name(stdout, name, strlen(name));
                putchar('\n');
            }
        }
        objstore_abort(t);
    }
    objstore_close(s);
    if (rc) {
        json_decref(arr);
        return fail(dir, rc);
    }
    return json && tool_json_print(arr) ? TOOL_EXIT_OPERATIONAL : TOOL_EXIT_OK;
}

/* ---- meta ---- */

static const char meta_usage[] =
    "usage: objstore meta STORE [KEY] [--json]\n"
    "Without KEY, lists the user metadata keys and their value sizes.  With KEY,\n"
    "writes that value's bytes to standard output (with --json: as a string, or\n"
    "as hex when it is not UTF-8).\n";

static int list_meta(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    json_t *arr = arg;
    if (arr) {
        json_t *e = json_object();
        json_bytes(e, "key", key, klen);
        json_object_set_new(e, "size", json_integer((json_int_t)vlen));
        json_array_append_new(arr, e);
    } else {
        print_name(stdout, key, klen);
        printf("\t%zu bytes\n", vlen);
    }
    return 0;
}

static int do_meta(int argc, char **argv)
{
    struct opts o = {0};
    int x = parse(argc, argv, meta_usage, "j", &o);
    if (x >= 0)
        return x;
    if (argc - optind != 1 && argc - optind != 2)
        return usage_error("expected a store and at most one key");
    const char *dir = argv[optind], *key = argc - optind == 2 ? argv[optind + 1] : NULL;
    objstore *s;
    int rc = open_ro(dir, &s);
    if (rc)
        return fail(dir, rc);
    objstore_txn *t;
    json_t *out = NULL;
    int code = TOOL_EXIT_OK;
    if (!(rc = objstore_begin(s, OBJSTORE_TXN_RDONLY, &t))) {
        if (!key) {
            out = json ? json_array() : NULL;
            rc = objstore_meta_iter(t, list_meta, out);
        } else {
            const void *val;
            size_t vlen;
            if (!(rc = objstore_meta_get(t, key, strlen(key), &val, &vlen))) {
                if (json) {
                    out = json_object();
                    json_bytes(out, "key", key, strlen(key));
                    json_object_set_new(out, "size", json_integer((json_int_t)vlen));
                    json_bytes(out, "value", val, vlen);
                } else if (fwrite(val, 1, vlen, stdout) != vlen) {
                    code = TOOL_EXIT_OPERATIONAL;
                }
            }
        }
        objstore_abort(t);
    }
    if (rc) {
        json_decref(out);
        code = fail(key ? key : dir, rc);
    }
    objstore_close(s);
    if (!rc && out && tool_json_print(out))
        code = TOOL_EXIT_OPERATIONAL;
    return code;
}

/* ---- show ---- */

static const char show_usage[] =
    "usage: objstore show STORE OID|ROOTNAME [--depth N] [--bytes N] [--root] [--json]\n"
    "Shows one object: type, refcount, getsizeof, slots and payload (hex and\n"
    "ASCII).  A number (decimal or 0x...) is an oid, anything else a root name;\n"
    "--root takes the argument as a root name always.\n"
    "  --depth N  also show the objects its slots point at, N levels deep\n"
    "             (each object once)\n"
    "  --bytes N  payload bytes to show (default 256; 0 = all)\n";

static void hexdump(const uint8_t *p, uint64_t n, int indent)
{
    for (uint64_t row = 0; row < n; row += 16) {
        printf("%*s%08" PRIx64 "  ", indent, "", row);
        for (unsigned i = 0; i < 16; i++) {
            if (row + i < n)
                printf("%02x ", p[row + i]);
            else
                printf("   ");
            if (i == 7)
                putchar(' ');
        }
        printf(" |");
        for (unsigned i = 0; i < 16 && row + i < n; i++)
            putchar(isprint(p[row + i]) ? p[row + i] : '.');
        printf("|\n");
    }
}

struct shown {
    objstore_oid oid;
    uint64_t depth;
};

static int show_one(objstore_txn *t, objstore_oid oid, uint64_t depth, uint64_t maxbytes,
                    json_t *arr, struct shown **stack, size_t *sp, size_t *cap,
                    objstore_oid **seen, size_t *nseen, size_t *seencap, uint64_t maxdepth)
{
    objstore_objinfo info;
    const void *payload;
    uint64_t size;
    int rc = objstore_info(t, oid, &info);
    if (!rc)
        rc = objstore_get(t, oid, &payload, &size);
    if (rc)
        return rc;
    const char *tname = "";
    if (info.type && objstore_type_name(t, info.type, &tname))
        tname = "(unregistered type)";   /* a damaged header */
    uint64_t shown = maxbytes && maxbytes < size ? maxbytes : size;
    int ind = (int)(depth > 20 ? 40 : depth * 2);
    json_t *slots = arr ? json_array() : NULL;
    if (!arr) {
        printf("%*sobject %" PRIu64 "\n", ind, "", oid);
        printf("%*s  type       %s (%u)\n", ind, "", *tname ? tname : "-", info.type);
        printf("%*s  refcount   %" PRIu64 "\n", ind, "", info.refcount);
        printf("%*s  getsizeof  %" PRIu64 " bytes\n", ind, "", info.sizeof_);
        printf("%*s  payload    %" PRIu64 " bytes\n", ind, "", size);
        printf("%*s  slots      %u\n", ind, "", info.nrefs);
    }
    for (uint32_t j = 0; j < info.nrefs; j++) {
        objstore_oid to;
        if ((rc = objstore_get_ref(t, oid, j, &to))) {
            json_decref(slots);
            return rc;
        }
        if (arr)
            json_array_append_new(slots, to ? json_integer((json_int_t)to) : json_null());
        else
            printf(to ? "%*s    [%u] -> %" PRIu64 "\n" : "%*s    [%u] -> null\n", ind, "", j,
                   to);
        if (!to || depth >= maxdepth)
            continue;
        bool already = false;
        for (size_t k = 0; k < *nseen && !already; k++)
            already = (*seen)[k] == to;
        if (already)
            continue;
        if (*nseen == *seencap) {
            *seencap = *seencap ? *seencap * 2 : 64;
            *seen = realloc(*seen, *seencap * sizeof **seen);
        }
        if (*sp == *cap) {
            *cap = *cap ? *cap * 2 : 64;
            *stack = realloc(*stack, *cap * sizeof **stack);
        }
        if (!*seen || !*stack) {
            json_decref(slots);
            return OBJSTORE_ENOMEM;
        }
        (*seen)[(*nseen)++] = to;
        (*stack)[(*sp)++] = (struct shown){to, depth + 1};
    }
    if (arr) {
        json_t *o = json_pack("{s:I, s:I, s:i, s:I, s:I, s:I, s:o}", "oid", (json_int_t)oid,
                              "depth", (json_int_t)depth, "type_id", (int)info.type,
                              "refcount", (json_int_t)info.refcount, "getsizeof",
                              (json_int_t)info.sizeof_, "size", (json_int_t)size, "slots",
                              slots);
        json_object_set_new(o, "type", json_string(tname));
        char *hex = malloc(2 * shown + 1);
        for (uint64_t i = 0; hex && i < shown; i++)
            sprintf(hex + 2 * i, "%02x", ((const uint8_t *)payload)[i]);
        if (hex)
            hex[2 * shown] = 0;
        json_object_set_new(o, "payload_hex", json_string(hex ? hex : ""));
        json_object_set_new(o, "payload_truncated", json_boolean(shown < size));
        free(hex);
        json_array_append_new(arr, o);
    } else if (size) {
        printf("%*s  payload:\n", ind, "");
        hexdump(payload, shown, ind + 4);
        if (shown < size)
            printf("%*s    ... %" PRIu64 " more bytes (--bytes 0 shows all)\n", ind, "",
                   size - shown);
    }
    return OBJSTORE_OK;
}

static int do_show(int argc, char **argv)
{
    struct opts o = {.bytes = 256};
    int x = parse(argc, argv, show_usage, "jdbr", &o);
    if (x >= 0)
        return x;
    if (argc - optind != 2)
        return usage_error("expected a store and an oid or root name");
    const char *dir = argv[optind], *what = argv[optind + 1];
    objstore *s;
    int rc = open_ro(dir, &s);
    if (rc)
        return fail(dir, rc);
    objstore_txn *t;
    if ((rc = objstore_begin(s, OBJSTORE_TXN_RDONLY, &t))) {
        objstore_close(s);
        return fail(dir, rc);
    }
    objstore_oid oid = 0;
    char *end;
    errno = 0;
    bool hex = what[0] == '0' && (what[1] == 'x' || what[1] == 'X');
    unsigned long long v = strtoull(what, &end, hex ? 16 : 10);   /* never octal */
    if (!o.root && *what >= '0' && *what <= '9' && !*end && !errno)
        oid = v;
    else
        rc = objstore_root_get(t, what, &oid);
    json_t *arr = json ? json_array() : NULL;
    struct shown *stack = NULL;
    objstore_oid *seen = NULL;
    size_t sp = 0, cap = 0, nseen = 0, seencap = 0;
    bool named_bad = rc != OBJSTORE_OK;   /* the argument itself names nothing */
    if (!rc) {
        /* Depth-first with an explicit stack; each object once. */
        rc = show_one(t, oid, 0, o.bytes, arr, &stack, &sp, &cap, &seen, &nseen, &seencap,
                      o.depth);
        named_bad = rc != OBJSTORE_OK;
        while (!rc && sp) {
            struct shown e = stack[--sp];
            rc = show_one(t, e.oid, e.depth, o.bytes, arr, &stack, &sp, &cap, &seen, &nseen,
                          &seencap, o.depth);
        }
    }
    char msg[512];
    snprintf(msg, sizeof msg, "%s", objstore_errmsg());
    objstore_abort(t);
    objstore_close(s);
    free(stack);
    free(seen);
    if (rc) {
        json_decref(arr);
        fprintf(stderr, "objstore show: %s: %s: %s\n", what, objstore_strerror(rc), msg);
        /* A slot of a shown object naming no object is damage; an oid or
         * root name on the command line that names none is not. */
        return named_bad && (rc == OBJSTORE_ENOTFOUND || rc == OBJSTORE_EBADOID)
                   ? TOOL_EXIT_OPERATIONAL
                   : exit_for(rc);
    }
    return json && tool_json_print(arr) ? TOOL_EXIT_OPERATIONAL : TOOL_EXIT_OK;
}

/* ---- dump, load ---- */

static const char dump_usage[] =
    "usage: objstore dump STORE [-o FILE] [--json]\n"
    "Writes the store's whole logical content (types, metadata, roots, every\n"
    "object reachable from the roots) in objstore's portable text dump format\n"
    "(docs/FORMAT.md) to standard output, or to FILE (which must not exist).\n"
    "A summary goes to standard error; with -o FILE and --json, as JSON to\n"
    "standard output.\n";

static json_t *dump_json(const objstore_dump_stats *st)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "objects", (json_int_t)st->objects,
                     "payload_bytes", (json_int_t)st->payload_bytes, "references",
                     (json_int_t)st->references, "roots", (json_int_t)st->roots, "types",
                     (json_int_t)st->types, "metadata", (json_int_t)st->metadata, "epoch",
                     (json_int_t)st->epoch);
}

static int do_dump(int argc, char **argv)
{
    struct opts o = {0};
    int x = parse(argc, argv, dump_usage, "jo", &o);
    if (x >= 0)
        return x;
    if (argc - optind != 1)
        return usage_error("expected one store");
    if (json && !o.file)
        return usage_error("--json needs -o FILE (the dump itself goes to standard output)");
    const char *dir = argv[optind];
    FILE *out = stdout;
    if (o.file && !(out = fopen(o.file, "wx"))) {
        fprintf(stderr, "objstore dump: %s: %s\n", o.file, strerror(errno));
        return TOOL_EXIT_OPERATIONAL;
    }
    objstore *s;
    int rc = open_ro(dir, &s);
    objstore_dump_stats st = {0};
    if (!rc) {
        rc = objstore_dump(s, out, &st);
        char msg[512];
        snprintf(msg, sizeof msg, "%s", objstore_errmsg());
        objstore_close(s);
        if (rc)
            fprintf(stderr, "objstore dump: %s: %s: %s\n", dir, objstore_strerror(rc), msg);
    } else {
        fail(dir, rc);
    }
    if (o.file && fclose(out) != 0 && !rc) {
        fprintf(stderr, "objstore dump: %s: %s\n", o.file, strerror(errno));
        rc = OBJSTORE_EIO;
    }
    if (rc) {
        if (o.file)
            unlink(o.file);   /* no half dump left behind under the given name */
        return exit_for(rc);
    }
    if (json)
        return tool_json_print(dump_json(&st)) ? TOOL_EXIT_OPERATIONAL : TOOL_EXIT_OK;
    char a[32], b[32];
    fprintf(stderr, "dumped %s objects (%s of payload), %" PRIu64 " roots, %" PRIu64
            " types, %" PRIu64 " metadata entries, epoch %" PRIu64 "\n",
            tool_commas(a, st.objects), tool_bytes(b, st.payload_bytes), st.roots, st.types,
            st.metadata, st.epoch);
    return TOOL_EXIT_OK;
}

static const char load_usage[] =
    "usage: objstore load DIR [-i FILE] [--size N] [--json]\n"
    "Creates a new store in DIR and loads a dump (objstore dump) from standard\n"
    "input, or FILE, in one transaction: all of it or, on error, nothing (DIR\n"
    "is then an empty store).\n";

static int do_load(int argc, char **argv)
{
    struct opts o = {0};
    int x = parse(argc, argv, load_usage, "jis", &o);
    if (x >= 0)
        return x;
    if (argc - optind != 1)
        return usage_error("expected one directory");
    const char *dir = argv[optind];
    FILE *in = stdin;
    if (o.file && !(in = fopen(o.file, "r"))) {
        fprintf(stderr, "objstore load: %s: %s\n", o.file, strerror(errno));
        return TOOL_EXIT_OPERATIONAL;
    }
    objstore_options opts = {.initial_size = o.size};
    objstore_dump_stats st;
    int rc = objstore_load(dir, in, &opts, &st);
    if (o.file)
        fclose(in);
    if (rc) {
        int code = fail(dir, rc);
        return rc == OBJSTORE_EINVAL ? TOOL_EXIT_UNCORRECTED : code;   /* a bad dump */
    }
    if (json)
        return tool_json_print(dump_json(&st)) ? TOOL_EXIT_OPERATIONAL : TOOL_EXIT_OK;
    char a[32], b[32];
    printf("loaded %s objects (%s of payload), %" PRIu64 " roots, %" PRIu64 " types, %" PRIu64
           " metadata entries into %s\n",
           tool_commas(a, st.objects), tool_bytes(b, st.payload_bytes), st.roots, st.types,
           st.metadata, dir);
    return TOOL_EXIT_OK;
}

/* ---- backup ---- */

static const char backup_usage[] =
    "usage: objstore backup STORE DEST [--json]\n"
    "Copies the store, as of one committed epoch, into DEST (a new directory, or\n"
    "an empty one) and prints that epoch.  The store is opened read-only: this\n"
    "works beside other read-only users, but not while another process has the\n"
    "store open for writing (a program can back up its own open store with\n"
    "objstore_backup()).\n";

static int do_backup(int argc, char **argv)
{
    struct opts o = {0};
    int x = parse(argc, argv, backup_usage, "j", &o);
    if (x >= 0)
        return x;
    if (argc - optind != 2)
        return usage_error("expected a store and a destination");
    const char *dir = argv[optind], *dest = argv[optind + 1];
    objstore *s;
    int rc = open_ro(dir, &s);
    if (rc)
        return fail(dir, rc);
    uint64_t epoch;
    rc = objstore_backup(s, dest, &epoch);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", objstore_errmsg());
    objstore_close(s);
    if (rc) {
        fprintf(stderr, "objstore backup: %s: %s: %s\n", dest, objstore_strerror(rc), msg);
        return exit_for(rc);
    }
    if (json) {
        json_t *j = json_pack("{s:s, s:s, s:I}", "store", dir, "backup", dest, "epoch",
                              (json_int_t)epoch);
        return tool_json_print(j) ? TOOL_EXIT_OPERATIONAL : TOOL_EXIT_OK;
    }
    printf("backed up %s to %s at epoch %" PRIu64 "\n", dir, dest, epoch);
    return TOOL_EXIT_OK;
}

/* ---- main ---- */

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *what;
} commands[] = {
    {"create", do_create, "create an empty store"},
    {"info", do_info, "format, identity, heap geometry and counts"},
    {"stats", do_stats, "the per-size-class table"},
    {"roots", do_roots, "list the roots"},
    {"types", do_types, "list the registered types"},
    {"meta", do_meta, "list user metadata, or print one value"},
    {"show", do_show, "show an object (and what it points at)"},
    {"dump", do_dump, "write the logical content as portable text"},
    {"load", do_load, "create a store from a dump"},
    {"backup", do_backup, "copy a store as of one committed epoch"},
};

static void main_usage(FILE *f)
{
    fprintf(f, "usage: objstore COMMAND [ARGS] [--json] [--help]\n"
               "       objstore --version\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].what);
    fprintf(f, "\nExit codes: 0 ok, 4 the store (or dump) is damaged, 8 operational error\n"
               "(no such store, locked, I/O), 16 usage.  See objstore(1).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        main_usage(stderr);
        return TOOL_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        tool_print_version("objstore");
        return TOOL_EXIT_OK;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        main_usage(stdout);
        return TOOL_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        if (strcmp(argv[1], commands[i].name))
            continue;
        cmd = commands[i].name;
        fflush(NULL);
        /* O2: the subcommand runs in a child; a crash there is reported. */
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "objstore: fork: %s\n", strerror(errno));
            return TOOL_EXIT_OPERATIONAL;
        }
        if (pid == 0) {
            int code = commands[i].fn(argc - 1, argv + 1);
            if (fflush(stdout) != 0 && code == TOOL_EXIT_OK)
                code = TOOL_EXIT_OPERATIONAL;
            exit(code);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0)
            if (errno != EINTR) {
                fprintf(stderr, "objstore: waitpid: %s\n", strerror(errno));
                return TOOL_EXIT_OPERATIONAL;
            }
        if (WIFEXITED(st))
            return WEXITSTATUS(st);
        fprintf(stderr, "objstore %s: stopped by signal %d (%s) while reading the store: "
                        "the store is damaged in a way the library could not report\n",
                cmd, WTERMSIG(st), strsignal(WTERMSIG(st)));
        return WTERMSIG(st) == SIGINT ? TOOL_EXIT_INTERRUPTED : TOOL_EXIT_UNCORRECTED;
    }
    fprintf(stderr, "objstore: unknown command '%s'\n", argv[1]);
    main_usage(stderr);
    return TOOL_EXIT_USAGE;
}
