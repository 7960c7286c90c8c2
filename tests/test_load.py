"""The load generator (helpers.load) and the Locust runner against a real Serve endpoint.

On the session's shared 2-node cluster: ``TimedWork`` (helpers/apps/timed.py) with two fixed
replicas answers after a known wait, so counts, latencies and rates have exact expectations;
a small streaming deployment speaks the OpenAI server-sent-events format, for the chat
client's time to first token and token counts. Serve is started for this module on a free
port and shut down at its end.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from helpers.cluster import LocalCluster
from helpers.errors import ParameterError
from helpers.load import LoadGenerator, chat_request, json_request, load_test, load_test_async
from helpers.ports import free_port

WORK_S = 0.05  # every TimedWork request waits this long


# -- no cluster --------------------------------------------------------------------------------


def test_bad_parameters_are_clear_errors() -> None:
    with pytest.raises(ParameterError, match="either concurrency"):
        LoadGenerator("http://127.0.0.1:1/", concurrency=2, rate=5)
    with pytest.raises(ParameterError, match="either concurrency"):
        LoadGenerator("http://127.0.0.1:1/")
    with pytest.raises(ParameterError, match="not an HTTP URL"):
        LoadGenerator("127.0.0.1:8000", concurrency=1)
    with pytest.raises(ParameterError, match=">= 0"):
        LoadGenerator("http://127.0.0.1:1/", rate=-1)
    with pytest.raises(ParameterError, match="needs an end"):
        load_test("http://127.0.0.1:1/", concurrency=1)
    with pytest.raises(ParameterError, match="prompt or messages"):
        chat_request("m")


def test_echo_server_answers_refuses_a_taken_port_and_stops() -> None:
    import psutil
    import requests

    from helpers.echo_server import EchoServer
    from helpers.errors import PortInUseError
    from helpers.ports import is_port_free

    with EchoServer() as echo:
        pid = echo.pid
        assert requests.post(echo.url + "/any/path", json={"text": "hi"}, timeout=5).json() == {
            "ok": True
        }
        result = load_test(echo.url, json_request({}), concurrency=4, requests=200, progress=False)
        assert result.summary()["ok"] == 200
        with pytest.raises(PortInUseError):
            EchoServer(port=echo.port).start()
    assert echo.pid is None and is_port_free(echo.port)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_run_in_new_loop_runs_work_where_no_event_loop_runs() -> None:
    """The workbook's one runner for a coroutine or a blocking call (Serve's ``.result()``):
    outside a loop it runs here; inside one (a Jupyter cell) in a helper thread without a loop."""
    import threading

    from helpers.load import run_in_new_loop

    def where() -> tuple[int, bool]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return threading.get_ident(), False
        return threading.get_ident(), True

    async def coroutine() -> tuple[int, bool]:
        await asyncio.sleep(0)
        return where()

    here = threading.get_ident()
    assert run_in_new_loop(where) == (here, False)
    assert run_in_new_loop(coroutine) == (here, True)

    async def in_a_cell() -> list[tuple[int, bool]]:
        return [run_in_new_loop(where), run_in_new_loop(coroutine)]

    (plain, plain_loop), (coro, coro_loop) = asyncio.run(in_a_cell())
    assert here not in (plain, coro) and (plain_loop, coro_loop) == (False, True)
    with pytest.raises(ZeroDivisionError):  # the work's error reaches the caller
        run_in_new_loop(lambda: 1 / 0)


def test_unreachable_server_is_counted_not_raised() -> None:
    result = load_test(f"http://127.0.0.1:{free_port()}/", concurrency=2, requests=6)
    summary = result.summary()
    assert (summary["requests"], summary["ok"], summary["failed"]) == (6, 0, 6)
    assert list(summary["error_kinds"]) == ["ClientConnectorError"]
    assert np.isnan(summary["latency_p50_s"])


# -- against real Serve ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def endpoints(two_node_cluster: LocalCluster) -> Iterator[dict[str, str]]:
    """TimedWork (2 fixed replicas) on /timed and an SSE chat stream on /chat."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from ray import serve

    from helpers.apps.timed import TimedWork
    from helpers.serve_status import wait_until_deleted, wait_until_running

    api = FastAPI()

    @serve.deployment(name="FakeChatStream", ray_actor_options={"num_cpus": 0.1})
    @serve.ingress(api)
    class FakeChatStream:
        """Streams OpenAI chat chunks: first after 0.3 s, then one every 0.01 s."""

        @api.post("/v1/chat/completions")
        async def chat(self, body: dict) -> StreamingResponse:
            async def events():
                await asyncio.sleep(0.3)
                for _ in range(body["max_tokens"]):
                    yield (
                        "data: " + json.dumps({"choices": [{"delta": {"content": "tok"}}]}) + "\n\n"
                    )
                    await asyncio.sleep(0.01)
                usage = {"completion_tokens": body["max_tokens"]}
                yield "data: " + json.dumps({"choices": [], "usage": usage}) + "\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

    two_node_cluster.connect()
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        timed = TimedWork.options(
            num_replicas=2,
            autoscaling_config=None,
            max_ongoing_requests=32,
            user_config={"work_s": WORK_S},
        )
        serve._run(timed.bind(), name="load-timed", route_prefix="/timed", _blocking=False)
        serve._run(FakeChatStream.bind(), name="load-chat", route_prefix="/chat", _blocking=False)
        for app in ("load-timed", "load-chat"):
            wait_until_running(app, cluster=two_node_cluster, timeout_s=180)
        yield {"timed": f"http://127.0.0.1:{port}/timed", "chat": f"http://127.0.0.1:{port}/chat"}
    finally:
        try:
            for app in ("load-timed", "load-chat"):
                serve.delete(app, _blocking=False)
            for app in ("load-timed", "load-chat"):
                wait_until_deleted(app, cluster=two_node_cluster, timeout_s=60)
            serve.shutdown()
        finally:
            two_node_cluster.disconnect()


