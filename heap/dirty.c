/*
 * dirty.c -- dirty tracking and the primitives of the commit protocol.
 *
 * The mapping is MAP_PRIVATE: a page written in RAM becomes a private copy and
 * the file keeps the committed bytes until heap_writeback() pwrites the dirty
 * lines.  The unit is a 64-byte line; each 4 KiB page has a 64-bit mask of
 * its dirty lines, and the pages with a non-zero mask are listed.
 *
 * Rules:
 *   D1 a clean line of a private page equals the file's bytes (the file only
 *      changes by our own pwrite of lines we hold, or by replay, which writes
 *      both), so write-back may cover clean lines between dirty ones.
 *   D2 heap_discard drops every dirty page (MADV_DONTNEED), which brings the
 *      file's bytes back, then rebuilds the allocator from them (H4).
 *   D3 written-back pages are remembered and dropped in batches
 *      (heap_drop_clean), so private copies do not pile up.
 */
#include "heap_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>


void heap_mark_dirty_lines(heap_t *h, uint64_t off, uint64_t len)
{
    uint64_t end_at = h->mapped < h->view.fresh_from ? h->mapped : h->view.fresh_from;
    if (len == 0 || off >= end_at)
        return;   /* the fresh range is not tracked (heap_fresh_from) */
    if (len > end_at - off)
        len = end_at - off;
    uint64_t end = off + len - 1;
    if ((off >> HEAP_PAGE_SHIFT) == (end >> HEAP_PAGE_SHIFT)) {
        /* Fast path: one page, often with its lines already marked. */
        uint64_t p = off >> HEAP_PAGE_SHIFT;
        unsigned lo = (unsigned)(off >> HEAP_LINE_SHIFT) & 63;
        unsigned hi = (unsigned)(end >> HEAP_LINE_SHIFT) & 63;
        uint64_t mask = (~UINT64_C(0) >> (63 - hi)) & (~UINT64_C(0) << lo);
        uint64_t m = h->line_mask[p];
        if ((m & mask) == mask)
            return;
        if (!m && !u64vec_push(&h->dirty_pages, p)) {
            h->view.failed = true;
            heap_seterr(h, HEAP_ENOMEM, "out of memory tracking dirty pages");
            return;
        }
        h->line_mask[p] = m | mask;
        h->ranges_valid = false;
        return;
    }
    uint64_t first = off >> HEAP_PAGE_SHIFT, last = (off + len - 1) >> HEAP_PAGE_SHIFT;
    for (uint64_t p = first; p <= last; p++) {
        unsigned lo = p == first ? (unsigned)((off & (HEAP_PAGE_SIZE - 1)) >> HEAP_LINE_SHIFT) : 0;
        unsigned hi = p == last
                          ? (unsigned)(((off + len - 1) & (HEAP_PAGE_SIZE - 1)) >> HEAP_LINE_SHIFT)
                          : 63;
        uint64_t mask = (hi == 63 ? ~UINT64_C(0) : (UINT64_C(1) << (hi + 1)) - 1) &
                        (~UINT64_C(0) << lo);
        if ((h->line_mask[p] & mask) == mask)
            continue;
        if (!h->line_mask[p] && !u64vec_push(&h->dirty_pages, p)) {
            /* Out of RAM for the list: the change cannot be tracked. */
            h->view.failed = true;
            heap_seterr(h, HEAP_ENOMEM, "out of memory tracking dirty pages");
            return;
        }
        h->line_mask[p] |= mask;
        h->ranges_valid = false;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool push_range(heap_t *h, uint64_t off, uint64_t len)
{
    if (h->nranges && h->ranges[h->nranges - 1].off + h->ranges[h->nranges - 1].len == off) {
        h->ranges[h->nranges - 1].len += len;
        return true;
    }
    if (h->nranges == h->ranges_cap) {
        size_t cap = h->ranges_cap ? h->ranges_cap * 2 : 256;
        heap_range *r = realloc(h->ranges, cap * sizeof *r);
        if (!r)
            return false;
        h->ranges = r;
        h->ranges_cap = cap;
    }
    h->ranges[h->nranges++] = (heap_range){off, len};
    return true;
}

size_t heap_dirty_ranges(heap_t *h, const heap_range **ranges)
{
    if (!h->ranges_valid) {
        if (h->dirty_pages.n)
            qsort(h->dirty_pages.v, h->dirty_pages.n, sizeof(uint64_t), cmp_u64);
        h->nranges = 0;
        for (size_t i = 0; i < h->dirty_pages.n; i++) {
            uint64_t p = h->dirty_pages.v[i], m = h->line_mask[p];
            while (m) {
                unsigned lo = (unsigned)__builtin_ctzll(m);
                uint64_t rest = m >> lo;
                unsigned n = ~rest ? (unsigned)__builtin_ctzll(~rest) : 64 - lo;
                if (!push_range(h, (p << HEAP_PAGE_SHIFT) + ((uint64_t)lo << HEAP_LINE_SHIFT),
                                (uint64_t)n << HEAP_LINE_SHIFT)) {
                    h->view.failed = true;
                    heap_seterr(h, HEAP_ENOMEM, "out of memory listing dirty ranges");
                    *ranges = NULL;
                    return 0;
                }
                m = (lo + n >= 64) ? 0 : m & (~UINT64_C(0) << (lo + n));
            }
        }
        h->ranges_valid = true;
    }
    *ranges = h->ranges;
    return h->nranges;
}

uint64_t heap_dirty_bytes(const heap_t *h)
{
    uint64_t lines = 0;
    for (size_t i = 0; i < h->dirty_pages.n; i++)
        lines += (uint64_t)__builtin_popcountll(h->line_mask[h->dirty_pages.v[i]]);
    return lines << HEAP_LINE_SHIFT;
}

static void forget_dirty(heap_t *h, bool remember_private)
{
    for (size_t i = 0; i < h->dirty_pages.n; i++) {
        h->line_mask[h->dirty_pages.v[i]] = 0;
        if (remember_private)
            u64vec_push(&h->priv_pages, h->dirty_pages.v[i]);
    }
    h->dirty_pages.n = 0;
    h->nranges = 0;
    h->ranges_valid = true;
}

heap_status heap_write_range(heap_t *h, uint64_t off, uint64_t len)
{
    if (h->view.failed)
        return heap_seterr(h, HEAP_EFAILED, "%s: handle failed earlier", h->path);
    if (heap_readonly(h))
        return heap_seterr(h, HEAP_EREADONLY, "%s: heap is read-only", h->path);
    if (off > h->mapped || len > h->mapped - off)
        return heap_seterr(h, HEAP_EINVAL, "%s: range [%llu, +%llu) outside the mapping",
                           h->path, (unsigned long long)off, (unsigned long long)len);
    return len ? heap_pwrite_span(h, off, len) : HEAP_OK;
}

heap_status heap_write_ranges(heap_t *h, const heap_range *r, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint64_t start = r[i].off, end = r[i].off + r[i].len;
        size_t j = i + 1;
        while (j < n && (r[j].off >> HEAP_PAGE_SHIFT) <= ((end - 1) >> HEAP_PAGE_SHIFT) + 1) {
            end = r[j].off + r[j].len;
            j++;
        }
        heap_status st = heap_write_range(h, start, end - start);
        if (st)
            return st;
        i = j;
    }
    return HEAP_OK;
}

heap_status heap_mark_clean(heap_t *h)
{
    forget_dirty(h, true);
    return heap_unshare(h);
}

heap_status heap_writeback(heap_t *h)
{
    if (h->view.failed)
        return heap_seterr(h, HEAP_EFAILED, "%s: handle failed earlier", h->path);
    if (heap_readonly(h))
        return heap_seterr(h, HEAP_EREADONLY, "%s: heap is read-only", h->path);
    const heap_range *r;
    size_t n = heap_dirty_ranges(h, &r);
    if (h->view.failed)
        return HEAP_ENOMEM;
    heap_status st = heap_write_ranges(h, r, n);
    if (st)
        return st;
    forget_dirty(h, true);
    return heap_unshare(h);
}

/* MADV_DONTNEED over sorted pages, a call per contiguous stretch. */
static heap_status drop_pages(heap_t *h, uint64_t *pages, size_t n, bool skip_dirty)
{
    if (n)
        qsort(pages, n, sizeof *pages, cmp_u64);
    heap_status st = HEAP_OK;
    for (size_t i = 0; i < n;) {
        if ((skip_dirty && h->line_mask[pages[i]]) ||
            (pages[i] << HEAP_PAGE_SHIFT) >= h->mapped) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < n && pages[j] <= pages[j - 1] + 1 && !(skip_dirty && h->line_mask[pages[j]]) &&
               (pages[j] << HEAP_PAGE_SHIFT) < h->mapped)
            j++;
        uint64_t len = (pages[j - 1] - pages[i] + 1) << HEAP_PAGE_SHIFT;
        if (madvise(h->base + (pages[i] << HEAP_PAGE_SHIFT), len, MADV_DONTNEED) != 0) {
            /* Locked pages refuse DONTNEED: re-mapping restores the file's bytes. */
            uint64_t off = pages[i] << HEAP_PAGE_SHIFT;
            if (mmap(h->base + off, len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, h->fd, (off_t)off) == MAP_FAILED)
                st = heap_seterr(h, HEAP_EIO, "%s: cannot drop pages at %llu: %s", h->path,
                                 (unsigned long long)off, strerror(errno));
            else
                heap_advise_mapping(h->base + off, len);
        }
        i = j;
    }
    return st;
}

