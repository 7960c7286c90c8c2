"""The service's HTTP and WebSocket API, the same for both implementations of lesson 12.

:func:`build_api` turns a *backend* (the plain-actor one or the Serve one) into a FastAPI app
with the service's endpoints:

=========================  =====================================================================
``GET /``                  a small web page: open it in a browser and watch tokens stream
``GET /health``            ``{"status": "ok", "backend": ...}``
``POST /init``             ``{"client_id", "language_pair"}`` -> a new session
                           ``{"session_id", ...}`` (the pair: a backend that serves several)
``GET /queue_status/ID``   the session's state: requests waiting, generating, done, tokens
``POST /delete_session``   ``{"session_id"}``: close it (a stream in progress ends cleanly)
``WS /wss/ID``             send ``{"prompt", "max_tokens"}`` (or a plain-text prompt); receive
                           ``{"type": "text", "text"}`` messages as tokens are produced, then
                           ``{"type": "done", "tokens", "seconds"}``; send ``EOF`` to finish
``GET /ray/stats``         sessions, requests, tokens, batch sizes, per-worker work, settings
``POST /ray/configure``    change ``max_batch_size`` / ``batch_timeout_ms`` /
                           ``enable_dynamic_batching`` while sessions stream
=========================  =====================================================================

**A token.** ``/ray/stats``, ``/ray/configure`` and the WebSocket need the service's token
(:func:`new_token`: each start of the service generates one unless one is given): send
``Authorization: Bearer TOKEN``; a browser's WebSocket cannot set headers, so there the token
may come as ``?token=TOKEN`` (the web page reads it from its address, ``/#token=TOKEN``). A
missing or wrong token gets HTTP 401 (on the WebSocket: close code 4401) with a message that
says what to send. The WebSocket also checks the ``Origin`` a browser sends: only the
service's own page and the configured ``allowed_origins`` may open it (else close code 4403),
so another web site open in the same browser cannot use a session.

**Limits.** At most ``max_sessions`` sessions (taken atomically: a burst of ``/init`` gets
exactly that many, the rest HTTP 429); a session with no request for
``session_idle_timeout_s`` is closed (:class:`SessionTable`; reading its ``/queue_status``
does not count as a request, a request in progress does); a prompt longer than
``max_prompt_chars`` gets an ``error`` message with ``"code": 413``.

A session deleted while it streams gets ``{"type": "closed", "reason": "session deleted"}``
and a normal close (code 1000). Bad input is answered with HTTP 400/404/422 and a message
that says what to send instead; on a WebSocket with an ``error`` message (the socket stays
open).

A backend is any object with these coroutine methods: ``init_session(client_id)``,
``queue_status(session_id)``, ``delete_session(session_id)``, ``stream(session_id, prompt,
max_tokens)`` (an async iterator of text pieces, raising :class:`SessionClosed` when the
session is deleted), ``stats()``, ``configure(changes)``; and the attributes ``name`` and
``max_tokens_limit`` / ``default_max_tokens`` / ``max_prompt_chars``. Unknown sessions raise
``KeyError``; ``init_session`` raises ``OverflowError`` at the session limit. A backend with
several models has ``language_pairs`` and takes ``init_session(client_id, language_pair)``
(``ValueError`` for a pair it does not serve).

Introduced in notebooks/12_streaming_sessions.ipynb.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

# At module level (not inside build_api): FastAPI reads the routes' annotations, which
# `from __future__ import annotations` turns into names it must find in this module.
from fastapi import Body, Depends, FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

__all__ = [
    "SessionClosed",
    "ConfigureRejected",
    "SessionTable",
    "build_api",
    "admit",
    "next_request",
    "close_deleted",
    "allowed_origin_set",
    "new_token",
    "PAGE",
    "DELETED_REASON",
    "EXPIRED_REASON",
]

DELETED_REASON = "session deleted"
EXPIRED_REASON = "session expired"


class SessionClosed(Exception):
    """The session was deleted while a request of it was in progress."""


class ConfigureRejected(Exception):
    """The backend cannot apply this configuration change (with the reason)."""


def new_token() -> str:
    """A fresh random API token (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)


