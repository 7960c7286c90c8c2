"""The labs' hidden checks: the instructor's part of :mod:`helpers.labs.checks`.

A lab's student version has no hidden-check cells; the grader puts them back
(:func:`helpers.labs.notebooks.restore_checks`) and they call these functions, which register
with their lab and task like the visible checks. This module is not in the student kit
(``python -m helpers.labs kit``): what students install says nothing of what is checked behind
their backs. Importing :mod:`helpers.labs.checks` imports this module when it is present, so
``checks.lab01_rejects_missing_text(lab)`` works in a hidden cell as before. One section per
lab, each using its lab module's helpers (:mod:`helpers.labs.checks.lab01` ...): one file, so
that the kit leaves out one file.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.labs.checks.framework import (
    CheckProblem,
    _app,
    _call,
    _deployment,
    _expect,
    _json,
    _post,
    _running_replicas,
    lab_check,
)
from helpers.labs.checks.lab01 import _L01_CLASS
from helpers.labs.checks.lab02 import _L02_DEP, _L02_IMPORT, _l02_deployment, _l02_entry
from helpers.labs.checks.lab03 import _L03_LOOK, _l03_autoscaling, _window
from helpers.labs.checks.lab05 import _L05_CONFIG, _l05_config_dict, _l05_messages
from helpers.labs.checks.lab06 import _L06_ROUTER
from helpers.labs.checks.lab08 import (
    _L08_METRICS,
    _L08_P95,
    _L08_SHARE,
    LAB08_LATENCY_MS_BUCKETS,
    _l08_p95_against_the_client,
    _l08_share_of,
)
from helpers.labs.checks.lab09 import _L09_LOOK, lab09_where
from helpers.load import run_in_new_loop
from helpers.metrics import scrape_cluster
from helpers.serve_cli import check_config_fields
from helpers.serve_timeline import settled_pids

if TYPE_CHECKING:  # pragma: no cover
    from helpers.labs.session import LabSession

__all__ = [
    "lab01_one_deployment_per_app",
    "lab01_rejects_missing_text",
    "lab01_handle_calls_spread",
    "lab02_user_config_accepted",
    "lab02_running_config_is_the_file",
    "lab02_reconfigured_in_place",
    "lab03_not_overprovisioned",
    "lab03_scaled_with_the_load",
    "lab04_batches_are_formed",
    "lab04_queue_admits_a_full_batch",
    "lab05_engine_fits",
    "lab05_chat_completion_answers",
    "lab05_server_streams",
    "lab06_router_reuses_the_apps",
    "lab07_fixed_config_is_clean",
    "lab08_histogram_as_specified",
    "lab08_p95_follows_another_load",
    "lab08_error_share_without_errors",
    "lab09_embed_says_one_per_node",
    "lab09_rerank_says_one_per_node",
    "lab09_generate_on_its_own_gpu",
]


@lab_check("lab01", 1, hidden=True)
def lab01_one_deployment_per_app(session: LabSession) -> None:
    """The application is WordCounter alone, as its ingress."""
    app = _app(session, "counter", task=1)
    names = sorted(app.get("deployments") or {})
    _expect(
        names == ["WordCounter"],
        f"The application has deployments {names}.",
        "Task 1: deploy WordCounter.bind() and nothing else",
    )


@lab_check("lab01", 1, hidden=True)
def lab01_rejects_missing_text(session: LabSession) -> None:
    """A request without text is refused with HTTP 400 (WordCounter's __call__, Task 1)."""
    response = _post(session.url("counter"), {"txt": "typo"}, look="Task 1")
    _expect(
        response.status_code == 400,
        f"A body without 'text' got HTTP {response.status_code}, not 400.",
        "Task 1: __call__ must answer missing_text_response() when read_text() is None",
    )


@lab_check("lab01", 3, hidden=True)
def lab01_handle_calls_spread(session: LabSession, handle: Any = None, *, calls: int = 20) -> None:
    """The student's handle is WordCounter's, and handle calls spread over every replica."""
    from ray import serve
    from ray.serve.handle import DeploymentHandle

    name = session.app_name("counter")
    look = "Task 3: handle = serve.get_app_handle(...) of this lab's counter application"
    _expect(
        isinstance(handle, DeploymentHandle),
        f"handle is {type(handle).__name__}, not a DeploymentHandle.",
        look,
    )
    _expect(
        (handle.app_name, handle.deployment_name) == (name, "WordCounter"),
        f"handle calls {handle.app_name!r}/{handle.deployment_name!r}, not {name!r}/'WordCounter'.",
        look,
    )

    def many() -> list[Any]:
        handle = serve.get_app_handle(name)
        responses = [handle.count.remote(f"call {i}") for i in range(calls)]
        return [r.result(timeout_s=60) for r in responses]

    app = _app(session, "counter", task=3)
    replicas = len(_running_replicas(_deployment(app, "WordCounter", look=_L01_CLASS)))
    seen = {answer.get("replica") for answer in run_in_new_loop(many)}
    _expect(
        len(seen) == replicas >= 2,
        f"{calls} concurrent calls reached {len(seen)} replica(s) of {replicas}.",
        "Task 1: num_replicas, and count() returning replica_identity()",
    )


@lab_check("lab02", 1, hidden=True)
def lab02_user_config_accepted(session: LabSession, config_path: Any) -> None:
    """The file's user_config passes the application's own validation."""
    from helpers.apps.configurable import check_user_config

    dep = _l02_deployment(_l02_entry(session, config_path, "Task 1"))
    try:
        check_user_config(dep.get("user_config"))
    except ValueError as err:
        raise CheckProblem(
            f"The replicas would reject this user_config: {err}",
            "Task 1: user_config (threshold 0..1, two labels)",
        ) from err


@lab_check("lab02", 2, hidden=True)
def lab02_running_config_is_the_file(session: LabSession, config_path: Any) -> None:
    """What Serve runs is exactly the application in the student's file."""
    entry = _l02_entry(session, config_path, "Task 1")
    app = _app(session, "classifier", task=2)
    deployed = app.get("deployed_app_config") or {}
    mine = _l02_deployment(entry)
    theirs: dict[str, Any] = next(
        (d for d in deployed.get("deployments") or [] if d.get("name") == _L02_DEP), {}
    )
    same = {k: (mine.get(k), theirs.get(k)) for k in ("num_replicas", "user_config")}
    _expect(
        all(a == b for a, b in same.values()) and deployed.get("import_path") == _L02_IMPORT,
        f"Serve's recorded config differs from the file: {same}.",
        "Task 2: deploy config_path (through lab.with_classmates_apps)",
    )


@lab_check("lab02", 3, hidden=True)
def lab02_reconfigured_in_place(session: LabSession, *, pids_before: Sequence[int]) -> None:
    """A user_config change kept the replicas that were running (no restart)."""

    # No replicas before, or no application now: nothing to wait for (fail at once).
    _expect(
        bool(pids_before),
        "No replicas of the classifier were running before the update.",
        "Task 2: the first `serve deploy` of the config",
    )
    app = _app(
        session,
        "classifier",
        task=3,
        running=False,
        look="Task 3: the updated config, deployed with `serve deploy`",
    )
    config = _deployment(app, _L02_DEP, look="Task 3").get("deployment_config") or {}
    version = (config.get("user_config") or {}).get("config_version")
    _expect(
        version == 2,
        f"The running deployment's user_config has config_version "
        f"{version!r}: the update (config_version 2) was not deployed.",
        "Task 3: the updated config, deployed with `serve deploy`",
    )
    pids_now = settled_pids(session.cluster, session.app_name("classifier"), _L02_DEP)
    kept = set(pids_before) & set(pids_now)
    _expect(
        kept == set(pids_before),
        f"Replicas before the update: {sorted(pids_before)}, now: {pids_now}; a "
        "user_config change should not restart them.",
        "Task 3: change only num_replicas and user_config, not the code or ray_actor_options",
    )


@lab_check("lab03", 1, hidden=True)
def lab03_not_overprovisioned(session: LabSession, *, load_clients: int) -> None:
    """The autoscaling bounds are economical: min 1, max at most twice the clients."""
    auto = _l03_autoscaling(session, 1)
    _expect(
        auto.get("min_replicas") == 1 and auto.get("max_replicas", 0) <= 2 * load_clients,
        f"min_replicas={auto.get('min_replicas')}, max_replicas={auto.get('max_replicas')} "
        f"for {load_clients} clients: replicas you never need still cost.",
        _L03_LOOK,
    )


@lab_check("lab03", 2, hidden=True)
def lab03_scaled_with_the_load(session: LabSession, load_traffic: Any, *, last_s: float) -> None:
    """The target was met by scaling out (several replicas served the load)."""
    _expect(load_traffic is not None and len(load_traffic) > 0, "No load_traffic.", "Task 2")
    served = _window(load_traffic, last_s)["replica"].nunique()
    _expect(served >= 2, f"Only {served} replica served the end of the load.", _L03_LOOK)


@lab_check("lab04", 1, hidden=True)
def lab04_batches_are_formed(session: LabSession) -> None:
    """Concurrent requests reach the device in batches."""
    _app(session, "batched", task=1, look="Task 1: the cell that deploys BatchedScorer")
    stats = _call(session, "batched", "stats")
    _expect(
        stats.get("largest", 0) > 1,
        f"The device only ever ran batches of size {stats.get('largest')}: {stats}.",
        "Task 1: @serve.batch on an async def that takes a list",
    )


@lab_check("lab04", 2, hidden=True)
def lab04_queue_admits_a_full_batch(session: LabSession) -> None:
    """max_ongoing_requests lets a full batch reach the replica."""
    app = _app(session, "batched", task=2)
    config = _deployment(app, "BatchedScorer", look="Task 1").get("deployment_config") or {}
    stats = _call(session, "batched", "stats")
    limit = config.get("max_ongoing_requests", 5)
    _expect(
        limit >= 8 and stats.get("largest", 0) > 5,
        f"max_ongoing_requests is {limit} and the largest batch was {stats.get('largest')}"
        ": a replica never holds more requests than max_ongoing_requests, so batches "
        "cannot be larger.",
        "Task 2: @serve.deployment(max_ongoing_requests=...)",
    )


@lab_check("lab05", 1, hidden=True)
def lab05_engine_fits(
    session: LabSession, llm_config: Any, *, max_model_len: int, accelerator: str
) -> None:
    """The engine's context length and KV cache are sized for this machine."""
    data = _l05_config_dict(llm_config)
    length = (data.get("engine_kwargs") or {}).get("max_model_len")
    _expect(
        length is not None and length <= max_model_len,
        f"engine_kwargs max_model_len is {length!r}; give at most {max_model_len}.",
        _L05_CONFIG + " engine_kwargs",
    )
    if accelerator == "cpu":
        env = (data.get("runtime_env") or {}).get("env_vars") or {}
        _expect(
            "VLLM_CPU_KVCACHE_SPACE" in env,
            "On the CPU build the KV cache is sized by VLLM_CPU_KVCACHE_SPACE (GiB); it "
            "is not set.",
            _L05_CONFIG + " runtime_env={'env_vars': {...}}",
        )


@lab_check("lab05", 2, hidden=True)
def lab05_chat_completion_answers(session: LabSession, *, model_id: str) -> None:
    """A chat completion answers with text and token usage."""
    body = {
        "model": model_id,
        "max_tokens": 6,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Return the value"}],
    }
    reply = _json(
        _post(session.url("llm", "/v1/chat/completions"), body, look="Task 2", timeout_s=120),
        look="Task 2",
    )
    usage = reply.get("usage") or {}
    _expect(
        0 < usage.get("completion_tokens", 0) <= 6 and reply.get("choices"),
        f"The chat completion answered {str(reply)[:300]}.",
        "Task 2",
    )


@lab_check("lab05", 2, hidden=True)
def lab05_server_streams(session: LabSession, *, model_id: str) -> None:
    """The app sends the first token before the last one (a real stream)."""
    import requests

    body = {
        "model": model_id,
        "max_tokens": 12,
        "temperature": 0,
        "stream": True,
        "messages": _l05_messages("Return the"),
        "ignore_eos": True,
    }
    arrivals = []
    started = time.perf_counter()
    with requests.post(
        session.url("llm", "/v1/chat/completions"), json=body, stream=True, timeout=120
    ) as response:
        _expect(response.status_code == 200, f"HTTP {response.status_code}", "Task 2")
        for line in response.iter_lines():
            if line.startswith(b"data: {"):
                arrivals.append(time.perf_counter() - started)
    _expect(
        len(arrivals) > 2 and arrivals[0] < arrivals[-1],
        f"{len(arrivals)} server-sent events arrived.",
        "Task 2",
    )


@lab_check("lab06", 2, hidden=True)
def lab06_router_reuses_the_apps(session: LabSession) -> None:
    """The router calls the two applications; it deploys no copy of them."""
    app = _app(session, "router", task=2, look=_L06_ROUTER)
    names = sorted(app.get("deployments") or {})
    _expect(
        len(names) == 1,
        f"The router application has deployments {names}: it should "
        "call the stable and canary apps through serve.get_app_handle, not bind copies.",
        _L06_ROUTER + ".__init__",
    )


@lab_check("lab07", 2, hidden=True)
def lab07_fixed_config_is_clean(session: LabSession, fixed_config_path: Any) -> None:
    """The fixed config has no ignored keys and a valid threshold for beta."""
    import yaml

    from helpers.apps.configurable import check_user_config

    path = Path(fixed_config_path) if fixed_config_path else None
    _expect(path is not None and path.exists(), "There is no fixed config file.", "Task 2")
    assert path is not None  # _expect raised otherwise
    config = yaml.safe_load(path.read_text())
    problems = check_config_fields(config)
    _expect(not problems, f"Keys Serve would ignore: {[str(p) for p in problems]}", "Task 2")
    beta = next(a for a in config["applications"] if a["name"] == session.app_name("beta"))
    for dep in beta.get("deployments") or []:
        try:
            check_user_config(dep.get("user_config"))
        except ValueError as err:
            raise CheckProblem(f"beta's user_config is still invalid: {err}", "Task 2") from err


@lab_check("lab08", 1, hidden=True)
def lab08_histogram_as_specified(session: LabSession) -> None:
    """The histogram has the lab's bucket bounds, on every replica that reports it."""

    _app(session, "timed", task=1, look=_L08_METRICS)
    name = session.app_name("timed")
    samples = scrape_cluster(session.cluster, prefixes=("ray_lab08_latency_ms_bucket",))
    rows = (
        samples[samples["labels"].map(lambda labels: labels.get("application") == name)]
        if not samples.empty
        else samples
    )
    _expect(
        not rows.empty,
        "No ray_lab08_latency_ms_bucket of this application in the scrape.",
        _L08_METRICS,
    )
    per_replica: dict[str, set[float]] = {}
    for labels in rows["labels"]:
        if labels.get("le") not in (None, "+Inf"):
            per_replica.setdefault(labels.get("replica", "?"), set()).add(float(labels["le"]))
    wanted = {float(b) for b in LAB08_LATENCY_MS_BUCKETS}
    wrong = {replica: sorted(bounds) for replica, bounds in per_replica.items() if bounds != wanted}
    _expect(
        bool(per_replica) and not wrong,
        f"Bucket bounds {wrong or 'none'}; the lab gives {LAB08_LATENCY_MS_BUCKETS}.",
        _L08_METRICS + ": boundaries=LATENCY_MS_BUCKETS",
    )


@lab_check("lab08", 2, hidden=True)
def lab08_p95_follows_another_load(session: LabSession, p95_ms: Any) -> None:
    """p95_ms follows a different load too (50 to 300 ms of work): no constant answer."""
    work = [50 + 250 * i / 39 for i in range(40)]
    _l08_p95_against_the_client(session, p95_ms, work, _L08_P95)


@lab_check("lab08", 3, hidden=True)
def lab08_error_share_without_errors(session: LabSession, error_share: Any) -> None:
    """error_share is 0.0 when every request was answered."""
    share = _l08_share_of(session, error_share, answered=12, refused=0)
    _expect(
        share == 0.0,
        f"error_share gave {share:.4f} when none of 12 requests was refused.",
        _L08_SHARE + ": only outcome bad_request's increase counts as an error",
    )


def _l09_declares_one_per_node(session: LabSession, short: str, task: int) -> None:
    app = _app(session, short, task=task, look=_L09_LOOK[short])
    config = _deployment(app, "ResourceProbe", look=_L09_LOOK[short]).get("deployment_config") or {}
    _expect(
        config.get("max_replicas_per_node") == 1,
        f"{short}'s deployment declares max_replicas_per_node "
        f"{config.get('max_replicas_per_node')!r}: its replicas are apart by chance, not by "
        "its config.",
        _L09_LOOK[short],
    )


@lab_check("lab09", 1, hidden=True)
def lab09_embed_says_one_per_node(session: LabSession) -> None:
    """embed's config itself keeps its replicas one per node (max_replicas_per_node 1)."""
    _l09_declares_one_per_node(session, "embed", 1)


@lab_check("lab09", 2, hidden=True)
def lab09_rerank_says_one_per_node(session: LabSession) -> None:
    """rerank's config itself keeps its replicas one per node (max_replicas_per_node 1)."""
    _l09_declares_one_per_node(session, "rerank", 2)


@lab_check("lab09", 3, hidden=True)
def lab09_generate_on_its_own_gpu(session: LabSession) -> None:
    """On each node generate has a GPU of its own, apart from the one embed and rerank share."""
    _l09_declares_one_per_node(session, "generate", 3)
    gpus: dict[str, dict[str, set[str]]] = {}
    for short in ("embed", "rerank", "generate"):
        for replica in lab09_where(session, short):
            gpus.setdefault(replica["node_id"], {}).setdefault(short, set()).update(
                replica["gpu_ids"]
            )
    for node, by_model in gpus.items():
        halves = by_model.get("embed", set()) | by_model.get("rerank", set())
        mine = by_model.get("generate", set())
        _expect(
            bool(mine) and not (mine & halves),
            f"On node {node[:8]} generate has GPU(s) {sorted(mine)}, embed and rerank "
            f"{sorted(halves)}.",
            _L09_LOOK["generate"],
        )
