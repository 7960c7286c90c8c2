"""Lessons 02a, 02b, 03a and 03b on a cluster they did not start (issue 22 item 1).

One cluster started here, Serve started on it once on a free port (as a classroom's would
be), and an application of "someone else" deployed from a config beforehand. Two learners,
Alice and Bob, start lesson 02b against it at the same moment, through the runner with
``ray_address`` and their learner ids (the same lesson, its config deploys at about the same
time), then Alice goes on with lessons 02a and 03b while Bob runs 03a (config deploys and
`serve run config.yaml` of both on the one Serve): all five pass, the runner's summaries list
the sections that need a cluster of one's own as not run (03's `serve run` restart, `--reload`
and `serve shutdown`), and someone else's application is still RUNNING with the same replica
processes (the config deploys keep it, one learner at a time under the deploy lease). Then a
notebook whose cell fails after it deployed shows that the learner's applications are deleted
when its kernel exits.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import yaml
from notebook_builder import notebook

from helpers.paths import BUILD_DIR, REPO_ROOT

SOMEONE_ELSE = {
    "name": "someone-else",
    "route_prefix": "/someone-else",
    "import_path": "helpers.apps.classifier:app",
    "deployments": [{"name": "TextClassifier", "num_replicas": 2}],
}


def _someone_else(cluster) -> tuple[str, list[int]]:
    from helpers.serve_status import serve_details

    app = serve_details(cluster)["applications"]["someone-else"]
    return app["status"], sorted(
        r["pid"] for d in app["deployments"].values() for r in d["replicas"]
    )


@pytest.mark.cluster
@pytest.mark.beside  # a cluster of its own; it measures nothing, so it runs beside a lesson
@pytest.mark.timeout(1800)  # five lesson runs: the lessons' backstop, not a unit test's 600 s
def test_lessons_02_and_03_on_a_shared_cluster_touch_only_their_own_applications() -> None:
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
        shared = [
            "-p",
            f"ray_address={cluster.address}",
            "-p",
            f"dashboard_url={cluster.dashboard_url}",
            "-p",
            f"token_path={cluster.token_path}",
        ]
        # Two learners start the same lesson at once (the same applications' names but their
        # own prefixes, 02b's config deploys at about the same moment); then Alice runs 02a
        # and 03b while Bob runs 03a (their config deploys and `serve run config.yaml` meet
        # on the one Serve). (The runner runs lessons in their number's order: each is a run.)
        lessons = {"Alice": ["02b", "02a", "03b"], "Bob": ["02b", "03a"]}

        def learner_runs(learner: str) -> tuple[int, str]:
            said, code = "", 0
            for lesson in lessons[learner]:
                run = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "helpers.runner",
                        "--profile",
                        "ci",
                        "--build-dir",
                        str(work / f"runs-{learner}-{lesson}"),
                        *shared,
                        "-p",
                        f"learner_id={learner}",
                        lesson,
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    cwd=REPO_ROOT,
                    timeout=1200,
                )
                said, code = said + run.stdout, code or run.returncode
            return code, said

        with ThreadPoolExecutor(len(lessons)) as pool:
            done = {learner: pool.submit(learner_runs, learner) for learner in lessons}
            results = {learner: future.result() for learner, future in done.items()}
        not_run = {
            "02a": (
                "02a_deployments_and_http: sections NOT run: Section 5, the effects of HTTP options"
            ),
            "02b": (
                "02b_replicas_config_and_async: sections NOT run: Section 6, the HTTP "
                "proxy preferring its own node's replicas"
            ),
            "03a": "03a_five_ways_to_launch: sections NOT run: Section 3's serve run --reload",
            "03b": (
                "03b_updates_and_operations: sections NOT run: Section 2, the serve run "
                "restart; Section 4's serve shutdown"
            ),
        }
        for learner, (code, summary) in results.items():
            assert code == 0, f"{learner}:\n{summary[-6000:]}"
            assert summary.count("1 passed, 0 failed") == len(lessons[learner]), summary[-3000:]
            for lesson in lessons[learner]:
                assert not_run[lesson] in summary, summary[-3000:]
        assert _someone_else(cluster) == before == ("RUNNING", before[1])
        assert sorted(app_statuses(cluster)) == ["someone-else"]  # both learners' apps deleted

        # a cell fails after the learner deployed: the kernel's exit deletes their application
        failing = work / "fails.ipynb"
        nbformat.write(
            notebook(
                ("code", 'ray_address = dashboard_url = token_path = ""', ["parameters"]),
                (
                    "code",
                    "from ray import serve\n"
                    "from helpers.apps.classifier import app\n"
                    "from helpers.cluster import open_cluster\n"
                    "from helpers.shared_cluster import Workspace\n"
                    "ws = Workspace(local=False, learner_id='bob')\n"
                    "cluster = open_cluster(ray_address, dashboard_url=dashboard_url,\n"
                    "                       token_path=token_path)\n"
                    "cluster.connect()\n"
                    "ws.cleanup_at_exit()\n"
                    "serve.run(app, name=ws.app('classifier'), route_prefix=ws.route('/classify'))",
                    [],
                ),
                ("code", "raise RuntimeError('a cell that fails before the clean-up cell')", []),
                ("code", "ws.cleanup()", []),
            ),
            failing,
        )
        papermill = subprocess.run(
            [
                sys.executable,
                "-m",
                "papermill",
                str(failing),
                str(work / "fails.out.ipynb"),
                "-p",
                "ray_address",
                cluster.address,
                "-p",
                "dashboard_url",
                cluster.dashboard_url,
                "-p",
                "token_path",
                str(cluster.token_path),
                "-k",
                "python3",
                "--cwd",
                str(REPO_ROOT),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert papermill.returncode != 0 and "a cell that fails" in papermill.stderr
        deadline = time.monotonic() + 60  # deleted without waiting: give the controller time
        while "bob-classifier" in app_statuses(cluster) and time.monotonic() < deadline:
            time.sleep(1)
        assert sorted(app_statuses(cluster)) == ["someone-else"]
        assert _someone_else(cluster) == before
    finally:
        cluster.stop()
