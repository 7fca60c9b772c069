"""The engine: freeze -> dump -> store, and freeze -> reconcile -> write -> resume."""

from .dump import checkpoint
from .restore import RestoreResult, restore

__all__ = ["RestoreResult", "checkpoint", "restore"]
