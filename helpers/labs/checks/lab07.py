"""Lab 07's checks (lab07): diagnose and fix a broken deployment.

What the checks verify: the diagnosis against what the cluster shows (:data:`CAUSES`), then the
three applications fixed.

A lab's cells call them through the package, which registers every lab's checks
(``from helpers.labs import checks``, then ``checks.lab07_all_fixed(lab, ...)``); the lab's
hidden checks are the instructor's, in :mod:`helpers.labs.hidden_checks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.labs.checks.framework import (
    _app,
    _expect,
    _json,
    _post,
    _running_replicas,
    _serve_apps,
    lab_check,
)
from helpers.serve_cli import check_config_fields
from helpers.serve_status import pending_demands

if TYPE_CHECKING:  # pragma: no cover
    from helpers.labs.session import LabSession

__all__ = [
    "CAUSES",
    "lab07_observed_causes",
    "lab07_diagnosis",
    "lab07_intent",
    "lab07_all_fixed",
]


#: The causes a diagnosis may name.
CAUSES = {
    "unschedulable": "its replicas ask for resources no node has, so they never start",
    "crashes": "its replicas start and then raise (constructor or reconfigure)",
    "ignored-key": "it runs, but a misspelled key in the config was silently ignored",
    "healthy": "nothing is wrong with it",
}
_L07_APPS = ("alpha", "beta", "gamma")


def lab07_observed_causes(session: LabSession, broken_config_path: Any) -> dict[str, str]:
    """What the live cluster shows for each of lab 07's applications (see :data:`CAUSES`)."""
    import yaml

    config = yaml.safe_load(Path(broken_config_path).read_text())
    entries = {a["name"]: a for a in config["applications"]}
    typos = {p.where for p in check_config_fields(config)}
    demands = " ".join(pending_demands(session.cluster))
    apps = _serve_apps(session)
    causes = {}
    for index, short in enumerate(_L07_APPS):
        name = session.app_name(short)
        app = apps.get(name) or {}
        entry = entries.get(name) or {}
        cpus = [
            (d.get("ray_actor_options") or {}).get("num_cpus")
            for d in entry.get("deployments") or []
        ]
        status = app.get("status")
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            causes[short] = "crashes"
        elif status == "DEPLOYING" and any(c and f"'CPU': {float(c)}" in demands for c in cpus):
            causes[short] = "unschedulable"
        elif status == "RUNNING" and any(w.startswith(f"applications[{index}]") for w in typos):
            causes[short] = "ignored-key"
        elif status == "RUNNING":
            causes[short] = "healthy"
        else:
            causes[short] = f"unclear ({status})"
    return causes


@lab_check("lab07", 1)
def lab07_diagnosis(session: LabSession, diagnosis: Any, *, broken_config_path: Any) -> None:
    """The diagnosis names the cause that the cluster shows for each application."""
    look = "Task 1: diagnosis, with serve status, pending_demands(cluster), check_config_fields"
    _expect(
        isinstance(diagnosis, dict) and set(diagnosis) == set(_L07_APPS),
        f"diagnosis must map each of {list(_L07_APPS)} to a cause; it is {diagnosis!r}.",
        look,
    )
    bad = [c for c in diagnosis.values() if c not in CAUSES]
    _expect(not bad, f"{bad} are not causes; choose from {sorted(CAUSES)}.", look)
    observed = lab07_observed_causes(session, broken_config_path)
    wrong = sorted(app for app, said in diagnosis.items() if observed[app] != said)
    # The feedback names the applications, never the cause the cluster shows: that is the task.
    _expect(
        not wrong,
        f"Your diagnosis is not what the cluster shows for {', '.join(wrong)} "
        f"({len(wrong)} of {len(_L07_APPS)}).",
        look + "; for each of them ask: does it run, did its replicas start, does it run "
        "as its file says?",
    )
    print(lab07_intent(broken_config_path))


def lab07_intent(broken_config_path: Any) -> str:
    """What lab 07's colleague meant each application to be: shown once the diagnosis is
    right (Task 2 fixes the config to it), never before."""
    import yaml

    config = yaml.safe_load(Path(broken_config_path).read_text())
    gamma = config["applications"][2]["deployments"][0]
    replicas = gamma.get("num_replicas", gamma.get("num_replica"))
    return (
        "Diagnosis right. What your colleague meant (Task 2): alpha's replicas reserve a "
        "quarter of a CPU each (num_cpus 0.25); beta classifies at threshold 0.5; gamma "
        f"runs {replicas} replicas."
    )


@lab_check("lab07", 2)
def lab07_all_fixed(session: LabSession, *, gamma_replicas: int) -> None:
    """All three applications run as intended and answer."""
    look = "Task 2: the fixed config (fixed_path), deployed with `serve deploy`"
    for short in _L07_APPS:
        app = _app(session, short, task=2, look=look)
        body = _json(_post(session.url(short), {"text": "a wonderful day"}, look=look), look=look)
        _expect(
            body.get("label") in ("positive", "negative"),
            f"{short} answered {str(body)[:200]}.",
            look,
        )
        if short == "gamma":
            dep: dict[str, Any] = next(iter((app.get("deployments") or {}).values()), {})
            running = len(_running_replicas(dep))
            _expect(
                running == gamma_replicas,
                f"gamma runs {running} replica(s); its config meant {gamma_replicas}.",
                look,
            )
