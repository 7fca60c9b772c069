/* A process whose main thread cannot stop for a while: a vfork parent.
 *
 *   vfork N   the main thread vforks a child that sleeps N seconds before it
 *             exits; until then the parent waits in the kernel, killable but
 *             not stoppable (state D), and replies "ok" once the child is gone
 *   work      replies "ok"
 *
 * A freeze must give up on it at its deadline (FreezeTimeout) and leave it
 * running, untouched.
 */
#include "proto.h"
#include <sys/types.h>
#include <sys/wait.h>

int main(void)
{
    char cmd[128];
    reply("ready");
    while (read_cmd(cmd, sizeof(cmd))) {
        unsigned secs;
        if (sscanf(cmd, "vfork %u", &secs) == 1) {
            pid_t child = vfork();
            if (child == 0) {
                sleep(secs); /* not async-signal-safe in theory; fine on Linux */
                _exit(0);
            }
            int status;
            waitpid(child, &status, 0);
            reply_check(child > 0 ? NULL : "vfork failed");
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
