"""Stand-in for strace or gdb: attach to a process with ptrace and hold on to it.

Usage: ptrace_holder.py PID. The target runs on, traced, until this process is
killed; the kernel detaches it then.
"""

import os
import signal
import sys

from ptrace.binding.func import ptrace_attach, ptrace_cont

WALL = 0x40000000  # __WALL: the target is not our child

pid = int(sys.argv[1])
ptrace_attach(pid)
os.waitpid(pid, WALL)  # the attach-SIGSTOP
ptrace_cont(pid, 0)  # suppress it: the target runs on, traced
while True:
    signal.pause()
