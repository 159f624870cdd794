/*
 * test_compact.c -- compaction into a new heap generation, and objstore-gc.
 *
 * What a user relies on: the content is the same afterwards (same digest,
 * verify clean), the file shrinks (C2's bound: at most 1.15 x live bytes +
 * 4 MiB), every root and slot names the moved objects, the old -> new map is
 * complete; a crash at any step leaves the old store or the new one, each
 * opening clean with the same digest; a full disk is a clear error with the
 * old store intact; and the tool refuses a damaged store (exit 4) without
 * changing it.
 */
#include "test_store.h"

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>


/* Heap files in the store directory. */
static int heap_files(const char *dir, uint64_t *gen)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "heap.", 5)) {
            n++;
            if (gen)
                *gen = strtoull(e->d_name + 5, NULL, 10);
        }
    closedir(d);
    return n;
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

/* n objects of 16..256 bytes in W1's sizes under root "all" (an array
 * object of n slots), linked in a random tree too; then a fraction
 * `drop_pct` of them is unlinked at random (and so freed). */
static void fragmented(objstore *s, uint64_t seed, uint32_t n, unsigned drop_pct)
{
    objstore_txn *t = wbegin(s);
    uint32_t ty;
    OK(objstore_type_register(t, "item", &ty));
    objstore_oid all = new_obj(t, 0, n, 0);
    root_set(t, "all", all);
    objstore_oid prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t r = ts_mix64(seed + i);
        uint64_t size = 16 + (r % 241);
        objstore_oid o;
        MUST(objstore_new(t, ty, 1, size - 8 > 0 ? size - 8 : 8, &o) == 0, "new");
        uint8_t *p;
        uint64_t len;
        MUST(objstore_edit(t, o, (void **)&p, &len) == 0, "edit");
        pattern_into(p, len, r);
        MUST(objstore_set_ref(t, all, i, o) == 0, "link");
        if (prev && (r >> 40) % 3 == 0)
            MUST(objstore_set_ref(t, o, 0, prev) == 0, "link");
        prev = o;
    }
    commit(t);
    t = wbegin(s);
    for (uint32_t i = 0; i < n; i++)
        if (ts_mix64(seed * 3 + i) % 100 < drop_pct)
            MUST(objstore_set_ref(t, all, i, 0) == 0, "unlink");
    commit(t);
}


/* n two-object garbage cycles (never referenced from outside). */
static void make_cycle_garbage(objstore *s, int n)
{
    objstore_txn *t = wbegin(s);
    for (int i = 0; i < n; i++) {
        objstore_oid a = new_obj(t, 0, 1, 24), b = new_obj(t, 0, 1, 24);
        set_ref(t, a, 0, b);
        set_ref(t, b, 0, a);
    }
    commit(t);
}

struct pairs {
    uint64_t *old, *nw;
    size_t n, cap;
};

static void on_map(void *arg, objstore_oid old, objstore_oid nw)
{
    struct pairs *p = arg;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 1024;
        p->old = realloc(p->old, p->cap * sizeof *p->old);
        p->nw = realloc(p->nw, p->cap * sizeof *p->nw);
    }
    p->old[p->n] = old;
    p->nw[p->n++] = nw;
}

START_TEST(test_compaction_keeps_the_content_and_shrinks_a_mostly_freed_heap)
{
    uint32_t n = ts_under_sanitizer() ? 30000 : 200000;
    objstore *s = new_store(&manual);
    fragmented(s, 1, n, 90);
    objstore_verify_report r0 = verify_clean(s);
    dig_t before = logical_digest(s);
    char *heap1 = ts_path(g_store, "heap.1");
    uint64_t size0 = file_size(heap1);

    objstore_gc_stats st;
    OK(objstore_compact(s, NULL, NULL, NULL, &st));
    ck_assert_uint_eq(st.generation, 2);
    ck_assert_uint_eq(st.reachable, r0.reachable);
    ck_assert(!path_exists(heap1));
    uint64_t gen = 0;
    ck_assert_int_eq(heap_files(g_store, &gen), 1);
    ck_assert_uint_eq(gen, 2);
    char *heap2 = ts_path(g_store, "heap.2");
    uint64_t size1 = file_size(heap2);
    objstore_stats ss = get_stats(s);
    MUST(size1 < size0, "file did not shrink: %llu -> %llu", U(size0), U(size1));
    MUST((double)size1 <= 1.15 * (double)ss.live_bytes + 4.0 * MiB,
         "file %llu bytes for %llu live bytes", U(size1), U(ss.live_bytes));
    objstore_verify_report r = verify_clean(s);
    ck_assert_uint_eq(r.unreachable, 0);
    ck_assert_uint_eq(r.objects, r0.reachable);
    SAME_DIGEST(before, logical_digest(s));

    /* It goes on working: a commit, a reopen. */
    objstore_txn *t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 0, 64);
    root_set(t, "new", x);
    commit(t);
    s = reopen(s, &manual);
    verify_clean(s);
    t = wbegin(s);
    OK(objstore_root_del(t, "new"));
    commit(t);
    SAME_DIGEST(before, logical_digest(s));
    close_store(s);
    free(heap1);
    free(heap2);
}
END_TEST

