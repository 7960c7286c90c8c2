"""HTTP traffic for the lessons: a burst of requests, or a loop that runs during an update.

Every request becomes one record: when it started and ended, whether it succeeded (HTTP 200),
the status code or error, and the fields of the JSON answer that say who served it (replica,
pid, node, code and config version). Records come back as a pandas DataFrame.

A :class:`RequestLoop` can also behave like a careful client: with ``retries=N`` a request
that got no answer (connection refused or reset, timeout) or a 5xx is sent again, up to N
more times, after an exponential backoff. Its record then says how many attempts it took and
what the first failed attempt saw; ``ok`` is the final outcome.

Usage::

    from helpers.traffic import send_requests, RequestLoop
    df = send_requests(url, n=100, concurrency=4, json={"text": "great"})
    df.groupby("replica").size()

    with RequestLoop(url, json={"text": "great"}, concurrency=2) as loop:
        ...                                   # deploy an update meanwhile
    loop.results()["ok"].all()                # no request failed

    with RequestLoop(url, json={"text": "great"}, retries=4, retry_backoff_s=0.2) as careful:
        ...                                   # kill a replica meanwhile
    failure_summary(careful.results())        # failed: 0, failed_attempts: 3, ...

Retries introduced in notebooks/11_fault_tolerance.ipynb.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import requests

from helpers.errors import BadValueError, WorkbookTimeoutError
from helpers.recording import Recorder
from helpers.waiting import wait_for

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "RECORD_FIELDS",
    "RETRY_STATUSES",
    "one_request",
    "is_retryable",
    "retry_delays",
    "request_with_retries",
    "send_requests",
    "RequestLoop",
    "failure_summary",
]

#: Fields copied from a JSON answer (top level, or under "result"/"gateway") into a record.
RECORD_FIELDS = (
    "replica",
    "pid",
    "node",
    "deployment",
    "label",
    "score",
    "code_version",
    "config_version",
    "threshold",
    "reconfigure_count",
)

_COLUMNS = ["t_start", "t_end", "latency_s", "ok", "status", "error", *RECORD_FIELDS]

#: HTTP statuses worth another attempt: the proxy or a replica failed, not the request itself.
#: (A 4xx says the request is wrong: sending it again cannot help.)
RETRY_STATUSES = (500, 502, 503, 504)


def _flatten(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        return {}
    result = body.get("result")
    inner = result if isinstance(result, dict) else body
    out = {k: inner.get(k) for k in RECORD_FIELDS if k in inner}
    if isinstance(body.get("gateway"), dict):
        out["gateway_replica"] = body["gateway"].get("replica")
        out["gateway_pid"] = body["gateway"].get("pid")
    return out


def one_request(
    session: requests.Session,
    url: str,
    *,
    json: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Send one request (POST when ``json`` is given, else GET) and return its record."""
    started = time.time()
    record: dict[str, Any] = {"t_start": started, "ok": False, "status": None, "error": ""}
    try:
        if json is None:
            resp = session.get(url, timeout=timeout_s)
        else:
            resp = session.post(url, json=dict(json), timeout=timeout_s)
        record["status"] = resp.status_code
        record["ok"] = resp.status_code == 200
        try:
            body = resp.json()
        except ValueError:
            body = None
        if record["ok"]:
            record.update(_flatten(body))
        else:
            record["error"] = f"HTTP {resp.status_code}: {resp.text[:120]}"
    except requests.RequestException as err:
        record["error"] = type(err).__name__ + ": " + str(err)[:120]
    record["t_end"] = time.time()
    record["latency_s"] = record["t_end"] - started
    return record


def is_retryable(record: Mapping[str, Any], statuses: tuple[int, ...] = RETRY_STATUSES) -> bool:
    """True for a failed attempt worth repeating: no HTTP answer at all, or a status in ``statuses``."""
    if record["ok"]:
        return False
    return record["status"] is None or record["status"] in statuses


def retry_delays(retries: int, backoff_s: float, max_backoff_s: float = 2.0) -> list[float]:
    """The waits before each retry: ``backoff_s``, doubling, capped at ``max_backoff_s``.

    ``retry_delays(4, 0.2)`` is ``[0.2, 0.4, 0.8, 1.6]``: a client that retries 4 times rides
    out an outage of about 3 s. (Production clients add random jitter so that many clients do
    not retry in step; here the waits are exact, so runs compare.)
    """
    if retries < 0 or backoff_s < 0:
        raise BadValueError(
            f"retries and backoff_s must be >= 0, got {retries} and {backoff_s}.",
            "pass retries=0 for no retry, and a backoff_s of 0 or more seconds.",
        )
    return [min(max_backoff_s, backoff_s * 2**i) for i in range(retries)]


