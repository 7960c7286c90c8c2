"""Lessons 02a and 02b on a cluster they did not start (issue 22 item 1).

One cluster started here, Serve started on it once on a free port (as a classroom's would
be), and an application of "someone else" deployed from a config beforehand. Two learners
work on it at the same time, through the runner with ``ray_address`` and their learner ids:
Alice runs lesson 02a, Bob lesson 02b. Both pass, the runner's summaries list the sections that
need a cluster of one's own as not run, and someone else's application is still RUNNING with
the same replica processes (02b's config deploys keep it, under the deploy lease; two learners'
config deploys at the same moment are tests/test_shared_cluster.py's). Then a notebook whose
cell fails after it deployed shows that the learner's applications are deleted when its kernel
exits.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from notebook_builder import notebook

from helpers.paths import BUILD_DIR, REPO_ROOT

SOMEONE_ELSE = {"name": "someone-else", "route_prefix": "/someone-else",
                "import_path": "helpers.apps.classifier:app",
                "deployments": [{"name": "TextClassifier", "num_replicas": 2}]}


def _someone_else(cluster) -> tuple[str, list[int]]:
    from helpers.serve_status import serve_details

    app = serve_details(cluster)["applications"]["someone-else"]
    return app["status"], sorted(r["pid"] for d in app["deployments"].values()
                                 for r in d["replicas"])


@pytest.mark.cluster
@pytest.mark.beside  # a cluster of its own; it measures nothing, so it runs beside a lesson
def test_lessons_02_on_a_shared_cluster_touch_only_their_own_applications() -> None:
    from helpers.cluster import start_local_cluster
    from helpers.errors import WorkbookError
    from helpers.ports import free_port
    from helpers.serve_status import app_statuses, wait_until_running
    from helpers.shared_cluster import serve_http_address

    work = Path(tempfile.mkdtemp(prefix="shared-02-", dir=BUILD_DIR))
    cluster = start_local_cluster(num_cpus=8)
    try:
        with pytest.raises(WorkbookError, match="Serve is not running"):
            serve_http_address(cluster)  # a lesson says what to do, and does not start Serve
        port = free_port()
        cluster.run_cli(["serve", "start", "--http-host", "127.0.0.1", "--http-port", str(port)])
        assert serve_http_address(cluster) == ("127.0.0.1", port)
        config = work / "someone-else.yaml"
        config.write_text(yaml.safe_dump({"applications": [SOMEONE_ELSE]}))
        cluster.run_cli(["serve", "deploy", str(config)])
        wait_until_running("someone-else", cluster=cluster, timeout_s=180)
        before = _someone_else(cluster)
        shared = ["-p", f"ray_address={cluster.address}", "-p", f"dashboard_url={cluster.dashboard_url}",
                  "-p", f"token_path={cluster.token_path}"]
        # Two learners at once, each in a lesson of their own, with their own prefixes.
        lessons = {"Alice": "02a", "Bob": "02b"}
        runs = {learner: subprocess.Popen(
            [sys.executable, "-m", "helpers.runner", "--profile", "ci", "--build-dir",
             str(work / f"runs-{learner}"), *shared, "-p", f"learner_id={learner}", lesson],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT)
            for learner, lesson in lessons.items()}
        try:
            summaries = {learner: run.communicate(timeout=1200)[0] for learner, run in runs.items()}
        finally:
            for run in runs.values():
                if run.poll() is None:
                    run.kill()
        not_run = {"02a": ("02a_deployments_and_http: sections NOT run: Section 5, the effects "
                           "of HTTP options"),
                   "02b": ("02b_replicas_config_and_async: sections NOT run: Section 6, the HTTP "
                           "proxy preferring its own node's replicas")}
        for learner, summary in summaries.items():
            assert runs[learner].returncode == 0, f"{learner}:\n{summary[-6000:]}"
            assert "1 passed, 0 failed" in summary, summary[-3000:]
            assert not_run[lessons[learner]] in summary, summary[-3000:]
        assert _someone_else(cluster) == before == ("RUNNING", before[1])
        assert sorted(app_statuses(cluster)) == ["someone-else"]  # both learners' apps deleted

        # a cell fails after the learner deployed: the kernel's exit deletes their application
        failing = work / "fails.ipynb"
        nbformat.write(notebook(
            ("code", 'ray_address = dashboard_url = token_path = ""', ["parameters"]),
            ("code", "from ray import serve\n"
                     "from helpers.apps.classifier import app\n"
                     "from helpers.cluster import open_cluster\n"
                     "from helpers.shared_cluster import Workspace\n"
                     "ws = Workspace(local=False, learner_id='bob')\n"
                     "cluster = open_cluster(ray_address, dashboard_url=dashboard_url,\n"
                     "                       token_path=token_path)\n"
                     "cluster.connect()\n"
                     "ws.cleanup_at_exit()\n"
                     "serve.run(app, name=ws.app('classifier'), route_prefix=ws.route('/classify'))",
             []),
            ("code", "raise RuntimeError('a cell that fails before the clean-up cell')", []),
            ("code", "ws.cleanup()", [])), failing)
        papermill = subprocess.run(
            [sys.executable, "-m", "papermill", str(failing), str(work / "fails.out.ipynb"),
             "-p", "ray_address", cluster.address, "-p", "dashboard_url", cluster.dashboard_url,
             "-p", "token_path", str(cluster.token_path), "-k", "python3", "--cwd", str(REPO_ROOT)],
            capture_output=True, text=True, timeout=300)
        assert papermill.returncode != 0 and "a cell that fails" in papermill.stderr
        deadline = time.monotonic() + 60  # deleted without waiting: give the controller time
        while "bob-classifier" in app_statuses(cluster) and time.monotonic() < deadline:
            time.sleep(1)
        assert sorted(app_statuses(cluster)) == ["someone-else"]
        assert _someone_else(cluster) == before
    finally:
        cluster.stop()
