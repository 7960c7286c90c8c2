"""The grader with a difficult class: nothing a submission does or is stops the class or loses a
report (the notebooks that run here never get as far as a check; the two tests whose notebooks
run share one cluster, given to the grader as a classroom's is, with ``ray_address``).

What a class throws at a grader: a corrupt notebook, a file named after no lab, metadata that
names another lab, folder names that differ only in case or have no letters at all, a cell
that ignores the per-cell interrupt and loops, an output folder inside the submissions, and a
rerun of one lab that must not drop the reports of the others. (Forged results and edited
thresholds cannot reach a score at all: the grader runs the checks itself, tests/test_referee.py
and the classroom class in tests/test_labs.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from helpers.cluster import start_local_cluster
from helpers.errors import WorkbookError
from helpers.labs.checks import CheckResult, checks_for
from helpers.labs.grading import (
    LabGrade,
    _save,
    find_submissions,
    grade_folder,
    grading_id,
    hints_in,
    write_reports,
)
from helpers.labs.notebooks import STUDENT_DIR
from helpers.labs.session import HINT_METADATA, next_hint, student_slug
from helpers.paths import REPO_ROOT
from helpers.ports import free_port

LAB01 = "lab01_first_deployment.ipynb"
LAB02 = next(p.name for p in STUDENT_DIR.glob("lab02_*.ipynb"))


@pytest.fixture(scope="module")
def classroom() -> Iterator[dict[str, str]]:
    """A cluster with Serve running, for the notebooks that run here: the parameters the
    grader gets for a classroom's cluster."""
    cluster = start_local_cluster(num_cpus=4)
    try:
        cluster.run_cli(
            ["serve", "start", "--http-host", "127.0.0.1", "--http-port", str(free_port())]
        )
        yield {
            "ray_address": cluster.address,
            "dashboard_url": cluster.dashboard_url,
            "token_path": str(cluster.token_path),
        }
    finally:
        cluster.stop()


def _copy(folder: Path, student: str, name: str = LAB01) -> Path:
    (folder / student).mkdir(parents=True, exist_ok=True)
    target = folder / student / name
    target.write_bytes((STUDENT_DIR / name).read_bytes())
    return target


def _first_cell_replaced(path: Path, source: str) -> None:
    """Replace the first code cell after the parameters of the notebook at ``path``."""
    nb = nbformat.read(str(path), as_version=4)
    first_code = next(
        c
        for c in nb.cells
        if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])
    )
    first_code.source = source
    nbformat.write(nb, str(path))


def _result(lab: str, check: str, passed: bool, **extra: object) -> dict:
    info = next(c for c in checks_for(lab) if c.name == check)
    return {
        "lab": lab,
        "check": check,
        "task": info.task,
        "hidden": info.hidden,
        "passed": passed,
        "feedback": "",
        "student": "x",
        "seconds": 0.1,
        **extra,
    }


def test_folder_names_never_share_an_output_folder_or_an_application_name() -> None:
    names = [
        "alice",
        "Alice",
        "ALICE",
        "___",
        "...",
        "Ana María",
        "ana-mar-a",
        "a" * 40,
        "a" * 40 + "b",
        "bob",
    ]
    ids = [grading_id(n) for n in names]
    assert len(set(ids)) == len(names), dict(zip(names, ids))
    assert grading_id("alice") == "alice" and grading_id("bob") == "bob"  # clean ids are kept
    for student_id in ids:
        # usable as it is where the labs name applications and routes after the student
        assert student_slug(student_id) == student_id and len(student_id) <= 24, student_id


def test_one_bad_notebook_is_reported_and_the_others_are_graded(tmp_path: Path) -> None:
    folder = tmp_path / "class"
    _copy(folder, "good")
    corrupt = _copy(folder, "corrupt")
    corrupt.write_text('{"cells": [ this is not json')
    truncated = _copy(folder, "truncated")
    truncated.write_text(truncated.read_text()[:500])
    nolab = _copy(folder, "nolab")
    nolab.rename(nolab.with_name("lab99_made_up.ipynb"))
    edited = _copy(folder, "edited")
    nb = nbformat.read(str(edited), as_version=4)
    nb.metadata["workbook_lab"] = {"id": "lab07"}  # claims another lab
    nbformat.write(nb, str(edited))

    by_student = {s.student: s for s in find_submissions(folder)}
    assert set(by_student) == {"good", "corrupt", "truncated", "nolab", "edited"}
    assert by_student["good"].problem == "" and by_student["good"].notes == ()
    assert "not a readable notebook" in by_student["corrupt"].problem
    assert "not a readable notebook" in by_student["truncated"].problem
    assert (
        by_student["nolab"].lab == "lab99"
        and "no lab lab99 in this course" in by_student["nolab"].problem
    )
    assert by_student["edited"].lab == "lab01" and by_student["edited"].problem == ""
    assert "names lab 'lab07'; graded as lab01" in by_student["edited"].notes[0]

    # Grading never starts a kernel for them, and each gets its report.
    out = tmp_path / "grades"
    grades = grade_folder(folder, out, students=["corrupt", "nolab"], progress=False)
    assert [g.status.split(":")[0] for g in grades] == ["not graded", "not graded"]
    report = (out / "corrupt" / "report.md").read_text()
    assert "not a readable notebook" in report and "the notebook was not graded" in report
    assert (out / "nolab" / "report.md").exists()


