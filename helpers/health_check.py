"""Cluster health check: can every node run work, use its GPUs and share objects?

Three probes, each with a timeout so a broken node shows up as a finding, not a hang:

1. CPU tasks: one task pinned to each node, plus ``cpu_tasks`` tasks with the SPREAD
   strategy, each reporting the node, host and process it ran in;
2. GPU tasks: one task asking for a (logical) GPU on each node that has GPUs, reporting the
   GPU ids Ray assigned and ``CUDA_VISIBLE_DEVICES``;
3. the object store: a large array put once by the driver and read on every node, its
   checksum compared.

Run it from Python (``run_health_check()`` after ``ray.init``), directly
(``python -m helpers.health_check --address HOST:PORT``), or as a Ray Job::

    ray job submit --address http://127.0.0.1:8265 -- python -m helpers.health_check --json -

The harness's copy of the probes for the tests and for checking a cluster from the command
line. Lesson 01 (notebooks/01_ray_cluster_setup.ipynb) has the learner write the same probes
as a script of their own (cluster_health.py), which is the lesson's source of truth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["HealthReport", "run_health_check", "main"]


@dataclass
class HealthReport:
    """What the health check saw; ``ok`` is True when no problem was found."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    cpu_tasks: list[dict[str, Any]] = field(default_factory=list)
    gpu_tasks: list[dict[str, Any]] = field(default_factory=list)
    object_store: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        """Counts per probe: nodes alive, and on how many distinct nodes each probe ran."""
        return {
            "alive_nodes": len(self.nodes),
            "cpu_nodes": len({t["node_id"] for t in self.cpu_tasks}),
            "gpu_nodes": len({t["node_id"] for t in self.gpu_tasks}),
            "object_store_nodes": len({r["node_id"] for r in self.object_store if r["ok"]}),
            "total_gpus": sum(n["GPU"] for n in self.nodes),
            "ok": self.ok,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}

    def render(self) -> str:
        """The report as text, in the order the probes ran."""
        lines = ["=== Ray Cluster Health Check ===", f"Alive nodes: {len(self.nodes)}"]
        for n in self.nodes:
            lines.append(f" - {n['name']:<10} {n['ip']} | CPUs={n['CPU']:g} | GPUs={n['GPU']:g}")
        by_node: dict[str, int] = {}
        for t in self.cpu_tasks:
            by_node[t["node_name"]] = by_node.get(t["node_name"], 0) + 1
        lines.append(f"\n[CPU] {len(self.cpu_tasks)} tasks ran on {len(by_node)} nodes: {by_node}")
        lines.append(f"[GPU] {len(self.gpu_tasks)} tasks on nodes with GPUs")
        for t in self.gpu_tasks:
            lines.append(
                f"  {t['node_name']}: gpu_ids={t['gpu_ids']} "
                f"CUDA_VISIBLE_DEVICES={t['cuda_visible_devices']!r} {t['gpu_info']}"
            )
        good = sum(r["ok"] for r in self.object_store)
        lines.append(
            f"[Object store] object read correctly on {good}/{len(self.object_store)} nodes"
        )
        lines.append("\n=== Summary ===")
        for key, value in self.summary().items():
            lines.append(f"{key}: {value}")
        lines += [f"PROBLEM: {p}" for p in self.problems]
        lines.append(
            "Ray cluster health check completed successfully."
            if self.ok
            else "Ray cluster health check FAILED."
        )
        return "\n".join(lines)


def _where() -> dict[str, Any]:
    import ray

    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "hostname": socket.gethostname(), "pid": os.getpid()}


def _gpu_info() -> str:
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi: logical GPU only"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "nvidia-smi failed"
    return out.replace("\n", "; ")


