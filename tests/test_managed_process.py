"""ManagedProcess against real processes (sh, sleep, small Python scripts): no Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import processes
from helpers.errors import WorkbookError
from helpers.processes import ManagedProcess, is_alive


def _until(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _member_pids(sid: int) -> set[int]:
    return {p.pid for p in processes.session_members(sid)}


def test_start_registers_tails_and_stop_ends_the_whole_session(
    isolated_workbook_scratch: Path,
) -> None:
    # The shell dies on SIGTERM; the two sleeps are left behind unless the session is ended.
    proc = ManagedProcess(
        ["sh", "-c", "for i in 1 2 3; do echo line $i; done; sleep 300 & sleep 300"],
        kind="test-shell",
        ports=[1],
    )
    assert proc.pid is None and not proc.running and proc.stop() is None  # nothing to stop
    proc.start()
    sid = proc.pid
    assert sid is not None and proc.running
    _until(lambda: len(_member_pids(sid)) == 3 and "line 3" in proc.log_text())
    members = _member_pids(sid)

    record = json.loads((processes.registry_dir() / f"{proc.name}.json").read_text())
    assert (record["kind"], record["owner_pid"], record["sessions"], record["ports"]) == (
        "test-shell",
        os.getpid(),
        [sid],
        [1],
    )
    assert "sleep 300 &" in record["command"]
    assert [x.resource for x in processes.find_leftovers(owner=os.getpid())] == [proc.name]
    assert proc.tail(2) == "line 2\nline 3"
    assert proc.log_path.parent == isolated_workbook_scratch

    started = time.monotonic()
    assert proc.stop(timeout_s=2) == -signal.SIGTERM
    assert time.monotonic() - started < 8
    assert not any(is_alive(pid) for pid in members), "the whole session ended"
    assert proc.pid is None and not proc.running
    assert processes.find_leftovers() == []
    assert not (processes.registry_dir() / f"{proc.name}.json").exists()

    started = time.monotonic()
    assert proc.stop() == -signal.SIGTERM  # twice is fine, and quick
    assert time.monotonic() - started < 0.5


_IGNORES_SIGTERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a wedged engine would
print("ready", flush=True)
time.sleep(300)
"""


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout(
    isolated_workbook_scratch: Path,
) -> None:
    proc = ManagedProcess([sys.executable, "-c", _IGNORES_SIGTERM], kind="test-stubborn").start()
    _until(lambda: "ready" in proc.log_text())
    pid = proc.pid
    assert pid is not None

    started = time.monotonic()
    assert proc.stop(timeout_s=1) == -signal.SIGKILL
    assert 1 <= time.monotonic() - started < 8
    assert not is_alive(pid) and processes.session_members(pid) == []
    assert processes.find_leftovers() == []


def test_exit_code_context_manager_and_a_second_start(isolated_workbook_scratch: Path) -> None:
    with ManagedProcess(
        [sys.executable, "-c", "import sys; print('bye'); sys.exit(3)"], kind="test-exit"
    ) as proc:
        assert proc.wait_exit(30) == 3
        assert proc.returncode == 3 and not proc.running
        with pytest.raises(WorkbookError, match="already running"):
            proc.start()  # exited, but not stopped: its session may still hold members
    assert proc.stop() == 3 and proc.tail() == "bye"
    assert processes.find_leftovers() == []
    with pytest.raises(WorkbookError, match="not started"):
        ManagedProcess(["true"], kind="test-never").wait_exit(1)


_STARTS_A_SLEEP = """
import sys, time
from helpers.processes import ManagedProcess
proc = ManagedProcess(["sleep", "300"], kind="test-child").start()
print(proc.pid, proc.name, flush=True)
if sys.argv[1] == "stay":
    time.sleep(300)
"""


def _owner(mode: str) -> tuple[subprocess.Popen, int, str]:
    """A Python process that starts a ManagedProcess and never stops it; its pid and name."""
    owner = subprocess.Popen(
        [sys.executable, "-c", _STARTS_A_SLEEP, mode],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    assert owner.stdout is not None
    pid, name = owner.stdout.readline().split()
    return owner, int(pid), name


def test_ended_at_exit_and_after_its_owner_is_killed(isolated_workbook_scratch: Path) -> None:
    owner, sleep_pid, _ = _owner("exit")  # returns without stop(): the exit handler stops it
    assert owner.wait(timeout=60) == 0
    assert not is_alive(sleep_pid)
    assert processes.find_leftovers() == []

    # SIGTERM runs no exit handler: the record, owned by a process now gone, is what ends it.
    owner, sleep_pid, name = _owner("stay")
    owner.send_signal(signal.SIGTERM)
    assert owner.wait(timeout=30) == -signal.SIGTERM
    assert is_alive(sleep_pid)
    assert processes.sweep_orphans() == [name]
    _until(lambda: not is_alive(sleep_pid), timeout_s=10)
    assert processes.find_leftovers() == []
