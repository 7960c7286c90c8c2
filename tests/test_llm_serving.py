"""helpers.llm against the real thing: vLLM's CPU engine behind ray.serve.llm on a local cluster.

The tests that need an engine share ONE local cluster and ONE deployment of the default tiny
model (built once and cached, then reused by lesson 04): starting vLLM costs about a minute
on 2 cores. The first tests need no cluster. The OpenAI API's 404 for an unknown model is
asserted by lesson 04a, section 6.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from helpers.apps.completion_api import build_app as build_completion_api
from helpers.errors import ServeTimeoutError, WorkbookError
from helpers.llm import bench_prompts, make_llm_config, stream_completion
from helpers.serve_apps import deploy_app
from helpers.vllm_server import engine_kwargs_to_cli

MAX_MODEL_LEN = 512


# --- no cluster ------------------------------------------------------------------------------


def test_cpu_and_gpu_configs_differ_where_they_must(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")  # a folder counts as a model when it has one
    cpu = make_llm_config(str(tmp_path), model_id="m", kv_cache_gib=2)
    gpu = make_llm_config(
        str(tmp_path), model_id="m", accelerator="gpu", gpu_memory_utilization=0.5
    )
    assert cpu.accelerator_config.kind == "cpu" and gpu.accelerator_config.kind == "gpu"
    assert cpu.runtime_env == {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "2"}}
    assert "gpu_memory_utilization" not in cpu.engine_kwargs
    # CPU: no torch.compile warm-up (a faster start, the same tokens/s); GPU keeps CUDA graphs
    assert cpu.engine_kwargs["enforce_eager"] is True and "enforce_eager" not in gpu.engine_kwargs
    compiled = make_llm_config(str(tmp_path), model_id="m", engine_kwargs={"enforce_eager": False})
    assert compiled.engine_kwargs["enforce_eager"] is False
    assert gpu.engine_kwargs["gpu_memory_utilization"] == 0.5 and gpu.runtime_env is None
    bare = make_llm_config(str(tmp_path), model_id="m", set_accelerator_config=False)
    assert bare.accelerator_config.kind == "gpu", "LLMConfig's own default is a GPU"
    no_env = make_llm_config(
        str(tmp_path),
        model_id="m",
        kv_cache_gib=None,
        engine_kwargs={"kv_cache_memory_bytes": 1 << 20},
    )
    assert no_env.runtime_env is None and no_env.engine_kwargs["kv_cache_memory_bytes"] == 1 << 20
    with pytest.raises(WorkbookError, match="accelerator"):
        make_llm_config(str(tmp_path), accelerator="tpu")


def test_engine_kwargs_become_vllm_flags() -> None:
    argv = engine_kwargs_to_cli(
        {
            "max_model_len": 512,
            "enable_prefix_caching": True,
            "enforce_eager": False,
            "dtype": "float32",
            "x": None,
        }
    )
    assert argv == [
        "--max-model-len",
        "512",
        "--enable-prefix-caching",
        "--no-enforce-eager",
        "--dtype",
        "float32",
    ]


def test_moved_names_stay_importable_from_helpers_llm() -> None:
    """The Serve deploy helpers and vLLM's server moved to modules of their own; lessons,
    labs and learners' notebooks written against ``helpers.llm`` still find them there."""
    import helpers.llm
    import helpers.serve_apps
    import helpers.vllm_server

    for module in (helpers.serve_apps, helpers.vllm_server):
        for name in module.__all__:
            assert name in helpers.llm.__all__, name
            assert getattr(helpers.llm, name) is getattr(module, name), name


def test_a_model_folder_skips_the_download_task_and_a_hub_id_keeps_it() -> None:
    from helpers.llm_callbacks import LOCAL_MODEL_CALLBACK

    folder = make_llm_config("tiny")
    assert folder.callback_config.callback_class == LOCAL_MODEL_CALLBACK
    kept = make_llm_config("tiny", skip_local_download=False)
    assert kept.callback_config.callback_class != LOCAL_MODEL_CALLBACK
    hub = make_llm_config("Qwen/Qwen3-0.6B", accelerator="gpu")
    assert hub.callback_config.callback_class != LOCAL_MODEL_CALLBACK


