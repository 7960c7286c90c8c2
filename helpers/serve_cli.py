"""The Serve CLI from a notebook: on *this* cluster, in the background, with plain advice.

* :class:`ServeRun` - ``serve run TARGET`` as a background process attached to the notebook's
  cluster (``--address`` and the cluster's token), waited on until its applications are
  RUNNING, and stopped by its process id: SIGINT (what Ctrl-C sends: ``serve run`` then shuts
  Serve down) or SIGTERM (the process ends, the applications stay). A
  :class:`~helpers.processes.ManagedProcess`: registered so the leak checks see it; stopped
  at interpreter exit if a cell failed first.
* Config files: :func:`serve_build` (``serve build`` plus naming the applications),
  :func:`load_config` / :func:`write_config`, :func:`local_run_config` (this machine's free
  port), :func:`with_deployment_options`, :func:`with_import_path`, :func:`config_diff`.
* Checking and explaining: :func:`check_config_fields` finds keys Serve would silently ignore
  (Ray 2.60's config schema accepts unknown fields for forward compatibility, so
  ``num_replica: 3`` is dropped without a word); :func:`validate_serve_config` runs that check
  and the installed Serve's own schema; :func:`explain_serve_error` turns Serve's error text
  into what it means and what to do.

Usage::

    from helpers.serve_cli import ServeRun, explain_serve_error
    with ServeRun("helpers.apps.classifier:app", cluster) as run:
        run.wait_until_running(["default"])
    result = cluster.run_cli(["serve", "deploy", "bad.yaml"], check=False)
    print(explain_serve_error(result.stdout + result.stderr))
"""

from __future__ import annotations

import copy
import difflib
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from helpers.errors import ClusterNotRunningError, WorkbookError, closest
from helpers.paths import scratch_root
from helpers.processes import ManagedProcess, ray_executable
from helpers.serve_status import (
    dashboard_timeout_s,
    serve_client,
    serve_details,
    wait_until_apps_running,
)

if TYPE_CHECKING:  # pragma: no cover
    from ray.serve.schema import ServeDeploySchema

    from helpers.cluster import ClusterHandle

__all__ = [
    "ServeRun",
    "ServeRunExited",
    "ServeConfigError",
    "ConfigProblem",
    "Advice",
    "RENAMED_OPTIONS",
    "serve_build",
    "deploy_config",
    "apps_deleted_by",
    "load_config",
    "write_config",
    "local_run_config",
    "with_deployment_options",
    "with_import_path",
    "config_diff",
    "check_config_fields",
    "validate_serve_config",
    "ErrorRule",
    "SERVE_ERRORS",
    "explain_serve_error",
]


class ServeRunExited(WorkbookError):
    """``serve run`` ended before its applications were RUNNING."""


class ServeConfigError(WorkbookError):
    """A Serve config file has keys Serve would ignore, or fails Serve's own schema."""


# -- serve run in the background --------------------------------------------------------


