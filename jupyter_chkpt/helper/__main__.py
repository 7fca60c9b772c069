"""`python -m jupyter_chkpt.helper start [--foreground] [--store DIR]`: run the helper daemon."""

from __future__ import annotations

import argparse
import sys

from ..errors import ChkptError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_chkpt.helper")
    parser.add_argument("command", choices=["start"])
    parser.add_argument("--foreground", action="store_true", help="do not detach")
    parser.add_argument("--store", metavar="DIR", help="snapshot store directory")
    args = parser.parse_args(argv)
    from .server import run

    try:
        return run(foreground=args.foreground, store_root=args.store)
    except ChkptError as e:
        print(f"jupyter-chkpt helper: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
