"""The proof that every check of a lab (visible and hidden) tells its task not done from done.

:func:`build_lab_proof` turns a lab's source into a *proof notebook* that runs in one kernel,
top to bottom, like the solution. At each ``## Task N`` section, before the section itself:

1. the section's code cells with their solution regions left out (the task not done; the
   lines around a region, such as ``handle_reply = None``, still run);
2. every check of the section, visible and hidden, run by :func:`expect_lab_checks_to_fail`:
   each of the task's checks must run and fail (:class:`~helpers.labs.checks.LabCheckFailed`,
   with feedback). A check that passes, one that never runs, or one that dies of another error
   (a ``NameError``...) fails the proof.

Then the section runs as the source has it (the answer), checks included: they must pass.
When task N's checks run on its blank, tasks 1 to N-1 have been answered and the later ones
have not run yet, so the proof shows, task by task, that each check fails when only its own
task is undone (a hidden check of task 3 that only looks at task 1's work passes there, and
the proof says so). The checks' results on the blank go to a file of their own, never to
``WORKBOOK_LAB_RESULTS`` (where the tests record the answers' results).

The classroom test runs these proofs in place of the plain solutions (``python -m
helpers.runner --labs --prepare-only DIR`` writes them).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import nbformat

from helpers.errors import WorkbookError
from helpers.labs.checks import RESULTS_ENV, LabCheckFailed, checks_for
from helpers.labs.notebooks import (
    BEGIN_HIDDEN,
    CHECK_TAG,
    END_HIDDEN,
    HIDDEN_TAG,
    _source,
    _tags,
    lab_id,
    task_sections,
)
from helpers.lessons.proof import _namespace, _run
from helpers.solution_regions import SolutionRegion, Where, split_regions

__all__ = ["LabProofFailed", "build_lab_proof", "write_lab_proof", "expect_lab_checks_to_fail"]


#: Checks known to pass while only their own task is undone, and why; the proof names them
#: on every run and fails when one of them starts failing (then take it off this list).
KNOWN_WEAK: dict[str, str] = {
    "lab03_scaled_with_the_load": (
        "registered for task 2 (computing the p90), it reads the load that task 1's "
        "autoscaling config served: the load cell belongs in task 1's section"
    ),
}


class LabProofFailed(WorkbookError):
    """A lab's check does not do its job: it passes, or errors, while its task is undone."""


def _blank(text: str, where: Where, task: int) -> str:
    """The cell as it runs for a student who has not started the task: in the student version
    a region is a ``raise NotImplementedError``, so a region at the top level ends the cell
    there (the lines after it never run); one inside a function or a block is a ``pass``."""
    out: list[str] = []
    for segment in split_regions(text, where):
        if not isinstance(segment, SolutionRegion):
            out.append(segment)
            continue
        out.append(f"{segment.indent}pass  # Task {task} left undone (the proof)")
        if not segment.indent:
            break
    return "\n".join(out)


def _unhide(text: str) -> str:
    return "\n".join(
        line
        for line in text.splitlines()
        if not line.strip().startswith((BEGIN_HIDDEN, END_HIDDEN))
    )


