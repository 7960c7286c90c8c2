"""Lab 09's checks (lab09): models on logical GPUs.

What the checks verify: each model's replicas, one per node, with their GPU share and no CPU,
and nothing pending; the lab's cells use :func:`lab09_gpu_nodes` and :func:`lab09_where`.

A lab's cells call them through the package, which registers every lab's checks
(``from helpers.labs import checks``, then ``checks.lab09_generate_fits(lab, ...)``); the lab's
hidden checks are the instructor's, in :mod:`helpers.labs.hidden_checks`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from helpers.errors import WorkbookError
from helpers.labs.checks.framework import (
    CheckProblem,
    _expect,
    _running_replicas,
    _serve_apps,
    lab_check,
)
from helpers.load import run_in_new_loop
from helpers.serve_status import pending_demands

if TYPE_CHECKING:  # pragma: no cover
    from helpers.labs.session import LabSession

__all__ = [
    "LAB09_GPUS",
    "LAB09_REPLICAS",
    "lab09_gpu_nodes",
    "lab09_where",
    "lab09_embed_placed",
    "lab09_rerank_placed",
    "lab09_generate_fits",
]


#: What each of lab 09's models must reserve per replica, and how many replicas it runs.
LAB09_GPUS = {"embed": 0.5, "rerank": 0.5, "generate": 1.0}
LAB09_REPLICAS = 2
_L09_LOOK = {
    short: f"Task {task}: {short}_deployment (num_replicas, max_replicas_per_node, "
    "ray_actor_options)"
    for task, short in enumerate(LAB09_GPUS, start=1)
}


def lab09_gpu_nodes(session: LabSession, *, gpus: float = 2.0) -> dict[str, float]:
    """The alive nodes with at least ``gpus`` GPUs (node id -> its GPUs): at least two, or an
    error that says what the cluster lacks."""
    import ray

    session.cluster.connect()
    found = {
        node["NodeID"]: node.get("Resources", {}).get("GPU", 0.0)
        for node in ray.nodes()
        if node.get("Alive") and node.get("Resources", {}).get("GPU", 0.0) >= gpus
    }
    if len(found) < 2:
        raise WorkbookError(
            f"This lab needs two nodes with {gpus:g} GPUs each; the cluster has {len(found)}.",
            "on a laptop leave ray_address empty (the lab starts two such nodes); on a shared "
            "cluster, ask for nodes started with `ray start --num-gpus=N` (logical GPUs are "
            "fine), two per student.",
        )
    return found


def lab09_where(
    session: LabSession, short: str, replicas: int | None = None, *, timeout_s: float = 20.0
) -> list[dict[str, Any]]:
    """What each of a model's replicas says of its placement (node, GPU ids, the resources it
    was given), asked through a handle: Serve's proxy prefers replicas on its own node, a
    handle in this process picks among all of them. ``replicas``: how many must answer (a
    :class:`CheckProblem` otherwise); None: those RUNNING now, after waiting for the
    application as a check does, and none if it never came."""
    from ray import serve

    name = session.app_name(short)
    if replicas is None:
        try:
            replicas = len(_l09_replicas(session, short))
        except CheckProblem:
            return []
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < replicas and time.monotonic() < deadline:
        answer = run_in_new_loop(lambda: serve.get_app_handle(name).remote().result(timeout_s=30))
        seen.setdefault(answer["replica"], answer)
    if len(seen) < replicas:
        raise CheckProblem(
            f"Only {len(seen)} of {replicas} replicas of {name!r} answered "
            f"within {timeout_s:.0f} s.",
            _L09_LOOK[short],
        )
    return list(seen.values())


def _l09_replicas(session: LabSession, short: str) -> list[dict[str, Any]]:
    """The model's RUNNING replicas, after waiting for them; a problem naming what is pending."""

    look = _L09_LOOK[short]
    started = time.monotonic()
    while True:
        apps = _serve_apps(session)
        app = apps.get(session.app_name(short), {})
        dep = (app.get("deployments") or {}).get("ResourceProbe", {})
        running = _running_replicas(dep)
        wanted = (dep.get("deployment_config") or {}).get("num_replicas")
        if app.get("status") == "RUNNING" and running and len(running) == wanted:
            return running
        waited = time.monotonic() - started
        # `serve deploy` returns once Serve holds the config: an app still missing after 2 s
        # was never deployed; a pending replica may still be placed, so it gets a minute.
        if (not app and waited > 2) or app.get("status") == "DEPLOY_FAILED" or waited > 60:
            break
        time.sleep(1.0)
    if not app:
        raise CheckProblem(
            f"Serve has no application {session.app_name(short)!r}.",
            look + "; the cell's `serve deploy` (its output says why it failed)",
        )
    if app.get("status") == "DEPLOY_FAILED":
        raise CheckProblem(
            f"{session.app_name(short)!r} failed to deploy: "
            f"{(app.get('message') or '').strip()[:300]}",
            look,
        )
    pending = pending_demands(session.cluster)
    raise CheckProblem(
        f"{session.app_name(short)!r} is {app.get('status')} with {len(running)} replica(s) "
        f"running of {wanted}" + (f"; pending on the cluster: {pending}" if pending else "") + ".",
        look + ": a share no node can give stays pending (`ray status` lists it)",
    )


def _l09_placed(session: LabSession, short: str) -> None:
    look = _L09_LOOK[short]
    running = _l09_replicas(session, short)
    _expect(
        len(running) == LAB09_REPLICAS,
        f"{short} runs {len(running)} replica(s); the lab asks for {LAB09_REPLICAS}.",
        look,
    )
    nodes = [r.get("node_id") for r in running]
    _expect(
        len(set(nodes)) == len(nodes),
        f"{short}'s replicas share a node ({sorted(n[:8] for n in nodes if n)}): one node's "
        "failure would take them all.",
        look + ": max_replicas_per_node",
    )
    found = lab09_where(session, short, len(running))
    shares = sorted(float(r["assigned"].get("GPU", 0)) for r in found)
    _expect(
        shares == [LAB09_GPUS[short]] * len(running),
        f"{short}'s replicas were given GPU shares {shares}; the lab asks for "
        f"{LAB09_GPUS[short]:g} each.",
        look + ": ray_actor_options num_gpus",
    )
    cpus = sorted(float(r["assigned"].get("CPU", 0)) for r in found)
    _expect(
        cpus == [0.0] * len(running),
        f"{short}'s replicas reserve CPUs {cpus}; the lab asks for none (they wait on their GPU).",
        look + ": ray_actor_options num_cpus",
    )


@lab_check("lab09", 1)
def lab09_embed_placed(session: LabSession) -> None:
    """embed runs two replicas on two nodes, half a GPU and no CPU each."""
    _l09_placed(session, "embed")


@lab_check("lab09", 2)
def lab09_rerank_placed(session: LabSession) -> None:
    """rerank runs two replicas on two nodes, half a GPU and no CPU each, beside embed."""
    _l09_placed(session, "rerank")
    _l09_replicas(session, "embed")  # still there: the config kept it


@lab_check("lab09", 3)
def lab09_generate_fits(session: LabSession) -> None:
    """generate runs two replicas on two nodes, a whole GPU each, and nothing is pending."""
    _l09_placed(session, "generate")
    for short in ("embed", "rerank"):
        _l09_replicas(session, short)
