/*
 * test_heap.c -- the Check suite of heap/, written against heap.h (the
 * contract) and heap_format.h (the bytes of the file).
 *
 * What it covers: every size class and boundary; a randomized million-operation
 * run checked against a model, and random transactions that commit or discard;
 * growth at a fixed base; write-back and reopen;
 * abort (discard); dirty ranges; replay (heap_apply); every header corruption
 * and several arena-metadata corruptions, each with its own error code;
 * refused offsets; shrinking the tail; locking; a full disk; objects; stats.
 *
 * Conventions:
 *   - each test gets a fresh directory (checked fixture) inside a root per test
 *     case that the runner removes even when a test failed (unchecked fixture:
 *     in fork mode a failing test exits before its own teardown);
 *   - hot loops use MUST() instead of ck_assert(): a passing ck_assert records
 *     its location through Check's channel, far too slow a million times over;
 *   - block contents are patterns derived from a seed, so any overlap, lost
 *     write or stale page shows up as a mismatch at a known offset.
 */
#include <check.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "heap.h"
#include "heap_format.h"
#include "support.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)

#define MUST(cond, ...)                  \
    do {                                 \
        if (!(cond))                     \
            ck_abort_msg(__VA_ARGS__);   \
    } while (0)

#define U(x) ((unsigned long long)(x))


/* ------------------------------------------------------------------ */
/* fixtures                                                             */

static char *g_dir;      /* one per test */
static char *g_path;     /* g_dir/heap.1 */



static void dir_setup(void)
{
    g_dir = ts_test_dir();
    g_path = ts_path(g_dir, "heap.1");
    ck_assert_ptr_nonnull(g_path);
}

static void dir_teardown(void)
{
    ts_rmtree(g_dir);
    free(g_dir);
    free(g_path);
    g_dir = g_path = NULL;
}

/* ------------------------------------------------------------------ */
/* helpers                                                              */

static void create_heap(const char *path, uint64_t initial)
{
    heap_create_opts o = { .initial_bytes = initial };
    char msg[HEAP_MSG_MAX] = "";
    heap_status s = heap_create(path, &o, msg);
    ck_assert_msg(s == HEAP_OK, "heap_create(%s) = %d: %s", path, s, msg);
}

static heap_status try_open(const char *path, int flags, heap_t **out,
                            char msg[HEAP_MSG_MAX])
{
    heap_open_opts o = { .flags = flags };
    msg[0] = '\0';
    *out = (heap_t *)(uintptr_t)1;   /* must be set to NULL on failure */
    return heap_open(path, &o, out, msg);
}

static heap_t *open_flags(const char *path, int flags)
{
    heap_t *h;
    char msg[HEAP_MSG_MAX];
    heap_status s = try_open(path, flags, &h, msg);
    ck_assert_msg(s == HEAP_OK, "heap_open(%s, %d) = %d: %s", path, flags, s, msg);
    ck_assert_ptr_nonnull(h);
    return h;
}

static heap_t *open_heap(const char *path)
{
    return open_flags(path, 0);
}

static heap_t *new_heap(uint64_t initial)
{
    create_heap(g_path, initial);
    return open_heap(g_path);
}

static uint64_t must_alloc(heap_t *h, uint64_t size)
{
    uint64_t off = 0;
    heap_status s = heap_alloc(h, size, &off);
    MUST(s == HEAP_OK, "heap_alloc(%llu) = %d: %s", U(size), s, heap_errmsg(h));
    return off;
}

static void must_free(heap_t *h, uint64_t off)
{
    heap_status s = heap_free(h, off);
    MUST(s == HEAP_OK, "heap_free(%llu) = %d: %s", U(off), s, heap_errmsg(h));
}

static void commit(heap_t *h)
{
    heap_status s = heap_writeback(h);
    ck_assert_msg(s == HEAP_OK, "heap_writeback = %d: %s", s, heap_errmsg(h));
    s = heap_sync(h);
    ck_assert_msg(s == HEAP_OK, "heap_sync = %d: %s", s, heap_errmsg(h));
}

static uint64_t mix64(uint64_t x)
{
    x += UINT64_C(0x9E3779B97F4A7C15);
    x = (x ^ (x >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94D049BB133111EB);
    return x ^ (x >> 31);
}

#define PAT_STEP UINT64_C(0x9E3779B97F4A7C15)

/* Pattern of seed into a plain buffer (word i = mix64(seed) + i * step). */
static void pattern_into(uint8_t *p, uint64_t len, uint64_t seed)
{
    uint64_t w = mix64(seed), n = len / 8;
    for (uint64_t i = 0; i < n; i++, w += PAT_STEP)
        memcpy(p + 8 * i, &w, 8);
    if (len % 8)
        memcpy(p + 8 * n, &w, len % 8);
}

/* Marks [off, off+len) dirty, then writes the pattern of seed there. */
static void fill(heap_t *h, uint64_t off, uint64_t len, uint64_t seed)
{
    heap_mark_dirty(h, off, len);
    pattern_into((uint8_t *)heap_ptr(h, off), len, seed);
}

/* Offset (from off) of the first byte differing from the pattern, or
 * UINT64_MAX when all len bytes hold it. */
static uint64_t pattern_mismatch(const heap_t *h, uint64_t off, uint64_t len,
                                 uint64_t seed)
{
    const uint8_t *p = heap_ptr(h, off);
    uint64_t w = mix64(seed), n = len / 8, i;
    for (i = 0; i < n; i++, w += PAT_STEP)
        if (memcmp(p + 8 * i, &w, 8) != 0)
            break;
    if (i == n && (len % 8 == 0 || memcmp(p + 8 * n, &w, len % 8) == 0))
        return UINT64_MAX;
    for (uint64_t j = 8 * i;; j++) {   /* locate the byte */
        uint8_t want[8];
        uint64_t ww = mix64(seed) + (j / 8) * PAT_STEP;
        memcpy(want, &ww, 8);
        if (p[j] != want[j % 8])
            return j;
    }
}

static void must_hold(const heap_t *h, uint64_t off, uint64_t len, uint64_t seed)
{
    uint64_t bad = pattern_mismatch(h, off, len, seed);
    MUST(bad == UINT64_MAX,
         "block %llu (len %llu, seed %llu) differs from its pattern at +%llu",
         U(off), U(len), U(seed), U(bad));
}

static uint64_t first_nonzero(const uint8_t *p, uint64_t len)
{
    uint64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w != 0)
            break;
    }
    for (; i < len; i++)
        if (p[i] != 0)
            return i;
    return UINT64_MAX;
}

static void must_be_zero(const heap_t *h, uint64_t off, uint64_t len)
{
    uint64_t nz = first_nonzero(heap_ptr(h, off), len);
    MUST(nz == UINT64_MAX, "block %llu (len %llu) is not zeroed: byte +%llu",
         U(off), U(len), U(nz));
}

/* A simple model of what should be live. */
struct blk {
    uint64_t off;
    uint64_t size;   /* bytes asked */
    uint64_t seed;   /* pattern over the asked bytes */
};

static int blk_by_off(const void *a, const void *b)
{
    const struct blk *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Checks the heap against the model: every block live with its pattern, no
 * overlap, heap_next_live lists exactly the model in address order, and the
 * stats count the same blocks and bytes.  scratch holds n entries. */
static void check_model(const heap_t *h, const struct blk *live, size_t n,
                        struct blk *scratch, const char *where)
{
    memcpy(scratch, live, n * sizeof *live);
    qsort(scratch, n, sizeof *scratch, blk_by_off);
    uint64_t bytes = 0, prev_end = 0;
    for (size_t i = 0; i < n; i++) {
        const struct blk *b = &scratch[i];
        MUST(heap_is_live(h, b->off), "%s: block %llu is not live", where, U(b->off));
        uint64_t bs = heap_block_size(h, b->off);
        MUST(bs >= b->size && bs >= 1, "%s: block %llu: heap_block_size %llu < %llu",
             where, U(b->off), U(bs), U(b->size));
        MUST(b->off >= prev_end, "%s: block %llu overlaps the previous one (ends %llu)",
             where, U(b->off), U(prev_end));
        prev_end = b->off + bs;
        bytes += bs;
        uint64_t bad = pattern_mismatch(h, b->off, b->size, b->seed);
        MUST(bad == UINT64_MAX, "%s: block %llu (size %llu) lost its pattern at +%llu",
             where, U(b->off), U(b->size), U(bad));
    }
    uint64_t cursor = 0, off = 0;
    size_t k = 0;
    while (heap_next_live(h, &cursor, &off)) {
        MUST(k < n, "%s: heap_next_live yields %llu past the model's %zu blocks",
             where, U(off), n);
        MUST(off == scratch[k].off, "%s: heap_next_live #%zu = %llu, model has %llu",
             where, k, U(off), U(scratch[k].off));
        k++;
    }
    MUST(k == n, "%s: heap_next_live yields %zu blocks, the model %zu", where, k, n);
    heap_stats st;
    heap_get_stats(h, &st);
    MUST(st.live_blocks == n, "%s: stats live_blocks %llu, model %zu", where,
         U(st.live_blocks), n);
    MUST(st.live_bytes == bytes, "%s: stats live_bytes %llu, model %llu", where,
         U(st.live_bytes), U(bytes));
}

static void assert_stats_equal(const heap_stats *a, const heap_stats *b)
{
    for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
        ck_assert_msg(a->cls[c].block_size == b->cls[c].block_size, "cls[%u].block_size", c);
        ck_assert_msg(a->cls[c].pools == b->cls[c].pools, "cls[%u].pools %llu != %llu",
                      c, U(a->cls[c].pools), U(b->cls[c].pools));
        ck_assert_msg(a->cls[c].blocks_used == b->cls[c].blocks_used,
                      "cls[%u].blocks_used %llu != %llu", c,
                      U(a->cls[c].blocks_used), U(b->cls[c].blocks_used));
        ck_assert_msg(a->cls[c].blocks_free == b->cls[c].blocks_free,
                      "cls[%u].blocks_free %llu != %llu", c,
                      U(a->cls[c].blocks_free), U(b->cls[c].blocks_free));
    }
#define SAME(f) ck_assert_msg(a->f == b->f, #f " %llu != %llu", U(a->f), U(b->f))
    SAME(arenas);
    SAME(arenas_free);
    SAME(pools_total);
    SAME(pools_free);
    SAME(run_blocks);
    SAME(run_bytes);
    SAME(live_blocks);
    SAME(live_bytes);
    SAME(requested_bytes);
#undef SAME
    ck_assert_msg(a->fragmentation == b->fragmentation, "fragmentation %g != %g",
                  a->fragmentation, b->fragmentation);
}

static uint64_t g_rng = UINT64_C(0x0B57A7E5EED);

static uint64_t rnd(void)
{
    g_rng += UINT64_C(0x9E3779B97F4A7C15);
    return mix64(g_rng);
}

static uint64_t rnd_range(uint64_t lo, uint64_t hi)   /* inclusive */
{
    return lo + rnd() % (hi - lo + 1);
}

/* Sizes mostly small, some pool runs, rarely a huge run. */
static uint64_t rnd_size(void)
{
    uint64_t r = rnd() % 10000;
    if (r < 9890)
        return rnd_range(1, 600);
    if (r < 9998)
        return rnd_range(601, 200 * KiB);
    return rnd_range(MiB + 1, 3 * MiB);
}

/* Allocates n blocks of rnd_size() (or of size when non-zero), fills them. */
static void alloc_filled(heap_t *h, struct blk *out, size_t n, uint64_t size,
                         uint64_t seed0)
{
    for (size_t i = 0; i < n; i++) {
        out[i].size = size ? size : rnd_size();
        out[i].off = must_alloc(h, out[i].size);
        out[i].seed = seed0 + i;
        fill(h, out[i].off, out[i].size, out[i].seed);
    }
}

static bool msg_ok(const char *msg)
{
    return msg[0] != '\0' && memchr(msg, '\0', HEAP_MSG_MAX) != NULL;
}

/* ------------------------------------------------------------------ */
/* allocation                                                           */

