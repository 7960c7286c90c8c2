"""Lab notebooks: the source with solutions, the student version generated from it.

A lab's *source* notebook (``labs/source/labNN_slug.ipynb``) is a complete, working notebook.
Two kinds of regions in its code cells say what students do not get:

* a **solution region**: the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION``.
  In the student version they become a ``raise NotImplementedError("Task N: <hint>")`` at the
  same indentation. Comment lines that start with ``# HINT:`` inside the region are the hint:
  they become the exception's message, under a ``# YOUR CODE HERE`` line. (The region
  parser is :mod:`helpers.solution_regions`, shared with the lessons' "Your turn" tasks.)
* a **hidden-check region**: the lines between ``### BEGIN HIDDEN CHECKS`` and
  ``### END HIDDEN CHECKS``, only in cells tagged ``hidden-checks``. They are removed (a cell
  left empty is dropped); the grader puts them back before it runs a submission.

Cells tagged ``check`` hold the visible checks a student runs. Cell ids are kept, so the
grader finds every check cell of a submission again, restores its source (a student who
edits a check cannot pass it that way) and re-inserts the hidden ones.

Usage::

    from helpers.labs.notebooks import generate_all, stale_student_versions
    generate_all()                      # write labs/student/ from labs/source/
    stale_student_versions()            # [] when every student version is up to date

or ``python -m helpers.labs generate [--check]``.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from helpers.errors import WorkbookError
from helpers.paths import LABS_DIR
from helpers.solution_regions import (
    BEGIN_SOLUTION,
    CHECK_TAG,
    END_SOLUTION,
    NotebookSourceError,
    SolutionRegion,
    Where,
    blank_regions,
    has_solution,
)

__all__ = [
    "LabSourceError",
    "task_sections",
    "SOURCE_DIR",
    "STUDENT_DIR",
    "LAB_PATTERN",
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "BEGIN_HIDDEN",
    "END_HIDDEN",
    "CHECK_TAG",
    "HIDDEN_TAG",
    "list_lab_sources",
    "lab_id",
    "student_path_for",
    "source_for",
    "strip_solutions",
    "make_student_notebook",
    "render_student",
    "generate_all",
    "stale_student_versions",
    "restore_checks",
    "RestoreReport",
]

SOURCE_DIR = LABS_DIR / "source"
STUDENT_DIR = LABS_DIR / "student"
LAB_PATTERN = "lab[0-9][0-9]_*.ipynb"

BEGIN_HIDDEN = "### BEGIN HIDDEN CHECKS"
END_HIDDEN = "### END HIDDEN CHECKS"
HIDDEN_TAG = "hidden-checks"

_TASK_HEADING = re.compile(r"^##\s+Task\s+(\d+)", re.MULTILINE)


# The labs' name for a malformed source (the region parser is shared with the lessons).
LabSourceError = NotebookSourceError


def list_lab_sources(folder: Path = SOURCE_DIR) -> list[Path]:
    """The lab source notebooks, in order (``lab01_...``, ``lab02_...``)."""
    return sorted(folder.glob(LAB_PATTERN))


def lab_id(path: Path | str) -> str:
    """``lab01`` for ``lab01_first_deployment.ipynb`` (also for a student's copy)."""
    stem = Path(path).stem
    match = re.match(r"(lab\d\d)(_|$)", stem)
    if not match:
        raise WorkbookError(f"{Path(path).name} is not named like a lab (labNN_slug.ipynb).",
                            "keep the lab's file name, e.g. lab01_first_deployment.ipynb.")
    return match.group(1)


def student_path_for(source: Path, student_dir: Path = STUDENT_DIR) -> Path:
    return student_dir / source.name


def source_for(lab: str, folder: Path = SOURCE_DIR) -> Path:
    """The source notebook of lab ``lab`` (``lab03``)."""
    for path in list_lab_sources(folder):
        if lab_id(path) == lab:
            return path
    known = ", ".join(lab_id(p) for p in list_lab_sources(folder))
    raise WorkbookError(f"No lab {lab!r} in {folder}.", f"use one of: {known}.")


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def strip_solutions(text: str, *, task: int | None, where: Where) -> str:
    """The cell's code with every solution region replaced by a hint and a raise."""
    label = f"Task {task}" if task is not None else "This cell"

    def student_lines(region: SolutionRegion) -> list[str]:
        message = f"{label}: {region.hint}" if region.hint else f"{label}: write your solution here."
        return [f"{region.indent}# YOUR CODE HERE ({label.lower() if task is None else label})",
                f"{region.indent}raise NotImplementedError({message!r})"]

    return blank_regions(text, where, student_lines)


def _strip_hidden(text: str, *, where: Where) -> str:
    out: list[str] = []
    inside = False
    begin_line = 0
    for number, line in enumerate(text.splitlines(), start=1):
        marker = line.strip()
        if marker.startswith(BEGIN_HIDDEN):
            if inside:
                raise LabSourceError(f"{where.at(number)}: hidden checks opened twice.",
                                     f"close the region with '{END_HIDDEN}' first.")
            inside, begin_line = True, number
        elif marker.startswith(END_HIDDEN):
            if not inside:
                raise LabSourceError(f"{where.at(number)}: '{END_HIDDEN}' without a BEGIN.",
                                     f"add '{BEGIN_HIDDEN}' where the hidden checks start.")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise LabSourceError(f"{where.at(begin_line)}: the hidden-check region is never closed.",
                             f"add '{END_HIDDEN}' after the hidden checks.")
    return "\n".join(out).strip("\n")


def _check_cell_roles(cell: Any, text: str, where: Where) -> None:
    tags = _tags(cell)
    solution = has_solution(text)
    has_hidden = BEGIN_HIDDEN in text or END_HIDDEN in text
    if cell.get("cell_type") != "code":
        if solution or has_hidden:
            raise LabSourceError(f"{where.at(1)}: regions are only allowed in code cells.",
                                 "move the region into a code cell.")
        return
    if has_hidden and HIDDEN_TAG not in tags:
        raise LabSourceError(f"{where.at(1)}: hidden checks in a cell not tagged {HIDDEN_TAG!r}.",
                             f"tag the cell {HIDDEN_TAG!r} (only hidden checks belong in it).")
    if solution and (CHECK_TAG in tags or HIDDEN_TAG in tags):
        raise LabSourceError(f"{where.at(1)}: a check cell must not contain a solution.",
                             "put the solution in its own cell before the check.")


def task_sections(nb: nbformat.NotebookNode) -> list[tuple[int, int, int]]:
    """(task, first cell, end) of every ``## Task N`` section."""
    out: list[tuple[int, int, int]] = []
    current: tuple[int, int] | None = None
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        text = _source(cell)
        found = _TASK_HEADING.findall(text)
        if found or text.lstrip().startswith("## "):
            if current is not None:
                out.append((current[0], current[1], index))
                current = None
            if found:
                current = (int(found[-1]), index)
    if current is not None:
        out.append((current[0], current[1], len(nb.cells)))
    return out


def make_student_notebook(source: Path) -> nbformat.NotebookNode:
    """The student version of ``source``: solutions replaced, hidden checks removed,
    outputs cleared, cell ids and tags kept."""
    nb = nbformat.read(str(source), as_version=4)
    student = copy.deepcopy(nb)
    student.cells = []
    task_at = {i: task for task, first, end in task_sections(nb) for i in range(first, end)}
    for index, cell in enumerate(nb.cells):
        text = _source(cell)
        where = Where(source.name, index)
        _check_cell_roles(cell, text, where)
        task = task_at.get(index)
        if cell.cell_type == "markdown":
            student.cells.append(copy.deepcopy(cell))
            continue
        new = copy.deepcopy(cell)
        if cell.cell_type == "code":
            text = _strip_hidden(text, where=where)
            if HIDDEN_TAG in _tags(cell) and not text.strip():
                continue  # only hidden checks: the whole cell is the grader's
            text = strip_solutions(text, task=task, where=where)
            new.outputs = []
            new.execution_count = None
        new.source = text
        student.cells.append(new)
    student.metadata["workbook_lab"] = {
        "id": lab_id(source),
        "source": f"labs/source/{source.name}",
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest()[:16],
        "note": "Generated by `python -m helpers.labs generate` from the source; "
                "do not edit the copy in labs/student/ by hand.",
    }
    return student


def render_student(source: Path) -> str:
    """The student version's file content (what ``generate`` writes)."""
    return nbformat.writes(make_student_notebook(source)) + "\n"


def generate_all(source_dir: Path = SOURCE_DIR, student_dir: Path = STUDENT_DIR) -> list[Path]:
    """Write the student version of every lab source; return the paths written."""
    student_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in list_lab_sources(source_dir):
        target = student_path_for(source, student_dir)
        text = render_student(source)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
        written.append(target)
    return written


def stale_student_versions(
    source_dir: Path = SOURCE_DIR, student_dir: Path = STUDENT_DIR
) -> list[str]:
    """What is out of date in ``student_dir``: one line per missing, stale or orphan file."""
    problems = []
    sources = list_lab_sources(source_dir)
    for source in sources:
        target = student_path_for(source, student_dir)
        if not target.exists():
            problems.append(f"{target.name}: missing")
        elif target.read_text() != render_student(source):
            problems.append(f"{target.name}: differs from what {source.name} generates")
    names = {s.name for s in sources}
    for orphan in sorted(student_dir.glob(LAB_PATTERN)):
        if orphan.name not in names:
            problems.append(f"{orphan.name}: has no source in {source_dir}")
    return problems


# --- grading: put the checks back ----------------------------------------------------------


@dataclass
class RestoreReport:
    """What :func:`restore_checks` changed in a submission."""

    restored: list[str]  # check cells whose source the student had changed
    reinserted: list[str]  # check cells missing from the submission (hidden ones, deleted ones)

    @property
    def tampered(self) -> list[str]:
        """Visible check cells the student edited or deleted (hidden ones are always missing)."""
        return self.restored + [c for c in self.reinserted if not c.startswith("hidden:")]


def _is_check_cell(cell: Any) -> bool:
    tags = _tags(cell)
    return CHECK_TAG in tags or HIDDEN_TAG in tags


def restore_checks(
    submission: nbformat.NotebookNode, source: nbformat.NotebookNode
) -> tuple[nbformat.NotebookNode, RestoreReport]:
    """A copy of ``submission`` whose check cells are exactly the source's, hidden ones too.

    Check cells are matched by cell id. An edited check cell gets the source's code back; a
    missing one (every hidden-check cell, or a check the student deleted) is inserted after
    the nearest cell before it in the source that the submission still has.
    """
    out = copy.deepcopy(submission)
    by_id = {cell.get("id"): i for i, cell in enumerate(out.cells)}
    restored: list[str] = []
    reinserted: list[str] = []
    previous_id: str | None = None
    for cell in source.cells:
        cid = cell.get("id")
        if _is_check_cell(cell):
            label = ("hidden:" if HIDDEN_TAG in _tags(cell) else "") + str(cid)
            if cid in by_id:
                target = out.cells[by_id[cid]]
                if _source(target) != _source(cell):
                    restored.append(label)
                target.source = _source(cell)
                target.cell_type = "code"
                target.metadata["tags"] = _tags(cell)
            else:
                new = copy.deepcopy(cell)
                new.outputs, new.execution_count = [], None
                position = by_id[previous_id] + 1 if previous_id in by_id else len(out.cells)
                out.cells.insert(position, new)
                reinserted.append(label)
                by_id = {c.get("id"): i for i, c in enumerate(out.cells)}
        if cid in by_id:
            previous_id = cid
    return out, RestoreReport(restored, reinserted)

