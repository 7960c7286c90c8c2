"""Lab 01's checks (lab01): a first deployment.

What the checks verify: WordCounter's replicas and resources as Serve recorded them, its answer
over HTTP and through a handle.

A lab's cells call them through the package, which registers every lab's checks
(``from helpers.labs import checks``, then ``checks.lab01_answers_by_handle(lab, ...)``); the lab's
hidden checks are the instructor's, in :mod:`helpers.labs.hidden_checks`.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from helpers.labs.checks.framework import (
    _app,
    _call,
    _deployment,
    _expect,
    _json,
    _post,
    _running_replicas,
    lab_check,
)

if TYPE_CHECKING:  # pragma: no cover
    from helpers.labs.session import LabSession

__all__ = [
    "lab01_deployment_as_specified",
    "lab01_answers_over_http",
    "lab01_answers_by_handle",
]


def _sentence(rng: random.Random, words: int) -> str:
    vocabulary = [
        "ray",
        "serve",
        "replica",
        "proxy",
        "handle",
        "batch",
        "scale",
        "node",
        "route",
        "model",
        "token",
        "queue",
        "config",
        "deploy",
    ]
    return " ".join(rng.choice(vocabulary) for _ in range(words))


_L01_CLASS = "Task 1: the @serve.deployment(...) line of WordCounter"


@lab_check("lab01", 1)
def lab01_deployment_as_specified(
    session: LabSession, *, replicas: int, num_cpus: float, memory_mib: int, max_ongoing: int
) -> None:
    """WordCounter runs with the replicas and resources the lab asks for."""
    app = _app(session, "counter", task=1)
    dep = _deployment(app, "WordCounter", look=_L01_CLASS)
    config = dep.get("deployment_config") or {}
    options = config.get("ray_actor_options") or {}
    asked = {
        "num_replicas": replicas,
        "num_cpus": num_cpus,
        "memory": memory_mib * 2**20,
        "max_ongoing_requests": max_ongoing,
    }
    got = {
        "num_replicas": config.get("num_replicas"),
        "num_cpus": options.get("num_cpus"),
        "memory": options.get("memory"),
        "max_ongoing_requests": config.get("max_ongoing_requests"),
    }
    wrong = {k: f"asked {asked[k]}, Serve recorded {got[k]}" for k in asked if got[k] != asked[k]}
    _expect(
        not wrong,
        f"WordCounter's options differ from the lab's: {wrong}.",
        _L01_CLASS + " (memory is in bytes: memory_mib * 2**20)",
    )
    running = _running_replicas(dep)
    _expect(
        len(running) == replicas,
        f"{len(running)} of {replicas} replicas are RUNNING.",
        "status_table(cluster)",
    )


def _l01_reply(name: str, reply: Any, text: str, look: str, what: str) -> None:
    """The student's ``reply`` is a dict with the right word count for ``text``."""
    _expect(isinstance(reply, dict), f"{name} is {type(reply).__name__}, not {what}: a dict.", look)
    _expect(
        reply.get("words") == len(text.split()),
        f"{name}['words'] is {reply.get('words')!r}; {text!r} has {len(text.split())} words.",
        look,
    )


@lab_check("lab01", 2)
def lab01_answers_over_http(session: LabSession, http_reply: Any, *, text: str) -> None:
    """POST {"text": ...} to the app's route answers the right word count."""
    look = "Task 2: WordCounter.__call__ and your requests.post(...) cell"
    _l01_reply("http_reply", http_reply, text, look, "the JSON answer (use response.json())")
    probe = _sentence(random.Random(), 7)
    body = _json(_post(session.url("counter"), {"text": probe}, look=look), look=look)
    _expect(body.get("words") == 7, f"For a 7-word text the app answered {body}.", look)
    _expect(
        bool(body.get("replica")),
        "The answer does not say which replica computed it.",
        "Task 1: return {**replica_identity(), 'words': ...}",
    )


@lab_check("lab01", 3)
def lab01_answers_by_handle(session: LabSession, handle_reply: Any, *, text: str) -> None:
    """handle.count.remote(text) answers the right word count."""
    look = "Task 3: the cell that awaits handle.count.remote(...)"
    _l01_reply(
        "handle_reply", handle_reply, text, look, "count()'s answer (await the DeploymentResponse)"
    )
    probe = _sentence(random.Random(), 5)
    answer = _call(session, "counter", "count", probe)
    _expect(
        isinstance(answer, dict) and answer.get("words") == 5,
        f"count() of a 5-word text returned {answer!r}.",
        "Task 1: WordCounter.count",
    )
