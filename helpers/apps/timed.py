# Generated from notebooks/05_autoscaling.ipynb (cell 5); edit the lesson, then run `python -m helpers.lessons generate`.
"""Requests that take a known time: lesson 05's test bench for autoscaling.

``TimedWork`` answers every request after ``work_s`` seconds of *waiting* (``asyncio.sleep``),
so the number of requests in flight per replica, which Serve's autoscaler steers by, is
exactly ``rate x work_s`` and does not depend on how busy the CPU is.

* ``POST {}`` (or ``GET``) -> ``{"work_s": 0.5, "served": ..., "replica": ..., "pid": ..., "node": ...}``;
  ``{"work_s": 0.05}`` in the body overrides the time for that request.
* ``user_config: {"work_s": 0.5}`` sets the default time, in place (no restart).

Run it: ``serve run timed:app`` in the folder that holds this file.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from helpers.apps.identity import replica_identity

__all__ = ["TimedWork", "app", "MAX_WORK_S"]

MAX_WORK_S = 30.0  # longest wait a request may ask for


def _work_s(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_WORK_S:
        raise ValueError(f"work_s must be a number of seconds in [0, {MAX_WORK_S}], got {value!r}")
    return float(value)


@serve.deployment(
    name="TimedWork",
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=8,
    user_config={"work_s": 0.5},
    graceful_shutdown_wait_loop_s=0.5,
    graceful_shutdown_timeout_s=5.0,
)
class TimedWork:
    """Waits ``work_s`` seconds per request, then says which replica answered."""

    def __init__(self) -> None:
        self.work_s = 0.5
        self.served = 0

    def reconfigure(self, config: dict[str, Any]) -> None:
        unknown = sorted(set(config) - {"work_s"})
        if unknown:
            raise ValueError(f"unknown user_config keys {unknown}; allowed: ['work_s']")
        self.work_s = _work_s(config.get("work_s", 0.5))

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


app = TimedWork.bind()
