"""Checks for a lesson's "Your turn" tasks, written in the lesson's check cell.

A check verifies what the task changed (a running application, a replica count Serve reports,
a file on disk, an HTTP answer), never only that a variable exists. When it passes it prints
``✓`` and what it verified; when it does not, it raises :class:`TaskCheckFailed`, an
``AssertionError`` whose message says what is wrong, what was expected and where to look
(the format of every check in the workbook, :mod:`helpers.check_feedback`)::

    Echo's num_replicas in app.yaml is None.
    Expected: 2
    Look at: Your turn 1: the options you set on `echo`

Usage (a check cell, tagged ``check``)::

    from helpers.lessons import check_equal, check_that, checking

    look = "Your turn 2: the serve.run(...) line"
    with checking(expected="application 'echo' RUNNING", look=look):
        status = serve.status().applications["echo"].status     # a KeyError becomes feedback
    check_equal(status, "RUNNING", what="the status of application 'echo'", look=look)
    check_that(len(pids) == 2, "two different replicas answered",
               problem=f"{len(pids)} replica(s) answered", expected="2", look=look)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from helpers.check_feedback import CheckFailed, feedback, report_pass

__all__ = ["TaskCheckFailed", "check_that", "check_equal", "checking"]


class TaskCheckFailed(CheckFailed):
    """A "Your turn" check failed: what is wrong, what was expected, where to look."""

    def __init__(self, problem: str, *, expected: str, look: str) -> None:
        self.problem, self.expected, self.look = problem, expected, look
        super().__init__(feedback(problem, look, expected))


def check_that(condition: Any, verified: str, *, problem: str, expected: str, look: str) -> None:
    """Print ``✓ verified`` when ``condition`` holds; else raise :class:`TaskCheckFailed`.

    ``check_that(code == 200, "GET /echo answers 200", problem=f"GET /echo answered {code}",
    expected="200", look="Your turn 3: the route_prefix")``
    """
    if condition:
        report_pass(verified)
        return
    raise TaskCheckFailed(problem, expected=expected, look=look)


def check_equal(found: Any, expected: Any, *, what: str, look: str) -> None:
    """Print ``✓ <what> is <found>`` when ``found == expected``; else raise
    :class:`TaskCheckFailed` saying what was found and what was expected.

    ``check_equal(deployment["num_replicas"], 2, what="Echo's num_replicas", look="Your turn 1")``
    """
    if found == expected:
        report_pass(f"{what} is {found!r}")
        return
    raise TaskCheckFailed(f"{what} is {found!r}.", expected=repr(expected), look=look)


@contextlib.contextmanager
def checking(*, expected: str, look: str) -> Iterator[None]:
    """Turn any error inside the block into :class:`TaskCheckFailed` with ``look``.

    For the steps of a check that read the learner's work (a status, a file, a request) and
    fail with an error of their own when the task is not done: the learner then reads what
    was expected and where to look, not a traceback. Failed checks inside pass through.
    """
    try:
        yield
    except CheckFailed:
        raise
    except Exception as err:
        message = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise TaskCheckFailed(
            f"The check could not read your work: {type(err).__name__}"
            + (f": {message}" if message else "")
            + ".",
            expected=expected,
            look=look,
        ) from err
