"""The example applications (helpers/apps) through real Ray Serve on the shared cluster.

The model is tested on its own first (fast, no cluster); then every app is deployed on the
session's shared 2-node cluster, called through a handle and over HTTP, and removed again.
Serve is started once for this module (HTTP on a free port) and shut down at its end.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
import requests

from helpers.apps.configurable import DEFAULT_CONFIG, check_user_config
from helpers.apps.model import TRAINING_SET, SentimentModel, embed, tokens
from helpers.cluster import LocalCluster
from helpers.ports import free_port
from helpers.serve_status import (
    app_statuses,
    controller_log_lines,
    serve_details,
    wait_until_deleted,
    wait_until_running,
)

# -- the model, no cluster ------------------------------------------------------------------


def test_model_is_deterministic_and_learns_its_training_set() -> None:
    a, b = SentimentModel.train(), SentimentModel.train()
    assert (a.weights == b.weights).all() and a.bias == b.bias
    assert a.accuracy() == 1.0
    assert a.score("a wonderful, friendly service") > 0.6 > 0.4 > a.score("rude and slow support")
    assert len(TRAINING_SET) == 32


def test_embedding_is_unit_length_and_stable() -> None:
    vec = embed("Great service, great price")
    assert vec.shape == (256,) and abs(float((vec**2).sum()) - 1.0) < 1e-9
    assert (embed("great service great price") == vec).all()  # case and punctuation ignored
    assert not embed("!!!").any()
    assert "not_good" in tokens("not good")


def test_user_config_is_checked() -> None:
    assert check_user_config({}) == DEFAULT_CONFIG
    assert check_user_config({"threshold": 0.3})["threshold"] == 0.3
    for bad in [{"treshold": 0.3}, {"threshold": 1.5}, {"labels": ["only one"]}, [1, 2]]:
        with pytest.raises(ValueError):
            check_user_config(bad)


# -- the apps, through real Serve -------------------------------------------------------------


@pytest.fixture(scope="module")
def serve_on_cluster(two_node_cluster: LocalCluster) -> Iterator[tuple[LocalCluster, str]]:
    """Serve on the shared cluster, HTTP on 127.0.0.1 and a free port; shut down afterwards."""
    from ray import serve

    two_node_cluster.connect()
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield two_node_cluster, f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            two_node_cluster.disconnect()


@pytest.fixture(scope="module")
def classifier_and_gateway(
    serve_on_cluster: tuple[LocalCluster, str],
) -> Iterator[tuple[LocalCluster, str]]:
    """The classifier (2 replicas) and the gateway app, deployed together (their replicas
    start at the same time), deleted after the module's tests."""
    from ray import serve

    from helpers.apps.classifier import TextClassifier
    from helpers.apps.gateway import app as gateway_app

    cluster, url = serve_on_cluster
    serve.run_many(
        [
            serve.RunTarget(
                target=TextClassifier.options(num_replicas=2).bind("unit-model"),
                name="t_classifier",
                route_prefix="/t_classifier",
            ),
            serve.RunTarget(target=gateway_app, name="t_gateway", route_prefix="/t_gateway"),
        ]
    )
    try:
        yield cluster, url
    finally:
        for name in ("t_classifier", "t_gateway"):
            serve.delete(name)


@pytest.mark.cluster
def test_classifier_over_handle_and_http(classifier_and_gateway: tuple[LocalCluster, str]) -> None:
    from ray import serve

    from helpers.serve_timeline import running_pids
    from helpers.traffic import send_requests

    cluster, url = classifier_and_gateway
    handle = serve.get_app_handle("t_classifier")
    pos = handle.classify.remote("a wonderful, friendly service").result()
    neg = handle.classify.remote("the support was rude and slow").result()
    assert (pos["label"], neg["label"]) == ("positive", "negative")
    assert pos["model"] == "unit-model"  # the .bind() argument reached the constructor
    emb = handle.embed.remote("great").result()
    assert emb["dim"] == len(emb["embedding"]) == 256

    answers = send_requests(
        f"{url}/t_classifier", 32, concurrency=4, json={"text": "great price"}, progress=False
    )
    assert answers["ok"].all()
    pids = running_pids(cluster, "t_classifier", "TextClassifier")
    assert len(pids) == 2 and set(answers["pid"]) <= set(pids)
    # The HTTP proxy prefers replicas on its own node; a driver's handle spreads over all.
    responses = [handle.classify.remote("great price") for _ in range(32)]
    assert {r.result()["pid"] for r in responses} == set(pids)  # both replicas served
    assert answers["score"].nunique() == 1  # every replica computes the same score
    assert (answers["deployment"] == "TextClassifier").all() and answers["node"].notna().all()
    assert (
        requests.get(f"{url}/t_classifier", params={"text": "great"}, timeout=30).json()["label"]
        == "positive"
    )
    assert requests.post(f"{url}/t_classifier", json={"nope": 1}, timeout=30).status_code == 400


