"""Client retries (helpers.traffic) and fault injection (helpers.faults), for real.

First the retry policy on its own, against a small local HTTP server that fails on purpose
(no cluster): which failures are retried, how long the client waits, what a record says.
Then against real Serve on the session's shared 2-node cluster: a replica killed while
requests are in flight on it (without retries they can fail, with retries none is lost),
and the Serve controller killed under load (no request fails, no replica restarts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
import requests
from local_http import http_server_in_thread

from helpers.cluster import ExistingCluster, LocalCluster, connect_to_cluster
from helpers.errors import WorkbookError
from helpers.faults import wait_for
from helpers.ports import free_port
from helpers.traffic import (
    RequestLoop,
    failure_summary,
    is_retryable,
    request_with_retries,
    retry_delays,
    send_requests,
)

# -- the retry policy, against a local server that fails on purpose ----------------------------


class _Flaky(BaseHTTPRequestHandler):
    """``/fail/N/CODE``: the first N requests to that path get CODE, later ones 200.
    ``/alternate``: every other request (1st, 3rd, ...) gets 500. ``/bad``: always 400."""

    seen: dict[str, int] = {}
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            count = self.seen[self.path] = self.seen.get(self.path, 0) + 1
        parts = self.path.strip("/").split("/")
        if parts[0] == "fail":
            code = int(parts[2]) if count <= int(parts[1]) else 200
        elif parts[0] == "alternate":
            code = 500 if count % 2 else 200
        else:
            code = 400
        body = b'{"label": "positive"}' if code == 200 else b'{"error": "on purpose"}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_url() -> Iterator[str]:
    _Flaky.seen = {}
    with http_server_in_thread(_Flaky) as url:
        yield url


def test_retry_delays_double_up_to_a_cap() -> None:
    assert retry_delays(4, 0.2) == pytest.approx([0.2, 0.4, 0.8, 1.6])
    assert retry_delays(5, 1.0, max_backoff_s=2.5) == [1.0, 2.0, 2.5, 2.5, 2.5]
    assert retry_delays(0, 0.2) == []
    with pytest.raises(ValueError):
        retry_delays(-1, 0.2)
    with pytest.raises(ValueError):
        RequestLoop("http://127.0.0.1:1/", retries=2, retry_backoff_s=-0.1)


def test_what_is_retried() -> None:
    base = {"ok": False, "error": "x"}
    assert is_retryable({**base, "status": None})  # refused, reset, timed out: no answer
    assert is_retryable({**base, "status": 500}) and is_retryable({**base, "status": 503})
    assert not is_retryable({**base, "status": 400})  # the request is wrong: do not repeat
    assert not is_retryable({**base, "status": 404})
    assert not is_retryable({"ok": True, "status": 200, "error": ""})
    assert not is_retryable({**base, "status": 503}, statuses=(500,))


def test_a_wait_that_times_out_says_what_it_saw() -> None:
    """wait_for's error carries the check's last value and, when given, what ``report``
    saw at the timeout (a check that returns only False says nothing by itself); a report
    that fails does not hide the timeout."""
    from helpers.faults import wait_for

    with pytest.raises(WorkbookError) as caught:
        wait_for(
            lambda: False,
            timeout_s=0.3,
            poll_s=0.05,
            what="the fix",
            report=lambda: {"leak": "DEPLOYING", "http": 503},
        )
    assert caught.value.problem == "Waited 0.3 s for the fix; it did not happen."
    assert isinstance(caught.value, TimeoutError)
    assert "last seen: False" in caught.value.details
    assert "'leak': 'DEPLOYING'" in caught.value.details and "503" in caught.value.details

    with pytest.raises(WorkbookError) as caught:
        wait_for(lambda: 0, timeout_s=0.2, poll_s=0.05, what="the fix", report=lambda: 1 / 0)
    assert "the report itself failed (ZeroDivisionError" in caught.value.details
    assert wait_for(lambda: "ready", timeout_s=5, what="x", report=lambda: 1 / 0) >= 0


def test_request_with_retries(flaky_url: str) -> None:
    session = requests.Session()
    saved = request_with_retries(session, f"{flaky_url}/fail/2/503", retries=3, backoff_s=0.1)
    assert saved["ok"] and saved["attempts"] == 3 and saved["status"] == 200
    assert saved["first_error"].startswith("HTTP 503") and saved["label"] == "positive"
    assert saved["latency_s"] >= 0.1 + 0.2  # it waited between attempts

    short = request_with_retries(session, f"{flaky_url}/fail/5/500", retries=1, backoff_s=0.05)
    assert not short["ok"] and short["attempts"] == 2 and short["status"] == 500

    bad = request_with_retries(session, f"{flaky_url}/bad", retries=3, backoff_s=0.05)
    assert not bad["ok"] and bad["attempts"] == 1 and bad["status"] == 400

    nowhere = request_with_retries(
        session, f"http://127.0.0.1:{free_port()}/", retries=2, backoff_s=0.05, timeout_s=2
    )
    assert not nowhere["ok"] and nowhere["attempts"] == 3 and nowhere["status"] is None
    assert nowhere["error"].startswith("ConnectionError") and nowhere["first_error"]

    first_try = request_with_retries(session, f"{flaky_url}/fail/0/500", retries=3)
    assert first_try["ok"] and first_try["attempts"] == 1 and first_try["first_error"] == ""


def test_request_loop_with_and_without_retries(flaky_url: str) -> None:
    with RequestLoop(f"{flaky_url}/alternate", concurrency=1, pause_after_failure_s=0) as plain:
        time.sleep(0.5)
    lost = failure_summary(plain.results())
    assert lost["sent"] >= 4 and abs(lost["failed"] - lost["sent"] / 2) <= 1  # every other one
    assert lost["attempts"] == lost["sent"] and lost["ok_after_retry"] == 0

    _Flaky.seen = {}
    with RequestLoop(
        f"{flaky_url}/alternate", concurrency=1, retries=2, retry_backoff_s=0.01
    ) as careful:
        time.sleep(0.5)
    kept = failure_summary(careful.results())
    assert kept["sent"] >= 4 and kept["failed"] == 0
    assert kept["ok_after_retry"] == kept["failed_attempts"] >= kept["sent"] - 1
    assert kept["attempts"] == kept["sent"] + kept["failed_attempts"]
    assert kept["first_error_kinds"] == {"HTTP 500": kept["failed_attempts"]}
    assert careful.counts["attempts"] == kept["attempts"]


def test_request_loop_with_a_client_of_your_own(flaky_url: str) -> None:
    """``send=``: each logical request is the caller's function (lesson 11's retry policy),
    given the thread's session, the URL, the JSON body and the timeout."""
    calls: list[tuple[str, object, float]] = []

    def send_twice(
        session: requests.Session, url: str, *, json: object = None, timeout_s: float = 10.0
    ) -> dict:
        calls.append((url, json, timeout_s))
        first = request_with_retries(session, url, timeout_s=timeout_s)
        if first["ok"]:
            return {**first, "attempts": 1, "first_error": ""}
        second = request_with_retries(session, url, timeout_s=timeout_s)
        return {**second, "attempts": 2, "first_error": first["error"]}

    with RequestLoop(
        f"{flaky_url}/alternate", concurrency=1, timeout_s=3.0, send=send_twice
    ) as mine:
        time.sleep(0.5)
    kept = failure_summary(mine.results())
    assert kept["sent"] == len(calls) >= 3 and kept["failed"] == 0
    assert {c[0] for c in calls} == {f"{flaky_url}/alternate"} and calls[0][2] == 3.0
    assert kept["ok_after_retry"] >= kept["sent"] - 1


