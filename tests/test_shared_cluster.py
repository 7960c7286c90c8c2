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