class SessionTable:
    """The open sessions of one backend: an atomic limit and idle expiry, without Ray.

    :meth:`reserve` checks the limit and takes a slot in one step, with no ``await`` in
    between, so concurrent ``/init`` calls on one event loop can never exceed
    ``max_sessions``. A session is idle when no request of it is in progress
    (:meth:`busy`) and none started for ``idle_timeout_s``; :meth:`idle` lists those.

    Usage::

        table = SessionTable(max_sessions=5, idle_timeout_s=600)
        session_id = table.reserve()            # OverflowError when 5 are open
        with table.busy(session_id): ...        # a request in progress: never idle
        table.idle()                            # ids idle for 600 s or more
        table.release(session_id)
    """

    def __init__(self, max_sessions: int, idle_timeout_s: float) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self._last: dict[str, float] = {}  # session id -> monotonic time of its last use
        self._busy: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._last)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._last

    def reserve(self) -> str:
        """A new session id, its slot taken; OverflowError if ``max_sessions`` are open."""
        if len(self._last) >= self.max_sessions:
            raise OverflowError(
                f"{self.max_sessions} sessions are open, the most allowed: "
                "delete one first (POST /delete_session), or try again later"
            )
        session_id = uuid.uuid4().hex[:16]
        self._last[session_id] = time.monotonic()
        self._busy[session_id] = 0
        return session_id

    def release(self, session_id: str) -> None:
        """Free the session's slot (deleted, expired, or its start failed)."""
        self._last.pop(session_id, None)
        self._busy.pop(session_id, None)

    def touch(self, session_id: str) -> None:
        if session_id in self._last:
            self._last[session_id] = time.monotonic()

    def begin(self, session_id: str) -> None:
        """A request of the session starts (the session is not idle until it ends)."""
        self.touch(session_id)
        if session_id in self._busy:
            self._busy[session_id] += 1

    def end(self, session_id: str) -> None:
        """A request of the session ended (the idle clock starts again)."""
        if session_id in self._busy:
            self._busy[session_id] = max(0, self._busy[session_id] - 1)
        self.touch(session_id)

    @contextmanager
    def busy(self, session_id: str) -> Iterator[None]:
        """:meth:`begin` and :meth:`end` around a request."""
        self.begin(session_id)
        try:
            yield
        finally:
            self.end(session_id)

    def idle(self, now: float | None = None) -> list[str]:
        """Sessions with nothing in progress and no use for ``idle_timeout_s`` or longer."""
        now = time.monotonic() if now is None else now
        return [
            sid
            for sid, last in self._last.items()
            if not self._busy.get(sid) and now - last >= self.idle_timeout_s
        ]

    def check_interval_s(self) -> float:
        """How often to look for idle sessions: a quarter of the timeout, 0.25 s to 30 s."""
        return min(30.0, max(0.25, self.idle_timeout_s / 4))

    async def expire_forever(self, delete: Any) -> None:
        """Call ``await delete(session_id)`` for every idle session, every check interval."""
        while True:
            await asyncio.sleep(self.check_interval_s())
            for session_id in self.idle():
                try:
                    await delete(session_id)
                except Exception:  # noqa: BLE001 - deleted meanwhile, or its process gone
                    self.release(session_id)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Streaming sessions</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; }
 #out { white-space: pre-wrap; border: 1px solid #999; padding: .8rem; min-height: 6rem; }
 .meta { color: #666; font-size: .9rem; }
</style></head>
<body>
<h1>Streaming sessions</h1>
<p class="meta">Backend: <b id="backend">?</b>. Session: <span id="sid">none yet</span></p>
<p><input id="text" size="40" value="Return the">
 max tokens <input id="max" type="number" value="48" min="1" style="width:4rem">
 <button id="send">Send</button> <button id="end">End session</button></p>
<div id="out"></div>
<p class="meta" id="timing"></p>
<script>
const $ = (id) => document.getElementById(id);
const base = location.pathname.replace(/\\/$/, "");
// The API token: open this page as .../#token=TOKEN (the part after # never leaves the browser).
const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
let ws = null, sent = 0, first = 0;
fetch(base + "/health").then(r => r.json()).then(h => $("backend").textContent = h.backend);
async function connect() {
  const r = await fetch(base + "/init", {method: "POST", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify({client_id: "browser"})});
  const s = await r.json();
  $("sid").textContent = s.session_id;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(scheme + location.host + base + "/wss/" + s.session_id +
                     "?token=" + encodeURIComponent(token));
  ws.onmessage = (event) => {
    const m = JSON.parse(event.data);
    if (m.type === "text") { if (!first) first = performance.now(); $("out").textContent += m.text; }
    if (m.type === "done") $("timing").textContent = `${m.tokens} tokens; first after ` +
        `${Math.round(first - sent)} ms, all after ${Math.round(performance.now() - sent)} ms`;
    if (m.type === "error" || m.type === "closed") $("timing").textContent = m.message || m.reason;
  };
  ws.onclose = (event) => { if (event.code >= 4000) $("timing").textContent = event.reason; };
  return new Promise(resolve => ws.onopen = resolve);
}
$("send").onclick = async () => {
  if (!ws || ws.readyState !== 1) await connect();
  $("out").textContent = $("text").value; first = 0; sent = performance.now();
  ws.send(JSON.stringify({prompt: $("text").value, max_tokens: Number($("max").value)}));
};
$("end").onclick = () => { if (ws) ws.send("EOF"); };
</script>
</body></html>
"""


class PromptTooLarge(ValueError):
    """A prompt over ``max_prompt_chars`` (answered with ``"code": 413``)."""


def _read_request(
    text: str, default_max_tokens: int, limit: int, max_prompt_chars: int | None = None
) -> tuple[str, int]:
    """``(prompt, max_tokens)`` from a WebSocket message, or ValueError saying what to send."""
    if max_prompt_chars is not None and len(text) > max_prompt_chars + 200:  # before parsing it
        raise PromptTooLarge(
            f"the message has {len(text)} characters; a prompt may have at most "
            f"{max_prompt_chars}: send a shorter one"
        )
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            body = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise ValueError(f"the message is not valid JSON ({err.msg})") from None
        prompt, max_tokens = body.get("prompt"), body.get("max_tokens", default_max_tokens)
    else:
        prompt, max_tokens = text, default_max_tokens
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError('send {"prompt": "some text", "max_tokens": 32} or a plain-text prompt')
    if max_prompt_chars is not None and len(prompt) > max_prompt_chars:
        raise PromptTooLarge(
            f"the prompt has {len(prompt)} characters; at most {max_prompt_chars} "
            "are accepted: send a shorter one"
        )
    if (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= limit
    ):
        raise ValueError(f"max_tokens must be an integer from 1 to {limit}, got {max_tokens!r}")
    return prompt, max_tokens


def _presented_token(authorization: str | None, query_token: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return query_token


def _token_problem(presented: str | None, token: str) -> str | None:
    """Why the request is refused (None: the token is right)."""
    if presented is None:
        return (
            "this endpoint needs the service's token: send the header 'Authorization: "
            "Bearer TOKEN' (StreamingClient(url, token=...) does; the token is "
            "ActorService.token, or app_token(entry) of the Serve application)"
        )
    if not hmac.compare_digest(presented.encode(), token.encode()):
        return (
            "wrong token: use the token of this start of the service (each start makes a new one)"
        )
    return None


def allowed_origin_set(allowed_origins: Sequence[str]) -> set[str]:
    """The configured origins, each checked (ValueError names a malformed one)."""
    from helpers.streaming.config import check_origin

    return {check_origin(o) for o in allowed_origins}


def own_origin(scheme: str, host: str | None) -> str:
    """The origin of the service as the client reached it (``http://HOST``)."""
    web = "https" if scheme in ("https", "wss") else "http"
    return f"{web}://{host or ''}"


async def admit(
    websocket: WebSocket, session_id: str, backend: Any, *, token: str, origins: Collection[str]
) -> bool:
    """Accept ``websocket``; True if it may stream ``session_id``. Else it is closed with a code
    and a reason the client can read (4403 another page's origin, 4401 no or a wrong token,
    4404 no such session) and False is returned."""
    origin = websocket.headers.get("origin")
    own = own_origin(websocket.url.scheme, websocket.headers.get("host"))
    await websocket.accept()  # then closed with a code and a reason the client can read
    if origin is not None and origin != own and origin not in origins:
        await websocket.close(
            code=4403,
            reason=f"origin {origin[:40]} is not allowed: add it to serving.allowed_origins",
        )
        return False
    problem = _token_problem(
        _presented_token(
            websocket.headers.get("authorization"), websocket.query_params.get("token")
        ),
        token,
    )
    if problem:
        await websocket.close(
            code=4401,
            reason=("no token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN")
            if "needs" in problem
            else "wrong token",
        )
        return False
    try:
        await backend.queue_status(session_id)
    except KeyError:
        await websocket.close(code=4404, reason=f"no session {session_id!r}")
        return False
    return True


async def next_request(websocket: WebSocket, backend: Any) -> tuple[str, int] | None:
    """The next ``(prompt, max_tokens)`` the client sends; None once it sent ``EOF`` (the socket
    is then closed, code 1000). A malformed message is answered with an ``error`` message (400,
    or 413 for a prompt over the limit) and skipped: the socket stays open."""
    while True:
        message = await websocket.receive_text()
        if message.strip() == "EOF":
            await websocket.close(code=1000, reason="EOF")
            return None
        try:
            return _read_request(
                message,
                backend.default_max_tokens,
                backend.max_tokens_limit,
                getattr(backend, "max_prompt_chars", None),
            )
        except PromptTooLarge as err:
            await websocket.send_json({"type": "error", "code": 413, "message": str(err)})
        except ValueError as err:
            await websocket.send_json({"type": "error", "code": 400, "message": str(err)})


async def close_deleted(websocket: WebSocket) -> None:
    """Tell the client its session was deleted while it streamed, and close normally (1000)."""
    await websocket.send_json({"type": "closed", "reason": DELETED_REASON})
    await websocket.close(code=1000, reason=DELETED_REASON)


def build_api(
    backend: Any, *, token: str, allowed_origins: Sequence[str] = (), stream_route: bool = True
) -> Any:
    """The FastAPI app of the service, on top of ``backend`` (see the module doc).

    ``token`` guards ``/ray/stats``, ``/ray/configure`` and the WebSocket; ``allowed_origins``
    are the web pages, besides the service's own, whose scripts may open the WebSocket.
    ``stream_route=False`` leaves out ``/wss/ID``: the Serve version adds its own (lesson 12
    writes it), built from :func:`admit`, :func:`next_request` and :func:`close_deleted`.
    """
    from helpers.streaming.config import ConfigError

    if not isinstance(token, str) or len(token) < 16:
        raise ValueError(
            "build_api needs a token of at least 16 characters (new_token() makes one)"
        )
    origins = allowed_origin_set(allowed_origins)
    app = FastAPI(title=f"Streaming sessions ({backend.name})")

    def authorized(request: Request) -> None:
        problem = _token_problem(
            _presented_token(request.headers.get("authorization"), None), token
        )
        if problem:
            raise HTTPException(401, problem, headers={"WWW-Authenticate": "Bearer"})

    async def known(call: Any, session_id: str) -> Any:
        try:
            return await call(session_id)
        except KeyError:
            raise HTTPException(
                404, f"no session {session_id!r}: create one with POST /init"
            ) from None

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "backend": backend.name}

    @app.post("/init")
    async def init(body: dict = Body(default={})) -> dict[str, Any]:
        client_id = body.get("client_id", "anonymous")
        if not isinstance(client_id, str) or not client_id:
            raise HTTPException(400, "client_id must be a non-empty string")
        pair = body.get("language_pair")
        pairs = getattr(backend, "language_pairs", None)
        if pair is not None and pairs is None:
            raise HTTPException(400, "this backend serves one model: leave language_pair out")
        if pair is not None and not isinstance(pair, str):
            raise HTTPException(400, "language_pair must be a string such as 'en-zh'")
        try:
            if pair is None:
                return await backend.init_session(client_id)
            return await backend.init_session(client_id, pair)
        except OverflowError as err:
            raise HTTPException(429, str(err)) from None
        except ValueError as err:  # a language pair the service does not serve
            raise HTTPException(400, str(err)) from None

    @app.get("/queue_status/{session_id}")
    async def queue_status(session_id: str) -> dict[str, Any]:
        return await known(backend.queue_status, session_id)

    @app.post("/delete_session")
    async def delete_session(body: dict = Body(default={})) -> dict[str, Any]:
        session_id = body.get("session_id")
        if not isinstance(session_id, str):
            raise HTTPException(400, 'send {"session_id": "..."}')
        return await known(backend.delete_session, session_id)

    @app.get("/ray/stats", dependencies=[Depends(authorized)])
    async def stats() -> dict[str, Any]:
        return await backend.stats()

    @app.post("/ray/configure", dependencies=[Depends(authorized)])
    async def configure(body: dict = Body(default={})) -> dict[str, Any]:
        try:
            return await backend.configure(body)
        except ConfigError as err:
            raise HTTPException(422, "; ".join(err.problems)) from None
        except ConfigureRejected as err:
            raise HTTPException(409, str(err)) from None

    if stream_route:

        @app.websocket("/wss/{session_id}")
        async def stream(websocket: WebSocket, session_id: str) -> None:
            if not await admit(websocket, session_id, backend, token=token, origins=origins):
                return
            try:
                while (request := await next_request(websocket, backend)) is not None:
                    started, tokens = time.perf_counter(), 0
                    try:
                        async for piece, count in backend.stream(session_id, *request):
                            tokens += count
                            if piece:
                                await websocket.send_json({"type": "text", "text": piece})
                    except (SessionClosed, KeyError):
                        await close_deleted(websocket)
                        return
                    await websocket.send_json(
                        {
                            "type": "done",
                            "tokens": tokens,
                            "seconds": round(time.perf_counter() - started, 4),
                        }
                    )
            except WebSocketDisconnect:
                return

    return app
