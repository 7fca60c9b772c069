/* Threads target: pthreads blocked in different system calls at snapshot time.
 *
 * Each waiter loops: block, take a token, count one round, block again.
 * mutate runs one wake-up round (so the memory differs from the snapshot while
 * the kernel objects stay valid); work runs more rounds and checks that every
 * thread wakes up and sees the right token.  t-spin never blocks: it is
 * caught in user code by the freeze and keeps checking a buffer's hash.
 */
#include "proto.h"

#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

enum { T_READ, T_FUTEX, T_SLEEP, T_POLL, T_POLLTMO, T_EPOLL, T_SPIN, NT };
static const char *const names[NT] = {"t-read", "t-futex", "t-sleep", "t-poll",
                                      "t-polltmo", "t-epoll", "t-spin"};

static pthread_t threads[NT];
static pid_t tids[NT];
static int started;
static int rounds[NT];
static uint64_t last[NT];   /* token each waiter took last */
static int pipes[NT][2];    /* read, poll, polltmo, epoll */
static uint32_t futex_word; /* futex: bumped once per round */
static uint64_t futex_token;
static int sleep_flag;
static uint64_t sleep_token;
static int epfd;
static unsigned char spin_buf[64 << 10];
static uint64_t spin_h, spin_iters;
static int spin_err;
static unsigned char state_buf[1 << 20];
static uint64_t state_h;
static uint64_t next_token = 1000;


static void done_round(int i, uint64_t token)
{
    __atomic_store_n(&last[i], token, __ATOMIC_RELAXED);
    __atomic_add_fetch(&rounds[i], 1, __ATOMIC_RELEASE);
}