START_TEST(test_every_size_class_allocates_aligned_distinct_blocks)
{
    heap_t *h = new_heap(0);
    uint64_t sizes[128];
    size_t n = 0;
    const uint64_t edges[] = {
        0, 1, 16, 17, 512, 513, HEAP_POOL_SIZE, HEAP_POOL_SIZE + 1,
        HEAP_RUN_MAX, HEAP_RUN_MAX + 1, HEAP_ARENA_SIZE, 3 * MiB + 5,
    };
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        sizes[n++] = edges[i];
    for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
        sizes[n++] = heap_class_size(c);
        sizes[n++] = heap_class_size(c) - HEAP_ALIGN + 1;
    }

    struct blk b[128], sorted[128];
    for (size_t i = 0; i < n; i++) {
        uint64_t sz = sizes[i], off = must_alloc(h, sz);
        uint64_t bs = heap_block_size(h, off);
        ck_assert_msg(off % HEAP_ALIGN == 0, "size %llu: offset %llu not aligned", U(sz), U(off));
        ck_assert_msg(off != 0, "size %llu: offset 0", U(sz));
        ck_assert_msg(off + bs <= heap_size(h), "size %llu: block %llu+%llu past the heap (%llu)",
                      U(sz), U(off), U(bs), U(heap_size(h)));
        ck_assert_msg((off & (HEAP_ARENA_SIZE - 1)) >= HEAP_POOL_SIZE,
                      "size %llu: block %llu lies in a metadata pool", U(sz), U(off));
        ck_assert_msg(heap_is_live(h, off), "size %llu: block %llu not live", U(sz), U(off));
        ck_assert_msg(bs >= (sz ? sz : 1), "size %llu: heap_block_size %llu", U(sz), U(bs));
        if (sz <= HEAP_SMALL_MAX) {
            ck_assert_msg(bs == heap_class_size(heap_size_class(sz ? sz : 1)),
                          "size %llu: small block of %llu bytes", U(sz), U(bs));
        } else if (sz <= HEAP_RUN_MAX) {
            uint64_t pools = (sz + HEAP_POOL_SIZE - 1) / HEAP_POOL_SIZE;
            ck_assert_msg(bs == pools * HEAP_POOL_SIZE, "size %llu: run of %llu bytes",
                          U(sz), U(bs));
        } else {
            ck_assert_msg((off & (HEAP_ARENA_SIZE - 1)) == HEAP_POOL_SIZE,
                          "size %llu: huge run at %llu does not start at pool 1",
                          U(sz), U(off));
            ck_assert_msg(bs < sz + HEAP_ARENA_SIZE, "size %llu: huge run of %llu bytes",
                          U(sz), U(bs));
        }
        must_be_zero(h, off, sz);
        b[i] = (struct blk){ off, bs, 1000 + i };
        fill(h, off, bs, b[i].seed);
    }
    check_model(h, b, n, sorted, "after allocating every size");

    /* Free every other block: the rest keep their bytes. */
    for (size_t i = 0; i < n; i += 2) {
        must_free(h, b[i].off);
        ck_assert_msg(!heap_is_live(h, b[i].off), "freed block %llu still live", U(b[i].off));
        heap_status s = heap_free(h, b[i].off);
        ck_assert_msg(s == HEAP_EBADOFF, "second free of %llu (size %llu) = %d",
                      U(b[i].off), U(sizes[i]), s);
    }
    size_t m = 0;
    for (size_t i = 1; i < n; i += 2)
        b[m++] = b[i];
    check_model(h, b, m, sorted, "after freeing every other block");
    for (size_t i = 0; i < m; i++) {
        must_free(h, b[i].off);
        ck_assert(!heap_is_live(h, b[i].off));
        ck_assert_int_eq(heap_free(h, b[i].off), HEAP_EBADOFF);
    }
    check_model(h, b, 0, sorted, "after freeing everything");
    heap_close(h);
}
END_TEST

/* The collectors free their garbage as one list in address order: the
 * batch must end in the state one-by-one frees reach, check each offset as
 * heap_free does, and stop at a bad one having freed exactly those before. */
START_TEST(test_a_batch_free_equals_one_by_one_frees_and_stops_at_a_bad_offset)
{
    enum { N = 3000 };
    heap_t *h = new_heap(0);
    struct blk *b = calloc(N, sizeof *b), *scratch = calloc(N, sizeof *b);
    uint64_t *list = calloc(N + 1, sizeof *list);
    ck_assert(b && scratch && list);
    for (size_t i = 0; i < N; i++) {   /* two classes interleaved, and runs */
        uint64_t sz = i % 500 == 7 ? 20000 : i % 2 ? 32 : 100;
        b[i] = (struct blk){ must_alloc(h, sz), sz, 7000 + i };
        fill(h, b[i].off, sz, b[i].seed);
    }
    qsort(b, N, sizeof *b, blk_by_off);
    size_t n = 0, m = 0;
    for (size_t i = 0; i < N; i++) {
        if (i % 3 == 0)
            b[m++] = b[i];             /* survivors, kept at the front */
        else
            list[n++] = b[i].off;      /* garbage, in address order */
    }
    /* A bad offset in the middle: inside a survivor, not a block's start. */
    size_t p = n / 2;
    memmove(&list[p + 1], &list[p], (n - p) * sizeof *list);
    list[p] = b[m / 2].off + 16;
    n++;

    size_t done = 12345;
    heap_status s = heap_free_many(h, list, n, &done);
    ck_assert_int_eq(s, HEAP_EBADOFF);
    ck_assert_uint_eq(done, p);
    ck_assert_msg(strstr(heap_errmsg(h), "not a live block"), "message: %s", heap_errmsg(h));
    for (size_t i = 0; i < n; i++)
        if (i != p)
            ck_assert_msg(heap_is_live(h, list[i]) == (i > p), "block #%zu at %llu: live %d",
                          i, U(list[i]), heap_is_live(h, list[i]));
    s = heap_free_many(h, list + p + 1, n - p - 1, &done);
    ck_assert_msg(s == HEAP_OK, "heap_free_many = %d: %s", s, heap_errmsg(h));
    ck_assert_uint_eq(done, n - p - 1);
    check_model(h, b, m, scratch, "after the batch free");
    ck_assert_int_eq(heap_free_many(h, list, 1, &done), HEAP_EBADOFF);   /* freed already */
    ck_assert_uint_eq(done, 0);

    /* The same frees one by one, on a second heap built the same way. */
    heap_stats batch, single;
    heap_get_stats(h, &batch);
    heap_close(h);
    char *path2 = ts_path(g_dir, "heap.2");
    ck_assert_ptr_nonnull(path2);
    create_heap(path2, 0);
    heap_t *h2 = open_heap(path2);
    for (size_t i = 0; i < N; i++) {
        uint64_t sz = i % 500 == 7 ? 20000 : i % 2 ? 32 : 100;
        fill(h2, must_alloc(h2, sz), sz, 7000 + i);   /* same bytes: same stats */
    }
    for (size_t i = 0; i < n; i++)
        if (i != p)
            must_free(h2, list[i]);
    heap_get_stats(h2, &single);
    assert_stats_equal(&batch, &single);
    heap_close(h2);
    free(path2);
    free(list);
    free(scratch);
    free(b);
}
END_TEST

/* The commit's drain frees a leaf whose last reference goes with its parent
 * on the lookup that checks it: heap_free_leaf frees exactly that object
 * when it has no slots and the count given, leaves anything else as it is,
 * and fails as heap_check_ref does (freeing nothing) on a bad offset or a
 * damaged header.  The frees reach the file: written back and reopened, the
 * heap has the statistics of a twin that freed the same blocks. */
static uint64_t must_obj(heap_t *h, uint32_t nrefs, uint64_t payload, uint64_t count)
{
    uint64_t off;
    heap_status s = heap_obj_new(h, 1, nrefs, payload, &off);
    ck_assert_msg(s == HEAP_OK, "heap_obj_new = %d: %s", s, heap_errmsg(h));
    ck_assert_int_eq(heap_obj_set_refcount(h, off, count), HEAP_OK);
    return off;
}

START_TEST(test_a_leaf_is_freed_on_its_own_check_and_anything_else_is_left_as_it_is)
{
    heap_t *h = new_heap(0), *twin = NULL;
    heap_t *hs[2] = {h, NULL};
    char *path2 = ts_path(g_dir, "heap.2");
    ck_assert_ptr_nonnull(path2);
    create_heap(path2, 0);
    hs[1] = twin = open_heap(path2);
    uint64_t o[2][6];
    for (int k = 0; k < 2; k++) {   /* the same objects in both heaps */
        o[k][0] = must_obj(hs[k], 0, 8, 1);       /* a leaf at count 1 */
        o[k][1] = must_obj(hs[k], 2, 40, 1);      /* slots */
        o[k][2] = must_obj(hs[k], 0, 8, 2);       /* another count */
        o[k][3] = must_obj(hs[k], 0, 20000, 1);   /* a run */
        o[k][4] = must_obj(hs[k], 0, 200, 1);
        o[k][5] = must_obj(hs[k], 0, 8, 1);       /* its header damaged below */
    }
    bool freed = true;
    ck_assert_int_eq(heap_free_leaf(h, o[0][0], 1, &freed), HEAP_OK);
    ck_assert(freed && !heap_is_live(h, o[0][0]));
    ck_assert(heap_is_live(h, o[0][2]));
    /* Freed already, or not a block's start: heap_check_ref's status. */
    ck_assert_int_eq(heap_free_leaf(h, o[0][0], 1, &freed), HEAP_EBADOFF);
    ck_assert(!freed);
    ck_assert_msg(strstr(heap_errmsg(h), "not the start of a live object"), "message: %s",
                  heap_errmsg(h));
    ck_assert_int_eq(heap_free_leaf(h, o[0][4] + 16, 1, &freed), HEAP_EBADOFF);
    ck_assert(!freed && heap_is_live(h, o[0][4]));
    /* Slots, or another count: left as they are. */
    ck_assert_int_eq(heap_free_leaf(h, o[0][1], 1, &freed), HEAP_OK);
    ck_assert(!freed && heap_is_live(h, o[0][1]));
    ck_assert_int_eq(heap_free_leaf(h, o[0][2], 1, &freed), HEAP_OK);
    ck_assert(!freed && heap_is_live(h, o[0][2]));
    /* A run, and another small leaf. */
    ck_assert_int_eq(heap_free_leaf(h, o[0][3], 1, &freed), HEAP_OK);
    ck_assert(freed && !heap_is_live(h, o[0][3]));
    ck_assert_int_eq(heap_free_leaf(h, o[0][4], 1, &freed), HEAP_OK);
    ck_assert(freed && !heap_is_live(h, o[0][4]));
    /* Slots that do not fit the block: damage, nothing freed. */
    heap_mark_dirty(h, o[0][5], HEAP_OBJ_HEADER);
    heap_obj_at(h, o[0][5])->nrefs = 1000;
    ck_assert_int_eq(heap_free_leaf(h, o[0][5], 1, &freed), HEAP_ECORRUPT);
    ck_assert(!freed && heap_is_live(h, o[0][5]));
    heap_mark_dirty(twin, o[1][5], HEAP_OBJ_HEADER);
    heap_obj_at(twin, o[1][5])->nrefs = 1000;

    must_free(twin, o[1][0]);
    must_free(twin, o[1][3]);
    must_free(twin, o[1][4]);
    heap_stats a, b;
    heap_get_stats(twin, &b);
    commit(h);   /* every change was marked dirty: the file has them all */
    heap_close(h);
    h = open_heap(g_path);
    ck_assert_int_eq(heap_rebuild_full(h), HEAP_OK);
    heap_get_stats(h, &a);
    assert_stats_equal(&a, &b);
    ck_assert(heap_is_live(h, o[0][1]) && heap_is_live(h, o[0][2]));
    heap_close(twin);
    heap_close(h);
    free(path2);
}
END_TEST

/* An offset in an arena open has not validated, whose table lies in a huge
 * block's data and looks like a small pool with a block allocated there:
 * heap_free_leaf must not take it for a table (nothing is written there). */
START_TEST(test_a_leaf_free_in_an_arena_that_is_a_huge_blocks_data_touches_nothing)
{
    heap_t *h = new_heap(0);
    uint64_t big = must_alloc(h, UINT64_C(70) << 20);
    uint64_t b = must_alloc(h, UINT64_C(5) << 20);   /* spans the next arenas */
    (void)big;
    uint64_t kb = (b >> HEAP_ARENA_SHIFT) + 1;
    ck_assert_uint_lt(kb, heap_size(h) >> HEAP_ARENA_SHIFT);
    uint64_t table = (kb << HEAP_ARENA_SHIFT) + HEAP_TABLE_OFFSET;
    struct heap_arena_table *t = heap_ptr(h, table);   /* b's data */
    heap_mark_dirty(h, table, sizeof *t);
    t->pool[1] = (struct heap_pooldesc){.kind = HEAP_POOL_SMALL, .cls = 250, .nalloc = 1};
    t->bitmap[1][0] = 1;
    commit(h);
    heap_close(h);

    h = open_heap(g_path);
    ck_assert_uint_le(heap_arenas_validated(h), kb);   /* the test's premise */
    bool freed = true;
    uint64_t fake = (kb << HEAP_ARENA_SHIFT) + HEAP_POOL_SIZE;   /* "pool 1, block 0" */
    ck_assert_int_ne(heap_free_leaf(h, fake, 0, &freed), HEAP_OK);
    ck_assert(!freed);
    t = heap_ptr(h, table);
    ck_assert_uint_eq(t->bitmap[1][0], 1);
    ck_assert_uint_eq(t->pool[1].cls, 250);
    ck_assert(heap_is_live(h, b));
    heap_close(h);
}
END_TEST

START_TEST(test_a_reused_block_comes_back_zeroed)
{
    heap_t *h = new_heap(0);
    const uint64_t sizes[] = { 1, 100, 512, 20000, HEAP_RUN_MAX, 3 * MiB / 2 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int round = 0; round < 3; round++) {
            uint64_t off = must_alloc(h, sizes[i]);
            must_be_zero(h, off, sizes[i]);
            uint64_t bs = heap_block_size(h, off);
            heap_mark_dirty(h, off, bs);
            memset(heap_ptr(h, off), 0xA5, bs);
            must_free(h, off);
        }
    }
    heap_close(h);
}
END_TEST

