"""The `jupyter-chkpt` command line (also `jupyter chkpt`, `python -m jupyter_chkpt`).

One Command class per subcommand; each adds its arguments and runs with the
parsed namespace. Errors print their message with its remedy, never a
traceback (unless $JUPYTER_CHKPT_DEBUG is set), and exit with status 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import select
import sys
from typing import Any, ClassVar

from . import __version__, refs
from .errors import BadRequest, ChkptError, FilesLost, UnknownSnapshot, as_chkpt_error
from .private import human_size

EXIT_ERROR = 1
EXIT_SIGPIPE = 128 + 13  # as a process killed by SIGPIPE
REFERENCE = "a snapshot id, a unique prefix of it (4+ characters) or a label"


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


class Command:
    name: ClassVar[str]
    help: ClassVar[str]
    description: ClassVar[str] = ""  # longer text for `COMMAND --help`; defaults to help
    uses_store: ClassVar[bool] = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError

    @staticmethod
    def store(args: argparse.Namespace) -> Any:
        from .store import Store

        return Store(args.store)

    @staticmethod
    def resolve(store: Any, ref: str, pid: int | None = None) -> str:
        """The id `ref` names (refs.py); with `pid`, among that process's snapshots, -N too."""
        where = f"PID {pid}" if pid is not None else "the store"
        listing = f"`jupyter-chkpt ls{'' if pid is None else f' {pid}'}`"
        try:
            return str(
                refs.resolve(
                    store.list(pid), ref, where=where, newest=pid is not None, listing=listing
                ).id
            )
        except UnknownSnapshot:
            if refs.ID_LIKE.fullmatch(ref):  # one `ls` skips or another PID's: let the store
                return str(store.resolve(ref))  # and the engine say why
            raise


class CheckCommand(Command):
    name = "check"
    help = (
        "show what this machine allows and which snapshots of the store are damaged; "
        "exit status 1 if snapshots cannot work here"
    )

    def run(self, args: argparse.Namespace) -> int:
        from .proc.capabilities import probe, snapshots_possible

        caps = probe()
        possible = snapshots_possible(caps)
        store = self.store_health(args)
        if args.json:
            _print_json(
                {
                    "snapshots_possible": possible,
                    "capabilities": [c.__dict__ for c in caps],
                    "store": store,
                }
            )
        else:
            rows = [
                [
                    c.name,
                    "yes" if c.ok else "NO",
                    "required" if c.required else "optional",
                    c.detail,
                ]
                for c in caps
            ]
            _table(rows, ["CAPABILITY", "OK", "", "DETAIL"])
            print()
            print(
                "Snapshots work on this machine."
                if possible
                else "Snapshots cannot work on this machine (see the required rows marked NO)."
            )
            print()
            if store["error"]:
                print(f"store {store['root']}: {store['error']}")
            elif not store["exists"]:
                print(f"store {store['root']}: none yet (made by the first snapshot)")
            else:
                print(
                    f"store {store['root']}: {store['snapshots']} snapshot(s), "
                    f"{len(store['damaged'])} damaged, {human_size(store['free_bytes'])} free"
                )
                _print_damage([argparse.Namespace(**d) for d in store["damaged"]])
        return 0 if possible else EXIT_ERROR

    @staticmethod
    def store_health(args: argparse.Namespace) -> dict[str, Any]:
        """The store's snapshots and which are damaged; a store that does not exist
        yet is not made."""
        from .store import Store, layout

        root = layout.resolve_root(args.store)
        out: dict[str, Any] = {"root": str(root), "exists": root.exists(), "error": ""}
        if not out["exists"]:
            return out
        try:
            store = Store(root)
            infos = store.list()
            out["free_bytes"] = store.free_bytes()
        except ChkptError as e:
            out["error"] = str(e)
            return out
        out["snapshots"] = len(infos)
        out["damaged"] = [{"id": i.id, "pid": i.pid, "damage": i.damage} for i in infos if i.damage]
        return out


class SnapshotCommand(Command):
    name = "snapshot"
    help = "snapshot a running process; prints the new snapshot's id"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("pid", type=int, help="the process to snapshot (yours)")
        parser.add_argument("--label", default="", help="a label to find the snapshot by later")

    def run(self, args: argparse.Namespace) -> int:
        from .engine import checkpoint

        label = refs.check_label(args.label)
        info = checkpoint(args.pid, self.store(args), label=label)
        if args.json:
            _print_json(
                {
                    **info.to_json(),
                    "bytes": info.mem_bytes,
                    "pause_s": info.stats.get("pause_s"),
                }
            )
        else:
            print(info.id)
        return 0


