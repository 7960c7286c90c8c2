"""A notebook on someone else's cluster: its names, its sections not run, the runner's report.

No cluster here: what touches Serve (``Workspace.cleanup``) is exercised by the lessons and by
the shared-cluster test of the lessons."""

from __future__ import annotations

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
    monkeypatch.setattr("helpers.serve_status.serve_details", lambda c: details)
    with pytest.raises(WorkbookError, match="Serve is not running") as err:
        serve_http_address(cluster)
    assert "serve start --http-host" in str(err.value)  # says what to do
    details.update(controller_info={"actor_id": "abc"},
                   http_options={"host": "0.0.0.0", "port": 8123})
    assert serve_http_address(cluster) == ("10.0.0.5", 8123)  # every interface: the cluster's
    details["http_options"]["host"] = "127.0.0.1"
    assert serve_http_address(cluster) == ("127.0.0.1", 8123)


def test_clean_up_at_exit_only_on_a_shared_cluster_and_cancelled_by_cleanup(monkeypatch):
    from types import SimpleNamespace

    registered = []
    monkeypatch.setattr("helpers.shared_cluster.atexit",
                        SimpleNamespace(register=registered.append, unregister=registered.remove))
    Workspace(local=True).cleanup_at_exit()
    assert registered == []  # stopping one's own cluster ends everything
    shared = Workspace(local=False, learner_id="bob")
    shared.cleanup_at_exit()
    shared.cleanup_at_exit()
    assert len(registered) == 1
    deleted = []
    monkeypatch.setattr("ray.serve.delete", lambda name, _blocking=True: deleted.append(name))
    monkeypatch.setattr("ray.serve.status", lambda: type("S", (), {"applications": {"bob-echo": 1}})())
    shared.app("echo")
    registered[0]()  # what the kernel's exit would run: no wait, no error for an absent app
    assert deleted == ["bob-echo"]
    assert shared.cleanup() == ["bob-echo"] and registered == []
