# Generated from notebooks/12_streaming_sessions.ipynb (cell 21); edit the lesson, then run `python -m helpers.lessons generate`.
"""The streaming service the Serve way: a ``@serve.batch`` generator behind a FastAPI ingress.

* ``TokenGenerator`` runs the tiny model (the same ``TokenEngine`` as the model actors).
  ``@serve.batch`` is the scheduler: requests that arrive within ``batch_timeout_ms`` are
  decoded together, at most ``max_batch_size`` of them. The batch function is an *async
  generator*, so every caller receives its own text step by step. The batch settings are the
  deployment's ``user_config``: Serve hands them to ``reconfigure`` at start and on every
  change, in place, without restarting the replica.
* ``StreamingIngress`` is the FastAPI ingress, built in the replica by
  ``__serve_build_asgi_app__``: the service's HTTP routes (``helpers.streaming.api.build_api``,
  shared with the actors version) and its WebSocket route ``/wss/{session_id}``, written here,
  which relays the generator's text to the client piece by piece. Sessions live in the
  replica's memory.
* With ``engine="llm"`` the generator is ``ray.serve.llm``'s ``LLMServer`` (vLLM's continuous
  batching) instead, behind the same API.

``POST /ray/configure`` touches nothing but this application: it deploys nothing. The
ingress keeps the new settings as an *override* of the declared ``user_config`` and sends
them with every call to the generator; a replica puts them in force before it queues the
request. The override names the ``user_config`` it was made over, so once an operator
deploys a new ``user_config`` the declared settings win again. Deploy with a config
(``helpers.streaming.serve_deploy.app_config``): ``import_path: serve_app:build_app``.

Introduced in notebooks/12_streaming_sessions.ipynb.
"""

# No `from __future__ import annotations` here: Serve ships these classes to the replicas by
# value (cloudpickle), with only the names their code uses, and FastAPI must find the
# WebSocket route's annotations (`websocket: WebSocket`) as objects, not as strings to look up.
import asyncio
import json
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from ray import serve

from helpers.streaming.api import (
    ConfigureRejected,
    SessionClosed,
    SessionTable,
    admit,
    allowed_origin_set,
    build_api,
    close_deleted,
    next_request,
)
from helpers.streaming.config import BatchSettings, check_batch_settings
from helpers.streaming.serve_deploy import GENERATOR, INGRESS, AppArgs

__all__ = ["TokenGenerator", "StreamingIngress", "build_app"]

RECENT_BATCHES = 1000  # batch ids the ingress remembers (to count each batch once)


@serve.deployment(name=GENERATOR, ray_actor_options={"num_cpus": 1}, max_ongoing_requests=256,
                  user_config=BatchSettings().model_dump())
