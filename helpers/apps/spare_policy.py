# Generated from notebooks/05_autoscaling.ipynb (cell 23); edit the lesson, then run `python -m helpers.lessons generate`.
"""A custom autoscaling policy for Ray Serve 2.60: what the load needs, plus spare replicas.

Named in a deployment's ``autoscaling_config``::

    policy:
      policy_function: spare_policy:SpareReplicaPolicy
      policy_kwargs: {target_per_replica: 2, spare: 1}
"""

from __future__ import annotations

import math
from typing import Any


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
        desired, state = ctx.capacity_adjusted_min_replicas, dict(ctx.policy_state)
        ongoing = float(ctx.total_num_requests)
        if ongoing > 0:
            desired = math.ceil(ongoing / self.target_per_replica) + self.spare
        desired = max(ctx.capacity_adjusted_min_replicas,
                      min(ctx.capacity_adjusted_max_replicas, desired))
        state["ticks"] = int(state.get("ticks", 0)) + 1
        state["last_ongoing"] = round(ongoing, 2)
        return desired, state
