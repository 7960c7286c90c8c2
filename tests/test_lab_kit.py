"""The student kit (issue: hidden means hidden): what students install has no solutions and
no hidden checks, still runs the visible checks, and cannot grade. No cluster needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.errors import WorkbookError
from helpers.labs.checks import CHECKS, HIDDEN_CHECKS_INSTALLED, checks_for
from helpers.labs.kit import build_kit, leaks_in
from helpers.paths import REPO_ROOT


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kit") / "student-kit"
    build_kit(out)
    return out


def _in_kit(kit: Path, code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=kit,
        env=dict(env, PYTHONPATH=str(kit)),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_kit_leaves_out_the_instructors_part(kit: Path) -> None:
    assert HIDDEN_CHECKS_INSTALLED  # the repository is the instructor's copy
    assert not (kit / "labs" / "source").exists()
    assert not (kit / "helpers" / "labs" / "hidden_checks.py").exists()
    assert sorted(p.name for p in (kit / "labs" / "student").glob("lab*.ipynb")) == sorted(
        p.name for p in (REPO_ROOT / "labs" / "student").glob("lab*.ipynb")
    )
    assert (kit / "notebooks").is_dir() and (kit / "Makefile").is_file()
    assert leaks_in(kit) == []


def test_the_kit_runs_the_visible_checks_and_knows_no_hidden_one(kit: Path) -> None:
    visible = sum(len(checks_for(lab, hidden=False)) for lab in CHECKS)
    run = _in_kit(
        kit,
        "import helpers.labs.checks as c, helpers.labs.session\n"
        f"assert c.__file__.startswith({str(kit)!r}), c.__file__\n"
        "print(c.HIDDEN_CHECKS_INSTALLED, sum(len(v) for v in c.CHECKS.values()))",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", str(visible)]


def test_the_kit_gives_the_hints_without_the_sources(kit: Path) -> None:
    """lab.hint reads the tiers from the student versions, which the kit has."""
    run = _in_kit(
        kit,
        "from helpers.labs.session import next_hint\n"
        "used = {}\n"
        "for _ in range(3): text, _, record = next_hint('lab02', 1, used)\n"
        "print(text.splitlines()[0]); print(record)",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Task 1, hint 3 of 3 (a partial skeleton)"), run.stdout
    assert "'tier': 3" in run.stdout


def test_the_kit_refuses_to_grade(kit: Path, tmp_path: Path) -> None:
    run = _in_kit(
        kit,
        f"import sys; from helpers.labs.__main__ import main; "
        f"sys.exit(main(['grade', {str(kit / 'labs' / 'student')!r}, "
        f"'--out', {str(tmp_path / 'g')!r}]))",
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "student kit, which cannot grade" in run.stderr


def test_a_leak_is_found_and_the_kit_is_not_written(
    kit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hidden = next(i.name for infos in CHECKS.values() for i in infos if i.hidden)
    planted = kit / "labs" / "student" / "lab99_notes.ipynb"
    planted.write_text(f"the grader also runs {hidden}\n### BEGIN SOLUTION\n")
    try:
        assert leaks_in(kit) == [
            "labs/student/lab99_notes.ipynb: a solution region (### BEGIN SOLUTION)",
            f"labs/student/lab99_notes.ipynb: names the hidden check {hidden}",
        ]
    finally:
        planted.unlink()
    monkeypatch.setattr("helpers.labs.kit.INSTRUCTOR_ONLY", ("tests/",))  # sources let in
    with pytest.raises(WorkbookError, match="give the instructor's part away") as err:
        build_kit(tmp_path / "leaky")
    assert "labs/source/" in err.value.details
    assert not (tmp_path / "leaky").exists()


def test_the_kit_is_never_written_over_the_workbook_or_a_full_folder(tmp_path: Path) -> None:
    with pytest.raises(WorkbookError, match="inside the workbook"):
        build_kit(REPO_ROOT / "labs" / "kit")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(WorkbookError, match="not empty"):
        build_kit(tmp_path / "full")