def test_closed_loop_counts_percentiles_and_who_served(
    endpoints: dict[str, str], two_node_cluster: LocalCluster
) -> None:
    from helpers.serve_status import serve_details

    result = load_test(endpoints["timed"], json_request({}), concurrency=8, requests=160)
    df, summary = result.df, result.summary()
    assert len(df) == 160 and sorted(df["i"]) == list(range(160))
    assert summary["requests"] == summary["ok"] == 160 and summary["failed"] == 0, summary[
        "error_kinds"
    ]
    latencies = df["latency_s"].to_numpy()
    for q in (50, 90, 99):
        assert summary[f"latency_p{q}_s"] == round(float(np.percentile(latencies, q)), 4)
    assert latencies.min() >= WORK_S  # nobody answers before the wait is over
    assert (df["t_end"] >= df["t_start"]).all()
    # a closed loop of 8 cannot beat 8 requests per WORK_S
    assert 0 < summary["throughput_rps"] <= 8 / WORK_S * 1.05
    # every answer names the replica and node that served it, and they are the deployment's
    deployment = serve_details(two_node_cluster)["applications"]["load-timed"]["deployments"][
        "TimedWork"
    ]
    replicas = {r["replica_id"] for r in deployment["replicas"]}
    assert df["replica"].notna().all() and df["node"].notna().all()
    assert set(summary["by_replica"]) <= replicas and sum(summary["by_node"].values()) == 160


def test_open_loop_rate_is_accurate(endpoints: dict[str, str]) -> None:
    rate, seconds = 40.0, 5.0
    result = load_test(endpoints["timed"], json_request({}), rate=rate, duration_s=seconds)
    summary = result.summary()
    # Seen once on a loaded machine (make test on a fresh clone, 12-06): 2 of 200 failed;
    # which error they had says where to look (the proxy, a replica, the client's pool).
    assert summary["failed"] == 0, (
        summary["error_kinds"],
        result.df[~result.df["ok"]].to_dict("records"),
    )
    assert abs(summary["requests"] - rate * seconds) <= 0.1 * rate * seconds
    started = result.df["t_start"]
    offered = (len(started) - 1) / (started.max() - started.min())
    assert abs(offered - rate) <= 0.1 * rate, offered
    assert abs(summary["throughput_rps"] - rate) <= 0.1 * rate, summary["throughput_rps"]
    assert summary["max_start_lag_s"] < 0.5  # requests started on schedule


