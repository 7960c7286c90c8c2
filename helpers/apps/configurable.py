# Generated from notebooks/02b_replicas_config_and_async.ipynb (cell 14); edit the lesson, then run `python -m helpers.lessons generate`.
"""A classifier whose behaviour is set by ``user_config``, with a custom health check.

``user_config`` is a JSON-able value that Serve hands to the replica's ``reconfigure`` method
when the replica starts *and* every time the config changes. Changing only ``user_config``
(in code with ``.options(user_config=...)``, or in a YAML config) does not restart replicas:
the same processes keep running with the new behaviour.

The config (all keys optional; unknown keys are rejected so a typo fails the deploy)::

    threshold: 0.5                     # score at or above which the answer is labels[1]
    labels: [negative, positive]       # the two label names
    config_version: 1                  # any value: echoed in every response

``check_health`` is called by Serve every ``health_check_period_s``; it raises once
``make_unhealthy()`` was called on that replica, and Serve then replaces the replica.

Two code versions of the same deployment (same name ``ConfigurableClassifier``):

* ``app`` - ``code_version: "v1"``;
* ``app_v2`` - ``code_version: "v2"``, also returns the words that decided the label.

Deploying ``app_v2`` over ``app`` is a code change: Serve replaces the replicas by a rolling
update. Introduced in notebooks/02b_replicas_config_and_async.ipynb (reconfigure, check_health) and
used for zero-downtime updates in notebooks/03b_updates_and_operations.ipynb.
"""

from __future__ import annotations

import time
from typing import Any

from ray import serve
from starlette.requests import Request

from helpers.apps.identity import replica_identity
from helpers.apps.model import SentimentModel
from helpers.apps.text_input import missing_text_response, read_text

__all__ = ["DEFAULT_CONFIG", "ConfigurableClassifier", "ConfigurableClassifierV2", "app", "app_v2"]

DEFAULT_CONFIG: dict[str, Any] = {
    "threshold": 0.5,
    "labels": ["negative", "positive"],
    "config_version": 1,
}

_DEPLOYMENT_OPTIONS: dict[str, Any] = dict(
    name="ConfigurableClassifier",
    num_replicas=2,
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=8,
    user_config=DEFAULT_CONFIG,
    health_check_period_s=1.0,
    health_check_timeout_s=5.0,
    graceful_shutdown_wait_loop_s=0.5,
    graceful_shutdown_timeout_s=10.0,
)


def check_user_config(config: Any) -> dict[str, Any]:
    """The full config (defaults filled in), or ValueError naming what is wrong."""
    if not isinstance(config, dict):
        raise ValueError(f"user_config must be a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(f"unknown user_config keys {unknown}; allowed: {sorted(DEFAULT_CONFIG)}")
    merged = {**DEFAULT_CONFIG, **config}
    threshold = merged["threshold"]
    if not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be a number between 0 and 1, got {threshold!r}")
    labels = merged["labels"]
    if not (isinstance(labels, list) and len(labels) == 2 and all(isinstance(x, str) for x in labels)):
        raise ValueError(f"labels must be a list of two strings, got {labels!r}")
    return merged


class _ConfigurableClassifier:
    code_version = "v1"

    def __init__(self) -> None:
        self.model = SentimentModel.train()
        self.config: dict[str, Any] = dict(DEFAULT_CONFIG)
        self.reconfigure_count = 0
        self.healthy = True
        self.started_at = time.time()

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Called by Serve with ``user_config`` at start and on every config change."""
        self.config = check_user_config(config)
        self.reconfigure_count += 1

    def check_health(self) -> None:
        """Called by Serve every ``health_check_period_s``; raising marks this replica sick."""
        if not self.healthy:
            raise RuntimeError("this replica was marked unhealthy with make_unhealthy()")

    def make_unhealthy(self) -> dict[str, Any]:
        """Make this replica's next health checks fail (to watch Serve replace it)."""
        self.healthy = False
        return replica_identity()

    def describe(self) -> dict[str, Any]:
        """The replica's current config and identity (no classification)."""
        return {
            "config": self.config,
            "reconfigure_count": self.reconfigure_count,
            "code_version": self.code_version,
            "started_at": self.started_at,
            **replica_identity(),
        }

    def classify(self, text: str) -> dict[str, Any]:
        score = self.model.score(text)
        positive = score >= self.config["threshold"]
        return {
            "text": text,
            "label": self.config["labels"][int(positive)],
            "score": round(score, 6),
            "threshold": self.config["threshold"],
            "config_version": self.config["config_version"],
            "code_version": self.code_version,
            "reconfigure_count": self.reconfigure_count,
            **replica_identity(),
        }

    async def __call__(self, request: Request) -> Any:
        """HTTP: ``POST {"text": ...}`` or ``GET ?text=...``."""
        text = await read_text(request)
        if text is None:
            return missing_text_response()
        return self.classify(text)


@serve.deployment(**_DEPLOYMENT_OPTIONS)
class ConfigurableClassifier(_ConfigurableClassifier):
    """Code version v1."""

    code_version = "v1"


@serve.deployment(**_DEPLOYMENT_OPTIONS)
class ConfigurableClassifierV2(_ConfigurableClassifier):
    """Code version v2: the same contract, plus the words that decided the label."""

    code_version = "v2"

    def classify(self, text: str) -> dict[str, Any]:
        result = super().classify(text)
        result["top_words"] = self.model.top_words(text)
        return result


app = ConfigurableClassifier.bind()
app_v2 = ConfigurableClassifierV2.bind()
