"""Python target whose state is a counter, for repeated and out-of-order restores.

State at ``ready``: counter 1. ``mutate`` adds one. The state is spread over a
history list and a 4 MiB buffer derived from the counter, so a partial restore
shows up as an inconsistency. ``verify [N]`` checks counter == N (default: the
value at ready) and that the rest matches it; it replies ``ok counter=N``.
"""

from __future__ import annotations

import random

from _proto import check, digest, serve

SIZE = 4 << 20


def content(n: int) -> bytes:
    return random.Random(n).randbytes(SIZE)


class Counter:
    def __init__(self) -> None:
        self.counter = self.initial = 1
        self.history = [1]
        self.buf = bytearray(content(1))

    def mutate(self) -> str:
        self.counter += 1
        self.history.append(self.counter)
        self.buf[:] = content(self.counter)
        return f"counter={self.counter}"

    def verify(self, expected: str | None = None) -> str:
        want = int(expected) if expected else self.initial
        check(self.counter == want, f"counter is {self.counter}, expected {want}")
        check(self.history == list(range(1, want + 1)), f"history is {self.history}")
        check(digest(self.buf) == digest(content(want)), "buffer does not match the counter")
        return f"counter={self.counter}"

    def work(self) -> None:
        junk = {i: str(i) * 10 for i in range(100_000)}
        check(sum(map(len, junk.values())) > 0, "dict work failed")
        check(digest(self.buf) == digest(content(self.counter)), "buffer changed during work")


if __name__ == "__main__":
    state = Counter()
    serve({"mutate": state.mutate, "verify": state.verify, "work": state.work})
