"""The headless runner: execute the lessons with papermill under a run profile.

Each notebook runs in its own papermill process with the profile's parameters and a wall-clock
timeout. Its executed copy and log go to the build folder. Afterwards the runner checks that
the notebook left no Ray process or bound port behind (and ends any it did, by process id).
A summary table (notebook, status, duration, failing cell, error) is printed and written as
``summary.json`` and ``summary.md``; the exit code is non-zero if any notebook failed.

Usage::

    python -m helpers.runner                       # every notebook, profile "full"
    python -m helpers.runner --profile ci 00 01    # a subset, CI parameters
    python -m helpers.runner --profile ci -p 01_ray_cluster_setup.worker_nodes=1
    python -m helpers.runner --profile ci --prepare-only build/nbval   # parameterized copies
        # (a lesson with "Your turn" tasks is written as its proof; --no-proof: as it is)
    python -m helpers.runner --labs --profile ci lab01   # the labs' source notebooks (solutions)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from helpers.browser import BrowserMissingError, chromium_path
from helpers.errors import EnvironmentProblem, ParameterError, ProfileError, WorkbookError
from helpers.labs.proof import write_lab_proof
from helpers.lessons.proof import write_proof
from helpers.lessons.tasks import read_tasks
from helpers.paths import BUILD_DIR, LABS_DIR, NOTEBOOKS_DIR, REPO_ROOT
from helpers.processes import (
    ManagedProcess,
    end_leftovers,
    find_leftovers,
    interrupt_on_termination,
    is_alive,
    remove_orphan_shm,
    sweep_orphans,
)
from helpers.profiles import Profile, check_parameters, list_labs, list_notebooks, load_profile
from helpers.shared_cluster import not_run_sections

__all__ = [
    "NotebookResult",
    "select_notebooks",
    "run_notebooks",
    "prepare_notebooks",
    "check_output_dir",
    "main",
]

PASSED, FAILED, TIMEOUT, LEAKED, SKIPPED = "passed", "failed", "timeout", "leaked", "skipped"


@dataclass
class NotebookResult:
    notebook: str
    status: str
    duration_s: float
    failing_cell: int | None = None
    error: str = ""
    output: str = ""
    cleanup: str = ""  # what the runner found left running afterwards, and whether it ended it
    not_run: list[str] = field(default_factory=list)  # sections it did not run (shared cluster)

    @property
    def ok(self) -> bool:
        return self.status in (PASSED, SKIPPED)


def select_notebooks(selectors: Sequence[str], folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Notebooks matching each selector: a number prefix (``01``, ``lab01``), a stem, or a path."""
    every = list_notebooks(folder) + list_labs(folder)  # lessons (NN_x) or labs (labNN_x)
    if not selectors:
        return every
    chosen: list[Path] = []
    for sel in selectors:
        path = Path(sel)
        if path.suffix == ".ipynb" and path.exists():
            matches = [path.resolve()]
        else:
            key = path.stem if path.suffix == ".ipynb" else sel
            matches = [
                p
                for p in every
                if p.stem == key or p.stem.split("_", 1)[0] == key or p.stem.startswith(key)
            ]
        if not matches:
            raise WorkbookError(
                f"No notebook matches {sel!r}.",
                "give a number (01), a name (01_ray_cluster_setup) or a path; available: "
                + ", ".join(p.stem for p in every),
            )
        chosen += [m for m in matches if m not in chosen]
    return chosen


def _parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``-p stem.name=value`` / ``-p name=value`` (every selected notebook)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item:
            raise ParameterError(
                f"-p {item!r} is not name=value.", "write -p name=value or -p notebook.name=value."
            )
        key, raw = item.split("=", 1)
        stem, _, name = key.rpartition(".")
        out.setdefault(stem or "*", {})[name] = yaml.safe_load(raw)
    return out


