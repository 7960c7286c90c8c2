"""Grade a class: run every submitted lab notebook headless, with the hidden checks put back.

The submissions folder holds one folder per student, with that student's lab notebooks in it
(the file names of ``labs/student/``)::

    submissions/
      alice/lab01_first_deployment.ipynb
      alice/lab02_config_and_updates.ipynb
      bob/lab01_first_deployment.ipynb

For each notebook the grader

1. restores every check cell from the lab's source (an edited check gets its code back) and
   inserts the hidden-check cells (:func:`helpers.labs.notebooks.restore_checks`);
2. injects the parameters (papermill's parameterization): the cluster to use, the student's
   id (the folder name, so each student's applications have names of their own), and any
   run-profile or ``-p`` values;
3. executes it with nbclient, errors allowed (every cell runs, so every check is recorded)
   and a time limit per cell, except the check cells, which the grader runs *itself*, in its
   own process, against the cluster and the kernel's deliverables, with the thresholds of the
   lab's definition (:mod:`helpers.labs.referee`): the score is what those checks returned,
   never a file or a variable the student's code can write;
4. ends anything the notebook left running (by process id);
5. counts the hints the student asked for (``lab.hint(N)``), per task: the highest tier shown
   in the submitted notebook's outputs or in the executed one's (:func:`hints_in`). The count
   is only *reported* (report, ``summary.csv``, the class summary): a forged or deleted hint
   output can hide hints, never change a score, which comes from the checks alone.

It writes, under the output folder, ``<student>/report.md``, the executed notebooks and one
``<lab>.grade.json`` per submission, and for the class ``summary.csv``, ``summary.md`` and
``summary.html``.

Grading needs a cluster the grader can reach itself: the classroom's (``ray_address``), or,
when none is given, one the grader starts on this machine for the class (when the first
notebook that can run comes up) and stops at the end.

Nothing is lost: a submission that cannot be run (a corrupt notebook, a file named after no
lab, an error in the grader itself) gets a report that says
why, and the class goes on. Each submission has a wall-clock deadline (``deadline_s``) after
which its kernel and everything it started are ended: a cell that ignores the interrupt of the
per-cell timeout cannot hold up the class. A rerun of some labs or some students
(``--labs lab02``) merges into the reports already in the output folder. Two folder names
never share an output folder ("Alice" and "alice"), and an output folder inside the
submissions folder is refused.

Usage::

    python -m helpers.labs grade submissions/ --out build/grades \\
        --ray-address 10.0.0.5:6379 --dashboard-url http://10.0.0.5:8265 --token-path token

or from Python: ``grade_folder(Path("submissions"), Path("build/grades"), ray_address=...)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat

from helpers.cluster import connect_to_cluster, start_local_cluster
from helpers.errors import WorkbookError
from helpers.labs.checks import (
    HIDDEN_CHECKS_INSTALLED,
    RESULTS_ENV,
    CheckResult,
    checks_for,
)
from helpers.labs.notebooks import LAB_PATTERN, RestoreReport, lab_id, restore_checks, source_for
from helpers.labs.referee import Referee, RefereeClient, check_sources, lab_definition
from helpers.labs.sandbox import ClassSandbox, check_sandbox
from helpers.labs.session import HINT_METADATA, LabSession, lab_hints, letters_and_digits
from helpers.ports import free_port
from helpers.processes import end_leftovers, find_leftovers, interrupt_on_termination, stop_session
from helpers.profiles import check_parameters

if TYPE_CHECKING:  # pragma: no cover
    from helpers.cluster import ClusterHandle

__all__ = [
    "Submission",
    "LabGrade",
    "grading_id",
    "find_submissions",
    "prepare_submission",
    "grade_submission",
    "grade_folder",
    "write_reports",
    "hints_in",
]

#: The wall-clock time one submission may take, all cells together (a lab takes a few minutes).
DEFAULT_DEADLINE_S = 1800.0


@dataclass(frozen=True)
class Submission:
    """One student's notebook for one lab."""

    student: str
    lab: str
    path: Path
    problem: str = ""  # why it cannot be run (a corrupt notebook, no such lab); empty if it can
    notes: tuple[str, ...] = ()  # what the grader noticed and worked around

    @property
    def id(self) -> str:
        return grading_id(self.student)


