"""The book (``make book``) built from a small real run and read in headless Chromium.

The runner executes lesson 00 with the CI profile into a temporary run folder; a fake token, a
home-folder path, a /tmp folder and a random 127.0.0.1 port are then planted in that run's
output, as a leaking cell would print them. The book is built from that run (plus every lab's
student version and the other lessons, unexecuted) exactly as ``make book`` does, served on
127.0.0.1, and EVERY page is opened in Chromium. The test fails on an image that did not load,
an internal link to a page or file that is not there, a Python traceback in an output, or any
of the planted secrets anywhere in the site (pages, copied notebooks, search index). It keeps
screenshots of the landing page and of lesson 00 in ``build/screenshots/``.
"""

from __future__ import annotations

import functools
import http.server
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from local_http import http_server_in_thread

from helpers.paths import BUILD_DIR, REPO_ROOT
from helpers.ports import free_port

SCREENSHOTS = BUILD_DIR / "screenshots"


@pytest.fixture(scope="module")
def planted() -> dict[str, str]:
    """What a careless output could print: none of it may reach the site."""
    port = free_port()
    while port in (3000, 6379, 8000, 8080, 8265, 8888, 9090, 10001):
        port = free_port()
    return {
        "ray_token": secrets.token_hex(32),
        "lab_token": secrets.token_hex(12),
        "port": str(port),
        "scratch": f"rsw00{secrets.token_hex(4)}",
        "home": str(Path.home()),
    }


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory, planted: dict[str, str]) -> Path:
    """Lesson 00 run by the runner (CI profile), with a leaking cell planted in its output."""
    run_dir = tmp_path_factory.mktemp("book") / "runs" / "ci"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers.runner",
            "--profile",
            "ci",
            "--build-dir",
            str(run_dir),
            "00",
        ],
        cwd=REPO_ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    executed = run_dir / "00_environment_check.ipynb"
    nb = json.loads(executed.read_text())
    p = planted
    leak = (
        f"RAY_AUTH_TOKEN={p['ray_token']}\n"
        f"{p['home']}/.ray/auth_token holds {p['ray_token']}\n"
        f"JupyterLab: http://127.0.0.1:{p['port']}/lab?token={p['lab_token']}\n"
        f"cluster folder: /tmp/{p['scratch']}/cluster/auth_token\n"
    )
    nb["cells"].append(
        {
            "cell_type": "code",
            "execution_count": 99,
            "id": "planted-leak",
            "metadata": {},
            "source": "print(leaky_settings())\ndisplay(HTML(leaky_settings()))",
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": leak},
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {"text/plain": leak, "text/html": f"<pre>{leak}</pre>"},
                },
            ],
        }
    )
    executed.write_text(json.dumps(nb))
    return run_dir


