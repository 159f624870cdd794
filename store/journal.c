/*
 * journal.c -- the journal: a file of the store's own for the commits that
 * change heap bytes and nothing else (FORMAT.md 2.4).
 *
 * LMDB's commit flushes twice (its pages, then its meta page, in that
 * order).  An entry here is one pwrite and one fdatasync of a file written
 * whole when the store was made: its length never changes, so the sync
 * carries no file metadata.  A commit that also changes roots, metadata,
 * types or the sets, or grows the heap, or writes more than
 * STORE_JOURNAL_ENTRY_MAX, goes through meta/'s redo log (txn.c); replay
 * merges both logs by epoch into one chain (T5).
 *
 * The file: two header slots (at 0 and JOURNAL_SLOT), then entries from
 * JOURNAL_DATA, each a frame and one redo record (txn.c's format, seq 0 of
 * 1), each at a multiple of JOURNAL_ALIGN.
 *
 * Rules:
 *   J1 an entry is durable whole or not at all: its frame's checksum
 *      covers frame and record; a commit returns after the fdatasync.
 *   J2 entries come in runs.  A run begins when a header is written and
 *      synced (into the slot its sequence number picks; the valid slot
 *      with the larger number is the header); every entry names its run's
 *      nonce, random and new at each run, which nothing but this file
 *      holds (an entry's record holds application bytes: one could spell
 *      a frame, but not for a run to come); a run's entries follow one
 *      another from JOURNAL_DATA.
 *   J3 a run ends at the first offset without a whole entry of the run: a
 *      crash's torn tail.  A whole entry of the run further on means the
 *      bytes between were damaged after their commit returned: open
 *      refuses (the commits after the damage would be lost).
 *   J4 a run's base is a checkpoint: every commit up to it is in the heap
 *      file, synced.  Replay skips the records of both logs up to
 *      max(base, meta/ "ckpt") -- their bytes are in the file, and an old
 *      record must not write over newer bytes -- and the chain starts
 *      after it.
 *   J5 a new run begins only after a checkpoint (its base), so the old
 *      run's entries are all in the synced heap before one is overwritten.
 *   J6 the header names its heap (uuid, generation).  A header of an older
 *      generation (a compaction switched heaps after a checkpoint) is an
 *      empty run, reset before the first entry; another uuid or a newer
 *      generation refuses the open.
 */
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define JOURNAL_MAGIC 0x4C4E4A4Fu    /* "OJNL" */
#define JENTRY_MAGIC 0x4E454A4Fu     /* "OJEN" */
#define JOURNAL_VERSION 1u
#define JOURNAL_SLOT 512u
#define JOURNAL_DATA 4096u
#define JOURNAL_ALIGN 512u
#define JOURNAL_READ_MAX (UINT64_C(64) << 20)

struct jhead {
    uint32_t magic;
    uint32_t version;
    uint8_t uuid[16];
    uint64_t generation;
    uint64_t run;        /* the run's sequence number: one more at each reset */
    uint64_t base;       /* J4 */
    uint64_t size;       /* the file's length, as made */
    uint64_t nonce;      /* random, new at each reset: the run's entries name it */
    uint64_t checksum;   /* XXH3_64bits of the header before this field */
};
_Static_assert(sizeof(struct jhead) == 72, "journal header");

struct jframe {
    uint32_t magic;
    uint32_t len;        /* bytes of the record after the frame */
    uint64_t nonce;      /* its run's: bytes of an older entry -- an object's
                            payload, say -- never pass for one of this run */
    uint64_t epoch;      /* the record's */
    uint64_t checksum;   /* XXH3 of the 24 bytes before this field, seeded
                            with the record's own checksum (which covers the
                            record: it is hashed once, when it is built) */
};
_Static_assert(sizeof(struct jframe) == 32, "journal frame");

static uint64_t head_sum(const struct jhead *h)
{
    return XXH3_64bits(h, offsetof(struct jhead, checksum));
}

static uint64_t frame_sum(const struct jframe *f, uint64_t record_sum)
{
    return XXH3_64bits_withSeed(f, offsetof(struct jframe, checksum), record_sum);
}

