"""On hosts that forbid pidfd_getfd and kcmp (Docker's default seccomp profile gates both
behind CAP_SYS_PTRACE), snapshots still work: memory, registers, layout and the fd table
(new fds closed), with what cannot be done said in the result.

The helper runs under a real seccomp filter that makes those two syscalls fail with EPERM.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Installs a seccomp filter (EPERM for pidfd_getfd=438 and kcmp=312), then snapshots the
# target, waits for a line on stdin (the test mutates the target), restores, prints JSON.
SCRIPT = r"""
import ctypes, json, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
def insn(code, jt, jf, k): return struct.pack("HBBI", code, jt, jf, k)
prog = b"".join([
    insn(0x20, 0, 0, 0),            # ld [nr]
    insn(0x15, 2, 0, 438),          # jeq pidfd_getfd -> deny
    insn(0x15, 1, 0, 312),          # jeq kcmp -> deny
    insn(0x06, 0, 0, 0x7FFF0000),   # ret allow
    insn(0x06, 0, 0, 0x00050000 | 1),  # ret errno(EPERM)
])
buf = ctypes.create_string_buffer(prog)
fprog = struct.pack("HxxxxxxQ", len(prog) // 8, ctypes.addressof(buf))
fbuf = ctypes.create_string_buffer(fprog)
U = ctypes.c_ulong
assert libc.prctl(U(38), U(1), U(0), U(0), U(0)) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(U(22), U(2), U(ctypes.addressof(fbuf)), U(0), U(0)) == 0  # SECCOMP filter

from jupyter_chkpt.engine import checkpoint, restore
from jupyter_chkpt.engine.keeper import FdKeeper
from jupyter_chkpt.proc.capabilities import probe, snapshots_possible
from jupyter_chkpt.store import Store
caps = probe()
pid, store = int(sys.argv[1]), Store(sys.argv[2])
with FdKeeper() as keeper:
    info = checkpoint(pid, store, keeper=keeper)
    print(json.dumps({"held": keeper.held_count()}), flush=True)
    sys.stdin.readline()
    result = restore(pid, store, info.id, keeper=keeper)
print(json.dumps({
    "result": result.to_json(),
    "possible": snapshots_possible(caps),
    "caps": {c.name: c.ok for c in caps},
}), flush=True)
"""


@pytest.mark.timeout(120)
def test_snapshots_work_without_pidfd_getfd_and_kcmp(spawn, store_dir) -> None:
    target = spawn("py_files.py", "opened")
    helper = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(target.pid), str(store_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert helper.stdout is not None
        first = helper.stdout.readline()
        assert first, helper.communicate(timeout=60)[1]
        assert json.loads(first)["held"] == 0  # nothing can be held here
        target.ok("mutate")  # sockets, a pipe, an eventfd and an epoll opened since
        out, err = helper.communicate("go\n", timeout=60)
        assert helper.returncode == 0, err
    finally:
        if helper.poll() is None:
            helper.kill()
    report = json.loads(out)
    assert report["caps"]["pidfd_getfd"] is False and report["caps"]["kcmp"] is False
    assert report["possible"] is True
    result = report["result"]
    assert len(result["files"]["closed"]) >= 7, result["files"]
    assert any("pidfd_getfd" in n for n in result["notes"]), result["notes"]
    target.ok("verify")  # the fd table is the snapshot's again
    target.ok("work")
    target.quit()
