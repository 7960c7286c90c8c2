"""The classroom labs: generated student versions, their hygiene, the checks and the grader.

Fast tests (no cluster) cover the source -> student transformation, the staleness check, the
restoring of check cells, and the notebooks' structure. The cluster tests then do what a
classroom does, against ONE shared cluster (``ray_address``), with Serve started once:

* the solution of every lab (the source notebooks, hidden checks included) runs under nbval
  with the CI profile as its proof (helpers/labs/proof.py: before each task, the task undone
  and its checks, which must all fail; then the task answered and its checks, which must
  pass), recording every check's result on the answers;
* then the grader grades a small class: "starter" submitted every generated student
  version untouched (with one lab's visible check cells edited to pass), "solved" submitted
  lab 01 done, "forger" lab 01's starter with a cell that replaces the checks in its kernel,
  forges the replies and writes results lines, "lowbar" lab 01 done to a threshold of its own
  (one replica where the lab asks for two);

and the results prove that every check (visible and hidden) passes on the solution and fails
on the student version, and that editing a check cell, replacing the checks in the kernel,
forging results or lowering a threshold does not help: the grader runs the checks itself.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from notebook_builder import notebook as _notebook

from helpers.labs.checks import CHECKS, checks_for, read_results
from helpers.labs.notebooks import (
    BEGIN_HIDDEN,
    BEGIN_SOLUTION,
    CHECK_TAG,
    HIDDEN_TAG,
    SOURCE_DIR,
    STUDENT_DIR,
    LabSourceError,
    hint_spoilers,
    lab_id,
    list_lab_sources,
    make_student_notebook,
    restore_checks,
    solution_key_lines,
    stale_student_versions,
    task_hints,
    task_sections,
)
from helpers.paths import BUILD_DIR, REPO_ROOT
from helpers.profiles import load_profile, notebook_parameters

SOURCES = list_lab_sources()
LAB_PARAMETERS = {"ray_address", "dashboard_url", "token_path", "student"}
CLASSMATE = "classmate"  # runs lab 02 at the same moment as the solution (the classroom run)


def _source(cell: dict) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


# --- the transformation ---------------------------------------------------------------------


def test_there_are_nine_labs_with_checks() -> None:
    assert [lab_id(p) for p in SOURCES] == [f"lab0{i}" for i in range(1, 10)]
    for path in SOURCES:
        lab = lab_id(path)
        assert checks_for(lab, hidden=False), lab
    assert sum(bool(checks_for(lab, hidden=True)) for lab in CHECKS) == 9


def test_each_labs_checks_are_in_its_own_module_and_named_by_the_package() -> None:
    """A lab's visible checks are defined in helpers/labs/checks/labNN.py and nowhere else, its
    hidden ones in hidden_checks.py; every check, by its name, is the registered one on
    ``helpers.labs.checks`` (what the notebooks call), and no two labs share a name."""
    from helpers.labs import checks

    modules = {module.__name__.rsplit(".", 1)[1]: module.__name__ for module in checks.LAB_MODULES}
    assert sorted(modules) == sorted(CHECKS)
    names = [info.name for infos in CHECKS.values() for info in infos]
    assert len(names) == len(set(names)), "two checks share a name: one hides the other"
    for lab, infos in CHECKS.items():
        for info in infos:
            check = getattr(checks, info.name)
            assert check.info == info, info.name
            home = "helpers.labs.hidden_checks" if info.hidden else modules[lab]
            assert check.__module__ == home, (info.name, check.__module__)


def test_importing_one_labs_module_registers_every_lab() -> None:
    """Registration does not depend on what was imported first: a lab module imported alone
    (as a maintainer or a test might) brings the package, hence every lab's checks."""
    code = (
        "import helpers.labs.checks.lab05\n"
        "from helpers.labs.checks.framework import CHECKS\n"
        "print(sum(len(v) for v in CHECKS.values()))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) == sum(len(v) for v in CHECKS.values())


def test_student_versions_are_up_to_date() -> None:
    """The generated student notebooks in the repo match their sources (the CI check)."""
    result = subprocess.run(
        [sys.executable, "-m", "helpers.labs", "generate", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_mode_names_stale_missing_and_orphan_files(tmp_path: Path) -> None:
    source, student = tmp_path / "source", tmp_path / "student"
    shutil.copytree(SOURCE_DIR, source)
    run = [sys.executable, "-m", "helpers.labs", "generate"]
    assert (
        subprocess.run(
            run + ["--source-dir", str(source), "--student-dir", str(student)],
            capture_output=True,
            cwd=REPO_ROOT,
            timeout=120,
        ).returncode
        == 0
    )
    assert stale_student_versions(source, student) == []
    # An instructor edits a source and forgets to regenerate; a student file is deleted; a
    # student file without a source appears.
    lab03 = next(source.glob("lab03_*.ipynb"))
    nb = nbformat.read(str(lab03), as_version=4)
    nb.cells[0].source += "\n\nOne more sentence."
    nbformat.write(nb, str(lab03))
    next(student.glob("lab01_*.ipynb")).unlink()
    (student / "lab99_extra.ipynb").write_text("{}")
    result = subprocess.run(
        run + ["--check", "--source-dir", str(source), "--student-dir", str(student)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"{lab03.name}: differs from what {lab03.name} generates" in result.stderr
    assert "lab01_first_deployment.ipynb: missing" in result.stderr
    assert "lab99_extra.ipynb: has no source" in result.stderr
    assert "python -m helpers.labs generate" in result.stderr  # says how to fix it


def test_solution_regions_become_a_raise_with_the_hint(tmp_path: Path) -> None:
    nb = _notebook(
        ("md", "## Task 2 · Do it", []),
        (
            "code",
            "x = None\n### BEGIN SOLUTION\n# HINT: use sum(...)\n# HINT: of the list\n"
            "x = sum([1, 2])\n### END SOLUTION\nprint(x)",
            [],
        ),
        (
            "code",
            "def f():\n    y = 1\n    ### BEGIN SOLUTION\n    return y + 1\n    ### END SOLUTION",
            [],
        ),
        ("code", "check(x)", [CHECK_TAG]),
        ("code", f"{BEGIN_HIDDEN}\nhidden_check(x)\n### END HIDDEN CHECKS", [HIDDEN_TAG]),
    )
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="3\n")]
    nb.cells[1].execution_count = 4
    path = tmp_path / "lab09_demo.ipynb"
    nbformat.write(nb, str(path))
    student = make_student_notebook(path)
    texts = [_source(c) for c in student.cells]
    assert texts[1] == (
        "x = None\n# YOUR CODE HERE (Task 2)\n"
        "raise NotImplementedError('Task 2: use sum(...) of the list')\nprint(x)"
    )
    assert texts[2] == (
        "def f():\n    y = 1\n    # YOUR CODE HERE (Task 2)\n"
        "    raise NotImplementedError('Task 2: write your solution here.')"
    )
    assert texts[3] == "check(x)"
    assert len(student.cells) == 4, "the hidden-checks cell is dropped"
    assert [c.id for c in student.cells] == ["c0", "c1", "c2", "c3"]
    assert student.cells[1].outputs == [] and student.cells[1].execution_count is None
    assert student.metadata["workbook_lab"]["id"] == "lab09"
    for text in texts[1:]:
        compile(text, "cell", "exec")  # still valid Python


def test_tiered_hints_and_starters_in_the_student_version() -> None:
    nb = _notebook(
        ("md", "## Task 1 · Count", []),
        (
            "code",
            "n = None\n### BEGIN SOLUTION\n# HINT: count the words of text into n\n"
            "# HINT 1: words are separated by spaces\n# HINT 2: https://docs.python.org/3/"
            "library/stdtypes.html#str.split\n# HINT 3: n = len(___)\n"
            "# HINT 3: print(n)\n# STARTER: words = ___  # the words of text\n"
            "# STARTER:\n# STARTER:     # indented\nn = len(text.split(' '))\n"
            "### END SOLUTION",
            [],
        ),
        ("code", "check(n)", [CHECK_TAG]),
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "lab09_demo.ipynb"
        nbformat.write(nb, str(path))
        student = make_student_notebook(path)
    assert _source(student.cells[1]) == (
        "n = None\n# YOUR CODE HERE (Task 1)\n"
        "raise NotImplementedError('Task 1: count the words of text into n. Stuck? lab.hint(1) "
        "gives a hint, each call the next one.')\nwords = ___  # the words of text\n\n"
        "    # indented"
    )
    assert student.metadata["workbook_lab"]["hints"] == {
        "1": [
            "words are separated by spaces",
            ("https://docs.python.org/3/library/stdtypes.html#str.split"),
            "n = len(___)\nprint(n)",
        ]
    }
    assert task_hints(nb) == {1: student.metadata["workbook_lab"]["hints"]["1"]}
    assert solution_key_lines(nb, 1) == ["n = len(text.split(' '))"]
    assert hint_spoilers(nb) == []
    nb.cells[1].source = nb.cells[1].source.replace(
        "# HINT 3: print(n)", "# HINT 3: n = len(text.split(' '))"
    )
    spoiler = "notebook task 1, hint 3: contains the solution's line \"n = len(text.split(' '))\""
    assert hint_spoilers(nb) == [spoiler]
    nb.cells[1].source = nb.cells[1].source.replace("# HINT 2:", "# HINT 4:")
    with pytest.raises(LabSourceError, match="tiers \\[1, 3, 4\\]"):
        task_hints(nb)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_every_task_has_three_hints_and_none_gives_the_answer_away(path: Path) -> None:
    """A nudge, the API to look at (a link to its documentation), a partial skeleton; no tier,
    and no blank's what-to-do message, holds a key line of the task's solution."""
    nb = nbformat.read(str(path), as_version=4)
    hints = task_hints(nb, path.name)
    assert sorted(hints) == [task for task, _, _ in task_sections(nb)]
    for task, tiers in hints.items():
        assert len(tiers) == 3, (task, tiers)
        assert "https://" not in tiers[0] and "https://" in tiers[1], (task, tiers[:2])
        assert "___" in tiers[2], f"task {task}: the skeleton marks what is left to fill"
        assert solution_key_lines(nb, task, path.name), f"task {task}: nothing to compare with"
    assert hint_spoilers(nb, path.name) == []
    student = json.loads((STUDENT_DIR / path.name).read_text())
    assert student["metadata"]["workbook_lab"]["hints"] == {str(t): h for t, h in hints.items()}


def test_lab07_tells_the_fixes_only_after_the_diagnosis() -> None:
    """Task 2's prose names no fix (Task 1 is finding them); the check of Task 1 prints them
    once the diagnosis is right."""
    nb = nbformat.read(str(SOURCE_DIR / "lab07_troubleshooting.ipynb"), as_version=4)
    task2 = next(_source(c) for c in nb.cells if _source(c).startswith("## Task 2"))
    for fix in ("0.25", "quarter", "threshold", "0.5", "num_replicas", "spelled", "gamma_replicas"):
        assert fix not in task2, fix
    checks_source = (REPO_ROOT / "helpers" / "labs" / "checks" / "lab07.py").read_text()
    diagnosis = checks_source[
        checks_source.index("def lab07_diagnosis") : checks_source.index("def lab07_intent")
    ]
    for cause in ("unschedulable", "crashes", "ignored-key", "healthy", "observed[app] in"):
        assert cause not in diagnosis.split("observed = ")[1], cause


@pytest.mark.parametrize(
    ("text", "tags", "expected"),
    [
        ("### BEGIN SOLUTION\nx = 1", [], "never closed"),
        ("x = 1\n### END SOLUTION", [], "without a BEGIN"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", [], "inside another"),
        (f"{BEGIN_HIDDEN}\ncheck()\n### END HIDDEN CHECKS", [], "not tagged 'hidden-checks'"),
        ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", [CHECK_TAG], "must not contain a solution"),
        (f"{BEGIN_HIDDEN}\ncheck()", [HIDDEN_TAG], "never closed"),
    ],
)
def test_malformed_regions_are_clear_errors(
    tmp_path: Path, text: str, tags: list[str], expected: str
) -> None:
    path = tmp_path / "lab09_bad.ipynb"
    nbformat.write(_notebook(("md", "# x", []), ("code", text, tags)), str(path))
    with pytest.raises(LabSourceError) as info:
        make_student_notebook(path)
    assert expected in str(info.value)
    assert "lab09_bad.ipynb, cell 1, line" in str(info.value)
    assert "Fix:" in str(info.value)


def test_restore_checks_undoes_edits_and_puts_hidden_checks_back() -> None:
    source = nbformat.read(str(SOURCES[0]), as_version=4)
    submission = make_student_notebook(SOURCES[0])
    visible = [c for c in submission.cells if CHECK_TAG in c.metadata.get("tags", [])]
    visible[0].source = "print('all good')"  # a student "fixes" a failing check
    submission.cells.remove(visible[1])  # and deletes another
    restored, report = restore_checks(submission, source)
    expected = [
        (c.id, _source(c))
        for c in source.cells
        if {CHECK_TAG, HIDDEN_TAG} & set(c.metadata.get("tags", []))
    ]
    got = [
        (c.id, _source(c))
        for c in restored.cells
        if {CHECK_TAG, HIDDEN_TAG} & set(c.metadata.get("tags", []))
    ]
    assert got == expected  # same cells, same code, same order as in the source
    assert report.restored == [visible[0].id] and report.tampered == [visible[0].id, visible[1].id]
    hidden_ids = [c.id for c in source.cells if HIDDEN_TAG in c.metadata.get("tags", [])]
    assert [
        r.removeprefix("hidden:") for r in report.reinserted if r.startswith("hidden:")
    ] == hidden_ids
    assert [c.id for c in restored.cells] == [c.id for c in source.cells]


# --- hygiene of the lab notebooks -------------------------------------------------------------


def _sections(nb: nbformat.NotebookNode) -> list[tuple[str, list]]:
    """(heading, cells under it) for each '## ' markdown heading."""
    out: list[tuple[str, list]] = [("", [])]
    for cell in nb.cells:
        headings = [line for line in _source(cell).splitlines() if line.startswith("## ")]
        if cell.cell_type == "markdown" and headings:
            out += [(heading, []) for heading in headings]
        else:
            out[-1][1].append(cell)
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_lab_source_reads_as_a_lab(path: Path) -> None:
    nb = nbformat.read(str(path), as_version=4)
    lab = lab_id(path)
    assert _source(nb.cells[0]).startswith(f"# Lab {lab[3:]} · ")
    assert "Your tasks:" in _source(nb.cells[0]) and "minutes" in _source(nb.cells[0])
    headings = [h for h, _ in _sections(nb)][1:]
    tasks = [h for h in headings if h.startswith("## Task ")]
    assert headings[0].startswith("## Setup") and headings[-1] == "## Cleanup"
    assert [int(re.match(r"## Task (\d+)", h).group(1)) for h in tasks] == list(
        range(1, len(tasks) + 1)
    )
    visible_calls, hidden_calls = [], []
    for heading, cells in _sections(nb):
        checks = [c for c in cells if CHECK_TAG in c.metadata.get("tags", [])]
        if heading.startswith("## Task "):
            assert len(checks) == 1, f"{heading}: one visible check cell"
            assert any(BEGIN_SOLUTION in _source(c) for c in cells), f"{heading}: no solution"
        else:
            assert not checks, f"{heading}: a check outside a task"
        for cell in cells:
            called = [
                n for n in re.findall(r"checks\.(\w+)\(", _source(cell)) if n != "deferred_failures"
            ]
            if CHECK_TAG in cell.metadata.get("tags", []):
                visible_calls += called
            elif HIDDEN_TAG in cell.metadata.get("tags", []):
                hidden_calls += called
    assert visible_calls == [c.name for c in checks_for(lab, hidden=False)]
    assert sorted(hidden_calls) == sorted(c.name for c in checks_for(lab, hidden=True))
    last = _source(nb.cells[-1])
    assert "lab.close()" in last and "find_leftovers(owner=os.getpid())" in last


@pytest.mark.parametrize(
    "path",
    SOURCES + sorted(STUDENT_DIR.glob("lab*.ipynb")),
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_lab_notebooks_are_clean_and_parameterized(path: Path) -> None:
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None, f"cell {i}"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    lines = _source(tagged[0]).splitlines()
    for node in ast.parse(_source(tagged[0])).body:
        assert isinstance(node, ast.AnnAssign), f"line {node.lineno}: not `name: type = value`"
        ast.literal_eval(node.value)
        assert "#" in lines[node.lineno - 1], f"parameter on line {node.lineno} has no comment"
    params = notebook_parameters(path)
    assert LAB_PARAMETERS <= set(params), "every lab can be pointed at a classroom cluster"
    if path.parent == STUDENT_DIR:
        text = path.read_text()
        assert BEGIN_SOLUTION not in text and BEGIN_HIDDEN not in text
        assert "raise NotImplementedError" in text


def test_ci_profile_has_a_block_for_every_lab() -> None:
    profile = load_profile("ci")
    assert sorted(profile.labs) == [p.stem for p in SOURCES]


# --- the checks against the real cluster -------------------------------------------------------


def _run(argv: list[str], env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def _prepare_solutions(cluster, *, student: str = "solution", labs: tuple[str, ...] = ()) -> Path:
    """The lab sources (all, or ``labs``) with the CI profile, pointed at the shared cluster,
    for ``student``, ready for nbval."""
    folder = BUILD_DIR / ("nbval-labs" if student == "solution" else f"nbval-labs-{student}")
    shutil.rmtree(folder, ignore_errors=True)
    params = [
        f"ray_address={cluster.address}",
        f"dashboard_url={cluster.dashboard_url}",
        f"token_path={cluster.token_path}",
        f"student={student}",
    ]
    prepare = [
        sys.executable,
        "-m",
        "helpers.runner",
        "--labs",
        "--profile",
        "ci",
        "--prepare-only",
        str(folder),
        *labs,
    ] + [a for p in params for a in ("-p", p)]
    env = dict(os.environ, WORKBOOK_SCRATCH=tempfile.mkdtemp(prefix="rswl"))
    prepared = _run(prepare, env, 300)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    return folder


def _solution_under_nbval(notebook: Path, results: Path) -> SimpleNamespace:
    """One lab's solution under nbval in a child pytest (its own scratch folder, as a
    learner's kernel has), the check results appended to ``results``."""
    env = dict(
        os.environ,
        WORKBOOK_SCRATCH=tempfile.mkdtemp(prefix="rswl"),
        WORKBOOK_LAB_RESULTS=str(results),
    )
    started = time.monotonic()
    run = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(notebook),
            "--nbval-lax",
            "--nbval-current-env",
            "--nbval-cell-timeout=900",
            "--nbval-sanitize-with",
            "tests/nbval_sanitize.cfg",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        env,
        900,
    )
    return SimpleNamespace(lab=notebook.stem, run=run, seconds=round(time.monotonic() - started, 1))


#: The forger's cell: it replaces every check in its kernel, and the framework's test, writes
#: passing results wherever results could go, and sets the replies a solution would.
FORGERY = """import json, os
from pathlib import Path
from helpers.labs import checks
from helpers.labs.checks import framework
for name in dir(checks):
    if name.startswith("lab01_"):
        setattr(checks, name, lambda *a, **k: print("✓ forged"))
framework._expect = lambda *a, **k: None
forged = [{"lab": "lab01", "check": c.name, "task": c.task, "hidden": c.hidden, "passed": True,
           "feedback": "", "student": student, "seconds": 0.1} for c in checks.checks_for("lab01")]
for target in [os.environ.get("WORKBOOK_LAB_RESULTS"), Path.cwd().parent.parent / "grades"]:
    if target:
        path = Path(target) / student / "lab01.results.jsonl" if Path(target).is_dir() else Path(target)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\\n" for r in forged))
        except OSError as err:  # in the grader's sandbox: nowhere to write
            print("could not forge", path, type(err).__name__)
http_reply = handle_reply = {"text": sample_text, "words": len(sample_text.split())}"""


def _class_folder(root: Path) -> Path:
    """starter: every student version as generated, lab 01's visible checks edited to pass;
    solved: lab 01 done (the source notebook), after asking for three hints (two of task 1,
    one of task 2); forger: lab 01's starter with :data:`FORGERY` before its last check; lowbar:
    lab 01 done with one replica (a cell after the parameters sets ``replicas = 1``)."""
    folder = root / "submissions"
    for student in ("starter", "solved", "forger", "lowbar"):
        (folder / student).mkdir(parents=True)
    for path in sorted(STUDENT_DIR.glob("lab*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        if lab_id(path) == "lab01":
            for cell in nb.cells:
                if CHECK_TAG in cell.metadata.get("tags", []):
                    cell.source = "print('looks fine to me')"
        nbformat.write(nb, str(folder / "starter" / path.name))
    solved = nbformat.read(str(SOURCES[0]), as_version=4)
    setup = next(i for i, c in enumerate(solved.cells) if "LabSession(" in _source(c))
    asks = nbformat.v4.new_code_cell("lab.hint(1)\nlab.hint(1)\nlab.hint(2)")
    asks.id = "asks-for-hints"
    solved.cells.insert(setup + 1, asks)
    nbformat.write(solved, str(folder / "solved" / SOURCES[0].name))
    forger = nbformat.read(str(STUDENT_DIR / SOURCES[0].name), as_version=4)
    last_check = max(
        i for i, c in enumerate(forger.cells) if CHECK_TAG in c.metadata.get("tags", [])
    )
    forge = nbformat.v4.new_code_cell(FORGERY)
    forge.id = "forgery"
    forger.cells.insert(last_check, forge)  # its replies stand when Task 3's checks run
    nbformat.write(forger, str(folder / "forger" / SOURCES[0].name))
    lowbar = nbformat.read(str(SOURCES[0]), as_version=4)
    params = next(
        i for i, c in enumerate(lowbar.cells) if "parameters" in c.metadata.get("tags", [])
    )
    lower = nbformat.v4.new_code_cell("replicas = 1  # my own bar")
    lower.id = "lower-the-bar"
    lowbar.cells.insert(params + 1, lower)
    nbformat.write(lowbar, str(folder / "lowbar" / SOURCES[0].name))
    return folder


@pytest.fixture(scope="module")
def classroom(workbook_scratch: Path) -> Iterator[SimpleNamespace]:
    """One shared cluster with Serve running, the solution and the class run against it,
    as a class works: the labs whose CI entry says ``shares_machine`` two at a time while the
    class is graded (4-5 min on 2 cores). A classmate runs the same lab as the solution at the
    same moment: lab 02, whose `serve deploy`s of a whole config are the hardest to share."""
    from helpers.cluster import start_local_cluster
    from helpers.labs.grading import grade_folder
    from helpers.ports import free_port
    from helpers.serve_status import app_statuses

    started = time.monotonic()
    # Two nodes with two logical GPUs each: lab 09 places models on them (a classroom's GPU
    # nodes); the other labs ask for no GPU.
    cluster = start_local_cluster(num_cpus=8, num_gpus=2, workers=[{"num_cpus": 1, "num_gpus": 2}])
    try:
        cluster.run_cli(
            ["serve", "start", "--http-host", "127.0.0.1", "--http-port", str(free_port())]
        )
        BUILD_DIR.mkdir(parents=True, exist_ok=True)  # a checkout's first run has no build/
        work = Path(tempfile.mkdtemp(prefix="labs-", dir=BUILD_DIR))
        solution_results = work / "solution.jsonl"
        profile = load_profile("ci")
        folder = _prepare_solutions(cluster)
        notebooks = sorted(folder.glob("lab*.ipynb"))
        sharing = [nb for nb in notebooks if profile.settings_for(nb.stem).shares_machine]
        alone = [nb for nb in notebooks if nb not in sharing]
        same_lab = next(nb for nb in sharing if lab_id(nb) == "lab02")
        classmate = _prepare_solutions(cluster, student=CLASSMATE, labs=(lab_id(same_lab),))
        sharing.remove(same_lab)  # first, beside the classmate's copy (the pool runs two)
        sharing[:0] = [same_lab, classmate / same_lab.name]
        # First, one at a time, the labs that measure (lab 04's throughput target, lab 03's
        # autoscaling): Ray runs replicas at a lower CPU priority (nice) than the grader's
        # kernels, and grading beside lab 04 starved its replica (batches of 2, 1.8x the
        # baseline instead of 6x). Labs 02 and 07 `serve deploy` whole configs beside the
        # others: under the deploy lease, neither undoes another's deploy (ci.yaml says more).
        runs = [_solution_under_nbval(nb, solution_results) for nb in alone]
        # The others two at a time, while the class is graded: most of a lab's time is
        # waiting for Serve (the classroom run averaged 41% of the CPU one lab at a time).
        with ThreadPoolExecutor(2) as pool:
            pending = [pool.submit(_solution_under_nbval, nb, solution_results) for nb in sharing]
            grades = grade_folder(
                _class_folder(work),
                work / "grades",
                parameters={
                    "ray_address": cluster.address,
                    "dashboard_url": cluster.dashboard_url,
                    "token_path": str(cluster.token_path),
                },
                lab_parameters={stem: s.parameters for stem, s in profile.labs.items()},
                cell_timeout_s=300,
                progress=False,
            )
            runs += [future.result() for future in pending]
        # Each lab's time in this run (its proof: the solution plus every task once blank),
        # for labs/README.md's table: one at a time for the labs that measure, two at a time
        # beside the grading for the others.
        timings = [
            {"lab": r.lab, "seconds": r.seconds, "beside": r.lab not in {nb.stem for nb in alone}}
            for r in runs
        ]
        (BUILD_DIR / "classroom-times.json").write_text(json.dumps(timings, indent=1))
        yield SimpleNamespace(
            cluster=cluster,
            nbval=runs,
            alone=[nb.stem for nb in alone],
            same_lab=same_lab.stem,
            solution=read_results(solution_results),
            grades=grades,
            out=work / "grades",
            apps_left=app_statuses(cluster),
            seconds=round(time.monotonic() - started, 1),
        )
    finally:
        cluster.stop()


@pytest.mark.cluster
@pytest.mark.alone  # lab 04 measures a throughput target
def test_every_solution_passes_under_nbval(classroom: SimpleNamespace) -> None:
    """Every lab's solution, and a classmate's copy of lab 02 run at the same moment on the
    same cluster: every check ran and passed, for each of them."""
    assert sorted(r.lab for r in classroom.nbval) == sorted(
        [p.stem for p in SOURCES] + [classroom.same_lab]
    )
    assert {"lab03_autoscaling", "lab04_batching"} <= set(classroom.alone)  # they measure
    for lab in classroom.nbval:
        assert lab.run.returncode == 0, (lab.lab + ":\n" + lab.run.stdout + lab.run.stderr)[-6000:]
        assert re.search(r"\d+ passed", lab.run.stdout), lab.run.stdout[-2000:]
    results = {(r.student, r.lab, r.check): r for r in classroom.solution}
    assert {r.student for r in classroom.solution} == {"solution", CLASSMATE}
    for lab, infos in CHECKS.items():
        students = ["solution"] + ([CLASSMATE] if lab == lab_id(classroom.same_lab) else [])
        for student in students:
            for info in infos:
                result = results.get((student, lab, info.name))
                assert result is not None, f"{lab} {info.name} never ran for {student}"
                assert result.passed, f"{lab} {info.name} ({student}): {result.feedback}"


@pytest.mark.cluster
@pytest.mark.alone  # lab 04 measures a throughput target
def test_every_check_fails_on_the_student_version(classroom: SimpleNamespace) -> None:
    starter = {g.lab: g for g in classroom.grades if g.student == "starter"}
    assert sorted(starter) == sorted(CHECKS)
    for lab, grade in starter.items():
        assert grade.status == "graded", (lab, grade.status)
        assert grade.missing == [], f"{lab}: checks that never reported: {grade.missing}"
        by_name = {r.check: r for r in grade.results}
        for info in CHECKS[lab]:
            result = by_name[info.name]
            assert not result.passed, f"{lab} {info.name} passed on the student version"
            assert "Look at:" in result.feedback, (lab, info.name, result.feedback)
        assert grade.score == 0.0
        assert any("NotImplementedError" in e for e in grade.errors), grade.errors


@pytest.mark.cluster
@pytest.mark.alone  # lab 04 measures a throughput target
def test_the_grader_restores_edited_checks_and_scores_a_good_submission(
    classroom: SimpleNamespace,
) -> None:
    import pandas as pd

    by_key = {(g.student, g.lab): g for g in classroom.grades}
    solved = by_key[("solved", "lab01")]
    assert (solved.score, solved.missing, solved.tampered, solved.errors) == (100.0, [], [], [])
    assert solved.hints == {"1": 2, "2": 1}  # counted from lab.hint's outputs; the score stays
    assert all(not g.hints for g in classroom.grades if g.student == "starter")
    tampered = by_key[("starter", "lab01")]
    assert len(tampered.tampered) == len(checks_for("lab01", hidden=False))
    assert tampered.score == 0.0  # editing the check cells did not help

    summary = pd.read_csv(classroom.out / "summary.csv")
    assert len(summary) == len(SOURCES) + 3
    assert set(summary["student"]) == {"starter", "solved", "forger", "lowbar"}
    row = summary[(summary.student == "solved") & (summary.lab == "lab01")].iloc[0]
    assert (row.visible_passed, row.hidden_passed, row.score_percent) == (3, 3, 100.0)
    assert (row.hints_used, row.hints_by_task) == (3, "1:2 2:1")
    table = (classroom.out / "summary.md").read_text()
    assert "| solved | 100% |" in table and "| starter | 0% |" in table
    assert "<table" in (classroom.out / "summary.html").read_text()
    report = (classroom.out / "starter" / "report.md").read_text()
    assert "## lab03: 0%" in report and "FAILED" in report and "Look at:" in report
    assert "Check cells changed or deleted" in report
    assert (classroom.out / "solved" / SOURCES[0].name).exists()  # the executed notebook


@pytest.mark.cluster
@pytest.mark.alone  # lab 04 measures a throughput target
def test_forged_results_replaced_checks_and_a_lowered_bar_do_not_raise_a_grade(
    classroom: SimpleNamespace,
) -> None:
    """The grader runs the checks itself, with the lab's own thresholds: a kernel that
    replaces the checks and writes passing results scores nothing; a solution built to a
    threshold of its own fails the checks of that threshold and passes the others."""
    by_key = {(g.student, g.lab): g for g in classroom.grades}
    forger = by_key[("forger", "lab01")]
    assert forger.status == "graded" and forger.missing == [], (forger.status, forger.missing)
    assert forger.score == 0.0 and not any(r.passed for r in forger.results), forger.results
    executed = nbformat.read(str(forger.executed), as_version=4)
    printed = [
        o.get("text", "") + o.get("evalue", "")
        for c in executed.cells
        if CHECK_TAG in c.metadata.get("tags", []) or HIDDEN_TAG in c.metadata.get("tags", [])
        for o in c.get("outputs", [])
    ]
    assert printed and not any("forged" in text for text in printed), printed
    by_handle = next(r for r in forger.results if r.check == "lab01_answers_by_handle")
    # the forged reply got past the reply's own test; the cluster then said no
    assert "handle_reply is" not in by_handle.feedback, by_handle.feedback
    assert "forger-lab01-counter" in by_handle.feedback, by_handle.feedback
    lowbar = by_key[("lowbar", "lab01")]
    failed = {r.check: r.feedback for r in lowbar.results if not r.passed}
    assert sorted(failed) == ["lab01_deployment_as_specified", "lab01_handle_calls_spread"], failed
    assert "asked 2, Serve recorded 1" in failed["lab01_deployment_as_specified"]
    assert lowbar.score == round(100 * 4 / 6, 1)


@pytest.mark.cluster
@pytest.mark.alone  # lab 04 measures a throughput target
def test_labs_clean_up_the_shared_cluster(classroom: SimpleNamespace) -> None:
    """Every lab deleted its applications on the classroom cluster, solved or not."""
    assert classroom.apps_left == {}


def test_grader_ended_by_sigterm_stops_the_running_kernel(tmp_path: Path) -> None:
    """The grader's kernels run in sessions of their own: a cancelled grading job (SIGTERM)
    must end the running one before it exits, not leave it (and what it started) running."""
    import signal

    import psutil

    nb = nbformat.read(str(STUDENT_DIR / "lab01_first_deployment.ipynb"), as_version=4)
    first_code = next(
        c
        for c in nb.cells
        if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])
    )
    first_code.source = "import time\ntime.sleep(300)  # a student's slow cell"
    (tmp_path / "class" / "ada").mkdir(parents=True)
    nbformat.write(nb, str(tmp_path / "class" / "ada" / "lab01_first_deployment.ipynb"))
    log = tmp_path / "grader.log"
    grader = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "helpers.labs",
            "grade",
            str(tmp_path / "class"),
            "--out",
            str(tmp_path / "grades"),
        ],
        cwd=REPO_ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        kernels: list = []
        deadline = time.monotonic() + 90
        while not kernels:
            assert time.monotonic() < deadline and grader.poll() is None, grader.poll()
            time.sleep(0.5)
            with contextlib.suppress(psutil.Error):
                kernels = [
                    p
                    for p in psutil.Process(grader.pid).children(recursive=True)
                    if "ipykernel" in " ".join(p.cmdline())
                ]
        time.sleep(2)  # the kernel is in the student's sleep
        grader.send_signal(signal.SIGTERM)
        try:
            grader.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the grader did not exit within 60 s of SIGTERM:\n{log.read_text()[-3000:]}"
            )
        output = log.read_text()
    finally:
        if grader.poll() is None:
            os.killpg(grader.pid, signal.SIGKILL)
    assert grader.returncode == 130, output
    assert "interrupted: SIGTERM received while grading ada's lab01" in output, output
    _, alive = psutil.wait_procs(kernels, timeout=10)
    assert alive == [], f"the kernel outlived the grader: {alive}\n{output[-2000:]}"


def test_a_check_waits_out_a_redeploy_of_an_unchanged_app_but_not_a_failure(monkeypatch) -> None:
    """Anyone's `serve deploy` on a shared cluster shows every config-deployed application
    DEPLOYING until the controller's next pass: a check waits for RUNNING (up to
    REBUILD_GRACE_S); a failed application, or one DEPLOYING past the grace, still fails."""
    from types import SimpleNamespace as NS

    from helpers.check_feedback import CheckProblem
    from helpers.labs.checks import framework as lab_checks

    session = NS(app_name=lambda short: f"me-lab02-{short}", prefix="me-lab02")
    states = iter(["DEPLOYING", "DEPLOYING", "RUNNING"])
    monkeypatch.setattr(
        lab_checks, "_serve_apps", lambda _: {"me-lab02-app": {"status": next(states, "RUNNING")}}
    )
    monkeypatch.setattr(lab_checks.time, "sleep", lambda _: None)
    assert lab_checks._app(session, "app", task=1)["status"] == "RUNNING"
    monkeypatch.setattr(
        lab_checks,
        "_serve_apps",
        lambda _: {"me-lab02-app": {"status": "DEPLOY_FAILED", "message": "boom"}},
    )
    with pytest.raises(CheckProblem, match="DEPLOY_FAILED, not RUNNING: boom"):
        lab_checks._app(session, "app", task=1)
    monkeypatch.setattr(lab_checks, "REBUILD_GRACE_S", 0.05)
    monkeypatch.setattr(
        lab_checks, "_serve_apps", lambda _: {"me-lab02-app": {"status": "DEPLOYING"}}
    )
    with pytest.raises(CheckProblem, match="DEPLOYING, not RUNNING"):
        lab_checks._app(session, "app", task=1)


def test_lab09_names_a_pending_replica_and_does_not_wait_for_a_missing_app(monkeypatch) -> None:
    """A share no node can give leaves a replica pending: the check waits (bounded), then says
    what is pending; an application that `serve deploy` never created fails within seconds."""
    from types import SimpleNamespace as NS

    from helpers.check_feedback import CheckProblem
    from helpers.labs.checks import lab09 as lab_checks

    session = NS(app_name=lambda short: f"me-lab09-{short}", cluster=None)
    clock = iter(range(0, 10_000, 5))  # each reading of the clock: 5 s later
    monkeypatch.setattr(lab_checks.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(lab_checks.time, "sleep", lambda _: None)
    monkeypatch.setattr(
        lab_checks,
        "pending_demands",
        lambda _: ["{'GPU': 1.5, 'CPU': 0.0}: 1+ pending tasks/actors"],
    )
    deploying = {
        "me-lab09-generate": {
            "status": "DEPLOYING",
            "deployments": {
                "ResourceProbe": {
                    "deployment_config": {"num_replicas": 2},
                    "replicas": [
                        {"state": "RUNNING", "node_id": "a"},
                        {"state": "PENDING_ALLOCATION"},
                    ],
                }
            },
        }
    }
    monkeypatch.setattr(lab_checks, "_serve_apps", lambda _: deploying)
    with pytest.raises(
        CheckProblem,
        match=r"DEPLOYING with 1 replica\(s\) running of 2; pending "
        r"on the cluster: \[\"\{'GPU': 1.5",
    ):
        lab_checks._l09_replicas(session, "generate")
    monkeypatch.setattr(lab_checks, "_serve_apps", lambda _: {})
    clock = iter(range(0, 10_000, 1))
    with pytest.raises(CheckProblem, match="Serve has no application 'me-lab09-embed'"):
        lab_checks._l09_replicas(session, "embed")
    assert next(clock) < 10, "a missing application is not waited for a minute"
