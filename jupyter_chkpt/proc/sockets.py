"""Sockets: what a snapshot records of them beyond the fd table, for a transplant.

A process's listening sockets are found again by address (a restarted kernel
listens on the same ports), and a socket pair whose two ends the process holds
(asyncio's self-pipe) is made again as a pair: which unix socket is whose peer
comes from the kernel's sock_diag netlink interface, as `ss -x` gets it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
UDIAG_SHOW_PEER = 0x4
UNIX_DIAG_PEER = 2
_NLMSGHDR = struct.Struct("=IHHII")
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")
_RTATTR = struct.Struct("=HH")
TYPES = {
    socket.SOCK_STREAM: "stream",
    socket.SOCK_DGRAM: "dgram",
    socket.SOCK_SEQPACKET: "seqpacket",
}


def describe(fd: int) -> dict[str, str]:
    """Of a socket we hold a duplicate of: its type, and where it listens if it does."""
    s = socket.socket(fileno=os.dup(fd))
    try:
        out = {"type": TYPES.get(s.type, str(int(s.type))), "family": str(int(s.family))}
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            out["listen"] = address(s)
        return out
    finally:
        s.close()


def peek(fd: int, size: int) -> bytes:
    """Up to `size` bytes waiting in a stream socket we hold a duplicate of, left there."""
    s = socket.socket(fileno=os.dup(fd))
    try:
        return s.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""
    finally:
        s.close()


def address(s: socket.socket) -> str:
    """A listening socket's local address, comparable across processes."""
    name = s.getsockname()
    if s.family in (socket.AF_INET, socket.AF_INET6):
        return f"{int(s.family)}:{name[0]}:{name[1]}"
    if isinstance(name, bytes):  # an abstract unix address
        return f"{int(s.family)}:@{name[1:].decode(errors='replace')}"
    return f"{int(s.family)}:{name}"


def unix_peers() -> dict[int, int]:
    """inode -> peer inode of every connected unix socket in our network namespace."""
    peers: dict[int, int] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        req = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, UDIAG_SHOW_PEER, 0, 0)
        hdr = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
        )
        nl.send(hdr + req)
        while True:
            data = nl.recv(1 << 16)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, off)
                if kind == NLMSG_DONE:
                    return peers
                if kind == NLMSG_ERROR or length < _NLMSGHDR.size:
                    raise OSError("sock_diag refused the unix socket dump")
                body = off + _NLMSGHDR.size
                ino = _UNIX_DIAG_MSG.unpack_from(data, body)[4]
                attr = body + _UNIX_DIAG_MSG.size
                while attr + _RTATTR.size <= off + length:
                    alen, atype = _RTATTR.unpack_from(data, attr)
                    if alen < _RTATTR.size:
                        break
                    if atype == UNIX_DIAG_PEER:
                        peers[ino] = struct.unpack_from("=I", data, attr + _RTATTR.size)[0]
                    attr += (alen + 3) & ~3
                off += (length + 3) & ~3


def note_peers(details: dict[int, dict[str, str]]) -> None:
    """Add `peer` (the peer's inode) to the details of each unix socket, by inode;
    left out where this kernel has no sock_diag for unix sockets."""
    with contextlib.suppress(OSError):
        peers = unix_peers()
        for ino, d in details.items():
            if ino in peers:
                d["peer"] = str(peers[ino])


def sockaddr(listen: str) -> tuple[int, bytes] | None:
    """(family, struct sockaddr) for an `address()` string of an IP listener."""
    family_s, rest = listen.split(":", 1)
    family = int(family_s)
    host, _, port = rest.rpartition(":")
    if family == socket.AF_INET:
        raw = socket.inet_pton(family, host)
        return family, struct.pack("=H", family) + struct.pack(">H", int(port)) + raw + bytes(8)
    if family == socket.AF_INET6:
        raw = socket.inet_pton(family, host)
        return family, struct.pack("=H", family) + struct.pack(">HI", int(port), 0) + raw + bytes(4)
    return None