/* heap.h: the bytes asked for are zeroed, and a small block wholly (its
 * padding counts in object sizes); a run's tail past the size is unspecified,
 * so a reused run costs no redo for bytes nobody asked for. */
START_TEST(test_a_new_block_is_zeroed_up_to_the_size_asked)
{
    heap_t *h = new_heap(0);
    struct { uint64_t size, before; } cases[] = {
        { 513, HEAP_POOL_SIZE },                 /* a 1-pool run in a reused pool */
        { HEAP_POOL_SIZE + 1, 2 * HEAP_POOL_SIZE },
        { 100, 112 },                            /* small: the class's 112 bytes */
        { HEAP_RUN_MAX + 1, 0 },                 /* a huge run over 2 arenas */
        { 3 * MiB + 5, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].before) {   /* leave garbage where the block will go */
            uint64_t old = must_alloc(h, cases[i].before);
            fill(h, old, heap_block_size(h, old), 77);
            must_free(h, old);
        }
        uint64_t off = must_alloc(h, cases[i].size), bs = heap_block_size(h, off);
        must_be_zero(h, off, cases[i].size);
        if (cases[i].size <= HEAP_SMALL_MAX) {
            uint64_t nz = first_nonzero(heap_ptr(h, off), bs);
            ck_assert_msg(nz == UINT64_MAX, "heap_alloc(%llu): small block %llu of %llu "
                          "bytes: byte +%llu is 0x%02x", U(cases[i].size), U(off), U(bs),
                          U(nz), ((uint8_t *)heap_ptr(h, off))[nz]);
        }
    }
    heap_close(h);
}
END_TEST

START_TEST(test_an_impossible_size_is_refused_without_harm)
{
    heap_t *h = new_heap(0);
    uint64_t keep = must_alloc(h, 100);
    fill(h, keep, 100, 7);
    const uint64_t sizes[] = { UINT64_MAX, UINT64_MAX - HEAP_POOL_SIZE, UINT64_C(1) << 62 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint64_t off = 12345;
        heap_status s = heap_alloc(h, sizes[i], &off);
        ck_assert_msg(s == HEAP_EINVAL || s == HEAP_ENOMEM,
                      "heap_alloc(%llu) = %d, want EINVAL or ENOMEM", U(sizes[i]), s);
        ck_assert_msg(msg_ok(heap_errmsg(h)), "no message for heap_alloc(%llu)", U(sizes[i]));
    }
    must_hold(h, keep, 100, 7);
    uint64_t off = must_alloc(h, 200);
    ck_assert(heap_is_live(h, off));
    heap_close(h);
}
END_TEST

/* The refused offsets of test_bad_offsets_are_refused, with a reason each. */
struct badoff {
    uint64_t off;
    const char *why;
};

START_TEST(test_bad_offsets_are_refused)
{
    heap_t *h = new_heap(0);
    uint64_t s64 = must_alloc(h, 64);
    uint64_t s48 = must_alloc(h, 48);
    uint64_t run = must_alloc(h, 2 * HEAP_POOL_SIZE + 100);   /* 3 pools */
    uint64_t huge = must_alloc(h, 2 * MiB);
    uint64_t gone = must_alloc(h, 32);
    must_free(h, gone);
    uint64_t live[] = { s64, s48, run, huge };
    uint64_t size = heap_size(h);

    /* A data pool of arena 0 that holds none of the blocks above. */
    uint64_t free_pool = 0;
    for (uint64_t p = HEAP_DATA_POOLS; p >= 1 && free_pool == 0; p--) {
        uint64_t lo = p * HEAP_POOL_SIZE, hi = lo + HEAP_POOL_SIZE;
        bool used = false;
        for (size_t i = 0; i < 4; i++) {
            uint64_t bs = heap_block_size(h, live[i]);
            if (live[i] < hi && live[i] + bs > lo)
                used = true;
        }
        if (gone >= lo && gone < hi)
            used = true;
        if (!used)
            free_pool = lo;
    }
    ck_assert_msg(free_pool != 0, "no free pool in arena 0");

    uint64_t pool64 = s64 & ~(uint64_t)(HEAP_POOL_SIZE - 1);
    uint64_t unused64 = pool64 + 64 * 100;
    if (unused64 == s64)
        unused64 += 64;

    const struct badoff bad[] = {
        { 8, "8, inside the file header" },
        { 16, "16, inside the file header" },
        { 4096, "4096, the arena table" },
        { 4096 + 64, "a pool descriptor" },
        { HEAP_POOL_SIZE - HEAP_ALIGN, "the end of metadata pool 0" },
        { HEAP_ARENA_SIZE, "arena 1's metadata pool" },
        { HEAP_ARENA_SIZE + 4096, "arena 1's table" },
        { s64 + 1, "misaligned by 1" },
        { s64 + 8, "misaligned by 8" },
        { s64 + 16, "interior of a 64-byte block" },
        { s64 + 48, "interior of a 64-byte block, 16-aligned" },
        { s48 + 16, "off the 48-byte stride" },
        { unused64, "a free slot in a used pool" },
        { free_pool, "the start of a free pool" },
        { free_pool + 512, "inside a free pool" },
        { run + 16, "interior of a run" },
        { run + HEAP_POOL_SIZE, "the second pool of a run" },
        { run + 2 * HEAP_POOL_SIZE, "the third pool of a run" },
        { huge + HEAP_POOL_SIZE, "interior pool of a huge run" },
        { huge - HEAP_POOL_SIZE + HEAP_ARENA_SIZE, "a covered metadata pool of a huge run" },
        { huge - HEAP_POOL_SIZE + HEAP_ARENA_SIZE + HEAP_POOL_SIZE,
          "pool 1 of an arena covered by a huge run" },
        { gone, "a freed block" },
        { size, "the heap's end" },
        { size + HEAP_POOL_SIZE, "past the end" },
        { size + HEAP_ALIGN, "past the end" },
        { UINT64_C(1) << 40, "1 TiB" },
        { UINT64_C(1) << 63, "2^63" },
        { UINT64_MAX - 15, "UINT64_MAX - 15" },
        { UINT64_MAX, "UINT64_MAX" },
    };
    heap_stats before;
    heap_get_stats(h, &before);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t off = bad[i].off;
        ck_assert_msg(!heap_is_live(h, off), "%s (%llu) is live", bad[i].why, U(off));
        ck_assert_msg(heap_obj_size(h, off) == 0, "heap_obj_size of %s (%llu) is %llu",
                      bad[i].why, U(off), U(heap_obj_size(h, off)));
        heap_status s = heap_check_ref(h, off);
        ck_assert_msg(s == HEAP_EBADOFF, "heap_check_ref(%s, %llu) = %d",
                      bad[i].why, U(off), s);
        ck_assert_msg(msg_ok(heap_errmsg(h)), "heap_check_ref(%s): no message", bad[i].why);
        s = heap_free(h, off);
        ck_assert_msg(s == HEAP_EBADOFF, "heap_free(%s, %llu) = %d", bad[i].why, U(off), s);
        ck_assert_msg(msg_ok(heap_errmsg(h)), "heap_free(%s): no message", bad[i].why);
    }
    ck_assert(!heap_is_live(h, 0));
    ck_assert_int_eq(heap_check_ref(h, 0), HEAP_OK);
    ck_assert_int_eq(heap_free(h, 0), HEAP_EBADOFF);

    /* Nothing was harmed by the refused calls. */
    heap_stats after;
    heap_get_stats(h, &after);
    assert_stats_equal(&before, &after);
    for (size_t i = 0; i < 4; i++) {
        ck_assert(heap_is_live(h, live[i]));
        ck_assert_int_eq(heap_check_ref(h, live[i]), HEAP_OK);
        must_free(h, live[i]);
    }
    heap_close(h);
}
END_TEST

START_TEST(test_check_ref_refuses_slots_that_overflow_the_block)
{
    heap_t *h = new_heap(0);
    uint64_t off = must_alloc(h, 64);   /* 64-byte block: room for 6 slots */
    ck_assert_uint_eq(heap_block_size(h, off), 64);
    heap_obj *o = heap_obj_at(h, off);
    heap_mark_dirty(h, off, HEAP_OBJ_HEADER);
    o->nrefs = 6;
    ck_assert_int_eq(heap_check_ref(h, off), HEAP_OK);
    o->nrefs = 7;
    ck_assert_int_eq(heap_check_ref(h, off), HEAP_ECORRUPT);
    ck_assert(msg_ok(heap_errmsg(h)));
    o->nrefs = UINT32_MAX;
    ck_assert_int_eq(heap_check_ref(h, off), HEAP_ECORRUPT);

    /* A run: slots within the bytes asked are fine, slots past the end of
     * the block are not.  (Between the two, the header leaves it open.) */
    uint64_t big = must_alloc(h, 40000);   /* a run of 3 pools */
    uint64_t bs = heap_block_size(h, big);
    o = heap_obj_at(h, big);
    heap_mark_dirty(h, big, HEAP_OBJ_HEADER);
    o->nrefs = (40000 - HEAP_OBJ_HEADER) / 8;
    ck_assert_int_eq(heap_check_ref(h, big), HEAP_OK);
    o->nrefs = (uint32_t)((bs - HEAP_OBJ_HEADER) / 8 + 1);
    ck_assert_int_eq(heap_check_ref(h, big), HEAP_ECORRUPT);
    o->nrefs = UINT32_MAX;
    ck_assert_int_eq(heap_check_ref(h, big), HEAP_ECORRUPT);
    heap_close(h);
}
END_TEST

START_TEST(test_objects_have_exact_headers_slots_and_payloads)
{
    heap_t *h = new_heap(0);
    static const uint32_t nrefs_set[] = { 0, 1, 5 };
    enum { NP = 601 };
    uint64_t offs[3][NP];
    uint64_t requested = 0;
    for (size_t r = 0; r < 3; r++) {
        uint32_t nrefs = nrefs_set[r];
        for (uint64_t p = 0; p < NP; p++) {
            uint64_t off = 0;
            uint32_t type = (uint32_t)(r * 1000 + p + 1);
            heap_status s = heap_obj_new(h, type, nrefs, p, &off);
            MUST(s == HEAP_OK, "heap_obj_new(nrefs %u, payload %llu) = %d: %s",
                 nrefs, U(p), s, heap_errmsg(h));
            const heap_obj *o = heap_obj_at(h, off);
            uint64_t want = HEAP_OBJ_HEADER + 8 * (uint64_t)nrefs + p;
            MUST(off % HEAP_ALIGN == 0 && heap_is_live(h, off), "object %llu", U(off));
            MUST(heap_obj_refcount(o) == 0, "payload %llu: count %llu", U(p),
                 U(heap_obj_refcount(o)));
            MUST((o->rc_bits >> 52) == 0, "payload %llu: flags set: %llx", U(p),
                 U(o->rc_bits));
            MUST(o->type == type && o->nrefs == nrefs, "payload %llu: type %u nrefs %u",
                 U(p), o->type, o->nrefs);
            for (uint32_t k = 0; k < nrefs; k++)
                MUST(heap_obj_slots(h, off)[k] == 0, "payload %llu: slot %u not 0", U(p), k);
            MUST((uint8_t *)heap_obj_payload(h, off) ==
                 (uint8_t *)heap_ptr(h, off) + HEAP_OBJ_HEADER + 8 * nrefs, "payload pointer");
            MUST(first_nonzero(heap_obj_payload(h, off), p) == UINT64_MAX,
                 "payload of %llu bytes not zeroed", U(p));
            MUST(heap_obj_payload_size(h, off) == p, "nrefs %u: payload size %llu, asked %llu",
                 nrefs, U(heap_obj_payload_size(h, off)), U(p));
            MUST(heap_obj_size(h, off) == want, "nrefs %u payload %llu: heap_obj_size %llu",
                 nrefs, U(p), U(heap_obj_size(h, off)));
            MUST(heap_block_size(h, off) >= want, "block smaller than the object");
            MUST(heap_check_ref(h, off) == HEAP_OK, "heap_check_ref(object %llu)", U(off));
            offs[r][p] = off;
            requested += want;
            if (p > 0) {
                heap_mark_dirty(h, off + HEAP_OBJ_HEADER + 8 * (uint64_t)nrefs, p);
                pattern_into(heap_obj_payload(h, off), p, off);
            }
        }
    }

    /* Run-sized and huge payloads. */
    const uint64_t big[] = { 20000, HEAP_RUN_MAX - HEAP_OBJ_HEADER,
                             HEAP_RUN_MAX - HEAP_OBJ_HEADER + 1, 3 * MiB + 3 };
    uint64_t boffs[4];
    for (size_t i = 0; i < 4; i++) {
        uint64_t off;
        ck_assert_int_eq(heap_obj_new(h, 77, 3, big[i], &off), HEAP_OK);
        const heap_obj *o = heap_obj_at(h, off);
        ck_assert_uint_eq(heap_obj_refcount(o), 0);
        ck_assert_uint_eq(o->type, 77);
        ck_assert_uint_eq(o->nrefs, 3);
        ck_assert_msg(heap_obj_payload_size(h, off) == big[i], "payload %llu: size %llu",
                      U(big[i]), U(heap_obj_payload_size(h, off)));
        ck_assert_uint_eq(heap_obj_size(h, off), HEAP_OBJ_HEADER + 24 + big[i]);
        ck_assert(first_nonzero(heap_obj_payload(h, off), big[i]) == UINT64_MAX);
        for (int k = 0; k < 3; k++)
            ck_assert_uint_eq(heap_obj_slots(h, off)[k], 0);
        boffs[i] = off;
        requested += HEAP_OBJ_HEADER + 24 + big[i];
    }

    heap_stats st;
    heap_get_stats(h, &st);
    ck_assert_msg(st.requested_bytes == requested, "requested_bytes %llu, objects %llu",
                  U(st.requested_bytes), U(requested));

    /* The count round-trips and leaves the rest of the header alone. */
    uint64_t obj = offs[2][37];
    const uint64_t counts[] = { 1, 2, 12345, UINT64_C(1) << 32, HEAP_MAX_REFCOUNT, 0 };
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        ck_assert_int_eq(heap_obj_set_refcount(h, obj, counts[i]), HEAP_OK);
        ck_assert_uint_eq(heap_obj_refcount(heap_obj_at(h, obj)), counts[i]);
        ck_assert_uint_eq(heap_obj_payload_size(h, obj), 37);
        ck_assert_uint_eq(heap_obj_at(h, obj)->nrefs, 5);
    }
    ck_assert_int_eq(heap_obj_set_refcount(h, obj, 99), HEAP_OK);
    ck_assert_int_eq(heap_obj_set_refcount(h, obj, HEAP_MAX_REFCOUNT + 1), HEAP_EINVAL);
    ck_assert_int_eq(heap_obj_set_refcount(h, obj, UINT64_MAX), HEAP_EINVAL);
    ck_assert_uint_eq(heap_obj_refcount(heap_obj_at(h, obj)), 99);
    ck_assert_uint_eq(heap_obj_payload_size(h, obj), 37);
    ck_assert_int_eq(heap_obj_set_refcount(h, boffs[3], HEAP_MAX_REFCOUNT), HEAP_OK);

    /* Sizes and counts are persisted. */
    commit(h);
    heap_close(h);
    h = open_heap(g_path);
    for (size_t r = 0; r < 3; r++) {
        for (uint64_t p = 0; p < NP; p++) {
            uint64_t off = offs[r][p];
            MUST(heap_obj_payload_size(h, off) == p, "after reopen: payload size %llu, not %llu",
                 U(heap_obj_payload_size(h, off)), U(p));
            MUST(heap_obj_at(h, off)->nrefs == nrefs_set[r], "after reopen: nrefs");
            if (p > 0)
                MUST(pattern_mismatch(h, off + HEAP_OBJ_HEADER + 8 * (uint64_t)nrefs_set[r],
                                      p, off) == UINT64_MAX, "after reopen: payload bytes");
        }
    }
    ck_assert_uint_eq(heap_obj_refcount(heap_obj_at(h, obj)), 99);
    ck_assert_uint_eq(heap_obj_refcount(heap_obj_at(h, boffs[3])), HEAP_MAX_REFCOUNT);
    for (size_t i = 0; i < 4; i++)
        ck_assert_uint_eq(heap_obj_payload_size(h, boffs[i]), big[i]);
    heap_close(h);
}
END_TEST

