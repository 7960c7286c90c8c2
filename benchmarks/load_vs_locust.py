"""Is ``helpers.load`` the bottleneck? The same load from it and from real Locust, compared.

Offers the same closed-loop load (``--concurrency`` virtual users without wait time,
``--seconds`` each, ``--rounds`` times, alternating) from ``helpers.load`` and from headless
Locust with the project's locustfile (``configs/locust/locustfile.py``) to one endpoint:

* ``--against echo`` (the default): ``helpers.echo_server``, a bare server faster than any of
  the clients, so the client is the limit and the comparison measures the tools;
* ``--against serve``: the classifier of lesson 02a with one replica, on a local Ray cluster
  of its own. On a 2-core laptop every client meets Serve's ceiling (about a hundred requests
  per second) first, so the throughputs agree within noise; the CPU column still differs.

Prints one row per run (throughput, p50/p90/p99 latency, client CPU per request), writes them
to ``build/benchmarks/load_vs_locust.json``, and exits with 1 if ``helpers.load`` reached
more than ``--tolerance`` less throughput than Locust's standard client (``JsonUser``, an
``HttpUser``) or spent more client CPU per request. tests/test_load.py checks the same, briefly,
on every test run; lesson 05 cites its result (benchmarks/README.md).

    python benchmarks/load_vs_locust.py --concurrency 32 --seconds 15 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from helpers.cluster import start_local_cluster
from helpers.echo_server import EchoServer
from helpers.errors import ParameterError
from helpers.locust_run import compare_with_locust
from helpers.paths import BUILD_DIR
from helpers.ports import free_port
from helpers.serve_cli import deploy_config
from helpers.serve_status import wait_until_running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32, help="virtual users of each tool")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of load per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tool, alternating")
    parser.add_argument(
        "--against",
        choices=("echo", "serve"),
        default="echo",
        help="echo: a bare server faster than the clients; serve: a Serve app",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.1,
        help="share by which Locust's standard client may beat helpers.load (noise)",
    )
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
    except ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.against == "echo":
        with EchoServer() as echo:
            runs = compare_with_locust(
                echo.url,
                path="/",
                payload={"text": "great service"},
                concurrency=args.concurrency,
                seconds=args.seconds,
                rounds=args.rounds,
            )
        return report(runs, args)

    port = free_port()
    config = {
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": "bench",
                "route_prefix": "/bench",
                "import_path": "helpers.apps.classifier:app",
                "deployments": [
                    {"name": "TextClassifier", "num_replicas": 1, "max_ongoing_requests": 64}
                ],
            }
        ],
    }
    with start_local_cluster(num_cpus=4) as cluster:
        deploy_config(cluster, config)
        wait_until_running("bench", cluster=cluster, timeout_s=300)
        runs = compare_with_locust(
            f"http://127.0.0.1:{port}/bench",
            path="/",
            payload={"text": "great service"},
            concurrency=args.concurrency,
            seconds=args.seconds,
            rounds=args.rounds,
        )
    return report(runs, args)


def check_arguments(args: argparse.Namespace) -> None:
    """Every option checked before a server or a cluster starts."""
    if args.rounds < 1:
        raise ParameterError(
            f"--rounds must be >= 1, not {args.rounds} (no run, nothing to compare).",
            "give the runs of each tool, e.g. --rounds 3.",
        )
    if args.concurrency < 1:
        raise ParameterError(
            f"--concurrency must be >= 1, not {args.concurrency}.",
            "give the virtual users of each tool, e.g. --concurrency 32.",
        )
    if not 0 < args.seconds < math.inf:
        raise ParameterError(
            f"--seconds must be > 0, not {args.seconds:g}.",
            "give the seconds of load per run, e.g. --seconds 15.",
        )
    if not 0 <= args.tolerance < 1:
        raise ParameterError(
            f"--tolerance must be a share from 0 up to (not including) 1, not {args.tolerance:g}.",
            "e.g. --tolerance 0.1 (10%).",
        )


def report(runs, args: argparse.Namespace) -> int:
    """Print and save the runs; 0 if helpers.load kept up with Locust's standard client."""
    means = runs.groupby("tool")["throughput_rps"].mean()
    cpu = runs.groupby("tool")["client_cpu_ms_per_request"].mean()
    print(runs.drop(columns=["command"]).to_string(index=False))
    print("\nmean throughput (requests/s):", means.round(1).to_dict())
    out = BUILD_DIR / "benchmarks" / "load_vs_locust.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "runs": runs.to_dict(orient="records"),
                "mean_throughput_rps": means.to_dict(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {out}")
    ours = means["helpers.load"]
    ok = True
    floor = 1.0 - args.tolerance
    for tool, theirs in means.drop(index="helpers.load").items():
        checked = "(HttpUser)" in tool  # the usual locustfile's client; FastHttpUser is shown only
        if checked:
            ok &= ours >= floor * theirs and cpu["helpers.load"] < cpu[tool]
        print(
            f"{tool}: helpers.load reached {ours / theirs:.2f}x its throughput "
            f"{f'(needed {floor:.2f}x) ' if checked else ''}with "
            f"{cpu['helpers.load'] / cpu[tool]:.2f}x its client CPU per request"
            f"{' (needed < 1)' if checked else ''}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
