"""Python target for the rescue scenarios: state on every side a restore touches.

A generation number and everything that follows it: a large buffer (first
argument, MiB) filled from the generation, a file whose offset follows it, a
spare fd that `mutate` closes and pipes it opens (so a restore closes and puts
back fds), a thread that ticks. `verify` checks that all of it agrees with one
generation and answers ``ok <generation>``: a process caught half-way between
two states fails it. `work` checks that the thread still ticks and that memory,
files and threads can still be used; `tear` leaves a page of another generation
(the self-check: verify must catch it). A second argument `named` keeps the file's
name (a transplant into a new process reopens it by path: the old one is gone).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time

from _proto import check, serve

MiB = 1 << 20


def block(gen: int) -> bytes:
    return (gen.to_bytes(8, "little") + b"rescue!!") * (MiB // 16)


class Rescue:
    def __init__(self, mib: int, named: bool = False) -> None:
        self.gen = 0
        self.buf = bytearray(mib * MiB)
        self.fill()
        fd, self.path = tempfile.mkstemp(prefix="chkpt-rescue-named-" if named else "chkpt-rescue-")
        os.write(fd, bytes(range(256)) * 64)
        if not named:
            os.unlink(self.path)
        os.lseek(fd, 0, os.SEEK_SET)
        self.file = fd
        # a regular file: a restore without the helper's duplicates reopens it by path
        self.spare_path = os.path.realpath(sys.executable)
        self.spare: int | None = os.open(self.spare_path, os.O_RDONLY)
        self.pipes: list[tuple[int, int]] = []
        self.ticks = 0
        threading.Thread(target=self.tick, daemon=True, name="ticker").start()
        self.fds = self.fd_table()

    def tick(self) -> None:
        while True:
            time.sleep(0.005)
            self.ticks += 1

    def fill(self) -> None:
        b = block(self.gen)
        view = memoryview(self.buf)
        for off in range(0, len(view), MiB):
            view[off : off + MiB] = b[: len(view) - off]

    @staticmethod
    def fd_table() -> set[str]:
        return set(os.listdir("/proc/self/fd"))

    def mutate(self) -> None:
        self.gen += 1
        self.fill()
        os.lseek(self.file, 16 * self.gen, os.SEEK_SET)
        if self.spare is not None:
            os.close(self.spare)
            self.spare = None
        self.pipes.append(os.pipe())
        os.write(self.pipes[-1][1], b"x" * self.gen)
        self.fds = self.fd_table()

    def tear(self) -> None:
        """One page from another generation: what a half-done restore would leave."""
        mid = len(self.buf) // 2
        self.buf[mid : mid + 4096] = block(self.gen + 1)[:4096]

    def verify(self) -> str:
        b = block(self.gen)
        view = memoryview(self.buf)
        for off in range(0, len(view), MiB):
            check(view[off : off + MiB] == b[: len(view) - off], f"buffer differs at {off:#x}")
        check(os.lseek(self.file, 0, os.SEEK_CUR) == 16 * self.gen, "file offset differs")
        check((self.spare is None) == (self.gen > 0), "spare fd bookkeeping")
        if self.spare is not None:
            check(os.readlink(f"/proc/self/fd/{self.spare}") == self.spare_path, "spare fd")
        check(self.fd_table() == self.fds, f"fds {sorted(self.fd_table() ^ self.fds)} differ")
        return str(self.gen)

    def work(self) -> None:
        before = self.ticks
        deadline = time.monotonic() + 10
        while self.ticks == before and time.monotonic() < deadline:
            time.sleep(0.01)
        check(self.ticks != before, "the ticker thread does not tick")
        extra = bytearray(8 * MiB)
        extra[::4096] = b"\1" * len(extra[::4096])
        check(sum(extra[::4096]) == len(extra[::4096]), "fresh memory")
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join(10)
        check(not t.is_alive(), "a new thread does not finish")


def main() -> None:
    target = Rescue(int(sys.argv[1]) if len(sys.argv) > 1 else 64, sys.argv[2:3] == ["named"])
    serve(
        {"mutate": target.mutate, "verify": target.verify, "work": target.work, "tear": target.tear}
    )


if __name__ == "__main__":
    main()