START_TEST(test_stats_count_pools_and_blocks_per_class)
{
    heap_t *h = new_heap(0);
    heap_stats st;
    heap_get_stats(h, &st);
    uint64_t arenas = heap_size(h) / HEAP_ARENA_SIZE;
    ck_assert_uint_eq(st.arenas, arenas);
    ck_assert_uint_eq(st.arenas_free, arenas);
    ck_assert_uint_eq(st.pools_total, arenas * HEAP_DATA_POOLS);
    ck_assert_uint_eq(st.pools_free, arenas * HEAP_DATA_POOLS);
    ck_assert_uint_eq(st.live_blocks, 0);
    ck_assert_uint_eq(st.live_bytes, 0);
    ck_assert_uint_eq(st.run_blocks, 0);
    ck_assert_uint_eq(st.file_bytes, heap_file_size(h));
    for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
        ck_assert_uint_eq(st.cls[c].block_size, (c + 1) * HEAP_ALIGN);
        ck_assert_uint_eq(st.cls[c].pools, 0);
        ck_assert_uint_eq(st.cls[c].blocks_used, 0);
        ck_assert_uint_eq(st.cls[c].blocks_free, 0);
    }

    /* class 0: 10 of 1024; class 2 (48 B): one full pool of 341; class 31:
     * 33 blocks of 512 over two pools of 32; class 6 (112 B): 1 of 146;
     * 3 runs of 2 pools. */
    struct { uint64_t size; size_t n; } plan[] = {
        { 16, 10 }, { 48, 341 }, { 512, 33 }, { 100, 1 }, { 20000, 3 },
    };
    uint64_t offs[400];
    size_t n = 0;
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++)
        for (size_t k = 0; k < plan[i].n; k++)
            offs[n++] = must_alloc(h, plan[i].size);
    heap_get_stats(h, &st);
    uint64_t want_used[HEAP_NCLASSES] = { 0 }, want_pools[HEAP_NCLASSES] = { 0 };
    want_used[0] = 10, want_pools[0] = 1;
    want_used[2] = 341, want_pools[2] = 1;
    want_used[31] = 33, want_pools[31] = 2;
    want_used[6] = 1, want_pools[6] = 1;
    for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
        uint64_t cap = HEAP_POOL_SIZE / heap_class_size(c);
        ck_assert_msg(st.cls[c].pools == want_pools[c], "cls %u: %llu pools, want %llu",
                      c, U(st.cls[c].pools), U(want_pools[c]));
        ck_assert_msg(st.cls[c].blocks_used == want_used[c], "cls %u: %llu used, want %llu",
                      c, U(st.cls[c].blocks_used), U(want_used[c]));
        ck_assert_msg(st.cls[c].blocks_free == want_pools[c] * cap - want_used[c],
                      "cls %u: %llu free, want %llu", c, U(st.cls[c].blocks_free),
                      U(want_pools[c] * cap - want_used[c]));
    }
    ck_assert_uint_eq(st.run_blocks, 3);
    ck_assert_uint_eq(st.run_bytes, 3 * 2 * HEAP_POOL_SIZE);
    ck_assert_uint_eq(st.live_blocks, n);
    ck_assert_uint_eq(st.live_bytes, 10 * 16 + 341 * 48 + 33 * 512 + 112 + 3 * 2 * HEAP_POOL_SIZE);
    ck_assert_uint_eq(st.arenas, arenas);
    ck_assert_uint_eq(st.pools_total, arenas * HEAP_DATA_POOLS);
    ck_assert_uint_eq(st.pools_free, arenas * HEAP_DATA_POOLS - 11);
    ck_assert_uint_eq(st.arenas_free, arenas - 1);   /* fullest arena first */
    ck_assert_msg(st.fragmentation >= 0.0 && st.fragmentation < 1.0, "fragmentation %g",
                  st.fragmentation);

    /* Half of class 0 freed: the pool stays, the counts move. */
    for (size_t i = 0; i < 5; i++)
        must_free(h, offs[i]);
    heap_get_stats(h, &st);
    ck_assert_uint_eq(st.cls[0].pools, 1);
    ck_assert_uint_eq(st.cls[0].blocks_used, 5);
    ck_assert_uint_eq(st.cls[0].blocks_free, 1024 - 5);
    ck_assert_uint_eq(st.live_blocks, n - 5);

    /* Everything freed: every pool goes back. */
    for (size_t i = 5; i < n; i++)
        must_free(h, offs[i]);
    heap_get_stats(h, &st);
    for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
        ck_assert_msg(st.cls[c].pools == 0, "cls %u keeps %llu pools", c, U(st.cls[c].pools));
        ck_assert_uint_eq(st.cls[c].blocks_used, 0);
        ck_assert_uint_eq(st.cls[c].blocks_free, 0);
    }
    ck_assert_uint_eq(st.live_blocks, 0);
    ck_assert_uint_eq(st.live_bytes, 0);
    ck_assert_uint_eq(st.run_blocks, 0);
    ck_assert_uint_eq(st.run_bytes, 0);
    ck_assert_uint_eq(st.pools_free, st.pools_total);
    ck_assert_uint_eq(st.arenas_free, st.arenas);
    heap_close(h);
}
END_TEST

/* ------------------------------------------------------------------ */
/* the randomized run                                                   */

START_TEST(test_a_million_random_operations_agree_with_a_model)
{
    /* A million in every build: it takes a few seconds even under ASan.
     * Should it ever get slow there, scale down on ts_under_sanitizer(). */
    const uint64_t ops = 1000000;
    const uint64_t every = ops / 20;
    const size_t cap = 40000;
    struct blk *live = malloc(cap * sizeof *live);
    struct blk *scratch = malloc(cap * sizeof *scratch);
    ck_assert(live != NULL && scratch != NULL);
    size_t n = 0;
    g_rng = UINT64_C(20240611);
    heap_t *h = new_heap(0);
    uint64_t allocs = 0, frees = 0, runs = 0, huge = 0;

    for (uint64_t op = 1; op <= ops; op++) {
        if (n > 0 && (rnd() % 16000 < n || n == cap)) {
            size_t i = (size_t)(rnd() % n);
            uint64_t off = live[i].off;
            heap_status s = heap_free(h, off);
            MUST(s == HEAP_OK, "op %llu: heap_free(%llu) = %d: %s", U(op), U(off), s,
                 heap_errmsg(h));
            MUST(!heap_is_live(h, off), "op %llu: %llu live after free", U(op), U(off));
            live[i] = live[--n];
            frees++;
        } else {
            uint64_t size = rnd_size(), off = 0;
            heap_status s = heap_alloc(h, size, &off);
            MUST(s == HEAP_OK, "op %llu: heap_alloc(%llu) = %d: %s", U(op), U(size), s,
                 heap_errmsg(h));
            MUST(off % HEAP_ALIGN == 0 && off != 0, "op %llu: offset %llu", U(op), U(off));
            MUST(heap_block_size(h, off) >= size, "op %llu: block %llu too small for %llu",
                 U(op), U(off), U(size));
            uint64_t nz = first_nonzero(heap_ptr(h, off), size);
            MUST(nz == UINT64_MAX, "op %llu: block %llu (size %llu) not zeroed at +%llu",
                 U(op), U(off), U(size), U(nz));
            fill(h, off, size, op);
            live[n++] = (struct blk){ off, size, op };
            allocs++;
            runs += size > HEAP_POOL_SIZE && size <= HEAP_RUN_MAX;
            huge += size > HEAP_RUN_MAX;
        }
        if (op % every == 0) {
            char where[64];
            snprintf(where, sizeof where, "checkpoint at op %llu", U(op));
            check_model(h, live, n, scratch, where);
        }
    }
    check_model(h, live, n, scratch, "the end");
    ck_assert_msg(runs > 100 && huge > 3, "the run met %llu runs and %llu huge blocks",
                  U(runs), U(huge));
    ck_assert(allocs + frees == ops);

    /* Everything freed leaves an empty heap. */
    while (n > 0)
        must_free(h, live[--n].off);
    check_model(h, live, 0, scratch, "after freeing everything");
    heap_close(h);
    free(live);
    free(scratch);
}
END_TEST

/* Transactions of random length, each committed (writeback) or discarded at
 * random; the model follows, restoring its snapshot on discard.  Now and
 * then the heap is closed and reopened, or its clean pages dropped. */
START_TEST(test_random_transactions_that_commit_or_discard_agree_with_a_model)
{
    const size_t cap = 20000;
    struct blk *live = malloc(cap * sizeof *live);
    struct blk *saved = malloc(cap * sizeof *saved);
    struct blk *scratch = malloc(cap * sizeof *scratch);
    ck_assert(live != NULL && saved != NULL && scratch != NULL);
    size_t n = 0, nsaved = 0;
    g_rng = UINT64_C(777);
    heap_t *h = new_heap(MiB);
    uint64_t seed = 1, commits = 0, discards = 0, size_saved = heap_size(h);

    for (int txn = 1; txn <= 300; txn++) {
        uint64_t ops = rnd_range(1, 1500);
        for (uint64_t k = 0; k < ops; k++) {
            uint64_t r = rnd() % 8000;
            if (n > 0 && (r < n || n == cap)) {
                size_t i = (size_t)(rnd() % n);
                must_free(h, live[i].off);
                live[i] = live[--n];
            } else if (n > 0 && r % 10 == 0) {   /* change a block in place */
                size_t i = (size_t)(rnd() % n);
                live[i].seed = seed++;
                fill(h, live[i].off, live[i].size, live[i].seed);
            } else {
                uint64_t size = rnd_size(), off = must_alloc(h, size);
                MUST(first_nonzero(heap_ptr(h, off), size) == UINT64_MAX,
                     "txn %d: block %llu not zeroed", txn, U(off));
                live[n] = (struct blk){ off, size, seed++ };
                fill(h, off, size, live[n].seed);
                n++;
            }
        }
        char where[64];
        if (rnd() % 3 == 0) {
            heap_status s = heap_discard(h);
            MUST(s == HEAP_OK, "txn %d: heap_discard = %d: %s", txn, s, heap_errmsg(h));
            memcpy(live, saved, nsaved * sizeof *live);
            n = nsaved;
            MUST(heap_size(h) == size_saved, "txn %d: heap_size %llu after discard, "
                 "committed %llu", txn, U(heap_size(h)), U(size_saved));
            snprintf(where, sizeof where, "txn %d discarded", txn);
            discards++;
        } else {
            commit(h);
            memcpy(saved, live, n * sizeof *live);
            nsaved = n;
            size_saved = heap_size(h);
            snprintf(where, sizeof where, "txn %d committed", txn);
            commits++;
            if (rnd() % 4 == 0)
                heap_drop_clean(h);
        }
        MUST(heap_dirty_bytes(h) == 0, "%s: %llu bytes still dirty", where,
             U(heap_dirty_bytes(h)));
        if (txn % 10 == 0)
            check_model(h, live, n, scratch, where);
        if (txn % 50 == 0) {
            heap_close(h);
            h = open_heap(g_path);
            MUST(heap_size(h) == size_saved, "txn %d: reopened at %llu bytes, committed %llu",
                 txn, U(heap_size(h)), U(size_saved));
            check_model(h, live, n, scratch, "after reopen");
        }
    }
    check_model(h, live, n, scratch, "the end");
    ck_assert(commits > 50 && discards > 50);
    heap_close(h);
    free(live);
    free(saved);
    free(scratch);
}
END_TEST

