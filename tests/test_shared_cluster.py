"""A notebook on someone else's cluster: its names, its sections not run, the runner's report.

No cluster here: what touches Serve (``Workspace.cleanup``) is exercised by the lessons and by
the shared-cluster test of the lessons."""

from __future__ import annotations

import os

import pytest

from helpers.errors import WorkbookError
from helpers.runner import PASSED, NotebookResult, format_summary
from helpers.shared_cluster import Workspace, learner_name, not_run_sections


def test_learner_names_are_serve_safe_and_default_to_the_user(monkeypatch):
    assert learner_name("Alice Smith") == "alice-smith"
    assert learner_name(" bob_2 ") == "bob-2"
    monkeypatch.setattr("helpers.shared_cluster._user", lambda: "Carol")
    assert learner_name("") == "carol"
    with pytest.raises(WorkbookError, match="learner_id"):
        learner_name("___")


def test_own_cluster_keeps_the_taught_names():
    ws = Workspace(local=True, learner_id="alice")
    assert (ws.app("echo"), ws.route("/echo"), ws.route("/")) == ("echo", "/echo", "/")


def test_shared_cluster_prefixes_names_and_routes():
    ws = Workspace(local=False, learner_id="Alice")
    assert ws.app("echo") == "alice-echo"
    assert ws.route("/echo") == "/alice/echo"
    assert ws.route("/") == "/alice"
    ws.app("echo")
    assert ws.apps == ["alice-echo"]  # what cleanup deletes, each once
    with pytest.raises(WorkbookError, match="starts with '/'"):
        ws.route("echo")


def test_a_section_ruled_out_is_recorded_and_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBOOK_SCRATCH", str(tmp_path))
    assert Workspace(local=True).own_cluster_only("Restart Serve", "restarts the proxy")
    assert not_run_sections(tmp_path) == []
    shared = Workspace(local=False, learner_id="bob")
    assert not shared.own_cluster_only("Restart Serve", "restarts the proxy for everyone")
    assert "Not run on a shared cluster: Restart Serve" in capsys.readouterr().out
    assert not_run_sections(tmp_path) == ["Restart Serve"]
    result = NotebookResult("10a_x", PASSED, 1.0, not_run=not_run_sections(tmp_path))
    summary = format_summary([result])
    assert "10a_x: sections NOT run: Restart Serve" in summary
    assert "sections NOT run" not in format_summary([NotebookResult("10a_x", PASSED, 1.0)])


def test_a_shared_clusters_http_address_is_read_from_its_running_serve(monkeypatch):
    from types import SimpleNamespace

    from helpers.shared_cluster import serve_http_address

    cluster = SimpleNamespace(host="10.0.0.5", dashboard_url="http://10.0.0.5:8265")
    details = {"controller_info": {}, "http_options": None, "applications": {}}
    monkeypatch.setattr("helpers.shared_cluster.serve_details", lambda c: details)
    with pytest.raises(WorkbookError, match="Serve is not running") as err:
        serve_http_address(cluster)
    assert "serve start --http-host" in str(err.value)  # says what to do
    details.update(
        controller_info={"actor_id": "abc"}, http_options={"host": "0.0.0.0", "port": 8123}
    )
    assert serve_http_address(cluster) == ("10.0.0.5", 8123)  # every interface: the cluster's
    details["http_options"]["host"] = "127.0.0.1"
    assert serve_http_address(cluster) == ("127.0.0.1", 8123)