def grading_id(student: str) -> str:
    """The student's output folder and the id their applications are named with.

    The folder name itself when it already is one (``alice``); otherwise its letters and
    digits and a hash of the exact name (``Alice`` -> ``alice-3bc51062``, ``___`` ->
    ``student-…``), so that no two folder names ever share an output folder or an application
    name on the cluster.
    """
    slug = letters_and_digits(student)
    if slug == student and len(slug) <= 24:
        return slug
    digest = hashlib.sha256(student.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{slug[:15].strip('-') or 'student'}-{digest}"


@dataclass
class LabGrade:
    """The outcome of one submission: every check's result, and what went wrong around it."""

    student: str
    lab: str
    status: str  # "graded", "kernel died", "timed out after N s", "not graded: why"
    results: list[CheckResult] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # checks that never reported
    tampered: list[str] = field(default_factory=list)  # check cells the student changed
    errors: list[str] = field(default_factory=list)  # cells that raised (not the checks)
    notes: list[str] = field(default_factory=list)  # what the grader noticed and worked around
    seconds: float = 0.0
    executed: Path | None = None
    hints: dict[str, int] = field(default_factory=dict)  # task -> hints used (reported only)

    @property
    def hints_total(self) -> int:
        return sum(self.hints.values())

    def hints_text(self) -> str:
        """``"1:2 3:1"``: hints used per task (tasks with none left out); empty if none."""
        return " ".join(
            f"{task}:{n}" for task, n in sorted(self.hints.items(), key=lambda kv: int(kv[0])) if n
        )

    def passed_checks(self) -> set[str]:
        """The lab's checks that passed: every result recorded for them passed (a check that
        also reported a failure did not)."""
        names = {c.name for c in checks_for(self.lab)}
        passed = {r.check for r in self.results if r.passed and r.check in names}
        return passed - {r.check for r in self.results if not r.passed}

    def count(self, *, hidden: bool) -> tuple[int, int]:
        """(passed, total) over the visible or the hidden checks of the lab (as the lab
        defines them, not as a result says)."""
        expected = checks_for(self.lab, hidden=hidden)
        passed = self.passed_checks()
        return sum(c.name in passed for c in expected), len(expected)

    @property
    def score(self) -> float:
        """Percent of all the lab's checks that passed (visible and hidden weigh the same)."""
        vp, vt = self.count(hidden=False)
        hp, ht = self.count(hidden=True)
        return round(100.0 * (vp + hp) / (vt + ht), 1) if vt + ht else 0.0

    def row(self) -> dict[str, Any]:
        vp, vt = self.count(hidden=False)
        hp, ht = self.count(hidden=True)
        return {
            "student": self.student,
            "lab": self.lab,
            "visible_passed": vp,
            "visible_total": vt,
            "hidden_passed": hp,
            "hidden_total": ht,
            "score_percent": self.score,
            "status": self.status,
            "tampered_checks": len(self.tampered),
            "errors": len(self.errors),
            "hints_used": self.hints_total,
            "hints_by_task": self.hints_text(),
            "seconds": round(self.seconds, 1),
        }

    #: The fields saved as they are (the others are converted in to_json and from_json).
    _PLAIN_FIELDS = (
        "student",
        "lab",
        "status",
        "missing",
        "tampered",
        "errors",
        "notes",
        "seconds",
    )

    def to_json(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self._PLAIN_FIELDS}
        data["results"] = [r.__dict__ for r in self.results]
        data["executed"] = str(self.executed) if self.executed else None
        data["hints"] = dict(self.hints)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabGrade:
        grade = cls(**{k: data[k] for k in cls._PLAIN_FIELDS})
        grade.results = [CheckResult(**r) for r in data["results"]]
        grade.executed = Path(data["executed"]) if data.get("executed") else None
        grade.hints = {str(k): int(v) for k, v in (data.get("hints") or {}).items()}
        return grade


def find_submissions(folder: Path, labs: Sequence[str] = ()) -> list[Submission]:
    """Every ``<student>/labNN_*.ipynb`` under ``folder`` (optionally only some labs)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WorkbookError(
            f"No submissions folder {folder}.",
            "give a folder with one folder per student, each holding that "
            "student's lab notebooks (labNN_slug.ipynb).",
        )
    found = []
    for student_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if student_dir.name.startswith("."):
            continue
        for path in sorted(student_dir.glob(LAB_PATTERN)):
            submission = _submission(student_dir.name, path)
            if not labs or submission.lab in labs:
                found.append(submission)
    if not found:
        raise WorkbookError(
            f"No lab notebooks found under {folder}.",
            "expected files like STUDENT/lab01_first_deployment.ipynb.",
        )
    ids: dict[str, str] = {}
    for sub in found:
        other = ids.setdefault(sub.id, sub.student)
        if other != sub.student:  # a hash collision: never merge two students' work
            raise WorkbookError(
                f"The student folders {other!r} and {sub.student!r} map to one "
                f"output folder {sub.id!r}.",
                "rename one of them.",
            )
    return found


def _submission(student: str, path: Path) -> Submission:
    """The lab a notebook is graded as: its file name's (``lab01_*.ipynb``), which the student
    cannot change without the grader noticing; a notebook whose metadata names another lab is
    graded as the file name says, with a note."""
    lab = lab_id(path)
    try:
        source_for(lab)
    except WorkbookError as err:
        return Submission(
            student, lab, path, problem=f"no lab {lab} in this course ({err.fix.rstrip('.')})"
        )
    try:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # noqa: BLE001 - a corrupt file is reported, not fatal
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        return Submission(
            student,
            lab,
            path,
            problem=f"not a readable notebook ({type(err).__name__}: {first}); "
            "ask the student to submit the .ipynb file again",
        )
    meta = nb.metadata.get("workbook_lab")
    claimed = meta.get("id") if isinstance(meta, dict) else None
    notes: tuple[str, ...] = ()
    if claimed and claimed != lab:
        notes = (
            f"the notebook's metadata names lab {str(claimed)[:40]!r}; graded as {lab}, "
            "as its file name says",
        )
    return Submission(student, lab, path, notes=notes)


def hints_in(nb: nbformat.NotebookNode, lab: str) -> tuple[dict[str, int], list[str]]:
    """Hints used per task, as the notebook's outputs show them (``lab.hint(N)`` records its
    tier in the output's metadata): the highest tier shown of each task. Returns that and what
    was wrong with records left out (another lab's, a task or tier the lab has not): a student
    can edit outputs, so a record is believed only as far as the lab's hints go, and the
    count is only ever reported."""

    try:
        tiers = {str(task): len(h) for task, h in lab_hints(lab).items()}
    except WorkbookError:
        tiers = {}
    used: dict[str, int] = {}
    problems: list[str] = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            record = (output.get("metadata") or {}).get(HINT_METADATA)
            if record is None:
                continue
            try:
                task, tier, of_lab = str(int(record["task"])), int(record["tier"]), record["lab"]
            except (KeyError, TypeError, ValueError):
                problems.append(f"cell {index}: a hint record that is not one; left out")
                continue
            if of_lab != lab or task not in tiers or not 1 <= tier <= tiers[task]:
                problems.append(
                    f"cell {index}: a hint record for {str(of_lab)[:20]!r} task "
                    f"{task} tier {tier}, not a hint of {lab}; left out"
                )
                continue
            used[task] = max(used.get(task, 0), tier)
    return used, problems


def prepare_submission(
    submission: Submission, parameters: Mapping[str, Any]
) -> tuple[nbformat.NotebookNode, RestoreReport]:
    """The notebook the grader runs: checks restored, hidden checks in, parameters injected."""
    from papermill.parameterize import parameterize_notebook

    source_path = source_for(submission.lab)
    source = nbformat.read(str(source_path), as_version=4)
    nb = nbformat.read(str(submission.path), as_version=4)
    nb, report = restore_checks(nb, source)
    check_parameters(source_path, parameters)
    nb.metadata.setdefault("kernelspec", source.metadata.get("kernelspec"))
    nb.metadata.setdefault("language_info", {"name": "python"})
    nb.metadata["papermill"] = {"input_path": str(submission.path)}  # papermill's own record
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])
    nb = parameterize_notebook(nb, dict(parameters), kernel_name="python3", language="python")
    return nb, report


@contextlib.contextmanager
def _scratch(path: Path) -> Iterator[None]:
    previous = os.environ.get("WORKBOOK_SCRATCH")
    os.environ["WORKBOOK_SCRATCH"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("WORKBOOK_SCRATCH", None)
        else:
            os.environ["WORKBOOK_SCRATCH"] = previous


def _cell_errors(nb: nbformat.NotebookNode) -> list[str]:
    out = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "injected-parameters" in cell.metadata.get("tags", []):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and output.get("ename") != "LabCheckFailed":
                first = (str(output.get("evalue") or "").strip().splitlines() or [""])[0]
                out.append(f"cell {index}: {output.get('ename')}: {first[:200]}")
    return out


def _execute_in_worker(client: Any, env: Mapping[str, str], deadline_s: float) -> bool:
    """``client.execute(env=env)`` in a worker thread, waiting here; False if ``deadline_s``
    passed first (the kernel, and what it started, are then ended).

    In the main thread nbclient installs SIGTERM and SIGINT handlers of its own that stop the
    kernel and then *swallow* the signal (and, removing them, drop the grader's): a cancelled
    grading job would go on to the next student. Outside the main thread it installs none, so
    the grader's handler (:func:`interrupt_on_termination`) raises ``KeyboardInterrupt`` here;
    the kernel, in a session of its own (jupyter_client starts it so), is then stopped by its
    id, and the interrupt goes on up.

    The deadline is the whole notebook's: nbclient's per-cell timeout only *interrupts* the
    kernel and goes on to the next cell, so a cell that ignores SIGINT would cost every later
    cell its full timeout.
    """
    errors: list[BaseException] = []

    def work() -> None:
        try:
            client.execute(env=env)
        except BaseException as err:  # noqa: BLE001 - re-raised in the waiting thread
            errors.append(err)

    def stop_kernel() -> None:
        kernel_pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
        if kernel_pid:
            stop_session(kernel_pid, grace_s=5)
        worker.join(10)  # nbclient notices the dead kernel; it may not, and need not, finish

    worker = threading.Thread(target=work, name="grading-kernel", daemon=True)
    deadline = time.monotonic() + deadline_s
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
            if time.monotonic() > deadline:
                stop_kernel()
                return False
    except KeyboardInterrupt:
        stop_kernel()
        raise
    if errors:
        raise errors[0]
    return True


def grade_submission(
    submission: Submission,
    out_dir: Path,
    parameters: Mapping[str, Any],
    *,
    cluster: ClusterHandle | None = None,
    sandbox: ClassSandbox | None = None,
    cell_timeout_s: float = 600.0,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> LabGrade:
    """Run one submission (see the module docstring) and return its grade. ``cluster`` is
    the grader's own handle on the cluster the notebook is pointed at (``parameters``'
    ``ray_address``), which its checks use; a submission that can be run needs it. With a
    ``sandbox`` its kernel runs in a box of its own (:mod:`helpers.labs.sandbox`)."""
    from nbclient.exceptions import DeadKernelError

    grade = LabGrade(submission.student, submission.lab, "graded", notes=list(submission.notes))
    if submission.problem:
        grade.status = f"not graded: {submission.problem}"
        grade.missing = [c.name for c in checks_for(submission.lab)]
        return grade
    if cluster is None:
        raise WorkbookError(
            "grade_submission needs the grader's own handle on the cluster (cluster=...).",
            "grade with grade_folder, which opens (or starts) the class's cluster.",
        )
    box = sandbox.box(parameters.get("token_path")) if sandbox is not None else None
    params = {**parameters, "student": submission.id}
    if box is not None and box.token is not None:
        params["token_path"] = str(box.token)  # the box's own copy: the original is root's
    submitted_hints, _ = hints_in(nbformat.read(str(submission.path), as_version=4), submission.lab)
    nb, report = prepare_submission(submission, params)
    grade.tampered = report.tampered
    student_dir = out_dir / submission.id
    student_dir.mkdir(parents=True, exist_ok=True)
    scratch = box.scratch if box else Path(tempfile.mkdtemp(prefix=f"g{submission.lab[-2:]}-"))
    env = {
        k: v
        for k, v in dict(os.environ, WORKBOOK_SCRATCH=str(scratch), PYTHONUNBUFFERED="1").items()
        if k != RESULTS_ENV  # the kernel's own check runs (if any) record nowhere
    }
    source = nbformat.read(str(source_for(submission.lab)), as_version=4)
    referee = Referee(
        _GraderSession(submission.lab, cluster, submission.id),
        lab_definition(source, params),
        check_sources(source),
        timeout_s=cell_timeout_s,
    )
    started = time.monotonic()
    client = RefereeClient(
        nb,
        km=box.kernel_manager() if box else None,
        referee=referee,
        timeout=cell_timeout_s,
        kernel_name="python3",
        allow_errors=True,
        interrupt_on_timeout=True,
        resources={"metadata": {"path": str(submission.path.parent)}},
    )
    try:
        if not _execute_in_worker(client, env, deadline_s):
            grade.status = f"timed out after {deadline_s:g} s"
    except DeadKernelError:
        grade.status = "kernel died"
    except Exception as err:  # noqa: BLE001 - one bad submission must not stop the class
        grade.status = f"not run ({type(err).__name__}: {str(err)[:120]})"
    finally:
        grade.seconds = time.monotonic() - started
        if box is not None:
            box.end()  # every process of its user id, and its folders
        else:  # a trusted notebook's own record of what it started
            with _scratch(scratch):
                end_leftovers(find_leftovers())
        shutil.rmtree(scratch, ignore_errors=True)  # its registry, and what the kernel left
        referee.session.close()
    executed = student_dir / submission.path.name
    nbformat.write(nb, str(executed))
    grade.executed = executed
    grade.results = list(referee.results)
    reported = {r.check for r in grade.results}
    grade.missing = [c.name for c in checks_for(submission.lab) if c.name not in reported]
    grade.errors = _cell_errors(nb)
    executed_hints, hint_problems = hints_in(nb, submission.lab)
    grade.hints = {
        task: max(submitted_hints.get(task, 0), executed_hints.get(task, 0))
        for task in sorted(set(submitted_hints) | set(executed_hints), key=int)
    }
    grade.notes += hint_problems
    return grade


class _GraderSession:
    """The grader's own :class:`~helpers.labs.session.LabSession` for one student, opened at
    the first check that needs it (this process connects to the cluster then: a notebook that
    never reaches a check costs no connection). Closing it removes its work folder only: the
    student's applications are the student notebook's to delete."""

    def __init__(self, lab: str, cluster: ClusterHandle, student: str) -> None:
        self._args = (lab, cluster, student)
        self._opened: LabSession | None = None

    def _session(self) -> LabSession:
        if self._opened is None:
            lab, cluster, student = self._args
            self._opened = LabSession(lab, cluster, student=student)
        return self._opened

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session(), name)

    def close(self) -> None:
        if self._opened is not None:
            shutil.rmtree(self._opened.work_dir, ignore_errors=True)


class _ClassCluster:
    """The cluster a class is graded on, as the grader reaches it itself: the classroom's
    (``ray_address`` given: checked to answer before any notebook runs), or one started here
    when the first notebook that can run comes up, with Serve on 127.0.0.1, and stopped at
    the end (:meth:`close`)."""

    def __init__(self, parameters: Mapping[str, Any]) -> None:
        self.given = dict(parameters)
        self.handle: ClusterHandle | None = None
        self.started = False
        if self.given.get("ray_address"):
            self.handle = connect_to_cluster(
                str(self.given["ray_address"]),
                dashboard_url=self.given.get("dashboard_url") or None,
                token_path=self.given.get("token_path") or None,
            )

    def parameters(self) -> dict[str, Any]:
        """The notebooks' cluster parameters (starting the cluster if it is the grader's)."""
        if self.handle is None:
            self.handle = start_local_cluster(num_cpus=8)
            self.started = True
            self.handle.run_cli(
                ["serve", "start", "--http-host", "127.0.0.1", "--http-port", str(free_port())]
            )
        token = getattr(self.handle, "token_path", None)
        return {
            "ray_address": self.handle.address,
            "dashboard_url": self.handle.dashboard_url,
            "token_path": str(token) if token else "",
        }

    def close(self) -> None:
        if self.handle is None:
            return
        self.handle.disconnect()
        if self.started:
            self.handle.stop()


def _class_sandbox(cluster: ClusterHandle) -> ClassSandbox:
    """The class's :class:`~helpers.labs.sandbox.ClassSandbox`. It connects this process to
    the cluster, and ``ray.init`` in the main thread installs a SIGTERM handler of Ray's own
    (which exits): the grader's (:func:`interrupt_on_termination`, which ends the running
    kernel first) is put back."""
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return ClassSandbox(cluster)
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in kept.items():
                signal.signal(sig, handler)


def _close_all(sandboxes: Sequence[ClassSandbox]) -> None:
    for sandbox in sandboxes:
        sandbox.close()


def _refuse_out_inside(folder: Path, out_dir: Path) -> None:
    folder, out = Path(folder).resolve(), Path(out_dir).resolve()
    if out == folder or folder in out.parents:
        raise WorkbookError(
            f"The output folder {out_dir} is inside the submissions folder {folder}.",
            "give --out a folder outside the submissions (the "
            "default is build/grades): reports there would overwrite or mix "
            "with the students' work.",
        )


def grade_folder(
    folder: Path,
    out_dir: Path,
    *,
    parameters: Mapping[str, Any] | None = None,
    lab_parameters: Mapping[str, Mapping[str, Any]] | None = None,
    labs: Sequence[str] = (),
    students: Sequence[str] = (),
    cell_timeout_s: float = 600.0,
    deadline_s: float = DEFAULT_DEADLINE_S,
    progress: bool = True,
    sandbox: bool = True,
) -> list[LabGrade]:
    """Grade every submission under ``folder`` (or only some ``labs`` of some ``students``);
    write the reports, merged with those already in ``out_dir``; return this run's grades.

    ``parameters`` go to every notebook (``ray_address`` and the like); ``lab_parameters``
    maps a lab's file stem to parameters for that lab only (a run profile's ``labs:``).
    ``sandbox`` (the default) runs every kernel in a sandbox of its own
    (:mod:`helpers.labs.sandbox`; checked to work before any notebook runs); ``False`` only
    for trusted submissions.
    """
    from tqdm.auto import tqdm

    if not HIDDEN_CHECKS_INSTALLED:  # before any work: grades without them would be wrong
        raise WorkbookError(
            "This copy of the workbook has no hidden checks (helpers/labs/hidden_checks.py): "
            "it is a student kit, which cannot grade.",
            "grade from the instructor's checkout of the workbook (the repository).",
        )
    _refuse_out_inside(folder, out_dir)
    if sandbox:
        check_sandbox()  # before any work: what to install, or --no-sandbox
    submissions = find_submissions(folder, labs)
    if students:
        submissions = [s for s in submissions if s.student in students]
        if not submissions:
            raise WorkbookError(
                f"None of the students {list(students)} has a notebook to grade in {folder}.",
                "give folder names as they are spelled there.",
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    grades = []
    bar = tqdm(submissions, desc="grading", unit="notebook", disable=not progress)
    class_cluster = _ClassCluster(parameters or {})
    boxes: list[ClassSandbox] = []  # made with the first notebook that runs
    # The kernels run in sessions of their own: SIGTERM or SIGHUP to the grader (a cancelled
    # job) must stop the running one and what it started, as Ctrl-C does.
    with interrupt_on_termination() as received, contextlib.ExitStack() as stack:
        stack.callback(class_cluster.close)
        stack.callback(_close_all, boxes)
        for submission in bar:
            bar.set_postfix_str(f"{submission.student} {submission.lab}")
            try:
                params = (
                    {}
                    if submission.problem
                    else dict((lab_parameters or {}).get(source_for(submission.lab).stem, {}))
                )
                params.update(parameters or {})
                if not submission.problem:
                    params.update(class_cluster.parameters())
                    if sandbox and not boxes and class_cluster.handle is not None:
                        boxes.append(_class_sandbox(class_cluster.handle))
                grade = grade_submission(
                    submission,
                    out_dir,
                    params,
                    cluster=class_cluster.handle,
                    sandbox=boxes[0] if boxes else None,
                    cell_timeout_s=cell_timeout_s,
                    deadline_s=deadline_s,
                )
            except KeyboardInterrupt as err:
                what = signal.Signals(received[0]).name if received else str(err) or "Ctrl-C"
                raise KeyboardInterrupt(
                    f"{what} received while grading {submission.student}'s {submission.lab}; "
                    "its kernel and what it started were ended; the notebooks graded before "
                    "it have their reports"
                ) from err
            except Exception as err:  # noqa: BLE001 - one bad submission never stops the class
                grade = LabGrade(
                    submission.student,
                    submission.lab,
                    f"not graded: {type(err).__name__}: {str(err)[:200]}",
                    missing=[c.name for c in checks_for(submission.lab)],
                    notes=list(submission.notes),
                )
            grades.append(grade)
            _save(grade, out_dir)
            write_reports(
                grades, out_dir
            )  # after every notebook: an interrupted class keeps its reports
    return grades


def _save(grade: LabGrade, out_dir: Path) -> None:
    folder = out_dir / grading_id(grade.student)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{grade.lab}.grade.json.tmp"
    tmp.write_text(json.dumps(grade.to_json(), indent=1))
    tmp.replace(folder / f"{grade.lab}.grade.json")


def saved_grades(out_dir: Path) -> list[LabGrade]:
    """Every grade saved under ``out_dir`` by this or earlier runs (a file that cannot be read
    is skipped: it is rewritten when that notebook is graded again)."""
    grades = []
    for path in sorted(Path(out_dir).glob("*/lab[0-9][0-9].grade.json")):
        with contextlib.suppress(ValueError, TypeError, KeyError, OSError):
            grades.append(LabGrade.from_json(json.loads(path.read_text())))
    return grades


# --- reports ----------------------------------------------------------------------------------


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "/")


def student_report(student: str, grades: Sequence[LabGrade]) -> str:
    """One student's report in Markdown: per lab, every check with its feedback."""
    lines = [f"# Lab report: {student}", ""]
    lines += [
        "| lab | score | visible checks | hidden checks | hints used | status |",
        "|---|---|---|---|---|---|",
    ]
    for g in grades:
        vp, vt = g.count(hidden=False)
        hp, ht = g.count(hidden=True)
        lines.append(
            f"| {g.lab} | {g.score:g}% | {vp}/{vt} | {hp}/{ht} | {g.hints_total} | {g.status} |"
        )
    for g in grades:
        lines += [
            "",
            f"## {g.lab}: {g.score:g}%",
            "",
            "| task | check | kind | result | feedback |",
            "|---|---|---|---|---|",
        ]
        by_name = {r.check: r for r in g.results}
        by_name.update({r.check: r for r in g.results if not r.passed})  # a failure wins
        for info in checks_for(g.lab):
            result = by_name.get(info.name)
            kind = "hidden" if info.hidden else "visible"
            if result is None:
                why = (
                    "the notebook was not graded"
                    if g.status.startswith("not graded")
                    else "the notebook stopped before this check"
                )
                lines.append(f"| {info.task} | {info.name} | {kind} | not run | {why} |")
            else:
                mark = "passed" if result.passed else "FAILED"
                lines.append(
                    f"| {info.task} | {info.name} | {kind} | {mark} | {_md(result.feedback)} |"
                )
        if g.hints_total:
            lines += [
                "",
                "Hints used (reported only: they do not change the score): "
                + ", ".join(
                    f"task {t}: {n}"
                    for t, n in sorted(g.hints.items(), key=lambda kv: int(kv[0]))
                    if n
                )
                + ".",
            ]
        if g.tampered:
            lines += [
                "",
                f"Check cells changed or deleted in the submission (restored before "
                f"grading): {', '.join(g.tampered)}.",
            ]
        if g.errors:
            lines += ["", "Cells that raised an error:", ""] + [f"- {_md(e)}" for e in g.errors]
        if g.notes:
            lines += ["", "Noted by the grader:", ""] + [f"- {_md(n)}" for n in g.notes]
    return "\n".join(lines) + "\n"


