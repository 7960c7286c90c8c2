"""A diagnosis of a Ray cluster and its Serve applications: one call, a list of findings.

``diagnose(cluster)`` looks at the cluster from the outside, the way a person with a shell
would (the dashboard's REST API, Ray's state API, the autoscaler's status, the nodes'
Prometheus endpoints, this machine's ports), and reports every problem it recognizes as a
:class:`Finding`: how bad it is, what it saw, the likely cause, the fix, and where to read
more (the replica's log file, ``ray logs actor --id ...``). It never changes anything.

What it recognizes (``Finding.kind``):

====================  ==========================================================================
``no-cluster``        nothing answers at the cluster's address (a ``serve deploy`` would fail)
``auth-missing``      the cluster wants its token and this client has none (``401``)
``auth-rejected``     this client's token is not the cluster's (``403``)
``auth-disabled``     token authentication is off: whoever reaches the dashboard can run code
``dashboard-exposed`` the dashboard (Jobs API) listens on every interface, not 127.0.0.1
``node-dead``         a node of the cluster died
``infeasible-demand`` a task, actor or replica asks for resources no node has (a GPU on a
                      CPU cluster): it waits forever
``pending-demand``    a demand that fits a node but waits for resources to free up
``serve-not-running`` no Serve controller (informational)
``proxy-unhealthy``   a Serve HTTP proxy is not HEALTHY
``port-conflict``     Serve's HTTP port is held by a process that is not Serve
``app-failed``        an application is DEPLOY_FAILED or UNHEALTHY: the replica's own error,
                      what it means (the table ``helpers.serve_cli.SERVE_ERRORS``) and its log
``app-waiting``       an application has been DEPLOYING with replicas that cannot start
``oom-killed``        Ray's memory monitor killed replicas (death cause: out of memory)
``replica-crashed``   replica processes died unexpectedly (a crash, a signal)
``memory-pressure``   a node's memory use is close to the memory monitor's threshold
``backpressure``      requests queue because every replica is at ``max_ongoing_requests``
``config-invalid``    a Serve config file fails the schema or has keys Serve would ignore
``import-path``       a config's ``import_path`` module cannot be imported here
====================  ==========================================================================

Usage::

    from helpers.doctor import diagnose
    report = diagnose(cluster)            # prints the findings, returns a Diagnosis
    report.kinds                          # {"app-failed", "infeasible-demand"}

or from a shell (exit code 1 when there is an error-level finding)::

    python -m helpers.doctor --address 127.0.0.1:6379 --dashboard-url http://127.0.0.1:8265 \\
        --token-path ~/.ray/auth_token [--config serve.yaml] [--http-port 8000]

Introduced in notebooks/10a_cluster_and_config_failures.ipynb (and used in 10b_runtime_failures.ipynb).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import socket
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from helpers.auth import activate_in_process, auth_headers, restore_in_process
from helpers.cluster import ExistingCluster, connect_to_cluster
from helpers.errors import WorkbookError
from helpers.llm import engine_root_cause
from helpers.metrics import scrape_cluster
from helpers.ports import port_owner
from helpers.serve_cli import (
    ServeConfigError,
    explain_serve_error,
    load_config,
    validate_serve_config,
)
from helpers.serve_status import resource_demands, serve_details

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from helpers.cluster import ClusterHandle

__all__ = [
    "SEVERITIES",
    "Finding",
    "Diagnosis",
    "diagnose",
    "replica_deaths",
    "node_memory",
    "main",
]

#: Finding severities, worst first.
SEVERITIES = ("error", "warning", "info")

#: Death reasons of an actor that someone asked for (a scale-down, a redeploy, serve.delete).
_INTENDED_DEATHS = {"RAY_KILL", "OUT_OF_SCOPE", "REF_DELETED"}


@dataclass(frozen=True)
class Finding:
    """One problem (or fact worth knowing) the diagnosis found."""

    severity: str  # "error", "warning" or "info"
    kind: str  # a stable id, e.g. "app-failed" (see the module docstring)
    what: str  # what was seen
    cause: str  # the likely cause
    fix: str  # what to do
    details: str = ""  # evidence: error lines, log paths, commands

    def __str__(self) -> str:
        text = (
            f"[{self.severity.upper()}] {self.kind}: {self.what}\n"
            f"  cause: {self.cause}\n  fix:   {self.fix}"
        )
        if self.details:  # long lines are wrapped, never cut: the fix is often at the end
            text += "\n" + "\n".join(
                textwrap.fill(
                    line,
                    width=100,
                    initial_indent="    ",
                    subsequent_indent="      ",
                    break_long_words=False,
                    break_on_hyphens=False,
                )
                for line in self.details.splitlines()
            )
        return text


@dataclass
class Diagnosis:
    """All findings of one :func:`diagnose` call, worst first."""

    target: str
    findings: list[Finding] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # the checks that ran
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no finding is an error."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def of_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def table(self) -> pd.DataFrame:
        """The findings as a DataFrame (severity, kind, what, cause, fix)."""
        import pandas as pd

        columns = ["severity", "kind", "what", "cause", "fix"]
        return pd.DataFrame(
            [{c: getattr(f, c) for c in columns} for f in self.findings], columns=columns
        )

    def render(self) -> str:
        counts = {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}
        head = (
            f"Diagnosis of {self.target}: {counts['error']} error(s), "
            f"{counts['warning']} warning(s), {counts['info']} note(s) "
            f"({len(self.checks)} checks, {self.seconds:.1f} s)"
        )
        if not self.findings:
            return head + "\nNo problem found."
        return head + "\n\n" + "\n\n".join(map(str, self.findings))

    def __str__(self) -> str:
        return self.render()

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "checks": self.checks,
            "seconds": self.seconds,
            "findings": [asdict(f) for f in self.findings],
        }


# --- the checks ------------------------------------------------------------------------------


@dataclass
class _Context:
    cluster: ClusterHandle
    config: Any = None
    http_port: int | None = None
    memory_warn_fraction: float = 0.85
    timeout_s: float = 10.0
    details: dict[str, Any] | None = None  # Serve's status, read once
    stop: bool = False  # a check found that the rest cannot run


def _get(ctx: _Context, path: str, *, auth: bool = True) -> requests.Response:
    headers = auth_headers(ctx.cluster.token_path) if auth else {}
    return requests.get(
        f"{ctx.cluster.dashboard_url}{path}", headers=headers, timeout=ctx.timeout_s
    )


def _check_reachable(ctx: _Context) -> list[Finding]:
    host, _, port = ctx.cluster.address.rpartition(":")
    problems = []
    try:
        with socket.create_connection((host, int(port)), timeout=ctx.timeout_s):
            pass
    except (OSError, ValueError) as err:
        problems.append(f"GCS {ctx.cluster.address}: {getattr(err, 'strerror', None) or err}")
    try:
        _get(ctx, "/api/authentication_mode", auth=False)
    except requests.RequestException as err:
        problems.append(f"dashboard {ctx.cluster.dashboard_url}: {type(err).__name__}")
    if not problems:
        return []
    ctx.stop = True
    return [
        Finding(
            "error",
            "no-cluster",
            f"Nothing answers at {ctx.cluster.address} / {ctx.cluster.dashboard_url}.",
            "no Ray cluster runs there: it was never started, was stopped or crashed, or the "
            "address is wrong. Serve commands (`serve deploy`, `serve status`) only talk to a "
            "running cluster; they never start one.",
            "start a cluster (`ray start --head`, or start_local_cluster()) and use its addresses: "
            "the GCS (host:6379) for `ray`, the dashboard (http://host:8265) for `serve`.",
            "\n".join(problems),
        )
    ]


def _check_auth(ctx: _Context) -> list[Finding]:
    findings = []
    try:
        mode = _get(ctx, "/api/authentication_mode", auth=False).json().get("authentication_mode")
    except (requests.RequestException, ValueError):
        mode = None
    probe = _get(ctx, "/api/serve/applications/")
    if probe.status_code in (401, 403):
        ctx.stop = True
        missing = probe.status_code == 401
        return [
            Finding(
                "error",
                "auth-missing" if missing else "auth-rejected",
                f"The dashboard refused this client: HTTP {probe.status_code} "
                f"({probe.text.strip()[:80]}).",
                "the cluster uses token authentication and this client "
                + ("sent no token." if missing else "sent a token that is not the cluster's."),
                "give clients the cluster's token: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH "
                "(or RAY_AUTH_TOKEN) for the CLI and ray.init; cluster.env has both. Copy the "
                "token from the head node (~/.ray/auth_token) through a private channel.",
                f"token file used: {ctx.cluster.token_path or 'none'}",
            )
        ]
    if mode == "disabled":
        findings.append(
            Finding(
                "warning",
                "auth-disabled",
                "Token authentication is disabled on this cluster.",
                "anyone who can reach the dashboard port can submit a Ray Job, which runs any "
                "command on the cluster (this is how open Ray clusters were taken over, "
                "CVE-2023-48022).",
                "start the cluster with token authentication (Ray's default since 2.59: "
                "RAY_AUTH_MODE=token) and keep the dashboard on 127.0.0.1 or a private network.",
            )
        )
    dash_host, _, dash_port = ctx.cluster.dashboard_url.split("//")[-1].rpartition(":")
    if dash_host in ("127.0.0.1", "localhost") and dash_port.isdigit():
        import psutil

        try:
            addresses = {
                c.laddr.ip
                for c in psutil.net_connections(kind="inet")
                if c.laddr and c.laddr.port == int(dash_port) and c.status == psutil.CONN_LISTEN
            }
        except psutil.Error:  # pragma: no cover - no permission to list sockets
            addresses = set()
        if addresses & {"0.0.0.0", "::"}:
            findings.append(
                Finding(
                    "warning",
                    "dashboard-exposed",
                    f"The dashboard listens on every network interface (port {dash_port}).",
                    "`ray start --dashboard-host=0.0.0.0`: the dashboard and its Jobs API are "
                    "reachable from other machines.",
                    "use --dashboard-host=127.0.0.1 and reach it through an SSH tunnel "
                    "(ssh -L 8265:127.0.0.1:8265 head), or a firewall that admits only your "
                    "network; keep token authentication on.",
                )
            )
    return findings


def _check_nodes(ctx: _Context) -> list[Finding]:
    from ray.util.state import list_nodes

    activate_in_process(ctx.cluster.env)
    nodes = list_nodes(address=ctx.cluster.dashboard_url, detail=True, timeout=ctx.timeout_s)
    dead = [n for n in nodes if n.state != "ALIVE"]
    if not dead:
        return []
    lines = [
        f"{n.node_name or n.node_id[:12]} ({n.node_ip}): {n.state_message or 'no message'}"
        for n in dead
    ]
    return [
        Finding(
            "warning",
            "node-dead",
            f"{len(dead)} node(s) of the cluster are dead.",
            "the node's raylet stopped: the machine went away, the process was killed, or it "
            "ran out of memory. Replicas on it were lost and Serve restarts them elsewhere if "
            "it can.",
            "look at the node's raylet.out and dmesg on that machine; add a node back with "
            "`ray start --address=HEAD:PORT`.",
            "\n".join(lines),
        )
    ]


def _fits(bundle: Mapping[str, float], nodes: list[dict[str, Any]]) -> bool:
    return any(
        all(node["resources"].get(k, 0.0) >= v for k, v in bundle.items() if v > 0)
        for node in nodes
    )


def _check_demands(ctx: _Context) -> list[Finding]:
    demands = resource_demands(ctx.cluster)
    if not demands:
        return []
    nodes = ctx.cluster.nodes()
    infeasible: list[Any] = []
    pending: list[Any] = []
    for demand in demands:
        text = (
            f"{demand['kind']}: {demand['bundles']}"
            + (f" x{demand['count']}" if demand["count"] > 1 else "")
            + (f" ({demand['strategy']})" if demand["strategy"] else "")
        )
        bundles = demand["bundles"]
        if demand["strategy"] in ("STRICT_PACK",):
            merged: dict[str, float] = {}
            for bundle in bundles:
                for k, v in bundle.items():
                    merged[k] = merged.get(k, 0.0) + v
            bundles = [merged]
        (pending if all(_fits(b, nodes) for b in bundles) else infeasible).append((text, bundles))
    findings = []
    if infeasible:
        wanted = sorted({k for _, bundles in infeasible for b in bundles for k in b})
        has = {k: max(n["resources"].get(k, 0.0) for n in nodes) for k in wanted}
        gpu = any("GPU" in b for _, bundles in infeasible for b in bundles) and not has.get("GPU")
        cause = (
            "it asks for a GPU and no node has one."
            if gpu
            else "no single node has that much of a resource (largest per node: "
            + ", ".join(f"{k}={v:g}" for k, v in has.items())
            + ")."
        )
        fix = (
            "on a CPU cluster drop num_gpus from ray_actor_options (for ray.serve.llm set "
            "accelerator_config={'kind': 'cpu'}), or add a node with GPUs."
            if gpu
            else "ask for less per replica or bundle, or add a bigger node."
        )
        findings.append(
            Finding(
                "error",
                "infeasible-demand",
                f"{len(infeasible)} resource demand(s) can never be placed: they wait forever.",
                cause,
                fix + " `ray status` lists the same demands.",
                "\n".join(text for text, _ in infeasible),
            )
        )
    if pending:
        findings.append(
            Finding(
                "warning",
                "pending-demand",
                f"{len(pending)} resource demand(s) wait for resources to free up.",
                "a node could hold them, but its resources are in use right now (other replicas, "
                "tasks, placement groups).",
                "wait, scale something down, or add nodes; `ray status` shows usage per resource.",
                "\n".join(text for text, _ in pending),
            )
        )
    return findings


def _serve(ctx: _Context) -> dict[str, Any]:
    if ctx.details is None:
        ctx.details = serve_details(ctx.cluster)
    return ctx.details


def _port_holder(port: int) -> tuple[str | None, bool]:
    """(who listens on ``port`` on this machine, whether that is a Ray process)."""
    import psutil

    owner = port_owner(port)
    if owner is None:
        return None, False
    match = re.match(r"pid (\d+)", owner)
    is_ray = False
    if match:
        try:
            proc = psutil.Process(int(match.group(1)))
            is_ray = "ray::" in " ".join(proc.cmdline()) or proc.name().startswith("ray::")
        except psutil.Error:
            pass
    return owner, is_ray


def _check_serve(ctx: _Context) -> list[Finding]:
    details = _serve(ctx)
    findings = []
    controller = (details.get("controller_info") or {}).get("actor_id")
    port = ctx.http_port or (details.get("http_options") or {}).get("port")
    host = (details.get("http_options") or {}).get("host") or "127.0.0.1"
    local_host = ctx.cluster.host in ("127.0.0.1", "localhost")
    if not controller:
        findings.append(
            Finding(
                "info",
                "serve-not-running",
                "Serve is not running on this cluster.",
                "no application was deployed yet, or Serve was shut down.",
                "deploy with serve.run / `serve run` / `serve deploy CONFIG -a DASHBOARD`.",
            )
        )
        if ctx.http_port and local_host:
            owner, _ = _port_holder(ctx.http_port)
            if owner:
                findings.append(_port_conflict(ctx.http_port, owner, started=False))
        return findings
    proxies = details.get("proxies") or {}
    sick = {nid: p for nid, p in proxies.items() if p.get("status") not in ("HEALTHY", None)}
    conflict = None
    if port and local_host:
        owner, is_ray = _port_holder(int(port))
        if owner and not is_ray:
            conflict = _port_conflict(int(port), owner, started=True)
        elif owner is None and proxies:
            sick = sick or {nid: {"status": "NOT LISTENING"} for nid in proxies}
    if conflict:
        findings.append(conflict)
    if sick:
        lines = [
            f"node {nid[:12]}: {p.get('status')} {p.get('actor_name') or ''}".rstrip()
            for nid, p in sick.items()
        ]
        findings.append(
            Finding(
                "error",
                "proxy-unhealthy",
                f"{len(sick)} of {len(proxies)} Serve HTTP proxies are not healthy "
                f"(HTTP on {host}:{port}).",
                "the proxy could not bind its port (another process holds it) or keeps crashing."
                if conflict
                else "the proxy actor is starting, crashing or being replaced.",
                "free the port or start Serve on another one (http_options port); read the "
                "proxy's log: logs/serve/proxy_*.log on that node.",
                "\n".join(lines),
            )
        )
    return findings


def _port_conflict(port: int, owner: str, *, started: bool) -> Finding:
    return Finding(
        "error",
        "port-conflict",
        f"Serve's HTTP port {port} is held by {owner}, which is not a Serve proxy.",
        "another program (a second Serve instance, a web server, an old process) already "
        "listens there, so "
        + (
            "Serve's proxy cannot bind it: requests reach the other program or fail."
            if started
            else "Serve's proxy will not be able to bind it."
        ),
        "stop that process if it is yours, or start Serve on a free port: "
        "serve.start(http_options={'port': free_port()}) / http_options.port in the config "
        "(Serve keeps its port until `serve shutdown`).",
    )


def _app_failure(ctx: _Context, app_name: str, app: dict[str, Any]) -> Finding:
    messages = [app.get("message") or ""]
    for dep_name, dep in (app.get("deployments") or {}).items():
        if dep.get("message"):
            messages.append(f"[{dep_name}] {dep['message']}")
    text = "\n".join(m for m in messages if m)
    advice = explain_serve_error(f"{app.get('status')}\n{text}")
    evidence = [line for line in text.splitlines() if re.search(r"Error|Exception|error", line)]
    evidence = evidence[-6:] or text.splitlines()[-6:]
    logs = _where_to_read(_serve(ctx), app_name, app)
    root: list[str] = []
    if "Engine core initialization failed" in text:
        root = engine_root_cause(ctx.cluster, WorkbookError(text, ""))
        if root:
            evidence = evidence[-2:]
    return Finding(
        "error",
        "app-failed",
        f"Application {app_name!r} is {app.get('status')}.",
        advice.meaning,
        advice.fix,  # the engine's lines whole: vLLM's message ends with the setting to change
        "\n".join(
            [*(f"engine: {line}" for line in root), *(line[:300] for line in evidence), *logs]
        ),
    )


def _where_to_read(details: dict[str, Any], app_name: str, app: dict[str, Any]) -> list[str]:
    """Commands that show the full story: the controller's log holds the tracebacks of
    failed replica starts; each running replica has a log file of its own."""
    out = []
    controller = details.get("controller_info") or {}
    if controller.get("log_file_path"):
        name = "serve/" + controller["log_file_path"].rsplit("/", 1)[-1]
        out.append(
            f"full traceback: ray logs cluster {name} --node-id {controller.get('node_id', '?')}"
        )
    for dep in (app.get("deployments") or {}).values():
        for rep in (dep.get("replicas") or [])[:1]:
            if rep.get("actor_id"):
                out.append(f"replica log: ray logs actor --id {rep['actor_id']}")
    return out[:3]


def _check_apps(ctx: _Context) -> list[Finding]:
    details = _serve(ctx)
    findings = []
    now = time.time()
    for name, app in (details.get("applications") or {}).items():
        status = app.get("status")
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            findings.append(_app_failure(ctx, name, app))
        elif status == "DEPLOYING":
            age = now - (app.get("last_deployed_time_s") or now)
            waiting = {
                d: f"{dep.get('status')}: {dep.get('message') or 'no message'}"
                for d, dep in (app.get("deployments") or {}).items()
                if dep.get("status") != "HEALTHY"
            }
            if age > 10 and waiting:
                findings.append(
                    Finding(
                        "warning",
                        "app-waiting",
                        f"Application {name!r} has been DEPLOYING for {age:.0f} s.",
                        "its replicas cannot start yet: they wait for resources (see any demand "
                        "finding), or their constructors are slow (loading a model) or retrying.",
                        "compare with the resource demands; read the replica logs; wait longer "
                        "if a model is loading.",
                        "\n".join(f"[{d}] {m}"[:300] for d, m in waiting.items()),
                    )
                )
    return findings


def replica_deaths(
    cluster: ClusterHandle, *, app: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Dead Serve replica actors, with why each died.

    Each row: ``app``, ``deployment``, ``actor_id``, ``pid``, ``node_id``, ``reason``
    (``OUT_OF_MEMORY``, ``WORKER_DIED``, ``NODE_DIED``, ``RAY_KILL``, ...), ``intended``
    and ``message`` (Ray's own death cause text). ``RAY_KILL`` is the controller stopping a
    replica: a scale-down, a redeploy, a deletion, and also a replica whose constructor
    raised (Serve runs the constructor after the actor started, and the traceback goes to
    the application's status message and the controller's log, not to the death cause).
    """
    from ray.util.state import list_actors

    activate_in_process(cluster.env)
    actors = list_actors(
        address=cluster.dashboard_url,
        detail=True,
        limit=limit,
        filters=[("state", "=", "DEAD")],
        timeout=30,
    )
    rows = []
    for actor in actors:
        match = re.match(r"ServeReplica:([^:]+):(.+)", actor.class_name or "")
        if not match or (app is not None and match.group(1) != app):
            continue
        reason, message = _death_reason(actor.death_cause or {})
        rows.append(
            {
                "app": match.group(1),
                "deployment": match.group(2),
                "actor_id": actor.actor_id,
                "pid": actor.pid,
                "node_id": actor.node_id,
                "reason": reason,
                "intended": reason in _INTENDED_DEATHS,
                "message": message,
            }
        )
    return rows