def test_clean_up_at_exit_only_on_a_shared_cluster_and_cancelled_by_cleanup(monkeypatch):
    from types import SimpleNamespace

    registered = []
    monkeypatch.setattr(
        "helpers.shared_cluster.atexit",
        SimpleNamespace(register=registered.append, unregister=registered.remove),
    )
    Workspace(local=True).cleanup_at_exit()
    assert registered == []  # stopping one's own cluster ends everything
    shared = Workspace(local=False, learner_id="bob")
    shared.cleanup_at_exit()
    shared.cleanup_at_exit()
    assert len(registered) == 1
    deleted = []
    monkeypatch.setattr("ray.serve.delete", lambda name, _blocking=True: deleted.append(name))
    monkeypatch.setattr(
        "ray.serve.status", lambda: type("S", (), {"applications": {"bob-echo": 1}})()
    )
    shared.app("echo")
    registered[0]()  # what the kernel's exit would run: no wait, no error for an absent app
    assert deleted == ["bob-echo"]
    assert shared.cleanup() == ["bob-echo"] and registered == []


def test_a_deploy_on_a_shared_cluster_keeps_the_others_but_never_revives_a_deleted_one():
    """What ``serve deploy`` of ``Workspace.deployable``'s copy leaves: every classmate's
    config-deployed application as Serve holds it now, one's own as the file says; not an
    application being deleted (adding it back would revive it: seen when two learners'
    deploys of lab 07 raced), not one deployed from Python, not the file's http_options; and
    one's own that the file leaves out are left out (the file deletes them, as it would on
    one's own cluster)."""
    from helpers.shared_cluster import keeping_the_others

    def held(status: str, source: str = "declarative", **config) -> dict:
        return {"status": status, "source": source, "deployed_app_config": config or None}

    details = {
        "applications": {
            "bob-echo": held("RUNNING", name="bob-echo", import_path="b:app"),
            "carol-llm": held("DEPLOYING", name="carol-llm", import_path="c:app"),
            "dave-old": held("DELETING", name="dave-old", import_path="d:app"),
            "erin-run": held("RUNNING", source="imperative"),  # serve.run: deploy leaves it
            "alice-echo": held("RUNNING", name="alice-echo", import_path="old:app"),
            "alice-gone": held("RUNNING", name="alice-gone", import_path="a:app"),
        }
    }
    mine = {
        "http_options": {"port": 9000},
        "applications": [{"name": "alice-echo", "import_path": "new:app"}],
    }
    merged = keeping_the_others(mine, details, own=["alice-echo", "alice-gone"])
    assert merged == {
        "applications": [
            {"name": "bob-echo", "import_path": "b:app"},
            {"name": "carol-llm", "import_path": "c:app"},
            {"name": "alice-echo", "import_path": "new:app"},
        ]
    }
    # without knowing it is hers, alice-gone counts as someone else's and stays
    kept = [a["name"] for a in keeping_the_others(mine, details)["applications"]]
    assert kept == ["bob-echo", "carol-llm", "alice-gone", "alice-echo"]


def test_deployable_is_the_file_itself_on_ones_own_cluster_and_says_what_is_wrong(tmp_path):
    from helpers.shared_cluster import read_serve_config

    path = tmp_path / "app.yaml"
    path.write_text("applications:\n- name: echo\n  import_path: m:app\n")
    assert Workspace(local=True).deployable(path, cluster=None) == path  # no cluster read
    path.write_text("applications:\n  - name: echo\n   import_path: m:app\n")  # bad indentation
    with pytest.raises(WorkbookError, match="Could not read the Serve config"):
        read_serve_config(path)
    path.write_text("name: echo\n")
    with pytest.raises(WorkbookError, match="no 'applications:' list"):
        Workspace(local=False).deployable(path, cluster=None)


LEARNER = """\
import subprocess, sys
from pathlib import Path

import yaml

from helpers.cluster import connect_to_cluster
from helpers.shared_cluster import Workspace

address, dashboard, name, rounds, folder = sys.argv[1:6]
cluster = connect_to_cluster(address, dashboard_url=dashboard)
ws = Workspace(local=False, learner_id=name)
for last in range(int(rounds)):  # each round deploys one application more
    apps = [{"name": ws.app(f"echo{i}"), "route_prefix": ws.route(f"/echo{i}"),
             "import_path": "helpers.apps.classifier:app",
             "deployments": [{"name": "TextClassifier", "ray_actor_options": {"num_cpus": 0}}]}
            for i in range(last + 1)]
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"applications": apps}))
    subprocess.run([str(Path(sys.executable).parent / "serve"), "deploy",
                    str(ws.deployable(path, cluster))], check=True, capture_output=True)
"""


