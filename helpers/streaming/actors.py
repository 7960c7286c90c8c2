"""Implementation (a): the streaming service as plain Ray actors, as such services are usually built.

* :class:`ModelActor` - one per "device": the tiny model (transformers, CPU), decoding one
  batch at a time and streaming each batch's text back as a Ray generator, bundled every
  ``stream_interval_ms``; a request can be cancelled between two steps.
* :class:`SessionActor` - one per user: the session's state (its requests, their status and
  text), and a long poll that hands new text to whoever streams it.
* :class:`SchedulerActor` - one, global: queues requests, forms batches with a
  :class:`~helpers.streaming.scheduling.DynamicBatcher` (``max_batch_size``,
  ``batch_timeout_ms``), picks a model actor with a
  :class:`~helpers.streaming.scheduling.LoadBalancer` (least loaded, round robin, by memory),
  relays the text to the sessions, and keeps the statistics. Its settings change live.
* :class:`GatewayActor` - the service's FastAPI server (:func:`helpers.streaming.api.build_api`
  over an :class:`ActorBackend`), run by uvicorn inside an actor on the driver's node.

:class:`ActorService` starts and stops all of them from a notebook::

    with ActorService(config) as service:      # a StreamingConfig; Ray must be connected
        service.url                             # http://127.0.0.1:PORT  (the API)
        service.token                           # its token (StreamingClient(url, token=...))
        ray.get(service.scheduler.stats.remote())

Everything is owned by the process that started it: stopping the service (or that process
ending) ends every actor, sessions included.

Introduced in notebooks/12_streaming_sessions.ipynb.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from typing import Any

import ray

from helpers.errors import WorkbookError
from helpers.streaming.api import SessionClosed, SessionTable, build_api, new_token
from helpers.streaming.config import BatchSettings, StreamingConfig, check_batch_settings
from helpers.streaming.scheduling import DynamicBatcher, LoadBalancer, WorkerLoad

__all__ = [
    "ModelActor",
    "SessionActor",
    "SchedulerActor",
    "GatewayActor",
    "ActorBackend",
    "ActorService",
    "uneven_burst",
]


@ray.remote(max_concurrency=4)
class ModelActor:
    """The model on one device. ``generate`` streams; ``cancel`` and ``load`` answer meanwhile."""

    def __init__(
        self,
        index: int,
        model_source: str,
        threads: int,
        stream_interval_ms: float,
        device: int = 0,
        language_pair: str = "",
    ) -> None:
        from helpers.streaming.model import TokenEngine

        self.index = index
        self.device, self.language_pair = device, language_pair
        self.engine = TokenEngine(model_source, threads=threads)
        self.interval_s = stream_interval_ms / 1000
        self._lock = threading.Lock()  # one batch at a time; the next waits here
        self._cancelled: set[str] = set()
        self.tokens = 0
        self.batches = 0

    def ready(self) -> dict[str, Any]:
        context = ray.get_runtime_context()
        return {
            "index": self.index,
            "device": self.device,
            "language_pair": self.language_pair,
            "pid": os.getpid(),
            "load_s": round(self.engine.load_seconds, 2),
            "node_id": context.get_node_id(),
            "placement_group": (context.get_placement_group_id() or "")[:12],
        }

    def generate(self, batch: list[dict[str, Any]]) -> Any:
        """Decode a batch; yield ``{request_id: [text, tokens, done]}`` bundles as text comes."""
        with self._lock:
            ids = [r["request_id"] for r in batch]
            bundle: dict[str, list[Any]] = {}
            flushed_at = 0.0  # the first text leaves at once (time to first token)
            steps = self.engine.steps(
                [r["prompt"] for r in batch],
                [r["max_tokens"] for r in batch],
                cancelled=lambda i: ids[i] in self._cancelled,
            )
            for entries in steps:
                for request_id, entry in zip(ids, entries):
                    if entry is None:
                        continue
                    item = bundle.setdefault(request_id, ["", 0, False])
                    item[0] += entry[0]
                    item[1] += 1
                    item[2] = entry[1]
                    self.tokens += 1
                if bundle and time.monotonic() - flushed_at >= self.interval_s:
                    yield bundle
                    bundle, flushed_at = {}, time.monotonic()
            if bundle:
                yield bundle
            self.batches += 1
            self._cancelled.difference_update(ids)

    def cancel(self, request_ids: list[str]) -> None:
        """Drop these requests from the batch being decoded (between two steps)."""
        self._cancelled.update(request_ids)

    def load(self) -> dict[str, Any]:
        """What the ``by_memory`` strategy reads: KV-cache bytes in use now."""
        return {
            "index": self.index,
            "kv_bytes": self.engine.kv_bytes_now,
            "busy": self._lock.locked(),
            "tokens": self.tokens,
            "batches": self.batches,
        }


@ray.remote(num_cpus=0)
class SessionActor:
    """One user's session: its requests in progress, their text, and a long poll for new text.

    It keeps no prompt, and a request's text only until its reader has read it to the end
    (then only the totals remain); a finished request nobody reads is dropped once more than
    ``UNREAD_KEPT`` are waiting. A long session's memory stays bounded."""

    UNREAD_KEPT = 16

    def __init__(self, session_id: str, client_id: str) -> None:
        self.session_id = session_id
        self.client_id = client_id
        self.created_at = time.time()
        self.requests: dict[str, dict[str, Any]] = {}  # in progress, or finished and unread
        self.texts: dict[str, list[tuple[str, int]]] = {}
        self.finished = {"requests": 0, "tokens": 0}  # requests read to the end, and dropped ones
        self.closed = False
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def ready(self) -> int:
        return os.getpid()

    def _request(self, request_id: str) -> dict[str, Any]:
        self.texts.setdefault(request_id, [])
        return self.requests.setdefault(
            request_id, {"status": "queued", "tokens": 0, "submitted_at": time.time()}
        )

    def _retire(self, request_id: str) -> None:
        request = self.requests.pop(request_id, None)
        self.texts.pop(request_id, None)
        if request is not None:
            self.finished["requests"] += request["status"] == "done"
            self.finished["tokens"] += request["tokens"]

    async def add_request(self, request_id: str, prompt: str, max_tokens: int) -> None:
        # An async actor runs calls in no guaranteed order: text may have come first. The
        # prompt is not kept: the scheduler has it, and the session needs only the text.
        self._request(request_id).update(max_tokens=max_tokens)

    async def push(self, request_id: str, text: str, tokens: int, done: bool) -> None:
        """The scheduler delivers text of one request."""
        request = self._request(request_id)
        request["tokens"] += tokens
        if request["status"] != "done":
            request["status"] = "done" if done else "generating"
        self.texts[request_id].append((text, tokens))
        unread = [rid for rid, r in self.requests.items() if r["status"] == "done"]
        for rid in unread[: max(0, len(unread) - self.UNREAD_KEPT)]:  # oldest first
            self._retire(rid)
        async with self._condition():
            self._condition().notify_all()

    async def next_text(
        self, request_id: str, cursor: int, timeout_s: float = 10.0
    ) -> tuple[list[tuple[str, int]], int, bool, bool]:
        """Text of ``request_id`` after ``cursor``: ``(pieces, new cursor, done, closed)``.

        Waits up to ``timeout_s`` for something new (a long poll).
        """
        condition = self._condition()

        def news() -> bool:
            return self.closed or len(self.texts.get(request_id, ())) > cursor

        async with condition:
            try:
                await asyncio.wait_for(condition.wait_for(news), timeout_s)
            except asyncio.TimeoutError:
                pass
        pieces = self.texts.get(request_id, [])[cursor:]
        done = self.requests.get(request_id, {}).get("status") == "done"
        if done:  # read to the end: only the totals stay
            self._retire(request_id)
        return pieces, cursor + len(pieces), done, self.closed

    async def close(self) -> None:
        self.closed = True
        async with self._condition():
            self._condition().notify_all()

    async def status(self) -> dict[str, Any]:
        states = [r["status"] for r in self.requests.values()]
        return {
            "session_id": self.session_id,
            "client_id": self.client_id,
            "created_at": self.created_at,
            "closed": self.closed,
            "requests_done": self.finished["requests"] + states.count("done"),
            "tokens": self.finished["tokens"] + sum(r["tokens"] for r in self.requests.values()),
            "requests_kept": len(self.requests),
            "pid": os.getpid(),
        }


