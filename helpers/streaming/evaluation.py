"""The streaming service's evaluation: users, a batch sweep, a report.

* :func:`batch_sweep` - for every ``max_batch_size`` x ``batch_timeout_ms`` pair: set it live
  through ``POST /ray/configure``, run simulated users (:func:`~helpers.streaming.client.
  simulate_users`) for a while, and record throughput, latencies and the batch sizes the
  service actually formed (from ``/ray/stats`` before and after);
* :func:`write_report` - the usual outputs, in one folder: ``summary.json``,
  ``user_test_charts.png`` (latency over time, tokens per user, time to first text),
  ``batch_test_heatmaps.png`` (throughput, p90 latency and mean batch size over the sweep)
  and a README-style ``README.md`` that ties them together, written with lesson 06's
  :mod:`helpers.evaluation` (heatmaps, Markdown tables, the report folder);
* :func:`count_code_lines` - lines of code of a module, for comparing implementations.

Usage::

    sweep = await batch_sweep(url, batch_sizes=[1, 8], timeouts_ms=[5, 50], users=8,
                              duration_s=10, max_tokens=32, token=service.token)
    paths = write_report(BUILD_DIR / "streaming" / "evaluation", runs={"actors": records},
                         sweep=sweep, summary={...})

Introduced in notebooks/12_streaming_sessions.ipynb.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.streaming.client import StreamingClient, simulate_users, summarize

if TYPE_CHECKING:  # pragma: no cover
    import matplotlib.figure
    import pandas as pd

__all__ = [
    "batch_sweep",
    "mean_batch_size_between",
    "user_charts",
    "write_report",
    "count_code_lines",
    "REPORT_FILES",
]

REPORT_FILES = ("summary.json", "user_test_charts.png", "batch_test_heatmaps.png", "README.md")


def mean_batch_size_between(before: Mapping[str, Any], after: Mapping[str, Any]) -> float:
    """Mean size of the batches formed between two ``/ray/stats`` answers (0 if none)."""
    count = after["batches"] - before["batches"]
    if count <= 0:
        return 0.0
    return round((after["batched_requests"] - before["batched_requests"]) / count, 2)


async def batch_sweep(
    base_url: str,
    *,
    batch_sizes: Sequence[int],
    timeouts_ms: Sequence[float],
    users: int,
    duration_s: float,
    max_tokens: int,
    label: str = "",
    token: str | None = None,
) -> pd.DataFrame:
    """One row per (``max_batch_size``, ``batch_timeout_ms``): set live, then measured.

    The ``users`` sessions are opened once and used at every point (each point measures the
    batching, not session set-up), then deleted.
    """
    import pandas as pd

    rows = []
    async with StreamingClient(base_url, token) as client:
        opened = await asyncio.gather(*(client.init_session(f"sweep-{u}") for u in range(users)))
        sessions = [session["session_id"] for session in opened]
        try:
            for size in batch_sizes:
                for timeout in timeouts_ms:
                    await client.configure(
                        max_batch_size=int(size),
                        batch_timeout_ms=float(timeout),
                        enable_dynamic_batching=True,
                    )
                    before = await client.stats()
                    records = await simulate_users(
                        base_url,
                        users=users,
                        duration_s=duration_s,
                        max_tokens=max_tokens,
                        session_ids=sessions,
                        token=token,
                    )
                    after = await client.stats()
                    row = summarize(records, label)
                    row.update(
                        max_batch_size=int(size),
                        batch_timeout_ms=float(timeout),
                        users=users,
                        mean_batch_size=mean_batch_size_between(before, after),
                        batches=after["batches"] - before["batches"],
                    )
                    rows.append(row)
        finally:
            await asyncio.gather(*(client.delete_session(session) for session in sessions))
    return pd.DataFrame(rows)


def user_charts(runs: Mapping[str, pd.DataFrame]) -> matplotlib.figure.Figure:
    """Three panels over :func:`simulate_users` runs: latency over time, tokens per user, and
    the distribution of the time to first text; one colour per run."""
    from helpers.plotting import NotebookFigure  # not pyplot: no backend changes, shown as a PNG

    fig = NotebookFigure(figsize=(15, 4))
    timeline, per_user, ttft = fig.subplots(1, 3)
    width = 0.8 / max(1, len(runs))
    for k, (label, frame) in enumerate(runs.items()):
        done = frame[frame["outcome"] == "done"]
        timeline.scatter(done["t_s"], done["latency_s"] * 1000, s=10, label=label)
        tokens = done.groupby("user")["tokens"].sum()
        per_user.bar(tokens.index + k * width, tokens.values, width=width, label=label)
        ttft.hist(done["ttft_s"] * 1000, bins=20, alpha=0.6, label=label)
    timeline.set(
        title="Latency of each answer during the run",
        xlabel="time since the start (s)",
        ylabel="latency of one answer (ms)",
    )
    per_user.set(title="Tokens received per user", xlabel="user", ylabel="tokens")
    ttft.set(title="Time to first text", xlabel="time to first text (ms)", ylabel="requests")
    for axis in (timeline, per_user, ttft):
        axis.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_report(
    out_dir: str | Path,
    *,
    runs: Mapping[str, pd.DataFrame],
    sweep: pd.DataFrame,
    summary: Mapping[str, Any] | None = None,
    title: str = "Streaming sessions: evaluation",
    notes: str = "",
) -> dict[str, Path]:
    """Write :data:`REPORT_FILES` to ``out_dir`` (with :func:`helpers.evaluation.write_evaluation`);
    return their paths by file name.

    ``runs`` maps a label (an implementation) to :func:`simulate_users` records; ``sweep`` is
    a :func:`batch_sweep` table; ``summary`` adds plain data to ``summary.json``.
    """
    import pandas as pd

    from helpers.evaluation import markdown_table, plot_heatmaps, write_evaluation

    per_run = [summarize(frame, label) for label, frame in runs.items()]
    heatmaps = plot_heatmaps(
        sweep.assign(users=sweep["users"].astype(float)),
        x="batch_timeout_ms",
        y="max_batch_size",
        panel="users",
        title="Batch settings of the scheduler, measured",
        metrics={
            "tokens_per_s": "throughput (tokens/s)",
            "p90_latency_s": "p90 latency (s)",
            "mean_batch_size": "mean batch formed (requests)",
        },
    )
    heatmaps.set_layout_engine("constrained")  # one panel per row: keep titles off the labels
    best = sweep.sort_values("tokens_per_s", ascending=False).iloc[0]
    columns = [
        "max_batch_size",
        "batch_timeout_ms",
        "mean_batch_size",
        "tokens_per_s",
        "p50_latency_s",
        "p90_latency_s",
        "p50_ttft_s",
        "errors",
    ]
    generated = time.strftime("%Y-%m-%dT%H:%M:%S")
    report = "\n".join(
        [
            f"# {title}",
            "",
            f"Generated {generated} by `helpers.streaming.evaluation`.",
            "",
            notes,
            "",
            "## Simulated users",
            "",
            markdown_table(pd.DataFrame(per_run)),
            "",
            "![user charts](user_test_charts.png)",
            "",
            "## Batch size x timeout",
            "",
            markdown_table(sweep[columns]),
            "",
            f"Highest throughput: `max_batch_size={int(best['max_batch_size'])}`, "
            f"`batch_timeout_ms={best['batch_timeout_ms']:g}` ({best['tokens_per_s']:.0f} tokens/s, "
            f"p90 latency {best['p90_latency_s']:.3f} s).",
            "",
            "![batch heatmaps](batch_test_heatmaps.png)",
            "",
        ]
    )
    data = json.loads(
        json.dumps(
            {
                "title": title,
                "generated_at": generated,
                "runs": per_run,
                "sweep": sweep.to_dict("records"),
                **dict(summary or {}),
            },
            default=str,
        )
    )
    paths = write_evaluation(
        out_dir,
        summary=data,
        report_md=report,
        figures={"user_test_charts": user_charts(runs), "batch_test_heatmaps": heatmaps},
    )
    return {path.name: path for path in paths.values()}


def count_code_lines(path: str | Path) -> int:
    """Lines of code in a Python file: not blank, not comments, not docstrings."""
    import ast
    import io
    import tokenize

    source = Path(path).read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if ast.get_docstring(node, clean=False) is not None:
                first = node.body[0]
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
        tokenize.ENCODING,
    }
    code: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            code.update(range(token.start[0], token.end[0] + 1))
    return len(code - docstrings)
