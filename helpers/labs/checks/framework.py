"""What every lab's checks share: the registry, the results, and the reading of the cluster.

:func:`lab_check` registers a check with its lab and task, visible or hidden, and wraps it so
that it records its result, prints a line when it passes and raises :class:`LabCheckFailed`
with the feedback when it does not (the format all the workbook's checks share:
:mod:`helpers.check_feedback`). :data:`CHECKS` is the registry, by lab id.

The ``_``-names below (``_app``, ``_expect``, ``_post``, ...) are the plumbing the lab modules
(:mod:`helpers.labs.checks.lab01` ...) and the hidden checks share; learners and the grader
use :mod:`helpers.labs.checks`, the package, which registers every lab's checks.

Usage (a lab module)::

    from helpers.labs.checks.framework import _app, _expect, lab_check

    @lab_check("lab10", 1)           # the docstring's first line is the check's summary
    def lab10_answers(session: "LabSession") -> None:
        _app(session, "echo", task=1)  # a CheckProblem if it is missing or not RUNNING
        _expect(_json(_post(session.url("echo"), {}, look="Task 1"), look="Task 1") == {},
                "The app does not echo an empty body.", "Task 1: Echo.__call__")
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.check_feedback import CheckFailed, CheckProblem, feedback, report_pass
from helpers.errors import WorkbookError
from helpers.load import run_in_new_loop
from helpers.serve_status import serve_details

if TYPE_CHECKING:  # pragma: no cover
    from helpers.labs.session import LabSession

__all__ = [
    "RESULTS_ENV",
    "CheckInfo",
    "CheckResult",
    "CheckProblem",
    "LabCheckFailed",
    "CHECKS",
    "checks_for",
    "parse_result",
    "read_results",
    "deferred_failures",
    "collected_results",
    "conclude",
    "expected_checks_text",
    "lab_check",
    "REBUILD_GRACE_S",
]

RESULTS_ENV = "WORKBOOK_LAB_RESULTS"


@dataclass(frozen=True)
class CheckInfo:
    """A registered check: its lab, name, task, visibility and one-line summary."""

    lab: str
    name: str
    task: int
    hidden: bool
    summary: str


@dataclass
class CheckResult:
    """One run of one check."""

    lab: str
    check: str
    task: int
    hidden: bool
    passed: bool
    feedback: str
    student: str
    seconds: float


class LabCheckFailed(CheckFailed):
    """A lab's check failed; the message is the feedback."""


#: lab id -> its checks, in the order they are defined.
CHECKS: dict[str, list[CheckInfo]] = {}

_deferred: list[list[CheckResult]] = []
_collectors: list[list[CheckResult]] = []


def checks_for(lab: str, *, hidden: bool | None = None) -> list[CheckInfo]:
    """The registered checks of ``lab`` (only hidden / only visible ones if asked)."""
    return [c for c in CHECKS.get(lab, []) if hidden is None or c.hidden == hidden]


def parse_result(line: str) -> CheckResult:
    """One line of a results file; ``ValueError`` or ``TypeError`` if it is not a result."""
    result = CheckResult(**json.loads(line))
    if not (
        isinstance(result.passed, bool)
        and isinstance(result.check, str)
        and isinstance(result.lab, str)
    ):
        raise TypeError("a result's lab and check are strings and passed is true or false")
    return result


def read_results(path: str | Path) -> list[CheckResult]:
    """The results a run appended to ``path`` (an empty list if there is no file)."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [parse_result(line) for line in lines if line.strip()]


def _record(result: CheckResult) -> None:
    for collected in _collectors:
        collected.append(result)
    target = os.environ.get(RESULTS_ENV)
    if target:
        with open(target, "a") as handle:
            handle.write(json.dumps(asdict(result)) + "\n")


@contextlib.contextmanager
def collected_results() -> Iterator[list[CheckResult]]:
    """The results of the checks run in this process while the block runs, in a list (how the
    grader collects the checks it runs itself: :mod:`helpers.labs.referee`)."""
    collected: list[CheckResult] = []
    _collectors.append(collected)
    try:
        yield collected
    finally:
        _collectors.remove(collected)


@contextlib.contextmanager
def deferred_failures() -> Iterator[None]:
    """Run several checks in one cell: each runs and is recorded; failures are raised together
    at the end (so the first failure does not keep the next checks from running)."""
    _deferred.append([])
    try:
        yield
    finally:
        failed = _deferred.pop()
    if failed:
        raise LabCheckFailed("\n\n".join(_message(r) for r in failed))


def _message(result: CheckResult) -> str:
    kind = "hidden check" if result.hidden else "check"
    return f"Task {result.task} {kind} {result.check!r} failed:\n{result.feedback}"


def conclude(info: CheckInfo, passed: bool, text: str, student: str, seconds: float) -> None:
    """What a check does with its outcome: record it, print its line when it passed, and
    otherwise raise :class:`LabCheckFailed` with ``text`` (or keep it for the end of a
    :func:`deferred_failures` block). The grader calls it too, for a check it could not run
    (:mod:`helpers.labs.referee`: a deliverable the kernel never set)."""
    result = CheckResult(
        info.lab, info.name, info.task, info.hidden, passed, text, student, round(seconds, 2)
    )
    _record(result)
    if passed:
        report_pass(f"Task {info.task}{' (hidden check)' if info.hidden else ''}: {info.summary}")
        return
    if _deferred:
        _deferred[-1].append(result)
        return
    raise LabCheckFailed(_message(result)) from None


def lab_check(
    lab: str, task: int, *, hidden: bool = False
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a check function of ``lab``'s task ``task``.

    The function takes the :class:`~helpers.labs.session.LabSession` first and raises
    :class:`CheckProblem` (or a workbook error) when the task is not done. The registered
    check records its result (see :data:`RESULTS_ENV`), prints a line when it passes and
    raises :class:`LabCheckFailed` when it does not.
    """

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        summary = (func.__doc__ or func.__name__).strip().splitlines()[0]
        info = CheckInfo(lab, func.__name__, task, hidden, summary)
        CHECKS.setdefault(lab, []).append(info)

        @functools.wraps(func)
        def run(session: LabSession, *args: Any, **kwargs: Any) -> None:
            started = time.monotonic()
            try:
                func(session, *args, **kwargs)
                passed, text = True, summary
            except CheckProblem as problem:
                passed, text = False, str(problem)
            except WorkbookError as err:
                passed, text = False, feedback(err.problem, err.fix)
            except Exception as err:  # noqa: BLE001 - a check must report, never crash
                passed, text = (
                    False,
                    feedback(
                        f"The check could not inspect your work ({type(err).__name__}: "
                        f"{str(err)[:300]}).",
                        f"the cells of Task {task} above; run the notebook's cells in order and "
                        "fix the first one that fails.",
                    ),
                )
            conclude(
                info, passed, text, getattr(session, "student", "?"), time.monotonic() - started
            )

        run.info = info  # type: ignore[attr-defined]
        return run

    return decorate


