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
    @line_magic
    def restore(self, line: str) -> None:
        """Return this kernel, in place, to a snapshot. Nothing is re-run; cells
        queued after this one run on the restored state."""
        args = parse_argstring(self.restore, line)
        try:
            self.ctl.restore(args.snapshot, self.ctl.requester("execute_request"))
        except ChkptError as e:
            raise UsageError(str(e)) from None

    @magic_arguments()
    @argument("--text", action="store_true", help="plain text even where widgets work")
    @line_magic
    def snapshots(self, line: str) -> Any:
        """This kernel's snapshots as a tree (restores create branches): time,
        [execution count], label, first line of the cell, stored size; * marks
        the live one. With ipywidgets: a browser with Restore, Delete and Label."""
        args = parse_argstring(self.snapshots, line)
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
    @argument("what", choices=["auto", "status"], help="auto: snapshots after every cell")
    @argument("state", nargs="?", choices=["on", "off"])
    @argument("--keep", type=int, help="automatic snapshots to keep (default 10)")
    @line_magic
    def chkpt(self, line: str) -> None:
        """%chkpt auto on|off [--keep N]: a snapshot after every cell, keeping the
        newest N automatic ones. %chkpt status: helper, settings, store usage."""
        args = parse_argstring(self.chkpt, line)
        s = self.ctl.settings
        if args.what == "auto":
            if args.keep is not None:
                if args.keep < 1:
                    raise UsageError("--keep must be at least 1")
                s.keep = args.keep
            if args.state:
                s.auto = args.state == "on"
            print(f"automatic snapshots: {'on' if s.auto else 'off'}, keeping {s.keep}")
            return
        try:
            status = self.ctl.call("status")
        except ChkptError as e:
            raise UsageError(str(e)) from None
        store = status["store"]
        print(
            f"helper PID {status['helper_pid']} (jupyter-chkpt {status['version']}), "
            f"{len(status['kernels'])} kernel(s)\n"
            f"automatic snapshots: {'on' if s.auto else 'off'}, keeping {s.keep}\n"
            f"store {store['root']}: {store['snapshots']} snapshot(s), "
            f"{tree._size(store['bytes_on_disk'])} on disk"
        )