class RestoreCommand(Command):
    name = "restore"
    help = "return a running process, in place, to a snapshot's state"
    description = (
        "Return a running process, in place, to a snapshot's state: memory, registers, "
        "layout, fds, epoll registrations, eventfd counters, offsets, signal dispositions, "
        "umask and cwd. A one-shot CLI holds no duplicates of the process's files between "
        "snapshot and restore, so of the fds closed since the snapshot only regular files "
        "can be reopened: a restore that would lose sockets, pipes, eventfds or epolls the "
        "snapshot has is refused, naming them, unless --force is given (they then get "
        "stand-ins: sockets and pipes that read as closed, fresh eventfds and epolls). "
        "Anything that could not be put back is printed as a note. With --into, PID is "
        "another process of the same program, started after the snapshot's process ended "
        "(a restarted kernel): it becomes the snapshot, its own state replaced."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "pid",
            type=int,
            help="the process to restore (the one the snapshot was taken from, unless --into)",
        )
        parser.add_argument(
            "snapshot", help=f"{REFERENCE}, or -N: the N-th newest of PID (not with --into)"
        )
        parser.add_argument(
            "--into",
            action="store_true",
            help="PID is a fresh process of the same program (same executable, libraries and "
            "kernel) that becomes the snapshot; what only the snapshot's process held gets "
            "stand-ins: sockets that read as closed, new pipes, eventfds and epolls",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="restore even if files the snapshot uses cannot be put back: they get "
            "stand-ins that read as closed (the process may fail)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from .engine import restore

        store = self.store(args)
        if args.into and args.snapshot.startswith("-"):
            raise BadRequest(
                f"--into needs the snapshot's id or label, not {args.snapshot!r}",
                "List the snapshots with `jupyter-chkpt ls` and give one's id",
            )
        snap_id = self.resolve(store, args.snapshot, None if args.into else args.pid)
        if not args.force and not args.into:
            self.refuse_lost_files(store, snap_id, args.pid)
        result = restore(args.pid, store, snap_id, into=args.into)
        if args.json:
            _print_json(result.to_json())
        else:
            print(
                f"restored PID {result.pid} to snapshot {result.snapshot_id} (paused {result.pause_s:.3f} s)"
            )
            if result.files.summary():
                print(f"files: {result.files.summary()}")
            for note in result.notes:
                print(f"note: {note}")
        return 0

    @staticmethod
    def refuse_lost_files(store: Any, snap_id: str, pid: int) -> None:
        """Files the snapshot's memory still uses that this restore cannot put back
        (a one-shot CLI holds no duplicates): a pyzmq process without its eventfds
        and sockets aborts. The engine refuses another process's snapshot itself."""
        from .engine.files import files_lost
        from .proc import procfs

        meta = store.load_meta(snap_id)
        if meta.files is None or not meta.process.same_process(procfs.identity(pid)):
            return
        lost = files_lost(pid, meta.files)
        if lost:
            named = ", ".join(f"fd {f.fd} ({f.kind} {f.link})" for f in lost)
            raise FilesLost(
                f"restoring snapshot {snap_id} would lose {len(lost)} file(s) it uses, which "
                f"this command cannot put back: {named}"
            )


class LsCommand(Command):
    name = "ls"
    help = "list snapshots (of one process, with PID)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("pid", type=int, nargs="?", help="only the snapshots of this process")

    def run(self, args: argparse.Namespace) -> int:
        infos = self.store(args).list(args.pid)
        if args.json:
            _print_json([i.to_json() for i in infos])
            return 0
        rows = [
            [
                i.id,
                str(i.pid),
                datetime.datetime.fromtimestamp(i.created).strftime("%Y-%m-%d %H:%M:%S"),
                human_size(i.mem_bytes),
                human_size(i.stored_bytes),
                i.label,
            ]
            for i in infos
        ]
        damaged = [i for i in infos if i.damage]
        if damaged:  # a column that says which, and why below the table
            for row, i in zip(rows, infos, strict=True):
                row.append("DAMAGED" if i.damage else "ok")
        _table(
            rows,
            ["ID", "PID", "CREATED", "MEMORY", "STORED", "LABEL"] + (["STATE"] if damaged else []),
        )
        _print_damage(damaged)
        return 0


def _print_damage(damaged: list[Any]) -> None:
    """Why each damaged snapshot cannot be restored, and what to do."""
    if not damaged:
        return
    print()
    for i in damaged:
        print(f"{i.id} cannot be restored: {i.damage}")
    print(
        "Run `jupyter-chkpt gc` if packs lost their index (it rebuilds them and removes nothing "
        "a snapshot uses); delete what stays damaged with `jupyter-chkpt rm ID`."
    )


class ShowCommand(Command):
    name = "show"
    help = "print a snapshot's manifest as JSON"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("snapshot", help=REFERENCE)

    def run(self, args: argparse.Namespace) -> int:
        store = self.store(args)
        _print_json(store.manifest(self.resolve(store, args.snapshot)))
        return 0


class RmCommand(Command):
    name = "rm"
    help = "delete snapshots (their pages go at the next gc)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("snapshots", nargs="+", metavar="REF", help=f"each {REFERENCE}")

    def run(self, args: argparse.Namespace) -> int:
        store = self.store(args)
        from .engine.journal import refuse_if_needed

        ids = [self.resolve(store, ref) for ref in args.snapshots]
        for snap_id in ids:  # all or none
            refuse_if_needed(store.root, snap_id)
        for snap_id in ids:
            store.delete(snap_id)
        if args.json:
            _print_json({"deleted": ids})
        else:
            for snap_id in ids:
                print(f"deleted {snap_id}")
        return 0


class PruneCommand(Command):
    name = "prune"
    help = "delete automatic snapshots beyond a count or size, and those of exited kernels"
    description = (
        "Delete snapshots by policy, oldest automatic ones first: --keep N keeps the newest N "
        "automatic snapshots of each process, --max-size SIZE deletes the oldest automatic "
        "ones while the snapshots store more than SIZE, --dead deletes every snapshot of a "
        "process that has exited (they cannot be restored in place any more). Labelled and "
        "manual snapshots go only with --dead; the newest snapshot of a running process and "
        "what a restore journal needs never go. Then `jupyter-chkpt gc` frees their space."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--keep", type=int, metavar="N", help="automatic snapshots kept per process"
        )
        parser.add_argument(
            "--max-size", metavar="SIZE", help="e.g. 2G, 500M: what the snapshots may store"
        )
        parser.add_argument("--dead", action="store_true", help="snapshots of exited processes")
        parser.add_argument("-n", "--dry-run", action="store_true", help="only say what would go")

    def run(self, args: argparse.Namespace) -> int:
        from .engine.journal import refuse_if_needed
        from .errors import SnapshotInUse
        from .store import retention

        if args.keep is None and args.max_size is None and not args.dead:
            raise BadRequest(
                "prune needs a policy",
                "Give --keep N, --max-size SIZE and/or --dead (see `jupyter-chkpt prune --help`)",
            )
        if args.keep is not None and args.keep < 0:
            raise BadRequest("--keep must be at least 0", "Give a whole number, e.g. --keep 10")
        max_bytes = None if args.max_size is None else _parse_size(args.max_size)
        store = self.store(args)
        infos = [i for i in store.list() if not i.damage]
        running = {(i.pid, i.start_time) for i in infos if _running(i.pid, i.start_time)}
        newest: dict[tuple[int, int], str] = {}
        for i in sorted(infos, key=lambda i: i.created):
            newest[(i.pid, i.start_time)] = i.id
        live = _live_snapshots()

        def needed(i: Any) -> bool:
            key = (i.pid, i.start_time)
            if key in running and (newest.get(key) == i.id or i.id in live):
                return True
            try:
                refuse_if_needed(store.root, i.id)
            except SnapshotInUse:
                return True
            return False

        doomed = retention.choose(
            infos,
            keep=args.keep,
            max_bytes=max_bytes,
            dead=(lambda i: (i.pid, i.start_time) not in running) if args.dead else None,
            protect=needed,
        )
        if not args.dry_run:
            for i in doomed:
                store.delete(i.id)
        if args.json:
            _print_json({"deleted": [i.id for i in doomed], "dry_run": args.dry_run})
            return 0
        verb = "would delete" if args.dry_run else "deleted"
        for i in doomed:
            why = "exited" if (i.pid, i.start_time) not in running else "automatic"
            print(f"{verb} {i.id}  PID {i.pid}  {human_size(i.stored_bytes)}  ({why})")
        kept = sum(i.stored_bytes for i in infos) - sum(i.stored_bytes for i in doomed)
        print(f"{len(doomed)} snapshot(s) {verb}; the rest store {human_size(kept)}")
        if max_bytes is not None and kept > max_bytes:
            print(
                f"still over {human_size(max_bytes)}: the rest are manual, labelled or needed; "
                "delete some with `jupyter-chkpt rm`"
            )
        if doomed and not args.dry_run:
            print("run `jupyter-chkpt gc` to free their space")
        return 0


def _parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in units else ""
    try:
        value = float(t[: len(t) - len(unit)] if unit else t)
    except ValueError:
        value = -1
    if value < 0:
        raise BadRequest(
            f"--max-size {text!r} is not a size", "Give a number with K, M, G or T, e.g. 2G"
        )
    return int(value * units[unit])


def _live_snapshots() -> set[str]:
    """The snapshots running kernels derive from, as their helper knows (none if no
    helper runs): undo goes to their parents, incremental snapshots build on them."""
    from .helper.client import HelperClient

    try:
        with HelperClient(start=False) as c:
            status = c.call("status", timeout=10)
    except ChkptError:  # none runs (or it cannot say): only the newest are kept
        return set()
    return {str(k["live"]) for k in status.get("kernels", []) if k.get("live")}


def _running(pid: int, start_time: int) -> bool:
    from .proc import procfs

    try:
        return bool(procfs.identity(pid).start_time == start_time)
    except ChkptError:
        return False


class GcCommand(Command):
    name = "gc"
    help = "free the space of pages no snapshot uses any more"

    def run(self, args: argparse.Namespace) -> int:
        import dataclasses

        result = self.store(args).gc()
        if args.json:
            _print_json(dataclasses.asdict(result))
        else:
            for line in result.lines():
                print(line)
        return 0


class HelperCommand(Command):
    name = "helper"
    help = "the per-user helper daemon that serves snapshots kernels: status, start, stop"
    uses_store = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=["status", "start", "stop"])

    def run(self, args: argparse.Namespace) -> int:
        from .errors import HelperUnavailable
        from .helper.client import HelperClient

        if args.action == "stop":
            try:
                with HelperClient(start=False) as c:
                    c.call("shutdown", timeout=30)
            except HelperUnavailable:
                print("no helper is running")
                return 0
            print("helper stopping (operations in progress finish first)")
            return 0
        try:
            with HelperClient(start=args.action == "start") as c:
                status = c.call("status", timeout=30)
        except HelperUnavailable as e:
            if args.action == "start":
                raise
            raise HelperUnavailable(
                e.message,
                "A helper starts on demand when a snapshots kernel needs one; "
                "`jupyter-chkpt helper start` starts one now",
            ) from None
        if args.json:
            _print_json(status)
            return 0
        store = status["store"]
        print(
            f"helper PID {status['helper_pid']}, jupyter-chkpt {status['version']}, "
            f"protocol {status['protocol']}, up {status['uptime_s']:.0f} s"
        )
        print(
            f"store {store['root']}: {store['snapshots']} snapshots, "
            f"{human_size(store['bytes_on_disk'])}; {status['held_files']} files held"
        )
        for line in store.get("cleaned_at_start", []):
            print(f"at start, the helper {line}" if line.startswith("removed") else line)
        for k in status["kernels"]:
            print(f"kernel PID {k['pid']} {k['kernel_id']}  live snapshot: {k['live'] or '-'}")
        return 0


