"""Lab 05's checks (lab05): the tiny LLM behind the OpenAI API.

What the checks verify: the LLMConfig's model and accelerator, /v1/models, a streamed chat
reply against the greedy answer.

A lab's cells call them through the package, which registers every lab's checks
(``from helpers.labs import checks``, then ``checks.lab05_streamed_reply(lab, ...)``); the lab's
hidden checks are the instructor's, in :mod:`helpers.labs.hidden_checks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from helpers.labs.checks.framework import (
    CheckProblem,
    _app,
    _expect,
    _get,
    _json,
    _post,
    lab_check,
)
from helpers.llm import llm_config_as_dict

if TYPE_CHECKING:  # pragma: no cover
    from helpers.labs.session import LabSession

__all__ = [
    "lab05_llm_config",
    "lab05_openai_app_serves",
    "lab05_streamed_reply",
]


_L05_CONFIG = "Task 1: llm_config = LLMConfig(...)"


def _l05_config_dict(llm_config: Any) -> dict[str, Any]:
    if llm_config is None or not hasattr(llm_config, "model_dump"):
        raise CheckProblem(
            f"llm_config is {type(llm_config).__name__}, not an LLMConfig.", _L05_CONFIG
        )
    return llm_config_as_dict(llm_config)  # the fields that were set


@lab_check("lab05", 1)
def lab05_llm_config(
    session: LabSession, llm_config: Any, *, model_id: str, accelerator: str
) -> None:
    """llm_config names the model and the accelerator of this cluster."""
    data = _l05_config_dict(llm_config)
    loading = data.get("model_loading_config") or {}
    _expect(
        loading.get("model_id") == model_id,
        f"model_id is {loading.get('model_id')!r}, not {model_id!r}.",
        _L05_CONFIG,
    )
    kind = (data.get("accelerator_config") or {}).get("kind") or "gpu (LLMConfig's default)"
    _expect(
        kind == accelerator,
        f"accelerator_config kind is {kind!r} but this cluster serves on {accelerator!r}: "
        "a replica that asks for a GPU on a CPU cluster waits forever.",
        _L05_CONFIG + " (accelerator_config={'kind': ...})",
    )
    auto = (data.get("deployment_config") or {}).get("autoscaling_config") or {}
    _expect(
        auto.get("max_replicas", 1) == 1,
        f"max_replicas is {auto.get('max_replicas')}: one engine is all this lab has room for.",
        _L05_CONFIG + " deployment_config",
    )


@lab_check("lab05", 2)
def lab05_openai_app_serves(session: LabSession, *, model_id: str) -> None:
    """The OpenAI-compatible app runs and lists the model."""
    look = "Task 2: build_openai_app(...) and serve.run(app, name=..., route_prefix=...)"
    _app(session, "llm", task=2, look=look)
    models = _json(_get(session.url("llm", "/v1/models"), look=look), look=look)
    ids = [m.get("id") for m in models.get("data") or []]
    _expect(model_id in ids, f"/v1/models lists {ids}, not {model_id!r}.", look)


def _l05_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


@lab_check("lab05", 3)
def lab05_streamed_reply(
    session: LabSession, pieces: Any, *, model_id: str, question: str, max_tokens: int
) -> None:
    """The reply was streamed in several pieces, and they add up to the model's answer."""
    look = "Task 3: stream=True, and appending each chunk's choices[0].delta.content to pieces"
    _expect(
        isinstance(pieces, list) and len(pieces) > 1,
        f"pieces is {type(pieces).__name__} with {len(pieces) if isinstance(pieces, list) else 0}"
        " items; a streamed reply arrives in several chunks.",
        look,
    )
    body = {
        "model": model_id,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": _l05_messages(question),
    }
    reply = _json(
        _post(session.url("llm", "/v1/chat/completions"), body, look=look, timeout_s=120), look=look
    )
    whole = reply["choices"][0]["message"]["content"]
    streamed = "".join(p for p in pieces if isinstance(p, str))
    _expect(
        streamed == whole,
        f"The pieces add up to {streamed[:80]!r}, but the model's greedy answer to the "
        f"same question is {whole[:80]!r}.",
        look + " (same question, max_tokens and temperature=0)",
    )