def test_failure_summary_without_attempts_is_unchanged(flaky_url: str) -> None:
    burst = send_requests(f"{flaky_url}/fail/1/503", 3, concurrency=1, progress=False)
    assert "attempts" not in burst.columns
    assert set(failure_summary(burst)) == {
        "sent",
        "ok",
        "failed",
        "failure_window_s",
        "error_kinds",
    }
    assert failure_summary(burst)["failed"] == 1


# -- against real Serve on the shared cluster --------------------------------------------------

APP, DEPLOYMENT = "t_faults", "SlowClassifier"
WORK_S = 1.0  # each request holds its replica this long: still in flight when the kill lands


def _answers(url: str) -> bool:
    try:
        return requests.post(url, json={"text": "ready?", "work_s": 0.0}, timeout=10).ok
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def slow_app(two_node_cluster: LocalCluster) -> Iterator[tuple[LocalCluster, str]]:
    """Serve (HTTP on a free port) with two SlowClassifier replicas; shut down afterwards."""
    from ray import serve

    from helpers.apps.slow_classifier import SlowClassifier

    two_node_cluster.connect()
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(SlowClassifier.options(num_replicas=2).bind(), name=APP, route_prefix=f"/{APP}")
        url = f"http://127.0.0.1:{port}/{APP}"
        # RUNNING is the controller's word; the proxy learns the route a moment later, and a
        # request sent before that fails without any fault (a test counts failures as the
        # fault's): wait until the app answers over HTTP.
        wait_for(lambda: _answers(url), timeout_s=60, what=f"{url} answering HTTP 200")
        yield two_node_cluster, url
    finally:
        try:
            serve.shutdown()
        finally:
            two_node_cluster.disconnect()


