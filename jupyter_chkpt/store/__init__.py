"""Persistent, content-addressed snapshot storage (format: docs/FORMAT.md)."""

from .manifest import SnapshotInfo
from .store import CleanResult, GcResult, Store

__all__ = ["CleanResult", "GcResult", "SnapshotInfo", "Store"]
