"""What runs where: nodes and their resources in use, Serve replicas per node, placement groups.

Like a deployment kit's cluster-check script, for any cluster the workbook can reach (one it
started, or a running one given by address), and with nothing to ``ray.init``:

* :func:`node_usage` - one row per node: CPUs, GPUs and memory used of total, custom
  resources (from the GCS, what ``ray status`` reads);
* :func:`serve_replicas` - one row per Serve replica: application, deployment, state, node,
  pid (from the dashboard's Serve API, what ``serve status`` reads);
* :func:`placement_groups` - one row per placement-group bundle: its resources and node;
* :func:`inspect_cluster` - all three, plus replicas per node, as a :class:`ClusterInspection`;
* :func:`wait_for_running_replicas` - wait until N replicas of a deployment run (others may
  stay pending for want of resources);
* :func:`plot_replica_placement` - a bar per node, stacked by deployment;
* :func:`probe_replicas` - call an HTTP endpoint until every replica has answered once (each
  answer says where it runs: see :mod:`helpers.apps.placement_probe`).

Usage::

    from helpers.placement import inspect_cluster
    report = inspect_cluster(cluster)
    report.nodes, report.replicas_per_node

or from a shell::

    python -m helpers.placement --address 127.0.0.1:6379 --dashboard-url http://127.0.0.1:8265

Introduced in notebooks/08_resources_and_placement.ipynb.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from helpers.auth import activate_in_process
from helpers.cluster import connect_to_cluster
from helpers.errors import ClusterNotRunningError, ServeTimeoutError, WorkbookError
from helpers.serve_status import pending_demands, serve_details
from helpers.waiting import wait_for

if TYPE_CHECKING:  # pragma: no cover
    import matplotlib.axes
    import pandas as pd

    from helpers.cluster import ClusterHandle

__all__ = [
    "ClusterInspection",
    "node_usage",
    "serve_replicas",
    "placement_groups",
    "inspect_cluster",
    "wait_for_running_replicas",
    "replicas_per_node",
    "plot_replica_placement",
    "probe_replicas",
    "main",
]

_STANDARD = ("CPU", "GPU", "memory", "object_store_memory")


def _is_internal(resource: str) -> bool:
    """Resources Ray adds for its own bookkeeping (node ids, placement-group shares, ...)."""
    return (
        resource.startswith(("node:", "accelerator_type", "implicit_resource"))
        or "_group_" in resource
        or resource.startswith("bundle_group")
    )


def _node_names(cluster: ClusterHandle) -> dict[str, str]:
    return {node["node_id"]: node["name"] for node in cluster.nodes()}


def node_usage(cluster: ClusterHandle) -> pd.DataFrame:
    """One row per alive node: CPU, GPU, memory (GiB) used and total; custom resources."""
    import pandas as pd
    from ray.autoscaler.v2.sdk import get_cluster_status

    names = _node_names(cluster)
    activate_in_process(cluster.env)
    try:
        status = get_cluster_status(cluster.address, timeout=30)
    except Exception as err:
        raise ClusterNotRunningError(
            f"Could not read the resource usage of the cluster at {cluster.address}.",
            "check the cluster is running and the address is its GCS (host:port).",
            details=str(err)[-1500:],
        ) from err
    rows = []
    for node in [*status.active_nodes, *status.idle_nodes]:
        if node.node_id is None or node.resource_usage is None:
            continue
        usage = {u.resource_name: (u.used, u.total) for u in node.resource_usage.usage}
        custom = {k: v for k, v in usage.items() if k not in _STANDARD and not _is_internal(k)}
        used_cpu, total_cpu = usage.get("CPU", (0.0, 0.0))
        used_gpu, total_gpu = usage.get("GPU", (0.0, 0.0))
        used_mem, total_mem = usage.get("memory", (0.0, 0.0))
        rows.append(
            {
                "node": names.get(node.node_id, node.ip_address),
                "node_id": node.node_id[:12],
                "CPU used": round(used_cpu, 3),
                "CPU total": total_cpu,
                "GPU used": round(used_gpu, 3),
                "GPU total": total_gpu,
                "memory used GiB": round(used_mem / 2**30, 2),
                "memory total GiB": round(total_mem / 2**30, 2),
                "custom (used/total)": ", ".join(
                    f"{k}={u:g}/{t:g}" for k, (u, t) in sorted(custom.items())
                ),
            }
        )
    columns = [
        "node",
        "node_id",
        "CPU used",
        "CPU total",
        "GPU used",
        "GPU total",
        "memory used GiB",
        "memory total GiB",
        "custom (used/total)",
    ]
    return pd.DataFrame.from_records(rows, columns=columns).sort_values("node", ignore_index=True)


def serve_replicas(cluster: ClusterHandle, *, app: str | None = None) -> pd.DataFrame:
    """One row per Serve replica (of ``app``, or of all applications) with its node's name."""
    import pandas as pd

    names = _node_names(cluster)
    rows = []
    for app_name, details in (serve_details(cluster).get("applications") or {}).items():
        if app is not None and app_name != app:
            continue
        for dep_name, dep in (details.get("deployments") or {}).items():
            options = dep.get("deployment_config") or {}
            for rep in dep.get("replicas") or []:
                node_id = rep.get("node_id") or ""
                rows.append(
                    {
                        "application": app_name,
                        "deployment": dep_name,
                        "replica": rep.get("replica_id"),
                        "state": rep.get("state"),
                        "node": names.get(node_id, "(not placed)" if not node_id else node_id[:12]),
                        "node_id": node_id[:12] or None,
                        "pid": rep.get("pid"),
                        "ray_actor_options": options.get("ray_actor_options"),
                        "placement_group_bundles": options.get("placement_group_bundles"),
                    }
                )
    columns = [
        "application",
        "deployment",
        "replica",
        "state",
        "node",
        "node_id",
        "pid",
        "ray_actor_options",
        "placement_group_bundles",
    ]
    return pd.DataFrame.from_records(rows, columns=columns)


