"""One way to wait: call a check until it says yes, or raise with what it last saw.

Every wait of the workbook (an application RUNNING, a replica replaced, a node marked dead, a
metric reported) is the same loop: call a check, sleep, try again until a deadline. Written
once here, a timeout always names what was awaited, for how long, and what the check saw
last, so a learner can tell "almost there, the machine is slow" from "stuck in a state".

Usage::

    from helpers.waiting import wait_for
    wait_for(lambda: app_statuses(cluster).get("default") == "RUNNING",
             timeout_s=60, what="the application RUNNING")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from helpers.errors import BadValueError, WorkbookError, WorkbookTimeoutError

__all__ = ["DEFAULT_POLL_S", "Waited", "wait_for"]

#: Seconds between two calls of a check: often enough that a wait ends soon after the state
#: it waits for, rarely enough that a check asking the dashboard leaves a 2-core machine free.
DEFAULT_POLL_S = 0.5

_DEFAULT_FIX = (
    "the last value seen (below) says where it stopped; if it was still on its way "
    "(the machine is busy), allow longer with a larger timeout_s."
)
_MAX_SHOWN = 1500  # characters of a value in a message: a whole Serve status would drown it

_T = TypeVar("_T")


@dataclass(frozen=True)
class Waited:
    """What a wait that ran out of time saw: what ``on_timeout`` builds its error from."""

    what: str
    timeout_s: float
    last: Any  # the check's last return value (None if it never returned)
    error: BaseException | None  # what the last call raised, if it raised a "not yet" error

    def last_seen(self) -> str:
        """The last call's outcome in one line: the value it returned, or the error it raised."""
        if self.error is not None:
            lines = str(self.error).strip().splitlines()
            text = f"{type(self.error).__name__}: {lines[0] if lines else ''}"
        else:
            text = repr(self.last)
        return _shortened(text)


def _shortened(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + " ..."


def wait_for(
    check: Callable[[], _T | None],
    *,
    timeout_s: float,
    what: str,
    poll_s: float = DEFAULT_POLL_S,
    not_yet: tuple[type[BaseException], ...] = (),
    fix: str = _DEFAULT_FIX,
    report: Callable[[], Any] | None = None,
    on_timeout: Callable[[Waited], WorkbookError] | None = None,
) -> _T:
    """Call ``check()`` until it returns something truthy, and return that value.

    ``check`` is called at once, then every ``poll_s`` seconds, and once more at the deadline
    (the last sleep is cut short), so a wait ends at most one check's duration after
    ``timeout_s``. Then it raises :class:`~helpers.errors.WorkbookTimeoutError` (a
    ``TimeoutError``): "Waited N s for ``what``", ``fix``, and in its details the last value
    seen and, when given, what ``report()`` returns then (for a check whose value, often just
    False, does not say what the cluster looked like; a report that fails is noted, never
    raised instead of the timeout). ``on_timeout`` builds the error to raise from the
    :class:`Waited` record instead: a subclass such as
    :class:`~helpers.errors.ServeTimeoutError` with the pending resource demand, or the error
    a helper's callers already catch for that wait (a node that does not join:
    :class:`~helpers.errors.ClusterStartError`).

    Exceptions: only those in ``not_yet`` mean "not yet" (the last one is what was seen);
    any other propagates at once. A caller names the transient ones it expects, e.g.
    :class:`~helpers.errors.ClusterNotRunningError` while the Serve controller restarts; a
    check's own bug (a ``KeyError``, a typo) or a final verdict (a
    :class:`~helpers.errors.ServeDeployError`) then ends the wait at once instead of hiding
    behind the timeout.
    """
    if timeout_s < 0 or poll_s <= 0:
        raise BadValueError(
            f"wait_for needs timeout_s >= 0 and poll_s > 0, not {timeout_s} and {poll_s}.",
            "pass the seconds to wait and between two checks.",
        )
    deadline = time.monotonic() + timeout_s
    last: Any = None
    error: BaseException | None = None
    while True:
        try:
            value = check()
        except not_yet as err:
            error = err
        else:
            if value:
                return value
            last, error = value, None
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(poll_s, left))
    waited = Waited(what, timeout_s, last, error)
    if on_timeout is not None:
        raise on_timeout(waited) from error
    details = f"last seen: {waited.last_seen()}"
    if report is not None:
        try:
            details += f"\nthen: {_shortened(repr(report()))}"
        except Exception as err:  # noqa: BLE001 - the timeout is the error to raise, not this
            details += f"\nthen: the report itself failed ({type(err).__name__}: {err})"
    raise WorkbookTimeoutError(
        f"Waited {timeout_s:g} s for {what}; it did not happen.", fix, details=details
    ) from error  # the last "not yet" error, if any
