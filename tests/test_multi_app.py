"""Lesson 07's applications and configs: the traffic splitter (pure and on real Serve), the
composition apps' logic, and every ``configs/serve/multi_app*.yaml`` as a valid Serve config
for the installed Ray whose overrides name real deployments.

The splitter is deployed once on the session's shared 2-node cluster (``serve deploy``'s REST
call), measured against its binomial tolerance, and reconfigured live under load.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.apps.canary import (
    DEFAULT_SPLIT,
    binomial_interval,
    check_split_config,
    choose_version,
    user_bucket,
)
from helpers.apps.ensemble import MEMBER_CONFIG, build_app, check_member_config, combine
from helpers.apps.multiplexed import CATALOG, MAX_MODELS_PER_REPLICA
from helpers.apps.pipeline import MAX_WORDS, clean_text, label_of, run_locally
from helpers.cluster import LocalCluster
from helpers.llm import render_config
from helpers.paths import CONFIGS_DIR
from helpers.serve_cli import validate_serve_config

MULTI_APP_CONFIGS = sorted((CONFIGS_DIR / "serve").glob("multi_app*.yaml"))
FAKE_MODEL = "/models/tiny-llama-test"

# -- the splitter's logic, no cluster ----------------------------------------------------------


def test_choose_version_cuts_the_unit_interval_by_weight() -> None:
    weights = {"v1": 0.9, "v2": 0.1}
    assert choose_version(weights, 0.0) == "v1" and choose_version(weights, 0.8999) == "v1"
    assert choose_version(weights, 0.9) == "v2" and choose_version(weights, 0.999999) == "v2"
    assert choose_version({"v1": 9, "v2": 1}, 0.95) == "v2"  # normalised
    assert choose_version({"v1": 0.0, "v2": 1.0}, 0.0) == "v2"  # a zero weight gets nothing
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            choose_version(weights, bad)
    with pytest.raises(ValueError):
        choose_version({"v1": 0, "v2": 0}, 0.5)


def test_user_buckets_are_stable_and_growing_v2_keeps_its_users() -> None:
    users = [f"user-{i}" for i in range(2000)]
    buckets = [user_bucket(u) for u in users]
    assert buckets == [user_bucket(u) for u in users] and all(0 <= b < 1 for b in buckets)
    on_v2_at_10 = {
        u for u in users if choose_version({"v1": 0.9, "v2": 0.1}, user_bucket(u)) == "v2"
    }
    on_v2_at_50 = {
        u for u in users if choose_version({"v1": 0.5, "v2": 0.5}, user_bucket(u)) == "v2"
    }
    assert on_v2_at_10 < on_v2_at_50  # promoting the canary never moves a user back to v1
    low, high = binomial_interval(len(users), 0.1)
    assert low <= len(on_v2_at_10) <= high  # crc32 buckets are spread like random draws


def _tail_below(n: int, p: float, k: int) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k))


@pytest.mark.parametrize(
    "n,p,alpha", [(400, 0.1, 1e-4), (100, 0.5, 1e-3), (50, 0.02, 0.01), (1000, 0.9, 1e-4)]
)
def test_binomial_interval_is_the_exact_central_interval(n: int, p: float, alpha: float) -> None:
    low, high = binomial_interval(n, p, alpha)
    below, above = _tail_below(n, p, low), 1 - _tail_below(n, p, high + 1)
    assert below <= alpha / 2 and above <= alpha / 2  # outside: at most alpha/2 each side...
    assert _tail_below(n, p, low + 1) > alpha / 2  # ...and no narrower interval would do
    assert 1 - _tail_below(n, p, high) > alpha / 2
    assert low <= n * p <= high


def test_binomial_interval_false_alarm_rate_by_simulation() -> None:
    rng = random.Random(7)
    n, p, alpha = 200, 0.1, 0.05
    low, high = binomial_interval(n, p, alpha)
    outside = sum(not low <= sum(rng.random() < p for _ in range(n)) <= high for _ in range(2000))
    assert outside / 2000 <= alpha * 1.6  # a correct splitter rarely fails the check
    shifted = sum(not low <= sum(rng.random() < 0.2 for _ in range(n)) <= high for _ in range(200))
    assert shifted / 200 > 0.9  # a 20 % split instead of 10 % is caught


def test_binomial_interval_edges_and_bad_input() -> None:
    assert binomial_interval(10, 0.0) == (0, 0) and binomial_interval(10, 1.0) == (10, 10)
    assert binomial_interval(0, 0.3) == (0, 0)
    for args in ((-1, 0.5), (10, 1.5), (10, 0.5, 0.0)):
        with pytest.raises(ValueError):
            binomial_interval(*args)


def test_split_config_is_checked() -> None:
    assert check_split_config({}) == {**DEFAULT_SPLIT, "weights": {"v1": 0.9, "v2": 0.1}}
    assert check_split_config({"weights": {"v2": 1}})["weights"] == {"v1": 0.0, "v2": 1.0}
    bad_configs = [
        [1],
        {"weight": {"v1": 1}},
        {"weights": {"v3": 1}},
        {"weights": {"v1": -1}},
        {"weights": {"v1": 0, "v2": 0}},
        {"weights": {}},
        {"weights": {"v1": True}},
    ]
    for bad in bad_configs:
        with pytest.raises(ValueError):
            check_split_config(bad)


# -- the composition apps' logic -----------------------------------------------------------------


def test_pipeline_stages() -> None:
    assert clean_text("  GREAT   Service!! ") == {
        "text": "great service",
        "words": 2,
        "truncated": False,
    }
    long = clean_text("word " * (MAX_WORDS + 5))
    assert long["truncated"] and long["words"] == MAX_WORDS
    assert label_of(0.75) == {"label": "positive", "confidence": 0.5}
    assert label_of(0.25)["label"] == "negative" and label_of(0.5)["confidence"] == 0.0
    assert run_locally("great service")["label"] == "positive"
    assert run_locally("rude and slow staff")["label"] == "negative"


def test_ensemble_pieces() -> None:
    assert combine({"a": 0.8, "b": 0.4}) == {"score": 0.6, "label": "positive"}
    assert check_member_config({}) == MEMBER_CONFIG
    for bad in ({"delay_s": -1}, {"fail": "yes"}, {"delay": 1}, []):
        with pytest.raises(ValueError):
            check_member_config(bad)
    for bad in ({"members": ["a", "z"]}, {"members": []}, {"timeout": 1}, {"min_members": 5}):
        with pytest.raises(ValueError):
            _deployments_of(build_app(bad))


def test_multiplexed_catalog_is_bigger_than_two_replicas_hold() -> None:
    assert len(CATALOG) > 2 * MAX_MODELS_PER_REPLICA  # so the lesson sees evictions


# -- the configs -----------------------------------------------------------------------------------


def _deployments_of(app: Any) -> set[str]:
    """Deployment names of a bound application (Serve's own build step, as the controller runs it)."""
    from ray.serve._private.build_app import build_app as serve_build_app

    return {d.name for d in serve_build_app(app, name="check").deployments}


def _load(path: Path, tmp_path: Path) -> dict[str, Any]:
    return yaml.safe_load(render_config(path, tmp_path, TINY_MODEL=FAKE_MODEL).read_text())


def test_there_is_a_multi_app_config() -> None:
    assert [p.name for p in MULTI_APP_CONFIGS][:1] == ["multi_app.yaml"]


@pytest.mark.parametrize("path", MULTI_APP_CONFIGS, ids=lambda p: p.stem)
def test_multi_app_config_is_valid_for_the_installed_serve(path: Path, tmp_path: Path) -> None:
    from ray.serve.llm import LLMConfig, LLMServingArgs

    data = _load(path, tmp_path)
    schema = validate_serve_config(data)  # the installed schema, and no silently ignored keys
    prefixes = [app.route_prefix for app in schema.applications]
    assert len(set(prefixes)) == len(prefixes) and {"/app1", "/app2"} <= set(prefixes)
    model_ids = []
    for raw in data["applications"]:
        if raw["import_path"] == "ray.serve.llm:build_openai_app":
            args = LLMServingArgs.model_validate(raw["args"])
            for llm in raw["args"]["llm_configs"]:
                config = LLMConfig.model_validate(llm)
                assert config.accelerator_config.kind == "cpu"
                assert config.model_loading_config.model_source == FAKE_MODEL
                model_ids.append(config.model_id)
            assert len(args.llm_configs) >= 1
            continue
        # A non-LLM app: import it (or call its builder with the args) and check that every
        # per-deployment override names a deployment the application really has.
        module_name, attr = raw["import_path"].split(":")
        target = getattr(__import__(module_name, fromlist=[attr]), attr)
        app = target(raw["args"]) if callable(target) and "args" in raw else target
        names = _deployments_of(app)
        overridden = {d["name"] for d in raw.get("deployments", [])}
        assert overridden <= names, (raw["name"], overridden - names)
    assert len(set(model_ids)) == len(model_ids) >= 2  # different ids on /app1 and /app2


# -- the splitter on real Serve -------------------------------------------------------------------


@pytest.fixture(scope="module")
def canary_url(two_node_cluster: LocalCluster) -> Iterator[str]:
    """The canary application deployed with a config (as `serve deploy` does), then removed."""
    from helpers.ports import free_port
    from helpers.serve_apps import delete_app, serve_http_url
    from helpers.serve_cli import deploy_config
    from helpers.serve_status import serve_details, wait_until_running

    cluster = two_node_cluster
    serve_was_running = bool((serve_details(cluster).get("controller_info") or {}).get("actor_id"))
    config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": free_port()},
        "applications": [
            {
                "name": "canary-test",
                "route_prefix": "/canary-test",
                "import_path": "helpers.apps.canary:app",
            }
        ],
    }
    deploy_config(cluster, config)
    try:
        wait_until_running("canary-test", cluster=cluster, timeout_s=180)
        yield serve_http_url(cluster) + "/canary-test"
    finally:
        cluster.connect()
        try:
            if serve_was_running:
                delete_app("canary-test", cluster=cluster)
            else:
                from ray import serve

                serve.shutdown()
        finally:
            cluster.disconnect()


