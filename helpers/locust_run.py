"""Real Locust, headless, from Python: start it, let it run, read its statistics.

Locust (gevent-based) never runs inside the notebook's process: each run is a ``locust
--headless`` process of its own session (a :class:`~helpers.processes.ManagedProcess`),
recorded in the workbook's process registry and stopped by its process id (also at
interpreter exit). Its statistics come from the CSV files
it writes (``--csv``): requests, failures, requests per second and latency percentiles.

Usage::

    from helpers.locust_run import LocustRun, LOCUSTFILE
    run = LocustRun(url, users=20, spawn_rate=5, run_time_s=60, user_class="ChatUser",
                    options={"model": "tiny-llama"}).start()
    ...                                  # watch `serve status` meanwhile
    stats = run.wait()                   # {"requests": ..., "rps": ..., "p50_s": ...}
    run.command                          # the same run as a shell command

Introduced in notebooks/05_autoscaling.ipynb; the benchmark of ``helpers.load`` against
Locust (``benchmarks/load_vs_locust.py``) uses it too.
"""

from __future__ import annotations

import csv
import functools
import os
import shlex
import signal
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.errors import WorkbookError
from helpers.load import json_request, load_test
from helpers.paths import CONFIGS_DIR, scratch_root
from helpers.processes import ManagedProcess, ray_executable

__all__ = ["LOCUSTFILE", "LOCUST_CLIENTS", "LocustRun", "read_locust_stats", "compare_with_locust"]

