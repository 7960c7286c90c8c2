"""Lab 08's checks (lab08): custom metrics, and queries over the scrape.

What the checks verify: the histogram and counter by outcome, the student's p95 and error share
on two scrapes; the lab's cells use :func:`timed_load`, :func:`mixed_load` and
:func:`scrape_until`.

A lab's cells call them through the package, which registers every lab's checks
(``from helpers.labs import checks``, then ``checks.lab08_error_share_matches(lab, ...)``); the lab's
hidden checks are the instructor's, in :mod:`helpers.labs.hidden_checks`.
"""

from __future__ import annotations

import concurrent.futures
import math
import numbers
import random
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from helpers.errors import WorkbookError
from helpers.labs.checks.framework import (
    CheckProblem,
    _app,
    _expect,
    lab_check,
)
from helpers.metrics import scrape_cluster

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from helpers.labs.session import LabSession

__all__ = [
    "LAB08_LATENCY_MS_BUCKETS",
    "LAB08_P95_TOLERANCE",
    "LAB08_P95_TOLERANCE_MS",
    "timed_load",
    "mixed_load",
    "scrape_until",
    "lab08_metrics_count_requests",
    "lab08_p95_matches_the_client",
    "lab08_error_share_matches",
]


#: The histogram's bounds (ms) the lab gives; the p95 checks hold it to these.
LAB08_LATENCY_MS_BUCKETS = [50, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 2000]
#: How close a p95 from the buckets must come to the client's own: the buckets' interpolation
#: and the time a request spends outside the replica (the proxy) make them differ a little.
LAB08_P95_TOLERANCE = 0.15
LAB08_P95_TOLERANCE_MS = 40.0
_L08_METRICS = "Task 1: _create_metrics and _record in TimedService"
_L08_P95 = "Task 2: p95_ms"
_L08_SHARE = "Task 3: error_share"


def timed_load(
    url: str, work_ms: Sequence[float], *, concurrency: int = 6, timeout_s: float = 30.0
) -> list[float]:
    """POST ``{"text", "work_ms"}`` once per value of ``work_ms``, ``concurrency`` at a time;
    each request's time (ms) as the client saw it. A failed request is an error that says so."""
    import requests

    local = threading.local()

    def one(work: float) -> float:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        started = time.perf_counter()
        response = local.session.post(
            url, json={"text": "measure me", "work_ms": work}, timeout=timeout_s
        )
        if response.status_code != 200:
            raise WorkbookError(
                f"POST {url} answered HTTP {response.status_code}: {response.text[:200]}",
                "deploy TimedService as the lab's cell does, then run this again.",
            )
        return (time.perf_counter() - started) * 1000

    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, work_ms))


def mixed_load(url: str, *, answered: int, refused: int) -> None:
    """``answered`` requests with a text (200) and ``refused`` without one (400), mixed."""
    import requests

    bodies = [{"text": "fine", "work_ms": 0}] * answered + [{"work_ms": 0}] * refused
    random.Random(answered * 1000 + refused).shuffle(bodies)
    with requests.Session() as http:
        for body in bodies:
            code = http.post(url, json=body, timeout=30).status_code
            if code != (200 if "text" in body else 400):
                raise WorkbookError(
                    f"POST {url} with {body} answered HTTP {code}.",
                    "deploy TimedService as the lab's cell does (400 without "
                    "a text), then run this again.",
                )


def _l08_total(samples: pd.DataFrame, app: str, name: str, **tags: str) -> float:
    """``sum(NAME{application=APP, TAGS})`` in one scrape."""
    if samples.empty:
        return 0.0
    rows = samples[
        (samples["name"] == name)
        & samples["labels"].map(
            lambda labels: (
                labels.get("application") == app
                and all(labels.get(k) == v for k, v in tags.items())
            )
        )
    ]
    return float(rows["value"].sum())


def scrape_until(
    session: LabSession,
    before: pd.DataFrame,
    name: str,
    increase: float,
    *,
    timeout_s: float = 10.0,
) -> pd.DataFrame:
    """Scrape the lab's metrics until ``sum(NAME)`` of this lab's "timed" application grew by
    ``increase`` since ``before`` (the replicas report every second; a cluster's agents may
    take longer); that scrape. A :class:`CheckProblem` after ``timeout_s`` says what it saw."""

    app = session.app_name("timed")
    start = _l08_total(before, app, name)
    deadline = time.monotonic() + timeout_s
    while True:
        after = scrape_cluster(session.cluster, prefixes=("ray_lab08_",))
        grew = _l08_total(after, app, name) - start
        if grew >= increase:
            return after
        if time.monotonic() > deadline:
            seen = sorted(set(after["name"])) if not after.empty else []
            raise CheckProblem(
                f"{name} of {app!r} grew by {grew:.0f} in {timeout_s:.0f} s after {increase:.0f} "
                f"requests (the scrape has {seen or 'no ray_lab08_ metric'}).",
                _L08_METRICS + ": each request recorded once, with the metric names the task gives",
            )
        time.sleep(1.0)


