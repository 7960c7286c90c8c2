"""LLM serving plumbing: configs for CPU or GPU, deploying, clients, load, a direct engine.

What lesson 04 teaches is ``ray.serve.llm`` itself (``LLMConfig``, ``build_openai_app``, the
OpenAI API); this module holds the parts that are not the lesson:

* :func:`make_llm_config` - an ``LLMConfig`` for ``accelerator="cpu"`` (vLLM's CPU build:
  ``accelerator_config={"kind": "cpu"}`` and the KV cache size in ``VLLM_CPU_KVCACHE_SPACE``)
  or ``"gpu"`` (``gpu_memory_utilization``);
* :func:`deploy_app` - start Serve on a chosen HTTP port, deploy an application, and wait for
  it with a timeout that reports the pending resource demand (``serve.run`` waits forever);
  :func:`wait_until_updated` does the waiting after ``serve deploy``, :func:`delete_app`
  removes one application, :func:`engine_root_cause` digs the engine's own error out of a
  failed replica's log;
* :func:`render_config` - fill the ``${TINY_MODEL}`` placeholder of ``configs/llm/`` files;
* :func:`stream_completion` - stream one completion, measuring time to first token;
* :class:`BenchRun` / :func:`naive_generate_baseline` - a benchmark run's tokens per second
  and latencies (lesson 04b writes the load loop that fills one), and the same prompts one at
  a time through transformers' ``generate``; load in general is :mod:`helpers.load`'s;
* :class:`VllmServer` - vLLM's own OpenAI server on loopback, the engine without Serve.

Usage::

    from helpers.llm import make_llm_config, deploy_app
    from ray.serve.llm import build_openai_app
    config = make_llm_config("tiny", accelerator="cpu")
    result = deploy_app(build_openai_app({"llm_configs": [config]}), cluster=cluster,
                        name="llm", route_prefix="/", timeout_s=300)
    result.url                           # http://127.0.0.1:PORT

Introduced in notebooks/04a_llm_config_and_openai_api.ipynb and 04b_batching_and_mistakes.ipynb
(the completion API of 04a is :mod:`helpers.apps.completion_api`, exported from its cell).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.auth import activate_in_process
from helpers.errors import ServeTimeoutError, WorkbookError
from helpers.paths import scratch_root
from helpers.ports import free_port
from helpers.processes import ManagedProcess
from helpers.serve_status import app_statuses, serve_details, wait_until_deleted, wait_until_running
from helpers.tiny_llm import TINY, resolve_model_source
from helpers.waiting import wait_for

if TYPE_CHECKING:  # pragma: no cover
    from helpers.cluster import ClusterHandle

__all__ = [
    "ACCELERATORS",
    "TINY_MODEL_ID",
    "make_llm_config",
    "llm_config_as_dict",
    "serve_http_url",
    "DeployResult",
    "deploy_app",
    "delete_app",
    "StreamResult",
    "stream_completion",
    "BenchRun",
    "naive_generate_baseline",
    "VllmServer",
    "engine_kwargs_to_cli",
    "bench_prompts",
    "LLM_CONFIGS_DIR",
    "render_config",
    "engine_root_cause",
    "wait_until_updated",
]

ACCELERATORS = ("cpu", "gpu")
TINY_MODEL_ID = "tiny-llama"
LLM_CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs" / "llm"


# --- configuration ---------------------------------------------------------------------------


def make_llm_config(
    model_source: str = TINY,
    *,
    model_id: str | None = None,
    accelerator: str = "cpu",
    max_model_len: int = 1024,
    max_num_seqs: int = 64,
    dtype: str = "float32",
    enable_prefix_caching: bool = True,
    enable_chunked_prefill: bool = True,
    tensor_parallel_size: int = 1,
    kv_cache_gib: int | None = 1,
    gpu_memory_utilization: float = 0.85,
    min_replicas: int = 1,
    max_replicas: int = 1,
    target_ongoing_requests: int = 32,
    max_ongoing_requests: int = 128,
    set_accelerator_config: bool = True,
    skip_local_download: bool = True,
    engine_kwargs: Mapping[str, Any] | None = None,
    deployment_config: Mapping[str, Any] | None = None,
    env_vars: Mapping[str, str] | None = None,
) -> Any:
    """An ``LLMConfig`` for the CPU build of vLLM (``accelerator="cpu"``) or for GPUs.

    ``model_source`` is a notebook's parameter: ``"tiny"`` (the local model of
    :mod:`helpers.tiny_llm`), a folder, or a hub id. On CPU the KV cache is sized by
    ``VLLM_CPU_KVCACHE_SPACE`` (whole GiB, in the replica's ``runtime_env``; ``kv_cache_gib=None``
    leaves it out, e.g. to give ``engine_kwargs={"kv_cache_memory_bytes": ...}``, which that
    variable would override) and the config says
    ``accelerator_config={"kind": "cpu"}``; on GPU by ``gpu_memory_utilization``. On CPU the
    engine runs eagerly (``enforce_eager``: no torch.compile warm-up, 7 s off each start).
    ``set_accelerator_config=False`` leaves the accelerator out, which on a CPU-only cluster
    reproduces the replica that waits forever for a GPU. ``engine_kwargs`` and
    ``deployment_config`` are merged over the defaults. For a model folder,
    ``skip_local_download`` installs :class:`helpers.llm_callbacks.LocalModelCallback`, which
    saves the replica a per-node "download" task (20-25 s on 2 cores).
    """
    from ray.serve.llm import LLMConfig

    from helpers.llm_callbacks import LOCAL_MODEL_CALLBACK, is_local_model_folder

    if accelerator not in ACCELERATORS:
        raise WorkbookError(f"accelerator must be one of {ACCELERATORS}, not {accelerator!r}.",
                            "use 'cpu' on a laptop, 'gpu' on a machine with an NVIDIA GPU.")
    source = resolve_model_source(model_source)
    if model_id is None:
        model_id = TINY_MODEL_ID if model_source in ("", TINY) else Path(source).name.lower()
    engine = {
        "max_model_len": max_model_len,
        "max_num_seqs": max_num_seqs,
        "dtype": dtype,
        "enable_prefix_caching": enable_prefix_caching,
        "enable_chunked_prefill": enable_chunked_prefill,
        "tensor_parallel_size": tensor_parallel_size,
    }
    if accelerator == "cpu":
        # No torch.compile warm-up: measured on 2 cores, the tiny model's replica starts in
        # 29 s instead of 36 s, at the same tokens/s (vLLM's CPU build compiles without
        # Inductor, so the compiled graph runs the same kernels as eager mode).
        engine["enforce_eager"] = True
    env = dict(env_vars or {})
    kwargs: dict[str, Any] = {}
    if accelerator == "gpu":
        engine["gpu_memory_utilization"] = gpu_memory_utilization
        if set_accelerator_config:
            kwargs["accelerator_config"] = {"kind": "gpu"}
    else:
        if kv_cache_gib is not None:  # None: size the cache with engine_kwargs instead
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        if set_accelerator_config:
            kwargs["accelerator_config"] = {"kind": "cpu"}
    engine.update(engine_kwargs or {})
    deployment: dict[str, Any] = {
        "autoscaling_config": {
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "target_ongoing_requests": target_ongoing_requests,
        },
        "max_ongoing_requests": max_ongoing_requests,
    }
    deployment.update(deployment_config or {})
    if skip_local_download and is_local_model_folder(source):
        kwargs["callback_config"] = {"callback_class": LOCAL_MODEL_CALLBACK}
    return LLMConfig(
        model_loading_config={"model_id": model_id, "model_source": source},
        deployment_config=deployment,
        engine_kwargs=engine,
        runtime_env={"env_vars": env} if env else None,
        **kwargs,
    )


def llm_config_as_dict(config: Any) -> dict[str, Any]:
    """The fields a YAML ``llm_configs`` entry needs (what was set, JSON-friendly)."""
    data = config.model_dump(mode="json", exclude_unset=True)
    return {k: v for k, v in data.items() if v not in (None, {}, [])}


def render_config(
    path: str | os.PathLike[str], out_dir: str | os.PathLike[str], **values: str
) -> Path:
    """Fill the ``${NAME}`` placeholders of a Serve YAML config; write it to ``out_dir``.

    The CPU configs in ``configs/llm/`` name the local tiny model ``${TINY_MODEL}`` (its
    folder differs per machine); from a shell, ``envsubst`` does the same. A placeholder
    without a value is an error, not an empty string.
    """
    import re

    source = Path(path)
    missing: list[str] = []

    def fill(match: "re.Match[str]") -> str:
        name = match.group(1)
        if name not in values:
            missing.append(name)
            return match.group(0)
        return str(values[name])

    text = re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", fill, source.read_text())
    if missing:
        raise WorkbookError(f"{source.name} needs a value for {', '.join(sorted(set(missing)))}.",
                            "pass NAME=value to render_config for each ${NAME} in the file.")
    target = Path(out_dir) / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


# --- deploying -------------------------------------------------------------------------------


def serve_http_url(cluster: "ClusterHandle") -> str:
    """``http://host:port`` of the Serve HTTP proxy on ``cluster`` (Serve must be running)."""

    options = serve_details(cluster).get("http_options") or {}
    host = options.get("host") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = cluster.host
    port = options.get("port") or 8000
    return f"http://{host}:{port}"


