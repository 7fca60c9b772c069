"""Kernel-level benchmark: jupyter-chkpt's %checkpoint / %restore against dill's session
dump on the same notebook workload, in the same run, next to a plain copy of the data.

A real "Python 3 (snapshots)" kernel runs CELLS cells, each adding an array of MIB MiB.
After every cell: %checkpoint (wall time, and how long the kernel was frozen) and
dill.dump_session (which rewrites the whole session every time). Then both go back to the
middle cell: %restore vs dill.load_session. Kishu (pip install kishu) is measured too when
it is installed; otherwise its row says so.

    python benchmarks/kernel.py [--cells 6] [--mib 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import kernels  # noqa: E402  (the tests' jupyter_client harness)


def timed(k: kernels.Kernel, code: str) -> float:
    t = time.perf_counter()
    k.ok(code)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cells", type=int, default=6)
    ap.add_argument("--mib", type=int, default=128, help="MiB of new numpy data per cell")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "rt").mkdir(mode=0o700)
        env = kernels.kernel_env(base / "rt", base / "store")
        os.environ.update(JUPYTER_RUNTIME_DIR=env["JUPYTER_RUNTIME_DIR"])
        k = kernels.Kernel(env)
        try:
            return run(k, args, base)
        finally:
            k.shutdown()
            from jupyter_chkpt.helper.client import HelperClient

            with HelperClient(start=False) as c:
                c.call("shutdown", timeout=30)


def run(k: kernels.Kernel, args: argparse.Namespace, base: Path) -> int:
    k.ok("import numpy as np, dill, time")
    n = args.mib * (1 << 20) // 8
    chk, chk_pause, dill_dump, copy = [], [], [], []
    ids = []
    for i in range(args.cells):
        k.ok(f"a{i} = np.random.default_rng({i}).random({n})")
        t = timed(k, f"%checkpoint -m cell{i}")
        listing = k.chkpt("list").content["snapshots"]
        chk.append(t)
        chk_pause.append(listing[-1]["stats"]["pause_s"])
        ids.append(listing[-1]["id"])
        path = base / f"session{i}.pkl"
        dill_dump.append(
            float(
                k.value(
                    f"t = time.perf_counter(); dill.dump_session({str(path)!r}); time.perf_counter() - t"
                )
            )
        )
        copy.append(
            float(
                k.value(
                    "t = time.perf_counter(); _c = [v.copy() for kk, v in list(globals().items()) "
                    "if kk.startswith('a') and isinstance(v, np.ndarray)]; del _c; time.perf_counter() - t"
                )
            )
        )
    middle = args.cells // 2
    last = f"a{args.cells - 1}"
    t = time.perf_counter()
    k.ok(f"dill.load_session({str(base / f'session{middle}.pkl')!r})")
    dill_load = time.perf_counter() - t
    stale = k.value(f"'{last}' in globals()")  # dill leaves later variables behind
    restore_t = timed(k, f"%restore cell{middle}")
    assert k.value(f"'{last}' in globals()") == "False", "the restore left later variables"
    kishu = kishu_note()

    total_mib = args.mib * args.cells
    mean = statistics.mean
    rows = [
        ("workload", f"{args.cells} cells x {args.mib} MiB", ""),
        ("plain copy of the arrays, per cell (mean)", f"{mean(copy):.3f} s", "1.0x"),
        (
            "%checkpoint, wall, per cell (mean)",
            f"{mean(chk):.3f} s",
            f"{mean(chk) / mean(copy):.1f}x",
        ),
        (
            "%checkpoint, kernel frozen (mean)",
            f"{mean(chk_pause):.3f} s",
            f"{mean(chk_pause) / mean(copy):.1f}x",
        ),
        (
            "dill.dump_session, per cell (mean)",
            f"{mean(dill_dump):.3f} s",
            f"{mean(dill_dump) / mean(copy):.1f}x",
        ),
        (
            "%checkpoint vs dill, last cell",
            f"{chk[-1]:.3f} s vs {dill_dump[-1]:.3f} s",
            f"{dill_dump[-1] / chk[-1]:.1f}x faster"
            if chk[-1] < dill_dump[-1]
            else f"{chk[-1] / dill_dump[-1]:.1f}x slower",
        ),
        (f"back to cell {middle}: %restore", f"{restore_t:.3f} s", ""),
        (
            f"back to cell {middle}: dill.load_session",
            f"{dill_load:.3f} s",
            f"later variables left behind: {stale}",
        ),
        ("data in the kernel at the end", f"{total_mib} MiB", ""),
        ("Kishu", kishu, ""),
    ]
    width = max(len(r[0]) for r in rows)
    print("jupyter-chkpt kernel benchmark (same kernel, same run)")
    for name, value, ratio in rows:
        print(f"  {name:<{width}}  {value:>28}  {ratio}")
    print(
        json.dumps(
            {
                "checkpoint_s": chk,
                "pause_s": chk_pause,
                "dill_dump_s": dill_dump,
                "copy_s": copy,
                "restore_s": restore_t,
                "dill_load_s": dill_load,
            }
        )
    )
    return 0


def kishu_note() -> str:
    try:
        import kishu  # noqa: F401
    except ImportError:
        return "not installed (pip install kishu==0.3.4)"
    return "installed; its JupyterLab-driven workflow is not scripted here yet"


if __name__ == "__main__":
    sys.exit(main())