# --- what the checks share ------------------------------------------------------------------


def _serve_apps(session: LabSession) -> dict[str, Any]:
    return serve_details(session.cluster).get("applications") or {}


#: How long a check gives an application that shows DEPLOYING to be RUNNING again. On a shared
#: cluster every `serve deploy` (a classmate's too) re-applies each config-deployed application:
#: Serve's controller sets it DEPLOYING until its deployments have reconciled, although none of
#: them changes or restarts (ApplicationState._set_target_state; the classroom run caught lab
#: 02's check in that moment once, right after a classmate's deploy).
REBUILD_GRACE_S = 20.0


def _app(
    session: LabSession, short: str, *, task: int, running: bool = True, look: str = ""
) -> dict[str, Any]:
    """The application's details; a problem if it is missing (or not RUNNING, once any
    rebuild in progress is over: :data:`REBUILD_GRACE_S`)."""
    name = session.app_name(short)
    apps = _serve_apps(session)
    where = look or f"Task {task}: the cell that deploys {name!r}; `serve status` lists apps"
    if name not in apps:
        mine = sorted(a for a in apps if a.startswith(session.prefix))
        raise CheckProblem(
            f"Serve has no application named {name!r} (this lab's apps on the "
            f"cluster: {mine or 'none'}).",
            where,
        )
    app = apps[name]
    deadline = time.monotonic() + REBUILD_GRACE_S
    while running and app.get("status") == "DEPLOYING" and time.monotonic() < deadline:
        time.sleep(0.5)
        app = _serve_apps(session).get(name, app)
    if running and app.get("status") != "RUNNING":
        message = (app.get("message") or "").strip().splitlines()
        raise CheckProblem(
            f"Application {name!r} is {app.get('status')}, not RUNNING"
            + (f": {message[0][:300]}" if message else "."),
            where + "; its replicas' error is in `serve status` and the replica logs",
        )
    return app


def _deployment(app: Mapping[str, Any], name: str, *, look: str) -> dict[str, Any]:
    deployments = app.get("deployments") or {}
    if name not in deployments:
        raise CheckProblem(
            f"Application {app.get('name')!r} has no deployment {name!r} "
            f"(it has: {sorted(deployments)}).",
            look + " (the deployment's name is the class name, or name=...)",
        )
    return deployments[name]


def _running_replicas(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for r in deployment.get("replicas") or [] if r.get("state") == "RUNNING"]


def _post(url: str, body: Any, *, look: str, timeout_s: float = 30.0) -> Any:
    import requests

    try:
        return requests.post(url, json=body, timeout=timeout_s)
    except requests.RequestException as err:
        raise CheckProblem(f"No answer from {url} ({type(err).__name__}).", look) from err


def _get(url: str, *, look: str, timeout_s: float = 30.0) -> Any:
    import requests

    try:
        return requests.get(url, timeout=timeout_s)
    except requests.RequestException as err:
        raise CheckProblem(f"No answer from {url} ({type(err).__name__}).", look) from err


def _json(response: Any, *, look: str) -> Any:
    if response.status_code != 200:
        raise CheckProblem(
            f"{response.request.method} {response.url} answered HTTP "
            f"{response.status_code}: {response.text[:200]}",
            look,
        )
    try:
        return response.json()
    except ValueError as err:
        raise CheckProblem(
            f"{response.url} did not answer JSON: {response.text[:200]!r}", look
        ) from err


def _call(session: LabSession, short: str, method: str, *args: Any, timeout_s: float = 60.0) -> Any:
    from ray import serve

    name = session.app_name(short)
    return run_in_new_loop(
        lambda: (
            getattr(serve.get_app_handle(name), method).remote(*args).result(timeout_s=timeout_s)
        )
    )


def _expect(condition: bool, problem: str, look: str) -> None:
    if not condition:
        raise CheckProblem(problem, look)


def expected_checks_text(lab: str) -> str:
    """A short listing of a lab's checks (for the instructor's README and reports)."""
    return "\n".join(
        f"task {c.task} {'hidden ' if c.hidden else ''}{c.name}: {c.summary}"
        for c in checks_for(lab)
    )