static uint64_t align_up(uint64_t n)
{
    return (n + JOURNAL_ALIGN - 1) & ~(uint64_t)(JOURNAL_ALIGN - 1);
}

static void jpath(char *buf, size_t n, const char *dir)
{
    snprintf(buf, n, "%s/journal", dir);
}

/* A new run's nonce: from the kernel's generator, else from the clock and
 * the address space (any value works for a crash; only forged frames need
 * it unguessable). */
static uint64_t new_nonce(void)
{
    uint64_t n = 0;
    if (getrandom(&n, sizeof n, GRND_NONBLOCK) != (ssize_t)sizeof n) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        n = XXH3_64bits_withSeed(&ts, sizeof ts, (uint64_t)(uintptr_t)&ts ^ (uint64_t)getpid());
    }
    return n;
}

static void head_fill(struct jhead *h, const uint8_t uuid[16], uint64_t generation,
                      uint64_t run, uint64_t base, uint64_t size)
{
    *h = (struct jhead){.magic = JOURNAL_MAGIC, .version = JOURNAL_VERSION,
                        .generation = generation, .run = run, .base = base, .size = size,
                        .nonce = new_nonce()};
    memcpy(h->uuid, uuid, 16);
    h->checksum = head_sum(h);
}

/* Whether a whole entry of run sits at pos (J1). */
static bool frame_ok(const uint8_t *buf, uint64_t size, uint64_t pos, uint64_t nonce,
                     struct jframe *f)
{
    if (pos >= size || sizeof *f > size - pos)
        return false;
    memcpy(f, buf + pos, sizeof *f);
    if (f->magic != JENTRY_MAGIC || f->nonce != nonce || f->len == 0 ||
        f->len > size - pos - sizeof *f)
        return false;
    const uint8_t *rec = buf + pos + sizeof *f;
    return store_redo_whole(rec, f->len) &&
           frame_sum(f, store_redo_stored_sum(rec)) == f->checksum;
}

/* The valid header slot with the larger run (J2); false when neither is. */
static bool head_pick(const uint8_t *buf, struct jhead *out)
{
    bool have = false;
    for (unsigned slot = 0; slot < 2; slot++) {
        struct jhead h;
        memcpy(&h, buf + slot * JOURNAL_SLOT, sizeof h);
        if (h.magic == JOURNAL_MAGIC && h.version == JOURNAL_VERSION &&
            h.checksum == head_sum(&h) && (!have || h.run > out->run)) {
            *out = h;
            have = true;
        }
    }
    return have;
}

int store_journal_create(const char *dir, const uint8_t uuid[16], uint64_t generation)
{
    /* Made beside and renamed into place: a crash leaves the old file or
     * the whole new one, never a short one. */
    char path[4200], tmp[4210];
    jpath(path, sizeof path, dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return store_err(OBJSTORE_EIO, "%s: %s", tmp, strerror(errno));
    size_t chunk = 64 << 10;
    uint8_t *zero = calloc(1, chunk);
    if (!zero) {
        close(fd);
        unlink(tmp);
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    }
    /* Written, not fallocated: an entry's sync then has no extent to
     * convert (J1). */
    int rc = 0;
    for (uint64_t off = 0; off < STORE_JOURNAL_SIZE && !rc; off += chunk)
        rc = store_pwrite_all(fd, zero, chunk, off);
    free(zero);
    struct jhead h;
    head_fill(&h, uuid, generation, 1, 0, STORE_JOURNAL_SIZE);
    if (!rc)
        rc = store_pwrite_all(fd, &h, sizeof h, JOURNAL_SLOT);   /* run 1: slot 1 */
    if (!rc)
        rc = fsync(fd);
    int err = errno;
    close(fd);
    if (!rc && (rc = rename(tmp, path)) != 0)
        err = errno;
    if (!rc) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0) {
            rc = -1;
            err = errno;
        }
        if (dfd >= 0)
            close(dfd);
    }
    if (rc) {
        unlink(tmp);
        return store_err(err == ENOSPC ? OBJSTORE_ENOSPC : OBJSTORE_EIO, "%s: %s", path,
                         strerror(err));
    }
    return OBJSTORE_OK;
}

