"""A lab's connection to its cluster: Serve running, names of its own, a clean end.

Every lab runs the same way whether it started a cluster on the student's laptop or uses a
classroom's shared cluster (``ray_address``):

* :class:`LabSession` connects to the cluster, makes sure Serve runs (on a laptop: on
  127.0.0.1 and a free port; on a shared cluster: whatever the instructor started, or port
  8000), and gives every application of the lab a name and route prefix that start with the
  student's id (``alice-lab01-counter`` at ``/alice-lab01-counter``), so thirty students can
  share one Serve instance without deploying over each other;
* :meth:`LabSession.with_classmates_apps` makes ``serve deploy`` safe on a shared cluster:
  a config deployed with ``serve deploy`` is the *complete* set of declarative applications,
  so the lab deploys the student's applications together with everyone else's, unchanged;
* :meth:`LabSession.hint` shows a task's next hint each time it is called (a nudge, then
  the API to look at, then a partial skeleton) and counts the hints used per task; each hint
  is a display output carrying ``{"workbook_hint": {lab, task, tier, of}}`` in its metadata,
  which the grader reads from the notebook to *report* how many hints a student used (never
  to change a score);
* :meth:`LabSession.close` deletes the lab's applications (shared cluster) or shuts Serve
  down and stops the cluster (laptop).

Usage (the Setup cell of every lab)::

    cluster = open_cluster(ray_address, dashboard_url=dashboard_url, token_path=token_path,
                           num_cpus=head_num_cpus)
    lab = LabSession("lab01", cluster, student=student)
    lab.app_name("counter"), lab.route("counter")  # 'me-lab01-counter', '/me-lab01-counter'
    lab.base_url                                   # Serve's HTTP address: 'http://127.0.0.1:PORT'
    lab.hint(1)                                    # task 1's next hint
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from helpers.cluster import LocalCluster
from helpers.errors import WorkbookError
from helpers.ports import free_port
from helpers.serve_apps import delete_app, deploy_app, serve_http_url
from helpers.serve_status import app_statuses, serve_details, status_table
from helpers.shared_cluster import (
    deploy_lease,
    keeping_the_others,
    letters_and_digits,
    read_serve_config,
    take_deploy_lease,
)
from helpers.waiting import wait_for

if TYPE_CHECKING:  # pragma: no cover
    from helpers.cluster import ClusterHandle
    from helpers.serve_apps import DeployResult

__all__ = [
    "LabSession",
    "letters_and_digits",
    "student_slug",
    "CLASSROOM_HTTP_PORT",
    "HINT_METADATA",
    "lab_hints",
    "next_hint",
]

#: The key of a hint's display metadata (what the grader counts).
HINT_METADATA = "workbook_hint"


def lab_hints(lab: str) -> dict[int, list[str]]:
    """Lab ``lab``'s tiered hints, ``{task: [tier 1, tier 2, ...]}``, as its student version
    keeps them (``labs/student/labNN_*.ipynb``, metadata ``workbook_lab.hints``: generated from
    the source, so a student kit has them and the source is not needed)."""
    import json

    from helpers.labs.notebooks import STUDENT_DIR, source_for

    path = source_for(lab, STUDENT_DIR)
    try:
        meta = json.loads(path.read_text())["metadata"]["workbook_lab"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise WorkbookError(
            f"Could not read the hints of {lab} from {path}.",
            "regenerate the student versions: python -m helpers.labs generate.",
            details=str(err),
        ) from err
    return {int(task): list(tiers) for task, tiers in (meta.get("hints") or {}).items()}


#: The HTTP port Serve gets when a lab starts it on a shared cluster (Serve's own default).
CLASSROOM_HTTP_PORT = 8000


def student_slug(student: str) -> str:
    """A student id usable in application names and URLs: ``"Ana María"`` -> ``"ana-mar-a"``."""
    slug = letters_and_digits(student)[:24].strip("-")
    if not slug:
        raise WorkbookError(
            f"The student id {student!r} has no letters or digits.",
            "set the parameter student to your name or id, e.g. 'alice'.",
        )
    return slug


def next_hint(
    lab: str, task: int, used: dict[int, int], student: str = "me"
) -> tuple[str, str, dict[str, Any]]:
    """Task ``task``'s next hint after ``used[task]`` shown (``used`` is updated): its text,
    as Markdown, and the output metadata that records it (``{HINT_METADATA: {lab, task, tier,
    of, student}}``). A task without hints is a :class:`WorkbookError` naming the ones with."""
    hints = lab_hints(lab)
    if task not in hints:
        raise WorkbookError(
            f"{lab} has no hints for task {task!r}.",
            f"ask for one of its tasks: {', '.join(map(str, sorted(hints)))}; "
            f"e.g. lab.hint({min(hints) if hints else 1}).",
        )
    tiers = hints[task]
    shown = min(used.get(task, 0) + 1, len(tiers))
    used[task] = shown
    kind = {1: "a nudge", 2: "where to look", 3: "a partial skeleton"}.get(shown, "a hint")
    more = (
        f"call lab.hint({task}) again for the next one"
        if shown < len(tiers)
        else "that was the last one: the rest is yours"
    )
    title = f"Task {task}, hint {shown} of {len(tiers)} ({kind}); {more}."
    text = tiers[shown - 1]
    record = {
        HINT_METADATA: {
            "lab": lab,
            "task": task,
            "tier": shown,
            "of": len(tiers),
            "student": student,
        }
    }
    body = f"```python\n{text}\n```" if shown == len(tiers) else text
    return f"{title}\n{text}", f"**{title}**\n\n{body}", record


class LabSession:
    """One lab on one cluster, for one student (see the module docstring)."""

    def __init__(
        self, lab: str, cluster: ClusterHandle, *, student: str = "me", http_port: int | None = None
    ) -> None:
        self.lab = lab
        self.cluster = cluster
        self.student = student_slug(student)
        self.local = isinstance(cluster, LocalCluster)
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"{lab}-{self.student}-"))
        self.hints_used: dict[int, int] = {}  # task -> hints shown so far (this kernel)
        cluster.connect()
        self.base_url = self._ensure_serve(http_port)

    # -- Serve and names ---------------------------------------------------------------------

    def _ensure_serve(self, http_port: int | None) -> str:
        from ray import serve

        if not (serve_details(self.cluster).get("controller_info") or {}).get("actor_id"):
            if self.local:
                options = {"host": "127.0.0.1", "port": http_port or free_port()}
            else:  # a shared cluster: reachable by everyone, on Serve's usual port
                options = {"host": "0.0.0.0", "port": http_port or CLASSROOM_HTTP_PORT}
            serve.start(http_options=options)
        return serve_http_url(self.cluster)

    @property
    def prefix(self) -> str:
        return f"{self.student}-{self.lab}"

    def app_name(self, short: str) -> str:
        """The name of this lab's application ``short`` for this student."""
        return f"{self.prefix}-{short}"

    def route(self, short: str) -> str:
        """Its route prefix: ``/`` + its name."""
        return "/" + self.app_name(short)

    def url(self, short: str, path: str = "") -> str:
        """Its HTTP URL (through Serve's proxy), plus ``path``."""
        return self.base_url + self.route(short) + path

    def my_apps(self) -> list[str]:
        """This lab's applications of this student that Serve knows now."""

        return sorted(a for a in app_statuses(self.cluster) if a.startswith(self.prefix + "-"))

    def status(self) -> Any:
        """``status_table`` of this lab's applications only (one row per replica)."""

        table = status_table(self.cluster)
        return table[table["application"].str.startswith(self.prefix + "-")].reset_index(drop=True)

    # -- deploying ----------------------------------------------------------------------------

    def deploy(self, app: Any, short: str, *, timeout_s: float = 120.0) -> DeployResult:
        """``serve.run`` with a time limit: deploy ``app`` as :meth:`app_name` at :meth:`route`.

        Raises :class:`~helpers.errors.ServeTimeoutError` naming the resources nobody can
        place, or :class:`~helpers.errors.ServeDeployError` with the replica's own error,
        instead of waiting forever.
        """

        return deploy_app(
            app,
            cluster=self.cluster,
            name=self.app_name(short),
            route_prefix=self.route(short),
            timeout_s=timeout_s,
        )

    def with_classmates_apps(self, config_path: str | Path) -> Path:
        """A copy of a Serve config that ``serve deploy`` can apply without harming anyone.

        ``serve deploy`` makes the cluster's declarative applications exactly the file's: any
        not in it are deleted. On a shared cluster that would delete the other students'
        applications; this adds them, as they are deployed now, to the student's own (which
        must be named with :meth:`app_name`), as :func:`helpers.shared_cluster.keeping_the_others`
        says; the student's own applications that the file leaves out stay out (the deploy
        deletes them, as on the student's own cluster). Returns the path of the file to
        deploy: deploy it in the same cell (until it is deployed, nobody else's copy is
        written: :func:`helpers.shared_cluster.take_deploy_lease`).
        """
        path = Path(config_path)
        mine = read_serve_config(path)
        names = [a.get("name") for a in mine["applications"] if isinstance(a, dict)]
        foreign = [n for n in names if not str(n).startswith(self.prefix + "-")]
        if foreign:
            raise WorkbookError(
                f"{path.name} names application(s) {foreign} that are not this lab's.",
                f"name each application with lab.app_name(...), e.g. {self.app_name('app')!r}, "
                "so it cannot replace anyone else's on a shared cluster.",
            )
        target = self.work_dir / f"deploy-{path.stem}.yaml"
        details = take_deploy_lease(self.cluster, [str(name) for name in names])
        # The student's own applications that the file leaves out are not kept: the file
        # deletes them, as it would on the student's own cluster.
        own = [a for a in details.get("applications") or {} if a.startswith(self.prefix + "-")]
        merged = keeping_the_others(mine, details, own=own)
        target.write_text(yaml.safe_dump(merged, sort_keys=False))
        return target

    def wait_for(
        self,
        condition: Callable[[], Any],
        *,
        what: str,
        timeout_s: float = 60.0,
        poll_s: float = 0.5,
    ) -> Any:
        """Poll ``condition()`` until it returns something truthy; return that.

        :func:`helpers.waiting.wait_for`: an error the condition raises ends the wait at once
        (a student's mistake shows now, not after ``timeout_s``); after ``timeout_s`` a
        :class:`~helpers.errors.WorkbookTimeoutError` (a WorkbookError) names ``what`` was
        awaited and what the condition returned last.
        """
        return wait_for(
            condition,
            timeout_s=timeout_s,
            what=what,
            poll_s=poll_s,
            fix="look at `serve status` (status_table(cluster)) and the replica "
            "logs; the machine may also just be slow.",
        )

    # -- hints --------------------------------------------------------------------------------

    def hint(self, task: int) -> None:
        """Show task ``task``'s next hint: the first call a nudge, the second the API to look
        at (with a link to its documentation), the third a partial skeleton. Past the last
        one, the last one again. Each hint is counted (:attr:`hints_used`) and the count is in
        the output, where the grader reads it; hints never lower a grade."""
        plain, markdown, record = next_hint(self.lab, task, self.hints_used, self.student)
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython comes with the project's environment
            get_ipython = None
        if get_ipython is not None and get_ipython() is not None:
            display({"text/plain": plain, "text/markdown": markdown}, raw=True, metadata=record)
        else:
            print(plain)

    # -- the end ------------------------------------------------------------------------------

    def close(self) -> list[str]:
        """Delete this lab's applications; on a laptop also shut Serve down and stop the
        cluster. Returns the applications that were deleted. Idempotent."""
        import shutil

        deleted = []
        try:
            apps = self.my_apps()
        except WorkbookError:
            apps = []  # the cluster is gone already
        if self.local:
            import ray
            from ray import serve

            if ray.is_initialized():
                try:
                    serve.shutdown()
                except Exception:  # noqa: BLE001 - the cluster stops next anyway
                    pass
            deleted = apps
            self.cluster.stop()
        else:
            # A classmate's config copy read just before the delete would bring an application
            # back: delete under the deploy lease (helpers.shared_cluster.take_deploy_lease).
            with deploy_lease(self.cluster, apps) if apps else contextlib.nullcontext():
                for app in apps:
                    delete_app(app, cluster=self.cluster, timeout_s=120)
                    deleted.append(app)
            self.cluster.disconnect()
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return deleted

    def __repr__(self) -> str:
        where = "local cluster" if self.local else f"shared cluster {self.cluster.address}"
        return (
            f"<LabSession {self.lab} student={self.student} on {where}, Serve at {self.base_url}>"
        )