def test_error_accounting(endpoints: dict[str, str]) -> None:
    # every third body asks for a negative wait: TimedWork answers 400
    bodies = json_request(lambda i: {"work_s": -1 if i % 3 == 0 else WORK_S})
    result = load_test(endpoints["timed"], bodies, concurrency=4, requests=30)
    summary = result.summary()
    assert (summary["requests"], summary["ok"], summary["failed"]) == (30, 20, 10)
    assert summary["error_kinds"] == {"HTTP 400": 10}
    failed = result.df[~result.df["ok"]]
    assert (failed["status"] == 400).all() and (failed["i"] % 3 == 0).all()
    ok_latencies = result.df[result.df["ok"]]["latency_s"]
    assert summary["latency_p50_s"] == round(float(np.percentile(ok_latencies, 50)), 4)
    # answers slower than the client's timeout are errors of their own kind
    slow = load_test(
        endpoints["timed"], json_request({"work_s": 2.0}), concurrency=2, requests=2, timeout_s=0.5
    ).summary()
    assert slow["failed"] == 2 and list(slow["error_kinds"]) == ["Timeout"]


def test_background_level_change_and_event_loops(endpoints: dict[str, str]) -> None:
    gen = LoadGenerator(endpoints["timed"], json_request({}), concurrency=1).start()
    time.sleep(1.0)
    gen.set_level(6)
    time.sleep(1.0)
    result = gen.stop()
    per_level = result.df.groupby("level").size()
    assert set(per_level.index) == {1.0, 6.0} and per_level[6.0] > 2 * per_level[1.0]
    assert [level for _, level in result.levels] == [1.0, 6.0]
    assert not gen.running

    async def inside_a_running_loop() -> tuple[int, int]:  # what a Jupyter cell is
        blocking = load_test(endpoints["timed"], concurrency=2, requests=4)  # helper thread
        awaited = await load_test_async(endpoints["timed"], concurrency=2, requests=4)
        return len(blocking.df), len(awaited.df)

    assert asyncio.run(inside_a_running_loop()) == (4, 4)


def test_streamed_chat_time_to_first_token(endpoints: dict[str, str]) -> None:
    spec = chat_request("any", "hello", max_tokens=20, stream=True)
    result = load_test(endpoints["chat"], spec, concurrency=2, requests=4)
    summary = result.summary()
    assert summary["failed"] == 0 and summary["output_tokens"] == 80
    assert 0.3 <= summary["ttft_p50_s"] < summary["latency_p50_s"]
    assert summary["request_tokens_per_s_p50"] > 10


