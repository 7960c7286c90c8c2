"""The committed notebooks are lessons a learner can open: clean, parameterized, structured.

These read the .ipynb files only (fast); executing them is nbval's job (see scripts/test.sh).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from helpers.profiles import list_notebooks, load_profile, notebook_parameters

NOTEBOOKS = list_notebooks()


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def test_there_are_lessons() -> None:
    assert [p.stem[:2] for p in NOTEBOOKS][:2] == ["00", "01"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
    """Only cells tagged keep_output (golden outputs, checked by nbval) may carry outputs."""
    for i, cell in enumerate(_cells(path)):
        if cell["cell_type"] != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        if "keep_output" in tags:
            assert "NBVAL_CHECK_OUTPUT" in _source(cell), f"cell {i}: golden cell without marker"
            assert cell["outputs"], f"cell {i}: tagged keep_output but has no output to compare"
            continue
        assert not cell["outputs"], f"{path.name} cell {i} has outputs: strip them"
        assert cell["execution_count"] is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_of_typed_commented_literals(path: Path) -> None:
    tagged = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    tree = ast.parse(_source(tagged[0]))
    lines = _source(tagged[0]).splitlines()
    for node in tree.body:
        assert isinstance(node, ast.AnnAssign), f"{path.name}: line {node.lineno} is not `name: type = value`"
        ast.literal_eval(node.value)  # literals only: derived values belong in the next cell
        assert "#" in lines[node.lineno - 1], f"{path.name}: parameter on line {node.lineno} has no comment"
    assert notebook_parameters(path), "papermill does not see the parameters"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_reads_as_a_lesson(path: Path) -> None:
    """Title, 'You will learn', Summary, Exercises and Cleanup, in that order."""
    markdown = [_source(c) for c in _cells(path) if c["cell_type"] == "markdown"]
    assert markdown[0].startswith("# "), "the first cell is the title"
    text = "\n".join(markdown)
    positions = [text.find(h) for h in ("You will learn", "## Summary", "## Exercises", "## Cleanup")]
    assert -1 not in positions and positions == sorted(positions), positions


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_section_checks_itself(path: Path) -> None:
    """Each numbered section has at least one assert before the next section starts."""
    section, asserted = None, True
    for cell in _cells(path):
        src = _source(cell)
        if cell["cell_type"] == "markdown" and src.startswith("## "):
            assert asserted, f"{path.name}: section {section!r} has no assert"
            section = src.splitlines()[0]
            asserted = not section[3:4].isdigit()  # only numbered sections must check
        elif cell["cell_type"] == "code" and "assert " in src:
            asserted = True


@pytest.mark.parametrize("name", ["ci", "full"])
def test_profiles_are_valid_for_these_notebooks(name: str) -> None:
    profile = load_profile(name)
    for stem in profile.notebooks:
        assert stem in {p.stem for p in NOTEBOOKS}
