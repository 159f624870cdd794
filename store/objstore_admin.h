/*
 * objstore_admin.h -- the small administrative API the tools and tests use:
 * verification of every invariant, test hooks.  Not needed by applications.
 */
#ifndef OBJSTORE_ADMIN_H
#define OBJSTORE_ADMIN_H

#include <stdio.h>

#include "objstore.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Problems verify can find; each is counted in the report. */
enum objstore_problem {
    OBJSTORE_P_HEAP,         /* heap structure (allocator metadata) */
    OBJSTORE_P_BADSLOTS,     /* an object's slots do not fit its block */
    OBJSTORE_P_DANGLING,     /* a slot points at no live object's start */
    OBJSTORE_P_BADROOT,      /* a root names no live object */
    OBJSTORE_P_COUNT,        /* a count differs from roots + slots pointing in */
    OBJSTORE_P_LEAK,         /* count 0, not in the zero-count table */
    OBJSTORE_P_BADZCT,       /* zero-count entry not live or count not 0 */
    OBJSTORE_P_BADCAND,      /* cycle candidate that is not live */
    OBJSTORE_P_BADTYPE,      /* an object's type id is not registered */
    OBJSTORE_P_NKINDS
};

typedef struct objstore_verify_report {
    uint64_t objects;            /* live objects */
    uint64_t bytes;              /* their block bytes */
    uint64_t references;         /* non-null slots */
    uint64_t roots;
    uint64_t reachable;          /* objects reachable from the roots */
    uint64_t unreachable;        /* live but unreachable: cycles, leaks */
    uint64_t unreachable_bytes;
    uint64_t problems[OBJSTORE_P_NKINDS];
    uint64_t total_problems;     /* sum of problems[] (unreachable excluded) */
    char first_problem[256];     /* words for the first one found */
} objstore_verify_report;

/* Checks every invariant of the committed state (no write transaction may be
 * open).  Returns OBJSTORE_OK when the walk finished, whatever it found (read
 * the report); an error when it could not run. */
int objstore_verify(objstore *s, objstore_verify_report *r);

/* Test-only: fn is called with a step name before every durability step
 * ("heap-pwrite", "heap-fdatasync", "heap-grow-fdatasync", "lmdb-commit",
 * "lmdb-committed", "checkpoint-fdatasync", "checkpoint-commit",
 * "replay-pwrite", "replay-fdatasync", "replay-commit", "direct-pwrite",
 * "direct-fdatasync").  NULL removes it.  Process-wide. */
void objstore_set_crash_hook(void (*fn)(const char *step));

/* The store's epoch: the number of commits in its life (including the one an
 * open makes when it frees what a crash left at count 0). */
uint64_t objstore_epoch(objstore *s);

/* Runs a checkpoint now: fdatasync the heap, then drop the redo records that
 * are written back.  No transaction may be open. */
int objstore_checkpoint(objstore *s);

/* Releases the empty arenas at the heap's tail and shrinks the file: one
 * commit (it counts as an epoch), a checkpoint, then the file is cut.  No
 * transaction may be open. */
int objstore_shrink(objstore *s);

/* ---- check and repair (objstore-fsck) ----
 *
 * objstore_check examines a store directory (closed, or open read-only
 * elsewhere) in six passes, as e2fsck does a file system:
 *
 *   1 files: the directory, the lock file, the heap header (checksum,
 *     geometry, length; uuid and generation against meta/), stray
 *     heap generations;
 *   2 meta/: the LMDB environment, read in a child process (a crash of LMDB
 *     on a damaged data.mdb becomes a finding); every database and record;
 *     the redo records and whether replay is pending;
 *   3 heap structure: arena tables, pool descriptors, bitmaps, runs;
 *   4 objects: headers, slots fit their block, every slot lands on a live
 *     object's start, every type id is registered;
 *   5 counts: each equals roots + slots pointing in; zero-count and
 *     candidate tables; the weak index against the weak references;
 *   6 connectivity: what the roots reach; the rest as groups (connected
 *     parts of the unreachable objects).
 *
 * A check changes no byte of any file: it takes the store's shared lock,
 * reads LMDB without its lock file, and applies pending redo in RAM only.
 * With OBJSTORE_CHECK_REPAIR (or _PREEN) it then repairs what it can in
 * one ordinary write transaction of the store (atomic and crash-safe by the
 * commit protocol: a crash leaves the store as it was or repaired), and
 * checks again; the report gives what the final check found.
 */
