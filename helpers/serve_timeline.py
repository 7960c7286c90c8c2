"""Serve's status over time: record it while something changes, then plot it.

:class:`StatusRecorder` polls the cluster's Serve status (the dashboard REST API, what
``serve status`` reads) in a background thread: one row per poll and deployment, with the
application and deployment status and how many replicas are in each state. :meth:`mark`
records named events ("serve deploy: 3 replicas") on the same clock.
:func:`plot_update_timeline` draws replicas by state, the deployment status, and the requests
of a :class:`~helpers.traffic.RequestLoop` (by code/config version, failures in red) on one
time axis; :func:`plot_fault_timeline` does the same for a fault, with one panel of requests
per client (say, without and with retries) and the proxies' health.

Usage::

    with StatusRecorder(cluster, app="configurable") as recorder, RequestLoop(url) as loop:
        recorder.mark("deploy v2")
        cluster.run_cli(["serve", "deploy", "v2.yaml"])
        ...
    plot_update_timeline(recorder.results(), loop.results(), recorder.events())

Introduced in notebooks/03b_updates_and_operations.ipynb; faults in
notebooks/11_fault_tolerance.ipynb.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from helpers.errors import ClusterNotRunningError, ServeTimeoutError
from helpers.recording import MarkedRecorder
from helpers.serve_status import serve_details
from helpers.waiting import wait_for

if TYPE_CHECKING:  # pragma: no cover
    import matplotlib.figure
    import pandas as pd

    from helpers.cluster import ClusterHandle

__all__ = [
    "REPLICA_STATES",
    "StatusRecorder",
    "wait_until_settled",
    "running_pids",
    "settled_pids",
    "wait_until_replaced",
    "status_changes",
    "plot_update_timeline",
    "plot_fault_timeline",
]

#: Replica states as Serve reports them, in the order they are plotted.
REPLICA_STATES = ("RUNNING", "STARTING", "UPDATING", "RECOVERING", "STOPPING")


def _unreachable_row(t: float, app: str | None) -> dict[str, Any]:
    return {
        "t": t,
        "application": app,
        "app_status": "UNREACHABLE",
        "deployment": None,
        "deployment_status": "UNREACHABLE",
        "target_replicas": None,
        "pids": [],
        **{s: None for s in REPLICA_STATES},
        "proxies": None,
        "proxies_healthy": None,
    }


def _snapshot(cluster: ClusterHandle, app: str | None) -> list[dict[str, Any]]:
    now = time.time()
    rows = []
    serve = serve_details(cluster)
    apps = serve.get("applications") or {}
    proxies = [p.get("status") for p in (serve.get("proxies") or {}).values()]
    proxy_counts = {"proxies": len(proxies), "proxies_healthy": proxies.count("HEALTHY")}
    for app_name, details in apps.items():
        if app is not None and app_name != app:
            continue
        if not details.get("deployments"):
            # While Serve (re)builds an application from its import path, the application is
            # there but its deployments are not known yet.
            rows.append(
                {
                    "t": now,
                    "application": app_name,
                    "app_status": details.get("status"),
                    "deployment": None,
                    "deployment_status": None,
                    "target_replicas": None,
                    "pids": [],
                    **{s: 0 for s in REPLICA_STATES},
                }
            )
        for dep_name, dep in (details.get("deployments") or {}).items():
            states = [r.get("state") for r in dep.get("replicas") or []]
            row = {
                "t": now,
                "application": app_name,
                "app_status": details.get("status"),
                "deployment": dep_name,
                "deployment_status": dep.get("status"),
                "target_replicas": (dep.get("deployment_config") or {}).get("num_replicas"),
                "pids": sorted(r.get("pid") for r in dep.get("replicas") or [] if r.get("pid")),
            }
            row.update({s: states.count(s) for s in REPLICA_STATES})
            rows.append(row)
    if app is not None and not rows:
        rows.append(
            {
                "t": now,
                "application": app,
                "app_status": "NOT_STARTED",
                "deployment": None,
                "deployment_status": None,
                "target_replicas": None,
                "pids": [],
                **{s: 0 for s in REPLICA_STATES},
            }
        )
    for row in rows:
        row.update(proxy_counts)
    return rows


class StatusRecorder(MarkedRecorder[dict[str, Any], "pd.DataFrame"]):
    """Poll Serve's status every ``period_s`` in a background thread.

    Each row also counts Serve's proxies and the HEALTHY ones. A poll that fails (the Serve
    controller is down, so the dashboard cannot answer) is counted in ``errors``; with
    ``record_unreachable=True`` it also becomes a row whose statuses are ``"UNREACHABLE"``.
    """

    def __init__(
        self,
        cluster: ClusterHandle,
        *,
        app: str | None = None,
        period_s: float = 0.5,
        record_unreachable: bool = False,
    ) -> None:
        super().__init__(period_s=period_s, name="status-recorder")
        self.cluster = cluster
        self.app = app
        self.record_unreachable = record_unreachable
        self._errors = 0

    def sample(self) -> list[dict[str, Any]]:
        try:
            return _snapshot(self.cluster, self.app)
        except ClusterNotRunningError:
            self._errors += 1
            return [_unreachable_row(time.time(), self.app)] if self.record_unreachable else []

    @property
    def errors(self) -> int:
        """Polls that got no answer so far."""
        return self._errors

    def results(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame.from_records(self.rows())


def wait_until_settled(
    cluster: ClusterHandle,
    app: str,
    deployment: str,
    *,
    replicas: int,
    timeout_s: float = 180.0,
    poll_s: float = 0.3,
) -> float:
    """Wait until ``deployment`` is HEALTHY with exactly ``replicas`` replicas, all RUNNING.

    That is the end of a rollout (a scale change, a rolling code update): the old replicas
    have stopped and the new ones serve. Returns the seconds it took; raises
    :class:`~helpers.errors.ServeTimeoutError` with the last status seen.
    """
    return _settle(cluster, app, deployment, replicas, timeout_s, poll_s)[0]


def settled_pids(
    cluster: ClusterHandle,
    app: str,
    deployment: str,
    *,
    timeout_s: float = 60.0,
    poll_s: float = 0.3,
) -> list[int]:
    """Process ids of a deployment's replicas once it has settled (HEALTHY, every replica RUNNING).

    For claims like "reconfigured in place, no replica restarted": a replica that already
    answers with a new ``user_config`` is still UPDATING in Serve's status for a moment, and
    after a controller restart replicas are RECOVERING, so :func:`running_pids` read at once
    can miss a replica that is still there.
    """
    return _settle(cluster, app, deployment, None, timeout_s, poll_s)[1]


def _settle(
    cluster: ClusterHandle,
    app: str,
    deployment: str,
    replicas: int | None,
    timeout_s: float,
    poll_s: float,
) -> tuple[float, list[int]]:
    start = time.monotonic()
    last_status = "NOT_STARTED"
    pids: list[int] = []

    def settled() -> bool:
        nonlocal last_status, pids
        details = (serve_details(cluster).get("applications") or {}).get(app) or {}
        dep = (details.get("deployments") or {}).get(deployment) or {}
        found = dep.get("replicas") or []
        states = [r.get("state") for r in found]
        last_status = f"{details.get('status', 'NOT_STARTED')}/{dep.get('status')}/{states}"
        pids = sorted(r["pid"] for r in found if r.get("pid"))
        wanted = bool(states) if replicas is None else len(states) == replicas
        return (
            details.get("status") == "RUNNING"
            and dep.get("status") == "HEALTHY"
            and wanted
            and all(s == "RUNNING" for s in states)
        )

    # Unreadable (the controller restarting) is "not yet": what a rollout may pass through.
    wait_for(
        settled,
        timeout_s=timeout_s,
        what=f"{app}/{deployment} settled",
        poll_s=poll_s,
        not_yet=(ClusterNotRunningError,),
        on_timeout=lambda waited: ServeTimeoutError(
            app, timeout_s, waited.last_seen() if waited.error else last_status
        ),
    )
    return round(time.monotonic() - start, 2), pids


def running_pids(cluster: ClusterHandle, app: str, deployment: str) -> list[int]:
    """Process ids of the RUNNING replicas of one deployment (sorted)."""
    details = (serve_details(cluster).get("applications") or {}).get(app) or {}
    dep = (details.get("deployments") or {}).get(deployment) or {}
    return sorted(
        r["pid"] for r in dep.get("replicas") or [] if r.get("state") == "RUNNING" and r.get("pid")
    )


def wait_until_replaced(
    cluster: ClusterHandle,
    app: str,
    deployment: str,
    old_pids: list[int] | set[int],
    *,
    replicas: int,
    timeout_s: float = 120.0,
) -> float:
    """Wait until none of ``old_pids`` serves any more and the deployment has settled again.

    For watching Serve replace a replica whose health check fails. Returns the seconds it took.
    """

    start = time.monotonic()
    old = set(old_pids)
    pids: list[int] = []

    def replaced() -> bool:
        nonlocal pids
        pids = running_pids(cluster, app, deployment)
        return len(pids) == replicas and not old & set(pids)

    wait_for(
        replaced,
        timeout_s=timeout_s,
        what=f"{app}/{deployment}'s replicas replaced",
        poll_s=0.25,
        not_yet=(ClusterNotRunningError,),
        on_timeout=lambda waited: ServeTimeoutError(
            app, timeout_s, f"still running pids {sorted(old & set(pids))}"
        ),
    )
    remaining = max(1.0, timeout_s - (time.monotonic() - start))
    wait_until_settled(cluster, app, deployment, replicas=replicas, timeout_s=remaining)
    return round(time.monotonic() - start, 2)


def status_changes(status: pd.DataFrame, t0: float | None = None) -> pd.DataFrame:
    """Only the polls where a deployment's status or replica states changed (a transcript)."""
    if status.empty:
        return status
    cols = ["app_status", "deployment_status", *REPLICA_STATES]
    df = status.sort_values("t", ignore_index=True)
    key = df[cols].apply(lambda row: "|".join(map(str, row)), axis=1)
    changed = key.ne(key.groupby(df["deployment"].astype(str)).shift())
    out = df[changed].copy()
    out.insert(0, "t_s", (out["t"] - (t0 if t0 is not None else df["t"].min())).round(1))
    return out.drop(columns=["t"]).reset_index(drop=True)


