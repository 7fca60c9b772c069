"""Python target for the thread scenarios; the mode is the first argument.

late     threads started after the snapshot must be gone after restore
doomed   mutate ends a thread that existed at the snapshot (restore recreates it)
blocked  threads sit in read, futex (Event, Lock), nanosleep, poll and epoll_wait
         at snapshot time; each round wakes every one of them with a token
ended    mutate ends every thread: a ThreadPoolExecutor's workers, threads waiting
         on a Condition, a Queue and an Event, one in time.sleep, one in a blocking
         read, a daemon; each has threading.local data. After a restore they wait
         again, wake up with the right token and local data, and the pool works
flip     ``flip`` ends the a-threads and starts b-threads: snapshots before and
         after have different thread sets; ``check`` runs a round on the live set

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
from concurrent.futures import ThreadPoolExecutor

from _proto import Fail, check, serve


def thread_names() -> list[str]:
    return sorted(t.name for t in threading.enumerate())


def task_count() -> int:
    return len(os.listdir("/proc/self/task"))


def settled_task_count(want: int) -> int:
    """The task count once it reaches `want` (at most 5 s): Thread.join() returns when
    Python is done with a thread, a moment before the kernel is."""
    deadline = time.monotonic() + 5
    while (n := task_count()) != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return n


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
        settled_task_count(self.tasks0 - 1)


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


class Ended(Base):
    """Every kind of waiting thread, all ended by mutate."""

    NAMES = ("w-cond", "w-queue", "w-event", "w-nap", "w-pipe", "w-daemon")

    def __init__(self) -> None:
        self.local = threading.local()
        self.acks: queue.SimpleQueue[tuple[str, str, str]] = queue.SimpleQueue()
        self.cond = threading.Condition()
        self.cond_items: list[str] = []
        self.q: queue.Queue[str] = queue.Queue()
        self.event = threading.Event()
        self.event_token = ""
        self.nap_token: str | None = None
        self.rfd, self.wfd = os.pipe()
        self.daemon_event = threading.Event()
        self.daemon_token = ""
        self.serial = 0
        self.ended = False  # mutate ended every thread on purpose
        self.threads = [
            threading.Thread(target=self._run, args=(n,), name=n, daemon=n == "w-daemon")
            for n in self.NAMES
        ]
        for t in self.threads:
            t.start()
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pool")
        gate = threading.Barrier(3)
        jobs = [self.pool.submit(gate.wait, 10) for _ in range(2)]  # two workers exist
        gate.wait(10)
        for j in jobs:
            j.result(10)
        super().__init__()

    def _take(self, name: str) -> str | None:
        if name == "w-cond":
            with self.cond:
                while not self.cond_items:
                    self.cond.wait()
                return self.cond_items.pop(0)
        if name == "w-queue":
            return self.q.get()
        if name == "w-event":
            self.event.wait()
            self.event.clear()
            return self.event_token
        if name == "w-daemon":
            self.daemon_event.wait()
            self.daemon_event.clear()
            return self.daemon_token
        if name == "w-pipe":
            return os.read(self.rfd, 64).decode()
        while self.nap_token is None:  # w-nap
            time.sleep(0.05)
        tok, self.nap_token = self.nap_token, None
        return tok

    def _run(self, name: str) -> None:
        self.local.name = name
        while True:
            tok = self._take(name)
            if tok == "exit":
                return
            self.acks.put((name, str(tok), self.local.name))

    def _give(self, name: str, tok: str) -> None:
        if name == "w-cond":
            with self.cond:
                self.cond_items.append(tok)
                self.cond.notify()
        elif name == "w-queue":
            self.q.put(tok)
        elif name == "w-event":
            self.event_token = tok
            self.event.set()
        elif name == "w-daemon":
            self.daemon_token = tok
            self.daemon_event.set()
        elif name == "w-pipe":
            os.write(self.wfd, tok.encode())
        else:
            self.nap_token = tok

    def mutate(self) -> None:
        for name in self.NAMES:
            self._give(name, "exit")
        self.pool.shutdown(wait=True)
        for t in self.threads:
            t.join(10)
        self.ended = True
        n = settled_task_count(1)
        check(n == 1, f"{n} tasks after ending every thread")

    def work(self) -> None:
        if self.ended:
            return  # nobody left to wake; verify says what is missing
        for name in self.NAMES:
            self.serial += 1
            tok = f"{name}#{self.serial}"
            self._give(name, tok)
            try:
                got = self.acks.get(timeout=10)
            except queue.Empty:
                raise Fail(f"{name} did not wake up") from None
            check(got == (name, tok, name), f"expected {(name, tok, name)}, got {got}")
        futures = [self.pool.submit(sum, range(i * 1000)) for i in range(6)]
        check(
            [f.result(10) for f in futures] == [sum(range(i * 1000)) for i in range(6)],
            "the pool's results are wrong",
        )

    def nproc(self, soft: str) -> None:
        """Set this process's soft RLIMIT_NPROC ("max": back to the hard limit)."""
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        resource.setrlimit(resource.RLIMIT_NPROC, (hard if soft == "max" else int(soft), hard))

    def spawn(self) -> str:
        """A new thread; its tid (a test makes it reuse an exited thread's tid)."""
        started = threading.Event()
        t = threading.Thread(target=lambda: (started.set(), self.daemon_event.wait()), daemon=True)
        t.start()
        started.wait(10)
        return str(t.native_id)


