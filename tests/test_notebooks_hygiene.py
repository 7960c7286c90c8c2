"""The committed notebooks are lessons a learner can open: clean, parameterized, structured.

These read the .ipynb files only (fast); executing them is nbval's job (see scripts/test.sh).
The lesson template (templates/NN_lesson_template.ipynb) is held to the lessons' rules too,
explicitly: it is not in notebooks/, so the runner never runs it as a lesson. The practice
versions (notebooks/practice/) are generated; tests/test_lessons.py checks them.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from helpers.lessons.tasks import read_tasks
from helpers.paths import LABS_DIR, REPO_ROOT
from helpers.profiles import list_labs, list_notebooks, load_profile, notebook_parameters
from helpers.solution_regions import CHECK_TAG

NOTEBOOKS = list_notebooks()
TEMPLATE = REPO_ROOT / "templates" / "NN_lesson_template.ipynb"
LESSONS_AND_TEMPLATE = NOTEBOOKS + [TEMPLATE]


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_there_are_lessons() -> None:
    assert [p.stem[:2] for p in NOTEBOOKS][:2] == ["00", "01"]


@pytest.mark.parametrize("path", LESSONS_AND_TEMPLATE, ids=lambda p: p.stem)
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


@pytest.mark.parametrize("path", LESSONS_AND_TEMPLATE, ids=lambda p: p.stem)
def test_one_parameters_cell_of_typed_commented_literals(path: Path) -> None:
    tagged = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    tree = ast.parse(_source(tagged[0]))
    lines = _source(tagged[0]).splitlines()
    for node in tree.body:
        assert isinstance(node, ast.AnnAssign), (
            f"{path.name}: line {node.lineno} is not `name: type = value`"
        )
        ast.literal_eval(node.value)  # literals only: derived values belong in the next cell
        assert "#" in lines[node.lineno - 1], (
            f"{path.name}: parameter on line {node.lineno} has no comment"
        )
    assert notebook_parameters(path), "papermill does not see the parameters"


@pytest.mark.parametrize("path", LESSONS_AND_TEMPLATE, ids=lambda p: p.stem)
def test_reads_as_a_lesson(path: Path) -> None:
    """Title, 'You will learn', Summary, Exercises and Cleanup, in that order."""
    markdown = [_source(c) for c in _cells(path) if c["cell_type"] == "markdown"]
    assert markdown[0].startswith("# "), "the first cell is the title"
    text = "\n".join(markdown)
    positions = [
        text.find(h) for h in ("You will learn", "## Summary", "## Exercises", "## Cleanup")
    ]
    assert -1 not in positions and positions == sorted(positions), positions


@pytest.mark.parametrize("path", LESSONS_AND_TEMPLATE, ids=lambda p: p.stem)
def test_every_section_checks_itself(path: Path) -> None:
    """Each numbered section has at least one assert (or a "Your turn" check cell, tagged
    'check') before the next section starts."""
    section, asserted = None, True
    for cell in _cells(path):
        src = _source(cell)
        if cell["cell_type"] == "markdown" and src.startswith("## "):
            assert asserted, f"{path.name}: section {section!r} has no assert"
            section = src.splitlines()[0]
            asserted = not section[3:4].isdigit()  # only numbered sections must check
        elif cell["cell_type"] == "code" and ("assert " in src or CHECK_TAG in _tags(cell)):
            asserted = True


_MINUTES = re.compile(r"\*\*About \d+(-\d+)? minutes?\*\*")


@pytest.mark.parametrize(
    "path", [p for p in LESSONS_AND_TEMPLATE if read_tasks(p)], ids=lambda p: p.stem
)
def test_a_lesson_built_for_doing_fits_one_sitting(path: Path) -> None:
    """A lesson with "Your turn" tasks (and the template) says how long it takes in its first
    cell and has at most 10 learner parameters (harness knobs go to the run profile)."""
    first = _source(_cells(path)[0])
    assert _MINUTES.search(first), f"{path.name}: the first cell says '**About N minutes**'"
    assert len(notebook_parameters(path)) <= 10, f"{path.name}: at most 10 parameters"


@pytest.mark.parametrize("name", ["ci", "full"])
def test_profiles_are_valid_for_these_notebooks(name: str) -> None:
    profile = load_profile(name)
    for stem in profile.notebooks:
        assert stem in {p.stem for p in NOTEBOOKS}


# -- no assertion hidden from CI behind a parameter -----------------------------------------

_UNKNOWN = object()


def _value(node: ast.expr, params: dict) -> object:
    """``node`` evaluated with only the notebook's parameters known; _UNKNOWN otherwise.

    Three-valued: ``a and b`` is False as soon as one side is known to be False, ``a or b``
    True as soon as one is known to be True, whatever the other side (a cluster, a variable).
    """
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return params.get(node.id, _UNKNOWN)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _value(node.operand, params)
        return _UNKNOWN if inner is _UNKNOWN else not inner
    if isinstance(node, ast.BoolOp):
        values = [_value(v, params) for v in node.values]
        decisive = isinstance(node.op, ast.Or)  # the value that decides the whole
        if any(v is not _UNKNOWN and bool(v) is decisive for v in values):
            return decisive
        return _UNKNOWN if any(v is _UNKNOWN for v in values) else not decisive
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, right = _value(node.left, params), _value(node.comparators[0], params)
        if _UNKNOWN in (left, right):
            return _UNKNOWN
        ops = {
            ast.Eq: lambda a, b: a == b,
            ast.NotEq: lambda a, b: a != b,
            ast.Gt: lambda a, b: a > b,
            ast.GtE: lambda a, b: a >= b,
            ast.Lt: lambda a, b: a < b,
            ast.LtE: lambda a, b: a <= b,
        }
        op = ops.get(type(node.ops[0]))
        try:
            return _UNKNOWN if op is None else op(left, right)
        except TypeError:
            return _UNKNOWN
    return _UNKNOWN


def hidden_assertions(path: Path, ci_parameters: dict) -> list[str]:
    """Where an ``if`` on the notebook's parameters skips asserts under ``ci_parameters``."""
    params = {name: spec["default"] for name, spec in notebook_parameters(path).items()}
    for name in params:  # papermill reports defaults as source text
        try:
            params[name] = ast.literal_eval(params[name])
        except (ValueError, SyntaxError):
            params[name] = _UNKNOWN
    params.update(ci_parameters)
    hidden = []
    for i, cell in enumerate(_cells(path)):
        if cell["cell_type"] != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        try:
            tree = ast.parse(
                "\n".join(
                    line
                    for line in _source(cell).splitlines()
                    if not line.lstrip().startswith(("!", "%"))
                )
            )
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.If):
                continue
            taken = _value(node.test, params)
            if taken is _UNKNOWN:
                continue
            skipped = node.orelse if taken else node.body
            if any(isinstance(n, ast.Assert) for stmt in skipped for n in ast.walk(stmt)):
                hidden.append(
                    f"cell {i}, line {node.lineno}: `if {ast.unparse(node.test)}` is "
                    f"{bool(taken)} in CI and skips assertions"
                )
    return hidden


