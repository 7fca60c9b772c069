"""Selects the architecture module; the rest of the code imports `current` from here."""

from __future__ import annotations

import platform
import sys

from ..errors import UnsupportedPlatform
from . import x86_64 as current

__all__ = ["current", "require_supported"]


def require_supported() -> None:
    machine = platform.machine()
    if not sys.platform.startswith("linux") or machine != current.NAME:
        raise UnsupportedPlatform(
            f"this is {sys.platform} on {machine}, not Linux on {current.NAME}"
        )
