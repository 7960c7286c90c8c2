"""Draw the workbook's diagrams with matplotlib; run it to regenerate the PNGs next to it.

    python images/make_diagrams.py            # writes images/cluster_processes.png,
                                              # images/serve_architecture.png,
                                              # images/serve_request_path.png,
                                              # images/serve_deploy_changes.png and
                                              # images/multi_app_routing.png

The drawing is code so that it can be reviewed, changed and regenerated like the rest of
the project (tests/test_serve_configs.py checks the committed PNGs are up to date with this script).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

HERE = Path(__file__).resolve().parent

COLORS = {
    "node": "#f4f6f8",
    "control": "#ffe8c2",
    "proxy": "#d6eaff",
    "replica": "#dff3df",
    "client": "#eeeeee",
    "handle": "#efe0ff",
}


def _box(
    ax,
    x,
    y,
    w,
    h,
    text,
    color,
    *,
    fontsize=9,
    weight="normal",
    edge="#444444",
    style="round,pad=0.02,rounding_size=0.12",
    lw=1.2,
    va="center",
):
    ax.add_patch(
        FancyBboxPatch((x, y), w, h, boxstyle=style, facecolor=color, edgecolor=edge, linewidth=lw)
    )
    ty = y + h / 2 if va == "center" else y + h - 0.18
    ax.text(x + w / 2, ty, text, ha="center", va=va, fontsize=fontsize, weight=weight, wrap=True)


def _arrow(
    ax,
    start,
    end,
    text="",
    *,
    color="#222222",
    style="-|>",
    ls="-",
    lw=1.6,
    rad=0.0,
    text_xy=None,
    fontsize=8.5,
):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=14,
            color=color,
            linestyle=ls,
            linewidth=lw,
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=2,
            shrinkB=2,
        )
    )
    if text:
        tx, ty = text_xy or ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(
            tx,
            ty,
            text,
            fontsize=fontsize,
            color=color,
            ha="center",
            va="center",
            bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.9),
        )


def _canvas(height: float, title: str, *, fontsize: float = 13) -> tuple:
    """A 13-unit-wide drawing area of ``height`` units, axes off, with a bold title."""
    fig, ax = plt.subplots(figsize=(13, height))
    ax.set_xlim(0, 13)
    ax.set_ylim(0, height)
    ax.axis("off")
    ax.set_title(title, fontsize=fontsize, weight="bold")
    return fig, ax


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def serve_architecture(path: Path) -> Path:
    """Ray Serve's parts on a two-node cluster and the path of one request."""
    fig, ax = _canvas(
        7.6, "Ray Serve on a two-node Ray cluster: who does what, and how a request flows"
    )

    # Nodes
    _box(
        ax,
        2.55,
        0.25,
        5.6,
        6.75,
        "head node (ray start --head)",
        COLORS["node"],
        fontsize=10,
        weight="bold",
        va="top",
        edge="#888888",
        lw=1.5,
    )
    _box(
        ax,
        8.45,
        0.25,
        4.35,
        6.75,
        "worker node (ray start --address=...)",
        COLORS["node"],
        fontsize=10,
        weight="bold",
        va="top",
        edge="#888888",
        lw=1.5,
    )

    # Clients
    _box(ax, 0.1, 4.55, 2.05, 1.05, "HTTP client\ncurl, requests,\nbrowser", COLORS["client"])
    _box(
        ax,
        0.1,
        0.55,
        2.05,
        1.75,
        "Python code with a\nDeploymentHandle\n(a driver, or another\n"
        "replica); the handle\nhas its own router",
        COLORS["handle"],
    )
    _box(ax, 0.1, 6.15, 2.05, 0.75, "serve deploy / status\n(CLI, REST)", COLORS["client"])

    # Head node parts
    _box(ax, 2.85, 5.55, 2.2, 0.95, "dashboard\nServe REST API", COLORS["control"])
    _box(
        ax,
        5.5,
        5.4,
        2.4,
        1.1,
        "Serve controller\n(one actor per cluster)\ndesired state, health",
        COLORS["control"],
        weight="bold",
    )
    _box(
        ax,
        2.85,
        3.55,
        2.45,
        1.45,
        "HTTP proxy (actor)\nuvicorn on host:port\n+ router: picks a replica",
        COLORS["proxy"],
        weight="bold",
    )
    _box(
        ax, 5.75, 3.45, 2.15, 1.0, "replica 1\nTextClassifier\n(actor, own pid)", COLORS["replica"]
    )
    _box(ax, 5.75, 2.05, 2.15, 1.0, "replica 1\nGateway (FastAPI)\ningress", COLORS["replica"])

    # Worker node parts
    _box(
        ax,
        8.8,
        3.55,
        2.45,
        1.45,
        "HTTP proxy (actor)\nsame port, every node\n(proxy_location)",
        COLORS["proxy"],
        weight="bold",
    )
    _box(
        ax, 10.45, 1.85, 2.15, 1.0, "replica 2\nTextClassifier\n(actor, own pid)", COLORS["replica"]
    )
    _box(ax, 8.75, 0.6, 1.6, 0.95, "replica 3\nTextClassifier", COLORS["replica"])

    # Request flow (numbered)
    _arrow(ax, (2.15, 5.05), (2.85, 4.45), "1 request", text_xy=(2.45, 5.3), color="#0b5394")
    _arrow(
        ax,
        (5.3, 4.1),
        (5.75, 2.65),
        "2 route to\ningress",
        rad=-0.2,
        text_xy=(5.15, 3.1),
        color="#0b5394",
    )
    _arrow(ax, (6.85, 3.05), (6.85, 3.45), "", color="#0b5394")
    ax.text(7.95, 3.25, "3 handle call\n(composition)", fontsize=8.5, color="#0b5394", va="center")
    _arrow(
        ax,
        (7.9, 2.55),
        (10.45, 2.35),
        "3' ...or a replica\non another node",
        rad=0.1,
        text_xy=(9.2, 2.85),
        color="#0b5394",
    )
    _arrow(
        ax,
        (2.85, 3.9),
        (2.15, 4.7),
        "4 response",
        rad=-0.3,
        text_xy=(2.3, 3.9),
        color="#0b5394",
        ls="--",
    )

    # Handle path
    _arrow(
        ax,
        (2.15, 1.1),
        (8.75, 1.05),
        "handle.method.remote(...) -> DeploymentResponse\n"
        "(straight to a replica: no proxy, no HTTP)",
        text_xy=(5.2, 1.25),
        color="#674ea7",
    )

    # Control plane
    _arrow(ax, (2.15, 6.5), (2.85, 6.1), "", color="#b45f06")
    _arrow(ax, (5.05, 6.0), (5.5, 5.95), "", color="#b45f06")
    _arrow(
        ax,
        (7.9, 5.9),
        (10.0, 5.0),
        "replica + route table\n(long poll)",
        rad=-0.15,
        text_xy=(9.6, 5.85),
        color="#b45f06",
        ls=":",
    )
    _arrow(ax, (6.2, 5.4), (4.6, 5.0), "", color="#b45f06", ls=":")
    _arrow(
        ax,
        (6.9, 5.4),
        (6.9, 4.45),
        "start/stop,\ncheck_health,\nreconfigure",
        ls=":",
        text_xy=(7.55, 4.9),
        color="#b45f06",
        fontsize=7.5,
    )

    # Legend
    ax.text(
        0.1,
        0.15,
        "blue: one HTTP request   purple: a DeploymentHandle call (no proxy)   "
        "orange dotted: the controller's control plane (not on the request path)",
        fontsize=8.5,
        color="#333333",
    )
    return _save(fig, path)