@pytest.mark.cluster
def test_replica_killed_mid_loop(slow_app: tuple[LocalCluster, str]) -> None:
    from helpers.faults import kill_replica
    from helpers.serve_timeline import running_pids, wait_until_replaced

    cluster, url = slow_app
    body = {"text": "great service", "work_s": WORK_S}
    with (
        RequestLoop(url, json=body, concurrency=2) as plain,
        RequestLoop(url, json=body, concurrency=2, retries=4, retry_backoff_s=0.2) as careful,
    ):
        time.sleep(1.5)
        fault = kill_replica(cluster, APP, DEPLOYMENT, busy=True)
        recovered_s = wait_until_replaced(
            cluster, APP, DEPLOYMENT, [fault.pid], replicas=2, timeout_s=60
        )
        time.sleep(1.0)
    lost, kept = failure_summary(plain.results()), failure_summary(careful.results())

    assert fault.kind == "replica" and fault.in_flight >= 1  # it was killed mid-request
    assert fault.pid not in running_pids(cluster, APP, DEPLOYMENT) and recovered_s > 0
    # The requests in flight on it failed (unless retried): one client or the other felt it.
    assert lost["failed"] + kept["ok_after_retry"] >= 1, (lost, kept)
    # Without retries, what was lost is exactly what was in flight on the killed replica...
    failed = plain.results().query("not ok")
    assert (failed["t_start"] <= fault.t + 1.0).all() and (failed["t_end"] >= fault.t).all()
    assert (failed["status"].isna() | failed["status"].isin([500, 502, 503, 504])).all()
    # ...and with retries nothing was lost.
    assert kept["failed"] == 0, kept
    assert kept["sent"] >= 4 and lost["sent"] >= 4


@pytest.mark.cluster
def test_controller_killed_under_load(slow_app: tuple[LocalCluster, str]) -> None:
    from helpers.faults import kill_controller, serve_actors, wait_until_controller_restarted
    from helpers.serve_timeline import running_pids, settled_pids

    cluster, url = slow_app
    before = running_pids(cluster, APP, DEPLOYMENT)
    proxies_before = {a["actor_id"] for a in serve_actors(cluster, class_prefix="ProxyActor")}
    with RequestLoop(url, json={"text": "great", "work_s": 0.1}, concurrency=2) as plain:
        time.sleep(0.5)
        fault = kill_controller(cluster)
        back_s = wait_until_controller_restarted(cluster, fault, timeout_s=60)
        time.sleep(0.5)
    summary = failure_summary(plain.results())
    controller = serve_actors(cluster, class_prefix="ServeController")
    assert fault.kind == "controller" and back_s > 0
    assert len(controller) == 1 and controller[0]["pid"] != fault.pid
    assert controller[0]["num_restarts"] >= 1  # the same actor, restarted by Ray
    assert summary["failed"] == 0 and summary["sent"] >= 4, summary  # data plane unaffected
    # no replica restarted (RECOVERING is not RUNNING)
    assert settled_pids(cluster, APP, DEPLOYMENT) == before
    assert {
        a["actor_id"] for a in serve_actors(cluster, class_prefix="ProxyActor")
    } == proxies_before


def test_shared_serve_actors_are_never_killed_on_a_cluster_not_started_here() -> None:
    """On a cluster the notebook did not start (a classroom's), the proxy, the controller and
    a node are everyone's: the kill functions refuse before they look anything up (the
    address below has no cluster, so any attempt to reach it would fail differently)."""
    from helpers.faults import kill_controller, kill_proxy, kill_raylet

    shared = ExistingCluster("127.0.0.1:1", "http://127.0.0.1:1", None)
    with pytest.raises(WorkbookError, match="proxy.*not started by this notebook"):
        kill_proxy(shared)
    with pytest.raises(WorkbookError, match="controller.*not started by this notebook"):
        kill_controller(shared)
    with pytest.raises(WorkbookError, match="raylet.*not started by this notebook"):
        kill_raylet(shared, "worker-1")


@pytest.mark.cluster
def test_kill_raylet_refuses_what_it_must_not_kill(two_node_cluster: LocalCluster) -> None:
    from helpers.faults import kill_raylet, raylet_pid
    from helpers.processes import is_alive

    worker = next(n for n in two_node_cluster.nodes_started if n.role == "worker")
    pid = raylet_pid(two_node_cluster, worker.name)  # found, not killed: the cluster is shared
    assert is_alive(pid) and pid != worker.pid
    with pytest.raises(WorkbookError, match="head"):
        kill_raylet(two_node_cluster, "head")
    borrowed = connect_to_cluster(
        two_node_cluster.address,
        dashboard_url=two_node_cluster.dashboard_url,
        token_path=two_node_cluster.token_path,
    )
    with pytest.raises(WorkbookError, match="started"):
        kill_raylet(borrowed, worker.name)
    with pytest.raises(WorkbookError, match="No node named"):
        raylet_pid(two_node_cluster, "no-such-node")
    assert is_alive(pid)
