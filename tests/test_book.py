"""Unit tests of helpers/book.py: the scrubber, the measured claims, the labs' places, the
run folder. No Ray, no browser (tests/test_book_browser.py builds and opens a real site)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pandas as pd
import pytest

from helpers.book import (
    CLAIMS,
    extract_claims,
    labs_after_lessons,
    read_run,
    scrub_notebook,
    scrub_text,
    write_book_source,
)
from helpers.errors import WorkbookError
from helpers.paths import LABS_DIR, NOTEBOOKS_DIR


def test_scrub_text_hides_tokens_in_every_shape_it_is_printed() -> None:
    ray_token = secrets.token_hex(32)
    lab_token = secrets.token_hex(12)
    text = (
        f"RAY_AUTH_TOKEN={ray_token}\n"
        f"the token file holds {ray_token}\n"
        f"http://127.0.0.1:8888/lab?token={lab_token}\n"
        f"headers {{'Authorization': 'Bearer {lab_token}'}}\n"
        f"{{'token': '{lab_token}'}}\n"
    )
    scrubbed = scrub_text(text)
    assert ray_token not in scrubbed and lab_token not in scrubbed
    assert "RAY_AUTH_TOKEN=<token>" in scrubbed
    assert "http://127.0.0.1:8888/lab?token=<token>" in scrubbed
    assert "Bearer <token>" in scrubbed


def test_scrub_text_hides_a_secret_it_is_given_whatever_its_shape() -> None:
    assert (
        scrub_text("password is correct-horse-battery", secrets=["correct-horse-battery"])
        == "password is <token>"
    )


def test_scrub_text_leaves_what_a_lesson_teaches() -> None:
    text = (
        "max_tokens=4096, 'prompt_tokens': 12, completion_tokens 14; "
        "RAY_AUTH_MODE=token; logs in /tmp/ray/session_latest/logs; "
        "Serve on http://127.0.0.1:8000/classify, the dashboard on 127.0.0.1:8265; "
        "node id 084cb7f62725f19c5c2f586da7a0bb8799b2d1afc6ab20255360ed50; "
        "RPC error: InvalidAuthToken: Authentication token is missing; "
        'OpenAI(api_key="not-needed-locally")'
    )
    assert scrub_text(text) == text


def test_scrub_text_replaces_local_paths_and_random_ports() -> None:
    text = (
        "/tmp/rsw05-p8txmsvk/timed.py written; /tmp/minimal.yaml; "
        "/root/.cache/ray-serve-workbook/models/tiny; /home/ada/.ray/auth_token; "
        "/srv/course/clone/.venv/lib/python3.11/site-packages/ray/serve/api.py; "
        "GET http://127.0.0.1:39281/api/classify (localhost:27837)"
    )
    assert scrub_text(text, roots=["/srv/course/clone"]) == (
        "<tmp>/timed.py written; <tmp>/minimal.yaml; "
        "~/.cache/ray-serve-workbook/models/tiny; ~/.ray/auth_token; "
        "<repo>/.venv/lib/python3.11/site-packages/ray/serve/api.py; "
        "GET http://127.0.0.1:<port>/api/classify (localhost:<port>)"
    )


def test_scrub_notebook_scrubs_outputs_metadata_and_injected_parameters_only() -> None:
    token = secrets.token_hex(32)
    nb = {
        "metadata": {
            "papermill": {"input_path": "/srv/course/clone/notebooks/00_x.ipynb"},
            "widgets": {"state": {"anything": 1}},
        },
        "cells": [
            {
                "cell_type": "code",
                "metadata": {"tags": ["injected-parameters"]},
                "source": 'token_path = "/tmp/rsw00abc/auth_token"\n',
                "outputs": [],
            },
            {
                "cell_type": "code",
                "metadata": {},
                "source": 'print("/tmp/kept-in-source")',
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": [f"token={token}\n"]},
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {
                            "text/plain": f"http://127.0.0.1:40000/?token={token}",
                            "text/html": f"<b>{token}</b>",
                            "image/png": "iVBORw0KGgo=",
                            "application/vnd.jupyter.widget-view+json": {"model_id": "m"},
                        },
                    },
                    {
                        "output_type": "error",
                        "ename": "ValueError",
                        "evalue": f"bad token {token}",
                        "traceback": [f"... {token} ..."],
                    },
                ],
            },
        ],
    }
    original = json.dumps(nb)
    out = scrub_notebook(nb, roots=["/srv/course/clone"])
    assert json.dumps(nb) == original  # the input is not changed
    assert token not in json.dumps(out)
    assert "widgets" not in out["metadata"]
    assert out["metadata"]["papermill"]["input_path"] == "<repo>/notebooks/00_x.ipynb"
    assert out["cells"][0]["source"] == 'token_path = "<tmp>/auth_token"\n'
    assert out["cells"][1]["source"] == 'print("/tmp/kept-in-source")'  # committed source
    data = out["cells"][1]["outputs"][1]["data"]
    assert data["text/plain"] == "http://127.0.0.1:<port>/?token=<token>"
    assert data["image/png"] == "iVBORw0KGgo="
    assert "application/vnd.jupyter.widget-view+json" not in data


def _executed(path: Path, *texts: str, plain: str = "") -> Path:
    outputs = [{"output_type": "stream", "name": "stdout", "text": t} for t in texts]
    if plain:
        outputs.append(
            {
                "output_type": "execute_result",
                "execution_count": 2,
                "metadata": {},
                "data": {"text/plain": plain},
            }
        )
    path.write_text(
        json.dumps(
            {
                "metadata": {"papermill": {"duration": 12.5, "end_time": "2026-12-05T10:00:00"}},
                "cells": [{"cell_type": "code", "metadata": {}, "source": "", "outputs": outputs}],
            }
        )
    )
    return path


def test_extract_claims_reads_each_claim_from_the_printed_outputs(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {
            "requests": [640, 3200],
            "failed": [0, 0],
            "throughput_rps": [51.2, 256.9],
            "latency_p50_s": [0.6, 0.12],
            "latency_p90_s": [0.7, 0.15],
            "latency_p99_s": [0.8, 0.2],
        },
        index=["unbatched", "batched"],
    )
    notebooks = {
        "04a": _executed(
            tmp_path / "04a.ipynb",
            "RUNNING 40.1 s after `serve deploy`; the first token 41.7 s after it: ' the'\n",
        ),
        "04b": _executed(
            tmp_path / "04b.ipynb",
            "continuous batching: 7.8x the tokens/s of "
            "transformers generate (8696 vs 1117 tokens/s)\n",
        ),
        "05": _executed(
            tmp_path / "05.ipynb",
            "Serve's status sampled every 0.50 s (median); "
            "2 replicas ran 4.74 s after the step up; peak 3 replicas",
        ),
        "06": _executed(tmp_path / "06.ipynb", plain=table.to_string()),
    }
    found = {claim.name: (value, where) for claim, value, where in extract_claims(notebooks)}
    assert len(found) == len(CLAIMS) == 4
    assert found["deploy to first token"] == (
        "41.7 s from `serve deploy` to the first token",
        "04a",
    )
    assert found["continuous batching vs transformers `generate`"][0].startswith("7.8x")
    assert found["time to scale up"][0].startswith("4.74 s")
    assert found["`@serve.batch` vs unbatched"][0].startswith("5.0x")
    # pandas wraps a wide table; the columns still line up
    with pd.option_context("display.width", 40, "display.max_columns", None):
        wrapped = _executed(tmp_path / "06w.ipynb", plain=repr(table))
    assert "\\" in json.loads(wrapped.read_text())["cells"][0]["outputs"][0]["data"]["text/plain"]
    assert extract_claims({"06": wrapped})[2][1].startswith("5.0x")
    # the same table as HTML only (how a notebook shows a DataFrame to a browser)
    as_html = tmp_path / "06h.ipynb"
    as_html.write_text(
        json.dumps(
            {
                "cells": [
                    {
                        "cell_type": "code",
                        "outputs": [
                            {
                                "output_type": "display_data",
                                "data": {"text/html": table._repr_html_()},
                            }
                        ],
                    }
                ]
            }
        )
    )
    assert extract_claims({"06": as_html})[2][1].startswith("5.0x")


def test_a_claim_not_in_the_run_is_said_to_be_missing(tmp_path: Path) -> None:
    found = extract_claims({"00": _executed(tmp_path / "00.ipynb", "all good\n")})
    assert [value for _, value, _ in found] == [None] * len(CLAIMS)


def test_labs_follow_the_last_lesson_their_table_names() -> None:
    lessons = [p.stem for p in sorted(NOTEBOOKS_DIR.glob("[0-9]*.ipynb"))]
    placed = labs_after_lessons(LABS_DIR / "README.md", lessons)
    students = sorted(p.stem for p in (LABS_DIR / "student").glob("lab*.ipynb"))
    assert sorted(placed) == students  # the table places every lab
    assert all(lesson in lessons for lesson in placed.values())
    assert placed["lab01_first_deployment"].startswith("02a")


def test_labs_after_lessons_reads_lists_and_ranges(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "| lab | minutes | the task | after lesson |\n|---|---|---|---|\n"
        "| `lab01_a` | 20 | x | 02a |\n| `lab02_b` | 30 | y | 02a, 02b, 03 |\n"
        "| `lab03_c` | 30 | z | 02a-04 |\n| `lab04_d` | 30 | w | 99 |\n"
    )
    lessons = ["01_x", "02a_x", "02b_x", "03a_x", "03b_x", "04a_x", "04b_x", "05_x"]
    assert labs_after_lessons(readme, lessons) == {
        "lab01_a": "02a_x",
        "lab02_b": "03b_x",
        "lab03_c": "04b_x",
    }


def test_read_run_says_what_to_do_when_there_is_no_run(tmp_path: Path) -> None:
    with pytest.raises(WorkbookError, match="make run"):
        read_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbookError, match="make run"):
        read_run(tmp_path / "empty")


def test_the_book_source_lists_every_lesson_and_lab_and_marks_what_was_not_run(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "runs" / "ci"
    run_dir.mkdir(parents=True)
    _executed(run_dir / "00_environment_check.ipynb", "PASS\n")
    (run_dir / "labs").mkdir()  # the labs' solutions, executed: never published
    _executed(run_dir / "labs" / "lab01_first_deployment.ipynb", "### BEGIN SOLUTION\n")
    config = write_book_source([read_run(run_dir)], tmp_path / "src", site_dir=tmp_path / "book")
    docs = config.parent / "docs"
    lessons = sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9]*.ipynb"))
    assert sorted(p.stem for p in (docs / "lessons").glob("*.ipynb")) == lessons
    labs = sorted(p.stem for p in (LABS_DIR / "student").glob("lab*.ipynb"))
    assert sorted(p.stem for p in (docs / "labs").glob("*.ipynb")) == labs
    for lab in (docs / "labs").glob("*.ipynb"):
        assert "BEGIN SOLUTION" not in lab.read_text()
    index = (docs / "index.md").read_text()
    assert "| passed | `ci` |" in index and "| not run | not run |" in index
    assert "0.2 |" in index  # 12.5 s from papermill's record, as minutes
    run_page = (docs / "runs" / "ci.md").read_text()
    assert "not measured in this run" in run_page