static void *waiter(void *arg)
{
    int i = (int)(intptr_t)arg;
    pthread_setname_np(pthread_self(), names[i]);
    __atomic_store_n(&tids[i], (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
    __atomic_add_fetch(&started, 1, __ATOMIC_RELEASE);
    uint32_t futex_seen = 0;
    for (;;) {
        switch (i) {
        case T_READ:
            done_round(i, read_token(pipes[i][0]));
            break;
        case T_FUTEX:
            while (__atomic_load_n(&futex_word, __ATOMIC_ACQUIRE) == futex_seen)
                syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, futex_seen, NULL, NULL, 0);
            futex_seen = __atomic_load_n(&futex_word, __ATOMIC_ACQUIRE);
            done_round(i, futex_token);
            break;
        case T_SLEEP: /* only a signal ends this sleep early */
            while (!load(&sleep_flag)) {
                struct timespec ts = {3600, 0};
                nanosleep(&ts, NULL);
            }
            __atomic_store_n(&sleep_flag, 0, __ATOMIC_RELEASE);
            done_round(i, sleep_token);
            break;
        case T_POLL:
        case T_POLLTMO: { /* with a timeout, poll is restarted via restart_block */
            struct pollfd p = {.fd = pipes[i][0], .events = POLLIN};
            if (poll(&p, 1, i == T_POLL ? -1 : 3600 * 1000) == 1)
                done_round(i, read_token(pipes[i][0]));
            break;
        }
        case T_EPOLL: {
            struct epoll_event ev;
            if (epoll_wait(epfd, &ev, 1, -1) == 1)
                done_round(i, read_token(pipes[i][0]));
            break;
        }
        case T_SPIN:
            if (hash_buf(spin_buf, sizeof(spin_buf)) != spin_h)
                __atomic_store_n(&spin_err, 1, __ATOMIC_RELEASE);
            __atomic_add_fetch(&spin_iters, 1, __ATOMIC_RELEASE);
            break;
        }
    }
    return NULL;
}

static void on_usr1(int sig) { (void)sig; }

/* Wake every waiter once; NULL when each took its token within 5 s. */
static const char *wake_all(void)
{
    static char msg[128];
    for (int i = 0; i < T_SPIN; i++) {
        uint64_t tok = next_token++;
        int r0 = load(&rounds[i]);
        switch (i) {
        case T_FUTEX:
            futex_token = tok;
            __atomic_add_fetch(&futex_word, 1, __ATOMIC_RELEASE);
            syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
            break;
        case T_SLEEP:
            sleep_token = tok;
            __atomic_store_n(&sleep_flag, 1, __ATOMIC_RELEASE);
            break;
        default:
            if (write(pipes[i][1], &tok, sizeof(tok)) != sizeof(tok))
                return "pipe write failed";
        }
        int waited = 0;
        while (load(&rounds[i]) == r0 && waited < 5000) {
            /* repeated, since the signal can land just before nanosleep */
            if (i == T_SLEEP && waited % 10 == 0)
                pthread_kill(threads[T_SLEEP], SIGUSR1);
            sleep_ms(1);
            waited++;
        }
        if (load(&rounds[i]) != r0 + 1 || __atomic_load_n(&last[i], __ATOMIC_RELAXED) != tok) {
            snprintf(msg, sizeof(msg), "%s did not complete its round", names[i]);
            return msg;
        }
    }
    return NULL;
}

static const char *verify(void)
{
    static char msg[160];
    for (int i = 0; i < NT; i++) {
        char path[64], comm[32] = "";
        snprintf(path, sizeof(path), "/proc/self/task/%d/comm", tids[i]);
        FILE *f = fopen(path, "r");
        if (!f || !fgets(comm, sizeof(comm), f)) {
            snprintf(msg, sizeof(msg), "thread %s (%d) is gone", names[i], tids[i]);
            if (f)
                fclose(f);
            return msg;
        }
        fclose(f);
        comm[strcspn(comm, "\n")] = 0;
        if (strcmp(comm, names[i])) {
            snprintf(msg, sizeof(msg), "thread %d is named %s, not %s", tids[i], comm, names[i]);
            return msg;
        }
        if (load(&rounds[i])) {
            snprintf(msg, sizeof(msg), "%s has %d rounds, had 0", names[i], load(&rounds[i]));
            return msg;
        }
    }
    int ntasks = task_count();
    if (ntasks != NT + 1) {
        snprintf(msg, sizeof(msg), "%d threads, expected %d", ntasks, NT + 1);
        return msg;
    }
    if (hash_buf(state_buf, sizeof(state_buf)) != state_h)
        return "state buffer differs";
    if (load(&spin_err))
        return "t-spin saw its buffer change";
    return NULL;
}

static const char *mutate(void)
{
    state_buf[12345] ^= 1;
    return wake_all();
}

static const char *work(void)
{
    const char *err = wake_all();
    if (err)
        return err;
    uint64_t it0 = __atomic_load_n(&spin_iters, __ATOMIC_ACQUIRE);
    for (int ms = 0; __atomic_load_n(&spin_iters, __ATOMIC_ACQUIRE) == it0; ms++) {
        if (ms == 5000)
            return "t-spin makes no progress";
        sleep_ms(1);
    }
    return load(&spin_err) ? "t-spin saw its buffer change" : NULL;
}

int main(void)
{
    struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART */
    sigaction(SIGUSR1, &sa, NULL);
    fill_random(spin_buf, sizeof(spin_buf));
    spin_h = hash_buf(spin_buf, sizeof(spin_buf));
    fill_random(state_buf, sizeof(state_buf));
    state_h = hash_buf(state_buf, sizeof(state_buf));
    for (int i = 0; i < NT; i++)
        if (pipe(pipes[i]))
            return 5;
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = T_EPOLL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, pipes[T_EPOLL][0], &ev);
    for (int i = 0; i < NT; i++)
        pthread_create(&threads[i], NULL, waiter, (void *)(intptr_t)i);
    while (load(&started) < NT)
        sleep_ms(1);
    reply("ready");
    char cmd[128];
    while (read_cmd(cmd, sizeof(cmd))) {
        if (strcmp(cmd, "quit") == 0) {
            reply("ok bye");
            return 0;
        } else if (strcmp(cmd, "tids") == 0) {
            char line[512];
            int n = 0;
            for (int i = 0; i < NT; i++)
                n += snprintf(line + n, sizeof(line) - (size_t)n, " %s=%d", names[i], tids[i]);
            reply("ok%s", line);
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
    return 3;
}