def cluster_processes(path: Path) -> Path:
    """The processes of a three-node Ray cluster, their ports, and who talks to which
    (lesson 01)."""
    fig, ax = _canvas(
        7.2,
        "A Ray cluster of three nodes: the processes `ray start` runs, "
        "their ports, and the clients",
        fontsize=12.5,
    )

    # Head node
    _box(
        ax,
        3.0,
        0.3,
        4.6,
        6.3,
        "head node: ray start --head --port=6379",
        COLORS["node"],
        fontsize=10,
        weight="bold",
        va="top",
        edge="#888888",
        lw=1.5,
    )
    _box(
        ax,
        3.25,
        4.55,
        4.1,
        1.35,
        "GCS (gcs_server)\ncluster metadata: nodes, actors,\njobs, resources   :6379 (--port)",
        COLORS["control"],
        weight="bold",
    )
    _box(
        ax,
        3.25,
        3.0,
        4.1,
        1.3,
        "dashboard  :8265 (--dashboard-port)\nweb UI, state API, "
        "Jobs API\n(--dashboard-host, default 127.0.0.1)",
        COLORS["control"],
    )
    _box(
        ax,
        3.25,
        1.55,
        4.1,
        1.2,
        "raylet: schedules tasks on this node\n+ object store "
        "(shared memory)\nnode manager and object manager ports",
        COLORS["proxy"],
        weight="bold",
    )
    _box(
        ax,
        3.25,
        0.45,
        4.1,
        0.85,
        "workers: one Python process per running task or actor\n"
        "(started by the raylet, ports 10002-19999)",
        COLORS["replica"],
        fontsize=8.5,
    )

    # Worker nodes
    for i, y in enumerate((3.75, 0.3)):
        n = i + 1
        _box(
            ax,
            8.4,
            y,
            4.35,
            2.85,
            f"worker node {n}: ray start --address=HEAD:6379",
            COLORS["node"],
            fontsize=10,
            weight="bold",
            va="top",
            edge="#888888",
            lw=1.5,
        )
        _box(
            ax,
            8.65,
            y + 1.15,
            3.85,
            1.05,
            f"raylet + object store\n(its own ports; custom resource worker_{n})",
            COLORS["proxy"],
            weight="bold",
        )
        _box(
            ax,
            8.65,
            y + 0.15,
            3.85,
            0.8,
            "workers (Python processes)",
            COLORS["replica"],
            fontsize=8.5,
        )
        _arrow(
            ax,
            (8.65, y + 1.7),
            (7.35, 5.1 if n == 1 else 4.75),
            "registers, heartbeats" if n == 1 else "",
            color="#b45f06",
            rad=0.1,
            text_xy=(7.95, 5.55),
        )
        _arrow(
            ax,
            (8.65, y + 1.5),
            (7.35, 2.1),
            "objects move\nbetween object stores" if n == 2 else "",
            color="#0b5394",
            ls="--",
            rad=-0.1 if n == 1 else 0.1,
            text_xy=(7.95, 1.25),
            style="<|-|>",
        )

    # Clients
    _box(
        ax,
        0.1,
        4.9,
        2.45,
        1.3,
        "CLI: ray status,\nray list nodes, ray memory,\nray timeline",
        COLORS["client"],
    )
    _box(
        ax, 0.1, 3.05, 2.45, 1.25, "CLI: ray job submit\n(the Jobs API over HTTP)", COLORS["client"]
    )
    _box(
        ax,
        0.1,
        1.0,
        2.45,
        1.55,
        "a driver: ray.init()\nin the notebook, a script\nor a submitted job",
        COLORS["handle"],
    )
    _arrow(ax, (2.55, 5.55), (3.25, 5.3), "", color="#b45f06")
    _arrow(ax, (2.55, 5.2), (3.25, 3.9), "", color="#b45f06", ls=":")
    _arrow(ax, (2.55, 3.65), (3.25, 3.6), "", color="#b45f06")
    _arrow(ax, (2.55, 2.1), (3.25, 4.75), "", color="#674ea7", rad=0.15)
    _arrow(ax, (2.55, 1.6), (3.25, 2.0), "", color="#674ea7")

    ax.text(
        0.1,
        0.1,
        "orange: control (CLI to GCS or dashboard, raylets to GCS)   purple: a driver "
        "(to the GCS, then its node's raylet)   blue dashed: data between object stores   "
        "every request carries the cluster's token",
        fontsize=8.2,
        color="#333333",
    )
    return _save(fig, path)