def placement_groups(cluster: ClusterHandle, *, include_removed: bool = False) -> pd.DataFrame:
    """One row per bundle of every placement group: its resources and the node it is on."""
    import pandas as pd
    from ray.util.state import list_placement_groups

    names = _node_names(cluster)
    activate_in_process(cluster.env)
    try:
        groups = list_placement_groups(
            address=cluster.dashboard_url, detail=True, limit=10_000, timeout=30
        )
    except Exception as err:
        raise ClusterNotRunningError(
            f"Could not list the placement groups at {cluster.dashboard_url}.",
            "check the cluster is running with its dashboard.",
            details=str(err)[-1500:],
        ) from err
    rows = []
    for group in groups:
        if group.state == "REMOVED" and not include_removed:
            continue
        for index, bundle in enumerate(group.bundles or []):
            node_id = bundle.get("node_id") or ""
            rows.append(
                {
                    "placement_group": group.placement_group_id[:12],
                    "name": group.name,
                    "state": group.state,
                    "bundle": index,
                    "resources": {
                        k: v
                        for k, v in (bundle.get("unit_resources") or {}).items()
                        if not _is_internal(k)
                    },
                    "node": names.get(node_id, "(not placed)" if not node_id else node_id[:12]),
                }
            )
    columns = ["placement_group", "name", "state", "bundle", "resources", "node"]
    return pd.DataFrame.from_records(rows, columns=columns)


def wait_for_running_replicas(
    cluster: ClusterHandle,
    app: str,
    deployment: str,
    *,
    running: int,
    timeout_s: float = 120.0,
    settle_s: float = 2.0,
) -> pd.DataFrame:
    """Wait until exactly ``running`` replicas of ``deployment`` are RUNNING; return them all.

    Unlike :func:`helpers.serve_timeline.wait_until_settled` the deployment need not be
    HEALTHY: replicas the cluster cannot place stay STARTING (pending), and this is how a
    lesson waits for "four run, the fifth waits". The count must hold for ``settle_s``.
    Raises :class:`~helpers.errors.ServeTimeoutError` with the pending resource demand.
    """

    held_since: float | None = None
    states: list[Any] = []

    def held() -> tuple[pd.DataFrame] | None:  # a tuple: a DataFrame has no truth value
        nonlocal held_since, states
        table = serve_replicas(cluster, app=app)
        mine = table[table["deployment"] == deployment]
        states = list(mine["state"])
        if states.count("RUNNING") != running:
            held_since = None
            return None
        held_since = held_since or time.monotonic()
        return (mine.reset_index(drop=True),) if time.monotonic() - held_since >= settle_s else None

    return wait_for(
        held,
        timeout_s=timeout_s,
        what=f"{running} RUNNING replicas of {app}/{deployment}",
        poll_s=0.3,
        on_timeout=lambda waited: ServeTimeoutError(
            f"{app}/{deployment}",
            timeout_s,
            f"{states.count('RUNNING')} of {len(states)} replicas RUNNING, waiting for {running}",
            pending_demands(cluster),
        ),
    )[0]


def replicas_per_node(replicas: pd.DataFrame, nodes: Sequence[str] = ()) -> pd.DataFrame:
    """RUNNING replicas counted per (application, deployment) and node; a column per node."""
    import pandas as pd

    running = replicas[replicas["state"] == "RUNNING"]
    table = pd.crosstab([running["application"], running["deployment"]], running["node"])
    for node in nodes:
        if node not in table.columns:
            table[node] = 0
    return table.reindex(columns=sorted(table.columns)).astype(int)


