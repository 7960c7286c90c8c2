"""Helpers of lessons 05 and 06 that need no cluster: the autoscaling config table, replica
counts and the figure, the custom policy (called with Serve's own AutoscalingContext), the
batched model and its config, the sweep and the evaluation files."""

from __future__ import annotations

import base64
import json
import math

import pandas as pd
import pytest

from helpers.autoscaling import (
    SAMPLE_COLUMNS,
    autoscaling_fields,
    jupyter_frontend_attached,
    legacy_names,
    plot_autoscaling,
    seconds_until,
)
from helpers.evaluation import grid_sweep, markdown_table, plot_heatmaps, write_evaluation
from helpers.load import LoadResult


def _png_shown(fig) -> bytes:
    """What a notebook shows for ``fig`` as ``image/png`` (empty: it would show only text)."""
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(fig)
    png = data.get("image/png", b"")
    return png if isinstance(png, bytes) else base64.b64decode(png)


# -- autoscaling ---------------------------------------------------------------------------------


def test_fields_and_defaults_come_from_the_library() -> None:
    from ray.serve.config import AutoscalingConfig

    table = autoscaling_fields().set_index("field")
    assert list(table.index) == list(AutoscalingConfig.model_fields)
    defaults = AutoscalingConfig()
    for name in (
        "min_replicas",
        "max_replicas",
        "target_ongoing_requests",
        "upscale_delay_s",
        "downscale_delay_s",
        "look_back_period_s",
        "downscale_to_zero_delay_s",
    ):
        assert table.loc[name, "default"] == getattr(defaults, name)
    assert table.loc["aggregation_function", "default"] == "mean"
    assert (
        table.loc["smoothing_factor", "deprecated"] and not table.loc["min_replicas", "deprecated"]
    )


def test_legacy_names_are_classified() -> None:
    effects = legacy_names(
        {"target_num_ongoing_requests_per_replica": 5, "smoothing_factor": 0.5, "min_replicas": -1}
    ).set_index("old name")["effect in this Ray"]
    assert effects["target_num_ongoing_requests_per_replica"] == "ignored silently"
    assert effects["smoothing_factor"] == "accepted (deprecated)"
    assert effects["min_replicas"].startswith("rejected")


def _samples() -> pd.DataFrame:
    rows = [
        {
            "t": 100.0 + t,
            "status": "HEALTHY",
            "trigger": None,
            "target": target,
            "running": running,
            "starting": starting,
            "stopping": 0,
            "message": "",
        }
        for t, target, running, starting in [
            (0, 1, 1, 0),
            (1, 3, 1, 2),
            (2, 3, 2, 1),
            (3, 3, 3, 0),
            (4, 1, 3, 0),
            (5, 1, 1, 0),
        ]
    ]
    return pd.DataFrame(rows, columns=SAMPLE_COLUMNS)


def test_seconds_until() -> None:
    samples = _samples().assign(t_s=lambda df: df["t"] - 100.0)
    assert seconds_until(samples, "running", 2, after_s=1.0) == 1.0
    assert seconds_until(samples, "running", 1, after_s=3.0, at_most=True) == 2.0
    assert seconds_until(samples, "running", 9) is None


def test_plot_autoscaling_draws_three_panels() -> None:
    df = pd.DataFrame(
        {
            "i": [0, 1],
            "level": [5.0, 5.0],
            "t_sched": [100.1, 100.3],
            "t_start": [100.1, 100.3],
            "t_end": [100.4, 100.6],
            "latency_s": [0.3, 0.3],
            "ok": [True, True],
            "status": [200, 200],
            "error": ["", ""],
        }
    )
    load = LoadResult(
        "http://x/", "open", 5.0, df, started_at=100.0, levels=[(100.0, 5.0), (103.0, 20.0)]
    )
    fig = plot_autoscaling(_samples(), load, title="t")
    assert len(fig.axes) == 3 and fig.axes[0].get_title() == "t"
    assert fig.axes[2].get_xlabel().startswith("time since")
    assert max(fig.axes[1].get_lines()[1].get_ydata()) == 3  # running replicas drawn
    # A notebook shows it as a picture, not as "<Figure size 1000x750 with 3 Axes>"
    assert _png_shown(fig)[:4] == b"\x89PNG"


def test_frontend_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert not jupyter_frontend_attached()
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/05_autoscaling.ipynb")
    assert jupyter_frontend_attached()