def request_path(path: Path) -> Path:
    """One request's path through a proxy, its router and a replica (lesson 02b, section 6)."""
    fig, ax = _canvas(5.6, "One HTTP request: proxy, router, replica (and what a handle skips)")

    _box(
        ax,
        2.3,
        0.35,
        6.2,
        4.6,
        "head node",
        COLORS["node"],
        fontsize=10,
        weight="bold",
        va="top",
        edge="#888888",
        lw=1.5,
    )
    _box(
        ax,
        8.8,
        0.35,
        4.1,
        4.6,
        "worker node",
        COLORS["node"],
        fontsize=10,
        weight="bold",
        va="top",
        edge="#888888",
        lw=1.5,
    )

    _box(ax, 0.1, 3.0, 1.9, 1.0, "HTTP client\nPOST /classify", COLORS["client"])
    _box(
        ax, 0.1, 0.6, 1.9, 1.2, "your Python code\nhandle.classify\n.remote(text)", COLORS["handle"]
    )
    _box(
        ax,
        2.55,
        2.75,
        1.9,
        1.5,
        "proxy\n(uvicorn)\n1 match\nroute_prefix",
        COLORS["proxy"],
        weight="bold",
    )
    _box(
        ax,
        4.75,
        2.75,
        1.85,
        1.5,
        "router\n2 prefer this\nnode's replicas\n3 sample two,\ntake fewer\nin flight",
        COLORS["proxy"],
        fontsize=8.5,
    )
    _box(
        ax,
        2.55,
        0.6,
        1.9,
        1.2,
        "the handle's router\n(in your process):\nevery replica is\na candidate",
        COLORS["handle"],
        fontsize=8.5,
    )
    _box(ax, 6.9, 3.25, 1.45, 1.0, "replica A\n2 in flight", COLORS["replica"], fontsize=8.5)
    _box(
        ax,
        6.9,
        1.95,
        1.45,
        1.0,
        "replica B\n0 in flight",
        COLORS["replica"],
        fontsize=8.5,
        weight="bold",
    )
    _box(ax, 9.2, 2.6, 1.6, 1.0, "replica C\n(worker)", COLORS["replica"], fontsize=8.5)
    _box(ax, 11.0, 2.6, 1.7, 1.0, "worker's proxy\n(own router)", COLORS["proxy"], fontsize=8.5)

    blue, purple = "#0b5394", "#674ea7"
    _arrow(ax, (2.0, 3.5), (2.55, 3.5), "", color=blue)
    _arrow(ax, (4.45, 3.5), (4.75, 3.5), "", color=blue)
    _arrow(ax, (6.6, 3.2), (6.9, 2.55), "4 send", color=blue, text_xy=(6.75, 2.25))
    _arrow(ax, (6.6, 3.7), (6.9, 3.75), "", color="#999999", ls=":")
    _arrow(
        ax,
        (6.6, 4.05),
        (9.2, 3.3),
        "only when this node's\nreplicas are all busy",
        color="#999999",
        ls=":",
        rad=-0.2,
        text_xy=(8.6, 4.45),
    )
    _arrow(
        ax,
        (6.9, 2.2),
        (1.05, 3.0),
        "5 answer (back through the proxy)",
        color=blue,
        ls="--",
        rad=-0.1,
        text_xy=(4.6, 2.3),
    )
    _arrow(ax, (2.0, 1.2), (2.55, 1.2), "", color=purple)
    _arrow(
        ax,
        (4.45, 1.2),
        (9.2, 2.65),
        "straight to any replica: no proxy, no HTTP",
        color=purple,
        rad=0.15,
        text_xy=(7.0, 0.95),
    )

    ax.text(
        0.1,
        0.12,
        "blue: an HTTP request through the head node's proxy   purple: a DeploymentHandle "
        "call   grey dotted: what the proxy's router avoids while it can",
        fontsize=8.5,
        color="#333333",
    )
    return _save(fig, path)