def build_lab_proof(source: Path) -> nbformat.NotebookNode:
    """The proof notebook of the lab at ``source`` (see this module's docstring)."""
    nb = nbformat.read(str(source), as_version=4)
    lab = lab_id(source)
    sections = {first: (task, end) for task, first, end in task_sections(nb)}
    if not sections:
        raise WorkbookError(
            f"{source.name} has no '## Task N' section: nothing to prove.", "run the lab itself."
        )
    proof = copy.deepcopy(nb)
    proof.cells = []
    index = 0
    while index < len(nb.cells):
        if index not in sections:
            proof.cells.append(copy.deepcopy(nb.cells[index]))
            index += 1
            continue
        task, end = sections[index]
        checks: list[str] = []
        blanks: list[nbformat.NotebookNode] = []
        for i in range(index, end):
            cell = nb.cells[i]
            if cell.cell_type != "code":
                continue
            if CHECK_TAG in _tags(cell) or HIDDEN_TAG in _tags(cell):
                checks.append(_unhide(_source(cell)))
                continue
            blank = copy.deepcopy(cell)
            blank.source = _blank(_source(cell), Where(source.name, i), task)
            blank.outputs, blank.execution_count = [], None
            blank.id = f"{(cell.get('id') or 'cell')[:48]}-blank"
            blank.metadata["tags"] = ["proof"]
            blanks.append(blank)
        note = nbformat.v4.new_markdown_cell(
            f"**Proof of Task {task}**: the task undone; each of its checks must fail."
        )
        note.id = f"proof-task-{task}-note"
        step = nbformat.v4.new_code_cell(
            "from helpers.labs.proof import expect_lab_checks_to_fail\n\n"
            f"expect_lab_checks_to_fail({task}, lab={lab!r}, checks={checks!r})"
        )
        step.id = f"proof-task-{task}-fails"
        step.metadata["tags"] = ["proof"]
        proof.cells += [note, *blanks, step]
        proof.cells += [copy.deepcopy(c) for c in nb.cells[index:end]]
        index = end
    proof.metadata["workbook_proof"] = {
        "lab": lab,
        "note": "Generated by helpers.labs.proof from the lab's source (for CI).",
    }
    return proof


def write_lab_proof(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build_lab_proof(source), str(target))
    return target


def expect_lab_checks_to_fail(
    task: int, *, lab: str, checks: list[str], namespace: dict[str, Any] | None = None
) -> list[str]:
    """Run a task's check cells while the task is undone: every check registered for the task
    must run and fail with feedback. Returns the feedback lines (also printed)."""

    namespace = _namespace() if namespace is None else namespace
    expected = {c.name for c in checks_for(lab) if c.task == task}
    previous = os.environ.get(RESULTS_ENV)
    with tempfile.NamedTemporaryFile("w+", suffix=".jsonl", prefix=f"proof-{lab}-") as results:
        os.environ[RESULTS_ENV] = results.name  # never the grader's file
        try:
            for number, code in enumerate(checks, 1):
                try:
                    _run(code, namespace, f"<check cell {number} of {lab} task {task}>")
                except LabCheckFailed:
                    pass
                except Exception as err:
                    raise LabProofFailed(
                        f"{lab} task {task}: while the task is undone, a check cell raises "
                        f"{type(err).__name__}: {str(err)[:300]} instead of failing with feedback.",
                        "make the check read the student's work inside its problem handling, "
                        "so that a missing deliverable becomes feedback.",
                    ) from err
        finally:
            if previous is None:
                os.environ.pop(RESULTS_ENV, None)
            else:
                os.environ[RESULTS_ENV] = previous
        recorded = [
            json.loads(line) for line in Path(results.name).read_text().splitlines() if line.strip()
        ]
    passed = sorted({r["check"] for r in recorded if r["passed"]})
    ran = {r["check"] for r in recorded}
    weak = [name for name in passed if name in KNOWN_WEAK]
    passed = [name for name in passed if name not in KNOWN_WEAK]
    fixed = sorted((expected & set(KNOWN_WEAK)) - set(weak))
    if fixed:
        raise LabProofFailed(
            f"{lab} task {task}: {fixed} now fail while the task is undone, as they should.",
            "take them off helpers.labs.proof.KNOWN_WEAK.",
        )
    for name in weak:
        print(f"! known weak check {name} passes while task {task} is undone: {KNOWN_WEAK[name]}")
    if passed:
        raise LabProofFailed(
            f"{lab} task {task}: the check(s) {passed} PASS while the task is undone (tasks "
            f"before it answered), so they cannot tell a student that it is not done.",
            "make each check read its own task's deliverable and the cluster state it changes.",
        )
    if expected - ran:
        raise LabProofFailed(
            f"{lab} task {task}: the check(s) {sorted(expected - ran)} registered for this task "
            "never ran in its check cells.",
            "call them in the task's check or hidden-check cell.",
        )
    lines = [
        f"{r['check']}: {r['feedback'].splitlines()[0] if r['feedback'] else ''}" for r in recorded
    ]
    print(f"✓ Proof, {lab} task {task}: while it is undone, its {len(ran)} check(s) fail:")
    for line in lines:
        print("    " + line[:300])
    return lines