def _parameters(profile: Profile, nb: Path, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    params = profile.parameters_for(nb.stem)
    params.update(overrides.get("*", {}))
    for key, values in overrides.items():
        if key != "*" and (nb.stem == key or nb.stem.startswith(key)):
            params.update(values)
    check_parameters(nb, params)
    return params


def check_output_dir(
    out_dir: Path, notebooks: Sequence[Path], *, flag: str = "--build-dir"
) -> None:
    """Refuse an output folder that holds notebook sources: the executed (or parameterized)
    copies are written under the notebooks' own names and would overwrite the lessons."""
    sources = {
        NOTEBOOKS_DIR,
        LABS_DIR / "source",
        LABS_DIR / "student",
        *(nb.parent for nb in notebooks),
    }
    target = out_dir.resolve()
    if target in {folder.resolve() for folder in sources}:
        raise WorkbookError(
            f"{flag} {out_dir} is a folder of notebook sources: the run would overwrite "
            "them with its copies; nothing was run.",
            f"give a folder of its own, e.g. {flag} build/runs/mine (the default is "
            "build/runs/PROFILE).",
        )


def _first_error(executed: Path) -> tuple[int | None, str]:
    """Index and one-line error of the first failing code cell of an executed notebook.

    The index is 0-based among the notebook's own code cells (papermill's injected-parameters
    cell is not counted), so it names the same cell in the source notebook.
    """
    try:
        nb = json.loads(executed.read_text())
    except (OSError, ValueError):
        return None, ""
    index = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                message = f"{out.get('ename')}: {out.get('evalue')}".strip()
                return index, message.splitlines()[0][:300] if message else ""
        if "injected-parameters" not in cell.get("metadata", {}).get("tags", []):
            index += 1
    return None, ""


def _needs(nb: Path, parameters: dict[str, Any]) -> list[str]:
    """Programs outside the Python environment that ``nb`` needs with these parameters.

    A lesson declares them in its notebook metadata, ``workbook.needs``: a list of
    ``{"program": NAME, "when": PARAMETER}`` (``when`` optional: needed only while that
    parameter is true).
    """
    try:
        meta = json.loads(nb.read_text()).get("metadata", {}).get("workbook", {})
    except (OSError, ValueError):
        return []
    return [
        need["program"]
        for need in meta.get("needs", [])
        if not need.get("when") or parameters.get(need["when"], True)
    ]


def _program_problem(program: str) -> str | None:
    """Why ``program`` cannot be used here (and how to install it), or None when it can."""
    if program == "chromium":
        try:
            chromium_path()
        except BrowserMissingError as err:
            return f"{err.problem} Fix: {err.fix}"
        try:
            import playwright.sync_api  # noqa: F401 - only whether it imports
        except ImportError:
            return "the Python package 'playwright' is missing. Fix: make setup"
        return None
    raise ProfileError(
        f"A notebook needs {program!r}, which the runner cannot check.",
        "use a program name the runner knows: chromium.",
    )


def check_needs(plan: Sequence[tuple[Path, dict[str, Any]]]) -> None:
    """Raise before anything runs when a planned notebook needs a program that is missing.

    The error names every lesson that needs it and how to install it, so a long run does
    not fail half-way through on something a set-up step could have said at the start.
    """
    missing: dict[str, list[str]] = {}
    for nb, parameters in plan:
        for program in _needs(nb, parameters):
            missing.setdefault(program, []).append(nb.stem)
    problems = {program: _program_problem(program) for program in missing}
    problems = {program: why for program, why in problems.items() if why}
    if problems:
        lines = [
            f"{program} (needed by {', '.join(missing[program])}): {why}"
            for program, why in problems.items()
        ]
        raise EnvironmentProblem(
            "A program these notebooks need is not installed; nothing was run.",
            "install it as said below (`make run` and `make test` install Chromium themselves "
            "when they run as root: `bash scripts/ensure_browser.sh`), or leave those "
            "notebooks out of this run.",
            details="\n".join(lines),
        )


def run_one(
    nb: Path, out_dir: Path, parameters: dict[str, Any], timeout_s: float, scratch: Path
) -> NotebookResult:
    """Execute one notebook in a papermill subprocess; check and clean what it left."""

    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / nb.name
    log_path = out_dir / f"{nb.stem}.log"
    params_path = out_dir / f"{nb.stem}.parameters.yaml"
    params_path.write_text(yaml.safe_dump(parameters))
    env = dict(os.environ, WORKBOOK_SCRATCH=str(scratch), PYTHONUNBUFFERED="1")
    argv = [
        sys.executable,
        "-m",
        "papermill",
        str(nb),
        str(executed),
        "-f",
        str(params_path),
        "--cwd",
        str(nb.parent),
        "--no-progress-bar",
        "--log-output",
        "-k",
        "python3",
    ]
    log_path.unlink(missing_ok=True)  # the log is appended to: this run's alone
    papermill = ManagedProcess(
        argv, kind="papermill", log_path=log_path, env=env, stop_timeout_s=10.0
    )
    started, started_wall = time.monotonic(), time.time()
    interrupted = ""
    # Leaving the block ends papermill's session (papermill, its kernel) by id, however the
    # wait ended: in time, at the timeout, or by Ctrl-C, SIGTERM or SIGHUP (see main).
    with papermill:
        try:
            code = papermill.wait_exit(timeout_s)
            status = TIMEOUT if code is None else PASSED if code == 0 else FAILED
        except BaseException as err:  # noqa: BLE001 - Ctrl-C, SIGTERM or SIGHUP: stop the notebook first
            interrupted = str(err) or "Ctrl-C"
            status = FAILED
    duration = round(time.monotonic() - started, 1)
    cell, error = _first_error(executed)
    if status == TIMEOUT:
        error = f"did not finish within {timeout_s:.0f} s" + (
            f" (last error: {error})" if error else ""
        )
    elif status == FAILED and not error:
        error = _tail_text(log_path)
    os.environ["WORKBOOK_SCRATCH"], previous = str(scratch), os.environ.get("WORKBOOK_SCRATCH")
    cleanup = "nothing left running"
    try:
        leftovers = find_leftovers()
        if leftovers:
            cleanup = end_and_confirm(leftovers, since=started_wall)
            if status == PASSED:  # a lesson that passed must have cleaned up after itself
                status = LEAKED
                error = cleanup
    finally:
        if previous is None:
            os.environ.pop("WORKBOOK_SCRATCH", None)
        else:
            os.environ["WORKBOOK_SCRATCH"] = previous
    if interrupted:
        raise KeyboardInterrupt(f"{interrupted} while {nb.name} ran; what it started was ended")

    return NotebookResult(
        nb.stem, status, duration, cell, error, str(executed), cleanup, not_run_sections(scratch)
    )


def end_and_confirm(leftovers: Sequence[Any], *, since: float) -> str:
    """End what a notebook left running (by the ids it registered) and say plainly what
    happened: which resources were ended, or which processes are still alive afterwards.

    Shared-memory files that the ended processes made since ``since`` and that nobody uses
    any more (vLLM's queues) are removed too.
    """

    end_leftovers(leftovers)
    remove_orphan_shm(since)
    alive = [pid for x in leftovers for pid in x.pids if is_alive(pid)]
    names = ", ".join(
        f"{x.resource} ({len(x.pids)} processes"
        + (f", ports {list(x.ports)}" if x.ports else "")
        + ")"
        for x in leftovers
    )
    if alive:
        return (
            f"the notebook left {names} running; the runner could NOT end pids {alive}: "
            f"end them yourself (kill {' '.join(map(str, alive))})"
        )
    return f"the notebook left {names} running; the runner ended all of it"


def _tail_text(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])[:300]
    except OSError:
        return ""