# What a changed field of a deployment does when a new config is deployed, as Ray 2.60
# classifies it (ray.serve._private.config.DeploymentConfig; tests/test_serve_configs.py
# fails when the installed Ray classifies them differently).
UPDATE_KINDS = {
    "state only": [
        "num_replicas",
        "max_queued_requests",
        "rolling_update_percentage",
        "max_surge_percent",
    ],
    "replica reconfigured": [
        "user_config",
        "max_ongoing_requests",
        "autoscaling_config",
        "logging_config",
        "graceful_shutdown_wait_loop_s",
        "request_router_config",
        "backpressure_config",
    ],
    "controller's record": [
        "graceful_shutdown_timeout_s",
        "health_check_period_s",
        "health_check_timeout_s",
        "max_constructor_retry_count",
    ],
}


def deploy_changes(path: Path) -> Path:
    """What `serve deploy` of a new config changes, restarts, deletes and leaves alone
    (lesson 03b, section 1)."""
    fig, ax = _canvas(
        5.9,
        "serve deploy new.yaml: the controller compares the file with what "
        "runs, application by application",
        fontsize=12.5,
    )
    green, yellow, red, grey = "#dff3df", "#fff2c2", "#f9d4d0", "#eeeeee"

    ax.text(1.75, 5.2, "in the new file", ha="center", fontsize=10, weight="bold")
    ax.text(
        8.7, 5.2, "what happens to the running replicas", ha="center", fontsize=10, weight="bold"
    )
    rows = [
        (
            "num_replicas changed\n(or " + UPDATE_KINDS["state only"][1] + ", ...)",
            "new replicas start or surplus ones stop (gracefully);\nthe others keep their "
            "process and keep serving",
            green,
        ),
        (
            "user_config or another\nreplica option changed",
            "each replica's reconfigure() runs "
            "in place: same process, no restart\n("
            + ", ".join(UPDATE_KINDS["replica reconfigured"][:4])
            + ", ...)",
            green,
        ),
        (
            "import_path, code, ray_actor_options\nor runtime_env changed",
            "rolling update: "
            "new replicas start, old ones drain and stop, a few at a time\n"
            "(rolling_update_percentage, 20 %); the rest serve meanwhile",
            yellow,
        ),
        (
            "an application the file\nno longer lists",
            "deleted: all its replicas stop (only apps that came from config files)",
            red,
        ),
        (
            "nothing changed, or an app\nfrom serve.run / serve run module:app",
            "nothing: no replica restarts; a config never touches apps deployed from Python",
            grey,
        ),
    ]
    y = 4.2
    for left, right, color in rows:
        _box(ax, 0.2, y, 3.1, 0.8, left, "white", fontsize=8.8)
        _arrow(ax, (3.3, y + 0.4), (3.8, y + 0.4))
        _box(ax, 3.8, y, 9.0, 0.8, right, color, fontsize=8.8)
        y -= 0.98
    ax.text(
        0.2,
        0.12,
        "green: no restart   yellow: replaced a few at a time   red: deleted   "
        "grey: untouched.  serve config shows what runs; serve status shows the update's "
        "progress.",
        fontsize=8.5,
        color="#333333",
    )
    return _save(fig, path)


