"""The grader runs the checks itself (helpers/labs/referee.py): what it reads from a real
kernel, what it takes from the lab's definition, and which check cells it can run.

The cluster side (a class graded on a real cluster, with forged and edited submissions) is in
tests/test_labs.py; here a real ipykernel runs a small notebook whose check cell calls a
check registered for this test, so what reaches the check can be looked at.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nbformat
import pandas as pd
import pytest

from helpers.errors import WorkbookError
from helpers.labs import checks
from helpers.labs.checks.framework import CHECKS, lab_check
from helpers.labs.notebooks import CHECK_TAG, list_lab_sources
from helpers.labs.referee import (
    KernelFunction,
    Referee,
    RefereeClient,
    Unexported,
    check_sources,
    lab_definition,
    parse_check_cell,
)

SOURCES = list_lab_sources()


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_every_check_cell_of_every_lab_is_one_the_grader_runs(path: Path) -> None:
    """Each argument of each check is ``lab``, a literal, a parameter of the lab's definition,
    or a deliverable some cell of the lab sets (which the grader reads from the kernel)."""
    nb = nbformat.read(str(path), as_version=4)
    sources = check_sources(nb)
    tagged = [c for c in nb.cells if CHECK_TAG in c.metadata.get("tags", [])]
    assert tagged and {c.source for c in tagged} <= sources
    from IPython.core.inputtransformer2 import TransformerManager

    definition = lab_definition(nb, {})
    assigned = set()
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source not in sources:
            python = TransformerManager().transform_cell(cell.source)  # `!serve ...` lines
            for node in ast.walk(ast.parse(python)):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    assigned.add(node.id)
                elif isinstance(node, ast.FunctionDef):
                    assigned.add(node.name)
    for source in sources:
        for call in parse_check_cell(source).calls:
            for name in call.names():
                assert name == "lab" or name in definition or name in assigned, (call.name, name)


@pytest.mark.parametrize(
    "source",
    [
        "ok = checks.lab01_answers_over_http(lab, http_reply, text=sample_text)",
        "checks.lab01_everything(lab)",
        "checks.lab01_answers_over_http(lab, reply(), text=sample_text)",
        "checks.lab01_answers_over_http(lab, *replies)",
        "with open('x') as f:\n    checks.lab01_answers_over_http(lab, f)",
        "print('looks fine to me')",
        "",
    ],
)
def test_a_check_cell_the_grader_cannot_run_is_refused(source: str) -> None:
    with pytest.raises(WorkbookError, match="not one the grader can run"):
        parse_check_cell(source)


def test_the_definition_is_the_parameters_cell_with_the_graders_values() -> None:
    nb = nbformat.read(str(SOURCES[0]), as_version=4)
    definition = lab_definition(nb, {"student": "ada-1", "replicas": 3})
    assert definition["student"] == "ada-1" and definition["replicas"] == 3
    assert definition["replica_cpus"] == 0.25  # the source's default
    with_forms = parse_check_cell(
        "with checks.deferred_failures():\n"
        "    checks.lab01_answers_over_http(lab, http_reply, text=sample_text)\n"
        "    checks.lab01_answers_by_handle(lab, handle_reply, text='x')\n"
    )
    assert with_forms.deferred and [c.name for c in with_forms.calls] == [
        "lab01_answers_over_http",
        "lab01_answers_by_handle",
    ]


# --- a real kernel ---------------------------------------------------------------------------

SEEN: list[dict[str, Any]] = []


@pytest.fixture
def lab99(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A check of a lab "lab99" that keeps what it was given, and calls the function given."""

    @lab_check("lab99", 1)
    def lab99_sees(
        session: Any, reply: Any, path: Any, frame: Any, fn: Any, *rest: Any, limit: int
    ) -> None:
        """The check saw the deliverables."""
        SEEN.append(
            {
                "student": session.student,
                "reply": reply,
                "path": path,
                "frame": frame,
                "fn": fn,
                "rest": rest,
                "limit": limit,
                "called": fn(frame),
            }
        )

    @lab_check("lab99", 2)
    def lab99_needs(session: Any, gone: Any) -> None:
        """A check of a deliverable that was never set."""

    @lab_check("lab99", 3)
    def lab99_calls(session: Any, fn: Any, frame: Any) -> None:
        """A check that calls a function that raises."""
        fn(frame)

    for func in (lab99_sees, lab99_needs, lab99_calls):
        monkeypatch.setattr(checks, func.__name__, func, raising=False)
    SEEN.clear()
    yield
    CHECKS.pop("lab99", None)


