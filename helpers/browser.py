"""A real headless browser for screenshots and page checks: Chromium driven by Playwright.

The browser is the system's Chromium (Debian's ``chromium`` package, ``/usr/bin/chromium``;
``WORKBOOK_CHROMIUM`` points elsewhere), not a browser Playwright downloads. It runs headless,
without a sandbox or GPU, with a fresh profile folder that is deleted afterwards, and with
background networking (updates, sync, QUIC) switched off, so a page shows only what its
server sent.

Two entry points:

* :func:`screenshot` - open one URL, wait for it to settle (optionally for a text), save a PNG,
  and return what the page said (title and visible text), so a caller can assert on it;
* :func:`open_browser` - a context manager yielding a Playwright ``BrowserContext``, for
  anything more interactive (clicking, typing, several pages).

Usage::

    from helpers.browser import screenshot
    shot = screenshot("http://127.0.0.1:8265/#/serve", "build/dashboard.png",
                      cookies={"ray-authentication-token": token}, wait_for_text="gateway")
    assert "gateway" in shot.text

When Chromium or Playwright is missing, both raise :class:`BrowserMissingError` saying what
to install. Introduced in notebooks/09_observability.ipynb.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from helpers.errors import WorkbookError

if TYPE_CHECKING:  # pragma: no cover
    from playwright.sync_api import BrowserContext

__all__ = [
    "CHROMIUM_ARGS",
    "DEFAULT_CHROMIUM",
    "BrowserMissingError",
    "PageShot",
    "chromium_path",
    "dashboard_screenshot",
    "open_browser",
    "screenshot",
]

#: Where Debian's ``chromium`` package puts the browser.
DEFAULT_CHROMIUM = "/usr/bin/chromium"

#: Flags for a quiet, headless Chromium in a container or CI (no sandbox, no GPU, nothing
#: fetched in the background). The profile folder is given separately (a fresh one each time).
CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class BrowserMissingError(WorkbookError):
    """Chromium or Playwright for Python is not installed."""


def chromium_path() -> str:
    """The Chromium binary to use (``WORKBOOK_CHROMIUM`` or Debian's), or a clear error."""
    path = os.environ.get("WORKBOOK_CHROMIUM", DEFAULT_CHROMIUM)
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        raise BrowserMissingError(
            f"No Chromium browser at {path}.",
            "install Debian's package as root: `apt-get update && apt-get install -y chromium` "
            "(or run scripts/ensure_browser.sh), or set WORKBOOK_CHROMIUM to a Chromium/Chrome "
            "binary.",
        )
    return path


@contextlib.contextmanager
def open_browser(
    *,
    width: int = 1280,
    height: int = 800,
    extra_args: tuple[str, ...] = (),
) -> Iterator[BrowserContext]:
    """Start headless Chromium with a fresh profile; yield its Playwright ``BrowserContext``.

    The browser and its profile folder are removed on exit, also when the block raises.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise BrowserMissingError(
            "The Python package 'playwright' is not installed.",
            "run `make setup` (the project's notebooks extra has playwright); the browser "
            "itself is the system's Chromium, Playwright's own downloads are not needed.",
        ) from err
    executable = chromium_path()
    profile = Path(tempfile.mkdtemp(prefix="rsw-chromium-"))
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=executable,
                headless=True,
                args=[*CHROMIUM_ARGS, *extra_args],
                viewport={"width": width, "height": height},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@dataclass(frozen=True)
class PageShot:
    """A screenshot and what the page showed when it was taken."""

    path: Path
    url: str
    title: str
    text: str  # the page's visible text
    seconds: float  # from opening the URL to the screenshot


def screenshot(
    url: str,
    path: str | os.PathLike[str],
    *,
    cookies: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    wait_for_text: str | None = None,
    width: int = 1280,
    height: int = 800,
    full_page: bool = False,
    settle_s: float = 1.0,
    timeout_s: float = 60.0,
) -> PageShot:
    """Open ``url`` in headless Chromium, save a PNG screenshot to ``path``, return a :class:`PageShot`.

    ``cookies`` are set for the URL's host before the page loads (for example the Ray
    dashboard's ``ray-authentication-token``); ``headers`` are sent with every request.
    With ``wait_for_text`` the screenshot waits until that text is visible on the page (else
    :class:`~helpers.errors.WorkbookError` after ``timeout_s``, with what the page showed
    instead); either way it then waits ``settle_s`` for charts and tables to finish drawing.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open_browser(width=width, height=height) as context:
        if cookies:
            parts = urlsplit(url)
            context.add_cookies(
                [
                    {"name": k, "value": v, "url": f"{parts.scheme}://{parts.netloc}/"}
                    for k, v in cookies.items()
                ]
            )
        if headers:
            context.set_extra_http_headers(dict(headers))
        page = context.new_page()
        page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
        if wait_for_text:
            try:
                page.get_by_text(wait_for_text).first.wait_for(
                    state="visible",
                    timeout=max(1.0, timeout_s - (time.monotonic() - started)) * 1000,
                )
            except Exception as err:
                shown = _visible_text(page)[:800]
                raise WorkbookError(
                    f"{url} did not show {wait_for_text!r} within {timeout_s:.0f} s.",
                    "check the page in a browser (is the server up, is a login needed?), or "
                    "raise timeout_s.",
                    details=f"The page showed:\n{shown}",
                ) from err
        else:
            with contextlib.suppress(Exception):  # pages that poll never go idle
                page.wait_for_load_state("networkidle", timeout=min(10.0, timeout_s) * 1000)
        page.wait_for_timeout(settle_s * 1000)
        page.screenshot(path=str(target), full_page=full_page)
        return PageShot(
            target,
            page.url,
            page.title(),
            _visible_text(page),
            round(time.monotonic() - started, 2),
        )


def dashboard_screenshot(
    cluster: Any,
    page: str,
    path: str | os.PathLike[str],
    *,
    wait_for_text: str | None = None,
    width: int = 1400,
    height: int = 800,
    timeout_s: float = 90.0,
) -> PageShot:
    """A :func:`screenshot` of one page of ``cluster``'s Ray dashboard (``page`` such as
    ``"#/serve"``), logged in with the cluster's token (the ``ray-authentication-token``
    cookie), from a notebook cell.

    Playwright's synchronous API refuses to run on a thread that has an asyncio loop (a
    notebook cell's), so the browser runs in a worker thread. Introduced in
    notebooks/09_observability.ipynb::

        shot = dashboard_screenshot(cluster, "#/serve", "build/serve.png", wait_for_text="observed")
    """
    from concurrent.futures import ThreadPoolExecutor

    token_path = getattr(cluster, "token_path", None)
    token = Path(token_path).read_text().strip() if token_path else ""
    url = f"{cluster.dashboard_url}/{page.lstrip('/')}"
    with ThreadPoolExecutor(max_workers=1) as browser_thread:
        return browser_thread.submit(
            screenshot,
            url,
            path,
            wait_for_text=wait_for_text,
            settle_s=2.0,
            cookies={"ray-authentication-token": token} if token else None,
            width=width,
            height=height,
            timeout_s=timeout_s,
        ).result()


def _visible_text(page: Any) -> str:
    try:
        return str(page.inner_text("body"))
    except Exception:  # noqa: BLE001 - a page without a body
        return ""
