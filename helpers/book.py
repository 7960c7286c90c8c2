"""The workbook as a website: every lesson and lab with its outputs, built from a run.

``make book`` turns the executed notebooks that ``make run`` leaves in ``build/runs/<profile>/``
into a static site in ``build/book/`` (mkdocs with mkdocs-jupyter and the Material theme:
navigation and search). Nothing is executed again: the notebooks are copied into
``build/book-src/``, their outputs scrubbed (tokens, local paths, random ports), and the pages
written around them:

* a landing page with the course map: each lesson with its minutes in the run, the labs that
  follow it (from the table in ``labs/README.md``), and lessons not run yet marked as such;
* one page per lesson (executed when a run holds it, else the lesson as committed), one per
  lab's student version (``labs/student/``, never ``labs/source/``: no solutions);
* one page per run: the runner's summary and the measured claims found in the run's outputs
  (deploy to first token, continuous batching vs ``generate``, ``@serve.batch`` vs unbatched,
  time to scale up), or that a claim was not measured in this run.

Usage::

    python -m helpers.book                      # every run in build/runs/, into build/book/
    python -m helpers.book --run build/runs/ci  # one run
    python -m http.server -d build/book -b 127.0.0.1 8000

    from helpers.book import scrub_text
    scrub_text("http://127.0.0.1:39281/?token=ab12cd34ef56ab78")  # 'http://127.0.0.1:<port>/?token=<token>'
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml

from helpers.errors import WorkbookError
from helpers.paths import BUILD_DIR, IMAGES_DIR, LABS_DIR, NOTEBOOKS_DIR, REPO_ROOT
from helpers.solution_regions import has_solution

__all__ = [
    "CLAIMS",
    "Claim",
    "Run",
    "build_book",
    "extract_claims",
    "find_runs",
    "labs_after_lessons",
    "main",
    "read_run",
    "scrub_notebook",
    "scrub_text",
    "write_book_source",
]

# Ports that a reader should see as they are (Serve's HTTP port, the dashboard, GCS, the Ray
# client, JupyterLab, Prometheus): anything else on 127.0.0.1 was picked at random by a run.
KNOWN_PORTS = frozenset({3000, 6379, 8000, 8080, 8265, 8888, 9090, 10001})
HIDDEN = "<token>"

_SECRET_ASSIGNMENT = re.compile(
    r"(?i)(?P<key>token|api[_-]?key|secret|password|passwd)(?P<sep>[\"']?\s*[=:]\s*[\"']?)"
    r"(?P<value>(?=[^\s\"'&<>,;)\]}]*\d)[^\s\"'&<>,;)\]}]{8,})"
)  # a secret has a digit
_BEARER = re.compile(
    r"(?i)\b(bearer|token)\s+(?P<value>(?=[A-Za-z0-9._~+/=-]*\d)"
    r"[A-Za-z0-9._~+/=-]{16,})"
)
_HEX_64 = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")  # a Ray auth token's shape
_LOCAL_PORT = re.compile(r"\b(?P<host>127\.0\.0\.1|localhost|0\.0\.0\.0):(?P<port>\d{2,5})\b")
_TMP_PATH = re.compile(
    r"(?<![\w.~-])/tmp/(?!ray\b)(?P<first>[^\s/\"'`<>:,;)\]}]+)(?P<rest>/[^\s\"'`<>]*)?"
)
_HOME_PATH = re.compile(r"(?<![\w.~-])(?:/root|/home/[^/\s\"'`<>]+|/Users/[^/\s\"'`<>]+)(?=/|\b)")


def scrub_text(text: str, *, secrets: Iterable[str] = (), roots: Iterable[str] = ()) -> str:
    """``text`` with what must not be published replaced.

    * tokens: each of ``secrets`` verbatim, ``token=...``/``api_key: ...``/``Bearer ...``
      values and 64-hex-digit strings (a Ray auth token's shape) become ``<token>``;
    * local paths: each of ``roots`` (the repository the run was made in) becomes ``<repo>``,
      a home folder ``~``, a folder under /tmp ``<tmp>``;
    * ports of 127.0.0.1/localhost URLs other than the well-known ones become ``<port>``.

    ``scrub_text("/root/.cache/x and /tmp/rsw05-p8tx/timed.py")`` is
    ``'~/.cache/x and <tmp>/timed.py'``.
    """
    for secret in sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    text = _SECRET_ASSIGNMENT.sub(
        lambda m: m["key"] + m["sep"] + (m["value"] if m["value"] == HIDDEN else HIDDEN), text
    )
    text = _BEARER.sub(lambda m: m.group(0).replace(m["value"], HIDDEN), text)
    text = _HEX_64.sub(HIDDEN, text)
    for root in sorted(
        {r.rstrip("/") for r in roots if len(r.rstrip("/")) > 1}, key=len, reverse=True
    ):
        text = re.sub(re.escape(root) + r"(?=/|\b)", "<repo>", text)
    text = _TMP_PATH.sub(
        lambda m: "<tmp>" + m["rest"] if m["rest"] else f"<tmp>/{m['first']}", text
    )
    text = _HOME_PATH.sub("~", text)
    return _LOCAL_PORT.sub(
        lambda m: m.group(0) if int(m["port"]) in KNOWN_PORTS else f"{m['host']}:<port>", text
    )


def _scrub_value(value: Any, **kw: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value, **kw)
    if isinstance(value, list):
        return [_scrub_value(v, **kw) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_value(v, **kw) for k, v in value.items()}
    return value


_BINARY_MIME = ("image/png", "image/jpeg", "image/gif", "image/webp")
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def scrub_notebook(
    nb: dict[str, Any], *, secrets: Iterable[str] = (), roots: Iterable[str] = ()
) -> dict[str, Any]:
    """A copy of the notebook ``nb`` (as JSON) with every output and the metadata scrubbed
    (:func:`scrub_text`), and the source of papermill's injected-parameters cell too.

    Widget views are dropped where a text version exists (the site has no kernel to draw
    them; tqdm's bars then show as text), and so is the saved widget state.
    """
    kw = {"secrets": list(secrets), "roots": list(roots)}
    out = copy.deepcopy(nb)
    out["metadata"] = _scrub_value(
        {k: v for k, v in out.get("metadata", {}).items() if k != "widgets"}, **kw
    )
    for cell in out.get("cells", []):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell["source"] = _scrub_value(cell["source"], **kw)
        for output in cell.get("outputs", []):
            data = output.get("data")
            if data:
                if _WIDGET_VIEW in data and "text/plain" in data:
                    del data[_WIDGET_VIEW]
                for mime, value in list(data.items()):
                    if mime not in _BINARY_MIME:
                        data[mime] = _scrub_value(value, **kw)
            for key in ("text", "evalue", "traceback", "ename"):
                if key in output:
                    output[key] = _scrub_value(output[key], **kw)
    return out


def known_secrets() -> list[str]:
    """Token values this machine holds (Ray's default token file, RAY_AUTH_TOKEN, ...)."""
    found = [os.environ.get(name, "") for name in ("RAY_AUTH_TOKEN", "JUPYTER_TOKEN")]
    for path in (
        Path.home() / ".ray" / "auth_token",
        Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "/nonexistent")),
    ):
        try:
            found.append(path.read_text().strip())
        except OSError:
            pass
    return [s for s in found if len(s) >= 8]


# --- runs -----------------------------------------------------------------------------------


@dataclass
class Run:
    """What one folder of ``build/runs/`` holds: its executed notebooks and the summary of
    the runner's last invocation there (earlier invocations' notebooks stay in the folder;
    their status and duration come from papermill's record in each notebook)."""

    profile: str
    folder: Path
    finished: str = ""
    summary_md: str = ""
    notebooks: dict[str, Path] = field(default_factory=dict)  # stem -> executed notebook
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # stem -> status etc.

    def result(self, stem: str) -> dict[str, Any]:
        """status, duration_s, error and where it came from, for one notebook of the run."""
        if stem in self.results:
            return {**self.results[stem], "from": "summary"}
        path = self.notebooks.get(stem)
        if path is None:
            return {"status": "not run", "duration_s": None, "error": "", "from": ""}
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
        exception = meta.get("exception")
        return {
            "status": "failed"
            if exception
            else "passed"
            if meta.get("end_time")
            else "did not finish",
            "duration_s": meta.get("duration"),
            "error": "",
            "from": f"papermill's record ({(meta.get('end_time') or 'no end time')[:16]})",
        }


def read_run(folder: Path) -> Run:
    """The run in ``folder`` (a ``build/runs/<profile>`` folder); its ``labs/`` sub-folder
    (the labs' solutions, executed) is never read."""
    if not folder.is_dir():
        raise WorkbookError(
            f"There is no run folder {folder}.",
            "run the lessons first (make run, or make run PROFILE=ci), or name "
            "a folder that `python -m helpers.runner --build-dir` wrote.",
        )
    run = Run(profile=folder.name, folder=folder)
    summary = folder / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        run.profile = data.get("profile", folder.name)
        run.finished = data.get("finished", "")
        run.results = {r["notebook"]: r for r in data.get("results", [])}
    if (folder / "summary.md").exists():
        run.summary_md = (folder / "summary.md").read_text()
    run.notebooks = {p.stem: p for p in sorted(folder.glob("*.ipynb"))}
    if not run.notebooks and not run.results:
        raise WorkbookError(
            f"{folder} holds no executed notebook and no summary.json.",
            "run the lessons into it first (make run), or name another run.",
        )
    return run


def find_runs(runs_dir: Path = BUILD_DIR / "runs") -> list[Run]:
    """Every run under ``runs_dir``: ``full`` first, then ``ci``, then the others by name."""
    order = {"full": 0, "ci": 1}
    folders = (
        sorted(
            (p for p in runs_dir.glob("*") if p.is_dir()),
            key=lambda p: (order.get(p.name, 2), p.name),
        )
        if runs_dir.is_dir()
        else []
    )
    runs = [read_run(p) for p in folders if any(p.glob("*.ipynb")) or (p / "summary.json").exists()]
    if not runs:
        raise WorkbookError(
            f"No run in {runs_dir}: the book is built from executed notebooks.",
            "run them first: make run (about 40 minutes) or make run PROFILE=ci; "
            'a subset works too: make run NOTEBOOKS="00 01".',
        )
    return runs


# --- measured claims --------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A measured claim, and how to read it from a lesson's printed outputs: ``find`` takes
    one output's text and returns the value as a sentence, or None."""

    name: str
    lesson: str  # where it is measured, for the reader
    find: Callable[[str], str | None]


def _printed(pattern: str, render: str) -> Callable[[str], str | None]:
    def find(text: str) -> str | None:
        match = re.search(pattern, text)
        return render.format(**match.groupdict()) if match else None

    return find


class _TableRows(HTMLParser):
    """The rows of the HTML tables in a text, as lists of cell texts (a DataFrame's HTML)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None


def _table_rows(text: str) -> list[list[str]]:
    if "<table" in text:
        parser = _TableRows()
        parser.feed(text)
        return parser.rows
    # A DataFrame as text: a header line of column names, rows that start with their label.
    # pandas wraps a wide table in blocks that end with a backslash; each block lines up.
    return [
        [cell for cell in line.split() if cell != "\\"]
        for line in text.splitlines()
        if line.strip()
    ]


def _batched_vs_unbatched(text: str) -> str | None:
    """Lesson 06's comparison table (a DataFrame, as HTML or text): throughput_rps of its
    rows "batched" and "unbatched"."""
    rows = _table_rows(text)
    for i, header in enumerate(rows):
        if "throughput_rps" not in header:
            continue
        rps: dict[str, float] = {}
        for row in rows[i + 1 : i + 6]:
            # HTML rows hold the index label in the header's first (empty) cell; text rows
            # have one cell more than their header line.
            shift = len(row) - len(header)
            k = header.index("throughput_rps") + shift
            if not (row and row[0] in ("batched", "unbatched")):
                break  # the table (or this block of a wrapped one) ended
            if shift in (0, 1) and k < len(row):
                try:
                    rps.setdefault(row[0], float(row[k]))
                except ValueError:
                    pass
        if len(rps) == 2 and rps["unbatched"] > 0:
            return (
                f"{rps['batched'] / rps['unbatched']:.1f}x the requests/s of the unbatched "
                f"deployment ({rps['batched']:.0f} vs {rps['unbatched']:.0f} requests/s)"
            )
    return None


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "deploy to first token",
        "04a (LLM config and the OpenAI API)",
        _printed(
            r"the first token (?P<s>\d+(?:\.\d+)?) s after it",
            "{s} s from `serve deploy` to the first token",
        ),
    ),
    Claim(
        "continuous batching vs transformers `generate`",
        "04b (batching and mistakes)",
        _printed(
            r"continuous batching: (?P<x>\d+(?:\.\d+)?)x the tokens/s of transformers "
            r"generate \((?P<a>\d+) vs (?P<b>\d+) tokens/s\)",
            "{x}x the tokens/s of `generate` ({a} vs {b} tokens/s)",
        ),
    ),
    Claim("`@serve.batch` vs unbatched", "06 (batching)", _batched_vs_unbatched),
    Claim(
        "time to scale up",
        "05 (autoscaling)",
        _printed(
            r"2 replicas ran (?P<s>\d+(?:\.\d+)?) s after the step up",
            "{s} s from the step up in load to 2 running replicas",
        ),
    ),
)


def _output_texts(nb: dict[str, Any]) -> Iterable[str]:
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            if "text" in output:
                yield (
                    "".join(output["text"]) if isinstance(output["text"], list) else output["text"]
                )
            for mime in ("text/plain", "text/html"):
                value = output.get("data", {}).get(mime)
                if value:
                    yield "".join(value) if isinstance(value, list) else value


def extract_claims(notebooks: dict[str, Path]) -> list[tuple[Claim, str | None, str]]:
    """For each of :data:`CLAIMS`: (claim, the value as a sentence or None when no output
    of these notebooks holds it, the notebook it came from)."""
    texts = {
        stem: list(_output_texts(json.loads(path.read_text())))
        for stem, path in sorted(notebooks.items())
    }
    found: list[tuple[Claim, str | None, str]] = []
    for claim in CLAIMS:
        hit = next(
            (
                (value, stem)
                for stem, outputs in texts.items()
                for text in outputs
                if (value := claim.find(text))
            ),
            (None, ""),
        )
        found.append((claim, *hit))
    return found


# --- labs -------------------------------------------------------------------------------------

_LAB_ROW = re.compile(r"^\|\s*`(?P<lab>lab\d+\w*)`\s*\|(?P<cells>.*)\|\s*$")


def labs_after_lessons(readme: Path, lessons: Sequence[str]) -> dict[str, str]:
    """lab stem -> the lesson it follows: the last of the lessons its "after lesson" column in
    ``readme`` names ("02a, 02b, 03" -> 03b; "02a-04" -> 04b); labs that the table does not
    place are left out."""
    placed: dict[str, str] = {}
    if not readme.exists():
        return placed
    codes = [stem.split("_", 1)[0] for stem in lessons]
    for line in readme.read_text().splitlines():
        match = _LAB_ROW.match(line)
        if not match:
            continue
        after = match["cells"].split("|")[-1]
        wanted: list[int] = []
        for part in re.split(r"[,;]", after):
            bounds = [b.strip() for b in part.split("-") if b.strip()]
            if not bounds:
                continue

            def matching(prefix: str) -> list[int]:
                return [i for i, code in enumerate(codes) if code.startswith(prefix)]

            hits = matching(bounds[-1])  # a range "02a-04" ends at its last lesson
            wanted += hits
        if wanted:
            placed[match["lab"]] = lessons[max(wanted)]
    return placed


# --- the site's source ------------------------------------------------------------------------


def _title(nb: dict[str, Any], fallback: str) -> str:
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip().replace("`", "")
    return fallback


def _minutes(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 60:.1f}"


def _note_cell(text: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def _publish(nb: dict[str, Any], target: Path, note: str) -> None:
    nb = copy.deepcopy(nb)
    position = 1 if nb.get("cells") and nb["cells"][0].get("cell_type") == "markdown" else 0
    nb.setdefault("cells", []).insert(position, _note_cell(note))
    for cell in nb["cells"]:  # nbformat 4.5 cell ids are optional for the renderer
        cell.setdefault("metadata", {})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False))


def _check_no_solution(nb: dict[str, Any], path: Path) -> None:
    for cell in nb.get("cells", []):
        if has_solution("".join(cell.get("source", ""))):
            raise WorkbookError(
                f"{path} holds a solution region: it is not a student version.",
                "regenerate the student versions (python -m helpers.labs "
                "generate); the book publishes labs/student/ only.",
            )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_book_source(
    runs: Sequence[Run],
    src: Path,
    *,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    labs_dir: Path = LABS_DIR,
    site_dir: Path = BUILD_DIR / "book",
    secrets: Iterable[str] = (),
) -> Path:
    """Write the site's source into ``src`` (emptied first) and return its ``mkdocs.yml``."""
    secrets = [*secrets, *known_secrets()]
    if src.exists():
        shutil.rmtree(src)
    docs = src / "docs"
    (docs / "lessons").mkdir(parents=True)
    (docs / "labs").mkdir()
    (docs / "runs").mkdir()

    def roots_of(path: Path) -> list[str]:
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
        found = [str(REPO_ROOT), str(path.parent.resolve())]
        for key in ("input_path", "output_path"):
            value = meta.get(key) or ""
            for marker in ("/notebooks/", "/build/", "/labs/"):
                if marker in value:
                    found.append(value.split(marker)[0])
        return found

    # Lessons: those in notebooks/, then any a run holds under an older name.
    current = [p.stem for p in sorted(notebooks_dir.glob("[0-9]*.ipynb"))]
    executed: dict[str, Run] = {}
    for run in runs:
        for stem in run.notebooks:
            executed.setdefault(stem, run)
    older = sorted(s for s in executed if s not in current)
    lessons = current + older
    rows, nav_lessons = [], []
    labs = sorted(p for p in (labs_dir / "student").glob("lab*.ipynb"))
    after = labs_after_lessons(labs_dir / "README.md", current)
    for stem in lessons:
        taken_from = executed.get(stem)
        if taken_from is not None:
            run = taken_from
            path = run.notebooks[stem]
            nb = scrub_notebook(json.loads(path.read_text()), secrets=secrets, roots=roots_of(path))
            result = run.result(stem)
            seconds = result["duration_s"]
            status = result["status"]
            note = (
                f"> **Executed by `make run`, profile `{run.profile}`**: {status}"
                + (f" in {seconds:.0f} s" if seconds else "")
                + f". The outputs below are that run's ([the run](../runs/{run.folder.name}.html)); "
                "to run it yourself, open `notebooks/" + stem + ".ipynb` with `make lab`."
            )
        else:
            nb = json.loads((notebooks_dir / f"{stem}.ipynb").read_text())
            seconds, status = None, "not run"
            note = (
                "> **Not run in this build**: the lesson as committed, without outputs. "
                f"`make run NOTEBOOKS={stem.split('_')[0]}` then `make book` shows them."
            )
        title = _title(nb, stem)
        _publish(nb, docs / "lessons" / f"{stem}.ipynb", note)
        nav_lessons.append({title: f"lessons/{stem}.ipynb"})
        lab_links = ", ".join(
            f"[{lab.stem}](labs/{lab.stem}.ipynb)" for lab in labs if after.get(lab.stem) == stem
        )
        where = f"`{taken_from.folder.name}`" if taken_from else "not run"
        if stem in older:
            where += " (an older lesson name)"
        rows.append(
            f"| [{_md_cell(title)}](lessons/{stem}.ipynb) | {_minutes(seconds)} | "
            f"{status} | {where} | {lab_links} |"
        )

    nav_labs = []
    for lab in labs:
        nb = json.loads(lab.read_text())
        _check_no_solution(nb, lab)
        follows = after.get(lab.stem)
        note = (
            "> **Student version** (generated from the lab's source without its solutions): "
            "each task raises `NotImplementedError` until you write it, and the check after "
            "it says what is still missing. Open it with `make lab` or JupyterLab on "
            "`labs/student/`."
            + (f" It follows lesson [{follows}](../lessons/{follows}.html)." if follows else "")
        )
        _publish(nb, docs / "labs" / f"{lab.stem}.ipynb", note)
        nav_labs.append({_title(nb, lab.stem): f"labs/{lab.stem}.ipynb"})
    unplaced = [lab.stem for lab in labs if lab.stem not in after]

    nav_runs = []
    for run in runs:
        (docs / "runs" / f"{run.folder.name}.md").write_text(
            _run_page(
                run,
                secrets=secrets,
                roots=[str(REPO_ROOT)] + [r for p in run.notebooks.values() for r in roots_of(p)],
            )
        )
        nav_runs.append({f"Run: {run.folder.name}": f"runs/{run.folder.name}.md"})

    (docs / "images").mkdir()
    hero = (
        IMAGES_DIR / "figures" / "lesson05_autoscaling.png"
    )  # a run's figure, not a drawn diagram
    if hero.exists():
        shutil.copy(hero, docs / "images" / hero.name)
    (docs / "index.md").write_text(_landing_page(rows, runs, unplaced, hero.exists()))

    config = {
        "site_name": "Ray Serve Workbook",
        "site_description": "Ray Serve and ray.serve.llm on vLLM, lesson by lesson, with the "
        "outputs of a real run on a 2-core machine.",
        "docs_dir": "docs",
        "site_dir": str(site_dir.resolve()),
        "use_directory_urls": False,  # pages open from the file system too
        "theme": {
            "name": "material",
            "font": False,  # no web fonts: the site works offline
            "features": ["navigation.sections", "navigation.top", "search.highlight", "toc.follow"],
        },
        "plugins": [
            "search",
            {
                "mkdocs-jupyter": {
                    "execute": False,
                    "include_source": True,
                    "allow_errors": True,
                    "ignore_h1_titles": True,  # the nav's titles, which keep `code` in a heading
                    "cache": False,
                    "toc_depth": 3,
                }
            },
        ],
        "markdown_extensions": ["tables", "admonition", "toc"],
        "nav": [
            {"Home": "index.md"},
            {"Lessons": nav_lessons},
            {"Labs": nav_labs},
            {"Runs": nav_runs},
        ],
    }
    config_path = src / "mkdocs.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return config_path


def _landing_page(rows: list[str], runs: Sequence[Run], unplaced: list[str], hero: bool) -> str:
    runs_text = ", ".join(
        f"[`{r.folder.name}`](runs/{r.folder.name}.md)"
        + (f" (finished {r.finished})" if r.finished else "")
        for r in runs
    )
    parts = [
        "# Ray Serve Workbook",
        "",
        "Serve models with Ray Serve, and large language models with `ray.serve.llm` on vLLM, "
        "in Jupyter notebooks that run on a 2-core laptop with no GPU against a real Ray "
        "cluster. These pages show every lesson with the outputs of a real run: its figures, "
        "tables and printed checks, so you can read the course without running it.",
        "",
    ]
    if hero:
        parts += [
            "![A figure from lesson 05: replicas following a step in load]"
            "(images/lesson05_autoscaling.png)",
            "",
        ]
    parts += [
        "## Course map",
        "",
        f"Minutes are the lesson's running time in the run it was taken from ({runs_text}); "
        'a learner adds the reading and the "Your turn" tasks.',
        "",
        "| lesson | minutes | status | run | labs that follow it |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    if unplaced:
        parts += [
            "Labs that the labs' table does not place after a lesson: "
            + ", ".join(f"[{s}](labs/{s}.ipynb)" for s in unplaced)
            + ".",
            "",
        ]
    parts += [
        "## Run it yourself",
        "",
        "```bash",
        "make run     # every lesson, headless; executed notebooks in build/runs/full/",
        "make lab     # JupyterLab on the lessons, with the project's kernel",
        "make book    # this site, from the run, into build/book/",
        "```",
        "",
    ]
    return "\n".join(parts)


def _run_page(run: Run, *, secrets: Sequence[str], roots: Sequence[str]) -> str:
    stems = sorted(set(run.notebooks) | set(run.results))
    lines = [f"# Run: profile `{run.profile}`", ""]
    if run.finished:
        lines += [f"The runner's last invocation in this folder finished {run.finished}.", ""]
    lines += [
        "## Notebooks",
        "",
        "| notebook | status | duration (s) | error | from |",
        "|---|---|---|---|---|",
    ]
    for stem in stems:
        r = run.result(stem)
        link = f"[{stem}](../lessons/{stem}.ipynb)" if stem in run.notebooks else stem
        duration = "" if r["duration_s"] is None else f"{float(r['duration_s']):.1f}"
        lines.append(
            f"| {link} | {r['status']} | {duration} | "
            f"{_md_cell(scrub_text(r.get('error') or '', secrets=secrets, roots=roots))}"
            f" | {r['from']} |"
        )
    lines += [
        "",
        "## Measured claims",
        "",
        "Each value is read from the printed output of the lesson that measures and "
        "asserts it, in this run.",
        "",
        "| claim | measured in lesson | value in this run |",
        "|---|---|---|",
    ]
    for claim, value, where in extract_claims(run.notebooks):
        text = (
            f"{value} ([{where}](../lessons/{where}.ipynb))"
            if value
            else "not measured in this run (its lesson is not in this run, or did not get that far)"
        )
        lines.append(f"| {claim.name} | {claim.lesson} | {text} |")
    if run.summary_md:
        body = scrub_text(run.summary_md, secrets=secrets, roots=roots)
        body = re.sub(r"(?m)^# .*\n", "", body, count=1).strip()
        # the lines after the table are sentences: one paragraph each
        body = "\n".join(
            line if line.startswith("|") or not line else line + "\n" for line in body.splitlines()
        )
        lines += ["", "## The runner's summary (its last invocation)", "", body]
    return "\n".join(lines) + "\n"


def build_book(config: Path, *, timeout_s: float = 600) -> float:
    """Build the site with mkdocs; return the seconds it took."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--clean", "-q", "-f", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=config.parent,
    )
    if result.returncode != 0:
        raise WorkbookError(
            "mkdocs could not build the book.",
            "read its message below; `make setup` installs mkdocs, "
            "mkdocs-jupyter and mkdocs-material (the notebooks extra).",
            details=(result.stdout + result.stderr)[-3000:],
        )
    return time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.book", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--run",
        type=Path,
        action="append",
        default=[],
        help="a run folder (default: every folder in build/runs/, full first)",
    )
    parser.add_argument(
        "--src",
        type=Path,
        default=BUILD_DIR / "book-src",
        help="where the site's source is written (default: build/book-src)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=BUILD_DIR / "book",
        help="where the site is built (default: build/book)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        runs = [read_run(p) for p in args.run] if args.run else find_runs()
        config = write_book_source(runs, args.src, site_dir=args.out)
        build_book(config)
    except WorkbookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pages = len(list(args.out.rglob("*.html")))
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(
        f"book: {pages} pages, {size / 2**20:.1f} MiB in {args.out} "
        f"({time.monotonic() - started:.0f} s); open {args.out / 'index.html'} or run "
        f"python -m http.server -d {args.out} -b 127.0.0.1"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
