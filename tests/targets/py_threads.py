"""Python target for the thread scenarios; the mode is the first argument.

late     threads started after the snapshot must be gone after restore
doomed   mutate ends a thread that existed at the snapshot (restore must refuse)
blocked  threads sit in read, futex (Event, Lock), nanosleep, poll and epoll_wait
         at snapshot time; each round wakes every one of them with a token

``tids`` replies ``ok name=tid ...`` so the test can check where threads block;
``names`` replies the current thread names.
"""

from __future__ import annotations

import os
import queue
import select
import sys
import threading
import time

from _proto import Fail, check, serve


def thread_names() -> list[str]:
    return sorted(t.name for t in threading.enumerate())


def task_count() -> int:
    return len(os.listdir("/proc/self/task"))


class Base:
    def __init__(self) -> None:
        self.names0 = thread_names()
        self.tasks0 = task_count()
        self.data = {"answer": 42, "items": list(range(100))}
        self.data0 = repr(self.data)

    def verify(self) -> None:
        check(task_count() == self.tasks0, f"{task_count()} tasks, had {self.tasks0}")
        check(thread_names() == self.names0, f"threads are {thread_names()}, were {self.names0}")
        check(repr(self.data) == self.data0, "data differs")

    def names(self) -> str:
        return " ".join(thread_names())

    def tids(self) -> str:
        return " ".join(f"{t.name}={t.native_id}" for t in threading.enumerate())


class Late(Base):
    """Keepers wait for the whole run; mutate adds waiting and busy threads."""

    def __init__(self) -> None:
        self.stops = {f"keeper-{i}": threading.Event() for i in (1, 2)}
        self.keepers = {n: threading.Thread(target=e.wait, name=n) for n, e in self.stops.items()}
        for t in self.keepers.values():
            t.start()
        self.late_stop = threading.Event()
        super().__init__()

    def mutate(self) -> None:
        self.data["answer"] = 43
        for i in range(5):
            threading.Thread(target=self.late_stop.wait, name=f"late-{i}", daemon=True).start()
        threading.Thread(target=self._spin, name="late-spin", daemon=True).start()

    def _spin(self) -> None:
        while not self.late_stop.is_set():
            sum(range(1000))

    def work(self) -> None:
        results: dict[int, int] = {}

        def job(i: int) -> None:
            results[i] = sum(range(i * 1000))

        workers = [threading.Thread(target=job, args=(i,), name=f"job-{i}") for i in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(10)
        check(not any(t.is_alive() for t in workers), "a job thread did not finish")
        check(results == {i: sum(range(i * 1000)) for i in range(4)}, "wrong job results")
        alive = [t.is_alive() for n, t in self.keepers.items() if not self.stops[n].is_set()]
        check(all(alive), "a keeper died")


class Doomed(Late):
    def mutate(self) -> None:
        self.stops["keeper-2"].set()
        self.keepers["keeper-2"].join(10)
        check(not self.keepers["keeper-2"].is_alive(), "keeper-2 did not exit")


class Blocked(Base):
    """One thread per blocking call; each round hands every one of them a token."""

    NAMES = ("w-read", "w-event", "w-lock", "w-sleep", "w-poll", "w-epoll")

    def __init__(self) -> None:
        self.rounds = dict.fromkeys(self.NAMES, 0)
        self.acks: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.pipes = {n: os.pipe() for n in ("w-read", "w-poll", "w-epoll")}
        self.event = threading.Event()
        self.gate = threading.Lock()
        self.gate.acquire()  # w-lock blocks on it; each round releases it once
        self.token: dict[str, str | None] = dict.fromkeys(self.NAMES)
        self.serial = 0
        for name in self.NAMES:
            threading.Thread(target=self._run, args=(name,), name=name, daemon=True).start()
        super().__init__()

    def _run(self, name: str) -> None:
        rfd = self.pipes.get(name, (-1, -1))[0]
        if name == "w-poll":
            poller = select.poll()
            poller.register(rfd, select.POLLIN)
        elif name == "w-epoll":
            ep = select.epoll()
            ep.register(rfd, select.EPOLLIN)
        while True:
            if name == "w-read":
                tok = os.read(rfd, 64).decode()
            elif name == "w-poll":
                poller.poll()
                tok = os.read(rfd, 64).decode()
            elif name == "w-epoll":
                ep.poll()
                tok = os.read(rfd, 64).decode()
            elif name == "w-event":
                self.event.wait()
                self.event.clear()
                tok = self.token[name]
            elif name == "w-lock":
                self.gate.acquire()
                tok = self.token[name]
            else:  # w-sleep: sleeps cannot be cut short from Python, so nap and look
                time.sleep(0.1)
                tok = self.token[name]
                if tok is None:
                    continue
                self.token[name] = None
            self.rounds[name] += 1
            self.acks.put((name, str(tok)))

    def _round(self) -> None:
        for name in self.NAMES:
            self.serial += 1
            tok = f"{name}#{self.serial}"
            if name in self.pipes:
                os.write(self.pipes[name][1], tok.encode())
            else:
                self.token[name] = tok
                if name == "w-event":
                    self.event.set()
                elif name == "w-lock":
                    self.gate.release()
            try:
                got = self.acks.get(timeout=10)
            except queue.Empty:
                raise Fail(f"{name} did not wake up") from None
            check(got == (name, tok), f"expected {(name, tok)}, got {got}")

    def mutate(self) -> None:
        self.data["items"].pop()
        self._round()

    def verify(self) -> None:
        check(not any(self.rounds.values()), f"rounds are {self.rounds}, were all 0")
        super().verify()

    def work(self) -> None:
        before = dict(self.rounds)
        self._round()
        check(all(self.rounds[n] == before[n] + 1 for n in self.NAMES), f"rounds {self.rounds}")


MODES = {"late": Late, "doomed": Doomed, "blocked": Blocked}

if __name__ == "__main__":
    state = MODES[sys.argv[1]]()
    serve(
        {
            "mutate": state.mutate,
            "verify": state.verify,
            "work": state.work,
            "names": state.names,
            "tids": state.tids,
        }
    )
    # Keepers are not daemons: release them so the interpreter can exit.
    for ev in getattr(state, "stops", {}).values():
        ev.set()