enum objstore_check_kind {
    OBJSTORE_C_DIR,          /* 1 the store directory or a file in it */
    OBJSTORE_C_LOCKFILE,     /* 1 the lock file is missing */
    OBJSTORE_C_HEADER,       /* 1 the heap header fails validation */
    OBJSTORE_C_MISMATCH,     /* 1 heap uuid/generation differ from meta/ */
    OBJSTORE_C_STRAY,        /* 1 a heap file of another generation */
    OBJSTORE_C_META,         /* 2 meta/ damaged: LMDB, a database, a record */
    OBJSTORE_C_REDO,         /* 2 a damaged redo record (open refuses) */
    OBJSTORE_C_HEAP,         /* 3 allocator metadata */
    OBJSTORE_C_BADOBJ,       /* 4 an object header beyond use */
    OBJSTORE_C_BADTYPE,      /* 4 a type id that is not registered */
    OBJSTORE_C_DANGLING,     /* 4 a slot that lands on no live object */
    OBJSTORE_C_BADROOT,      /* 5 a root that names no live object */
    OBJSTORE_C_COUNT,        /* 5 a count differs from the in-degree */
    OBJSTORE_C_LEAK,         /* 5 count 0, not in the zero-count table */
    OBJSTORE_C_BADZCT,       /* 5 a stale zero-count entry */
    OBJSTORE_C_BADCAND,      /* 5 a stale cycle candidate */
    OBJSTORE_C_BADWEAK,      /* 5 the weak index and the weak references disagree */
    OBJSTORE_C_NKINDS
};

/* A short stable name for a kind ("dangling-slot"), as --json prints it. */
const char *objstore_check_kind_name(int kind);

typedef struct objstore_finding {
    int kind;                /* enum objstore_check_kind */
    int pass;                /* 1..6 */
    uint64_t oid;            /* the object, offset or epoch concerned (0: none) */
    uint64_t value;          /* slot index, old value, count: see the text */
    const char *text;        /* the finding in words (valid during the call) */
    int fixable;             /* what -y would do about it: 0 nothing,
                                1 preen fixes it, 2 repair fixes it */
    int after_repair;        /* 1: found by the check that follows a repair,
                                so left uncorrected */
} objstore_finding;

/* An unreachable group: a connected part of the objects no root reaches. */
typedef struct objstore_group {
    uint64_t objects;
    uint64_t bytes;          /* their block bytes */
    objstore_oid oid;        /* one member to look at (a head when it has one) */
    uint32_t types[8];       /* distinct type ids of its members, */
    uint32_t ntypes;         /* ... the first 8 of them */
} objstore_group;

/* A repair done, in words ("object 4096 slot 2: was 81920, set to null"). */
typedef struct objstore_repair_action {
    int kind;                /* the finding kind it corrects */
    objstore_oid oid;
    const char *text;
} objstore_repair_action;

enum objstore_check_mode {
    OBJSTORE_CHECK_READONLY = 0,  /* -n: change nothing */
    OBJSTORE_CHECK_PREEN = 1,     /* -p: counts and stale table entries only */
    OBJSTORE_CHECK_REPAIR = 2,    /* -y: everything listed as fixable */
};

enum objstore_check_flags {
    OBJSTORE_CHECK_LOST_FOUND = 1,  /* repair: link each unreachable group
                                       under a root lost+found/<oid> */
    OBJSTORE_CHECK_REBUILD_META = 2,/* repair: when meta/ is missing or
                                       unreadable, build a new one from the
                                       heap alone (objects nothing points at
                                       become roots lost+found/<oid>, type ids
                                       keep their numbers as "type#<id>");
                                       the old meta/ is kept, renamed */
};

typedef struct objstore_check_opts {
    int mode;                     /* enum objstore_check_mode */
    int flags;                    /* enum objstore_check_flags */
    uint64_t discard_redo_from;   /* repair: drop redo records of this epoch
                                     and later (0: none) */
    unsigned meta_timeout_s;      /* pass 2's child is killed after this
                                     (0 = 300 s); a finding says so */
    void *arg;                    /* passed to every callback */
    void (*on_pass)(void *arg, int pass, const char *title);
    void (*on_finding)(void *arg, const objstore_finding *f);
    void (*on_group)(void *arg, const objstore_group *g);
    void (*on_repair)(void *arg, const objstore_repair_action *a);
    /* Progress within a pass; a non-zero return stops the check at a clean
     * point (report.interrupted; a repair not yet committed is dropped). */
    int (*on_progress)(void *arg, int pass, uint64_t done, uint64_t total);
} objstore_check_opts;