/* ------------------------------------------------------------------ */
/* persistence                                                          */

START_TEST(test_create_records_geometry_uuid_generation_and_refuses_an_existing_file)
{
    uint8_t uuid[16];
    for (int i = 0; i < 16; i++)
        uuid[i] = (uint8_t)(0xC0 + i);
    heap_create_opts o = { .initial_bytes = 3 * MiB / 2, .generation = 42, .uuid = uuid };
    char msg[HEAP_MSG_MAX] = "";
    ck_assert_int_eq(heap_create(g_path, &o, msg), HEAP_OK);
    msg[0] = '\0';
    ck_assert_int_eq(heap_create(g_path, &o, msg), HEAP_EEXIST);
    ck_assert(msg_ok(msg));

    heap_t *h = open_heap(g_path);
    ck_assert_uint_eq(heap_size(h), 2 * MiB);      /* rounded up to arenas */
    ck_assert_uint_ge(heap_file_size(h), heap_size(h));
    ck_assert_uint_eq(heap_generation(h), 42);
    ck_assert_mem_eq(heap_uuid(h), uuid, 16);
    ck_assert(!heap_readonly(h));
    ck_assert_ptr_nonnull(heap_base(h));
    uint64_t cursor = 0, off;
    ck_assert(!heap_next_live(h, &cursor, &off));
    const heap_range *r;
    ck_assert_uint_eq(heap_dirty_ranges(h, &r), 0);
    ck_assert_uint_eq(heap_dirty_bytes(h), 0);
    heap_close(h);

    struct stat sb;
    ck_assert_int_eq(stat(g_path, &sb), 0);
    ck_assert_uint_ge((uint64_t)sb.st_size, 2 * MiB);

    /* Defaults: 4 MiB, a fresh random uuid each time. */
    char *p2 = ts_path(g_dir, "heap.2"), *p3 = ts_path(g_dir, "heap.3");
    create_heap(p2, 0);
    create_heap(p3, 0);
    heap_t *a = open_heap(p2), *b = open_heap(p3);
    ck_assert_uint_eq(heap_size(a), 4 * MiB);
    ck_assert_msg(memcmp(heap_uuid(a), heap_uuid(b), 16) != 0, "two heaps share a uuid");
    heap_close(a);
    heap_close(b);
    free(p2);
    free(p3);
}
END_TEST

START_TEST(test_writeback_then_reopen_keeps_every_block)
{
    g_rng = 99;
    heap_t *h = new_heap(MiB);
    enum { N = 3000 };
    static struct blk b[N + 50], scratch[N + 50];
    alloc_filled(h, b, N - 4, 0, 1);
    alloc_filled(h, b + N - 4, 2, 200 * KiB, 5000);
    alloc_filled(h, b + N - 2, 2, 2 * MiB + 1, 6000);
    /* some frees, so the file holds holes too */
    for (size_t i = 0; i < 500; i++)
        must_free(h, b[i].off);
    struct blk *keep = b + 500;
    size_t n = N - 500;
    commit(h);
    ck_assert_uint_eq(heap_dirty_bytes(h), 0);
    heap_stats st1, st2;
    heap_get_stats(h, &st1);
    uint64_t size1 = heap_size(h);
    check_model(h, keep, n, scratch, "before close");
    heap_close(h);

    h = open_heap(g_path);
    ck_assert_uint_eq(heap_size(h), size1);
    check_model(h, keep, n, scratch, "after reopen");
    heap_get_stats(h, &st2);
    assert_stats_equal(&st1, &st2);
    /* and the reopened heap goes on allocating without touching them */
    alloc_filled(h, keep + n, 50, 0, 90000);
    check_model(h, keep, n + 50, scratch, "after more allocations");
    heap_close(h);
}
END_TEST

START_TEST(test_closing_without_writeback_forgets_unwritten_changes)
{
    heap_t *h = new_heap(0);
    uint64_t a = must_alloc(h, 300);
    fill(h, a, 300, 1);
    commit(h);
    uint64_t b = must_alloc(h, 300), c = must_alloc(h, 70000);
    fill(h, b, 300, 2);
    fill(h, c, 70000, 3);
    fill(h, a, 300, 4);
    heap_close(h);

    h = open_heap(g_path);
    ck_assert(heap_is_live(h, a));
    must_hold(h, a, 300, 1);
    ck_assert(b == a || !heap_is_live(h, b));
    ck_assert(!heap_is_live(h, c));
    heap_stats st;
    heap_get_stats(h, &st);
    ck_assert_uint_eq(st.live_blocks, 1);
    heap_close(h);
}
END_TEST

START_TEST(test_growth_past_the_initial_size_keeps_the_base_address)
{
    g_rng = 7;
    heap_t *h = new_heap(MiB);
    ck_assert_uint_eq(heap_size(h), MiB);
    uint8_t *base = heap_base(h);
    static struct blk b[4000], scratch[4000];
    size_t n = 0;
    uint64_t asked = 0;
    while (asked < 20 * MiB) {
        uint64_t size = n % 25 == 24 ? 3 * MiB / 2 : n % 5 == 4 ? 300 * KiB : rnd_range(1, 600);
        b[n] = (struct blk){ must_alloc(h, size), size, n + 1 };
        ck_assert_msg(heap_base(h) == base, "the base moved after %zu allocations", n + 1);
        fill(h, b[n].off, size, b[n].seed);
        asked += size;
        n++;
        ck_assert(n < 4000);
    }
    ck_assert_uint_ge(heap_size(h), 20 * MiB);
    ck_assert_uint_ge(heap_file_size(h), heap_size(h));
    check_model(h, b, n, scratch, "after growth");
    commit(h);
    ck_assert(heap_base(h) == base);
    uint64_t size = heap_size(h);
    heap_close(h);
    h = open_heap(g_path);
    ck_assert_uint_eq(heap_size(h), size);
    check_model(h, b, n, scratch, "after reopen");
    heap_close(h);
}
END_TEST

START_TEST(test_discard_brings_back_the_committed_bytes_and_allocation_state)
{
    g_rng = 31337;
    heap_t *h = new_heap(MiB);
    enum { NA = 300, NB = 400 };
    static struct blk a[NA], bb[NB], scratch[NA + NB];
    alloc_filled(h, a, NA - 5, 0, 1);
    alloc_filled(h, a + NA - 5, 4, 50 * KiB, 1000);
    alloc_filled(h, a + NA - 1, 1, 3 * MiB / 2, 2000);
    commit(h);
    uint64_t size0 = heap_size(h);
    heap_stats st0, st1;
    heap_get_stats(h, &st0);

    /* A transaction: frees, in-place changes, allocations that grow. */
    for (size_t i = 0; i < NA; i += 2)
        must_free(h, a[i].off);
    for (size_t i = 1; i < NA; i += 4)
        fill(h, a[i].off, a[i].size, a[i].seed + 77777);
    for (size_t i = 0; i < NB; i++) {
        uint64_t size = i % 40 == 0 ? 5 * MiB / 4 : i % 10 == 0 ? 100 * KiB : rnd_range(1, 600);
        bb[i] = (struct blk){ must_alloc(h, size), size, 50000 + i };
        fill(h, bb[i].off, size, bb[i].seed);
    }
    ck_assert_msg(heap_size(h) > size0, "the heap did not grow (%llu)", U(heap_size(h)));

    heap_status s = heap_discard(h);
    ck_assert_msg(s == HEAP_OK, "heap_discard = %d: %s", s, heap_errmsg(h));
    ck_assert_uint_eq(heap_size(h), size0);
    ck_assert_uint_eq(heap_dirty_bytes(h), 0);
    check_model(h, a, NA, scratch, "after discard");
    for (size_t i = 0; i < NB; i++) {
        bool was_committed = false;
        for (size_t k = 0; k < NA; k++)
            was_committed |= a[k].off == bb[i].off;
        ck_assert_msg(was_committed || !heap_is_live(h, bb[i].off),
                      "block %llu allocated after the commit is live after discard",
                      U(bb[i].off));
    }
    heap_get_stats(h, &st1);
    assert_stats_equal(&st0, &st1);

    /* The heap goes on: allocate, commit, reopen. */
    struct blk all[NA + 20];
    memcpy(all, a, sizeof a);
    alloc_filled(h, all + NA, 20, 0, 70000);
    commit(h);
    heap_close(h);
    h = open_heap(g_path);
    check_model(h, all, NA + 20, scratch, "after discard, commit and reopen");
    heap_close(h);
}
END_TEST

START_TEST(test_dropping_clean_pages_keeps_their_bytes)
{
    g_rng = 4242;
    heap_t *h = new_heap(0);
    static struct blk b[500], scratch[500];
    alloc_filled(h, b, 500, 0, 1);
    commit(h);
    uint64_t priv = heap_private_bytes(h);
    heap_drop_clean(h);
    ck_assert_uint_le(heap_private_bytes(h), priv);
    check_model(h, b, 500, scratch, "after heap_drop_clean");
    /* dropped pages are the file's: a discarded change reverts to them */
    fill(h, b[10].off, b[10].size, 999);
    ck_assert_int_eq(heap_discard(h), HEAP_OK);
    check_model(h, b, 500, scratch, "after drop_clean then discard");
    heap_close(h);
}
END_TEST

/* Arenas grown in a transaction are mapped shared: what is written there
 * is in the page cache at once, so it is not tracked line by line (a commit
 * only syncs it), and it is there after the sync and a reopen. */
/* A transaction's growth that held only its own garbage is cut at commit;
 * cut back to the committed length, it owes no sync, and the file is that
 * long again.  A growth that keeps a live block still owes one. */
START_TEST(test_a_growth_cut_back_to_the_committed_length_owes_no_sync)
{
    heap_t *h = new_heap(0);
    commit(h);
    uint64_t committed = heap_size(h);
    uint64_t big = must_alloc(h, 2 * committed);   /* grows the heap */
    ck_assert_uint_gt(heap_size(h), committed);
    ck_assert(heap_size_unsynced(h));
    must_free(h, big);
    ck_assert_int_eq(heap_cut_fresh_tail(h, committed), HEAP_OK);
    ck_assert_uint_eq(heap_size(h), committed);
    ck_assert(!heap_size_unsynced(h));
    struct stat sb;
    ck_assert_int_eq(stat(g_path, &sb), 0);
    ck_assert_uint_eq((uint64_t)sb.st_size, committed);

    /* Grown again, and part of it kept: the new length must be synced. */
    big = must_alloc(h, 2 * committed);
    uint64_t kept = must_alloc(h, committed + HEAP_ARENA_SIZE);
    must_free(h, big);
    ck_assert_int_eq(heap_cut_fresh_tail(h, committed), HEAP_OK);
    ck_assert_uint_gt(heap_size(h), committed);
    ck_assert(heap_is_live(h, kept));
    ck_assert(heap_size_unsynced(h));
    commit(h);
    ck_assert(!heap_size_unsynced(h));
    heap_close(h);
}
END_TEST

START_TEST(test_bytes_in_arenas_grown_this_transaction_are_untracked_and_reach_the_file)
{
    heap_t *h = new_heap(0);
    commit(h);
    ck_assert_uint_eq(heap_fresh_from(h), UINT64_MAX);
    uint64_t len = 2 * heap_size(h);   /* more than the heap has: it grows */
    uint64_t blk = must_alloc(h, len);
    uint64_t fresh = heap_fresh_from(h);
    ck_assert_msg(fresh != UINT64_MAX && fresh < blk + len,
                  "block [%llu, +%llu) not in the grown range from %llu", U(blk), U(len),
                  U(fresh));
    fill(h, blk, len, 99);
    const heap_range *r;
    size_t nr = heap_dirty_ranges(h, &r);
    ck_assert_uint_gt(nr, 0);   /* the header and the tables below it */
    for (size_t i = 0; i < nr; i++)
        ck_assert_msg(r[i].off + r[i].len <= fresh, "dirty range [%llu, +%llu) in the "
                      "grown range from %llu", U(r[i].off), U(r[i].len), U(fresh));
    commit(h);
    ck_assert_uint_eq(heap_fresh_from(h), UINT64_MAX);
    heap_close(h);

    h = open_heap(g_path);
    ck_assert(heap_is_live(h, blk));
    must_hold(h, blk, len, 99);
    fill(h, blk + len - 64, 64, 5);   /* mapped private again: tracked */
    nr = heap_dirty_ranges(h, &r);
    ck_assert_uint_eq(nr, 1);
    ck_assert_uint_eq(r[0].off, blk + len - 64);
    heap_close(h);
}
END_TEST

