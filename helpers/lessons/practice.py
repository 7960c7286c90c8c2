"""Practice versions of the lessons, and revealing an answer.

For every lesson with "Your turn" tasks (see :mod:`helpers.lessons.tasks`),
``notebooks/practice/NN_slug.ipynb`` is generated from ``notebooks/NN_slug.ipynb``: each
solution region becomes::

    # YOUR CODE HERE (Your turn 2)
    # HINT: <the region's hint lines>
    # Stuck? reveal("02a", 2) in a new cell prints the answer.

(plus a ``pass`` where Python needs a statement there), outputs are cleared, and the first
cell says it is the practice version. Everything else is the lesson as it is. The code around
a region must keep the cell runnable without it, so that the check after it can say what is
missing: a region whose blank is not valid Python is an error naming the cell.

:func:`reveal` prints a task's answer from the lesson's source, so a learner who is stuck can
go on. Practice versions are never edited by hand: ``python -m helpers.lessons generate``
writes them, ``--check`` fails (naming each file) when one is missing, stale or orphaned.

Usage::

    from helpers.lessons import reveal
    reveal("02a", 3)                    # the answer to Your turn 3 of lesson 02a

    from helpers.lessons.practice import generate_all, stale_practice_versions
    generate_all()                      # write notebooks/practice/
    stale_practice_versions()           # [] when every practice version is up to date
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import nbformat

from helpers.errors import WorkbookError
from helpers.lessons.tasks import (
    cell_source,
    find_lesson,
    lesson_id,
    lesson_tasks,
    python_of_cell,
    read_lesson,
    syntax_error,
)
from helpers.paths import NOTEBOOKS_DIR, REPO_ROOT
from helpers.profiles import list_notebooks
from helpers.solution_regions import (
    NotebookSourceError,
    SolutionRegion,
    Where,
    answer_code,
    blank_regions,
)

__all__ = [
    "PRACTICE_DIR",
    "practice_cell",
    "make_practice_notebook",
    "render_practice",
    "generate_all",
    "stale_practice_versions",
    "answer_text",
    "reveal",
]

PRACTICE_DIR = NOTEBOOKS_DIR / "practice"
METADATA_KEY = "workbook_practice"


def _reveal_call(lesson: str, task: int) -> str:
    return f'reveal("{lesson}", {task})'


def practice_cell(text: str, where: Where, *, lesson: str, task: int) -> str:
    """The practice version of a task cell: each region blanked to YOUR CODE HERE and hint."""

    def blank(region: SolutionRegion, *, statement: bool = False) -> list[str]:
        lines = [f"{region.indent}# YOUR CODE HERE (Your turn {task})"]
        lines += [region.indent + line.strip() for line in region.hint_lines]
        lines.append(
            f"{region.indent}# Stuck? {_reveal_call(lesson, task)} in a new cell prints the answer."
        )
        return lines + ([f"{region.indent}pass"] if statement else [])

    practice = blank_regions(text, where, blank)
    if syntax_error(text) is not None or syntax_error(practice) is None:
        return practice
    with_pass = blank_regions(text, where, lambda region: blank(region, statement=True))
    if syntax_error(with_pass) is None:
        return with_pass
    err = syntax_error(practice)
    assert err is not None
    raise NotebookSourceError(
        f"{where.at(1)}: with its solution regions blanked this cell is not valid Python "
        f"({err.msg}, line {err.lineno} of the practice version).",
        "keep outside the region what the rest of the cell needs (e.g. a first value "
        "`handle = None` before the region), so the practice version runs and the check "
        "after it can say what is missing.",
    )


def _imports_reveal(nb: nbformat.NotebookNode) -> bool:
    for cell in nb.cells:
        if cell.get("cell_type") != "code" or "reveal" not in cell_source(cell):
            continue
        try:
            tree = ast.parse(python_of_cell(cell_source(cell)))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("helpers.lessons")
                and any(alias.name == "reveal" for alias in node.names)
            ):
                return True
    return False


def _shown_path(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else path.name


def _practice_note(source: Path, lesson: str) -> str:
    return (
        "\n\n> **Practice version** of `" + _shown_path(source) + "`, generated from it. Each "
        '"Your turn" cell is left for you to write (`# YOUR CODE HERE`, with a hint), and the '
        "check right after it says what is still missing. Stuck? "
        f"`{_reveal_call(lesson, 1)}` prints the answer to Your turn 1. This file is "
        "rewritten when the lesson changes: to keep your work, save a copy in "
        "`notebooks/practice/mine/` (File > Save Notebook As)."
    )


def make_practice_notebook(source: Path) -> nbformat.NotebookNode | None:
    """The practice version of the lesson at ``source``; None when it has no tasks."""
    nb = read_lesson(source)
    tasks = lesson_tasks(nb, source.name)
    if not tasks:
        return None
    if not _imports_reveal(nb):
        raise NotebookSourceError(
            f"{source.name}: it has 'Your turn' tasks but never imports reveal.",
            "add `from helpers.lessons import reveal` to its setup cell: the practice "
            "version tells learners to call it.",
        )
    lesson = lesson_id(source)
    practice = copy.deepcopy(nb)
    for task in tasks:
        for index in task.cells:
            cell = practice.cells[index]
            cell.source = practice_cell(
                cell_source(cell), Where(source.name, index), lesson=lesson, task=task.number
            )
    for cell in practice.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    first = next(c for c in practice.cells if c.cell_type == "markdown")
    first.source = cell_source(first).rstrip("\n") + _practice_note(source, lesson)
    practice.metadata[METADATA_KEY] = {
        "lesson": lesson,
        "source": _shown_path(source),
        "tasks": len(tasks),
        "note": "Generated by `python -m helpers.lessons generate` from the lesson; "
        "do not edit it by hand.",
    }
    return practice


def render_practice(source: Path) -> str | None:
    """The practice version's file content (what ``generate`` writes); None without tasks."""
    practice = make_practice_notebook(source)
    return None if practice is None else nbformat.writes(practice) + "\n"


