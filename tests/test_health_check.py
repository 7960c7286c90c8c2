"""helpers.health_check on the shared 2-node cluster: in-process and as a real Ray Job."""

from __future__ import annotations

import json

import pytest

from helpers.cluster import LocalCluster
from helpers.health_check import run_health_check

pytestmark = pytest.mark.cluster


def test_health_check_in_process(two_node_cluster: LocalCluster) -> None:
    node_ids = {n["node_id"] for n in two_node_cluster.nodes()}
    assert len(node_ids) == 2
    two_node_cluster.connect()
    try:
        report = run_health_check(cpu_tasks=4, object_mb=4, timeout_s=60)
    finally:
        two_node_cluster.disconnect()

    assert report.problems == []
    assert report.ok
    assert {n["node_id"] for n in report.nodes} == node_ids
    assert {t["node_id"] for t in report.cpu_tasks} == node_ids
    assert len(report.cpu_tasks) == 2 + 4

    assert {t["node_id"] for t in report.gpu_tasks} == node_ids
    for task in report.gpu_tasks:
        assert len(task["gpu_ids"]) == 1
        # Ray sets CUDA_VISIBLE_DEVICES to the GPU id it assigned to the task.
        assert task["cuda_visible_devices"] == task["gpu_ids"][0]

    assert {r["node_id"] for r in report.object_store} == node_ids
    assert all(r["ok"] and r["nbytes"] == 4 * 2**20 for r in report.object_store)

    summary = report.summary()
    assert summary == {
        "alive_nodes": 2,
        "cpu_nodes": 2,
        "gpu_nodes": 2,
        "object_store_nodes": 2,
        "total_gpus": 2.0,
        "ok": True,
    }
    text = report.render()
    assert "Alive nodes: 2" in text
    assert "completed successfully" in text


def test_health_check_as_ray_job(two_node_cluster: LocalCluster) -> None:
    result = two_node_cluster.run_cli(
        [
            "ray",
            "job",
            "submit",
            "--address",
            two_node_cluster.dashboard_url,
            "--",
            "python",
            "-m",
            "helpers.health_check",
            "--json",
            "-",
        ],
        timeout_s=240,
    )
    assert result.returncode == 0
    lines = [line for line in result.stdout.splitlines() if "HEALTH_REPORT_JSON " in line]
    assert len(lines) == 1, result.stdout[-3000:]
    report = json.loads(lines[0].split("HEALTH_REPORT_JSON ", 1)[1])
    assert report["summary"]["ok"] is True
    assert report["summary"]["alive_nodes"] == 2
    assert report["summary"]["gpu_nodes"] == 2
    assert report["problems"] == []
