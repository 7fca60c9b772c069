"""A restore that fails after it began changing the target rolls the target back."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Any

import pytest
import zdtm

from jupyter_chkpt.engine import checkpoint, restore
from jupyter_chkpt.engine.dump import capture
from jupyter_chkpt.engine.freeze import frozen
from jupyter_chkpt.errors import EngineError, RestoreFailed
from jupyter_chkpt.proc.memory import StagingBuffer

# `jupyter_chkpt.engine.restore` the attribute is the function; this is the module.
restore_module = importlib.import_module("jupyter_chkpt.engine.restore")


def fingerprint(pid: int) -> dict[str, Any]:
    """Everything a snapshot would hold, hashed: layout, brk, registers, every page."""
    with frozen(pid) as fz:
        image = capture(fz, StagingBuffer())
        meta, (pages,) = image.meta, image.contents
        return {
            "maps": meta.mappings,
            "brk": meta.brk,
            "threads": [(t.tid, t.regs, t.xstate, t.sigmask) for t in meta.threads],
            # An absent anonymous page and a present zero page read the same.
            "pages": {va: hashlib.blake2b(p).digest() for va, p in pages.iter_pages() if any(p)},
        }


@pytest.mark.timeout(120)
def test_failure_mid_restore_rolls_back(spawn, store, monkeypatch) -> None:
    target = spawn("heap", "grow")
    snap = checkpoint(target.pid, store)
    target.ok("mutate")  # the heap grows by 64 MiB
    # Compare like with like: the target sits in read(0) both times.
    zdtm.wait_blocked(target.pid, {target.pid: zdtm.SYS_READ})
    before = fingerprint(target.pid)
    seen: list[str] = []
    # After layout, cwd and files were changed: all of them must be rolled back.
    real = restore_module.reconcile_sigactions

    def fail_once(*args: Any) -> list[int]:
        if not seen:
            seen.append(Path(f"/proc/{target.pid}/maps").read_text())
            raise EngineError("injected failure after the layout was changed")
        return real(*args)

    # Fault injection into our own code; the target and the kernel are real.
    monkeypatch.setattr(restore_module, "reconcile_sigactions", fail_once)
    with pytest.raises(RestoreFailed, match="injected failure"):
        restore(target.pid, store, snap.id)
    zdtm.assert_released(target.pid)
    assert len(seen) == 1
    assert "heap" in seen[0]
    zdtm.wait_blocked(target.pid, {target.pid: zdtm.SYS_READ})
    after = fingerprint(target.pid)
    assert after["brk"] == before["brk"]
    assert after["maps"] == before["maps"], "the layout was not rolled back"
    assert after["threads"] == before["threads"], "registers were not rolled back"
    # The kernel rewrites the rseq area in the TCB (at fs_base) whenever the
    # thread resumes on another CPU: that page may legitimately differ.
    fs_base = before["threads"][0][1]["fs_base"]
    tcb = {fs_base & ~0xFFF, (fs_base + 0x1000) & ~0xFFF}
    differ = {
        va
        for va in before["pages"].keys() | after["pages"].keys()
        if before["pages"].get(va) != after["pages"].get(va)
    }
    assert differ <= tcb, f"memory was not rolled back at {sorted(hex(va) for va in differ)}"

    monkeypatch.undo()
    restore(target.pid, store, snap.id)
    target.ok("verify")
    target.ok("work")
    target.quit()


@pytest.mark.timeout(120)
def test_missing_cwd_is_reported_not_fatal(spawn, store, tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    target = spawn("py_counter.py", cwd=gone)
    snap = checkpoint(target.pid, store)
    target.ok("mutate")
    gone.rmdir()
    result = restore(target.pid, store, snap.id)
    assert any(str(gone) in note for note in result.notes), result.notes
    target.ok("verify")
    target.quit()
