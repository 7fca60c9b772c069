"""The targets check themselves, without the engine.

Each target must answer ``verify`` with ok when nothing changed, keep working
through ``work`` (mutated or not), and answer ``verify`` with fail after ``mutate``: a verify
that cannot fail would make every scenario test pass for nothing. The
expected failure text shows which check caught the mutation: for the
address-space scenarios it is the kernel-side check (maps, brk, tasks), not
just the Python-side bookkeeping.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import zdtm

# (target, args, text the failed verify must contain); "{lib}" is libprobe.so.
# None: the mutation cannot be undone (bytes read, lines written), so verify
# only checks that things work; the scenario test asserts the restore's report.
CASES: dict[str, tuple[str, list[str], str | None]] = {
    "heap-grow": ("heap", ["grow"], "brk is"),
    "heap-shrink": ("heap", ["shrink"], "brk is"),
    "heap-small": ("heap", ["small"], "counter differs"),
    "c-threads": ("threads", [], "t-read has 1 rounds"),
    "mmap-new": ("py_memory.py", ["mmap_new"], "new large mappings"),
    "mmap-free": ("py_memory.py", ["mmap_free"], "has perms {''}"),
    "late-import": ("py_memory.py", ["late_import", "{lib}"], "mapped files differ"),
    "mprotect": ("py_memory.py", ["mprotect"], "rw region has perms"),
    "counter": ("py_counter.py", [], "counter is 2, expected 1"),
    "py-threads-late": ("py_threads.py", ["late"], "tasks, had 3"),
    "py-threads-doomed": ("py_threads.py", ["doomed"], "2 tasks, had 3"),
    "py-threads-blocked": ("py_threads.py", ["blocked"], "rounds are"),
    "py-threads-ended": ("py_threads.py", ["ended"], "1 tasks, had 9"),
    "py-threads-flip": ("py_threads.py", ["flip"], "phase is b, was a"),
    "thread-exit": ("thread_exit", [], "1 threads, expected 7"),
    "files-opened": ("py_files.py", ["opened"], "fd table"),
    "files-closed": ("py_files.py", ["closed"], "fd table"),
    "files-reused": ("py_files.py", ["reused"], "fd table"),
    "files-epoll": ("py_files.py", ["epoll"], "registrations"),
    "files-consumed": ("py_files.py", ["consumed"], "pipes hold (b'', b'stale')"),
    "files-counters": ("py_files.py", ["counters"], "plain eventfd counter"),
    "files-offset": ("py_files.py", ["offset"], "offset is 9000"),
    "files-shared": ("py_files.py", ["shared", "2"], None),
    "files-signals": ("py_files.py", ["signals"], "caught/ignored masks"),
    "files-cwd": ("py_files.py", ["cwd", "/"], "cwd is /"),
    "zmq": ("py_zmq.py", [], "non-socket"),
    "process-personality": ("py_process.py", ["personality"], "personality 0x"),
    "process-signals": ("py_process.py", ["signals"], "pending are"),
    "process-timed-wait": ("py_process.py", ["timed_wait"], "value is 'since'"),
    # no verify of its own: test_zdtm_dirty.py compares whole images
    "dirty": ("py_dirty.py", [], None),
    # verify says which generation it is in: a mutated target is consistent too
    # (test_rescue_target_detects_a_torn_state checks that it can fail)
    "rescue": ("py_rescue.py", ["8"], None),
}

# vfork_parent.c has no state to verify: test_zdtm_freeze.py drives it; siginfo.c checks
# the signals it got (test_siginfo_target_can_fail below)
NOT_TARGETS = {"_proto.py", "ptrace_holder.py", "probe.c", "proto.h", "vfork_parent.c", "siginfo.c"}


def _args(args: list[str], c_targets: dict[str, Path]) -> list[str]:
    return [a.replace("{lib}", str(c_targets["libprobe.so"])) for a in args]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES)
def test_verify_ok_work_quit(case: str, spawn, c_targets) -> None:
    name, args, _ = CASES[case]
    target = spawn(name, *_args(args, c_targets))
    target.ok("verify")
    target.ok("work")
    target.ok("work")
    target.quit()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", [c for c, (_, _, expected) in CASES.items() if expected])
def test_verify_detects_mutation(case: str, spawn, c_targets) -> None:
    name, args, expected = CASES[case]
    assert expected is not None
    target = spawn(name, *_args(args, c_targets))
    target.ok("mutate")
    reply = target.send("verify")
    assert reply.startswith("fail "), reply
    assert expected in reply
    target.ok("work")  # a mutated target stays usable (tests of failed restores rely on it)
    target.quit()


@pytest.mark.timeout(120)
def test_rescue_target_detects_a_torn_state(spawn) -> None:
    target = spawn("py_rescue.py", "8")
    assert target.ok("verify") == "0"
    target.ok("mutate")
    assert target.ok("verify") == "1"
    target.ok("tear")  # one page of the buffer left from another generation
    reply = target.send("verify")
    assert reply.startswith("fail buffer differs"), reply
    target.ok("work")
    target.quit()


def test_every_target_is_checked() -> None:
    files = {p.name for p in zdtm.TARGETS.iterdir() if p.suffix in (".c", ".py", ".h")}
    checked = {name if name.endswith(".py") else f"{name}.c" for name, _, _ in CASES.values()}
    assert files - NOT_TARGETS == checked


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("name", "args", "where"),
    [("threads", [], zdtm.C_BLOCKED), ("py_threads.py", ["blocked"], zdtm.PY_BLOCKED)],
)
def test_threads_block_where_claimed(spawn, name: str, args: list[str], where) -> None:
    """The thread scenarios rely on these threads sitting in these system calls."""
    target = spawn(name, *args)
    zdtm.wait_blocked(target.pid, zdtm.blocked_tids(target, where))
    target.ok("work")
    zdtm.wait_blocked(target.pid, zdtm.blocked_tids(target, where))
    target.quit()


@pytest.mark.timeout(120)
def test_siginfo_target_can_fail(spawn) -> None:
    """Its check passes for signals sent as it expects, and fails for a real-time
    signal that came once, by tgkill, as a tracer re-sending it would."""
    import ctypes
    import os
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.sigqueue.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    rt = signal.SIGRTMIN + 1
    right = spawn("siginfo")
    for value in range(3):
        assert libc.sigqueue(right.pid, rt, value) == 0
    os.kill(right.pid, signal.SIGUSR1)
    right.ok(f"check {os.getpid()}")
    right.quit()
    wrong = spawn("siginfo")
    libc.syscall(234, wrong.pid, wrong.pid, rt)  # tgkill: a tracer re-sending it by number
    os.kill(wrong.pid, signal.SIGUSR1)
    said = wrong.send(f"check {os.getpid()}")
    assert said.startswith("fail") and "code -6" in said, said  # SI_TKILL
    wrong.quit()
