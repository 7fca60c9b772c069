"""The CLI's store commands end to end on a real process: snapshot, ls, show, restore, rm, gc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def run(*args: str) -> Any:
    res = subprocess.run(
        [sys.executable, "-m", "jupyter_chkpt", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.timeout(180)
def test_store_commands(spawn, store_dir: Path) -> None:
    store = ["--store", str(store_dir)]
    target = spawn("py_counter.py")
    pid = str(target.pid)
    first = run("snapshot", pid, "--label", "one", *store)
    assert {"id", "pid", "bytes", "pause_s"} <= first.keys()
    assert first["pid"] == target.pid and first["bytes"] > 0 and first["pause_s"] > 0
    target.ok("mutate")
    second = run("snapshot", pid, "--label", "two", *store)
    target.ok("mutate")

    listed = run("ls", pid, *store)
    assert [s["id"] for s in listed] == [first["id"], second["id"]]
    assert [s["label"] for s in listed] == ["one", "two"]
    assert run("ls", "1", *store) == []

    manifest = run("show", first["id"][:5], *store)
    assert manifest["id"] == first["id"]
    assert manifest["meta"]["process"]["pid"] == target.pid
    assert len(manifest["meta"]["threads"]) >= 1

    restored = run("restore", pid, second["id"], *store)
    assert restored["snapshot_id"] == second["id"]
    assert target.ok("verify 2") == "counter=2"

    assert run("rm", second["id"], *store) == {"deleted": [second["id"]]}
    assert [s["id"] for s in run("ls", *store)] == [first["id"]]
    freed = run("gc", *store)
    assert freed["bytes_freed"] > 0
    run("restore", pid, first["id"], *store)
    assert target.ok("verify 1") == "counter=1"
    target.quit()


def test_check_command() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "jupyter_chkpt", "check", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(res.stdout)
    assert res.returncode == (0 if report["snapshots_possible"] else 1)
    assert {c["name"] for c in report["capabilities"]} >= {"ptrace", "/proc/PID/mem write"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_chkpt", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def fd_kinds(target: Any) -> dict[int, str]:
    return {
        int(n): link.split(":")[0]
        for n, link in (pair.split("=", 1) for pair in target.ok("fds").split())
    }


@pytest.mark.timeout(180)
def test_restore_that_would_lose_sockets_pipes_and_eventfds_is_refused(
    spawn, store_dir: Path
) -> None:
    """A one-shot CLI holds no duplicates: a restore that would lose the
    files the snapshot's memory uses is refused, naming each, unless --force."""
    store = ["--store", str(store_dir)]
    target = spawn("py_files.py", "closed")
    pid = str(target.pid)
    at_snapshot = fd_kinds(target)
    snap = run("snapshot", pid, *store)["id"]
    target.ok("mutate")  # closes a socketpair, a listener, a pipe, an eventfd and an epoll
    after = fd_kinds(target)
    gone = sorted(set(at_snapshot) - set(after))
    assert len(gone) == 7  # 3 sockets, 2 pipe ends, the eventfd, the epoll

    res = cli("restore", pid, snap, *store)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"would lose {len(gone)} file(s)" in res.stderr
    for fd in gone:
        assert f"fd {fd} (" in res.stderr
    for kind in ("socket socket:[", "pipe pipe:[", "eventfd anon_inode:[eventfd]", "epoll"):
        assert kind in res.stderr, res.stderr
    assert "--force" in res.stderr and "Nothing was changed" in res.stderr
    assert fd_kinds(target) == after, "the refused restore changed the fd table"
    target.ok("work")

    forced = run("restore", pid, snap, "--force", *store)
    assert forced["snapshot_id"] == snap
    notes = forced["files"]["notes"]
    kinds = dict(at_snapshot)
    pairs = [fd for fd in gone if kinds[fd] == "pipe"] + [3, 4]  # both ends held: made whole
    for fd in gone:  # each is back as a stand-in; what is not made whole is said so
        said = any(note.startswith(f"fd {fd} (") and "replaced by" in note for note in notes)
        assert said == (fd not in pairs), (fd, notes)
    assert sorted(forced["files"]["stand_ins"]) == gone
    assert fd_kinds(target) == at_snapshot  # the kinds the process's memory expects
    target.kill()