def write_reports(grades: Sequence[LabGrade], out_dir: Path) -> dict[str, Path]:
    """``<student>/report.md`` per student, and ``summary.csv|md|html`` for the class: the
    ``grades`` given, and the grades of other labs and students saved in ``out_dir`` by
    earlier runs (a partial rerun updates the reports, never drops what it did not grade)."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    merged = {(g.student, g.lab): g for g in saved_grades(out_dir)}
    merged.update({(g.student, g.lab): g for g in grades})
    grades = [merged[key] for key in sorted(merged)]
    students = sorted({g.student for g in grades})
    for student in students:
        mine = [g for g in grades if g.student == student]
        folder = out_dir / grading_id(student)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(student_report(student, mine))
    rows = pd.DataFrame([g.row() for g in grades])
    rows.to_csv(out_dir / "summary.csv", index=False)
    table = rows.pivot_table(
        index="student", columns="lab", values="score_percent", aggfunc="first"
    )
    table["mean"] = table.mean(axis=1).round(1)
    table["hints"] = rows.groupby("student")["hints_used"].sum().reindex(table.index).astype(int)
    table = table.reset_index()
    md = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    for _, r in table.iterrows():
        md.append(
            "| "
            + " | ".join(
                "" if pd.isna(v) else (f"{v:g}%" if isinstance(v, float) else str(v)) for v in r
            )
            + " |"
        )
    detail = [
        "| student | lab | visible | hidden | score | hints (task:count) | status | "
        "tampered | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.to_dict("records"):
        by_task = r["hints_by_task"] if isinstance(r["hints_by_task"], str) else ""
        detail.append(
            f"| {r['student']} | {r['lab']} | {r['visible_passed']}/{r['visible_total']}"
            f" | {r['hidden_passed']}/{r['hidden_total']} | {r['score_percent']:g}% | "
            f"{r['hints_used']} {('(' + by_task + ')') if by_task else ''} | "
            f"{r['status']} | {r['tampered_checks']} | {r['errors']} |"
        )
    (out_dir / "summary.md").write_text(
        "# Class summary\n\nScore per lab: percent of its checks (visible and hidden) passed. "
        "Hints: how many `lab.hint(N)` hints each student used, in all labs (per task below); "
        "reported only, they never change a score.\n\n"
        + "\n".join(md)
        + "\n\n## Per submission\n\n"
        + "\n".join(detail)
        + "\n"
    )
    (out_dir / "summary.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>Class summary</title>"
        "<h1>Class summary</h1><p>Score per lab: percent of its checks passed.</p>"
        + table.to_html(index=False, na_rep="", float_format=lambda v: f"{v:g}%")
        + "<h2>Per submission</h2>"
        + rows.to_html(index=False)
    )
    return {
        "csv": out_dir / "summary.csv",
        "md": out_dir / "summary.md",
        "html": out_dir / "summary.html",
    }
