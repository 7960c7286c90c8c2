"""Lab 04's checks (lab04): batching.

What the checks verify: BatchedScorer's answers against the unbatched model's, and its
throughput against the target.

A lab's cells call them through the package, which registers every lab's checks
(``from helpers.labs import checks``, then ``checks.lab04_throughput_target(lab, ...)``); the lab's
hidden checks are the instructor's, in :mod:`helpers.labs.hidden_checks`.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from helpers.labs.apps import lab_texts, measure_throughput
from helpers.labs.checks.framework import (
    _app,
    _call,
    _expect,
    lab_check,
)

if TYPE_CHECKING:  # pragma: no cover
    from helpers.labs.session import LabSession

__all__ = [
    "lab04_batched_answers_match",
    "lab04_throughput_target",
]


def _l04_texts(count: int) -> list[str]:
    return lab_texts(count)


@lab_check("lab04", 1)
def lab04_batched_answers_match(session: LabSession) -> None:
    """BatchedScorer answers each text with the same score as the unbatched model."""
    from ray import serve

    look = "Task 1: BatchedScorer.score (return one result per input, in order)"
    _app(session, "batched", task=1, look="Task 1: the cell that deploys BatchedScorer")
    texts = _l04_texts(8)
    random.Random(4).shuffle(texts)
    batched = measure_throughput(serve.get_app_handle(session.app_name("batched")), "score", texts)[
        "results"
    ]
    unbatched = measure_throughput(
        serve.get_app_handle(session.app_name("unbatched")), "score", texts
    )["results"]
    wrong = [t for t, a, b in zip(texts, batched, unbatched) if a != b]
    _expect(
        not wrong,
        f"{len(wrong)} of {len(texts)} texts got another text's score, e.g. {wrong[:1]}.",
        look,
    )


@lab_check("lab04", 2)
def lab04_throughput_target(
    session: LabSession,
    *,
    baseline_rps: float,
    speedup: float,
    requests: int,
    overhead_ms: float,
    per_item_ms: float,
) -> None:
    """BatchedScorer reaches the throughput target."""
    from ray import serve

    look = "Task 2: max_batch_size, batch_wait_timeout_s and max_ongoing_requests"
    # The baseline is measured in the notebook; the device's own cost bounds it from below
    # (one call per request, one call at a time: 1000 / (overhead + per item) per second),
    # so a baseline written lower than 0.8 of that does not lower the target.
    baseline_rps = max(float(baseline_rps), 0.8 * 1000 / (overhead_ms + per_item_ms))
    _app(session, "batched", task=2, look="Task 1")
    _call(session, "batched", "reset_stats")
    burst = measure_throughput(
        serve.get_app_handle(session.app_name("batched")), "score", _l04_texts(requests)
    )
    stats = _call(session, "batched", "stats")
    _expect(
        burst["rps"] >= speedup * baseline_rps,
        f"{burst['rps']} requests/s is {burst['rps'] / baseline_rps:.1f}x the baseline "
        f"({baseline_rps} requests/s); the target is {speedup}x. The device ran batches of "
        f"{stats.get('mean_size')} on average (largest {stats.get('largest')}).",
        look,
    )
