"""Fault injection for Ray Serve, by actor id and process id, and waiting for the recovery.

Each ``kill_*`` function kills exactly one thing of *this* cluster's Serve instance and
returns a :class:`Fault`: what it was (kind, actor name and id, process id, node) and when.
Serve's actors are found through Ray's state API (namespace ``"serve"``) and killed with
``ray.kill`` on their handle; a node's raylet is found among the processes of the node's own
process session and killed by its pid. Nothing is ever looked up or killed by name
across the machine.

* :func:`kill_replica` - a replica actor (``ray.kill(..., no_restart=True)``, as a crash would);
* :func:`fail_health_check` - a replica's ``check_health`` starts failing (it must have a
  ``make_unhealthy`` method, like :mod:`helpers.apps.configurable`'s);
* :func:`kill_proxy` - the HTTP proxy actor of a node (the head's by default, or the one
  holding the most client connections);
* :func:`kill_controller` - the Serve controller (Ray restarts it: ``max_restarts=-1``);
* :func:`kill_raylet` - a worker node's raylet, with SIGKILL (a machine that vanished).

The proxy, the controller and a node are shared by everyone on a cluster: those three
refuse (:class:`~helpers.errors.WorkbookError`) a cluster this process did not start (any
handle but a :class:`~helpers.cluster.LocalCluster`, e.g. a classroom's through
``ray_address``). A replica is one's own application's.

The ``wait_until_*`` functions measure the recovery and return the seconds it took.

Usage::

    from helpers.faults import kill_replica, serve_actors
    fault = kill_replica(cluster, "ft", "SlowClassifier")
    fault.pid, fault.actor_id

Introduced in notebooks/11_fault_tolerance.ipynb.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from helpers import waiting
from helpers.auth import activate_in_process
from helpers.cluster import LocalCluster
from helpers.errors import ClusterNotRunningError, WorkbookError
from helpers.processes import session_members
from helpers.serve_status import serve_details

if TYPE_CHECKING:  # pragma: no cover
    from helpers.cluster import ClusterHandle, LocalCluster

__all__ = [
    "SERVE_NAMESPACE",
    "Fault",
    "serve_actors",
    "kill_replica",
    "fail_health_check",
    "proxy_connections",
    "kill_proxy",
    "kill_controller",
    "kill_raylet",
    "refuse_shared_cluster",
    "raylet_pid",
    "watch_exits",
    "wait_for",
    "wait_until_proxies_healthy",
    "wait_until_proxy_replaced",
    "wait_until_controller_restarted",
    "wait_until_node_processes_exit",
    "wait_until_node_dead",
]

#: Ray namespace of Serve's controller, proxies and replicas.
SERVE_NAMESPACE = "serve"


@dataclass(frozen=True)
class Fault:
    """One injected fault: what was hit and when (``t`` is ``time.time()``)."""

    kind: str  # "replica", "health check", "proxy", "controller", "raylet"
    target: str  # actor name, or node name for a raylet
    pid: int | None
    actor_id: str | None
    node_id: str | None
    t: float
    how: str  # what was done, in words
    in_flight: int | None = None  # requests (a replica) or client connections (a proxy) it held

    def as_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["node_id"] = (self.node_id or "")[:12] or None
        return row


def serve_actors(cluster: ClusterHandle, *, class_prefix: str = "") -> list[dict[str, Any]]:
    """Alive actors in Serve's namespace (controller, proxies, replicas), from the state API.

    Each is ``{"class_name", "name", "actor_id", "pid", "node_id", "num_restarts"}``;
    ``class_prefix`` keeps only classes starting with it (``"ServeReplica"``, ``"ProxyActor"``,
    ``"ServeController"``).
    """
    from ray.util.state import list_actors

    activate_in_process(cluster.env)
    try:
        actors = list_actors(
            address=cluster.dashboard_url,
            filters=[("state", "=", "ALIVE")],
            detail=True,
            limit=10_000,
            timeout=30,
        )
    except Exception as err:
        raise ClusterNotRunningError(
            f"Could not list the actors of the cluster at {cluster.dashboard_url}.",
            "check the cluster is running and the dashboard address is right.",
            details=str(err)[-1500:],
        ) from err
    return [
        {
            "class_name": a.class_name,
            "name": a.name,
            "actor_id": a.actor_id,
            "pid": a.pid,
            "node_id": a.node_id,
            "num_restarts": int(a.num_restarts or 0),
        }
        for a in actors
        if a.ray_namespace == SERVE_NAMESPACE and a.class_name.startswith(class_prefix)
    ]


def _kill_actor(
    cluster: ClusterHandle,
    actor: dict[str, Any],
    kind: str,
    *,
    no_restart: bool,
    in_flight: int | None = None,
    handle: Any = None,
) -> Fault:
    import ray

    cluster.connect()
    if handle is None:
        handle = ray.get_actor(actor["name"], namespace=SERVE_NAMESPACE)
    t = time.time()
    ray.kill(handle, no_restart=no_restart)
    return Fault(
        kind,
        actor["name"],
        actor["pid"],
        actor["actor_id"],
        actor["node_id"],
        t,
        f"ray.kill(actor, no_restart={no_restart})",
        in_flight,
    )


def _ongoing_requests(handles: list[Any]) -> list[int]:
    """Requests each replica works on now (its actor's own count; -1 if it cannot say),
    asked of all of them at once."""
    import ray

    refs = [h.get_num_ongoing_requests.remote() for h in handles]
    counts = []
    for ref in refs:
        try:
            counts.append(int(ray.get(ref, timeout=5)))
        except Exception:  # noqa: BLE001 - a replica that cannot answer is not "busy"
            counts.append(-1)
    return counts


def _running_replicas(cluster: ClusterHandle, app: str, deployment: str) -> list[dict[str, Any]]:
    details = (serve_details(cluster).get("applications") or {}).get(app) or {}
    dep = (details.get("deployments") or {}).get(deployment) or {}
    return [r for r in dep.get("replicas") or [] if r.get("state") == "RUNNING"]


def kill_replica(
    cluster: ClusterHandle,
    app: str,
    deployment: str,
    *,
    node_id: str | None = None,
    pid: int | None = None,
    busy: bool = False,
    busy_timeout_s: float = 10.0,
) -> Fault:
    """Kill one RUNNING replica of ``app``/``deployment`` (on ``node_id``, or with ``pid``).

    The replica's actor is found in the state API and killed with ``ray.kill(no_restart=True)``:
    to Serve it looks like a crash (its process is gone, requests in flight on it fail).
    ``busy=True`` waits (up to ``busy_timeout_s``) for a candidate that is working on at
    least one request, as a real crash under load would find it; ``Fault.in_flight`` says how
    many (read from the replica actor's ``get_num_ongoing_requests``, Serve's own count).
    """
    replicas = _running_replicas(cluster, app, deployment)
    candidates = [
        r
        for r in replicas
        if (node_id is None or r.get("node_id") == node_id) and (pid is None or r.get("pid") == pid)
    ]
    if not candidates:
        raise WorkbookError(
            f"No RUNNING replica of {app}/{deployment} matches node_id={node_id} pid={pid}.",
            "check the deployment is running (helpers.serve_status.status_table(cluster)) and "
            "the node id or pid you gave.",
            details=str([(r.get("pid"), r.get("node_id"), r.get("state")) for r in replicas]),
        )
    ids = {r.get("actor_id") for r in candidates}
    actors = [a for a in serve_actors(cluster, class_prefix="ServeReplica") if a["actor_id"] in ids]
    if not actors:
        raise WorkbookError(
            f"Replicas {sorted(r.get('pid') or 0 for r in candidates)} are in Serve's status but not "
            "alive in Ray's state API.",
            "they may be stopping already; wait until the deployment is HEALTHY and try again.",
        )
    import ray

    cluster.connect()
    # The handles are looked up once: between a count that says "busy" and the kill, no
    # other round trip to the GCS, so the requests counted are still running when it lands.
    handles = [ray.get_actor(a["name"], namespace=SERVE_NAMESPACE) for a in actors]

    def busiest() -> tuple[int, int] | None:
        counts = _ongoing_requests(handles)
        in_flight = max(counts)
        return (counts.index(in_flight), in_flight) if not busy or in_flight > 0 else None

    # Polled fast: under light load a replica is busy only for moments.
    i, in_flight = waiting.wait_for(
        busiest,
        timeout_s=busy_timeout_s,
        poll_s=0.02,
        what=f"a replica of {app}/{deployment} with a request in flight",
        fix="send load while killing (RequestLoop), or pass busy=False.",
    )
    actor, handle = actors[i], handles[i]
    return _kill_actor(
        cluster,
        actor,
        "replica",
        no_restart=True,
        in_flight=in_flight if in_flight >= 0 else None,
        handle=handle,
    )


def _call_without_event_loop(fn: Callable[[], Any]) -> Any:
    """Run a blocking call in a fresh thread (Serve refuses ``.result()`` on a thread that
    runs an asyncio loop, as a notebook cell's does)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def fail_health_check(
    cluster: ClusterHandle,
    app: str,
    deployment: str,
    *,
    method: str = "make_unhealthy",
    timeout_s: float = 30.0,
) -> Fault:
    """Make one replica's health check fail by calling its ``method`` through a handle.

    The replica keeps answering requests; Serve notices the failing ``check_health`` after
    ``REPLICA_HEALTH_CHECK_UNHEALTHY_THRESHOLD`` (3) periods, stops it gracefully and starts
    a new one. Which replica is hit is Serve's choice (the handle routes the call).
    """
    from ray import serve

    cluster.connect()
    handle = serve.get_deployment_handle(deployment, app)
    t = time.time()
    identity = _call_without_event_loop(
        lambda: getattr(handle, method).remote().result(timeout_s=timeout_s)
    )
    actor_id = next(
        (
            r.get("actor_id")
            for r in _running_replicas(cluster, app, deployment)
            if r.get("pid") == identity.get("pid")
        ),
        None,
    )
    return Fault(
        "health check",
        f"{app}/{deployment} replica {identity.get('replica')}",
        identity.get("pid"),
        actor_id,
        identity.get("node_id"),
        t,
        f"handle.{method}(): check_health raises from now on",
    )


def proxy_connections(cluster: ClusterHandle, port: int) -> dict[str, int]:
    """``{node_id: open client connections}`` of each alive Serve proxy on HTTP ``port``.

    Read from the proxies' processes (psutil), so only for proxies running on this machine
    (a local cluster); a proxy whose process is not here counts 0.
    """
    import psutil

    counts = {}
    for proxy in serve_actors(cluster, class_prefix="ProxyActor"):
        try:
            conns = psutil.Process(proxy["pid"]).net_connections(kind="tcp")
        except (psutil.Error, TypeError):
            conns = []
        counts[proxy["node_id"]] = sum(
            1
            for c in conns
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
        )
    return counts


def refuse_shared_cluster(cluster: ClusterHandle, what: str) -> LocalCluster:
    """Raise :class:`WorkbookError` unless this process started ``cluster`` (a
    :class:`~helpers.cluster.LocalCluster`): ``what`` would hit everyone who shares it.
    Returns the cluster, as the LocalCluster it is."""

    if not isinstance(cluster, LocalCluster):
        raise WorkbookError(
            f"Refusing to {what}: {cluster!r} was not started by this notebook.",
            "it is shared: everyone's requests and applications depend on it. Run the fault "
            "on a cluster of your own (an empty ray_address), or ask the cluster's operator.",
        )
    return cluster


def kill_proxy(
    cluster: ClusterHandle, *, node_id: str | None = None, busiest_on_port: int | None = None
) -> Fault:
    """Kill the HTTP proxy actor on ``node_id`` (default: the head node's).

    ``busiest_on_port``: instead, the proxy holding the most client connections on that
    HTTP port right now (see :func:`proxy_connections`; ``Fault.in_flight`` is that count).
    Only on a cluster this process started (:func:`refuse_shared_cluster`).
    """
    refuse_shared_cluster(cluster, "kill a Serve proxy")
    held = None
    if busiest_on_port is not None:
        counts = proxy_connections(cluster, busiest_on_port)
        if counts:
            node_id = max(counts, key=lambda k: counts[k])
            held = counts[node_id]
    if node_id is None:
        node_id = next((n["node_id"] for n in cluster.nodes() if n["is_head"]), None)
    proxies = [
        a
        for a in serve_actors(cluster, class_prefix="ProxyActor")
        if a["node_id"] == node_id and "fallback" not in (a["name"] or "")
    ]
    if not proxies:
        raise WorkbookError(
            f"No Serve proxy is alive on node {node_id}.",
            "proxies run on the head node and on nodes with replicas; "
            "see serve_details(cluster)['proxies'].",
        )
    return _kill_actor(cluster, proxies[0], "proxy", no_restart=True, in_flight=held)


def wait_until_proxies_healthy(
    cluster: ClusterHandle, count: int, *, timeout_s: float = 120.0
) -> float:
    """Wait until Serve reports ``count`` proxies, all HEALTHY (a new node's proxy starts a
    little after its first replica). Returns the seconds it took."""

    def check() -> Any:
        statuses = [p.get("status") for p in (serve_details(cluster).get("proxies") or {}).values()]
        return len(statuses) == count and all(s == "HEALTHY" for s in statuses)

    return wait_for(check, timeout_s=timeout_s, what=f"{count} healthy HTTP proxies")


def kill_controller(cluster: ClusterHandle) -> Fault:
    """Kill the Serve controller. Ray restarts it (it is created with ``max_restarts=-1``)
    and it recovers its state from the GCS; replicas and proxies are not touched.
    Only on a cluster this process started (:func:`refuse_shared_cluster`)."""
    refuse_shared_cluster(cluster, "kill the Serve controller")
    controllers = serve_actors(cluster, class_prefix="ServeController")
    if len(controllers) != 1:
        raise WorkbookError(
            f"Expected one Serve controller, found {len(controllers)}.",
            "start Serve first (serve.start or serve.run).",
        )
    return _kill_actor(cluster, controllers[0], "controller", no_restart=False)


def raylet_pid(cluster: LocalCluster, node_name: str) -> int:
    """Process id of the raylet of node ``node_name``, found in that node's process session."""
    node = next((n for n in cluster.nodes_started if n.name == node_name), None)
    if node is None:
        raise WorkbookError(
            f"No node named {node_name!r} in this cluster.",
            "see cluster.nodes_started for the nodes this notebook started.",
        )
    raylets = [p for p in session_members(node.pid) if p.name() == "raylet"]
    if len(raylets) != 1:
        raise WorkbookError(
            f"Found {len(raylets)} raylet processes in the session of node {node_name!r}.",
            "the node may have stopped already; see cluster.nodes_table().",
        )
    return raylets[0].pid


def kill_raylet(cluster: ClusterHandle, node_name: str) -> Fault:
    """SIGKILL the raylet of worker node ``node_name``: the node fails as a machine would.

    Its worker processes (replicas, its proxy) lose their raylet and exit; the node's
    ``ray start --block`` process notices and stops the node's other processes. The head
    node is refused: without GCS fault tolerance its loss ends the whole cluster.
    Only for a cluster this process started (:class:`~helpers.cluster.LocalCluster`).
    """
    local = refuse_shared_cluster(cluster, "kill a node's raylet")
    node = next((n for n in local.nodes_started if n.name == node_name), None)
    if node is not None and node.role == "head":
        raise WorkbookError(
            "Refusing to kill the head node's raylet.",
            "the head runs the GCS: without GCS fault tolerance (an external Redis) its loss "
            "ends the cluster. Kill a worker node instead.",
        )
    pid = raylet_pid(local, node_name)
    node_id = next((n["node_id"] for n in cluster.nodes() if n["name"] == node_name), None)
    t = time.time()
    os.kill(pid, signal.SIGKILL)
    return Fault("raylet", node_name, pid, None, node_id, t, "SIGKILL to the raylet's pid")


# -- recovery ---------------------------------------------------------------------------------


def watch_exits(
    pids: list[int] | set[int], *, poll_s: float = 0.05, timeout_s: float = 600.0
) -> dict[int, float]:
    """Note when each of ``pids`` (processes on this machine) exits, in a background thread.

    Returns a dict that fills in as they go: ``{pid: time.time() of its exit}``. For
    questions like "how long did the replica live on after its raylet was killed?".
    """
    import psutil

    exits: dict[int, float] = {}
    waiting = set(pids)

    def run() -> None:
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline:
            for pid in list(waiting):
                try:
                    gone = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
                except psutil.NoSuchProcess:
                    gone = True
                if gone:
                    exits[pid] = time.time()
                    waiting.discard(pid)
            time.sleep(poll_s)

    threading.Thread(target=run, daemon=True, name="watch-exits").start()
    return exits


def wait_for(
    check: Callable[[], Any],
    *,
    timeout_s: float,
    what: str,
    poll_s: float = 0.25,
    since: float | None = None,
    report: Callable[[], Any] | None = None,
) -> float:
    """Poll ``check()`` until it returns something true; the seconds since ``since``
    (a ``time.time()``, default: now), for measuring a recovery from its fault.

    :func:`helpers.waiting.wait_for` with what recovery needs: a check that raises
    ClusterNotRunningError counts as not yet (Serve's status cannot be read while the
    controller restarts), and the timeout (a :class:`~helpers.errors.WorkbookTimeoutError`)
    names ``what`` and the last value. ``report``: called once on timeout, its value goes
    into the error's details, for a check whose own last value (often just ``False``) does
    not say what the cluster looked like."""
    start = time.time() if since is None else since
    waiting.wait_for(
        check,
        timeout_s=timeout_s,
        what=what,
        poll_s=poll_s,
        not_yet=(ClusterNotRunningError,),
        report=report,
        fix="look at serve status and the controller log; on a busy machine raise the timeout.",
    )
    return round(time.time() - start, 2)


def wait_until_proxy_replaced(
    cluster: ClusterHandle, fault: Fault, *, timeout_s: float = 120.0
) -> float:
    """Seconds from ``fault`` until a new proxy (another actor id) is HEALTHY on its node."""

    def check() -> Any:
        proxy = (serve_details(cluster).get("proxies") or {}).get(fault.node_id) or {}
        return proxy.get("status") == "HEALTHY" and proxy.get("actor_id") not in (
            None,
            fault.actor_id,
        )

    return wait_for(check, timeout_s=timeout_s, what="a new HTTP proxy", since=fault.t)


def wait_until_controller_restarted(
    cluster: ClusterHandle, fault: Fault, *, timeout_s: float = 120.0
) -> float:
    """Seconds from ``fault`` until the controller runs again (a new process) and answers."""

    def check() -> Any:
        alive = serve_actors(cluster, class_prefix="ServeController")
        if not alive or alive[0]["pid"] == fault.pid:
            return False
        serve_details(cluster)  # raises (not yet) while the new controller cannot answer
        return alive[0]["pid"]

    return wait_for(
        check, timeout_s=timeout_s, what="the Serve controller's restart", since=fault.t
    )


def wait_until_node_processes_exit(
    cluster: LocalCluster, fault: Fault, *, timeout_s: float = 60.0
) -> float:
    """Seconds from a :func:`kill_raylet` ``fault`` until every process of that node's
    session has exited by itself (its workers notice the raylet is gone; its
    ``ray start --block`` stops the rest)."""
    node = next((n for n in cluster.nodes_started if n.name == fault.target), None)
    if node is None:
        return 0.0
    return wait_for(
        lambda: not session_members(node.pid),
        timeout_s=timeout_s,
        what=f"the processes of node {fault.target} exiting",
        since=fault.t,
        poll_s=0.1,
    )


def wait_until_node_dead(
    cluster: ClusterHandle, fault: Fault, *, timeout_s: float = 120.0
) -> float:
    """Seconds from ``fault`` until Ray's GCS reports the node of ``fault`` DEAD."""

    def gone() -> bool:
        return all(n["node_id"] != fault.node_id for n in cluster.nodes())

    return wait_for(
        gone,
        timeout_s=timeout_s,
        what=f"node {fault.target} marked dead",
        since=fault.t,
        poll_s=0.5,
    )