#: The project's locustfile (users ``JsonUser`` and ``ChatUser``).
LOCUSTFILE: Path = CONFIGS_DIR / "locust" / "locustfile.py"

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def read_locust_stats(stats_csv: Path) -> dict[str, Any]:
    """The ``Aggregated`` row of a Locust ``*_stats.csv`` as numbers (latencies in seconds)."""
    with open(stats_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    total = next((r for r in rows if r.get("Name") == "Aggregated"), None)
    if total is None:
        raise WorkbookError(
            f"{stats_csv} has no Aggregated row.",
            "Locust sent no request: read its log (LocustRun.log_path).",
        )

    def seconds(key: str) -> float:
        value = total.get(key) or "nan"
        return float("nan") if value == "N/A" else float(value) / 1000.0

    return {
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "rps": float(total["Requests/s"]),
        "p50_s": seconds("50%"),
        "p90_s": seconds("90%"),
        "p99_s": seconds("99%"),
        "mean_s": seconds("Average Response Time"),
        "max_s": seconds("Max Response Time"),
    }


class LocustRun(ManagedProcess):
    """One headless Locust run against ``url`` with the project's locustfile (by default).

    ``users`` (``-u``) and ``spawn_rate`` (``-r``, users started per second), ``run_time_s``
    (``--run-time``), the ``user_class`` to run, and the locustfile's own ``options``
    (``{"model": "tiny-llama"}`` becomes ``--model tiny-llama``).
    """

    def __init__(
        self,
        url: str,
        *,
        users: int,
        spawn_rate: float,
        run_time_s: float,
        user_class: str = "JsonUser",
        options: Mapping[str, Any] | None = None,
        locustfile: Path = LOCUSTFILE,
        reset_stats: bool = False,
    ) -> None:
        if users < 1 or spawn_rate <= 0 or run_time_s <= 0:
            raise WorkbookError(
                f"Locust needs users >= 1, spawn_rate > 0 and run_time_s > 0 (got {users}, "
                f"{spawn_rate}, {run_time_s}).",
                "pass positive numbers.",
            )
        name = f"locust-{uuid.uuid4().hex[:8]}"
        self.dir = scratch_root() / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_prefix = self.dir / "run"
        #: Locust's statistics (its Aggregated row: read_locust_stats), rewritten every few
        #: seconds while it runs and once more when it ends.
        self.stats_csv = self.dir / "run_stats.csv"
        self.run_time_s = run_time_s
        try:
            shown_file = str(Path(locustfile).relative_to(Path.cwd()))
        except ValueError:
            shown_file = str(locustfile)
        run = [
            "--headless",
            "-u",
            str(users),
            "-r",
            f"{spawn_rate:g}",
            "--run-time",
            f"{int(round(run_time_s))}s",
        ]
        tail = [user_class]
        for key, value in (options or {}).items():
            tail += [f"--{key.replace('_', '-')}", str(value)]
        #: What a person would type for the same run (statistics files and log level aside).
        self.command = " ".join(
            shlex.quote(w)
            for w in ["locust", "-f", shown_file, "--host", url.rstrip("/"), *run, *tail]
        )
        argv = [
            ray_executable("locust"),
            "-f",
            str(locustfile),
            "--host",
            url.rstrip("/"),
            *run,
            "--stop-timeout",
            "10",
            "--only-summary",
            "--csv",
            str(self.csv_prefix),
            "--loglevel",
            "WARNING",
            "--exit-code-on-error",
            "0",
            *(["--reset-stats"] if reset_stats else []),
            *tail,
        ]
        env = dict(os.environ)
        env.setdefault("PYTHONWARNINGS", "ignore")
        super().__init__(
            argv,
            kind="locust",
            name=name,
            log_path=self.dir / "locust.log",
            env=env,
            stop_timeout_s=10.0,
        )
        self.cpu_s = 0.0  # CPU seconds Locust used (sampled while it runs)
        self.started_at: float | None = None  # wall clock
        self.ended_at: float | None = None

    def start(self) -> LocustRun:
        """Start Locust in the background (its own process session) and return at once."""
        if self.pid is not None:
            raise WorkbookError("This Locust run was already started.", "create a new LocustRun.")
        super().start()
        self.started_at = time.time()
        return self

    def wait(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for the run to end; return its statistics (see :func:`read_locust_stats`)."""
        if self.popen is None:
            self.start()
        limit = timeout_s if timeout_s is not None else self.run_time_s + 60
        deadline = time.monotonic() + limit
        while self.running:
            self._sample_cpu()
            if time.monotonic() > deadline:
                self.stop()
                raise WorkbookError(
                    f"Locust did not finish within {limit:.0f} s.",
                    "the machine may be overloaded; read its log below.",
                    details=self.tail(),
                )
            time.sleep(0.2)
        self.ended_at = time.time()
        code = self.stop()
        if not self.stats_csv.exists():
            raise WorkbookError(
                f"Locust exited with code {code} and wrote no statistics.",
                "read its log below (a wrong option or locustfile error).",
                details=self.tail(),
            )
        stats = read_locust_stats(self.stats_csv)
        stats["wall_s"] = round(self.ended_at - (self.started_at or self.ended_at), 2)
        stats["client_cpu_s"] = round(self.cpu_s, 2)
        return stats

    def finish(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """End the run now, the way Locust ends at its ``--run-time``, and return its statistics.

        For a run that lasts "until something happens" (a second replica serves): Locust takes
        SIGTERM as its signal to stop, lets its users finish the requests they have sent (for
        at most ``--stop-timeout``, 10 s), writes its statistics and exits.
        """
        self.send_signal(signal.SIGTERM)  # the leader only: Locust shuts down itself
        return self.wait(timeout_s=timeout_s)

    def _sample_cpu(self) -> None:
        """CPU seconds used so far by Locust's processes (sampled while it runs)."""
        import psutil

        try:
            proc = psutil.Process(self.pid)
            times = proc.cpu_times()
            self.cpu_s = max(self.cpu_s, times.user + times.system)
        except psutil.Error:
            pass


#: Locust user classes of the project's locustfile, by the client they use.
LOCUST_CLIENTS = {"JsonUser": "HttpUser", "FastJsonUser": "FastHttpUser"}


def compare_with_locust(
    url: str,
    *,
    path: str = "/",
    payload: Any = None,
    concurrency: int = 32,
    seconds: float = 10.0,
    rounds: int = 1,
    user_classes: Sequence[str] = ("JsonUser", "FastJsonUser"),
) -> pd.DataFrame:
    """Offer the same closed-loop load with :mod:`helpers.load` and with Locust, in turn.

    Each tool sends ``payload`` (JSON) to ``url`` + ``path`` from ``concurrency`` virtual
    users that never wait, for ``seconds``; ``rounds`` times, alternating (each Locust user
    class of ``user_classes``, then ``helpers.load``; the other way round in even rounds, so
    that a background load that rises or falls is shared fairly). One row per run: tool, requests,
    failures, throughput, p50/p90/p99 latency, and the CPU seconds the client itself used per
    1,000 requests (on a small machine the client competes with the server for the same
    cores, so a cheaper client leaves more for the server).
    """
    import json as _json

    import pandas as pd

    body = {} if payload is None else payload

    def run_locust(user_class: str, round_: int) -> dict[str, Any]:
        run = LocustRun(
            url,
            users=concurrency,
            spawn_rate=concurrency,
            run_time_s=seconds,
            user_class=user_class,
            options={"path": path, "payload": _json.dumps(body)},
        )
        stats = run.wait()
        return {
            "tool": f"Locust {user_class} ({LOCUST_CLIENTS.get(user_class, user_class)})",
            "round": round_,
            "requests": stats["requests"],
            "failures": stats["failures"],
            "throughput_rps": round(stats["rps"], 1),
            "p50_s": stats["p50_s"],
            "p90_s": stats["p90_s"],
            "p99_s": stats["p99_s"],
            "client_cpu_ms_per_request": round(
                1000 * stats["client_cpu_s"] / max(1, stats["requests"]), 3
            ),
            "command": run.command,
        }

    def run_ours(round_: int) -> dict[str, Any]:
        cpu_before = time.process_time()
        result = load_test(
            url.rstrip("/") + path,
            json_request(body),
            concurrency=concurrency,
            duration_s=seconds,
            progress=False,
        )
        cpu = time.process_time() - cpu_before
        summary = result.summary()
        return {
            "tool": "helpers.load",
            "round": round_,
            "requests": summary["requests"],
            "failures": summary["failed"],
            "throughput_rps": summary["throughput_rps"],
            "p50_s": summary["latency_p50_s"],
            "p90_s": summary["latency_p90_s"],
            "p99_s": summary["latency_p99_s"],
            "client_cpu_ms_per_request": round(1000 * cpu / max(1, summary["requests"]), 3),
            "command": f"python -m helpers.load -c {concurrency} -d {seconds:g} "
            f"--json '{_json.dumps(body)}' --url {url.rstrip('/')}{path}",
        }

    rows = []
    for round_ in range(1, rounds + 1):
        order: list[Callable[[], Any]] = [
            functools.partial(run_locust, u, round_) for u in user_classes
        ]
        order.append(functools.partial(run_ours, round_))
        for step in order if round_ % 2 else order[::-1]:  # A B, then B A: drifts cancel
            rows.append(step())
    return pd.DataFrame(rows)
