/*
 * demo.c -- objstore at work: create a store, build a small graph with a
 * cycle, commit, close, reopen, show what survived, and let the cycle
 * collector reclaim the cycle; a young cycle freed by its own commit; the
 * allocator report.
 *
 *   build/release/examples/objstore-demo [STORE-DIR]
 *
 * Without an argument the store goes in a fresh temporary directory, which is
 * removed at the end.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "objstore.h"
#include "objstore_admin.h"

#define CHECK(call)                                                              \
    do {                                                                         \
        int rc_ = (call);                                                        \
        if (rc_) {                                                               \
            fprintf(stderr, "demo: %s: %s (%s)\n", #call, objstore_strerror(rc_), \
                    objstore_errmsg());                                          \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

static objstore_oid new_node(objstore_txn *t, uint32_t type, const char *text,
                             uint32_t nrefs)
{
    objstore_oid oid;
    CHECK(objstore_new(t, type, nrefs, strlen(text) + 1, &oid));
    CHECK(objstore_write(t, oid, 0, text, strlen(text) + 1));
    return oid;
}

static int print_root(void *arg, const char *name, objstore_oid oid)
{
    objstore_txn *t = arg;
    objstore_objinfo info;
    const void *payload;
    const char *type;
    CHECK(objstore_info(t, oid, &info));
    CHECK(objstore_get(t, oid, &payload, NULL));
    CHECK(objstore_type_name(t, info.type, &type));
    printf("  root %-8s -> oid %-8llu %-6s \"%s\"  refcount %llu, getsizeof %llu\n", name,
           (unsigned long long)oid, type, (const char *)payload,
           (unsigned long long)info.refcount, (unsigned long long)info.sizeof_);
    for (uint32_t i = 0; i < info.nrefs; i++) {
        objstore_oid child;
        CHECK(objstore_get_ref(t, oid, i, &child));
        if (!child)
            continue;
        objstore_objinfo ci;
        CHECK(objstore_info(t, child, &ci));
        CHECK(objstore_get(t, child, &payload, NULL));
        printf("      slot %u -> oid %-8llu \"%s\"  refcount %llu\n", i,
               (unsigned long long)child, (const char *)payload,
               (unsigned long long)ci.refcount);
    }
    return 0;
}

int main(int argc, char **argv)
{
    char tmpl[] = "/tmp/objstore-demo-XXXXXX";
    char dir[4096];
    bool temp = argc < 2;
    if (temp) {
        if (!mkdtemp(tmpl)) {
            perror("mkdtemp");
            return 1;
        }
        snprintf(dir, sizeof dir, "%s/store", tmpl);
    } else {
        snprintf(dir, sizeof dir, "%s", argv[1]);
    }

    printf("objstore demo: creating a store in %s\n", dir);
    CHECK(objstore_create(dir, NULL));
    objstore *s;
    CHECK(objstore_open(dir, NULL, &s));

    /* A list a -> b -> c, and a cycle x <-> y hanging off a root. */
    objstore_txn *t;
    CHECK(objstore_begin(s, 0, &t));
    uint32_t node, pair;
    CHECK(objstore_type_register(t, "node", &node));
    CHECK(objstore_type_register(t, "pair", &pair));
    objstore_oid a = new_node(t, node, "alpha", 1);
    objstore_oid b = new_node(t, node, "beta", 1);
    objstore_oid c = new_node(t, node, "gamma", 1);
    CHECK(objstore_set_ref(t, a, 0, b));
    CHECK(objstore_set_ref(t, b, 0, c));
    objstore_oid x = new_node(t, pair, "x", 2);
    objstore_oid y = new_node(t, pair, "y", 2);
    CHECK(objstore_set_ref(t, x, 0, y));
    CHECK(objstore_set_ref(t, y, 0, x));
    CHECK(objstore_set_ref(t, x, 1, c));   /* c is shared: count 2 */
    CHECK(objstore_root_set(t, "list", a));
    CHECK(objstore_root_set(t, "cycle", x));
    objstore_oid tmp = new_node(t, node, "temporary", 0);   /* never linked */
    (void)tmp;
    const char note[] = "built by the objstore demo";
    CHECK(objstore_meta_set(t, "note", 4, note, sizeof note));
    CHECK(objstore_commit(t));
    printf("committed: 7 objects created, 6 linked; the unlinked one was freed at commit\n");

    /* Drop the root of the cycle: x and y keep each other alive. */
    CHECK(objstore_begin(s, 0, &t));
    CHECK(objstore_root_del(t, "cycle"));
    CHECK(objstore_commit(t));
    printf("committed: root 'cycle' deleted (x <-> y now an unreachable cycle)\n");
    CHECK(objstore_close(s));
    printf("closed.\n\nreopening...\n");

    CHECK(objstore_open(dir, NULL, &s));
    CHECK(objstore_begin(s, OBJSTORE_TXN_RDONLY, &t));
    printf("roots:\n");
    CHECK(objstore_root_iter(t, print_root, t));
    const void *val;
    size_t vlen;
    CHECK(objstore_meta_get(t, "note", 4, &val, &vlen));
    printf("metadata 'note' = \"%.*s\"\n", (int)vlen, (const char *)val);
    CHECK(objstore_commit(t));

    objstore_verify_report r;
    CHECK(objstore_verify(s, &r));
    printf("\nverify: %llu objects, %llu references, %llu roots, %llu reachable, "
           "%llu unreachable (the x <-> y cycle), %llu problems\n",
           (unsigned long long)r.objects, (unsigned long long)r.references,
           (unsigned long long)r.roots, (unsigned long long)r.reachable,
           (unsigned long long)r.unreachable, (unsigned long long)r.total_problems);

    objstore_collect_stats cs;
    CHECK(objstore_collect(s, &cs));
    CHECK(objstore_verify(s, &r));
    printf("collect: %llu candidates, %llu objects scanned, %llu freed; verify now: "
           "%llu objects, %llu unreachable, %llu problems\n",
           (unsigned long long)cs.candidates, (unsigned long long)cs.scanned,
           (unsigned long long)cs.freed, (unsigned long long)r.objects,
           (unsigned long long)r.unreachable, (unsigned long long)r.total_problems);

    objstore_stats st;
    CHECK(objstore_get_stats(s, &st));
    printf("stats: heap file %llu bytes in %llu arenas (%llu free), %llu live objects "
           "in %llu bytes, fragmentation %.3f\n",
           (unsigned long long)st.heap_file_bytes, (unsigned long long)st.heap_arenas,
           (unsigned long long)st.heap_arenas_free, (unsigned long long)st.live_objects,
           (unsigned long long)st.live_bytes, st.fragmentation);
    printf("       store epoch %llu, %llu types, %llu roots, %llu cycle candidates, "
           "%llu commits and %llu checkpoints since open\n",
           (unsigned long long)st.epoch, (unsigned long long)st.types,
           (unsigned long long)st.roots, (unsigned long long)st.cycle_candidates,
           (unsigned long long)st.commits, (unsigned long long)st.checkpoints);

    /* A cycle that never had an outside reference: the commit that made it
     * finds it among its young objects (CPython's generation 0). */
    CHECK(objstore_begin(s, 0, &t));
    objstore_oid p = new_node(t, pair, "p", 2), q = new_node(t, pair, "q", 2);
    CHECK(objstore_set_ref(t, p, 0, q));
    CHECK(objstore_set_ref(t, q, 0, p));
    CHECK(objstore_commit(t));
    objstore_gc_kinds gs;
    CHECK(objstore_gc_get_stats(s, &gs));
    printf("young: p <-> q created and never linked; collections by kind since open: "
           "young %llu (collected %llu), candidates %llu, objstore_collect %llu (collected %llu)\n",
           (unsigned long long)gs.kind[OBJSTORE_GC_YOUNG].collections,
           (unsigned long long)gs.kind[OBJSTORE_GC_YOUNG].collected,
           (unsigned long long)gs.kind[OBJSTORE_GC_CANDIDATES].collections,
           (unsigned long long)gs.kind[OBJSTORE_GC_COLLECT].collections,
           (unsigned long long)gs.kind[OBJSTORE_GC_COLLECT].collected);

    printf("\nallocator (as sys._debugmallocstats()):\n");
    CHECK(objstore_print_mallocstats(s, stdout));
    CHECK(objstore_close(s));
    if (temp) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
        if (system(cmd) != 0)
            fprintf(stderr, "demo: could not remove %s\n", tmpl);
    }
    return r.total_problems ? 1 : 0;
}
