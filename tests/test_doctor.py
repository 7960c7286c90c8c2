"""helpers.doctor against real, injected faults (no mocks of Ray).

Lesson 10's faults that the diagnosis can see from outside, each injected for real: no
cluster, a client without (or with a wrong) token, a config typo and a wrong ``import_path``
(checked before deploying, and deployed), Serve's port held by another process, a failing
constructor, a replica asking for resources no node has, requests queueing at
``max_ongoing_requests`` (read from the metrics), and a replica killed by Ray's memory
monitor. Not here: the ``408`` timeout (nothing is broken; the lesson asserts the status
code) and the LLM whose KV cache is too small (a vLLM engine takes a minute or more to
fail; lesson 10b's section 3 does it, in CI too; ``_app_failure`` reads the engine's root
cause with ``helpers.llm.engine_root_cause`` and keeps it whole).

The shared two-node cluster hosts the faults that leave it usable afterwards (each test
deletes what it deployed; Serve is deployed and shut down through the dashboard, so this
process never connects to a cluster as a driver); the memory monitor's kill needs a cluster of
its own, with a low ``RAY_memory_usage_threshold`` on one worker node. Findings are
cluster-wide and other test files share the cluster, so each test looks for the findings
about *its* application.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from helpers.cluster import ExistingCluster, LocalCluster
from helpers.doctor import Diagnosis, Finding, diagnose, main, monitor_memory
from helpers.ports import free_port
from helpers.serve_cli import deploy_config
from helpers.serve_status import app_statuses, wait_until_deleted, wait_until_running

pytestmark = pytest.mark.cluster

#: Ray gives a node's agent processes 30 s to come up; on a busy 2-core machine that is
#: sometimes too short and the raylet exits ("Timed out waiting for file ...agent_port...").
PATIENT_AGENTS = {"RAY_agent_register_timeout_ms": "120000"}


@pytest.fixture(scope="session", autouse=True)
def patient_agents() -> Iterator[None]:
    """Nodes started from here on wait up to 2 minutes for their agents: session-scoped and
    autouse, so it is set before the shared cluster starts if this module starts it."""
    previous = os.environ.get("RAY_agent_register_timeout_ms")
    os.environ.update(PATIENT_AGENTS)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RAY_agent_register_timeout_ms", None)
        else:
            os.environ["RAY_agent_register_timeout_ms"] = previous


def _about(report: Diagnosis, kind: str, text: str) -> list[Finding]:
    """Findings of ``kind`` whose text mentions ``text`` (an application's name, a port)."""
    return [f for f in report.of_kind(kind) if text in f"{f.what}\n{f.details}"]


def _wait(check: Any, timeout_s: float, what: str, poll_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"{what} within {timeout_s:.0f} s")


def _app(app_name: str, import_path: str, **deployment: Any) -> dict[str, Any]:
    """One application entry of a Serve config, with at most one deployment's options."""
    entry: dict[str, Any] = {
        "name": app_name,
        "route_prefix": f"/{app_name}",
        "import_path": import_path,
    }
    if deployment:
        entry["deployments"] = [deployment]
    return entry


def _deploy(cluster: LocalCluster, port: int, *apps: dict[str, Any]) -> None:
    """``serve deploy`` of exactly ``apps`` (through the dashboard, as the CLI does: this
    process never connects to the cluster as a driver, so two clusters cannot mix)."""
    deploy_config(
        cluster, {"http_options": {"host": "127.0.0.1", "port": port}, "applications": list(apps)}
    )


def _delete_all(cluster: LocalCluster, port: int, *names: str) -> None:
    _deploy(cluster, port)
    for name in names:
        wait_until_deleted(name, cluster=cluster, timeout_s=90)


def _shutdown_serve(cluster: LocalCluster) -> None:
    """``serve shutdown``, through the dashboard."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from helpers.auth import activate_in_process

    activate_in_process(cluster.env)
    ServeSubmissionClient(cluster.dashboard_url).delete_applications()


@pytest.fixture(scope="module")
def serve_on_shared(two_node_cluster: LocalCluster) -> Iterator[tuple[LocalCluster, int]]:
    """(cluster, HTTP port) for Serve on the shared cluster; Serve is shut down afterwards."""
    try:
        yield two_node_cluster, free_port()
    finally:
        _shutdown_serve(two_node_cluster)


def test_a_finding_wraps_long_evidence_and_never_cuts_it() -> None:
    """vLLM's KV-cache error names its fix at the end of a ~400-character line."""
    engine = (
        "engine: ValueError: To serve at least one request with the model's max seq len "
        "(1024), (0.01 GiB KV cache is needed, which is larger than the available KV cache "
        "memory (0.0 GiB). Based on the available memory, the estimated maximum model "
        "length is 128. Try increasing `gpu_memory_utilization` (which also controls CPU "
        "memory on the CPU backend) or decreasing `max_model_len` when initializing the "
        "engine."
    )
    text = str(
        Finding(
            "error", "app-failed", "Application 'llm' is DEPLOY_FAILED.", "cause", "fix", engine
        )
    )
    assert " ".join(text.split()).endswith(" ".join(engine.split()))  # every word, in order
    assert max(len(line) for line in text.splitlines()) <= 100


# -- from outside: no cluster, no token, a bad config, a busy port --------------------------


def test_no_cluster_is_one_finding_and_fast() -> None:
    nowhere = ExistingCluster(f"127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}", None)
    report = diagnose(nowhere, show=False)
    assert report.kinds == {"no-cluster"}
    assert not report.ok and report.seconds < 10
    assert "start a cluster" in report.findings[0].fix
    assert (
        main(["--address", nowhere.address, "--dashboard-url", nowhere.dashboard_url, "--json"])
        == 1
    )


def test_client_without_token_or_with_a_wrong_one(
    two_node_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = two_node_cluster
    no_token = diagnose(ExistingCluster(cluster.address, cluster.dashboard_url, None), show=False)
    assert no_token.kinds == {"auth-missing"}, no_token
    assert "RAY_AUTH_TOKEN_PATH" in no_token.findings[0].fix

    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 64)
    rejected = diagnose(ExistingCluster(cluster.address, cluster.dashboard_url, wrong), show=False)
    assert rejected.kinds == {"auth-rejected"}, rejected


def test_diagnosis_leaves_this_process_auth_settings_alone(
    two_node_cluster: LocalCluster, tmp_path: Path
) -> None:
    """The checks switch the process's Ray auth variables to the target's token; a notebook's
    driver must get its own back afterwards."""
    keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")
    before = {k: os.environ.get(k) for k in keys}
    copy = tmp_path / "token_copy"
    copy.write_text(two_node_cluster.token_path.read_text())
    report = diagnose(
        ExistingCluster(two_node_cluster.address, two_node_cluster.dashboard_url, copy),
        metrics=False,
        show=False,
    )
    assert "nodes" in report.checks  # past the auth check: the target's token was used
    assert {k: os.environ.get(k) for k in keys} == before


def test_healthy_shared_cluster_has_no_error(two_node_cluster: LocalCluster) -> None:
    report = diagnose(two_node_cluster, show=False)
    assert report.ok, report
    assert not report.of_kind("check-failed"), report  # every check could run
    assert {"cluster reachable", "authentication", "applications"} <= set(report.checks)
    assert "auth-disabled" not in report.kinds and "dashboard-exposed" not in report.kinds


def test_config_typo_and_wrong_import_path(two_node_cluster: LocalCluster) -> None:
    typo = {
        "applications": [
            {
                "name": "t_doc_typo",
                "route_prefix": "/t",
                "import_pth": "helpers.apps.broken:slow_app",
            }
        ]
    }
    report = diagnose(two_node_cluster, config=typo, metrics=False, show=False)
    assert _about(report, "config-invalid", "import_path"), report

    wrong = {"applications": [_app("t_doc_import", "helpers.apps.brokn:slow_app")]}
    report = diagnose(two_node_cluster, config=wrong, metrics=False, show=False)
    assert _about(report, "import-path", "helpers.apps.brokn"), report
    assert "config-invalid" not in report.kinds

    good = {"applications": [_app("t_doc_good", "helpers.apps.broken:slow_app")]}
    report = diagnose(two_node_cluster, config=good, metrics=False, show=False)
    assert not {"config-invalid", "import-path"} & report.kinds, report


def test_port_held_by_another_process(two_node_cluster: LocalCluster) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        report = diagnose(two_node_cluster, http_port=port, metrics=False, show=False)
    found = _about(report, "port-conflict", str(port))
    assert found and "pid" in found[0].what, report
    after = diagnose(two_node_cluster, http_port=port, metrics=False, show=False)
    assert not _about(after, "port-conflict", str(port))  # the port is free again


def test_a_node_that_just_stopped_does_not_break_the_metrics_check(
    two_node_cluster: LocalCluster,
) -> None:
    """The dashboard lists a stopped node's metrics port for a few seconds more: the scrape
    leaves it out (and names it) instead of failing, and fails only when nothing answers."""
    from helpers.errors import WorkbookError
    from helpers.metrics import prometheus_targets, scrape_cluster

    gone = f"127.0.0.1:{free_port()}"  # nothing listens there: a node that has just stopped
    samples = scrape_cluster(
        two_node_cluster, prefixes=("ray_",), targets=[gone, *prometheus_targets(two_node_cluster)]
    )
    assert samples.attrs["unreachable"] == [gone]
    assert not samples.empty and gone not in set(samples["target"])
    with pytest.raises(WorkbookError, match="Could not scrape"):
        scrape_cluster(two_node_cluster, targets=[gone])


# -- deployed faults on the shared cluster ---------------------------------------------------


def test_failing_constructor_and_wrong_import_path_deployed(
    serve_on_shared: tuple[LocalCluster, int],
) -> None:
    cluster, port = serve_on_shared
    names = ("t_doc_ctor", "t_doc_badimport")
    _deploy(
        cluster,
        port,
        _app(names[0], "helpers.apps.broken:failing_app"),
        _app(names[1], "helpers.apps.broken_not_here:app"),
    )
    try:
        _wait(
            lambda: all(app_statuses(cluster).get(n) == "DEPLOY_FAILED" for n in names),
            120,
            "both applications DEPLOY_FAILED",
        )
        report = diagnose(cluster, metrics=False, show=False)
        ctor = _about(report, "app-failed", names[0])
        assert ctor, report
        assert "FileNotFoundError" in ctor[0].details and "weights" in ctor[0].details
        assert "ray logs" in ctor[0].details  # where the full traceback is
        imp = _about(report, "app-failed", names[1])
        assert imp and "import" in imp[0].cause.lower(), report
        assert not report.ok
    finally:
        _delete_all(cluster, port, *names)


def test_replica_asking_for_what_no_node_has(serve_on_shared: tuple[LocalCluster, int]) -> None:
    cluster, port = serve_on_shared
    name = "t_doc_greedy"
    _deploy(
        cluster,
        port,
        _app(
            name,
            "helpers.apps.broken:slow_app",
            name="SlowEcho",
            ray_actor_options={"num_cpus": 0.1, "num_gpus": 4},
        ),
    )
    try:
        report = _wait(
            lambda: (lambda r: r if r.of_kind("infeasible-demand") else None)(
                diagnose(cluster, metrics=False, show=False)
            ),
            60,
            "an infeasible demand",
        )
        found = report.of_kind("infeasible-demand")[0]
        assert "'GPU': 4.0" in found.details and "largest per node" in found.cause, found
        assert "pending-demand" not in report.kinds  # it does not merely wait its turn
        # after 10 s of DEPLOYING, the application itself is reported as waiting
        waiting = _wait(
            lambda: _about(diagnose(cluster, metrics=False, show=False), "app-waiting", name),
            40,
            "app-waiting",
        )
        assert "DEPLOYING" in waiting[0].what
    finally:
        _delete_all(cluster, port, name)
    # the autoscaler's view of demands lags a few seconds behind the deletion
    _wait(
        lambda: not diagnose(cluster, metrics=False, show=False).of_kind("infeasible-demand"),
        30,
        "the demand gone",
    )


def test_requests_queueing_at_max_ongoing_requests(
    serve_on_shared: tuple[LocalCluster, int],
) -> None:
    cluster, port = serve_on_shared
    name = "t_doc_queue"
    _deploy(
        cluster,
        port,
        _app(
            name,
            "helpers.apps.broken:slow_app",
            name="SlowEcho",
            max_ongoing_requests=1,
            num_replicas=1,
        ),
    )
    url = f"http://127.0.0.1:{port}/{name}"
    try:
        wait_until_running(name, cluster=cluster, timeout_s=90)
        quiet = diagnose(cluster, show=False)
        assert not _about(quiet, "backpressure", name)  # idle: nothing queues

        def send() -> None:
            try:
                requests.post(url, json={"seconds": 20}, timeout=60)
            except requests.RequestException:
                pass  # the app is deleted under it at the end

        for _ in range(5):
            threading.Thread(target=send, daemon=True).start()
        # Serve's routers report the queue length to the metrics agent every few seconds.
        found = _wait(
            lambda: _about(diagnose(cluster, show=False), "backpressure", name),
            45,
            "a backpressure finding",
            poll_s=2,
        )
        assert "max_ongoing_requests=1 x 1 replica" in found[0].details, found
    finally:
        _delete_all(cluster, port, name)


# The memory monitor's kill and its diagnosis ("oom-killed", naming the replica and
# RAY_memory_usage_threshold) are asserted by lesson 10b under nbval, on a node of its own.


def _machine(tmp_path: Path, *, cgroup: dict[str, str]) -> tuple[Path, Path]:
    """A /proc/meminfo and a /sys/fs/cgroup of files, as a machine would have them."""
    proc, sys_cgroup = tmp_path / "proc", tmp_path / "cgroup"
    proc.mkdir()
    (proc / "meminfo").write_text(
        "MemTotal:       8000000 kB\nMemFree:        6000000 kB\n"
        "MemAvailable:   7000000 kB\nBuffers:          10000 kB\n"
        "Cached:          900000 kB\nSwapTotal:            0 kB\n"
    )
    for name, text in cgroup.items():
        (sys_cgroup / name).parent.mkdir(parents=True, exist_ok=True)
        (sys_cgroup / name).write_text(text)
    return proc, sys_cgroup


V1_STAT = (
    "cache 5\ntotal_cache 300000000\ntotal_rss 100000000\ntotal_inactive_file 200000000\n"
    "total_active_file 50000000\n"
)


@pytest.mark.parametrize(
    ("cgroup", "used", "total"),
    [
        ({}, (8000000 - 7000000) * 1024, 8000000 * 1024),  # no memory cgroup: /proc/meminfo
        # A cgroup v1 with no limit (the kernel's "unlimited"): the raylet ignores its usage,
        # while the dashboard shows it (usage minus file cache: 150 MB here, not 1 GB).
        (
            {
                "memory/memory.limit_in_bytes": "9223372036854771712\n",
                "memory/memory.usage_in_bytes": "400000000\n",
                "memory/memory.stat": V1_STAT,
            },
            (8000000 - 7000000) * 1024,
            8000000 * 1024,
        ),
        (
            {
                "memory/memory.limit_in_bytes": "2000000000\n",  # a binding v1 limit: the cgroup's view
                "memory/memory.usage_in_bytes": "400000000\n",
                "memory/memory.stat": V1_STAT,
            },
            400000000 - 200000000 - 50000000,
            2000000000,
        ),
        (
            {
                "memory.max": "max\n",
                "memory.current": "400000000\n",  # v2, no limit
                "memory.stat": "anon 1\ninactive_file 200000000\nactive_file 50000000\n",
            },
            (8000000 - 7000000) * 1024,
            8000000 * 1024,
        ),
        (
            {
                "memory.max": "1000000000\n",
                "memory.current": "400000000\n",  # v2, a binding limit
                "memory.stat": "anon 1\ninactive_file 200000000\nactive_file 50000000\n",
            },
            150000000,
            1000000000,
        ),
    ],
    ids=["no-cgroup", "v1-unlimited", "v1-limit", "v2-max", "v2-limit"],
)
def test_monitor_memory_counts_as_the_raylet_does(
    tmp_path: Path, cgroup: dict[str, str], used: int, total: int
) -> None:
    """Lesson 10b sets a node's RAY_memory_usage_threshold from this: a GiB above the
    machine's use as the raylet counts it. Read from the dashboard instead, on a machine
    whose cgroup sets no limit, the threshold was already crossed and the fixed replica was
    killed four times (CI, 12-06)."""
    proc, sys_cgroup = _machine(tmp_path, cgroup=cgroup)
    assert monitor_memory(proc_dir=proc, cgroup_dir=sys_cgroup) == {
        "used_bytes": used,
        "total_bytes": total,
    }
