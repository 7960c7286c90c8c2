"""An observable service: custom metrics, and health and debug endpoints built the right way.

``ObservedModel`` is a FastAPI ingress in front of the tiny classifier (:mod:`helpers.apps.model`)
that shows what a production deployment adds for operators:

* **Custom metrics** with ``ray.serve.metrics`` (the real API; there is no
  ``metrics.record_metric``): a ``Counter`` of predictions by label, a ``Gauge`` of requests in
  flight, a ``Histogram`` of the model's own inference time in milliseconds. Serve adds the
  ``application``, ``deployment`` and ``replica`` tags; Ray exports them, prefixed ``ray_``,
  at every node's Prometheus endpoint, beside Serve's own metrics.
* ``GET /health`` - a cheap readiness answer for a load balancer: 200 when the model is
  loaded and the replica is not shutting down, else 503; no call to anything downstream, so a
  slow dependency cannot turn health checks into an outage. Serve's *own* health check is
  :meth:`ObservedModel.check_health`, which Serve calls every ``health_check_period_s``.
* ``GET /debug`` - process facts for troubleshooting (pid, node, memory, uptime, counts), off
  unless ``user_config: {debug: true}`` (404 otherwise), and never the environment, tokens or
  request bodies.
* ``POST /predict`` ``{"text": ..., "work_ms": 0}`` - the classifier's label and score;
  ``work_ms`` (0-2000) adds that much waiting, to shape a latency distribution.

Run it::

    serve run helpers.apps.observed:app

Introduced in notebooks/09_observability.ipynb.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import psutil
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import metrics

from helpers.apps.identity import replica_identity
from helpers.apps.model import SentimentModel

__all__ = ["ObservedModel", "PredictRequest", "INFERENCE_MS_BUCKETS", "api", "app"]

#: Bucket boundaries (ms) of the inference-time histogram.
INFERENCE_MS_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]

api = FastAPI(title="Ray Serve Workbook observed model")


class PredictRequest(BaseModel):
    """Body of ``POST /predict``."""

    text: str = Field(min_length=1, max_length=2000)
    work_ms: float = Field(0.0, ge=0.0, le=2000.0)


@serve.deployment(name="ObservedModel", ray_actor_options={"num_cpus": 0.25},
                  health_check_period_s=2, health_check_timeout_s=5, user_config={"debug": False})
@serve.ingress(api)
class ObservedModel:
    """The classifier behind FastAPI, with custom metrics, ``/health`` and ``/debug``."""

    def __init__(self) -> None:
        self.model: SentimentModel | None = SentimentModel.train()
        self.started_at = time.time()
        self.debug_enabled = False
        self.served = 0
        self.in_flight = 0
        self.predictions = metrics.Counter(
            "workbook_predictions", description="Predictions made, by label.",
            tag_keys=("label",))
        self.in_flight_gauge = metrics.Gauge(
            "workbook_requests_in_flight", description="Requests this replica is working on.")
        self.inference_ms = metrics.Histogram(
            "workbook_inference_ms", description="The model's own time per prediction (ms).",
            boundaries=INFERENCE_MS_BUCKETS)
        self.in_flight_gauge.set(0)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config: {debug: true}`` turns ``/debug`` on (in place, no restart)."""
        self.debug_enabled = bool(config.get("debug", False))

    def check_health(self) -> None:
        """Serve's health check: raise if this replica cannot serve (here: no model)."""
        if self.model is None:
            raise RuntimeError("the model is not loaded")

    @api.post("/predict")
    async def predict(self, body: PredictRequest) -> dict[str, Any]:
        self.in_flight += 1
        self.in_flight_gauge.set(self.in_flight)
        try:
            started = time.perf_counter()
            if body.work_ms:
                await asyncio.sleep(body.work_ms / 1000)
            score = self.model.score(body.text)  # type: ignore[union-attr]
            label = "positive" if score >= 0.5 else "negative"
            self.inference_ms.observe((time.perf_counter() - started) * 1000)
        finally:
            self.in_flight -= 1
            self.in_flight_gauge.set(self.in_flight)
        self.predictions.inc(tags={"label": label})
        self.served += 1
        return {"label": label, "score": round(score, 4), "pid": os.getpid()}

    @api.get("/health")
    def health(self) -> Any:
        ready = self.model is not None
        body = {"status": "ok" if ready else "unavailable",
                "uptime_s": round(time.time() - self.started_at, 1)}
        return body if ready else JSONResponse(body, status_code=503)

    @api.get("/debug")
    def debug(self) -> Any:
        if not self.debug_enabled:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        proc = psutil.Process()
        return {**replica_identity(), "rss_mib": round(proc.memory_info().rss / 2**20, 1),
                "uptime_s": round(time.time() - self.started_at, 1),
                "requests_served": self.served, "in_flight": self.in_flight}


app = ObservedModel.bind()
