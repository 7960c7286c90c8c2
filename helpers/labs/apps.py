"""Workloads for the labs: a model on a simulated accelerator, and a throughput meter.

Lab 04 (batching) needs a model whose cost is like a GPU's: every call to the device has a
fixed overhead (launching kernels, moving data) plus a small cost per item, and the device
runs one batch at a time. :class:`SimulatedAccelerator` is exactly that, in asyncio: a lock
(one batch at a time) and a sleep of ``overhead_s + per_item_s * len(batch)``. The scores are
the tiny sentiment model's (:mod:`helpers.apps.model`), so a batched and an unbatched
deployment must give the same answer for the same text: a check can tell whether a batch's
results went back to the right callers.

:class:`AcceleratorBacked` is the base class of the lab's deployments: it owns one device and
answers ``stats()`` (how many batches of which sizes the device ran), which the checks read.

Usage (in a deployment)::

    @serve.deployment
    class UnbatchedScorer(AcceleratorBacked):
        async def score(self, text: str) -> float:
            return (await self.forward([text]))[0]

    rps = measure_throughput(serve.get_app_handle(name), "score", texts)

Introduced in labs/source/lab04_batching.ipynb.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Sequence
from typing import Any

from helpers.apps.model import SentimentModel

__all__ = ["SimulatedAccelerator", "AcceleratorBacked", "measure_throughput", "lab_texts"]


class SimulatedAccelerator:
    """One device: runs one batch at a time, each costing ``overhead_s + per_item_s * n``."""

    def __init__(self, overhead_s: float = 0.5, per_item_s: float = 0.001) -> None:
        self.overhead_s = overhead_s
        self.per_item_s = per_item_s
        self.model = SentimentModel.train()
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self._lock = asyncio.Lock()

    async def forward(self, texts: Sequence[str]) -> list[float]:
        """Scores of ``texts`` (probability of positive), computed as one batch."""
        if isinstance(texts, str):
            raise TypeError("forward() takes a list of texts, not one string")
        async with self._lock:  # the device runs one batch at a time
            await asyncio.sleep(self.overhead_s + self.per_item_s * len(texts))
            self.batch_sizes[len(texts)] += 1
            return [round(self.model.score(t), 6) for t in texts]


class AcceleratorBacked:
    """Base class for lab 04's deployments: ``self.forward(texts)`` and ``stats()``."""

    def __init__(self, overhead_s: float = 0.5, per_item_s: float = 0.001) -> None:
        self.device = SimulatedAccelerator(overhead_s, per_item_s)

    async def forward(self, texts: Sequence[str]) -> list[float]:
        return await self.device.forward(texts)

    def stats(self) -> dict[str, Any]:
        """Batches the device ran: how many of each size, the largest and the mean size."""
        sizes = self.device.batch_sizes
        batches = sum(sizes.values())
        items = sum(size * count for size, count in sizes.items())
        return {
            "batches": batches,
            "items": items,
            "largest": max(sizes, default=0),
            "mean_size": round(items / batches, 2) if batches else 0.0,
            "sizes": dict(sorted(sizes.items())),
        }

    def reset_stats(self) -> None:
        self.device.batch_sizes.clear()


def lab_texts(count: int) -> list[str]:
    """``count`` different short review texts (the same list every time)."""
    words = [
        "great",
        "awful",
        "friendly",
        "slow",
        "delicious",
        "rude",
        "fast",
        "broken",
        "wonderful",
        "poor",
        "helpful",
        "ugly",
    ]
    return [
        f"the service was {words[i % len(words)]} and {words[(i * 7 + 3) % len(words)]} #{i}"
        for i in range(count)
    ]


def measure_throughput(
    handle: Any, method: str, inputs: Sequence[Any], *, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Send every input at once through a deployment handle; requests per second and results.

    Runs in a worker thread, so it works from a notebook cell (where an event loop runs and
    a blocking ``.result()`` is refused) as well as from a script. One call goes first, alone
    and untimed: a new handle's router starts on its first call (a second or more on a busy
    machine), which is not the deployment's throughput.
    """

    def burst() -> dict[str, Any]:
        getattr(handle, method).remote(inputs[0]).result(timeout_s=timeout_s)
        started = time.perf_counter()
        responses = [getattr(handle, method).remote(x) for x in inputs]
        results = [r.result(timeout_s=timeout_s) for r in responses]
        seconds = time.perf_counter() - started
        return {
            "requests": len(inputs),
            "seconds": round(seconds, 3),
            "rps": round(len(inputs) / seconds, 1) if seconds > 0 else 0.0,
            "results": results,
        }

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(burst).result()