def test_command_line(endpoints: dict[str, str]) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers.load",
            "-c",
            "4",
            "-n",
            "20",
            "--json",
            "{}",
            "--url",
            endpoints["timed"],
            "--summary-json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["requests"] == summary["ok"] == 20 and summary["mode"] == "closed"
    bad = subprocess.run(
        [sys.executable, "-m", "helpers.load", "--stream", "--url", endpoints["timed"]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--chat" in bad.stderr


def test_replica_sampler(endpoints: dict[str, str], two_node_cluster: LocalCluster) -> None:
    from helpers.autoscaling import ReplicaSampler

    with ReplicaSampler(two_node_cluster, "load-timed", "TimedWork", period_s=0.2) as sampler:
        time.sleep(1.2)
        sampler.mark("halfway")
        time.sleep(0.5)
    samples = sampler.results(t0=sampler.events()["t"].iloc[0])
    assert len(samples) >= 4 and samples["t"].diff().dropna().max() < 1.0
    assert (samples["target"] == 2).all() and (samples["running"] == 2).all()
    assert set(samples["status"]) == {"HEALTHY"} and samples["t_s"].min() < 0 < samples["t_s"].max()
    assert len(sampler.changes()) == 1  # nothing changed after the first sample
    missing = ReplicaSampler(two_node_cluster, "no-such-app", "X").start()
    time.sleep(0.3)
    assert set(missing.stop()["status"]) == {"NOT_STARTED"}


def test_locust_headless_and_the_comparison(endpoints: dict[str, str]) -> None:
    from helpers.locust_run import LocustRun, compare_with_locust

    run = LocustRun(
        endpoints["timed"], users=4, spawn_rate=4, run_time_s=2, options={"payload": "{}"}
    )
    assert (
        run.command.startswith("locust -f ") and "--headless -u 4 -r 4 --run-time 2s" in run.command
    )
    # 5 s a run: Locust's --run-time clock starts before its users do, and on a busy 2-core CI
    # machine (the other test worker starting a vLLM engine) a 2 s run once sent nothing at all.
    runs = compare_with_locust(
        endpoints["timed"],
        path="/",
        payload={},
        concurrency=4,
        seconds=5,
        rounds=2,
        user_classes=("JsonUser",),
    )
    assert list(runs["tool"]) == [
        "Locust JsonUser (HttpUser)",
        "helpers.load",
        "helpers.load",
        "Locust JsonUser (HttpUser)",
    ]  # A B, then B A
    assert (runs["failures"] == 0).all() and (runs["requests"] > 20).all()
    assert (runs["p50_s"] >= WORK_S).all()
    # a closed loop of 4 cannot beat 4 requests per WORK_S, whoever sends them
    assert ((runs["throughput_rps"] > 0) & (runs["throughput_rps"] <= 4 / WORK_S * 1.05)).all()
    assert (runs["client_cpu_ms_per_request"] > 0).all()
    assert run.pid is None and not run.running  # made, never started: nothing to stop


def test_helpers_load_is_not_the_bottleneck_locust_is() -> None:
    """Lesson 05 (section 3) rests on this: against a server faster than any client (the echo
    server), helpers.load offers at least the throughput of Locust's standard client
    (JsonUser, an HttpUser) at less client CPU per request, and far more than the ~100
    requests/s a lesson asks of Serve. A B, B A: a background load is shared fairly."""
    from helpers.echo_server import EchoServer
    from helpers.locust_run import compare_with_locust

    with EchoServer() as echo:
        runs = compare_with_locust(
            echo.url,
            path="/",
            payload={"text": "great service"},
            concurrency=32,
            seconds=4,
            rounds=2,
            user_classes=("JsonUser",),
        )
    assert (runs["failures"] == 0).all(), runs
    by_tool = runs.groupby("tool")[["throughput_rps", "client_cpu_ms_per_request"]].mean()
    ours, theirs = by_tool.loc["helpers.load"], by_tool.loc["Locust JsonUser (HttpUser)"]
    assert ours["client_cpu_ms_per_request"] < theirs["client_cpu_ms_per_request"], by_tool
    assert ours["throughput_rps"] >= 0.9 * theirs["throughput_rps"], by_tool
    assert ours["throughput_rps"] > 500, by_tool


def test_a_locust_run_can_be_ended_early_with_its_statistics() -> None:
    """A run that lasts "until the second engine serves" (lesson 05) ends it with finish()."""
    from helpers.echo_server import EchoServer
    from helpers.errors import WorkbookError
    from helpers.locust_run import LocustRun, read_locust_stats
    from helpers.waiting import wait_for

    with EchoServer() as echo:
        run = LocustRun(echo.url, users=2, spawn_rate=2, run_time_s=120, options={"payload": "{}"})
        run.start()
        # Ended once it has sent requests (its statistics file, rewritten every second or two,
        # counts them), not after a fixed sleep: Locust took 7 s to start beside a busy test
        # run, and a run ended before its users sent anything has nothing to report.
        wait_for(
            lambda: run.stats_csv.exists() and read_locust_stats(run.stats_csv)["requests"] > 0,
            timeout_s=60,
            what="Locust's statistics to count a request",
            not_yet=(WorkbookError, KeyError, ValueError),  # a file being rewritten
        )
        assert run.running
        stats = run.finish()
    assert not run.running and run.pid is None
    assert stats["requests"] > 0 and stats["failures"] == 0, stats
    assert stats["wall_s"] < 30  # ended long before its 120 s --run-time


def test_live_dashboard_refreshes_and_follows_the_slider(
    endpoints: dict[str, str], two_node_cluster: LocalCluster
) -> None:
    from helpers.autoscaling import AutoscalingDashboard

    board = AutoscalingDashboard(
        two_node_cluster,
        app="load-timed",
        deployment="TimedWork",
        url=endpoints["timed"],
        max_rate=40,
        initial_rate=5,
        refresh_s=0.5,
    )
    # What a JupyterLab cell displays. A refresh draws a figure: ~0.3 s on a quiet machine, over
    # 2 s on a busy 2-core CI machine. So the load runs until the figure has been redrawn three
    # times (or 60 s), then the person presses "stop now".
    box = board.start_live(duration_s=120.0)
    (slider, stop_button), image = box.children[0].children, box.children[2]
    time.sleep(1.0)
    slider.value = 20  # a person moving the slider
    deadline = time.monotonic() + 60
    while board.refreshes < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    stop_button.click()
    result = board.wait(timeout_s=30)
    assert board.refreshes >= 3 and image.value[:4] == b"\x89PNG"
    assert not board.generator.running, "the stop button ended the load"
    assert [level for _, level in result.levels] == [5.0, 20.0]
    assert "finished" in box.children[1].value and result.summary()["failed"] == 0
