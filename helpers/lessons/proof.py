"""The proof that every "Your turn" check tells a task not done from a task done.

:func:`build_proof` turns a lesson with tasks into a *proof notebook* that runs in one kernel,
top to bottom, like the lesson. At each task, in place of the task's cells and its check:

1. the task's cells as the practice version has them (the regions blanked), with the cells
   between them and the check as they are (see :mod:`helpers.lessons.tasks`);
2. the check, run by :func:`expect_check_to_fail`: it must fail with a check's feedback
   (:class:`~helpers.check_feedback.CheckFailed`: what is wrong, what was expected, where to
   look). The feedback is printed (and recorded, see :data:`RESULTS_ENV`). A check that
   passes, or that fails with another error (a ``NameError``...), fails the proof;
3. the task's cells as the lesson has them (the answer);
4. the check again, run by :func:`expect_check_to_pass`: it must pass.

Every other cell runs once, as in the lesson (golden outputs kept for nbval). A bare
``assert`` in a check is not feedback: the proof wants the checks of
:mod:`helpers.lessons.checks`. When task N's check runs on its blank, tasks
1 to N-1 have been answered and the later ones have not run yet, so the proof shows, task
by task, that each check fails when only its own task is left blank. It costs the lesson's
run plus one more run of each task's cells and check.

CI runs the proof notebook in place of the lesson: ``python -m helpers.runner
--prepare-only DIR`` writes it (parameterized) for every lesson with tasks, and
scripts/test.sh runs DIR under nbval.

Usage::

    python -m helpers.lessons proof 02a -o build/proof/02a_deployments_and_http.ipynb

    from helpers.lessons.proof import build_proof
    nb = build_proof(Path("notebooks/02a_deployments_and_http.ipynb"))
"""

from __future__ import annotations

import ast
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import nbformat

from helpers.check_feedback import CheckFailed, report_pass
from helpers.errors import WorkbookError
from helpers.lessons.practice import practice_cell
from helpers.lessons.tasks import (
    LessonTask,
    cell_source,
    lesson_id,
    lesson_tasks,
    python_of_cell,
    read_lesson,
    syntax_error,
)
from helpers.solution_regions import NotebookSourceError, Where

__all__ = [
    "RESULTS_ENV",
    "ProofFailed",
    "build_proof",
    "write_proof",
    "expect_check_to_fail",
    "expect_check_to_pass",
]

#: When set, each proof step appends one JSON line to this file: lesson, task, step
#: ("blank" or "answer"), whether the check passed, its feedback, and the seconds the check
#: took (a blank's check that waits out a long timeout is time every CI run pays).
RESULTS_ENV = "WORKBOOK_PROOF_RESULTS"


class ProofFailed(WorkbookError):
    """A "Your turn" check does not do its job: it passes on the blank, or fails the answer."""


# --- building the proof notebook -------------------------------------------------------------


def _literal(code: str) -> str:
    """``code`` as a Python string literal a reader can read (a raw triple-quoted one if it
    round-trips, else ``repr``)."""
    if "'''" not in code and not code.endswith("\\"):
        candidate = "r'''\n" + code + "\n'''"
        try:
            if ast.literal_eval(candidate) == "\n" + code + "\n":
                return candidate
        except (SyntaxError, ValueError):
            pass
    return repr(code)


def _cell_id(base: str | None, suffix: str) -> str:
    return f"{(base or 'cell')[:48]}-{suffix}"


def _step_cell(
    function: str,
    task: LessonTask,
    lesson: str,
    check: str,
    cid: str,
) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(
        f"from helpers.lessons.proof import {function}\n\n"
        f"{function}({task.number}, lesson={lesson!r}, check={_literal(check)})"
    )
    cell.id = cid
    cell.metadata["tags"] = ["proof"]
    return cell


