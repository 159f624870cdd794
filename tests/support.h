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

#endif
