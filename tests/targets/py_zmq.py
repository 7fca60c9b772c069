"""pyzmq target: REQ/REP over tcp plus an inproc PAIR, like a Jupyter kernel's channels.

A server thread answers on a REP socket bound to tcp://127.0.0.1 (its port
follows ``ready``); the main thread has two REQ clients connected to it over
tcp and one end of an inproc PAIR whose other end it also holds. Commands:

  ping      one round trip on each client and on the PAIR
  mutate    open a new client and use it (a connection made after the
            snapshot); close the second client and one PAIR end (sockets
            closed after the snapshot)
  verify    every socket that existed at the snapshot works again
  work      ping 10 times
"""

from __future__ import annotations

import threading

import zmq
from _proto import check, serve

TIMEOUT_MS = 10_000


def serve_rep(rep: zmq.Socket[bytes]) -> None:
    while True:
        msg = rep.recv()
        rep.send(b"re:" + msg)


class Channels:
    def __init__(self) -> None:
        self.ctx = zmq.Context()
        rep = self.ctx.socket(zmq.REP)
        self.port = rep.bind_to_random_port("tcp://127.0.0.1")
        threading.Thread(target=serve_rep, args=(rep,), name="rep", daemon=True).start()
        self.clients = [self._client() for _ in range(2)]
        self.pair = self.ctx.socket(zmq.PAIR), self.ctx.socket(zmq.PAIR)
        self.pair[0].bind("inproc://pair")
        self.pair[1].connect("inproc://pair")
        for s in self.pair:
            s.rcvtimeo = TIMEOUT_MS
        self.pings = 0
        self.ping()

    def _client(self) -> zmq.Socket[bytes]:
        s = self.ctx.socket(zmq.REQ)
        s.rcvtimeo = s.sndtimeo = TIMEOUT_MS
        s.linger = 0
        s.connect(f"tcp://127.0.0.1:{self.port}")
        return s

    def _ask(self, s: zmq.Socket[bytes], text: str) -> None:
        s.send(text.encode())
        check(s.recv() == b"re:" + text.encode(), f"wrong reply to {text}")

    def ping(self, sockets: str = "all") -> str:
        self.pings += 1
        for i, c in enumerate(self.clients if sockets == "all" else self.clients[:1]):
            self._ask(c, f"c{i}-{self.pings}")
        if sockets != "all":
            return f"pings={self.pings}"
        self.pair[0].send(b"to-1")
        check(self.pair[1].recv() == b"to-1", "inproc pair lost a message")
        self.pair[1].send(b"to-0")
        check(self.pair[0].recv() == b"to-0", "inproc pair lost a message")
        return f"pings={self.pings}"

    def mutate(self) -> str:
        late = self._client()
        self._ask(late, "late")
        self.late = late
        self.clients[1].close()
        self.pair[1].close()
        return ""

    def verify(self) -> str:
        pings = self.ping()
        check(not hasattr(self, "late"), "memory was not restored")
        return pings

    def work(self) -> str:
        for _ in range(10):  # after mutate, only what is still open
            self.ping("open" if hasattr(self, "late") else "all")
        return f"pings={self.pings}"


if __name__ == "__main__":
    state = Channels()
    serve(
        {
            "port": lambda: str(state.port),
            "ping": state.ping,
            "mutate": state.mutate,
            "verify": state.verify,
            "work": state.work,
        }
    )