def _death_reason(cause: Mapping[str, Any]) -> tuple[str, str]:
    if cause.get("oom_context"):
        return "OUT_OF_MEMORY", str(cause["oom_context"].get("error_message", ""))
    if cause.get("creation_task_failure_context"):
        failure = cause["creation_task_failure_context"]
        return "CONSTRUCTOR_FAILED", str(
            failure.get("formatted_exception_string") or failure.get("error_message") or failure
        )
    if cause.get("runtime_env_failed_context"):
        return "RUNTIME_ENV_FAILED", str(
            cause["runtime_env_failed_context"].get("error_message", "")
        )
    if cause.get("actor_unschedulable_context"):
        return "UNSCHEDULABLE", str(cause["actor_unschedulable_context"].get("error_message", ""))
    died = cause.get("actor_died_error_context") or {}
    message = str(died.get("error_message", ""))
    reason = str(died.get("reason") or "UNSPECIFIED")
    if re.search(r"memory monitor|low on memory|OutOfMemory|out of memory", message, re.I):
        reason = "OUT_OF_MEMORY"
    return reason, message


def _check_replica_deaths(ctx: _Context) -> list[Finding]:
    deaths = [d for d in replica_deaths(ctx.cluster) if not d["intended"]]
    findings = []
    oom = [d for d in deaths if d["reason"] == "OUT_OF_MEMORY"]
    if oom:
        by_dep = _count_by_deployment(oom)
        findings.append(
            Finding(
                "error",
                "oom-killed",
                f"Ray's memory monitor killed {len(oom)} replica(s): {by_dep}.",
                "the node's memory use crossed the memory monitor's threshold "
                "(RAY_memory_usage_threshold, default 0.95 of the node's memory) and Ray killed the "
                "replica using the most: usually a replica that leaks memory (a cache that only "
                "grows, references kept per request) or a model too big for the node.",
                "find what grows (the replica's /debug rss, `ray memory`, a heap profile), bound "
                "it (an LRU cache, drop references), give the replica a node with more memory; "
                "Serve restarts killed replicas, but a leak will be killed again.",
                "\n".join(
                    f"{d['app']}/{d['deployment']} pid {d['pid']}: {d['message'][:400]}"
                    for d in oom[:3]
                ),
            )
        )
    crashed = [d for d in deaths if d["reason"] in ("WORKER_DIED", "NODE_DIED", "UNSPECIFIED")]
    if crashed:
        findings.append(
            Finding(
                "warning",
                "replica-crashed",
                f"{len(crashed)} replica process(es) died unexpectedly: "
                f"{_count_by_deployment(crashed)}.",
                "the replica's process exited (a crash in native code, os._exit, a signal) or its "
                "node died; Serve replaced it.",
                "read the replica's log (ray logs actor --id ID) and its node's raylet.out.",
                "\n".join(
                    f"{d['app']}/{d['deployment']} {d['actor_id']}: {d['message'][:300]}"
                    for d in crashed[:3]
                ),
            )
        )
    return findings


