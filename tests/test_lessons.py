"""Lessons' "Your turn" tasks: the checks, the practice versions, revealing answers, the proof.

Everything here is plain Python (no cluster). The proof notebooks of small lessons written
in ``tmp_path`` run in a real kernel (nbclient, as papermill and nbval run them), one at a
time, about a second each: that is the only honest way to show that the proof fails when a
check passes on its blank task or fails on its answer.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from notebook_builder import notebook as _notebook

from helpers.check_feedback import CheckFailed
from helpers.labs.checks import LabCheckFailed
from helpers.lessons import TaskCheckFailed, check_equal, check_that, checking
from helpers.lessons.practice import (
    answer_text,
    generate_all,
    make_practice_notebook,
    stale_practice_versions,
)
from helpers.lessons.proof import (
    RESULTS_ENV,
    ProofFailed,
    _literal,
    build_proof,
    expect_check_to_fail,
    expect_check_to_pass,
)
from helpers.lessons.tasks import LessonTask, lesson_tasks, read_tasks
from helpers.paths import REPO_ROOT
from helpers.profiles import list_notebooks, load_profile
from helpers.runner import prepare_notebooks
from helpers.solution_regions import CHECK_TAG, NotebookSourceError

TEMPLATE = REPO_ROOT / "templates" / "NN_lesson_template.ipynb"
SETUP = "from helpers.lessons import check_equal, check_that, checking, reveal\nruns = []"


def _write(nb: nbformat.NotebookNode, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


CHECK_1 = "check_equal(x, target, what='x', look='Your turn 1: the line that sets x')"
# Task 2's blank leaves y = 1, which is x + 1 while task 1 is blank too (x = 0): its check
# fails on its blank only because task 1 was answered before it, as the proof promises.
CHECK_2 = "check_equal(y, x + 1, what='y', look='Your turn 2: the line that sets y')"
CHECK_3 = (
    "text = !cat conf.yaml\n"
    "check_that('num_replicas: 2' in text, 'conf.yaml sets num_replicas: 2',\n"
    "           problem=f'conf.yaml has {text}', expected='num_replicas: 2',\n"
    "           look='Your turn 3: the YAML you wrote')\n"
    "len(text)"
)


def _lesson(check_2: str = CHECK_2, task_2: str = "y = 1\n") -> nbformat.NotebookNode:
    """A small lesson with three tasks: two in Python, one in a %%writefile cell whose check
    reads the file with a shell command."""
    return _notebook(
        ("md", "# 98 · A demo\n\n**About 1 minute.**\n\nYou will learn:\n- nothing", []),
        ("code", "target: int = 3  # the value task 1 must produce", ["parameters"]),
        ("code", SETUP, []),
        ("md", "### Your turn 1: set x", []),
        (
            "code",
            "x = 0\n### BEGIN SOLUTION\n# HINT: x = target\nx = target\n"
            "### END SOLUTION\nruns.append('task 1')",
            [],
        ),
        ("code", CHECK_1, [CHECK_TAG]),
        ("code", "runs.append('between')", []),
        ("md", "### Your turn 2: set y from x", []),
        (
            "code",
            f"{task_2}### BEGIN SOLUTION\n# HINT: y = x + ...\ny = x + 1\n### END SOLUTION",
            [],
        ),
        ("code", check_2, [CHECK_TAG]),
        ("md", "### Your turn 3: write the config", []),
        (
            "code",
            "%%writefile conf.yaml\nname: echo\n### BEGIN SOLUTION\n# HINT: num_replicas: ...\n"
            "num_replicas: 2\n### END SOLUTION",
            [],
        ),
        ("code", CHECK_3, [CHECK_TAG]),
        ("code", "assert runs == ['task 1', 'task 1', 'between'], runs", []),
    )


def _execute(
    nb: nbformat.NotebookNode,
    cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
    results: Path | None = None,
) -> nbformat.NotebookNode:
    """Run ``nb`` in a python3 kernel whose `helpers` is this checkout's."""
    from nbclient import NotebookClient

    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    if results is not None:
        monkeypatch.setenv(RESULTS_ENV, str(results))
    else:  # not into the record of the run's lessons (scripts/test.sh sets it)
        monkeypatch.delenv(RESULTS_ENV, raising=False)
    cwd.mkdir(parents=True, exist_ok=True)
    NotebookClient(
        nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def _stream(nb: nbformat.NotebookNode) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream"
    )