void store_journal_free(struct store_jrun *run)
{
    free(run->buf);
    free(run->e);
    memset(run, 0, sizeof *run);
}

void store_journal_stop(objstore *s)
{
    s->j_reset_due = true;
    pthread_mutex_lock(&s->g_mutex);
    s->g_jfull = false;
    pthread_mutex_unlock(&s->g_mutex);
}

void store_journal_restart(objstore *s, uint64_t base)
{
    if (store_journal_reset(s, base))
        store_journal_stop(s);
}

bool store_journal_empty(const objstore *s)
{
    return s->j_end <= JOURNAL_DATA;
}

uint64_t store_journal_used(const objstore *s)
{
    return s->j_end > JOURNAL_DATA ? s->j_end - JOURNAL_DATA : 0;
}

bool store_journal_fill_due(const objstore *s)
{
    return s->j_open && !s->j_reset_due && s->j_end > s->j_size / 4 * 3;
}

void store_journal_close(objstore *s)
{
    if (s->j_open)
        close(s->jfd);
    s->j_open = false;
    free(s->j_buf);
    s->j_buf = NULL;
    s->j_cap = 0;
}

/* Reads the whole file; EREDO naming what is wrong when it is no journal. */
static int read_file(const char *path, int fd, uint8_t **out, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return store_err(OBJSTORE_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode) || st.st_size < (off_t)JOURNAL_DATA ||
        (uint64_t)st.st_size > JOURNAL_READ_MAX || st.st_size % JOURNAL_ALIGN)
        return store_err(OBJSTORE_EREDO, "%s: %lld bytes, not a journal (one is made %llu "
                         "bytes long)", path, (long long)st.st_size,
                         (unsigned long long)STORE_JOURNAL_SIZE);
    uint8_t *buf = malloc((size_t)st.st_size);
    if (!buf)
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    if (store_pread_all(fd, buf, (size_t)st.st_size, 0) != 0) {
        free(buf);
        return store_err(OBJSTORE_EIO, "%s: read: %s", path, strerror(errno));
    }
    *out = buf;
    *size = (uint64_t)st.st_size;
    return OBJSTORE_OK;
}

