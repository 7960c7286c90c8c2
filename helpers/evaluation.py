"""Parameter sweeps and their evaluation outputs: heatmaps, ``summary.json``, a Markdown report.

A serving team's evaluation usually writes, after a batch-size x timeout test, a
``summary.json``, charts and heatmaps as PNG files, and a README-style report. This module is
that, for any sweep:

* :func:`grid_sweep` - run a measurement at every point of a grid (the first parameter varies
  slowest, so a costly setting is changed as rarely as possible), one row per point;
* :func:`plot_heatmaps` - one heatmap per metric (rows) and per value of a third parameter
  (columns), the numbers written in the cells;
* :func:`markdown_table` - a DataFrame as a Markdown table (no extra dependency);
* :func:`write_evaluation` - ``summary.json``, one PNG per figure and ``README.md`` into a folder.

Usage::

    sweep = grid_sweep({"max_batch_size": [1, 8, 32], "concurrency": [1, 32]}, measure)
    fig = plot_heatmaps(sweep, x="batch_wait_timeout_s", y="max_batch_size", panel="concurrency",
                        metrics={"throughput_rps": "requests/s"})
    write_evaluation(BUILD_DIR / "reports" / "06_batching", summary={...},
                     figures={"batch_heatmaps": fig}, report_md="# ...")

Introduced in notebooks/06_batching.ipynb.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import matplotlib.figure
    import pandas as pd

__all__ = ["grid_sweep", "plot_heatmaps", "markdown_table", "write_evaluation"]


def grid_sweep(
    grid: Mapping[str, Sequence[Any]],
    measure: Callable[[dict[str, Any]], Mapping[str, Any]],
    *,
    progress: bool = True,
) -> pd.DataFrame:
    """Call ``measure(point)`` for every combination of ``grid``'s values; one row per point.

    The first key of ``grid`` changes slowest. A row holds the point's values, then what
    ``measure`` returned.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if not grid or any(len(values) == 0 for values in grid.values()):
        raise ValueError("every parameter of the grid needs at least one value")
    names = list(grid)
    points = [dict(zip(names, combo)) for combo in itertools.product(*grid.values())]
    rows = []
    for point in tqdm(points, desc="sweep", disable=not progress, leave=False):
        rows.append({**point, **dict(measure(dict(point)))})
    return pd.DataFrame(rows)


def plot_heatmaps(
    df: pd.DataFrame,
    *,
    x: str,
    y: str,
    panel: str,
    metrics: Mapping[str, str],
    title: str = "",
    formats: Mapping[str, str] | None = None,
) -> matplotlib.figure.Figure:
    """Heatmaps of ``metrics`` (rows; the value is the colour bar's label) over ``x`` and ``y``,
    one column per value of ``panel``. Cells show the number (``formats[metric]``, default
    ``"{:.3g}"``); each row shares one colour scale so panels compare."""
    import numpy as np

    from helpers.plotting import NotebookFigure

    panels = sorted(df[panel].unique())
    xs, ys = sorted(df[x].unique()), sorted(df[y].unique())
    fig = NotebookFigure(figsize=(3.6 * len(panels) + 1.2, 3.0 * len(metrics) + 0.6))
    axes = fig.subplots(len(metrics), len(panels), squeeze=False)
    for row, (metric, label) in enumerate(metrics.items()):
        fmt = (formats or {}).get(metric, "{:.3g}")
        values = df[metric].astype(float)
        vmin, vmax = float(values.min()), float(values.max())
        image = None
        for col, value in enumerate(panels):
            ax = axes[row][col]
            part = df[df[panel] == value].pivot_table(
                index=y, columns=x, values=metric, aggfunc="mean"
            )
            part = part.reindex(index=ys, columns=xs)
            image = ax.imshow(
                part.to_numpy(dtype=float),
                origin="lower",
                aspect="auto",
                cmap="viridis",
                vmin=vmin,
                vmax=vmax,
            )
            for (i, j), cell in np.ndenumerate(part.to_numpy(dtype=float)):
                if not math.isnan(cell):
                    ax.text(
                        j,
                        i,
                        fmt.format(cell),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if cell < (vmin + vmax) / 2 else "black",
                    )
            ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
            ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
            ax.set_xlabel(x)
            ax.set_ylabel(y)
            ax.set_title(f"{label}\n{panel} = {value:g}", fontsize=9)
        if image is not None:
            fig.colorbar(image, ax=list(axes[row]), label=label, shrink=0.9)
    if title:
        fig.suptitle(title)
    return fig


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(df: pd.DataFrame) -> str:
    """``df`` as a GitHub-flavoured Markdown table (the index is left out)."""
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def write_evaluation(
    folder: str | Path,
    *,
    summary: Mapping[str, Any],
    figures: Mapping[str, matplotlib.figure.Figure],
    report_md: str,
) -> dict[str, Path]:
    """Write ``summary.json``, ``<name>.png`` per figure and ``README.md`` into ``folder``.

    Returns the paths by name (``"summary"``, ``"report"``, and each figure's name). The JSON
    must be plain data (numbers, strings, lists, dicts): anything else is an error here, not
    a file that cannot be read back.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["summary"] = out / "summary.json"
    paths["summary"].write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    for name, fig in figures.items():
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=100, bbox_inches="tight")
    paths["report"] = out / "README.md"
    paths["report"].write_text(report_md.rstrip() + "\n")
    return paths
