/* Line protocol shared by the C targets (see tests/zdtm.py).
 *
 * The target prints "ready", then answers one reply line per command line.
 * Commands are read straight from fd 0 into a buffer in our own memory, so a
 * restore rolls the buffer back together with everything else and no stdio
 * buffer can hold read-ahead input; replies go out with write(2), unbuffered.
 */
#ifndef PROTO_H
#define PROTO_H

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char proto_in[512];
static size_t proto_len;

/* Next command line without its newline; 0 at end of input. */
static int read_cmd(char *out, size_t cap)
{
    for (;;) {
        char *nl = memchr(proto_in, '\n', proto_len);
        if (nl) {
            size_t n = (size_t)(nl - proto_in);
            size_t k = n < cap - 1 ? n : cap - 1;
            memcpy(out, proto_in, k);
            out[k] = 0;
            proto_len -= n + 1;
            memmove(proto_in, nl + 1, proto_len);
            return 1;
        }
        if (proto_len == sizeof(proto_in))
            proto_len = 0; /* an overlong line: drop it */
        ssize_t r = read(0, proto_in + proto_len, sizeof(proto_in) - proto_len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        proto_len += (size_t)r;
    }
}

__attribute__((format(printf, 1, 2))) static void reply(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    for (int off = 0; off < n;) {
        ssize_t w = write(1, line + off, (size_t)(n - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            _exit(4);
        off += (int)w;
    }
}

/* Reply "ok" when problem is NULL, else "fail <problem>". */
static void reply_check(const char *problem)
{
    if (problem)
        reply("fail %s", problem);
    else
        reply("ok");
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

__attribute__((unused)) static void fill_random(void *p, size_t n)
{
    unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = rng_next();
        memcpy(b + i, &v, 8);
    }
    for (; i < n; i++)
        b[i] = (unsigned char)rng_next();
}

/* FNV-1a over 64-bit words: cheap enough for tens of MiB per command. */
__attribute__((unused)) static uint64_t hash_buf(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    for (; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* Helpers of the thread targets. */

__attribute__((unused)) static int load(const int *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

__attribute__((unused)) static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One 8-byte token from a pipe, read again after a signal; 0 at EOF or error. */
__attribute__((unused)) static uint64_t read_token(int fd)
{
    uint64_t tok;
    ssize_t r;
    while ((r = read(fd, &tok, sizeof(tok))) < 0 && errno == EINTR)
        ;
    return r == sizeof(tok) ? tok : 0;
}

/* Threads of this process, as the kernel lists them. */
__attribute__((unused)) static int task_count(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

#endif