@dataclass
class DeployResult:
    """An application that reached RUNNING: its name, URL and how long that took."""

    name: str
    url: str  # base URL including the route prefix, no trailing slash
    seconds: float
    details: dict[str, Any] = field(repr=False, default_factory=dict)


def _check_connected_to(cluster: "ClusterHandle") -> None:
    """Refuse to deploy when this process's Ray driver belongs to another cluster.

    ``build_openai_app`` reads the driver's runtime context, and Ray connects a process that
    was not connected yet to a *new local* Ray instance: the app would then be deployed there.
    Connect first (``cluster.connect()``), then build the app.
    """
    import ray

    if not ray.is_initialized():
        cluster.connect()
        return
    connected = ray.get_runtime_context().gcs_address or ""
    if not connected.endswith(":" + cluster.address.rsplit(":", 1)[-1]):
        raise WorkbookError(
            f"This process is connected to the Ray cluster at {connected}, not to "
            f"{cluster.address}.",
            "call cluster.connect() before building the application (build_openai_app "
            "reads the Ray context and would otherwise start a private local Ray), then "
            "restart the kernel or ray.shutdown() and try again.",
        )


def _start_serve(cluster: "ClusterHandle", http_host: str, http_port: int | None) -> None:
    """Start Serve with our HTTP options unless Serve already runs (then its port stays)."""
    from ray import serve

    if (serve_details(cluster).get("controller_info") or {}).get("actor_id"):
        return
    serve.start(http_options={"host": http_host, "port": http_port or free_port()})