typedef struct objstore_check_report {
    uint64_t objects, bytes;      /* live objects, their block bytes */
    uint64_t heap_bytes;          /* heap length */
    uint64_t free_bytes;          /* heap length minus live block bytes */
    uint64_t references;          /* non-null slots */
    uint64_t roots, types;
    uint64_t reachable;
    uint64_t groups, group_objects, group_bytes;   /* unreachable */
    uint64_t epoch;               /* the store's epoch (meta/ and redo keys) */
    uint64_t redo_records;        /* redo records pending replay */
    uint64_t redo_bytes;
    uint64_t found[OBJSTORE_C_NKINDS];    /* problems the first check found */
    uint64_t left[OBJSTORE_C_NKINDS];     /* ... and the last one (after repair) */
    uint64_t problems;            /* sum of found[] */
    uint64_t problems_left;       /* sum of left[] */
    uint64_t repairs;             /* repair actions committed */
    uint64_t lost_commits;        /* commits --discard-redo-from dropped */
    int passes_done;              /* 6 when every pass ran */
    int interrupted;              /* on_progress asked to stop */
    int repaired;                 /* a repair transaction was committed */
    char first_problem[256];
} objstore_check_report;

/* Checks the store in directory dir (and with a repair mode repairs it, then
 * checks again).  Returns OBJSTORE_OK when the check ran to the end or was
 * interrupted, whatever it found: read the report.  An error when it could
 * not run: OBJSTORE_ENOENT (no such directory), OBJSTORE_EBUSY (a writer
 * holds the store; the message names the process when it can), OBJSTORE_EIO,
 * OBJSTORE_ENOMEM, or the error of a repair's commit (nothing of it is
 * committed then).  opts may be NULL (read-only, no callbacks). */
int objstore_check(const char *dir, const objstore_check_opts *opts,
                   objstore_check_report *report);
/* ---- full collection, compaction, digest ---- */

/* Called now and then by the long operations below: phase is "mark",
 * "free", "copy" or "switch"; done counts objects out of total (0 when not
 * known yet).  Returning non-zero asks the operation to stop at its next
 * clean point: a full collection stops between two commits (everything
 * committed so far stays, nothing reachable is touched), a compaction
 * before its switch (the store stays as it was).  It then returns
 * OBJSTORE_OK with stats.interrupted set. */
typedef int (*objstore_progress_fn)(void *arg, const char *phase, uint64_t done,
                                    uint64_t total);

typedef struct objstore_gc_stats {
    uint64_t objects_before;     /* live objects before */
    uint64_t bytes_before;       /* their block bytes */
    uint64_t reachable;          /* objects the roots (and pins) reach */
    uint64_t reachable_bytes;
    uint64_t garbage;            /* live objects nothing reachable points at */
    uint64_t garbage_bytes;
    uint64_t freed;              /* objects freed (0 in a dry run) */
    uint64_t freed_bytes;
    uint64_t commits;            /* transactions committed */
    uint64_t file_bytes_before;  /* heap file size */
    uint64_t file_bytes_after;   /* after (a dry run: before) */
    uint64_t compacted_bytes;    /* what a compaction would leave: an
                                    estimate from the reachable blocks' size
                                    classes */
    uint64_t generation;         /* heap generation after */
    int interrupted;             /* the progress callback stopped it */
} objstore_gc_stats;

typedef struct objstore_gc_options {
    int dry_run;                  /* mark and count only; writes nothing */
    uint64_t batch;               /* garbage objects freed per commit
                                     (0 = the store's free_budget) */
    objstore_progress_fn progress;
    void *progress_arg;
} objstore_gc_options;

/* Full collection: marks everything the roots (and this process's pins)
 * reach over the whole heap, then frees every other object -- garbage
 * cycles, leaks, cycles that never had an outside reference -- in bounded
 * commits, each a normal write transaction: a crash between two of them
 * loses nothing reachable and leaves every count exact.  Holds the store's
 * write lock for the whole run (no transaction may be open in this
 * thread).  A damaged slot or root is OBJSTORE_ECORRUPT before anything is
 * changed.  opts and st may be NULL. */
int objstore_full_collect(objstore *s, const objstore_gc_options *opts,
                          objstore_gc_stats *st);

/* Called once per moved object after a compaction's switch committed. */
typedef void (*objstore_oid_map_fn)(void *arg, objstore_oid old_oid,
                                    objstore_oid new_oid);

