# Generated from notebooks/07b_composition_and_canary.ipynb (cell 12); edit the lesson, then run `python -m helpers.lessons generate`.
"""An ensemble: several models called in parallel, combined, and one failing member tolerated.

``Ensemble`` (the ingress) holds a handle to each member deployment (``MemberA``, ``MemberB``,
``MemberC``: three variants of the tiny sentiment model, trained differently). For each
request it calls every member at once (``asyncio.gather``), waits at most ``timeout_s`` for
each, averages the scores of the members that answered, and lists the ones that did not with
their error. With fewer than ``min_members`` answers it returns 503, saying which failed.

Members take ``user_config``::

    delay_s: 0.2      # simulated inference time per request, seconds
    fail: false       # true: every request raises (a member whose model is broken)

and ``set_failing(True)`` / ``set_delay(3.0)`` through a handle do the same at once on that
replica (fault injection for the lessons).
``{"text": ..., "sequential": true}`` calls the members one after another instead, to
measure what the parallel calls save.

``build_app`` is an application builder: a YAML config passes its ``args`` to it
(``timeout_s``, ``min_members``, ``members``).

Run it::

    serve run helpers.apps.ensemble:app
    curl -X POST localhost:PORT/ -d '{"text": "great service"}'

Introduced in notebooks/07b_composition_and_canary.ipynb.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse

from helpers.apps.identity import replica_identity
from helpers.apps.model import SentimentModel
from helpers.apps.text_input import missing_text_response, read_text

__all__ = ["VARIANTS", "MEMBER_CONFIG", "check_member_config", "combine", "EnsembleMember",
           "Ensemble", "build_app", "app"]

#: Member name -> how its model is trained (SentimentModel.train keyword arguments).
VARIANTS: dict[str, dict[str, Any]] = {
    "a": {"dim": 256, "epochs": 300},
    "b": {"dim": 64, "epochs": 300},
    "c": {"dim": 256, "epochs": 60},
}
MEMBER_CONFIG: dict[str, Any] = {"delay_s": 0.2, "fail": False}


def check_member_config(config: Any) -> dict[str, Any]:
    """A member's full ``user_config``, or ValueError naming what is wrong."""
    if not isinstance(config, Mapping):
        raise ValueError(f"user_config must be a mapping, not {type(config).__name__}")
    unknown = set(config) - set(MEMBER_CONFIG)
    if unknown:
        raise ValueError(f"unknown user_config keys {sorted(unknown)}; known: {sorted(MEMBER_CONFIG)}")
    merged = {**MEMBER_CONFIG, **dict(config)}
    if not isinstance(merged["delay_s"], (int, float)) or not 0 <= merged["delay_s"] <= 30:
        raise ValueError(f"delay_s must be between 0 and 30 seconds, got {merged['delay_s']!r}")
    if not isinstance(merged["fail"], bool):
        raise ValueError(f"fail must be true or false, got {merged['fail']!r}")
    return merged


def combine(scores: Mapping[str, float]) -> dict[str, Any]:
    """The ensemble's answer from the members' scores: their mean, and its label."""
    mean = sum(scores.values()) / len(scores)
    return {"score": round(mean, 6), "label": "positive" if mean >= 0.5 else "negative"}


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16,
                  user_config=MEMBER_CONFIG)
