"""Lab 10's checks (lab10): an LLM application that will not serve, diagnosed and fixed twice.

What the checks verify: each diagnosis against what the cluster shows (:data:`LLM_CAUSES`: the
application's status, its config as Serve holds it, the demand nobody can place, the engine's
own log), the context length the engine said its KV cache holds, and each fix deployed with
`serve deploy` (Serve's recorded config, the replica's state, a request as long as the
context).

A lab's cells call them through the package, which registers every lab's checks
(``from helpers.labs import checks``, then ``checks.lab10_diagnosis(lab, ...)``); the lab's
hidden checks are the instructor's, in :mod:`helpers.labs.hidden_checks`.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from helpers.auth import activate_in_process
from helpers.labs.checks.framework import (
    _app,
    _expect,
    _get,
    _json,
    _post,
    _serve_apps,
    lab_check,
)
from helpers.serve_status import pending_demands

if TYPE_CHECKING:  # pragma: no cover
    from helpers.labs.session import LabSession

__all__ = [
    "LLM_CAUSES",
    "lab10_engine_log",
    "lab10_cache_holds",
    "lab10_observed_cause",
    "lab10_diagnosis",
    "lab10_hardware_fixed",
    "lab10_engine_diagnosis",
    "lab10_serves",
]

#: The causes a diagnosis may name.
LLM_CAUSES = {
    "needs-gpu": "its engine's replica asks for a GPU that no node has: it waits, never starts",
    "kv-cache-too-small": "its engine starts, then refuses: one sequence of max_model_len "
    "tokens does not fit in its KV cache",
    "model-not-found": "its engine cannot read the model's files",
    "healthy": "nothing is wrong with it",
}
_L10_APP = "chat"
_L10_MODEL = "LLMServer:tiny-llama"
#: What vLLM writes when one sequence of max_model_len tokens does not fit in the KV cache.
_L10_ESTIMATE = re.compile(r"estimated maximum model length is (\d+)")
#: How long the hardware check waits for the engine's replica to start and settle, seconds.
_L10_SETTLE_S = 240.0


def _l10_app(session: LabSession) -> dict[str, Any]:
    return _serve_apps(session).get(session.app_name(_L10_APP)) or {}


def _l10_deployment(session: LabSession) -> dict[str, Any]:
    return (_l10_app(session).get("deployments") or {}).get(_L10_MODEL) or {}


def _l10_held_config(session: LabSession) -> dict[str, Any]:
    """The LLM config as Serve holds it (the deployed config's first ``llm_configs`` entry)."""
    args = (_l10_app(session).get("deployed_app_config") or {}).get("args") or {}
    configs = args.get("llm_configs") or [{}]
    return configs[0] if isinstance(configs[0], dict) else {}


def _l10_asks_for_a_gpu(config: dict[str, Any]) -> bool:
    kind = (config.get("accelerator_config") or {}).get("kind")
    return bool(config.get("accelerator_type")) or kind in (None, "gpu")


def lab10_engine_log(session: LabSession) -> str:
    """The logs (stdout and stderr) of the ``LLMServer`` replicas Serve names in the
    deployment's message: where vLLM writes why its engine did not start (the replica's log,
    as ``ray logs actor --id ID`` shows it)."""
    from ray.util.state import get_log

    activate_in_process(session.cluster.env)  # the cluster's token, for the state API
    message = _l10_deployment(session).get("message") or ""
    text: list[str] = []
    for actor_id in dict.fromkeys(re.findall(r"actor_id=([0-9a-f]{16,})", message)):
        for suffix in ("out", "err"):
            try:
                text += get_log(
                    actor_id=actor_id,
                    suffix=suffix,
                    address=session.cluster.address,
                    tail=-1,
                    timeout=30,
                )
            except Exception:  # noqa: BLE001 - a log that cannot be read adds nothing
                continue
    return "".join(text)


def lab10_cache_holds(session: LabSession) -> int | None:
    """The longest sequence the engine said its KV cache holds (from its log), or None."""
    found = _L10_ESTIMATE.findall(lab10_engine_log(session))
    return int(found[-1]) if found else None


def lab10_observed_cause(session: LabSession) -> str:
    """What the live cluster shows for lab 10's application (one of :data:`LLM_CAUSES`)."""
    status = _l10_app(session).get("status")
    replicas = _l10_deployment(session).get("replicas") or []
    started = any(r.get("state") == "RUNNING" for r in replicas)
    if (
        status == "DEPLOYING"
        and not started
        and _l10_asks_for_a_gpu(_l10_held_config(session))
        and any("GPU" in demand for demand in pending_demands(session.cluster))
    ):
        return "needs-gpu"
    if status == "DEPLOY_FAILED" and lab10_cache_holds(session) is not None:
        return "kv-cache-too-small"
    message = _l10_deployment(session).get("message") or ""
    if status == "DEPLOY_FAILED" and re.search(r"(?i)no such file|not found", message):
        return "model-not-found"
    if status == "RUNNING":
        return "healthy"
    return f"unclear ({status})"


def _l10_diagnosed(session: LabSession, said: Any, look: str) -> None:
    _expect(
        said in LLM_CAUSES,
        f"{said!r} is not a cause; choose one of {sorted(LLM_CAUSES)}.",
        look,
    )
    # The feedback never names the cause the cluster shows: that is the task.
    _expect(
        lab10_observed_cause(session) == said,
        f"{said!r} is not what the cluster shows for chat now.",
        look + "; ask: does its replica start at all, and if it does, what does the engine "
        "say before it stops?",
    )


@lab_check("lab10", 1)
def lab10_diagnosis(session: LabSession, diagnosis: Any) -> None:
    """The diagnosis names why chat never starts, as the cluster shows it."""
    _l10_diagnosed(
        session,
        diagnosis,
        "Task 1: diagnosis, from `serve status`, `ray status` (pending_demands) and chat's config",
    )
    # Task 2's prose names no fix (that would give this diagnosis away): said here, once right.
    print(
        "Diagnosis right. What Task 2 changes: this cluster has no L4 GPU, and vLLM's build "
        "here runs on the CPU."
    )


@lab_check("lab10", 2)
def lab10_hardware_fixed(session: LabSession) -> None:
    """chat's config as Serve holds it runs on the CPU, and its engine's replica started."""
    look = "Task 2: chat's LLM config in fixed_path, deployed with `serve deploy`"
    config = _l10_held_config(session)
    _expect(
        bool(config) and not _l10_asks_for_a_gpu(config),
        f"The config Serve holds for chat says accelerator_config "
        f"{config.get('accelerator_config')!r} and accelerator_type "
        f"{config.get('accelerator_type')!r}: its replica still asks for a GPU.",
        look,
    )
    # The engine starts only now: give its replica time to start and to settle (it may fail).
    deadline = time.monotonic() + _L10_SETTLE_S
    while _l10_app(session).get("status") == "DEPLOYING" and time.monotonic() < deadline:
        time.sleep(2.0)
    status = _l10_app(session).get("status")
    _expect(
        status in ("RUNNING", "DEPLOY_FAILED"),
        f"chat is {status} {_L10_SETTLE_S:.0f} s later: its replica did not start.",
        look + "; `ray status` lists what it waits for",
    )


@lab_check("lab10", 3)
def lab10_engine_diagnosis(session: LabSession, second_diagnosis: Any, cache_holds: Any) -> None:
    """The second diagnosis names why the engine stops, and cache_holds is the engine's own
    figure."""
    look = "Task 3: second_diagnosis and cache_holds, from the replica's log (`ray logs actor`)"
    _l10_diagnosed(session, second_diagnosis, look)
    said = lab10_cache_holds(session)
    _expect(
        said is not None and isinstance(cache_holds, int) and cache_holds == said,
        f"cache_holds is {cache_holds!r}: not the number of tokens the engine's log says its "
        "KV cache holds.",
        look + " (the engine's error line about max_model_len)",
    )
    print(  # Task 4's prose names no fix (that would give this diagnosis away): said here
        f"Diagnosis right. What Task 4 changes: the engine's KV cache holds {said} tokens, "
        "and one sequence of max_model_len tokens must fit in it (bytes_per_token: what one "
        "token takes in the cache)."
    )


def _l10_models(session: LabSession, look: str) -> dict[str, Any]:
    models = _json(_get(session.url(_L10_APP, "/v1/models"), look=look), look=look)
    ids = [m.get("id") for m in models.get("data") or []]
    _expect("tiny-llama" in ids, f"/v1/models lists {ids}, not 'tiny-llama'.", look)
    return models["data"][0]


@lab_check("lab10", 4)
def lab10_serves(session: LabSession) -> None:
    """chat runs and answers a request as long as its context."""
    look = "Task 4: chat's engine arguments in fixed_path, deployed with `serve deploy`"
    _app(session, _L10_APP, task=4, look=look)
    length = (_l10_models(session, look).get("metadata") or {}).get("max_request_context_length")
    _expect(
        isinstance(length, int) and length > 16,
        f"/v1/models gives a context length of {length!r} tokens.",
        look,
    )
    assert isinstance(length, int)  # _expect raised otherwise
    # A short prompt and as many tokens as its context leaves: the engine must hold them all.
    body = {"model": "tiny-llama", "prompt": "Return the", "max_tokens": length - 16}
    body["ignore_eos"] = True
    reply = _json(
        _post(session.url(_L10_APP, "/v1/completions"), body, look=look, timeout_s=300),
        look=look,
    )
    tokens = (reply.get("usage") or {}).get("completion_tokens")
    _expect(
        tokens == length - 16,
        f"A request for {length - 16} tokens came back with {tokens}.",
        look,
    )