START_TEST(test_roots_and_slots_point_at_the_moved_objects_and_the_map_is_complete)
{
    objstore *s = new_store(&manual);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 2, 8), b = new_obj(t, 0, 1, 8), c = new_obj(t, 0, 0, 8);
    new_obj(t, 0, 0, 500);   /* garbage below them */
    set_ref(t, a, 0, b);
    set_ref(t, a, 1, c);
    set_ref(t, b, 0, c);
    root_set(t, "a", a);
    root_set(t, "c", c);
    put_u64(t, c, 0, 0xC0FFEE);
    commit(t);
    fragmented(s, 5, 2000, 50);
    uint64_t reach = verify_clean(s).reachable;
    struct pairs p = {0};
    objstore_gc_stats st;
    OK(objstore_compact(s, NULL, on_map, &p, &st));
    ck_assert_uint_eq(p.n, reach);
    objstore_oid na = 0, nb = 0, nc = 0;
    for (size_t i = 0; i < p.n; i++) {
        if (p.old[i] == a) na = p.nw[i];
        if (p.old[i] == b) nb = p.nw[i];
        if (p.old[i] == c) nc = p.nw[i];
    }
    ck_assert(na && nb && nc);
    t = rbegin(s);
    ck_assert_uint_eq(root_get(t, "a"), na);
    ck_assert_uint_eq(root_get(t, "c"), nc);
    ck_assert_uint_eq(get_ref(t, na, 0), nb);
    ck_assert_uint_eq(get_ref(t, na, 1), nc);
    ck_assert_uint_eq(get_ref(t, nb, 0), nc);
    ck_assert_uint_eq(refcount(t, nc), 3);
    ck_assert_uint_eq(get_u64(t, nc, 0), 0xC0FFEE);
    /* Breadth first from the first root: a, then its slots' targets. */
    ck_assert(na < nb && nb < nc);
    commit(t);
    verify_clean(s);
    free(p.old);
    free(p.nw);
    close_store(s);
}
END_TEST

START_TEST(test_compaction_drops_unreachable_objects_and_moves_pins)
{
    objstore *s = new_store(&manual);
    objstore_txn *t = wbegin(s);
    objstore_oid x = new_obj(t, 0, 1, 8), y = new_obj(t, 0, 1, 8);
    set_ref(t, x, 0, y);
    set_ref(t, y, 0, x);                   /* a garbage cycle */
    objstore_oid p = new_obj(t, 0, 0, 8);  /* pinned at count 0 */
    OK(objstore_pin(t, p));
    put_u64(t, p, 0, 77);
    objstore_oid r = new_obj(t, 0, 0, 8);
    root_set(t, "r", r);
    commit(t);
    struct pairs m = {0};
    OK(objstore_compact(s, NULL, on_map, &m, NULL));
    ck_assert_uint_eq(m.n, 2);
    objstore_oid np = m.old[0] == p ? m.nw[0] : m.nw[1];
    ck_assert_uint_eq(get_stats(s).live_objects, 2);
    verify_clean(s);
    t = wbegin(s);
    ck_assert_uint_eq(get_u64(t, np, 0), 77);
    OK(objstore_unpin(t, np));
    commit(t);
    empty_commit(s);
    ck_assert_uint_eq(get_stats(s).live_objects, 1);
    verify_clean(s);
    free(m.old);
    free(m.nw);
    close_store(s);
}
END_TEST

