"""Process control by id: start a command in its own session, stop exactly that session.

Ray's own ``ray stop`` ends *every* Ray process on the machine, including a colleague's or a
second notebook's cluster. The workbook never uses it. Instead each ``ray start --block`` runs
in a new session (``setsid``), all the processes it spawns (GCS, raylet, dashboard, workers,
replicas, vLLM engines) inherit that session id, and stopping means signalling the members of
that one session.

Every session the workbook starts is recorded in a small registry under the scratch folder, so
a later check (the runner, the tests) can prove that nothing was left behind and end what was.

:class:`ManagedProcess` puts the pieces together for one command (``serve run``, the echo
server, Locust, vLLM's server, the runner's papermill): started in its own session, recorded,
stopped by id, also at interpreter exit.

Usage::

    from helpers.processes import ManagedProcess
    with ManagedProcess(["sleep", "60"], kind="demo") as proc:
        print(proc.pid, proc.tail(5))          # stopped, with its session, on leaving the block
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

from helpers.errors import WorkbookError
from helpers.paths import scratch_root

__all__ = [
    "ManagedProcess",
    "ray_executable",
    "stop_at_exit",
    "forget_at_exit",
    "start_session",
    "is_alive",
    "session_members",
    "stop_session",
    "stop_sessions",
    "remove_orphan_shm",
    "register",
    "unregister",
    "registry_dir",
    "Leftover",
    "find_leftovers",
    "end_leftovers",
    "sweep_orphans",
    "interrupt_on_termination",
]


def start_session(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new session, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child from here on
    try:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        log.close()


def is_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def session_members(sid: int) -> list[psutil.Process]:
    """Every live process whose session id is ``sid``."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def stop_session(sid: int, *, grace_s: float = 15.0) -> int:
    """Stop the session led by ``sid``: SIGTERM its leader, then SIGKILL what remains.

    Returns how many processes had to be killed after the grace period. Idempotent: stopping
    a session that is already gone returns 0.
    """
    return stop_sessions([sid], grace_s=grace_s, term_all=False)


