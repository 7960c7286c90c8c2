"""Every command line's bad input gets a clear error that says what to do, before any work.

Each case here hung, ended in a traceback or was silently accepted before (issue 24): the
load generator's zero rate and timeout and its CSV path, run profiles and parameters out of
range, a build folder that holds the lessons, a missing labs folder, the streaming config
CLI's folders and encodings, a zero-step model build and a zero-round benchmark, and a
dashboard that accepts connections but never answers. README's Troubleshooting section keeps
the table of these inputs and what they get. No Ray cluster is needed: every case is refused
before one would start.
"""

from __future__ import annotations

import math
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.errors import DashboardTimeoutError, ParameterError, ProfileError, WorkbookError
from helpers.paths import NOTEBOOKS_DIR, REPO_ROOT
from helpers.ports import free_port


def run_cli(*argv: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """``python ARGV...`` from the repository root, with this checkout's helpers first.

    A hang is a failure (``subprocess.TimeoutExpired``), never a stuck test run."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO_ROOT,
        env=env,
    )


def refused(run: subprocess.CompletedProcess[str], *phrases: str, code: int = 2) -> None:
    """The command ended with ``code``, said ``phrases`` and a fix, and showed no traceback."""
    assert run.returncode == code, (run.returncode, run.stdout[-800:], run.stderr[-1500:])
    assert "Traceback" not in run.stderr, run.stderr[-1500:]
    assert "Fix:" in run.stderr, run.stderr
    for phrase in phrases:
        assert phrase in run.stderr, (phrase, run.stderr)


@pytest.fixture
def closed_url() -> str:
    """A URL where nothing listens (a request would fail at once, but must not be sent)."""
    return f"http://127.0.0.1:{free_port()}/"


# --- helpers.load ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["--rate", "0", "-n", "3"], "--rate must be a number > 0"),
        (["--rate", "-2", "-d", "1"], "--rate must be a number > 0"),
        (["--timeout", "0", "-n", "1"], "--timeout must be a number > 0"),
        (["--timeout", "nan", "-n", "1"], "--timeout must be a number > 0"),
        (["-c", "0", "-n", "5"], "--concurrency must be an integer >= 1"),
        (["-n", "0"], "--requests must be an integer >= 1"),
        (["-d", "0"], "--duration must be a number > 0"),
        (["--max-tokens", "0", "-p", "hi"], "--max-tokens must be an integer >= 1"),
    ],
)
def test_load_cli_refuses_bad_numbers_before_sending(
    argv: list[str], phrase: str, closed_url: str
) -> None:
    run = run_cli("-m", "helpers.load", *argv, "--url", closed_url, timeout_s=30)
    refused(run, phrase)
    assert run.stdout == ""  # no summary: nothing was sent


def test_load_cli_checks_the_csv_folder_before_the_run(tmp_path: Path, closed_url: str) -> None:
    missing = tmp_path / "nonexistent" / "x.csv"
    run = run_cli("-m", "helpers.load", "-n", "2", "--csv", str(missing), "--url", closed_url)
    refused(run, "does not exist", "mkdir -p")
    assert run.stdout == ""
    refused(
        run_cli("-m", "helpers.load", "-n", "2", "--csv", str(tmp_path), "--url", closed_url),
        "is a folder",
    )
    good = tmp_path / "rows.csv"
    ok = run_cli("-m", "helpers.load", "-n", "3", "--csv", str(good), "--url", closed_url)
    assert ok.returncode == 1 and "3 sent, 0 ok, 3 failed" in ok.stdout, ok.stderr
    assert len(good.read_text().splitlines()) == 4  # header and one row per request


@pytest.mark.timeout(60)
def test_load_library_refuses_a_run_that_never_ends(closed_url: str) -> None:
    from helpers.load import LoadGenerator

    with pytest.raises(ParameterError, match="rate 0 and no duration never ends"):
        LoadGenerator(closed_url, rate=0).run_sync(requests=3)
    with pytest.raises(ParameterError, match="timeout_s must be a number of seconds > 0"):
        LoadGenerator(closed_url, concurrency=1, timeout_s=0)
    with pytest.raises(ParameterError, match="max_rows"):
        LoadGenerator(closed_url, concurrency=1, max_rows=0)


def _rows(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    t = 1000.0
    for i in range(n):
        t += rng.expovariate(200)
        latency = rng.lognormvariate(-3, 0.8)
        ok = rng.random() > 0.05
        row = {
            "i": i,
            "level": 10.0,
            "t_sched": t - 0.001,
            "t_start": t,
            "t_end": t + latency,
            "latency_s": latency,
            "ok": ok,
            "status": 200 if ok else 503,
            "error": "" if ok else rng.choice(["HTTP 503: busy", "Timeout: no answer"]),
        }
        if ok:
            row["replica"] = f"r{rng.randrange(3)}"
        rows.append(row)
    return rows


def test_running_summary_counts_exactly_and_percentiles_within_half_a_percent() -> None:
    from helpers.load import RunningSummary, _frame, summarize

    rows = _rows(20_000)
    running = RunningSummary()
    for row in rows:
        running.add(row)
    got, exact = running.summary(), summarize(_frame([dict(r) for r in rows]))
    assert got.keys() == exact.keys()
    for key in (
        "requests",
        "ok",
        "failed",
        "error_kinds",
        "by_replica",
        "duration_s",
        "throughput_rps",
        "latency_mean_s",
        "latency_max_s",
        "max_start_lag_s",
    ):
        assert got[key] == pytest.approx(exact[key], abs=2e-4), key
    for key in ("latency_p50_s", "latency_p90_s", "latency_p99_s"):
        assert math.isclose(got[key], exact[key], rel_tol=0.006), (key, got[key], exact[key])


@pytest.mark.timeout(120)
def test_a_long_run_keeps_a_bounded_sample_and_counts_every_request(closed_url: str) -> None:
    """Memory stays bounded (max_rows rows), the summary still counts every request."""
    from helpers.load import LoadGenerator

    gen = LoadGenerator(closed_url, concurrency=16, timeout_s=5, max_rows=200)
    result = gen.run_sync(requests=3000, progress=False)
    assert len(gen.records()) == 200 and len(result.df) == 200 and result.sampled
    summary = result.summary()
    assert summary["requests"] == 3000 and summary["failed"] == 3000
    assert sum(summary["error_kinds"].values()) == 3000 and summary["rows_kept"] == 200
    assert result.df["i"].nunique() == 200 and result.df["i"].max() > 2000  # a sample of all
    assert "a random sample of 200 of 3000 requests" in result.text()
    small = LoadGenerator(closed_url, concurrency=4, timeout_s=5).run_sync(requests=50)
    assert not small.sampled and len(small.df) == 50 and "sample" not in small.text()


# --- run profiles, parameters and the runner ------------------------------------------------


@pytest.mark.parametrize(
    "text, phrase",
    [
        ("notebooks:\n  01_ray_cluster_setup: [1, 2]\n", "the entry must be a mapping, not a list"),
        ("notebooks:\n  01_ray_cluster_setup:\n    timeout_s: abc\n", "timeout_s must be a number"),
        ("notebooks:\n  01_ray_cluster_setup:\n    timeout_s: -5\n", "timeout_s must be a number"),
        ("defaults:\n  timeout_s: 0\n", "defaults: timeout_s must be a number of seconds > 0"),
        (
            "notebooks:\n  01_ray_cluster_setup:\n    parameters: [worker_nodes]\n",
            "parameters must be a mapping",
        ),
        ("notebooks: [01_ray_cluster_setup]\n", "notebooks must be a mapping"),
        ("defaults: 600\n", "defaults must be a mapping"),
    ],
)
def test_malformed_profiles_are_profile_errors(tmp_path: Path, text: str, phrase: str) -> None:
    from helpers.profiles import load_profile

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match="Fix:") as err:
        load_profile(path)
    assert phrase in str(err.value) and "bad.yaml" in str(err.value)


@pytest.mark.parametrize(
    "stem, parameters, phrase",
    [
        ("03b_updates_and_operations", {"load_concurrency": 0}, "must be more than 0"),
        ("03a_five_ways_to_launch", {"ready_timeout_s": -5.0}, "must be a number >= 0"),
        ("03b_updates_and_operations", {"phase_s": -1.0}, "must be a number >= 0"),
        ("03b_updates_and_operations", {"replicas_after": 0}, "must be more than 0"),
        ("04b_batching_and_mistakes", {"bench_concurrency": [1, 0]}, "must be more than 0"),
        (
            "04a_llm_config_and_openai_api",
            {"gpu_memory_utilization": 1.5},
            "a share between 0 and 1",
        ),
        ("02a_deployments_and_http", {"request_timeout_s": 0.0}, "must be more than 0"),
    ],
)
def test_parameters_out_of_range_are_refused(stem: str, parameters: dict, phrase: str) -> None:
    from helpers.profiles import check_parameters

    with pytest.raises(ParameterError, match=phrase) as err:
        check_parameters(NOTEBOOKS_DIR / f"{stem}.ipynb", parameters)
    assert err.value.fix.startswith(f"give {next(iter(parameters))} a value in range")


def test_parameters_in_range_and_the_shipped_profiles_still_pass() -> None:
    from helpers.profiles import check_parameters, load_profile

    check_parameters(
        NOTEBOOKS_DIR / "03b_updates_and_operations.ipynb",
        {"load_concurrency": 1, "phase_s": 0.0, "head_num_cpus": 4},
    )
    sweep_grid = {
        "max_batch_size": [4, 32],
        "batch_wait_timeout_s": [0.0, 0.1],
        "concurrency": [1, 32],
    }
    check_parameters(NOTEBOOKS_DIR / "06_batching.ipynb", {"sweep_grid": sweep_grid})
    for name in ("ci", "full"):
        load_profile(name)


def test_runner_refuses_an_out_of_range_parameter_before_running(tmp_path: Path) -> None:
    run = run_cli(
        "-m",
        "helpers.runner",
        "--profile",
        "ci",
        "03b",
        "-p",
        "load_concurrency=0",
        "--prepare-only",
        str(tmp_path),
        timeout_s=120,
    )
    refused(run, "'load_concurrency' must be more than 0")
    assert list(tmp_path.iterdir()) == []


def _tiny_notebook(folder: Path) -> Path:
    import nbformat
    from notebook_builder import notebook

    path = folder / "99_tiny.ipynb"
    nbformat.write(
        notebook(("code", "rounds: int = 1  # how many", ["parameters"]), ("code", "rounds", [])),
        path,
    )
    return path


def test_runner_refuses_to_write_over_notebook_sources(tmp_path: Path) -> None:
    from helpers.runner import check_output_dir

    source = _tiny_notebook(tmp_path)
    before = source.read_bytes()
    for flag in ("--build-dir", "--prepare-only"):
        run = run_cli(
            "-m",
            "helpers.runner",
            "--profile",
            "ci",
            str(source),
            flag,
            str(tmp_path),
            timeout_s=120,
        )
        refused(run, f"{flag} {tmp_path} is a folder of notebook sources", "nothing was run")
        assert source.read_bytes() == before and sorted(tmp_path.iterdir()) == [source]
    for folder in (NOTEBOOKS_DIR, REPO_ROOT / "labs" / "source", REPO_ROOT / "labs" / "student"):
        with pytest.raises(WorkbookError, match="would overwrite"):
            check_output_dir(folder, [])
    check_output_dir(tmp_path / "runs", [source])  # a folder of its own is fine


def test_runner_build_dir_notebooks_is_refused_from_the_repository_root() -> None:
    run = run_cli(
        "-m", "helpers.runner", "--profile", "ci", "00", "--build-dir", "notebooks", timeout_s=120
    )
    refused(run, "--build-dir notebooks is a folder of notebook sources")


# --- labs, the streaming config, the tiny model, the benchmark -------------------------------


def test_labs_generate_check_with_a_missing_source_dir_is_an_error(tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    run = run_cli("-m", "helpers.labs", "generate", "--check", "--source-dir", str(typo))
    refused(run, f"--source-dir {typo} is not a folder")
    assert "up to date" not in run.stdout
    refused(
        run_cli("-m", "helpers.labs", "generate", "--check", "--source-dir", str(tmp_path)),
        "holds no lab source",
    )
    refused(run_cli("-m", "helpers.labs", "list", "--source-dir", str(typo)), "is not a folder")


def test_lessons_generate_check_with_a_missing_lessons_dir_is_an_error(tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    run = run_cli("-m", "helpers.lessons", "generate", "--check", "--lessons-dir", str(typo))
    refused(run, f"--lessons-dir {typo} is not a folder")
    assert "up to date" not in run.stdout
    refused(
        run_cli("-m", "helpers.lessons", "generate", "--check", "--lessons-dir", str(tmp_path)),
        "holds no lesson",
    )
    refused(run_cli("-m", "helpers.lessons", "list", "--lessons-dir", str(typo)), "is not a folder")


def test_streaming_config_cli_folders_encodings_and_unwritable_paths(tmp_path: Path) -> None:
    cli = ("-m", "helpers.streaming.config")
    refused(run_cli(*cli, "validate", str(tmp_path)), "is a folder", code=1)
    refused(run_cli(*cli, "show", str(tmp_path)), "is a folder", code=1)
    latin = tmp_path / "latin1.json"
    latin.write_bytes('{"model": {"model_source": "caf\u00e9"}}'.encode("latin-1"))
    refused(run_cli(*cli, "validate", str(latin)), "not UTF-8 text", code=1)
    a_file = tmp_path / "plain.txt"
    a_file.write_text("not a folder")
    refused(run_cli(*cli, "create-default", str(a_file / "config.json")), "Could not write", code=1)
    refused(run_cli(*cli, "create-default", str(tmp_path), "--force"), "is a folder", code=1)
    good = tmp_path / "config.json"
    assert run_cli(*cli, "create-default", str(good)).returncode == 0
    assert run_cli(*cli, "validate", str(good)).returncode == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_streaming_config_cli_read_only_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    refused(
        run_cli("-m", "helpers.streaming.config", "create-default", str(locked / "config.json")),
        "Could not write",
        code=1,
    )


def test_tiny_llm_build_with_zero_steps_is_refused_before_building(tmp_path: Path) -> None:
    started = time.monotonic()
    run = run_cli(
        "-m",
        "helpers.tiny_llm",
        "build",
        "--steps",
        "0",
        "--cache-dir",
        str(tmp_path),
        timeout_s=120,
    )
    refused(run, "at least one training step", "--steps N")
    assert list(tmp_path.iterdir()) == [] and time.monotonic() - started < 60


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["--rounds", "0"], "--rounds must be >= 1"),
        (["--concurrency", "0"], "--concurrency must be >= 1"),
        (["--seconds", "0"], "--seconds must be > 0"),
        (["--tolerance", "1.5"], "--tolerance must be a share"),
    ],
)
def test_benchmark_refuses_bad_options_before_starting_a_server(
    argv: list[str], phrase: str
) -> None:
    refused(run_cli("benchmarks/load_vs_locust.py", *argv, timeout_s=60), phrase)


# --- Serve's REST API: a hung dashboard ----------------------------------------------------


@pytest.fixture
def hung_dashboard() -> Iterator[str]:
    """A TCP server that accepts every connection and never answers: a hung dashboard."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")
    previous = {k: os.environ.get(k) for k in keys}
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        from helpers.auth import restore_in_process

        restore_in_process(previous)  # serve_details switched auth off for its cluster
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