START_TEST(test_a_leftover_generation_file_is_removed_at_open)
{
    objstore *s = new_store(&manual);
    fragmented(s, 9, 1000, 10);
    dig_t before = logical_digest(s);
    close_store(s);
    char *stray = ts_path(g_store, "heap.2");
    write_all(stray, "half a heap", 11);
    char *stray2 = ts_path(g_store, "heap.0");
    write_all(stray2, "old", 3);
    /* a read-only opener leaves it */
    objstore_options ro = manual;
    ro.flags = OBJSTORE_RDONLY;
    s = open_store(g_store, &ro);
    close_store(s);
    ck_assert(path_exists(stray));
    s = open_store(g_store, &manual);
    ck_assert(!path_exists(stray));
    ck_assert(!path_exists(stray2));
    SAME_DIGEST(before, logical_digest(s));
    /* and a compaction then makes generation 2 */
    OK(objstore_compact(s, NULL, NULL, NULL, NULL));
    ck_assert(path_exists(stray));
    SAME_DIGEST(before, logical_digest(s));
    close_store(s);
    free(stray);
    free(stray2);
}
END_TEST


START_TEST(test_an_empty_store_compacts_and_keeps_its_digest)
{
    objstore *s = new_store(&manual);
    dig_t before = logical_digest(s);
    objstore_gc_stats st;
    OK(objstore_full_collect(s, NULL, &st));
    ck_assert_uint_eq(st.freed, 0);
    OK(objstore_compact(s, NULL, NULL, NULL, &st));
    ck_assert_uint_eq(st.reachable, 0);
    ck_assert_uint_eq(st.generation, 2);
    SAME_DIGEST(before, logical_digest(s));
    verify_clean(s);
    s = reopen(s, &manual);
    objstore_txn *t = wbegin(s);
    root_set(t, "x", new_obj(t, 0, 0, 8));
    commit(t);
    OK(objstore_compact(s, NULL, NULL, NULL, &st));
    ck_assert_uint_eq(st.generation, 3);
    verify_clean(s);
    close_store(s);
}
END_TEST

static int stop_at_copy(void *arg, const char *phase, uint64_t done, uint64_t total)
{
    (void)arg;
    (void)done;
    (void)total;
    return strcmp(phase, "copy") == 0;
}

START_TEST(test_a_compaction_asked_to_stop_leaves_the_store_as_it_was)
{
    objstore *s = new_store(&manual);
    fragmented(s, 13, 150000, 20);
    dig_t before = logical_digest(s);
    uint64_t live = get_stats(s).live_objects;
    objstore_gc_options o = {.progress = stop_at_copy};
    objstore_gc_stats st;
    OK(objstore_compact(s, &o, NULL, NULL, &st));
    ck_assert_int_eq(st.interrupted, 1);
    uint64_t gen = 0;
    ck_assert_int_eq(heap_files(g_store, &gen), 1);
    ck_assert_uint_eq(gen, 1);
    ck_assert_uint_eq(get_stats(s).live_objects, live);
    verify_clean(s);
    SAME_DIGEST(before, logical_digest(s));
    s = reopen(s, &manual);
    SAME_DIGEST(before, logical_digest(s));
    close_store(s);
}
END_TEST

/* ---- crashes ---- */

static int crash_at = -1, crash_seen;
static char crash_name[64];

static void crash_hook(const char *step)
{
    if (++crash_seen == crash_at)
        _exit(77);
    snprintf(crash_name, sizeof crash_name, "%s", step);
}

