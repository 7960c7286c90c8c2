"""`make lab` (scripts/lab.sh): starts JupyterLab as root too, and registers a named kernel.

JupyterLab refuses to run as root unless told to; containers and cloud VMs often have only
root. The script passes --allow-root there with a warning, and registers the project's
environment as the kernel "ray-serve-workbook" so another JupyterLab or VS Code can use it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import requests

from helpers.paths import REPO_ROOT
from helpers.ports import free_port
from helpers.processes import start_session, stop_session


def test_make_lab_starts_as_this_user_and_registers_the_kernel(tmp_path: Path) -> None:
    port, token = free_port(), secrets.token_hex(16)
    home = tmp_path / "home"  # the kernel is registered for "this user": a throw-away home
    home.mkdir()
    env = dict(
        os.environ,
        HOME=str(home),
        LAB_PORT=str(port),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
    )
    env.pop("JUPYTER_DATA_DIR", None)
    log = tmp_path / "lab.log"
    proc = start_session(
        [
            "bash",
            str(REPO_ROOT / "scripts" / "lab.sh"),
            "--no-browser",
            f"--IdentityProvider.token={token}",
            "--LabApp.news_url=",
            "--LabApp.extension_manager=readonly",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        log,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"make lab exited ({proc.returncode}):\n{log.read_text()}"
            try:
                status = requests.get(
                    f"http://127.0.0.1:{port}/api/status", params={"token": token}, timeout=2
                )
                if status.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"JupyterLab did not answer:\n{log.read_text()}"
            time.sleep(0.5)
        specs = requests.get(
            f"http://127.0.0.1:{port}/api/kernelspecs", params={"token": token}, timeout=5
        ).json()["kernelspecs"]
        assert "ray-serve-workbook" in specs, sorted(specs)
        kernel = json.loads(
            (home / ".local/share/jupyter/kernels/ray-serve-workbook/kernel.json").read_text()
        )
        assert Path(kernel["argv"][0]).is_relative_to(REPO_ROOT / ".venv"), kernel["argv"]
        text = log.read_text()
        assert "kernel registered: 'Ray Serve Workbook (.venv)'" in text
        if os.geteuid() == 0:
            assert "warning: you are root" in text and "--allow-root" in text
        assert "Running as root is not recommended" not in text
    finally:
        stop_session(proc.pid, grace_s=10)
