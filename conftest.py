"""Test-session plumbing shared by the unit tests and the nbval notebook runs.

* Every process the session starts (notebook kernels included) registers its clusters under
  one short scratch folder of its own (``WORKBOOK_SCRATCH``; one per pytest-xdist worker), so
  the leak checks below look only at what this test run (this worker) started.
* After the last cell of each notebook under nbval, nothing the notebook started may still run
  or hold a port: if something does, it is ended (by process id) and the notebook fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from helpers.processes import interrupt_on_termination

_SCRATCH_CREATED: list[str] = []
_UNTIL_UNCONFIGURE = contextlib.ExitStack()  # what pytest_configure starts for the run


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist every worker gets a scratch folder of its own: a worker's leak check
    # must never see (and end) what a notebook of another worker is running right now.
    if "WORKBOOK_SCRATCH" not in os.environ or os.environ.get("PYTEST_XDIST_WORKER"):
        path = tempfile.mkdtemp(prefix="rswt")  # short: see LocalCluster
        os.environ["WORKBOOK_SCRATCH"] = path
        _SCRATCH_CREATED.append(path)
    # A TERM or HUP (a CI cancel, `timeout`, `kill`) ends the run as Ctrl-C does: fixtures
    # finalize, so the clusters they started are stopped (Python's default for TERM exits at
    # once and runs nothing; a background job of a non-interactive shell ignores SIGINT).
    _UNTIL_UNCONFIGURE.enter_context(interrupt_on_termination())


def pytest_unconfigure(config: pytest.Config) -> None:
    _UNTIL_UNCONFIGURE.close()
    for path in _SCRATCH_CREATED:
        shutil.rmtree(path, ignore_errors=True)


#: pytest-timeout's limit for one notebook cell under nbval (scripts/test.sh gives nbval 900 s).
NOTEBOOK_CELL_BACKSTOP_S = 1800


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every notebook cell under nbval is an `alone` test: scripts/test.sh runs those after the
    # unit tests, one at a time (the lessons' measured claims need the machine to themselves),
    # except the notebooks WORKBOOK_BESIDE names (stems, space-separated: the CI profile's
    # shares_machine lessons), whose cells are `beside` tests, run beside the unit tests.
    beside = set(os.environ.get("WORKBOOK_BESIDE", "").split())
    for item in items:
        notebook = _notebook_of(item)
        if notebook:
            stem = Path(notebook).stem
            item.add_marker(pytest.mark.beside if stem in beside else pytest.mark.alone)
            # a cell has nbval's own --nbval-cell-timeout; this is the backstop of a cell whose
            # kernel hangs (the unit tests' --timeout in scripts/test.sh is shorter)
            item.add_marker(pytest.mark.timeout(NOTEBOOK_CELL_BACKSTOP_S))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _longest_files_first(items)


#: Each test file's and notebook's seconds in the last measured run (scripts/time_table.py
#: --save writes it; a file not in it counts as 0 s, so a new file runs last).
DURATIONS = Path(__file__).parent / "tests" / "durations.json"


def _longest_files_first(items: list[pytest.Item]) -> None:
    """Order the files longest first, each file's items kept together and in order. With
    ``--dist loadfile --no-loadscope-reorder`` (scripts/test.sh) each xdist worker then takes
    the longest file left whenever it is free, so the two workers end close together; xdist's
    own order (the files with most items first) could start a long file last."""
    try:
        seconds = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return
    items.sort(key=lambda item: -float(seconds.get(Path(str(item.path)).stem, 0.0)))


def _notebook_of(item: pytest.Item | None) -> str | None:
    if item is None:
        return None
    path = str(getattr(item, "path", ""))
    return path if path.endswith(".ipynb") else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """With ``WORKBOOK_ITEM_TIMES`` set (scripts/test.sh sets it), one JSON line per test item:
    when it ran, in which process and with which scratch folder, so that a sampler of the
    machine's processes can tell which test or notebook each process's CPU time belongs to (a
    cluster's processes name the scratch folder in their command lines)."""
    started = time.time()
    yield
    path = os.environ.get("WORKBOOK_ITEM_TIMES")
    if path:
        record = {
            "file": Path(str(item.path)).stem,
            "item": item.nodeid,
            "pid": os.getpid(),
            "worker": os.environ.get("PYTEST_XDIST_WORKER", ""),
            "scratch": os.environ.get("WORKBOOK_SCRATCH", ""),
            "start": round(started, 2),
            "end": round(time.time(), 2),
        }
        with open(path, "a") as handle:  # one short line per write: appends do not interleave
            handle.write(json.dumps(record) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    yield  # nbval stops the notebook's kernel here when this was its last cell
    notebook = _notebook_of(item)
    if notebook is None or _notebook_of(nextitem) == notebook:
        return
    from helpers.processes import end_leftovers, find_leftovers

    leftovers = find_leftovers(exclude_owner=os.getpid())  # not this session's own fixtures
    if leftovers:
        end_leftovers(leftovers)
        raise AssertionError(
            f"{os.path.basename(notebook)} left processes or ports behind (now ended): "
            + "; ".join(map(str, leftovers))
        )