@ray.remote(num_cpus=0)
class SchedulerActor:
    """The global scheduler: dynamic batches, a model actor per batch, text to the sessions."""

    def __init__(
        self,
        model_actors: list[Any],
        settings: dict[str, Any],
        strategy: str,
        max_records: int = 1000,
        pairs: list[str] | None = None,
    ) -> None:
        self.model_actors = list(model_actors)
        # The language pair of each model actor: a batch goes to an actor of its pair, so each
        # pair has its own queue (batches never mix pairs) and its own balancer.
        self.actor_pairs = list(pairs) if pairs is not None else [""] * len(self.model_actors)
        self.batchers: dict[str, DynamicBatcher[str]] = {
            pair: DynamicBatcher(BatchSettings(**settings))
            for pair in dict.fromkeys(self.actor_pairs)
        }
        self.balancers = {pair: LoadBalancer(strategy) for pair in self.batchers}
        self.sessions: dict[str, Any] = {}
        self.session_pairs: dict[str, str] = {}
        self.max_records = max_records
        # Request id -> its record, oldest first. Finished records beyond max_records are
        # folded into self.retired (totals) and dropped, so a long run keeps bounded memory.
        self.requests: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.outstanding = [0] * len(self.model_actors)  # tokens still to generate, per actor
        self.batches: deque[dict[str, Any]] = deque(maxlen=max_records)  # the latest batches
        self._reset_totals()
        self._running: set[str] = set()  # requests whose batch is still with a model actor
        self._loops: dict[str, asyncio.Task] = {}  # one dispatch loop per language pair
        self._idle = asyncio.Event()

    @property
    def batcher(self) -> DynamicBatcher[str]:
        """A queue's batcher (every pair's has the same settings)."""
        return next(iter(self.batchers.values()))

    def _queued(self) -> list[str]:
        return [rid for batcher in self.batchers.values() for rid in batcher.items()]

    def _reset_totals(self) -> None:
        workers = len(self.model_actors)
        self.retired: dict[str, Any] = {
            "requests": 0,
            "done": 0,
            "cancelled": 0,
            "failed": 0,
            "tokens": 0,
            "worker_requests": [0] * workers,
            "worker_tokens": [0] * workers,
        }
        self.batch_totals: dict[str, Any] = {
            "batches": 0,
            "batched_requests": 0,
            "largest_batch": 0,
            "worker_batches": [0] * workers,
        }

    def _retire_finished(self) -> None:
        """Fold the oldest finished records beyond ``max_records`` into the totals (called as
        requests finish: then at most ``max_records`` records outlive their request)."""
        excess = len(self.requests) - self.max_records
        if excess <= 0:
            return
        for rid in [
            rid
            for rid, r in self.requests.items()
            if r["status"] not in ("queued", "generating") and rid not in self._running
        ][:excess]:
            record = self.requests.pop(rid)
            retired = self.retired
            retired["requests"] += 1
            retired["tokens"] += record["tokens"]
            if record["status"] in ("done", "cancelled", "failed"):
                retired[record["status"]] += 1
            if record["worker"] is not None:
                retired["worker_requests"][record["worker"]] += 1
                retired["worker_tokens"][record["worker"]] += record["tokens"]

    def _ensure_loop(self) -> None:
        for pair in self.batchers:
            loop = self._loops.get(pair)
            if loop is None or loop.done():
                self._loops[pair] = asyncio.get_running_loop().create_task(
                    self._dispatch_forever(pair)
                )

    async def register_session(
        self, session_id: str, handle: Any, language_pair: str | None = None
    ) -> None:
        pair = self.actor_pairs[0] if language_pair is None else language_pair
        if pair not in self.batchers:
            raise ValueError(
                f"no model serves the language pair {pair!r}: "
                f"choose one of {', '.join(self.batchers)}"
            )
        self.sessions[session_id] = handle
        self.session_pairs[session_id] = pair

    async def unregister_session(self, session_id: str) -> dict[str, int]:
        """Forget a session: its queued requests leave the queue, running ones are cancelled."""
        self.sessions.pop(session_id, None)
        self.session_pairs.pop(session_id, None)
        mine = [rid for rid, r in self.requests.items() if r["session_id"] == session_id]
        return await self.cancel_requests(mine)

    async def cancel_requests(self, request_ids: list[str]) -> dict[str, int]:
        """Take these requests out of the queue, or out of their model actor's batch."""
        wanted = set(request_ids)
        queued = [
            rid
            for batcher in self.batchers.values()
            for rid in batcher.remove(lambda rid: rid in wanted)
        ]
        running: dict[int, list[str]] = {}
        for rid in wanted:
            request = self.requests.get(rid)
            if request is None or request["status"] not in ("queued", "generating"):
                continue
            if request["status"] == "generating":
                running.setdefault(request["worker"], []).append(rid)
            request["status"] = "cancelled"
        await asyncio.gather(
            *(self.model_actors[w].cancel.remote(ids) for w, ids in running.items())
        )
        self._retire_finished()
        if not any(r["status"] in ("queued", "generating") for r in self.requests.values()):
            self._idle.set()
        return {"dequeued": len(queued), "cancelled": sum(map(len, running.values()))}

    async def submit(self, session_id: str, prompt: str, max_tokens: int) -> str:
        """Queue a request of ``session_id``; return its id."""
        return (await self.submit_many(session_id, [(prompt, max_tokens)]))[0]

    async def submit_many(self, session_id: str, requests: list[tuple[str, int]]) -> list[str]:
        """Queue ``(prompt, max_tokens)`` requests of ``session_id`` in this order (an async
        actor runs separate calls in no guaranteed order); return their ids."""
        if session_id not in self.sessions:
            raise KeyError(session_id)
        self._ensure_loop()
        return [self._queue(session_id, prompt, max_tokens) for prompt, max_tokens in requests]

    def _queue(self, session_id: str, prompt: str, max_tokens: int) -> str:
        rid = uuid.uuid4().hex[:12]
        self.sessions[session_id].add_request.remote(rid, prompt, max_tokens)  # no need to wait
        self.requests[rid] = {
            "request_id": rid,
            "session_id": session_id,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "status": "queued",
            "tokens": 0,
            "submitted_at": time.time(),
            "first_at": None,
            "done_at": None,
            "worker": None,
            "batch": None,
        }
        self._idle.clear()
        self.batchers[self.session_pairs[session_id]].put(rid)
        return rid

    async def _dispatch_forever(self, pair: str) -> None:
        batcher = self.batchers[pair]
        while True:
            rids, record = await batcher.next_batch()
            balancer = self.balancers[pair]  # read now: set_strategy replaces it
            mine = [i for i, p in enumerate(self.actor_pairs) if p == pair]  # the pair's actors
            loads = [WorkerLoad(i, self.outstanding[i]) for i in mine]
            if balancer.needs_memory:
                reports = await asyncio.gather(*(self.model_actors[i].load.remote() for i in mine))
                loads = [
                    WorkerLoad(i, self.outstanding[i], r["kv_bytes"]) for i, r in zip(mine, reports)
                ]
            worker = balancer.pick(loads)
            totals = self.batch_totals
            batch_no = totals["batches"]
            tokens = sum(self.requests[r]["max_tokens"] for r in rids)
            self.outstanding[worker] += tokens
            totals["batches"] += 1
            totals["batched_requests"] += record.size
            totals["largest_batch"] = max(totals["largest_batch"], record.size)
            totals["worker_batches"][worker] += 1
            self.batches.append(
                {
                    "batch": batch_no,
                    "size": record.size,
                    "waited_ms": record.waited_ms,
                    "reason": record.reason,
                    "worker": worker,
                    "tokens": tokens,
                    "max_batch_size": record.max_batch_size,
                    "batch_timeout_ms": record.batch_timeout_ms,
                    "strategy": balancer.strategy,
                    "language_pair": pair,
                    "left_at": record.left_at,
                }
            )
            for rid in rids:
                self.requests[rid].update(
                    status="generating", worker=worker, batch=batch_no, dispatched_at=record.left_at
                )
            asyncio.get_running_loop().create_task(self._run_batch(worker, rids))

    async def _run_batch(self, worker: int, rids: list[str]) -> None:
        self._running.update(rids)
        payload = [
            {
                "request_id": r,
                "prompt": self.requests[r].pop("prompt"),  # not kept after this
                "max_tokens": self.requests[r]["max_tokens"],
            }
            for r in rids
        ]
        try:
            async for ref in self.model_actors[worker].generate.remote(payload):
                bundle = await ref
                now = time.time()
                for rid, (text, tokens, done) in bundle.items():
                    self.outstanding[worker] -= tokens
                    request = self.requests.get(rid)
                    if request is None:  # forgotten by reset_stats after it was cancelled
                        continue
                    request["tokens"] += tokens
                    request["first_at"] = request["first_at"] or now
                    if done:
                        request["done_at"] = now
                    if request["status"] != "cancelled":
                        request["status"] = "done" if done else "generating"
                        session = self.sessions.get(request["session_id"])
                        if session is not None:
                            session.push.remote(rid, text, tokens, done)
        except Exception as err:  # noqa: BLE001 - a dead model actor: end its requests
            for rid in rids:
                request = self.requests.get(rid, {})
                if request.get("status") == "generating":
                    request.update(status="failed", error=repr(err)[:300])
                    session = self.sessions.get(request["session_id"])
                    if session is not None:
                        session.push.remote(rid, "", 0, True)
        finally:
            for rid in rids:  # cancelled or failed: what it did not generate is no longer owed
                request = self.requests.get(rid)
                if request is not None:
                    self.outstanding[worker] -= request["max_tokens"] - request["tokens"]
            self._running.difference_update(rids)
            self._retire_finished()
            if not any(r["status"] in ("queued", "generating") for r in self.requests.values()):
                self._idle.set()

    async def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply batch-setting changes (checked like the config file); return the settings."""
        settings = check_batch_settings(changes, self.batcher.settings)
        for batcher in self.batchers.values():
            batcher.configure(settings)
        return settings.model_dump()

    async def add_model_actor(self, handle: Any, language_pair: str | None = None) -> int:
        """Balance ``language_pair``'s batches (default: the first pair's) over one more (ready)
        model actor from the next batch on; its index."""
        pair = self.actor_pairs[0] if language_pair is None else language_pair
        if pair not in self.batchers:
            raise ValueError(
                f"no queue for the language pair {pair!r}: choose one of {', '.join(self.batchers)}"
            )
        self.model_actors.append(handle)
        self.actor_pairs.append(pair)
        self.outstanding.append(0)
        for counts in (
            self.retired["worker_requests"],
            self.retired["worker_tokens"],
            self.batch_totals["worker_batches"],
        ):
            counts.append(0)
        return len(self.model_actors) - 1

    async def set_strategy(self, strategy: str) -> str:
        self.balancers = {pair: LoadBalancer(strategy) for pair in self.batchers}
        return strategy

    async def wait_idle(self, timeout_s: float = 120.0) -> bool:
        """Wait until no request is queued or generating; False on timeout."""
        if not any(r["status"] in ("queued", "generating") for r in self.requests.values()):
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    async def queue_status(self, session_id: str) -> dict[str, Any]:
        pair = self.session_pairs.get(session_id)
        queue = self.batchers[pair].items() if pair in self.batchers else []
        mine = [i for i, rid in enumerate(queue) if self.requests[rid]["session_id"] == session_id]
        generating = sum(
            1
            for r in self.requests.values()
            if r["session_id"] == session_id and r["status"] == "generating"
        )
        return {
            "queued": len(mine),
            "queue_position": mine[0] if mine else None,
            "generating": generating,
            "queue_length": len(queue),
            "language_pair": pair,
        }

    async def request_log(self) -> list[dict[str, Any]]:
        """The requests so far (the latest ``max_records`` finished ones, and every unfinished
        one): timings, tokens, worker and batch."""
        return [{k: v for k, v in r.items() if k != "prompt"} for r in self.requests.values()]

    async def prompts_kept(self) -> int:
        """How many prompts the scheduler holds: only those of requests not yet dispatched."""
        return sum("prompt" in r for r in self.requests.values())

    async def stats(self) -> dict[str, Any]:
        """Totals since the last :meth:`reset_stats` (retired records included)."""
        retired, totals = self.retired, self.batch_totals
        per_worker = [
            {
                "worker": i,
                "language_pair": self.actor_pairs[i],
                "requests": retired["worker_requests"][i],
                "tokens": retired["worker_tokens"][i],
                "batches": totals["worker_batches"][i],
                "outstanding_tokens": self.outstanding[i],
            }
            for i in range(len(self.model_actors))
        ]
        for r in self.requests.values():
            if r["worker"] is not None:
                per_worker[r["worker"]]["requests"] += 1
                per_worker[r["worker"]]["tokens"] += r["tokens"]
        states = [r["status"] for r in self.requests.values()]
        count = totals["batches"]
        return {
            "sessions": len(self.sessions),
            "requests": retired["requests"] + len(self.requests),
            "done": retired["done"] + states.count("done"),
            "cancelled": retired["cancelled"] + states.count("cancelled"),
            "queued": len(self._queued()),
            "generating": states.count("generating"),
            "tokens": retired["tokens"] + sum(r["tokens"] for r in self.requests.values()),
            "batches": count,
            "batched_requests": totals["batched_requests"],
            "mean_batch_size": round(totals["batched_requests"] / count, 2) if count else 0,
            "largest_batch": totals["largest_batch"],
            "workers": per_worker,
            "records_kept": {
                "requests": len(self.requests),
                "batches": len(self.batches),
                "at_most": self.max_records,
            },
            "strategy": self.balancer_strategy,
            "settings": self.batcher.settings.model_dump(),
        }

    @property
    def balancer_strategy(self) -> str:
        return next(iter(self.balancers.values())).strategy

    async def batch_log(self) -> list[dict[str, Any]]:
        return list(self.batches)

    async def reset_stats(self) -> None:
        """Forget finished requests and past batches (between two measurements)."""
        self.requests = OrderedDict(
            (k, r)
            for k, r in self.requests.items()
            if r["status"] in ("queued", "generating") or k in self._running
        )
        self.batches.clear()
        self._reset_totals()


class ActorBackend:
    """The API's backend over the actors (runs inside :class:`GatewayActor`)."""

    name = "ray-actors"

    def __init__(self, scheduler: Any, config: StreamingConfig) -> None:
        self.scheduler = scheduler
        self.default_max_tokens = config.model.default_max_tokens
        self.max_tokens_limit = config.model.max_tokens_limit
        self.max_prompt_chars = config.serving.max_prompt_chars
        self.max_sessions = config.serving.max_sessions
        self.language_pairs = list(config.languages)
        self.default_language_pair = config.default_language_pair
        self.table = SessionTable(
            config.serving.max_sessions, config.serving.session_idle_timeout_s
        )
        self.sessions: dict[str, Any] = {}
        self.expired = 0
        self._expiry: asyncio.Task | None = None

    async def _expire(self, session_id: str) -> None:
        self.expired += 1  # counted first: /ray/stats agrees once the session is gone
        await self.delete_session(session_id)

    async def init_session(
        self, client_id: str, language_pair: str | None = None
    ) -> dict[str, Any]:
        pair = language_pair or self.default_language_pair
        if pair not in self.language_pairs:
            raise ValueError(
                f"unknown language_pair {pair!r}: this service serves "
                f"{', '.join(self.language_pairs)}"
            )
        if self._expiry is None or self._expiry.done():
            self._expiry = asyncio.get_running_loop().create_task(
                self.table.expire_forever(self._expire)
            )
        session_id = self.table.reserve()  # the limit, checked and taken at once (no await)
        started = time.perf_counter()
        handle = None
        try:
            handle = SessionActor.remote(session_id, client_id)
            pid = await handle.ready.remote()  # a new actor: a new worker process
            await self.scheduler.register_session.remote(session_id, handle, pair)
        except BaseException:
            self.table.release(session_id)
            if handle is not None:
                ray.kill(handle)
            raise
        self.sessions[session_id] = handle
        self.table.touch(session_id)
        return {
            "session_id": session_id,
            "client_id": client_id,
            "backend": self.name,
            "language_pair": pair,
            "session_pid": pid,
            "created_in_s": round(time.perf_counter() - started, 4),
        }

    async def queue_status(self, session_id: str) -> dict[str, Any]:
        handle = self.sessions[session_id]
        status, queue = await asyncio.gather(
            handle.status.remote(), self.scheduler.queue_status.remote(session_id)
        )
        return {**status, **queue}

    async def delete_session(self, session_id: str) -> dict[str, Any]:
        handle = self.sessions.pop(session_id)
        self.table.release(session_id)
        stopped = await self.scheduler.unregister_session.remote(session_id)
        await handle.close.remote()  # wakes a stream in progress: it ends with "closed"
        await asyncio.sleep(0.05)  # let that stream read it before the actor goes
        ray.kill(handle)
        return {"session_id": session_id, "deleted": True, **stopped}

    async def stream(
        self, session_id: str, prompt: str, max_tokens: int
    ) -> AsyncIterator[tuple[str, int]]:
        handle = self.sessions[session_id]
        with self.table.busy(session_id):  # a session streaming is never idle
            rid = await self.scheduler.submit.remote(session_id, prompt, max_tokens)
            cursor, done = 0, False
            try:
                while not done:
                    try:
                        pieces, cursor, done, closed = await handle.next_text.remote(rid, cursor)
                    except ray.exceptions.RayActorError:
                        raise SessionClosed(session_id) from None
                    for text, tokens in pieces:
                        yield text, tokens
                    if closed:
                        raise SessionClosed(session_id)
            finally:
                if not done:  # deleted, or the client went away: stop generating it
                    self.scheduler.cancel_requests.remote([rid])

    async def stats(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            **(await self.scheduler.stats.remote()),
            "expired_sessions": self.expired,
            "limits": {
                "max_sessions": self.table.max_sessions,
                "session_idle_timeout_s": self.table.idle_timeout_s,
                "max_prompt_chars": self.max_prompt_chars,
            },
        }

    async def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        return {"backend": self.name, "settings": await self.scheduler.configure.remote(changes)}


