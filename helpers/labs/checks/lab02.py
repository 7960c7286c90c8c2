"""Lab 02's checks (lab02): a Serve config, `serve deploy`, an update without downtime.

What the checks verify: the YAML file (validated as Serve would), the declarative deployment,
the update under a RequestLoop that failed no request.

A lab's cells call them through the package, which registers every lab's checks
(``from helpers.labs import checks``, then ``checks.lab02_updated_without_downtime(lab, ...)``); the lab's
hidden checks are the instructor's, in :mod:`helpers.labs.hidden_checks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.errors import WorkbookError
from helpers.labs.checks.framework import (
    CheckProblem,
    _app,
    _deployment,
    _expect,
    _json,
    _post,
    _running_replicas,
    lab_check,
)
from helpers.serve_cli import validate_serve_config

if TYPE_CHECKING:  # pragma: no cover
    from helpers.labs.session import LabSession

__all__ = [
    "lab02_config_is_valid",
    "lab02_deployed_with_serve_deploy",
    "lab02_updated_without_downtime",
]


_L02_DEP = "ConfigurableClassifier"
_L02_IMPORT = "helpers.apps.configurable:app"


def _l02_entry(session: LabSession, path: Any, look: str) -> dict[str, Any]:
    import yaml

    path = Path(path) if path else None
    _expect(
        path is not None and path.exists(),
        f"The config file {path} does not exist.",
        look + " (write config_text to config_path)",
    )
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CheckProblem(f"{path.name} is not valid YAML: {str(err)[:200]}", look) from err
    _expect(
        isinstance(config, dict),
        f"{path.name} holds no config (it is empty or not a mapping).",
        look,
    )
    try:
        validate_serve_config(config)
    except WorkbookError as err:
        raise CheckProblem(f"{path.name}: {err.problem} {err.details[:400]}", look) from err
    entries = {a.get("name"): a for a in config.get("applications") or []}
    name = session.app_name("classifier")
    _expect(
        name in entries,
        f"{path.name} has no application named {name!r} (it has {sorted(map(str, entries))}).",
        look,
    )
    return entries[name]


def _l02_deployment(entry: Mapping[str, Any]) -> dict[str, Any]:
    for dep in entry.get("deployments") or []:
        if dep.get("name") == _L02_DEP:
            return dep
    return {}


@lab_check("lab02", 1)
def lab02_config_is_valid(session: LabSession, config_path: Any, *, replicas: int) -> None:
    """The YAML file is a valid Serve config for the classifier, as specified."""
    look = "Task 1: config_text"
    entry = _l02_entry(session, config_path, look)
    _expect(
        entry.get("import_path") == _L02_IMPORT,
        f"import_path is {entry.get('import_path')!r}, not {_L02_IMPORT!r}.",
        look,
    )
    _expect(
        entry.get("route_prefix") == session.route("classifier"),
        f"route_prefix is {entry.get('route_prefix')!r}, not {session.route('classifier')!r}.",
        look,
    )
    dep = _l02_deployment(entry)
    _expect(
        bool(dep),
        f"No deployment entry named {_L02_DEP!r} under the application.",
        look + " (deployments: - name: ConfigurableClassifier)",
    )
    _expect(
        dep.get("num_replicas") == replicas,
        f"num_replicas is {dep.get('num_replicas')!r}, not {replicas}.",
        look,
    )
    version = (dep.get("user_config") or {}).get("config_version")
    _expect(version == 1, f"user_config.config_version is {version!r}, not 1.", look)


@lab_check("lab02", 2)
def lab02_deployed_with_serve_deploy(session: LabSession, *, replicas: int) -> None:
    """The classifier runs, deployed from the config file with `serve deploy`."""
    look = "Task 2: the cell that runs `serve deploy`"
    app = _app(session, "classifier", task=2, look=look)
    _expect(
        app.get("source") == "declarative",
        f"The application was deployed with {app.get('source')!r} API (serve.run), not "
        "from a config with `serve deploy`.",
        look,
    )
    dep = _deployment(app, _L02_DEP, look=look)
    _expect(
        len(_running_replicas(dep)) == replicas,
        f"{len(_running_replicas(dep))} replicas are RUNNING, the file says {replicas}.",
        look + " (wait with wait_until_running)",
    )
    body = _json(_post(session.url("classifier"), {"text": "great service"}, look=look), look=look)
    _expect(
        body.get("config_version") == 1,
        f"The app answers config_version {body.get('config_version')!r}, not 1.",
        look,
    )


@lab_check("lab02", 3)
def lab02_updated_without_downtime(
    session: LabSession, update_traffic: Any, *, replicas: int
) -> None:
    """The update to config_version 2 and more replicas failed no request."""
    look = "Task 3: the updated config and the `serve deploy` inside the RequestLoop"
    _expect(
        update_traffic is not None and len(update_traffic) > 0,
        "No requests were recorded during the update.",
        look,
    )
    failed = update_traffic[~update_traffic["ok"].astype(bool)]
    _expect(
        len(failed) == 0,
        f"{len(failed)} of {len(update_traffic)} requests failed during "
        f"the update, e.g. {failed['error'].iloc[0] if len(failed) else ''}",
        look,
    )
    versions = set(update_traffic["config_version"].dropna().astype(int))
    _expect(
        versions == {1, 2},
        f"Requests during the update saw config versions {versions}; "
        "both 1 (before) and 2 (after) should appear.",
        look + " (deploy while the loop runs, then loop.wait_until_serving)",
    )
    app = _app(session, "classifier", task=3, look=look)
    dep = _deployment(app, _L02_DEP, look=look)
    _expect(
        len(_running_replicas(dep)) == replicas,
        f"{len(_running_replicas(dep))} replicas run, the update asks for {replicas}.",
        look,
    )
    answers = [
        _json(_post(session.url("classifier"), {"text": "okay"}, look=look), look=look)
        for _ in range(2 * replicas)
    ]
    old = [a for a in answers if a.get("config_version") != 2]
    _expect(not old, f"{len(old)} answers still come from config_version 1.", look)