def deploy_app(
    app: Any,
    *,
    cluster: "ClusterHandle",
    name: str,
    route_prefix: str | None = "/",
    timeout_s: float = 300.0,
    http_port: int | None = None,
    http_host: str = "127.0.0.1",
    wait: bool = True,
) -> DeployResult:
    """Deploy a Serve ``Application`` and wait until it is RUNNING (or fail with the reason).

    Serve is started first if it does not run yet, on ``http_host``:``http_port`` (default: a
    free port on 127.0.0.1); a Serve that already runs keeps its port. ``serve.run`` would wait
    without a time limit; this deploys the same way
    without waiting, then waits with :func:`helpers.serve_status.wait_until_running`, which
    raises :class:`~helpers.errors.ServeTimeoutError` with the resource demand nobody can
    place, or :class:`~helpers.errors.ServeDeployError` with the replica's own error.
    """
    from ray import serve

    _check_connected_to(cluster)
    _start_serve(cluster, http_host, http_port)
    started = time.monotonic()
    serve._run(app, _blocking=False, name=name, route_prefix=route_prefix)
    details: dict[str, Any] = {}
    if wait:
        details = wait_until_running(name, cluster=cluster, timeout_s=timeout_s)
    prefix = (route_prefix or "").rstrip("/")
    return DeployResult(name, serve_http_url(cluster) + prefix,
                        round(time.monotonic() - started, 1), details)