def run_health_check(
    *, cpu_tasks: int = 8, object_mb: int = 16, task_s: float = 0.2, timeout_s: float = 60.0
) -> HealthReport:
    """Probe the cluster this process is connected to (call ``ray.init`` first)."""
    import numpy as np
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    started = time.monotonic()
    report = HealthReport()
    alive = [n for n in ray.nodes() if n.get("Alive")]
    names = {}
    for n in alive:
        res = n.get("Resources", {})
        name = n.get("NodeName") or n.get("NodeManagerAddress")
        names[n["NodeID"]] = name
        report.nodes.append(
            {
                "name": name,
                "node_id": n["NodeID"],
                "ip": n["NodeManagerAddress"],
                "CPU": res.get("CPU", 0.0),
                "GPU": res.get("GPU", 0.0),
            }
        )
    report.nodes.sort(key=lambda n: n["name"])

    @ray.remote(num_cpus=0.01)
    def where(kind: str, pause: float) -> dict[str, Any]:
        time.sleep(pause)
        return {"type": kind, **_where()}

    @ray.remote(num_cpus=0.01, num_gpus=1)
    def on_gpu() -> dict[str, Any]:
        return {
            "type": "gpu",
            **_where(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "gpu_info": _gpu_info(),
        }

    @ray.remote(num_cpus=0.01)
    def read(arr: Any) -> dict[str, Any]:
        return {**_where(), "sum": float(arr.sum()), "nbytes": int(arr.nbytes)}

    def pinned(node_id: str) -> NodeAffinitySchedulingStrategy:
        return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)

    def gather(refs: list, what: str) -> list[dict[str, Any]]:
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if pending:
            report.problems.append(f"{len(pending)} {what} did not finish within {timeout_s:.0f} s")
        results = []
        for ref in ready:
            try:
                results.append(ray.get(ref))
            except Exception as err:  # noqa: BLE001 - a failed probe is a finding
                report.problems.append(f"{what} failed: {type(err).__name__}: {err}"[:500])
        for ref in pending:
            ray.cancel(ref, force=True)
        return results

    # 1. CPU: one task per node, then SPREAD tasks.
    refs = [
        where.options(scheduling_strategy=pinned(n["node_id"])).remote("cpu", 0)
        for n in report.nodes
    ]
    refs += [
        where.options(scheduling_strategy="SPREAD").remote("cpu", task_s) for _ in range(cpu_tasks)
    ]
    report.cpu_tasks = gather(refs, "CPU tasks")
    ran_on = {t["node_id"] for t in report.cpu_tasks}
    for n in report.nodes:
        if n["node_id"] not in ran_on:
            report.problems.append(f"node {n['name']} ran no CPU task")

    # 2. GPU: one task per GPU node.
    gpu_nodes = [n for n in report.nodes if n["GPU"] >= 1]
    report.gpu_tasks = gather(
        [on_gpu.options(scheduling_strategy=pinned(n["node_id"])).remote() for n in gpu_nodes],
        "GPU tasks",
    )

    # 3. Object store: put once, read everywhere.
    count = max(1, object_mb * 2**20 // 8)
    ref = ray.put(np.ones(count, dtype=np.float64))
    reads = gather(
        [read.options(scheduling_strategy=pinned(n["node_id"])).remote(ref) for n in report.nodes],
        "object store reads",
    )
    for r in reads:
        r["expected"] = float(count)
        r["ok"] = r["sum"] == float(count)
        if not r["ok"]:
            report.problems.append(f"node {names.get(r['node_id'])} read a corrupt object")
    report.object_store = reads

    for rows in (report.cpu_tasks, report.gpu_tasks, report.object_store):
        for row in rows:
            row["node_name"] = names.get(row["node_id"], row["node_id"][:8])
    report.duration_s = round(time.monotonic() - started, 2)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: connect, run the probes, print the report; exit 1 if a probe failed."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers.health_check", description="Ray cluster health check."
    )
    parser.add_argument(
        "--address",
        default=None,
        help="GCS address host:port (default: RAY_ADDRESS, or the job's cluster)",
    )
    parser.add_argument("--cpu-tasks", type=int, default=8)
    parser.add_argument("--object-mb", type=int, default=16)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument(
        "--json", metavar="PATH", help="also write the report as JSON to PATH ('-' prints it last)"
    )
    args = parser.parse_args(argv)

    import ray

    ray.init(address=args.address, log_to_driver=False, logging_level="ERROR")
    try:
        report = run_health_check(
            cpu_tasks=args.cpu_tasks, object_mb=args.object_mb, timeout_s=args.timeout_s
        )
    finally:
        ray.shutdown()
    print(report.render())
    if args.json == "-":
        print("HEALTH_REPORT_JSON " + json.dumps(report.to_dict()))
    elif args.json:
        with open(args.json, "w") as handle:
            json.dump(report.to_dict(), handle, indent=2)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
