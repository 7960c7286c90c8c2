"""The workbook's own exceptions.

Every message says what went wrong *and what to do next*, so a learner who hits one in a
notebook cell can act on it without reading a traceback from deep inside Ray.

Usage::

    from helpers.errors import WorkbookError
    try:
        cluster = start_local_cluster(port=6379)
    except WorkbookError as err:
        print(err)          # one paragraph: problem, then "Fix: ..."
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "closest",
    "WorkbookError",
    "ClusterStartError",
    "ClusterNotRunningError",
    "DashboardTimeoutError",
    "PortInUseError",
    "AuthTokenError",
    "ServeDeployError",
    "ServeTimeoutError",
    "ProfileError",
    "ParameterError",
    "EnvironmentProblem",
    "BadValueError",
    "AlreadyStartedError",
    "NoFreePortError",
    "WorkbookTimeoutError",
]


def closest(word: str, options: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The option most like ``word`` (a misspelt key, a lesson's name), or None: what every
    "did you mean ...?" in the workbook's messages suggests."""
    found = difflib.get_close_matches(word, sorted(options), n=1, cutoff=cutoff)
    return found[0] if found else None


class WorkbookError(Exception):
    """Base class: a problem with a known cause and a suggested fix."""

    def __init__(self, problem: str, fix: str, *, details: str = "") -> None:
        self.problem = problem
        self.fix = fix
        self.details = details
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"{self.problem}\nFix: {self.fix}"
        if self.details:
            text += f"\nDetails:\n{self.details}"
        return text


class ClusterStartError(WorkbookError):
    """`ray start` did not bring a node up."""


class ClusterNotRunningError(WorkbookError):
    """Nothing answers at the cluster address that was given."""


class DashboardTimeoutError(ClusterNotRunningError):
    """The cluster's dashboard accepted a connection but did not answer in time."""

    def __init__(self, url: str, timeout_s: float, what: str = "") -> None:
        self.url = url
        self.timeout_s = timeout_s
        call = f" ({what})" if what else ""
        super().__init__(
            f"The Ray dashboard at {url} did not answer within {timeout_s:g} s{call}.",
            f"it is hung or overloaded: check that it answers (curl {url}/api/version) and "
            "read its log (dashboard.log in the cluster's logs folder); restart the cluster if "
            "it stays silent. On a machine that is only busy, allow longer with "
            "WORKBOOK_DASHBOARD_TIMEOUT_S (seconds, default 30).",
        )


class PortInUseError(WorkbookError):
    """A port the workbook needs is already bound by another process."""

    def __init__(self, port: int, owner: str, *, purpose: str = "") -> None:
        self.port = port
        self.owner = owner
        what = f" ({purpose})" if purpose else ""
        super().__init__(
            f"Port {port}{what} is already in use by {owner}.",
            "stop that process if it is yours, or pass a different port "
            "(or port=None to let the workbook pick a free one).",
        )


class AuthTokenError(WorkbookError):
    """A client reached the cluster without its authentication token."""


class ServeDeployError(WorkbookError):
    """A Serve application reached DEPLOY_FAILED (or UNHEALTHY)."""

    def __init__(self, app: str, status: str, messages: Mapping[str, str]) -> None:
        self.app = app
        self.status = status
        self.messages = dict(messages)
        details = "\n".join(f"[{name}] {msg}" for name, msg in self.messages.items() if msg)
        super().__init__(
            f"Serve application {app!r} is {status}.",
            "read the replica error below (it is the exception your deployment's constructor "
            "or health check raised), fix the code or config, and deploy again. The full "
            "replica log is in the cluster's logs folder under serve/.",
            details=details,
        )


class WorkbookTimeoutError(WorkbookError, TimeoutError):
    """Something awaited did not happen in time; the message says what was last seen.

    Every wait of :func:`helpers.waiting.wait_for` raises one (or a subclass, like
    :class:`ServeTimeoutError`). Also a ``TimeoutError``, so a caller's ``except
    TimeoutError`` catches a wait that ran out, whichever helper waited."""


class ServeTimeoutError(WorkbookTimeoutError):
    """A Serve application did not become RUNNING (or, with waiting_for="deleted", go) in time."""

    def __init__(
        self,
        app: str,
        timeout_s: float,
        last_status: str,
        pending_demands: Sequence[str] = (),
        messages: Mapping[str, str] | None = None,
        *,
        waiting_for: str = "RUNNING",
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.last_status = last_status
        self.pending_demands = list(pending_demands)
        self.messages = dict(messages or {})
        lines = [f"[{k}] {v}" for k, v in self.messages.items() if v]
        if self.pending_demands:
            lines.append("Pending resource demands the cluster cannot place:")
            lines += [f"  {d}" for d in self.pending_demands]
            fix = (
                "the replicas are waiting for resources no node has. Ask for fewer resources "
                "(ray_actor_options / placement bundles; for ray.serve.llm on CPU set "
                "accelerator_config={'kind': 'cpu'}) or start the cluster with more logical "
                "CPUs/GPUs."
            )
        elif waiting_for == "deleted":
            fix = (
                "look at the deployment messages below and the replica logs: a replica that "
                "takes long to stop holds its application (graceful_shutdown_timeout_s); on a "
                "shared cluster, someone's `serve deploy` of a config that still names the "
                "application brings it back. Wait longer, or ask who deployed it."
            )
        else:
            fix = (
                "look at the deployment messages below and the replica logs; if the replicas "
                "are still starting (loading a model), wait longer with a larger timeout_s."
            )
        super().__init__(
            f"Serve application {app!r} was not {waiting_for} after {timeout_s:.0f} s "
            f"(last status: {last_status}).",
            fix,
            details="\n".join(lines),
        )


class ProfileError(WorkbookError):
    """A run profile is missing or malformed."""


class ParameterError(WorkbookError):
    """A notebook parameter is unknown or has the wrong type."""


class EnvironmentProblem(WorkbookError):
    """The Python environment lacks something a lesson needs."""


# The next ones also subclass the built-in error that the same code raised before, so that a
# caller's `except ValueError` (or RuntimeError, TimeoutError) still catches them.


class BadValueError(WorkbookError, ValueError):
    """An argument a helper was given is out of range or of the wrong shape."""


class AlreadyStartedError(WorkbookError, RuntimeError):
    """A one-shot background runner (a load generator, a request loop) was started twice."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"This {what} was already started; each one runs once.",
            f"make a new {what} for the next run (or use it as a context manager, which "
            "starts and stops it).",
        )


class NoFreePortError(WorkbookError, RuntimeError):
    """No free TCP port was found in the range asked for."""