_REPLICA_COLORS = {
    "RUNNING": "tab:green",
    "STARTING": "tab:orange",
    "UPDATING": "tab:purple",
    "RECOVERING": "tab:gray",
    "STOPPING": "tab:red",
}
_STATUS_COLORS = {
    "HEALTHY": "tab:green",
    "UPDATING": "tab:orange",
    "UPSCALING": "tab:blue",
    "DOWNSCALING": "tab:cyan",
    "UNHEALTHY": "tab:red",
    "DEPLOY_FAILED": "black",
    "UNREACHABLE": "dimgray",
}


def _time_origin(status: pd.DataFrame, request_frames: list[pd.DataFrame]) -> float:
    starts = [status["t"].min()] if not status.empty else []
    starts += [df["t_start"].min() for df in request_frames if not df.empty]
    return float(min(starts)) if starts else time.time()


def _draw_replicas(ax: Any, st: pd.DataFrame, t0: float, *, proxies: bool = False) -> None:
    """Replicas by state, stacked (gaps where Serve did not answer), and the target count."""
    import numpy as np

    if not st.empty:
        x = st["t"] - t0
        bottom = np.zeros(len(st))
        for state in REPLICA_STATES:
            values = st[state].to_numpy(dtype=float)  # NaN where the poll got no answer
            if np.nansum(values) > 0:
                ax.fill_between(
                    x,
                    bottom,
                    bottom + values,
                    step="post",
                    alpha=0.7,
                    color=_REPLICA_COLORS[state],
                    label=state,
                )
            bottom = bottom + values
        if st["target_replicas"].notna().any():
            ax.step(
                x,
                st["target_replicas"],
                where="post",
                color="black",
                lw=1.2,
                ls="--",
                label="target replicas",
            )
        if proxies and "proxies_healthy" in st.columns and st["proxies_healthy"].notna().any():
            ax.step(
                x,
                st["proxies_healthy"],
                where="post",
                color="tab:blue",
                lw=1.5,
                label="healthy proxies",
            )
            ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # room for the legend
    ax.set_ylabel("replicas, proxies\n(count)" if proxies else "replicas (count)")
    ax.legend(loc="upper left", fontsize=8, ncol=4)