class Flip:
    """Two thread sets, a and b; `flip` replaces the first by the second."""

    def __init__(self) -> None:
        self.phase = "a"
        self.acks: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.events: dict[str, threading.Event] = {}
        self.tokens: dict[str, str] = {}
        self.serial = 0
        self._start(("a-1", "a-2"))

    def _start(self, names: tuple[str, ...]) -> None:
        for n in names:
            self.events[n] = threading.Event()
            threading.Thread(target=self._run, args=(n,), name=n).start()

    def _run(self, name: str) -> None:
        while True:
            self.events[name].wait()
            self.events[name].clear()
            tok = self.tokens[name]
            if tok == "exit":
                return
            self.acks.put((name, tok))

    def flip(self) -> None:
        check(self.phase == "a", "already flipped")
        for n in ("a-1", "a-2"):
            self.tokens[n] = "exit"
            self.events[n].set()
        for t in threading.enumerate():
            if t.name.startswith("a-"):
                t.join(10)
        self.phase = "b"
        self._start(("b-1", "b-2", "b-3"))

    def check(self) -> str:
        live = [n for n in thread_names() if n != "MainThread"]
        want = sorted(n for n in self.events if n.startswith(self.phase))
        check(live == want, f"threads are {live}, phase {self.phase} wants {want}")
        n = settled_task_count(len(want) + 1)
        check(n == len(want) + 1, f"{n} tasks for {want}")
        for name in want:
            self.serial += 1
            self.tokens[name] = tok = f"{name}#{self.serial}"
            self.events[name].set()
            try:
                got = self.acks.get(timeout=10)
            except queue.Empty:
                raise Fail(f"{name} did not wake up") from None
            check(got == (name, tok), f"expected {(name, tok)}, got {got}")
        return self.phase

    def verify(self) -> None:
        check(self.phase == "a", f"phase is {self.phase}, was a")
        self.check()

    def work(self) -> None:
        self.check()

    def mutate(self) -> None:
        self.flip()

    def names(self) -> str:
        return " ".join(thread_names())

    def tids(self) -> str:
        return " ".join(f"{t.name}={t.native_id}" for t in threading.enumerate())

    def stop(self) -> None:
        for n in self.events:
            if n.startswith(self.phase):
                self.tokens[n] = "exit"
                self.events[n].set()


MODES = {"late": Late, "doomed": Doomed, "blocked": Blocked, "ended": Ended, "flip": Flip}

if __name__ == "__main__":
    state = MODES[sys.argv[1]]()
    serve(
        {
            "mutate": state.mutate,
            "verify": state.verify,
            "work": state.work,
            "names": state.names,
            "tids": state.tids,
            **{
                cmd: getattr(state, cmd)
                for cmd in ("spawn", "flip", "check", "nproc")
                if hasattr(state, cmd)
            },
        }
    )
    # Keepers are not daemons: release them so the interpreter can exit.
    for ev in getattr(state, "stops", {}).values():
        ev.set()
    if isinstance(state, Ended):
        for name in Ended.NAMES:
            state._give(name, "exit")
        state.pool.shutdown(wait=True)
    if isinstance(state, Flip):
        state.stop()
