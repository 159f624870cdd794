/*
 * test_install.c -- `scons install` and `scons uninstall`, as a user meets
 * them: install into a temporary DESTDIR, then build the API guide's example
 * program (examples/quickstart.c) with nothing but pkg-config against that
 * tree, run it, and check that the dynamic loader finds the versioned shared
 * library libobjstore.so.0.
 *
 * The source tree is found from this program's own path
 * (ROOT/build/VARIANT/tests/test_install); scons is run there with the
 * variant's options, so it installs what is already built.
 */
#include <check.h>

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "objstore.h"
#include "support.h"

#define PREFIX "/opt/objstore"

static char root[PATH_MAX];       /* the source tree */
static const char *variant_args;  /* "sanitize=1" etc. */
static bool asan_build;

static void find_tree(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    ck_assert_int_gt(n, 0);
    exe[n] = 0;
    /* ROOT/build/VARIANT/tests/test_install */
    char *cut[4];
    for (int i = 0; i < 4; i++) {
        cut[i] = strrchr(exe, '/');
        ck_assert_ptr_nonnull(cut[i]);
        *cut[i] = 0;
    }
    const char *variant = cut[2] + 1;
    snprintf(root, sizeof root, "%s", exe);
    asan_build = !strcmp(variant, "asan");
    variant_args = asan_build ? "sanitize=1" : !strcmp(variant, "debug") ? "debug=1" : "";
}

/* Runs a shell command, its output into *out (malloc'd; may be NULL);
 * returns its exit status. */
static int sh(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sh(char **out, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[8300];
    snprintf(full, sizeof full, "(%s) 2>&1", cmd);
    FILE *p = popen(full, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 2) {
            cap *= 2;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
    }
    buf[len] = 0;
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static bool exists(const char *dest, const char *path)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s%s", dest, path);
    struct stat sb;
    return lstat(p, &sb) == 0;
}

static char *install(void)
{
    find_tree();
    char *dest = ts_test_dir();
    char *out;
    int rc = sh(&out, "cd '%s' && scons -Q %s install DESTDIR='%s' PREFIX=" PREFIX, root,
                variant_args, dest);
    ck_assert_msg(rc == 0, "scons install failed (%d):\n%s", rc, out);
    free(out);
    return dest;
}

START_TEST(test_install_puts_every_file_in_place_and_uninstall_removes_them)
{
    char *dest = install();
    static const char *files[] = {
        PREFIX "/lib/libobjstore.a", PREFIX "/lib/libobjstore.so.0", PREFIX "/lib/libobjstore.so",
        PREFIX "/include/objstore.h", PREFIX "/include/objstore_admin.h",
        PREFIX "/lib/pkgconfig/objstore.pc", PREFIX "/bin/objstore",
        PREFIX "/share/man/man1/objstore.1", PREFIX "/share/man/man3/objstore.3"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        ck_assert_msg(exists(dest, files[i]), "%s was not installed", files[i]);

    /* libobjstore.so.0 -> the real file, named by the full version. */
    char p[PATH_MAX], link[PATH_MAX];
    snprintf(p, sizeof p, "%s" PREFIX "/lib/libobjstore.so.0", dest);
    ssize_t n = readlink(p, link, sizeof link - 1);
    ck_assert_msg(n > 0, "libobjstore.so.0 is not a symbolic link");
    link[n] = 0;
    ck_assert_str_eq(link, "libobjstore.so." OBJSTORE_VERSION_STRING);
    ck_assert(exists(dest, PREFIX "/lib/libobjstore.so." OBJSTORE_VERSION_STRING));
    char *out;
    ck_assert_int_eq(sh(&out, "readelf -d '%s'", p), 0);
    ck_assert_msg(strstr(out, "Library soname: [libobjstore.so.0]"), "no SONAME:\n%s", out);
    free(out);

    /* Every installed tool says its version. */
    ck_assert_int_eq(sh(&out, "'%s" PREFIX "/bin/objstore' --version", dest), 0);
    ck_assert_msg(strstr(out, OBJSTORE_VERSION_STRING), "objstore --version: %s", out);
    free(out);

    int rc = sh(&out, "cd '%s' && scons -Q %s uninstall DESTDIR='%s' PREFIX=" PREFIX, root,
                variant_args, dest);
    ck_assert_msg(rc == 0, "scons uninstall failed (%d):\n%s", rc, out);
    free(out);
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        ck_assert_msg(!exists(dest, files[i]), "%s is left after uninstall", files[i]);
    ck_assert(!exists(dest, PREFIX "/lib/libobjstore.so." OBJSTORE_VERSION_STRING));
    free(dest);
}
END_TEST

START_TEST(test_the_api_example_builds_with_pkg_config_alone_and_runs_on_the_shared_library)
{
    char *dest = install();
    /* The example is copied out of the tree so no header of the tree is near. */
    char *out;
    ck_assert_int_eq(sh(NULL, "cp '%s/examples/quickstart.c' '%s/app.c'", root, dest), 0);
    const char *env = "PKG_CONFIG_PATH='%s" PREFIX "/lib/pkgconfig' PKG_CONFIG_SYSROOT_DIR='%s'";
    char envs[PATH_MAX * 2 + 100];
    snprintf(envs, sizeof envs, env, dest, dest);
    int rc = sh(&out, "cd '%s' && export %s && cc -o app app.c $(pkg-config --cflags --libs "
                "objstore)", dest, envs);
    ck_assert_msg(rc == 0, "cc with pkg-config failed (%d):\n%s", rc, out);
    free(out);
    ck_assert_int_eq(sh(&out, "export %s && pkg-config --modversion objstore", envs), 0);
    ck_assert_msg(!strncmp(out, OBJSTORE_VERSION_STRING "\n", strlen(OBJSTORE_VERSION_STRING) + 1),
                  "pkg-config --modversion: %s", out);
    free(out);

    /* The program runs against the installed shared library. */
    const char *asan = asan_build ? "ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0 " : "";
    rc = sh(&out, "cd '%s' && %sLD_LIBRARY_PATH='%s" PREFIX "/lib' ./app notes hello", dest,
            asan, dest);
    ck_assert_msg(rc == 0, "the example failed (%d):\n%s", rc, out);
    ck_assert_msg(strstr(out, "hello"), "the example printed:\n%s", out);
    free(out);
    rc = sh(&out, "cd '%s' && LD_LIBRARY_PATH='%s" PREFIX "/lib' ldd ./app", dest, dest);
    ck_assert_int_eq(rc, 0);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "libobjstore.so.0 => %s" PREFIX "/lib/libobjstore.so.0", dest);
    ck_assert_msg(strstr(out, want), "ldd does not show %s:\n%s", want, out);
    free(out);
    free(dest);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("install");
    TCase *tc = tcase_create("install");
    tcase_add_unchecked_fixture(tc, ts_root_setup, ts_root_teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_install_puts_every_file_in_place_and_uninstall_removes_them);
    tcase_add_test(tc, test_the_api_example_builds_with_pkg_config_alone_and_runs_on_the_shared_library);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
