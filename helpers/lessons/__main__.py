"""``python -m helpers.lessons``: practice versions, the tasks, an answer, a proof notebook.

Usage::

    python -m helpers.lessons generate              # notebooks/practice/ and exported cells' copies
    python -m helpers.lessons generate --check      # exit 1, naming them, if any is stale
    python -m helpers.lessons list                  # every lesson's "Your turn" tasks
    python -m helpers.lessons reveal 02a 3          # print the answer to Your turn 3 of 02a
    python -m helpers.lessons proof 02a [-o FILE]   # write the proof notebook of lesson 02a
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from helpers.errors import WorkbookError
from helpers.paths import BUILD_DIR, NOTEBOOKS_DIR
from helpers.solution_regions import check_source_folder, report_stale

__all__ = ["main"]


def _check_lessons_dir(folder: Path) -> None:
    from helpers.profiles import list_notebooks

    check_source_folder(
        folder,
        list_notebooks(folder) if folder.is_dir() else [],
        option="--lessons-dir",
        what="lessons (NN_slug.ipynb)",
        default=NOTEBOOKS_DIR,
    )


def _generate(args: argparse.Namespace) -> int:
    from helpers.lessons.export import stale_exports, write_exports
    from helpers.lessons.practice import generate_all, stale_practice_versions

    root = args.lessons_dir.resolve().parent  # the package copies of exported cells live here
    if args.check:
        practice = report_stale(
            stale_practice_versions(args.lessons_dir, args.practice_dir),
            what="practice versions",
            command="python -m helpers.lessons generate",
            folder=args.practice_dir,
        )
        copies = report_stale(
            stale_exports(args.lessons_dir, root),
            what="package copies of exported lesson cells",
            command="python -m helpers.lessons generate",
            folder=root / "helpers",
        )
        return practice or copies
    written, removed = generate_all(args.lessons_dir, args.practice_dir)
    exported = write_exports(args.lessons_dir, root)
    for path in written + exported:
        print(path)
    for path in removed:
        print(f"removed {path} (its lesson has no 'Your turn' task any more)")
    if not written and not removed and not exported:
        print("no lesson has a 'Your turn' task or an exported cell: nothing to generate")
    return 0


def _list(args: argparse.Namespace) -> int:
    from helpers.lessons.tasks import cell_source, lesson_tasks, read_lesson
    from helpers.profiles import list_notebooks
    from helpers.solution_regions import SolutionRegion, Where, split_regions

    for path in list_notebooks(args.lessons_dir):
        nb = read_lesson(path)
        tasks = lesson_tasks(nb, path.name)
        print(f"{path.stem}: {len(tasks)} 'Your turn' task(s)")
        for task in tasks:
            hints = [
                s.hint
                for i in task.cells
                for s in split_regions(cell_source(nb.cells[i]), Where(path.name, i))
                if isinstance(s, SolutionRegion)
            ]
            print(
                f"  {task.number}: cells {list(task.cells)}, check cell {task.check}; "
                f"hint: {' / '.join(hints)}"
            )
    return 0


def _reveal(args: argparse.Namespace) -> int:
    from helpers.lessons.practice import answer_text

    print(answer_text(args.lesson, args.task, folder=args.lessons_dir))
    return 0


def _proof(args: argparse.Namespace) -> int:
    from helpers.lessons.proof import write_proof
    from helpers.lessons.tasks import find_lesson

    source = find_lesson(args.lesson, args.lessons_dir)
    target = args.output or BUILD_DIR / "proof" / source.name
    print(write_proof(source, target))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from helpers.lessons.practice import PRACTICE_DIR

    parser = argparse.ArgumentParser(
        prog="python -m helpers.lessons",
        description="Lessons' 'Your turn' tasks: practice versions, answers, proofs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser(
        "generate",
        help="write the practice versions, and the package copies "
        "of exported cells, from the lessons",
    )
    gen.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a practice version or a package copy is "
        "missing, stale or orphaned",
    )
    gen.add_argument("--practice-dir", type=Path, default=PRACTICE_DIR)
    lst = sub.add_parser("list", help="every lesson's tasks")
    rev = sub.add_parser("reveal", help="print the answer to a task")
    rev.add_argument("lesson", help="the lesson's number (02), name or path")
    rev.add_argument("task", type=int, help="the task's number (Your turn N)")
    proof = sub.add_parser("proof", help="write the proof notebook of a lesson with tasks")
    proof.add_argument("lesson", help="the lesson's number (02), name or path")
    proof.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="where to write it (default: build/proof/<lesson>.ipynb)",
    )
    for p in (gen, lst, rev, proof):
        p.add_argument("--lessons-dir", type=Path, default=NOTEBOOKS_DIR)
    args = parser.parse_args(argv)
    try:
        _check_lessons_dir(args.lessons_dir)
        return {"generate": _generate, "list": _list, "reveal": _reveal, "proof": _proof}[
            args.command
        ](args)
    except WorkbookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
