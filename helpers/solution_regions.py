"""Solution regions in notebook cells: the one parser that the labs and the lessons share.

A *solution region* is the lines of a code cell between ``### BEGIN SOLUTION`` and
``### END SOLUTION``. Comment lines inside it that start with ``# HINT:`` are its hint. The
complete notebook runs the region as it is (the markers are comments); a generated version
for learners replaces each region with something of its own:

* a lab's student version (:mod:`helpers.labs.notebooks`): a ``raise NotImplementedError``
  carrying the hint;
* a lesson's practice version (:mod:`helpers.lessons.practice`): a ``# YOUR CODE HERE`` line,
  the hint as comments, and how to reveal the answer.

A cell tagged ``check`` (:data:`CHECK_TAG`) holds the check a learner runs after a task, in
labs and lessons alike. A malformed region is a :class:`NotebookSourceError` that names the
notebook, the cell (0-based, as nbformat counts) and the line.

Usage::

    from helpers.solution_regions import Where, blank_regions
    blank = blank_regions(code, Where("lab01_first_deployment.ipynb", 5),
                          lambda region: [region.indent + "pass  # your code here"])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers.errors import WorkbookError

__all__ = [
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "HINT_PREFIX",
    "CHECK_TAG",
    "NotebookSourceError",
    "Where",
    "SolutionRegion",
    "has_solution",
    "split_regions",
    "blank_regions",
    "answer_code",
    "check_source_folder",
    "report_stale",
]

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
HINT_PREFIX = "# HINT:"
CHECK_TAG = "check"


class NotebookSourceError(WorkbookError):
    """A source notebook (a lab's or a lesson's) is malformed; the message names the cell."""


@dataclass(frozen=True)
class Where:
    """A cell of a notebook, for messages: ``Where("02_x.ipynb", 14).at(3)``."""

    notebook: str
    cell: int

    def at(self, line: int) -> str:
        return f"{self.notebook}, cell {self.cell}, line {line}"


@dataclass(frozen=True)
class SolutionRegion:
    """One region: its indentation (the BEGIN marker's), its lines and where it begins."""

    indent: str
    lines: tuple[str, ...]  # between the markers, as written
    begin_line: int  # 1-based line of the BEGIN marker in its cell

    @property
    def hint_lines(self) -> list[str]:
        """The region's ``# HINT:`` lines, as written (indentation included)."""
        return [line for line in self.lines if line.strip().startswith(HINT_PREFIX)]

    @property
    def hint(self) -> str:
        """The hint as one sentence: the text of every ``# HINT:`` line, joined."""
        parts = [line.strip()[len(HINT_PREFIX) :].strip() for line in self.hint_lines]
        return " ".join(part for part in parts if part)

    @property
    def answer_lines(self) -> list[str]:
        """The region's code: its lines without the hint."""
        return [line for line in self.lines if not line.strip().startswith(HINT_PREFIX)]


Segment = str | SolutionRegion


def has_solution(text: str) -> bool:
    """Whether a line of ``text`` (a cell's source) is a solution marker, paired or not."""
    return any(
        line.strip().startswith((BEGIN_SOLUTION, END_SOLUTION)) for line in text.splitlines()
    )


def split_regions(text: str, where: Where) -> list[Segment]:
    """The cell's lines, each region gathered into one :class:`SolutionRegion`.

    Raises :class:`NotebookSourceError` (naming ``where`` and the line) for a region opened
    inside another, an END without a BEGIN, or a region never closed.
    """
    out: list[Segment] = []
    region: list[str] | None = None
    indent = ""
    begin_line = 0
    for number, line in enumerate(text.splitlines(), start=1):
        marker = line.strip()
        if marker.startswith(BEGIN_SOLUTION):
            if region is not None:
                raise NotebookSourceError(
                    f"{where.at(number)}: a solution region starts inside another one "
                    f"(opened on line {begin_line}).",
                    f"close the first region with '{END_SOLUTION}' before opening the next.",
                )
            region, indent, begin_line = [], line[: len(line) - len(line.lstrip())], number
        elif marker.startswith(END_SOLUTION):
            if region is None:
                raise NotebookSourceError(
                    f"{where.at(number)}: '{END_SOLUTION}' without a BEGIN.",
                    f"add '{BEGIN_SOLUTION}' where the solution starts.",
                )
            out.append(SolutionRegion(indent, tuple(region), begin_line))
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    if region is not None:
        raise NotebookSourceError(
            f"{where.at(begin_line)}: the solution region is never closed.",
            f"add '{END_SOLUTION}' after the solution.",
        )
    return out


def blank_regions(text: str, where: Where, replace: Callable[[SolutionRegion], list[str]]) -> str:
    """The cell's code with each region replaced by the lines ``replace(region)`` returns."""
    out: list[str] = []
    for segment in split_regions(text, where):
        out.extend(replace(segment) if isinstance(segment, SolutionRegion) else [segment])
    return "\n".join(out)


def answer_code(text: str, where: Where) -> str:
    """The cell's code as the answer reads: the markers and the hint lines removed."""
    return blank_regions(text, where, lambda region: region.answer_lines)


def check_source_folder(
    folder: Path, sources: list[Path], *, option: str, what: str, default: Path
) -> None:
    """The labs' and lessons' CLIs: a missing folder (``option`` names the flag), or one with
    no ``sources`` in it, is a :class:`WorkbookError`, never "up to date"."""
    if not folder.is_dir():
        raise WorkbookError(
            f"{option} {folder} is not a folder.",
            f"check the path (the {what} are in {default}; leave {option} out to use it).",
        )
    if not sources:
        raise WorkbookError(
            f"{option} {folder} holds no {what}.",
            f"give the folder of the {what}, {default.name}/.",
        )


def report_stale(problems: list[str], *, what: str, command: str, folder: Path) -> int:
    """``generate --check`` of labs and lessons: print ``problems`` (stale, missing, orphan
    generated files) and the command that fixes them; 1 when there are any, else 0."""
    import sys

    if problems:
        print(f"The {what} are out of date:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        print(
            f"Fix: run `{command}` and commit {folder.name}/ (never edit those files by hand).",
            file=sys.stderr,
        )
        return 1
    print(f"{what} up to date ({folder})")
    return 0