def wait_until_updated(
    app: str, *, cluster: "ClusterHandle", deployed_after: float, timeout_s: float = 300.0
) -> dict[str, Any]:
    """After ``serve deploy``: wait until Serve took the new config of ``app``, then until
    it is RUNNING (or raise :class:`~helpers.errors.ServeDeployError` at once if it failed).

    ``deployed_after`` is ``time.time()`` taken before the deploy; an application that was
    RUNNING before counts as updated only once Serve records a later deploy time.
    """

    started = time.monotonic()
    seen: dict[str, Any] = {}

    def took_the_new_config() -> bool:
        seen["app"] = (serve_details(cluster).get("applications") or {}).get(app) or {}
        return (seen["app"].get("last_deployed_time_s") or 0) >= deployed_after - 1.0

    wait_for(took_the_new_config, timeout_s=timeout_s, what=f"Serve to take {app}'s new config",
             on_timeout=lambda waited: ServeTimeoutError(
                 app, timeout_s, seen["app"].get("status", "NOT_STARTED")))
    remaining = max(1.0, timeout_s - (time.monotonic() - started))
    return wait_until_running(app, cluster=cluster, timeout_s=remaining, grace_s=0)


def engine_root_cause(cluster: "ClusterHandle", error: Exception, *, max_lines: int = 3) -> list[str]:
    """The engine's own error lines behind a failed ``LLMServer`` replica.

    When vLLM fails to start inside a replica, Serve reports only "Engine core initialization
    failed. See root cause above." The root cause is in the replica's log: this reads the logs
    of the replica actors named in ``error`` (a :class:`~helpers.errors.ServeDeployError`)
    through Ray's state API and returns the exception lines, most specific first.
    """
    import re

    from ray.util.state import get_log

    activate_in_process(cluster.env)
    found: list[str] = []
    for actor_id in dict.fromkeys(re.findall(r"actor_id=([0-9a-f]{16,})", str(error))):
        for suffix in ("err", "out"):
            try:
                text = "".join(get_log(actor_id=actor_id, suffix=suffix, address=cluster.address,
                                       tail=-1, timeout=30))
            except Exception:  # noqa: BLE001 - a log we cannot read adds nothing
                continue
            for line in text.splitlines():
                match = re.search(r"\b([A-Z][A-Za-z]*(?:Error|Exception)): (.+)", line)
                if not match or "Engine core initialization failed" in line:
                    continue
                message = f"{match.group(1)}: {match.group(2).strip()}"
                if message not in found:
                    found.append(message)
    return found[:max_lines]


def delete_app(name: str, *, cluster: "ClusterHandle", timeout_s: float = 120.0) -> None:
    """Delete application ``name`` (if it exists) and wait until Serve has removed it.

    Ray 2.60's ``serve`` CLI has no ``delete`` command: this uses ``serve.delete`` (a config
    deployed with ``serve deploy`` can also drop an application by not listing it).
    """
    from ray import serve

    if name not in app_statuses(cluster):
        return
    _check_connected_to(cluster)
    serve.delete(name, _blocking=False)
    wait_until_deleted(name, cluster=cluster, timeout_s=timeout_s)