class EnsembleMember:
    """One member: a variant of the sentiment model (see :data:`VARIANTS`)."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.model = SentimentModel.train(**VARIANTS[variant], version=variant)
        self.config = dict(MEMBER_CONFIG)
        self.failing = False

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.config = check_member_config(config)
        self.failing = self.config["fail"]

    def set_failing(self, failing: bool) -> dict[str, Any]:
        """Fault injection: make this replica's predictions raise (or stop raising)."""
        self.failing = bool(failing)
        return {"member": self.variant, "failing": self.failing, **replica_identity()}

    def set_delay(self, delay_s: float) -> dict[str, Any]:
        """Fault injection: make this replica's predictions take ``delay_s`` seconds."""
        self.config = check_member_config({**self.config, "delay_s": delay_s})
        return {"member": self.variant, "delay_s": self.config["delay_s"], **replica_identity()}

    async def predict(self, text: str) -> dict[str, Any]:
        await asyncio.sleep(self.config["delay_s"])
        if self.failing:
            raise RuntimeError(f"member {self.variant}: its model cannot be used (fault injected)")
        return {"member": self.variant, "score": round(self.model.score(text), 6),
                "pid": replica_identity()["pid"]}


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=32)
class Ensemble:
    """The ingress: every member in parallel, a per-member timeout, a quorum."""

    def __init__(self, members: dict[str, DeploymentHandle], timeout_s: float = 2.0,
                 min_members: int = 2) -> None:
        if not 1 <= min_members <= len(members):
            raise ValueError(f"min_members must be between 1 and {len(members)}, got {min_members}")
        self.members = members
        self.timeout_s = timeout_s
        self.min_members = min_members

    async def _ask(self, name: str, text: str) -> tuple[str, float | None, str, float]:
        started = time.perf_counter()
        try:
            answer = await asyncio.wait_for(self.members[name].predict.remote(text), self.timeout_s)
            return name, float(answer["score"]), "", time.perf_counter() - started
        except asyncio.TimeoutError:
            error = f"no answer within {self.timeout_s} s"
        except Exception as err:  # noqa: BLE001 - any member failure is tolerated and reported
            error = f"{type(err).__name__}: {str(err).splitlines()[-1][:200] if str(err) else ''}"
        return name, None, error, time.perf_counter() - started

    async def predict(self, text: str, sequential: bool = False) -> tuple[int, dict[str, Any]]:
        started = time.perf_counter()
        if sequential:
            results = [await self._ask(name, text) for name in self.members]
        else:
            results = await asyncio.gather(*(self._ask(name, text) for name in self.members))
        scores = {name: score for name, score, _, _ in results if score is not None}
        failed = {name: error for name, _, error, _ in results if error}
        body: dict[str, Any] = {
            "members": scores,
            "failed": failed,
            "member_ms": {name: round(s * 1000, 1) for name, _, _, s in results},
            "mode": "sequential" if sequential else "parallel",
            "ensemble_ms": round((time.perf_counter() - started) * 1000, 1),
            **replica_identity(),
        }
        if len(scores) < self.min_members:
            body["error"] = (f"only {len(scores)} of {len(self.members)} members answered; "
                             f"{self.min_members} needed")
            return 503, body
        return 200, {**combine(scores), **body}

    async def __call__(self, request: Request) -> Any:
        """HTTP: ``POST {"text": ..., "sequential": false}``."""
        text = await read_text(request)
        if text is None:
            return missing_text_response()
        sequential = request.method == "POST" and bool((await request.json()).get("sequential"))
        status, answer = await self.predict(text, sequential)
        return JSONResponse(answer, status_code=status)


def build_app(args: Mapping[str, Any] | None = None) -> Any:
    """An application builder: what a YAML config's ``args`` are passed to.

    ``import_path: helpers.apps.ensemble:build_app`` with ``args: {timeout_s: 1.0,
    min_members: 2, members: [a, b, c]}``; every key is optional. Unknown keys are an error
    (a builder should never ignore a typo).
    """
    args = dict(args or {})
    unknown = set(args) - {"timeout_s", "min_members", "members"}
    if unknown:
        raise ValueError(f"unknown args {sorted(unknown)}; known: members, min_members, timeout_s")
    names = list(args.get("members", VARIANTS))
    missing = [n for n in names if n not in VARIANTS]
    if missing or not names:
        raise ValueError(f"members must be a non-empty list from {sorted(VARIANTS)}, got {names}")
    timeout_s, min_members = float(args.get("timeout_s", 2.0)), int(args.get("min_members", 2))
    if timeout_s <= 0 or not 1 <= min_members <= len(names):
        raise ValueError(f"need timeout_s > 0 and 1 <= min_members <= {len(names)}; "
                         f"got {timeout_s} and {min_members}")
    members = {name: EnsembleMember.options(name=f"Member{name.upper()}").bind(name) for name in names}
    return Ensemble.bind(members, timeout_s, min_members)


app = build_app()