def _l08_call(func: Any, before: pd.DataFrame, after: pd.DataFrame, look: str) -> float:
    """The student's query on two scrapes: a number, or a problem that says what came back."""
    if not callable(func):
        raise CheckProblem(f"Expected the function you wrote, got {type(func).__name__}.", look)
    value = func(before, after)
    _expect(
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value)),
        f"It returned {value!r}, not a finite number.",
        look,
    )
    return float(value)


def _l08_p95_against_the_client(
    session: LabSession, p95_ms: Any, work_ms: Sequence[float], look: str
) -> None:
    import numpy as np

    _app(session, "timed", task=2, look=_L08_METRICS)
    before = scrape_cluster(session.cluster, prefixes=("ray_lab08_",))
    client_ms = timed_load(session.url("timed"), work_ms)
    after = scrape_until(session, before, "ray_lab08_latency_ms_count", len(work_ms))
    yours = _l08_call(p95_ms, before, after, look)
    client = float(np.percentile(client_ms, 95))
    allowed = max(LAB08_P95_TOLERANCE * client, LAB08_P95_TOLERANCE_MS)
    _expect(
        abs(yours - client) <= allowed,
        f"p95_ms gave {yours:.1f} ms for {len(work_ms)} requests whose p95 the client "
        f"measured at {client:.1f} ms (allowed: {allowed:.0f} ms either way).",
        look + ": the increase per bucket, the rank (0.95 of the +Inf bucket's increase) "
        "and the interpolation inside the bucket that reaches it",
    )


@lab_check("lab08", 1)
def lab08_metrics_count_requests(session: LabSession) -> None:
    """TimedService's histogram and counter record every request, by outcome."""

    _app(session, "timed", task=1, look=_L08_METRICS)
    before = scrape_cluster(session.cluster, prefixes=("ray_lab08_",))
    mixed_load(session.url("timed"), answered=8, refused=4)
    after = scrape_until(session, before, "ray_lab08_requests_total", 12)
    app = session.app_name("timed")

    def grew(name: str, **tags: str) -> float:
        return _l08_total(after, app, name, **tags) - _l08_total(before, app, name, **tags)

    ok, refused = (
        grew("ray_lab08_requests_total", outcome="ok"),
        grew("ray_lab08_requests_total", outcome="bad_request"),
    )
    _expect(
        (ok, refused) == (8, 4),
        f"The counter's increase by outcome: ok {ok:.0f}, bad_request {refused:.0f}, for 8 "
        "answered and 4 refused requests.",
        _L08_METRICS + ": requests.inc with tags={'outcome': outcome}",
    )
    deadline = time.monotonic() + 15
    while grew("ray_lab08_latency_ms_count") < 8 and time.monotonic() < deadline:
        after = scrape_cluster(session.cluster, prefixes=("ray_lab08_",))
        time.sleep(1.0)
    observed = grew("ray_lab08_latency_ms_count")
    _expect(
        observed == 8,
        f"The histogram lab08_latency_ms observed {observed:.0f} requests "
        "of 8 answered (and 4 refused).",
        _L08_METRICS + ": latency_ms.observe(elapsed_ms) for an answered request only",
    )


@lab_check("lab08", 2)
def lab08_p95_matches_the_client(session: LabSession, p95_ms: Any) -> None:
    """p95_ms, on two scrapes around a load, is within 15 % (or 40 ms) of the client's p95."""
    work = [100 + 500 * i / 59 for i in range(60)]
    random.Random(80).shuffle(work)
    _l08_p95_against_the_client(session, p95_ms, work, _L08_P95)


def _l08_share_of(session: LabSession, error_share: Any, *, answered: int, refused: int) -> float:
    """error_share on two scrapes around ``answered`` and ``refused`` requests."""

    _app(session, "timed", task=3, look=_L08_METRICS)
    before = scrape_cluster(session.cluster, prefixes=("ray_lab08_",))
    mixed_load(session.url("timed"), answered=answered, refused=refused)
    after = scrape_until(session, before, "ray_lab08_requests_total", answered + refused)
    return _l08_call(error_share, before, after, _L08_SHARE)


@lab_check("lab08", 3)
def lab08_error_share_matches(session: LabSession, error_share: Any) -> None:
    """error_share, on two scrapes around 30 answered and 10 refused requests, is 0.25."""
    share = _l08_share_of(session, error_share, answered=30, refused=10)
    _expect(
        abs(share - 0.25) < 1e-6,
        f"error_share gave {share:.4f} for 10 refused of 40 requests (0.25).",
        _L08_SHARE + ": the increase of outcome bad_request over the increase of all outcomes",
    )
