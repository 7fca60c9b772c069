"""Where the helper's socket, lock and log live: `chkpt/` in the Jupyter runtime directory."""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

from ..errors import HelperUnavailable
from ..private import make_private_dirs

SOCKET_NAME = "helper.sock"
LOCK_NAME = "helper.lock"
LOG_NAME = "helper.log"


def helper_dir() -> Path:
    """<runtime dir>/chkpt, 0700 and ours; created if missing."""
    d = Path(jupyter_runtime_dir()) / "chkpt"
    try:
        make_private_dirs(d)  # and any parent it creates: 0700 whatever the umask
        st = d.stat()
    except OSError as e:
        raise HelperUnavailable(
            f"cannot use the helper's directory {d}: {e.strerror}",
            "Set JUPYTER_RUNTIME_DIR to a directory of your own",
        ) from None
    if st.st_uid != os.getuid():
        raise HelperUnavailable(
            f"{d} belongs to uid {st.st_uid}, not to you (uid {os.getuid()})",
            "Set JUPYTER_RUNTIME_DIR to a directory of your own",
        )
    if st.st_mode & 0o777 != 0o700:
        d.chmod(0o700)  # ours: nobody else may reach the socket
    return d


def journal_path() -> Path:
    """<runtime dir>/chkpt/journal, not created here: the engine's journals
    (engine/journal.py) and the word a restore leaves a kernel (`handoff_path`)."""
    return Path(jupyter_runtime_dir()) / "chkpt" / "journal"


def handoff_path(pid: int) -> Path:
    return journal_path() / f"{pid}.handoff"


def socket_path() -> Path:
    return helper_dir() / SOCKET_NAME


def lock_path() -> Path:
    return helper_dir() / LOCK_NAME


def log_path() -> Path:
    return helper_dir() / LOG_NAME