# --- the check API ---------------------------------------------------------------------------


def test_check_equal_prints_what_it_verified_or_says_what_is_wrong(capsys) -> None:
    check_equal(2, 2, what="Echo's num_replicas", look="Your turn 1")
    assert capsys.readouterr().out == "✓ Echo's num_replicas is 2\n"
    with pytest.raises(TaskCheckFailed) as info:
        check_equal(None, 2, what="Echo's num_replicas", look="Your turn 1: num_replicas")
    assert str(info.value) == (
        "Echo's num_replicas is None.\nExpected: 2\nLook at: Your turn 1: num_replicas"
    )
    assert isinstance(info.value, AssertionError) and isinstance(info.value, CheckFailed)
    assert capsys.readouterr().out == ""


def test_check_that_and_checking(capsys) -> None:
    check_that(True, "two replicas answered", problem="-", expected="-", look="-")
    assert capsys.readouterr().out == "✓ two replicas answered\n"
    with pytest.raises(TaskCheckFailed, match="^1 replica answered\nExpected: 2\nLook at: x$"):
        check_that(
            False, "two replicas answered", problem="1 replica answered", expected="2", look="x"
        )
    with pytest.raises(TaskCheckFailed) as info:
        with checking(expected="application 'echo'", look="Your turn 2: serve.run"):
            {}["echo"]
    assert str(info.value) == (
        "The check could not read your work: KeyError: 'echo'.\n"
        "Expected: application 'echo'\nLook at: Your turn 2: serve.run"
    )
    with pytest.raises(TaskCheckFailed, match="^y is 1"):  # a failed check passes through
        with checking(expected="-", look="-"):
            check_equal(1, 2, what="y", look="Your turn 2")
    with checking(expected="-", look="-"):
        value = 5
    assert value == 5


def test_lab_checks_share_the_feedback_format() -> None:
    from helpers.labs.checks import CheckProblem

    assert issubclass(LabCheckFailed, CheckFailed)
    assert str(CheckProblem("Echo is missing.", "Task 1")) == "Echo is missing.\nLook at: Task 1"


# --- finding the tasks -------------------------------------------------------------------------


def test_tasks_are_found_in_order() -> None:
    assert lesson_tasks(_lesson(), "98_demo.ipynb") == [
        LessonTask(1, (4,), 5),
        LessonTask(2, (8,), 9),
        LessonTask(3, (11,), 12),
    ]
    two_cells = _notebook(
        ("md", "### Your turn 1", []),
        ("code", "### BEGIN SOLUTION\n# HINT: h\na = 1\n### END SOLUTION", []),
        ("md", "and then", []),
        ("code", "### BEGIN SOLUTION\n# HINT: h\nb = 1\n### END SOLUTION", []),
        ("code", "check()", [CHECK_TAG]),
    )
    assert lesson_tasks(two_cells, "x.ipynb") == [LessonTask(1, (1, 3), 4)]


REGION = "### BEGIN SOLUTION\n# HINT: h\nx = 1\n### END SOLUTION"


