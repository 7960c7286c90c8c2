"""A browser-free client of the streaming service, and simulated users.

:class:`StreamingClient` speaks the API of :mod:`helpers.streaming.api` (the same for both
implementations): HTTP for sessions, statistics and configuration (``aiohttp``), a WebSocket
per session for the text (``websockets``). Everything is ``async``: in a notebook, ``await``
it in a cell; in a script, ``asyncio.run`` it.

Usage::

    async with StreamingClient("http://127.0.0.1:8000", token=service.token) as client:
        session = await client.init_session("me")
        async with client.connect(session["session_id"]) as stream:
            record = await stream.ask("Return the", max_tokens=24, on_text=print)
        record.ttft_s, record.tokens                # time to first text, tokens received

    records = await simulate_users(url, users=8, duration_s=20, max_tokens=32, token=token)

The token (the service's, see :mod:`helpers.streaming.api`) goes with every call as
``Authorization: Bearer TOKEN``; statistics, configuration and the WebSocket refuse calls
without it (HTTP 401, close code 4401).

Introduced in notebooks/12_streaming_sessions.ipynb.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from helpers.errors import WorkbookError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "StreamRecord",
    "StreamingClient",
    "SessionStream",
    "stream_once",
    "simulate_users",
    "summarize",
]


@dataclass
class StreamRecord:
    """One request on a WebSocket: what came back and when."""

    session_id: str
    prompt: str
    max_tokens: int
    sent_at: float  # time.time() when the prompt was sent
    ttft_s: float | None  # first text after sending
    latency_s: float | None  # the "done" message after sending
    tokens: int
    text: str
    outcome: str  # "done", "closed" (session deleted), "error"
    message: str = ""
    user: int = 0


class SessionStream:
    """One session's WebSocket: send prompts, read text as it comes."""

    def __init__(self, socket: Any, session_id: str) -> None:
        self.socket = socket
        self.session_id = session_id
        self.close_code: int | None = None
        self.close_reason = ""

    async def ask(
        self,
        prompt: str,
        max_tokens: int | None = None,
        *,
        on_text: Callable[[str], None] | None = None,
        timeout_s: float = 120.0,
    ) -> StreamRecord:
        """Send one prompt; collect its text until ``done`` (or ``closed`` / ``error``)."""
        from websockets.exceptions import ConnectionClosed

        body: dict[str, Any] = {"prompt": prompt}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        sent_at, started = time.time(), time.perf_counter()
        record = StreamRecord(
            self.session_id, prompt, max_tokens or 0, sent_at, None, None, 0, "", "error"
        )
        pieces: list[str] = []
        await self.socket.send(json.dumps(body))
        try:
            while True:
                message = json.loads(await asyncio.wait_for(self.socket.recv(), timeout_s))
                kind = message.get("type")
                if kind == "text":
                    if record.ttft_s is None:
                        record.ttft_s = time.perf_counter() - started
                    pieces.append(message["text"])
                    if on_text is not None:
                        on_text(message["text"])
                elif kind == "done":
                    record.latency_s = time.perf_counter() - started
                    record.tokens, record.outcome = int(message["tokens"]), "done"
                    break
                else:  # "closed" or "error"
                    record.outcome = kind or "error"
                    record.message = message.get("message") or message.get("reason", "")
                    break
        except ConnectionClosed as err:
            self.close_code = err.rcvd.code if err.rcvd else None
            self.close_reason = err.rcvd.reason if err.rcvd else ""
            record.outcome, record.message = (
                "closed",
                f"connection closed: {self.close_reason or err}",
            )
        except asyncio.TimeoutError:
            record.message = f"no answer within {timeout_s:.0f} s"
        record.text = "".join(pieces)
        return record

    async def wait_closed(self, timeout_s: float = 10.0) -> tuple[int | None, str]:
        """Wait until the server closes the socket; its close code and reason."""
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                await asyncio.wait_for(self.socket.recv(), timeout_s)
        except ConnectionClosed as err:
            if err.rcvd is not None:
                self.close_code, self.close_reason = err.rcvd.code, err.rcvd.reason
        return self.close_code, self.close_reason

    async def finish(self) -> tuple[int | None, str]:
        """Send ``EOF``; the server closes the socket normally (code 1000)."""
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            await self.socket.send("EOF")
        return await self.wait_closed()


