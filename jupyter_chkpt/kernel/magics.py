"""%checkpoint, %restore, %snapshots, %chkpt: the user's side of the Checkpointer."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..errors import ChkptError
from . import tree
from .controller import Checkpointer


@magics_class
class ChkptMagics(Magics):
    def __init__(self, shell: Any, ctl: Checkpointer) -> None:
        super().__init__(shell)
        self.ctl = ctl

    @magic_arguments()
    @argument("-m", "--message", default="", help="a label for the snapshot")
    @line_magic
    def checkpoint(self, line: str) -> str:
        """Snapshot this kernel at the end of the cell; returns its id, shown once
        the snapshot is stored.

        Everything comes back on %restore: variables, generators, threads, open
        files, C-extension state. The snapshot is taken once the cell has
        finished and its output is out; if it cannot be taken or stored, the
        cell fails with the reason.
        """
        args = parse_argstring(self.checkpoint, line)
        try:
            return self.ctl.request_checkpoint(args.message)
        except ChkptError as e:
            raise UsageError(str(e)) from None

    @magic_arguments()
    @argument("snapshot", help="a snapshot id (or prefix), -N (-1: the newest), or a label")
    @argument(
        "--discard",
        action="store_true",
        help="do not keep the state being left as a snapshot (the restore cannot be undone)",
    )
    @line_magic
    def restore(self, line: str) -> None:
        """Return this kernel, in place, to a snapshot. Nothing is re-run; cells
        queued after this one run on the restored state. The state being left is
        kept as a snapshot first (unless it is one already): the output names it,
        and %restore of it (or %chkpt undo) goes back."""
        args = parse_argstring(self.restore, line)
        try:
            self.ctl.restore(
                args.snapshot, self.ctl.requester("execute_request"), keep_left=not args.discard
            )
        except ChkptError as e:
            raise UsageError(str(e)) from None

    @magic_arguments()
    @argument("--text", action="store_true", help="plain text even where widgets work")
    @argument("diff", nargs="*", help="diff A B: variables added, removed, changed from A to B")
    @line_magic
    def snapshots(self, line: str) -> Any:
        """This kernel's snapshots as a tree (restores create branches): time,
        [execution count], label, first line of the cell, stored size; * marks
        the live one. With ipywidgets: a browser with Restore, Delete and Label.

        %snapshots diff A B: the variables added, removed and changed from snapshot
        A to snapshot B, as recorded when each was taken (neither is restored)."""
        args = parse_argstring(self.snapshots, line)
        if args.diff:
            if len(args.diff) != 3 or args.diff[0] != "diff":
                raise UsageError("usage: %snapshots diff A B (two snapshot references)")
            try:
                result = self.ctl.call("diff", a=args.diff[1], b=args.diff[2])
            except ChkptError as e:
                raise UsageError(str(e)) from None
            a, b = result["a"], result["b"]
            print(f"from {tree.describe(a)}\n  to {tree.describe(b)}")
            print(tree.render_diff(result))
            return None
        try:
            listing = self.ctl.call("list")
        except ChkptError as e:
            raise UsageError(str(e)) from None
        live = listing["kernel"]["live"]
        if not args.text:
            try:
                from .widgets import SnapshotBrowser
            except ImportError:
                pass
            else:
                return SnapshotBrowser(self.ctl, listing["snapshots"], live)
        print(tree.render(listing["snapshots"], live))
        return None

    @magic_arguments()
    @argument(
        "what",
        choices=["auto", "status", "undo", "redo"],
        help="auto: snapshots after every cell; undo: back to before the last cell; "
        "redo: forward again",
    )
    @argument("state", nargs="?", choices=["on", "off"])
    @argument("--keep", type=int, help="automatic snapshots to keep (default 10)")
    @argument(
        "--max-mib",
        type=int,
        help="prune the oldest automatic snapshots while this kernel's take more (0: no limit)",
    )
    @line_magic
    def chkpt(self, line: str) -> None:
        """%chkpt auto on|off [--keep N]: a snapshot after every cell, keeping the
        newest N automatic ones. %chkpt undo: back to the state before the last
        cell (needs automatic snapshots); %chkpt redo: forward again, until a cell
        runs. %chkpt status: helper, settings, store usage."""
        args = parse_argstring(self.chkpt, line)
        s = self.ctl.settings
        if args.what in ("undo", "redo"):
            self.ctl._history_cell = True  # not a step of its own (no snapshot, redo kept)
            act = self.ctl.undo if args.what == "undo" else self.ctl.redo
            try:
                act(self.ctl.requester("execute_request"))
            except ChkptError as e:
                raise UsageError(str(e)) from None
            return
        if args.what == "auto":
            if args.keep is not None:
                if args.keep < 1:
                    raise UsageError("--keep must be at least 1")
                s.keep = args.keep
            if args.max_mib is not None:
                if args.max_mib < 0:
                    raise UsageError("--max-mib must be at least 0 (0: no limit)")
                s.max_mib = args.max_mib
            if args.state:
                s.auto = args.state == "on"
            print(f"automatic snapshots: {_settings(s)}")
            return
        try:
            status = self.ctl.call("status")
        except ChkptError as e:
            raise UsageError(str(e)) from None
        store = status["store"]
        print(
            f"helper PID {status['helper_pid']} (jupyter-chkpt {status['version']}), "
            f"{len(status['kernels'])} kernel(s)\n"
            f"automatic snapshots: {_settings(s)}\n"
            f"store {store['root']}: {store['snapshots']} snapshot(s), "
            f"{tree._size(store['bytes_on_disk'])} on disk"
        )


def _settings(s: Any) -> str:
    limit = f", at most {s.max_mib} MiB" if s.max_mib else ""
    return f"{'on' if s.auto else 'off'}, keeping {s.keep}{limit}"
