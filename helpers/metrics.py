"""Ray's Prometheus metrics, scraped for real: targets, samples, time series, rates, quantiles.

Every Ray node runs a metrics agent that serves all metrics of that node (Ray's own, Serve's,
vLLM's, and the custom metrics of your deployments) in Prometheus' text format at
``http://NODE:METRICS_EXPORT_PORT/metrics`` (``ray start --metrics-export-port``). The head's
dashboard lists those targets for Prometheus' HTTP service discovery at
``/api/prometheus/sd`` (and in the file ``prom_metrics_service_discovery.json`` of the
cluster's temp folder, for ``file_sd_configs``). This module does what a Prometheus server
would do, in a few lines, so a lesson can look at the numbers without one:

* :func:`prometheus_targets` - the ``host:port`` of every node's metrics endpoint;
* :func:`scrape` / :func:`scrape_cluster` - one scrape as a DataFrame of samples;
* :class:`MetricsRecorder` - scrape every ``period_s`` in a background thread;
* :func:`series`, :func:`counter_rate`, :func:`histogram_quantile` - the PromQL basics
  (``sum by``, ``rate``, ``histogram_quantile``) over what was recorded.

Ray's processes push their metrics to the agent every ``metrics_report_interval_ms``
(10 s by default; a node started with ``RAY_metrics_report_interval_ms=1000`` reports
every second), so a value seen in a scrape is up to that old.

Usage::

    from helpers.metrics import MetricsRecorder, counter_rate
    with MetricsRecorder(cluster, prefixes=("ray_serve_",), period_s=1.0) as rec:
        send_requests(url, n=200)
    rates = counter_rate(rec.results(), "ray_serve_num_http_requests_total", by=("route",))

Introduced in notebooks/09_observability.ipynb.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import requests

from helpers.auth import auth_headers
from helpers.errors import ClusterNotRunningError, WorkbookError
from helpers.recording import Recorder

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from helpers.cluster import ClusterHandle

__all__ = [
    "SERVE_PREFIX",
    "VLLM_PREFIX",
    "prometheus_targets",
    "scrape",
    "scrape_cluster",
    "metric_names",
    "MetricsRecorder",
    "series",
    "counter_rate",
    "histogram_quantile",
]

#: Prefix of Ray Serve's own metrics (requests, latencies, replicas, ...).
SERVE_PREFIX = "ray_serve_"
#: Prefix of vLLM's engine metrics as ``ray.serve.llm`` exports them through Ray.
VLLM_PREFIX = "ray_vllm"

_COLUMNS = ["t", "target", "name", "labels", "value"]


def prometheus_targets(cluster: ClusterHandle, *, timeout_s: float = 10.0) -> list[str]:
    """``host:port`` of each node's metrics endpoint, from the dashboard's service discovery.

    That is what Prometheus itself reads with ``http_sd_configs`` pointed at
    ``DASHBOARD/api/prometheus/sd`` (the request needs the cluster's token).
    """

    url = f"{cluster.dashboard_url}/api/prometheus/sd"
    try:
        resp = requests.get(url, headers=auth_headers(cluster.token_path), timeout=timeout_s)
    except requests.RequestException as err:
        raise ClusterNotRunningError(
            f"Could not reach the dashboard at {cluster.dashboard_url}.",
            "check the cluster runs with its dashboard (cluster.nodes_table()).",
            details=str(err)[-800:],
        ) from err
    if resp.status_code != 200:
        raise WorkbookError(
            f"{url} answered HTTP {resp.status_code}.",
            "a 401/403 means this client lacks the cluster's token (cluster.token_path).",
            details=resp.text[:500],
        )
    targets: list[str] = []
    for group in resp.json():
        targets += [t for t in group.get("targets", []) if t not in targets]
    return targets


def _keep(name: str, prefixes: Sequence[str] | None) -> bool:
    return not prefixes or any(name.startswith(p) for p in prefixes)


def _filter_text(text: str, prefixes: Sequence[str] | None) -> str:
    """Only the lines of the families we want: parsing all of Ray's metrics is slow."""
    if not prefixes:
        return text
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(" ", 3)
            name = parts[2] if len(parts) > 2 else ""
        else:
            name = line.split("{", 1)[0].split(" ", 1)[0]
        if _keep(name, prefixes):
            out.append(line)
    return "\n".join(out) + "\n"


def scrape(
    target: str,
    *,
    prefixes: Sequence[str] | None = (SERVE_PREFIX,),
    timeout_s: float = 10.0,
) -> pd.DataFrame:
    """One scrape of ``target`` (``host:port`` or a URL): a row per sample.

    Columns: ``t`` (time of the scrape), ``target``, ``name`` (the sample's name, with
    ``_bucket``/``_sum``/``_count``/``_total`` as Prometheus writes it), ``labels`` (a dict)
    and ``value``. Only metric families starting with one of ``prefixes`` are kept
    (``None``: everything).
    """
    import pandas as pd
    from prometheus_client.parser import text_string_to_metric_families

    url = target if target.startswith("http") else f"http://{target}/metrics"
    now = time.time()
    try:
        resp = requests.get(url, timeout=timeout_s)
        resp.raise_for_status()
    except requests.RequestException as err:
        raise WorkbookError(
            f"Could not scrape {url}.",
            "check the node is alive and its metrics export port is reachable.",
            details=str(err)[-500:],
        ) from err
    rows = []
    for family in text_string_to_metric_families(_filter_text(resp.text, prefixes)):
        for sample in family.samples:
            if not _keep(sample.name, prefixes):
                continue
            rows.append(
                {
                    "t": now,
                    "target": target,
                    "name": sample.name,
                    "labels": dict(sample.labels),
                    "value": float(sample.value),
                }
            )
    return pd.DataFrame.from_records(rows, columns=_COLUMNS)


def scrape_cluster(
    cluster: ClusterHandle,
    *,
    prefixes: Sequence[str] | None = (SERVE_PREFIX,),
    targets: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One scrape of every node of ``cluster`` (see :func:`scrape`), concatenated.

    A target that does not answer is left out, and named in the result's
    ``attrs["unreachable"]``: the dashboard's target list lags a node that has just stopped by
    a few seconds. When no target answers, the error is raised.
    """
    import pandas as pd

    frames, unreachable, error = [], [], None
    for target in targets or prometheus_targets(cluster):
        try:
            frames.append(scrape(target, prefixes=prefixes))
        except WorkbookError as err:
            unreachable.append(target)
            error = err
    if error is not None and not frames:
        raise error
    frames = [f for f in frames if not f.empty]
    result = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=_COLUMNS)
    result.attrs["unreachable"] = unreachable
    return result


def metric_names(samples: pd.DataFrame, prefix: str = "") -> list[str]:
    """The distinct sample names in ``samples`` that start with ``prefix``, sorted."""
    return sorted(n for n in samples["name"].unique() if n.startswith(prefix))


class MetricsRecorder(Recorder["pd.DataFrame", "pd.DataFrame"]):
    """Scrape the cluster every ``period_s`` in a background thread; keep every sample.

    Failed scrapes (a node restarting) are counted in ``errors`` and skipped. ``stop()`` takes
    one last scrape and returns everything recorded, as :meth:`results` does.
    """

    def __init__(
        self,
        cluster: ClusterHandle,
        *,
        prefixes: Sequence[str] | None = (SERVE_PREFIX,),
        period_s: float = 1.0,
    ) -> None:
        super().__init__(period_s=period_s, name="metrics-recorder")
        self.cluster = cluster
        self.prefixes = tuple(prefixes) if prefixes else None
        self.errors = 0
        self._targets: list[str] = []

    def on_start(self) -> None:
        # Once, at start: a dashboard that cannot list the nodes fails the cell, not the thread.
        self._targets = prometheus_targets(self.cluster)

    def sample(self) -> list[pd.DataFrame]:
        try:
            return [scrape_cluster(self.cluster, prefixes=self.prefixes, targets=self._targets)]
        except WorkbookError:
            self.errors += 1
            return []

    def on_stop(self) -> None:
        self.keep(self.sample())  # a last scrape, so the end of the load is in the data

    @property
    def scrapes(self) -> int:
        """Scrapes that answered so far."""
        return len(self.rows())

    def results(self) -> pd.DataFrame:
        import pandas as pd

        frames = [f for f in self.rows() if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=_COLUMNS)


def _select(samples: pd.DataFrame, name: str, where: dict[str, str]) -> pd.DataFrame:
    df = samples[samples["name"] == name]
    for key, value in where.items():
        df = df[df["labels"].map(lambda labels, k=key, v=value: labels.get(k) == v)]
    return df


def series(
    samples: pd.DataFrame,
    name: str,
    *,
    by: Iterable[str] = (),
    **where: str,
) -> pd.DataFrame:
    """``sum by (BY) (NAME{WHERE})`` at each scrape: index ``t``, one column per group.

    Samples of the same scrape (same ``t`` per target) are summed over every label not in
    ``by`` - over replicas, nodes and processes. ``where`` keeps only samples whose labels
    equal the given values (``series(df, "ray_serve_deployment_request_counter_total",
    by=("deployment",), application="gateway")``).
    """
    import pandas as pd

    df = _select(samples, name, where)
    by = tuple(by)
    if df.empty:
        return pd.DataFrame()
    # One scrape of the whole cluster spans several targets scraped a few ms apart: round
    # to the scrape they belong to by taking each target's scrape index.
    df = df.copy()
    df["scrape"] = df.groupby("target")["t"].rank(method="dense").astype(int)
    df["group"] = df["labels"].map(
        lambda labels: " / ".join(str(labels.get(k, "")) for k in by) if by else name
    )
    table = df.pivot_table(index="scrape", columns="group", values="value", aggfunc="sum")
    times = df.groupby("scrape")["t"].max()
    table.index = times.loc[table.index].to_numpy()
    table.index.name = "t"
    table.columns.name = None
    return table.sort_index()


def counter_rate(
    samples: pd.DataFrame,
    name: str,
    *,
    by: Iterable[str] = (),
    **where: str,
) -> pd.DataFrame:
    """``rate(NAME[scrape interval])`` summed by ``by``: per-second increase between scrapes.

    A counter that restarts (a replica replaced) drops back; such a step counts as the new
    value, as Prometheus' ``rate`` does.
    """
    table = series(samples, name, by=by, **where)
    if table.empty:
        return table
    table = table.ffill().fillna(0.0)
    diff = table.diff()
    diff = diff.where(diff >= 0, table)  # a reset: the counter started again from zero
    seconds = table.index.to_series().diff()
    return diff.div(seconds, axis=0).iloc[1:]


def histogram_quantile(
    samples: pd.DataFrame,
    name: str,
    q: float,
    *,
    since: float | None = None,
    until: float | None = None,
    **where: str,
) -> float:
    """The ``q`` quantile of histogram ``name`` (without ``_bucket``) over a time window.

    Like PromQL's ``histogram_quantile(q, increase(NAME_bucket[window]))``: the increase of
    each cumulative bucket between the first scrape at or after ``since`` and the last one
    at or before ``until`` (default: all that was recorded), then linear interpolation inside
    the bucket where the quantile falls. NaN when nothing was observed in the window.
    """
    if not 0.0 <= q <= 1.0:
        raise WorkbookError(f"q must be between 0 and 1, not {q}.", "pass e.g. 0.5 or 0.99.")
    df = _select(samples, f"{name}_bucket", where)
    if since is not None:
        df = df[df["t"] >= since]
    if until is not None:
        df = df[df["t"] <= until]
    if df.empty:
        return math.nan
    df = df.copy()
    df["le"] = df["labels"].map(lambda labels: float(labels["le"]))
    df["scrape"] = df.groupby("target")["t"].rank(method="dense").astype(int)
    per_scrape = df.pivot_table(index="scrape", columns="le", values="value", aggfunc="sum")
    per_scrape = per_scrape.ffill().fillna(0.0)
    increase = (per_scrape.iloc[-1] - per_scrape.iloc[0]).clip(lower=0.0).sort_index()
    total = float(increase.iloc[-1])
    if total <= 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in increase.items():
        if count >= rank:
            if math.isinf(upper_bound):
                return float(lower_bound)  # in the overflow bucket: the largest finite bound
            if count == lower_count:
                return float(upper_bound)
            return float(
                lower_bound
                + (upper_bound - lower_bound) * (rank - lower_count) / (count - lower_count)
            )
        lower_bound, lower_count = float(upper_bound), float(count)
    return float(lower_bound)