class StreamingClient:
    """HTTP and WebSocket client of one service (``base_url`` without a trailing slash) with
    its ``token`` (without one, only the session endpoints answer)."""

    def __init__(
        self, base_url: str, token: str | None = None, *, timeout_s: float = 120.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._http: Any = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def __aenter__(self) -> StreamingClient:
        import aiohttp

        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._http.close()

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        async with self._http.request(
            method, self.base_url + path, json=body, headers=self.headers
        ) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                detail = data.get("detail", data) if isinstance(data, dict) else data
                raise WorkbookError(
                    f"{method} {path} answered HTTP {resp.status}: {detail}",
                    "read the message: it says what the server expected.",
                )
            return data

    async def health(self) -> dict[str, Any]:
        return await self._call("GET", "/health")

    async def init_session(
        self, client_id: str = "notebook", language_pair: str | None = None
    ) -> dict[str, Any]:
        """A new session; ``language_pair`` picks the model that serves it (default: the
        service's first pair)."""
        body = {
            "client_id": client_id,
            **({"language_pair": language_pair} if language_pair else {}),
        }
        return await self._call("POST", "/init", body)

    async def queue_status(self, session_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/queue_status/{session_id}")

    async def delete_session(self, session_id: str) -> dict[str, Any]:
        return await self._call("POST", "/delete_session", {"session_id": session_id})

    async def stats(self) -> dict[str, Any]:
        return await self._call("GET", "/ray/stats")

    async def configure(self, **changes: Any) -> dict[str, Any]:
        return await self._call("POST", "/ray/configure", changes)

    def ws_url(self, session_id: str) -> str:
        return self.base_url.replace("http", "ws", 1) + f"/wss/{session_id}"

    @contextlib.asynccontextmanager
    async def connect(self, session_id: str) -> AsyncIterator[SessionStream]:
        """A :class:`SessionStream` on the session's WebSocket (closed on exit)."""
        import websockets

        async with websockets.connect(
            self.ws_url(session_id),
            open_timeout=self.timeout_s,
            max_size=None,
            additional_headers=self.headers,
        ) as socket:
            yield SessionStream(socket, session_id)


async def stream_once(
    base_url: str,
    prompt: str,
    max_tokens: int | None = None,
    *,
    token: str | None = None,
    on_text: Callable[[str], None] | None = None,
) -> StreamRecord:
    """A whole session for one prompt: init, connect, ask, EOF, delete."""
    async with StreamingClient(base_url, token) as client:
        session = await client.init_session("stream_once")
        try:
            async with client.connect(session["session_id"]) as stream:
                record = await stream.ask(prompt, max_tokens, on_text=on_text)
                await stream.finish()
        finally:
            await client.delete_session(session["session_id"])
    return record


async def simulate_users(
    base_url: str,
    *,
    users: int,
    duration_s: float,
    max_tokens: int | Sequence[int] = 32,
    prompts: Sequence[str] | None = None,
    think_s: float = 0.0,
    seed: int = 0,
    session_ids: Sequence[str] | None = None,
    token: str | None = None,
) -> pd.DataFrame:
    """``users`` concurrent users, each with its own session and WebSocket, for ``duration_s``.

    Every user asks, reads the whole answer, waits ``think_s``, and asks again until the
    time is up (a request started before the end is finished). ``max_tokens`` is one value
    for everyone or one per user (uneven users). Each user opens a session and deletes it at
    the end, unless ``session_ids`` gives one (open) session per user to use instead.
    Returns one row per request (see :class:`StreamRecord`), ``user`` numbered from 0;
    setting up and ending the sessions is not part of the measured time.
    """
    import pandas as pd

    from helpers.llm import bench_prompts

    per_user = [max_tokens] * users if isinstance(max_tokens, int) else list(max_tokens)
    if len(per_user) != users:
        raise WorkbookError(
            f"max_tokens has {len(per_user)} values for {users} users.",
            "give one value, or exactly one per user.",
        )
    if session_ids is not None and len(session_ids) != users:
        raise WorkbookError(
            f"{len(session_ids)} sessions for {users} users.", "give one session per user, or none."
        )
    pool = list(prompts or bench_prompts(64, seed=seed))
    records: list[StreamRecord] = []
    async with StreamingClient(base_url, token) as client:
        if session_ids is None:
            sessions = await asyncio.gather(
                *(client.init_session(f"user-{u}") for u in range(users))
            )
        else:
            sessions = [{"session_id": sid} for sid in session_ids]
        start_line = asyncio.Event()

        async def user(u: int) -> None:
            rng = random.Random(seed * 1000 + u)
            async with client.connect(sessions[u]["session_id"]) as stream:
                await start_line.wait()
                deadline = time.monotonic() + duration_s
                while time.monotonic() < deadline:
                    record = await stream.ask(rng.choice(pool), per_user[u])
                    record.user = u
                    records.append(record)
                    if record.outcome != "done":
                        break
                    if think_s:
                        await asyncio.sleep(think_s)
                await stream.finish()

        tasks = [asyncio.ensure_future(user(u)) for u in range(users)]
        await asyncio.sleep(0.2)  # every socket open before the clock starts
        start_line.set()
        try:
            await asyncio.gather(*tasks)
        finally:
            if session_ids is None:
                await asyncio.gather(
                    *(client.delete_session(s["session_id"]) for s in sessions),
                    return_exceptions=True,
                )
    frame = pd.DataFrame([asdict(r) for r in records])
    if not frame.empty:
        frame["t_s"] = frame["sent_at"] - frame["sent_at"].min()
    return frame


def summarize(records: pd.DataFrame, label: str = "") -> dict[str, Any]:
    """Throughput and latency of a :func:`simulate_users` run, as one flat dict."""
    done = records[records["outcome"] == "done"] if not records.empty else records
    if done.empty:
        return {"label": label, "requests": 0, "errors": len(records)}
    span = float((done["sent_at"] + done["latency_s"]).max() - done["sent_at"].min())

    def pct(column: str, q: float) -> float | None:
        values = sorted(done[column].dropna())
        return round(values[min(len(values) - 1, int(q * len(values)))], 4) if values else None

    return {
        "label": label,
        "users": int(records["user"].nunique()),
        "requests": int(len(done)),
        "errors": int(len(records) - len(done)),
        "tokens": int(done["tokens"].sum()),
        "seconds": round(span, 2),
        "tokens_per_s": round(float(done["tokens"].sum()) / span, 1) if span > 0 else 0.0,
        "p50_ttft_s": pct("ttft_s", 0.5),
        "p90_ttft_s": pct("ttft_s", 0.9),
        "p50_latency_s": pct("latency_s", 0.5),
        "p90_latency_s": pct("latency_s", 0.9),
    }
