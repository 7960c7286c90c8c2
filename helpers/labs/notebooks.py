"""Lab notebooks: the source with solutions, the student version generated from it.

A lab's *source* notebook (``labs/source/labNN_slug.ipynb``) is a complete, working notebook.
Two kinds of regions in its code cells say what students do not get:

* a **solution region**: the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION``.
  In the student version they become a ``raise NotImplementedError("Task N: <what to do>")``
  at the same indentation, under a ``# YOUR CODE HERE`` line. Comment lines inside the region
  say what the student gets instead of the code (the region parser is
  :mod:`helpers.solution_regions`, shared with the lessons' "Your turn" tasks):

  - ``# HINT: ...`` is *what to do* (the exception's message): never the code;
  - ``# HINT 1: ...``, ``# HINT 2: ...``, ``# HINT 3: ...`` are the task's **tiered hints**,
    which ``lab.hint(N)`` shows one at a time: a nudge, then the API to look at (a link to
    its documentation), then a partial skeleton (several lines of one tier are joined by
    newlines). The student version keeps them in its metadata (``workbook_lab.hints``), where
    :meth:`helpers.labs.session.LabSession.hint` reads them; no tier may contain a line of
    the solution (:func:`hint_spoilers`, tested for every lab);
  - ``# STARTER: ...`` lines are a **skeleton starter**: the student version has them, the
    prefix removed, after the ``raise`` (a class and its decorator with the fields to fill
    marked ``___``, a config file's fields...). The student deletes the ``raise`` and fills
    them in.
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
    HINT_PREFIX,
    NotebookSourceError,
    SolutionRegion,
    Where,
    blank_regions,
    has_solution,
    split_regions,
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
    "HINT_TIER",
    "STARTER_PREFIX",
    "task_hints",
    "hint_spoilers",
    "solution_key_lines",
]

SOURCE_DIR = LABS_DIR / "source"
STUDENT_DIR = LABS_DIR / "student"
LAB_PATTERN = "lab[0-9][0-9]_*.ipynb"

BEGIN_HIDDEN = "### BEGIN HIDDEN CHECKS"
END_HIDDEN = "### END HIDDEN CHECKS"
HIDDEN_TAG = "hidden-checks"

_TASK_HEADING = re.compile(r"^##\s+Task\s+(\d+)", re.MULTILINE)

#: ``# HINT 2: text``: one line of a task's tier-2 hint.
HINT_TIER = re.compile(r"^#\s*HINT\s+(\d+):\s?(.*)$")
#: ``# STARTER: code``: one line of a skeleton starter (the text after one space is kept).
STARTER_PREFIX = "# STARTER:"


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
        raise WorkbookError(
            f"{Path(path).name} is not named like a lab (labNN_slug.ipynb).",
            "keep the lab's file name, e.g. lab01_first_deployment.ipynb.",
        )
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


def _tier_lines(region: SolutionRegion) -> list[tuple[int, str]]:
    """(tier, text) of the region's ``# HINT N:`` lines."""
    out = []
    for line in region.lines:
        match = HINT_TIER.match(line.strip())
        if match:
            out.append((int(match.group(1)), match.group(2).rstrip()))
    return out


def _starter_lines(region: SolutionRegion) -> list[str]:
    """The region's skeleton starter: its ``# STARTER:`` lines, prefix (and one space) removed,
    at the region's indentation."""
    out = []
    for line in region.lines:
        stripped = line.strip()
        if stripped.startswith(STARTER_PREFIX):
            code = line.lstrip()[len(STARTER_PREFIX) :]
            code = code[1:] if code.startswith(" ") else code
            out.append((region.indent + code).rstrip())
    return out


def _is_comment_kind(line: str) -> bool:
    stripped = line.strip()
    return (
        stripped.startswith((HINT_PREFIX, STARTER_PREFIX)) or HINT_TIER.match(stripped) is not None
    )


def strip_solutions(text: str, *, task: int | None, where: Where) -> str:
    """The cell's code with every solution region replaced by what to do, a raise, and the
    region's skeleton starter (if it has one)."""
    label = f"Task {task}" if task is not None else "This cell"

    def student_lines(region: SolutionRegion) -> list[str]:
        message = (
            f"{label}: {region.hint}" if region.hint else f"{label}: write your solution here."
        )
        if task is not None and _tier_lines(region):
            message = (
                message.rstrip(".") + f". Stuck? lab.hint({task}) gives a hint, "
                "each call the next one."
            )
        return [
            f"{region.indent}# YOUR CODE HERE ({label.lower() if task is None else label})",
            f"{region.indent}raise NotImplementedError({message!r})",
            *_starter_lines(region),
        ]

    return blank_regions(text, where, student_lines)


