/*
 * tool.h -- what every objstore command-line tool shares: exit codes in the
 * style of e2fsck, --version, a progress bar on stderr (only on a terminal
 * unless forced), SIGINT noted as a flag the library's callbacks poll, and
 * numbers printed for people (1,234,567; 153.2 MiB).
 *
 * The tools are thin: each is one file in tools/ over library calls; this
 * is the only code they share.  Nothing here knows about stores.
 */
#ifndef OBJSTORE_TOOL_H
#define OBJSTORE_TOOL_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>

/* Exit codes, as e2fsck's (they add up in e2fsck; here one is returned). */
enum {
    TOOL_EXIT_OK = 0,            /* no problems / done */
    TOOL_EXIT_FIXED = 1,         /* problems found and all corrected */
    TOOL_EXIT_UNCORRECTED = 4,   /* problems left uncorrected / store damaged */
    TOOL_EXIT_OPERATIONAL = 8,   /* cannot open, I/O, locked, disk full */
    TOOL_EXIT_USAGE = 16,        /* bad command line */
    TOOL_EXIT_INTERRUPTED = 32,  /* SIGINT: stopped at a clean point */
};

/* Set by the SIGINT handler tool_catch_sigint() installs. */
extern volatile sig_atomic_t tool_interrupted;
void tool_catch_sigint(void);

/* "PROG (objstore) VERSION, store format N" on stdout. */
void tool_print_version(const char *prog);

/* Progress bar.  mode: -1 = only when stderr is a terminal, 0 = never,
 * 1 = always.  update() redraws at most ~10 times a second. */
typedef struct tool_progress {
    bool on;
    double last;
    int width;
} tool_progress;
void tool_progress_init(tool_progress *p, int mode);
void tool_progress_update(tool_progress *p, const char *label, uint64_t done,
                          uint64_t total);
void tool_progress_done(tool_progress *p);   /* clears the line */

/* "1,234,567" into buf (at least 32 bytes); returns buf. */
const char *tool_commas(char *buf, uint64_t n);
/* "153.2 MiB" into buf (at least 32 bytes); returns buf. */
const char *tool_bytes(char *buf, uint64_t n);

/* Writes j to stdout as one JSON document (indented, newline) and drops the
 * reference.  Returns 0, or -1 if writing failed. */
int tool_json_print(json_t *j);

#endif