def test_a_rerun_of_one_lab_merges_into_the_reports(tmp_path: Path) -> None:
    out = tmp_path / "grades"
    lab01 = [c.name for c in checks_for("lab01")]
    first = [
        LabGrade(
            s, "lab01", "graded", results=[CheckResult(**_result("lab01", n, True)) for n in lab01]
        )
        for s in ("alice", "Alice")
    ]
    first.append(LabGrade("alice", "lab02", "graded"))
    for g in first:
        _save(g, out)
    write_reports(first, out)
    rerun = [LabGrade("alice", "lab02", "graded", notes=["rerun"])]
    _save(rerun[0], out)
    write_reports(rerun, out)

    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 3, summary  # alice lab01, alice lab02 (the rerun), Alice lab01
    assert (out / "alice" / "report.md").read_text().count("## lab0") == 2
    assert "rerun" in (out / "alice" / "report.md").read_text()
    assert (out / grading_id("Alice") / "report.md").exists()
    assert "| Alice | 100% |" in (out / "summary.md").read_text()


def test_hints_are_counted_per_task_reported_and_never_change_a_score(tmp_path: Path) -> None:
    """lab.hint(N) records each hint in its output's metadata; the grader counts the highest
    tier shown per task. Records a student forged (another lab, a task or tier the lab has
    not, garbage) are left out and noted, and hints never change a score, forged or not."""
    nb = nbformat.read(str(STUDENT_DIR / LAB01), as_version=4)
    used: dict[int, int] = {}
    outputs = []
    for task in (1, 1, 2, 1, 1):  # task 1 four times: its three tiers, then the last again
        plain, markdown, record = next_hint("lab01", task, used, "ada")
        outputs.append(
            nbformat.v4.new_output(
                "display_data",
                data={"text/plain": plain, "text/markdown": markdown},
                metadata=record,
            )
        )
    assert used == {1: 3, 2: 1}
    assert "hint 3 of 3" in outputs[3]["data"]["text/plain"]
    forged = [
        {"lab": "lab02", "task": 1, "tier": 1},
        {"lab": "lab01", "task": 9, "tier": 1},
        {"lab": "lab01", "task": 3, "tier": 99},
        {"tier": "many"},
        "three",
    ]
    outputs += [
        nbformat.v4.new_output(
            "display_data", data={"text/plain": "hint"}, metadata={HINT_METADATA: f}
        )
        for f in forged
    ]
    cell = next(c for c in nb.cells if c.cell_type == "code" and "tags" not in c.metadata)
    cell.outputs = outputs
    hints, problems = hints_in(nb, "lab01")
    assert hints == {"1": 3, "2": 1} and len(problems) == len(forged), problems
    with pytest.raises(WorkbookError, match="no hints for task 7"):
        next_hint("lab01", 7, used)

    names = [c.name for c in checks_for("lab01")]
    results = [CheckResult(**_result("lab01", n, True)) for n in names[:4]]
    helped = LabGrade("ada", "lab01", "graded", results=results, hints=hints)
    alone = LabGrade("bob", "lab01", "graded", results=results)
    assert helped.score == alone.score > 0
    out = tmp_path / "grades"
    for grade in (helped, alone):
        _save(grade, out)
    write_reports([helped, alone], out)
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv").set_index("student")
    assert (
        summary.loc["ada", "hints_used"] == 4 and summary.loc["ada", "hints_by_task"] == "1:3 2:1"
    )
    assert summary.loc["bob", "hints_used"] == 0
    assert summary.loc["ada", "score_percent"] == summary.loc["bob", "score_percent"]
    table = (out / "summary.md").read_text()
    assert "| ada | lab01 |" in table and "| 4 (1:3 2:1) |" in table
    assert "Hints used (reported only" in (out / "ada" / "report.md").read_text()
    assert "task 1: 3, task 2: 1" in (out / "ada" / "report.md").read_text()
    assert "Hints used" not in (out / "bob" / "report.md").read_text()
    assert LabGrade.from_json(json.loads((out / "ada" / "lab01.grade.json").read_text())).hints == {
        "1": 3,
        "2": 1,
    }