static int compact_in_child(int at, int *steps)
{
    char *stepf = ts_path(g_dir, "steps");
    pid_t pid = fork();
    if (pid == 0) {
        objstore *s;
        if (objstore_open(g_store, &manual, &s))
            _exit(3);
        /* Redo records the compaction's checkpoint must settle, from two
         * commits that leave the content as it was. */
        objstore_txn *t;
        objstore_oid o;
        if (objstore_begin(s, 0, &t) || objstore_new(t, 0, 0, 100, &o) ||
            objstore_root_set(t, "tmp", o) || objstore_commit(t) ||
            objstore_begin(s, 0, &t) || objstore_root_del(t, "tmp") || objstore_commit(t))
            _exit(6);
        /* And a journal entry (heap bytes only, rewritten as they were):
         * the switch to the new heap must leave the journal's run behind. */
        static const uint8_t zeros[40];
        objstore_oid extra;
        if (objstore_begin(s, 0, &t) || objstore_root_get(t, "extra", &extra) ||
            objstore_write(t, extra, 0, zeros, sizeof zeros) || objstore_commit(t))
            _exit(7);
        objstore_stats st;
        if (objstore_get_stats(s, &st) || st.journal_commits != 1)
            _exit(8);
        crash_at = at;
        crash_seen = 0;
        objstore_set_crash_hook(crash_hook);
        if (objstore_compact(s, NULL, NULL, NULL, NULL))
            _exit(4);
        if (objstore_close(s))
            _exit(5);
        FILE *f = fopen(stepf, "w");
        fprintf(f, "%d\n", crash_seen);
        fclose(f);
        _exit(0);
    }
    int rc = wait_child(pid);
    if (rc == 0 && steps) {
        FILE *f = fopen(stepf, "r");
        ck_assert(fscanf(f, "%d", steps) == 1);
        fclose(f);
    }
    free(stepf);
    return rc;
}

START_TEST(test_a_crash_at_every_step_of_compaction_leaves_the_old_or_the_new_store)
{
    objstore *s = new_store(&manual);
    fragmented(s, 3, 20000, 60);
    /* pending redo at the crash, so the checkpoint step is in the run too */
    objstore_txn *t = wbegin(s);
    objstore_oid extra = new_obj(t, 0, 0, 40);
    root_set(t, "extra", extra);
    commit(t);
    dig_t before = logical_digest(s);
    uint64_t reach = verify_clean(s).reachable;
    close_store(s);
    char *copy = ts_path(g_dir, "pristine");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", g_store, copy);
    ck_assert_int_eq(system(cmd), 0);

    int steps = 0;
    ck_assert_int_eq(compact_in_child(-1, &steps), 0);
    ck_assert_int_gt(steps, 5);
    if (getenv("OBJSTORE_CRASH_VERBOSE"))
        fprintf(stderr, "compaction: %d crash points\n", steps);
    int olds = 0, news = 0;
    for (int at = 1; at <= steps; at++) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", g_store, copy, g_store);
        ck_assert_int_eq(system(cmd), 0);
        int rc = compact_in_child(at, NULL);
        MUST(rc == 77, "step %d: the child ended with %d, not at the crash", at, rc);
        s = open_store(g_store, &manual);
        uint64_t gen = 0;
        MUST(heap_files(g_store, &gen) == 1, "step %d: not exactly one heap file", at);
        if (gen == 1)
            olds++;
        else
            news++;
        objstore_verify_report r = verify_clean(s);
        MUST(r.reachable == reach, "step %d: %llu reachable, not %llu", at, U(r.reachable),
             U(reach));
        SAME_DIGEST(before, logical_digest(s));
        close_store(s);
    }
    ck_assert_int_gt(olds, 0);
    ck_assert_int_gt(news, 0);
    free(copy);
}
END_TEST

START_TEST(test_a_full_disk_during_compaction_is_a_clear_error_and_the_old_store_stays)
{
    objstore *s = new_store(&manual);
    fragmented(s, 11, 60000, 5);
    dig_t before = logical_digest(s);
    char *heap1 = ts_path(g_store, "heap.1");
    uint64_t size = file_size(heap1);
    free(heap1);
    close_store(s);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        objstore *c;
        if (objstore_open(g_store, &manual, &c))
            _exit(3);
        /* room for the old file, not for a copy of its live half */
        struct rlimit rl = {size / 2, size / 2};
        setrlimit(RLIMIT_FSIZE, &rl);
        int rc = objstore_compact(c, NULL, NULL, NULL, NULL);
        if (rc != OBJSTORE_ENOSPC) {
            fprintf(stderr, "compact: %d %s\n", rc, objstore_errmsg());
            _exit(4);
        }
        if (!strstr(objstore_errmsg(), "heap.2"))
            _exit(5);
        /* still the old store, usable */
        objstore_verify_report r;
        if (objstore_verify(c, &r) || r.total_problems)
            _exit(6);
        if (objstore_close(c))
            _exit(7);
        _exit(0);
    }
    ck_assert_int_eq(wait_child(pid), 0);
    uint64_t gen = 0;
    ck_assert_int_eq(heap_files(g_store, &gen), 1);
    ck_assert_uint_eq(gen, 1);
    s = open_store(g_store, &manual);
    verify_clean(s);
    SAME_DIGEST(before, logical_digest(s));
    close_store(s);
}
END_TEST