@pytest.mark.timeout(90)
def test_a_hung_dashboard_is_a_clear_timeout_not_a_hang(
    hung_dashboard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers.cluster import ExistingCluster
    from helpers.serve_cli import deploy_config
    from helpers.serve_status import serve_details, wait_until_running

    cluster = ExistingCluster("127.0.0.1:1", hung_dashboard, None)
    started = time.monotonic()
    with pytest.raises(DashboardTimeoutError) as err:
        serve_details(cluster, timeout_s=1)
    assert time.monotonic() - started < 15
    assert hung_dashboard in str(err.value) and "Fix:" in str(err.value)
    assert "WORKBOOK_DASHBOARD_TIMEOUT_S" in err.value.fix

    monkeypatch.setenv("WORKBOOK_DASHBOARD_TIMEOUT_S", "1")
    started = time.monotonic()
    with pytest.raises(DashboardTimeoutError, match="did not answer within 1 s"):
        wait_until_running("default", cluster=cluster, timeout_s=300)
    assert time.monotonic() - started < 15
    config = {
        "applications": [
            {"name": "a", "route_prefix": "/a", "import_path": "helpers.apps.classifier:app"}
        ]
    }
    with pytest.raises(DashboardTimeoutError, match="PUT /api/serve/applications/"):
        deploy_config(cluster, config)


def test_helpers_raise_the_workbooks_errors_that_old_callers_still_catch(closed_url: str) -> None:
    """Bad arguments, double starts, no free port and a wait in vain: WorkbookErrors with a fix,
    which still are the ValueError, RuntimeError or TimeoutError these helpers raised before."""
    from helpers.errors import (
        AlreadyStartedError,
        BadValueError,
        NoFreePortError,
        WorkbookTimeoutError,
    )
    from helpers.kuberay import rayservice_manifest
    from helpers.load import LoadGenerator
    from helpers.traffic import RequestLoop, retry_delays

    with pytest.raises(BadValueError, match="backoff_s must be >= 0") as bad:
        retry_delays(-1, 0.2)
    assert isinstance(bad.value, ValueError) and "retries=0" in bad.value.fix
    with pytest.raises(ValueError, match="not a Serve config") as bad:
        rayservice_manifest("just: a mapping\n")
    assert isinstance(bad.value, BadValueError) and "serve build" in bad.value.fix

    with socket.socket() as held:  # the only port of the range is taken
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(
            RuntimeError, match=f"No free port found in \\[{port}, {port + 1}\\)"
        ) as none:
            free_port(port, port + 1)
    assert isinstance(none.value, NoFreePortError) and "ss -ltnp" in none.value.fix

    loop = RequestLoop(closed_url, concurrency=1, timeout_s=1, pause_after_failure_s=0.05).start()
    try:
        with pytest.raises(AlreadyStartedError, match="RequestLoop was already started"):
            loop.start()
        with pytest.raises(TimeoutError, match="last 2 answers had code_version=") as waited:
            loop.wait_until_serving("code_version", "v2", last=2, timeout_s=0.5)
        assert isinstance(waited.value, WorkbookTimeoutError) and "serve status" in waited.value.fix
    finally:
        loop.stop()
    gen = LoadGenerator(closed_url, concurrency=1, timeout_s=1)
    gen.start(duration_s=0.3)
    try:
        with pytest.raises(RuntimeError, match="LoadGenerator was already started") as again:
            gen.start(duration_s=0.3)
        assert (
            isinstance(again.value, AlreadyStartedError) and "new LoadGenerator" in again.value.fix
        )
    finally:
        gen.stop()


def test_one_closest_spelling_behind_every_did_you_mean() -> None:
    """Profiles, Serve configs and the streaming config suggest through one function."""
    from helpers.errors import closest

    assert closest("max_batch_sise", ["port", "max_batch_size"]) == "max_batch_size"
    assert closest("zzz", ["port", "host"]) is None
    assert (
        closest("05_autoscale", {"05_autoscaling": 1, "06_batching": 2}, cutoff=0.5)
        == "05_autoscaling"
    )
