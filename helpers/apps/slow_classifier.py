# Generated from notebooks/11_fault_tolerance.ipynb (cell 6); edit the lesson, then run `python -m helpers.lessons generate`.
"""The configurable classifier, with requests that take time, as a real model's do.

``SlowClassifier`` is :mod:`helpers.apps.configurable`'s classifier (``user_config``,
``check_health``, ``make_unhealthy``) whose every HTTP request first waits ``work_s`` seconds
(asynchronously, so it costs no CPU): while a fault hits, requests are *in flight* on every
replica, as they are in a service whose model takes a few hundred milliseconds. That makes
the difference between a request Serve can still send elsewhere and one that dies with its
replica visible and countable.

HTTP: ``POST {"text": "...", "work_s": 0.2}`` (``work_s`` optional, 0 to 30 s, default
:data:`DEFAULT_WORK_S`). The answer is the classifier's, plus ``work_s``.

Options: two replicas, ``health_check_period_s=1`` and the graceful shutdown settings of
the configurable classifier; a lesson adds ``max_replicas_per_node`` to know where replicas run::

    from helpers.apps.slow_classifier import SlowClassifier
    serve.run(SlowClassifier.options(max_replicas_per_node=1).bind(), name="ft")

Introduced in notebooks/11_fault_tolerance.ipynb.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from helpers.apps.configurable import _DEPLOYMENT_OPTIONS, _ConfigurableClassifier
from helpers.apps.text_input import missing_text_response, read_text

__all__ = ["DEFAULT_WORK_S", "MAX_WORK_S", "SlowClassifier", "read_work_s", "app"]

#: Seconds a request takes when it does not say.
DEFAULT_WORK_S = 0.2
#: The most a request may ask for.
MAX_WORK_S = 30.0


async def read_work_s(request: Request) -> float | None:
    """``work_s`` from the JSON body or the query; the default when absent; None when invalid."""
    value: Any = request.query_params.get("work_s")
    if request.method == "POST":
        try:
            body = await request.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "work_s" in body:
            value = body["work_s"]
    if value is None:
        return DEFAULT_WORK_S
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0.0 <= seconds <= MAX_WORK_S else None


@serve.deployment(**{**_DEPLOYMENT_OPTIONS, "name": "SlowClassifier"})
class SlowClassifier(_ConfigurableClassifier):
    """Code version v1, each request taking ``work_s`` seconds before it is classified."""

    code_version = "v1"

    async def __call__(self, request: Request) -> Any:
        """HTTP: ``POST {"text": ..., "work_s": ...}`` or ``GET ?text=...&work_s=...``."""
        text = await read_text(request)
        if text is None:
            return missing_text_response()
        work_s = await read_work_s(request)
        if work_s is None:
            return JSONResponse(
                {"error": f"work_s must be a number of seconds from 0 to {MAX_WORK_S:g}"},
                status_code=400)
        await asyncio.sleep(work_s)
        return {**self.classify(text), "work_s": work_s}


app = SlowClassifier.bind()