START_TEST(test_dirty_ranges_are_aligned_sorted_coalesced_and_cover_every_mark)
{
    heap_t *h = new_heap(0);
    const heap_range *r;
    ck_assert_uint_eq(heap_dirty_ranges(h, &r), 0);
    enum { LEN = 8 * HEAP_POOL_SIZE, LINES = LEN / HEAP_LINE_SIZE };
    uint64_t blk = must_alloc(h, LEN);

    /* heap_alloc marks the block (and its metadata) dirty itself. */
    size_t nr = heap_dirty_ranges(h, &r);
    uint64_t covered = 0;
    for (size_t i = 0; i < nr; i++) {
        uint64_t lo = r[i].off > blk ? r[i].off : blk;
        uint64_t hi = r[i].off + r[i].len < blk + LEN ? r[i].off + r[i].len : blk + LEN;
        if (hi > lo)
            covered += hi - lo;
    }
    ck_assert_msg(covered == LEN, "a fresh block is %llu of %u bytes dirty", U(covered), LEN);

    commit(h);
    ck_assert_uint_eq(heap_dirty_ranges(h, &r), 0);
    ck_assert_uint_eq(heap_dirty_bytes(h), 0);

    static const struct { uint64_t off, len; } marks[] = {
        { 0, 1 }, { 1, 1 }, { 100, 10 }, { 128, 64 }, { 1000, 1 }, { 4095, 2 },
        { 8192, 4096 }, { 8192 + 4096, 1 }, { 30000, 5000 }, { 50000, 64 },
        { 49990, 100 }, { 64 * 300, 64 }, { 64 * 302, 64 }, { LEN - 1, 1 },
        { 70001, 63 }, { 90000, 130 }, { 89990, 5 },
    };
    bool want[LINES] = { false };
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        heap_mark_dirty(h, blk + marks[i].off, marks[i].len);
        for (uint64_t l = marks[i].off / 64; l <= (marks[i].off + marks[i].len - 1) / 64; l++)
            want[l] = true;
    }
    nr = heap_dirty_ranges(h, &r);
    ck_assert_uint_gt(nr, 0);
    bool got[LINES] = { false };
    uint64_t sum = 0;
    for (size_t i = 0; i < nr; i++) {
        ck_assert_msg(r[i].off % HEAP_LINE_SIZE == 0 && r[i].len % HEAP_LINE_SIZE == 0 &&
                      r[i].len > 0, "range %zu: %llu+%llu is not whole lines",
                      i, U(r[i].off), U(r[i].len));
        if (i > 0)
            ck_assert_msg(r[i].off > r[i - 1].off + r[i - 1].len,
                          "ranges %zu and %zu are unsorted, overlapping or adjacent: "
                          "%llu+%llu, %llu+%llu", i - 1, i, U(r[i - 1].off),
                          U(r[i - 1].len), U(r[i].off), U(r[i].len));
        ck_assert_msg(r[i].off >= blk && r[i].off + r[i].len <= blk + LEN,
                      "range %llu+%llu lies outside what was marked", U(r[i].off), U(r[i].len));
        for (uint64_t l = (r[i].off - blk) / 64; l < (r[i].off - blk + r[i].len) / 64; l++)
            got[l] = true;
        sum += r[i].len;
    }
    for (unsigned l = 0; l < LINES; l++)
        ck_assert_msg(got[l] == want[l], "line %u (+%u): dirty %d, marked %d",
                      l, l * 64, got[l], want[l]);
    ck_assert_uint_eq(heap_dirty_bytes(h), sum);

    commit(h);
    ck_assert_uint_eq(heap_dirty_ranges(h, &r), 0);
    ck_assert_uint_eq(heap_dirty_bytes(h), 0);

    /* a marked line spanning the whole block collapses to one range */
    heap_mark_dirty(h, blk, LEN);
    nr = heap_dirty_ranges(h, &r);
    ck_assert_uint_eq(nr, 1);
    ck_assert_uint_eq(r[0].off, blk);
    ck_assert_uint_eq(r[0].len, LEN);
    heap_close(h);
}
END_TEST

START_TEST(test_write_range_then_mark_clean_commits_in_pieces)
{
    heap_t *h = new_heap(0);
    struct blk b[3] = { { 0, 3000, 1 }, { 0, 5000, 1 }, { 0, 200 * KiB, 1 } };
    for (size_t i = 0; i < 3; i++) {
        b[i].off = must_alloc(h, b[i].size);
        fill(h, b[i].off, b[i].size, b[i].seed);
    }
    commit(h);
    for (size_t i = 0; i < 3; i++)
        fill(h, b[i].off, b[i].size, b[i].seed = 10 + i);
    uint64_t dirty = heap_dirty_bytes(h);
    ck_assert_uint_gt(dirty, 0);

    /* Write what lies in blocks 2 then 0, in two passes; leave block 1. */
    const heap_range *r;
    size_t nr = heap_dirty_ranges(h, &r);
    heap_range *copy = malloc(nr * sizeof *copy);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, r, nr * sizeof *copy);
    const size_t order[2] = { 2, 0 };
    for (size_t pass = 0; pass < 2; pass++) {
        const struct blk *w = &b[order[pass]];
        for (size_t i = 0; i < nr; i++) {
            if (copy[i].off < w->off + w->size && copy[i].off + copy[i].len > w->off) {
                heap_status s = heap_write_range(h, copy[i].off, copy[i].len);
                ck_assert_msg(s == HEAP_OK, "heap_write_range = %d: %s", s, heap_errmsg(h));
                ck_assert_msg(!(copy[i].off < b[1].off + b[1].size &&
                                copy[i].off + copy[i].len > b[1].off),
                              "blocks 1 and %zu share a dirty range", order[pass]);
            }
        }
        ck_assert_uint_eq(heap_dirty_bytes(h), dirty);   /* the set stays */
    }
    free(copy);
    ck_assert_int_eq(heap_write_range(h, b[0].off, 0), HEAP_OK);
    ck_assert_int_eq(heap_write_range(h, UINT64_MAX - 10, 100), HEAP_EINVAL);
    heap_mark_clean(h);
    ck_assert_uint_eq(heap_dirty_bytes(h), 0);
    ck_assert_uint_eq(heap_dirty_ranges(h, &r), 0);
    for (size_t i = 0; i < 3; i++)   /* RAM keeps every change */
        must_hold(h, b[i].off, b[i].size, b[i].seed);
    ck_assert_int_eq(heap_sync(h), HEAP_OK);
    heap_close(h);

    h = open_heap(g_path);
    must_hold(h, b[0].off, b[0].size, 10);
    must_hold(h, b[2].off, b[2].size, 12);
    must_hold(h, b[1].off, b[1].size, 1);   /* never written */
    heap_close(h);
}
END_TEST

START_TEST(test_apply_without_file_changes_ram_only_and_with_file_persists)
{
    heap_t *h = new_heap(0);
    const uint64_t len = 5000;
    uint64_t off = must_alloc(h, len);
    fill(h, off, len, 1);
    commit(h);
    heap_close(h);
    uint8_t *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);

    h = open_heap(g_path);
    pattern_into(buf, len, 2);
    ck_assert_int_eq(heap_apply(h, off + 3, buf, len - 3, false), HEAP_OK);
    ck_assert_mem_eq((uint8_t *)heap_ptr(h, off) + 3, buf, len - 3);
    heap_close(h);

    h = open_heap(g_path);
    must_hold(h, off, len, 1);
    ck_assert_int_eq(heap_apply(h, off + 3, buf, len - 3, true), HEAP_OK);
    ck_assert_mem_eq((uint8_t *)heap_ptr(h, off) + 3, buf, len - 3);
    ck_assert_int_eq(heap_sync(h), HEAP_OK);
    heap_close(h);

    h = open_heap(g_path);
    ck_assert_mem_eq((uint8_t *)heap_ptr(h, off) + 3, buf, len - 3);
    must_hold(h, off, 3, 1);
    heap_close(h);

    /* a read-only opener replays into its own RAM */
    h = open_flags(g_path, HEAP_OPEN_RDONLY);
    pattern_into(buf, len, 3);
    ck_assert_int_eq(heap_apply(h, off, buf, len, false), HEAP_OK);
    must_hold(h, off, len, 3);
    heap_close(h);
    h = open_heap(g_path);
    pattern_into(buf, len, 2);
    ck_assert_mem_eq((uint8_t *)heap_ptr(h, off) + 3, buf, len - 3);
    must_hold(h, off, 3, 1);
    heap_close(h);

    /* bounds are checked against the reserved range */
    heap_open_opts oo = { .reserve_bytes = 64 * MiB };
    char msg[HEAP_MSG_MAX];
    ck_assert_int_eq(heap_open(g_path, &oo, &h, msg), HEAP_OK);
    ck_assert_int_ne(heap_apply(h, 64 * MiB - 8, buf, 16, false), HEAP_OK);
    ck_assert_int_ne(heap_apply(h, UINT64_MAX - 7, buf, 16, false), HEAP_OK);
    ck_assert_int_ne(heap_apply(h, 1, buf, UINT64_MAX, false), HEAP_OK);
    heap_close(h);
    free(buf);
}
END_TEST

START_TEST(test_releasing_the_tail_shrinks_the_file_after_frees)
{
    g_rng = 5;
    heap_t *h = new_heap(0);
    static struct blk b[700];
    size_t n = 0;
    for (size_t i = 0; i < 100; i++)
        b[n++] = (struct blk){ must_alloc(h, 250 * KiB), 250 * KiB, 0 };
    for (size_t i = 0; i < 3; i++)
        b[n++] = (struct blk){ must_alloc(h, 3 * MiB / 2), 3 * MiB / 2, 0 };
    for (size_t i = 0; i < 500; i++)
        b[n++] = (struct blk){ must_alloc(h, rnd_range(1, 600)), 0, 0 };
    commit(h);
    uint64_t big = heap_size(h);
    ck_assert_uint_ge(big, 28 * MiB);
    for (size_t i = 0; i < n; i++)
        must_free(h, b[i].off);

    uint64_t released = heap_release_tail(h);
    ck_assert_uint_gt(released, 0);
    ck_assert_uint_eq(heap_size(h), big - released * HEAP_ARENA_SIZE);
    ck_assert_uint_ge(heap_size(h), HEAP_ARENA_SIZE);
    ck_assert_msg(heap_size(h) <= 4 * MiB, "an empty heap kept %llu bytes", U(heap_size(h)));
    commit(h);
    heap_status s = heap_truncate(h);
    ck_assert_msg(s == HEAP_OK, "heap_truncate = %d: %s", s, heap_errmsg(h));
    struct stat sb;
    ck_assert_int_eq(stat(g_path, &sb), 0);
    ck_assert_uint_eq((uint64_t)sb.st_size, heap_size(h));
    ck_assert_uint_eq(heap_file_size(h), heap_size(h));

    /* allocation still works, growing again past the cut */
    struct blk c[3] = {
        { must_alloc(h, 100), 100, 1 },
        { must_alloc(h, 60 * KiB), 60 * KiB, 2 },
        { 0, 6 * MiB, 3 },
    };
    c[2].off = must_alloc(h, c[2].size);
    for (size_t i = 0; i < 3; i++)
        fill(h, c[i].off, c[i].size, c[i].seed);
    uint64_t size = heap_size(h);
    commit(h);
    heap_close(h);
    h = open_heap(g_path);
    ck_assert_uint_eq(heap_size(h), size);
    struct blk scratch[3];
    check_model(h, c, 3, scratch, "after shrink, regrowth and reopen");
    heap_close(h);
}
END_TEST

START_TEST(test_a_freed_huge_run_gives_back_whole_arenas)
{
    heap_t *h = new_heap(MiB);
    uint64_t huge = must_alloc(h, 3 * MiB);
    uint64_t bs = heap_block_size(h, huge);
    fill(h, huge, bs, 1);   /* the whole block is the caller's */
    commit(h);
    uint64_t size = heap_size(h);
    must_free(h, huge);
    commit(h);
    heap_close(h);

    h = open_heap(g_path);
    ck_assert_uint_eq(heap_size(h), size);
    heap_stats st;
    heap_get_stats(h, &st);
    ck_assert_uint_eq(st.live_blocks, 0);
    ck_assert_uint_eq(st.arenas_free, st.arenas);
    /* every arena the run covered serves whole-arena runs again, in place */
    struct blk b[8], scratch[8];
    size_t n = 0;
    for (uint64_t a = 0; a < size / HEAP_ARENA_SIZE; a++, n++) {
        b[n] = (struct blk){ must_alloc(h, HEAP_RUN_MAX), HEAP_RUN_MAX, 10 + n };
        fill(h, b[n].off, HEAP_RUN_MAX, b[n].seed);
    }
    ck_assert_msg(heap_size(h) == size, "the heap grew from %llu to %llu to reuse free arenas",
                  U(size), U(heap_size(h)));
    check_model(h, b, n, scratch, "after reusing the arenas");
    commit(h);
    heap_close(h);
    h = open_heap(g_path);
    check_model(h, b, n, scratch, "after reopen");
    heap_close(h);
}
END_TEST

