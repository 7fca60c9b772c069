"""Jupyter server extension: the REST API under /api/chkpt/ (docs/openapi.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

EVENTS_SCHEMA = Path(__file__).parent / "events" / "snapshots.yaml"
EVENTS_ID = "https://jupyter-chkpt.org/events/snapshots/v1"


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .handlers import setup_handlers

    logger = getattr(serverapp, "event_logger", None)
    if logger is not None:  # jupyter_server 2: /api/events/subscribe carries our events
        logger.register_event_schema(EVENTS_SCHEMA)
    setup_handlers(serverapp.web_app)
    serverapp.log.info("jupyter-chkpt: REST API at /api/chkpt/")
