"""helpers.cluster against real local Ray clusters.

Most tests use the run's shared ``two_node_cluster`` (tests/conftest.py). Two tests start
something of their own: one extra worker node on the shared cluster (stop_node), and one small
head-only cluster in an isolated scratch folder (stop, the context manager, leftovers).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from helpers.cluster import LocalCluster, connect_to_cluster, start_local_cluster
from helpers.errors import AuthTokenError, ClusterNotRunningError, PortInUseError, WorkbookError
from helpers.ports import free_port, is_port_free
from helpers.processes import find_leftovers, is_alive, registry_dir, session_members

pytestmark = pytest.mark.cluster


@pytest.fixture
def connected(two_node_cluster: LocalCluster) -> Iterator[LocalCluster]:
    two_node_cluster.connect()
    try:
        yield two_node_cluster
    finally:
        two_node_cluster.disconnect()


def test_nodes_table_has_both_nodes(two_node_cluster: LocalCluster) -> None:
    table = two_node_cluster.nodes_table()
    assert len(table) == 2
    head = table[table["head"]].iloc[0]
    worker = table[~table["head"]].iloc[0]
    assert (head["node"], head["CPU"], head["GPU"], head["custom"]) == ("head", 2.0, 1.0, "")
    assert (worker["node"], worker["CPU"], worker["GPU"]) == ("worker-1", 1.0, 1.0)
    assert worker["custom"] == "node_b=1"
    totals = two_node_cluster.total_resources()
    assert (totals["CPU"], totals["GPU"], totals["node_b"]) == (3.0, 2.0, 1.0)


def test_ray_status_cli_with_token(two_node_cluster: LocalCluster) -> None:
    expected = {f"node_{node['node_id']}" for node in two_node_cluster.nodes()}
    assert len(expected) == 2
    # The autoscaler's view (what `ray status` prints) lags node registration by a few seconds.
    deadline = time.monotonic() + 60
    while True:
        result = two_node_cluster.run_cli(["ray", "status"])
        assert result.returncode == 0
        listed = {word for word in result.stdout.split() if word.startswith("node_")}
        if expected <= listed or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert expected <= listed, result.stdout


def test_cli_without_token_is_auth_error(two_node_cluster: LocalCluster) -> None:
    argv = ["ray", "status", "--address", two_node_cluster.address]
    # Control: the same command with the cluster's token works.
    assert two_node_cluster.run_cli(argv).returncode == 0

    no_token = {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN_PATH": "/nonexistent/auth_token"}
    with pytest.raises(AuthTokenError) as info:
        two_node_cluster.run_cli(argv, env=no_token, timeout_s=120)
    assert "did not present the cluster's token" in str(info.value)
    assert "InvalidAuthToken" in info.value.details


def test_run_cli_failure_is_workbook_error(two_node_cluster: LocalCluster) -> None:
    with pytest.raises(WorkbookError) as info:
        two_node_cluster.run_cli(["ray", "job", "status", "no-such-job-id"])
    assert not isinstance(info.value, AuthTokenError)
    assert "failed with exit code" in str(info.value)


def test_connect_then_remote_task(connected: LocalCluster) -> None:
    import ray

    assert ray.is_initialized()
    # connect() twice is fine (idempotent) and returns a context for the same cluster.
    ctx = connected.connect()
    worker_id = next(n["node_id"] for n in connected.nodes() if not n["is_head"])

    @ray.remote(num_cpus=0.1, resources={"node_b": 0.1})
    def where() -> str:
        return ray.get_runtime_context().get_node_id()

    assert ray.get(where.remote(), timeout=60) == worker_id
    assert ctx.gcs_address.rsplit(":", 1)[1] == str(connected.port)


def test_a_scratch_folder_too_deep_for_rays_sockets_is_refused_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers.errors import ClusterStartError

    deep = tmp_path / ("x" * 40)  # pytest's own tmp_path is already long
    deep.mkdir()
    monkeypatch.setenv("WORKBOOK_SCRATCH", str(deep))
    with pytest.raises(ClusterStartError) as info:
        start_local_cluster(num_cpus=1)
    assert "too long a path for Ray's Unix sockets" in str(info.value)
    assert "WORKBOOK_SCRATCH" in str(info.value)
    assert list(deep.iterdir()) == []  # nothing was created, nothing started


def test_bad_port_raises_quickly_without_starting(isolated_workbook_scratch: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    port = sock.getsockname()[1]
    before = {p.pid for p in psutil.process_iter()}
    try:
        started = time.monotonic()
        with pytest.raises(PortInUseError) as info:
            start_local_cluster(port=port, num_cpus=1)
        assert time.monotonic() - started < 10
        assert info.value.port == port
        assert "pid" in info.value.owner
    finally:
        sock.close()
    # Nothing was started: no cluster folder, no registry entry, no new ray process.
    assert not [p for p in isolated_workbook_scratch.iterdir() if p.name != "registry"]
    assert not list(registry_dir().glob("*.json"))
    new = {p.pid for p in psutil.process_iter()} - before
    for pid in new:
        try:
            cmd = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        assert str(isolated_workbook_scratch) not in cmd


def test_connect_to_closed_port_fails_fast() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(ClusterNotRunningError) as info:
        connect_to_cluster(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 6
    assert f"127.0.0.1:{port}" in str(info.value)


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1:", ":6379", "ray://host:port"])
def test_connect_to_nonsense_address(address: str) -> None:
    with pytest.raises(ClusterNotRunningError) as info:
        connect_to_cluster(address)
    assert "is not a cluster address" in str(info.value)


def test_stop_node_removes_worker(two_node_cluster: LocalCluster) -> None:
    node = two_node_cluster.add_worker(num_cpus=1, name="extra")
    members = [p.pid for p in session_members(node.pid)]
    try:
        names = [n["name"] for n in two_node_cluster.nodes()]
        assert sorted(names) == ["extra", "head", "worker-1"]
        assert len(members) > 1  # ray start and its raylet at least
    finally:
        two_node_cluster.stop_node("extra")
    assert not any(is_alive(pid) for pid in members)
    assert "extra" not in [n.name for n in two_node_cluster.nodes_started]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = [n["name"] for n in two_node_cluster.nodes()]
        if "extra" not in names:
            break
        time.sleep(1)
    assert sorted(names) == ["head", "worker-1"]
    with pytest.raises(WorkbookError):
        two_node_cluster.stop_node("extra")


def test_context_manager_stops_on_error_and_stop_is_idempotent(
    isolated_workbook_scratch: Path,
) -> None:
    recorded: list[int] = []
    with pytest.raises(RuntimeError, match="body failed"):
        with start_local_cluster(num_cpus=1) as cluster:
            assert cluster.running
            sessions = [n.pid for n in cluster.nodes_started]
            recorded = [p.pid for sid in sessions for p in session_members(sid)]
            assert len(recorded) > 3  # ray start, gcs, raylet, dashboard, ...
            found = find_leftovers()  # a running cluster is what a leftover check must see
            assert [x.resource for x in found] == [cluster.id]
            assert set(recorded) <= set(found[0].pids)
            raise RuntimeError("body failed")

    assert not cluster.running
    assert not [pid for pid in recorded if is_alive(pid)]
    assert all(session_members(sid) == [] for sid in sessions)
    assert find_leftovers() == []
    assert not cluster.dir.exists()
    assert is_port_free(cluster.port) and is_port_free(cluster.dashboard_port)

    started = time.monotonic()
    cluster.stop()  # second stop: a no-op
    assert time.monotonic() - started < 1
    assert find_leftovers() == []
    assert not list(registry_dir().glob("*.json"))
    with pytest.raises(ClusterNotRunningError):
        cluster.add_worker(num_cpus=1)


def test_an_interrupted_stop_is_finished_by_the_next(
    isolated_workbook_scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second Ctrl-C while a cluster stops (or a kernel shutting down) cuts the stop short;
    calling stop() again must finish it, not return at once as if all were done."""
    import helpers.cluster as cluster_module

    cluster = start_local_cluster(num_cpus=1, include_dashboard=False)
    sessions = [n.pid for n in cluster.nodes_started]
    real_stop_sessions = cluster_module.stop_sessions

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("a second Ctrl-C")

    monkeypatch.setattr(cluster_module, "stop_sessions", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cluster.stop()
    assert any(session_members(sid) for sid in sessions), "nothing was stopped yet"
    monkeypatch.setattr(cluster_module, "stop_sessions", real_stop_sessions)
    cluster.stop()
    assert all(session_members(sid) == [] for sid in sessions)
    assert find_leftovers() == [] and not cluster.dir.exists() and not cluster.running


def test_two_clusters_on_one_machine_list_only_their_own_metrics_targets(
    two_node_cluster: LocalCluster,
) -> None:
    """Each cluster's Prometheus targets (the dashboard's service discovery) are its own
    processes: the dashboard's and the autoscaler monitor's metrics ports are per cluster, not
    Ray's fixed 44227 and 44217, which only the first cluster on a machine can bind (a second
    cluster's targets were the first's dashboard and monitor), and every target answers."""
    from helpers.metrics import prometheus_targets, scrape_cluster

    other = start_local_cluster(num_cpus=1)
    try:
        mine, theirs = prometheus_targets(two_node_cluster), prometheus_targets(other)
        assert mine and theirs
        assert not set(mine) & set(theirs), (mine, theirs)
        assert scrape_cluster(other, prefixes=("ray_",)).attrs["unreachable"] == []
    finally:
        other.stop()
