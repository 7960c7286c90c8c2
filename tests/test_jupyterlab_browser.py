"""JupyterLab in a real browser: a notebook with a widget and a figure, run from the page.

The test starts JupyterLab headless on the project's kernel (a token, 127.0.0.1 only, a free
port), opens ``tests/browser/widget_and_figure.ipynb`` in headless Chromium driven by
Playwright, runs every cell from the Run menu, and checks what a learner would see: the
ipywidgets slider and its label rendered, the label updated by the kernel when the slider
moves (a round trip through the widget comm), the matplotlib figure drawn as an image, and
no error output. A screenshot goes to ``build/browser/``. JupyterLab is stopped by its
process id at the end.

Chromium is Debian's package (``scripts/ensure_browser.sh`` installs it when it can); when it
is missing and cannot be installed the test fails saying what to install, it never skips.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
import requests

from helpers.paths import BUILD_DIR, REPO_ROOT
from helpers.ports import free_port
from helpers.processes import start_session, stop_session

NOTEBOOK = REPO_ROOT / "tests" / "browser" / "widget_and_figure.ipynb"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary, installed by scripts/ensure_browser.sh if it can be."""
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "ensure_browser.sh")],
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail("The browser test needs Chromium and Playwright for Python:\n"
                    + (result.stdout + result.stderr).strip(), pytrace=False)
    return os.environ.get("WORKBOOK_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """JupyterLab on 127.0.0.1 with a token, serving a copy of the test notebook."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = free_port(), secrets.token_hex(16)
    settings = root / ".settings" / "@jupyterlab"
    # A fresh user: start the notebook's kernel without asking, and no news prompt.
    for plugin, values in (("notebook-extension/tracker", {"autoStartDefaultKernel": True}),
                           ("apputils-extension/notification", {"fetchNews": "false"})):
        target = settings / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            f"--LabApp.workspaces_dir={root / '.workspaces'}",
            f"--LabApp.user_settings_dir={root / '.settings'}",
            "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly"]  # no network: no news, updates or plugin index
    if os.geteuid() == 0:
        argv.append("--allow-root")  # CI runs as root; JupyterLab refuses that without this
    log = root / "jupyterlab.log"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(root / ".runtime"))
    proc = start_session(argv, log, env=env, cwd=root)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {proc.returncode}:\n"
                            + log.read_text(errors="replace")[-3000:], pytrace=False)
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/status", timeout=2,
                                params={"token": token}).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail("JupyterLab did not answer within 60 s:\n"
                            + log.read_text(errors="replace")[-3000:], pytrace=False)
            time.sleep(0.3)
        yield {"url": f"http://127.0.0.1:{port}", "token": token, "root": root, "log": log}
    finally:
        stop_session(proc.pid, grace_s=10)  # the server and its kernels, by process id


def test_jupyterlab_runs_a_notebook_with_a_widget_and_a_figure(chromium: str,
                                                                jupyterlab: dict) -> None:
    from playwright.sync_api import expect, sync_playwright

    started = time.monotonic()
    shots = BUILD_DIR / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="chromium-")
    url = f"{jupyterlab['url']}/lab/tree/{NOTEBOOK.name}?token={jupyterlab['token']}"
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900})
            page = context.new_page()
            try:
                page.goto(url)
                notebook = page.locator(".jp-NotebookPanel")
                expect(notebook).to_be_visible(timeout=30_000)
                # The kernel is ready when the status bar names it and says it is idle.
                expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(
                    timeout=40_000)
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-item:has(.lm-Menu-itemLabel:text-is('Run All Cells'))"
                             ).click()

                done = page.locator(".jp-OutputArea-output", has_text="all cells ran")
                expect(done).to_be_visible(timeout=30_000)
                slider = page.locator(".jupyter-widgets .widget-slider")
                expect(slider).to_be_visible(timeout=10_000)
                label = page.locator(".jupyter-widgets .widget-label", has_text="value:")
                expect(label).to_have_text("value: 5")
                # Move the slider with the keyboard: the browser changes the widget, the kernel's
                # observer changes the label, and the browser shows the kernel's new value.
                page.locator(".jupyter-widgets .noUi-handle").first.focus()
                page.keyboard.press("ArrowRight")
                page.keyboard.press("ArrowRight")
                expect(label).to_have_text("value: 7", timeout=10_000)

                figure = page.locator(".jp-RenderedImage img").first
                expect(figure).to_be_visible(timeout=10_000)
                width = figure.evaluate("img => img.naturalWidth")
                height = figure.evaluate("img => img.naturalHeight")
                # A traceback in any cell (stderr warnings, e.g. a font cache note, are fine).
                error_count = page.locator(
                    ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']").count()
                page.screenshot(path=str(shots / "jupyterlab_widget_and_figure.png"),
                                full_page=True)
            except BaseException:
                page.screenshot(path=str(shots / "jupyterlab_failure.png"), full_page=True)
                raise
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)

    assert width >= 300 and height >= 150, (width, height)  # a 5 x 3 inch figure, inline
    assert error_count == 0, "a cell raised an error"
    assert (shots / "jupyterlab_widget_and_figure.png").stat().st_size > 10_000
    assert time.monotonic() - started < 60