# --- streaming ------------------------------------------------------------------------------


@dataclass
class StreamResult:
    """One streamed completion: the pieces as they arrived, and the timings."""

    text: str
    pieces: list[tuple[float, str]]  # (seconds since the request, text of the chunk)
    ttft_s: float  # time to first token
    total_s: float
    finish_reason: str | None

    @property
    def inter_token_s(self) -> float:
        """Median gap between consecutive chunks (what the reader feels as speed)."""
        times = [t for t, _ in self.pieces]
        gaps = [b - a for a, b in zip(times, times[1:])]
        return statistics.median(gaps) if gaps else 0.0


def stream_completion(
    client: Any,
    *,
    model: str,
    prompt: str | None = None,
    messages: list[dict[str, str]] | None = None,
    max_tokens: int = 32,
    on_piece: Callable[[str], None] | None = None,
    **extra: Any,
) -> StreamResult:
    """Stream a chat (``messages``) or text (``prompt``) completion with an ``openai`` client.

    ``on_piece`` is called with each piece of text as it arrives (``print`` shows the tokens
    appear). Time to first token counts from sending the request to the first non-empty text.
    """
    started = time.perf_counter()
    if messages is not None:
        stream = client.chat.completions.create(model=model, messages=messages, stream=True,
                                                max_tokens=max_tokens, **extra)
    else:
        stream = client.completions.create(model=model, prompt=prompt, stream=True,
                                           max_tokens=max_tokens, **extra)
    pieces: list[tuple[float, str]] = []
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        piece = choice.delta.content if messages is not None else choice.text
        if piece:
            pieces.append((time.perf_counter() - started, piece))
            if on_piece is not None:
                on_piece(piece)
        finish = choice.finish_reason or finish
    total = time.perf_counter() - started
    if not pieces:
        raise WorkbookError("The stream ended without any text.",
                            "check the model answers at all with a non-streaming request.")
    return StreamResult("".join(p for _, p in pieces), pieces, pieces[0][0], total, finish)


# --- load ------------------------------------------------------------------------------------


def bench_prompts(count: int, *, seed: int = 0) -> list[str]:
    """``count`` distinct short prompts (docstring-like openings), the same for every run."""
    import random

    openings = ["Return the", "Create a new", "This module provides", "Raise an error if",
                "The default value of", "Read the data from", "Convert the given",
                "If the argument is", "This class represents", "Write the contents of"]
    subjects = ["file", "socket", "string", "list of names", "path", "object", "header",
                "archive", "thread", "value", "buffer", "date", "message", "process"]
    rng = random.Random(seed)
    return [f"{rng.choice(openings)} {rng.choice(subjects)} {i}" for i in range(count)]


@dataclass
class BenchRun:
    """One benchmark run: requests sent at one concurrency (by lesson 04b's own load loop, or
    one at a time through transformers' ``generate``), what came back and how fast. The
    workbook's load engine, with a row per request, is :mod:`helpers.load`."""

    label: str
    concurrency: int
    requests: int
    completion_tokens: int
    seconds: float
    latencies_s: list[float]
    errors: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50_latency_s(self) -> float:
        return statistics.median(self.latencies_s) if self.latencies_s else float("nan")

    @property
    def p90_latency_s(self) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]

    def row(self) -> dict[str, Any]:
        return {"server": self.label, "concurrency": self.concurrency,
                "requests": self.requests, "completion_tokens": self.completion_tokens,
                "seconds": round(self.seconds, 2), "tokens_per_s": round(self.tokens_per_s, 1),
                "p50_latency_s": round(self.p50_latency_s, 3),
                "p90_latency_s": round(self.p90_latency_s, 3), "errors": len(self.errors)}


