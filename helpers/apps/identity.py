"""Who answered? Every example app puts this in its responses, so load balancing is visible.

Usage (inside a deployment)::

    from helpers.apps.identity import replica_identity
    return {"label": "positive", **replica_identity()}
    # {"replica": "k3v9a1b2", "deployment": "TextClassifier", "app": "default",
    #  "pid": 12345, "node_id": "5f1c...", "node": "worker-1"}
"""

from __future__ import annotations

import functools
import os
from typing import Any

__all__ = ["replica_identity", "node_name"]


@functools.cache
def node_name(node_id: str) -> str:
    """The ``--node-name`` of the node with ``node_id`` (its IP address if it has none)."""
    import ray

    try:
        for node in ray.nodes():
            if node.get("NodeID") == node_id:
                return str(node.get("NodeName") or node.get("NodeManagerAddress") or "?")
    except Exception:  # noqa: BLE001 - a name is a nicety; the node id is the fact
        pass
    return "?"


def replica_identity() -> dict[str, Any]:
    """Replica id, deployment, application, process id and node of the calling replica.

    Outside a replica (a plain Python process) the Serve fields are ``None``.
    """
    import ray
    from ray import serve

    try:
        ctx = serve.get_replica_context()
        replica, deployment, app = ctx.replica_id.unique_id, ctx.deployment, ctx.app_name
    except Exception:  # noqa: BLE001 - RayServeException when not in a replica
        replica = deployment = app = None
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    return {
        "replica": replica,
        "deployment": deployment,
        "app": app,
        "pid": os.getpid(),
        "node_id": node_id,
        "node": node_name(node_id) if node_id else None,
    }