START_TEST(test_a_read_only_heap_refuses_writes)
{
    heap_t *h = new_heap(0);
    uint64_t off = must_alloc(h, 100);
    fill(h, off, 100, 1);
    commit(h);
    heap_close(h);
    h = open_flags(g_path, HEAP_OPEN_RDONLY);
    ck_assert(heap_readonly(h));
    ck_assert(heap_is_live(h, off));
    must_hold(h, off, 100, 1);
    uint64_t o2;
    ck_assert_int_eq(heap_alloc(h, 10, &o2), HEAP_EREADONLY);
    ck_assert_int_eq(heap_free(h, off), HEAP_EREADONLY);
    ck_assert(heap_is_live(h, off));
    heap_close(h);
}
END_TEST

/* ------------------------------------------------------------------ */
/* damaged files                                                        */

static void expect_refused(const char *path, int flags, heap_status want, const char *what)
{
    heap_t *h;
    char msg[HEAP_MSG_MAX];
    heap_status s = try_open(path, flags, &h, msg);
    ck_assert_msg(s == want, "%s: heap_open = %d, want %d (%s)", what, s, want, msg);
    ck_assert_msg(h == NULL, "%s: *out not NULL on failure", what);
    ck_assert_msg(msg_ok(msg), "%s: no message", what);
}

static void read_header(const char *path, struct heap_file_header *hd)
{
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pread(fd, hd, sizeof *hd, 0), (ssize_t)sizeof *hd);
    close(fd);
}

static void write_header(const char *path, struct heap_file_header *hd, bool fix_checksum)
{
    if (fix_checksum)
        hd->checksum = XXH3_64bits(hd, offsetof(struct heap_file_header, checksum));
    int fd = open(path, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, hd, sizeof *hd, 0), (ssize_t)sizeof *hd);
    close(fd);
}

START_TEST(test_the_header_checksum_is_xxh3_of_the_bytes_before_it)
{
    create_heap(g_path, 0);
    struct heap_file_header hd;
    read_header(g_path, &hd);
    ck_assert_mem_eq(hd.magic, HEAP_MAGIC, 8);
    ck_assert_uint_eq(hd.version, HEAP_FORMAT_VERSION);
    ck_assert_uint_eq(hd.header_size, HEAP_HEADER_SIZE);
    ck_assert_uint_eq(hd.arena_size, HEAP_ARENA_SIZE);
    ck_assert_uint_eq(hd.pool_size, HEAP_POOL_SIZE);
    ck_assert_uint_eq(hd.align, HEAP_ALIGN);
    ck_assert_uint_eq(hd.nclasses, HEAP_NCLASSES);
    ck_assert_uint_eq(hd.table_offset, HEAP_TABLE_OFFSET);
    ck_assert_uint_eq(hd.narenas, 4);
    ck_assert_uint_eq(hd.checksum,
                      XXH3_64bits(&hd, offsetof(struct heap_file_header, checksum)));
    /* rewriting it with a fixed checksum changes nothing */
    write_header(g_path, &hd, true);
    heap_close(open_heap(g_path));
}
END_TEST

START_TEST(test_a_bad_magic_is_refused_as_not_a_heap)
{
    create_heap(g_path, 0);
    struct heap_file_header hd;
    read_header(g_path, &hd);
    hd.magic[0] ^= 0x20;
    write_header(g_path, &hd, false);
    expect_refused(g_path, 0, HEAP_EBADMAGIC, "bad magic");
    expect_refused(g_path, HEAP_OPEN_RDONLY, HEAP_EBADMAGIC, "bad magic, read-only");
    write_header(g_path, &hd, true);
    expect_refused(g_path, 0, HEAP_EBADMAGIC, "bad magic with a valid checksum");

    /* any other file */
    char *text = ts_path(g_dir, "text");
    FILE *f = fopen(text, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not a heap file, just some text.\n", f);
    fclose(f);
    expect_refused(text, 0, HEAP_EBADMAGIC, "a text file");
    free(text);
}
END_TEST

START_TEST(test_an_unknown_version_is_refused_even_with_a_valid_checksum)
{
    create_heap(g_path, 0);
    struct heap_file_header hd;
    read_header(g_path, &hd);
    hd.version = HEAP_FORMAT_VERSION + 1;
    write_header(g_path, &hd, true);
    expect_refused(g_path, 0, HEAP_EVERSION, "version 2");
    hd.version = 0;
    write_header(g_path, &hd, true);
    expect_refused(g_path, 0, HEAP_EVERSION, "version 0");
}
END_TEST

START_TEST(test_a_flipped_header_byte_fails_the_checksum)
{
    create_heap(g_path, 0);
    struct heap_file_header orig, hd;
    read_header(g_path, &orig);
    static const size_t at[] = {
        offsetof(struct heap_file_header, uuid) + 5,
        offsetof(struct heap_file_header, generation),
        offsetof(struct heap_file_header, flags) + 3,
        offsetof(struct heap_file_header, reserved) + 17,
        offsetof(struct heap_file_header, checksum) + 7,
    };
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        hd = orig;
        ((uint8_t *)&hd)[at[i]] ^= 0x04;
        write_header(g_path, &hd, false);
        char what[64];
        snprintf(what, sizeof what, "byte %zu flipped", at[i]);
        expect_refused(g_path, 0, HEAP_ECHECKSUM, what);
    }
    write_header(g_path, &orig, false);
    heap_close(open_heap(g_path));
}
END_TEST

START_TEST(test_a_foreign_geometry_is_refused_even_with_a_valid_checksum)
{
    create_heap(g_path, 0);
    struct heap_file_header orig, hd;
    read_header(g_path, &orig);
    struct { size_t at; uint32_t value; const char *what; } geo[] = {
        { offsetof(struct heap_file_header, pool_size), 8192, "pool size 8 KiB" },
        { offsetof(struct heap_file_header, pool_size), 0, "pool size 0" },
        { offsetof(struct heap_file_header, arena_size), 2 << 20, "arena size 2 MiB" },
        { offsetof(struct heap_file_header, align), 8, "alignment 8" },
        { offsetof(struct heap_file_header, nclasses), 64, "64 classes" },
        { offsetof(struct heap_file_header, table_offset), 8192, "table at 8192" },
    };
    for (size_t i = 0; i < sizeof geo / sizeof geo[0]; i++) {
        hd = orig;
        memcpy((uint8_t *)&hd + geo[i].at, &geo[i].value, 4);
        write_header(g_path, &hd, true);
        expect_refused(g_path, 0, HEAP_EGEOMETRY, geo[i].what);
    }
    write_header(g_path, &orig, false);
    heap_close(open_heap(g_path));
}
END_TEST

START_TEST(test_a_truncated_file_is_refused)
{
    create_heap(g_path, 0);
    ck_assert_int_eq(truncate(g_path, 2 * MiB), 0);
    expect_refused(g_path, 0, HEAP_ETRUNCATED, "truncated to half");
    expect_refused(g_path, HEAP_OPEN_RDONLY, HEAP_ETRUNCATED, "truncated to half, read-only");
    ck_assert_int_eq(truncate(g_path, 6000), 0);
    expect_refused(g_path, 0, HEAP_ETRUNCATED, "truncated inside the arena table");
}
END_TEST