def _draw_status(ax: Any, st: pd.DataFrame, t0: float) -> None:
    """The deployment status as coloured bands."""
    if not st.empty:
        times = (st["t"] - t0).to_numpy()
        labels = st["deployment_status"].astype(str).to_numpy()
        seen: set[str] = set()
        for i, label in enumerate(labels):
            end = times[i + 1] if i + 1 < len(times) else times[i] + 0.5
            ax.axvspan(
                times[i],
                end,
                color=_STATUS_COLORS.get(label, "lightgray"),
                alpha=0.8,
                lw=0,
                label=None if label in seen else label,
            )
            seen.add(label)
        ax.legend(loc="upper left", fontsize=8, ncol=5)
    ax.set_yticks([])
    ax.set_ylabel("deployment\nstatus")


def _draw_requests(
    ax: Any, requests_df: pd.DataFrame, t0: float, *, version_column: str | None, bin_s: float
) -> None:
    """Requests per second by when they ended: ok (by version), ok after a retry, failed."""
    if not requests_df.empty:
        df = requests_df.copy()
        df["bin"] = ((df["t_end"] - t0) // bin_s) * bin_s
        ok_mask = df["ok"].astype(bool)
        retried = (
            ok_mask & (df["attempts"].fillna(1) > 1)
            if "attempts" in df.columns
            else ok_mask & False
        )
        ok = df[ok_mask & ~retried]
        bottom = None
        if version_column and version_column in ok.columns and ok[version_column].notna().any():
            table = ok.pivot_table(
                index="bin", columns=version_column, values="ok", aggfunc="count", fill_value=0
            )
        else:
            table = ok.groupby("bin").size().to_frame("ok")
        for col in table.columns:
            heights = table[col] / bin_s
            ax.bar(
                table.index,
                heights,
                width=bin_s,
                align="edge",
                bottom=bottom,
                alpha=0.8,
                label=f"ok, {version_column}={col}" if col != "ok" else "ok",
            )
            bottom = heights if bottom is None else bottom + heights
        stacked = bottom if bottom is not None else table.sum(axis=1)
        for mask, color, label in [
            (retried, "tab:orange", "ok after a retry"),
            (~ok_mask, "red", "failed"),
        ]:
            if mask.any():
                counts = df[mask].groupby("bin").size() / bin_s
                base = stacked.reindex(counts.index, fill_value=0.0)
                ax.bar(
                    counts.index,
                    counts,
                    width=bin_s,
                    align="edge",
                    bottom=base,
                    color=color,
                    label=f"{label} ({int(mask.sum())})",
                )
                stacked = stacked.add(counts, fill_value=0.0)
        ax.legend(loc="upper left", fontsize=8, ncol=3)
    ax.set_ylabel("requests per second")


def _draw_events(axes: list[Any], events: pd.DataFrame | None, t0: float) -> None:
    if events is None or events.empty:
        return
    for _, ev in events.iterrows():
        for ax in axes:
            ax.axvline(ev["t"] - t0, color="black", ls=":", lw=1)
        axes[0].annotate(
            ev["event"],
            (ev["t"] - t0, 0),
            xytext=(-3, 4),
            textcoords="offset points",
            rotation=90,
            va="bottom",
            ha="right",
            fontsize=8,
            bbox=dict(facecolor="white", edgecolor="none", alpha=0.8),
        )


def plot_update_timeline(
    status: pd.DataFrame,
    requests_df: pd.DataFrame,
    events: pd.DataFrame | None = None,
    *,
    deployment: str | None = None,
    version_column: str = "code_version",
    bin_s: float = 0.5,
    title: str = "Updates under load",
) -> matplotlib.figure.Figure:
    """Three panels on one time axis: replicas by state, deployment status, requests/s."""
    import matplotlib.pyplot as plt

    t0 = _time_origin(status, [requests_df])
    st = status if deployment is None else status[status["deployment"] == deployment]
    fig, (ax1, ax2, ax3) = plt.subplots(
        3, 1, figsize=(10, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.2, 3]}
    )
    _draw_replicas(ax1, st, t0)
    ax1.set_title(title)
    _draw_status(ax2, st, t0)
    _draw_requests(ax3, requests_df, t0, version_column=version_column, bin_s=bin_s)
    ax3.set_xlabel("time since start (s)")
    _draw_events([ax1, ax2, ax3], events, t0)
    fig.tight_layout()
    return fig


