"""Address-space scenarios: the layout and contents change between snapshot and restore.

Each runs checkpoint -> mutate -> restore -> verify -> work x3 -> quit
(zdtm.roundtrip); the target checks its own state (see tests/targets/).
"""

from __future__ import annotations

import pytest
import zdtm

from jupyter_chkpt.engine import checkpoint, restore  # noqa: F401  (fail early without the engine)


@pytest.mark.timeout(120)
def test_heap_grows_after_snapshot(spawn, store, tracked) -> None:
    """brk moves up by 64 MiB after the snapshot; restore must bring it back down."""
    zdtm.roundtrip(spawn("heap", "grow"), store, tracked)


@pytest.mark.timeout(120)
def test_heap_shrinks_after_snapshot(spawn, store, tracked) -> None:
    """The 24 MiB top-of-heap block is freed and trimmed; restore must grow brk again."""
    zdtm.roundtrip(spawn("heap", "shrink"), store, tracked)


@pytest.mark.timeout(180)
def test_large_mmaps_created_after_snapshot(spawn, store, tracked) -> None:
    """128 MiB mmap + 64 MiB numpy array mapped after the snapshot must be unmapped."""
    zdtm.roundtrip(spawn("py_memory.py", "mmap_new"), store, tracked)


@pytest.mark.timeout(180)
def test_large_mmaps_freed_after_snapshot(spawn, store, tracked) -> None:
    """128 + 64 MiB mmaps and a 96 MiB numpy array unmapped after the snapshot come back."""
    zdtm.roundtrip(spawn("py_memory.py", "mmap_free"), store, tracked)


@pytest.mark.timeout(120)
def test_shared_libraries_loaded_after_snapshot(spawn, store, tracked, c_targets) -> None:
    """numpy and a ctypes library loaded after the snapshot are gone; loading again works."""
    target = spawn("py_memory.py", "late_import", str(c_targets["libprobe.so"]))
    zdtm.roundtrip(target, store, tracked)


@pytest.mark.timeout(120)
def test_mprotect_after_snapshot(spawn, store, tracked) -> None:
    """r--/--- after the snapshot must be rw- again (work writes to it), r-- stays r--."""
    zdtm.roundtrip(spawn("py_memory.py", "mprotect"), store, tracked)