def prepare_notebooks(
    notebooks: Sequence[Path],
    profile: Profile,
    out_dir: Path,
    overrides: dict[str, dict[str, Any]] | None = None,
    *,
    proof: bool = False,
) -> list[Path]:
    """Write parameterized, unexecuted copies (for nbval) and return their paths.

    With ``proof``, a lesson that has "Your turn" tasks is written as its proof notebook
    (:mod:`helpers.lessons.proof`: each check must fail on its blank task, then pass on the
    answer), under the lesson's own name; a lesson without tasks is copied as it is; a lab is
    written as its proof (:mod:`helpers.labs.proof`).
    """
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="rsw-proof") as proofs:
        for nb in notebooks:
            target = out_dir / nb.name
            source = _proof_of(nb, Path(proofs)) if proof else None
            pm.execute_notebook(
                str(source or nb),
                str(target),
                parameters=_parameters(profile, nb, overrides or {}),
                prepare_only=True,
                progress_bar=False,
                kernel_name="python3",
            )
            written.append(target)
    return written


def _proof_of(nb: Path, folder: Path) -> Path | None:
    """The proof notebook of ``nb``, written into ``folder``; None when it has no task.

    A lab's proof is :mod:`helpers.labs.proof`'s (each check must fail while only its task is
    undone); a lesson's is :mod:`helpers.lessons.proof`'s."""

    if nb.name.startswith("lab"):
        return write_lab_proof(nb, folder / nb.name)
    return write_proof(nb, folder / nb.name) if read_tasks(nb) else None