def test_two_learners_deploying_at_once_lose_nobodys_application(two_node_cluster, tmp_path):
    """Two notebooks that read Serve's config and ``serve deploy`` a copy with everyone's
    applications, at the same time, three times each: without the deploy lease, one's copy
    read before the other's deploy drops the other's newest application (a lost update).
    Someone else's application deployed before is left running, with the same replicas."""
    import subprocess
    import sys

    from ray import serve

    from helpers.ports import free_port
    from helpers.serve_cli import deploy_config
    from helpers.serve_status import serve_details, wait_until_running

    cluster = two_node_cluster
    cluster.connect()
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    carol = {
        "name": "carol-echo",
        "route_prefix": "/carol/echo",
        "import_path": "helpers.apps.classifier:app",
        "deployments": [{"name": "TextClassifier", "ray_actor_options": {"num_cpus": 0}}],
    }
    deploy_config(cluster, {"applications": [carol]})
    wait_until_running("carol-echo", cluster=cluster, timeout_s=120)

    def carols_replicas() -> list[tuple[str, int]]:
        app = serve_details(cluster)["applications"]["carol-echo"]
        return sorted(
            (r["replica_id"], r["pid"]) for d in app["deployments"].values() for r in d["replicas"]
        )

    before = carols_replicas()
    script = tmp_path / "learner.py"
    script.write_text(LEARNER)
    rounds = 3
    learners = {
        name: subprocess.Popen(
            [
                sys.executable,
                str(script),
                cluster.address,
                cluster.dashboard_url,
                name,
                str(rounds),
                str(tmp_path),
            ],
            env={**os.environ, **cluster.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("alice", "bob")
    }
    names: list[str] = []
    try:
        for name, learner in learners.items():
            output, _ = learner.communicate(timeout=300)
            assert learner.returncode == 0, f"{name}'s notebook failed:\n{output[-3000:]}"
        names = [f"{who}-echo{i}" for who in learners for i in range(rounds)]
        held = serve_details(cluster)["applications"]
        lost = {
            app: (held.get(app) or {}).get("status", "absent")
            for app in names
            if (held.get(app) or {}).get("status", "DELETING") == "DELETING"
        }
        assert not lost, f"applications deleted by the other learner's deploy: {lost}"
        for app in names:
            wait_until_running(app, cluster=cluster, timeout_s=180)
        held = serve_details(cluster)["applications"]
        assert held["carol-echo"]["status"] == "RUNNING"
        assert carols_replicas() == before  # the same replicas: never redeployed or restarted
    finally:
        for learner in learners.values():
            if learner.poll() is None:
                learner.kill()
        # The cluster is the run's shared one: leave it as found (a later test file on this
        # worker starts Serve on a port of its own, which a running Serve would ignore).
        serve.shutdown()
        cluster.disconnect()


def test_a_deploy_lease_ends_when_the_holders_deploy_shows_or_after_its_time():
    from helpers.shared_cluster import DEPLOY_LEASE_S, _lease_is_over

    def serve_holds(**stamps):
        return {"applications": {name: {"last_deployed_time_s": t} for name, t in stamps.items()}}

    lease = {"apps": ["alice-a", "alice-b"], "deployed_at": {"alice-a": 100.0, "alice-b": None}}
    assert not _lease_is_over(lease, serve_holds(**{"alice-a": 100.0}), held_for_s=1.0)  # not yet
    assert not _lease_is_over(
        lease, serve_holds(**{"bob-a": 200.0, "alice-a": 100.0}), 1.0
    )  # bob's
    assert _lease_is_over(lease, serve_holds(**{"alice-a": 130.0}), 1.0)  # deployed again
    assert _lease_is_over(
        lease, serve_holds(**{"alice-a": 100.0, "alice-b": 131.0}), 1.0
    )  # new app
    assert _lease_is_over(lease, serve_holds(**{"alice-a": 100.0}), held_for_s=DEPLOY_LEASE_S)


def test_end_lesson_on_a_shared_cluster_deletes_only_its_own_and_finishes_after_a_failure(
    two_node_cluster, tmp_path
):
    """A lesson's last cell on a cluster it did not start: its own applications deleted,
    someone else's left RUNNING, what it started ended, its folder removed, the cluster left
    running (only disconnected); a ``stop()`` that fails does not stop the rest, and its error
    is raised at the end."""
    import subprocess

    from ray import serve

    from helpers.cluster import connect_to_cluster
    from helpers.ports import free_port
    from helpers.serve_cli import deploy_config
    from helpers.serve_status import app_statuses, wait_until_running
    from helpers.shared_cluster import end_lesson

    cluster = two_node_cluster
    cluster.connect()
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    apps = [
        {
            "name": name,
            "route_prefix": f"/{name}",
            "import_path": "helpers.apps.classifier:app",
            "deployments": [{"name": "TextClassifier", "ray_actor_options": {"num_cpus": 0}}],
        }
        for name in ("carol-echo", "dave-echo")
    ]
    try:
        deploy_config(cluster, {"applications": apps})
        for app in apps:
            wait_until_running(app["name"], cluster=cluster, timeout_s=120)
        cluster.disconnect()

        class Broken:
            def stop(self) -> None:
                raise RuntimeError("this loop could not stop")

        sleeper = subprocess.Popen(["sleep", "300"])
        work_dir = tmp_path / "lesson"
        work_dir.mkdir()
        daves = connect_to_cluster(
            cluster.address, dashboard_url=cluster.dashboard_url, token_path=cluster.token_path
        )
        with pytest.raises(RuntimeError, match="could not stop"):
            end_lesson(
                daves, work_dir=work_dir, apps=("dave-echo",), stop=[Broken(), None, sleeper.pid]
            )
        assert sleeper.wait(timeout=10) != 0  # ended by its id
        assert not work_dir.exists()
        statuses = app_statuses(cluster)
        assert "dave-echo" not in statuses and statuses.get("carol-echo") == "RUNNING", statuses
    finally:
        cluster.connect()
        serve.shutdown()
        cluster.disconnect()


def test_a_labs_deploy_copy_leaves_out_the_students_own_apps_the_file_leaves_out(
    tmp_path, monkeypatch
):
    """``LabSession.with_classmates_apps`` keeps classmates' config-deployed applications and
    drops the student's own that the file leaves out, like ``Workspace.deployable`` (what
    Serve holds is given here as the lease returns it; the lease itself is tested on a cluster
    in tests/test_labs.py's classroom run)."""
    import yaml

    from helpers.labs import session as session_module
    from helpers.labs.session import LabSession

    def held(name: str) -> dict:
        return {
            "status": "RUNNING",
            "source": "declarative",
            "deployed_app_config": {"name": name, "import_path": f"{name}:app"},
        }

    details = {"applications": {n: held(n) for n in ("bob-lab02-a", "ada-lab02-a", "ada-lab02-b")}}
    monkeypatch.setattr(session_module, "take_deploy_lease", lambda cluster, names: details)
    lab = object.__new__(LabSession)
    lab.lab, lab.student, lab.cluster, lab.work_dir = "lab02", "ada", None, tmp_path
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        yaml.safe_dump({"applications": [{"name": "ada-lab02-a", "import_path": "x:app"}]})
    )
    deployed = yaml.safe_load(lab.with_classmates_apps(mine).read_text())
    assert [a["name"] for a in deployed["applications"]] == ["bob-lab02-a", "ada-lab02-a"]
