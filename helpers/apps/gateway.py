# Generated from notebooks/02a_deployments_and_http.ipynb (cell 35); edit the lesson, then run `python -m helpers.lessons generate`.
"""A FastAPI ingress in front of the classifier, with ``/health`` and ``/debug`` routes.

Two deployments make one application: ``Gateway`` (the HTTP ingress, a FastAPI app) calls
``TextClassifier`` through a :class:`~ray.serve.handle.DeploymentHandle` passed to its
constructor by ``.bind()``.

Routes (under the application's route prefix):

* ``POST /classify`` ``{"text": ...}`` - the classifier's answer plus which gateway replica
  forwarded it;
* ``GET /health`` - 200 ``{"status": "ok", ...}`` when the gateway *and* the classifier answer,
  503 ``"degraded"`` when the classifier does not within 2 s;
* ``GET /debug`` - process facts for troubleshooting: pid, node, memory, threads, requests in
  flight, versions;
* ``GET /slow?seconds=S`` - answers after S seconds (to show timeouts and draining);
* ``GET /docs`` - FastAPI's generated API page.

Run it::

    serve run helpers.apps.gateway:app
    curl localhost:PORT/health

Introduced in notebooks/02a_deployments_and_http.ipynb.
"""

from __future__ import annotations

import asyncio
import platform
import threading
import time
from typing import Any

import psutil
import ray
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from helpers.apps.classifier import TextClassifier
from helpers.apps.identity import replica_identity

__all__ = ["Gateway", "ClassifyRequest", "api", "app"]

api = FastAPI(
    title="Ray Serve Workbook gateway",
    description="A FastAPI ingress deployment in front of the tiny text classifier.",
)


class ClassifyRequest(BaseModel):
    """Body of ``POST /classify``."""

    text: str = Field(min_length=1, max_length=2000, examples=["great service"])


@serve.deployment(
    name="Gateway",
    num_replicas=1,
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=32,
)
@serve.ingress(api)
class Gateway:
    """The application's ingress: HTTP routes that fan in to the classifier deployment."""

    def __init__(self, classifier: DeploymentHandle) -> None:
        self.classifier = classifier
        self.started_at = time.time()
        self.requests_served = 0
        self.in_flight = 0

    @api.post("/classify")
    async def classify(self, body: ClassifyRequest) -> dict[str, Any]:
        self.in_flight += 1
        try:
            result = await self.classifier.classify.remote(body.text)
        finally:
            self.in_flight -= 1
        self.requests_served += 1
        return {"result": result, "gateway": replica_identity()}

    @api.get("/health")
    async def health(self) -> Any:
        try:
            classifier_ok = await asyncio.wait_for(self.classifier.ready.remote(), timeout=2.0)
        except Exception:  # noqa: BLE001 - timeout or a dead replica: both mean "degraded"
            classifier_ok = False
        body = {
            "status": "ok" if classifier_ok else "degraded",
            "classifier": "ok" if classifier_ok else "unreachable",
            "uptime_s": round(time.time() - self.started_at, 3),
            "timestamp": time.time(),
            "replica": replica_identity()["replica"],
        }
        return body if classifier_ok else JSONResponse(body, status_code=503)

    @api.get("/debug")
    def debug(self) -> dict[str, Any]:
        proc = psutil.Process()
        return {
            **replica_identity(),
            "rss_mib": round(proc.memory_info().rss / 2**20, 1),
            "threads": threading.active_count(),
            "in_flight": self.in_flight,
            "requests_served": self.requests_served,
            "uptime_s": round(time.time() - self.started_at, 3),
            "python": platform.python_version(),
            "ray": ray.__version__,
            "downstream": self.classifier.deployment_name,
        }

    @api.get("/slow")
    async def slow(self, seconds: float = Query(1.0, ge=0.0, le=60.0)) -> dict[str, Any]:
        self.in_flight += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            self.in_flight -= 1
        return {"slept_s": seconds, **replica_identity()}


app = Gateway.bind(TextClassifier.bind())