def _notebook(*cells: tuple[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for tag, text in cells:
        cell = nbformat.v4.new_code_cell(text)
        cell.metadata["tags"] = [tag] if tag else []
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def test_the_referee_reads_deliverables_from_a_real_kernel_and_runs_the_checks_itself(
    lab99: None,
) -> None:
    student = (
        "import pathlib, numpy, pandas as pd\n"
        "reply = {'words': 7, 3: [1, 2.5, None, float('nan')]}\n"
        "path = pathlib.Path('/srv/answers/config.yaml')\n"
        "frame = pd.DataFrame({'ok': [True, False], 't': [0.5, 1.0], 'who': ['a', None]})\n"
        "def double(df):\n    return float(df['t'].sum() * 2)\n"
        "def broken(df):\n    return 1 / 0\n"
        "thing = object()\n"
        "count = numpy.int64(5)\n"
        "limit = 0  # a student lowering the bar\n"
        "from helpers.labs import checks\n"
        "checks.lab99_sees = lambda *a, **k: print('forged')  # replaced in the kernel\n"
    )
    nb = _notebook(
        ("", student),
        (
            CHECK_TAG,
            "checks.lab99_sees(lab, reply, path, frame, double, thing, count, limit=limit)",
        ),
        (CHECK_TAG, "checks.lab99_needs(lab, gone)"),
        (CHECK_TAG, "checks.lab99_calls(lab, broken, frame)"),
        (CHECK_TAG, "print('a cell the student tagged check')"),
    )
    source = _notebook(*((CHECK_TAG, c.source) for c in nb.cells[1:4]))
    referee = Referee(
        SimpleNamespace(student="ada"), {"limit": 3}, check_sources(source), timeout_s=60
    )
    RefereeClient(
        nb, referee=referee, timeout=60, kernel_name="python3", allow_errors=True
    ).execute()

    assert len(SEEN) == 1, nb.cells[1].outputs
    seen = SEEN[0]
    assert seen["student"] == "ada" and seen["limit"] == 3  # the definition's, not the cell's
    assert seen["reply"]["words"] == 7 and seen["reply"][3][:3] == [1, 2.5, None]
    assert math.isnan(seen["reply"][3][3])
    assert seen["path"] == Path("/srv/answers/config.yaml")
    pd.testing.assert_frame_equal(
        seen["frame"],
        pd.DataFrame({"ok": [True, False], "t": [0.5, 1.0], "who": ["a", None]}),
    )
    assert isinstance(seen["fn"], KernelFunction) and seen["called"] == 3.0  # ran in the kernel
    thing, count = seen["rest"]
    assert isinstance(thing, Unexported) and type(thing).__name__ == "object"
    assert count == 5 and isinstance(count, int)

    by_check = {r.check: r for r in referee.results}
    assert by_check["lab99_sees"].passed
    assert not by_check["lab99_needs"].passed
    assert "gone is not defined" in by_check["lab99_needs"].feedback
    assert "Look at: the cells of Task 2" in by_check["lab99_needs"].feedback
    assert not by_check["lab99_calls"].passed
    assert "ZeroDivisionError" in by_check["lab99_calls"].feedback
    assert referee.cells_run == 3
    outputs = [[o.get("text") or o.get("evalue") for o in c.outputs] for c in nb.cells[1:]]
    assert outputs[0] == ["✓ Task 1: The check saw the deliverables.\n"]  # not 'forged'
    assert "gone is not defined" in outputs[1][0]
    assert outputs[3] == ["a cell the student tagged check\n"]  # ran in the kernel
