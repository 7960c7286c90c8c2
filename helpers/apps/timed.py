"""Requests that take a known time, and a custom autoscaling policy: lesson 05's test bench.

``TimedWork`` answers every request after ``work_s`` seconds of *waiting* (``asyncio.sleep``,
like a replica waiting on a model server or a database), so the number of requests in flight
per replica, which Serve's autoscaler steers by, is exactly ``rate x work_s`` and does not
depend on how busy the CPU is. That makes autoscaling reproducible on a 2-core laptop.

* ``POST {}`` (or ``GET``) -> ``{"work_s": 0.2, "replica": ..., "pid": ..., "node": ...}``;
  ``{"work_s": 0.05}`` in the body overrides the time for that request.
* ``user_config: {"work_s": 0.2}`` sets the default time, in place (no restart).

``SpareReplicaPolicy`` is a custom autoscaling policy (Ray 2.60's policy API: a callable that
receives an :class:`~ray.serve.config.AutoscalingContext` and returns the desired number of
replicas and its own state). It keeps ``spare`` warm replicas beyond what the load needs while
there is any traffic, so a burst lands on a replica that is already running::

    autoscaling_config:
      min_replicas: 1
      max_replicas: 4
      policy:
        policy_function: helpers.apps.timed:SpareReplicaPolicy
        policy_kwargs: {target_per_replica: 2, spare: 1}

Run it::

    serve run helpers.apps.timed:app

Introduced in notebooks/05_autoscaling.ipynb.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from helpers.apps.identity import replica_identity

__all__ = ["TimedWork", "SpareReplicaPolicy", "app", "MAX_WORK_S"]

MAX_WORK_S = 30.0  # longest wait a request may ask for


def _work_s(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_WORK_S:
        raise ValueError(f"work_s must be a number of seconds in [0, {MAX_WORK_S}], got {value!r}")
    return float(value)


@serve.deployment(
    name="TimedWork",
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=8,
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2},
    user_config={"work_s": 0.2},
    graceful_shutdown_wait_loop_s=0.5,
    graceful_shutdown_timeout_s=5.0,
)
class TimedWork:
    """Waits ``work_s`` seconds per request, then says which replica answered."""

    def __init__(self) -> None:
        self.work_s = 0.2
        self.served = 0

    def reconfigure(self, config: dict[str, Any]) -> None:
        unknown = sorted(set(config) - {"work_s"})
        if unknown:
            raise ValueError(f"unknown user_config keys {unknown}; allowed: ['work_s']")
        self.work_s = _work_s(config.get("work_s", 0.2))

    async def __call__(self, request: Request) -> Any:
        work_s = self.work_s
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                body = {}
            if isinstance(body, dict) and "work_s" in body:
                try:
                    work_s = _work_s(body["work_s"])
                except ValueError as err:
                    return JSONResponse({"error": str(err)}, status_code=400)
        await asyncio.sleep(work_s)
        self.served += 1
        return {"work_s": work_s, "served": self.served, **replica_identity()}


class SpareReplicaPolicy:
    """Autoscaling policy: what the load needs, plus ``spare`` idle replicas while busy.

    Serve calls an instance (made once, with ``policy_kwargs``) on every control-loop tick
    (about ten times a second) in the controller. ``ctx.total_num_requests`` is the requests
    in flight and queued over all replicas, averaged over ``look_back_period_s``. The returned
    count still goes through ``upscale_delay_s`` / ``downscale_delay_s`` and the scaling
    factors, and is kept between ``min_replicas`` and ``max_replicas``.
    """

    def __init__(self, target_per_replica: float = 2.0, spare: int = 1) -> None:
        if target_per_replica <= 0 or spare < 0:
            raise ValueError("target_per_replica must be > 0 and spare >= 0")
        self.target_per_replica = float(target_per_replica)
        self.spare = int(spare)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        ongoing = float(ctx.total_num_requests)
        if ongoing > 0:
            desired = math.ceil(ongoing / self.target_per_replica) + self.spare
        else:
            desired = ctx.capacity_adjusted_min_replicas
        desired = max(ctx.capacity_adjusted_min_replicas,
                      min(ctx.capacity_adjusted_max_replicas, desired))
        state = dict(ctx.policy_state)
        state["ticks"] = int(state.get("ticks", 0)) + 1
        state["last_ongoing"] = round(ongoing, 2)
        return desired, state


app = TimedWork.bind()