def test_bench_prompts_are_stable_and_distinct() -> None:
    assert bench_prompts(20) == bench_prompts(20)
    assert len(set(bench_prompts(200))) == 200


# --- one served engine -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[SimpleNamespace]:
    """A local cluster serving the tiny model (app "llm" at /) and the completion API."""
    from helpers.cluster import start_local_cluster

    cluster = start_local_cluster(num_cpus=6)
    try:
        cluster.connect()  # before build_openai_app, which reads the Ray context
        from ray.serve.llm import build_openai_app

        config = make_llm_config("tiny", max_model_len=MAX_MODEL_LEN)  # eager on CPU
        llm = deploy_app(
            build_openai_app({"llm_configs": [config]}),
            cluster=cluster,
            name="llm",
            route_prefix="/",
            timeout_s=900,
        )
        api = deploy_app(
            build_completion_api({"llm_app": "llm", "model_id": config.model_id}),
            cluster=cluster,
            name="completions",
            route_prefix="/complete",
            timeout_s=300,
        )
        yield SimpleNamespace(cluster=cluster, config=config, llm=llm, api=api)
    finally:
        cluster.stop()


@pytest.mark.cluster
def test_tiny_model_loads_and_generates_in_vllm(served: SimpleNamespace) -> None:
    models = requests.get(f"{served.llm.url}/v1/models", timeout=60).json()
    assert [m["id"] for m in models["data"]] == ["tiny-llama"]
    assert models["data"][0]["metadata"]["max_request_context_length"] == MAX_MODEL_LEN
    body = {
        "model": "tiny-llama",
        "prompt": "Return the",
        "max_tokens": 8,
        "ignore_eos": True,
        "temperature": 0,
    }
    reply = requests.post(f"{served.llm.url}/v1/completions", json=body, timeout=120).json()
    assert reply["usage"]["completion_tokens"] == 8 and reply["choices"][0]["text"].strip()
    again = requests.post(f"{served.llm.url}/v1/completions", json=body, timeout=120).json()
    assert again["choices"][0]["text"] == reply["choices"][0]["text"], "greedy is repeatable"


@pytest.mark.cluster
def test_the_replica_skipped_the_download_task(served: SimpleNamespace) -> None:
    logs = sorted(
        (served.cluster.ray_temp_dir / "session_latest" / "logs" / "serve").glob(
            "replica_llm_LLMServer*.log"
        )
    )
    assert logs, "the LLMServer replica wrote no log"
    text = "".join(path.read_text(errors="replace") for path in logs)
    assert "skipping the per-node download task" in text
    assert "Running tasks to download model files" not in text


@pytest.mark.cluster
def test_the_engine_sockets_live_in_the_cluster_folder(served: SimpleNamespace) -> None:
    """vLLM never removes its ZMQ sockets; the cluster points them at its own folder, which
    goes when the cluster stops, instead of /tmp where hundreds piled up."""
    import stat

    sockets = [p for p in served.cluster.vllm_rpc_dir.iterdir() if stat.S_ISSOCK(p.lstat().st_mode)]
    assert sockets, f"the running engine has no socket in {served.cluster.vllm_rpc_dir}"
    assert served.cluster.vllm_rpc_dir.is_relative_to(served.cluster.dir)