@ray.remote(num_cpus=0)
class GatewayActor:
    """The service's FastAPI server, served by uvicorn inside this actor."""

    async def start(self, scheduler: Any, config_json: str, port: int, token: str) -> str:
        import uvicorn

        config = StreamingConfig.model_validate_json(config_json)
        app = build_api(
            ActorBackend(scheduler, config),
            token=token,
            allowed_origins=config.serving.allowed_origins,
        )
        host = config.serving.host
        # A WebSocket message may hold a prompt of max_prompt_chars (12 bytes each, at most, as JSON escapes)
        # and its JSON: larger frames are refused by the server before they are read.
        frame = 12 * config.serving.max_prompt_chars + 4096
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                lifespan="off",
                ws="websockets",
                ws_max_size=frame,
            )
        )
        self.task = asyncio.get_running_loop().create_task(self.server.serve())
        for _ in range(300):
            if self.server.started:
                shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
                return f"http://{shown}:{port}"
            if self.task.done():
                raise WorkbookError(
                    f"The API server could not start on {host}:{port}.",
                    "choose another port (0 picks a free one).",
                    details=repr(self.task.exception()),
                )
            await asyncio.sleep(0.05)
        raise WorkbookError("The API server did not start within 15 s.", "try again.")

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 10)


class ActorService:
    """Start (and stop) implementation (a) from the driver: model actors, scheduler, gateway.

    ``token`` guards the API's statistics, configuration and WebSocket; each service makes a
    new one unless one is given (``service.token``: give it to ``StreamingClient``).
    """

    def __init__(self, config: StreamingConfig, *, token: str | None = None) -> None:
        self.config = config
        self.token = token or new_token()
        self.model_actors: list[Any] = []
        self.devices: list[Any] = []  # a placement group per device (None: nothing to reserve)
        self.scheduler: Any = None
        self.gateway: Any = None
        self.url = ""
        self.models: list[dict[str, Any]] = []
        self.start_seconds = 0.0

    def _device(self, pairs: int) -> Any:
        """A logical device: a placement group of one bundle that holds the models of its
        ``pairs`` language pairs (their CPUs and GPUs), or None when they reserve nothing."""
        from ray.util.placement_group import placement_group

        serving = self.config.serving
        bundle = {
            k: v * pairs
            for k, v in (
                ("CPU", serving.model_actor_num_cpus),
                ("GPU", serving.model_actor_num_gpus),
            )
            if v > 0
        }
        group = placement_group([bundle]) if bundle else None
        self.devices.append(group)
        return group

    def _model_actor(self, device: int, pair: str) -> Any:
        """A model actor for ``pair`` on ``device`` (inside the device's bundle)."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        serving, model, group = self.config.serving, self.config.model, self.devices[device]
        options: dict[str, Any] = {
            "num_cpus": serving.model_actor_num_cpus,
            "num_gpus": serving.model_actor_num_gpus,
        }
        if group is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=0
            )
        actor = ModelActor.options(**options).remote(
            len(self.model_actors),
            self.config.model_source_of(pair),
            model.torch_threads,
            serving.stream_interval_ms,
            device,
            pair,
        )
        self.model_actors.append(actor)  # stop() ends it whatever happens next
        return actor

    def _wait_for_devices(self, groups: list[Any], timeout_s: float) -> None:
        waiting = [g for g in groups if g is not None]
        if not waiting:
            return
        ready, _ = ray.wait(
            [g.ready() for g in waiting], num_returns=len(waiting), timeout=timeout_s
        )
        if len(ready) < len(waiting):
            serving = self.config.serving
            raise WorkbookError(
                f"{len(waiting) - len(ready)} of {len(waiting)} device(s) could not be placed "
                f"within {timeout_s:.0f} s: the cluster lacks the CPUs/GPUs their models ask for "
                f"({serving.model_actor_num_cpus:g} CPU and {serving.model_actor_num_gpus:g} GPU "
                "per model actor, every pair of a device on one node).",
                "lower serving.model_actor_num_cpus / model_actor_num_gpus, serve fewer pairs "
                "per device (serving.device_language_map), or give the cluster more resources "
                "(ray status shows what it has).",
            )

    def start(self, timeout_s: float = 180.0) -> ActorService:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from helpers.ports import free_port

        if not ray.is_initialized():
            raise WorkbookError(
                "This process is not connected to Ray.", "call cluster.connect() first."
            )
        started = time.perf_counter()
        serving = self.config.serving
        placement = self.config.model_placement()
        try:
            groups = [
                self._device(len(self.config.device_pairs(d))) for d in range(serving.model_actors)
            ]
            self._wait_for_devices(groups, timeout_s)
            for device, pair in placement:
                self._model_actor(device, pair)
            self.models = ray.get([a.ready.remote() for a in self.model_actors], timeout=timeout_s)
            self.scheduler = SchedulerActor.remote(
                self.model_actors,
                serving.batch_settings().model_dump(),
                serving.load_balance_strategy,
                serving.max_request_records,
                [pair for _, pair in placement],
            )
            here = ray.get_runtime_context().get_node_id()  # the API listens on this machine
            self.gateway = GatewayActor.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
            ).remote()
            port = serving.port or free_port()
            self.url = ray.get(
                self.gateway.start.remote(
                    self.scheduler, self.config.model_dump_json(), port, self.token
                ),
                timeout=timeout_s,
            )
        except BaseException:
            self.stop()
            raise
        self.start_seconds = round(time.perf_counter() - started, 2)
        return self

    def add_model_actor(self, timeout_s: float = 180.0, language_pair: str | None = None) -> float:
        """Scale up by hand: one more device holding a model of ``language_pair`` (default: the
        first pair); wait until its model is loaded and hand it to the scheduler. Returns the
        seconds it took."""
        pair = language_pair or self.config.default_language_pair
        if pair not in self.config.languages:
            raise WorkbookError(
                f"No language pair {pair!r} in this service's configuration.",
                f"use one of {', '.join(self.config.languages)}.",
            )
        started = time.perf_counter()
        self._wait_for_devices([self._device(1)], timeout_s)
        actor = self._model_actor(len(self.devices) - 1, pair)
        self.models.append(ray.get(actor.ready.remote(), timeout=timeout_s))
        ray.get(self.scheduler.add_model_actor.remote(actor, pair), timeout=timeout_s)
        return round(time.perf_counter() - started, 2)

    def stop(self) -> None:
        """Stop the API server, then end every actor (the sessions end with the gateway)."""
        if self.gateway is not None:
            try:
                ray.get(self.gateway.stop.remote(), timeout=15)
            except Exception:  # noqa: BLE001 - it is being killed anyway
                pass
        for actor in [self.gateway, self.scheduler, *self.model_actors]:
            if actor is not None:
                try:
                    ray.kill(actor)
                except Exception:  # noqa: BLE001 - already gone
                    pass
        for group in self.devices:
            if group is not None:
                try:
                    ray.util.remove_placement_group(group)
                except Exception:  # noqa: BLE001 - already removed, or the cluster is gone
                    pass
        self.gateway, self.scheduler, self.model_actors, self.devices = None, None, [], []

    def __enter__(self) -> ActorService:
        return self.start() if self.scheduler is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def uneven_burst(
    service: ActorService,
    session_id: str,
    *,
    strategy: str,
    batches: int,
    batch_size: int,
    long_tokens: int,
    short_tokens: int,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Queue ``batches`` full batches at once, alternately of long and of short answers, with
    load-balancing ``strategy``; wait until all are answered and say how the work was spread.

    Returns the tokens each model actor generated, the busiest actor's share of them, the
    time from the first request to the last answer (``makespan_s``) and answer latencies.
    """
    import statistics

    scheduler = service.scheduler
    ray.get(
        [
            scheduler.set_strategy.remote(strategy),
            scheduler.configure.remote(
                {
                    "max_batch_size": batch_size,
                    "batch_timeout_ms": 500.0,
                    "enable_dynamic_batching": True,
                }
            ),
        ]
    )
    ray.get(scheduler.wait_idle.remote(timeout_s))
    ray.get(scheduler.reset_stats.remote())
    ray.get(
        scheduler.submit_many.remote(
            session_id,
            [
                (f"Return the value {k}.{i}", long_tokens if k % 2 == 0 else short_tokens)
                for k in range(batches)
                for i in range(batch_size)
            ],
        )
    )
    if not ray.get(scheduler.wait_idle.remote(timeout_s)):
        raise WorkbookError(
            f"The burst was not answered within {timeout_s:.0f} s.",
            "use fewer or shorter requests, or a larger timeout_s.",
        )
    log, batch_log, status = ray.get(
        [
            scheduler.request_log.remote(),
            scheduler.batch_log.remote(),
            scheduler.queue_status.remote(session_id),
        ]
    )
    # The model actors of the session's language pair, in order: the balancer's choices.
    workers = [m["index"] for m in service.models if m["language_pair"] == status["language_pair"]]
    tokens = [sum(r["tokens"] for r in log if r["worker"] == w) for w in workers]
    latencies = sorted(r["done_at"] - r["submitted_at"] for r in log)
    return {
        "strategy": strategy,
        "requests": len(log),
        "tokens_per_actor": tokens,
        "busiest_share": round(max(tokens) / max(1, sum(tokens)), 3),
        "makespan_s": round(
            max(r["done_at"] for r in log) - min(r["submitted_at"] for r in log), 3
        ),
        "p50_latency_s": round(statistics.median(latencies), 3),
        "p90_latency_s": round(latencies[int(0.9 * (len(latencies) - 1))], 3),
        "batches_per_actor": [sum(1 for b in batch_log if b["worker"] == w) for w in workers],
    }
