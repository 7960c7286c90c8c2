"""Lab 06's checks (lab06): two applications and a canary.

What the checks verify: v1 and v2 at their routes, the router's split, the promotion.

A lab's cells call them through the package, which registers every lab's checks
(``from helpers.labs import checks``, then ``checks.lab06_promoted(lab, ...)``); the lab's
hidden checks are the instructor's, in :mod:`helpers.labs.hidden_checks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from helpers.labs.checks.framework import (
    _app,
    _expect,
    _json,
    _post,
    _serve_apps,
    lab_check,
)

if TYPE_CHECKING:  # pragma: no cover
    from helpers.labs.session import LabSession

__all__ = [
    "lab06_two_versions",
    "lab06_split_matches",
    "lab06_promoted",
]


_L06_APPS = "Task 1: the stable and canary applications"
_L06_ROUTER = "Task 2: CanaryRouter"


def _versions(session: LabSession, short: str, count: int, look: str) -> list[Any]:
    out = []
    for i in range(count):
        body = _json(
            _post(session.url(short), {"text": f"a friendly service {i}"}, look=look), look=look
        )
        result = body.get("result") if isinstance(body.get("result"), dict) else body
        out.append(result.get("code_version"))
    return out


@lab_check("lab06", 1)
def lab06_two_versions(session: LabSession) -> None:
    """Two applications answer at their own routes: v1 (stable) and v2 (canary)."""
    for short, version in (("stable", "v1"), ("canary", "v2")):
        _app(session, short, task=1, look=_L06_APPS)
        seen = set(_versions(session, short, 3, _L06_APPS))
        _expect(
            seen == {version},
            f"{session.url(short)} answers code versions {seen}, not {version!r}.",
            _L06_APPS + " (ConfigurableClassifier / ...V2)",
        )


@lab_check("lab06", 2)
def lab06_split_matches(
    session: LabSession, *, canary_percent: int, requests: int, tolerance: float
) -> None:
    """The router sends about canary_percent % of requests to the canary."""
    _app(session, "router", task=2, look=_L06_ROUTER)
    seen = _versions(session, "router", requests, _L06_ROUTER + ".__call__ (return the result)")
    share = sum(v == "v2" for v in seen) / len(seen)
    unknown = {v for v in seen if v not in ("v1", "v2")}
    _expect(not unknown, f"The router's answers carry code versions {unknown}.", _L06_ROUTER)
    _expect(
        abs(share - canary_percent / 100) <= tolerance,
        f"{share:.0%} of {requests} requests went to the canary; the split is "
        f"{canary_percent}% (tolerance {tolerance:.0%}).",
        _L06_ROUTER + ": reconfigure() and the random draw in __call__",
    )


@lab_check("lab06", 3)
def lab06_promoted(session: LabSession, *, requests: int) -> None:
    """The canary was promoted: all traffic on v2, the stable app retired."""
    look = "Task 3: canary_percent 100, then delete the stable application"
    names = _serve_apps(session)
    _expect(
        session.app_name("stable") not in names,
        f"{session.app_name('stable')!r} still exists.",
        look + " (serve.delete)",
    )
    seen = _versions(session, "router", requests, look)
    _expect(set(seen) == {"v2"}, f"The router's answers had code versions {set(seen)}.", look)
