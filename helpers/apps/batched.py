"""A deep model on the CPU, served batched (``@serve.batch``) and unbatched: lesson 06's subject.

:class:`DeepScorer` is a stack of ``depth`` dense layers of ``width`` x ``width`` float32 weights
(torch, fixed seed: every replica has exactly the same weights) on top of the hashing
embedding of :mod:`helpers.apps.model`. It stands in for any network whose weights are larger
than the CPU's caches: scoring *one* input is a matrix-vector product per layer, which must
stream every weight from memory for a few arithmetic operations each; scoring *32* inputs at
once is a matrix-matrix product that reads the weights once for all of them. That, not Serve,
is why batching pays (on a GPU even more so), and :meth:`DeepScorer.seconds_per_call` measures
it directly.

Two deployments of the same model:

* ``BatchedScorer`` - ``@serve.batch``: requests that arrive close together are scored in one
  call, up to ``max_batch_size`` of them, waiting at most ``batch_wait_timeout_s`` for a batch
  to fill. Both come from ``user_config`` and change in place (``reconfigure`` calls the
  batch handler's ``set_max_batch_size`` / ``set_batch_wait_timeout_s``: no restart).
* ``UnbatchedScorer`` - one request, one call.

Each answer says which batch it was part of: ``batch_size`` (how many requests shared the
call), ``max_batch_size`` and ``batch_wait_timeout_s`` at the time, and the replica.

Run it (``args`` choose the variant and the model's size)::

    serve run helpers.apps.batched:build_app batched=true
    # YAML: import_path: helpers.apps.batched:build_app, args: {batched: true, depth: 16}

Introduced in notebooks/06_batching.ipynb.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from starlette.requests import Request

from helpers.apps.identity import replica_identity
from helpers.apps.model import EMBEDDING_DIM, embed
from helpers.apps.text_input import missing_text_response, read_text

__all__ = ["DeepScorer", "BatchedScorer", "UnbatchedScorer", "DEFAULT_BATCHING", "BatchingConfig",
           "check_batching_config", "build_app"]

#: ``user_config`` of ``BatchedScorer`` unless a config says otherwise.
DEFAULT_BATCHING: dict[str, Any] = {"max_batch_size": 16, "batch_wait_timeout_s": 0.01}


class DeepScorer:
    """``depth`` dense tanh layers of ``width`` units over a text's hashing embedding.

    Deterministic: the weights come from a fixed seed, and each text's score depends on that
    text only (not on the others in its batch), up to float rounding.
    """

    def __init__(self, *, width: int = 2048, depth: int = 16, seed: int = 0, threads: int = 1) -> None:
        import torch

        if width < 2 or depth < 1 or threads < 1:
            raise ValueError(f"need width >= 2, depth >= 1, threads >= 1 (got {width}, {depth}, {threads})")
        torch.set_num_threads(threads)
        gen = torch.Generator().manual_seed(seed)
        scale = width ** -0.5
        self.width, self.depth = width, depth
        self.projection = torch.randn(EMBEDDING_DIM, width, generator=gen) * (EMBEDDING_DIM ** -0.5)
        self.layers = [torch.randn(width, width, generator=gen) * scale for _ in range(depth)]
        self.head = torch.randn(width, 2, generator=gen) * scale

    @property
    def weight_bytes(self) -> int:
        """Memory the weights take (float32)."""
        return 4 * (EMBEDDING_DIM * self.width + self.depth * self.width ** 2 + 2 * self.width)

    def scores(self, texts: Sequence[str]) -> list[float]:
        """Probability of class 1 for each text, all in one forward pass."""
        import torch

        x = torch.from_numpy(np.stack([embed(t) for t in texts]).astype(np.float32))
        with torch.inference_mode():
            h = x @ self.projection
            for weight in self.layers:
                h = torch.tanh(h @ weight)
            probs = torch.softmax(h @ self.head, dim=-1)[:, 1]
        return [float(p) for p in probs]

    def seconds_per_call(self, batch_size: int, *, repeats: int = 5) -> float:
        """Median wall time of one forward pass over ``batch_size`` texts (after a warm-up)."""
        texts = [f"text number {i}" for i in range(batch_size)]
        self.scores(texts)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            self.scores(texts)
            times.append(time.perf_counter() - started)
        return float(np.median(times))


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
    out = {"text": text, "label": "positive" if score >= 0.5 else "negative",
           "score": round(score, 5), "batch_size": batch_size}
    if batching is not None:
        out.update(batching)
    return {**out, **replica_identity()}


class _ScorerReplica:
    """The model in a replica. Forward passes run one at a time in a worker thread, so the
    replica's event loop keeps accepting requests (and forming the next batch) meanwhile."""

    def __init__(self, width: int = 2048, depth: int = 16, threads: int = 1) -> None:
        self.model = DeepScorer(width=width, depth=depth, threads=threads)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")

    async def _scores(self, texts: list[str]) -> list[float]:
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
        return [_answer(t, s, len(texts), self.batching) for t, s in zip(texts, scores)]

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
