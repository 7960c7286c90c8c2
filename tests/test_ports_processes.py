"""Ports and process sessions: fast tests, no Ray."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from helpers import processes
from helpers.errors import PortInUseError
from helpers.ports import ensure_port_free, free_port, is_port_free
from helpers.processes import is_alive
from helpers.waiting import wait_for


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def session_proc(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A shell in its own session that leaves a backgrounded grandchild behind on SIGTERM."""
    proc = processes.start_session(["sh", "-c", "sleep 300 & sleep 300"], tmp_path / "s.log")
    try:
        deadline = time.monotonic() + 10
        while len(processes.session_members(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield proc
    finally:
        processes.stop_session(proc.pid, grace_s=1)


def test_ensure_port_free_names_owner(listening_socket: socket.socket) -> None:
    port = listening_socket.getsockname()[1]
    with pytest.raises(PortInUseError) as info:
        ensure_port_free(port, purpose="test port")
    err = info.value
    assert err.port == port
    assert f"pid {os.getpid()}" in str(err)
    assert f"Port {port} (test port)" in str(err)
    listening_socket.close()
    ensure_port_free(port)  # free again once the socket is closed: no error


def test_free_port_gives_distinct_bindable_ports() -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    held = []
    try:
        for port in ports:
            assert 20000 <= port < 40000
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", port))  # raises if the port was not free
            sock.listen(1)
            held.append(sock)
        assert not is_port_free(ports[0])
    finally:
        for sock in held:
            sock.close()


def test_stop_session_stops_grandchild_and_is_idempotent(session_proc: subprocess.Popen) -> None:
    sid = session_proc.pid
    members = processes.session_members(sid)
    pids = {p.pid for p in members}
    assert sid in pids
    grandchildren = pids - {sid}
    assert grandchildren, "the backgrounded sleep should be in the session"
    assert all(os.getsid(pid) == sid for pid in pids)

    killed = processes.stop_session(sid, grace_s=1)
    # The leader exits on SIGTERM; the backgrounded sleep ignores the leader's death and
    # must be killed after the grace period.
    assert killed >= 1
    assert processes.session_members(sid) == []
    assert not any(is_alive(pid) for pid in pids)

    started = time.monotonic()
    assert processes.stop_session(sid, grace_s=1) == 0
    assert time.monotonic() - started < 1.0


_SHM_HOLDER = """
import signal, sys, time
from multiprocessing import resource_tracker, shared_memory
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it, as with a wedged engine
shm = shared_memory.SharedMemory(create=True, size=4096)
resource_tracker.unregister(shm._name, "shared_memory")  # nobody else will unlink it
print(shm.name, flush=True)
time.sleep(300)
"""


def _start_shm_holders(tmp_path: Path, count: int) -> tuple[list[subprocess.Popen], list[Path]]:
    """``count`` holders of one shared-memory file each, in their own sessions, and the files."""
    import sys

    procs = [
        processes.start_session([sys.executable, "-c", _SHM_HOLDER], tmp_path / f"{i}.log")
        for i in range(count)
    ]
    names = []
    for i in range(count):
        deadline = time.monotonic() + 20
        while not (tmp_path / f"{i}.log").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        names.append((tmp_path / f"{i}.log").read_text().split()[0])
    return procs, [Path("/dev/shm") / name for name in names]


def test_stop_sessions_kills_what_ignores_sigterm_and_removes_its_shared_memory(
    tmp_path: Path,
) -> None:
    procs, paths = _start_shm_holders(tmp_path, 2)
    assert all(path.exists() for path in paths)

    started = time.monotonic()
    killed = processes.stop_sessions([p.pid for p in procs], grace_s=1)
    assert killed >= 2  # SIGTERM was ignored: both had to be killed...
    assert time.monotonic() - started < 5  # ...after one grace period, not one each
    assert not any(processes.session_members(p.pid) for p in procs)
    assert not any(path.exists() for path in paths), "their shared memory was removed"


def test_orphan_shared_memory_is_removed_and_what_is_in_use_is_kept(tmp_path: Path) -> None:
    """As when Serve kills a vLLM engine: its holder dies by SIGKILL, outside any session
    stop, and its file stays in /dev/shm. The clean-up removes it, and keeps a file a live
    process still maps and a file older than the cut-off."""
    import signal
    from multiprocessing import resource_tracker, shared_memory

    older = shared_memory.SharedMemory(create=True, size=4096)
    resource_tracker.unregister(older._name, "shared_memory")
    older.close()  # unused from here on, but made before the cut-off
    older_path = Path("/dev/shm") / older.name
    time.sleep(0.05)
    since = time.time()
    holders, (dead, alive) = _start_shm_holders(tmp_path, 2)
    try:
        os.kill(holders[0].pid, signal.SIGKILL)  # dies without unlinking, like a killed engine
        holders[0].wait(timeout=10)
        assert dead.exists()

        removed = processes.remove_orphan_shm(since)
        assert removed == [dead]
        assert not dead.exists()
        assert alive.exists(), "a file a live process maps is kept"
        assert older_path.exists(), "a file older than the cut-off is kept"
    finally:
        for proc in holders:
            processes.stop_sessions([proc.pid], grace_s=1)
        older_path.unlink(missing_ok=True)


def test_leftovers_found_and_ended(
    isolated_workbook_scratch: Path,
    session_proc: subprocess.Popen,
    listening_socket: socket.socket,
    tmp_path: Path,
) -> None:
    port = listening_socket.getsockname()[1]
    sid = session_proc.pid
    pids = {p.pid for p in processes.session_members(sid)}
    assert processes.find_leftovers() == []

    path = processes.register("test-resource", {"sessions": [sid], "ports": [port]})
    assert path.parent == isolated_workbook_scratch / "registry"
    assert json.loads(path.read_text())["sessions"] == [sid]
    # A second live resource, registered as owned by this process.
    other = processes.start_session(["sleep", "300"], tmp_path / "other.log")
    try:
        processes.register("mine", {"owner_pid": os.getpid(), "sessions": [other.pid]})

        found = processes.find_leftovers()
        assert [x.resource for x in found] == ["mine", "test-resource"]
        assert [x.resource for x in processes.find_leftovers(exclude_owner=os.getpid())] == [
            "test-resource"
        ]
        assert [x.resource for x in processes.find_leftovers(owner=os.getpid())] == ["mine"]
        leftover = found[1]
        assert sid in leftover.pids
        assert set(leftover.pids) == pids
        assert leftover.ports == (port,)
        assert "test-resource" in str(leftover)

        processes.end_leftovers([leftover])  # ends only what it is given
        assert not any(is_alive(pid) for pid in pids)
        assert not path.exists()
        assert is_alive(other.pid)
        listening_socket.close()
        assert [x.resource for x in processes.find_leftovers()] == ["mine"]
    finally:
        processes.stop_session(other.pid, grace_s=2)
    assert processes.find_leftovers() == []


def test_dead_registration_is_forgotten(isolated_workbook_scratch: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    path = processes.register("gone", {"sessions": [proc.pid], "ports": []})
    assert processes.find_leftovers() == []
    assert not path.exists()
    processes.register("gone2", {"sessions": [], "ports": []})
    processes.unregister("gone2")
    assert not (processes.registry_dir() / "gone2.json").exists()


# --- hardening: records with start times, orphans swept, shared memory, scratch, tokens -------


def test_a_reused_pid_is_never_taken_for_a_recorded_session(
    isolated_workbook_scratch: Path, tmp_path: Path
) -> None:
    """A record names a session whose leader's pid now belongs to another process (simulated
    by a wrong start time): leftover checks ignore it and end_leftovers never signals it."""
    proc = processes.start_session(["sleep", "300"], tmp_path / "s.log")
    try:
        path = processes.register("stale", {"sessions": [proc.pid], "ports": []})
        record = json.loads(path.read_text())
        assert record["sessions_started"][str(proc.pid)] == pytest.approx(
            psutil.Process(proc.pid).create_time()
        )
        assert [x.resource for x in processes.find_leftovers()] == ["stale"]

        record["sessions_started"][str(proc.pid)] -= 3600.0  # "started an hour earlier"
        path.write_text(json.dumps(record))
        assert processes.same_session(proc.pid, record["sessions_started"][str(proc.pid)]) is False
        processes.end_leftovers([processes.Leftover("stale", (proc.pid,), ())])
        assert is_alive(proc.pid), "a process that is not the recorded one was signalled"
        assert processes.find_leftovers() == []  # not ours: forgotten, not reported
    finally:
        processes.stop_session(proc.pid, grace_s=1)


def test_sweep_ends_what_a_dead_owner_left_and_nothing_else(
    isolated_workbook_scratch: Path, tmp_path: Path
) -> None:
    """A kernel killed by SIGKILL never stops its cluster: its record's owner is gone. The sweep
    ends that session; a live owner's record, and a session whose pid was reused, stay."""
    owner = subprocess.Popen(["sleep", "300"])
    orphan = processes.start_session(["sh", "-c", "sleep 300 & sleep 300"], tmp_path / "o.log")
    kept = processes.start_session(["sleep", "300"], tmp_path / "k.log")
    reused = processes.start_session(["sleep", "300"], tmp_path / "r.log")
    try:
        processes.register("killed-kernel", {"owner_pid": owner.pid, "sessions": [orphan.pid]})
        processes.register("live-kernel", {"owner_pid": os.getpid(), "sessions": [kept.pid]})
        stale = processes.register("old", {"owner_pid": owner.pid, "sessions": [reused.pid]})
        record = json.loads(stale.read_text())
        record["sessions_started"][str(reused.pid)] -= 3600.0
        stale.write_text(json.dumps(record))
        assert processes.sweep_orphans() == []  # every owner still alive

        owner.kill()
        owner.wait(timeout=10)

        def shell_and_sleeps() -> list[int] | None:
            pids = [p.pid for p in processes.session_members(orphan.pid)]
            return pids if len(pids) >= 2 else None

        # the shell and its sleeps (on a busy machine the shell may not have forked yet)
        members = wait_for(shell_and_sleeps, timeout_s=30, what="the session's second process")
        assert processes.sweep_orphans() == ["killed-kernel", "old"]
        assert not any(is_alive(pid) for pid in members)
        assert is_alive(reused.pid), "the reused pid's process was signalled"
        assert is_alive(kept.pid)
        assert sorted(p.stem for p in processes.registry_dir().glob("*.json")) == ["live-kernel"]
    finally:
        for proc in (orphan, kept, reused):
            processes.stop_session(proc.pid, grace_s=1)
        owner.kill()


_SHM_MAPPER = """
import mmap, os, sys, time
for name in sys.argv[1:]:
    fd = os.open("/dev/shm/" + name, os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, 4096)
    globals()[name] = mmap.mmap(fd, 4096)
print("ready", flush=True)
time.sleep(300)
"""


def test_stopping_a_session_removes_only_multiprocessing_files_it_made(tmp_path: Path) -> None:
    """A data set a task memory-mapped from /dev/shm survives its cluster's stop; the
    multiprocessing files the session's processes left are removed."""
    import sys
    import uuid

    keep, drop = f"dataset-{uuid.uuid4().hex[:8]}", f"psm_{uuid.uuid4().hex[:8]}"
    log = tmp_path / "m.log"
    proc = processes.start_session([sys.executable, "-c", _SHM_MAPPER, keep, drop], log)
    try:
        deadline = time.monotonic() + 20
        while "ready" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (Path("/dev/shm") / keep).exists() and (Path("/dev/shm") / drop).exists()
        processes.stop_sessions([proc.pid], grace_s=2)
        assert not (Path("/dev/shm") / drop).exists()
        assert (Path("/dev/shm") / keep).exists(), (
            "a file that is not multiprocessing's was removed"
        )
    finally:
        processes.stop_sessions([proc.pid], grace_s=1)
        (Path("/dev/shm") / keep).unlink(missing_ok=True)
        (Path("/dev/shm") / drop).unlink(missing_ok=True)


@pytest.mark.skipif(os.getuid() != 0, reason="making a file of another user needs root")
def test_orphan_shared_memory_of_another_user_is_kept() -> None:
    import uuid

    path = Path("/dev/shm") / f"psm_{uuid.uuid4().hex[:8]}"
    since = time.time() - 1
    path.write_bytes(b"\0" * 64)
    try:
        os.chown(path, 54321, 54321)  # another user's (or another PID namespace's) engine
        assert path not in processes.remove_orphan_shm(since)
        assert path.exists()
    finally:
        path.unlink(missing_ok=True)


def test_default_scratch_is_private_to_the_user(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import stat
    import tempfile

    from helpers import paths

    monkeypatch.delenv("WORKBOOK_SCRATCH", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = paths.scratch_root()
    assert root == tmp_path / f"rsw-{os.getuid()}"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    root.chmod(0o777)  # our own default folder, too open: tightened
    assert stat.S_IMODE(paths.scratch_root().stat().st_mode) == 0o700


def test_a_scratch_folder_others_can_write_or_own_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from helpers import paths
    from helpers.errors import WorkbookError

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("WORKBOOK_SCRATCH", str(shared))
    with pytest.raises(WorkbookError, match="can be written by other users") as err:
        paths.scratch_root()
    assert "chmod go-w" in str(err.value)

    link = tmp_path / "link"
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    link.symlink_to(private)
    monkeypatch.setenv("WORKBOOK_SCRATCH", str(link))
    with pytest.raises(WorkbookError, match="is a link"):
        paths.scratch_root()
    if os.getuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 54321, 54321)
        monkeypatch.setenv("WORKBOOK_SCRATCH", str(theirs))
        with pytest.raises(WorkbookError, match="not a folder of yours"):
            paths.scratch_root()


def test_a_token_is_never_written_through_a_planted_link(tmp_path: Path) -> None:
    from helpers.auth import create_token_file
    from helpers.errors import AuthTokenError

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "cluster"
    folder.mkdir()
    (folder / "auth_token").symlink_to(victim)
    with pytest.raises(AuthTokenError, match="already exists"):
        create_token_file(folder)
    assert victim.read_text() == "precious"


def test_a_token_given_to_connect_is_private_and_removed_on_stop(
    isolated_workbook_scratch: Path, listening_socket: socket.socket
) -> None:
    import stat

    from helpers.cluster import connect_to_cluster

    port = listening_socket.getsockname()[1]
    cluster = connect_to_cluster(f"127.0.0.1:{port}", token="s3cret")
    path = cluster.token_path
    assert path.read_text() == "s3cret" and path.parent == isolated_workbook_scratch
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cluster.stop()
    assert not path.exists()


def test_sigterm_becomes_a_keyboard_interrupt_once() -> None:
    import signal

    before = signal.getsignal(signal.SIGTERM)  # Ray's own, once a test has connected a driver
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with processes.interrupt_on_termination():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except KeyboardInterrupt:
                os.kill(os.getpid(), signal.SIGTERM)  # a second one, during the clean-up
                time.sleep(0.2)  # ...is ignored
                raise
    assert signal.getsignal(signal.SIGTERM) == before
