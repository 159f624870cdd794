/*
 * objstore_admin.h -- the small administrative API the tools and tests use:
 * verification of every invariant, test hooks.  Not needed by applications.
 */
#ifndef OBJSTORE_ADMIN_H
#define OBJSTORE_ADMIN_H

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
 *     candidate tables;
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

#ifdef __cplusplus
}
#endif
#endif