/* True when the page at off lies in a free data pool of a normal arena. */
static bool page_in_free_pool(const heap_t *h, uint64_t off)
{
    uint64_t k = off >> HEAP_ARENA_SHIFT;
    unsigned i = (unsigned)((off >> HEAP_POOL_SHIFT) & (HEAP_POOLS_PER_ARENA - 1));
    return i != 0 && k < h->narenas && h->arena[k].state == ARENA_NORMAL &&
           heap_table(h, k)->pool[i].kind == HEAP_POOL_FREE;
}

heap_status heap_forget_free(heap_t *h)
{
    if (h->view.failed)
        return heap_seterr(h, HEAP_EFAILED, "%s: handle failed earlier", h->path);
    struct u64vec drop = {0};
    size_t keep = 0;
    for (size_t i = 0; i < h->dirty_pages.n; i++) {
        uint64_t p = h->dirty_pages.v[i], off = p << HEAP_PAGE_SHIFT;
        if (off < h->view.fresh_from && page_in_free_pool(h, off) && u64vec_push(&drop, p))
            h->line_mask[p] = 0;
        else
            h->dirty_pages.v[keep++] = p;
    }
    h->dirty_pages.n = keep;
    if (!drop.n)
        return HEAP_OK;
    h->ranges_valid = false;
    heap_status st = drop_pages(h, drop.v, drop.n, false);
    free(drop.v);
    if (st)
        h->view.failed = true;   /* a page that kept its private bytes is not tracked */
    return st;
}