@pytest.mark.parametrize(
    ("cells", "cell", "expected"),
    [
        ([("md", "### Your turn 1", []), ("code", REGION, [])], 1, "Your turn 1 has no check"),
        ([("md", "intro", []), ("code", "check()", [CHECK_TAG])], 1, "follows no 'Your turn' cell"),
        ([("md", "### A task", []), ("code", REGION, [])], 1, "Your turn 1 is not announced"),
        (
            [
                ("md", "### Your turn 1", []),
                ("code", "### BEGIN SOLUTION\nx = 1\n### END SOLUTION", []),
            ],
            1,
            "has no hint",
        ),
        (
            [("md", "### Your turn 1", []), ("code", REGION, [CHECK_TAG])],
            1,
            "must not contain a solution",
        ),
        ([("md", "x\n### BEGIN SOLUTION\n### END SOLUTION", [])], 0, "only allowed in code cells"),
        (
            [("code", "### BEGIN HIDDEN CHECKS\nc()\n### END HIDDEN CHECKS", [])],
            0,
            "hidden checks are for labs",
        ),
        (
            [("md", "### Your turn 1", []), ("code", "### BEGIN SOLUTION\n# HINT: h\nx = 1", [])],
            1,
            "never closed",
        ),
        (
            [("md", "### Your turn 1", []), ("code", "x = 1\n### END SOLUTION", [])],
            1,
            "without a BEGIN",
        ),
    ],
)
def test_malformed_tasks_are_clear_errors_naming_the_cell(cells, cell: int, expected: str) -> None:
    with pytest.raises(NotebookSourceError) as info:
        lesson_tasks(_notebook(*cells), "97_bad.ipynb")
    assert expected in str(info.value)
    assert f"97_bad.ipynb, cell {cell}, line" in str(info.value)
    assert "Fix:" in str(info.value)


def test_no_lesson_has_malformed_tasks() -> None:
    """Every lesson (and the template) parses; today's lessons have no task yet, so the
    runner prepares them as they are."""
    for path in list_notebooks() + [TEMPLATE]:
        read_tasks(path)
    assert len(read_tasks(TEMPLATE)) == 1


# --- practice versions -------------------------------------------------------------------------


def test_practice_version_blanks_each_region_with_hint_and_reveal(tmp_path: Path) -> None:
    nb = _lesson()
    nb.cells[4].outputs = [nbformat.v4.new_output("stream", text="3\n")]
    nb.cells[4].execution_count = 3
    nb.cells.insert(13, nbformat.v4.new_markdown_cell("### Your turn 4: a method"))
    nb.cells[13].id = "c13b"
    nb.cells.insert(
        14,
        nbformat.v4.new_code_cell(
            "class Echo:\n    def __call__(self, text):\n        ### BEGIN SOLUTION\n"
            "        # HINT: return the text\n        return text\n        ### END SOLUTION\n"
        ),
    )
    nb.cells[14].id = "c14b"
    nb.cells.insert(
        15, nbformat.v4.new_code_cell("check_equal(Echo()('a'), 'a', what='x', look='y')")
    )
    nb.cells[15].id = "c15b"
    nb.cells[15].metadata["tags"] = [CHECK_TAG]
    practice = make_practice_notebook(_write(nb, tmp_path / "98_demo.ipynb"))
    texts = [c.source for c in practice.cells]
    assert texts[4] == (
        "x = 0\n# YOUR CODE HERE (Your turn 1)\n# HINT: x = target\n"
        '# Stuck? reveal("98", 1) in a new cell prints the answer.\n'
        "runs.append('task 1')"
    )
    assert texts[11] == (
        "%%writefile conf.yaml\nname: echo\n# YOUR CODE HERE (Your turn 3)\n"
        "# HINT: num_replicas: ...\n"
        '# Stuck? reveal("98", 3) in a new cell prints the answer.'
    )
    # An empty block is not Python: a `pass` keeps the cell runnable.
    assert texts[14] == (
        "class Echo:\n    def __call__(self, text):\n"
        "        # YOUR CODE HERE (Your turn 4)\n        # HINT: return the text\n"
        '        # Stuck? reveal("98", 4) in a new cell prints the answer.\n'
        "        pass"
    )
    assert all("BEGIN SOLUTION" not in t and "\nx = target\n" not in t for t in texts)
    assert [c.id for c in practice.cells] == [c.id for c in nb.cells]
    assert practice.cells[4].outputs == [] and practice.cells[4].execution_count is None
    assert "**Practice version**" in texts[0] and 'reveal("98", 1)' in texts[0]
    assert practice.metadata["workbook_practice"]["tasks"] == 4
    assert texts[5] == CHECK_1 and texts[9] == CHECK_2  # checks unchanged