def task_hints(nb: nbformat.NotebookNode, name: str = "notebook") -> dict[int, list[str]]:
    """Every task's tiered hints, in tier order: ``{task: [tier 1, tier 2, ...]}``.

    Tiers must be numbered 1, 2, ... without gaps within a task (a :class:`LabSourceError`
    names the cell otherwise); several lines of one tier are joined by newlines.
    """
    task_at = {i: task for task, first, end in task_sections(nb) for i in range(first, end)}
    tiers: dict[int, dict[int, list[str]]] = {}
    where_of: dict[int, Where] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not has_solution(_source(cell)):
            continue
        where = Where(name, index)
        for segment in split_regions(_source(cell), where):
            if not isinstance(segment, SolutionRegion):
                continue
            found = _tier_lines(segment)
            if not found:
                continue
            task = task_at.get(index)
            if task is None:
                raise LabSourceError(
                    f"{where.at(segment.begin_line)}: tiered hints outside a '## Task N' section.",
                    "move the cell into its task.",
                )
            where_of.setdefault(task, where)
            for tier, line in found:
                tiers.setdefault(task, {}).setdefault(tier, []).append(line)
    out: dict[int, list[str]] = {}
    for task, by_tier in sorted(tiers.items()):
        if sorted(by_tier) != list(range(1, len(by_tier) + 1)):
            raise LabSourceError(
                f"{where_of[task].at(1)}: task {task}'s hints are tiers {sorted(by_tier)}.",
                "number them 1, 2, 3 without gaps.",
            )
        out[task] = ["\n".join(by_tier[t]).strip("\n").rstrip() for t in sorted(by_tier)]
    return out


def _normal(text: str) -> str:
    return re.sub(r"\s+", "", text)


def solution_key_lines(
    nb: nbformat.NotebookNode, task: int, name: str = "notebook", *, min_chars: int = 20
) -> list[str]:
    """The lines of task ``task``'s solution regions that give the answer away: code lines of
    at least ``min_chars`` characters (blanks ignored) that the starter does not already show.
    A hint that contains one of them is a spoiler."""
    task_at = {i: t for t, first, end in task_sections(nb) for i in range(first, end)}
    keys: list[str] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or task_at.get(index) != task:
            continue
        for segment in split_regions(_source(cell), Where(name, index)):
            if not isinstance(segment, SolutionRegion):
                continue
            given = {_normal(line) for line in _starter_lines(segment)}
            for line in segment.lines:
                stripped = line.strip()
                if (
                    not stripped
                    or stripped.startswith("#")
                    or _is_comment_kind(line)
                    or len(_normal(stripped)) < min_chars
                    or _normal(stripped) in given
                ):
                    continue
                keys.append(stripped)
    return keys


def hint_spoilers(nb: nbformat.NotebookNode, name: str = "notebook") -> list[str]:
    """Where a hint gives the answer away: one line per (task, tier or the blank's message)
    that contains a key line of the task's solution (:func:`solution_key_lines`)."""
    problems = []
    messages: dict[int, list[str]] = {}
    task_at = {i: t for t, first, end in task_sections(nb) for i in range(first, end)}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and index in task_at and has_solution(_source(cell)):
            for segment in split_regions(_source(cell), Where(name, index)):
                if isinstance(segment, SolutionRegion) and segment.hint:
                    messages.setdefault(task_at[index], []).append(segment.hint)
    hints = task_hints(nb, name)
    for task in sorted(set(hints) | set(messages)):
        keys = solution_key_lines(nb, task, name)
        shown = [(f"hint {n}", text) for n, text in enumerate(hints.get(task, []), 1)]
        shown += [("what-to-do message", text) for text in messages.get(task, [])]
        for label, text in shown:
            for key in keys:
                if _normal(key) in _normal(text):
                    problems.append(
                        f"{name} task {task}, {label}: contains the solution's line {key!r}"
                    )
    return problems


def _strip_hidden(text: str, *, where: Where) -> str:
    out: list[str] = []
    inside = False
    begin_line = 0
    for number, line in enumerate(text.splitlines(), start=1):
        marker = line.strip()
        if marker.startswith(BEGIN_HIDDEN):
            if inside:
                raise LabSourceError(
                    f"{where.at(number)}: hidden checks opened twice.",
                    f"close the region with '{END_HIDDEN}' first.",
                )
            inside, begin_line = True, number
        elif marker.startswith(END_HIDDEN):
            if not inside:
                raise LabSourceError(
                    f"{where.at(number)}: '{END_HIDDEN}' without a BEGIN.",
                    f"add '{BEGIN_HIDDEN}' where the hidden checks start.",
                )
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise LabSourceError(
            f"{where.at(begin_line)}: the hidden-check region is never closed.",
            f"add '{END_HIDDEN}' after the hidden checks.",
        )
    return "\n".join(out).strip("\n")


def _check_cell_roles(cell: Any, text: str, where: Where) -> None:
    tags = _tags(cell)
    solution = has_solution(text)
    has_hidden = BEGIN_HIDDEN in text or END_HIDDEN in text
    if cell.get("cell_type") != "code":
        if solution or has_hidden:
            raise LabSourceError(
                f"{where.at(1)}: regions are only allowed in code cells.",
                "move the region into a code cell.",
            )
        return
    if has_hidden and HIDDEN_TAG not in tags:
        raise LabSourceError(
            f"{where.at(1)}: hidden checks in a cell not tagged {HIDDEN_TAG!r}.",
            f"tag the cell {HIDDEN_TAG!r} (only hidden checks belong in it).",
        )
    if solution and (CHECK_TAG in tags or HIDDEN_TAG in tags):
        raise LabSourceError(
            f"{where.at(1)}: a check cell must not contain a solution.",
            "put the solution in its own cell before the check.",
        )


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
        "hints": {str(task): tiers for task, tiers in task_hints(nb, source.name).items()},
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
