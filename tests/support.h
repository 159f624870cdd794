/*
 * support.h -- small helpers shared by the Check suites: a fresh temporary
 * directory per test, recursive removal, path joining.
 *
 * Every string returned is malloc'd and owned by the caller (free() it).
 * Nothing here knows of objstore; a suite includes it and links
 * support_*.c (the build does that for every tests/test_*.c).
 */
#ifndef OBJSTORE_TESTS_SUPPORT_H
#define OBJSTORE_TESTS_SUPPORT_H

#include <stdbool.h>

/* Creates a new, empty, private (0700) directory under $TMPDIR, or /tmp when
 * TMPDIR is unset or empty, named objstore-test-XXXXXX.  Returns its path, or
 * NULL with errno set. */
char *ts_tmpdir(void);

/* Removes path and, if it is a directory, everything below it, without
 * following symbolic links.  A path that does not exist is not an error.
 * Returns 0, or -1 with errno set (what could be removed is removed). */
int ts_rmtree(const char *path);

/* Returns "dir/name" (a single '/' between them), or NULL when out of
 * memory. */
char *ts_path(const char *dir, const char *name);

/* Sleeps ms milliseconds. */
void ts_sleep_ms(unsigned ms);

/* True under AddressSanitizer, or when OBJSTORE_SANITIZE is set (not "0"):
 * suites scale their longest loops down there. */
bool ts_under_sanitizer(void);

/* Fixtures.  ts_root_setup/ts_root_teardown, an unchecked fixture, give each
 * test case a fresh root directory (ts_root), removed by the runner even when
 * a test failed; ts_test_dir() makes a new empty directory below it for one
 * test, named after the process and a counter (tests of a case run in forked
 * children). */
extern char *ts_root;
void ts_root_setup(void);
void ts_root_teardown(void);
char *ts_test_dir(void);

#endif
