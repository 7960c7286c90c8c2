# Generated from notebooks/07b_composition_and_canary.ipynb (cell 5); edit the lesson, then run `python -m helpers.lessons generate`.
"""Model composition as a pipeline: preprocessing, model, postprocessing, each a deployment.

Four deployments make one application. ``Pipeline`` (the ingress) holds a
:class:`~ray.serve.handle.DeploymentHandle` to each stage and chains them::

    cleaned = self.preprocess.clean.remote(text)        # a DeploymentResponse, not awaited
    scored = self.model.score.remote(cleaned)           # passed on as it is: Serve resolves it
    answer = await self.postprocess.finish.remote(scored)

Passing one stage's ``DeploymentResponse`` straight into the next call lets Serve hand the
result from replica to replica; the ingress only waits for the last stage. Each stage scales
on its own (``num_replicas``, ``ray_actor_options`` per deployment in a YAML config), which is
the point of splitting a model into stages: the heavy model gets the resources, the cheap text
handling does not.

Every stage appends ``{stage, replica, pid, ms}`` to the answer's ``trace``, so a caller sees
the path a request took. The same functions run in-process as :func:`run_locally`, the
reference the lesson checks the served answers against.

Run it::

    serve run helpers.apps.pipeline:app
    curl -X POST localhost:PORT/ -d '{"text": "  GREAT   service!!  "}'

Introduced in notebooks/07b_composition_and_canary.ipynb.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request

from helpers.apps.identity import replica_identity
from helpers.apps.model import SentimentModel
from helpers.apps.text_input import missing_text_response, read_text

__all__ = ["MAX_WORDS", "clean_text", "label_of", "run_locally", "Preprocess", "SentimentStage",
           "Postprocess", "Pipeline", "app"]

MAX_WORDS = 64  # longer texts are cut to this many words before the model sees them


def clean_text(text: str, max_words: int = MAX_WORDS) -> dict[str, Any]:
    """Lower-case, keep letters/digits/apostrophes, collapse spaces, cut to ``max_words``."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {"text": " ".join(words[:max_words]), "words": min(len(words), max_words),
            "truncated": len(words) > max_words}


def label_of(score: float, threshold: float = 0.5) -> dict[str, Any]:
    """Label, and a confidence in [0, 1]: how far the score is from the threshold."""
    positive = score >= threshold
    span = (1.0 - threshold) if positive else threshold
    return {"label": "positive" if positive else "negative",
            "confidence": round(abs(score - threshold) / span, 4)}


def run_locally(text: str, model: SentimentModel | None = None) -> dict[str, Any]:
    """The pipeline's answer computed in this process (no Serve): the reference."""
    model = model or SentimentModel.train()
    cleaned = clean_text(text)
    score = round(model.score(cleaned["text"]), 6)
    return {**cleaned, "score": score, **label_of(score)}


def _trace(stage: str, started: float) -> dict[str, Any]:
    who = replica_identity()
    return {"stage": stage, "replica": who["replica"], "pid": who["pid"], "node": who["node"],
            "ms": round((time.perf_counter() - started) * 1000, 3)}


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=32)
class Preprocess:
    """Stage 1: text clean-up (cheap)."""

    def clean(self, text: str) -> dict[str, Any]:
        started = time.perf_counter()
        return {**clean_text(text), "trace": [_trace("preprocess", started)]}


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16)
class SentimentStage:
    """Stage 2: the model (the stage that would get a GPU)."""

    def __init__(self) -> None:
        self.model = SentimentModel.train()

    def score(self, item: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        score = round(self.model.score(item["text"]), 6)
        return {**item, "score": score, "trace": [*item["trace"], _trace("model", started)]}


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=32)
class Postprocess:
    """Stage 3: label and confidence from the score."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def finish(self, item: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        return {**item, **label_of(item["score"], self.threshold),
                "trace": [*item["trace"], _trace("postprocess", started)]}


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=32)
class Pipeline:
    """The ingress: one HTTP request in, three handle calls chained, one answer out."""

    def __init__(self, preprocess: DeploymentHandle, model: DeploymentHandle,
                 postprocess: DeploymentHandle) -> None:
        self.preprocess = preprocess
        self.model = model
        self.postprocess = postprocess

    async def run(self, text: str) -> dict[str, Any]:
        started = time.perf_counter()
        answer: dict[str, Any] = {"trace": []}
        cleaned = self.preprocess.clean.remote(text)
        scored = self.model.score.remote(cleaned)  # no await: Serve passes the result on
        answer = await self.postprocess.finish.remote(scored)
        answer["trace"].append(_trace("pipeline (ingress, total)", started))
        return answer

    async def __call__(self, request: Request) -> Any:
        """HTTP: ``POST {"text": ...}`` or ``GET ?text=...``."""
        text = await read_text(request)
        if text is None:
            return missing_text_response()
        return await self.run(text)


app = Pipeline.bind(Preprocess.bind(), SentimentStage.bind(), Postprocess.bind())
