"""zdtm-style harness: target programs under tests/targets driven over a line protocol.

A target builds its state, prints ``ready`` and then answers one reply line
(``ok ...`` or ``fail <reason>``) per command line on stdin: ``mutate``,
``verify``, ``work``, ``quit`` and a few mode-specific ones.

After a restore the target's memory is back at the moment it sat in read(0)
after printing ``ready`` (or after its last reply), but the pipe contents it
consumed are not: the next command is read fresh. So the driver always waits
for a reply before sending the next command, and every wait has a timeout.

This module does not import the engine, so the targets' self-check runs
without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

TESTS = Path(__file__).resolve().parent
TARGETS = TESTS / "targets"
REPO = TESTS.parent

READY_TIMEOUT = 60.0
REPLY_TIMEOUT = 60.0

# x86_64 syscall numbers, for checking where a thread is blocked
SYS_READ = {0}
SYS_POLL = {7, 271}  # poll, ppoll
SYS_SLEEP = {35, 230}  # nanosleep, clock_nanosleep
SYS_FUTEX = {202}
SYS_EPOLL = {232, 281, 441}  # epoll_wait, epoll_pwait, epoll_pwait2


class TargetError(AssertionError):
    """The target died, hung or answered something unexpected."""


class Target:
    """A running target program and its end of the line protocol."""

    def __init__(
        self,
        argv: list[str],
        *,
        name: str,
        log: Path,
        user: Any = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        pass_fds: tuple[int, ...] = (),
        stderr: BinaryIO | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self._log_path = log if stderr is None else Path(stderr.name)
        ids = (
            {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        )
        # stderr goes to a file: unlike a pipe nobody reads, it never fills up and blocks the target
        # The parent keeps `stderr` open when it passes one: the target's
        # stderr is then an open file description shared with the parent.
        with open(log, "wb") if stderr is None else contextlib.nullcontext(stderr) as err:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                bufsize=0,
                env=env,
                cwd=cwd,
                pass_fds=pass_fds,
                **ids,
            )
        self._buf = b""
        self.ready = self.readline(READY_TIMEOUT)
        if not self.ready.startswith("ready"):
            raise TargetError(f"{name}: expected 'ready', got {self.ready!r}{self._stderr()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _stderr(self) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return f"\n--- {self.name} stderr ---\n{text[-4000:]}" if text else ""

    def readline(self, timeout: float = REPLY_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TargetError(f"{self.name}: no reply within {timeout:.0f} s{self._stderr()}")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    rc = self.proc.wait(10)
                    raise TargetError(f"{self.name}: exited with status {rc}{self._stderr()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def send(self, cmd: str, timeout: float = REPLY_TIMEOUT) -> str:
        """Send one command and return its reply line."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(cmd.encode() + b"\n")
        except BrokenPipeError:
            raise TargetError(f"{self.name}: gone before {cmd!r}{self._stderr()}") from None
        return self.readline(timeout)

    def ok(self, cmd: str, timeout: float = REPLY_TIMEOUT) -> str:
        """Send a command that must succeed; return what follows ``ok``."""
        reply = self.send(cmd, timeout)
        if reply != "ok" and not reply.startswith("ok "):
            raise TargetError(f"{self.name}: {cmd!r} -> {reply!r}{self._stderr()}")
        return reply[3:]

    def quit(self, timeout: float = 30.0) -> None:
        """End the target through the protocol; it must exit with status 0."""
        reply = self.send("quit")
        if reply != "ok bye":
            raise TargetError(f"{self.name}: quit -> {reply!r}")
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TargetError(f"{self.name}: did not exit after quit") from None
        if rc != 0:
            raise TargetError(f"{self.name}: exit status {rc}{self._stderr()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL also ends a target left in a ptrace stop
            self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


TEST_USER = "chkpt-test"


def user_env(user: Any) -> dict[str, str]:
    """A clean environment for running the repo's code as `user` (a pwd entry)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": user.pw_dir,
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


# Runs as the test user: the engine API without the CLI.
API_SCRIPT = """
import json, sys
from jupyter_chkpt.engine import checkpoint, restore
from jupyter_chkpt.store import Store
op, pid, store = sys.argv[1], int(sys.argv[2]), Store(sys.argv[3])
if op == "checkpoint":
    info = checkpoint(pid, store, label="api")
    print(json.dumps({"id": info.id, "pid": info.pid}))
else:
    result = restore(pid, store, sys.argv[4], into=op == "transplant")
    print(json.dumps({"id": result.snapshot_id, **result.to_json()}))
"""


def run_as(user: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """Run this interpreter with `args` as `user` (a pwd entry), in their home."""
    return subprocess.run(
        [sys.executable, *args],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        env=user_env(user),
        cwd=user.pw_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok_json(res: subprocess.CompletedProcess[str]) -> Any:
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def python_argv(script: str, *args: str) -> list[str]:
    return [sys.executable, str(TARGETS / script), *args]


def compile_targets(outdir: Path) -> dict[str, Path]:
    """Build every tests/targets/*.c: lib-less files into programs, probe.c into libprobe.so."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler (gcc) to build the test targets")
    built = {}
    for src in sorted(TARGETS.glob("*.c")):
        if src.stem == "probe":
            out, extra = outdir / "libprobe.so", ["-shared", "-fPIC"]
        else:
            out, extra = outdir / src.stem, []
        cmd = [cc, "-O1", "-g", "-pthread", "-Wall", "-Wextra", *extra, "-o", str(out), str(src)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr}")
        built[out.name] = out
    return built


# --- looking at a process from outside -------------------------------------------


def status(pid: int | str, tid: int | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    out = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def tasks(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def maps_text(pid: int) -> str:
    """/proc/PID/maps as text."""
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def assert_released(pid: int) -> None:
    """The engine let go: no tracer on any thread and none of them stopped."""
    for tid in tasks(pid):
        st = status(pid, tid)
        if st["TracerPid"] != "0":
            raise AssertionError(f"thread {tid} of {pid} is still traced by {st['TracerPid']}")
        if st["State"][0] in "tTZX":
            raise AssertionError(f"thread {tid} of {pid} is in state {st['State']}")


def syscall_of(pid: int, tid: int) -> str:
    """First field of /proc/PID/task/TID/syscall: a number, 'running' or -1."""
    with open(f"/proc/{pid}/task/{tid}/syscall") as f:
        return f.read().split()[0]


def wait_blocked(pid: int, expected: dict[int, set[int]], timeout: float = 10.0) -> None:
    """Wait until every tid in `expected` sits in one of its system calls."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {tid: syscall_of(pid, tid) for tid in expected}
        wrong = {t: s for t, s in seen.items() if not (s.isdigit() and int(s) in expected[t])}
        if not wrong:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"threads not blocked where expected: {wrong} (want {expected})")
        time.sleep(0.01)


# Where the threads of the blocked-thread targets sit while idle, by thread name.
C_BLOCKED = {
    "t-read": SYS_READ,
    "t-futex": SYS_FUTEX,
    "t-sleep": SYS_SLEEP,
    "t-poll": SYS_POLL,
    "t-polltmo": SYS_POLL,
    "t-epoll": SYS_EPOLL,
}
PY_BLOCKED = {
    "MainThread": SYS_READ,
    "w-read": SYS_READ,
    "w-event": SYS_FUTEX,
    "w-lock": SYS_FUTEX,
    "w-sleep": SYS_SLEEP,
    "w-poll": SYS_POLL,
    "w-epoll": SYS_EPOLL,
}


def blocked_tids(target: Target, where: dict[str, set[int]]) -> dict[int, set[int]]:
    """{tid: system calls it should sit in}, from the target's ``tids`` reply."""
    tids = parse_pairs(target.ok("tids"))
    return {tids[name]: nrs for name, nrs in where.items()}


def parse_pairs(text: str) -> dict[str, int]:
    """'a=1 b=2' -> {'a': 1, 'b': 2}"""
    return {k: int(v) for k, v in (item.split("=") for item in text.split())}


def exited(pid: int, timeout: float = 15.0) -> bool:
    """Wait up to `timeout` for process `pid` (not a child of ours) to be gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def fd_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def vm_kib(pid: int | str, field: str) -> int:
    """VmRSS, VmSize, ... from /proc/PID/status, in KiB."""
    return int(status(pid)[field].split()[0])


# --- the standard scenario ---------------------------------------------------------


def snapshot_mutate_restore(target: Target, store: Any, tracking: Any = None) -> None:
    """checkpoint -> mutate -> restore -> verify (with `tracking`: incrementally)."""
    from jupyter_chkpt.engine import checkpoint, restore  # here: keeps this module engine-free

    info = checkpoint(target.pid, store, tracking=tracking)
    assert info.pid == target.pid
    assert_released(target.pid)
    target.ok("mutate")
    result = restore(target.pid, store, info.id, tracking=tracking)
    if tracking is not None:
        assert tracking.tracker is not None, tracking.unavailable
        assert tracking.tracker.base_id == info.id
        assert result.bytes_loaded < info.mem_bytes, "the restore was not incremental"
    assert result.snapshot_id == info.id
    assert_released(target.pid)
    target.ok("verify")


def roundtrip(target: Target, store: Any, tracking: Any = None, *, works: int = 3) -> None:
    """checkpoint -> mutate -> restore -> verify -> work x N -> quit."""
    snapshot_mutate_restore(target, store, tracking)
    for _ in range(works):
        target.ok("work")
    target.quit()
