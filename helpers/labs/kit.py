"""The student kit: the workbook as students install it, without what only instructors keep.

    python -m helpers.labs kit OUT     # a copy of the workbook's tracked files for students

Left out (the instructor keeps them in the repository):

* ``labs/source/`` - the labs with their solutions and hidden-check cells;
* ``helpers/labs/hidden_checks.py`` - the hidden checks the grader puts back;
* ``helpers/labs/proof.py`` - the labs' proofs, which read the sources;
* ``tests/`` and ``.ci/`` - the test suite, which grades solutions.

The kit is checked after it is written: no lab notebook in it holds a solution region, and no file
names a hidden check. A kit that fails that check is removed and the command says why.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from helpers.errors import WorkbookError
from helpers.labs.checks import CHECKS, HIDDEN_CHECKS_INSTALLED
from helpers.paths import REPO_ROOT
from helpers.solution_regions import BEGIN_SOLUTION as BEGIN

__all__ = ["INSTRUCTOR_ONLY", "build_kit", "leaks_in"]

INSTRUCTOR_ONLY = (
    "labs/source/",
    "helpers/labs/hidden_checks.py",
    "helpers/labs/proof.py",
    "tests/",
    ".ci/",
)


def _tracked_files(root: Path) -> list[str]:
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    except (OSError, subprocess.CalledProcessError) as err:
        raise WorkbookError(
            f"Cannot list the workbook's files with git in {root}: {err}.",
            "build the kit from the instructor's git checkout of the workbook.",
        ) from err
    return [f for f in listed.stdout.split("\0") if f]


def _hidden_check_names() -> list[str]:
    if not HIDDEN_CHECKS_INSTALLED:
        raise WorkbookError(
            "This copy of the workbook has no hidden checks: it is a student kit.",
            "build the kit from the instructor's checkout (the repository).",
        )
    return sorted(i.name for infos in CHECKS.values() for i in infos if i.hidden)


def leaks_in(kit: Path) -> list[str]:
    """What in ``kit`` gives the instructor's part away: a solution region in a lab notebook, a
    hidden check's name in any text file, an instructor-only path. Empty when none."""

    names = _hidden_check_names()
    found = []
    for path in sorted(p for p in kit.rglob("*") if p.is_file()):
        rel = path.relative_to(kit).as_posix()
        if rel.startswith(INSTRUCTOR_ONLY):
            found.append(f"{rel}: an instructor-only file")
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # images and other binary files
        if rel.startswith("labs/") and rel.endswith(".ipynb") and BEGIN in text:
            found.append(f"{rel}: a solution region ({BEGIN})")
        found += [f"{rel}: names the hidden check {n}" for n in names if n in text]
    return found


def build_kit(out: Path, *, root: Path = REPO_ROOT) -> list[str]:
    """Write the student kit into ``out`` (which must not exist or be empty); returns the
    files written. Raises :class:`WorkbookError` (and removes ``out``) if the kit would leak."""
    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        raise WorkbookError(
            f"{out} exists and is not empty.",
            "give a new folder (the kit is written whole, never merged).",
        )
    repo, build = root.resolve(), root.resolve() / "build"
    if (out == repo or repo in out.parents) and build not in out.parents:
        raise WorkbookError(
            f"{out} is inside the workbook (outside its build/ folder).",
            "write the kit under build/ or outside the repository.",
        )
    files = [f for f in _tracked_files(root) if not f.startswith(INSTRUCTOR_ONLY)]
    for rel in files:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    leaks = leaks_in(out)
    if leaks:
        shutil.rmtree(out, ignore_errors=True)
        raise WorkbookError(
            "The student kit would give the instructor's part away:",
            "move what is listed into an instructor-only file (INSTRUCTOR_ONLY "
            "in helpers/labs/kit.py) and build the kit again.",
            details="\n".join(leaks),
        )
    return files
