"""Generated files are valid and in sync with their sources; config checks and advice work.

* configs/serve/workbook_apps.yaml is what `serve build` (plus naming the apps) writes today,
  and a valid config for the installed Serve (ServeDeploySchema, no ignored keys).
* configs/kuberay/rayservice.yaml embeds exactly that config (spec.serveConfigV2) and is what
  helpers.kuberay generates from it.
* images/serve_architecture.png, cluster_processes.png and serve_request_path.png are what
  images/make_diagrams.py draws.
* check_config_fields / validate_serve_config find typos that Serve itself ignores, and
  explain_serve_error turns real errors from Serve into the right advice.

No cluster is needed: `serve build` imports the apps locally, and the "no cluster" case is a
real `serve deploy` against an address where nothing listens.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from helpers.kuberay import (
    embedded_serve_config,
    load_manifest,
    rayservice_manifest,
    write_manifest,
)
from helpers.paths import CONFIGS_DIR, IMAGES_DIR
from helpers.ports import free_port
from helpers.serve_cli import (
    SERVE_ERRORS,
    ServeConfigError,
    check_config_fields,
    config_diff,
    explain_serve_error,
    load_config,
    local_run_config,
    serve_build,
    validate_serve_config,
    with_deployment_options,
    with_import_path,
    write_config,
)

BUILT = CONFIGS_DIR / "serve" / "workbook_apps.yaml"
MANIFEST = CONFIGS_DIR / "kuberay" / "rayservice.yaml"
BUILD_ARGS = (
    ["helpers.apps.classifier:app", "helpers.apps.configurable:app"],
    {"app1": "classifier", "app2": "configurable"},
)


def test_built_config_is_valid_for_the_installed_serve() -> None:
    schema = validate_serve_config(BUILT)
    assert isinstance(schema, ServeDeploySchema)
    assert [a.name for a in schema.applications] == ["classifier", "configurable"]
    assert check_config_fields(BUILT) == []


def test_built_config_is_in_sync_with_serve_build(tmp_path: Path) -> None:
    paths, names = BUILD_ARGS
    rebuilt = serve_build(paths, tmp_path / "built.yaml", names=names, cwd=tmp_path)
    assert rebuilt == load_config(BUILT), "run notebook 03 (section 4) to regenerate the config"


def test_kuberay_manifest_embeds_the_built_config(tmp_path: Path) -> None:
    manifest = load_manifest(MANIFEST)
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    assert isinstance(manifest["spec"]["serveConfigV2"], str)  # KubeRay wants a string
    assert embedded_serve_config(manifest) == load_config(BUILT)
    ServeDeploySchema.model_validate(embedded_serve_config(manifest))
    cluster_spec = manifest["spec"]["rayClusterConfig"]
    assert cluster_spec["rayVersion"] == __import__("ray").__version__
    assert cluster_spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    # and the committed file is what the generator makes today
    regenerated = write_manifest(rayservice_manifest(BUILT.read_text()), tmp_path / "rs.yaml")
    assert regenerated.read_text() == MANIFEST.read_text()


def test_manifest_generator_rejects_non_serve_text() -> None:
    with pytest.raises(ValueError):
        rayservice_manifest("just: a mapping\n")


def test_architecture_diagram_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(IMAGES_DIR / "make_diagrams.py"), str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    drawn = sorted(p.name for p in tmp_path.glob("*.png"))
    assert "serve_deploy_changes.png" in drawn and "cluster_processes.png" in drawn, drawn
    committed = sorted(p.name for p in IMAGES_DIR.glob("*.png"))
    assert committed == drawn, "images/ holds a PNG the script no longer draws, or misses one"
    for name in drawn:
        assert (tmp_path / name).read_bytes() == (IMAGES_DIR / name).read_bytes(), name


def test_deploy_figure_classifies_options_as_the_installed_ray_does() -> None:
    """The figure of what `serve deploy` restarts names options by how Ray updates them."""
    from ray.serve._private.config import DeploymentConfig
    from ray.serve._private.utils import DeploymentOptionUpdateType as Kind

    sys.path.insert(0, str(IMAGES_DIR))
    try:
        import make_diagrams
    finally:
        sys.path.remove(str(IMAGES_DIR))
    by_kind: dict = {}
    for name, field in DeploymentConfig.model_fields.items():
        kind = (field.json_schema_extra or {}).get("update_type")
        by_kind.setdefault(kind, set()).add(name)
    drawn = make_diagrams.UPDATE_KINDS
    assert set(drawn["state only"]) == by_kind[Kind.LightWeight]
    assert set(drawn["replica reconfigured"]) == by_kind[Kind.NeedsActorReconfigure]
    assert set(drawn["controller's record"]) == by_kind[Kind.NeedsReconfigure]
    # the figure's "a few at a time (rolling_update_percentage, 20 %)"
    assert DeploymentConfig.model_fields["rolling_update_percentage"].default == 0.2


def test_config_edits_change_only_what_they_say() -> None:
    built = load_config(BUILT)
    local = local_run_config(built, port=23456)
    assert local["http_options"] == {"host": "127.0.0.1", "port": 23456}
    assert {k: v for k, v in local.items() if k != "http_options"} == {
        k: v for k, v in built.items() if k != "http_options"
    }
    scaled = with_deployment_options(
        built, "configurable", "ConfigurableClassifier", num_replicas=3
    )
    assert scaled["applications"][1]["deployments"][0]["num_replicas"] == 3
    assert built["applications"][1]["deployments"][0]["num_replicas"] == 2  # a copy was changed
    v2 = with_import_path(built, "configurable", "helpers.apps.configurable:app_v2")
    diff = config_diff(built, v2)
    assert "-  import_path: helpers.apps.configurable:app" in diff
    assert "+  import_path: helpers.apps.configurable:app_v2" in diff
    with pytest.raises(ServeConfigError):
        with_import_path(built, "no_such_app", "x:y")


def test_typos_that_serve_ignores_are_found(tmp_path: Path) -> None:
    built = load_config(BUILT)
    typo = copy.deepcopy(built)
    dep = typo["applications"][1]["deployments"][0]
    dep["num_replica"] = dep.pop("num_replicas")
    dep["max_concurrent_queries"] = 4
    dep["ray_actor_options"]["num_cpu"] = dep["ray_actor_options"].pop("num_cpus")
    typo["http_option"] = typo.pop("http_options")
    # Serve's own schema accepts all of that, silently dropping the keys...
    parsed = ServeDeploySchema.model_validate(typo).model_dump(exclude_unset=True)
    sent = parsed["applications"][1]["deployments"][0]  # what `serve deploy` would send
    assert not {"num_replica", "num_replicas", "max_concurrent_queries"} & set(sent)
    assert sent["ray_actor_options"] == {} and "http_options" not in parsed
    # ...the workbook's check names each one and the key that was meant
    problems = {(p.key, p.suggestion) for p in check_config_fields(typo)}
    assert problems == {
        ("num_replica", "num_replicas"),
        ("max_concurrent_queries", "max_ongoing_requests"),
        ("num_cpu", "num_cpus"),
        ("http_option", "http_options"),
    }
    path = write_config(typo, tmp_path / "typo.yaml")
    with pytest.raises(ServeConfigError) as info:
        validate_serve_config(path)
    assert "num_replica" in info.value.details and "4 key(s)" in info.value.problem


def test_advice_for_real_schema_errors() -> None:
    missing = {"applications": [{"name": "a", "import_pth": "helpers.apps.classifier:app"}]}
    with pytest.raises(ValidationError) as err:
        ServeDeploySchema.model_validate(missing)
    advice = explain_serve_error(str(err.value))
    assert advice.kind == "missing-field" and "applications.0.import_path" in advice.serve_said
    with pytest.raises(ServeConfigError):
        validate_serve_config(missing)

    bad_value = {
        "applications": [
            {
                "name": "a",
                "import_path": "x:y",
                "deployments": [{"name": "D", "num_replicas": "two"}],
            }
        ]
    }
    with pytest.raises(ValidationError) as err:
        ServeDeploySchema.model_validate(bad_value)
    assert explain_serve_error(str(err.value)).kind == "invalid-value"


def test_advice_for_a_real_import_error() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import helpers.apps.clasifier"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    advice = explain_serve_error(result.stderr)
    assert advice.kind == "import-path-module" and "helpers.apps.clasifier" in advice.meaning


def test_serve_deploy_without_a_cluster_is_explained(tmp_path: Path) -> None:
    from helpers.cluster import ray_executable

    nowhere = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [ray_executable("serve"), "deploy", str(BUILT), "-a", nowhere],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    advice = explain_serve_error(result.stdout + result.stderr)
    assert advice.kind == "no-cluster" and nowhere in advice.meaning


def test_serve_delete_is_explained() -> None:
    from click.testing import CliRunner
    from ray.serve.scripts import cli

    result = CliRunner().invoke(cli, ["delete", "some-app"])
    assert result.exit_code != 0
    advice = explain_serve_error(result.output)
    assert advice.kind == "no-such-command" and "deploy" in advice.fix


def test_written_config_keeps_a_header_and_round_trips(tmp_path: Path) -> None:
    built = load_config(BUILT)
    path = write_config(built, tmp_path / "c.yaml", header="line one\nline two")
    text = path.read_text()
    assert text.startswith("# line one\n# line two\n")
    assert yaml.safe_load(text) == built


def test_a_port_number_is_not_mistaken_for_an_http_status() -> None:
    # A refused connection to a port whose digits contain 401 is still "no cluster".
    text = (
        "ConnectionError: Failed to connect to Ray at address: http://127.0.0.1:24015.\n"
        "Connection refused"
    )
    assert explain_serve_error(text).kind == "no-cluster"
    assert explain_serve_error("HTTP status code: 401 Unauthenticated").kind == "auth"


def test_serve_run_from_a_typed_command_line() -> None:
    """A `serve run` line as typed in a terminal becomes the background ServeRun's argv (quotes
    keep a JSON argument whole); anything else is refused with what to write instead."""
    from types import SimpleNamespace

    from helpers.errors import WorkbookError
    from helpers.serve_cli import ServeRun

    cluster = SimpleNamespace(address="127.0.0.1:6379")
    run = ServeRun.from_command(
        "serve run greeter:app --working-dir . --runtime-env-json "
        '\'{"env_vars": {"GREETING": "Bonjour"}}\' --name greeter',
        cluster,
    )
    assert run.target == "greeter:app" and run.argv[1:5] == [
        "run",
        "greeter:app",
        "--address",
        "127.0.0.1:6379",
    ]
    assert run.argv[5:] == [
        "--working-dir",
        ".",
        "--runtime-env-json",
        '{"env_vars": {"GREETING": "Bonjour"}}',
        "--name",
        "greeter",
    ]
    assert run.proc is None  # nothing started yet
    for bad, phrase in [
        ("", "not a `serve run`"),
        ("serve deploy app.yaml", "not a `serve run`"),
        ("serve run --name x", "not a `serve run`"),
        ("serve run app:app --address 1.2.3.4:6379", "its own --address"),
        ("serve run app:app --name 'x", "close every quote"),
    ]:
        with pytest.raises(WorkbookError) as err:
            ServeRun.from_command(bad, cluster)
        assert phrase in str(err.value) + err.value.fix, (bad, str(err.value))


def test_every_rule_of_the_error_table_is_reachable() -> None:
    """Each kind in SERVE_ERRORS is what a typical message of that kind gets (a rule shadowed
    by an earlier, broader one would never be told), and the names found reach the advice."""
    samples = {
        "missing-field": "1 validation error\napplications.0.import_path\n  Field required",
        "unknown-field": "logging_config.levl\n  Extra inputs are not permitted",
        "invalid-value": "1 validation error for ServeDeploySchema\n  Value error, not a port",
        "import-path-module": "ModuleNotFoundError: No module named 'helpers.apps.configurabel'",
        "import-path-attribute": "AttributeError: module 'helpers.apps' has no attribute 'ap'",
        "no-such-command": "Error: No such command 'delete'.",
        "auth": "ray.exceptions.AuthenticationError: InvalidAuthToken",
        "no-cluster": "ConnectionError: Failed to connect to Ray at address: http://127.0.0.1:9",
        "deploy-failed": "DEPLOY_FAILED: RuntimeError: the model folder is missing",
    }
    assert set(samples) == {rule.kind for rule in SERVE_ERRORS}
    for kind, text in samples.items():
        assert explain_serve_error(text).kind == kind, text
    assert "import_path" in explain_serve_error(samples["missing-field"]).meaning
    assert (
        "'helpers.apps.configurabel'" in explain_serve_error(samples["import-path-module"]).meaning
    )
    assert "serve.delete" in explain_serve_error(samples["no-such-command"]).fix
    assert "http://127.0.0.1:9" in explain_serve_error(samples["no-cluster"]).meaning
    assert explain_serve_error("something else entirely").kind == "unknown"