@pytest.mark.timeout(180)
def test_restore_refused_for_a_number_now_taken_by_another_file(spawn, store_dir: Path) -> None:
    store = ["--store", str(store_dir)]
    target = spawn("py_files.py", "reused")
    snap = run("snapshot", str(target.pid), *store)["id"]
    reused = int(target.ok("mutate").removeprefix("fd="))  # the pipe's read end is /dev/null now
    res = cli("restore", str(target.pid), snap, *store)
    assert res.returncode == 1, res.stderr
    assert "would lose 1 file(s)" in res.stderr and f"fd {reused} (pipe" in res.stderr
    target.kill()


@pytest.mark.timeout(180)
def test_restore_that_only_closes_new_files_goes_ahead(spawn, store_dir: Path) -> None:
    store = ["--store", str(store_dir)]
    target = spawn("py_files.py", "opened")
    snap = run("snapshot", str(target.pid), *store)["id"]
    target.ok("mutate")  # new sockets, pipe, eventfd, epoll: a restore closes them
    run("restore", str(target.pid), snap, *store)
    target.ok("verify")
    target.quit()


@pytest.mark.timeout(180)
def test_references_and_labels(spawn, store_dir: Path) -> None:
    """One reference syntax: exact id, -N (with a PID), exact label, unique prefix of 4+."""
    store = ["--store", str(store_dir)]
    target = spawn("py_counter.py")
    pid = str(target.pid)
    first = run("snapshot", pid, "--label", "start", *store)["id"]
    target.ok("mutate")
    second = run("snapshot", pid, *store)["id"]
    target.ok("mutate")
    assert run("restore", pid, "start", *store)["snapshot_id"] == first
    assert target.ok("verify 1") == "counter=1"
    assert run("restore", pid, "-1", *store)["snapshot_id"] == second
    assert target.ok("verify 2") == "counter=2"
    assert run("restore", pid, first[:4], *store)["snapshot_id"] == first
    assert run("show", "start", *store)["id"] == first

    for label, says in [
        ("abcd1234", "looks like a snapshot id"),
        ("-3", "looks like -N"),
        ("x" * 201, "too long"),
    ]:
        res = cli("snapshot", pid, "--label", label, *store)
        assert res.returncode == 1 and says in res.stderr and "Traceback" not in res.stderr
    for args, says in [
        (("restore", pid, ""), "no snapshot given"),
        (("restore", pid, first[:3]), "has no snapshot with id or label"),
        (("restore", pid, "-9"), "has 2 snapshot(s)"),
        (("show", "--", "-1"), "-N counts the snapshots of one process"),
        (("rm", "nothing-like-this"), "the store has no snapshot with id or label"),
    ]:
        res = cli(args[0], *store, *args[1:])
        assert res.returncode == 1 and says in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
    assert len(run("ls", *store)) == 2, "a refused command deleted something"
    target.quit()


