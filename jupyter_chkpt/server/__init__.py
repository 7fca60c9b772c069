"""Jupyter server extension: the REST API under /api/chkpt/ (docs/openapi.yaml)."""

from __future__ import annotations

from typing import Any


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .handlers import setup_handlers

    setup_handlers(serverapp.web_app)
    serverapp.log.info("jupyter-chkpt: REST API at /api/chkpt/")
