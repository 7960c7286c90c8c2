"""LLM serving plumbing: configs for CPU or GPU, the engine's own errors, clients, benchmarks.

What lesson 04 teaches is ``ray.serve.llm`` itself (``LLMConfig``, ``build_openai_app``, the
OpenAI API); this module holds the parts that are not the lesson:

* :func:`make_llm_config` - an ``LLMConfig`` for ``accelerator="cpu"`` (vLLM's CPU build:
  ``accelerator_config={"kind": "cpu"}`` and the KV cache size in ``VLLM_CPU_KVCACHE_SPACE``)
  or ``"gpu"`` (``gpu_memory_utilization``); :func:`llm_config_as_dict` its YAML entry;
* :func:`render_config` - fill the ``${TINY_MODEL}`` placeholder of ``configs/llm/`` files;
* :func:`engine_root_cause` - dig the engine's own error out of a failed replica's log;
* :func:`stream_completion` - stream one completion, measuring time to first token;
* :class:`BenchRun` / :func:`naive_generate_baseline` - a benchmark run's tokens per second
  and latencies (lesson 04b writes the load loop that fills one), and the same prompts one at
  a time through transformers' ``generate``; load in general is :mod:`helpers.load`'s.

Deploying, waiting for and deleting applications is :mod:`helpers.serve_apps` (not about
LLMs); vLLM's own server, the engine without Serve, is :mod:`helpers.vllm_server`. Their
names are importable from here too, for the lessons and labs written before they moved.

Usage::

    from helpers.llm import make_llm_config
    from helpers.serve_apps import deploy_app
    from ray.serve.llm import build_openai_app
    config = make_llm_config("tiny", accelerator="cpu")
    result = deploy_app(build_openai_app({"llm_configs": [config]}), cluster=cluster,
                        name="llm", route_prefix="/", timeout_s=300)
    result.url                           # http://127.0.0.1:PORT

Introduced in notebooks/04a_llm_config_and_openai_api.ipynb and 04b_batching_and_mistakes.ipynb
(the completion API of 04a is :mod:`helpers.apps.completion_api`, exported from its cell).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.auth import activate_in_process
from helpers.errors import WorkbookError

# Kept importable from here for the lessons and labs that import them from helpers.llm: the
# Serve deploy helpers (helpers.serve_apps) and vLLM's own server (helpers.vllm_server).
from helpers.serve_apps import (
    DeployResult,
    delete_app,
    deploy_app,
    serve_http_url,
    wait_until_updated,
)
from helpers.tiny_llm import TINY, resolve_model_source
from helpers.vllm_server import VllmServer, engine_kwargs_to_cli

if TYPE_CHECKING:  # pragma: no cover
    from helpers.cluster import ClusterHandle

__all__ = [
    "ACCELERATORS",
    "TINY_MODEL_ID",
    "LLM_CONFIGS_DIR",
    "make_llm_config",
    "llm_config_as_dict",
    "render_config",
    "engine_root_cause",
    "StreamResult",
    "stream_completion",
    "bench_prompts",
    "BenchRun",
    "naive_generate_baseline",
    # kept for the lessons and labs; defined in helpers.serve_apps and helpers.vllm_server
    "serve_http_url",
    "DeployResult",
    "deploy_app",
    "delete_app",
    "wait_until_updated",
    "VllmServer",
    "engine_kwargs_to_cli",
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
        raise WorkbookError(
            f"accelerator must be one of {ACCELERATORS}, not {accelerator!r}.",
            "use 'cpu' on a laptop, 'gpu' on a machine with an NVIDIA GPU.",
        )
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

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            missing.append(name)
            return match.group(0)
        return str(values[name])

    text = re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", fill, source.read_text())
    if missing:
        raise WorkbookError(
            f"{source.name} needs a value for {', '.join(sorted(set(missing)))}.",
            "pass NAME=value to render_config for each ${NAME} in the file.",
        )
    target = Path(out_dir) / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


# --- diagnosing ------------------------------------------------------------------------------


def engine_root_cause(cluster: ClusterHandle, error: Exception, *, max_lines: int = 3) -> list[str]:
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
                text = "".join(
                    get_log(
                        actor_id=actor_id,
                        suffix=suffix,
                        address=cluster.address,
                        tail=-1,
                        timeout=30,
                    )
                )
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
        stream = client.chat.completions.create(
            model=model, messages=messages, stream=True, max_tokens=max_tokens, **extra
        )
    else:
        stream = client.completions.create(
            model=model, prompt=prompt, stream=True, max_tokens=max_tokens, **extra
        )
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
        raise WorkbookError(
            "The stream ended without any text.",
            "check the model answers at all with a non-streaming request.",
        )
    return StreamResult("".join(p for _, p in pieces), pieces, pieces[0][0], total, finish)


# --- load ------------------------------------------------------------------------------------


def bench_prompts(count: int, *, seed: int = 0) -> list[str]:
    """``count`` distinct short prompts (docstring-like openings), the same for every run."""
    import random

    openings = [
        "Return the",
        "Create a new",
        "This module provides",
        "Raise an error if",
        "The default value of",
        "Read the data from",
        "Convert the given",
        "If the argument is",
        "This class represents",
        "Write the contents of",
    ]
    subjects = [
        "file",
        "socket",
        "string",
        "list of names",
        "path",
        "object",
        "header",
        "archive",
        "thread",
        "value",
        "buffer",
        "date",
        "message",
        "process",
    ]
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
        return {
            "server": self.label,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 2),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "p50_latency_s": round(self.p50_latency_s, 3),
            "p90_latency_s": round(self.p90_latency_s, 3),
            "errors": len(self.errors),
        }


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
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        latencies: list[float] = []
        tokens = 0
        started = time.perf_counter()
        with torch.inference_mode():
            for prompt in prompts:
                sent = time.perf_counter()
                ids = tokenizer(prompt, return_tensors="pt").to(device)
                out = model.generate(
                    **ids,
                    max_new_tokens=max_tokens,
                    min_new_tokens=max_tokens,
                    do_sample=False,
                    pad_token_id=pad,
                )
                tokens += int(out.shape[1] - ids["input_ids"].shape[1])
                latencies.append(time.perf_counter() - sent)
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous)
    return BenchRun("transformers generate", 1, len(prompts), tokens, seconds, latencies)
