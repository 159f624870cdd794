/*
 * tool.c -- the shared pieces of the command-line tools (tool.h).
 */
#include "tool.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

#include "objstore.h"

volatile sig_atomic_t tool_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    tool_interrupted = 1;
}

void tool_catch_sigint(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void tool_print_version(const char *prog)
{
    printf("%s (objstore) %s, store format %u\n", prog, objstore_version(),
           objstore_format_version());
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void tool_progress_init(tool_progress *p, int mode)
{
    p->on = mode > 0 || (mode < 0 && isatty(STDERR_FILENO));
    p->last = 0;
    p->width = 0;
}

void tool_progress_update(tool_progress *p, const char *label, uint64_t done, uint64_t total)
{
    if (!p->on)
        return;
    double t = now();
    if (done < total && t - p->last < 0.1)
        return;
    p->last = t;
    enum { BAR = 30 };
    char bar[BAR + 1];
    unsigned fill = total ? (unsigned)((double)done / (double)total * BAR) : 0;
    if (fill > BAR)
        fill = BAR;
    memset(bar, '#', fill);
    memset(bar + fill, '-', BAR - fill);
    bar[BAR] = 0;
    double pct = total ? 100.0 * (double)done / (double)total : 0.0;
    p->width = fprintf(stderr, "\r%-24.24s [%s] %5.1f%%", label, bar, pct > 100 ? 100 : pct);
    fflush(stderr);
}

void tool_progress_done(tool_progress *p)
{
    if (!p->on || !p->width)
        return;
    fprintf(stderr, "\r%*s\r", p->width, "");
    fflush(stderr);
    p->width = 0;
}

const char *tool_commas(char *buf, uint64_t n)
{
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)n);
    int out = 0;
    for (int i = 0; i < len; i++) {
        if (i && (len - i) % 3 == 0)
            buf[out++] = ',';
        buf[out++] = tmp[i];
    }
    buf[out] = 0;
    return buf;
}

const char *tool_bytes(char *buf, uint64_t n)
{
    static const char *unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
    if (n < 1024) {
        snprintf(buf, 32, "%llu bytes", (unsigned long long)n);
        return buf;
    }
    double v = (double)n;
    unsigned u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    snprintf(buf, 32, "%.1f %s", v, unit[u]);
    return buf;
}

int tool_json_print(json_t *j)
{
    if (!j)
        return -1;
    int rc = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (rc == 0 && fputc('\n', stdout) == EOF)
        rc = -1;
    return fflush(stdout) == 0 ? rc : -1;
}