int store_journal_load(objstore *s, struct store_jrun *run)
{
    memset(run, 0, sizeof *run);
    char path[4200];
    jpath(path, sizeof path, s->dir);
    int fd = open(path, (s->ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return store_err(OBJSTORE_EREDO, "%s: missing, and the commits it held with it; "
                             "open refused (objstore-fsck -y --discard-redo-from=EPOCH makes "
                             "a new one)", path);
        return store_err(OBJSTORE_EIO, "%s: %s", path, strerror(errno));
    }
    uint64_t size = 0;
    int rc = read_file(path, fd, &run->buf, &size);
    struct jhead h;
    if (!rc && !head_pick(run->buf, &h))
        rc = store_err(OBJSTORE_EREDO, "%s: neither header slot is whole; open refused "
                       "(objstore-fsck -y --discard-redo-from=EPOCH makes a new journal)", path);
    else if (!rc && memcmp(h.uuid, s->uuid, 16))
        rc = store_err(OBJSTORE_EMISMATCH, "%s: the journal of another store (uuid); open "
                       "refused", path);
    else if (!rc && h.generation > s->generation)
        rc = store_err(OBJSTORE_EMISMATCH, "%s: written for heap generation %llu, but meta/ "
                       "names generation %llu: meta/ is older than the journal; open refused",
                       path, (unsigned long long)h.generation,
                       (unsigned long long)s->generation);
    else if (!rc && h.size != size)
        rc = store_err(OBJSTORE_EREDO, "%s: %llu bytes, but it was made %llu bytes long; "
                       "open refused", path, (unsigned long long)size,
                       (unsigned long long)h.size);
    uint64_t pos = JOURNAL_DATA, last = 0;
    bool current = !rc && h.generation == s->generation;   /* J6 */
    if (current) {
        run->base = last = h.base;
        size_t cap = 0;
        struct jframe f;
        while (!rc && frame_ok(run->buf, size, pos, h.nonce, &f)) {
            if (f.epoch <= last) {
                rc = store_err(OBJSTORE_EREDO, "%s: the entry at offset %llu names epoch %llu, "
                               "not after %llu; open refused", path, (unsigned long long)pos,
                               (unsigned long long)f.epoch, (unsigned long long)last);
                break;
            }
            if (run->n == cap) {
                cap = cap ? 2 * cap : 64;
                void *e = realloc(run->e, cap * sizeof *run->e);
                if (!e) {
                    rc = store_err(OBJSTORE_ENOMEM, "out of memory");
                    break;
                }
                run->e = e;
            }
            run->e[run->n++] = (struct store_jentry){f.epoch, pos + sizeof f, f.len};
            last = f.epoch;
            pos += align_up(sizeof f + f.len);
        }
        /* J3: nothing of the run may follow its end. */
        for (uint64_t q = pos + JOURNAL_ALIGN; !rc && q < size; q += JOURNAL_ALIGN)
            if (frame_ok(run->buf, size, q, h.nonce, &f)) {
                /* The damaged entry's own epoch, when its frame still says
                 * one that fits: discarding from it keeps any meta/ commit
                 * between the last whole entry and it. */
                struct jframe d;
                memcpy(&d, run->buf + pos, sizeof d);
                uint64_t from = d.magic == JENTRY_MAGIC && d.nonce == h.nonce &&
                                        d.epoch > last && d.epoch < f.epoch
                                    ? d.epoch
                                    : last + 1;
                rc = store_err(OBJSTORE_EREDO, "%s: the entry at offset %llu is damaged, but "
                               "the log goes on (epoch %llu at offset %llu): the commits after "
                               "the damage would be lost; open refused (objstore-fsck -y "
                               "--discard-redo-from=%llu drops them)", path,
                               (unsigned long long)pos, (unsigned long long)f.epoch,
                               (unsigned long long)q, (unsigned long long)from);
            }
    }
    if (rc) {
        close(fd);
        store_journal_free(run);
        return rc;
    }
    s->j_size = size;
    s->j_run = h.run;
    s->j_nonce = h.nonce;
    s->j_end = pos;
    s->j_entries = run->n;
    s->j_high = 0;
    s->j_reset_due = !current;
    if (s->ro) {
        close(fd);   /* a reader only replays it, in RAM */
        return OBJSTORE_OK;
    }
    s->jfd = fd;
    s->j_open = true;
    return OBJSTORE_OK;
}

int store_journal_commit(objstore *s, uint64_t epoch, uint64_t prev, const heap_range *r,
                         size_t n, const uint8_t *data, bool *unknown)
{
    *unknown = false;
    size_t len = store_redo_size(r, n);
    uint64_t need = align_up(sizeof(struct jframe) + len);
    /* Not for this store (relaxed stores sync nothing per commit), or no
     * room: the commit goes through meta/. */
    if (!s->j_open || s->j_reset_due || (s->opts.flags & OBJSTORE_NO_JOURNAL) ||
        s->opts.sync == OBJSTORE_SYNC_RELAXED || len > STORE_JOURNAL_ENTRY_MAX ||
        s->j_end + need > s->j_size)
        return STORE_JOURNAL_NOROOM;
    if (s->j_cap < sizeof(struct jframe) + len) {
        uint8_t *b = realloc(s->j_buf, (size_t)need);
        if (!b)
            return STORE_JOURNAL_NOROOM;   /* meta/ then: the commit still goes */
        s->j_buf = b;
        s->j_cap = (size_t)need;
    }
    uint8_t *rec = s->j_buf + sizeof(struct jframe);
    uint64_t rs = store_redo_build(s, rec, len, epoch, prev, r, n, data);
    struct jframe f = {.magic = JENTRY_MAGIC, .len = (uint32_t)len, .nonce = s->j_nonce,
                       .epoch = epoch};
    f.checksum = frame_sum(&f, rs);
    memcpy(s->j_buf, &f, sizeof f);
    char path[4200];
    store_hook("journal-write");
    if (store_pwrite_all(s->jfd, s->j_buf, sizeof f + len, s->j_end) != 0) {
        *unknown = true;
        jpath(path, sizeof path, s->dir);
        return store_err(OBJSTORE_EIO, "%s: write: %s", path, strerror(errno));
    }
    store_hook("journal-fdatasync");
    if (fdatasync(s->jfd) != 0) {
        *unknown = true;
        jpath(path, sizeof path, s->dir);
        return store_err(OBJSTORE_EIO, "%s: fdatasync: %s", path, strerror(errno));
    }
    s->j_end += need;
    s->j_entries++;
    for (size_t i = 0; i < n; i++)
        if (r[i].off + r[i].len > s->j_high)
            s->j_high = r[i].off + r[i].len;
    return OBJSTORE_OK;
}

int store_journal_reset(objstore *s, uint64_t base)
{
    if (!s->j_open)
        return OBJSTORE_OK;
    struct jhead h;
    head_fill(&h, s->uuid, s->generation, s->j_run + 1, base, s->j_size);
    store_hook("journal-reset");
    if (store_pwrite_all(s->jfd, &h, sizeof h, (h.run & 1) * JOURNAL_SLOT) != 0 ||
        fdatasync(s->jfd) != 0) {
        char path[4200];
        jpath(path, sizeof path, s->dir);
        return store_err(OBJSTORE_EIO, "%s: header: %s", path, strerror(errno));
    }
    s->j_run = h.run;
    s->j_nonce = h.nonce;
    s->j_end = JOURNAL_DATA;
    s->j_entries = 0;
    s->j_high = 0;
    s->j_reset_due = false;
    pthread_mutex_lock(&s->g_mutex);   /* group.c G1: no group is due to checkpoint */
    s->g_jfull = false;
    pthread_mutex_unlock(&s->g_mutex);
    return OBJSTORE_OK;
}

int store_journal_discard(const char *dir, const uint8_t uuid[16], uint64_t generation,
                          uint64_t from, uint64_t *lost, bool *remade)
{
    *remade = false;
    char path[4200];
    jpath(path, sizeof path, dir);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT)
        return store_err(OBJSTORE_EIO, "%s: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    uint64_t size = 0;
    struct jhead h;
    int rc = fd < 0 ? OBJSTORE_EREDO : read_file(path, fd, &buf, &size);
    if (rc && rc != OBJSTORE_EREDO) {   /* EIO, ENOMEM: nothing is known, keep it */
        close(fd);
        return rc;
    }
    if (rc || !head_pick(buf, &h) || memcmp(h.uuid, uuid, 16) || h.size != size) {
        /* Nothing in it can be read as this store's: a new, empty one. */
        if (fd >= 0)
            close(fd);
        free(buf);
        *remade = true;
        return store_journal_create(dir, uuid, generation);
    }
    if (h.generation > generation) {
        close(fd);
        free(buf);
        return store_err(OBJSTORE_EMISMATCH, "%s: written for heap generation %llu, but meta/ "
                         "names generation %llu: meta/ is older than the journal; not repaired",
                         path, (unsigned long long)h.generation,
                         (unsigned long long)generation);
    }
    rc = OBJSTORE_OK;
    if (h.generation == generation) {
        struct jframe f;
        uint64_t pos = JOURNAL_DATA;
        while (frame_ok(buf, size, pos, h.nonce, &f) && f.epoch < from)
            pos += align_up(sizeof f + f.len);   /* <= size: size is aligned */
        /* The commits lost: the whole entries from there, and a damaged one
         * at pos when whole ones follow it (J3: it had returned). */
        uint64_t whole = 0;
        for (uint64_t q = pos; q < size; q += JOURNAL_ALIGN)
            whole += frame_ok(buf, size, q, h.nonce, &f);
        *lost += whole + (whole && !frame_ok(buf, size, pos, h.nonce, &f));
        /* Everything from there goes: no whole entry of the run is left
         * past its new end (J3). */
        memset(buf + pos, 0, (size_t)(size - pos));
        if (pos < size &&
            (store_pwrite_all(fd, buf + pos, (size_t)(size - pos), pos) != 0 || fdatasync(fd) != 0))
            rc = store_err(OBJSTORE_EIO, "%s: %s", path, strerror(errno));
    }
    close(fd);
    free(buf);
    return rc;
}