/* Compaction: copies every object the roots (and pins) reach into a new heap
 * generation file, breadth first from the roots, rewrites every slot and
 * root, and switches to it in one LMDB transaction; then the old file is
 * deleted.  Unreachable objects are left behind (a compaction is also a full
 * collection).  OIDS CHANGE: every oid held outside the store is stale
 * afterwards; map (may be NULL) is told old -> new for each object, and
 * this process's pins move with their objects.  A crash at any instant
 * leaves the old store or the new one; a leftover generation file is
 * removed by the next open.  Exclusive: no transaction may be open.  A full
 * disk is OBJSTORE_ENOSPC with the old store intact.  With opts->dry_run
 * nothing is written; st->compacted_bytes is the size estimate.  Its steps
 * for objstore_set_crash_hook: "compact-create", "compact-pwrite" (then the
 * heap's "heap-pwrite", "heap-ckpt-pwrite" and "heap-fdatasync" of the new
 * file),
 * "compact-dirsync", "compact-commit", "compact-committed",
 * "compact-unlink", "compact-dirsync". */
int objstore_compact(objstore *s, const objstore_gc_options *opts,
                     objstore_oid_map_fn map, void *map_arg, objstore_gc_stats *st);

/* The logical digest (docs/FORMAT.md): XXH3-128 over a canonical walk of the
 * committed content -- roots in name order, objects depth first over slots,
 * each as its type name, payload and slots written as visit numbers -- so
 * the same content gives the same digest before and after collection,
 * compaction and crash recovery, and any change of content changes it.
 * objects (may be NULL) gets the number of reachable objects. */
int objstore_digest(objstore *s, uint8_t digest[16], uint64_t *objects);
/* ---- inspection, dump/load, backup ---- */

/* What `objstore info` shows: the store's identity and state. */
typedef struct objstore_store_info {
    unsigned format;             /* store format version (meta/ "format") */
    uint8_t uuid[16];
    uint64_t generation;         /* heap file generation: STORE/heap.<generation> */
    uint64_t epoch;              /* last committed epoch */
    uint64_t redo_records;       /* redo records not yet checkpointed away */
    uint64_t redo_bytes;         /* their bytes */
    uint64_t roots, types, metadata;
    uint64_t meta_bytes;         /* bytes of the meta/ LMDB file */
    objstore_stats stats;        /* heap and counters, as objstore_get_stats */
    /* the journal (docs/FORMAT.md 2.3): entries of its run not yet
     * checkpointed away (a read-only opener's count includes those a crash
     * left, replayed in RAM), their bytes, and the file's length */
    uint64_t journal_entries;
    uint64_t journal_bytes;
    uint64_t journal_file_bytes;
} objstore_store_info;

/* Fills info for the committed state (takes the read side of the store's
 * lock; not inside this thread's write transaction). */
int objstore_get_store_info(objstore *s, objstore_store_info *info);

/* Calls fn for each user metadata entry in key order (the committed state
 * of a read transaction; refused with OBJSTORE_ETXN in a write transaction).
 * Stops early when fn returns non-zero and returns that value. */
typedef int (*objstore_meta_fn)(void *arg, const void *key, size_t klen, const void *val,
                                size_t vlen);
int objstore_meta_iter(objstore_txn *t, objstore_meta_fn fn, void *arg);

typedef struct objstore_dump_stats {
    uint64_t objects;            /* objects written / loaded */
    uint64_t payload_bytes;
    uint64_t references;         /* non-null slots */
    uint64_t roots, types, metadata;
    uint64_t epoch;              /* dump: the epoch dumped; load: the new store's */
} objstore_dump_stats;

/* Writes the whole logical content of the committed state -- types, user
 * metadata, roots, and every object reachable from the roots -- to out in
 * the text format of docs/FORMAT.md ("Dump format").  Objects unreachable
 * from the roots are not written.  A damaged object graph (a slot or root
 * naming no live object) stops it with an error naming the object.  st may
 * be NULL.  Runs in a read transaction of its own. */
int objstore_dump(objstore *s, FILE *out, objstore_dump_stats *st);

/* Creates a new store in dir (as objstore_create; opts may be NULL) and
 * loads a dump read from in into it, in one transaction: either all of it is
 * committed or, on error (a malformed or truncated dump: the message names
 * the line), nothing is and dir holds an empty store.  st may be NULL. */
int objstore_load(const char *dir, FILE *in, const objstore_options *opts,
                  objstore_dump_stats *st);

#ifdef __cplusplus
}
#endif
#endif