def _count_by_deployment(rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        key = f"{row['app']}/{row['deployment']}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in counts.items())


def node_memory(cluster: ClusterHandle, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Memory of each alive node as the dashboard reports it (its Cluster view).

    One dict per node: ``node``, ``total_bytes``, ``used_bytes``, ``fraction``. "Used" is
    the dashboard agent's measure: where the node has a memory cgroup, the cgroup's usage
    minus file cache, even when the cgroup sets no limit. The raylet's memory monitor, which
    compares use with ``RAY_memory_usage_threshold``, counts differently when the cgroup's
    limit is not the binding one (``MemTotal - MemAvailable``): on such a machine the two
    can differ by a GiB. For a threshold on this machine use :func:`monitor_memory`.
    """

    resp = requests.get(
        f"{cluster.dashboard_url}/nodes?view=summary",
        headers=auth_headers(cluster.token_path),
        timeout=timeout_s,
    )
    resp.raise_for_status()
    rows = []
    for node in (resp.json().get("data") or {}).get("summary") or []:
        mem = node.get("mem") or []  # [total, available, percent, used]
        if len(mem) < 4:
            continue
        raylet = node.get("raylet") or {}
        if raylet.get("state", "ALIVE") != "ALIVE":
            continue
        rows.append(
            {
                "node": raylet.get("nodeName") or node.get("hostname") or "?",
                "total_bytes": int(mem[0]),
                "used_bytes": int(mem[3]),
                "fraction": mem[3] / mem[0] if mem[0] else 0.0,
            }
        )
    return rows


def monitor_memory(
    *, proc_dir: str | Path = "/proc", cgroup_dir: str | Path = "/sys/fs/cgroup"
) -> dict[str, int]:
    """This machine's memory as the raylet's memory monitor counts it: ``used_bytes`` and
    ``total_bytes``, the two numbers whose ratio it compares with
    ``RAY_memory_usage_threshold`` (swap not counted, Ray's default).

    The monitor takes the memory cgroup's view only when the cgroup's limit is below the
    host's memory: then used is the cgroup's usage minus its file cache. Otherwise it is
    ``MemTotal - MemAvailable`` from ``/proc/meminfo``, whatever the cgroup says. (The same
    rule as Ray's ``MemoryMonitorUtils::TakeSystemMemoryUsageSnapshot``; the dashboard's
    figure, :func:`node_memory`, takes the cgroup's usage whenever it can read it.) Only for
    nodes on this machine: a notebook's own cluster.
    """
    meminfo: dict[str, int] = {}
    for line in Path(proc_dir, "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            meminfo[key] = int(fields[0]) * 1024  # kB
    total = meminfo["MemTotal"]
    available = meminfo.get("MemAvailable") or (
        meminfo["MemFree"] + meminfo.get("Cached", 0) + meminfo.get("Buffers", 0)
    )
    used = max(0, total - available)
    cgroup = Path(cgroup_dir)
    for limit_file, usage_file, stat_file, inactive, active in (
        ("memory.max", "memory.current", "memory.stat", "inactive_file", "active_file"),
        (
            "memory/memory.limit_in_bytes",
            "memory/memory.usage_in_bytes",
            "memory/memory.stat",
            "total_inactive_file",
            "total_active_file",
        ),
    ):
        try:
            limit_text = (cgroup / limit_file).read_text().strip()
            usage = int((cgroup / usage_file).read_text().split()[0])
            stat = dict(
                line.split()[:2]
                for line in (cgroup / stat_file).read_text().splitlines()
                if len(line.split()) >= 2
            )
        except (OSError, ValueError, IndexError):
            continue
        if limit_text.isdigit() and 0 < int(limit_text) < total:  # the cgroup's limit binds
            file_cache = int(stat.get(inactive, 0)) + int(stat.get(active, 0))
            return {"used_bytes": max(0, usage - file_cache), "total_bytes": int(limit_text)}
        break
    return {"used_bytes": used, "total_bytes": total}


def _check_memory(ctx: _Context) -> list[Finding]:
    hot = [
        f"{n['node']}: {n['fraction']:.0%} of {n['total_bytes'] / 2**30:.1f} GiB used"
        for n in node_memory(ctx.cluster, timeout_s=ctx.timeout_s)
        if n["fraction"] >= ctx.memory_warn_fraction
    ]
    if not hot:
        return []
    return [
        Finding(
            "warning",
            "memory-pressure",
            f"{len(hot)} node(s) use more than {ctx.memory_warn_fraction:.0%} of their memory.",
            "close to the memory monitor's threshold (RAY_memory_usage_threshold, default 0.95): "
            "above it Ray kills workers, replicas included.",
            "find the process that grows (the dashboard's Cluster view, `ray memory`), scale "
            "down, or add memory.",
            "\n".join(hot),
        )
    ]


def _check_backpressure(ctx: _Context) -> list[Finding]:
    samples = scrape_cluster(
        ctx.cluster,
        prefixes=("ray_serve_deployment_queued_queries", "ray_serve_replica_processing_queries"),
    )
    if samples.empty:
        return []
    queued: dict[str, float] = {}
    for _, row in samples[samples["name"] == "ray_serve_deployment_queued_queries"].iterrows():
        key = f"{row['labels'].get('application', '?')}/{row['labels'].get('deployment', '?')}"
        queued[key] = queued.get(key, 0.0) + row["value"]
    busy = {k: v for k, v in queued.items() if v >= 1}
    if not busy:
        return []
    limits = {}
    for app_name, app in (_serve(ctx).get("applications") or {}).items():
        for dep_name, dep in (app.get("deployments") or {}).items():
            config = dep.get("deployment_config") or {}
            limits[f"{app_name}/{dep_name}"] = (
                config.get("max_ongoing_requests"),
                len(dep.get("replicas") or []),
            )
    lines = [
        f"{k}: {v:.0f} queued; max_ongoing_requests={limits.get(k, ('?', '?'))[0]} "
        f"x {limits.get(k, ('?', '?'))[1]} replica(s)"
        for k, v in busy.items()
    ]
    return [
        Finding(
            "warning",
            "backpressure",
            f"Requests are queueing in front of {len(busy)} deployment(s).",
            "every replica already has max_ongoing_requests requests in flight, so new ones wait "
            "in the caller's queue: latency grows with the queue, not with the work.",
            "add replicas (num_replicas, or autoscaling with target_ongoing_requests), make each "
            "request cheaper, or cap the queue with max_queued_requests so excess load fails fast "
            "(HTTP 503) instead of waiting.",
            "\n".join(lines),
        )
    ]


def _check_config(ctx: _Context) -> list[Finding]:
    config = ctx.config
    data = load_config(config) if isinstance(config, (str, Path)) else dict(config)
    findings = []
    try:
        validate_serve_config(data)
    except ServeConfigError as err:
        findings.append(
            Finding(
                "error",
                "config-invalid",
                err.problem,
                "a key is misspelled or missing: Serve either rejects the file, or (for unknown "
                "keys) accepts it and silently ignores the key.",
                err.fix,
                err.details[-1500:],
            )
        )
    for app in data.get("applications") or []:
        path = app.get("import_path") if isinstance(app, dict) else None
        if not isinstance(path, str) or ":" not in path and "." not in path:
            continue
        module = path.split(":")[0] if ":" in path else path.rsplit(".", 1)[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            findings.append(
                Finding(
                    "error",
                    "import-path",
                    f"Application {app.get('name')!r}: module {module!r} of import_path "
                    f"{path!r} cannot be imported here.",
                    "a typo in the module path, or code that is not installed (here and on the "
                    "cluster's nodes). Serve would deploy the file and the application would end "
                    "DEPLOY_FAILED with ModuleNotFoundError.",
                    "fix the spelling (module.path:variable); install the code on every node or "
                    "ship it with runtime_env working_dir.",
                )
            )
    return findings


_CHECKS: list[tuple[str, Callable[[_Context], list[Finding]]]] = [
    ("cluster reachable", _check_reachable),
    ("authentication", _check_auth),
    ("nodes", _check_nodes),
    ("resource demands", _check_demands),
    ("Serve proxies and port", _check_serve),
    ("applications", _check_apps),
    ("replica deaths", _check_replica_deaths),
    ("node memory", _check_memory),
    ("queueing (metrics)", _check_backpressure),
]


def diagnose(
    cluster: ClusterHandle,
    *,
    config: Mapping[str, Any] | str | Path | None = None,
    http_port: int | None = None,
    memory_warn_fraction: float = 0.85,
    metrics: bool = True,
    show: bool = True,
) -> Diagnosis:
    """Inspect ``cluster`` and its Serve applications; print and return the findings.

    ``config``: also check a Serve config (file or dict) before it is deployed.
    ``http_port``: the port Serve should use (checked for another owner even when Serve is
    not running yet). ``metrics=False`` skips the check that scrapes the nodes' Prometheus
    endpoints. A check that fails to run becomes an ``info`` finding, never an exception.
    """

    started = time.monotonic()
    ctx = _Context(
        cluster=cluster,
        config=config,
        http_port=http_port,
        memory_warn_fraction=memory_warn_fraction,
    )
    # The checks switch this process's Ray auth settings to the target's (its token); put
    # back what was there, so a notebook's own driver is not left with another cluster's.
    previous = activate_in_process(cluster.env)
    try:
        report = _run_checks(ctx, metrics=metrics)
    finally:
        restore_in_process(previous)
    report.seconds = round(time.monotonic() - started, 2)
    if show:
        print(report.render())
    return report


def _run_checks(ctx: _Context, *, metrics: bool) -> Diagnosis:
    """Run the checks in order (a check may stop the rest); findings sorted worst first."""
    cluster = ctx.cluster
    report = Diagnosis(target=f"{cluster.address} ({cluster.dashboard_url})")
    checks = list(_CHECKS)
    if not metrics:
        checks = [c for c in checks if c[1] is not _check_backpressure]
    if ctx.config is not None:
        checks.insert(0, ("Serve config", _check_config))
    for name, check in checks:
        if ctx.stop:
            break
        report.checks.append(name)
        try:
            report.findings += check(ctx)
        except Exception as err:  # noqa: BLE001 - one broken check must not hide the others
            report.findings.append(
                Finding(
                    "info",
                    "check-failed",
                    f"The check '{name}' could not run.",
                    f"{type(err).__name__}: {str(err)[:300]}",
                    "rerun; if it persists, run the "
                    "corresponding command by hand (ray status, serve status, ray list actors).",
                )
            )
    order = {s: i for i, s in enumerate(SEVERITIES)}
    report.findings.sort(key=lambda f: order.get(f.severity, 9))
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.doctor``: diagnose a running cluster from a shell."""

    parser = argparse.ArgumentParser(
        prog="python -m helpers.doctor", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--address", default=None, help="GCS address host:port (default RAY_ADDRESS)"
    )
    parser.add_argument(
        "--dashboard-url",
        default=None,
        help="dashboard URL (default RAY_DASHBOARD_ADDRESS, else http://HOST:8265)",
    )
    parser.add_argument(
        "--token-path",
        default=None,
        help="the cluster's token file (default RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token)",
    )
    parser.add_argument("--config", default=None, help="also check this Serve config file")
    parser.add_argument("--http-port", type=int, default=None, help="Serve's HTTP port to check")
    parser.add_argument("--no-metrics", action="store_true", help="skip the Prometheus scrape")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = parser.parse_args(argv)
    import os

    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:
        parser.error("give --address HOST:PORT (or set RAY_ADDRESS)")
    dashboard = args.dashboard_url or os.environ.get("RAY_DASHBOARD_ADDRESS")
    token = args.token_path  # None: connect_to_cluster looks where Ray's clients look
    try:
        cluster = connect_to_cluster(address, dashboard_url=dashboard, token_path=token)
    except WorkbookError:
        host = address.removeprefix("ray://").rpartition(":")[0] or "127.0.0.1"
        cluster = ExistingCluster(
            address.removeprefix("ray://"),
            dashboard or f"http://{host}:8265",
            Path(token) if token else None,
        )
    report = diagnose(
        cluster,
        config=args.config,
        http_port=args.http_port,
        metrics=not args.no_metrics,
        show=not args.json,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
