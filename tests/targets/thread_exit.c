/* Threads that exit after the snapshot: a restore must bring them back.
 *
 * Six pthreads, each blocked somewhere (futex, read, nanosleep, a robust mutex
 * held while waiting, a thread with an alternate signal stack, CPU affinity and
 * nice value, a thread in its own cleanup-free loop), each with a name and
 * thread-local data.  `mutate` ends them all and joins them.  After a restore
 * every thread must exist again and, in each round, check itself from the
 * inside: its TLS, its name, that glibc's idea of its tid (the clear_child_tid
 * word) is the kernel's, its alternate stack, affinity and nice value.  The
 * main thread checks that pthread_kill() reaches the right thread, that the
 * robust mutex the thread held is still its own (an error-checking robust mutex
 * refuses an unlock by anyone else), that the kernel hands the mutex over with
 * EOWNERDEAD when its owner dies (robust list registered, owner tid right),
 * and that pthread_join() returns (clear_child_tid registered).
 */
#include "proto.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

enum { T_FUTEX, T_READ, T_SLEEP, T_ROBUST, T_ALT, T_SPIN, NT };
static const char *const names[NT] = {"x-futex", "x-read", "x-sleep",
                                      "x-robust", "x-alt", "x-spin"};

static pthread_t threads[NT];
static int alive[NT];
static int live_tid[NT];       /* gettid() as each thread last saw it */
static int rounds[NT];
static char problem[NT][128];  /* what a thread found wrong about itself */
static int sig_tid[NT];        /* gettid() inside the SIGUSR1 handler */
static int sig_on_alt;
static uint32_t wake_word;     /* futex: bumped once per round */
static int quit_flag;
static int robust_cmd;         /* 1: unlock and relock, 2: die holding it */
static int pipefd[2];
static pthread_mutex_t robust;
static char altstack_mem[64 << 10];
static uint64_t spin_count;
static __thread int my_index = -1;
static __thread uint64_t my_magic;

static int gettid_(void) { return (int)syscall(SYS_gettid); }

static void on_usr1(int sig)
{
    (void)sig;
    char here;
    if (my_index >= 0)
        __atomic_store_n(&sig_tid[my_index], gettid_(), __ATOMIC_RELEASE);
    if (my_index == T_ALT && &here >= altstack_mem && &here < altstack_mem + sizeof(altstack_mem))
        __atomic_store_n(&sig_on_alt, 1, __ATOMIC_RELEASE);
}

/* What this thread finds wrong about itself; "" when all is well. */
static void self_check(int i)
{
    char *p = problem[i];
    p[0] = 0;
    int tid = gettid_();
    __atomic_store_n(&live_tid[i], tid, __ATOMIC_RELEASE);
    if (my_magic != 0xC0FFEE00u + (uint64_t)i)
        snprintf(p, 128, "TLS lost: %llx", (unsigned long long)my_magic);
    int *tid_word = NULL;
    if (prctl(PR_GET_TID_ADDRESS, &tid_word) || !tid_word || *tid_word != tid)
        snprintf(p, 128, "pthread tid word says %d, the kernel %d", tid_word ? *tid_word : -1,
                 tid);
    char comm[16] = "";
    prctl(PR_GET_NAME, comm);
    if (strcmp(comm, names[i]))
        snprintf(p, 128, "named %s", comm);
    if (i == T_ALT) {
        stack_t ss;
        cpu_set_t cpus;
        sigaltstack(NULL, &ss);
        if ((ss.ss_flags & SS_DISABLE) || ss.ss_sp != altstack_mem)
            snprintf(p, 128, "alternate stack lost (flags %d)", ss.ss_flags);
        sched_getaffinity(0, sizeof(cpus), &cpus);
        if (CPU_COUNT(&cpus) != 1 || !CPU_ISSET(0, &cpus))
            snprintf(p, 128, "affinity lost (%d CPUs)", CPU_COUNT(&cpus));
        errno = 0;
        if (getpriority(PRIO_PROCESS, 0) != 5)
            snprintf(p, 128, "nice %d, not 5", getpriority(PRIO_PROCESS, 0));
    }
}