@pytest.fixture(scope="module")
def site(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The book built from the small run, as ``make book`` builds it; the seconds it took."""
    from helpers.book import main

    root = tmp_path_factory.mktemp("site")
    started = time.monotonic()
    code = main(["--run", str(small_run), "--src", str(root / "src"), "--out", str(root / "book")])
    assert code == 0
    return {"dir": root / "book", "seconds": time.monotonic() - started}


@pytest.fixture(scope="module")
def served(site: dict[str, object]) -> Iterator[str]:
    """The site over HTTP on 127.0.0.1 (a free port), as `python -m http.server` serves it."""
    with http_server_in_thread(functools.partial(_QuietHandler, directory=str(site["dir"]))) as url:
        yield url + "/"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_no_planted_secret_reaches_the_site(
    site: dict[str, object], planted: dict[str, str]
) -> None:
    site_dir = site["dir"]
    assert isinstance(site_dir, Path)
    p = planted
    leaks = [p["ray_token"], p["lab_token"], f":{p['port']}", p["scratch"], f"{p['home']}/.ray"]
    found = {}
    for path in site_dir.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".ipynb", ".json", ".md", ".xml", ".js"):
            text = path.read_text(errors="replace")
            hits = [leak for leak in leaks if leak in text]
            if hits:
                found[str(path.relative_to(site_dir))] = hits
    assert not found, f"secrets or local details published: {found}"
    # The leaking cell itself is published, scrubbed (not dropped): the reader sees what it did.
    page = (site_dir / "lessons" / "00_environment_check.html").read_text()
    assert "RAY_AUTH_TOKEN=&lt;token&gt;" in page
    assert "http://127.0.0.1:&lt;port&gt;/lab?token=&lt;token&gt;" in page
    assert "&lt;tmp&gt;/cluster/auth_token" in page


def test_every_page_opens_in_chromium_with_its_images_links_and_no_traceback(
    served: str, site: dict[str, object], planted: dict[str, str]
) -> None:
    site_dir = site["dir"]
    assert isinstance(site_dir, Path)
    started = time.monotonic()
    report = check_site(
        site_dir,
        served,
        forbidden=(planted["ray_token"], planted["lab_token"]),
        shots={
            "index.html": SCREENSHOTS / "book_landing.png",
            "lessons/00_environment_check.html": SCREENSHOTS / "book_lesson_00.png",
        },
    )
    pages = report["pages"]
    assert "index.html" in pages and "lessons/00_environment_check.html" in pages
    assert any(p.startswith("labs/lab") for p in pages) and any(
        p.startswith("runs/") for p in pages
    )
    assert not report["problems"], "\n".join(report["problems"][:40])
    texts = report["texts"]
    assert "Course map" in texts["index.html"] and "00 · Environment check" in texts["index.html"]
    assert "Executed by make run" in texts["lessons/00_environment_check.html"]
    assert (SCREENSHOTS / "book_landing.png").stat().st_size > 20_000
    assert (SCREENSHOTS / "book_lesson_00.png").stat().st_size > 20_000
    print(
        f"{len(pages)} pages and {report['links']} internal links checked in "
        f"{time.monotonic() - started:.0f} s; the book built in {site['seconds']:.0f} s; "
        f"requests to other hosts blocked: {sorted(report['external'])[:5]}"
    )


def check_site(
    site_dir: Path,
    base_url: str,
    *,
    forbidden: tuple[str, ...] = (),
    shots: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Open every page of the site served at ``base_url`` in headless Chromium; return the
    problems found (an image that did not load, a traceback in an output, a ``forbidden``
    string shown, an internal link to nothing), the pages, their texts and what was blocked.
    """
    from helpers.browser import open_browser

    pages = sorted(str(p.relative_to(site_dir)) for p in site_dir.rglob("*.html"))
    problems: list[str] = []
    external: set[str] = set()
    links: dict[str, set[str]] = {}
    texts: dict[str, str] = {}
    with open_browser(width=1280, height=900) as context:

        def only_local(route: Any) -> Any:  # the site works offline: nothing from elsewhere
            url = route.request.url
            if url.startswith((base_url, "data:")):
                return route.continue_()
            external.add(url)
            return route.abort()

        context.route("**/*", only_local)
        page = context.new_page()
        for name in pages:
            response = page.goto(base_url + name, wait_until="load")
            if response is None or response.status != 200:
                problems.append(f"{name}: HTTP {response and response.status}")
                continue
            state = page.evaluate(_PAGE_STATE)
            problems += [f"{name}: image did not load: {src}" for src in state["broken"]]
            problems += [f"{name}: a traceback in an output: {tb}" for tb in state["tracebacks"]]
            problems += [
                f"{name}: shows a planted secret" for secret in forbidden if secret in state["text"]
            ]
            texts[name] = state["text"]
            for link in state["links"]:
                if link.startswith(base_url):
                    links.setdefault(link, set()).add(name)
            if shots and name in shots:
                shots[name].parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shots[name]))
    for link, sources in sorted(links.items()):
        target = unquote(urlsplit(link).path).lstrip("/")
        path = site_dir / target
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            problems.append(f"broken internal link {target} on {sorted(sources)[:3]}")
    return {
        "pages": pages,
        "problems": problems,
        "texts": texts,
        "links": len(links),
        "external": external,
    }


# What a page shows: images that did not load, links, and outputs that hold a traceback (a
# cell that raised is rendered as an error/stderr output; a lesson that prints a log with a
# traceback in it, to teach reading one, prints it on stdout, rendered as text/plain).
_PAGE_STATE = """() => ({
    broken: [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
            .map(i => (i.getAttribute('src') || '').slice(0, 80)),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    tracebacks: [...document.querySelectorAll('.jp-OutputArea-output')]
            .filter(o => /Traceback \\(most recent call last\\)/.test(o.innerText)
                      && /stderr|error/.test(o.getAttribute('data-mime-type') || ''))
            .map(o => o.innerText.slice(0, 300)),
    text: document.body.innerText,
})"""