/* ---- the tool ---- */

static char *tool_path(void)
{
    const char *b = getenv("OBJSTORE_BUILD");
    char buf[4096];
    if (b && *b) {
        snprintf(buf, sizeof buf, "%s/tools/objstore-gc", b);
    } else {
        ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 40);
        ck_assert(n > 0);
        buf[n] = 0;
        char *slash = strrchr(buf, '/');
        *slash = 0;   /* .../tests */
        slash = strrchr(buf, '/');
        strcpy(slash, "/tools/objstore-gc");
    }
    return strdup(buf);
}

/* Runs the tool with args (a NULL-terminated list), stdout to out (may be
 * NULL); returns its exit code. */
/* Runs objstore-gc with args; its standard output goes to the file out,
 * its standard error to the file err (NULL: /dev/null). */
static int run_tool_to(const char *out, const char *err, const char *const *args)
{
    char *tool = tool_path();
    pid_t pid = fork();
    if (pid == 0) {
        const char *argv[16] = {tool};
        int i = 1;
        for (; args[i - 1]; i++)
            argv[i] = args[i - 1];
        argv[i] = NULL;
        int fd = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        int efd = open(err ? err : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(efd, 2);
        execv(tool, (char *const *)argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    free(tool);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int run_tool(const char *out, const char *const *args)
{
    return run_tool_to(out, NULL, args);
}

static void hex(char out[33], const uint8_t d[16])
{
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

START_TEST(test_the_tool_collects_compacts_digests_and_dry_runs)
{
    objstore *s = new_store(&manual);
    fragmented(s, 21, 5000, 50);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 8), b = new_obj(t, 0, 1, 8);
    set_ref(t, a, 0, b);
    set_ref(t, b, 0, a);
    commit(t);
    dig_t before = logical_digest(s);
    uint64_t live = get_stats(s).live_objects;
    close_store(s);
    char hx[33];
    hex(hx, before.d);

    char *out = ts_path(g_dir, "out");
    ck_assert_int_eq(run_tool(out, (const char *[]){"--digest", g_store, NULL}), 0);
    size_t len;
    char *text = (char *)read_all(out, &len);
    ck_assert(strncmp(text, hx, 32) == 0);
    free(text);

    ck_assert_int_eq(run_tool(out, (const char *[]){"--dry-run", "--json", g_store, NULL}), 0);
    text = (char *)read_all(out, &len);
    ck_assert_ptr_nonnull(strstr(text, "\"garbage\": 2"));
    free(text);
    s = open_store(g_store, &manual);
    ck_assert_uint_eq(get_stats(s).live_objects, live);
    close_store(s);

    ck_assert_int_eq(run_tool(out, (const char *[]){g_store, NULL}), 0);
    s = open_store(g_store, &manual);
    ck_assert_uint_eq(get_stats(s).live_objects, live - 2);
    close_store(s);
    ck_assert_int_eq(run_tool(out, (const char *[]){"--compact", "--json", g_store, NULL}), 0);
    text = (char *)read_all(out, &len);
    ck_assert_ptr_nonnull(strstr(text, "\"generation\": 2"));
    free(text);
    s = open_store(g_store, &manual);
    verify_clean(s);
    SAME_DIGEST(before, logical_digest(s));
    close_store(s);

    ck_assert_int_eq(run_tool(NULL, (const char *[]){"--bogus", g_store, NULL}), 16);
    ck_assert_int_eq(run_tool(NULL, (const char *[]){NULL}), 16);
    ck_assert_int_eq(run_tool(out, (const char *[]){"--help", NULL}), 0);
    ck_assert_int_eq(run_tool(out, (const char *[]){"--version", NULL}), 0);
    /* A store another process holds open: locked, exit 8, nothing done. */
    s = open_store(g_store, &manual);
    ck_assert_int_eq(run_tool(NULL, (const char *[]){"--compact", g_store, NULL}), 8);
    ck_assert_int_eq(heap_files(g_store, NULL), 1);
    close_store(s);
    char *missing = ts_path(g_dir, "nothing");
    ck_assert_int_eq(run_tool(NULL, (const char *[]){missing, NULL}), 8);
    free(missing);
    free(out);
}
END_TEST

START_TEST(test_the_tool_refuses_a_damaged_store_and_changes_nothing)
{
    objstore *s = new_store(&manual);
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 1, 8), b = new_obj(t, 0, 0, 8);
    set_ref(t, a, 0, b);
    root_set(t, "a", a);
    objstore_oid x = new_obj(t, 0, 1, 8), y = new_obj(t, 0, 1, 8);
    set_ref(t, x, 0, y);
    set_ref(t, y, 0, x);
    commit(t);
    close_store(s);
    /* b's count in the file becomes 5: a count problem, not a crash. */
    char *heap = ts_path(g_store, "heap.1");
    int fd = open(heap, O_RDWR);
    uint64_t w;
    ck_assert_int_eq(pread(fd, &w, 8, (off_t)b), 8);
    w = (w & ~UINT64_C(0xFFFFFFFFFFFF)) | 5;
    ck_assert_int_eq(pwrite(fd, &w, 8, (off_t)b), 8);
    close(fd);
    char *data = ts_path(g_store, "meta/data.mdb");
    size_t n0, n1, m0, m1;
    uint8_t *img0 = read_all(heap, &n0), *meta0 = read_all(data, &m0);
    char *err = ts_path(g_dir, "gc.err");
    ck_assert_int_eq(run_tool_to(NULL, err, (const char *[]){g_store, NULL}), 4);
    size_t elen;
    char *msg = (char *)read_all(err, &elen);
    msg[elen ? elen - 1 : 0] = '\0';
    ck_assert_msg(strstr(msg, "the store is damaged (1 problem; first: ") &&
                      strstr(msg, "nothing was changed: run objstore-fsck"), "%s", msg);
    free(msg);
    free(err);
    ck_assert_int_eq(run_tool(NULL, (const char *[]){"--compact", g_store, NULL}), 4);
    ck_assert_int_eq(run_tool(NULL, (const char *[]){"--dry-run", g_store, NULL}), 4);
    uint8_t *img1 = read_all(heap, &n1), *meta1 = read_all(data, &m1);
    ck_assert(n0 == n1 && memcmp(img0, img1, n0) == 0);
    ck_assert(m0 == m1 && memcmp(meta0, meta1, m0) == 0);
    free(meta0);
    free(meta1);
    free(data);
    ck_assert_int_eq(heap_files(g_store, NULL), 1);
    free(img0);
    free(img1);
    free(heap);
}
END_TEST


START_TEST(test_sigint_stops_objstore_gc_at_a_clean_point_with_exit_32)
{
    objstore *s = new_store(&manual);
    fragmented(s, 41, 120000, 30);
    make_cycle_garbage(s, 3000);
    dig_t before = logical_digest(s);
    uint64_t reach = verify_clean(s).reachable;
    close_store(s);
    char *tool = tool_path();
    int interrupted = 0;
    const char *modes[] = {"--compact", "--batch=100"};
    for (int round = 0; round < 6; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            int nul = open("/dev/null", O_WRONLY);
            dup2(nul, 1);
            dup2(nul, 2);
            execl(tool, tool, "-q", modes[round % 2], g_store, (char *)NULL);
            _exit(127);
        }
        struct timespec ts = {0, 20000000L * (round / 2 + 1)};
        nanosleep(&ts, NULL);
        kill(pid, SIGINT);
        int st;
        waitpid(pid, &st, 0);
        MUST(WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 32),
             "round %d: status %d", round, st);
        interrupted += WEXITSTATUS(st) == 32;
        s = open_store(g_store, &manual);
        MUST(heap_files(g_store, NULL) == 1, "round %d: not exactly one heap file", round);
        objstore_verify_report r = verify_clean(s);
        ck_assert_uint_eq(r.reachable, reach);
        SAME_DIGEST(before, logical_digest(s));
        close_store(s);
    }
    free(tool);
    ck_assert_int_gt(interrupted, 0);
}
END_TEST

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Opens g_store after a tool was killed.  The tool's checker child
 * (store/check_meta.c) closes its inherited descriptors first thing, but
 * until it is scheduled it still holds the store's lock for the killed
 * parent: a busy machine can make that last some milliseconds, so EBUSY is
 * waited out for up to 5 s (anything else fails at once). */
static objstore *open_after_kill(const objstore_options *o)
{
    objstore *s = NULL;
    int rc;
    for (int i = 0; (rc = objstore_open(g_store, o, &s)) == OBJSTORE_EBUSY && i < 500; i++)
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    OK(rc);
    return s;
}

START_TEST(test_kill_9_during_objstore_gc_compact_leaves_a_store_with_the_same_digest)
{
    uint32_t n = 120000;
    objstore *s = new_store(&manual);
    fragmented(s, 31, n, 10);
    dig_t before = logical_digest(s);
    uint64_t reach = verify_clean(s).reachable;
    ck_assert_uint_ge(reach, 100000);
    close_store(s);
    /* How long a whole run takes, to spread the kills over it. */
    uint64_t t0 = now_ns();
    ck_assert_int_eq(run_tool(NULL, (const char *[]){"--compact", "-q", g_store, NULL}), 0);
    uint64_t whole = now_ns() - t0;
    uint64_t seed = 12345;
    int rounds = ts_under_sanitizer() ? 6 : 16, finished = 0;
    char *tool = tool_path();
    for (int round = 0; round < rounds; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            int nul = open("/dev/null", O_WRONLY);
            dup2(nul, 1);
            dup2(nul, 2);
            execl(tool, tool, "--compact", "-q", g_store, (char *)NULL);
            _exit(127);
        }
        uint64_t delay = ts_mix64(seed + (uint64_t)round) % (whole + whole / 4 + 1);
        struct timespec ts = {(time_t)(delay / 1000000000u), (long)(delay % 1000000000u)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            finished++;
        s = open_after_kill(&manual);
        MUST(heap_files(g_store, NULL) == 1, "round %d: not exactly one heap file", round);
        objstore_verify_report r = verify_clean(s);
        MUST(r.reachable == reach, "round %d: %llu reachable, not %llu", round,
             U(r.reachable), U(reach));
        SAME_DIGEST(before, logical_digest(s));
        close_store(s);
    }
    free(tool);
    MUST(finished < rounds, "no run was killed");
}
END_TEST

static Suite *compact_suite(void)
{
    Suite *s = suite_create("compact");
    TCase *tc = ts_tcase(s, "compact", 120);
    tcase_add_test(tc, test_compaction_keeps_the_content_and_shrinks_a_mostly_freed_heap);
    tcase_add_test(tc, test_roots_and_slots_point_at_the_moved_objects_and_the_map_is_complete);
    tcase_add_test(tc, test_compaction_drops_unreachable_objects_and_moves_pins);
    tcase_add_test(tc, test_a_leftover_generation_file_is_removed_at_open);
    tcase_add_test(tc, test_a_compaction_asked_to_stop_leaves_the_store_as_it_was);
    tcase_add_test(tc, test_an_empty_store_compacts_and_keeps_its_digest);

    tc = ts_tcase(s, "crash", 300);
    tcase_add_test(tc, test_a_crash_at_every_step_of_compaction_leaves_the_old_or_the_new_store);
    tcase_add_test(tc, test_a_full_disk_during_compaction_is_a_clear_error_and_the_old_store_stays);
    tcase_add_test(tc, test_kill_9_during_objstore_gc_compact_leaves_a_store_with_the_same_digest);

    tc = ts_tcase(s, "tool", 120);
    tcase_add_test(tc, test_the_tool_collects_compacts_digests_and_dry_runs);
    tcase_add_test(tc, test_the_tool_refuses_a_damaged_store_and_changes_nothing);
    tcase_add_test(tc, test_sigint_stops_objstore_gc_at_a_clean_point_with_exit_32);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(compact_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