COMMANDS: list[type[Command]] = [
    CheckCommand,
    SnapshotCommand,
    RestoreCommand,
    LsCommand,
    ShowCommand,
    RmCommand,
    PruneCommand,
    GcCommand,
    HelperCommand,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupyter-chkpt",
        description="Snapshot a running process and restore it in place.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cls in COMMANDS:
        command = cls()
        p = sub.add_parser(cls.name, help=cls.help, description=cls.description or cls.help)
        command.add_arguments(p)
        if cls.uses_store:
            p.add_argument(
                "--store",
                metavar="DIR",
                help="snapshot store directory (default: under the Jupyter data directory)",
            )
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(handler=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        try:
            return _run(args)
        finally:
            sys.stdout.flush()  # a reader that went away shows here, not at exit
    except BrokenPipeError:
        if not _stdout_gone():
            raise
        # `jupyter-chkpt ls | head`: the reader has what it wanted; end as `yes | head` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SIGPIPE


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.handler.run(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if isinstance(e, BrokenPipeError) and _stdout_gone():
            raise
        if not isinstance(e, ChkptError) and os.environ.get("JUPYTER_CHKPT_DEBUG"):
            raise
        error = as_chkpt_error(e, "run it again with JUPYTER_CHKPT_DEBUG=1 for the traceback")
        print(f"jupyter-chkpt: error: {error}", file=sys.stderr)
        if args.json:
            _print_json({"error": str(error), "type": type(error).__name__})
        return EXIT_ERROR


def _stdout_gone() -> bool:
    """Whether stdout is a pipe nobody reads any more."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
