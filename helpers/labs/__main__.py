"""``python -m helpers.labs``: generate the student versions, grade a class, list the checks.

Usage::

    python -m helpers.labs generate              # write labs/student/ from labs/source/
    python -m helpers.labs generate --check      # exit 1, naming them, if any is stale
    python -m helpers.labs list                  # the labs and their checks
    python -m helpers.labs kit OUT               # the student kit: no solutions, no hidden checks
    python -m helpers.labs grade SUBMISSIONS [--out build/grades] [--labs lab01 lab02]
        [--students alice bob] [--deadline-s 1800]
        [--ray-address HOST:PORT --dashboard-url URL --token-path FILE]
        [--profile ci] [-p NAME=VALUE] [--cell-timeout-s 600] [--no-sandbox]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from helpers.errors import WorkbookError
from helpers.paths import BUILD_DIR
from helpers.solution_regions import report_stale

__all__ = ["main"]


def _check_source_dir(folder: Path) -> None:
    from helpers.labs.notebooks import SOURCE_DIR, list_lab_sources
    from helpers.solution_regions import check_source_folder

    check_source_folder(
        folder,
        list_lab_sources(folder) if folder.is_dir() else [],
        option="--source-dir",
        what="lab sources (labNN_*.ipynb)",
        default=SOURCE_DIR,
    )


def _generate(args: argparse.Namespace) -> int:
    from helpers.labs.notebooks import generate_all, stale_student_versions

    _check_source_dir(args.source_dir)
    if args.check:
        return report_stale(
            stale_student_versions(args.source_dir, args.student_dir),
            what="student versions",
            command="python -m helpers.labs generate",
            folder=args.student_dir,
        )
    for path in generate_all(args.source_dir, args.student_dir):
        print(path)
    return 0


def _list(args: argparse.Namespace) -> int:
    from helpers.labs.checks import checks_for
    from helpers.labs.notebooks import lab_id, list_lab_sources

    _check_source_dir(args.source_dir)
    for source in list_lab_sources(args.source_dir):
        print(source.stem)
        for info in checks_for(lab_id(source)):
            kind = "hidden " if info.hidden else "visible"
            print(f"  task {info.task} {kind} {info.name}: {info.summary}")
    return 0


def _kit(args: argparse.Namespace) -> int:
    from helpers.labs.kit import INSTRUCTOR_ONLY, build_kit

    files = build_kit(args.out)
    print(
        f"Student kit: {len(files)} files in {args.out.resolve()} (left out: "
        f"{', '.join(INSTRUCTOR_ONLY)}); checked: no solution region in its labs, no hidden "
        "check named anywhere."
    )
    return 0


def _grade(args: argparse.Namespace) -> int:
    import yaml

    from helpers.labs.grading import grade_folder
    from helpers.profiles import load_profile

    parameters: dict[str, object] = {}
    for name, value in (
        ("ray_address", args.ray_address),
        ("dashboard_url", args.dashboard_url),
        ("token_path", args.token_path),
    ):
        if value:
            parameters[name] = str(Path(value).resolve()) if name == "token_path" else value
    for item in args.parameter:
        if "=" not in item:
            raise WorkbookError(f"-p {item!r} is not NAME=VALUE.", "write -p name=value.")
        key, raw = item.split("=", 1)
        parameters[key] = yaml.safe_load(raw)
    lab_parameters = {}
    if args.profile:
        profile = load_profile(args.profile)
        lab_parameters = {stem: dict(s.parameters) for stem, s in profile.labs.items()}
    grades = grade_folder(
        args.submissions,
        args.out,
        parameters=parameters,
        lab_parameters=lab_parameters,
        labs=args.labs,
        students=args.students,
        cell_timeout_s=args.cell_timeout_s,
        deadline_s=args.deadline_s,
        sandbox=not args.no_sandbox,
    )
    print((args.out / "summary.md").read_text())
    print(
        f"Reports: {args.out}/<student>/report.md; class: {args.out}/summary.csv, "
        f"summary.md, summary.html ({len(grades)} notebooks graded in this run, merged "
        "with the reports already there)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from helpers.labs.grading import DEFAULT_DEADLINE_S
    from helpers.labs.notebooks import SOURCE_DIR, STUDENT_DIR

    parser = argparse.ArgumentParser(
        prog="python -m helpers.labs", description="Classroom labs: generate, list, grade."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write the student versions from the sources")
    gen.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a student version is missing or stale",
    )
    lst = sub.add_parser("list", help="the labs and their checks")
    kit = sub.add_parser("kit", help="write the student kit (no solutions, no hidden checks)")
    kit.add_argument("out", type=Path, help="a new folder (under build/ or outside the repo)")
    grade = sub.add_parser("grade", help="grade a folder of submissions (one folder per student)")
    grade.add_argument("submissions", type=Path)
    grade.add_argument("--out", type=Path, default=BUILD_DIR / "grades")
    grade.add_argument("--labs", nargs="*", default=[], help="only these labs (lab01 lab02 ...)")
    grade.add_argument(
        "--ray-address",
        default="",
        help="the classroom cluster (host:port); empty: each notebook starts a cluster of its own",
    )
    grade.add_argument("--dashboard-url", default="")
    grade.add_argument("--token-path", default="")
    grade.add_argument("--profile", default="", help="a run profile whose labs: parameters apply")
    grade.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    grade.add_argument(
        "--students",
        nargs="*",
        default=[],
        help="only these students (folder names); reports merge with earlier runs",
    )
    grade.add_argument(
        "--cell-timeout-s", type=float, default=600.0, help="a cell running longer is interrupted"
    )
    grade.add_argument(
        "--deadline-s",
        type=float,
        default=DEFAULT_DEADLINE_S,
        help="a notebook running longer (all cells) is ended, with what it started",
    )
    grade.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run the kernels as the grader's own user, with the whole workbook in view "
        "(trusted submissions only; by default each runs in a sandbox as a user of its own)",
    )
    for p in (gen, lst):
        p.add_argument("--source-dir", type=Path, default=SOURCE_DIR)
    gen.add_argument("--student-dir", type=Path, default=STUDENT_DIR)
    args = parser.parse_args(argv)
    try:
        return {"generate": _generate, "list": _list, "grade": _grade, "kit": _kit}[args.command](
            args
        )
    except WorkbookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"interrupted: {err or 'Ctrl-C'}", file=sys.stderr, flush=True)
        if args.command == "grade":
            # The kernel and what it started are stopped by now; a kernel client thread still
            # waiting on the dead kernel's sockets must not keep the process from exiting
            # (interpreter shutdown would wait on it and on nbclient's atexit clean-up).
            sys.stdout.flush()
            os._exit(130)
        return 130


if __name__ == "__main__":
    sys.exit(main())
