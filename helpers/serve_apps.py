"""Serve applications from Python: deploy one and wait for it, wait after ``serve deploy``,
delete one, and the URL of Serve's HTTP proxy. Nothing here is about LLMs: the lessons deploy
echo services, classifiers and LLM applications with the same calls.

* :func:`deploy_app` - start Serve on a chosen HTTP port, deploy an application, and wait for
  it with a timeout that reports the pending resource demand (``serve.run`` waits forever);
  the result is a :class:`DeployResult` (name, URL, seconds);
* :func:`wait_until_updated` - after ``serve deploy``: wait until Serve took the new config,
  then until the application is RUNNING;
* :func:`delete_app` - delete one application and wait until Serve has removed it;
* :func:`serve_http_url` - ``http://host:port`` of the Serve HTTP proxy.

Usage::

    from helpers.serve_apps import delete_app, deploy_app
    result = deploy_app(Echo.bind(), cluster=cluster, name="echo", route_prefix="/echo")
    result.url                           # http://127.0.0.1:PORT/echo
    delete_app("echo", cluster=cluster)

Introduced in notebooks/04a_llm_config_and_openai_api.ipynb (``wait_until_updated``) and
08_resources_and_placement.ipynb (``deploy_app``, ``delete_app``). The names are also
importable from :mod:`helpers.llm`, where they were first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from helpers.errors import ServeTimeoutError, WorkbookError
from helpers.ports import free_port
from helpers.serve_status import app_statuses, serve_details, wait_until_deleted, wait_until_running
from helpers.waiting import wait_for

if TYPE_CHECKING:  # pragma: no cover
    from helpers.cluster import ClusterHandle

__all__ = ["serve_http_url", "DeployResult", "deploy_app", "wait_until_updated", "delete_app"]


def serve_http_url(cluster: ClusterHandle) -> str:
    """``http://host:port`` of the Serve HTTP proxy on ``cluster`` (Serve must be running)."""

    options = serve_details(cluster).get("http_options") or {}
    host = options.get("host") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = cluster.host
    port = options.get("port") or 8000
    return f"http://{host}:{port}"


@dataclass
class DeployResult:
    """An application that reached RUNNING: its name, URL and how long that took."""

    name: str
    url: str  # base URL including the route prefix, no trailing slash
    seconds: float
    details: dict[str, Any] = field(repr=False, default_factory=dict)


def _check_connected_to(cluster: ClusterHandle) -> None:
    """Refuse to deploy when this process's Ray driver belongs to another cluster.

    ``build_openai_app`` reads the driver's runtime context, and Ray connects a process that
    was not connected yet to a *new local* Ray instance: the app would then be deployed there.
    Connect first (``cluster.connect()``), then build the app.
    """
    import ray

    if not ray.is_initialized():
        cluster.connect()
        return
    connected = ray.get_runtime_context().gcs_address or ""
    if not connected.endswith(":" + cluster.address.rsplit(":", 1)[-1]):
        raise WorkbookError(
            f"This process is connected to the Ray cluster at {connected}, not to "
            f"{cluster.address}.",
            "call cluster.connect() before building the application (build_openai_app "
            "reads the Ray context and would otherwise start a private local Ray), then "
            "restart the kernel or ray.shutdown() and try again.",
        )


def _start_serve(cluster: ClusterHandle, http_host: str, http_port: int | None) -> None:
    """Start Serve with our HTTP options unless Serve already runs (then its port stays)."""
    from ray import serve

    if (serve_details(cluster).get("controller_info") or {}).get("actor_id"):
        return
    serve.start(http_options={"host": http_host, "port": http_port or free_port()})


def deploy_app(
    app: Any,
    *,
    cluster: ClusterHandle,
    name: str,
    route_prefix: str | None = "/",
    timeout_s: float = 300.0,
    http_port: int | None = None,
    http_host: str = "127.0.0.1",
    wait: bool = True,
) -> DeployResult:
    """Deploy a Serve ``Application`` and wait until it is RUNNING (or fail with the reason).

    Serve is started first if it does not run yet, on ``http_host``:``http_port`` (default: a
    free port on 127.0.0.1); a Serve that already runs keeps its port. ``serve.run`` would wait
    without a time limit; this deploys the same way
    without waiting, then waits with :func:`helpers.serve_status.wait_until_running`, which
    raises :class:`~helpers.errors.ServeTimeoutError` with the resource demand nobody can
    place, or :class:`~helpers.errors.ServeDeployError` with the replica's own error.
    """
    from ray import serve

    _check_connected_to(cluster)
    _start_serve(cluster, http_host, http_port)
    started = time.monotonic()
    serve._run(app, _blocking=False, name=name, route_prefix=route_prefix)
    details: dict[str, Any] = {}
    if wait:
        details = wait_until_running(name, cluster=cluster, timeout_s=timeout_s)
    prefix = (route_prefix or "").rstrip("/")
    return DeployResult(
        name, serve_http_url(cluster) + prefix, round(time.monotonic() - started, 1), details
    )


def wait_until_updated(
    app: str, *, cluster: ClusterHandle, deployed_after: float, timeout_s: float = 300.0
) -> dict[str, Any]:
    """After ``serve deploy``: wait until Serve took the new config of ``app``, then until
    it is RUNNING (or raise :class:`~helpers.errors.ServeDeployError` at once if it failed).

    ``deployed_after`` is ``time.time()`` taken before the deploy; an application that was
    RUNNING before counts as updated only once Serve records a later deploy time.
    """

    started = time.monotonic()
    seen: dict[str, Any] = {}

    def took_the_new_config() -> bool:
        seen["app"] = (serve_details(cluster).get("applications") or {}).get(app) or {}
        return (seen["app"].get("last_deployed_time_s") or 0) >= deployed_after - 1.0

    wait_for(
        took_the_new_config,
        timeout_s=timeout_s,
        what=f"Serve to take {app}'s new config",
        on_timeout=lambda waited: ServeTimeoutError(
            app, timeout_s, seen["app"].get("status", "NOT_STARTED")
        ),
    )
    remaining = max(1.0, timeout_s - (time.monotonic() - started))
    return wait_until_running(app, cluster=cluster, timeout_s=remaining, grace_s=0)


def delete_app(name: str, *, cluster: ClusterHandle, timeout_s: float = 120.0) -> None:
    """Delete application ``name`` (if it exists) and wait until Serve has removed it.

    Ray 2.60's ``serve`` CLI has no ``delete`` command: this uses ``serve.delete`` (a config
    deployed with ``serve deploy`` can also drop an application by not listing it).
    """
    from ray import serve

    if name not in app_statuses(cluster):
        return
    _check_connected_to(cluster)
    serve.delete(name, _blocking=False)
    wait_until_deleted(name, cluster=cluster, timeout_s=timeout_s)