@pytest.mark.parametrize("path", NOTEBOOKS + list_labs(LABS_DIR / "source"), ids=lambda p: p.stem)
def test_no_assertion_is_hidden_from_ci_behind_a_parameter(path: Path) -> None:
    """CI runs every section that `make run` runs: a parameter may size a step, never switch
    off the assertions that check it (issue: lesson 10's KV-cache case broke unseen)."""
    hidden = hidden_assertions(path, load_profile("ci").parameters_for(path.stem))
    assert not hidden, (
        f"{path.name}: "
        + "; ".join(hidden)
        + ". Make the step cheap enough for CI instead of switching it off."
    )


def test_the_hidden_assertion_check_can_fail(tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("run_it: bool = True  # a switch\nsize: int = 3  # a size")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell("if run_it and cluster:\n    assert size > 1"),
        nbformat.v4.new_code_cell("if size < 2:\n    x = 1\nelse:\n    assert size"),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = tmp_path / "switch.ipynb"
    nbformat.write(nb, str(path))
    assert hidden_assertions(path, {}) == []
    found = hidden_assertions(path, {"run_it": False, "size": 1})
    assert [f.split(":")[0] for f in found] == ["cell 1, line 1", "cell 2, line 1"], found


_SOURCE_DOCUMENTS = re.compile(
    r"seed material|\bthe seed(?:'s)?\b(?!\s*(?:=|of |for |value))", re.IGNORECASE
)


def test_nothing_a_learner_reads_points_to_documents_they_have_never_seen() -> None:
    """Lessons, labs, README, CONTRIBUTING, CHANGELOG, configs and the helpers describe
    practices and cite public sources; they never refer to private source documents."""
    roots = [
        REPO_ROOT / name
        for name in ("notebooks", "labs", "helpers", "configs", "benchmarks", "templates")
    ]
    files = [REPO_ROOT / name for name in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md")]
    files += [
        p
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.suffix in (".ipynb", ".py", ".md", ".yaml", ".json")
    ]
    found = [
        f"{p.relative_to(REPO_ROOT)}: {m.group(0)!r}"
        for p in files
        for m in _SOURCE_DOCUMENTS.finditer(p.read_text(errors="replace"))
    ]
    assert not found, found
