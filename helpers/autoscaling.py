"""Autoscaling made visible: the config's fields, replica counts under load, one figure, a dashboard.

* :func:`autoscaling_fields` - every field of the installed Ray's ``AutoscalingConfig`` with
  its default *read from the library*, its type, and whether it is deprecated;
  :func:`legacy_names` - what the installed Ray does with the names older material uses
  (many are accepted and silently ignored).
* :class:`ReplicaSampler` - one deployment's status, the autoscaler's target
  (``target_num_replicas``) and its replicas by state, sampled twice a second in the
  background; :func:`seconds_until` - when a count was first reached.
* :func:`plot_autoscaling` - one figure on one time axis: offered load and throughput, target
  and running replicas, latency (from a :class:`~helpers.load.LoadResult`).
* :class:`AutoscalingDashboard` - the same picture, live: a slider sets the offered load while
  the figure and the numbers refresh every second (in JupyterLab); when the notebook runs
  headless (papermill, nbval) a script moves the "slider" and the result is a static figure.

Usage::

    from helpers.autoscaling import autoscaling_fields, plot_autoscaling
    autoscaling_fields()                                  # a table, defaults from the library
    with ReplicaSampler(cluster, "timed", "TimedWork") as sampler:
        load = load_test(url, rate=5, schedule=[(5, 5), (20, 40), (20, 5)])
    plot_autoscaling(sampler.results(), load)

Introduced in notebooks/05_autoscaling.ipynb.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from helpers.errors import ClusterNotRunningError
from helpers.load import LoadGenerator
from helpers.recording import MarkedRecorder
from helpers.serve_status import serve_details

if TYPE_CHECKING:  # pragma: no cover
    import matplotlib.figure
    import pandas as pd

    from helpers.cluster import ClusterHandle
    from helpers.load import LoadResult, RequestSpec

__all__ = [
    "autoscaling_fields",
    "legacy_names",
    "SAMPLE_COLUMNS",
    "sample_deployment",
    "ReplicaSampler",
    "seconds_until",
    "plot_autoscaling",
    "jupyter_frontend_attached",
    "AutoscalingDashboard",
]


# --- the config -------------------------------------------------------------------------------


def _default_of(info: Any) -> Any:
    if info.default_factory is not None:
        return info.default_factory()
    return info.default


def autoscaling_fields() -> pd.DataFrame:
    """One row per field of the installed ``ray.serve.config.AutoscalingConfig``.

    Columns: field, default (as the library defines it, not typed in here), type, deprecated
    (the library's own description says so), description.
    """
    import pandas as pd
    from ray.serve.config import AutoscalingConfig

    rows = []
    for name, info in AutoscalingConfig.model_fields.items():
        default = _default_of(info)
        if hasattr(default, "model_dump"):
            default = default.model_dump()
        elif hasattr(default, "value"):  # an Enum member
            default = default.value
        description = (info.description or "").strip()
        annotation = getattr(info.annotation, "__name__", None) or str(info.annotation)
        rows.append(
            {
                "field": name,
                "default": default,
                "type": annotation.replace("typing.", ""),
                "deprecated": "DEPRECATED" in description,
                "description": " ".join(description.replace("[DEPRECATED]", "").split()),
            }
        )
    return pd.DataFrame(rows)


def legacy_names(old: Mapping[str, Any]) -> pd.DataFrame:
    """What the installed ``AutoscalingConfig`` does with each ``{old name: value}``.

    ``effect`` is ``"ignored silently"`` (accepted, and nothing changed), ``"accepted
    (deprecated)"`` (a real field, still honoured) or ``"rejected: ..."`` (a validation error).
    """
    import pandas as pd
    from pydantic import ValidationError
    from ray.serve.config import AutoscalingConfig

    rows = []
    for name, value in old.items():
        try:
            changed = AutoscalingConfig(**{name: value}).model_dump(exclude_defaults=True)
        except ValidationError as err:
            effect = "rejected: " + str(err.errors()[0].get("msg", err))[:80]
        else:
            effect = "accepted (deprecated)" if name in changed else "ignored silently"
        rows.append({"old name": name, "value tried": value, "effect in this Ray": effect})
    return pd.DataFrame(rows)


# --- replica counts over time ---------------------------------------------------------------

#: What :class:`ReplicaSampler` records per poll.
SAMPLE_COLUMNS = ["t", "status", "trigger", "target", "running", "starting", "stopping", "message"]


def sample_deployment(cluster: ClusterHandle, app: str, deployment: str) -> dict[str, Any]:
    """One look at a deployment: status and trigger, the autoscaler's target
    (``target_num_replicas``) and its replicas by state. A deployment (or application) that
    does not exist (yet) gives status ``"NOT_STARTED"`` and zero replicas."""

    now = time.time()
    details = (serve_details(cluster).get("applications") or {}).get(app) or {}
    dep = (details.get("deployments") or {}).get(deployment) or {}
    states = [r.get("state") for r in dep.get("replicas") or []]
    return {
        "t": now,
        "status": dep.get("status", "NOT_STARTED"),
        "trigger": dep.get("status_trigger"),
        "target": dep.get("target_num_replicas"),
        "running": states.count("RUNNING"),
        "starting": states.count("STARTING"),
        "stopping": states.count("STOPPING"),
        "message": dep.get("message", ""),
    }


class ReplicaSampler(MarkedRecorder[dict[str, Any], "pd.DataFrame"]):
    """Samples one deployment's autoscaling state every ``period_s`` in a background thread.

    Unlike :class:`~helpers.serve_timeline.StatusRecorder` (every deployment's replicas by
    state), each row here is about one deployment and carries the *autoscaler's* target,
    which is what an autoscaling figure needs. Use as a context manager, or start/stop.
    """

    def __init__(
        self, cluster: ClusterHandle, app: str, deployment: str, *, period_s: float = 0.5
    ) -> None:
        super().__init__(period_s=period_s, name="replica-sampler")
        self.cluster, self.app, self.deployment = cluster, app, deployment
        self.failed_polls = 0

    def sample(self) -> list[dict[str, Any]]:
        try:
            return [sample_deployment(self.cluster, self.app, self.deployment)]
        except ClusterNotRunningError:
            self.failed_polls += 1
            return []

    def start(self) -> ReplicaSampler:
        """Start sampling; a sampler already started (by a dashboard, say) is left as it is."""
        return self if self.started else super().start()

    def results(self, t0: float | None = None) -> pd.DataFrame:
        """The samples; with ``t0`` (wall clock) also ``t_s``, the seconds since then."""
        import pandas as pd

        df = pd.DataFrame.from_records(self.rows(), columns=SAMPLE_COLUMNS)
        df["target"] = pd.to_numeric(df["target"], errors="coerce")  # None before it exists
        if t0 is not None:
            df.insert(1, "t_s", (df["t"] - t0).round(2))
        return df

    def changes(self, t0: float | None = None) -> pd.DataFrame:
        """Only the samples where status, target or a replica count changed: a transcript."""
        rows = self.rows()
        df = self.results(t0=t0 if t0 is not None else (rows[0]["t"] if rows else 0.0))
        keys = ["status", "target", "running", "starting", "stopping"]
        changed = df[keys].astype(str).ne(df[keys].astype(str).shift()).any(axis=1)
        return df[changed].drop(columns=["t", "message"]).reset_index(drop=True)


def seconds_until(
    samples: pd.DataFrame, column: str, value: int, *, after_s: float = 0.0, at_most: bool = False
) -> float | None:
    """Seconds after ``after_s`` until ``samples[column]`` first reached ``value`` (``>=``, or
    ``<=`` with ``at_most``); None if it never did. ``samples`` need a ``t_s`` column
    (``ReplicaSampler.results(t0=...)``)."""
    later = samples[samples["t_s"] >= after_s]
    hit = later[later[column] <= value] if at_most else later[later[column] >= value]
    return None if hit.empty else round(float(hit["t_s"].iloc[0] - after_s), 2)


# --- the figure ---------------------------------------------------------------------------------


def _level_steps(load: LoadResult, t0: float, t_end: float) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for t, level in load.levels:
        xs.append(t - t0)
        ys.append(level)
    if xs:
        xs.append(t_end - t0)
        ys.append(ys[-1])
    return xs, ys


def plot_autoscaling(
    samples: pd.DataFrame,
    load: LoadResult,
    *,
    events: pd.DataFrame | None = None,
    title: str = "Autoscaling under a changing load",
    bin_s: float = 1.0,
    figure: matplotlib.figure.Figure | None = None,
) -> matplotlib.figure.Figure:
    """Three panels on one time axis (seconds since the load started): offered load and
    achieved throughput; the autoscaler's target and the running replicas (``samples`` of a
    :class:`ReplicaSampler`); latency p50/p90.

    Draws on ``figure`` if given (a live dashboard redraws the same one), else a new one. Works
    without pyplot, so a background thread can draw it.
    """
    from helpers.plotting import NotebookFigure

    fig = figure if figure is not None else NotebookFigure(figsize=(10, 7.5))
    fig.clear()
    ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2.2, 2.5]})
    t0 = load.started_at or (float(load.df["t_start"].min()) if len(load.df) else time.time())
    per_bin = load.timeline(bin_s) if len(load.df) else None
    t_end = max(
        [t0 + 1.0]
        + ([float(load.df["t_end"].max())] if len(load.df) else [])
        + ([float(samples["t"].max())] if not samples.empty else [])
    )

    xs, ys = _level_steps(load, t0, t_end)
    unit = "requests/s" if load.mode == "open" else "requests in flight"
    if xs:
        ax1.step(
            xs,
            ys,
            where="post",
            color="black",
            lw=1.5,
            label=f"offered load ({'rate' if load.mode == 'open' else 'concurrency'}, {unit})",
        )
    if per_bin is not None and not per_bin.empty:
        ax1.bar(
            per_bin["t_s"],
            per_bin["ok_rps"],
            width=bin_s,
            align="edge",
            alpha=0.45,
            color="tab:blue",
            label="answered per second (ok)",
        )
        if per_bin["failed_rps"].any():
            ax1.bar(
                per_bin["t_s"],
                per_bin["failed_rps"],
                width=bin_s,
                align="edge",
                bottom=per_bin["ok_rps"],
                color="red",
                label="failed per second",
            )
    ax1.set_ylabel("requests per second")
    ax1.set_title(title)
    ax1.legend(loc="upper left", fontsize=8)

    counts = samples.assign(t_s=samples["t"] - t0) if not samples.empty else samples
    if not counts.empty:
        ax2.step(
            counts["t_s"],
            counts["target"],
            where="post",
            color="black",
            ls="--",
            lw=1.3,
            label="autoscaler's target",
        )
        ax2.step(
            counts["t_s"],
            counts["running"],
            where="post",
            color="tab:green",
            lw=2,
            label="RUNNING replicas",
        )
        if counts["starting"].any():
            ax2.fill_between(
                counts["t_s"],
                counts["running"],
                counts["running"] + counts["starting"],
                step="post",
                color="tab:orange",
                alpha=0.4,
                label="STARTING",
            )
        top = max(1.0, float(counts[["target", "running"]].max().max()))
        ax2.set_ylim(-0.1, top + 0.9)
    ax2.set_ylabel("replicas (count)")
    ax2.legend(loc="upper left", fontsize=8)

    if per_bin is not None and not per_bin.empty:
        ax3.plot(per_bin["t_s"] + bin_s / 2, per_bin["latency_p50_s"], marker=".", label="p50")
        ax3.plot(per_bin["t_s"] + bin_s / 2, per_bin["latency_p90_s"], marker=".", label="p90")
        ax3.legend(loc="upper left", fontsize=8)
    ax3.set_ylabel("latency (s)")
    ax3.set_xlabel("time since the load started (s)")

    if events is not None and not events.empty:
        for _, ev in events.iterrows():
            x = ev["t"] - t0
            for ax in (ax1, ax2, ax3):
                ax.axvline(x, color="grey", ls=":", lw=1)
            ax2.annotate(
                ev["event"],
                (x, 0),
                xytext=(3, 3),
                textcoords="offset points",
                fontsize=8,
                rotation=90,
                va="bottom",
            )
    fig.tight_layout()
    return fig


# --- the dashboard ----------------------------------------------------------------------------


def jupyter_frontend_attached() -> bool:
    """True in a kernel that a Jupyter server started for a person (JupyterLab, Notebook);
    False under papermill, nbval or a plain script, where nobody can move a slider."""
    return bool(os.environ.get("JPY_SESSION_NAME"))


class AutoscalingDashboard:
    """Offered load, replicas, throughput and latency of one deployment, refreshed while it runs.

    :meth:`start_live` shows a slider (the offered rate, requests/s) and a figure that redraws
    every ``refresh_s`` while an open-loop load runs in the background for ``duration_s``: the
    cell returns at once, so the slider stays responsive. :meth:`run_scripted` runs the same
    load with the rate following ``levels`` (what a person would do with the slider) and
    returns when it is over; :meth:`figure` is then the static picture.
    """

    def __init__(
        self,
        cluster: ClusterHandle,
        *,
        app: str,
        deployment: str,
        url: str,
        request: RequestSpec | None = None,
        max_rate: float = 50.0,
        initial_rate: float = 5.0,
        refresh_s: float = 1.0,
    ) -> None:
        self.cluster, self.app, self.deployment = cluster, app, deployment
        self.max_rate, self.refresh_s = max_rate, refresh_s
        self.generator = LoadGenerator(url, request, rate=initial_rate)
        self.sampler = ReplicaSampler(cluster, app, deployment, period_s=0.5)
        self._figure: Any = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self.refreshes = 0

    def _snapshot_figure(self) -> matplotlib.figure.Figure:
        from helpers.plotting import NotebookFigure

        if self._figure is None:
            self._figure = NotebookFigure(figsize=(10, 7.5))
        return plot_autoscaling(
            self.sampler.results(),
            self.generator.results(),
            figure=self._figure,
            title=f"{self.app}: offered load, replicas and latency (live)",
        )

    def numbers(self) -> dict[str, Any]:
        """The latest values: offered rate, replicas, throughput and p50 latency (last 5 s)."""
        import numpy as np

        now = time.time()
        df = self.generator.results().df
        recent = df[(df["t_end"] >= now - 5) & df["ok"]] if len(df) else df
        samples = self.sampler.results()
        last = samples.iloc[-1] if len(samples) else None
        return {
            "offered_rps": self.generator.level,
            "throughput_rps": round(len(recent) / 5.0, 1),
            "latency_p50_s": round(float(np.median(recent["latency_s"])), 3)
            if len(recent)
            else None,
            "running_replicas": int(last["running"]) if last is not None else None,
            "target_replicas": last["target"] if last is not None else None,
        }

    def start_live(self, duration_s: float = 120.0) -> Any:
        """Show the slider and the live figure; the load runs ``duration_s`` in the background."""
        import ipywidgets as widgets

        from helpers.plotting import png_bytes

        slider = widgets.FloatSlider(
            value=self.generator.level,
            min=0.0,
            max=self.max_rate,
            step=1.0,
            description="offered req/s",
            continuous_update=False,
            layout={"width": "60%"},
        )
        slider.observe(lambda change: self.generator.set_level(change["new"]), names="value")
        stop_button = widgets.Button(description="stop now")
        stop_button.on_click(lambda _: self._done.set())
        numbers = widgets.HTML()
        image = widgets.Image(format="png")
        self.sampler.start()
        self.generator.start(duration_s=duration_s)

        def refresh() -> None:
            try:
                while not self._done.is_set() and self.generator.running:
                    n = self.numbers()
                    numbers.value = (
                        f"<b>offered</b> {n['offered_rps']:.0f} req/s &nbsp; "
                        f"<b>answered</b> {n['throughput_rps']} req/s &nbsp; "
                        f"<b>p50</b> {n['latency_p50_s']} s &nbsp; "
                        f"<b>replicas</b> {n['running_replicas']} running "
                        f"(target {n['target_replicas']})"
                    )
                    image.value = png_bytes(self._snapshot_figure(), dpi=80)
                    self.refreshes += 1
                    self._done.wait(self.refresh_s)
                self.generator.stop()
                self.sampler.stop()
                image.value = png_bytes(self._snapshot_figure(), dpi=80)
                numbers.value += " &nbsp; <i>(finished)</i>"
            finally:
                # Even when a refresh raised (a failed sampler raises from results()): no load
                # left running, and wait() returns (it raises the sampler's error).
                self.generator.stop()
                self._done.set()

        self._thread = threading.Thread(target=refresh, daemon=True, name="autoscaling-dashboard")
        self._thread.start()
        return widgets.VBox([widgets.HBox([slider, stop_button]), numbers, image])

    def run_scripted(self, levels: Sequence[tuple[float, float]]) -> AutoscalingDashboard:
        """Run the load with the rate following ``levels`` ``[(seconds, rate), ...]`` (the
        slider moved by a script), refreshing the figure as a live run would; block until done."""
        self.sampler.start()
        self.generator.start(schedule=levels)
        try:
            while self.generator.running:
                self._snapshot_figure()
                self.refreshes += 1
                time.sleep(self.refresh_s)
        finally:
            self.generator.stop()
            self.sampler.stop()
            self._done.set()
        return self

    def wait(self, timeout_s: float | None = None) -> LoadResult:
        """Wait for the run to end (live or scripted) and return the load's results."""
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self._done.wait(timeout=timeout_s)
        self.sampler.stop()  # raises what ended the sampling, if something did
        return self.generator.stop()

    def figure(self) -> matplotlib.figure.Figure:
        """The figure as of now (after :meth:`wait`: the whole run)."""
        fig = self._snapshot_figure()
        fig.axes[0].set_title(f"{self.app}: offered load, replicas and latency")
        return fig

    def stop(self) -> None:
        """End the run now (idempotent)."""
        self._done.set()
        self.generator.stop()
        self.sampler.stop()
