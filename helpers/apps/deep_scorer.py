"""A deep model on the CPU whose speed depends on the batch size: lesson 06's stand-in model.

:class:`DeepScorer` is a stack of ``depth`` dense layers of ``width`` x ``width`` float32 weights
(torch, fixed seed: every replica has exactly the same weights) on top of the hashing
embedding of :mod:`helpers.apps.model`. It stands in for any network whose weights are larger
than the CPU's caches: scoring *one* input is a matrix-vector product per layer, which must
stream every weight from memory for a few arithmetic operations each; scoring *32* inputs at
once is a matrix-matrix product that reads the weights once for all of them. That, not Serve,
is why batching pays (on a GPU even more so), and :meth:`DeepScorer.seconds_per_call` measures
it directly.

The deployments that serve it (``BatchedScorer`` with ``@serve.batch``, ``UnbatchedScorer``)
are written in notebooks/06_batching.ipynb (package copy: :mod:`helpers.apps.batched`).

    model = DeepScorer(width=512, depth=64)
    model.scores(["great service", "awful food"])  # one forward pass for both

Introduced in notebooks/06_batching.ipynb.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from helpers.apps.model import EMBEDDING_DIM, embed

__all__ = ["DeepScorer"]


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