class TokenGenerator:
    """The model behind ``@serve.batch``; batch settings come from ``user_config``."""

    def __init__(self, model_source: str, threads: int = 1) -> None:
        from helpers.streaming.model import TokenEngine

        self.engine = TokenEngine(model_source, threads=threads)
        self.executor = ThreadPoolExecutor(max_workers=1)  # torch work off the event loop
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.settings = BatchSettings()  # in force now
        self.declared = BatchSettings()  # user_config, as Serve last gave it
        self.reconfigured = self.overrides = self.batches = 0
        self.in_flight: set[str] = set()  # requests whose caller still reads
        self.batched: set[str] = set()  # requests in a batch being decoded
        self.gone: set[str] = set()  # batched requests whose caller left: drop at the next step

    def reconfigure(self, user_config: Mapping[str, Any]) -> None:
        """Serve calls this with ``user_config`` at start and whenever it changes."""
        self.declared = check_batch_settings(user_config)  # a bad value fails the deploy, clearly
        self._put_in_force(self.declared)
        self.reconfigured += 1

    def _put_in_force(self, settings: BatchSettings) -> None:
        """Give the batcher of ``generate_batch`` these settings (dynamic off: batches of 1)."""
        dynamic = settings.enable_dynamic_batching
        self.generate_batch.set_max_batch_size(settings.max_batch_size if dynamic else 1)
        self.generate_batch.set_batch_wait_timeout_s(settings.batch_timeout_ms / 1000 if dynamic else 0.0)
        self.settings = settings

    def _follow(self, override: Mapping[str, Any] | None) -> None:
        """The ingress's override if made over the current ``user_config``, else ``user_config``."""
        target = self.declared
        if override and override.get("over") == self.declared.model_dump():
            target = check_batch_settings(override["settings"])
        if target != self.settings:
            self._put_in_force(target)
            self.overrides += target is not self.declared

    def describe(self, override: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self._follow(override)
        return {"replica": self.replica, "pid": os.getpid(), "settings": self.settings.model_dump(),
                "declared": self.declared.model_dump(), "reconfigured": self.reconfigured,
                "overrides": self.overrides, "batches": self.batches,
                "in_flight": len(self.in_flight), "decoding": len(self.batched)}

    async def stream(self, prompt: str, max_tokens: int,
                     override: Mapping[str, Any] | None = None) -> AsyncIterator[Any]:
        """First a header ``{"replica", "batch", "size", "waited_ms"}``, then ``(text, last)``."""
        self._follow(override)
        request: dict[str, Any] = {"id": uuid.uuid4().hex, "prompt": prompt, "max_tokens": max_tokens,
                   "queued_at": time.monotonic()}
        self.in_flight.add(request["id"])
        try:
            async for item in self.generate_batch(request):
                yield item
        finally:  # finished, or the caller went away (a deleted session): stop decoding it
            self.in_flight.discard(request["id"])
            if request["id"] in self.batched:
                self.gone.add(request["id"])

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)  # until reconfigure
    async def generate_batch(self, requests: list[dict[str, Any]]) -> AsyncIterator[list[Any]]:
        """Serve calls this with a *list* of requests and hands item i of each yield to caller i."""
        ids = [r["id"] for r in requests]
        self.batched.update(ids)
        now = time.monotonic()
        header = {"replica": self.replica, "batch": f"{self.replica}-{self.batches}",
                  "size": len(requests), "waited_ms": round((now - min(r["queued_at"] for r in requests)) * 1000, 3)}
        self.batches += 1
        yield [header] * len(requests)
        steps = self.engine.steps([r["prompt"] for r in requests], [r["max_tokens"] for r in requests],
                                  cancelled=lambda i: ids[i] in self.gone)
        loop = asyncio.get_running_loop()
        try:
            while True:  # one decoding step per yield; a finished request's iterator ends
                entries = await loop.run_in_executor(self.executor, next, steps, None)
                if entries is None:
                    return
                yield [StopAsyncIteration if e is None else e for e in entries]
        finally:
            self.gone.difference_update(ids)
            self.batched.difference_update(ids)