def format_summary(results: Sequence[NotebookResult]) -> str:
    """A Markdown table of the results."""
    head = (
        "| notebook | status | duration (s) | failing cell | error | left running afterwards |\n"
        "|---|---|---|---|---|---|"
    )
    rows = [
        f"| {r.notebook} | {r.status} | {r.duration_s:.1f} | "
        f"{'' if r.failing_cell is None else r.failing_cell} | {r.error.replace('|', '/')} | "
        f"{r.cleanup.replace('|', '/')} |"
        for r in results
    ]
    passed = sum(r.status == PASSED for r in results)
    skipped = sum(r.status == SKIPPED for r in results)
    failed = len(results) - passed - skipped
    tail = f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")
    for r in results:  # said, never counted as run: sections a shared cluster ruled out
        if r.not_run:
            tail += f"\n{r.notebook}: sections NOT run: " + "; ".join(r.not_run)
    not_ended = [r.notebook for r in results if "could NOT end" in r.cleanup]
    ended = [r.notebook for r in results if r.cleanup.endswith("ended all of it")]
    if not_ended:
        tail += f"\nSTILL RUNNING after the run: what {', '.join(not_ended)} left (see above)."
    elif ended:
        tail += f"\nNothing is left running: the runner ended what {', '.join(ended)} left behind."
    else:
        tail += "\nNothing is left running: every notebook cleaned up after itself."
    return "\n".join([head, *rows, "", tail])


