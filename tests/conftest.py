"""Shared fixtures for the helper tests.

* ``workbook_scratch`` (session, autouse): points ``WORKBOOK_SCRATCH`` at a fresh folder for this
  test run, so clusters, tokens and the leftover registry of the run live there and nowhere else.
  (The root conftest.py sets one at configure time only when none is set; this one is fresh
  even when the caller exported WORKBOOK_SCRATCH, e.g. a folder shared with a running notebook,
  so the cleanup below can never end a cluster that is not this run's.)
* ``isolated_workbook_scratch``: a second, empty scratch folder for one test, for tests whose
  leftover checks (``find_leftovers``/``end_leftovers``) must not see the shared cluster.
* ``two_node_cluster`` (session): ONE real local Ray cluster shared by every test file that needs
  one - a head (2 CPUs, 1 logical GPU) and a worker (1 CPU, 1 logical GPU, ``node_b``). Starting a
  cluster costs ~30-40 s on a 2-core machine, so share it; tests that use it must leave it as
  they found it (disconnect with ``cluster.disconnect()``, delete their Serve apps, stop any
  extra worker they add).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from helpers.cluster import LocalCluster

_isolated_count = itertools.count(1)


def _short_tmpdir(prefix: str) -> Path:
    # Ray puts Unix sockets under <scratch>/cXXXXXXXX/r/session_<date>_<pid>/sockets/,
    # and AF_UNIX paths are limited to 107 bytes: pytest's tmp_path (/tmp/pytest-of-.../...) is
    # too long for that, so the scratch folder is a short one directly under /tmp.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture(scope="session", autouse=True)
def workbook_scratch() -> Iterator[Path]:
    """WORKBOOK_SCRATCH for the whole test run (restored and removed afterwards)."""
    previous = os.environ.get("WORKBOOK_SCRATCH")
    scratch = _short_tmpdir("wb")
    os.environ["WORKBOOK_SCRATCH"] = str(scratch)
    try:
        yield scratch
    finally:
        from helpers.processes import end_leftovers, find_leftovers

        os.environ["WORKBOOK_SCRATCH"] = str(scratch)
        # A test that crashed past its own cleanup: end what it left, by recorded ids.
        end_leftovers(find_leftovers())
        if previous is None:
            os.environ.pop("WORKBOOK_SCRATCH", None)
        else:
            os.environ["WORKBOOK_SCRATCH"] = previous
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def isolated_workbook_scratch(workbook_scratch: Path) -> Iterator[Path]:
    """An empty WORKBOOK_SCRATCH (inside the run's one) for the duration of one test."""
    previous = os.environ["WORKBOOK_SCRATCH"]
    scratch = workbook_scratch / f"i{next(_isolated_count)}"  # short: see _short_tmpdir
    scratch.mkdir()
    os.environ["WORKBOOK_SCRATCH"] = str(scratch)
    try:
        yield scratch
    finally:
        from helpers.processes import end_leftovers, find_leftovers

        end_leftovers(find_leftovers())
        os.environ["WORKBOOK_SCRATCH"] = previous


@pytest.fixture(scope="session")
def two_node_cluster(workbook_scratch: Path) -> Iterator[LocalCluster]:
    """A real 2-node local Ray cluster with logical GPUs, shared by the whole test run."""
    from helpers.cluster import start_local_cluster

    # The proxy (on the head) would send every request to a head replica when one has room;
    # the placement tests call over HTTP until the worker's replicas have answered too.
    spec = dict(
        num_cpus=2,
        num_gpus=1,
        env={"RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"},
        workers=[{"num_cpus": 1, "num_gpus": 1, "resources": {"node_b": 1}}],
    )
    cluster = start_local_cluster(**spec)  # a worker that misses Ray's 30 s window is retried
    _SHARED_CLUSTERS.append(cluster)
    try:
        yield cluster
    finally:
        _SHARED_CLUSTERS.remove(cluster)
        cluster.stop()


_SHARED_CLUSTERS: list[LocalCluster] = []


@pytest.fixture(autouse=True, scope="module")
def _leave_the_shared_cluster_without_serve(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test file, Serve must not run on ``two_node_cluster``: a test file started
    after it on the same worker would start Serve on a port of its own, which a running Serve
    ignores (its requests then go nowhere). A file that leaves Serve running errors here, by
    name, and Serve is shut down so the next file starts clean."""
    yield
    if not _SHARED_CLUSTERS:
        return
    from helpers.errors import WorkbookError
    from helpers.shared_cluster import serve_http_address

    cluster = _SHARED_CLUSTERS[0]
    try:
        host, port = serve_http_address(cluster)
    except WorkbookError:
        return  # not running: as it should be
    cluster.run_cli(["serve", "shutdown", "-y"])
    pytest.fail(
        f"{request.module.__name__} left Serve running on the shared test cluster "
        f"(HTTP on {host}:{port}); shut it down at the end of the file (serve.shutdown())."
    )