def multi_app_routing(path: Path) -> Path:
    """Lesson 07a: one config file, three applications, the proxy routing by prefix, and what
    a `serve deploy` of a file that leaves one out does."""
    fig, ax = _canvas(
        6.2, "One Serve instance, one config file: the route prefix picks the application"
    )

    _box(ax, 0.1, 4.55, 2.3, 0.6, "POST /classify", COLORS["client"], fontsize=8.5)
    _box(ax, 0.1, 3.75, 2.3, 0.6, "POST /app1/v1/completions", COLORS["client"], fontsize=8.5)
    _box(ax, 0.1, 2.95, 2.3, 0.6, "GET /app2/v1/models", COLORS["client"], fontsize=8.5)
    _box(
        ax,
        3.0,
        2.95,
        2.1,
        2.2,
        "HTTP proxy\n(proxy_location:\nHeadOnly)\nlongest matching\nroute_prefix",
        COLORS["proxy"],
        weight="bold",
        fontsize=9,
    )
    _box(
        ax,
        6.0,
        4.55,
        5.4,
        0.7,
        "classifier  (/classify)   TextClassifier: 1 replica",
        COLORS["replica"],
        fontsize=9,
    )
    _box(
        ax,
        6.0,
        3.7,
        5.4,
        0.7,
        "app1  (/app1)  OpenAiIngress → LLMServer:tiny-chat, 1-2 replicas",
        COLORS["replica"],
        fontsize=9,
    )
    _box(
        ax,
        6.0,
        2.85,
        5.4,
        0.7,
        "app2  (/app2)  OpenAiIngress → LLMServer:tiny-docs, 1-3 replicas",
        COLORS["replica"],
        fontsize=9,
    )
    blue = "#0b5394"
    for y in (4.85, 4.05, 3.25):
        _arrow(ax, (2.4, y), (3.0, y), "", color=blue)
    _arrow(ax, (5.1, 4.7), (6.0, 4.9), "", color=blue)
    _arrow(ax, (5.1, 4.05), (6.0, 4.05), "", color=blue)
    _arrow(ax, (5.1, 3.35), (6.0, 3.2), "", color=blue)

    _box(
        ax,
        0.1,
        1.35,
        2.9,
        0.95,
        "multi_app.yaml\nclassifier, app1, app2",
        COLORS["client"],
        fontsize=9,
    )
    _box(
        ax,
        0.1,
        0.2,
        2.9,
        0.95,
        "llm_only.yaml\napp1, app2 (classifier left out)",
        COLORS["client"],
        fontsize=9,
    )
    _box(
        ax,
        4.4,
        0.55,
        2.6,
        1.4,
        "Serve controller\nthe file is the\ncomplete set",
        COLORS["control"],
        weight="bold",
        fontsize=9,
    )
    _arrow(ax, (3.0, 1.8), (4.4, 1.5), "serve deploy", color="#222222", text_xy=(3.7, 1.95))
    _arrow(ax, (3.0, 0.65), (4.4, 1.0), "serve deploy", color="#b45f06", text_xy=(3.7, 0.5))
    _arrow(
        ax,
        (7.0, 1.5),
        (8.2, 2.85),
        "unchanged: left alone\n(same processes)",
        color="#222222",
        text_xy=(8.9, 2.1),
    )
    _arrow(
        ax,
        (7.0, 0.9),
        (11.4, 4.9),
        "not listed:\ndeleted",
        color="#b45f06",
        ls="--",
        rad=0.55,
        text_xy=(12.3, 2.0),
    )
    return _save(fig, path)


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0]) if argv else HERE
    out.mkdir(parents=True, exist_ok=True)
    print(cluster_processes(out / "cluster_processes.png"))
    print(serve_architecture(out / "serve_architecture.png"))
    print(request_path(out / "serve_request_path.png"))
    print(deploy_changes(out / "serve_deploy_changes.png"))
    print(multi_app_routing(out / "multi_app_routing.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
