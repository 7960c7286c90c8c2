"""The LLM application configs in configs/llm/ are valid for the installed Ray Serve and vLLM.

Serve's own schema ignores keys it does not know (a misspelled ``route_prefx`` is silently
dropped), so besides validating with ``ServeDeploySchema`` these tests check every key against
the schema's fields, parse each ``llm_configs`` entry with ``LLMConfig`` (which forbids
unknown keys) and each ``engine_kwargs`` key against vLLM's ``EngineArgs``. Fast: nothing is
deployed (lesson 04 deploys the CPU ones with ``serve deploy``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.errors import WorkbookError
from helpers.llm import LLM_CONFIGS_DIR, render_config

CONFIGS = sorted(LLM_CONFIGS_DIR.glob("*.yaml"))
FAKE_MODEL = "/models/tiny-llama-test"


def _load(path: Path, tmp_path: Path) -> dict[str, Any]:
    rendered = render_config(path, tmp_path, TINY_MODEL=FAKE_MODEL)
    return yaml.safe_load(rendered.read_text())


def _unknown_keys(data: dict[str, Any], model: Any) -> set[str]:
    fields = set(model.model_fields)
    aliases = {f.alias for f in model.model_fields.values() if f.alias}
    return set(data) - fields - aliases


def test_there_are_cpu_and_gpu_variants_of_each_config() -> None:
    stems = {p.stem for p in CONFIGS}
    kinds = {s.rsplit("-", 1)[0] for s in stems}
    assert {"minimal", "autoscaling", "two-models"} <= kinds
    for kind in kinds:
        assert {f"{kind}-cpu", f"{kind}-gpu"} <= stems, kind


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_against_the_installed_serve_schema(path: Path, tmp_path: Path) -> None:
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

    data = _load(path, tmp_path)
    schema = ServeDeploySchema.model_validate(data)
    assert not _unknown_keys(data, ServeDeploySchema)
    for raw, app in zip(data["applications"], schema.applications):
        assert isinstance(app, ServeApplicationSchema)
        assert not _unknown_keys(raw, ServeApplicationSchema), raw.keys()
        assert app.import_path == "ray.serve.llm:build_openai_app"
        for deployment in raw.get("deployments", []):
            assert not _unknown_keys(deployment, DeploymentSchema)
        for llm in raw["args"]["llm_configs"]:
            scaling = llm.get("deployment_config", {}).get("autoscaling_config")
            if scaling:
                unknown = _unknown_keys(scaling, AutoscalingConfig)
                assert not unknown, f"{path.name}: autoscaling_config has {unknown}"
    prefixes = [app.route_prefix for app in schema.applications]
    assert len(set(prefixes)) == len(prefixes) and "/" not in prefixes


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_llm_configs_parse_with_llmconfig(path: Path, tmp_path: Path) -> None:
    from ray.serve._private.config import DeploymentConfig
    from ray.serve.llm import LLMConfig, LLMServingArgs
    from vllm.engine.arg_utils import EngineArgs

    engine_fields = {f.name for f in dataclasses.fields(EngineArgs)}
    cpu = path.stem.endswith("-cpu")
    for app in _load(path, tmp_path)["applications"]:
        args = LLMServingArgs.model_validate(app["args"])  # what build_openai_app parses
        assert len(args.llm_configs) == len(app["args"]["llm_configs"]) >= 1
        for raw in app["args"]["llm_configs"]:
            config = LLMConfig.model_validate(raw)
            assert not set(config.engine_kwargs) - engine_fields, config.engine_kwargs
            DeploymentConfig(**{k: v for k, v in config.deployment_config.items()})
            env = (config.runtime_env or {}).get("env_vars", {})
            if cpu:
                assert config.accelerator_config.kind == "cpu"
                assert int(env["VLLM_CPU_KVCACHE_SPACE"]) >= 1
                assert config.model_loading_config.model_source == FAKE_MODEL
                assert "gpu_memory_utilization" not in config.engine_kwargs
            else:
                assert config.accelerator_config.kind == "gpu"
                assert 0 < config.engine_kwargs["gpu_memory_utilization"] <= 1
                assert "VLLM_CPU_KVCACHE_SPACE" not in env


def test_the_strict_checks_catch_mistakes(tmp_path: Path) -> None:
    """A misspelled key, an old Serve name and a missing placeholder value are all caught."""
    from ray.serve.config import AutoscalingConfig
    from ray.serve.llm import LLMServingArgs
    from ray.serve.schema import ServeApplicationSchema

    data = _load(LLM_CONFIGS_DIR / "autoscaling-cpu.yaml", tmp_path)
    app = dict(data["applications"][0], route_prefx="/typo")
    assert _unknown_keys(app, ServeApplicationSchema) == {"route_prefx"}
    assert _unknown_keys({"upscale_delay": 5.0}, AutoscalingConfig) == {"upscale_delay"}
    bad = {"llm_configs": [dict(app["args"]["llm_configs"][0], engine_kwarg={})]}
    with pytest.raises(Exception, match="engine_kwarg"):
        LLMServingArgs.model_validate(bad)
    with pytest.raises(WorkbookError, match="TINY_MODEL"):
        render_config(LLM_CONFIGS_DIR / "minimal-cpu.yaml", tmp_path)


def test_lesson_07a_writes_the_two_model_config(tmp_path: Path) -> None:
    """Lesson 07a's multi_app.yaml (written in its first task's cell, deployed in CI) carries
    the two applications of configs/llm/two-models-cpu.yaml unchanged."""
    import json

    from helpers.paths import NOTEBOOKS_DIR
    from helpers.solution_regions import Where, answer_code

    cells = json.loads((NOTEBOOKS_DIR / "07a_multi_app_config.ipynb").read_text())["cells"]
    source = next(
        "".join(c["source"]) for c in cells if 'config_path.write_text(f"""' in "".join(c["source"])
    )
    code = answer_code(source, Where("07a_multi_app_config.ipynb", 0))
    template = code.split('config_path.write_text(f"""\\\n', 1)[1].split('""")', 1)[0]
    written = yaml.safe_load(
        template.format(http_host="127.0.0.1", http_port=8000, model_folder=FAKE_MODEL)
    )
    two = _load(LLM_CONFIGS_DIR / "two-models-cpu.yaml", tmp_path)["applications"]
    assert [app for app in written["applications"] if app["name"] in ("app1", "app2")] == two


def test_multi_app_config_carries_the_two_model_config(tmp_path: Path) -> None:
    """configs/serve/multi_app.yaml (the six applications of lessons 07a and 07b in one file)
    carries the two applications of configs/llm/two-models-cpu.yaml unchanged, so deploying it
    deploys them."""
    from helpers.paths import CONFIGS_DIR

    two = _load(LLM_CONFIGS_DIR / "two-models-cpu.yaml", tmp_path)["applications"]
    multi = _load(CONFIGS_DIR / "serve" / "multi_app.yaml", tmp_path)["applications"]
    assert [app["name"] for app in two] == ["app1", "app2"]
    assert [app for app in multi if app["name"] in ("app1", "app2")] == two
    ids = [app["args"]["llm_configs"][0]["model_loading_config"]["model_id"] for app in two]
    assert len(set(ids)) == 2  # two models, told apart by /v1/models
    assert all(
        app["args"]["llm_configs"][0]["deployment_config"].get("autoscaling_config") for app in two
    )  # each scales on its own
