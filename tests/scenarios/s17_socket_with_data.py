"""A connected socket pair with bytes waiting: OS objects, held by the kernel."""

SETUP = """
import socket
s17_a, s17_b = socket.socketpair()
s17_a.sendall(b"waiting")
"""
# peek, do not read: bytes read from a socket cannot be put back by any restore
FINGERPRINT = "(s17_b.recv(100, socket.MSG_PEEK | socket.MSG_DONTWAIT), s17_a.fileno() >= 0)"
MUTATE = "s17_a.close(); s17_b.close()"
