/* Signals with their siginfo: a SA_SIGINFO handler records every SIGUSR1 and
 * SIGRTMIN+1 it gets (code, sender, value), in order.
 *
 *   check PID   "ok" if it got exactly: SIGRTMIN+1 queued by PID (sigqueue,
 *               SI_QUEUE) with values 0, 1, 2 in that order, and SIGUSR1 sent by
 *               PID with kill (SI_USER); else "fail <what it got>"
 *   work        replies "ok"
 *
 * Signals sent while a tracer holds the process must reach it afterwards as
 * they were sent: a real-time signal queued three times three times, each
 * with its own value and sender, not once by the tracer with tgkill.
 */
#include "proto.h"
#include <signal.h>

#define MAXGOT 16

static volatile sig_atomic_t ngot;
static struct {
    int signo, code, pid, value;
} got[MAXGOT];

static void on_signal(int signo, siginfo_t *si, void *ctx)
{
    (void)ctx;
    if (ngot < MAXGOT) {
        got[ngot].signo = signo;
        got[ngot].code = si->si_code;
        got[ngot].pid = si->si_pid;
        got[ngot].value = si->si_value.sival_int;
        ngot++;
    }
}

static const char *check(int sender)
{
    static char why[512];
    int rt = 0, usr = 0, bad = 0;
    for (int i = 0; i < ngot; i++) {
        if (got[i].signo == SIGRTMIN + 1) {
            if (got[i].code != SI_QUEUE || got[i].pid != sender || got[i].value != rt)
                bad = 1;
            rt++;
        } else if (got[i].signo == SIGUSR1) {
            if (got[i].code != SI_USER || got[i].pid != sender)
                bad = 1;
            usr++;
        }
    }
    if (!bad && rt == 3 && usr == 1)
        return NULL;
    int n = snprintf(why, sizeof(why), "got %d:", (int)ngot);
    for (int i = 0; i < ngot && n < (int)sizeof(why) - 64; i++)
        n += snprintf(why + n, sizeof(why) - (size_t)n, " (sig %d code %d pid %d value %d)",
                      got[i].signo, got[i].code, got[i].pid, got[i].value);
    return why;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) || sigaction(SIGRTMIN + 1, &sa, NULL))
        return 2;
    char cmd[128];
    reply("ready");
    while (read_cmd(cmd, sizeof(cmd))) {
        int sender;
        if (sscanf(cmd, "check %d", &sender) == 1) {
            reply_check(check(sender));
        } else if (strcmp(cmd, "work") == 0) {
            reply("ok");
        } else if (strcmp(cmd, "quit") == 0) {
            reply("ok bye");
            return 0;
        } else {
            reply("fail unknown command %s", cmd);
        }
    }
    return 0;
}
