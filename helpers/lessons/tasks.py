"""The "Your turn" tasks of a lesson, read from its source notebook.

In a lesson (``notebooks/NN_slug.ipynb``) a task is:

1. a markdown cell that says ``Your turn N`` (usually a heading, ``### Your turn 2: ...``),
   with what to do;
2. one or more code cells (markdown between them is fine) with solution regions, the lines
   between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; every region has at least one
   ``# HINT:`` line. The complete lesson runs them as they are: they are the answer;
3. after them, a code cell tagged ``check``: it verifies the task and prints ``✓ ...`` or
   raises :class:`~helpers.lessons.checks.TaskCheckFailed` (see :mod:`helpers.lessons.checks`).
   Code cells without regions may sit between the task's cells and its check (a cell that
   deploys what the task wrote): they run with the task, after its blank and after its answer
   in the proof, and stay as they are in the practice version.

Tasks are numbered 1, 2, ... in the order they appear. :func:`lesson_tasks` finds them and
raises :class:`~helpers.solution_regions.NotebookSourceError`, naming the cell and saying what
to change, when the lesson breaks one of these rules.

Usage::

    from helpers.lessons.tasks import lesson_tasks, read_lesson
    for task in lesson_tasks(read_lesson(path), path.name):
        print(task.number, task.cells, task.check)
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from helpers.errors import WorkbookError
from helpers.paths import NOTEBOOKS_DIR
from helpers.profiles import list_notebooks
from helpers.solution_regions import (
    CHECK_TAG,
    NotebookSourceError,
    SolutionRegion,
    Where,
    has_solution,
    split_regions,
)

__all__ = [
    "LessonTask",
    "lesson_tasks",
    "read_lesson",
    "lesson_id",
    "find_lesson",
    "cell_source",
    "cell_tags",
    "python_of_cell",
    "syntax_error",
    "read_tasks",
]

_HIDDEN_MARKERS = ("### BEGIN HIDDEN CHECKS", "### END HIDDEN CHECKS")


@dataclass(frozen=True)
class LessonTask:
    """A "Your turn" task: its number, the cells with its solution regions, its check cell.

    Cell numbers are 0-based indices into the notebook's cells (as nbformat counts).
    """

    number: int
    cells: tuple[int, ...]
    check: int


def cell_source(cell: Any) -> str:
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def cell_tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def read_lesson(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def lesson_id(path: Path | str) -> str:
    """``02a`` for ``02a_deployments_and_http.ipynb``, ``03b`` for ``03b_updates_and_operations.ipynb``
    (what comes before the first ``_``)."""
    return Path(path).stem.split("_", 1)[0]


def find_lesson(lesson: str | int | Path, folder: Path = NOTEBOOKS_DIR) -> Path:
    """The lesson's source notebook from its id (``"02a"``, ``"03"``, ``3``), its stem, or a path."""

    if isinstance(lesson, Path) or str(lesson).endswith(".ipynb"):
        path = Path(str(lesson))
        if path.exists():
            return path
        raise WorkbookError(f"No notebook at {path}.", "give the path of a lesson's notebook.")
    key = f"{lesson:02d}" if isinstance(lesson, int) else str(lesson)
    every = list_notebooks(folder)
    for path in every:
        if key in (lesson_id(path), path.stem):
            return path
    raise WorkbookError(
        f"No lesson {key!r} in {folder}.",
        "use one of: " + ", ".join(lesson_id(p) for p in every) + ".",
    )


def python_of_cell(text: str) -> str:
    """The Python that IPython runs for a cell (``!cmd`` and ``%%magic`` lines translated)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(text)


def syntax_error(text: str, *, top_level_await: bool = True) -> SyntaxError | None:
    """The SyntaxError IPython would raise running this cell, or None when it compiles."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if top_level_await else 0
    try:
        compile(python_of_cell(text), "<cell>", "exec", flags=flags, dont_inherit=True)
    except SyntaxError as err:
        return err
    return None


def _announces(text: str, number: int) -> bool:
    return re.search(rf"\bYour turn {number}(?!\d)", text) is not None


def _check_regions(cell: Any, text: str, where: Where) -> list[SolutionRegion]:
    if any(marker in text for marker in _HIDDEN_MARKERS):
        raise NotebookSourceError(
            f"{where.at(1)}: hidden checks are for labs.",
            "a lesson's checks are visible: put the check in a code cell "
            f"tagged {CHECK_TAG!r} after the task.",
        )
    if not has_solution(text):
        return []
    if cell.get("cell_type") != "code":
        raise NotebookSourceError(
            f"{where.at(1)}: solution regions are only allowed in code cells.",
            "move the region into a code cell.",
        )
    if CHECK_TAG in cell_tags(cell):
        raise NotebookSourceError(
            f"{where.at(1)}: a check cell must not contain a solution.",
            "put the solution in its own cell before the check.",
        )
    regions = [s for s in split_regions(text, where) if isinstance(s, SolutionRegion)]
    for region in regions:
        if not region.hint:
            raise NotebookSourceError(
                f"{where.at(region.begin_line)}: this solution region has no hint.",
                "add a comment line '# HINT: ...' inside the region: the practice version "
                "shows it in place of the answer.",
            )
    return regions


def lesson_tasks(nb: nbformat.NotebookNode, name: str) -> list[LessonTask]:
    """The lesson's tasks, in order, after checking the rules in this module's docstring."""
    tasks: list[LessonTask] = []
    pending: list[int] = []  # cells with regions since the last check
    announced = ""  # markdown since the last check (or the top)
    for index, cell in enumerate(nb.cells):
        text = cell_source(cell)
        where = Where(name, index)
        regions = _check_regions(cell, text, where)
        number = len(tasks) + 1
        if cell.get("cell_type") != "code":
            announced += "\n" + text
            continue
        if regions:
            if not pending and not _announces(announced, number):
                raise NotebookSourceError(
                    f"{where.at(1)}: Your turn {number} is not announced: no markdown cell "
                    f"between the previous check and this cell says 'Your turn {number}'.",
                    f"add a markdown cell '### Your turn {number}: <what to do>' before it "
                    "(learners reveal an answer by this number).",
                )
            pending.append(index)
        elif CHECK_TAG in cell_tags(cell):
            if not pending:
                raise NotebookSourceError(
                    f"{where.at(1)}: this cell is tagged {CHECK_TAG!r} but follows no "
                    "'Your turn' cell (a code cell with a solution region).",
                    "remove the tag, or put the task's cell(s) right before it.",
                )
            tasks.append(LessonTask(number, tuple(pending), index))
            pending, announced = [], ""
        # A code cell without regions after a task's cell (one that deploys what the learner
        # just wrote, say) runs with the task: the proof runs it after the blank and after
        # the answer. It is not the learner's to write, so it is not in ``task.cells``.
    if pending:
        raise NotebookSourceError(
            f"{Where(name, pending[0]).at(1)}: Your turn {len(tasks) + 1} has no check.",
            f"add a code cell tagged {CHECK_TAG!r} right after the task that verifies it.",
        )
    return tasks


def read_tasks(path: Path) -> list[LessonTask]:
    """:func:`lesson_tasks` of the notebook at ``path``."""
    return lesson_tasks(read_lesson(path), path.name)
