# Generated from notebooks/04a_llm_config_and_openai_api.ipynb (cell 24); edit the lesson, then run `python -m helpers.lessons generate`.
"""A typical deployment kit's completion API on an engine that ``ray.serve.llm`` serves.

``POST /`` with ``{"prompt": ..., "max_tokens": ...}`` answers a ``text_completion`` object
naming the node that served it. ``CompletionAPI`` holds a ``DeploymentHandle`` to the
``LLMServer:<model_id>`` deployment of another application (one made by
``build_openai_app``) and calls its ``completions`` method: no second engine starts. Run it
beside that application; ``args`` name it::

    # YAML: import_path: helpers.apps.completion_api:build_app
    #       args: {llm_app: llm, model_id: tiny-llama}

Introduced in notebooks/04a_llm_config_and_openai_api.ipynb.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import ray
from ray import serve
from ray.serve.llm.openai_api_models import CompletionRequest
from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["CompletionAPI", "build_app"]


@serve.deployment(ray_actor_options={"num_cpus": 0})
class CompletionAPI:
    def __init__(self, llm_app: str, model_id: str, default_max_tokens: int = 64) -> None:
        self.engine = serve.get_deployment_handle(f"LLMServer:{model_id}", app_name=llm_app)
        self.model_id = model_id
        self.default_max_tokens = default_max_tokens

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        body = body if isinstance(body, dict) else {}
        prompt = body.get("prompt")
        max_tokens = body.get("max_tokens", self.default_max_tokens)
        if not isinstance(prompt, str) or not prompt:
            return JSONResponse({"error": "'prompt' must be a non-empty string"}, status_code=400)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return JSONResponse({"error": "'max_tokens' must be a positive integer"}, status_code=400)
        result = None  # the engine's answer: a completion, or an error
        completion = CompletionRequest(model=self.model_id, prompt=prompt, max_tokens=max_tokens,
                                       temperature=0.0, stream=False)
        async for item in self.engine.options(stream=True).completions.remote(completion):
            result = item  # with stream=False: one item, the whole completion
        if result is None:
            return JSONResponse({"error": "the engine returned nothing"}, status_code=502)
        data = result.model_dump() if hasattr(result, "model_dump") else dict(result)
        if "error" in data and "choices" not in data:  # the engine refused the request
            err = data["error"]
            return JSONResponse({"error": err.get("message", str(err))},
                                status_code=int(err.get("code") or 500))
        return JSONResponse({
            "id": data.get("id") or f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": data.get("created") or int(time.time()),
            "model": self.model_id,
            "node": ray.get_runtime_context().get_node_id(),
            "choices": [{"text": c["text"], "index": c["index"], "finish_reason": c.get("finish_reason")}
                        for c in data["choices"]],
            "usage": {k: data["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
        })


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application for ``import_path: ...:build_app``. ``args``: ``llm_app`` (the
    application that serves the engine), ``model_id``, optionally ``default_max_tokens``."""
    return CompletionAPI.bind(args["llm_app"], args["model_id"], int(args.get("default_max_tokens", 64)))
