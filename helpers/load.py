"""Load for HTTP endpoints: closed loop or open loop, JSON or OpenAI chat, every request measured.

Two ways to offer load, the two a load test must tell apart:

* **closed loop** (``concurrency=C``): ``C`` virtual users, each sends its next request as soon
  as the previous one is answered. The server's speed sets the request rate, so a slow server
  is offered *less* load (what Locust users without wait time do).
* **open loop** (``rate=R``): requests start at ``R`` per second on a fixed schedule whatever
  the answers do, as independent clients would. A slow server sees requests pile up, and the
  latency shows it. A request that could not start on time (more than ``max_in_flight`` in
  flight) is counted as failed (``Dropped``), never silently skipped.

A run ends after ``requests`` requests, after ``duration_s`` seconds, or after the phases of a
``schedule`` (``[(seconds, level), ...]``: a step load). The level (concurrency or rate) can
also change while the load runs, from another thread (:meth:`LoadGenerator.set_level`: the
sliders of a live dashboard).

Requests are JSON (:func:`json_request`, a GET without a body) or OpenAI chat completions
(:func:`chat_request`), streamed or not: a streamed answer gives the time to first token and
the tokens per second of each request. Every request becomes one row: when it was due, sent
and answered, its latency, status or error, the load level at the time, and the fields of the
JSON answer that name who served it (``replica``, ``pid``, ``node``: read by
:mod:`helpers.traffic`, as everywhere in the workbook).

Usage::

    from helpers.load import load_test, json_request, chat_request
    result = load_test(url, json_request({"text": "great"}), concurrency=20, requests=200)
    result.summary()            # throughput, p50/p90/p99 latency, errors, replicas
    result.df                   # one row per request
    print(result.text())        # what the command line prints

    # inside Jupyter's event loop, either of:
    result = load_test(url, rate=50, duration_s=10)          # runs in a helper thread
    result = await load_test_async(url, rate=50, duration_s=10)

    # in the background, with the level changed while it runs:
    gen = LoadGenerator(url, json_request({"text": "hi"}), rate=5).start(duration_s=60)
    gen.set_level(40)
    result = gen.stop()

From a shell (the flags a typical load-test script has: ``-c -n -p``)::

    python -m helpers.load -c 20 -n 100 -p "Explain relativity briefly" --url http://127.0.0.1:8000/
    python -m helpers.load --rate 50 --duration 10 --json '{"text": "great"}' --url http://127.0.0.1:8000/classify
    python -m helpers.load -c 8 -n 64 --chat tiny-llama --stream -p "Return the" --url http://127.0.0.1:8000

Introduced in notebooks/05_autoscaling.ipynb; used by notebooks/06_batching.ipynb.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import copy
import inspect
import json
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.errors import AlreadyStartedError, ParameterError
from helpers.traffic import RECORD_FIELDS, _flatten, failure_summary

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "RequestSpec",
    "json_request",
    "completion_request",
    "chat_request",
    "LoadResult",
    "LoadGenerator",
    "load_test",
    "load_test_async",
    "summarize",
    "RunningSummary",
    "MAX_ROWS",
    "timeline",
    "run_in_new_loop",
    "main",
]

#: Columns of every result, in this order (then the chat columns, then what the answers named).
COLUMNS = ["i", "level", "t_sched", "t_start", "t_end", "latency_s", "ok", "status", "error"]
CHAT_COLUMNS = ["ttft_s", "completion_tokens", "tokens_per_s"]
#: Rows a run keeps by default; past this many requests it keeps a uniform random sample and
#: summarizes every request as it goes (:class:`RunningSummary`), so memory stays bounded.
MAX_ROWS = 50_000


# --- what to send ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestSpec:
    """One kind of request: method, path (appended to the URL), body, and how to read the answer.

    ``body`` is a JSON-able value, or a function of the request's index returning one (so
    requests can differ). ``kind`` is ``"json"`` or ``"chat"`` (an OpenAI chat completion:
    tokens are counted, and with ``stream`` the answer is read as server-sent events).
    Answers' ``replica``, ``pid``, ``node`` (and the other fields :mod:`helpers.traffic` reads)
    become columns; ``fields`` names more keys to keep (``("batch_size",)``).
    """

    method: str = "GET"
    path: str = ""
    body: Any = None
    kind: str = "json"
    stream: bool = False
    fields: tuple[str, ...] = ()  # more top-level keys of JSON answers to keep as columns

    def encoded_body(self, i: int) -> bytes | None:
        body = self.body(i) if callable(self.body) else self.body
        return None if body is None else json.dumps(body).encode()


def json_request(
    body: Any = None, *, path: str = "", method: str | None = None, fields: Sequence[str] = ()
) -> RequestSpec:
    """POST ``body`` as JSON (GET when there is no body) to the URL plus ``path``; keep the
    answers' ``fields`` (besides who served them) as columns."""
    return RequestSpec(
        method=method or ("GET" if body is None else "POST"),
        path=path,
        body=body,
        fields=tuple(fields),
    )


def completion_request(prompt: str, *, max_tokens: int = 64, path: str = "") -> RequestSpec:
    """A typical deployment kit's completion API: ``POST {"prompt": ..., "max_tokens": ...}``."""
    return json_request({"prompt": prompt, "max_tokens": max_tokens}, path=path)


