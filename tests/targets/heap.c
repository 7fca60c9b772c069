/* Heap target: the brk heap grows or shrinks between snapshot and restore.
 *
 *   heap grow    mutate allocates 64 MiB more heap (brk moves up)
 *   heap shrink  mutate frees the 24 MiB block at the top and trims (brk moves down)
 *   heap small   1 MiB of state and a counter, cheap enough for 100 cycles
 *
 * verify checks the kernel's brk, our bookkeeping and the hashes of every
 * buffer against the values taken when "ready" was printed or by the last
 * work (whose allocator leftovers may move brk).
 */
#include "proto.h"

#include <malloc.h>

#define NBLOCKS 64
#define BIG_SIZE (24u << 20)
#define GROW_CHUNKS 64
#define CHUNK (1u << 20)

static struct {
    unsigned char *p;
    size_t n;
    uint64_t h;
} blocks[NBLOCKS];

static const char *mode;
static void *brk0;
static unsigned char *big; /* shrink: the top-of-heap block */
static uint64_t big_h;
static int big_freed;
static unsigned char *extra[GROW_CHUNKS]; /* grow: what mutate allocated */
static int nextra;
static uint64_t counter, counter0; /* small */

static void build(void)
{
    /* Keep everything below 32 MiB on the brk heap instead of in mmaps. */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    size_t nblocks = strcmp(mode, "small") == 0 ? 1 : NBLOCKS;
    for (size_t i = 0; i < nblocks; i++) {
        blocks[i].n = nblocks == 1 ? (1u << 20) : 1024 + rng_next() % (64 << 10);
        blocks[i].p = malloc(blocks[i].n);
        fill_random(blocks[i].p, blocks[i].n);
        blocks[i].h = hash_buf(blocks[i].p, blocks[i].n);
    }
    if (strcmp(mode, "shrink") == 0) {
        big = malloc(BIG_SIZE); /* allocated last: it sits at the top of the heap */
        fill_random(big, BIG_SIZE);
        big_h = hash_buf(big, BIG_SIZE);
    }
    counter = counter0 = 1;
    brk0 = sbrk(0);
}

static const char *check_blocks(void)
{
    for (size_t i = 0; i < NBLOCKS && blocks[i].p; i++)
        if (hash_buf(blocks[i].p, blocks[i].n) != blocks[i].h)
            return "block content differs";
    return NULL;
}

static const char *verify(void)
{
    static char msg[128];
    void *brk_now = sbrk(0);
    if (brk_now != brk0) {
        snprintf(msg, sizeof(msg), "brk is %p, was %p", brk_now, brk0);
        return msg;
    }
    if (nextra)
        return "allocations from mutate are still recorded";
    if (big_freed)
        return "the big block is marked freed";
    if (big && hash_buf(big, BIG_SIZE) != big_h)
        return "big block content differs";
    if (counter != counter0)
        return "counter differs";
    return check_blocks();
}

static const char *mutate(void)
{
    char *before = sbrk(0);
    blocks[0].p[0] ^= 0xff; /* hash stays as recorded: verify must notice */
    counter++;
    if (strcmp(mode, "grow") == 0) {
        for (nextra = 0; nextra < GROW_CHUNKS; nextra++) {
            extra[nextra] = malloc(CHUNK);
            fill_random(extra[nextra], CHUNK);
        }
        if ((char *)sbrk(0) < before + GROW_CHUNKS * CHUNK)
            return "heap did not grow through brk";
    } else if (strcmp(mode, "shrink") == 0) {
        free(big);
        big_freed = 1;
        malloc_trim(0);
        if ((char *)sbrk(0) > before - BIG_SIZE / 2)
            return "heap did not shrink";
    } else {
        fill_random(blocks[0].p, blocks[0].n);
    }
    return NULL;
}

/* Normal heap use: random sizes, a large block that moves brk, trimming. */
static const char *work(void)
{
    enum { N = 256 };
    static unsigned char *p[N];
    static size_t n[N];
    static uint64_t h[N], kept[NBLOCKS];
    /* The churn must not disturb existing blocks (compared with themselves, not
     * with the snapshot: work is fine in a mutated state too). */
    for (size_t i = 0; i < NBLOCKS && blocks[i].p; i++)
        kept[i] = hash_buf(blocks[i].p, blocks[i].n);
    for (int i = 0; i < N; i++) {
        n[i] = 16 + rng_next() % (i % 16 == 0 ? (256 << 10) : 4096);
        p[i] = malloc(n[i]);
        if (!p[i])
            return "malloc failed";
        fill_random(p[i], n[i]);
        h[i] = hash_buf(p[i], n[i]);
    }
    unsigned char *large = malloc(8 << 20);
    if (!large)
        return "large malloc failed";
    memset(large, 0x5a, 8 << 20);
    for (int i = 0; i < N; i++)
        if (hash_buf(p[i], n[i]) != h[i])
            return "fresh allocation corrupted";
    for (int i = 0; i < N; i += 2)
        free(p[i]);
    for (int i = 1; i < N; i += 2)
        free(p[i]);
    free(large);
    malloc_trim(0);
    if (big && !big_freed) { /* the restored top block must be plain writable memory */
        fill_random(big, BIG_SIZE);
        big_h = hash_buf(big, BIG_SIZE);
    }
    brk0 = sbrk(0); /* what work leaves is the reference for the next snapshot */
    for (size_t i = 0; i < NBLOCKS && blocks[i].p; i++)
        if (hash_buf(blocks[i].p, blocks[i].n) != kept[i])
            return "a block changed during work";
    return NULL;
}

int main(int argc, char **argv)
{
    mode = argc > 1 ? argv[1] : "small";
    if (strcmp(mode, "grow") && strcmp(mode, "shrink") && strcmp(mode, "small")) {
        fprintf(stderr, "usage: heap grow|shrink|small\n");
        return 2;
    }
    build();
    reply("ready");
    char cmd[128];
    while (read_cmd(cmd, sizeof(cmd))) {
        if (strcmp(cmd, "quit") == 0) {
            reply("ok bye");
            return 0;
        } else if (strcmp(cmd, "verify") == 0) {
            reply_check(verify());
        } else if (strcmp(cmd, "mutate") == 0) {
            reply_check(mutate());
        } else if (strcmp(cmd, "work") == 0) {
            reply_check(work());
        } else {
            reply("fail unknown command %s", cmd);
        }
    }
    return 3; /* stdin closed without quit */
}