def _lessons(folder: Path) -> list[Path]:
    return list_notebooks(folder)


def _is_generated(path: Path) -> bool:
    try:
        return METADATA_KEY in nbformat.read(str(path), as_version=4).metadata
    except Exception:  # noqa: BLE001 - not a notebook we made
        return False


def generate_all(
    lessons_dir: Path = NOTEBOOKS_DIR, practice_dir: Path = PRACTICE_DIR
) -> tuple[list[Path], list[Path]]:
    """Write the practice version of every lesson with tasks.

    Returns (written, removed): the practice files now up to date, and the generated ones
    removed because their lesson is gone or has no task any more.
    """
    written: list[Path] = []
    for source in _lessons(lessons_dir):
        text = render_practice(source)
        if text is None:
            continue
        target = practice_dir / source.name
        practice_dir.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
        written.append(target)
    removed = [p for p in _lessons(practice_dir) if p not in written and _is_generated(p)]
    for path in removed:
        path.unlink()
    return written, removed


def stale_practice_versions(
    lessons_dir: Path = NOTEBOOKS_DIR, practice_dir: Path = PRACTICE_DIR
) -> list[str]:
    """What is out of date in ``practice_dir``: one line per missing, stale or orphan file."""
    problems: list[str] = []
    expected: set[str] = set()
    for source in _lessons(lessons_dir):
        text = render_practice(source)
        if text is None:
            continue
        expected.add(source.name)
        target = practice_dir / source.name
        if not target.exists():
            problems.append(f"{target.name}: missing")
        elif target.read_text() != text:
            problems.append(f"{target.name}: differs from what {source.name} generates")
    for path in _lessons(practice_dir):
        if path.name not in expected:
            problems.append(f"{path.name}: has no lesson with 'Your turn' tasks in {lessons_dir}")
    return problems


def answer_text(lesson: str | int | Path, task: int, *, folder: Path = NOTEBOOKS_DIR) -> str:
    """The answer to ``task`` of ``lesson``: its cell(s) as the complete lesson has them."""
    source = find_lesson(lesson, folder)
    nb = read_lesson(source)
    tasks = lesson_tasks(nb, source.name)
    if not tasks:
        raise WorkbookError(
            f"{source.stem} has no 'Your turn' task.",
            "give a lesson that has tasks (python -m helpers.lessons list).",
        )
    if not 1 <= task <= len(tasks):
        raise WorkbookError(
            f"{source.stem} has no Your turn {task}.", f"give a number from 1 to {len(tasks)}."
        )
    found = tasks[task - 1]
    cells = [answer_code(cell_source(nb.cells[i]), Where(source.name, i)) for i in found.cells]
    what = "your cell with it" if len(cells) == 1 else f"your {len(cells)} cells with these"
    head = (
        f"Your turn {task} of {source.stem}, the answer. Replace {what}, run it, "
        "then run the check again."
    )
    return "\n\n".join(
        [head]
        + [
            f"# ---- cell {i + 1} of {len(cells)} ----\n{code}" if len(cells) > 1 else code
            for i, code in enumerate(cells)
        ]
    )


def reveal(lesson: str | int, task: int) -> None:
    """Print the answer to Your turn ``task`` of ``lesson`` (``"02a"``, ``3`` or a path).

    ``reveal("02a", 3)`` in a cell of the practice version of lesson 02a.
    """
    print(answer_text(lesson, task))
