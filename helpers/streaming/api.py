"""The service's HTTP and WebSocket API, the same for both implementations of lesson 12.

:func:`build_api` turns a *backend* (the plain-actor one or the Serve one) into a FastAPI app
with the service's endpoints:

=========================  =====================================================================
``GET /``                  a small web page: open it in a browser and watch tokens stream
``GET /health``            ``{"status": "ok", "backend": ...}``
``POST /init``             ``{"client_id"}`` -> a new session ``{"session_id", ...}``
``GET /queue_status/ID``   the session's state: requests waiting, generating, done, tokens
``POST /delete_session``   ``{"session_id"}``: close it (a stream in progress ends cleanly)
``WS /wss/ID``             send ``{"prompt", "max_tokens"}`` (or a plain-text prompt); receive
                           ``{"type": "text", "text"}`` messages as tokens are produced, then
                           ``{"type": "done", "tokens", "seconds"}``; send ``EOF`` to finish
``GET /ray/stats``         sessions, requests, tokens, batch sizes, per-worker work, settings
``POST /ray/configure``    change ``max_batch_size`` / ``batch_timeout_ms`` /
                           ``enable_dynamic_batching`` while sessions stream
=========================  =====================================================================

A session deleted while it streams gets ``{"type": "closed", "reason": "session deleted"}``
and a normal close (code 1000). Bad input is answered with HTTP 400/404/422 and a message
that says what to send instead; on a WebSocket with an ``error`` message (the socket stays
open).

A backend is any object with these coroutine methods: ``init_session(client_id)``,
``queue_status(session_id)``, ``delete_session(session_id)``, ``stream(session_id, prompt,
max_tokens)`` (an async iterator of text pieces, raising :class:`SessionClosed` when the
session is deleted), ``stats()``, ``configure(changes)``; and the attributes ``name`` and
``max_tokens_limit`` / ``default_max_tokens``. Unknown sessions raise ``KeyError``.

Introduced in notebooks/12_streaming_sessions.ipynb.
"""

from __future__ import annotations

import json
import time
from typing import Any

# At module level (not inside build_api): FastAPI reads the routes' annotations, which
# `from __future__ import annotations` turns into names it must find in this module.
from fastapi import Body, FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

__all__ = ["SessionClosed", "ConfigureRejected", "build_api", "PAGE", "DELETED_REASON"]

DELETED_REASON = "session deleted"


class SessionClosed(Exception):
    """The session was deleted while a request of it was in progress."""


class ConfigureRejected(Exception):
    """The backend cannot apply this configuration change (with the reason)."""


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
let ws = null, sent = 0, first = 0;
fetch(base + "/health").then(r => r.json()).then(h => $("backend").textContent = h.backend);
async function connect() {
  const r = await fetch(base + "/init", {method: "POST", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify({client_id: "browser"})});
  const s = await r.json();
  $("sid").textContent = s.session_id;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(scheme + location.host + base + "/wss/" + s.session_id);
  ws.onmessage = (event) => {
    const m = JSON.parse(event.data);
    if (m.type === "text") { if (!first) first = performance.now(); $("out").textContent += m.text; }
    if (m.type === "done") $("timing").textContent = `${m.tokens} tokens; first after ` +
        `${Math.round(first - sent)} ms, all after ${Math.round(performance.now() - sent)} ms`;
    if (m.type === "error" || m.type === "closed") $("timing").textContent = m.message || m.reason;
  };
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


def _read_request(text: str, default_max_tokens: int, limit: int) -> tuple[str, int]:
    """``(prompt, max_tokens)`` from a WebSocket message, or ValueError saying what to send."""
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
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= limit:
        raise ValueError(f"max_tokens must be an integer from 1 to {limit}, got {max_tokens!r}")
    return prompt, max_tokens


def build_api(backend: Any) -> Any:
    """The FastAPI app of the service, on top of ``backend`` (see the module doc)."""
    from helpers.streaming.config import ConfigError

    app = FastAPI(title=f"Streaming sessions ({backend.name})")

    async def known(call: Any, session_id: str) -> Any:
        try:
            return await call(session_id)
        except KeyError:
            raise HTTPException(404, f"no session {session_id!r}: create one with POST /init") from None

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
        try:
            return await backend.init_session(client_id)
        except OverflowError as err:
            raise HTTPException(429, str(err)) from None

    @app.get("/queue_status/{session_id}")
    async def queue_status(session_id: str) -> dict[str, Any]:
        return await known(backend.queue_status, session_id)

    @app.post("/delete_session")
    async def delete_session(body: dict = Body(default={})) -> dict[str, Any]:
        session_id = body.get("session_id")
        if not isinstance(session_id, str):
            raise HTTPException(400, 'send {"session_id": "..."}')
        return await known(backend.delete_session, session_id)

    @app.get("/ray/stats")
    async def stats() -> dict[str, Any]:
        return await backend.stats()

    @app.post("/ray/configure")
    async def configure(body: dict = Body(default={})) -> dict[str, Any]:
        try:
            return await backend.configure(body)
        except ConfigError as err:
            raise HTTPException(422, "; ".join(err.problems)) from None
        except ConfigureRejected as err:
            raise HTTPException(409, str(err)) from None

    @app.websocket("/wss/{session_id}")
    async def stream(websocket: WebSocket, session_id: str) -> None:
        await websocket.accept()
        try:
            await backend.queue_status(session_id)
        except KeyError:
            await websocket.close(code=4404, reason=f"no session {session_id!r}")
            return
        try:
            while True:
                message = await websocket.receive_text()
                if message.strip() == "EOF":
                    await websocket.close(code=1000, reason="EOF")
                    return
                try:
                    prompt, max_tokens = _read_request(message, backend.default_max_tokens,
                                                       backend.max_tokens_limit)
                except ValueError as err:
                    await websocket.send_json({"type": "error", "message": str(err)})
                    continue
                started, tokens = time.perf_counter(), 0
                try:
                    async for piece, count in backend.stream(session_id, prompt, max_tokens):
                        tokens += count
                        if piece:
                            await websocket.send_json({"type": "text", "text": piece})
                except (SessionClosed, KeyError):
                    await websocket.send_json({"type": "closed", "reason": DELETED_REASON})
                    await websocket.close(code=1000, reason=DELETED_REASON)
                    return
                await websocket.send_json({"type": "done", "tokens": tokens,
                                           "seconds": round(time.perf_counter() - started, 4)})
        except WebSocketDisconnect:
            return

    return app
