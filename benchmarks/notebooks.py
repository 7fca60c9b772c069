"""Automatic snapshots after every cell, side by side with Kishu and dill, in one run.

Each workload runs four times on real kernels started through jupyter_client:
plain (no tool: the cells' own time), jupyter-chkpt ("Python 3 (snapshots)" with
`%chkpt auto on`: a snapshot after every cell), Kishu (`init_kishu`, which commits
after every cell) and dill (`dill.dump_session` after every cell). Then each goes
back to the middle cell (`%restore`, Kishu's checkout, `dill.load_session`) and the
state is checked. Printed per workload and tool: overhead per cell (mean, over the
plain run), time frozen (jupyter-chkpt), time back to the middle cell, storage, and
the memory of the kernel and of jupyter-chkpt's helper. Then what tracking costs a
cell that rewrites 1 GiB (tracking armed, and not), and a 1 GiB kernel back after a
crash: its snapshot moved into the kernel the manager started again (request to
reply), beside dill's load_session of the same array into a fresh kernel, an
in-place restore, and a plain copy of the 1 GiB.

    pip install '.[bench]'      # kishu==0.3.4, dill, pandas
    python benchmarks/notebooks.py [--workloads numpy,pandas,tiny,percent] [--no-kishu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import kernels  # noqa: E402  (the tests' jupyter_client harness)

MiB = 1 << 20
# Each workload: setup cells (not timed), the timed cells, and a check that is true
# only in the state right after the middle timed cell.
WORKLOADS: dict[str, dict[str, object]] = {
    "numpy": {
        "about": "6 cells, each a new float64 array of 256 MiB to 1 GiB (3.75 GiB in all)",
        "setup": ["import numpy as np; rng = np.random.default_rng(0)"],
        "cells": [
            f"a{i} = rng.random({mib} * 2**20 // 8)"
            for i, mib in enumerate([256, 512, 768, 1024, 512, 768])
        ],
        "check": "'a2' in globals() and 'a3' not in globals()",
    },
    "pandas": {
        "about": "a 2M-row frame built up over 6 cells",
        "setup": ["import numpy as np, pandas as pd; rng = np.random.default_rng(0)"],
        "cells": [
            "df = pd.DataFrame({'x': rng.random(2_000_000), 'k': rng.integers(0, 1000, 2_000_000)})",
            "df['y'] = df.x * 2 + 1",
            "df['s'] = df.k.astype(str)",
            "g = df.groupby('k').y.mean()",
            "df = df.merge(g.rename('ym').reset_index(), on='k')",
            "df['z'] = df.y - df.ym",
        ],
        "check": "'s' in df.columns and 'ym' not in df.columns and 'g' not in globals()",
    },
    "tiny": {
        "about": "30 tiny cells beside a 100k-entry dict",
        "setup": ["d = {i: str(i) for i in range(100_000)}; n = 0"],
        "cells": [f"n += 1; d[{i}] = 'x'" for i in range(30)],
        "check": "n == 15",
    },
    "percent": {
        "about": "6 cells each changing 1% of a 1 GiB array",
        "setup": ["import numpy as np; a = np.ones(2**27); step = 0"],
        "cells": ["a[step * 2**20 : step * 2**20 + 2**27 // 100] += 1; step += 1"] * 6,
        "check": "step == 3",
    },
}


@dataclass
class Run:
    cell_s: list[float] = field(default_factory=list)
    pause_s: list[float] = field(default_factory=list)
    back_s: float | None = None
    back_ok: bool | None = None
    storage: int = 0
    kernel_rss: int = 0
    helper_rss: int = 0
    note: str = ""


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 else 0


def timed(k: kernels.Kernel, code: str) -> float:
    t = time.perf_counter()
    k.ok(code, timeout=900)
    return time.perf_counter() - t


def run_plain(env: dict[str, str], w: dict[str, object]) -> Run:
    k = kernels.Kernel(env, "python3")
    try:
        for c in w["setup"]:  # type: ignore[attr-defined]
            k.ok(c)
        return Run(cell_s=[timed(k, c) for c in w["cells"]], kernel_rss=rss(k.pid))  # type: ignore[attr-defined]
    finally:
        k.shutdown()


def run_chkpt(env: dict[str, str], w: dict[str, object], store: Path) -> Run:
    k = kernels.Kernel(env)
    r = Run()
    try:
        for c in w["setup"]:  # type: ignore[attr-defined]
            k.ok(c)
        k.ok("%chkpt auto on --keep 100")
        cells = w["cells"]  # type: ignore[assignment]
        for c in cells:
            r.cell_s.append(timed(k, c))
        listing = k.chkpt("list").content["snapshots"]
        autos = [s for s in listing if s["tags"].get("auto")][-len(cells) :]
        r.pause_s = [s["stats"]["pause_s"] for s in autos]
        middle = autos[len(cells) // 2 - 1]["id"]  # taken after the middle cell
        r.kernel_rss = rss(k.pid)
        helper = int(k.value("get_ipython().kernel._chkpt.client.helper_pid"))
        r.back_s = timed(k, f"%restore {middle}")
        r.back_ok = k.value(str(w["check"])) == "True"
        time.sleep(1)
        r.helper_rss = rss(helper)
        r.storage = du(store)
    finally:
        k.shutdown()
    return r


KISHU_SETUP = """
import os, pathlib, nbformat
os.environ["HOME"] = {home!r}
(pathlib.Path({home!r}) / ".kishu").mkdir(exist_ok=True)
(pathlib.Path({home!r}) / ".kishu" / "config.ini").write_text("[JUPYTERINT]\\ntest_mode = True\\n")
nbformat.write(nbformat.v4.new_notebook(), {nb!r})
from kishu import init_kishu
init_kishu({nb!r})
"""


def run_kishu(env: dict[str, str], w: dict[str, object], home: Path) -> Run:
    home.mkdir()
    # Kishu finds its kernel's id in the connection file's name, as Jupyter names it
    k = kernels.Kernel(env, "python3", str(home / f"kernel-{uuid.uuid4()}.json"))
    r = Run()
    try:
        # (Kishu's post-cell hook complains about the very cell that installs it)
        setup = k.run(KISHU_SETUP.format(home=str(home), nb=str(home / "bench.ipynb")))
        assert setup.status == "ok", setup.content
        for c in w["setup"]:  # type: ignore[attr-defined]
            k.ok(c)
        ids = []
        cells = w["cells"]  # type: ignore[assignment]
        for c in cells:
            r.cell_s.append(timed(k, c))
            ids.append(k.value("_kishu._kishu_branch.get_head().commit_id").strip("'"))
        r.kernel_rss = rss(k.pid)
        middle = ids[len(cells) // 2 - 1]
        r.back_s = timed(k, f"_kishu.checkout({middle!r}, skip_notebook=True)")
        r.back_ok = k.value(str(w["check"])) == "True"
        r.storage = du(home)  # its database sits next to the notebook
    except AssertionError as e:
        r.note = f"failed: {str(e).splitlines()[0][:120]}"
    finally:
        k.shutdown()
    return r


def run_dill(env: dict[str, str], w: dict[str, object], base: Path) -> Run:
    k = kernels.Kernel(env, "python3")
    r = Run()
    try:
        k.ok("import dill")
        for c in w["setup"]:  # type: ignore[attr-defined]
            k.ok(c)
        cells = w["cells"]  # type: ignore[assignment]
        for i, c in enumerate(cells):
            t = timed(k, c)
            t += timed(k, f"dill.dump_session({str(base / f's{i}.pkl')!r})")
            r.cell_s.append(t)
        r.kernel_rss = rss(k.pid)
        middle = len(cells) // 2 - 1
        r.back_s = timed(k, f"dill.load_session({str(base / f's{middle}.pkl')!r})")
        r.back_ok = k.value(str(w["check"])) == "True"  # later variables stay behind
        r.storage = du(base)
    except AssertionError as e:
        r.note = f"failed: {str(e).splitlines()[0][:120]}"
    finally:
        k.shutdown()
    return r


def tracking_cost(env: dict[str, str], repeat: int = 3) -> tuple[float, float]:
    """A cell that rewrites 1 GiB: the first write to each page after a snapshot faults
    once (tracking armed by a snapshot before each time), against a plain kernel."""
    out = []
    for name in (kernels.KERNEL, "python3"):
        k = kernels.Kernel(env, name)
        try:
            k.ok("import numpy as np; a = np.ones(2**27)")
            times = []
            for _ in range(repeat):
                if name == kernels.KERNEL:
                    k.ok("%checkpoint")  # every page write-protected again
                times.append(timed(k, "a += 1"))
            out.append(statistics.median(times))
        finally:
            k.shutdown()
    return out[0], out[1]


def long_session(env: dict[str, str], cells: int = 20) -> tuple[int, float, list[float]]:
    """A 1 GiB kernel, an automatic snapshot after each of 20 small cells: the helper's
    memory once idle, and the time back one cell (the user's request to the reply)."""
    k = kernels.Kernel(env)
    try:
        k.ok("import numpy as np; a = np.random.default_rng(0).random(2**27); step = 0")
        k.ok("%chkpt auto on --keep 50")
        helper = int(k.value("get_ipython().kernel._chkpt.client.helper_pid"))
        for _ in range(cells):
            k.ok("a[step * 2**20 : step * 2**20 + 2**27 // 100] += 1; step += 1")
        k.chkpt("list")  # waits for the stores
        time.sleep(2)
        idle = rss(helper)
        back = []
        for _ in range(3):
            back.append(timed(k, "%restore -2"))
            k.ok("step += 1")
            k.chkpt("list")
        return idle, statistics.median(back), back
    finally:
        k.shutdown()


@dataclass
class Crash:
    moved_s: float  # %restore of the dead process's snapshot, request to reply
    in_place_s: float  # then %restore of a snapshot of the new process: in place
    copy_s: float  # the new kernel copying 1 GiB (np.copy): the bare memory cost
    dill_s: float | None  # dill.load_session of the array into a fresh kernel
    gen_ok: bool  # the generator went on (dill cannot save one: its run has none)


def after_a_crash(env: dict[str, str], base: Path) -> Crash:
    """A 1 GiB kernel with a generator: snapshot, SIGKILL, the manager starts it again,
    `%restore` moves the snapshot into the new process."""
    k = kernels.Kernel(env)
    try:
        k.ok("import numpy as np; a = np.random.default_rng(0).random(2**27)")
        k.ok("import itertools; gen = itertools.count(); next(gen)")
        snap = k.chkpt("checkpoint", label="big").content["snapshot"]["id"]
        old = k.pid
        os.kill(old, 9)
        k.km.provisioner.process.wait(30)  # type: ignore[union-attr]
        k.km.restart_kernel(now=True)
        k.kc.wait_for_ready(timeout=60)
        moved = timed(k, f"%restore {snap}")
        gen_ok = k.value("next(gen)") == "1" and k.value("a.size") == str(2**27)
        here = k.chkpt("checkpoint", label="here").content["snapshot"]["id"]
        k.ok("a[:10] = 0")
        in_place = timed(k, f"%restore {here}")  # a snapshot of this process: in place
        copy = timed(k, "c = np.copy(a)")
    finally:
        k.shutdown()
    dill_s = None
    k = kernels.Kernel(env, "python3")
    try:
        k.ok("import dill, numpy as np; a = np.random.default_rng(0).random(2**27)")
        path = str(base / "big.pkl")
        k.ok(f"dill.dump_session({path!r})", timeout=900)
        k.shutdown()
        k = kernels.Kernel(env, "python3")
        k.ok("import dill")
        dill_s = timed(k, f"dill.load_session({path!r})")
    except AssertionError:
        pass  # dill not installed: pip install '.[bench]'
    finally:
        k.shutdown()
    return Crash(moved, in_place, copy, dill_s, gen_ok)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workloads", default="numpy,pandas,tiny,percent", help="or none")
    ap.add_argument("--no-kishu", action="store_true")
    ap.add_argument(
        "--only-crash", action="store_true", help="only the 1 GiB kernel back after a crash"
    )
    args = ap.parse_args()
    if args.only_crash:
        args.workloads = "none"
    try:
        import kishu  # noqa: F401

        have_kishu = not args.no_kishu
    except ImportError:
        have_kishu = False
    results: dict[str, dict[str, Run]] = {}
    print("Automatic snapshot after every cell (same workloads, same run)", flush=True)
    for name in [w for w in args.workloads.split(",") if w != "none"]:
        w = WORKLOADS[name]
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
            base = Path(tmp)
            (base / "rt").mkdir(mode=0o700)
            env = kernels.kernel_env(base / "rt", base / "store")
            os.environ["JUPYTER_RUNTIME_DIR"] = env["JUPYTER_RUNTIME_DIR"]
            runs = {"plain": run_plain(env, w), "jupyter-chkpt": run_chkpt(env, w, base / "store")}
            if have_kishu:
                runs["Kishu"] = run_kishu(env, w, base / "kishu-home")
            (base / "dill").mkdir()
            runs["dill"] = run_dill(env, w, base / "dill")
            results[name] = runs
            stop_helper()
        report({name: runs}, have_kishu)  # as each finishes: a long run may be cut short
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        base = Path(tmp)
        (base / "rt").mkdir(mode=0o700)
        env = kernels.kernel_env(base / "rt", base / "store")
        os.environ["JUPYTER_RUNTIME_DIR"] = env["JUPYTER_RUNTIME_DIR"]
        if not args.only_crash:
            armed, plain = tracking_cost(env)
            stop_helper()
            idle, back, backs = long_session(env)
            stop_helper()
        crash = after_a_crash(env, base)
        stop_helper()
    if not args.only_crash:
        report_long(armed, plain, idle, back, backs)
    report_crash(crash)
    return 0


def report_long(armed: float, plain: float, idle: int, back: float, backs: list[float]) -> None:
    print(
        f"\ntracking's cost to a cell rewriting 1 GiB: {armed:.3f} s armed vs {plain:.3f} s "
        f"without ({(armed / plain - 1) * 100:+.1f}%)"
    )
    print(
        f"1 GiB kernel, 20 cells with automatic snapshots: helper idle at {idle / MiB:.0f} MiB;"
        f" back one cell (%restore -2) {back:.3f} s (of {', '.join(f'{b:.3f}' for b in backs)})"
    )


def report_crash(crash: Crash) -> None:
    dill = (
        f"{crash.dill_s:.3f} s ({crash.moved_s / crash.dill_s:.2f}x), the array only"
        if crash.dill_s
        else "not installed"
    )
    print(
        f"1 GiB kernel after a crash, its snapshot moved into the new process: "
        f"{crash.moved_s:.3f} s request to reply (generator went on: {crash.gen_ok}); "
        f"an in-place restore of the same kernel {crash.in_place_s:.3f} s; a plain 1 GiB copy {crash.copy_s:.3f} s "
        f"({crash.moved_s / crash.copy_s:.1f}x); dill's load_session {dill}"
    )


def stop_helper() -> None:
    from jupyter_chkpt.errors import HelperUnavailable
    from jupyter_chkpt.helper.client import HelperClient

    try:
        with HelperClient(start=False) as c:
            c.call("shutdown", timeout=60)
    except HelperUnavailable:
        pass


def report(results: dict[str, dict[str, Run]], have_kishu: bool) -> None:
    mean = statistics.mean
    if not have_kishu:
        print("  (Kishu not measured: pip install kishu==0.3.4)")
    for name, runs in results.items():
        print(f"\n{name}: {WORKLOADS[name]['about']}")
        plain = mean(runs["plain"].cell_s)
        print(
            f"  {'tool':<14}{'overhead/cell':>15}{'% of cell':>11}{'frozen':>10}"
            f"{'back to middle':>16}{'right':>7}{'storage':>11}{'kernel RSS':>12}{'helper RSS':>12}"
        )
        for tool, r in runs.items():
            if tool == "plain":
                print(f"  {'(cells alone)':<14}{plain:>14.3f}s")
                continue
            if r.note:
                print(f"  {tool:<14}{r.note}")
                continue
            over = mean(r.cell_s) - plain
            frozen = f"{statistics.median(r.pause_s):.3f}s" if r.pause_s else "-"
            back = f"{r.back_s:.3f}s" if r.back_s is not None else "-"
            helper = f"{r.helper_rss / MiB:.0f} MiB" if r.helper_rss else "-"
            print(
                f"  {tool:<14}{over:>14.3f}s{over / plain * 100 if plain else 0:>10.0f}%{frozen:>10}"
                f"{back:>16}{r.back_ok!s:>7}{r.storage / MiB:>8.0f} MiB"
                f"{r.kernel_rss / MiB:>8.0f} MiB{helper:>12}"
            )
    print(
        "\n"
        + json.dumps({n: {t: r.__dict__ for t, r in runs.items()} for n, runs in results.items()})
    )


if __name__ == "__main__":
    sys.exit(main())
