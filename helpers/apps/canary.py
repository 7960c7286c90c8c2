# Generated from notebooks/07b_composition_and_canary.ipynb (cell 16); edit the lesson, then run `python -m helpers.lessons generate`.
"""A canary release: a traffic splitter sends a share of the requests to a new model version.

Three deployments make one application:

* ``ModelV1`` and ``ModelV2`` - the tiny sentiment model in two versions (v2 labels with a
  lower threshold and says which words decided), each answering with its ``code_version``;
* ``TrafficSplitter`` - the ingress. Its ``user_config`` holds the weights::

      weights: {v1: 0.9, v2: 0.1}      # shares of the traffic, any non-negative numbers
      config_version: 1                # echoed in every answer

  Changing only ``user_config`` (in a YAML config deployed with ``serve deploy``) calls
  ``reconfigure`` on the running replicas: the weights change live, nothing restarts.

Each request is assigned a number ``u`` in [0, 1): random by default, or, when the request
names a ``user``, a hash of it, so the same user always sees the same version while the
weights stay the same (and a user on v2 stays on v2 when v2's share grows).
:func:`choose_version` maps ``u`` to a version by the cumulative weights.
:func:`binomial_interval` says how far an observed split may stray from the weights by chance.

Run it::

    serve run helpers.apps.canary:app
    curl -X POST localhost:PORT/ -d '{"text": "great service"}'     # ... "code_version": "v1"
    curl -X POST localhost:PORT/ -d '{"text": "great", "user": "ana"}'  # always the same

Introduced in notebooks/07b_composition_and_canary.ipynb.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request

from helpers.apps.identity import replica_identity
from helpers.apps.model import SentimentModel
from helpers.apps.text_input import missing_text_response, read_text

__all__ = [
    "DEFAULT_SPLIT",
    "check_split_config",
    "user_bucket",
    "choose_version",
    "binomial_interval",
    "CanaryModel",
    "TrafficSplitter",
    "app",
]

DEFAULT_SPLIT: dict[str, Any] = {"weights": {"v1": 0.9, "v2": 0.1}, "config_version": 1}


def check_split_config(config: Any, versions: tuple[str, ...] = ("v1", "v2")) -> dict[str, Any]:
    """The splitter's full config (defaults filled in), or ValueError saying what is wrong."""
    if not isinstance(config, Mapping):
        raise ValueError(f"user_config must be a mapping, not {type(config).__name__}")
    unknown = set(config) - set(DEFAULT_SPLIT)
    if unknown:
        raise ValueError(f"unknown user_config keys {sorted(unknown)}; known: {sorted(DEFAULT_SPLIT)}")
    merged = {**DEFAULT_SPLIT, **dict(config)}
    weights = merged["weights"]
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError("weights must be a non-empty mapping of version -> share, e.g. {v1: 0.9, v2: 0.1}")
    bad = [v for v in weights if v not in versions]
    if bad:
        raise ValueError(f"weights name unknown versions {bad}; this splitter has {list(versions)}")
    if any(not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0 or math.isnan(w)
           for w in weights.values()):
        raise ValueError(f"weights must be non-negative numbers, got {dict(weights)}")
    if sum(weights.values()) <= 0:
        raise ValueError("at least one weight must be positive")
    merged["weights"] = {v: float(weights.get(v, 0.0)) for v in versions}
    return merged


def user_bucket(user: str) -> float:
    """A stable number in [0, 1) for ``user`` (crc32: the same in every process and run)."""
    return zlib.crc32(user.encode()) / 2**32


def choose_version(weights: Mapping[str, float], u: float) -> str:
    """The version whose slice of [0, 1) holds ``u``, slices in ``weights``' order.

    ``choose_version({"v1": 0.9, "v2": 0.1}, 0.95)`` is ``"v2"``. Weights are normalised, so
    ``{"v1": 9, "v2": 1}`` is the same split.
    """
    if not 0.0 <= u < 1.0:
        raise ValueError(f"u must be in [0, 1), got {u}")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError("at least one weight must be positive")
    edge = 0.0
    last: str | None = None
    for version, weight in weights.items():
        if weight <= 0:
            continue
        edge += weight / total
        last = version
        if u < edge:
            return version
    assert last is not None  # total > 0, so some weight is positive
    return last  # u just below 1.0 with rounding in the sum


