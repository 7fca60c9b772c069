"""Python target for kernel-side objects: fds, epoll, eventfd, pipes, signals, umask, cwd.

Usage: py_files.py MODE [ARG]. Each mode builds its state before ``ready``;
``mutate`` changes it the way the scenario says; ``verify`` (after a restore)
checks that the state is the one built and that it still works; ``work`` uses
the objects again. ``fds`` lists the fd table.

Modes:
  opened    sockets, a pipe, an eventfd and an epoll opened after the snapshot
  closed    the same kinds, open at the snapshot (with data waiting), closed after
  reused    a pipe's read end closed and its number taken by another file
  epoll     registrations removed, modified and added after the snapshot
  counters  eventfd counters (plain and semaphore) changed after the snapshot
  consumed  bytes waiting in a pipe and a socket at the snapshot, read after it;
            bytes written into an empty pipe after it
  offset    a regular file's offset moved after the snapshot
  shared    ARG is an inherited fd of a file the parent shares; lines written to it
  signals   handlers and ignored signals changed after the snapshot
  cwd       working directory and umask changed after the snapshot (ARG: other dir)
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import stat
import sys

from _proto import Fail, check, serve

EFD_SEMAPHORE = 1


def fd_table() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the fd listdir itself used
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


def epoll_lines(fd: int) -> list[str]:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return sorted(" ".join(line.split()[:6]) for line in f if line.startswith("tfd:"))


def eventfd_read(fd: int) -> int:
    return int.from_bytes(os.read(fd, 8), "little")


def eventfd_write(fd: int, n: int) -> None:
    os.write(fd, n.to_bytes(8, "little"))


def status_mask(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise Fail(f"no {field} in /proc/self/status")


def roundtrip(a: socket.socket, b: socket.socket, payload: bytes = b"ping") -> None:
    a.sendall(payload)
    check(b.recv(100) == payload, "socket pair does not carry data")
    b.sendall(payload[::-1])
    check(a.recv(100) == payload[::-1], "socket pair does not carry data back")


class Base:
    def __init__(self) -> None:
        self.table = fd_table()

    def fds(self) -> str:
        return " ".join(f"{n}={link}" for n, link in sorted(fd_table().items()))

    def check_table(self) -> None:
        now = fd_table()
        check(now == self.table, f"fd table {now} differs from the snapshot's {self.table}")

    def work(self) -> str:
        a, b = socket.socketpair()
        roundtrip(a, b)
        r, w = os.pipe()
        os.write(w, b"x")
        check(os.read(r, 1) == b"x", "a new pipe does not work")
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()
        return ""


class Opened(Base):
    def mutate(self) -> str:
        self.extra = [*socket.socketpair(), socket.socket()]
        r, w = os.pipe()
        efd = os.eventfd(7)
        ep = select.epoll()
        ep.register(self.extra[0], select.EPOLLIN)
        ep.register(r, select.EPOLLIN)
        ep.register(efd, select.EPOLLIN)
        self.extra_fds = [r, w, efd, ep]
        check(len(fd_table()) >= len(self.table) + 7, "the new files did not open")
        return f"fds={len(fd_table())}"

    def verify(self) -> str:
        self.check_table()
        check(not hasattr(self, "extra"), "memory was not restored")
        return f"fds={len(self.table)}"


class Closed(Base):
    def __init__(self) -> None:
        self.a, self.b = socket.socketpair()
        self.a.sendall(b"abc")  # waiting in b
        self.r, self.w = os.pipe()
        os.write(self.w, b"hello")  # waiting in r
        self.efd = os.eventfd(5)
        self.ep = select.epoll()
        for fd in (self.b.fileno(), self.r, self.efd):
            self.ep.register(fd, select.EPOLLIN)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        super().__init__()
        self.epoll = epoll_lines(self.ep.fileno())

    def mutate(self) -> str:
        self.mutated = True
        for s in (self.a, self.b, self.listener):
            s.close()
        for fd in (self.r, self.w, self.efd):
            os.close(fd)
        self.ep.close()
        return f"fds={len(fd_table())}"

    def verify(self) -> str:
        self.check_table()
        check(epoll_lines(self.ep.fileno()) == self.epoll, "epoll registrations differ")
        ready = dict(self.ep.poll(0))
        want = {self.b.fileno(), self.r, self.efd}
        check(set(ready) == want, f"epoll reports {ready}, expected {want} ready")
        check(self.b.recv(10) == b"abc", "bytes waiting in the socket are lost")
        check(os.read(self.r, 10) == b"hello", "bytes waiting in the pipe are lost")
        check(eventfd_read(self.efd) == 5, "eventfd counter lost")
        return ""

    def moved(self) -> str:
        """verify, after a transplant: the same kinds of files at the same numbers (new
        ones: their inodes differ), holding and doing what they did at the snapshot."""
        now = {n: link.split(":")[0] for n, link in fd_table().items()}
        then = {n: link.split(":")[0] for n, link in self.table.items()}
        check(now == then, f"fd kinds {now} differ from the snapshot's {then}")
        self.table = fd_table()
        return self.verify()

    def work(self) -> str:
        if getattr(self, "mutated", False):  # closed: only new files can be used
            return super().work()
        roundtrip(self.a, self.b)
        os.write(self.w, b"more")
        check(os.read(self.r, 10) == b"more", "pipe does not work")
        eventfd_write(self.efd, 2)
        check(dict(self.ep.poll(0)).get(self.efd) == select.EPOLLIN, "epoll misses the eventfd")
        check(eventfd_read(self.efd) == 2, "eventfd does not count")
        c = socket.create_connection(self.listener.getsockname())
        conn, _ = self.listener.accept()
        roundtrip(c, conn)
        c.close()
        conn.close()
        return super().work()


class Reused(Base):
    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        super().__init__()

    def mutate(self) -> str:
        os.close(self.r)
        fd = os.open("/dev/null", os.O_RDONLY)
        check(fd == self.r, f"expected /dev/null to take fd {self.r}, got {fd}")
        return f"fd={fd}"

    def verify(self) -> str:
        self.check_table()
        check(stat.S_ISFIFO(os.fstat(self.r).st_mode), f"fd {self.r} is not the pipe again")
        os.write(self.w, b"pipe")
        check(os.read(self.r, 10) == b"pipe", "the pipe does not work")
        return ""


class Epoll(Base):
    def __init__(self) -> None:
        self.socks = [socket.socketpair() for _ in range(4)]
        self.ep = select.epoll()
        # pair 0: readable and registered for input; pair 1: registered for output;
        # pair 2: not registered at the snapshot; pair 3: registered, closed after
        self.socks[0][1].sendall(b"in")
        self.ep.register(self.socks[0][0], select.EPOLLIN)
        self.ep.register(self.socks[1][0], select.EPOLLOUT)
        self.ep.register(self.socks[3][0], select.EPOLLIN | select.EPOLLET)
        super().__init__()
        self.epoll = epoll_lines(self.ep.fileno())
        self.ready = sorted(self.ep.poll(0))

    def mutate(self) -> str:
        self.mutated = True
        self.ep.unregister(self.socks[0][0])
        self.ep.modify(self.socks[1][0], select.EPOLLIN)
        self.ep.register(self.socks[2][0], select.EPOLLIN | select.EPOLLOUT)
        self.socks[3][0].close()
        self.late = socket.socketpair()
        self.ep.register(self.late[0], select.EPOLLOUT)
        check(epoll_lines(self.ep.fileno()) != self.epoll, "nothing changed")
        return ""

    def verify(self) -> str:
        lines = epoll_lines(self.ep.fileno())
        check(lines == self.epoll, f"registrations {lines} differ from the snapshot's {self.epoll}")
        self.check_table()
        ready = sorted(self.ep.poll(0))
        check(ready == self.ready, f"epoll reports {ready}, expected {self.ready}")
        return ""

    def work(self) -> str:
        if getattr(self, "mutated", False):  # pair 3 is closed
            return super().work()
        self.socks[3][1].sendall(b"et")
        check(
            dict(self.ep.poll(0)).get(self.socks[3][0].fileno()) == select.EPOLLIN,
            "edge-triggered registration lost",
        )
        check(self.socks[3][0].recv(10) == b"et", "edge-triggered socket lost data")
        roundtrip(*self.socks[3])
        return super().work()


class Consumed(Base):
    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.write(self.w, b"hello")
        os.set_blocking(self.r, False)
        self.late_r, self.late_w = os.pipe()  # empty at the snapshot
        os.set_blocking(self.late_r, False)
        self.sock, self.peer = socket.socketpair()
        self.peer.sendall(b"sock!")
        self.sock.setblocking(False)
        super().__init__()

    def mutate(self) -> str:
        check(os.read(self.r, 10) == b"hello", "pipe content")
        os.write(self.late_w, b"stale")
        check(self.sock.recv(10) == b"sock!", "socket content")
        return ""

    @staticmethod
    def _drain(fd: int) -> bytes:
        try:
            return os.read(fd, 100)
        except BlockingIOError:
            return b""

    def verify(self) -> str:
        # A pipe holds again what waited in it at the snapshot, and nothing that
        # was written since. Bytes read from a socket are gone (the report says so).
        self.check_table()
        got = self._drain(self.r), self._drain(self.late_r)
        check(got == (b"hello", b""), f"pipes hold {got}, held (b'hello', b'')")
        os.write(self.w, b"again")
        check(os.read(self.r, 10) == b"again", "pipe does not work")
        with contextlib.suppress(BlockingIOError):
            self.sock.recv(10)  # what is left of the socket's bytes
        roundtrip(self.sock, self.peer)
        return ""


class Counters(Base):
    def __init__(self) -> None:
        self.plain = os.eventfd(3)
        self.sem = os.eventfd(2, EFD_SEMAPHORE)
        self.zero = os.eventfd(0, os.EFD_NONBLOCK)
        super().__init__()

    def mutate(self) -> str:
        eventfd_write(self.plain, 10)
        check(eventfd_read(self.sem) == 1, "semaphore read")
        eventfd_write(self.zero, 4)
        return ""

    def verify(self) -> str:
        check(eventfd_read(self.plain) == 3, "plain eventfd counter not restored")
        check(eventfd_read(self.sem) == 1, "semaphore read")
        check(eventfd_read(self.sem) == 1, "semaphore counter not restored")
        try:
            n = eventfd_read(self.zero)
        except BlockingIOError:
            n = 0
        check(n == 0, f"zero eventfd counter is {n}")
        return ""


class Offset(Base):
    CONTENT = bytes(range(256)) * 64

    def __init__(self, path: str = "data.bin") -> None:
        with open(path, "wb") as f:
            f.write(self.CONTENT)
        self.fd = os.open(path, os.O_RDONLY)
        check(os.read(self.fd, 1000) == self.CONTENT[:1000], "first read")
        self.dirfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        super().__init__()

    def mutate(self) -> str:
        os.read(self.fd, 3000)
        os.lseek(self.fd, 9000, os.SEEK_SET)
        return f"pos={os.lseek(self.fd, 0, os.SEEK_CUR)}"

    def verify(self) -> str:
        pos = os.lseek(self.fd, 0, os.SEEK_CUR)
        check(pos == 1000, f"offset is {pos}, expected 1000")
        check(os.read(self.fd, 100) == self.CONTENT[1000:1100], "reading on gives other bytes")
        return f"pos={pos}"


class Shared(Base):
    def __init__(self, fd: str) -> None:
        self.fd = int(fd)
        os.write(self.fd, b"target: before the snapshot\n")
        super().__init__()

    def mutate(self) -> str:
        os.write(self.fd, b"target: after the snapshot\n")
        return ""

    def verify(self) -> str:
        os.write(self.fd, b"target: after the restore\n")
        return ""


HANDLED: list[int] = []


def handler(signo: int, frame: object) -> None:
    HANDLED.append(signo)


class Signals(Base):
    def __init__(self) -> None:
        signal.signal(signal.SIGUSR1, handler)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        super().__init__()
        self.masks = status_mask("SigCgt"), status_mask("SigIgn")

    def mutate(self) -> str:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGUSR2, handler)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        check((status_mask("SigCgt"), status_mask("SigIgn")) != self.masks, "nothing changed")
        return ""

    def verify(self) -> str:
        masks = status_mask("SigCgt"), status_mask("SigIgn")
        check(masks == self.masks, f"caught/ignored masks {masks} differ from {self.masks}")
        before = len(HANDLED)
        os.kill(os.getpid(), signal.SIGUSR1)
        check(HANDLED[before:] == [signal.SIGUSR1], f"SIGUSR1 not handled: {HANDLED}")
        os.kill(os.getpid(), signal.SIGHUP)  # ignored, or we would die here
        return ""


class Cwd(Base):
    def __init__(self, other: str) -> None:
        self.other = other
        self.cwd = os.getcwd()
        os.umask(0o027)
        super().__init__()

    def mutate(self) -> str:
        os.chdir(self.other)
        os.umask(0o077)
        return ""

    def verify(self) -> str:
        check(os.getcwd() == self.cwd, f"cwd is {os.getcwd()}, expected {self.cwd}")
        mask = os.umask(0o027)
        check(mask == 0o027, f"umask is {mask:o}, expected 27")
        with open("made-here", "w") as f:
            f.write("x")
        mode = stat.S_IMODE(os.stat(os.path.join(self.cwd, "made-here")).st_mode)
        check(mode == 0o640, f"new file has mode {mode:o}, expected 640")
        return ""


MODES = {
    "opened": Opened,
    "closed": Closed,
    "reused": Reused,
    "epoll": Epoll,
    "consumed": Consumed,
    "counters": Counters,
    "offset": Offset,
    "shared": Shared,
    "signals": Signals,
    "cwd": Cwd,
}

if __name__ == "__main__":
    state = MODES[sys.argv[1]](*sys.argv[2:])
    handlers = {"mutate": state.mutate, "verify": state.verify, "work": state.work}
    if isinstance(state, Closed):
        handlers["moved"] = state.moved
    serve({**handlers, "fds": state.fds})