@serve.deployment(name=INGRESS, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
@serve.ingress()
class StreamingIngress:
    """The API (sessions in this replica's memory, a WebSocket per session) over the generator."""

    name = "ray-serve"

    def __init__(self, generator: Any, args: dict[str, Any]) -> None:
        self.args = AppArgs(**args)
        self.generator = generator
        self.default_max_tokens = self.args.default_max_tokens
        self.max_tokens_limit = self.args.max_tokens_limit
        self.max_prompt_chars = self.args.max_prompt_chars
        self.table = SessionTable(self.args.max_sessions, self.args.session_idle_timeout_s)
        self.expired = 0
        self._expiry: asyncio.Task | None = None
        self.sessions: dict[str, dict[str, Any]] = {}
        self.batch_totals = {"batches": 0, "batched_requests": 0, "largest_batch": 0}
        self.recent_batches: OrderedDict[str, None] = OrderedDict()  # each batch counted once
        self.workers: dict[str, dict[str, int]] = {}
        self.counts = {"requests": 0, "done": 0, "cancelled": 0, "tokens": 0}
        self.override: dict[str, Any] | None = None  # /ray/configure's: {"settings", "over"}
        if self.args.engine == "llm":
            self.model_id = (self.args.llm_config or {})["model_loading_config"]["model_id"]
            self.name = "ray-serve + vLLM"

    def __serve_build_asgi_app__(self) -> Any:
        """The FastAPI app Serve routes this application's HTTP and WebSocket traffic to."""
        # The HTTP routes (/init, /queue_status, /delete_session, /ray/stats, /ray/configure)
        # are the service's API, shared with the actors version; the WebSocket is written here.
        app = build_api(self, token=self.args.api_token, allowed_origins=self.args.allowed_origins,
                        stream_route=False)
        origins = allowed_origin_set(self.args.allowed_origins)

        @app.websocket("/wss/{session_id}")
        async def wss(websocket: WebSocket, session_id: str) -> None:
            # Accepted, then closed with a code and a reason if another page's origin, no or a
            # wrong token, or an unknown session (4403, 4401, 4404).
            if not await admit(websocket, session_id, self, token=self.args.api_token, origins=origins):
                return
            try:  # one request after another on the same socket, until the client sends EOF
                while (request := await next_request(websocket, self)) is not None:
                    prompt, max_tokens = request
                    started, tokens = time.perf_counter(), 0
                    try:
                        async for text, count in self.stream(session_id, prompt, max_tokens):
                            tokens += count
                            if text:  # each piece leaves as soon as the generator yields it
                                await websocket.send_json({"type": "text", "text": text})
                    except (SessionClosed, KeyError):  # deleted meanwhile: say so, close normally
                        await close_deleted(websocket)
                        return
                    await websocket.send_json({"type": "done", "tokens": tokens,
                                               "seconds": round(time.perf_counter() - started, 4)})
            except WebSocketDisconnect:  # the client left: stream()'s finally cancelled its call
                return

        return app

    async def _expire(self, session_id: str) -> None:
        self.expired += 1  # counted first: /ray/stats agrees once the session is gone
        await self.delete_session(session_id)

    async def init_session(self, client_id: str) -> dict[str, Any]:
        if self._expiry is None or self._expiry.done():
            self._expiry = asyncio.get_running_loop().create_task(self.table.expire_forever(self._expire))
        session_id = self.table.reserve()  # the limit, checked and taken at once
        self.sessions[session_id] = {"client_id": client_id, "created_at": time.time(),
                                     "requests_done": 0, "tokens": 0, "generating": 0,
                                     "deleted": asyncio.Event()}
        return {"session_id": session_id, "client_id": client_id, "backend": self.name,
                "session_pid": os.getpid(), "created_in_s": 0.0}

    async def queue_status(self, session_id: str) -> dict[str, Any]:
        session = self.sessions[session_id]
        return {"session_id": session_id, **{k: v for k, v in session.items() if k != "deleted"},
                "closed": False, "pid": os.getpid()}

    async def delete_session(self, session_id: str) -> dict[str, Any]:
        session = self.sessions.pop(session_id)
        self.table.release(session_id)
        session["deleted"].set()  # a stream in progress cancels its call and ends "closed"
        return {"session_id": session_id, "deleted": True, "cancelled": session["generating"]}

    def _call(self, prompt: str, max_tokens: int) -> Any:
        handle = self.generator.options(stream=True)  # a streaming call: an async iterator back
        if self.args.engine == "batch":
            return handle.stream.remote(prompt, max_tokens, self.override)
        from ray.serve.llm.openai_api_models import CompletionRequest

        request = CompletionRequest(model=self.model_id, prompt=prompt, max_tokens=max_tokens,
                                    temperature=0.0, stream=True, ignore_eos=True,
                                    stream_options={"include_usage": True})
        return handle.completions.remote(request)

    def _pieces(self, item: Any, state: dict[str, Any]) -> list[tuple[str, int]]:
        """Text pieces (and their token counts) in one item the generator streamed."""
        if self.args.engine == "batch":
            if isinstance(item, dict):  # the header: which replica, which batch
                state["worker"] = item["replica"]
                if item["batch"] not in self.recent_batches:
                    self.recent_batches[item["batch"]] = None
                    if len(self.recent_batches) > RECENT_BATCHES:
                        self.recent_batches.popitem(last=False)
                    totals = self.batch_totals
                    totals["batches"] += 1
                    totals["batched_requests"] += item["size"]
                    totals["largest_batch"] = max(totals["largest_batch"], item["size"])
                return []
            return [(item[0], 1)]
        state["worker"] = "vLLM engine"
        pieces = []
        for chunk in item if isinstance(item, list) else [item]:
            if not isinstance(chunk, str):
                raise RuntimeError(f"the engine answered with an error: {chunk}")
            body = chunk.removeprefix("data: ").strip()
            if not body or body == "[DONE]":
                continue
            data = json.loads(body)
            if data.get("choices"):
                pieces.append((data["choices"][0].get("text", ""), 1))
                state["counted"] += 1
            elif data.get("usage"):  # the last chunk: the exact token count
                pieces.append(("", data["usage"]["completion_tokens"] - state["counted"]))
        return pieces

    async def stream(self, session_id: str, prompt: str, max_tokens: int) -> AsyncIterator[tuple[str, int]]:
        """The WebSocket route calls this per request and sends each piece as it comes."""
        session = self.sessions[session_id]
        deleted = asyncio.ensure_future(session["deleted"].wait())
        response = self._call(prompt, max_tokens)
        state: dict[str, Any] = {"worker": None, "counted": 0, "tokens": 0}
        session["generating"] += 1
        self.table.begin(session_id)  # a session streaming is never idle
        self.counts["requests"] += 1
        iterator = response.__aiter__()
        finished = False
        try:
            while True:  # the next piece, unless the session is deleted first
                following = asyncio.ensure_future(iterator.__anext__())
                await asyncio.wait({following, deleted}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    self.counts["cancelled"] += 1
                    raise SessionClosed(session_id)
                try:
                    item = following.result()
                except StopAsyncIteration:
                    finished = True
                    break
                for text, tokens in self._pieces(item, state):
                    state["tokens"] += tokens
                    yield text, tokens
        finally:
            deleted.cancel()
            if not finished:  # deleted, or the client went away: the generator stops too
                response.cancel()
            session["generating"] -= 1
            self.table.end(session_id)
            self.counts["tokens"] += state["tokens"]
            worker = self.workers.setdefault(state["worker"] or "?", {"requests": 0, "tokens": 0})
            worker["requests"] += 1
            worker["tokens"] += state["tokens"]
        session["requests_done"] += 1
        session["tokens"] += state["tokens"]
        self.counts["done"] += 1

    async def stats(self) -> dict[str, Any]:
        totals = self.batch_totals
        count = totals["batches"]
        out = {"backend": self.name, "sessions": len(self.sessions), **self.counts,
               "generating": sum(s["generating"] for s in self.sessions.values()),
               **totals, "mean_batch_size": round(totals["batched_requests"] / count, 2) if count else 0,
               "workers": [{"worker": k, **v} for k, v in sorted(self.workers.items())],
               "expired_sessions": self.expired,
               "limits": {"max_sessions": self.table.max_sessions,
                          "session_idle_timeout_s": self.table.idle_timeout_s,
                          "max_prompt_chars": self.max_prompt_chars}}
        if self.args.engine == "batch":
            out["generator"] = await self.generator.describe.remote(self.override)  # one replica's view
            out["settings"] = out["generator"]["settings"]
        return out

    async def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """New batch settings for this application's generator, as an override (no deploy)."""
        if self.args.engine == "llm":
            raise ConfigureRejected(
                "vLLM batches continuously (sequences join and leave the running batch at every "
                "step): there is no batch size or timeout to set. Its limit, max_num_seqs, is an "
                "engine argument; changing it restarts the engine.")
        described = await self.generator.describe.remote(self.override)
        settings = check_batch_settings(changes, BatchSettings(**described["settings"]))
        self.override = {"settings": settings.model_dump(), "over": described["declared"]}
        described = await self.generator.describe.remote(self.override)
        return {"backend": self.name, "settings": described["settings"],
                "declared": described["declared"], "generator_pid": described["pid"]}


def build_app(args: dict[str, Any]) -> Any:
    """The application (what the config's ``import_path`` names): ingress + generator."""
    checked = AppArgs(**args)
    if checked.engine == "batch":
        generator = TokenGenerator.options(
            num_replicas=checked.generator_replicas,
            ray_actor_options={"num_cpus": checked.generator_num_cpus},
        ).bind(checked.model_source, checked.torch_threads)
    else:
        from ray.serve.llm import LLMConfig, build_llm_deployment

        if not checked.llm_config:
            raise ValueError("engine 'llm' needs llm_config (an LLMConfig as a dict)")
        generator = build_llm_deployment(LLMConfig(**checked.llm_config))
    return StreamingIngress.bind(generator, checked.model_dump())
