"""Engine benchmark: snapshot and restore a process holding N MiB of live data.

Every figure is also given as a ratio to a plain in-process memory copy of
the same number of bytes, measured in the same run, so the numbers mean
something on any machine:

    python benchmarks/engine.py [--mib 1024] [--store DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from jupyter_chkpt.engine import checkpoint, restore
from jupyter_chkpt.store import Store

TARGET = textwrap.dedent(
    """
    import hashlib, os, sys
    mib = int(sys.argv[1])
    # Half incompressible, half structured (like arrays of numbers).
    data = bytearray(os.urandom(mib << 19))
    data += b"".join(i.to_bytes(8, "little") for i in range((mib << 19) // 8))
    digest = hashlib.sha256(data).hexdigest()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.startswith("mutate"):
            data[::4096] = b"\\xff" * len(data[::4096])
        elif line.startswith("verify"):
            print("ok" if hashlib.sha256(data).hexdigest() == digest else "fail", flush=True)
            continue
        print("ok", flush=True)
    """
)


def memcpy_seconds(nbytes: int, repeat: int) -> float:
    src = bytearray(nbytes)
    src[::4096] = b"\x01" * len(src[::4096])  # fault every page in
    dst = bytearray(nbytes)
    dst[::4096] = b"\x01" * len(dst[::4096])
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        dst[:] = src
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mib", type=int, default=1024, help="live data in the target (MiB)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--store", help="store directory (default: a temporary one)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(args.store or tmp)
        target = subprocess.Popen(
            [sys.executable, "-c", TARGET, str(args.mib)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert target.stdin and target.stdout

        def ask(cmd: str) -> str:
            assert target.stdin and target.stdout
            target.stdin.write(cmd + "\n")
            target.stdin.flush()
            return target.stdout.readline().strip()

        try:
            assert target.stdout.readline().strip() == "ready"
            pauses, commits, restores, restore_totals, os_state = [], [], [], [], []
            first = None
            for i in range(args.repeat):
                t = time.perf_counter()
                info = checkpoint(target.pid, store, label=f"bench-{i}")
                commits.append(time.perf_counter() - t - info.stats["pause_s"])
                pauses.append(info.stats["pause_s"])
                os_state.append(store.load_meta(info.id).stats["os_state_s"])
                first = first or info
                assert ask("mutate") == "ok"
                t = time.perf_counter()
                result = restore(target.pid, store, info.id)
                restore_totals.append(time.perf_counter() - t)
                restores.append(result.pause_s)
                assert ask("verify") == "ok", "restored state is wrong"
            assert first is not None
            nbytes = first.mem_bytes
            copy = memcpy_seconds(nbytes, args.repeat)
            later = store.list(target.pid)[1:]
            dedup_stored = statistics.mean(i.stored_bytes for i in later) if later else float("nan")
        finally:
            target.kill()
            target.wait()

    gib = nbytes / (1 << 30)
    pause, rpause, rtotal = (min(x) for x in (pauses, restores, restore_totals))
    commit_new, commit_dedup = commits[0], min(commits[1:], default=float("nan"))
    rows = [
        ("live data in target", f"{args.mib} MiB", ""),
        ("bytes dumped (pages with data)", f"{nbytes / (1 << 20):.0f} MiB", ""),
        ("plain memory copy, same bytes", f"{copy:.3f} s", "1.0x"),
        ("snapshot: target frozen", f"{pause:.3f} s", f"{pause / copy:.1f}x"),
        (
            "snapshot: of which threads, timers, fds, signals",
            f"{min(os_state):.3f} s",
            f"{min(os_state) / pause:.2f} of frozen",
        ),
        ("snapshot: dump throughput while frozen", f"{gib / pause:.2f} GiB/s", ""),
        (
            "snapshot: hash+compress+commit, all pages new",
            f"{commit_new:.3f} s",
            f"{commit_new / copy:.1f}x",
        ),
        (
            "snapshot: hash+dedup+commit, pages unchanged",
            f"{commit_dedup:.3f} s",
            f"{commit_dedup / copy:.1f}x",
        ),
        (
            "stored bytes, first snapshot",
            f"{first.stored_bytes / (1 << 20):.1f} MiB",
            f"{first.stored_bytes / nbytes:.2f} of dumped",
        ),
        ("stored bytes, next snapshots (dedup)", f"{dedup_stored / (1 << 20):.1f} MiB", ""),
        ("restore: target frozen", f"{rpause:.3f} s", f"{rpause / copy:.1f}x"),
        ("restore: total incl. load+verify", f"{rtotal:.3f} s", f"{rtotal / copy:.1f}x"),
    ]
    width = max(len(r[0]) for r in rows)
    print(
        f"jupyter-chkpt engine benchmark ({args.repeat} snapshot/restore cycles; best of them unless noted)"
    )
    for name, value, ratio in rows:
        print(f"  {name:<{width}}  {value:>12}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
