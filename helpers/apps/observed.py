# Generated from notebooks/09_observability.ipynb (cell 6); edit the lesson, then run `python -m helpers.lessons generate`.
"""An observable service: the tiny classifier behind FastAPI, with custom metrics.

``ObservedModel`` measures what only its code knows with ``ray.serve.metrics``: a ``Counter``
of predictions by label, a ``Gauge`` of requests in flight, a ``Histogram`` of the model's own
inference time in milliseconds. Serve adds the ``application``, ``deployment`` and ``replica``
tags; Ray exports them, prefixed ``ray_``, at every node's Prometheus endpoint, beside
Serve's own metrics.

``POST /predict`` ``{"text": ..., "work_ms": 0}`` answers the label and score; ``work_ms``
(0-2000) adds that much waiting, to shape a latency distribution.

Introduced in notebooks/09_observability.ipynb.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import metrics

from helpers.apps.model import SentimentModel

#: Bucket boundaries (ms) of the inference-time histogram.
INFERENCE_MS_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]

api = FastAPI(title="Ray Serve Workbook observed model")


class PredictRequest(BaseModel):
    """Body of ``POST /predict``."""

    text: str = Field(min_length=1, max_length=2000)
    work_ms: float = Field(0.0, ge=0.0, le=2000.0)


@serve.deployment(name="ObservedModel", ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class ObservedModel:
    """The classifier behind FastAPI, with three custom metrics."""

    def __init__(self) -> None:
        self.model = SentimentModel.train()
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

    def _in_flight_changed(self, change: int) -> None:
        """A request came in (+1) or finished (-1): keep the gauge up to date."""
        self.in_flight += change
        self.in_flight_gauge.set(self.in_flight)

    def _predicted(self, label: str, elapsed_ms: float) -> None:
        """One prediction made: count it, with its label, and observe its time."""
        self.predictions.inc(tags={"label": label})
        self.inference_ms.observe(elapsed_ms)

    @api.post("/predict")
    async def predict(self, body: PredictRequest) -> dict[str, Any]:
        self._in_flight_changed(+1)
        try:
            started = time.perf_counter()
            if body.work_ms:
                await asyncio.sleep(body.work_ms / 1000)
            score = self.model.score(body.text)
            label = "positive" if score >= 0.5 else "negative"
            self._predicted(label, (time.perf_counter() - started) * 1000)
        finally:
            self._in_flight_changed(-1)
        return {"label": label, "score": round(score, 4), "pid": os.getpid()}


app = ObservedModel.bind()
