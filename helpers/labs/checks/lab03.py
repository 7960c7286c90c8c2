"""Lab 03's checks (lab03): autoscaling to a latency target.

What the checks verify: the Scorer's autoscaling_config, the p90 latency under the lab's load,
the scale back down.

A lab's cells call them through the package, which registers every lab's checks
(``from helpers.labs import checks``, then ``checks.lab03_scaled_back_down(lab, ...)``); the lab's
hidden checks are the instructor's, in :mod:`helpers.labs.hidden_checks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from helpers.labs.checks.framework import (
    _app,
    _deployment,
    _expect,
    _running_replicas,
    lab_check,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from helpers.labs.session import LabSession

__all__ = [
    "lab03_autoscaling_enabled",
    "lab03_latency_target_met",
    "lab03_scaled_back_down",
]


_L03_LOOK = "Task 1: autoscaling_config"


def _l03_deployment(session: LabSession, task: int) -> dict[str, Any]:
    app = _app(session, "scorer", task=task, look="Task 1: the cell that deploys the Scorer")
    return _deployment(app, "Scorer", look="Task 1")


def _l03_autoscaling(session: LabSession, task: int) -> dict[str, Any]:
    config = _l03_deployment(session, task).get("deployment_config") or {}
    autoscaling: dict[str, Any] = config.get("autoscaling_config") or {}
    _expect(
        bool(autoscaling),
        "The Scorer has a fixed replica count: no autoscaling_config.",
        _L03_LOOK + " (pass it with Scorer.options(autoscaling_config=...))",
    )
    return autoscaling


@lab_check("lab03", 1)
def lab03_autoscaling_enabled(session: LabSession) -> None:
    """The Scorer runs with an autoscaling config that can add replicas."""
    auto = _l03_autoscaling(session, 1)
    low, high = auto.get("min_replicas"), auto.get("max_replicas")
    _expect(
        low is not None and high is not None and low <= 1 < high,
        f"min_replicas={low}, max_replicas={high}: start small (1) and allow more.",
        _L03_LOOK,
    )


def _window(traffic: pd.DataFrame, last_s: float) -> pd.DataFrame:
    end = traffic["t_start"].max()
    return traffic[traffic["t_start"] >= end - last_s]


@lab_check("lab03", 2)
def lab03_latency_target_met(
    session: LabSession, load_traffic: Any, p90_s: Any, *, target_p90_s: float, last_s: float
) -> None:
    """Under the lab's load the 90th-percentile latency meets the target."""
    look = "Task 2: p90_s; and Task 1: target_ongoing_requests, upscale_delay_s, max_replicas"
    _expect(
        load_traffic is not None and len(load_traffic) > 0,
        "There is no load_traffic: the load did not run.",
        "Task 2: the load cell",
    )
    window = _window(load_traffic, last_s)
    failed = int((~window["ok"].astype(bool)).sum())
    _expect(failed == 0, f"{failed} requests failed in the last {last_s:g} s.", look)
    truth = float(window["latency_s"].quantile(0.9))
    _expect(
        isinstance(p90_s, (int, float)) and abs(float(p90_s) - truth) < 0.005,
        f"p90_s is {p90_s!r}; the 90th percentile of latency_s over the requests that "
        f"started in the last {last_s:g} s is {truth:.3f}.",
        "Task 2: filter load_traffic on t_start, then .quantile(0.9)",
    )
    replicas = window["replica"].nunique()
    _expect(
        truth <= target_p90_s,
        f"p90 latency {truth:.3f} s > target {target_p90_s} s, with {replicas} replica(s) "
        "serving at the end: Serve did not add enough replicas in time.",
        look,
    )


@lab_check("lab03", 3)
def lab03_scaled_back_down(session: LabSession) -> None:
    """After the load, the Scorer is back at min_replicas."""
    auto = _l03_autoscaling(session, 3)
    dep = _l03_deployment(session, 3)
    running = len(_running_replicas(dep))
    _expect(
        running == auto.get("min_replicas") and dep.get("target_num_replicas") == running,
        f"{running} replicas still run (target {dep.get('target_num_replicas')}) after the "
        f"load; min_replicas is {auto.get('min_replicas')}.",
        _L03_LOOK + ": downscale_delay_s (the default waits 600 s)",
    )