def stop_sessions(sids: Iterable[int], *, grace_s: float = 15.0, term_all: bool = True) -> int:
    """Stop several sessions at once: SIGTERM, wait at most ``grace_s``, SIGKILL what remains.

    ``term_all`` signals every member of each session, not only its leader: a throw-away Ray
    cluster then ends in about a second instead of waiting, process after process, for a
    graceful shutdown nobody needs. Shared-memory files (``/dev/shm``) that the members had
    mapped and that outlive them (vLLM's message queues do when their owner is killed) are
    removed. Returns how many processes had to be killed.
    """
    sids = list(sids)
    members = [p for sid in sids for p in session_members(sid)]
    shm_files = _mapped_shm_files(members)
    for proc in members if term_all else []:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    for sid in sids:
        try:
            # A leader that has exited (a `ray start` without --block) leaves its session
            # running; its pid may since belong to an unrelated process: signal it only while
            # it still leads this session.
            if os.getsid(sid) == sid:
                os.kill(sid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    stragglers = members
    while time.monotonic() < deadline:
        stragglers = [p for sid in sids for p in session_members(sid)]
        if not stragglers:
            break
        time.sleep(0.2)
    # Python's resource tracker ignores SIGTERM and, once every process it serves has gone,
    # frees what they leaked (semaphores, shared memory) and exits: kill it only if it lingers.
    trackers = [p for p in stragglers if _is_resource_tracker(p)]
    others = [p for p in stragglers if p not in trackers]
    for batch in (others, trackers):
        if batch is trackers:
            psutil.wait_procs(batch, timeout=3)
        for proc in batch:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(batch, timeout=5)
    for sid in sids:
        _reap(sid)
    # Only multiprocessing's files, ours, and unused now: a data set a task memory-mapped
    # from /dev/shm, or a file another user's process maps too, stays.
    for path in _removable_shm(shm_files):
        path.unlink(missing_ok=True)
    return len(stragglers)


def _is_resource_tracker(proc: psutil.Process) -> bool:
    try:
        return "multiprocessing.resource_tracker" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def _mapped_shm_files(procs: Iterable[psutil.Process]) -> set[Path]:
    """Files under /dev/shm that any of ``procs`` has mapped (from /proc/PID/maps)."""
    found: set[Path] = set()
    for proc in procs:
        try:
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
            path = fields[5].strip() if len(fields) == 6 else ""
            if path.startswith("/dev/shm/") and not path.endswith("(deleted)"):
                found.add(Path(path))
    return found


#: Names that Python's multiprocessing gives its shared memory and its named semaphores under
#: /dev/shm. vLLM's engine core and workers talk through them.
ORPHAN_SHM_PREFIXES = ("psm_", "sem.mp-")


def _shm_in_use() -> set[Path]:
    """Files under /dev/shm that any live process on this machine has mapped or open."""
    in_use = _mapped_shm_files(psutil.process_iter())
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:  # gone, or not ours to read
            continue
        in_use.update(Path(link) for link in links if link.startswith("/dev/shm/"))
    return in_use


def _removable_shm(paths: Iterable[Path]) -> list[Path]:
    """Of ``paths``, the shared-memory files the workbook may remove: multiprocessing's names
    (:data:`ORPHAN_SHM_PREFIXES`), owned by this user, and mapped or open by no live process."""
    candidates = []
    for path in paths:
        with contextlib.suppress(OSError):  # gone meanwhile
            if path.name.startswith(ORPHAN_SHM_PREFIXES) and path.lstat().st_uid == os.getuid():
                candidates.append(path)
    in_use = _shm_in_use() if candidates else set()
    return [path for path in candidates if path not in in_use]


def remove_orphan_shm(since: float) -> list[Path]:
    """Remove shared-memory files made since ``since`` (a ``time.time()``) that nobody uses.

    A vLLM engine that Serve ends (``serve.delete``, a failed replica, a redeploy) is killed
    before it unlinks its message queues and semaphores: 150-250 MB of RAM per engine stay in
    /dev/shm until the machine reboots. Only files with multiprocessing's names
    (:data:`ORPHAN_SHM_PREFIXES`), changed after ``since``, and neither mapped nor open by any
    live process are removed, and only this user's (a process in another PID namespace, whose
    mappings this machine's /proc does not show, belongs to someone else); a file another
    program still uses is never touched. Returns what was removed.
    """
    fresh = []
    with contextlib.suppress(OSError):  # no /dev/shm (not Linux)
        for path in Path("/dev/shm").iterdir():
            with contextlib.suppress(OSError):  # gone meanwhile
                if path.lstat().st_mtime >= since:
                    fresh.append(path)
    removed = []
    for path in _removable_shm(fresh):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _reap(pid: int) -> None:
    """Collect the exit status of our own child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --- registry -----------------------------------------------------------------------------


def registry_dir() -> Path:
    """Folder holding one JSON file per live resource the workbook started."""
    path = scratch_root() / "registry"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _started(pid: int) -> float | None:
    """When process ``pid`` started (psutil's create time), None when it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def register(name: str, record: dict) -> Path:
    """Record a started resource (its session ids, ports, folders) under ``name``.

    The record keeps, beside each process id (``owner_pid``, the ``sessions``), when that
    process started: a pid the system has since given to another process is then never
    mistaken for ours (:func:`same_session`, :func:`sweep_orphans`).
    """
    record = dict(record)
    if record.get("owner_pid") is not None:
        record.setdefault("owner_started", _started(record["owner_pid"]))
    record.setdefault(
        "sessions_started", {str(sid): _started(sid) for sid in record.get("sessions", [])}
    )
    path = registry_dir() / f"{name}.json"
    path.write_text(json.dumps(record, indent=2))
    return path


def same_session(sid: int, started: float | None) -> bool:
    """Whether session ``sid`` still is the one recorded as started at ``started``.

    While its leader lives, the leader's start time must match (a reused pid has another).
    A leader that has exited leaves its session id reserved as long as any member runs (Linux
    gives no new process a pid still in use as a session id), so live members are the
    recorded session's own. ``started=None`` (a record from before start times) trusts the id.
    """
    leader = _started(sid)
    try:
        leads = leader is not None and os.getsid(sid) == sid
    except OSError:  # gone meanwhile
        leads = False
    if leads and leader is not None and started is not None:
        return abs(leader - started) < 0.05
    return bool(session_members(sid))


def _our_sessions(record: dict) -> list[int]:
    """The recorded sessions that are still the ones the record's owner started."""
    started = record.get("sessions_started") or {}
    return [sid for sid in record.get("sessions", []) if same_session(sid, started.get(str(sid)))]


def unregister(name: str) -> None:
    """Forget a resource once it has been stopped."""
    (registry_dir() / f"{name}.json").unlink(missing_ok=True)


@dataclass(frozen=True)
class Leftover:
    """A process or port that a stopped notebook or test left behind."""

    resource: str
    pids: tuple[int, ...]
    ports: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.resource}: pids {list(self.pids)} ports {list(self.ports)}"


def _listening_ports() -> set[int]:
    try:
        return {
            c.laddr.port
            for c in psutil.net_connections(kind="inet")
            if c.laddr and c.status == psutil.CONN_LISTEN
        }
    except psutil.Error:  # pragma: no cover
        return set()


def find_leftovers(*, owner: int | None = None, exclude_owner: int | None = None) -> list[Leftover]:
    """Registered resources that still have live processes or bound ports.

    ``owner``: only resources registered by that process id (a notebook checking what it
    started itself: ``find_leftovers(owner=os.getpid())``). ``exclude_owner``: ignore those
    registered by that process id (a test session's own fixtures, when checking what a
    notebook kernel left).
    """
    found = []
    listening = _listening_ports()
    for path in sorted(registry_dir().glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if exclude_owner is not None and record.get("owner_pid") == exclude_owner:
            continue
        if owner is not None and record.get("owner_pid") != owner:
            continue
        pids = tuple(p.pid for sid in _our_sessions(record) for p in session_members(sid))
        ports = tuple(p for p in record.get("ports", []) if p in listening)
        if pids or ports:
            found.append(Leftover(path.stem, pids, ports))
        else:
            path.unlink(missing_ok=True)  # stopped without saying so (e.g. killed): forget it
    return found


def end_leftovers(leftovers: Iterable[Leftover]) -> None:
    """Stop the sessions of the given leftovers by their recorded ids (never by name)."""
    for leftover in leftovers:
        path = registry_dir() / f"{leftover.resource}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for sid in _our_sessions(record):
            stop_session(sid, grace_s=5)
        path.unlink(missing_ok=True)


def _owner_gone(record: dict) -> bool:
    """Whether the process that registered ``record`` has ended (or its pid is another's)."""
    owner = record.get("owner_pid")
    if owner is None:
        return False  # nobody to ask: leave it to find_leftovers and its caller
    started = _started(owner)
    if started is None or not is_alive(owner):
        return True
    recorded = record.get("owner_started")
    return recorded is not None and abs(started - recorded) >= 0.05


def sweep_orphans() -> list[str]:
    """End what a dead owner left running: a kernel killed by SIGKILL or the OOM killer never
    stopped its clusters. For each record whose owner process has gone, stop the sessions it
    names that still are the same processes (:func:`same_session`) and forget the record.
    Called when a cluster starts and when the runner starts. Returns the records swept."""
    swept = []
    for path in sorted(registry_dir().glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not _owner_gone(record):
            continue
        sids = _our_sessions(record)
        if sids:
            stop_sessions(sids, grace_s=5)
        path.unlink(missing_ok=True)
        swept.append(path.stem)
    return swept


@contextlib.contextmanager
def interrupt_on_termination(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)):
    """Within the block, SIGTERM and SIGHUP (a CI cancel, ``timeout``, a closed terminal, a
    service manager) raise ``KeyboardInterrupt`` as Ctrl-C does, so the clean-up that Ctrl-C
    runs (stopping a notebook's session, its clusters) runs for them too. A second signal
    during that clean-up is ignored. Outside the main thread nothing changes (Python delivers
    signals only there). Yields the list of signals received: code that catches broad
    exceptions (a kernel client turning the interrupt into its own error) can still see it."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: object) -> None:
        if received:
            return  # already cleaning up
        received.append(signum)
        raise KeyboardInterrupt(
            f"{signal.Signals(signum).name} received: stopping what was started"
        )

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- one command, managed ------------------------------------------------------------------


def ray_executable(name: str = "ray") -> str:
    """Path of a CLI (``ray``, ``serve``, ``locust``) installed beside this Python, else from
    PATH: the kernel's own environment, even when the venv was never activated."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise WorkbookError(
            f"The {name!r} command was not found.",
            "run the notebook with the project's kernel (make lab) or activate .venv.",
        )
    return found


#: What to stop when the interpreter exits, in the order it was started.
_AT_EXIT: dict[int, Callable[[], Any]] = {}
#: Seconds each process gets to stop at exit at most (killed after): an exit should not hang.
AT_EXIT_STOP_S = 20.0


def stop_at_exit(resource: object, stop: Callable[[], Any]) -> None:
    """Call ``stop`` when the interpreter exits, unless :func:`forget_at_exit` is called first.

    The reference is strong on purpose: a process whose handle a notebook dropped still ends
    with the notebook. (SIGTERM and SIGKILL run no exit handler: the registry's owner pid lets
    :func:`sweep_orphans` end what such an owner left, and the runner turns SIGTERM into
    Ctrl-C with :func:`interrupt_on_termination`.)
    """
    _AT_EXIT[id(resource)] = stop


def forget_at_exit(resource: object) -> None:
    """``resource`` was stopped: nothing to do for it at exit."""
    _AT_EXIT.pop(id(resource), None)


@atexit.register
def _stop_all_at_exit() -> None:
    """Stop what still runs, newest first: a ``serve run`` before the cluster it runs on."""
    for stop in reversed(list(_AT_EXIT.values())):
        with contextlib.suppress(Exception):  # exiting anyway: stop the rest
            stop()
    _AT_EXIT.clear()


_Managed = TypeVar("_Managed", bound="ManagedProcess")


class ManagedProcess:
    """``argv`` in a process session of its own: recorded in the registry, stopped by id.

    :meth:`start` runs it (output appended to ``log_path``) and records its session, with this
    process as owner, so leak checks see it and :func:`sweep_orphans` ends it should this
    process die without stopping it. :meth:`stop` ends exactly that session, never anything
    found by name; it also runs at interpreter exit. Whether the command is *ready* (a port
    answers, a log line appears) is for the class that uses it to say.

    ``stop_signal`` is what the leader is sent first (SIGINT for a CLI that shuts down
    cleanly on Ctrl-C), ``stop_timeout_s`` how long the session then has before what remains
    is killed. ``ports`` are recorded for the leak checks.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        kind: str,
        name: str | None = None,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ports: Sequence[int] = (),
        stop_signal: int = signal.SIGTERM,
        stop_timeout_s: float = 15.0,
    ) -> None:
        self.argv = list(argv)
        self.kind = kind
        self.name = name or f"{kind}-{uuid.uuid4().hex[:8]}"
        self.log_path = log_path or scratch_root() / f"{self.name}.log"
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.ports = list(ports)
        self.stop_signal = stop_signal
        self.stop_timeout_s = stop_timeout_s
        #: The leader's ``Popen`` once started; kept after :meth:`stop` for its exit code.
        self.popen: subprocess.Popen | None = None
        self._record: Path | None = None  # where start() registered it (scratch may change)
        self._stopped = False

    @property
    def pid(self) -> int | None:
        """The leader's pid, which is the session's id; None before start and once stopped."""
        return None if self.popen is None or self._stopped else self.popen.pid

    @property
    def running(self) -> bool:
        """Whether the leader still runs (members of its session may outlive it)."""
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """The leader's exit code (negative: the signal that ended it); None while it runs."""
        return None if self.popen is None else self.popen.poll()

    def start(self: _Managed) -> _Managed:
        """Start the command and record its session; returns at once."""
        if self.popen is not None and not self._stopped:
            raise WorkbookError(
                f"{self.name} is already running (pid {self.popen.pid}).",
                "stop it first, or make a new one.",
            )
        self.popen = start_session(self.argv, self.log_path, env=self.env, cwd=self.cwd)
        self._stopped = False
        stop_at_exit(self, lambda: self.stop(min(self.stop_timeout_s, AT_EXIT_STOP_S)))
        try:
            self._record = register(
                self.name,
                {
                    "kind": self.kind,
                    "owner_pid": os.getpid(),
                    "command": shlex.join(self.argv),
                    "sessions": [self.popen.pid],
                    "ports": self.ports,
                },
            )
        except BaseException:
            self.stop()  # unrecorded, it could outlive us unseen
            raise
        return self

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the leader alone, if it runs (Locust ends its run on SIGTERM)."""
        if self.popen is not None:
            self.popen.send_signal(sig)  # a no-op once the leader has been reaped

    def wait_exit(self, timeout_s: float | None = None) -> int | None:
        """Wait for the leader to exit; its exit code, or None if it still runs after
        ``timeout_s``. The session is not stopped: call :meth:`stop` for that."""
        if self.popen is None:
            raise WorkbookError(f"{self.name} was not started.", "call .start() first.")
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout_s: float | None = None, *, sig: int | None = None) -> int | None:
        """End the session: ``sig`` (default ``stop_signal``) to the leader, then, after
        ``timeout_s`` (default ``stop_timeout_s``) in all, SIGKILL to every member still there.

        Idempotent, and resumable if interrupted. Returns the leader's exit code (None if it
        was never started).
        """
        if self.popen is None:
            return None
        if not self._stopped:
            limit = self.stop_timeout_s if timeout_s is None else timeout_s
            deadline = time.monotonic() + limit
            self.send_signal(self.stop_signal if sig is None else sig)
            # The leader is reaped here, not by stop_session (psutil would reap it there),
            # so that its own exit code is kept.
            if self.wait_exit(limit) is None:
                self.popen.kill()
                self.wait_exit(5)
            stop_session(self.popen.pid, grace_s=max(0.0, deadline - time.monotonic()))
            if self._record is not None:
                self._record.unlink(missing_ok=True)
            forget_at_exit(self)
            self._stopped = True  # only now: every step above may be run again
        return self.popen.returncode

    def log_text(self) -> str:
        """Everything in its log so far ("" before anything was written)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of its log: what an error message shows."""
        return "\n".join(self.log_text().strip().splitlines()[-lines:])

    def __enter__(self: _Managed) -> _Managed:
        return self.start() if self.popen is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = (
            "not started"
            if self.popen is None
            else "running"
            if self.running
            else "stopped"
            if self._stopped
            else f"exited ({self.returncode})"
        )
        pid = f" pid {self.popen.pid}" if self.popen is not None else ""
        return f"<{type(self).__name__} {self.name}{pid} {state}>"