static void *run(void *arg)
{
    int i = (int)(intptr_t)arg;
    my_index = i;
    my_magic = 0xC0FFEE00u + (uint64_t)i;
    pthread_setname_np(pthread_self(), names[i]);
    if (i == T_ROBUST)
        pthread_mutex_lock(&robust);
    if (i == T_ALT) {
        stack_t ss = {.ss_sp = altstack_mem, .ss_size = sizeof(altstack_mem)};
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        CPU_SET(0, &cpus);
        sigaltstack(&ss, NULL);
        sched_setaffinity(0, sizeof(cpus), &cpus);
        setpriority(PRIO_PROCESS, 0, 5);
    }
    self_check(i);
    uint32_t seen = 0;
    while (!load(&quit_flag)) {
        switch (i) {
        case T_READ:
            read_token(pipefd[0]);
            break;
        case T_SLEEP: { /* woken by SIGUSR1 only */
            struct timespec ts = {3600, 0};
            nanosleep(&ts, NULL);
            if (__atomic_load_n(&wake_word, __ATOMIC_ACQUIRE) == seen)
                continue;
            break;
        }
        case T_SPIN:
            __atomic_add_fetch(&spin_count, 1, __ATOMIC_RELEASE);
            if (__atomic_load_n(&wake_word, __ATOMIC_ACQUIRE) == seen)
                continue;
            break;
        default:
            while (__atomic_load_n(&wake_word, __ATOMIC_ACQUIRE) == seen && !load(&quit_flag))
                syscall(SYS_futex, &wake_word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
        }
        seen = __atomic_load_n(&wake_word, __ATOMIC_ACQUIRE);
        if (i == T_ROBUST && load(&robust_cmd) == 2) {
            __atomic_store_n(&alive[i], 0, __ATOMIC_RELEASE);
            return NULL; /* still holding the mutex: the kernel must hand it over */
        }
        if (i == T_ROBUST && load(&robust_cmd) == 1) {
            int u = pthread_mutex_unlock(&robust);
            int l = pthread_mutex_lock(&robust);
            if (u || l)
                snprintf(problem[i], 128, "unlock %d, relock %d: not the owner any more", u, l);
        }
        if (!problem[i][0] || i == T_ROBUST)
            self_check(i);
        __atomic_add_fetch(&rounds[i], 1, __ATOMIC_RELEASE);
    }
    if (i == T_ROBUST)
        pthread_mutex_unlock(&robust);
    __atomic_store_n(&alive[i], 0, __ATOMIC_RELEASE);
    return NULL;
}

static void wake(void)
{
    __atomic_add_fetch(&wake_word, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, &wake_word, FUTEX_WAKE_PRIVATE, NT, NULL, NULL, 0);
    uint64_t tok = 1;
    if (write(pipefd[1], &tok, sizeof(tok)) != sizeof(tok))
        return;
    if (!pthread_equal(threads[T_SLEEP], (pthread_t)0)) /* not joined yet */
        pthread_kill(threads[T_SLEEP], SIGUSR1);
}

static const char *join_all(int timeout_s)
{
    static char msg[128];
    for (int i = 0; i < NT; i++) {
        if (!pthread_equal(threads[i], (pthread_t)0)) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += timeout_s;
            int r = pthread_timedjoin_np(threads[i], NULL, &until);
            if (r) {
                snprintf(msg, sizeof(msg), "pthread_join(%s): %s", names[i], strerror(r));
                return msg;
            }
            threads[i] = (pthread_t)0;
        }
    }
    return NULL;
}

/* One round: every thread wakes, checks itself; signals reach the right thread. */
static const char *round_trip(int cmd)
{
    static char msg[192];
    int r0[NT];
    if (load(&quit_flag))
        return NULL; /* mutate ended every thread on purpose: verify says so */
    for (int i = 0; i < NT; i++)
        r0[i] = load(&rounds[i]);
    __atomic_store_n(&robust_cmd, cmd, __ATOMIC_RELEASE);
    wake();
    for (int i = 0; i < NT; i++) {
        for (int ms = 0; load(&rounds[i]) == r0[i]; ms++) {
            if (ms == 5000) {
                snprintf(msg, sizeof(msg), "%s did not wake up", names[i]);
                return msg;
            }
            if (i == T_SLEEP && ms % 10 == 9)
                pthread_kill(threads[T_SLEEP], SIGUSR1);
            sleep_ms(1);
        }
        if (problem[i][0]) {
            snprintf(msg, sizeof(msg), "%s: %s", names[i], problem[i]);
            return msg;
        }
    }
    __atomic_store_n(&robust_cmd, 0, __ATOMIC_RELEASE);
    for (int i = 0; i < NT; i++) {
        __atomic_store_n(&sig_tid[i], 0, __ATOMIC_RELEASE);
        pthread_kill(threads[i], SIGUSR1);
        for (int ms = 0; load(&sig_tid[i]) == 0; ms++) {
            if (ms == 5000) {
                snprintf(msg, sizeof(msg), "pthread_kill did not reach %s", names[i]);
                return msg;
            }
            sleep_ms(1);
        }
        if (load(&sig_tid[i]) != load(&live_tid[i])) {
            snprintf(msg, sizeof(msg), "a signal for %s (%d) ran in thread %d", names[i],
                     load(&live_tid[i]), load(&sig_tid[i]));
            return msg;
        }
    }
    if (!load(&sig_on_alt))
        return "x-alt's signal handler did not run on its alternate stack";
    if (pthread_mutex_trylock(&robust) != EBUSY)
        return "x-robust no longer holds its mutex";
    return NULL;
}