def test_spare_replica_policy_with_serves_context() -> None:
    from ray.serve._private.common import DeploymentID
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    from helpers.apps.spare_policy import SpareReplicaPolicy

    def ctx(in_flight: float, state: dict) -> AutoscalingContext:
        return AutoscalingContext(
            deployment_id=DeploymentID("TimedWork", "timed"),
            deployment_name="TimedWork",
            app_name="timed",
            current_num_replicas=1,
            target_num_replicas=1,
            running_replicas=[],
            total_num_requests=in_flight,
            total_queued_requests=0.0,
            aggregated_metrics={},
            raw_metrics={},
            capacity_adjusted_min_replicas=1,
            capacity_adjusted_max_replicas=4,
            policy_state=state,
            last_scale_up_time=None,
            last_scale_down_time=None,
            current_time=0.0,
            config=AutoscalingConfig(min_replicas=1, max_replicas=4),
        )

    policy = SpareReplicaPolicy(target_per_replica=2, spare=1)
    desired, state = policy(ctx(1.0, {}))
    assert desired == 2 and state == {"ticks": 1, "last_ongoing": 1.0}  # 1 needed + 1 spare
    assert policy(ctx(5.0, state))[0] == 4  # 3 needed + 1 spare
    assert policy(ctx(50.0, state))[0] == 4  # never above max_replicas
    assert policy(ctx(0.0, state))[0] == 1  # idle: min_replicas, no spare
    with pytest.raises(ValueError):
        SpareReplicaPolicy(target_per_replica=0)


# -- batching ------------------------------------------------------------------------------------


def test_batching_config_is_checked() -> None:
    from helpers.apps.batched import DEFAULT_BATCHING, check_batching_config

    assert check_batching_config({}) == {**DEFAULT_BATCHING, "batch_wait_timeout_s": 0.01}
    assert check_batching_config({"max_batch_size": 4})["max_batch_size"] == 4
    for bad in [{"max_batch": 4}, {"max_batch_size": 0}, {"batch_wait_timeout_s": -1}, [4]]:
        with pytest.raises(ValueError):
            check_batching_config(bad)


def test_deep_scorer_is_deterministic_and_batch_independent() -> None:
    from helpers.apps.batched import build_app
    from helpers.apps.deep_scorer import DeepScorer

    a, b = DeepScorer(width=64, depth=3), DeepScorer(width=64, depth=3)
    texts = ["great service", "awful food", "a pleasant day"]
    batch = a.scores(texts)
    assert batch == b.scores(texts)
    alone = [a.scores([t])[0] for t in texts]
    assert all(abs(x - y) < 1e-5 for x, y in zip(batch, alone))
    assert all(0.0 < s < 1.0 for s in batch)
    assert a.weight_bytes == 4 * (256 * 64 + 3 * 64 * 64 + 2 * 64)
    assert a.seconds_per_call(4, repeats=2) > 0
    assert build_app({"batched": False, "depth": 2}) is not None
    with pytest.raises(ValueError, match="unknown args"):
        build_app({"batched": True, "layers": 2})


# -- sweeps and evaluation files -----------------------------------------------------------------


def test_grid_sweep_order_and_rows() -> None:
    seen = []
    df = grid_sweep(
        {"a": [1, 2], "b": ["x", "y", "z"]},
        lambda p: seen.append((p["a"], p["b"])) or {"m": p["a"] * 10},
        progress=False,
    )
    assert seen == [(1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")]  # first key slowest
    assert list(df.columns) == ["a", "b", "m"] and list(df["m"]) == [10, 10, 10, 20, 20, 20]
    with pytest.raises(ValueError):
        grid_sweep({"a": []}, lambda p: {})


def test_heatmaps_markdown_and_files(tmp_path) -> None:
    sweep = pd.DataFrame(
        [
            {"size": s, "wait": w, "c": c, "rps": s * c + w, "p50": w + 0.01}
            for s in (1, 8)
            for w in (0.0, 0.05)
            for c in (1, 32)
        ]
    )
    fig = plot_heatmaps(sweep, x="wait", y="size", panel="c", metrics={"rps": "req/s", "p50": "s"})
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"]) == 4
    assert _png_shown(fig)[:4] == b"\x89PNG"
    table = markdown_table(pd.DataFrame({"a|b": [1.23456, 2], "c": ["x", "y"]}))
    assert table.splitlines()[0] == "| a|b | c |" and "1.235" in table
    paths = write_evaluation(
        tmp_path / "out",
        summary={"speedup": 4.2, "rows": [1, 2]},
        figures={"heat": fig},
        report_md="# Report\n\n![h](heat.png)",
    )
    assert json.loads(paths["summary"].read_text()) == {"speedup": 4.2, "rows": [1, 2]}
    assert paths["heat"].read_bytes()[:4] == b"\x89PNG"
    assert paths["report"].read_text().startswith("# Report")
    with pytest.raises(ValueError):  # NaN is not JSON: refuse rather than write a broken file
        write_evaluation(tmp_path / "bad", summary={"x": math.nan}, figures={}, report_md="")