def request_with_retries(
    session: requests.Session,
    url: str,
    *,
    json: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
    retries: int = 0,
    backoff_s: float = 0.2,
    max_backoff_s: float = 2.0,
    retry_statuses: tuple[int, ...] = RETRY_STATUSES,
) -> dict[str, Any]:
    """One logical request: up to ``1 + retries`` attempts (see :func:`is_retryable`).

    The record is the last attempt's (its status, error and answer) with ``t_start`` of the
    first attempt, ``latency_s`` over all of them, ``attempts``, and ``first_error``: what the
    first failed attempt saw ("" when the first attempt succeeded). Retrying is right only for
    requests that are safe to repeat (idempotent), like a classification.
    """
    delays = retry_delays(retries, backoff_s, max_backoff_s)
    first_error = ""
    started = time.time()
    attempt = 0
    while True:
        record = one_request(session, url, json=json, timeout_s=timeout_s)
        attempt += 1
        if not record["ok"] and not first_error:
            first_error = record["error"]
        if attempt > len(delays) or not is_retryable(record, retry_statuses):
            break
        time.sleep(delays[attempt - 1])
    record.update(
        t_start=started,
        latency_s=record["t_end"] - started,
        attempts=attempt,
        first_error=first_error,
    )
    return record


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    df = pd.DataFrame.from_records(records)
    for col in _COLUMNS:
        if col not in df.columns:
            df[col] = None
    extra = [c for c in df.columns if c not in _COLUMNS]
    return df[_COLUMNS + extra].sort_values("t_start", ignore_index=True)


def send_requests(
    url: str,
    n: int,
    *,
    concurrency: int = 4,
    json: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
    progress: bool = True,
) -> pd.DataFrame:
    """Send ``n`` requests with ``concurrency`` threads; one row per request."""
    from tqdm.auto import tqdm

    local = threading.local()

    def work(_: int) -> dict[str, Any]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return one_request(local.session, url, json=json, timeout_s=timeout_s)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        records = list(
            tqdm(
                pool.map(work, range(n)),
                total=n,
                desc="requests",
                disable=not progress,
                leave=False,
            )
        )
    return _frame(records)


