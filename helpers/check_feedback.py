"""What every check in the workbook says, in labs and lessons alike.

A check that passes prints ``✓`` and what it verified. A check that fails raises a
:class:`CheckFailed` (an ``AssertionError``, so nbval and papermill stop on it) whose message
says what is wrong, what was expected, and ends with ``Look at: <where>``.

* :mod:`helpers.labs.checks` - the labs' registered checks (``LabCheckFailed``);
* :mod:`helpers.lessons.checks` - the lessons' "Your turn" checks (``TaskCheckFailed``).

Usage::

    from helpers.check_feedback import CheckProblem, feedback, report_pass
    raise CheckProblem("Echo runs 1 replica.", "the num_replicas option", expected="2")
    report_pass("Echo runs 2 replicas")        # prints: ✓ Echo runs 2 replicas
"""

from __future__ import annotations

__all__ = ["PASS_MARK", "CheckFailed", "CheckProblem", "feedback", "report_pass"]

PASS_MARK = "✓"


def feedback(problem: str, look: str, expected: str = "") -> str:
    """The text of a failed check: the problem, ``Expected: ...`` (if given), ``Look at: ...``."""
    lines = [problem]
    if expected:
        lines.append(f"Expected: {expected}")
    lines.append(f"Look at: {look}")
    return "\n".join(lines)


def report_pass(verified: str) -> None:
    """Print the line of a check that passed: ``✓`` and what it verified."""
    print(f"{PASS_MARK} {verified}")


class CheckFailed(AssertionError):
    """A check found the work not done; the message is its feedback (see :func:`feedback`)."""


class CheckProblem(Exception):
    """Raised inside a check: what is wrong, where the learner should look (and what was
    expected). The check that catches it turns it into a :class:`CheckFailed`."""

    def __init__(self, problem: str, look: str, *, expected: str = "") -> None:
        self.problem, self.look, self.expected = problem, look, expected
        super().__init__(feedback(problem, look, expected))