@pytest.mark.cluster
def test_gateway_routes(classifier_and_gateway: tuple[LocalCluster, str]) -> None:
    _, url = classifier_and_gateway
    health = requests.get(f"{url}/t_gateway/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    debug = requests.get(f"{url}/t_gateway/debug", timeout=30).json()
    assert debug["deployment"] == "Gateway" and debug["rss_mib"] > 0
    assert debug["downstream"] == "TextClassifier" and debug["ray"].startswith("2.")
    body = requests.post(f"{url}/t_gateway/classify", json={"text": "great"}, timeout=30).json()
    assert body["result"]["label"] == "positive"
    assert body["gateway"]["deployment"] == "Gateway" != body["result"]["deployment"]
    assert (
        requests.post(f"{url}/t_gateway/classify", json={"text": ""}, timeout=30).status_code == 422
    )
    slow = requests.get(f"{url}/t_gateway/slow", params={"seconds": 0.3}, timeout=30)
    assert slow.status_code == 200 and slow.json()["slept_s"] == 0.3
    after = requests.get(f"{url}/t_gateway/debug", timeout=30).json()
    assert after["requests_served"] >= 1 and after["pid"] == debug["pid"]


def _configurable_config(import_path: str, user_config: dict) -> dict:
    return {
        "applications": [
            {
                "name": "t_configurable",
                "route_prefix": "/t_configurable",
                "import_path": import_path,
                "deployments": [
                    {
                        "name": "ConfigurableClassifier",
                        "num_replicas": 1,
                        "user_config": user_config,
                    }
                ],
            }
        ]
    }


@pytest.mark.cluster
def test_configurable_reconfigures_in_place_and_is_replaced_when_sick(
    serve_on_cluster: tuple[LocalCluster, str],
) -> None:
    from ray import serve

    from helpers.serve_cli import deploy_config
    from helpers.serve_timeline import settled_pids, wait_until_replaced

    cluster, url = serve_on_cluster
    text = "the movie was okay"  # scores about 0.37
    deploy_config(
        cluster, _configurable_config("helpers.apps.configurable:app", {"threshold": 0.5})
    )
    try:
        wait_until_running("t_configurable", cluster=cluster, timeout_s=180)
        handle = serve.get_app_handle("t_configurable")
        before = handle.classify.remote(text).result()
        assert (before["label"], before["code_version"], before["reconfigure_count"]) == (
            "negative",
            "v1",
            1,
        )

        deploy_config(
            cluster,
            _configurable_config(
                "helpers.apps.configurable:app",
                {"threshold": 0.3, "labels": ["no", "yes"], "config_version": 7},
            ),
        )
        deadline = time.monotonic() + 60
        after = handle.classify.remote(text).result()
        while after["config_version"] != 7 and time.monotonic() < deadline:
            time.sleep(0.2)
            after = handle.classify.remote(text).result()
        assert after["pid"] == before["pid"]  # reconfigured, not restarted
        assert (after["label"], after["reconfigure_count"]) == ("yes", 2)

        over_http = requests.post(f"{url}/t_configurable", json={"text": text}, timeout=30).json()
        assert over_http["label"] == "yes" and over_http["threshold"] == 0.3

        old = settled_pids(
            cluster, "t_configurable", "ConfigurableClassifier"
        )  # not UPDATING any more
        old_replicas = [
            r["replica_id"]
            for r in serve_details(cluster)["applications"]["t_configurable"]["deployments"][
                "ConfigurableClassifier"
            ]["replicas"]
        ]
        assert handle.make_unhealthy.remote().result()["pid"] in old
        wait_until_replaced(
            cluster, "t_configurable", "ConfigurableClassifier", old, replicas=1, timeout_s=120
        )
        # the controller's log is the record (a status poll can miss the short UNHEALTHY state)
        stopped = [
            line
            for line in controller_log_lines(cluster, "failed health check", wait_s=30)
            if "stopping it" in line and any(r in line for r in old_replicas)
        ]
        assert stopped, old_replicas
        healed = handle.classify.remote(text).result()
        assert healed["pid"] not in old and healed["config_version"] == 7  # config re-applied

        deploy_config(
            cluster,
            _configurable_config(
                "helpers.apps.configurable:app_v2", {"threshold": 0.3, "config_version": 7}
            ),
        )
        deadline = time.monotonic() + 120
        v2 = handle.classify.remote(text).result()
        while v2["code_version"] != "v2" and time.monotonic() < deadline:
            time.sleep(0.3)
            v2 = handle.classify.remote(text).result()
        assert v2["code_version"] == "v2" and len(v2["top_words"]) == 3
    finally:
        serve.delete("t_configurable")


@pytest.mark.cluster
def test_request_loop_and_status_recorder(classifier_and_gateway: tuple[LocalCluster, str]) -> None:
    from helpers.serve_timeline import StatusRecorder, plot_update_timeline, status_changes
    from helpers.traffic import RequestLoop, failure_summary, send_requests

    cluster, url = classifier_and_gateway
    burst = send_requests(
        f"{url}/t_classifier", 10, concurrency=2, json={"text": "great"}, progress=False
    )
    assert len(burst) == 10 and burst["ok"].all() and 1 <= burst["pid"].nunique() <= 2
    with (
        StatusRecorder(cluster, app="t_classifier", period_s=0.2) as recorder,
        RequestLoop(f"{url}/t_classifier", json={"text": "great"}, concurrency=2) as loop,
    ):
        recorder.mark("start")
        time.sleep(1.0)
        assert loop.wait_until_serving("label", "positive", last=5, timeout_s=30) >= 0
    df, status = loop.results(), recorder.results()
    assert failure_summary(df)["failed"] == 0 and len(df) >= 5
    assert (status["RUNNING"] == 2).all() and len(status_changes(status)) == 1
    fig = plot_update_timeline(status, df, recorder.events(), version_column="label")
    assert len(fig.axes) == 3
    # a loop against a route that does not exist counts failures
    bad = send_requests(f"{url}/no_such_route", 3, concurrency=1, progress=False)
    assert failure_summary(bad)["failed"] == 3


@pytest.mark.cluster
def test_serve_run_in_the_background(serve_on_cluster: tuple[LocalCluster, str], tmp_path) -> None:
    from helpers.processes import registry_dir
    from helpers.serve_cli import ServeRun, ServeRunExited

    cluster, url = serve_on_cluster
    run = ServeRun(
        "helpers.apps.classifier:app",
        cluster,
        cwd=tmp_path,
        args=["--name", "t_cli", "--route-prefix", "/t_cli"],
    )
    with run:
        assert (registry_dir() / f"{run.id}.json").exists()  # leak checks can see it
        assert run.wait_until_running(["t_cli"], timeout_s=180) > 0
        reply = requests.post(f"{url}/t_cli", json={"text": "great"}, timeout=30)
        assert reply.status_code == 200 and reply.json()["app"] == "t_cli"
        code = run.stop(sig=signal.SIGTERM)  # the process ends; the app stays
    assert code is not None and code != 0 and not run.running
    assert not (registry_dir() / f"{run.id}.json").exists()
    assert app_statuses(cluster).get("t_cli") == "RUNNING"
    from ray import serve

    serve.delete("t_cli")
    wait_until_deleted("t_cli", cluster=cluster, timeout_s=60)

    broken = ServeRun("helpers.apps.no_such_module:app", cluster, cwd=tmp_path)
    with pytest.raises(ServeRunExited) as info:
        with broken:
            broken.wait_until_running(["default"], timeout_s=120)
    assert "No module named" in info.value.details and "import" in info.value.fix