def test_a_blank_that_is_not_python_is_a_clear_error(tmp_path: Path) -> None:
    nb = _lesson()
    nb.cells[4].source = "x = [\n### BEGIN SOLUTION\n# HINT: two numbers\n1, 2]\n### END SOLUTION"
    with pytest.raises(NotebookSourceError) as info:
        make_practice_notebook(_write(nb, tmp_path / "98_demo.ipynb"))
    assert "98_demo.ipynb, cell 4, line 1: with its solution regions blanked" in str(info.value)
    assert "Fix: keep outside the region" in str(info.value)


def test_a_lesson_with_tasks_must_import_reveal(tmp_path: Path) -> None:
    nb = _lesson()
    nb.cells[2].source = "from helpers.lessons import check_equal, check_that\nruns = []"
    with pytest.raises(NotebookSourceError, match="never imports reveal"):
        make_practice_notebook(_write(nb, tmp_path / "98_demo.ipynb"))


def test_no_practice_version_without_tasks(tmp_path: Path) -> None:
    nb = _notebook(("md", "# 96 · plain", []), ("code", "x = 1", []))
    assert make_practice_notebook(_write(nb, tmp_path / "96_plain.ipynb")) is None


def test_practice_versions_are_up_to_date() -> None:
    """The committed notebooks/practice/ matches the lessons (the CI check)."""
    result = subprocess.run(
        [sys.executable, "-m", "helpers.lessons", "generate", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_mode_names_stale_missing_and_orphan_files(tmp_path: Path) -> None:
    lessons, practice = tmp_path / "lessons", tmp_path / "practice"
    _write(_lesson(), lessons / "98_demo.ipynb")
    _write(_lesson(), lessons / "97_other.ipynb")
    _write(
        _notebook(("md", "# 96 · no task", []), ("code", "x = 1", [])), lessons / "96_plain.ipynb"
    )
    run = [
        sys.executable,
        "-m",
        "helpers.lessons",
        "generate",
        "--lessons-dir",
        str(lessons),
        "--practice-dir",
        str(practice),
    ]
    assert subprocess.run(run, capture_output=True, cwd=REPO_ROOT, timeout=120).returncode == 0
    assert sorted(p.name for p in practice.iterdir()) == ["97_other.ipynb", "98_demo.ipynb"]
    assert stale_practice_versions(lessons, practice) == []
    # A lesson edited without regenerating, a practice file deleted, one without a lesson.
    nb = nbformat.read(str(lessons / "98_demo.ipynb"), as_version=4)
    nb.cells[0].source += "\n\nOne more sentence."
    _write(nb, lessons / "98_demo.ipynb")
    (practice / "97_other.ipynb").unlink()
    shutil.copy(practice / "98_demo.ipynb", practice / "95_gone.ipynb")
    result = subprocess.run(
        run + ["--check"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert result.returncode == 1
    assert "98_demo.ipynb: differs from what 98_demo.ipynb generates" in result.stderr
    assert "97_other.ipynb: missing" in result.stderr
    assert "95_gone.ipynb: has no lesson with 'Your turn' tasks" in result.stderr
    assert "python -m helpers.lessons generate" in result.stderr  # says how to fix it
    written, removed = generate_all(lessons, practice)
    assert [p.name for p in removed] == ["95_gone.ipynb"]  # generated, so generate removes it
    assert stale_practice_versions(lessons, practice) == []


def test_reveal_prints_the_answer_from_the_lesson(tmp_path: Path) -> None:
    lessons = tmp_path / "lessons"
    _write(_lesson(), lessons / "98_demo.ipynb")
    text = answer_text("98", 1, folder=lessons)
    assert text.startswith("Your turn 1 of 98_demo, the answer. Replace your cell with it")
    assert text.endswith("\n\nx = 0\nx = target\nruns.append('task 1')")
    with pytest.raises(Exception, match="(?s)no Your turn 4.*Fix: give a number from 1 to 3"):
        answer_text("98", 4, folder=lessons)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers.lessons",
            "reveal",
            "98",
            "3",
            "--lessons-dir",
            str(lessons),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "name: echo\nnum_replicas: 2" in result.stdout and "HINT" not in result.stdout


# --- the proof: the steps, in this process ----------------------------------------------------


def test_expect_check_to_fail_returns_the_feedback_and_records_it(
    tmp_path, monkeypatch, capsys
) -> None:
    results = tmp_path / "proof.jsonl"
    monkeypatch.setenv(RESULTS_ENV, str(results))
    namespace = {"check_equal": check_equal, "y": 1}
    message = expect_check_to_fail(
        2,
        check="check_equal(y, 4, what='y', look='Your turn 2')",
        lesson="98_demo",
        namespace=namespace,
    )
    assert message == "y is 1.\nExpected: 4\nLook at: Your turn 2"
    assert (
        "✓ Proof, Your turn 2 of 98_demo: while the task is blank its check fails"
        in capsys.readouterr().out
    )
    record = json.loads(results.read_text())
    assert 0 <= record.pop("seconds") < 5  # how long the check took: what CI pays for a blank
    assert record == {
        "lesson": "98_demo",
        "task": 2,
        "step": "blank",
        "passed": False,
        "feedback": message,
    }
    slow = {"check_equal": check_equal, "y": 1, "wait": lambda: time.sleep(0.3)}
    expect_check_to_fail(
        3,
        check="wait(); check_equal(y, 4, what='y', look='Your turn 3')",
        lesson="98_demo",
        namespace=slow,
    )
    assert json.loads(results.read_text().splitlines()[-1])["seconds"] >= 0.3

    # A lab's check failing counts as feedback too (the same base class).
    def lab_check():
        raise LabCheckFailed("Task 1 check failed:\nx\nLook at: y")

    assert "Look at: y" in expect_check_to_fail(
        1, check="lab_check()", namespace={"lab_check": lab_check}
    )


def test_expect_check_to_fail_refuses_a_pass_or_a_crash() -> None:
    with pytest.raises(
        ProofFailed, match="Your turn 2 of 98_demo: its check PASSES while the task is left blank"
    ):
        expect_check_to_fail(
            2,
            check="check_equal(1, 1, what='y', look='-')",
            lesson="98_demo",
            namespace={"check_equal": check_equal},
        )
    with pytest.raises(
        ProofFailed,
        match="raises NameError: name 'y' is not defined instead of failing with feedback",
    ):
        expect_check_to_fail(
            2, check="check_equal(y, 1, what='y', look='-')", namespace={"check_equal": check_equal}
        )


def test_expect_check_to_pass(capsys) -> None:
    namespace = {"check_equal": check_equal, "y": 4}
    expect_check_to_pass(
        2, check="check_equal(y, 4, what='y', look='-')\ny * 10", namespace=namespace
    )
    assert capsys.readouterr().out == (
        "✓ y is 4\n40\n"  # the last expression is shown
        "✓ Proof, Your turn 2: on the answer its check passes.\n"
    )
    with pytest.raises(
        ProofFailed, match="(?s)Your turn 2: its check fails on the answer.*y is 4.\nExpected: 5"
    ):
        expect_check_to_pass(2, check="check_equal(y, 5, what='y', look='-')", namespace=namespace)


def test_the_proof_keeps_the_lessons_other_cells_as_they_are(tmp_path: Path) -> None:
    nb = _lesson()
    nb.cells[6].outputs = [nbformat.v4.new_output("stream", text="golden\n")]  # keep_output
    proof = build_proof(_write(nb, tmp_path / "98_demo.ipynb"))
    kept = [c for c in proof.cells if c.get("id") in {c.id for c in nb.cells}]
    assert [(c.id, c.source, c.get("outputs")) for c in kept] == [
        (c.id, c.source, c.get("outputs"))
        for c in nb.cells
        if CHECK_TAG not in c.metadata.get("tags", [])
    ]
    # Per task: two notes, the blank, and the check run twice (fail, pass) in place of once.
    assert len(proof.cells) == len(nb.cells) + 3 * 4


def test_a_cell_between_a_task_and_its_check_runs_with_the_blank_and_with_the_answer(
    tmp_path: Path,
) -> None:
    """A cell without regions after the task's cell (one that deploys what the learner
    wrote) is not the learner's to write: no blank, no reveal. It runs after the blank too,
    so the check judges the blank's deployment rather than nothing deployed."""
    deploy = "deployed = x  # e.g. !serve deploy app.yaml"
    nb = _notebook(
        ("md", "# 98 · A demo\n\nYou will learn:\n- nothing", []),
        ("code", "from helpers.lessons import reveal\nx = 0", []),
        ("md", "### Your turn 1: set x", []),
        ("code", "### BEGIN SOLUTION\n# HINT: x = 3\nx = 3\n### END SOLUTION", []),
        ("code", deploy, []),
        ("code", "check_equal(deployed, 3, what='x', look='-')", [CHECK_TAG]),
    )
    assert lesson_tasks(nb, "98_demo.ipynb") == [LessonTask(1, (3,), 5)]
    source = _write(nb, tmp_path / "98_demo.ipynb")
    proof = build_proof(source)
    sources = [c.source for c in proof.cells]
    fails = next(i for i, text in enumerate(sources) if "expect_check_to_fail(" in text)
    passes = next(i for i, text in enumerate(sources) if "expect_check_to_pass(" in text)
    assert "YOUR CODE HERE" in sources[fails - 2] and sources[fails - 1] == deploy
    assert sources[passes - 2].endswith("x = 3\n### END SOLUTION") and sources[passes - 1] == deploy
    practice = make_practice_notebook(source)
    assert [c.source for c in practice.cells][4] == deploy
    assert "deployed" not in answer_text(source, 1, folder=tmp_path)


@pytest.mark.parametrize(
    "code",
    [
        "a = '''x'''",
        "print('\\n')\nb = r'\\d'",
        "s = 'it\\'s'",
        "t = '\\\\'",
        "ends_with_backslash = 1 \\\n+ 1\\",
    ],
)
def test_check_code_survives_its_literal(code: str) -> None:
    assert ast.literal_eval(_literal(code)) in (code, f"\n{code}\n")


# --- the proof: whole notebooks in a kernel ------------------------------------------------------


def _proof_error(nb: nbformat.NotebookNode, tmp_path: Path, monkeypatch) -> str:
    from nbclient.exceptions import CellExecutionError

    proof = build_proof(_write(nb, tmp_path / "98_demo.ipynb"))
    with pytest.raises(CellExecutionError) as info:
        _execute(proof, tmp_path / "run", monkeypatch)
    return str(info.value)


def test_the_proof_runs_in_place_of_the_lesson_with_its_parameters(tmp_path, monkeypatch) -> None:
    """prepare_notebooks (what scripts/test.sh runs) writes the proof with the parameters
    injected; it runs in one kernel, each check failing on its blank then passing."""
    source = _write(_lesson(), tmp_path / "98_demo.ipynb")
    [prepared] = prepare_notebooks(
        [source], load_profile("ci"), tmp_path / "nbval", {"*": {"target": 5}}, proof=True
    )
    nb = nbformat.read(str(prepared), as_version=4)
    assert sum("expect_check_to_fail(" in c.source for c in nb.cells) == 3
    results = tmp_path / "proof.jsonl"
    output = _stream(_execute(nb, tmp_path / "run", monkeypatch, results))
    steps = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(s["task"], s["step"], s["passed"]) for s in steps] == [
        (1, "blank", False),
        (1, "answer", True),
        (2, "blank", False),
        (2, "answer", True),
        (3, "blank", False),
        (3, "answer", True),
    ]
    assert (
        steps[0]["feedback"] == "x is 0.\nExpected: 5\nLook at: Your turn 1: the line that sets x"
    )
    assert steps[2]["feedback"].startswith("y is 1.\nExpected: 6\n")  # task 1 was answered
    assert "conf.yaml has ['name: echo'" in steps[4]["feedback"]
    assert output.count("on the answer its check passes") == 3


def test_the_proof_fails_when_a_check_passes_on_its_blank(tmp_path, monkeypatch) -> None:
    """Task 2's check verifies task 1's work, not its own: it passes while task 2 is blank."""
    error = _proof_error(_lesson(check_2=CHECK_1), tmp_path, monkeypatch)
    assert "ProofFailed" in error
    assert "Your turn 2 of 98_demo: its check PASSES while the task is left blank" in error


def test_the_proof_fails_when_a_check_fails_on_the_answer(tmp_path, monkeypatch) -> None:
    check = "check_equal(y, x + 2, what='y', look='Your turn 2: the line that sets y')"
    error = _proof_error(_lesson(check_2=check), tmp_path, monkeypatch)
    assert "Your turn 2 of 98_demo: its check fails on the answer" in error
    assert "y is 4." in error and "Expected: 5" in error


def test_the_proof_fails_when_a_blank_leaves_the_check_crashing(tmp_path, monkeypatch) -> None:
    error = _proof_error(_lesson(task_2=""), tmp_path, monkeypatch)  # y never defined
    assert (
        "Your turn 2 of 98_demo: while the task is left blank, its check raises NameError" in error
    )


def test_the_template_proof_passes(tmp_path, monkeypatch) -> None:
    results = tmp_path / "proof.jsonl"
    _execute(build_proof(TEMPLATE), tmp_path / "run", monkeypatch, results)
    steps = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(s["step"], s["passed"]) for s in steps] == [("blank", False), ("answer", True)]
    assert steps[0]["feedback"].startswith("Echo's num_replicas in app.yaml is None.\nExpected: 2")


# --- the runner ----------------------------------------------------------------------------------


def test_a_lesson_without_tasks_is_prepared_as_it_is(tmp_path: Path) -> None:
    source = _write(
        _notebook(
            ("md", "# 96 · plain", []),
            ("code", "n: int = 1  # a number", ["parameters"]),
            ("code", "assert n", []),
        ),
        tmp_path / "96_plain.ipynb",
    )
    profile = load_profile("ci")
    overrides = {"*": {"n": 2}}
    [with_proof] = prepare_notebooks([source], profile, tmp_path / "a", overrides, proof=True)
    [without] = prepare_notebooks([source], profile, tmp_path / "b", overrides, proof=False)

    def cells(path: Path) -> list:  # papermill's injected cell gets a random id
        return [
            (c.cell_type, c.source, c.metadata.get("tags"))
            for c in nbformat.read(str(path), as_version=4).cells
        ]

    assert cells(with_proof) == cells(without)
    assert len(cells(with_proof)) == 4  # the lesson's 3 and papermill's injected parameters


def test_runner_prepares_the_proof_unless_told_not_to(tmp_path: Path) -> None:
    from helpers.runner import main

    source = _write(_lesson(), tmp_path / "98_demo.ipynb")
    assert main(["--profile", "ci", "--prepare-only", str(tmp_path / "a"), str(source)]) == 0
    assert "expect_check_to_fail" in (tmp_path / "a" / source.name).read_text()
    assert (
        main(["--profile", "ci", "--prepare-only", str(tmp_path / "b"), "--no-proof", str(source)])
        == 0
    )
    assert "expect_check_to_fail" not in (tmp_path / "b" / source.name).read_text()
    assert (
        main(["--profile", "ci", "--labs", "--prepare-only", str(tmp_path / "c"), "lab01"]) == 0
    )  # the labs have graders, not proofs
    assert "expect_check_to_fail" not in next((tmp_path / "c").glob("lab01_*")).read_text()


def test_practice_versions_are_not_lessons(tmp_path: Path) -> None:
    """The runner and the hygiene tests glob NN_*.ipynb in the lessons' folder only."""
    from helpers.runner import select_notebooks

    lesson = _write(_lesson(), tmp_path / "98_demo.ipynb")
    generate_all(tmp_path, tmp_path / "practice")
    assert (tmp_path / "practice" / "98_demo.ipynb").exists()
    assert list_notebooks(tmp_path) == [lesson]
    assert select_notebooks([], tmp_path) == [lesson]
    assert select_notebooks(["98"], tmp_path) == [lesson]


# --- exported cells: the lesson is the source, the package holds a copy ----------------------

EXPORTED = (
    "%%writefile {work_dir}/greeter.py\n# export: helpers/apps/greeter.py\n"
    '"""Greets."""\n\n\ndef greet(name: str) -> str:\n    ### BEGIN SOLUTION\n'
    "    # HINT: return an f-string\n    return f'hello {name}'\n    ### END SOLUTION\n"
)


def _exporting_lesson(cell: str = EXPORTED) -> nbformat.NotebookNode:
    return _notebook(
        ("md", "# 95 · exports\n\n**About 1 minute.**", []),
        ("code", SETUP, []),
        ("md", "### Your turn 1: greet", []),
        ("code", cell, []),
        ("code", "check_equal(1, 1, what='one', look='Your turn 1')", [CHECK_TAG]),
    )


def test_an_exported_cell_is_written_to_the_package_as_its_answer(tmp_path: Path) -> None:
    from helpers.lessons.export import GENERATED_HEADER, exports, stale_exports

    lessons = _write(_exporting_lesson(), tmp_path / "notebooks" / "95_exports.ipynb").parent
    (tmp_path / "helpers").mkdir()
    run = [
        sys.executable,
        "-m",
        "helpers.lessons",
        "generate",
        "--lessons-dir",
        str(lessons),
        "--practice-dir",
        str(tmp_path / "practice"),
    ]
    done = subprocess.run(run, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    copy = tmp_path / "helpers" / "apps" / "greeter.py"
    text = copy.read_text()
    assert text.startswith(f"{GENERATED_HEADER}notebooks/95_exports.ipynb (cell 3)")
    assert "return f'hello {name}'" in text and "SOLUTION" not in text and "HINT" not in text
    namespace: dict = {}
    exec(compile(text, str(copy), "exec"), namespace)  # noqa: S102 - the copy is the working answer
    assert namespace["greet"]("ana") == "hello ana"
    assert [e.target for e in exports(lessons)] == [Path("helpers/apps/greeter.py")]
    assert stale_exports(lessons, tmp_path) == []
    # the practice version keeps the blank, the package keeps the answer
    practice = (tmp_path / "practice" / "95_exports.ipynb").read_text()
    assert "hello {name}" not in practice and "export: helpers/apps/greeter.py" in practice

    # edited by hand, deleted, or left behind by a cell that no longer exports: each named
    copy.write_text(text.replace("hello", "hi"))
    assert stale_exports(lessons, tmp_path) == [
        "helpers/apps/greeter.py: differs from 95_exports.ipynb, cell 3"
    ]
    check = subprocess.run(
        run[:4] + ["--check"] + run[4:], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert check.returncode == 1 and "greeter.py: differs" in check.stderr
    copy.unlink()
    assert stale_exports(lessons, tmp_path) == [
        "helpers/apps/greeter.py: missing (exported by 95_exports.ipynb, cell 3)"
    ]
    copy.write_text(text)
    _write(
        _exporting_lesson(EXPORTED.replace("# export: helpers/apps/greeter.py\n", "")),
        lessons / "95_exports.ipynb",
    )
    assert stale_exports(lessons, tmp_path) == [
        "helpers/apps/greeter.py: says it is generated, but no lesson cell exports it"
    ]


@pytest.mark.parametrize(
    "cell, expected",
    [
        (
            "x = 1\n# export: helpers/apps/x.py\n",
            "second line of a cell that starts with %%writefile",
        ),
        ("%%writefile a.py\nx = 1\n# export: helpers/apps/x.py\n", "second line"),
        ("%%writefile a.py\n# export: notebooks/x.py\n", "cannot export to notebooks/x.py"),
        ("%%writefile a.py\n# export: helpers/../x.py\n", "cannot export"),
        (
            "%%writefile a.py\n# export: helpers/apps/x.py\n# Generated from notebooks/95.ipynb (cell 3)\n",
            "delete that line from the cell",
        ),
    ],
)
def test_a_misplaced_export_line_is_a_clear_error(tmp_path: Path, cell: str, expected: str) -> None:
    from helpers.lessons.export import exports

    lessons = _write(_exporting_lesson(cell), tmp_path / "95_exports.ipynb").parent
    with pytest.raises(NotebookSourceError, match=re.escape(expected)):
        exports(lessons)


def test_two_cells_cannot_export_the_same_module(tmp_path: Path) -> None:
    from helpers.lessons.export import exports

    _write(_exporting_lesson(), tmp_path / "95_exports.ipynb")
    _write(_exporting_lesson(), tmp_path / "96_again.ipynb")
    with pytest.raises(NotebookSourceError, match="both export to helpers/apps/greeter.py"):
        exports(tmp_path)
