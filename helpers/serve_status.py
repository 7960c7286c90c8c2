"""Serve status made readable: wait for an application, explain why it is not running.

Everything here reads the cluster's dashboard REST API (what ``serve status`` reads), so it
works for applications started by ``serve.run``, ``serve run`` or ``serve deploy`` alike, and
against a remote cluster, without ``ray.init`` in this process.

Usage::

    from helpers.serve_status import wait_until_running, status_table
    wait_until_running("default", cluster=cluster, timeout_s=120)
    status_table(cluster)
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from helpers.auth import activate_in_process, auth_headers
from helpers.errors import (
    ClusterNotRunningError,
    DashboardTimeoutError,
    ServeDeployError,
    ServeTimeoutError,
)
from helpers.waiting import Waited, wait_for

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from helpers.cluster import ClusterHandle

__all__ = [
    "dashboard_timeout_s",
    "serve_client",
    "serve_details",
    "app_statuses",
    "pending_demands",
    "resource_demands",
    "wait_until_running",
    "wait_until_apps_running",
    "wait_until_deleted",
    "status_table",
    "controller_log_lines",
]

_FAILED = {"DEPLOY_FAILED", "UNHEALTHY"}
_T = TypeVar("_T")


def dashboard_timeout_s() -> float:
    """Seconds one call to the dashboard's REST API may take: ``WORKBOOK_DASHBOARD_TIMEOUT_S``,
    default 30. A dashboard that accepts the connection and never answers then raises a
    :class:`DashboardTimeoutError` instead of blocking every ``wait_until_*`` forever."""
    return float(os.environ.get("WORKBOOK_DASHBOARD_TIMEOUT_S", "30"))


@functools.cache
def _timed_client_class() -> type:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    class TimedServeSubmissionClient(ServeSubmissionClient):
        """Ray's Serve REST client, with a timeout on every request (Ray's has none)."""

        def __init__(self, dashboard_url: str, timeout_s: float, headers: dict[str, str]) -> None:
            self.timeout_s = timeout_s
            super().__init__(dashboard_url, headers=headers)

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", self.timeout_s)
            return super()._do_request(method, endpoint, **kwargs)

    return TimedServeSubmissionClient


def _timed_out(err: BaseException) -> bool:
    import requests

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (requests.exceptions.Timeout, TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def serve_client(
    cluster: ClusterHandle, what: str, call: Callable[[Any], _T], *, timeout_s: float | None = None
) -> _T:
    """``call(client)`` with Ray's Serve REST client for ``cluster``, every request bounded
    by ``timeout_s`` (default :func:`dashboard_timeout_s`); a timeout is a
    :class:`DashboardTimeoutError` naming the dashboard and ``what`` was asked.

        serve_client(cluster, "GET /api/serve/applications/", lambda c: c.get_serve_details())
    """
    timeout = dashboard_timeout_s() if timeout_s is None else timeout_s
    # The cluster's token goes in the request's header (Ray's client keeps a header it is
    # given): reading Serve's status never touches this process's environment or Ray's
    # cached token, which a status poll every fraction of a second did before.
    headers = auth_headers(getattr(cluster, "token_path", None))
    try:
        return call(_timed_client_class()(cluster.dashboard_url, timeout, headers))
    except Exception as err:
        if _timed_out(err):
            raise DashboardTimeoutError(cluster.dashboard_url, timeout, what) from err
        raise


def serve_details(cluster: ClusterHandle, *, timeout_s: float | None = None) -> dict[str, Any]:
    """The ServeInstanceDetails JSON (applications, deployments, replicas, proxies).

    Each request to the dashboard may take ``timeout_s`` (default :func:`dashboard_timeout_s`).
    """
    try:
        return serve_client(
            cluster,
            "GET /api/serve/applications/",
            lambda client: client.get_serve_details(),
            timeout_s=timeout_s,
        )
    except DashboardTimeoutError:
        raise
    except Exception as err:
        raise ClusterNotRunningError(
            f"Could not read Serve's status from {cluster.dashboard_url}.",
            "check the cluster is running with its dashboard (cluster.nodes_table()).",
            details=str(err)[-1500:],
        ) from err


def controller_log_lines(
    cluster: ClusterHandle, containing: str, *, wait_s: float = 0.0
) -> list[str]:
    """Lines of the Serve controller's log that contain ``containing``, oldest first.

    The controller logs what it decides (a replica that "failed health check, stopping it",
    an application it deletes) and the log stays: a claim checked here holds however fast
    the machine went through the states, where a status poll can miss a short one. Read
    through Ray's state API, so it works on a remote cluster too. ``wait_s``: read again
    until a line matches, for at most this long (the log reaches the reader a little after
    the decision).
    """
    from ray.util.state import get_log, list_logs

    activate_in_process(cluster.env)
    deadline = time.monotonic() + wait_s
    while True:
        controller = serve_details(cluster).get("controller_info") or {}
        node_id = controller.get("node_id")
        if not node_id:
            raise ClusterNotRunningError(
                "Serve's controller is not running on this cluster.",
                "deploy an application first (serve.run / serve deploy).",
            )
        files = list_logs(
            address=cluster.address, node_id=node_id, glob_filter="serve/controller_*"
        )
        lines = [
            line.rstrip()
            for names in files.values()
            for name in sorted(names)
            for line in "".join(
                get_log(
                    address=cluster.address, node_id=node_id, filename=name, tail=-1, timeout=30
                )
            ).splitlines()
            if containing in line
        ]
        if lines or time.monotonic() >= deadline:
            return lines
        time.sleep(1.0)


def app_statuses(cluster: ClusterHandle) -> dict[str, str]:
    """``{application name: status}`` for every application Serve knows."""
    apps = serve_details(cluster).get("applications") or {}
    return {name: app.get("status", "UNKNOWN") for name, app in apps.items()}


def _deployment_messages(app: dict[str, Any]) -> dict[str, str]:
    messages = {}
    if app.get("message"):
        messages["application"] = app["message"]
    for name, dep in (app.get("deployments") or {}).items():
        if dep.get("message"):
            messages[name] = dep["message"]
    return messages


def resource_demands(cluster: ClusterHandle) -> list[dict[str, Any]]:
    """Resource shapes waiting to be placed, as ``ray status`` lists them, one dict each.

    Keys: ``kind`` ("task/actor" or "placement group"), ``bundles`` (a list of distinct
    resource dicts: one for a task or actor, the bundle shapes of a placement group),
    ``count`` (how many tasks/actors wait; 1 for a placement group) and ``strategy`` (a
    placement group's, else ""). Empty when nothing waits or the autoscaler's status cannot
    be read.
    """
    from ray.autoscaler.v2.sdk import get_cluster_status

    activate_in_process(cluster.env)
    try:
        status = get_cluster_status(cluster.address, timeout=10)
    except Exception:  # noqa: BLE001 - the demand is extra information, never the error
        return []
    demands = status.resource_demands
    out: list[dict[str, Any]] = []
    for demand in demands.ray_task_actor_demand:
        for req in demand.bundles_by_count:
            out.append(
                {
                    "kind": "task/actor",
                    "bundles": [dict(req.bundle)],
                    "count": req.count,
                    "strategy": "",
                }
            )
    for demand in demands.placement_group_demand:
        out.append(
            {
                "kind": "placement group",
                "bundles": [dict(r.bundle) for r in demand.bundles_by_count],
                "count": 1,
                "strategy": demand.strategy or "?",
            }
        )
    return out


def pending_demands(cluster: ClusterHandle) -> list[str]:
    """Resource shapes that tasks, actors or placement groups wait for (as ``ray status``)."""
    out = []
    for demand in resource_demands(cluster):
        if demand["kind"] == "task/actor":
            out.append(f"{demand['bundles'][0]}: {demand['count']}+ pending tasks/actors")
        else:
            bundles = ", ".join(str(b) for b in demand["bundles"])
            out.append(f"placement group [{bundles}] ({demand['strategy']}) pending")
    return out


def wait_until_running(
    app: str = "default",
    *,
    cluster: ClusterHandle,
    timeout_s: float = 120.0,
    poll_s: float = 1.0,
    grace_s: float = 20.0,
) -> dict[str, Any]:
    """Block until application ``app`` is RUNNING and return its details.

    Raises :class:`ServeDeployError` with the replicas' own error messages as soon as the
    application is DEPLOY_FAILED (after ``grace_s``, since Serve retries a failing
    constructor a few times before giving up), and :class:`ServeTimeoutError` with the pending
    resource demand after ``timeout_s``.
    """
    return wait_until_apps_running(
        [app], cluster=cluster, timeout_s=timeout_s, poll_s=poll_s, grace_s=grace_s
    )[app]


def wait_until_apps_running(
    apps: Sequence[str],
    *,
    cluster: ClusterHandle,
    timeout_s: float = 120.0,
    poll_s: float = 1.0,
    grace_s: float = 20.0,
    since: float | None = None,
    watch: Callable[[], None] | None = None,
    not_yet: tuple[type[BaseException], ...] = (),
) -> dict[str, dict[str, Any]]:
    """Block until every application in ``apps`` is RUNNING; return their details by name.

    As :func:`wait_until_running`, for the applications one ``serve run`` or ``serve deploy``
    starts together; the timeout names the first one not RUNNING. ``since``: the
    ``time.monotonic()`` the ``grace_s`` before a DEPLOY_FAILED counts is measured from
    (default: now; a ``serve run`` process: its start). ``watch``: called before each look,
    and what it raises ends the wait at once (:class:`helpers.serve_cli.ServeRun`: its
    process exited). ``not_yet``: errors of a look that only mean "not yet", e.g.
    :class:`ClusterNotRunningError` while ``serve run`` is still starting Serve.
    """
    start = time.monotonic() if since is None else since
    seen: dict[str, dict[str, Any]] = {}

    def all_running() -> dict[str, dict[str, Any]] | None:
        if watch is not None:
            watch()
        seen.clear()  # a look that fails leaves nothing seen: NOT_STARTED, as before any look
        found = serve_details(cluster).get("applications") or {}
        seen.update({name: found.get(name) or {} for name in apps})
        statuses = {name: app.get("status", "NOT_STARTED") for name, app in seen.items()}
        if all(status == "RUNNING" for status in statuses.values()):
            return dict(seen)
        if time.monotonic() - start >= min(grace_s, timeout_s):
            for name, status in statuses.items():
                if status in _FAILED:
                    raise ServeDeployError(name, status, _deployment_messages(seen[name]))
        return None

    def timed_out(waited: Waited) -> ServeTimeoutError:
        first = next(name for name in apps if (seen.get(name) or {}).get("status") != "RUNNING")
        details = seen.get(first) or {}
        status = waited.last_seen() if waited.error else details.get("status", "NOT_STARTED")
        return ServeTimeoutError(
            first, timeout_s, status, pending_demands(cluster), _deployment_messages(details)
        )

    return wait_for(
        all_running,
        timeout_s=timeout_s,
        what=f"{', '.join(apps)} RUNNING",
        poll_s=poll_s,
        not_yet=not_yet,
        on_timeout=timed_out,
    )


def wait_until_deleted(app: str, *, cluster: ClusterHandle, timeout_s: float = 60.0) -> None:
    """Block until ``app`` no longer appears in Serve's status."""

    def still_there(waited: Waited) -> ServeTimeoutError:
        details = serve_details(cluster)["applications"].get(app) or {}
        return ServeTimeoutError(
            app,
            timeout_s,
            details.get("status", "DELETING"),
            messages=_deployment_messages(details),
            waiting_for="deleted",
        )

    wait_for(
        lambda: app not in app_statuses(cluster),
        timeout_s=timeout_s,
        what=f"{app} deleted",
        on_timeout=still_there,
    )


def status_table(cluster: ClusterHandle) -> pd.DataFrame:
    """One row per replica (or per deployment without replicas) of every application."""
    import pandas as pd

    details = serve_details(cluster)
    rows = []
    for app_name, app in (details.get("applications") or {}).items():
        for dep_name, dep in (app.get("deployments") or {}).items():
            base = {
                "application": app_name,
                "app_status": app.get("status"),
                "route_prefix": app.get("route_prefix"),
                "deployment": dep_name,
                "deployment_status": dep.get("status"),
            }
            replicas = dep.get("replicas") or []
            if not replicas:
                rows.append(
                    {**base, "replica": None, "replica_state": None, "node_id": None, "pid": None}
                )
            for rep in replicas:
                rows.append(
                    {
                        **base,
                        "replica": rep.get("replica_id"),
                        "replica_state": rep.get("state"),
                        "node_id": (rep.get("node_id") or "")[:12] or None,
                        "pid": rep.get("pid"),
                    }
                )
    columns = [
        "application",
        "app_status",
        "route_prefix",
        "deployment",
        "deployment_status",
        "replica",
        "replica_state",
        "node_id",
        "pid",
    ]
    return pd.DataFrame.from_records(rows, columns=columns)