def _log_pmf(n: int, p: float, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def binomial_interval(n: int, p: float, alpha: float = 1e-4) -> tuple[int, int]:
    """The counts ``(low, high)`` that ``n`` independent draws with probability ``p`` land
    between, both ends included, except with probability at most ``alpha``.

    The exact central interval of Binomial(n, p): ``low`` is the largest count with
    P(X < low) <= alpha/2 and ``high`` the smallest with P(X > high) <= alpha/2. A canary
    weight of 0.1 over 400 requests: ``binomial_interval(400, 0.1)`` is about (18, 66); a
    count outside it means the split is not what the weights say (or the draws are not
    independent), with a false alarm once in 1/alpha runs.
    """
    if n < 0 or not 0.0 <= p <= 1.0 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n >= 0, 0 <= p <= 1, 0 < alpha < 1; got {n}, {p}, {alpha}")
    if p == 0.0 or n == 0:
        return 0, 0
    if p == 1.0:
        return n, n
    half = alpha / 2
    cumulative = 0.0
    low = 0
    for k in range(n + 1):  # P(X <= k) from the bottom
        cumulative += math.exp(_log_pmf(n, p, k))
        if cumulative > half:
            low = k
            break
    cumulative = 0.0
    high = n
    for k in range(n, -1, -1):  # P(X >= k) from the top
        cumulative += math.exp(_log_pmf(n, p, k))
        if cumulative > half:
            high = k
            break
    return low, high


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16)
class CanaryModel:
    """One version of the sentiment model. v2 uses threshold 0.45 and explains its label."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.model = SentimentModel.train(version=version)
        self.threshold = 0.5 if version == "v1" else 0.45

    def predict(self, text: str) -> dict[str, Any]:
        score = self.model.score(text)
        answer = {"code_version": self.version, "label": "positive" if score >= self.threshold else "negative",
                  "score": round(score, 6), **replica_identity()}
        if self.version != "v1":
            answer["top_words"] = self.model.top_words(text)
        return answer


@serve.deployment(name="TrafficSplitter", ray_actor_options={"num_cpus": 0.1},
                  max_ongoing_requests=32, user_config=DEFAULT_SPLIT)
class TrafficSplitter:
    """The ingress: picks a version by the weights in ``user_config``, calls it, answers."""

    def __init__(self, v1: DeploymentHandle, v2: DeploymentHandle) -> None:
        self.handles = {"v1": v1, "v2": v2}
        self.config = check_split_config(DEFAULT_SPLIT, tuple(self.handles))
        self.rng = random.Random()
        self.reconfigure_count = 0

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Called by Serve with ``user_config`` at start and whenever only it changes."""
        self.config = check_split_config(config, tuple(self.handles))
        self.reconfigure_count += 1

    async def __call__(self, request: Request) -> Any:
        """``POST {"text": ..., "user": optional}`` (or ``GET ?text=...&user=...``) -> the
        chosen version's answer."""
        text = await read_text(request)
        if text is None:
            return missing_text_response()
        user = (await request.json()).get("user") if request.method == "POST" else \
            request.query_params.get("user")
        config = self.config  # this request's weights, even if reconfigure runs while it waits
        u = user_bucket(str(user)) if user is not None else self.rng.random()
        version = choose_version(config["weights"], u)
        answer = await self.handles[version].predict.remote(text)
        return {**answer, "weights": config["weights"],
                "config_version": config["config_version"],
                "reconfigure_count": self.reconfigure_count,
                "splitter": replica_identity()["replica"]}


app = TrafficSplitter.bind(
    v1=CanaryModel.options(name="ModelV1").bind("v1"),
    v2=CanaryModel.options(name="ModelV2").bind("v2"),
)