def test_out_inside_the_submissions_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "class"
    _copy(folder, "alice")
    for out in (folder, folder / "grades", folder / "alice"):
        with pytest.raises(WorkbookError, match="inside the submissions folder"):
            grade_folder(folder, out, progress=False)
    assert sorted(p.name for p in (folder / "alice").iterdir()) == [LAB01]
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers.labs",
            "grade",
            str(folder),
            "--out",
            str(folder / "grades"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 2 and "Fix: give --out a folder outside" in cli.stderr, cli.stderr


def test_a_cell_that_ignores_the_interrupt_is_ended_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, classroom: dict[str, str]
) -> None:
    """nbclient's per-cell timeout only interrupts the kernel and goes on: a loop that ignores
    SIGINT would cost every later cell its timeout. The notebook's deadline ends the kernel;
    the next student is graded. The submission's scratch folder goes with it (a classroom run
    used to leave one folder in /tmp per graded notebook)."""
    import tempfile

    import psutil

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where grading makes its scratch

    folder = tmp_path / "class"
    stubborn = _copy(folder, "stubborn")
    _first_cell_replaced(
        stubborn,
        "import os, signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('kernel', os.getpid(), flush=True)\nwhile True:\n"
        "    time.sleep(0.1)",
    )
    _copy(folder, "zz-broken").write_text("{")  # graded after it: the class goes on

    started = time.monotonic()
    grades = grade_folder(
        folder,
        tmp_path / "grades",
        parameters=classroom,
        cell_timeout_s=3,
        deadline_s=25,
        progress=False,
    )
    elapsed = time.monotonic() - started
    assert [g.student for g in grades] == ["stubborn", "zz-broken"]
    assert grades[0].status == "timed out after 25 s", grades[0].status
    assert grades[0].score == 0.0 and grades[1].status.startswith("not graded")
    assert elapsed < 25 + 60, elapsed  # ended at the deadline, not after every cell's timeout
    executed = nbformat.read(str(grades[0].executed), as_version=4)
    printed = "".join(
        o.get("text", "")
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    kernel_pid = int(printed.split("kernel ", 1)[1].split()[0])
    assert not psutil.pid_exists(kernel_pid) or psutil.Process(kernel_pid).status() == "zombie"
    report = (tmp_path / "grades" / "stubborn" / "report.md").read_text()
    assert "timed out after 25 s" in report
    assert not list(temp.glob("g01-*")), "the submission's scratch folder was left behind"


# --- the labs' proof: each check fails while only its own task is undone -----------------------


def test_the_lab_proof_blanks_each_task_before_its_checks_run() -> None:
    from helpers.labs.notebooks import BEGIN_SOLUTION, SOURCE_DIR
    from helpers.labs.proof import build_lab_proof

    source = SOURCE_DIR / LAB01
    proof = build_lab_proof(source)
    steps = [c for c in proof.cells if c.id.startswith("proof-task-") and c.cell_type == "code"]
    assert [c.id for c in steps] == [f"proof-task-{n}-fails" for n in (1, 2, 3)]
    text = [c.source for c in proof.cells]
    for step in steps:
        task = int(step.id.split("-")[2])
        names = {c.name for c in checks_for("lab01") if c.task == task}
        assert all(name in step.source for name in names), (task, names)  # hidden ones too
        blanks = text[text.index(step.source) - 1]
        assert BEGIN_SOLUTION not in blanks and "left undone (the proof)" in blanks
        # the answer (the section as the source has it) follows the step
        assert any(BEGIN_SOLUTION in t for t in text[text.index(step.source) :])
    assert not any("raise NotImplementedError" in t for t in text)


def test_a_check_that_passes_on_its_undone_task_fails_the_lab_proof() -> None:
    from helpers.labs.checks import CHECKS, CheckProblem, lab_check
    from helpers.labs.proof import LabProofFailed, expect_lab_checks_to_fail

    @lab_check("lab98", 1)
    def lab98_reads_the_deliverable(session: object, value: object) -> None:
        """The task's value is set."""
        if value is None:
            raise CheckProblem("value is None", "Task 1")

    try:
        ns = {
            "checks": sys.modules[__name__],
            "lab": None,
            "value": None,
            "c1": lab98_reads_the_deliverable,
        }
        feedback = expect_lab_checks_to_fail(
            1, lab="lab98", checks=["c1(lab, value)"], namespace=ns
        )
        assert "value is None" in feedback[0]

        @lab_check("lab98", 1, hidden=True)
        def lab98_reads_nothing(session: object) -> None:
            """Looks at nothing of task 1."""

        ns["c2"] = lab98_reads_nothing
        with pytest.raises(LabProofFailed, match="never ran"):  # the hidden one was not called
            expect_lab_checks_to_fail(1, lab="lab98", checks=["c1(lab, value)"], namespace=ns)
        with pytest.raises(LabProofFailed, match=r"lab98_reads_nothing.*PASS"):
            expect_lab_checks_to_fail(
                1, lab="lab98", checks=["c1(lab, value)", "c2(lab)"], namespace=ns
            )
        with pytest.raises(LabProofFailed, match="NameError"):
            expect_lab_checks_to_fail(
                1, lab="lab98", checks=["c1(lab, undefined_name)"], namespace=ns
            )
    finally:
        CHECKS.pop("lab98", None)


HOSTILE = """import json, os, pathlib, signal, subprocess
report = {}
def attempt(name, act):
    try:
        report[name] = "done: " + str(act())[:60]
    except BaseException as err:
        report[name] = "refused: " + type(err).__name__
repo = pathlib.Path(REPO)
attempt("uid", os.getuid)
attempt("read a solution", lambda: (repo / "labs/source" / NAME).read_text())
attempt("read the hidden checks", lambda: (repo / "helpers/labs/hidden_checks.py").read_text())
attempt("import the hidden checks", lambda: __import__("helpers.labs.hidden_checks"))
attempt("list the class", lambda: os.listdir(CLASS))
attempt("write a classmate's notebook", lambda: pathlib.Path(VICTIM).write_text("{}"))
attempt("write into the workbook", lambda: (repo / "helpers/labs/planted.py").write_text(""))
attempt("kill the grader", lambda: os.kill(GRADER, signal.SIGKILL))
attempt("kill its parent", lambda: os.kill(os.getppid(), signal.SIGKILL))
attempt("start a detached process", lambda: subprocess.Popen(
    ["sleep", "600"], start_new_session=True).pid)
print("HOSTILE " + json.dumps(report), flush=True)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox runs kernels as users of their own")
def test_a_hostile_notebook_cannot_read_write_or_kill_outside_its_sandbox(
    tmp_path: Path, classroom: dict[str, str]
) -> None:
    """The kernel runs as a user of its own, in a file system without the solutions, the
    hidden checks or the class, and with nothing to signal but its own processes, all of which
    are ended with it (``helpers/labs/sandbox.py``)."""
    import psutil

    from helpers.labs.sandbox import UID_BASE

    folder = tmp_path / "class"
    victim = _copy(folder, "alice")
    victim.write_text('{"cells": [')  # not graded (no kernel): it must stay as it is
    before = victim.read_bytes()
    _first_cell_replaced(
        _copy(folder, "mallory"),
        f"REPO, NAME, CLASS = {str(REPO_ROOT)!r}, {LAB01!r}, {str(folder)!r}\n"
        f"VICTIM, GRADER = {str(victim)!r}, {os.getpid()}\n" + HOSTILE,
    )

    planted = REPO_ROOT / "helpers/labs/planted.py"  # what the notebook tries to write
    try:
        grades = grade_folder(
            folder, tmp_path / "grades", parameters=classroom, cell_timeout_s=120, progress=False
        )
    finally:
        written = planted.exists()
        planted.unlink(missing_ok=True)
    assert not written

    by_student = {g.student: g for g in grades}
    assert by_student["mallory"].status == "graded", by_student["mallory"].status
    executed = nbformat.read(str(by_student["mallory"].executed), as_version=4)
    printed = "".join(
        o.get("text", "")
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "HOSTILE " in printed, printed[-3000:]
    report = json.loads(printed.split("HOSTILE ", 1)[1].splitlines()[0])
    uid = int(report.pop("uid").removeprefix("done: "))
    assert UID_BASE <= uid < UID_BASE + 1000, uid
    detached = int(report.pop("start a detached process").removeprefix("done: "))
    assert report == {
        "read a solution": "refused: FileNotFoundError",
        "read the hidden checks": "refused: FileNotFoundError",
        "import the hidden checks": "refused: ModuleNotFoundError",
        "list the class": "refused: FileNotFoundError",
        "write a classmate's notebook": "refused: FileNotFoundError",
        "write into the workbook": "refused: OSError",
        "kill the grader": "refused: PermissionError",
        "kill its parent": "refused: PermissionError",
    }, report
    assert victim.read_bytes() == before
    assert not psutil.pid_exists(detached) or psutil.Process(detached).status() == "zombie"
    assert (tmp_path / "grades" / "mallory" / "report.md").exists()
    assert (tmp_path / "grades" / "alice" / "report.md").exists()
