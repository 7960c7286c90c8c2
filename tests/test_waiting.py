"""helpers.waiting.wait_for, without a cluster: the checks are plain functions that count
their calls, so each test knows what the wait saw and when."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from helpers.errors import BadValueError, ServeTimeoutError, WorkbookTimeoutError
from helpers.waiting import Waited, wait_for


def answers(*values: Any) -> Callable[[], Any]:
    """A check that returns ``values`` one per call (raising those that are exceptions),
    then the last one again."""
    calls = iter(values)
    last: list[Any] = [None]

    def check() -> Any:
        last[0] = next(calls, last[0])
        if isinstance(last[0], BaseException):
            raise last[0]
        return last[0]

    return check


def test_returns_the_checks_first_truthy_value() -> None:
    assert wait_for(
        answers(None, 0, [], {"status": "RUNNING"}), timeout_s=5, poll_s=0.01, what="RUNNING"
    ) == {"status": "RUNNING"}


def test_checks_once_even_with_no_time_to_wait() -> None:
    assert wait_for(answers(42), timeout_s=0, what="the answer") == 42


def test_a_timeout_says_what_how_long_and_the_last_value_seen() -> None:
    with pytest.raises(TimeoutError) as caught:
        wait_for(
            answers(None, [], ""),
            timeout_s=0.2,
            poll_s=0.02,
            what="the app RUNNING",
            fix="look at serve status.",
            report=lambda: {"replicas": 0},
        )
    err = caught.value
    assert isinstance(err, WorkbookTimeoutError)
    assert err.problem == "Waited 0.2 s for the app RUNNING; it did not happen."
    assert err.fix == "look at serve status."
    assert err.details == "last seen: ''\nthen: {'replicas': 0}"


def test_a_report_that_fails_does_not_hide_the_timeout() -> None:
    with pytest.raises(WorkbookTimeoutError) as caught:
        wait_for(answers(False), timeout_s=0.05, poll_s=0.01, what="x", report=lambda: 1 / 0)
    assert "then: the report itself failed (ZeroDivisionError" in caught.value.details


def test_not_yet_errors_are_retried_and_the_last_one_is_what_was_seen() -> None:
    assert (
        wait_for(
            answers(ConnectionError("refused"), ConnectionError("refused"), "up"),
            timeout_s=5,
            poll_s=0.01,
            what="up",
            not_yet=(ConnectionError,),
        )
        == "up"
    )
    with pytest.raises(WorkbookTimeoutError) as caught:
        wait_for(
            answers(0, ConnectionError("refused\nmore lines")),
            timeout_s=0.1,
            poll_s=0.01,
            what="up",
            not_yet=(ConnectionError,),
        )
    assert caught.value.details == "last seen: ConnectionError: refused"
    assert isinstance(caught.value.__cause__, ConnectionError)  # its traceback, for the curious


def test_any_other_error_propagates_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(KeyError, match="status"):
        wait_for(
            answers(False, KeyError("status")),
            timeout_s=30,
            poll_s=0.01,
            what="x",
            not_yet=(ConnectionError,),
        )
    assert time.monotonic() - started < 5  # not after the 30 s deadline


def test_the_deadline_holds_within_a_poll_interval() -> None:
    started = time.monotonic()
    with pytest.raises(WorkbookTimeoutError):
        wait_for(answers(False), timeout_s=0.3, poll_s=0.1, what="x")
    assert 0.3 <= time.monotonic() - started < 0.3 + 0.1 + 0.1  # 0.1: a busy machine's slack
    # A poll interval longer than the time left is cut short: the last check is at the deadline.
    calls: list[float] = []
    started = time.monotonic()
    with pytest.raises(WorkbookTimeoutError):
        wait_for(
            lambda: calls.append(time.monotonic() - started), timeout_s=0.2, poll_s=10, what="x"
        )
    assert len(calls) == 2 and 0.2 <= calls[1] < 0.3


def test_on_timeout_raises_the_callers_own_timeout_error() -> None:
    seen: list[Waited] = []

    def serve_timeout(waited: Waited) -> ServeTimeoutError:
        seen.append(waited)
        return ServeTimeoutError("app", waited.timeout_s, waited.last_seen())

    with pytest.raises(ServeTimeoutError, match=r"'app' was not RUNNING .*last status: \[\]"):
        wait_for(
            answers(0, []),
            timeout_s=0.05,
            poll_s=0.01,
            what="app RUNNING",
            on_timeout=serve_timeout,
        )
    assert seen == [Waited("app RUNNING", 0.05, [], None)]


def test_a_long_value_is_shortened_in_the_message() -> None:
    with pytest.raises(WorkbookTimeoutError) as caught:
        wait_for(answers(""), timeout_s=0, what="x", report=lambda: "y" * 10_000)
    assert len(caught.value.details) < 2000 and caught.value.details.endswith(" ...")


@pytest.mark.parametrize(("timeout_s", "poll_s"), [(-1, 0.5), (5, 0), (5, -0.1)])
def test_bad_arguments_are_refused(timeout_s: float, poll_s: float) -> None:
    with pytest.raises(BadValueError, match="timeout_s >= 0 and poll_s > 0"):
        wait_for(answers(True), timeout_s=timeout_s, poll_s=poll_s, what="x")
