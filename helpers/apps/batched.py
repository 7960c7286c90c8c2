# Generated from notebooks/06_batching.ipynb (cell 9); edit the lesson, then run `python -m helpers.lessons generate`.
"""Lesson 06's model served two ways: batched with ``@serve.batch``, and one request at a time.

* ``BatchedScorer``: requests that arrive close together are scored in one forward pass, up
  to ``max_batch_size`` of them, waiting at most ``batch_wait_timeout_s`` for a batch to fill.
  Both come from ``user_config`` and change in place (``reconfigure`` calls the batch
  handler's ``set_max_batch_size`` / ``set_batch_wait_timeout_s``: no restart).
* ``UnbatchedScorer``: one request, one forward pass.

Each answer says how many requests shared its forward pass (``batch_size``), the batch
parameters at the time (batched only), and the replica. The model is
:class:`helpers.apps.deep_scorer.DeepScorer`. Run it (``args`` choose the variant and the
model's size)::

    serve run helpers.apps.batched:build_app batched=true depth=16
    # YAML: import_path: helpers.apps.batched:build_app, args: {batched: true, depth: 16}

Introduced in notebooks/06_batching.ipynb.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from starlette.requests import Request

from helpers.apps.deep_scorer import DeepScorer
from helpers.apps.identity import replica_identity
from helpers.apps.text_input import missing_text_response, read_text

__all__ = ["BatchedScorer", "UnbatchedScorer", "DEFAULT_BATCHING", "BatchingConfig",
           "check_batching_config", "build_app"]

#: ``user_config`` of ``BatchedScorer`` unless a config says otherwise.
DEFAULT_BATCHING: dict[str, Any] = {"max_batch_size": 16, "batch_wait_timeout_s": 0.01}


class BatchingConfig(BaseModel):
    """``BatchedScorer``'s ``user_config``; unknown keys are errors (a typo must not pass)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(DEFAULT_BATCHING["max_batch_size"], ge=1, strict=True)
    batch_wait_timeout_s: float = Field(DEFAULT_BATCHING["batch_wait_timeout_s"], ge=0.0)


def check_batching_config(config: Any) -> dict[str, Any]:
    """The full batching ``user_config`` (defaults filled in), or ValueError naming the problem."""
    try:
        return BatchingConfig.model_validate(config).model_dump()
    except ValidationError as err:
        raise ValueError(f"bad batching user_config {config!r}: {err}") from err


def _answer(text: str, score: float, batch_size: int, batching: dict[str, Any] | None) -> dict[str, Any]:
    """One text's answer: its label and score, how many texts shared the forward pass."""
    out = {"text": text, "label": "positive" if score >= 0.5 else "negative",
           "score": round(score, 5), "batch_size": batch_size}
    if batching is not None:
        out.update(batching)
    return {**out, **replica_identity()}


class _ScorerReplica:
    """The model in a replica; forward passes run one at a time in a worker thread."""

    def __init__(self, width: int = 2048, depth: int = 16, threads: int = 1) -> None:
        self.model = DeepScorer(width=width, depth=depth, threads=threads)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")

    async def _scores(self, texts: list[str]) -> list[float]:
        """One forward pass over ``texts``; one score per text, in order."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, self.model.scores, texts)


@serve.deployment(name="BatchedScorer", ray_actor_options={"num_cpus": 1},
                  max_ongoing_requests=64, user_config=DEFAULT_BATCHING)
class BatchedScorer(_ScorerReplica):
    """The model behind ``@serve.batch``: one forward pass per batch of requests."""

    def __init__(self, width: int = 2048, depth: int = 16, threads: int = 1) -> None:
        super().__init__(width, depth, threads)
        self.batching = dict(DEFAULT_BATCHING)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config`` changed (or the replica started): retune the batcher in place."""
        self.batching = check_batching_config(config)
        self.score_batch.set_max_batch_size(self.batching["max_batch_size"])
        self.score_batch.set_batch_wait_timeout_s(self.batching["batch_wait_timeout_s"])

    @serve.batch(max_batch_size=DEFAULT_BATCHING["max_batch_size"],
                 batch_wait_timeout_s=DEFAULT_BATCHING["batch_wait_timeout_s"])
    async def score_batch(self, texts: list[str]) -> list[dict[str, Any]]:
        """Called with a *list* of texts (Serve gathers them); returns one answer per text."""
        scores = await self._scores(texts)
        return [_answer(text, score, len(texts), self.batching) for text, score in zip(texts, scores)]

    async def __call__(self, request: Request) -> Any:
        text = await read_text(request)
        if text is None:
            return missing_text_response()
        return await self.score_batch(text)  # one text in; Serve batches the calls


@serve.deployment(name="UnbatchedScorer", ray_actor_options={"num_cpus": 1},
                  max_ongoing_requests=64)
class UnbatchedScorer(_ScorerReplica):
    """The same model, one request per forward pass."""

    async def __call__(self, request: Request) -> Any:
        text = await read_text(request)
        if text is None:
            return missing_text_response()
        return _answer(text, (await self._scores([text]))[0], 1, None)


def build_app(args: dict[str, Any]) -> Any:
    """Application builder for configs: ``{"batched": true, "width": 2048, "depth": 16}``."""
    args = dict(args or {})
    batched = str(args.pop("batched", True)).lower() in ("1", "true", "yes")
    sizes = {k: int(args.pop(k)) for k in ("width", "depth", "threads") if k in args}
    if args:
        raise ValueError(f"unknown args {sorted(args)}; allowed: batched, width, depth, threads")
    return (BatchedScorer if batched else UnbatchedScorer).bind(**sizes)
