"""The streaming service's configuration: schema, clear errors, the committed default, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.errors import WorkbookError
from helpers.paths import REPO_ROOT
from helpers.streaming.config import (
    DEFAULT_CONFIG_PATH,
    BatchSettings,
    ConfigError,
    StreamingConfig,
    check_batch_settings,
    parse_config,
    read_config,
)


def test_the_committed_default_is_what_create_default_writes() -> None:
    assert DEFAULT_CONFIG_PATH == REPO_ROOT / "configs" / "streaming" / "default.json"
    assert json.loads(DEFAULT_CONFIG_PATH.read_text()) == StreamingConfig().model_dump(mode="json")
    config = read_config(DEFAULT_CONFIG_PATH)
    assert config.serving.load_balance_strategy == "least_loaded"
    assert config.serving.batch_settings() == BatchSettings()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"serving": {"max_batch_size": 0}},
            "serving.max_batch_size: input should be greater than or equal to 1 (got 0)",
        ),
        (
            {"serving": {"batch_timeout_ms": -5}},
            "serving.batch_timeout_ms: input should be greater than or equal to 0 (got -5)",
        ),
        (
            {"serving": {"load_balance_strategy": "fastest"}},
            "serving.load_balance_strategy: must be one of 'least_loaded', 'round_robin', 'by_memory'"
            ' (got "fastest")',
        ),
        (
            {"serving": {"max_batch_sise": 8}},
            "serving.max_batch_sise: unknown key; did you mean 'max_batch_size'?",
        ),
        ({"modle": {}}, "modle: unknown key; did you mean 'model'?"),
        (
            {"model": {"default_max_tokens": "many"}},
            "model.default_max_tokens: input should be a valid integer",
        ),
        (
            {"serving": {"enable_dynamic_batching": "perhaps"}},
            "serving.enable_dynamic_batching: input should be a valid boolean",
        ),
    ],
)
def test_bad_values_are_rejected_with_the_key_the_value_and_the_rule(
    data: dict, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="my.json")
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(expected), caught.value.problems
    text = str(caught.value)
    assert text.startswith("my.json has 1 problem(s)") and "create-default" in text


def test_every_problem_is_listed_at_once_and_cross_field_rules_hold() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"serving": {"max_batch_size": 0, "model_actors": 0, "port": 70000}})
    assert len(caught.value.problems) == 3
    with pytest.raises(ConfigError, match="above model.max_tokens_limit"):
        parse_config({"model": {"default_max_tokens": 300, "max_tokens_limit": 100}})
    with pytest.raises(ConfigError, match="expected a JSON object"):
        parse_config([1, 2])


def test_live_batch_changes_are_partial_and_checked() -> None:
    current = BatchSettings(max_batch_size=4, batch_timeout_ms=20)
    changed = check_batch_settings({"batch_timeout_ms": 150}, current)
    assert (changed.max_batch_size, changed.batch_timeout_ms) == (4, 150.0)
    with pytest.raises(
        ConfigError, match="max_batch_size: input should be less than or equal to 256"
    ):
        check_batch_settings({"max_batch_size": 1000}, current)
    with pytest.raises(ConfigError, match="load_balance_strategy: unknown key"):
        check_batch_settings({"load_balance_strategy": "round_robin"})


def test_reading_files_explains_missing_and_broken_ones(tmp_path: Path) -> None:
    with pytest.raises(WorkbookError, match="create-default"):
        read_config(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"serving": {"max_batch_size": 8,}}')
    with pytest.raises(ConfigError, match="not valid JSON.*line 1"):
        read_config(broken)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "helpers.streaming.config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


def test_command_line_creates_shows_and_validates(tmp_path: Path) -> None:
    path = tmp_path / "service.json"
    created = _cli("create-default", str(path))
    assert created.returncode == 0 and path.exists(), created.stderr
    assert _cli("create-default", str(path)).returncode == 1, "refuses to overwrite without --force"
    shown = _cli("show", str(path))
    assert (
        shown.returncode == 0
        and "max_batch_size" in shown.stdout
        and "least_loaded" in shown.stdout
    )
    assert _cli("validate", str(path)).returncode == 0
    data = json.loads(path.read_text())
    data["serving"]["max_batch_size"] = -1
    data["serving"]["load_balance_strategy"] = "gpu_memory"
    path.write_text(json.dumps(data))
    bad = _cli("validate", str(path))
    assert bad.returncode == 1
    assert "serving.max_batch_size" in bad.stderr and "gpu_memory" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_service_limits_are_fields_with_checked_ranges() -> None:
    serving = StreamingConfig().serving
    assert (serving.session_idle_timeout_s, serving.max_prompt_chars) == (600.0, 4096)
    assert serving.max_request_records == 1000 and serving.allowed_origins == []
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "serving": {
                    "session_idle_timeout_s": 0,
                    "max_prompt_chars": 0,
                    "max_request_records": 5,
                    "allowed_origins": ["http://localhost:8888/lab"],
                }
            }
        )
    problems = "\n".join(caught.value.problems)
    for key in (
        "session_idle_timeout_s",
        "max_prompt_chars",
        "max_request_records",
        "allowed_origins",
    ):
        assert f"serving.{key}" in problems, problems
    assert "is not an origin: write scheme://host[:port]" in problems
    ok = parse_config(
        {"serving": {"allowed_origins": ["http://localhost:8888", "https://a.example"]}}
    )
    assert ok.serving.allowed_origins == ["http://localhost:8888", "https://a.example"]


def test_show_documents_the_new_fields(tmp_path: Path) -> None:
    path = tmp_path / "service.json"
    assert _cli("create-default", str(path)).returncode == 0
    shown = _cli("show", str(path)).stdout
    for key in (
        "session_idle_timeout_s",
        "max_prompt_chars",
        "max_request_records",
        "allowed_origins",
    ):
        line = next(line for line in shown.splitlines() if line.strip().startswith(key))
        assert "#" in line and len(line.split("#", 1)[1].strip()) > 10, line


def test_environment_overrides_are_checked_like_the_file_and_shown() -> None:
    env = {
        "STREAMING__SERVING__MAX_BATCH_SIZE": "16",
        "STREAMING__SERVING__LOAD_BALANCE_STRATEGY": "round_robin",
        "STREAMING__MODEL__MODEL_SOURCE": "/models/x",
        "UNRELATED": "1",
    }
    config = read_config(DEFAULT_CONFIG_PATH, environ=env)
    assert (config.serving.max_batch_size, config.serving.load_balance_strategy) == (
        16,
        "round_robin",
    )
    assert config.model.model_source == "/models/x"  # not JSON: read as a string
    assert read_config(DEFAULT_CONFIG_PATH, environ={}).serving.max_batch_size == 8
    for bad, expected in (
        (
            {"STREAMING__SERVING__MAX_BATCH_SIZE": "0"},
            "serving.max_batch_size: input should be greater",
        ),
        ({"STREAMING__SERVING__MAX_BATCH_SISE": "4"}, "did you mean 'max_batch_size'?"),
        ({"STREAMING__SERVNG__MAX_BATCH_SIZE": "4"}, "unknown section 'servng'"),
        ({"STREAMING__MAX_BATCH_SIZE": "4"}, "name a section and a key"),
    ):
        with pytest.raises(ConfigError, match=expected.replace("?", r"\?")) as err:
            read_config(DEFAULT_CONFIG_PATH, environ=bad)
        assert "STREAMING__" in str(err.value) or "servng" in str(err.value)
    show = [sys.executable, "-m", "helpers.streaming.config", "show", str(DEFAULT_CONFIG_PATH)]
    shown = subprocess.run(
        show,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, "STREAMING__SERVING__MAX_BATCH_SIZE": "16"},
    )
    line = next(text for text in shown.stdout.splitlines() if "max_batch_size" in text)
    assert shown.returncode == 0 and "16" in line and "(environment)" in line


TWO_PAIRS = {
    "en-zh": {"source_lang": "English", "target_lang": "Chinese"},
    "en-it": {"source_lang": "English", "target_lang": "Italian", "model_source": "other"},
}


def test_models_are_placed_one_per_device_and_language_pair() -> None:
    """A device not in the map holds every pair; one in it holds the pairs it names."""
    assert StreamingConfig().model_placement() == [(0, "en-zh"), (1, "en-zh")]
    config = parse_config(
        {
            "languages": TWO_PAIRS,
            "serving": {
                "model_actors": 3,
                "device_language_map": {"0": ["en-zh", "en-it"], "2": ["en-it"]},
            },
        }
    )
    assert config.model_placement() == [
        (0, "en-zh"),
        (0, "en-it"),
        (1, "en-zh"),
        (1, "en-it"),
        (2, "en-it"),
    ]
    assert config.default_language_pair == "en-zh"
    assert (config.model_source_of("en-zh"), config.model_source_of("en-it")) == ("tiny", "other")


@pytest.mark.parametrize(
    ("serving", "expected"),
    [
        (
            {"device_language_map": {"2": ["en-zh"]}},
            "device 2 does not exist (serving.model_actors is 2",
        ),
        (
            {"device_language_map": {"0": ["en-ti"]}},
            "names the language pair 'en-ti', which languages "
            "does not define; did you mean 'en-it'?",
        ),
        (
            {"device_language_map": {"0": ["en-zh"], "1": ["en-zh"]}},
            "languages.en-it: no device serves it",
        ),
        ({"device_language_map": {"gpu0": ["en-zh"]}}, "device 'gpu0' is not a device number"),
        ({"device_language_map": {"0": []}}, "device 0 needs its language pairs, each once"),
    ],
)
def test_a_device_map_that_cannot_be_served_is_refused(serving: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"languages": TWO_PAIRS, "serving": serving})
    assert expected in str(caught.value), caught.value.problems


def test_a_misspelt_key_of_a_language_pair_gets_the_pairs_spelling() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "languages": {
                    "en-it": {
                        "source_lang": "English",
                        "target_lang": "Italian",
                        "model_sorce": "other",
                    }
                }
            }
        )
    assert caught.value.problems == [
        "languages.en-it.model_sorce: unknown key; did you mean 'model_source'?"
    ]