static const char *verify(void)
{
    static char msg[128];
    if (task_count() != NT + 1) {
        snprintf(msg, sizeof(msg), "%d threads, expected %d", task_count(), NT + 1);
        return msg;
    }
    for (int i = 0; i < NT; i++)
        if (!load(&alive[i]) || load(&rounds[i])) {
            snprintf(msg, sizeof(msg), "%s: alive %d rounds %d", names[i], load(&alive[i]),
                     load(&rounds[i]));
            return msg;
        }
    return round_trip(1);
}

static const char *mutate(void)
{
    __atomic_store_n(&quit_flag, 1, __ATOMIC_RELEASE);
    wake();
    const char *err = join_all(10);
    if (err)
        return err;
    /* pthread_join returns once the kernel cleared the tid, a moment before it is done */
    for (int ms = 0; task_count() != 1 && ms < 5000; ms++)
        sleep_ms(1);
    return task_count() == 1 ? NULL : "threads still run after the join";
}

/* x-robust dies holding its mutex: the kernel marks it EOWNERDEAD for the next owner. */
static const char *die(void)
{
    __atomic_store_n(&robust_cmd, 2, __ATOMIC_RELEASE);
    wake();
    for (int ms = 0; load(&alive[T_ROBUST]); ms++) {
        if (ms == 5000)
            return "x-robust did not end";
        sleep_ms(1);
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    int r = pthread_mutex_timedlock(&robust, &until);
    if (r != EOWNERDEAD) {
        static char msg[96];
        snprintf(msg, sizeof(msg), "locking the dead owner's mutex gave %s, not EOWNERDEAD",
                 strerror(r));
        return msg;
    }
    pthread_mutex_consistent(&robust);
    pthread_mutex_unlock(&robust);
    struct timespec j;
    clock_gettime(CLOCK_REALTIME, &j);
    j.tv_sec += 5;
    if (pthread_timedjoin_np(threads[T_ROBUST], NULL, &j))
        return "pthread_join(x-robust) failed";
    threads[T_ROBUST] = (pthread_t)0;
    return NULL;
}

int main(void)
{
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_ONSTACK}; /* no SA_RESTART */
    sigaction(SIGUSR1, &sa, NULL);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&robust, &ma);
    if (pipe(pipefd))
        return 5;
    for (int i = 0; i < NT; i++) {
        alive[i] = 1;
        pthread_create(&threads[i], NULL, run, (void *)(intptr_t)i);
    }
    for (int i = 0; i < NT; i++)
        while (!load(&live_tid[i]))
            sleep_ms(1);
    reply("ready");
    char cmd[128];
    while (read_cmd(cmd, sizeof(cmd))) {
        if (strcmp(cmd, "quit") == 0) {
            __atomic_store_n(&quit_flag, 1, __ATOMIC_RELEASE);
            wake();
            const char *err = join_all(10);
            if (err) {
                reply("fail %s", err);
                continue;
            }
            reply("ok bye");
            return 0;
        } else if (strcmp(cmd, "tids") == 0) {
            char line[512];
            int n = 0;
            for (int i = 0; i < NT; i++)
                n += snprintf(line + n, sizeof(line) - (size_t)n, " %s=%d", names[i],
                              load(&live_tid[i]));
            reply("ok%s", line);
        } else if (strcmp(cmd, "verify") == 0) {
            reply_check(verify());
        } else if (strcmp(cmd, "mutate") == 0) {
            reply_check(mutate());
        } else if (strcmp(cmd, "work") == 0) {
            reply_check(round_trip(1));
        } else if (strcmp(cmd, "die") == 0) {
            reply_check(die());
        } else {
            reply("fail unknown command %s", cmd);
        }
    }
    return 3;
}
