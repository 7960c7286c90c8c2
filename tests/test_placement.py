"""Lesson 08's helpers and configs: the cluster inspection helper (tables, command line), the
replica probes, and every config in configs/placement/. Fractional GPUs (replicas sharing a
GPU id, the one that does not fit left pending with its demand) are asserted by lesson 08
itself, sections 2 and 5.

The cluster tests run on the session's shared 2-node cluster (head: 2 CPUs, 1 logical GPU;
a worker with the custom resource ``node_b``: 1 CPU, 1 logical GPU) and leave it as they
found it. The config tests check that each stand-in config asks for exactly the placement
bundles that ``ray.serve.llm`` gives the replica of the matching GPU config.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.cluster import LocalCluster
from helpers.paths import CONFIGS_DIR
from helpers.serve_cli import load_config, validate_serve_config

PLACEMENT_CONFIGS = sorted((CONFIGS_DIR / "placement").glob("*.yaml"))
STANDINS = {
    "llm-tensor-parallel-gpu.yaml": "standin-tensor-parallel.yaml",
    "llm-one-per-gpu-gpu.yaml": "standin-one-per-gpu.yaml",
}

# -- configs, no cluster --------------------------------------------------------------------------


def test_every_gpu_config_has_a_stand_in() -> None:
    names = {p.name for p in PLACEMENT_CONFIGS}
    assert set(STANDINS) | set(STANDINS.values()) | {"standin-round-robin.yaml"} <= names


@pytest.mark.parametrize("path", PLACEMENT_CONFIGS, ids=lambda p: p.stem)
def test_placement_config_is_valid_for_the_installed_serve(path: Path) -> None:
    from ray.serve._private.build_app import build_app as serve_build_app

    data = load_config(path)
    validate_serve_config(data)  # the installed schema, and no silently ignored keys
    for raw in data["applications"]:
        if raw["import_path"].startswith("ray.serve.llm"):
            from ray.serve.llm import LLMServingArgs

            LLMServingArgs.model_validate(raw["args"])
            continue
        module_name, attr = raw["import_path"].split(":")
        builder = getattr(__import__(module_name, fromlist=[attr]), attr)
        names = {
            d.name for d in serve_build_app(builder(raw.get("args")), name="check").deployments
        }
        assert {d["name"] for d in raw.get("deployments", [])} <= names, names
        for dep in raw.get("deployments", []):
            bundles = dep.get("placement_group_bundles")
            if bundles:  # the replica actor runs in bundle 0: its options must fit there
                assert dep["ray_actor_options"]["num_cpus"] <= bundles[0].get("CPU", 0)


def _llm_replica_bundles(llm: dict[str, Any]) -> tuple[list[dict[str, float]], str, int]:
    """What ray.serve.llm reserves per replica: the engine's bundles with the replica actor's
    CPU merged into bundle 0 (LLMServer.get_deployment_options, without a Ray connection)."""
    from ray.llm._internal.serve.core.server.llm_server import (
        _merge_replica_actor_and_child_actor_bundles,
    )
    from ray.serve.llm import LLMConfig

    config = LLMConfig.model_validate(llm)
    engine = config.get_engine_config()
    actor = config.deployment_config.get("ray_actor_options", {})
    bundles = _merge_replica_actor_and_child_actor_bundles(
        engine.placement_bundles, {"CPU": actor.get("num_cpus", 1), "GPU": actor.get("num_gpus", 0)}
    )
    return bundles, engine.placement_strategy, int(config.deployment_config["num_replicas"])


@pytest.mark.parametrize("gpu_name", sorted(STANDINS))
def test_stand_in_asks_for_the_llm_replicas_placement(gpu_name: str) -> None:
    gpu = load_config(CONFIGS_DIR / "placement" / gpu_name)["applications"][0]
    standin = load_config(CONFIGS_DIR / "placement" / STANDINS[gpu_name])["applications"][0]
    bundles, strategy, replicas = _llm_replica_bundles(gpu["args"]["llm_configs"][0])
    dep = standin["deployments"][0]

    def clean(bs: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: float(v) for k, v in b.items() if v} for b in bs]

    assert clean(dep["placement_group_bundles"]) == clean(bundles)
    assert dep["placement_group_strategy"] == strategy
    assert dep["num_replicas"] == replicas
    tp = gpu["args"]["llm_configs"][0]["engine_kwargs"]["tensor_parallel_size"]
    assert standin["args"]["tensor_parallel_size"] == tp == sum(b.get("GPU", 0) for b in bundles)


# -- the inspection helper on the shared cluster -----------------------------------------------


@pytest.fixture(scope="module")
def serve_url(two_node_cluster: LocalCluster) -> Iterator[str]:
    """Serve on the shared cluster (one proxy, a free port); shut down after this module if it
    was not running before."""
    from ray import serve

    from helpers.ports import free_port
    from helpers.serve_apps import serve_http_url
    from helpers.serve_status import serve_details

    cluster = two_node_cluster
    was_running = bool((serve_details(cluster).get("controller_info") or {}).get("actor_id"))
    cluster.connect()
    try:
        if not was_running:
            serve.start(
                proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": free_port()}
            )
        yield serve_http_url(cluster)
    finally:
        try:
            if not was_running:
                serve.shutdown()
        finally:
            cluster.disconnect()


@contextlib.contextmanager
def _deployed(cluster: LocalCluster, deployment: Any, name: str) -> Iterator[None]:
    """``deployment`` as application ``name`` on /name, without waiting (replicas may stay
    pending); deleted afterwards."""
    from helpers.serve_apps import delete_app, deploy_app

    deploy_app(deployment.bind(), cluster=cluster, name=name, route_prefix=f"/{name}", wait=False)
    try:
        yield
    finally:
        delete_app(name, cluster=cluster)


def test_inspect_cluster_sees_nodes_placement_groups_and_replicas(
    two_node_cluster: LocalCluster, serve_url: str
) -> None:
    from ray.util.placement_group import placement_group, remove_placement_group

    from helpers.apps.placement_probe import ResourceProbe
    from helpers.placement import inspect_cluster, probe_replicas, wait_for_running_replicas

    cluster = two_node_cluster
    worker = next(n.name for n in cluster.nodes_started if n.role == "worker")  # holds node_b
    both = sorted(["head", worker])
    empty = inspect_cluster(cluster)
    assert sorted(empty.nodes["node"]) == both
    assert dict(zip(empty.nodes["node"], empty.nodes["GPU total"])) == {"head": 1, worker: 1}
    assert empty.nodes.set_index("node").loc[worker, "custom (used/total)"] == "node_b=0/1"

    pg = placement_group([{"GPU": 1, "CPU": 0.1}] * 2, strategy="STRICT_SPREAD")
    assert pg.wait(timeout_seconds=60)
    probe = ResourceProbe.options(
        name="Spread", num_replicas=2, max_replicas_per_node=1, ray_actor_options={"num_cpus": 0.1}
    )
    try:
        with _deployed(cluster, probe, "spread-test"):
            placed = wait_for_running_replicas(
                cluster, "spread-test", "Spread", running=2, timeout_s=120
            )
            answers = probe_replicas(f"{serve_url}/spread-test", 2, timeout_s=60)
            report = inspect_cluster(cluster)
    finally:
        remove_placement_group(pg)
    assert sorted(placed["node"]) == both  # max_replicas_per_node: 1 per node
    assert sorted(answers["node"]) == both and answers["replica"].nunique() == 2
    mine = report.placement_groups[report.placement_groups["placement_group"] == pg.id.hex()[:12]]
    assert sorted(mine["node"]) == both
    assert list(mine["resources"]) == [{"GPU": 1.0, "CPU": 0.1}] * 2
    assert report.nodes["GPU used"].sum() == 2  # the bundles reserve both GPUs
    assert report.replicas_per_node.loc[("spread-test", "Spread")].to_dict() == {
        "head": 1,
        worker: 1,
    }
    text = report.text()
    assert "Placement groups" in text and "spread-test" in text


def test_command_line(two_node_cluster: LocalCluster) -> None:
    from helpers.placement import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            [
                "--address",
                two_node_cluster.address,
                "--dashboard-url",
                two_node_cluster.dashboard_url,
                "--token-path",
                str(two_node_cluster.token_path),
            ]
        )
    assert code == 0 and "== Nodes ==" in out.getvalue() and "node_b" in out.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["--address", "127.0.0.1:1"]) == 1
    assert "No Ray cluster answers" in err.getvalue()