def run_notebooks(
    notebooks: Sequence[Path],
    profile: Profile,
    out_dir: Path,
    overrides: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    honor_skip: bool = True,
) -> list[NotebookResult]:
    """Execute ``notebooks`` in order; write the summary files; return the results.

    A notebook whose profile entry says ``skip`` is reported as skipped, not run, unless
    ``honor_skip`` is False (the command line passes False when notebooks are named).
    """
    from tqdm.auto import tqdm

    overrides = overrides or {}
    # Validate everything before running anything: a typo should not cost a long run.
    plan = [
        (nb, profile.settings_for(nb.stem), _parameters(profile, nb, overrides)) for nb in notebooks
    ]
    check_needs(
        [(nb, params) for nb, settings, params in plan if not (settings.skip and honor_skip)]
    )
    for name in sweep_orphans():  # a killed kernel's clusters, found by their records
        print(f"ended what a process that is gone had left running: {name}", file=sys.stderr)
    results: list[NotebookResult] = []
    bar = tqdm(plan, desc=f"profile {profile.name}", unit="notebook", disable=not progress)
    for nb, settings, params in bar:
        bar.set_postfix_str(nb.stem)
        if settings.skip and honor_skip:
            results.append(NotebookResult(nb.stem, SKIPPED, 0.0, error="skipped by profile"))
            continue
        # A short folder of its own per notebook: Ray's socket paths must stay under 108 bytes,
        # and the leak check afterwards looks only at what this notebook registered.
        scratch = Path(tempfile.mkdtemp(prefix=f"rsw{nb.stem[:2]}"))
        try:
            result = run_one(nb, out_dir, params, settings.timeout_s, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        results.append(result)
        bar.write(f"{result.status:>7}  {nb.stem}  {result.duration_s:.1f} s  {result.error}")
    summary = {
        "profile": profile.name,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "results": [asdict(r) for r in results],
        "passed": sum(r.status == PASSED for r in results),
        "failed": sum(not r.ok for r in results),
        "skipped": sum(r.status == SKIPPED for r in results),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "summary.md").write_text(
        f"# Run of profile {profile.name}\n\n{format_summary(results)}\n"
    )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.runner",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notebooks", nargs="*", help="numbers, names or paths (default: all)")
    parser.add_argument(
        "--profile",
        default=os.environ.get("WORKBOOK_PROFILE", "full"),
        help="run profile in configs/profiles (default: full)",
    )
    parser.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        metavar="[NB.]NAME=VALUE",
        help="override a parameter (YAML value), for one notebook or all",
    )
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=None,
        help="where executed notebooks and the summary go (default: build/runs/PROFILE)",
    )
    parser.add_argument(
        "--prepare-only",
        type=Path,
        metavar="DIR",
        help="only write parameterized copies to DIR (for nbval), do not execute",
    )
    parser.add_argument(
        "--no-proof",
        action="store_true",
        help="with --prepare-only: copy lessons with 'Your turn' tasks as they "
        "are, not as their proof (helpers.lessons.proof)",
    )
    parser.add_argument("--list", action="store_true", help="list notebooks and their parameters")
    parser.add_argument(
        "--list-sharing",
        action="store_true",
        help="list the notebooks (of those selected) whose profile entry says "
        "shares_machine: true (make test runs them two at a time)",
    )
    parser.add_argument(
        "--labs",
        action="store_true",
        help="the labs' source notebooks (labs/source/, with solutions) instead",
    )
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.profile)
        notebooks = select_notebooks(
            args.notebooks, LABS_DIR / "source" if args.labs else NOTEBOOKS_DIR
        )
        overrides = _parse_overrides(args.parameter)
        if args.list_sharing:
            for nb in notebooks:
                if profile.settings_for(nb.stem).shares_machine:
                    print(nb.stem)
            return 0
        if args.list:
            for nb in notebooks:
                print(f"{nb.stem}: {profile.parameters_for(nb.stem)}")
            return 0
        if args.prepare_only:
            check_output_dir(args.prepare_only, notebooks, flag="--prepare-only")
            named = bool(args.notebooks)  # a notebook asked for by name is never skipped
            skipped = [nb for nb in notebooks if profile.settings_for(nb.stem).skip and not named]
            for nb in skipped:  # said, never silent: the profile names the notebook and why
                print(f"skipped by profile {profile.name}: {nb.stem}", file=sys.stderr)
            notebooks = [nb for nb in notebooks if nb not in skipped]
            check_needs([(nb, _parameters(profile, nb, overrides)) for nb in notebooks])
            proof = not args.no_proof
            for path in prepare_notebooks(
                notebooks, profile, args.prepare_only, overrides, proof=proof
            ):
                print(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)
            return 0
        out_dir = args.build_dir or BUILD_DIR / "runs" / profile.name / (
            "labs" if args.labs else ""
        )
        check_output_dir(out_dir, notebooks)
        # SIGTERM or SIGHUP (a CI cancel, `timeout`, a closed terminal) ends the run as Ctrl-C
        # does: the running notebook's session (papermill, its kernel, its clusters) first.
        with interrupt_on_termination():
            results = run_notebooks(
                notebooks, profile, out_dir, overrides, honor_skip=not args.notebooks
            )
    except WorkbookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"interrupted: {err or 'Ctrl-C'}", file=sys.stderr)
        return 130
    print()
    print(format_summary(results))
    print(f"\nExecuted notebooks and summary.md are in {out_dir}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