def _note(text: str, cid: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(text)
    cell.id = cid
    return cell


def build_proof(source: Path) -> nbformat.NotebookNode:
    """The proof notebook of the lesson at ``source`` (see this module's docstring)."""
    nb = read_lesson(source)
    tasks = lesson_tasks(nb, source.name)
    if not tasks:
        raise WorkbookError(
            f"{source.name} has no 'Your turn' task: there is nothing to prove.",
            "run the lesson itself; a proof is built for lessons with tasks.",
        )
    lesson, short = source.stem, lesson_id(source)
    starts = {task.cells[0]: task for task in tasks}
    proof = copy.deepcopy(nb)
    proof.cells = []
    index = 0
    while index < len(nb.cells):
        task = starts.get(index)
        if task is None:
            proof.cells.append(copy.deepcopy(nb.cells[index]))
            index += 1
            continue
        check_cell = nb.cells[task.check]
        check = cell_source(check_cell)
        err = syntax_error(check, top_level_await=False)
        if err is not None:
            raise NotebookSourceError(
                f"{Where(source.name, task.check).at(err.lineno or 1)}: the proof cannot run "
                f"this check as plain code ({err.msg}).",
                "write the check as synchronous Python (no top-level await); "
                "shell lines (!cmd) are fine.",
            )
        n = task.number
        proof.cells.append(
            _note(
                f"**Proof of Your turn {n}**, step 1 of 2: the task left blank, as in the practice "
                "version. Its check must fail, with feedback.",
                _cell_id(check_cell.get("id"), "p1"),
            )
        )
        for i in range(task.cells[0], task.check):  # the cells that run with the task too
            blank = copy.deepcopy(nb.cells[i])
            if i in task.cells:
                blank.source = practice_cell(
                    cell_source(blank), Where(source.name, i), lesson=short, task=n
                )
            blank.id = _cell_id(blank.get("id"), "blank")
            if blank.cell_type == "code":
                blank.outputs, blank.execution_count = [], None
            proof.cells.append(blank)
        proof.cells.append(
            _step_cell(
                "expect_check_to_fail", task, lesson, check, _cell_id(check_cell.get("id"), "fails")
            )
        )
        proof.cells.append(
            _note(
                f"**Proof of Your turn {n}**, step 2 of 2: the answer. Its check must pass.",
                _cell_id(check_cell.get("id"), "p2"),
            )
        )
        proof.cells += [copy.deepcopy(c) for c in nb.cells[task.cells[0] : task.check]]
        passes = _step_cell(
            "expect_check_to_pass", task, lesson, check, _cell_id(check_cell.get("id"), "passes")
        )
        passes.metadata["tags"] = ["proof", *check_cell.get("metadata", {}).get("tags", [])]
        proof.cells.append(passes)
        index = task.check + 1
    proof.metadata["workbook_proof"] = {
        "lesson": lesson,
        "tasks": len(tasks),
        "note": "Generated by helpers.lessons.proof from the lesson (for CI); not for learners.",
    }
    return proof


def write_proof(source: Path, target: Path) -> Path:
    """Write the proof notebook of ``source`` to ``target``; return ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build_proof(source), str(target))
    return target


# --- running a check inside the proof ---------------------------------------------------------


def _namespace() -> dict[str, Any]:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - the workbook's environment has IPython
        get_ipython = None
    shell = get_ipython() if get_ipython else None
    return shell.user_ns if shell is not None else vars(sys.modules["__main__"])


def _show(value: Any) -> None:
    if value is None:
        return
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover
        print(repr(value))
        return
    if get_ipython() is not None:
        display(value)
    else:
        print(repr(value))


def _run(code: str, namespace: dict[str, Any], name: str) -> None:
    """Run a cell's code in ``namespace`` as IPython would (its last expression shown)."""
    tree = ast.parse(python_of_cell(code), filename=name)
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr):
        tree.body.pop()
    else:
        last = None
    exec(compile(tree, name, "exec"), namespace)  # noqa: S102 - the lesson's own check cell
    if last is not None:
        shown = compile(ast.Expression(last.value), name, "eval")
        _show(eval(shown, namespace))  # noqa: S307 - the check cell's last expression


def _record(lesson: str, task: int, step: str, passed: bool, message: str, started: float) -> None:
    target = os.environ.get(RESULTS_ENV)
    if target:
        with open(target, "a") as handle:
            handle.write(
                json.dumps(
                    {
                        "lesson": lesson,
                        "task": task,
                        "step": step,
                        "passed": passed,
                        "feedback": message,
                        "seconds": round(time.monotonic() - started, 1),
                    }
                )
                + "\n"
            )


def _where(task: int, lesson: str) -> str:
    return f"Your turn {task}" + (f" of {lesson}" if lesson else "")


def expect_check_to_fail(
    task: int, *, check: str, lesson: str = "", namespace: dict[str, Any] | None = None
) -> str:
    """Run a task's check while the task is blank: it must fail with feedback.

    Returns the feedback (also printed, and recorded when :data:`RESULTS_ENV` is set).
    Raises :class:`ProofFailed` when the check passes, or fails with another error.
    """
    namespace = _namespace() if namespace is None else namespace
    where = _where(task, lesson)
    started = time.monotonic()
    try:
        _run(check, namespace, f"<check of {where}>")
    except CheckFailed as failure:
        message = str(failure)
        _record(lesson, task, "blank", False, message, started)
        report_pass(
            f"Proof, {where}: while the task is blank its check fails, telling the "
            "learner:\n    " + message.replace("\n", "\n    ")
        )
        return message
    except Exception as err:
        _record(lesson, task, "blank", False, f"{type(err).__name__}: {err}", started)
        raise ProofFailed(
            f"{where}: while the task is left blank, its check raises {type(err).__name__}: "
            f"{str(err)[:300]} instead of failing with feedback (what is wrong, what was "
            "expected, where to look).",
            "make the blank leave every name the check reads defined (give it a first value "
            "before the solution region, e.g. `handle = None`), or read the learner's work "
            "inside `with checking(expected=..., look=...):` so an error becomes feedback.",
        ) from err
    _record(lesson, task, "blank", True, "", started)
    raise ProofFailed(
        f"{where}: its check PASSES while the task is left blank (as in the practice version), "
        "so it cannot tell a learner that the task is not done.",
        "make the check verify what the task itself changes (the value, file or cluster state "
        "the answer produces), so that the blank fails it.",
    )


def expect_check_to_pass(
    task: int, *, check: str, lesson: str = "", namespace: dict[str, Any] | None = None
) -> None:
    """Run a task's check after its answer: it must pass (:class:`ProofFailed` otherwise)."""
    namespace = _namespace() if namespace is None else namespace
    where = _where(task, lesson)
    started = time.monotonic()
    try:
        _run(check, namespace, f"<check of {where}>")
    except Exception as err:
        _record(lesson, task, "answer", False, str(err), started)
        kind = "fails" if isinstance(err, CheckFailed) else f"raises {type(err).__name__}"
        raise ProofFailed(
            f"{where}: its check {kind} on the answer (the lesson's solution):\n{err}",
            "fix the answer or the check: on the lesson as written the check must pass.",
        ) from err
    _record(lesson, task, "answer", True, "", started)
    report_pass(f"Proof, {where}: on the answer its check passes.")
