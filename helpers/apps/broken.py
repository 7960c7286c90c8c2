# Generated from notebooks/10a_cluster_and_config_failures.ipynb (cell 4); edit the lesson, then run `python -m helpers.lessons generate`.
"""Deployments that fail on purpose, one way each: lesson 10's injected faults.

* :class:`FailingModel` - its constructor raises (a model file that is not there), so the
  application ends ``DEPLOY_FAILED`` and the traceback is in Serve's status and the
  controller's log: ``failing_app``; :func:`failing_model` is the same as a builder whose
  ``args: {weights_path: ...}`` can point it at a file that exists (the fix).
* :class:`SlowEcho` - answers after ``seconds`` of waiting (``asyncio.sleep``, no CPU), with a
  small ``max_ongoing_requests``: requests slower than ``request_timeout_s``, and queueing in
  front of a busy replica: ``slow_app``.
* :class:`LeakyCache` - keeps ``mb`` megabytes per request in a cache that only grows, until
  Ray's memory monitor kills it: ``leaky_app``. ``user_config: {max_mb: 300}`` bounds the
  cache (oldest entries dropped first): the fix.

HTTP (all three): ``POST {"seconds": 2.0}`` to ``SlowEcho``, ``POST {"mb": 100}`` to
``LeakyCache``; both answer with their pid, the time they waited or the memory they hold.
Run one::

    serve run helpers.apps.broken:slow_app
    # YAML:  import_path: helpers.apps.broken:leaky_app

Introduced in notebooks/10a_cluster_and_config_failures.ipynb (and used in 10b_runtime_failures.ipynb).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from ray import serve
from starlette.requests import Request

__all__ = ["FailingModel", "SlowEcho", "LeakyCache", "failing_app", "failing_model", "slow_app",
           "leaky_app", "DEFAULT_WEIGHTS", "MAX_SECONDS", "MAX_MB"]

DEFAULT_WEIGHTS = "/models/sentiment-v3/weights.bin"  # where FailingModel looks by default

MAX_SECONDS = 120.0  # the longest a SlowEcho request may ask to wait
MAX_MB = 512  # the most a LeakyCache request may add


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {}


def _rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


@serve.deployment(name="FailingModel", ray_actor_options={"num_cpus": 0.1},
                  graceful_shutdown_timeout_s=1)
class FailingModel:
    """A model whose weights are not where the code looks: the constructor raises."""

    def __init__(self, weights_path: str = DEFAULT_WEIGHTS) -> None:
        if not os.path.exists(weights_path):
            raise FileNotFoundError(f"model weights not found at {weights_path}")
        self.weights_path = weights_path
        self.weights_bytes = os.path.getsize(weights_path)

    def __call__(self, request: Request) -> dict[str, Any]:
        return {"weights_path": self.weights_path, "weights_bytes": self.weights_bytes,
                "pid": os.getpid()}


@serve.deployment(name="SlowEcho", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=2,
                  graceful_shutdown_timeout_s=1)
class SlowEcho:
    """Waits ``seconds`` (from the JSON body; default 1) and says so."""

    async def __call__(self, request: Request) -> dict[str, Any]:
        seconds = float((await _body(request)).get("seconds", 1.0))
        if not 0.0 <= seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be in [0, {MAX_SECONDS:g}], got {seconds}")
        started = time.monotonic()
        await asyncio.sleep(seconds)
        return {"pid": os.getpid(), "waited_s": round(time.monotonic() - started, 3)}


@serve.deployment(name="LeakyCache", ray_actor_options={"num_cpus": 0.1},
                  graceful_shutdown_timeout_s=1)
class LeakyCache:
    """A "cache" that keeps every request's data forever: a memory leak, on purpose."""

    def __init__(self) -> None:
        self.cache: list[bytes] = []
        self.max_mb: int | None = None  # None: no bound, the leak

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config: {max_mb: N}`` keeps at most N MB (oldest dropped first)."""
        max_mb = config.get("max_mb")
        self.max_mb = None if max_mb is None else int(max_mb)
        self._trim()

    def _trim(self) -> None:
        while self.max_mb is not None and self.cache and \
                sum(map(len, self.cache)) > self.max_mb * 2**20:
            self.cache.pop(0)

    async def __call__(self, request: Request) -> dict[str, Any]:
        mb = int((await _body(request)).get("mb", 50))
        if not 0 <= mb <= MAX_MB:
            raise ValueError(f"mb must be in [0, {MAX_MB}], got {mb}")
        self.cache.append(b"x" * (mb * 2**20))  # written, so the pages are really used
        self._trim()
        return {"pid": os.getpid(), "held_mb": sum(map(len, self.cache)) // 2**20,
                "rss_mb": _rss_mb()}


def failing_model(args: dict[str, str]) -> Any:
    """Application builder: ``import_path: helpers.apps.broken:failing_model`` with
    ``args: {weights_path: /path/to/weights}`` (default :data:`DEFAULT_WEIGHTS`)."""
    return FailingModel.bind(str(args.get("weights_path", DEFAULT_WEIGHTS)))


failing_app = FailingModel.bind()
slow_app = SlowEcho.bind()
leaky_app = LeakyCache.bind()
