"""Line protocol shared by the Python targets (see tests/zdtm.py).

The target prints ``ready``, then answers each command line with one reply
line: ``ok [details]`` or ``fail <reason>``. Input is read with os.read into a
buffer that lives in this process's memory, so a restore rolls it back with
everything else, and no library buffer can hold read-ahead input; replies go
out with os.write, so there is nothing to flush.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import select
import sys
from collections.abc import Callable


class Fail(Exception):
    """Raised by a handler: the reply becomes ``fail <message>``."""


def check(cond: object, message: str) -> None:
    if not cond:
        raise Fail(message)


def reply(line: str) -> None:
    os.write(1, (line + "\n").encode())


def digest(buf: object) -> str:
    return hashlib.blake2b(buf, digest_size=16).hexdigest()  # type: ignore[arg-type]


def maps() -> list[tuple[int, int, str, str]]:
    """(start, end, perms, path) for every line of /proc/self/maps."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            path = fields[5].strip() if len(fields) > 5 else ""
            out.append((start, end, fields[1], path))
    return out


def perms_of(addr: int, size: int) -> set[str]:
    """Permissions of the mappings covering [addr, addr+size); '' marks a hole."""
    covered, perms = 0, set()
    for start, end, p, _ in maps():
        lo, hi = max(start, addr), min(end, addr + size)
        if lo < hi:
            covered += hi - lo
            perms.add(p)
    if covered != size:
        perms.add("")
    return perms


def address_of(buf: object) -> int:
    """Address of a writable buffer such as an mmap."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))  # type: ignore[arg-type]


def serve(handlers: dict[str, Callable[..., str | None]], *, poll_ms: int = 0) -> None:
    """Answer commands until ``quit``; a handler's return value follows ``ok``.
    With `poll_ms` the main thread waits for input in poll() with that timeout
    (a timed wait: the kernel restarts it through the thread's restart block)."""
    reply("ready")
    buf = b""
    waiter = select.poll()
    waiter.register(0, select.POLLIN)
    while True:
        while b"\n" not in buf:
            while poll_ms and not waiter.poll(poll_ms):
                pass
            chunk = os.read(0, 4096)
            if not chunk:
                sys.exit(3)  # stdin closed without quit
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        cmd, *args = line.decode().split()
        if cmd == "quit":
            reply("ok bye")
            return
        try:
            if cmd not in handlers:
                raise Fail(f"unknown command {cmd}")
            result = handlers[cmd](*args)
        except Fail as e:
            reply(f"fail {e}")
        except Exception as e:
            reply(f"fail {type(e).__name__}: {e}".replace("\n", " "))
        else:
            reply(f"ok {result}" if result else "ok")