def naive_generate_baseline(
    model_path: str | os.PathLike[str],
    *,
    prompts: Sequence[str],
    max_tokens: int,
    dtype: str = "float32",
    device: str = "cpu",
    threads: int | None = None,
) -> BenchRun:
    """The naive way: transformers ``generate``, one prompt at a time, greedy, exactly
    ``max_tokens`` new tokens each (no batching, no server), on ``device`` ("cpu"/"cuda")."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        torch_dtype = torch.float32 if dtype in ("auto", "float32") else getattr(torch, dtype)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(device)
        model.eval()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        latencies: list[float] = []
        tokens = 0
        started = time.perf_counter()
        with torch.inference_mode():
            for prompt in prompts:
                sent = time.perf_counter()
                ids = tokenizer(prompt, return_tensors="pt").to(device)
                out = model.generate(**ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                                     do_sample=False, pad_token_id=pad)
                tokens += int(out.shape[1] - ids["input_ids"].shape[1])
                latencies.append(time.perf_counter() - sent)
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous)
    return BenchRun("transformers generate", 1, len(prompts), tokens, seconds, latencies)


# --- the engine without Serve ------------------------------------------------------------------


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

    def __init__(self, model_source: str, *, model_id: str, engine_kwargs: Mapping[str, Any],
                 env_vars: Mapping[str, str] | None = None, port: int | None = None) -> None:
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
        super().__init__([sys.executable, "-W", "ignore::DeprecationWarning",
                          "-m", "vllm.entrypoints.openai.api_server",
                          "--model", model_source, "--served-model-name", model_id,
                          "--host", "127.0.0.1", "--port", str(self.port),
                          *engine_kwargs_to_cli(engine_kwargs)],
                         kind="vllm-server", name=name, env=env, ports=[self.port],
                         stop_timeout_s=15.0)
        self.start_seconds: float | None = None  # from start() to the first answer
        self._started_at = 0.0

    @classmethod
    def from_llm_config(cls, config: Any, **kwargs: Any) -> "VllmServer":
        """A server with ``config``'s model, engine kwargs and runtime_env variables."""
        loading = config.model_loading_config
        env = dict(((config.runtime_env or {}).get("env_vars")) or {})
        engine = {k: v for k, v in config.engine_kwargs.items()}
        return cls(str(loading.model_source), model_id=loading.model_id, engine_kwargs=engine,
                   env_vars=env, **kwargs)

    def start(self, timeout_s: float = 300.0, *, wait: bool = True) -> "VllmServer":
        """Start the server; with ``wait`` (the default) wait until ``/v1/models`` answers."""
        self.rpc_dir.mkdir(parents=True, exist_ok=True)
        super().start()
        self._started_at = time.monotonic()
        return self.wait_ready(timeout_s) if wait else self

    def wait_ready(self, timeout_s: float = 300.0) -> "VllmServer":
        """Wait until the started server answers ``/v1/models``; raise with its log if not."""
        import requests

        if self.pid is None:
            raise WorkbookError("This vLLM server was not started.", "call start() first.")
        while time.monotonic() - self._started_at < timeout_s:
            if not self.running:
                code = self.stop()
                raise WorkbookError(
                    f"The vLLM server exited with code {code} before it was ready.",
                    "read the end of its log below.", details=self.tail())
            try:
                if requests.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    if self.start_seconds is None:
                        self.start_seconds = round(time.monotonic() - self._started_at, 1)
                    return self
            except requests.RequestException:
                pass
            time.sleep(1.0)
        self.stop()
        raise WorkbookError(f"The vLLM server was not ready within {timeout_s:.0f} s.",
                            "the machine may be busy; raise timeout_s.", details=self.tail())

    def stop(self, timeout_s: float | None = None, *, sig: int | None = None) -> int | None:
        """Stop the server's whole process session (idempotent) and remove its sockets' folder."""
        code = super().stop(timeout_s, sig=sig)
        shutil.rmtree(self.rpc_dir, ignore_errors=True)
        return code