class RequestLoop(Recorder[dict[str, Any], "pd.DataFrame"]):
    """Threads that send requests back to back until stopped, recording every one.

    After a failed request a thread waits ``pause_after_failure_s`` so that a service that is
    down is probed a few times per second instead of thousands of times.

    ``retries`` (default 0: every failure counts) makes each thread a client that retries a
    failed request after ``retry_backoff_s``, doubling up to ``max_backoff_s`` (see
    :func:`request_with_retries`); each record then has ``attempts`` and ``first_error``, and
    ``ok`` is the final outcome.

    ``send``: a client of your own instead, called as ``send(session, url, json=...,
    timeout_s=...)`` for each logical request and returning its record (built on
    :func:`one_request`, with ``attempts`` and ``first_error`` if it retries), as lesson 11's
    retry policy is; the ``retr*`` options are then unused. If it raises, the loop ends and
    :meth:`stop` and :meth:`results` raise that error.
    """

    def __init__(
        self,
        url: str,
        *,
        json: Mapping[str, Any] | None = None,
        concurrency: int = 2,
        timeout_s: float = 10.0,
        pause_s: float = 0.0,
        pause_after_failure_s: float = 0.1,
        retries: int = 0,
        retry_backoff_s: float = 0.2,
        max_backoff_s: float = 2.0,
        retry_statuses: tuple[int, ...] = RETRY_STATUSES,
        send: Callable[..., dict[str, Any]] | None = None,
        send_timeout_s: float = 60.0,
    ) -> None:
        self.send = send
        self.send_timeout_s = send_timeout_s  # how long stop() waits for a ``send`` to finish
        self.retry_delays = retry_delays(retries, retry_backoff_s, max_backoff_s)  # checks them
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self.retry_statuses = tuple(retry_statuses)
        self.url = url
        self.json = json
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.pause_s = pause_s
        self.pause_after_failure_s = pause_after_failure_s
        # stop() lets each thread finish its request, all the attempts of one being retried
        # included, so that every outcome is known.
        longest = (
            send_timeout_s
            if send is not None
            else (retries + 1) * timeout_s + sum(self.retry_delays)
        )
        super().__init__(
            period_s=pause_s, name="request-loop", threads=concurrency, join_timeout_s=longest + 5
        )
        self._sessions = threading.local()  # one HTTP session (its connections) per thread
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    def sample(self) -> list[dict[str, Any]]:
        if not hasattr(self._sessions, "session"):
            self._sessions.session = requests.Session()
        session = self._sessions.session
        if self.send is not None:
            return [self.send(session, self.url, json=self.json, timeout_s=self.timeout_s)]
        return [
            request_with_retries(
                session,
                self.url,
                json=self.json,
                timeout_s=self.timeout_s,
                retries=self.retries,
                backoff_s=self.retry_backoff_s,
                max_backoff_s=self.max_backoff_s,
                retry_statuses=self.retry_statuses,
            )
        ]

    def wait_after(self, rows: list[dict[str, Any]]) -> float:
        return self.pause_s if rows[0]["ok"] else max(self.pause_s, self.pause_after_failure_s)

    def on_start(self) -> None:
        self.started_at = time.time()

    def on_stop(self) -> None:
        self.stopped_at = time.time()

    @property
    def counts(self) -> dict[str, int]:
        """Requests sent, succeeded and failed so far, and attempts (safe to call while running)."""
        records = self.rows()
        ok = sum(1 for r in records if r["ok"])
        attempts = sum(r.get("attempts", 1) for r in records)
        return {"sent": len(records), "ok": ok, "failed": len(records) - ok, "attempts": attempts}

    def results(self) -> pd.DataFrame:
        return _frame(self.rows())

    def wait_until_serving(
        self, field: str, value: Any, *, last: int = 10, timeout_s: float = 120.0
    ) -> float:
        """Wait until the ``last`` answers sent after this call all have ``field == value``.

        For example ``wait_until_serving("code_version", "v2")`` after deploying new code.
        Returns the seconds it took; raises :class:`~helpers.errors.WorkbookTimeoutError` (a
        TimeoutError) with what was seen instead.
        """
        start = time.time()
        seen: list[Any] = []

        def serving() -> bool:
            nonlocal seen
            recent = [r for r in self.rows() if r["t_start"] >= start and r["ok"]]
            seen = [r.get(field) for r in recent[-last:]]
            return len(seen) == last and all(v == value for v in seen)

        wait_for(
            serving,
            timeout_s=timeout_s,
            poll_s=0.1,
            what=f"{field}={value!r}",
            on_timeout=lambda waited: WorkbookTimeoutError(
                f"After {timeout_s:.0f} s the last {last} answers had {field}={seen}, "
                f"not all {value!r}.",
                f"check that the new version was deployed and is RUNNING (`serve status`), "
                f"and that its answers carry {field!r}; a slow rollout needs a larger "
                "timeout_s.",
            ),
        )
        return round(time.time() - start, 2)


def failure_summary(df: pd.DataFrame) -> dict[str, Any]:
    """Sent, ok, failed, and the span of time (s) from the first to the last failure.

    For records of a :class:`RequestLoop` (which have ``attempts``) also: ``attempts`` in all,
    ``failed_attempts`` (attempts that did not succeed, lost or retried), ``ok_after_retry``
    (requests saved by a retry) and ``first_error_kinds`` (what the failed attempts saw).
    """
    ok = df["ok"].astype(bool)
    failed = df[~ok]
    span = float(failed["t_end"].max() - failed["t_start"].min()) if len(failed) else 0.0
    errors = failed["error"].str.split(":").str[0].value_counts().to_dict() if len(failed) else {}
    out = {
        "sent": int(len(df)),
        "ok": int(len(df) - len(failed)),
        "failed": int(len(failed)),
        "failure_window_s": round(span, 2),
        "error_kinds": errors,
    }
    if "attempts" in df.columns:
        attempts = df["attempts"].fillna(1).astype(int)
        first = df.loc[df["first_error"].fillna("") != "", "first_error"]
        out.update(
            attempts=int(attempts.sum()),
            failed_attempts=int(attempts.sum() - ok.sum()),
            ok_after_retry=int((ok & (attempts > 1)).sum()),
            first_error_kinds=first.str.split(":").str[0].value_counts().to_dict(),
        )
    return out