def plot_fault_timeline(
    status: pd.DataFrame,
    clients: Mapping[str, pd.DataFrame],
    events: pd.DataFrame | None = None,
    *,
    deployment: str | None = None,
    bin_s: float = 0.5,
    title: str = "A fault under load",
) -> matplotlib.figure.Figure:
    """Replicas by state and healthy proxies, deployment status (grey: Serve did not answer),
    then one panel of requests/s per client (``{"no retries": df, "4 retries": df2}``):
    ok, ok after a retry (orange), failed (red). Events are dotted lines.
    """
    import matplotlib.pyplot as plt

    frames = list(clients.values())
    t0 = _time_origin(status, frames)
    st = status if deployment is None else status[status["deployment"].isin([deployment, None])]
    fig, axes = plt.subplots(
        2 + len(frames),
        1,
        figsize=(10, 3.2 + 2.2 * len(frames)),
        sharex=True,
        gridspec_kw={"height_ratios": [2.4, 0.9] + [2.0] * len(frames)},
    )
    _draw_replicas(axes[0], st, t0, proxies=True)
    axes[0].set_title(title)
    _draw_status(axes[1], st, t0)
    ymax = 0.0
    for ax, (label, df) in zip(axes[2:], clients.items()):
        _draw_requests(ax, df, t0, version_column=None, bin_s=bin_s)
        ax.set_ylabel(f"{label}\nrequests/s")
        ymax = max(ymax, ax.get_ylim()[1])
    for ax in axes[2:]:
        ax.set_ylim(0, ymax * 1.25)  # the same scale, room for the legend
    axes[-1].set_xlabel("time since start (s)")
    _draw_events(list(axes), events, t0)
    fig.tight_layout()
    return fig