def test_splitter_on_serve_keeps_to_its_weights_and_changes_them_live(
    two_node_cluster: LocalCluster, canary_url: str
) -> None:
    import requests

    from helpers.serve_cli import deploy_config
    from helpers.serve_timeline import running_pids, settled_pids
    from helpers.traffic import RequestLoop, failure_summary, send_requests

    n = 300
    split = send_requests(
        canary_url, n, concurrency=4, json={"text": "great"}, progress=False, timeout_s=60
    )
    assert split["ok"].all(), failure_summary(split)
    low, high = binomial_interval(n, 0.1, 1e-4)
    assert low <= int((split["code_version"] == "v2").sum()) <= high
    ana = {"text": "great", "user": "ana"}
    sticky = {
        requests.post(canary_url, json=ana, timeout=30).json()["code_version"] for _ in range(5)
    }
    assert sticky == {"v2" if user_bucket("ana") >= 0.9 else "v1"}
    bad = requests.post(canary_url, json={"user": "ana"}, timeout=30)
    assert bad.status_code == 400

    pids = running_pids(two_node_cluster, "canary-test", "TrafficSplitter")
    new = {"weights": {"v1": 0.0, "v2": 1.0}, "config_version": 2}
    details = {
        "applications": [
            {
                "name": "canary-test",
                "route_prefix": "/canary-test",
                "import_path": "helpers.apps.canary:app",
                "deployments": [{"name": "TrafficSplitter", "user_config": new}],
            }
        ]
    }
    with RequestLoop(canary_url, json={"text": "great"}, concurrency=2, timeout_s=30) as loop:
        deploy_config(two_node_cluster, details)
        loop.wait_until_serving("config_version", 2, last=10, timeout_s=120)
    after = loop.results()
    assert failure_summary(after)["failed"] == 0
    assert set(after.loc[after["config_version"] == 2, "code_version"]) == {"v2"}
    assert settled_pids(two_node_cluster, "canary-test", "TrafficSplitter") == pids  # in place
