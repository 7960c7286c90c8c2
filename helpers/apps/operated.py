# Generated from notebooks/09_observability.ipynb (cell 33); edit the lesson, then run `python -m helpers.lessons generate`.
"""A model service with the routes operators use: ``/health`` and ``/debug``, done right.

``OperatedModel`` is a FastAPI ingress in front of the tiny classifier:

* ``GET /health`` - readiness for a load balancer or a probe: 200 with the model's status and
  the process's memory when the model is loaded, else 503. It calls nothing downstream, so a
  slow dependency cannot turn health checks into an outage. Serve's *own* health check is
  :meth:`OperatedModel.check_health`, called every ``health_check_period_s``.
* ``GET /debug`` - process facts for troubleshooting (pid, node, memory, uptime, requests
  served), off unless ``user_config: {debug: true}`` (404 otherwise), and never the
  environment, tokens or request bodies.
* ``POST /predict`` ``{"text": ...}`` - the label and score.

Introduced in notebooks/09_observability.ipynb.
"""

from __future__ import annotations

import time
from typing import Any

import psutil
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from ray import serve

from helpers.apps.identity import replica_identity
from helpers.apps.model import SentimentModel

api = FastAPI(title="Ray Serve Workbook operated model")


def memory_mib() -> float:
    """This process's resident memory (RSS), MiB."""
    return round(psutil.Process().memory_info().rss / 2**20, 1)


@serve.deployment(name="OperatedModel", ray_actor_options={"num_cpus": 0.25},
                  health_check_period_s=2, health_check_timeout_s=5, user_config={"debug": False})
@serve.ingress(api)
class OperatedModel:
    """The classifier behind FastAPI, with ``/health`` and ``/debug``."""

    def __init__(self) -> None:
        self.model: SentimentModel | None = SentimentModel.train()
        self.started_at = time.time()
        self.debug_enabled = False
        self.served = 0

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config: {debug: true}`` turns ``/debug`` on (in place, no restart)."""
        self.debug_enabled = bool(config.get("debug", False))

    def check_health(self) -> None:
        """Serve's health check: raise if this replica cannot serve (here: no model)."""
        if self.model is None:
            raise RuntimeError("the model is not loaded")

    @api.post("/predict")
    def predict(self, body: dict[str, str]) -> dict[str, Any]:
        score = self.model.score(body["text"])
        self.served += 1
        return {"label": "positive" if score >= 0.5 else "negative", "score": round(score, 4)}

    @api.get("/health")
    def health(self) -> Any:
        ready = self.model is not None
        body = {"status": "ok" if ready else "unavailable", "model_loaded": ready,
                "rss_mib": memory_mib()}
        return body if ready else JSONResponse(body, status_code=503)

    @api.get("/debug")
    def debug(self) -> Any:
        if not self.debug_enabled:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return {**replica_identity(), "rss_mib": memory_mib(),
                "uptime_s": round(time.time() - self.started_at, 1), "requests_served": self.served}


app = OperatedModel.bind()
