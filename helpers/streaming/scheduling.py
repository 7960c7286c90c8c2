"""The scheduler's two decisions, without Ray: when a batch is ready, and which worker gets it.

* :class:`DynamicBatcher` - requests queue up; a batch leaves when it holds
  ``max_batch_size`` requests, or when its first request has waited ``batch_timeout_ms``,
  whichever comes first (with dynamic batching off, every request leaves alone, at once). The
  settings can change while it runs; a waiting batch sees the change at once.
* :class:`LoadBalancer` - picks a worker (a model actor) for a batch:
  ``least_loaded`` (fewest tokens still to generate, queued work included), ``round_robin``
  (each worker in turn, whatever it holds) or ``by_memory`` (least KV-cache memory in use
  now, as a ``gpu_memory`` strategy picks the GPU with the most free memory).

The plain-actor scheduler of lesson 12 (:mod:`helpers.streaming.actors`) is these two classes
inside an async Ray actor; keeping them here makes both testable in microseconds.

Usage::

    batcher = DynamicBatcher(BatchSettings(max_batch_size=4, batch_timeout_ms=20))
    batcher.put("request")
    batch, record = await batcher.next_batch()    # after 20 ms: (["request"], size 1, "timeout")
    LoadBalancer("least_loaded").pick([WorkerLoad(0, 120), WorkerLoad(1, 8)])   # 1

Introduced in notebooks/12_streaming_sessions.ipynb.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from helpers.errors import WorkbookError
from helpers.streaming.config import STRATEGIES, BatchSettings

__all__ = ["BatchRecord", "DynamicBatcher", "WorkerLoad", "LoadBalancer"]

T = TypeVar("T")


@dataclass(frozen=True)
class BatchRecord:
    """One batch that left the queue: its size, how long its first request waited, and why."""

    size: int
    waited_ms: float  # from the first request's arrival to the batch leaving
    reason: str  # "full", "timeout" or "immediate" (dynamic batching off)
    max_batch_size: int  # the settings in force when it left
    batch_timeout_ms: float
    left_at: float  # time.time()


class DynamicBatcher(Generic[T]):
    """An asyncio queue that hands out batches by size or by timeout (see the module doc)."""

    def __init__(self, settings: BatchSettings | None = None) -> None:
        self.settings = settings or BatchSettings()
        self._queue: deque[tuple[float, T]] = deque()  # (monotonic arrival, item)
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, item: T) -> None:
        """Queue ``item`` (a batch waiting for it is woken)."""
        self._queue.append((time.monotonic(), item))
        self._changed.set()

    def remove(self, predicate: Callable[[T], bool]) -> list[T]:
        """Take out (and return) the queued items for which ``predicate`` is true."""
        kept: deque[tuple[float, T]] = deque()
        removed: list[T] = []
        for arrival, item in self._queue:
            (removed.append(item) if predicate(item) else kept.append((arrival, item)))
        self._queue = kept
        self._changed.set()
        return removed

    def items(self) -> list[T]:
        """The queued items, oldest first."""
        return [item for _, item in self._queue]

    def configure(self, settings: BatchSettings) -> None:
        """New settings, in force for the batch being collected too."""
        self.settings = settings
        self._changed.set()

    async def _changes(self, timeout_s: float | None) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass

    async def next_batch(self) -> tuple[list[T], BatchRecord]:
        """Wait for the next batch; return its items (oldest first) and its record."""
        while not self._queue:
            await self._changes(None)
        while True:
            settings = self.settings
            size = settings.max_batch_size if settings.enable_dynamic_batching else 1
            waited = time.monotonic() - self._queue[0][0]
            if not settings.enable_dynamic_batching:
                reason = "immediate"
            elif len(self._queue) >= size:
                reason = "full"
            elif waited * 1000 >= settings.batch_timeout_ms:
                reason = "timeout"
            else:
                await self._changes(settings.batch_timeout_ms / 1000 - waited)
                if not self._queue:  # everything was removed meanwhile
                    return await self.next_batch()
                continue
            items = [self._queue.popleft()[1] for _ in range(min(size, len(self._queue)))]
            return items, BatchRecord(
                len(items),
                round(waited * 1000, 3),
                reason,
                settings.max_batch_size,
                settings.batch_timeout_ms,
                time.time(),
            )


@dataclass(frozen=True)
class WorkerLoad:
    """What the balancer knows about one worker when it decides."""

    index: int
    outstanding_tokens: int = 0  # tokens still to generate for the batches it was given
    kv_bytes: int = 0  # KV-cache memory its engine holds right now


class LoadBalancer:
    """Picks a worker index for each batch with one of :data:`~helpers.streaming.config.STRATEGIES`."""

    def __init__(self, strategy: str = "least_loaded") -> None:
        if strategy not in STRATEGIES:
            raise WorkbookError(
                f"Unknown load-balancing strategy {strategy!r}.",
                f"use one of {', '.join(STRATEGIES)}.",
            )
        self.strategy = strategy
        self._turn = 0

    @property
    def needs_memory(self) -> bool:
        """True when :meth:`pick` needs each worker's current ``kv_bytes``."""
        return self.strategy == "by_memory"

    def pick(self, loads: Sequence[WorkerLoad]) -> int:
        """The index of the worker that gets the next batch (ties: the lowest index)."""
        if not loads:
            raise WorkbookError(
                "There is no worker to send the batch to.", "start at least one model actor."
            )
        if self.strategy == "round_robin":
            chosen = loads[self._turn % len(loads)].index
            self._turn += 1
            return chosen
        if self.strategy == "least_loaded":
            return min(loads, key=lambda w: (w.outstanding_tokens, w.index)).index
        return min(loads, key=lambda w: (w.kv_bytes, w.index)).index