def test_os_errors_print_a_message_and_a_remedy(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = cli("ls", "--store", str(blocker / "store"))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert str(blocker) in res.stderr and "--store" in res.stderr, res.stderr


@pytest.mark.parametrize("fmt", [(), ("--json",)])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path, fmt: tuple[str]) -> None:
    """`jupyter-chkpt ls | head`: no BrokenPipeError, the status of a SIGPIPE death."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the command writes anything
    try:
        res = subprocess.run(
            [sys.executable, "-m", "jupyter_chkpt", "ls", "--store", str(tmp_path / "s"), *fmt],
            stdout=w,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(w)
    assert res.stderr == "" and res.returncode == 128 + signal.SIGPIPE, res.stderr


@pytest.mark.parametrize("fmt", [(), ("--json",)])
def test_a_reader_that_stops_after_one_line_ends_the_command_quietly(
    tmp_path: Path, fmt: tuple[str]
) -> None:
    """`jupyter-chkpt ls | head -1` on a listing longer than the pipe holds: the reader
    takes its line and goes away mid-listing; the command ends quietly, status 141."""
    store = tmp_path / "s"
    cli("ls", "--store", str(store))  # makes the store
    for i in range(3000):  # snapshots whose manifests are gone: listed, as damaged
        (store / "snapshots" / f"{i:08x}").mkdir()
    command = [sys.executable, "-m", "jupyter_chkpt", "ls", "--store", str(store), *fmt]
    head_1 = [sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.readline())"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as writer:
        assert writer.stdout is not None and writer.stderr is not None
        with subprocess.Popen(head_1, stdin=writer.stdout, stdout=subprocess.PIPE) as reader:
            writer.stdout.close()  # as a shell does: the reader holds the only read end
            first, _ = reader.communicate(timeout=120)
        stderr = writer.stderr.read().decode()
        status = writer.wait(timeout=120)
    assert reader.returncode == 0, reader.returncode
    if fmt:
        assert first == b"[\n", first
    else:
        assert first.split()[:3] == [b"ID", b"PID", b"CREATED"], first
    assert stderr == "" and status == 128 + signal.SIGPIPE, stderr


def test_helper_status_without_a_helper_says_how_one_starts(helper_dirs) -> None:
    """It used to tell you to run `jupyter-chkpt helper status`, the command you ran."""
    res = cli("helper", "status")
    assert res.returncode == 1 and res.stdout == "", res.stdout
    assert res.stderr.startswith("jupyter-chkpt: error: no helper is running"), res.stderr
    assert "starts on demand when a snapshots kernel needs one" in res.stderr, res.stderr
    assert "`jupyter-chkpt helper start` starts one now" in res.stderr, res.stderr
    assert "helper status" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    from jupyter_chkpt.helper.paths import socket_path

    assert not socket_path().exists(), "status started a helper"


@pytest.mark.timeout(180)
def test_ptrace_denied_gives_advice_that_fits_this_machine(nonroot_user, user_dir: Path) -> None:
    """A non-dumpable process of one's own: the kernel refuses PTRACE_SEIZE. Yama is
    only mentioned as a cause where this machine has it (`check` agrees)."""
    import zdtm

    env = zdtm.user_env(nonroot_user)
    as_user: dict[str, Any] = dict(
        user=nonroot_user.pw_uid, group=nonroot_user.pw_gid, extra_groups=[], env=env
    )
    code = "import ctypes, time; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); print(1, flush=True)"
    code += "; time.sleep(300)"  # prctl(PR_SET_DUMPABLE, 0)
    store = ("--store", str(user_dir / "store"))
    target = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=user_dir, **as_user
    )
    try:
        assert target.stdout is not None and target.stdout.readline()  # non-dumpable now
        res = subprocess.run(
            [*(sys.executable, "-m", "jupyter_chkpt", "snapshot", str(target.pid)), *store],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=user_dir,
            **as_user,
        )
    finally:
        target.kill()
        target.wait()
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "refused to let us trace" in res.stderr and "non-dumpable" in res.stderr, res.stderr
    if Path("/proc/sys/kernel/yama").exists():
        assert "Yama ptrace_scope is" in res.stderr or "Yama allows" in res.stderr, res.stderr
    else:
        assert "no Yama" in res.stderr and "ptrace_scope" not in res.stderr, res.stderr


@pytest.mark.parametrize(
    ("scope", "says", "not_says"),
    [
        (None, "This machine has no Yama", "ptrace_scope"),
        ("0", "Yama allows tracing here", "administrator"),
        ("1", "only a declared tracer", "non-dumpable"),
        ("2", "only CAP_SYS_PTRACE", "non-dumpable"),
        ("3", "tracing is off until the next reboot", "non-dumpable"),
    ],
)
def test_ptrace_remedy_for_each_yama_setting(
    tmp_path: Path, scope: str | None, says: str, not_says: str
) -> None:
    from jupyter_chkpt.errors import ptrace_remedy

    path = tmp_path / "ptrace_scope"
    if scope is not None:
        path.write_text(scope + "\n")
    remedy = ptrace_remedy(str(path))
    assert says in remedy and not_says not in remedy and "jupyter-chkpt check" in remedy


@pytest.mark.timeout(120)
def test_rm_refuses_a_snapshot_a_restore_still_needs(
    spawn, store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore journaled past its point of no return whose tracer died is rolled
    forward from its snapshot by the next rescue: until then the snapshot stays."""
    from jupyter_chkpt.engine.journal import Journal
    from jupyter_chkpt.proc import procfs

    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    store = ["--store", str(store_dir)]
    target = spawn("py_counter.py")
    snap = run("snapshot", str(target.pid), *store)["id"]
    # what a helper killed at the point of no return leaves (no process has start time 1)
    j = Journal(procfs.identity(target.pid), "restore", owner_pid=os.getpid(), owner_start=1)
    j.store, j.snapshot = str(store_dir), snap
    j.claim()
    j.write("committed")
    refused = cli("rm", snap, *store)
    assert refused.returncode != 0
    assert f"snapshot {snap} is being restored into PID {target.pid}" in refused.stderr
    assert (
        "whose rescue still needs it" in refused.stderr and "Nothing was deleted" in refused.stderr
    )
    assert [s["id"] for s in run("ls", *store)] == [snap]
    j.remove()  # (the target never stopped: there is nothing to rescue)
    assert run("rm", snap, *store) == {"deleted": [snap]}
    target.ok("work")
    target.quit()


