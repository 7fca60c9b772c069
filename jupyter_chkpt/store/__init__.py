"""Persistent, content-addressed snapshot storage (format: docs/FORMAT.md)."""

from .manifest import SnapshotInfo
from .store import GcResult, Store

__all__ = ["GcResult", "SnapshotInfo", "Store"]