@dataclass
class ClusterInspection:
    """Everything :func:`inspect_cluster` found, as tables."""

    nodes: pd.DataFrame
    replicas: pd.DataFrame
    placement_groups: pd.DataFrame
    replicas_per_node: pd.DataFrame

    def text(self) -> str:
        """The four tables as plain text (what the command line prints)."""
        parts = [
            ("Nodes", self.nodes.drop(columns=["node_id"])),
            (
                "Serve replicas",
                self.replicas.drop(columns=["ray_actor_options", "placement_group_bundles"]),
            ),
            ("Replicas per node (RUNNING)", self.replicas_per_node),
            ("Placement groups", self.placement_groups),
        ]
        out = []
        for title, frame in parts:
            body = frame.to_string() if len(frame) else "(none)"
            out.append(f"== {title} ==\n{body}")
        return "\n\n".join(out)


def inspect_cluster(cluster: ClusterHandle, *, app: str | None = None) -> ClusterInspection:
    """Nodes with resources in use, Serve replicas (of ``app`` or all) and their nodes,
    replicas per node, and placement groups."""
    nodes = node_usage(cluster)
    replicas = serve_replicas(cluster, app=app)
    groups = placement_groups(cluster)
    return ClusterInspection(
        nodes, replicas, groups, replicas_per_node(replicas, list(nodes["node"]))
    )


def plot_replica_placement(
    per_node: pd.DataFrame,
    *,
    title: str = "Serve replicas per node",
    ax: matplotlib.axes.Axes | None = None,
) -> matplotlib.axes.Axes:
    """A bar per node, stacked by deployment, from :func:`replicas_per_node`'s table."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    bottom = [0] * len(per_node.columns)
    for (app_name, deployment), counts in per_node.iterrows():
        ax.bar(
            list(per_node.columns),
            counts.tolist(),
            bottom=bottom,
            label=f"{app_name} / {deployment}",
        )
        bottom = [b + c for b, c in zip(bottom, counts.tolist())]
    ax.set_title(title)
    ax.set_xlabel("node")
    ax.set_ylabel("running replicas (count)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return ax


def probe_replicas(
    url: str,
    expected: int,
    *,
    json: Mapping[str, Any] | None = None,
    concurrency: int = 4,
    timeout_s: float = 60.0,
) -> pd.DataFrame:
    """Call ``url`` until ``expected`` distinct replicas answered; one row per replica.

    Serve's router picks replicas at random (two candidates, the less busy wins), so a few
    times ``expected`` calls reach them all. Raises :class:`WorkbookError` naming how many
    answered if not all did within ``timeout_s``.
    """
    import pandas as pd
    import requests

    seen: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + timeout_s

    def work() -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            with lock:
                if len(seen) >= expected:
                    return
            try:
                resp = (
                    session.post(url, json=dict(json), timeout=30)
                    if json is not None
                    else session.get(url, timeout=30)
                )
                answer = resp.json() if resp.status_code == 200 else None
            except (requests.RequestException, ValueError) as err:
                answer = None
                errors.append(f"{type(err).__name__}: {err}"[:200])
            if isinstance(answer, dict) and answer.get("replica"):
                with lock:
                    seen.setdefault(answer["replica"], answer)
            else:
                time.sleep(0.2)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(work) for _ in range(concurrency)]:
            future.result()
    if len(seen) < expected:
        raise WorkbookError(
            f"Only {len(seen)} of {expected} replicas answered {url} within {timeout_s:.0f} s.",
            "check the deployment is RUNNING with that many replicas (serve status), or raise "
            "timeout_s.",
            details="\n".join(errors[-5:]),
        )
    return pd.DataFrame(list(seen.values()))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.placement --address HOST:PORT [--dashboard-url URL] [--app NAME]``."""

    parser = argparse.ArgumentParser(
        prog="python -m helpers.placement",
        description="Nodes, resources in use, Serve replicas per node and placement groups "
        "of a running Ray cluster.",
    )
    parser.add_argument("--address", required=True, help="the head node's GCS address, host:port")
    parser.add_argument(
        "--dashboard-url",
        default="",
        help="the dashboard, e.g. http://host:8265 (default: port 8265 of the host)",
    )
    parser.add_argument(
        "--token-path",
        default="",
        help="the cluster's auth token file (default: ~/.ray/auth_token if any)",
    )
    parser.add_argument("--app", default=None, help="only this Serve application's replicas")
    args = parser.parse_args(argv)
    try:
        cluster = connect_to_cluster(
            args.address,
            dashboard_url=args.dashboard_url or None,
            token_path=args.token_path or None,
        )
        print(inspect_cluster(cluster, app=args.app).text())
    except WorkbookError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