heap_status heap_discard(heap_t *h)
{
    heap_status st = drop_pages(h, h->dirty_pages.v, h->dirty_pages.n, false);
    forget_dirty(h, false);
    if (!st)
        st = heap_unshare(h);
    if (st) {
        h->view.failed = true;
        return st;
    }
    /* The header is the file's again: take its length back. */
    uint64_t n = heap_hdr(h)->narenas;
    if (n == 0 || (n << HEAP_ARENA_SHIFT) > h->mapped) {
        h->view.failed = true;
        return heap_seterr(h, HEAP_ECORRUPT, "%s: header length %llu after discard",
                           h->path, (unsigned long long)n);
    }
    h->narenas = n;
    st = heap_rebuild(h);
    if (st)
        h->view.failed = true;
    return st;
}

void heap_drop_clean(heap_t *h)
{
    drop_pages(h, h->priv_pages.v, h->priv_pages.n, true);
    h->priv_pages.n = 0;
}

uint64_t heap_private_bytes(const heap_t *h)
{
    return ((uint64_t)h->priv_pages.n + h->dirty_pages.n) << HEAP_PAGE_SHIFT;
}

/* ---- the unmarked-write check ---- */

#define PM_PRESENT (UINT64_C(1) << 63)
#define PM_FILE    (UINT64_C(1) << 61)   /* file page or shared: not a private copy */

static bool in_sorted(const uint64_t *v, size_t n, uint64_t x)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && v[lo] == x;
}

heap_status heap_check_unmarked(heap_t *h)
{
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return HEAP_OK;   /* no pagemap here: nothing to check with */
    if (h->priv_pages.n)
        qsort(h->priv_pages.v, h->priv_pages.n, sizeof(uint64_t), cmp_u64);
    uint64_t first = (uint64_t)(uintptr_t)h->base >> HEAP_PAGE_SHIFT;
    uint64_t npages = h->mapped >> HEAP_PAGE_SHIFT;
    uint64_t anon = h->view.fresh_from == UINT64_MAX ? npages : h->view.fresh_from >> HEAP_PAGE_SHIFT;
    uint64_t buf[512];
    heap_status st = HEAP_OK;
    for (uint64_t p = 0; p < anon && !st; p += 512) {
        uint64_t n = anon - p < 512 ? anon - p : 512;
        ssize_t got = pread(fd, buf, n * 8, (off_t)((first + p) * 8));
        if (got != (ssize_t)(n * 8))
            break;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t pg = p + i;
            if ((buf[i] & PM_PRESENT) && !(buf[i] & PM_FILE) && !h->line_mask[pg] &&
                !in_sorted(h->priv_pages.v, h->priv_pages.n, pg)) {
                st = heap_seterr(h, HEAP_ECORRUPT,
                                 "%s: the page at heap offset %llu was written but none of "
                                 "its lines was marked dirty (a write through an unmarked "
                                 "pointer)", h->path, (unsigned long long)(pg << HEAP_PAGE_SHIFT));
                break;
            }
        }
    }
    close(fd);
    return st;
}
