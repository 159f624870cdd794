/*
 * support_tmp.c -- temporary directories for the test suites (support.h).
 *
 * ts_rmtree walks with nftw(FTW_DEPTH | FTW_PHYS): children are removed before
 * their directory, and symbolic links are removed, never followed, so a test
 * can never delete anything outside its own directory through a link.
 */
#include "support.h"

#include <check.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

char *ts_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    char *tmpl = ts_path(base, "objstore-test-XXXXXX");
    if (tmpl == NULL)
        return NULL;
    if (mkdtemp(tmpl) == NULL) {
        int e = errno;
        free(tmpl);
        errno = e;
        return NULL;
    }
    return tmpl;
}

static int rmtree_err;  /* first errno met by rm_one, 0 if none */

static int rm_one(const char *path, const struct stat *sb, int type,
                  struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    int r = (type == FTW_DP || type == FTW_D) ? rmdir(path) : unlink(path);
    if (r != 0 && errno != ENOENT && rmtree_err == 0)
        rmtree_err = errno;
    return 0;   /* keep going: remove what can be removed */
}

int ts_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    rmtree_err = 0;
    if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return -1;
    if (rmtree_err != 0) {
        errno = rmtree_err;
        return -1;
    }
    return 0;
}

char *ts_path(const char *dir, const char *name)
{
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    while (name[0] == '/')
        name++;
    size_t nl = strlen(name);
    char *p = malloc(dl + 1 + nl + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, dir, dl);
    size_t at = dl;
    if (!(dl == 1 && dir[0] == '/'))
        p[at++] = '/';
    memcpy(p + at, name, nl + 1);
    return p;
}

void ts_sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

bool ts_under_sanitizer(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return true;
#else
    const char *e = getenv("OBJSTORE_SANITIZE");
    return e != NULL && e[0] != '\0' && strcmp(e, "0") != 0;
#endif
}

char *ts_root;
static unsigned ts_seq;

void ts_root_setup(void)
{
    ts_root = ts_tmpdir();
    ck_assert_msg(ts_root != NULL, "ts_tmpdir: %s", strerror(errno));
}

void ts_root_teardown(void)
{
    if (ts_root != NULL) {
        ts_rmtree(ts_root);
        free(ts_root);
        ts_root = NULL;
    }
}

char *ts_test_dir(void)
{
    char name[64];
    snprintf(name, sizeof name, "t%ld-%u", (long)getpid(), ts_seq++);
    char *dir = ts_path(ts_root, name);
    ck_assert_ptr_nonnull(dir);
    ck_assert_msg(mkdir(dir, 0700) == 0, "mkdir %s: %s", dir, strerror(errno));
    return dir;
}
