"""Working on a cluster that is someone else's: one's own names, one's own clean-up.

A lesson or lab that started its own cluster may do anything to it. One pointed at a
classroom's cluster with ``ray_address`` shares Serve with the whole class, so it:

* names its applications and route prefixes after the learner (``alice-echo`` at
  ``/alice/echo``), so that two learners running the same lesson do not replace each
  other's applications;
* never shuts Serve down, restarts the proxy with new HTTP options, or kills shared Serve
  actors or nodes: a section that needs one of those runs only on a cluster the notebook
  started, says so, and is recorded as *not run* (the runner's summary lists it);
* deletes only its own applications when it cleans up.

Usage in a lesson's setup cell (``learner_id`` is a parameter, empty meaning the user name)::

    from helpers.shared_cluster import Workspace
    ws = Workspace(local=local, learner_id=learner_id)
    app_name, route = ws.app("echo"), ws.route("/echo")
    ...
    if ws.own_cluster_only("Restarting Serve on a new port",
                           "changing HTTP options restarts the proxy for everyone"):
        serve.shutdown(); ...
    ...
    ws.cleanup()   # serve.shutdown() on one's own cluster; else deletes only ws's applications
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from helpers.cluster import LocalCluster
from helpers.errors import WorkbookError, WorkbookTimeoutError
from helpers.processes import find_leftovers
from helpers.serve_apps import delete_app
from helpers.serve_status import serve_details

__all__ = [
    "Workspace",
    "keeping_the_others",
    "learner_name",
    "letters_and_digits",
    "not_run_sections",
    "read_serve_config",
    "serve_http_address",
    "take_deploy_lease",
    "deploy_lease",
    "end_lesson",
    "NOT_RUN_FILE",
    "DEPLOY_LEASE_S",
]

NOT_RUN_FILE = "not_run.jsonl"  # in the runner's per-notebook scratch folder


def letters_and_digits(text: str) -> str:
    """``text`` lowercased, each run of other characters one dash: ``"Ana María"`` ->
    ``"ana-mar-a"`` (empty when it has no letters or digits). The one slug rule of learner
    names here, of the labs' student ids and of the grader's folders."""
    return re.sub(r"[^a-z0-9]+", "-", text.strip().lower()).strip("-")


def learner_name(learner_id: str = "") -> str:
    """``learner_id`` as a name Serve accepts in application names and routes (letters,
    digits and ``-``, lower case); empty means the user name."""
    slug = letters_and_digits((learner_id or "").strip() or _user())[:24].strip("-")
    if not slug:
        raise WorkbookError(
            f"The learner id {learner_id!r} has no letter or digit to name applications by.",
            'set the `learner_id` parameter to your name or login, e.g. learner_id = "alice".',
        )
    return slug


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        return os.environ.get("USER", "")


class Workspace:
    """One learner's applications on a cluster: names, routes, sections, clean-up."""

    def __init__(self, *, local: bool, learner_id: str = "") -> None:
        self.local = local
        self.learner = learner_name(learner_id)
        self.apps: list[str] = []  # every name handed out, in order: what cleanup deletes
        self._at_exit = False  # cleanup_at_exit registered
        self._config_cluster: Any = None  # the cluster deployable() deployed copies to

    @property
    def prefix(self) -> str:
        return "" if self.local else f"{self.learner}-"

    def app(self, name: str) -> str:
        """The application name to deploy ``name`` under: as taught on one's own cluster,
        prefixed with the learner on a shared one. Recorded for :meth:`cleanup`."""
        full = f"{self.prefix}{name}"
        if full not in self.apps:
            self.apps.append(full)
        return full

    def route(self, prefix: str) -> str:
        """The route prefix for ``prefix`` (``/echo``): unchanged on one's own cluster,
        ``/<learner>/echo`` on a shared one (``/`` becomes ``/<learner>``)."""
        if not prefix.startswith("/"):
            raise WorkbookError(
                f"A route prefix starts with '/': got {prefix!r}.", f"write it as '/{prefix}'."
            )
        if self.local:
            return prefix
        return f"/{self.learner}{prefix.rstrip('/')}" if prefix != "/" else f"/{self.learner}"

    def own_cluster_only(self, section: str, why: str) -> bool:
        """True when this notebook started the cluster: the section may run. On a shared
        cluster: False, the reason printed, and the section recorded as not run."""
        if self.local:
            return True
        print(
            f"Not run on a shared cluster: {section}. Why: {why}. "
            "Run this notebook with an empty ray_address to see it."
        )
        _record_not_run(section, why)
        return False

    def deployable(self, path: str | os.PathLike[str], cluster: Any) -> Path:
        """The file to ``serve deploy``: ``path`` itself on one's own cluster. On a shared
        cluster ``serve deploy`` would delete every config-deployed application the file does
        not list (the classmates'), so a copy beside it, ``deploy-<name>``, with theirs kept
        (:func:`keeping_the_others`); this workspace's own applications that the file leaves
        out are deleted by it, as on one's own cluster. Deploy it in the same cell: the copy
        is what Serve holds when it is written, and until it is deployed nobody else's copy
        is written (:func:`take_deploy_lease`)."""
        import yaml

        path = Path(path)
        if self.local:
            return path
        mine = read_serve_config(path)
        self._config_cluster = cluster  # cleanup deletes under the lease too
        details = take_deploy_lease(cluster, _app_names(mine))
        target = path.with_name(f"deploy-{path.name}")
        kept = keeping_the_others(mine, details, own=self.apps)  # ours the file leaves out go
        target.write_text(yaml.safe_dump(kept, sort_keys=False))
        return target

    def cleanup_at_exit(self) -> None:
        """On a shared cluster, delete this workspace's applications when the kernel exits
        (a failing cell stops a run before its clean-up cell; the kernel still exits). The
        clean-up cell calls :meth:`cleanup`, which cancels this. Nothing on one's own cluster:
        stopping it ends everything."""
        if not self.local and not self._at_exit:
            atexit.register(self._delete_at_exit)
            self._at_exit = True

    def _delete_at_exit(self) -> None:
        from ray import serve

        for name in self.apps:
            try:  # without waiting: a kernel being shut down has a few seconds
                serve.delete(name, _blocking=False)
            except Exception:  # noqa: BLE001 - not deployed, or the cluster is gone
                pass

    def cleanup(self, *, local_shutdown: bool = True) -> list[str]:
        """On one's own cluster, ``serve.shutdown()`` (unless ``local_shutdown`` is False);
        on a shared one, delete this workspace's applications and only those. Returns the
        applications deleted (empty after a shutdown)."""
        from ray import serve

        if self._at_exit:
            atexit.unregister(self._delete_at_exit)
            self._at_exit = False
        if self.local:
            if local_shutdown:
                serve.shutdown()
            return []
        running = set(serve.status().applications)
        deleted = [name for name in self.apps if name in running]
        # Applications deployed from a config copy could be brought back by a classmate's
        # copy read just before the delete: delete those under the deploy lease.
        with (
            deploy_lease(self._config_cluster, deleted)
            if deleted and self._config_cluster
            else contextlib.nullcontext()
        ):
            for name in deleted:
                serve.delete(name)
        return deleted


