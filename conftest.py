"""Test-session plumbing shared by the unit tests and the nbval notebook runs.

* Every process the session starts (notebook kernels included) registers its clusters under
  one short scratch folder of its own (``WORKBOOK_SCRATCH``; one per pytest-xdist worker), so
  the leak checks below look only at what this test run (this worker) started.
* After the last cell of each notebook under nbval, nothing the notebook started may still run
  or hold a port: if something does, it is ended (by process id) and the notebook fails.
* The files run longest first (``_LONGEST_FIRST``), so that with two pytest-xdist workers
  (``--dist loadfile --no-loadscope-reorder``, scripts/test.sh) neither is left with a long
  notebook after the other has finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_SCRATCH_CREATED: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist every worker gets a scratch folder of its own: a worker's leak check
    # must never see (and end) what a notebook of another worker is running right now.
    if "WORKBOOK_SCRATCH" not in os.environ or os.environ.get("PYTEST_XDIST_WORKER"):
        path = tempfile.mkdtemp(prefix="rswt")  # short: see LocalCluster
        os.environ["WORKBOOK_SCRATCH"] = path
        _SCRATCH_CREATED.append(path)


def pytest_unconfigure(config: pytest.Config) -> None:
    for path in _SCRATCH_CREATED:
        shutil.rmtree(path, ignore_errors=True)


#: Files in the order a run hands them out: a notebook or test file takes minutes, and a
#: worker that picks one up last would finish alone. Longest first (seconds on a 2-core
#: machine, one at a time: 04 ~480 with its engines, the labs' classroom ~300, 07 ~170,
#: 12/08/10/05 ~150, 03 ~110, 11 ~90, 06 ~80, 02 ~75), then every other file in its usual
#: order, then the lessons of a minute or less. Within a file the order never changes.
_LONGEST_FIRST = (
    "04_llm_serving", "test_labs", "07_multi_app_routing", "12_streaming_sessions",
    "08_resources_and_placement", "10_troubleshooting", "05_autoscaling", "03_launch_and_manage",
    "11_fault_tolerance", "06_batching", "02_serve_fundamentals", "test_llm_serving",
    "test_streaming_service",
)
_SHORTEST_LAST = ("01_ray_cluster_setup", "09_observability", "00_environment_check")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        stem = Path(str(item.path)).stem
        if stem in _LONGEST_FIRST:
            return _LONGEST_FIRST.index(stem)
        if stem in _SHORTEST_LAST:
            return len(_LONGEST_FIRST) + 1 + _SHORTEST_LAST.index(stem)
        return len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: a file's items keep their order


def _notebook_of(item: pytest.Item | None) -> str | None:
    if item is None:
        return None
    path = str(getattr(item, "path", ""))
    return path if path.endswith(".ipynb") else None


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