@pytest.mark.cluster
def test_completion_api_answers_a_text_completion(served: SimpleNamespace) -> None:
    before = int(time.time())
    reply = requests.post(
        f"{served.api.url}/", json={"prompt": "Return the", "max_tokens": 12}, timeout=120
    )
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert set(data) == {"id", "object", "created", "model", "node", "choices", "usage"}
    assert data["object"] == "text_completion" and data["model"] == "tiny-llama"
    assert isinstance(data["id"], str) and data["id"]
    assert before - 5 <= data["created"] <= time.time() + 5
    assert data["node"] in {n["node_id"] for n in served.cluster.nodes()}
    [choice] = data["choices"]
    assert set(choice) == {"text", "index", "finish_reason"} and choice["index"] == 0
    assert isinstance(choice["text"], str) and choice["finish_reason"] in ("stop", "length")
    usage = data["usage"]
    assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["completion_tokens"] <= 12 and usage["prompt_tokens"] > 0


@pytest.mark.cluster
def test_completion_api_rejects_bad_requests(served: SimpleNamespace) -> None:
    url = f"{served.api.url}/"
    assert requests.post(url, json={"prompt": "", "max_tokens": 4}, timeout=60).status_code == 400
    assert requests.post(url, json={"prompt": "Hi", "max_tokens": 0}, timeout=60).status_code == 400
    assert requests.post(url, data=b"not json", timeout=60).status_code == 400
    too_long = requests.post(
        url, json={"prompt": "Hi", "max_tokens": 10 * MAX_MODEL_LEN}, timeout=60
    )
    assert too_long.status_code == 400 and "max_model_len" in too_long.json()["error"]


@pytest.mark.cluster
def test_load_and_streaming_helpers(served: SimpleNamespace) -> None:
    from openai import OpenAI

    from helpers.load import chat_request, load_test

    # The workbook's one load engine on the OpenAI API: every answer exactly max_tokens long.
    result = load_test(
        served.llm.url,
        chat_request("tiny-llama", "Return the", max_tokens=6),
        concurrency=4,
        requests=8,
    ).summary()
    assert (result["requests"], result["failed"], result["output_tokens"]) == (8, 0, 8 * 6)
    assert result["output_tokens_per_s"] > 0
    failed = load_test(
        served.llm.url, chat_request("nope", "Return the", max_tokens=2), concurrency=2, requests=2
    ).summary()
    assert failed["failed"] == 2 and failed.get("output_tokens", 0) == 0
    client = OpenAI(base_url=f"{served.llm.url}/v1", api_key="x", max_retries=0)
    stream = stream_completion(
        client,
        model="tiny-llama",
        prompt="Return the",
        max_tokens=16,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert 0 < stream.ttft_s < stream.total_s and len(stream.pieces) > 1


@pytest.mark.cluster
def test_a_replica_that_needs_a_gpu_times_out_with_the_demand(served: SimpleNamespace) -> None:
    from ray import serve
    from ray.serve.llm import build_openai_app

    config = make_llm_config(
        "tiny", model_id="needs-gpu", set_accelerator_config=False, max_model_len=MAX_MODEL_LEN
    )
    started = time.monotonic()
    try:
        with pytest.raises(ServeTimeoutError) as caught:
            deploy_app(
                build_openai_app({"llm_configs": [config]}),
                cluster=served.cluster,
                name="needs-gpu",
                route_prefix="/needs-gpu",
                timeout_s=10,
            )
    finally:
        serve.delete("needs-gpu", _blocking=False)  # the module's cluster stops right after
    assert 10 <= time.monotonic() - started < 120
    assert caught.value.last_status != "RUNNING"
    assert any("GPU" in demand for demand in caught.value.pending_demands)


@pytest.mark.cluster
def test_deploy_refuses_a_process_connected_elsewhere(served: SimpleNamespace) -> None:
    """build_openai_app starts a private Ray in a process that is not connected yet; a
    process connected to one cluster must not deploy to another by mistake."""
    from helpers.cluster import ExistingCluster

    elsewhere = ExistingCluster("127.0.0.1:1", "http://127.0.0.1:2", None)
    with pytest.raises(WorkbookError, match="connected to the Ray cluster"):
        deploy_app(None, cluster=elsewhere, name="x")