def chat_request(
    model: str,
    prompt: str | None = None,
    *,
    messages: Sequence[Mapping[str, str]] | None = None,
    max_tokens: int = 32,
    stream: bool = False,
    temperature: float = 0.0,
    ignore_eos: bool = True,
    path: str = "/v1/chat/completions",
) -> RequestSpec:
    """An OpenAI chat completion request (to the URL plus ``path``).

    ``ignore_eos`` (a vLLM extension) makes every answer exactly ``max_tokens`` long, so runs
    compare. With ``stream`` the server is asked for the token usage in the last event.
    """
    if (prompt is None) == (messages is None):
        raise ParameterError(
            "chat_request needs a prompt or messages (one of the two).",
            "pass prompt='...' or messages=[{'role': 'user', 'content': '...'}].",
        )
    body: dict[str, Any] = {
        "model": model,
        "messages": list(messages)
        if messages is not None
        else [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": stream,
    }
    if ignore_eos:
        body["ignore_eos"] = True
    if stream:
        body["stream_options"] = {"include_usage": True}
    return RequestSpec(method="POST", path=path, body=body, kind="chat", stream=stream)


# --- results --------------------------------------------------------------------------------


def _percentile(values: Any, q: float) -> float:
    import numpy as np

    values = np.asarray(values, dtype=float)
    return float(np.percentile(values, q)) if values.size else float("nan")


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Counts, throughput and latency percentiles of a results table (one row per request).

    Throughput counts successful requests over the span from the first start to the last end.
    Latency percentiles are of successful requests (failed ones are counted, not timed).
    """
    import numpy as np

    failures = (
        failure_summary(df)
        if len(df)
        else {"sent": 0, "ok": 0, "failed": 0, "failure_window_s": 0.0, "error_kinds": {}}
    )
    ok = df[df["ok"].astype(bool)] if len(df) else df
    span = float(df["t_end"].max() - df["t_start"].min()) if len(df) else 0.0
    lat = ok["latency_s"].to_numpy(dtype=float) if len(ok) else np.array([])
    out: dict[str, Any] = {
        "requests": failures["sent"],
        "ok": failures["ok"],
        "failed": failures["failed"],
        "error_kinds": failures["error_kinds"],
        "duration_s": round(span, 3),
        "throughput_rps": round(len(ok) / span, 2) if span > 0 else 0.0,
        "latency_p50_s": round(_percentile(lat, 50), 4),
        "latency_p90_s": round(_percentile(lat, 90), 4),
        "latency_p99_s": round(_percentile(lat, 99), 4),
        "latency_mean_s": round(float(lat.mean()), 4) if lat.size else float("nan"),
        "latency_max_s": round(float(lat.max()), 4) if lat.size else float("nan"),
    }
    if len(df) and df["t_sched"].notna().any():
        lag = (df["t_start"] - df["t_sched"]).to_numpy(dtype=float)
        out["max_start_lag_s"] = round(float(np.nanmax(lag)), 4)
    if "completion_tokens" in df.columns and len(ok):
        tokens = ok["completion_tokens"].fillna(0).to_numpy(dtype=float)
        out["output_tokens"] = int(tokens.sum())
        out["output_tokens_per_s"] = round(tokens.sum() / span, 1) if span > 0 else 0.0
        ttft = ok["ttft_s"].dropna().to_numpy(dtype=float)
        if ttft.size:
            out["ttft_p50_s"] = round(_percentile(ttft, 50), 4)
            out["ttft_p90_s"] = round(_percentile(ttft, 90), 4)
        per_request = ok["tokens_per_s"].dropna().to_numpy(dtype=float)
        if per_request.size:
            out["request_tokens_per_s_p50"] = round(_percentile(per_request, 50), 1)
    for col in ("replica", "node"):
        if col in df.columns and df[col].notna().any():
            out[f"by_{col}"] = {str(k): int(v) for k, v in df[col].value_counts().items()}
    return out


def timeline(df: pd.DataFrame, *, bin_s: float = 1.0, t0: float | None = None) -> pd.DataFrame:
    """Per time bin: requests started, answered (ok) per second, p50/p90 latency, the level.

    ``t0`` (wall clock) is the zero of the time axis, by default the first request's start.
    """
    import pandas as pd

    columns = [
        "t_s",
        "started_rps",
        "ok_rps",
        "failed_rps",
        "latency_p50_s",
        "latency_p90_s",
        "level",
    ]
    if df.empty:
        return pd.DataFrame(columns=columns)
    t0 = float(df["t_start"].min()) if t0 is None else t0
    data = df.assign(
        start_bin=((df["t_start"] - t0) // bin_s) * bin_s,
        end_bin=((df["t_end"] - t0) // bin_s) * bin_s,
    )
    started = data.groupby("start_bin").size() / bin_s
    level = data.groupby("start_bin")["level"].mean()
    done = data[data["ok"].astype(bool)].groupby("end_bin")
    failed = data[~data["ok"].astype(bool)].groupby("end_bin").size() / bin_s
    out = pd.DataFrame(
        {
            "started_rps": started,
            "ok_rps": done.size() / bin_s,
            "failed_rps": failed,
            "latency_p50_s": done["latency_s"].median(),
            "latency_p90_s": done["latency_s"].quantile(0.9),
            "level": level,
        }
    )
    bins = [i * bin_s for i in range(int(max(out.index) // bin_s) + 1)] if len(out) else []
    out = out.reindex(sorted(set(bins) | set(out.index))).rename_axis("t_s").reset_index()
    out[["started_rps", "ok_rps", "failed_rps"]] = out[
        ["started_rps", "ok_rps", "failed_rps"]
    ].fillna(0.0)
    return out[columns]


class RunningSummary:
    """The numbers of :func:`summarize`, kept request by request in constant memory.

    A long run at a high rate keeps only a bounded sample of its rows (``max_rows``); this is
    what its summary is computed from instead. Counts, error kinds, who served, the span,
    throughput, token totals, the mean and the maximum are exact; percentiles come from
    histograms with logarithmic bins 1% wide, so each is within 0.5% of the exact value.

        running = RunningSummary()
        for row in rows:
            running.add(row)
        running.summary()       # the keys summarize(df) returns
    """

    _BIN = math.log(1.01)

    def __init__(self) -> None:
        self.requests = 0
        self.ok = 0
        self.error_kinds: dict[str, int] = {}
        self.first_start = math.inf
        self.last_end = -math.inf
        self.max_start_lag = -math.inf
        self.latency_sum = 0.0
        self.latency_max = -math.inf
        self.chat = False
        self.output_tokens = 0.0
        self.who: dict[str, dict[str, int]] = {"replica": {}, "node": {}}
        self._hist: dict[str, dict[int, int]] = {"latency": {}, "ttft": {}, "tokens_per_s": {}}

    def _bin(self, name: str, value: Any) -> None:
        if value is None or not isinstance(value, (int, float)) or math.isnan(value):
            return
        key = -(10**9) if value <= 0 else math.floor(math.log(value) / self._BIN)
        hist = self._hist[name]
        hist[key] = hist.get(key, 0) + 1

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one request's row (as :class:`LoadGenerator` makes them)."""
        self.requests += 1
        self.first_start = min(self.first_start, row["t_start"])
        self.last_end = max(self.last_end, row["t_end"])
        if row.get("t_sched") is not None:
            self.max_start_lag = max(self.max_start_lag, row["t_start"] - row["t_sched"])
        for col, counts in self.who.items():
            if row.get(col) is not None:
                counts[str(row[col])] = counts.get(str(row[col]), 0) + 1
        if "completion_tokens" in row:
            self.chat = True
        if not row.get("ok"):
            kind = str(row.get("error") or "").split(":")[0]
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
            return
        self.ok += 1
        latency = float(row["latency_s"])
        self.latency_sum += latency
        self.latency_max = max(self.latency_max, latency)
        self._bin("latency", latency)
        self.output_tokens += row.get("completion_tokens") or 0
        self._bin("ttft", row.get("ttft_s"))
        self._bin("tokens_per_s", row.get("tokens_per_s"))

    def percentile(self, name: str, q: float) -> float:
        """The ``q``-th percentile (0-100) of ``latency``, ``ttft`` or ``tokens_per_s``."""
        hist = self._hist[name]
        total = sum(hist.values())
        if not total:
            return float("nan")
        rank = q / 100 * (total - 1)
        seen = 0
        for key in sorted(hist):
            seen += hist[key]
            if seen > rank:
                return 0.0 if key == -(10**9) else math.exp((key + 0.5) * self._BIN)
        return float("nan")  # pragma: no cover - the loop always returns

    def summary(self) -> dict[str, Any]:
        """The keys and meaning of :func:`summarize`."""
        span = self.last_end - self.first_start if self.requests else 0.0
        out: dict[str, Any] = {
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.requests - self.ok,
            "error_kinds": dict(sorted(self.error_kinds.items(), key=lambda kv: -kv[1])),
            "duration_s": round(span, 3),
            "throughput_rps": round(self.ok / span, 2) if span > 0 else 0.0,
            "latency_p50_s": round(self.percentile("latency", 50), 4),
            "latency_p90_s": round(self.percentile("latency", 90), 4),
            "latency_p99_s": round(self.percentile("latency", 99), 4),
            "latency_mean_s": round(self.latency_sum / self.ok, 4) if self.ok else float("nan"),
            "latency_max_s": round(self.latency_max, 4) if self.ok else float("nan"),
        }
        if self.max_start_lag > -math.inf:
            out["max_start_lag_s"] = round(self.max_start_lag, 4)
        if self.chat and self.ok:
            out["output_tokens"] = int(self.output_tokens)
            out["output_tokens_per_s"] = round(self.output_tokens / span, 1) if span > 0 else 0.0
            if self._hist["ttft"]:
                out["ttft_p50_s"] = round(self.percentile("ttft", 50), 4)
                out["ttft_p90_s"] = round(self.percentile("ttft", 90), 4)
            if self._hist["tokens_per_s"]:
                out["request_tokens_per_s_p50"] = round(self.percentile("tokens_per_s", 50), 1)
        for col, counts in self.who.items():
            if counts:
                out[f"by_{col}"] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
        return out


@dataclass
class LoadResult:
    """What a run offered and what came back: one row per request in ``df``."""

    url: str
    mode: str  # "closed" (fixed concurrency) or "open" (fixed rate)
    level: float  # concurrency or requests per second at the start
    df: pd.DataFrame = field(repr=False)
    stream: bool = False
    started_at: float = 0.0  # wall clock
    levels: list[tuple[float, float]] = field(default_factory=list)  # (wall clock, level) changes
    #: Set when the run had more requests than ``max_rows``: ``df`` is then a uniform random
    #: sample of the rows, and the summary comes from these totals of every request.
    totals: RunningSummary | None = field(default=None, repr=False)

    @property
    def sampled(self) -> bool:
        """True when ``df`` holds a sample of the requests (see ``max_rows``), not all."""
        return self.totals is not None

    def summary(self) -> dict[str, Any]:
        """Counts, throughput, latency percentiles, errors by kind, who served (see :func:`summarize`).

        Of every request, also when ``df`` is a sample (then percentiles are within 0.5%).
        """
        if self.totals is not None:
            return {
                "mode": self.mode,
                "level": self.level,
                **self.totals.summary(),
                "rows_kept": len(self.df),
            }
        return {"mode": self.mode, "level": self.level, **summarize(self.df)}

    @property
    def throughput_rps(self) -> float:
        return float(self.summary()["throughput_rps"])

    def timeline(self, bin_s: float = 1.0) -> pd.DataFrame:
        """Per-second rates and latencies (:func:`timeline`) of the rows in ``df``: of a
        sample when :attr:`sampled` (rates then scale down by ``rows_kept / requests``)."""
        return timeline(self.df, bin_s=bin_s, t0=self.started_at or None)

    def text(self) -> str:
        """The summary as a few lines of text (what ``python -m helpers.load`` prints)."""
        s = self.summary()
        offered = (
            f"{self.level:g} concurrent"
            if self.mode == "closed"
            else f"{self.level:g} requests/s offered"
        )
        errors = ", ".join(f"{k} x{v}" for k, v in s["error_kinds"].items()) or "none"
        lines = [
            f"Load test: {self.mode} loop, {offered}, to {self.url}",
            f"  requests   {s['requests']} sent, {s['ok']} ok, {s['failed']} failed (errors: {errors})",
            f"  duration   {s['duration_s']:.2f} s; throughput {s['throughput_rps']:.1f} requests/s",
            f"  latency    p50 {s['latency_p50_s']:.3f} s, p90 {s['latency_p90_s']:.3f} s, "
            f"p99 {s['latency_p99_s']:.3f} s, max {s['latency_max_s']:.3f} s",
        ]
        if "output_tokens" in s:
            line = (
                f"  tokens     {s['output_tokens']} generated, "
                f"{s['output_tokens_per_s']:.1f} tokens/s in all"
            )
            if "ttft_p50_s" in s:
                line += (
                    f"; time to first token p50 {s['ttft_p50_s']:.3f} s, "
                    f"p90 {s['ttft_p90_s']:.3f} s; {s.get('request_tokens_per_s_p50', 0):.1f} "
                    "tokens/s per request (p50)"
                )
            lines.append(line)
        if self.sampled:
            lines.append(
                f"  rows       a random sample of {len(self.df)} of {s['requests']} requests "
                "kept (max_rows); the numbers above count every request"
            )
        if "max_start_lag_s" in s and self.mode == "open":
            lines.append(f"  schedule   requests started at most {s['max_start_lag_s']:.3f} s late")
        for col in ("node", "replica"):
            if f"by_{col}" in s:
                counts = ", ".join(f"{k[:16]}: {v}" for k, v in s[f"by_{col}"].items())
                lines.append(f"  by {col:<8} {counts}")
        return "\n".join(lines)


# --- the generator --------------------------------------------------------------------------


def run_in_new_loop(work: Callable[[], Any]) -> Any:
    """Call ``work()`` where no event loop is running and return its result; a coroutine it
    returns is run to completion on a fresh event loop first.

    A Jupyter cell already runs inside the kernel's event loop: ``asyncio.run`` refuses to
    start a second loop there, and Serve's blocking ``DeploymentResponse.result()`` refuses
    to block it. So inside a running loop ``work`` runs in a helper thread that has none, and
    this call blocks until it is done; in a plain script it runs here. The workbook's one
    such runner: the load generator, the LLM client load and the labs' handle calls use it.
    """

    def call() -> Any:
        result = work()
        return asyncio.run(result) if inspect.iscoroutine(result) else result

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def _check_level(name: str, value: float | None) -> None:
    if value is not None and (
        not isinstance(value, (int, float)) or value < 0 or math.isnan(value)
    ):
        raise ParameterError(
            f"{name} must be a number >= 0, not {value!r}.",
            f"pass {name} as a non-negative number.",
        )


class LoadGenerator:
    """An asynchronous load generator for one URL and one kind of request.

    Give ``concurrency`` (closed loop) or ``rate`` in requests per second (open loop). Run it
    with ``await gen.run(...)`` in an event loop, ``gen.run_sync(...)`` anywhere, or in the
    background with :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        url: str,
        request: RequestSpec | None = None,
        *,
        concurrency: int | None = None,
        rate: float | None = None,
        timeout_s: float = 30.0,
        max_in_flight: int = 1024,
        arrivals: str = "uniform",
        seed: int = 0,
        max_rows: int = MAX_ROWS,
    ) -> None:
        if (concurrency is None) == (rate is None):
            raise ParameterError(
                "Give either concurrency (closed loop) or rate (open loop), not "
                + ("both." if concurrency is not None else "neither."),
                "concurrency=C keeps C requests in flight; rate=R starts R requests per second.",
            )
        _check_level("concurrency", concurrency)
        _check_level("rate", rate)
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, (int, float))
            or not 0 < timeout_s < math.inf
        ):
            raise ParameterError(
                f"timeout_s must be a number of seconds > 0, not {timeout_s!r} (0 or less would "
                "leave a request that is never answered waiting forever).",
                "pass timeout_s=S with S > 0, e.g. 30.",
            )
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ParameterError(
                f"max_rows must be a positive integer, not {max_rows!r}.",
                f"pass max_rows=N with N >= 1 (default {MAX_ROWS}).",
            )
        if arrivals not in ("uniform", "poisson"):
            raise ParameterError(
                f"arrivals must be 'uniform' or 'poisson', not {arrivals!r}.",
                "'uniform' spaces requests evenly; 'poisson' at random.",
            )
        if not url.startswith(("http://", "https://")):
            raise ParameterError(
                f"{url!r} is not an HTTP URL.",
                "give the full URL, e.g. http://127.0.0.1:8000/classify.",
            )
        self.url = url.rstrip("/") if request is not None and request.path else url
        self.request = request or json_request()
        self.mode = "closed" if concurrency is not None else "open"
        self.level: float = float(concurrency if concurrency is not None else rate)  # type: ignore[arg-type]
        self.initial_level = self.level
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.arrivals = arrivals
        self._rng = random.Random(seed)
        self.max_rows = max_rows
        self._sample_rng = random.Random(seed + 1)
        self._records: list[dict[str, Any]] = []  # every row, or a uniform sample of max_rows
        self._totals = RunningSummary()
        self._lock = threading.Lock()
        self._stop_requested = False
        self._thread: threading.Thread | None = None
        self._levels: list[tuple[float, float]] = []  # (wall clock, level) at every change
        self._result: LoadResult | None = None
        self._error: BaseException | None = None
        self.started_at = 0.0

    # -- control from any thread -----------------------------------------------------------

    def set_level(self, level: float) -> None:
        """Change the concurrency (closed loop) or rate (open loop) while the load runs."""
        _check_level("level", level)
        self.level = float(level)
        self._levels.append((time.time(), self.level))

    def request_stop(self) -> None:
        """Start no new requests; requests in flight finish (the run then returns)."""
        self._stop_requested = True

    def records(self) -> list[dict[str, Any]]:
        """A copy of the rows so far (safe while the load runs): every row, or, past
        ``max_rows`` requests, a uniform random sample of ``max_rows`` of them."""
        with self._lock:
            return list(self._records)

    def _keep(self, record: dict[str, Any]) -> None:
        """Count a row in the totals; keep it, or past ``max_rows`` rows, maybe keep it in
        place of one kept before (reservoir sampling: every row is kept with equal chance)."""
        with self._lock:
            self._totals.add(record)
            if len(self._records) < self.max_rows:
                self._records.append(record)
            else:
                j = self._sample_rng.randrange(self._totals.requests)
                if j < self.max_rows:
                    self._records[j] = record

    def results(self) -> LoadResult:
        """The rows so far as a :class:`LoadResult` (safe while the load runs)."""
        with self._lock:
            records = list(self._records)
            sampled = self._totals.requests > len(records)
            totals = copy.deepcopy(self._totals) if sampled else None
        return LoadResult(
            self.url,
            self.mode,
            self.initial_level,
            _frame(records),
            stream=self.request.stream,
            started_at=self.started_at,
            levels=list(self._levels),
            totals=totals,
        )

    # -- running -----------------------------------------------------------------------------

    async def run(
        self,
        *,
        requests: int | None = None,
        duration_s: float | None = None,
        schedule: Sequence[tuple[float, float]] | None = None,
        progress: bool | None = None,
    ) -> LoadResult:
        """Offer the load until ``requests`` were sent, ``duration_s`` passed, or the
        ``schedule`` of ``(seconds, level)`` phases ended (or :meth:`request_stop`)."""
        import aiohttp

        if requests is None and duration_s is None and schedule is None and self._thread is None:
            raise ParameterError(
                "The load needs an end: requests, duration_s or schedule.",
                "pass requests=N, duration_s=S, or schedule=[(S, level), ...].",
            )
        if requests is not None and (not isinstance(requests, int) or requests < 1):
            raise ParameterError(
                f"requests must be a positive integer, not {requests!r}.",
                "pass requests=N with N >= 1.",
            )
        if schedule is not None:
            phases = [(float(s), float(v)) for s, v in schedule]
            for seconds, level in phases:
                _check_level("a schedule's level", level)
                _check_level("a schedule's duration", seconds)
            duration_s = sum(s for s, _ in phases)
            self.level = self.initial_level = phases[0][1]
        else:
            phases = []
        if self.level == 0 and not phases and duration_s is None and self._thread is None:
            name = "concurrency" if self.mode == "closed" else "rate"
            raise ParameterError(
                f"A load with {name} 0 and no duration never ends (it would "
                "wait for requests it never sends).",
                f"give {name} > 0, or a duration_s.",
            )
        self._stop_requested = False
        loop_t0 = time.perf_counter()
        wall_t0 = time.time()
        self.started_at = wall_t0
        self._levels.insert(0, (wall_t0, self.initial_level))
        deadline = loop_t0 + duration_s if duration_s is not None else math.inf
        bar = self._progress_bar(requests, duration_s, progress)

        def wall(t: float) -> float:
            return wall_t0 + (t - loop_t0)

        connector = aiohttp.TCPConnector(limit=self.max_in_flight, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        url = self.url + self.request.path
        headers = {"Content-Type": "application/json"} if self.request.body is not None else {}
        constant_body = None if callable(self.request.body) else self.request.encoded_body(0)

        async def one(i: int, due: float, level: float) -> None:
            data = self.request.encoded_body(i) if constant_body is None else constant_body
            record = await _send(session, self.request, url, data, headers, due, level, wall)
            record["i"] = i
            self._keep(record)
            if bar is not None:
                bar.update(1)

        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            stepper = asyncio.ensure_future(self._step_through(phases, loop_t0)) if phases else None
            try:
                if self.mode == "closed":
                    await self._closed_loop(one, requests, deadline)
                else:
                    await self._open_loop(one, requests, deadline, wall)
            finally:
                if stepper is not None:
                    stepper.cancel()
                if bar is not None:
                    bar.close()
        return self.results()

    async def _step_through(self, phases: list[tuple[float, float]], t0: float) -> None:
        at = t0
        for n, (seconds, level) in enumerate(phases):
            if n:
                self.set_level(level)
            at += seconds
            await asyncio.sleep(max(0.0, at - time.perf_counter()))

    def _done(self, deadline: float) -> bool:
        return self._stop_requested or time.perf_counter() >= deadline

    async def _closed_loop(
        self, one: Callable[..., Any], requests: int | None, deadline: float
    ) -> None:
        issued = 0
        workers: dict[int, asyncio.Task] = {}

        async def worker(slot: int) -> None:
            nonlocal issued
            try:
                while not self._done(deadline) and slot < int(self.level):
                    if requests is not None and issued >= requests:
                        return
                    i = issued
                    issued += 1
                    await one(i, time.perf_counter(), self.level)
            finally:
                workers.pop(slot, None)

        while True:
            if not self._done(deadline) and (requests is None or issued < requests):
                for slot in range(int(self.level)):
                    if slot not in workers:
                        workers[slot] = asyncio.ensure_future(worker(slot))
            elif not workers:
                return
            if requests is not None and issued >= requests and not workers:
                return
            await asyncio.sleep(0.02)

    async def _open_loop(
        self,
        one: Callable[..., Any],
        requests: int | None,
        deadline: float,
        wall: Callable[[float], float],
    ) -> None:
        in_flight: set[asyncio.Task] = set()
        i = 0
        due = time.perf_counter()
        while not self._stop_requested and (requests is None or i < requests):
            rate = self.level
            now = time.perf_counter()
            if rate <= 0:  # paused: the schedule restarts from now when the rate comes back
                due = now
                await asyncio.sleep(0.02)
                if now >= deadline:
                    break
                continue
            if due >= deadline:
                break
            if due > now:
                await asyncio.sleep(min(due - now, 0.05))
                continue
            if len(in_flight) >= self.max_in_flight:
                self._keep(_dropped(i, rate, wall(due), wall(now)))
            else:
                task = asyncio.ensure_future(one(i, due, rate))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            i += 1
            due += self._rng.expovariate(rate) if self.arrivals == "poisson" else 1.0 / rate
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)

    def _progress_bar(
        self, requests: int | None, duration_s: float | None, progress: bool | None
    ) -> Any:
        expected = (
            requests
            if requests is not None
            else (int(self.level * duration_s) if self.mode == "open" and duration_s else None)
        )
        if progress is None:  # only long runs get a bar
            progress = (expected or 0) >= 1000 or (duration_s or 0) >= 20
        if not progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=expected, desc=f"{self.mode} loop", unit="req", leave=False, mininterval=0.5
        )

    def run_sync(self, **kwargs: Any) -> LoadResult:
        """:meth:`run` from synchronous code (a script, or a Jupyter cell without ``await``)."""
        return run_in_new_loop(lambda: self.run(**kwargs))

    def start(
        self,
        *,
        duration_s: float | None = None,
        schedule: Sequence[tuple[float, float]] | None = None,
    ) -> LoadGenerator:
        """Run in a background thread (until :meth:`stop`, ``duration_s``, or the schedule's end)."""
        if self._thread is not None:
            raise AlreadyStartedError("LoadGenerator")

        def target() -> None:
            try:
                self._result = asyncio.run(
                    self.run(duration_s=duration_s, schedule=schedule, progress=False)
                )
            except BaseException as err:  # noqa: BLE001 - handed to stop()
                self._error = err

        self.started_at = time.time()
        self._thread = threading.Thread(target=target, daemon=True, name="load-generator")
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float | None = None) -> LoadResult:
        """Stop a background run (requests in flight finish) and return all its rows."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s if timeout_s is not None else self.timeout_s + 10)
        if self._error is not None:
            raise self._error
        return self._result or self.results()

    def wait(self, timeout_s: float | None = None) -> LoadResult:
        """Wait for a background run with an end (duration or schedule) to finish."""
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        return self.stop()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self.stop()


def _dropped(i: int, level: float, due: float, now: float) -> dict[str, Any]:
    return {
        "i": i,
        "level": level,
        "t_sched": due,
        "t_start": now,
        "t_end": now,
        "latency_s": 0.0,
        "ok": False,
        "status": None,
        "error": "Dropped: more than max_in_flight requests in flight",
    }


async def _send(
    session: Any,
    spec: RequestSpec,
    url: str,
    data: bytes | None,
    headers: Mapping[str, str],
    due: float,
    level: float,
    wall: Callable[[float], float],
) -> dict[str, Any]:
    """Send one request; return its row (never raises for HTTP or connection errors)."""
    import aiohttp

    started = time.perf_counter()
    record: dict[str, Any] = {
        "level": level,
        "t_sched": wall(due),
        "t_start": wall(started),
        "ok": False,
        "status": None,
        "error": "",
    }
    first_token: float | None = None
    try:
        async with session.request(spec.method, url, data=data, headers=headers) as resp:
            record["status"] = resp.status
            if spec.kind == "chat" and spec.stream and resp.status == 200:
                first_token, tokens, error = await _read_events(resp)
                record["completion_tokens"] = tokens
                if error:
                    record["error"] = f"StreamError: {error[:120]}"
                else:
                    record["ok"] = True
            else:
                raw = await resp.read()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                if 200 <= resp.status < 300:
                    record["ok"] = True
                    record.update(_flatten(body))
                    if spec.fields and isinstance(body, dict):
                        record.update({k: body.get(k) for k in spec.fields})
                    if spec.kind == "chat" and isinstance(body, dict):
                        record["completion_tokens"] = (body.get("usage") or {}).get(
                            "completion_tokens"
                        )
                else:
                    text = raw.decode(errors="replace").strip().replace("\n", " ")
                    record["error"] = f"HTTP {resp.status}: {text[:120]}"
    except asyncio.TimeoutError:
        record["error"] = "Timeout: no complete answer within the client's timeout"
    except aiohttp.ClientError as err:
        record["error"] = f"{type(err).__name__}: {str(err)[:120]}"
    ended = time.perf_counter()
    record["t_end"] = wall(ended)
    record["latency_s"] = ended - started
    if spec.kind == "chat":
        tokens = record.get("completion_tokens") or 0
        record["ttft_s"] = first_token - started if first_token is not None else None
        if first_token is not None and tokens > 1 and ended > first_token:
            record["tokens_per_s"] = (tokens - 1) / (ended - first_token)
        elif tokens and ended > started:
            record["tokens_per_s"] = tokens / (ended - started)
        else:
            record["tokens_per_s"] = None
    return record


async def _read_events(resp: Any) -> tuple[float | None, int, str]:
    """Read an OpenAI server-sent event stream: (time of first text, tokens, error)."""
    first: float | None = None
    pieces = 0
    usage_tokens: int | None = None
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            break
        try:
            event = json.loads(payload)
        except ValueError:
            continue
        if "error" in event:
            return first, pieces, str(event["error"])
        if event.get("usage"):
            usage_tokens = event["usage"].get("completion_tokens")
        for choice in event.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content") or choice.get("text")
            if piece:
                pieces += 1
                if first is None:
                    first = time.perf_counter()
    return first, usage_tokens if usage_tokens is not None else pieces, ""


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    df = pd.DataFrame.from_records(records)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series(dtype=float if col not in ("ok", "error") else object)
    chat = [c for c in CHAT_COLUMNS if c in df.columns]
    who = [c for c in RECORD_FIELDS if c in df.columns]
    rest = [c for c in df.columns if c not in COLUMNS + chat + who]
    df = df[COLUMNS + chat + who + rest]
    if len(df):
        df = df.sort_values("t_start", ignore_index=True)
        df["ok"] = df["ok"].astype(bool)
    return df


# --- one call ---------------------------------------------------------------------------------


async def load_test_async(
    url: str,
    request: RequestSpec | None = None,
    *,
    concurrency: int | None = None,
    rate: float | None = None,
    requests: int | None = None,
    duration_s: float | None = None,
    schedule: Sequence[tuple[float, float]] | None = None,
    timeout_s: float = 30.0,
    max_in_flight: int = 1024,
    arrivals: str = "uniform",
    progress: bool | None = None,
    max_rows: int = MAX_ROWS,
) -> LoadResult:
    """Offer load to ``url`` (``await`` it in a Jupyter cell or any coroutine).

    ``concurrency`` (closed loop) or ``rate`` (open loop, requests per second); the run ends
    after ``requests``, ``duration_s`` or the ``schedule`` ``[(seconds, level), ...]``.
    ``timeout_s`` per request; ``max_in_flight`` caps an open loop (later requests count as
    ``Dropped``); ``arrivals`` ``"uniform"`` or ``"poisson"``; ``progress`` a tqdm bar
    (default: on for long runs); ``max_rows`` rows kept at most (past it ``df`` is a random
    sample and the summary still counts every request). :func:`load_test` is the same from
    synchronous code.
    """
    gen = LoadGenerator(
        url,
        request,
        concurrency=concurrency,
        rate=rate,
        timeout_s=timeout_s,
        max_in_flight=max_in_flight,
        arrivals=arrivals,
        max_rows=max_rows,
    )
    return await gen.run(
        requests=requests, duration_s=duration_s, schedule=schedule, progress=progress
    )


def load_test(url: str, request: RequestSpec | None = None, **options: Any) -> LoadResult:
    """Offer load to ``url`` and return every request's row and the summary.

    ``options`` are those of :func:`load_test_async`: ``concurrency`` (closed loop) or
    ``rate`` (open loop, requests per second); ``requests``, ``duration_s`` or ``schedule``
    ``[(seconds, level), ...]`` to end the run; ``timeout_s``, ``max_in_flight``,
    ``arrivals``, ``progress``, ``max_rows``. Works in scripts and inside Jupyter's running event loop alike.
    """
    return run_in_new_loop(lambda: load_test_async(url, request, **options))


# --- command line -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m helpers.load",
        description="Load-test an HTTP endpoint (a Serve application) and print a summary: "
        "throughput, p50/p90/p99 latency, errors, and which replicas/nodes answered.",
        epilog="Examples:\n"
        "  python -m helpers.load -c 20 -n 100 -p 'Explain relativity briefly'\n"
        '  python -m helpers.load --rate 50 --duration 10 --json \'{"text": "great"}\' '
        "--url http://127.0.0.1:8000/classify\n"
        "  python -m helpers.load -c 8 -n 64 --chat tiny-llama --stream -p 'Return the' "
        "--url http://127.0.0.1:8000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--url",
        default="http://127.0.0.1:8000/",
        help="the endpoint (default: %(default)s); with --chat, the server's base URL",
    )
    level = p.add_mutually_exclusive_group()
    level.add_argument(
        "-c", "--concurrency", type=int, help="closed loop: requests in flight (default 20)"
    )
    level.add_argument("-r", "--rate", type=float, help="open loop: requests started per second")
    end = p.add_mutually_exclusive_group()
    end.add_argument("-n", "--requests", type=int, help="how many requests (default 100)")
    end.add_argument("-d", "--duration", type=float, help="how long to offer load, seconds")
    body = p.add_mutually_exclusive_group()
    body.add_argument(
        "-p",
        "--prompt",
        help='POST {"prompt": P, "max_tokens": M} (a typical '
        "deployment kit's completion API), or the user message with --chat",
    )
    body.add_argument("--json", dest="json_body", help="POST this JSON body instead")
    p.add_argument(
        "--chat",
        metavar="MODEL",
        help="send OpenAI chat completions for MODEL to URL/v1/chat/completions (needs -p)",
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="with --chat: stream, and measure time to first token and tokens/s",
    )
    p.add_argument(
        "--max-tokens", type=int, default=64, help="tokens per answer (default %(default)s)"
    )
    p.add_argument(
        "--timeout", type=float, default=60.0, help="per request, seconds (default %(default)s)"
    )
    p.add_argument(
        "--csv",
        help="also write one row per request to this CSV file (the folder "
        "must exist; a run of more than --max-rows requests writes a random sample)",
    )
    p.add_argument(
        "--max-rows",
        type=int,
        default=MAX_ROWS,
        help="rows kept in memory at most (default %(default)s); the summary always "
        "counts every request",
    )
    p.add_argument("--summary-json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def check_writable_file(path: str | Path, *, flag: str = "--csv") -> Path:
    """Raise :class:`ParameterError` unless a file can be written at ``path`` (checked before a
    run, so a typo in the folder does not cost the run's results)."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise ParameterError(
            f"{flag} {path} is a folder, not a file.",
            f"give a file name in it, e.g. {flag} {path / 'results.csv'}.",
        )
    if not folder.is_dir():
        raise ParameterError(
            f"{flag} {path}: the folder {folder} does not exist.",
            f"create it first (mkdir -p {folder}) or give a path in an existing folder.",
        )
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ParameterError(
            f"{flag} {path}: this user may not write there.",
            "give a path in a folder you can write to, e.g. build/.",
        )
    return path


def _check_arguments(args: argparse.Namespace) -> None:
    """Every number and path of the command line, checked before any request is sent."""

    def bad(value: float | None, positive_int: bool) -> bool:
        if value is None:
            return False
        if positive_int:
            return value < 1
        return not 0 < value < math.inf

    checks = [
        (
            "--rate",
            args.rate,
            False,
            "requests started per second, e.g. --rate 10 (0 would start none and never end)",
        ),
        ("--concurrency", args.concurrency, True, "requests in flight, e.g. -c 8"),
        ("--requests", args.requests, True, "how many requests, e.g. -n 100"),
        ("--duration", args.duration, False, "seconds of load, e.g. --duration 10"),
        (
            "--timeout",
            args.timeout,
            False,
            "seconds each request may take, e.g. --timeout 60 "
            "(0 would wait forever for a hung server)",
        ),
        ("--max-tokens", args.max_tokens, True, "tokens per answer, e.g. --max-tokens 64"),
        ("--max-rows", args.max_rows, True, f"rows kept, e.g. --max-rows {MAX_ROWS}"),
    ]
    for flag, value, positive_int, what in checks:
        if bad(value, positive_int):
            need = "an integer >= 1" if positive_int else "a number > 0"
            raise ParameterError(f"{flag} must be {need}, not {value:g}.", f"give {what}.")
    if args.csv:
        check_writable_file(args.csv)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. Exit code 0 when every request succeeded, 1 when some failed, 2 on
    bad arguments (found before any request is sent)."""
    args = _parser().parse_args(argv)
    try:
        _check_arguments(args)
        if args.chat:
            if not args.prompt:
                raise ParameterError("--chat needs a prompt.", "add -p 'your question'.")
            spec = chat_request(
                args.chat, args.prompt, max_tokens=args.max_tokens, stream=args.stream
            )
        elif args.stream:
            raise ParameterError("--stream works with --chat only.", "add --chat MODEL.")
        elif args.prompt:
            spec = completion_request(args.prompt, max_tokens=args.max_tokens)
        elif args.json_body:
            try:
                spec = json_request(json.loads(args.json_body))
            except ValueError as err:
                raise ParameterError(
                    f"--json is not valid JSON ({err}).",
                    'quote it for the shell: --json \'{"text": "great"}\'.',
                ) from err
        else:
            spec = json_request()
        concurrency = args.concurrency if args.rate is None else None
        if concurrency is None and args.rate is None:
            concurrency = 20
        requests = args.requests
        if requests is None and args.duration is None:
            requests = 100
        result = load_test(
            args.url,
            spec,
            concurrency=concurrency,
            rate=args.rate,
            requests=requests,
            duration_s=args.duration,
            timeout_s=args.timeout,
            progress=False if args.no_progress else None,
            max_rows=args.max_rows,
        )
    except ParameterError as err:
        print(err, file=sys.stderr)
        return 2
    summary = result.summary()
    print(json.dumps(summary, indent=2, default=str) if args.summary_json else result.text())
    if args.csv:
        try:  # checked before the run; the summary is printed already if it fails anyway
            result.df.to_csv(args.csv, index=False)
        except OSError as err:
            print(
                f"\nCould not write {args.csv} ({err}). Fix: give --csv a path in a folder "
                "you can write to; the summary above is complete.",
                file=sys.stderr,
            )
            return 2
    if summary["requests"] and summary["ok"] == 0:
        kinds = ", ".join(summary["error_kinds"])
        print(
            f"\nNo request succeeded ({kinds}). Check that something serves {args.url} "
            "(serve status) and that the path and body are what the application expects.",
            file=sys.stderr,
        )
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