@pytest.mark.timeout(180)
def test_prune_by_count_size_and_exited_processes(spawn, store_dir: Path) -> None:
    """Automatic snapshots go oldest first, manual and labelled ones only with --dead,
    the newest snapshot of a running process never."""
    from jupyter_chkpt.engine import checkpoint
    from jupyter_chkpt.store import Store

    store = Store(store_dir)
    where = ["--store", str(store_dir)]
    live, gone = spawn("py_counter.py"), spawn("py_counter.py")
    autos = []
    for _ in range(4):
        live.ok("mutate")
        autos.append(checkpoint(live.pid, store, tags={"auto": True}).id)
    manual = checkpoint(live.pid, store, label="mine").id
    newest_auto = checkpoint(live.pid, store, tags={"auto": True}).id
    dead = [checkpoint(gone.pid, store, tags={"auto": True}).id, checkpoint(gone.pid, store).id]
    gone.quit()

    refused = cli("prune", *where)
    assert refused.returncode != 0 and "--keep N" in refused.stderr
    plan = run("prune", "--keep", "2", "--dry-run", *where)
    assert plan == {"deleted": autos[:3], "dry_run": True}  # 5 automatic ones: 3 oldest go
    assert len(run("ls", *where)) == 8
    text = cli("prune", "--keep", "2", *where)
    assert text.returncode == 0 and "3 snapshot(s) deleted" in text.stdout, text.stdout
    assert "jupyter-chkpt gc" in text.stdout
    assert run("prune", "--dead", *where)["deleted"] == dead
    left = run("prune", "--max-size", "0", *where)
    assert left["deleted"] == [autos[3]]  # the newest of a running process stays
    assert [s["id"] for s in run("ls", *where)] == [manual, newest_auto]
    bad = cli("prune", "--max-size", "lots", *where)
    assert bad.returncode != 0 and "is not a size" in bad.stderr and "2G" in bad.stderr
    live.quit()


def test_retention_policy() -> None:
    """Pure: which snapshots retention.choose picks, in which order."""
    from jupyter_chkpt.store import SnapshotInfo
    from jupyter_chkpt.store.retention import choose

    def info(i: int, pid: int = 1, auto: bool = True, label: str = "", size: int = 10) -> Any:
        return SnapshotInfo(
            id=f"{i:08x}", pid=pid, created=float(i), label=label, parent=None,
            mem_bytes=0, stored_bytes=size, npages=0, new_pages=0, stats={},
            tags={"auto": auto},
        )  # fmt: skip

    snaps = [info(1), info(2, label="kept"), info(3, auto=False), info(4), info(5), info(6, pid=2)]
    ids = lambda chosen: [int(i.id, 16) for i in chosen]  # noqa: E731
    assert ids(choose(snaps, keep=1)) == [1, 4]
    assert ids(choose(snaps, keep=1, protect=lambda i: i.id == info(4).id)) == [1]
    assert ids(choose(snaps, max_bytes=35)) == [1, 4, 5]  # 60 -> 30; never the manual ones
    assert ids(choose(snaps, max_bytes=1000)) == []
    assert ids(choose(snaps, dead=lambda i: i.pid == 2)) == [6]
    assert choose(snaps) == []
