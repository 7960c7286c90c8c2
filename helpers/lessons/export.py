"""Code a lesson teaches, written in its cells, with a package copy for whoever else imports it.

The Serve code a lesson is about is written in the lesson. A cell writes it into the lesson's
working folder with ``%%writefile``, as Serve's tutorials do before ``serve run app:app``, and
``serve run``, ``serve build`` or a config's ``import_path`` use that file. When a later
lesson, a lab or a test imports the same code, the cell names its package copy on the line
after the magic::

    %%writefile {work_dir}/configurable.py
    # export: helpers/apps/configurable.py
    \"\"\"A classifier whose behaviour is set by user_config ...\"\"\"
    ...

The notebook is the one source of truth. ``python -m helpers.lessons generate`` writes each
package copy from its cell (the answer: solution markers and hint lines dropped, a first line
saying where it comes from), with the practice versions; ``generate --check``, which the
tests run, names a copy that differs from its cell, is missing, or whose cell is gone.
Never edit a package copy: edit the cell, then generate.

Usage::

    from helpers.lessons.export import exports, stale_exports, write_exports
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from helpers.lessons.tasks import cell_source, read_lesson
from helpers.paths import NOTEBOOKS_DIR, REPO_ROOT
from helpers.profiles import list_notebooks
from helpers.solution_regions import NotebookSourceError, Where, answer_code

__all__ = [
    "Export",
    "exports",
    "exported_text",
    "write_exports",
    "stale_exports",
    "GENERATED_HEADER",
]

#: The first line of every package copy; the rest of the line names the lesson.
GENERATED_HEADER = "# Generated from "
_EXPORT_LINE = re.compile(r"^#\s*export:\s*(?P<target>\S+)\s*$")
_WRITEFILE = re.compile(r"^%%writefile(\s+-a)?\s+\S")


@dataclass(frozen=True)
class Export:
    """One exported cell: the lesson, the cell's index, the package file and its text."""

    lesson: Path
    cell: int
    target: Path  # relative to the repository's root
    text: str


def exported_text(source: str, where: Where, lesson_name: str) -> tuple[Path, str] | None:
    """The package file a cell exports to and the text it gets, or None for other cells.

    Raises :class:`NotebookSourceError` for an ``# export:`` line in a cell that does not
    start with ``%%writefile`` or a target outside ``helpers/``.
    """
    lines = source.splitlines()
    marks = [i for i, line in enumerate(lines) if _EXPORT_LINE.match(line.strip())]
    if not marks:
        return None
    if marks != [1] or not _WRITEFILE.match(lines[0]):
        raise NotebookSourceError(
            f"{where.at(marks[0] + 1)}: an '# export:' line must be the second line of a cell "
            "that starts with %%writefile.",
            "write the module with '%%writefile <file>' on the first line and '# export: "
            "helpers/<path>.py' on the second.",
        )
    export_line = _EXPORT_LINE.match(lines[1].strip())
    assert export_line is not None  # marks == [1]: line 1 matched above
    target = Path(export_line.group("target"))
    if (
        target.is_absolute()
        or ".." in target.parts
        or target.parts[:1] != ("helpers",)
        or target.suffix != ".py"
    ):
        raise NotebookSourceError(
            f"{where.at(2)}: cannot export to {target}.",
            "export to a .py file under helpers/ (a relative path).",
        )
    generated = [i + 1 for i, line in enumerate(lines) if line.startswith(GENERATED_HEADER)]
    if generated:
        raise NotebookSourceError(
            f"{where.at(generated[0])}: the cell holds a '{GENERATED_HEADER.strip()} ...' line, "
            "which generate writes into the package copy only.",
            "delete that line from the cell (the cell is the source; never paste a package "
            "copy back into it), then run python -m helpers.lessons generate.",
        )
    body = answer_code("\n".join(lines[2:]), where).rstrip("\n")
    header = (
        f"{GENERATED_HEADER}{lesson_name} (cell {where.cell}); edit the lesson, then run "
        "`python -m helpers.lessons generate`.\n"
    )
    return target, header + body + "\n"


def exports(lessons_dir: Path = NOTEBOOKS_DIR) -> list[Export]:
    """Every exported cell of every lesson, in lesson order.

    Raises :class:`NotebookSourceError` when two cells export to the same file.
    """

    found: list[Export] = []
    for path in list_notebooks(lessons_dir):
        nb = read_lesson(path)
        for index, cell in enumerate(nb.cells):
            if cell.get("cell_type") != "code":
                continue
            result = exported_text(
                cell_source(cell), Where(path.name, index), f"notebooks/{path.name}"
            )
            if result is None:
                continue
            target, text = result
            twin = next((e for e in found if e.target == target), None)
            if twin is not None:
                raise NotebookSourceError(
                    f"{path.name}, cell {index} and {twin.lesson.name}, cell {twin.cell} both "
                    f"export to {target}.",
                    "export each module from one cell only.",
                )
            found.append(Export(path, index, target, text))
    return found


def _generated_copies(root: Path) -> list[Path]:
    """Package files that say they were generated from a lesson."""
    out = []
    for path in sorted((root / "helpers").rglob("*.py")):
        with path.open(encoding="utf-8") as handle:
            if handle.readline().startswith(GENERATED_HEADER):
                out.append(path)
    return out


def write_exports(lessons_dir: Path = NOTEBOOKS_DIR, root: Path = REPO_ROOT) -> list[Path]:
    """Write every package copy from its cell; returns the files written or already current."""
    written = []
    for export in exports(lessons_dir):
        target = root / export.target
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text(encoding="utf-8") != export.text:
            target.write_text(export.text, encoding="utf-8")
        written.append(target)
    return written


def stale_exports(lessons_dir: Path = NOTEBOOKS_DIR, root: Path = REPO_ROOT) -> list[str]:
    """One line per package copy that is missing, differs from its cell, or has no cell."""
    problems = []
    expected = set()
    for export in exports(lessons_dir):
        target = root / export.target
        expected.add(target)
        if not target.exists():
            problems.append(
                f"{export.target}: missing (exported by {export.lesson.name}, cell {export.cell})"
            )
        elif target.read_text(encoding="utf-8") != export.text:
            problems.append(
                f"{export.target}: differs from {export.lesson.name}, cell {export.cell}"
            )
    for path in _generated_copies(root):
        if path not in expected:
            problems.append(
                f"{path.relative_to(root)}: says it is generated, but no lesson cell exports it"
            )
    return problems