class ServeRun(ManagedProcess):
    """``serve run TARGET --address CLUSTER`` as a background process of this notebook.

    ``target`` is an import path (``helpers.apps.classifier:app``) or a YAML config file.
    Output goes to ``log_path``. The process runs in a session of its own, so stopping it
    (by its pid) can never touch anything else. :meth:`stop` sends SIGINT first, as Ctrl-C
    does: ``serve run`` then shuts Serve down on the cluster (all applications);
    ``stop(sig=signal.SIGTERM)`` ends the process without that, and the applications keep
    running.
    """

    def __init__(
        self,
        target: str | Path,
        cluster: ClusterHandle,
        *,
        args: Sequence[str] = (),
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.target = str(target)
        self.cluster = cluster
        self.id = f"serve-run-{uuid.uuid4().hex[:8]}"
        super().__init__(
            [ray_executable("serve"), "run", self.target, "--address", cluster.address, *args],
            kind="serve-run",
            name=self.id,
            log_path=log_path,
            cwd=cwd or scratch_root(),
            stop_signal=signal.SIGINT,
            stop_timeout_s=60.0,
        )
        self.started_at: float | None = None

    @classmethod
    def from_command(
        cls,
        command: str,
        cluster: ClusterHandle,
        *,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> ServeRun:
        """A ``serve run`` command line, as a learner types it in a terminal, to run in the background.

        ``ServeRun.from_command("serve run greeter:app --working-dir . --name greeter", cluster,
        cwd=work_dir).start()``. The words are split as a shell would (quotes keep a JSON
        argument whole); ``--address`` is added for ``cluster``. Raises :class:`WorkbookError`
        for a command that is not ``serve run TARGET ...``, or that gives its own ``--address``.
        Introduced in notebooks/03a_five_ways_to_launch.ipynb.
        """
        import shlex

        try:
            words = shlex.split(command)
        except ValueError as err:
            raise WorkbookError(
                f"Cannot split the command {command!r}: {err}.", "close every quote in the command."
            ) from err
        if words[:2] != ["serve", "run"] or len(words) < 3 or words[2].startswith("-"):
            raise WorkbookError(
                f"{command!r} is not a `serve run` command.",
                "write it as you would in a terminal: serve run module:app "
                "[options], or serve run config.yaml.",
            )
        if any(w in ("--address", "-a") or w.startswith("--address=") for w in words[3:]):
            raise WorkbookError(
                f"{command!r} gives its own --address.",
                "leave it out: the cluster's address is added (and RAY_ADDRESS "
                "is set) for the cluster this notebook uses.",
            )
        return cls(words[2], cluster, args=words[3:], log_path=log_path, cwd=cwd)

    @property
    def command(self) -> str:
        """The command line, as you would type it."""
        return " ".join(["serve", *self.argv[1:]])

    @property
    def proc(self) -> subprocess.Popen | None:
        """The ``serve run`` process, None before :meth:`start`."""
        return self.popen

    @property
    def pid(self) -> int:
        """Its process id, also once stopped (what the log and the registry name)."""
        if self.popen is None:
            raise WorkbookError("This serve run was not started.", "call .start() first.")
        return self.popen.pid

    def start(self) -> ServeRun:
        """Start the process (returns at once; see :meth:`wait_until_running`)."""
        if self.popen is not None:
            raise WorkbookError("This serve run was already started.", "make a new ServeRun.")
        self.env = self.cluster.env  # its address and token as they are now
        super().start()
        self.started_at = time.monotonic()
        return self

    def wait_until_running(
        self, apps: Sequence[str], *, timeout_s: float = 180.0, grace_s: float = 20.0
    ) -> float:
        """Block until every app in ``apps`` is RUNNING; return seconds since :meth:`start`.

        Raises :class:`ServeRunExited` (with the log's end and advice) if the process ends
        first, :class:`ServeDeployError` if an application fails, and
        :class:`ServeTimeoutError` after ``timeout_s``.
        """

        if self.started_at is None:
            self.start()

        def still_running() -> None:
            if not self.running:
                log = self.log_text()
                advice = explain_serve_error(log)
                raise ServeRunExited(
                    f"`{self.command}` exited with code {self.returncode} before "
                    f"{', '.join(apps)} ran.",
                    advice.fix,
                    details=_tail(log, 30),
                )

        # Serve's status may not be readable until `serve run` has started Serve: not yet.
        wait_until_apps_running(
            apps,
            cluster=self.cluster,
            timeout_s=timeout_s,
            poll_s=0.5,
            grace_s=grace_s,
            since=self.started_at,
            watch=still_running,
            not_yet=(ClusterNotRunningError,),
        )
        return round(time.monotonic() - (self.started_at or 0.0), 2)

    def __repr__(self) -> str:
        state = "running" if self.running else ("not started" if self.popen is None else "stopped")
        pid = f" pid {self.popen.pid}" if self.popen else ""
        return f"<ServeRun {self.target!r}{pid} {state}>"


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# -- config files -----------------------------------------------------------------------


def load_config(path: str | Path) -> dict[str, Any]:
    """A Serve YAML config file as a dict."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ServeConfigError(
            f"{path} is not a YAML mapping.",
            "a Serve config starts with keys such as applications:.",
        )
    return data


def write_config(config: Mapping[str, Any], path: str | Path, *, header: str = "") -> Path:
    """Write ``config`` as YAML (keys in their given order), with an optional comment header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)
    comment = "".join(
        f"# {line}\n".replace("#  ", "# ").rstrip(" ") if line else "#\n"
        for line in header.splitlines()
    )
    path.write_text((comment + "\n" if comment else "") + text)
    return path


def serve_build(
    import_paths: Sequence[str],
    output: str | Path,
    *,
    names: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Run ``serve build IMPORT_PATHS -o OUTPUT``; optionally name the applications.

    ``serve build`` calls its applications app1, app2, ... with route prefixes /app1, /app2.
    ``names`` maps those to real names (``{"app1": "gateway"}``); the route prefix becomes
    ``/<name>``. Returns the config that was written. Needs no cluster.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = [ray_executable("serve"), "build", *import_paths, "-o", str(output)]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=cwd or scratch_root(),
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        text = result.stdout + result.stderr
        raise ServeConfigError(
            f"`serve build {' '.join(import_paths)}` failed.",
            explain_serve_error(text).fix,
            details=_tail(text),
        )
    if names:
        text = output.read_text()
        header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
        config = yaml.safe_load(text)
        for app in config.get("applications", []):
            if app["name"] in names:
                new = names[app["name"]]
                app["name"], app["route_prefix"] = new, f"/{new}"
        output.write_text(header + "\n" + yaml.safe_dump(config, sort_keys=False))
    return load_config(output)


def deploy_config(cluster: ClusterHandle, config: Mapping[str, Any] | str | Path) -> None:
    """What ``serve deploy CONFIG`` does, from Python: validate, then PUT it to the cluster.

    The config is declarative: it is the complete set of applications deployed this way
    (those missing from it are deleted; applications started with ``serve.run`` are left
    alone), and a change of ``user_config`` alone reconfigures replicas in place.
    """

    schema = validate_serve_config(config)
    body = schema.model_dump(exclude_unset=True)
    # A PUT that times out may still be applied: the error says to look at serve status.
    serve_client(
        cluster,
        "PUT /api/serve/applications/ (serve deploy); it may still be applied, see serve status",
        lambda client: client.deploy_applications(body),
        timeout_s=2 * dashboard_timeout_s(),
    )


def apps_deleted_by(config: Mapping[str, Any] | str | Path, cluster: ClusterHandle) -> list[str]:
    """Applications that ``serve deploy CONFIG`` would delete on ``cluster``: those deployed
    by an earlier ``serve deploy`` (declaratively) that ``config`` does not list.

    ``serve deploy`` deletes them without a warning; check before deploying. Applications
    started from Python (``serve.run``) are never deleted by a config.
    """

    data = load_config(config) if isinstance(config, (str, Path)) else dict(config)
    listed = {app.get("name") for app in data.get("applications") or []}
    running = serve_details(cluster).get("applications") or {}
    return sorted(
        name
        for name, app in running.items()
        if app.get("source") == "declarative" and name not in listed
    )


def local_run_config(
    config: Mapping[str, Any],
    *,
    port: int,
    host: str = "127.0.0.1",
    proxy_location: str | None = None,
) -> dict[str, Any]:
    """A copy of ``config`` that serves on ``host:port`` (this machine), nothing else changed."""
    out = copy.deepcopy(dict(config))
    out["http_options"] = {**(out.get("http_options") or {}), "host": host, "port": int(port)}
    if proxy_location:
        out["proxy_location"] = proxy_location
    return out


def _find_app(config: dict[str, Any], app: str) -> dict[str, Any]:
    for entry in config.get("applications", []):
        if entry.get("name") == app:
            return entry
    names = [a.get("name") for a in config.get("applications", [])]
    raise ServeConfigError(f"No application {app!r} in the config.", f"use one of {names}.")


def with_deployment_options(
    config: Mapping[str, Any], app: str, deployment: str, **options: Any
) -> dict[str, Any]:
    """A copy of ``config`` with ``options`` set on one deployment of one application."""
    out = copy.deepcopy(dict(config))
    entry = _find_app(out, app)
    deployments = entry.setdefault("deployments", [])
    dep = next((d for d in deployments if d.get("name") == deployment), None)
    if dep is None:
        dep = {"name": deployment}
        deployments.append(dep)
    dep.update(options)
    return out


def with_import_path(config: Mapping[str, Any], app: str, import_path: str) -> dict[str, Any]:
    """A copy of ``config`` whose application ``app`` runs the code at ``import_path``."""
    out = copy.deepcopy(dict(config))
    _find_app(out, app)["import_path"] = import_path
    return out


def config_diff(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    *,
    names: tuple[str, str] = ("before.yaml", "after.yaml"),
) -> str:
    """A unified diff of two configs' YAML, as ``git diff`` would show it."""
    a = yaml.safe_dump(dict(before), sort_keys=False).splitlines()
    b = yaml.safe_dump(dict(after), sort_keys=False).splitlines()
    return "\n".join(difflib.unified_diff(a, b, *names, lineterm="", n=1))


# -- checking and explaining ------------------------------------------------------------

#: Options that older Ray releases (and material written for them) use, and their Ray 2.60 names.
RENAMED_OPTIONS: dict[str, str] = {
    "max_concurrent_queries": "max_ongoing_requests",
    "target_num_ongoing_requests_per_replica": "target_ongoing_requests (in autoscaling_config)",
    "max_queued_requests_per_replica": "max_queued_requests",
    "upscale_delay": "upscale_delay_s",
    "downscale_delay": "downscale_delay_s",
    "smoothing_factor": "upscaling_factor / downscaling_factor",
    "route_prefix": "route_prefix on the application (not on a deployment)",
}


@dataclass(frozen=True)
class ConfigProblem:
    """One key in a Serve config that Serve would not use as intended."""

    where: str  # e.g. "applications[0].deployments[0]"
    key: str
    suggestion: str  # the intended key, or ""

    def __str__(self) -> str:
        hint = f" - did you mean {self.suggestion!r}?" if self.suggestion else ""
        return f"{self.where}: unknown key {self.key!r}{hint}"


def _fields(model: Any) -> set[str]:
    names = set(model.model_fields)
    names |= {f.alias for f in model.model_fields.values() if getattr(f, "alias", None)}
    return names


def _suggest(key: str, known: set[str]) -> str:
    if key in RENAMED_OPTIONS:
        return RENAMED_OPTIONS[key]
    return closest(key, known) or ""


def _check(mapping: Any, known: set[str], where: str, out: list[ConfigProblem]) -> None:
    if isinstance(mapping, dict):
        for key in mapping:
            if key not in known:
                out.append(ConfigProblem(where, str(key), _suggest(str(key), known)))


def check_config_fields(config: Mapping[str, Any] | str | Path) -> list[ConfigProblem]:
    """Keys of a Serve config that the installed Serve does not know (it would ignore them).

    Checks the top level, ``http_options``, each application, each deployment, its
    ``ray_actor_options`` and ``autoscaling_config``, against the installed Ray's schemas.
    """
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import (
        DeploymentSchema,
        HTTPOptionsSchema,
        RayActorOptionsSchema,
        ServeApplicationSchema,
        ServeDeploySchema,
    )

    data = load_config(config) if isinstance(config, (str, Path)) else dict(config)
    problems: list[ConfigProblem] = []
    _check(data, _fields(ServeDeploySchema), "top level", problems)
    _check(data.get("http_options"), _fields(HTTPOptionsSchema), "http_options", problems)
    for i, app in enumerate(data.get("applications") or []):
        where = f"applications[{i}]"
        _check(app, _fields(ServeApplicationSchema), where, problems)
        if not isinstance(app, dict):
            continue
        for j, dep in enumerate(app.get("deployments") or []):
            dwhere = f"{where}.deployments[{j}]"
            _check(dep, _fields(DeploymentSchema), dwhere, problems)
            if isinstance(dep, dict):
                _check(
                    dep.get("ray_actor_options"),
                    _fields(RayActorOptionsSchema),
                    f"{dwhere}.ray_actor_options",
                    problems,
                )
                _check(
                    dep.get("autoscaling_config"),
                    _fields(AutoscalingConfig),
                    f"{dwhere}.autoscaling_config",
                    problems,
                )
    return problems


def validate_serve_config(config: Mapping[str, Any] | str | Path) -> ServeDeploySchema:
    """Check a config strictly (no ignored keys) and with the installed Serve's schema.

    Returns the parsed :class:`ray.serve.schema.ServeDeploySchema`; raises
    :class:`ServeConfigError` naming every problem and the likely fix.
    """
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    data = load_config(config) if isinstance(config, (str, Path)) else dict(config)
    problems = check_config_fields(data)
    if problems:
        raise ServeConfigError(
            f"The Serve config has {len(problems)} key(s) that Serve would silently ignore.",
            "rename them as suggested (Ray 2.60 accepts unknown keys for forward "
            "compatibility, so a typo does not fail: it just has no effect).",
            details="\n".join(map(str, problems)),
        )
    try:
        return ServeDeploySchema.model_validate(data)
    except ValidationError as err:
        raise ServeConfigError(
            "The Serve config does not match Serve's schema.",
            explain_serve_error(str(err)).fix,
            details=str(err),
        ) from err


@dataclass(frozen=True)
class Advice:
    """What an error from Serve means and what to do about it."""

    kind: str
    meaning: str
    fix: str
    serve_said: str

    def __str__(self) -> str:
        return (
            f"Serve said:   {self.serve_said}\nWhat it means: {self.meaning}\n"
            f"Fix:          {self.fix}"
        )


def _key_line(text: str, patterns: Sequence[str]) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for pattern in patterns:
        for line in lines:
            if re.search(pattern, line):
                return line[:300]
    return lines[-1][:300] if lines else ""


@dataclass(frozen=True)
class ErrorRule:
    """One kind of error Serve reports: how to recognise it and what to tell the learner.

    ``detect`` finds the kind in the text; ``name`` (a pattern with one group) picks the thing
    it is about (a field, a module, a command, an address) for ``meaning`` and ``fix``, which
    may say ``{name}``; ``fix_for`` gives a different fix for particular names. ``said`` are
    the patterns of the line quoted as what Serve said, the first that matches; ``said_is``
    (with ``{name}``) replaces that line when the name was found.
    """

    kind: str
    detect: str
    meaning: str
    fix: str
    said: tuple[str, ...]
    name: tuple[str, ...] = ()
    default_name: str = ""
    fix_for: Mapping[str, str] = field(default_factory=dict)
    said_is: str = ""

    def advice(self, text: str) -> Advice:
        found = next((m.group(1) for pattern in self.name if (m := re.search(pattern, text))), None)
        name = found or self.default_name
        fix = self.fix_for.get(name, self.fix)
        said = (
            self.said_is.format(name=name) if found and self.said_is else _key_line(text, self.said)
        )
        return Advice(self.kind, self.meaning.format(name=name), fix.format(name=name), said)


#: What Serve's errors mean, most specific first: :func:`explain_serve_error` (the Serve CLI
#: helpers here) and :mod:`helpers.doctor` (an application's failure) both read this table.
SERVE_ERRORS: tuple[ErrorRule, ...] = (
    ErrorRule(
        "missing-field",
        r"Field required|type=missing",
        "the config lacks {name}: a required key is absent, usually because it is misspelled "
        "(import_pth, aplications).",
        "spell the key as in `serve build` output; check the file first with "
        "validate_serve_config(path), which also names keys Serve would ignore.",
        said=(r"Field required",),
        name=(r"([\w.\[\]]+)\n\s+Field required",),
        default_name="a required field",
        said_is="{name}: Field required",
    ),
    ErrorRule(
        "unknown-field",
        r"extra_forbidden|Extra inputs are not permitted",
        "a section with a closed schema (logging_config, ...) has a key Serve does not know.",
        "fix the key's spelling; see the schema in ray.serve.schema.",
        said=(r"Extra inputs", r"validation error"),
    ),
    ErrorRule(
        "invalid-value",
        r"validation error",
        "a value in the config has the wrong type or range.",
        "correct the value named in the message; `serve build` output shows valid ones.",
        said=(r"Value error", r"validation error"),
    ),
    ErrorRule(
        "import-path-module",
        r"No module named|ModuleNotFoundError",
        "the import_path's module {name!r} cannot be imported where the application is built "
        "(on the cluster, not on your laptop).",
        "fix the spelling (module.path:variable), and make the code importable on every node: "
        "install the package there, or ship it with runtime_env working_dir.",
        said=(r"No module named", r"ModuleNotFoundError"),
        name=(r"No module named '([^']+)'",),
        default_name="the module",
    ),
    ErrorRule(
        "import-path-attribute",
        r"has no attribute|AttributeError",
        "the module imports, but the name after ':' is not in it.",
        "use module:variable where variable is the bound application (app = X.bind()) or a "
        "builder function that returns one.",
        said=(r"has no attribute", r"AttributeError"),
    ),
    ErrorRule(
        "no-such-command",
        r"No such command",
        "this Ray's `serve` CLI has no `{name}` command.",
        "run `serve --help` for the commands of this Ray.",
        said=(r"No such command",),
        name=(r"No such command '([^']+)'",),
        default_name="?",
        fix_for={
            "delete": "remove the application from the config and `serve deploy` it again "
            "(a config is the complete set of apps), or call serve.delete(name) "
            "from Python."
        },
    ),
    ErrorRule(
        "auth",
        r"InvalidAuthToken|Unauthenticated|AuthenticationError|Missing authentication "
        r"token|\b401 Unauthorized\b|status(?: code)?:? 401\b",
        "the cluster requires its token and the CLI did not send it.",
        "run the CLI with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (cluster.env).",
        said=(r"InvalidAuthToken", r"AuthenticationError:", r"Unauthenticated", r"\b401\b"),
    ),
    ErrorRule(
        "no-cluster",
        r"Connection refused|Failed to establish a new connection|"
        r"Max retries exceeded|ConnectionError|Failed to connect",
        "nothing answers at {name}: no Ray cluster (dashboard) runs there. `serve deploy` only "
        "talks to a running cluster; it never starts one.",
        "start a cluster first (`ray start --head`, or start_local_cluster()), then pass its "
        "dashboard address: serve deploy config.yaml -a http://HEAD:8265 (or set "
        "RAY_DASHBOARD_ADDRESS).",
        said=(
            r"Failed to connect to Ray",
            r"ConnectionError:",
            r"Connection refused",
            r"Failed to establish",
        ),
        name=(r"address: (https?://[\w.\-]+:\d+)", r"(https?://[\w.\-]+:\d+)"),
        default_name="that address",
    ),
    ErrorRule(
        "deploy-failed",
        r"DEPLOY_FAILED|RayActorError|Exception",
        "the application's code raised an error while starting.",
        "read the exception; the replica's full log is in the cluster's logs under serve/.",
        said=(r"Error", r"Exception"),
    ),
)

_UNKNOWN = ErrorRule(
    "unknown",
    "",
    "Serve reported a problem this helper does not recognise.",
    "read Serve's message above; `serve status` shows each app's message.",
    said=(r"Error", r"error"),
)


def explain_serve_error(text: str) -> Advice:
    """Turn the output of a failed Serve command (or a replica's error) into advice: the first
    rule of :data:`SERVE_ERRORS` that recognises it."""
    rule = next((r for r in SERVE_ERRORS if re.search(r.detect, text)), _UNKNOWN)
    return rule.advice(text)
