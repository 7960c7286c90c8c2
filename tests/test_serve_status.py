"""helpers.serve_status against real Serve on the shared 2-node cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from helpers.cluster import LocalCluster
from helpers.errors import ServeDeployError, ServeTimeoutError
from helpers.ports import free_port
from helpers.serve_status import app_statuses, status_table, wait_until_deleted, wait_until_running

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def serve_cluster(two_node_cluster: LocalCluster) -> Iterator[tuple[LocalCluster, int]]:
    """Serve started on the shared cluster (HTTP on a free port); shut down afterwards."""
    from ray import serve

    two_node_cluster.connect()
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield two_node_cluster, port
    finally:
        try:
            serve.shutdown()
        finally:
            two_node_cluster.disconnect()


def _run_without_waiting(app, name: str, route_prefix: str) -> None:
    """serve.run, except it returns once the app is submitted (serve.run would raise or hang
    on an app that cannot start, before the helper under test gets to look at it)."""
    from ray import serve

    serve.run_many(
        [serve.RunTarget(target=app, name=name, route_prefix=route_prefix)],
        wait_for_applications_running=False,
    )


def test_running_app_details_and_status_table(serve_cluster: tuple[LocalCluster, int]) -> None:
    from ray import serve

    cluster, port = serve_cluster

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    class Ok:
        def __call__(self, request) -> str:
            return "ok from serve"

    serve.run(Ok.bind(), name="ok_app", route_prefix="/ok")
    try:
        details = wait_until_running("ok_app", cluster=cluster, timeout_s=120)
        assert details["status"] == "RUNNING"
        assert details["route_prefix"] == "/ok"
        assert "Ok" in details["deployments"]
        assert app_statuses(cluster)["ok_app"] == "RUNNING"

        table = status_table(cluster)
        rows = table[table["application"] == "ok_app"]
        assert len(rows) == 1
        row = rows.iloc[0]
        assert (row["deployment"], row["replica_state"], row["app_status"]) == (
            "Ok",
            "RUNNING",
            "RUNNING",
        )
        assert row["route_prefix"] == "/ok"
        assert row["pid"] and row["node_id"]

        reply = requests.get(f"http://127.0.0.1:{port}/ok", timeout=30)
        assert reply.status_code == 200 and reply.text == "ok from serve"
    finally:
        serve.delete("ok_app")
    wait_until_deleted("ok_app", cluster=cluster, timeout_s=60)
    assert "ok_app" not in app_statuses(cluster)


def test_failing_constructor_is_deploy_error(serve_cluster: tuple[LocalCluster, int]) -> None:
    from ray import serve

    cluster, _ = serve_cluster

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    class Broken:
        def __init__(self) -> None:
            raise ValueError("broken on purpose")

        def __call__(self, request) -> str:  # pragma: no cover - never constructed
            return "unreachable"

    _run_without_waiting(Broken.bind(), "broken_app", "/broken")
    try:
        with pytest.raises(ServeDeployError) as info:
            wait_until_running("broken_app", cluster=cluster, timeout_s=120)
        err = info.value
        assert err.app == "broken_app"
        assert err.status == "DEPLOY_FAILED"
        assert "broken on purpose" in str(err)
        assert "ValueError" in str(err)
    finally:
        serve.delete("broken_app")
    assert "broken_app" not in app_statuses(cluster)


def test_unplaceable_app_times_out_with_gpu_demand(
    serve_cluster: tuple[LocalCluster, int],
) -> None:
    from ray import serve

    cluster, _ = serve_cluster

    # A short graceful shutdown: deleting a never-placed replica otherwise waits the
    # default 20 s.
    @serve.deployment(
        ray_actor_options={"num_cpus": 0.1, "num_gpus": 8}, graceful_shutdown_timeout_s=1
    )
    class Greedy:
        def __call__(self, request) -> str:  # pragma: no cover - never placed
            return "unreachable"

    _run_without_waiting(Greedy.bind(), "greedy_app", "/greedy")
    try:
        with pytest.raises(ServeTimeoutError) as info:
            wait_until_running("greedy_app", cluster=cluster, timeout_s=15)
        err = info.value
        assert err.app == "greedy_app"
        assert err.last_status == "DEPLOYING"
        assert any("GPU" in demand for demand in err.pending_demands), err.pending_demands
        assert "GPU" in str(err)
        assert "resources no node has" in str(err)
        with pytest.raises(
            ServeTimeoutError, match="'greedy_app' was not deleted after 1 s"
        ) as gone:
            wait_until_deleted("greedy_app", cluster=cluster, timeout_s=1)  # nobody deleted it
        assert gone.value.last_status == "DEPLOYING" and "serve deploy" in str(gone.value)
    finally:
        serve.delete("greedy_app")
    assert "greedy_app" not in app_statuses(cluster)


def test_a_status_read_sends_the_token_itself_and_leaves_the_environment(
    serve_cluster: tuple[LocalCluster, int],
) -> None:
    """Reading Serve's status presents the cluster's token in the request's header: it works
    in a process whose environment names no token (Ray's cached view refreshed to match), and
    it leaves that environment as it was (a poll used to write the token into it each time)."""
    import os

    from helpers.auth import activate_in_process, restore_in_process

    cluster, _ = serve_cluster
    previous = activate_in_process({})  # no RAY_AUTH_* here, and Ray's cache says so
    try:
        before = dict(os.environ)
        assert isinstance(app_statuses(cluster), dict)  # a 401 would raise ClusterNotRunningError
        assert dict(os.environ) == before
    finally:
        restore_in_process(previous)
