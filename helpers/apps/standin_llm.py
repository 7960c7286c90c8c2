# Generated from notebooks/08_resources_and_placement.ipynb (cell 22); edit the lesson, then run `python -m helpers.lessons generate`.
"""A stand-in for an LLM replica with the *same placement* as a ``ray.serve.llm`` one.

* ``StandInLLM`` - deployed with ``placement_group_bundles`` (one per GPU of the replica),
  it runs one "shard" task in each GPU bundle of its placement group, as vLLM runs one worker
  per tensor-parallel rank, and reports which node and GPU each shard was given. No model is
  loaded and no GPU math happens: the placement is real, the work is not. ``GET /?hold_s=0.5``
  holds the request that long, as a generation would.
* ``RoundRobinRouter`` - an ingress that sends requests to several deployments in turn (a
  deployment kit's third strategy), and :func:`build_round_robin` - its application builder.
* :func:`build_standin` - the application builder the configs in ``configs/placement/`` name.

Introduced in notebooks/08_resources_and_placement.ipynb.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request

from helpers.apps.identity import replica_identity
from helpers.apps.placement_probe import where_am_i

__all__ = ["StandInLLM", "RoundRobinRouter", "build_standin", "build_round_robin"]


@ray.remote(num_cpus=0)
def _shard(rank: int) -> dict[str, Any]:
    """One tensor-parallel rank's worker, standing in: it only reports where it runs."""
    return {"rank": rank, **where_am_i()}


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=16)
class StandInLLM:
    """A replica shaped like an LLM replica: GPU bundles, one shard per tensor-parallel rank.

    Deploy it with ``placement_group_bundles`` equal to the LLM's (e.g. ``[{CPU: 1, GPU: 1},
    {GPU: 1}]`` for ``tensor_parallel_size: 2``) and ``placement_group_strategy``. The replica
    actor takes the CPU of bundle 0; shard ``i`` takes the GPU of bundle ``i``.
    """

    def __init__(self, model_id: str = "stand-in", tensor_parallel_size: int = 1) -> None:
        from ray.util import get_current_placement_group
        from ray.util.placement_group import placement_group_table
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.model_id = model_id
        self.placement = where_am_i()
        pg = get_current_placement_group()
        self.shards: list[dict[str, Any]] = []
        self.bundle_nodes: list[str] = []
        if pg is not None:
            table = placement_group_table(pg)
            self.bundle_nodes = [table["bundles_to_node_id"].get(i, "")
                                 for i in range(len(pg.bundle_specs))]
            gpu_bundles = [i for i, b in enumerate(pg.bundle_specs) if b.get("GPU", 0) > 0]
            if len(gpu_bundles) < tensor_parallel_size:
                raise ValueError(
                    f"tensor_parallel_size={tensor_parallel_size} needs that many bundles with "
                    f"a GPU; the placement group has {pg.bundle_specs}")
            refs = [_shard.options(
                num_gpus=pg.bundle_specs[index]["GPU"],
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=index),
            ).remote(rank) for rank, index in enumerate(gpu_bundles[:tensor_parallel_size])]
            self.shards = ray.get(refs)
        elif tensor_parallel_size > 1:
            raise ValueError("tensor_parallel_size > 1 needs placement_group_bundles, one per GPU")

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_id, **self.placement, **replica_identity(),
                "bundle_nodes": self.bundle_nodes, "shards": self.shards}

    async def __call__(self, request: Request | None = None) -> dict[str, Any]:
        hold_s = float(request.query_params.get("hold_s", 0)) if request is not None else 0.0
        if hold_s > 0:
            await asyncio.sleep(min(hold_s, 30.0))
        return self.describe()


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=32)
class RoundRobinRouter:
    """The ingress of strategy 3: request ``i`` goes to member ``i mod n``."""

    def __init__(self, members: dict[str, DeploymentHandle]) -> None:
        self.members = members
        self.turns = itertools.cycle(list(members))

    async def __call__(self, request: Request | None = None) -> dict[str, Any]:
        name = next(self.turns)
        answer = await self.members[name].describe.remote()
        return {"routed_to": name, **answer, "router": replica_identity()["replica"]}


def build_standin(args: Mapping[str, Any] | None = None) -> Any:
    """Builder: ``args: {model_id, tensor_parallel_size}`` -> one ``StandInLLM`` deployment."""
    args = dict(args or {})
    unknown = set(args) - {"model_id", "tensor_parallel_size"}
    if unknown:
        raise ValueError(f"unknown args {sorted(unknown)}; known: model_id, tensor_parallel_size")
    return StandInLLM.bind(str(args.get("model_id", "stand-in")),
                           int(args.get("tensor_parallel_size", 1)))


def build_round_robin(args: Mapping[str, Any] | None = None) -> Any:
    """Builder: ``args: {members: [name, ...], tensor_parallel_size}`` -> a router in front of
    one ``StandInLLM`` deployment per member, named ``StandIn-<name>`` (so a config can give each
    its own ``placement_group_bundles``)."""
    args = dict(args or {})
    unknown = set(args) - {"members", "tensor_parallel_size"}
    if unknown:
        raise ValueError(f"unknown args {sorted(unknown)}; known: members, tensor_parallel_size")
    names = list(args.get("members", ["a", "b"]))
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"members must be two or more distinct names, got {names}")
    tp = int(args.get("tensor_parallel_size", 1))
    members = {n: StandInLLM.options(name=f"StandIn-{n}").bind(f"stand-in-{n}", tp) for n in names}
    return RoundRobinRouter.bind(members)