def read_serve_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A Serve config file's mapping; a clear error when it is missing, is not YAML or has no
    ``applications:`` list."""
    import yaml

    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise WorkbookError(
            f"Could not read the Serve config {path}.",
            "check the file exists and is valid YAML (indentation!).",
            details=str(err),
        ) from err
    if not isinstance(config, dict) or not isinstance(config.get("applications"), list):
        raise WorkbookError(
            f"{path.name} has no 'applications:' list.",
            "a Serve config is a mapping with an 'applications:' list.",
        )
    return config


def keeping_the_others(
    config: dict[str, Any], details: dict[str, Any], *, own: Iterable[str] = ()
) -> dict[str, Any]:
    """``config`` (a Serve config's mapping) with every other config-deployed application
    added, as Serve holds it now (``details``: :func:`helpers.serve_status.serve_details`), so
    that ``serve deploy`` of the result replaces nobody's: ``serve deploy`` makes the
    cluster's declarative applications exactly the file's and deletes the others.

    Left out: the applications the file names, one's own (``own``) that the file leaves out
    (the file deletes those, as it would on one's own cluster), those deployed from Python
    (``serve.run``: ``serve deploy`` does not delete them), those being deleted
    (``DELETING``: adding one back would bring it back to life), and
    ``http_options``/``grpc_options`` (the running Serve's, not the file's to change).
    """
    names = set(_app_names(config)) | set(own)
    theirs = [
        app["deployed_app_config"]
        for name, app in (details.get("applications") or {}).items()
        if name not in names
        and app.get("source") == "declarative"
        and app.get("status") != "DELETING"
        and app.get("deployed_app_config")
    ]
    merged = {k: v for k, v in config.items() if k not in ("http_options", "grpc_options")}
    merged["applications"] = theirs + list(config.get("applications") or [])
    return merged


DEPLOY_LEASE_S = 30.0  # longest a lease taken and never followed by a deploy holds the others
_LEASE_KEY, _LEASE_NAMESPACE = b"serve-deploy-lease", b"ray-serve-workbook"


def _app_names(config: dict[str, Any]) -> list[str]:
    return [
        str(app.get("name")) for app in config.get("applications") or [] if isinstance(app, dict)
    ]


def _deployed_at(details: dict[str, Any], names: list[str]) -> dict[str, float | None]:
    """Each application's ``last_deployed_time_s`` in Serve's status (None: not there)."""
    apps = details.get("applications") or {}
    return {name: (apps.get(name) or {}).get("last_deployed_time_s") for name in names}


def _lease_is_over(lease: dict[str, Any], details: dict[str, Any], held_for_s: float) -> bool:
    """The holder's ``serve deploy`` has reached Serve (one of its applications was deployed
    again, or appeared, since it took the lease), or it held the lease too long."""
    now = _deployed_at(details, list(lease.get("apps") or []))
    then = lease.get("deployed_at") or {}
    return held_for_s >= DEPLOY_LEASE_S or any(
        stamp is not None and stamp != then.get(name) for name, stamp in now.items()
    )


def take_deploy_lease(
    cluster: Any, names: list[str], *, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Serve's status, read while holding the cluster's deploy lease for applications ``names``.

    ``serve deploy`` replaces the whole set of config-deployed applications, so a learner's
    copy of the file must list everyone else's as Serve holds them. Two learners who read
    Serve's status within the same seconds would each deploy a copy without the other's
    newest application, and the second deploy would delete it (a lost update). The lease
    makes the read-then-deploy one at a time: a key in the cluster's GCS, created only if
    absent (Ray's internal key-value store, ``overwrite=False``), holding who took it, for
    which applications, and when those were last deployed. The lease ends, for whoever waits
    on it, when Serve shows one of the holder's applications deployed again (its deploy has
    landed, so the next read includes it), or ``DEPLOY_LEASE_S`` after the waiter first saw it
    (the holder never deployed). Deleting applications takes it too (:func:`deploy_lease`):
    a copy read just before a delete would bring the application back. Connects this process
    to the cluster as a Ray driver.
    """
    return _take_lease(cluster, names, timeout_s=timeout_s)[0]


@contextlib.contextmanager
def deploy_lease(
    cluster: Any, names: list[str], *, timeout_s: float = 120.0
) -> Iterator[dict[str, Any]]:
    """Hold the deploy lease (:func:`take_deploy_lease`) while the block changes Serve's
    config itself, e.g. deletes applications; released when the block ends."""
    details, lease_id = _take_lease(cluster, names, timeout_s=timeout_s)
    try:
        yield details
    finally:
        _release_lease(lease_id)


def _take_lease(cluster: Any, names: list[str], *, timeout_s: float) -> tuple[dict[str, Any], str]:
    # The GCS's key-value store: no public Ray API creates a key only if it is absent.
    from ray.experimental import internal_kv

    cluster.connect()
    me = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + timeout_s
    first_seen: dict[str, float] = {}  # lease id -> when this process first saw it held
    while True:
        details = serve_details(cluster)
        lease_id = uuid.uuid4().hex
        lease = {
            "id": lease_id,
            "holder": me,
            "apps": names,
            "deployed_at": _deployed_at(details, names),
        }
        if not internal_kv._internal_kv_put(
            _LEASE_KEY, json.dumps(lease), overwrite=False, namespace=_LEASE_NAMESPACE
        ):
            # Read again: the holder before may have just deployed.
            return serve_details(cluster), lease_id
        raw = internal_kv._internal_kv_get(_LEASE_KEY, namespace=_LEASE_NAMESPACE)
        if raw is None:  # ended between the two calls
            continue
        held = json.loads(raw)
        seen = first_seen.setdefault(held["id"], time.monotonic())
        if held.get("holder") == me or _lease_is_over(held, details, time.monotonic() - seen):
            # Ours from an earlier call (one kernel deploys one file at a time), or over. Two
            # waiters may both end it; each then tries to create its own, and one wins.
            internal_kv._internal_kv_del(_LEASE_KEY, namespace=_LEASE_NAMESPACE)
            continue
        if time.monotonic() > deadline:
            raise WorkbookTimeoutError(
                f"Another notebook ({held.get('holder')}) is deploying applications "
                f"{held.get('apps')} on this cluster and has not finished in {timeout_s:.0f} s.",
                "run the cell again in a minute; if it keeps happening, ask whoever runs the "
                "cluster to look at `serve status`.",
            )
        time.sleep(0.5)


def _release_lease(lease_id: str) -> None:
    """End the lease if it is still the one taken as ``lease_id`` (a waiter may have ended it)."""
    from ray.experimental import internal_kv

    raw = internal_kv._internal_kv_get(_LEASE_KEY, namespace=_LEASE_NAMESPACE)
    if raw is not None and json.loads(raw).get("id") == lease_id:
        internal_kv._internal_kv_del(_LEASE_KEY, namespace=_LEASE_NAMESPACE)


def serve_http_address(cluster) -> tuple[str, int]:
    """Host and port of the HTTP proxies of the Serve already running on ``cluster`` (a
    shared cluster's, as whoever started Serve chose them). A notebook on a shared cluster
    does not start Serve: its HTTP options would be everyone's."""
    details = serve_details(cluster)
    http = details.get("http_options") or {}
    if not (details.get("controller_info") or {}).get("actor_id") or not http.get("port"):
        raise WorkbookError(
            f"Serve is not running on the cluster at {cluster.dashboard_url}; a notebook on "
            "a shared cluster does not start it (its HTTP options would be everyone's).",
            "ask whoever runs the cluster to start Serve once, e.g. `serve start --http-host "
            "0.0.0.0 --http-port 8000` with RAY_ADDRESS set to the cluster, then run this cell "
            "again; or leave ray_address empty to start a cluster of your own.",
        )
    host = http.get("host") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # every interface: reach it at the cluster's address
        host = cluster.host
    return host, int(http["port"])


def _record_not_run(section: str, why: str) -> None:
    scratch = os.environ.get("WORKBOOK_SCRATCH")
    if not scratch:
        return  # run by hand: the printed line is the record
    with open(Path(scratch) / NOT_RUN_FILE, "a") as f:
        f.write(json.dumps({"section": section, "why": why}) + "\n")


def not_run_sections(scratch: Path) -> list[str]:
    """The sections a notebook recorded as not run (see :meth:`Workspace.own_cluster_only`)."""
    path = Path(scratch) / NOT_RUN_FILE
    if not path.exists():
        return []
    sections = []
    for line in path.read_text().splitlines():
        try:
            sections.append(json.loads(line)["section"])
        except (ValueError, KeyError, TypeError):
            continue
    return sections


def end_lesson(
    cluster: Any,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    workspace: Workspace | None = None,
    apps: Iterable[str] = (),
    stop: Iterable[Any] = (),
    shutdown_serve: bool = False,
) -> str:
    """A lesson's last cell: stop what it started, delete only its own applications on a
    cluster it did not start, stop its cluster (on someone else's: disconnect), remove its
    folder, and prove that nothing this kernel started still runs. Returns ``"stopped"``.

    ``stop``: what the lesson started beside the cluster, each with a ``stop()`` (a load loop,
    a recorder, a ``serve run``, a server) or a process id (ended if it still runs); ``None``
    is skipped (a cell that failed early never made it). ``workspace``: its ``cleanup`` deletes
    the workspace's applications on a shared cluster (and runs ``serve.shutdown()`` on one's
    own when ``shutdown_serve``); otherwise ``apps`` are deleted on a cluster that is not ours
    (on one's own, stopping it ends them). Every step runs even when one before it failed, so
    a lesson that broke midway still cleans up; the first error is raised at the end.
    """
    import psutil

    errors: list[BaseException] = []

    def step(action: Any, *args: Any, **kwargs: Any) -> None:
        try:
            action(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - raised after the other steps ran
            errors.append(err)

    def end_process(pid: int) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()

    for item in stop:
        if item is None:
            continue
        if isinstance(item, int):
            step(end_process, item)
        else:
            step(item.stop)
    if workspace is not None:
        step(workspace.cleanup, local_shutdown=shutdown_serve)
    elif not isinstance(cluster, LocalCluster):
        for name in apps:
            step(delete_app, name, cluster=cluster)
    step(cluster.stop)
    if work_dir is not None:
        shutil.rmtree(work_dir, ignore_errors=True)
    leftovers = find_leftovers(owner=os.getpid())
    if errors:
        raise errors[0]
    if leftovers or (work_dir is not None and Path(work_dir).exists()):
        raise WorkbookError(
            f"The lesson's clean-up left {leftovers or work_dir} behind.",
            "end them by id: from helpers.processes import end_leftovers, find_leftovers; "
            "end_leftovers(find_leftovers(owner=os.getpid())), then remove the folder.",
        )
    return "stopped"