START_TEST(test_an_empty_or_header_short_file_is_refused)
{
    /* No header at all: the file is not a heap (EBADMAGIC), or is shorter
     * than a header (ETRUNCATED); either names the problem. */
    int fd = open(g_path, O_CREAT | O_WRONLY | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    heap_t *h;
    char msg[HEAP_MSG_MAX];
    heap_status s = try_open(g_path, 0, &h, msg);
    ck_assert_msg(s == HEAP_ETRUNCATED || s == HEAP_EBADMAGIC, "empty file: %d (%s)", s, msg);
    ck_assert(h == NULL);
    ck_assert(msg_ok(msg));

    char *p2 = ts_path(g_dir, "heap.2");
    create_heap(p2, 0);
    ck_assert_int_eq(truncate(p2, 60), 0);   /* half a header */
    s = try_open(p2, 0, &h, msg);
    ck_assert_msg(s == HEAP_ETRUNCATED || s == HEAP_EBADMAGIC, "60-byte file: %d (%s)", s, msg);
    ck_assert(h == NULL);
    ck_assert(msg_ok(msg));
    free(p2);
}
END_TEST

START_TEST(test_a_missing_file_is_refused_with_enoent)
{
    expect_refused(g_path, 0, HEAP_ENOENT, "no file");
    expect_refused(g_path, HEAP_OPEN_RDONLY, HEAP_ENOENT, "no file, read-only");
    struct stat sb;
    ck_assert_int_ne(stat(g_path, &sb), 0);   /* open does not create */
}
END_TEST

/* Arena-table corruptions, one per loop index. */
struct table_ctx {
    struct heap_arena_table t;
    int small_lo;    /* a SMALL pool of 32-byte blocks */
    int small_hi;    /* a SMALL pool of 512-byte blocks */
    int run;         /* the RUN pool of a 3-pool run */
    int free_pool;   /* the highest FREE pool */
};

static const char *const table_damage[] = {
    "an unknown kind on a used pool",
    "an unknown kind on a free pool",
    "a size class out of range",
    "a block count that disagrees with the bitmap",
    "a bitmap bit past the last block of the class",
    "a wrong arena magic",
    "a table naming another arena",
    "a run longer than the arena",
    "a continuation pool outside its run",
    "a huge run that does not start at pool 1",
    "a run whose recorded size exceeds its pools",
    "a run's later pool marked free",
};
#define N_TABLE_DAMAGE ((int)(sizeof table_damage / sizeof table_damage[0]))

static void damage_table(struct table_ctx *c, int which)
{
    struct heap_pooldesc *p = c->t.pool;
    switch (which) {
    case 0: p[c->small_lo].kind = 0x7f; break;
    case 1: p[c->free_pool].kind = 0x7f; break;
    case 2: p[c->small_lo].cls = HEAP_NCLASSES; break;
    case 3: p[c->small_lo].nalloc++; break;
    case 4:
        c->t.bitmap[c->small_hi][HEAP_BITMAP_WORDS - 1] |= UINT64_C(1) << 63;
        p[c->small_hi].nalloc++;
        break;
    case 5: c->t.magic ^= 1; break;
    case 6: c->t.index = 7; break;
    case 7: p[c->run].npools = HEAP_POOLS_PER_ARENA; break;
    case 8:
        p[c->free_pool].kind = HEAP_POOL_RUNCONT;
        p[c->free_pool].npools = (uint32_t)(c->free_pool - c->run);
        break;
    case 9:
        p[c->free_pool].kind = HEAP_POOL_HUGE;
        p[c->free_pool].npools = HEAP_POOLS_PER_ARENA;
        p[c->free_pool].size = 2 * MiB;
        break;
    case 10: p[c->run].size = 3 * HEAP_POOL_SIZE + 1; break;
    case 11: p[c->run + 1].kind = HEAP_POOL_FREE; p[c->run + 1].npools = 0; break;
    }
}

START_TEST(test_corrupt_arena_metadata_is_refused_with_ecorrupt)
{
    ck_assert_int_lt(_i, N_TABLE_DAMAGE);
    heap_t *h = new_heap(0);
    for (int i = 0; i < 5; i++)
        must_alloc(h, 32);
    for (int i = 0; i < 3; i++)
        must_alloc(h, 512);
    must_alloc(h, 2 * HEAP_POOL_SIZE + 1);   /* 3 pools */
    commit(h);
    heap_close(h);

    struct table_ctx c = { .small_lo = -1, .small_hi = -1, .run = -1, .free_pool = -1 };
    int fd = open(g_path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pread(fd, &c.t, sizeof c.t, HEAP_TABLE_OFFSET), (ssize_t)sizeof c.t);
    ck_assert_uint_eq(c.t.magic, HEAP_ARENA_MAGIC);
    ck_assert_uint_eq(c.t.index, 0);
    for (int p = 1; p < (int)HEAP_POOLS_PER_ARENA; p++) {
        const struct heap_pooldesc *d = &c.t.pool[p];
        if (d->kind == HEAP_POOL_SMALL && d->cls == heap_size_class(32))
            c.small_lo = p;
        if (d->kind == HEAP_POOL_SMALL && d->cls == heap_size_class(512))
            c.small_hi = p;
        if (d->kind == HEAP_POOL_RUN && d->npools == 3)
            c.run = p;
        if (d->kind == HEAP_POOL_FREE)
            c.free_pool = p;
    }
    ck_assert_msg(c.small_lo > 0 && c.small_hi > 0 && c.run > 0 && c.free_pool > c.run + 2,
                  "arena 0's table does not hold the pools allocated "
                  "(32 B: %d, 512 B: %d, run: %d, free: %d)",
                  c.small_lo, c.small_hi, c.run, c.free_pool);
    ck_assert_uint_eq(c.t.pool[c.small_lo].nalloc, 5);
    ck_assert_uint_eq(c.t.pool[c.run + 1].kind, HEAP_POOL_RUNCONT);

    damage_table(&c, _i);
    ck_assert_int_eq(pwrite(fd, &c.t, sizeof c.t, HEAP_TABLE_OFFSET), (ssize_t)sizeof c.t);
    close(fd);

    expect_refused(g_path, 0, HEAP_ECORRUPT, table_damage[_i]);
    expect_refused(g_path, HEAP_OPEN_RDONLY, HEAP_ECORRUPT, table_damage[_i]);

    /* NOREBUILD defers the check to heap_rebuild */
    h = open_flags(g_path, HEAP_OPEN_NOREBUILD);
    heap_status s = heap_rebuild(h);
    ck_assert_msg(s == HEAP_ECORRUPT, "%s: heap_rebuild = %d", table_damage[_i], s);
    ck_assert_msg(msg_ok(heap_errmsg(h)), "%s: heap_rebuild left no message", table_damage[_i]);
    heap_close(h);
}
END_TEST

/* ARCHITECTURE §10: a write through a pointer nobody marked would never
 * reach the file; the debug check finds the page it landed on. */
START_TEST(test_a_write_through_an_unmarked_pointer_is_caught)
{
    heap_t *h = new_heap(0);
    uint64_t a = must_alloc(h, 64), b = must_alloc(h, 64 * 1024);
    commit(h);
    heap_drop_clean(h);
    ck_assert_int_eq(heap_check_unmarked(h), HEAP_OK);

    heap_mark_dirty(h, a, 8);                 /* marked: fine */
    memset(heap_ptr(h, a), 1, 8);
    ck_assert_int_eq(heap_check_unmarked(h), HEAP_OK);

    ((uint8_t *)heap_ptr(h, b))[40000] = 7;   /* not marked */
    heap_status s = heap_check_unmarked(h);
    ck_assert_msg(s == HEAP_ECORRUPT, "unmarked write not caught: %d", s);
    ck_assert_msg(strstr(heap_errmsg(h), "unmarked"), "message: %s", heap_errmsg(h));
    heap_close(h);
}
END_TEST

/* Open validates a bounded prefix of arenas (so it costs the same for any
 * heap size); a damaged table further on is found when first touched, and is
 * an error there, never a wild access. */
START_TEST(test_a_damaged_arena_past_the_prefix_is_refused_when_touched)
{
    create_heap(g_path, 80 * MiB);
    heap_t *h = open_heap(g_path);
    uint64_t keep = must_alloc(h, 100);      /* arena 0 */
    fill(h, keep, 100, 5);
    commit(h);
    heap_close(h);

    /* Break arena 70's table magic on disk. */
    int fd = open(g_path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint32_t junk = 0xdeadbeef;
    ck_assert_int_eq(pwrite(fd, &junk, 4, (off_t)(70 * MiB + HEAP_TABLE_OFFSET)), 4);
    close(fd);

    h = open_heap(g_path);                   /* the prefix is sound */
    must_hold(h, keep, 100, 5);
    uint64_t inside = 70 * MiB + 3 * HEAP_POOL_SIZE;
    ck_assert(!heap_is_live(h, inside));
    heap_status s = heap_check_ref(h, inside);
    ck_assert_msg(s == HEAP_ECORRUPT, "check_ref in the damaged arena = %d", s);
    ck_assert_msg(strstr(heap_errmsg(h), "arena 70"), "message: %s", heap_errmsg(h));
    ck_assert_int_eq(heap_rebuild_full(h), HEAP_ECORRUPT);
    heap_close(h);
}
END_TEST

/* ------------------------------------------------------------------ */
/* locking and the disk                                                 */

START_TEST(test_a_second_opener_is_refused_while_a_writer_holds_the_file)
{
    create_heap(g_path, 0);
    heap_t *w = open_heap(g_path);
    expect_refused(g_path, 0, HEAP_EBUSY, "a second writer");
    expect_refused(g_path, HEAP_OPEN_RDONLY, HEAP_EBUSY, "a reader while a writer holds it");
    heap_t *nl = open_flags(g_path, HEAP_OPEN_RDONLY | HEAP_OPEN_NOLOCK);
    heap_close(nl);
    heap_close(w);

    heap_t *r1 = open_flags(g_path, HEAP_OPEN_RDONLY);
    heap_t *r2 = open_flags(g_path, HEAP_OPEN_RDONLY);
    expect_refused(g_path, 0, HEAP_EBUSY, "a writer while readers hold it");
    heap_close(r1);
    expect_refused(g_path, 0, HEAP_EBUSY, "a writer while a reader holds it");
    heap_close(r2);
    w = open_heap(g_path);   /* released on close */
    heap_close(w);
}
END_TEST

/* Exit codes of the full-disk child. */
enum {
    FD_OK = 0, FD_RLIMIT = 20, FD_CREATE, FD_OPEN, FD_NEVER_FULL, FD_NO_MSG,
    FD_NOTHING_FIT, FD_LOST_BLOCK, FD_NO_SMALL, FD_WRITEBACK, FD_STATUS = 40,
};

static int full_disk_child(const char *path)
{
    struct rlimit rl = { 8 * MiB, 8 * MiB };
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
        return FD_RLIMIT;
    signal(SIGXFSZ, SIG_IGN);
    heap_create_opts co = { .initial_bytes = MiB };
    char msg[HEAP_MSG_MAX];
    if (heap_create(path, &co, msg) != HEAP_OK)
        return FD_CREATE;
    heap_t *h;
    heap_open_opts oo = { 0 };
    if (heap_open(path, &oo, &h, msg) != HEAP_OK)
        return FD_OPEN;
    enum { MAX = 200 };
    uint64_t offs[MAX], off = 0;
    const uint64_t size = 200000;   /* 13 pools: 4 runs an arena */
    int n = 0;
    heap_status s;
    for (;;) {
        if (n == MAX)
            return FD_NEVER_FULL;
        s = heap_alloc(h, size, &off);
        if (s != HEAP_OK)
            break;
        fill(h, off, size, (uint64_t)n);
        offs[n++] = off;
    }
    if (s != HEAP_ENOSPC)
        return FD_STATUS + (int)s;
    if (!msg_ok(heap_errmsg(h)))
        return FD_NO_MSG;
    if (n == 0)
        return FD_NOTHING_FIT;
    for (int i = 0; i < n; i++) {
        if (!heap_is_live(h, offs[i]) || pattern_mismatch(h, offs[i], size, (uint64_t)i) != UINT64_MAX)
            return FD_LOST_BLOCK;
        fill(h, offs[i], size, (uint64_t)i + 1000);   /* still writable */
        if (pattern_mismatch(h, offs[i], size, (uint64_t)i + 1000) != UINT64_MAX)
            return FD_LOST_BLOCK;
    }
    /* the arenas already there still serve what fits in them */
    if (heap_alloc(h, 100, &off) != HEAP_OK)
        return FD_NO_SMALL;
    if (heap_writeback(h) != HEAP_OK)
        return FD_WRITEBACK;
    heap_close(h);
    return FD_OK;
}

START_TEST(test_a_full_disk_is_an_error_not_a_signal)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(full_disk_child(g_path));
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(!WIFSIGNALED(st), "the child died of signal %d (%s)", WTERMSIG(st),
                  strsignal(WTERMSIG(st)));
    ck_assert(WIFEXITED(st));
    int code = WEXITSTATUS(st);
    static const char *const why[] = {
        [FD_RLIMIT] = "setrlimit failed", [FD_CREATE] = "heap_create failed",
        [FD_OPEN] = "heap_open failed", [FD_NEVER_FULL] = "the limit was never hit",
        [FD_NO_MSG] = "no error message", [FD_NOTHING_FIT] = "nothing could be allocated",
        [FD_LOST_BLOCK] = "an earlier block lost its bytes",
        [FD_NO_SMALL] = "a small block no longer fits in existing arenas",
        [FD_WRITEBACK] = "writeback of what fit failed",
    };
    if (code >= FD_STATUS)
        ck_abort_msg("heap_alloc on a full disk returned %d, not HEAP_ENOSPC (%d)",
                     code - FD_STATUS, HEAP_ENOSPC);
    ck_assert_msg(code == FD_OK, "full-disk child: %s (exit %d)",
                  code < (int)(sizeof why / sizeof why[0]) && why[code] ? why[code] : "?", code);
}
END_TEST

/* ------------------------------------------------------------------ */

static TCase *tcase(Suite *s, const char *name, double timeout)
{
    TCase *tc = tcase_create(name);
    tcase_add_unchecked_fixture(tc, ts_root_setup, ts_root_teardown);
    tcase_add_checked_fixture(tc, dir_setup, dir_teardown);
    tcase_set_timeout(tc, timeout);
    suite_add_tcase(s, tc);
    return tc;
}

static Suite *heap_suite(void)
{
    Suite *s = suite_create("heap");
    TCase *tc = tcase(s, "alloc", 60);
    tcase_add_test(tc, test_every_size_class_allocates_aligned_distinct_blocks);
    tcase_add_test(tc, test_a_reused_block_comes_back_zeroed);
    tcase_add_test(tc, test_a_batch_free_equals_one_by_one_frees_and_stops_at_a_bad_offset);
    tcase_add_test(tc, test_a_leaf_is_freed_on_its_own_check_and_anything_else_is_left_as_it_is);
    tcase_add_test(tc, test_a_leaf_free_in_an_arena_that_is_a_huge_blocks_data_touches_nothing);
    tcase_add_test(tc, test_a_new_block_is_zeroed_up_to_the_size_asked);
    tcase_add_test(tc, test_an_impossible_size_is_refused_without_harm);
    tcase_add_test(tc, test_bad_offsets_are_refused);
    tcase_add_test(tc, test_check_ref_refuses_slots_that_overflow_the_block);
    tcase_add_test(tc, test_objects_have_exact_headers_slots_and_payloads);
    tcase_add_test(tc, test_stats_count_pools_and_blocks_per_class);

    tc = tcase(s, "random", ts_under_sanitizer() ? 300 : 60);
    tcase_add_test(tc, test_a_million_random_operations_agree_with_a_model);
    tcase_add_test(tc, test_random_transactions_that_commit_or_discard_agree_with_a_model);

    tc = tcase(s, "persist", 60);
    tcase_add_test(tc, test_create_records_geometry_uuid_generation_and_refuses_an_existing_file);
    tcase_add_test(tc, test_writeback_then_reopen_keeps_every_block);
    tcase_add_test(tc, test_closing_without_writeback_forgets_unwritten_changes);
    tcase_add_test(tc, test_growth_past_the_initial_size_keeps_the_base_address);
    tcase_add_test(tc, test_discard_brings_back_the_committed_bytes_and_allocation_state);
    tcase_add_test(tc, test_dropping_clean_pages_keeps_their_bytes);
    tcase_add_test(tc, test_dirty_ranges_are_aligned_sorted_coalesced_and_cover_every_mark);
    tcase_add_test(tc, test_bytes_in_arenas_grown_this_transaction_are_untracked_and_reach_the_file);
    tcase_add_test(tc, test_a_growth_cut_back_to_the_committed_length_owes_no_sync);
    tcase_add_test(tc, test_write_range_then_mark_clean_commits_in_pieces);
    tcase_add_test(tc, test_apply_without_file_changes_ram_only_and_with_file_persists);
    tcase_add_test(tc, test_releasing_the_tail_shrinks_the_file_after_frees);
    tcase_add_test(tc, test_a_freed_huge_run_gives_back_whole_arenas);
    tcase_add_test(tc, test_a_read_only_heap_refuses_writes);

    tc = tcase(s, "files", 60);
    tcase_add_test(tc, test_the_header_checksum_is_xxh3_of_the_bytes_before_it);
    tcase_add_test(tc, test_a_bad_magic_is_refused_as_not_a_heap);
    tcase_add_test(tc, test_an_unknown_version_is_refused_even_with_a_valid_checksum);
    tcase_add_test(tc, test_a_flipped_header_byte_fails_the_checksum);
    tcase_add_test(tc, test_a_foreign_geometry_is_refused_even_with_a_valid_checksum);
    tcase_add_test(tc, test_a_truncated_file_is_refused);
    tcase_add_test(tc, test_an_empty_or_header_short_file_is_refused);
    tcase_add_test(tc, test_a_missing_file_is_refused_with_enoent);
    tcase_add_loop_test(tc, test_corrupt_arena_metadata_is_refused_with_ecorrupt,
                        0, N_TABLE_DAMAGE);
    tcase_add_test(tc, test_a_damaged_arena_past_the_prefix_is_refused_when_touched);
    tcase_add_test(tc, test_a_write_through_an_unmarked_pointer_is_caught);
    tcase_add_test(tc, test_a_second_opener_is_refused_while_a_writer_holds_the_file);
    tcase_add_test(tc, test_a_full_disk_is_an_error_not_a_signal);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(heap_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
