# Generated from notebooks/08_resources_and_placement.ipynb (cell 7); edit the lesson, then run `python -m helpers.lessons generate`.
"""A deployment that reports where Ray placed it: node, GPU ids, assigned resources.

* :func:`where_am_i` - the calling worker's node, process, assigned resources, GPU ids
  (``ray.get_gpu_ids()``) and ``CUDA_VISIBLE_DEVICES``: what Ray sets for a task or actor that
  was given GPUs, logical or real.
* ``ResourceProbe`` - a deployment that answers every request with :func:`where_am_i`; deploy
  it with any ``ray_actor_options`` (``num_gpus: 0.5``, ``resources``, ``memory``) or
  ``max_replicas_per_node`` and see where each replica landed.

Run it::

    serve run helpers.apps.placement_probe:app            # a ResourceProbe
    curl localhost:PORT/

Introduced in notebooks/08_resources_and_placement.ipynb (the LLM stand-in that uses
:func:`where_am_i` is ``helpers.apps.standin_llm``).
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray import serve
from starlette.requests import Request

from helpers.apps.identity import replica_identity

__all__ = ["where_am_i", "ResourceProbe", "app"]


def where_am_i() -> dict[str, Any]:
    """Node, pid, GPU ids, CUDA_VISIBLE_DEVICES and assigned resources of the calling worker."""
    ctx = ray.get_runtime_context()
    assigned = {k: round(v, 4) for k, v in ctx.get_assigned_resources().items()
                if not k.startswith(("node:", "implicit_resource"))}
    return {
        "node_id": ctx.get_node_id(),
        "pid": os.getpid(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "assigned": assigned,
        "placement_group": ctx.get_placement_group_id(),
    }


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16)
class ResourceProbe:
    """Answers every request with where this replica runs and what it was given."""

    def __init__(self) -> None:
        self.placement = where_am_i()

    async def __call__(self, request: Request | None = None) -> dict[str, Any]:
        return {**self.placement, **replica_identity()}


app = ResourceProbe.bind()
