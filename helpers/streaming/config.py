"""The streaming service's configuration: a validated schema, a JSON file, and a command line.

One JSON file describes the service (as such services keep theirs, for a text
model instead of speech translation). Four sections:

* ``ray_cluster`` - where to run: ``ray_address`` (empty: a local cluster), logical CPUs and
  GPUs of a local head node, the dashboard's host and port;
* ``model`` - which model (``"tiny"``: the workbook's local model; a folder; a hub id), how
  many tokens an answer gets by default and at most, torch threads per engine;
* ``languages`` - the language pairs the service serves (``"en-zh"``: English to Chinese),
  each with its model (here every pair runs the tiny model unless it names another);
* ``serving`` - the HTTP host and port, how many devices (logical: each a placement-group
  bundle) and which language pairs each holds (``device_language_map``: one model actor per
  device and pair, as such services map GPUs to language pairs), CPUs per model actor, the
  dynamic batching (``max_batch_size``, ``batch_timeout_ms``, ``enable_dynamic_batching``),
  the load-balancing strategy, how often streamed text is flushed, and the limits that keep a
  long-running service bounded: ``max_sessions``, ``session_idle_timeout_s`` (a session with
  no request for that long is closed), ``max_prompt_chars``, ``max_request_records`` (how many
  finished requests and batches the scheduler keeps for its logs), and ``allowed_origins``
  (web pages besides the service's own that may open its WebSocket).

The API token is not part of the file: a secret does not belong in a configuration that is
shown and committed. Each start of the service generates one unless one is given (see
:mod:`helpers.streaming.api`).

Every value is checked when the file is read: a typo in a key, a batch size of 0 or an
unknown strategy is a :class:`ConfigError` that names the key, the value and the allowed
range, with the closest valid spelling for a misspelt key. :class:`BatchSettings` is the part
that can change while the service runs (the ``/ray/configure`` endpoint).

**Environment overrides.** A variable ``STREAMING__SECTION__KEY`` overrides one key of the
file (``STREAMING__SERVING__MAX_BATCH_SIZE=16``), as a deployment sets a setting without
editing the file. The value is read as JSON when it parses (``16``, ``true``, ``["a"]``),
else as a string; the file with its overrides is then checked as a whole, like the file
alone, and a variable naming an unknown section or key is an error with the closest
spelling. ``show`` and ``validate`` print which keys came from the environment.

Command line (create-default, show and validate, the usual three)::

    python -m helpers.streaming.config create-default build/streaming/config.json
    python -m helpers.streaming.config show build/streaming/config.json
    python -m helpers.streaming.config validate build/streaming/config.json   # exit 1 if bad

Usage::

    from helpers.streaming.config import read_config, StreamingConfig
    config = read_config("configs/streaming/default.json")
    config.serving.max_batch_size                      # 8

Introduced in notebooks/12_streaming_sessions.ipynb.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from helpers.errors import WorkbookError, closest

__all__ = [
    "STRATEGIES",
    "DEFAULT_CONFIG_PATH",
    "ConfigError",
    "RayClusterSection",
    "ModelSection",
    "ServingSection",
    "LanguagePair",
    "StreamingConfig",
    "BatchSettings",
    "parse_config",
    "read_config",
    "write_default_config",
    "check_batch_settings",
    "check_origin",
    "env_overrides",
    "main",
]

STRATEGIES = ("least_loaded", "round_robin", "by_memory")
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "streaming" / "default.json"
_FIX = (
    "correct the values listed above; `python -m helpers.streaming.config create-default "
    "PATH` writes a valid file to start from."
)


def check_origin(origin: str) -> str:
    """``origin`` if it is a web origin (``scheme://host[:port]``, nothing after), else ValueError."""
    from urllib.parse import urlsplit

    parts = urlsplit(origin)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or origin != f"{parts.scheme}://{parts.netloc}"
    ):
        raise ValueError(
            f"{origin!r} is not an origin: write scheme://host[:port], e.g. "
            "'http://localhost:8888', with no path or trailing slash"
        )
    return origin


class ConfigError(WorkbookError):
    """A streaming configuration with values the service cannot run with."""

    def __init__(self, problems: Sequence[str], *, source: str = "the configuration") -> None:
        self.problems = list(problems)
        super().__init__(
            f"{source} has {len(self.problems)} problem(s):\n"
            + "\n".join(f"  - {p}" for p in self.problems),
            _FIX,
        )


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RayClusterSection(_Section):
    """Where the service runs."""

    ray_address: str = Field("", description="empty: start a local cluster; or host:port")
    num_cpus: int | None = Field(None, ge=1, description="logical CPUs of a local head node")
    num_gpus: int | None = Field(None, ge=0, description="logical GPUs of a local head node")
    dashboard_host: str = Field("127.0.0.1", description="keep private: the Jobs API runs code")
    dashboard_port: int | None = Field(None, ge=1024, le=65535, description="None: a free port")


class ModelSection(_Section):
    """The model every engine runs."""

    model_source: str = Field("tiny", min_length=1, description="'tiny', a folder or a hub id")
    default_max_tokens: int = Field(32, ge=1, le=1024, description="new tokens per answer")
    max_tokens_limit: int = Field(256, ge=1, le=4096, description="most a client may ask for")
    torch_threads: int = Field(1, ge=1, le=64, description="torch threads per engine")


class BatchSettings(_Section):
    """The batching knobs, the part of the configuration that may change while serving."""

    max_batch_size: int = Field(8, ge=1, le=256, description="requests per model call, at most")
    batch_timeout_ms: float = Field(
        50.0, ge=0.0, le=10_000.0, description="longest wait for a batch to fill, ms"
    )
    enable_dynamic_batching: bool = Field(True, description="False: every request alone, at once")


class ServingSection(BatchSettings):
    """The service: HTTP, model actors, batching, balancing, streaming."""

    host: str = Field("127.0.0.1", description="HTTP host (0.0.0.0 exposes it to the network)")
    port: int = Field(0, ge=0, le=65535, description="HTTP port; 0: a free port")
    model_actors: int = Field(
        2, ge=1, le=64, description="devices (logical), each a model actor per pair it holds"
    )
    model_actor_num_cpus: float = Field(1.0, ge=0.0, le=64.0, description="CPUs per model actor")
    model_actor_num_gpus: float = Field(0.0, ge=0.0, le=8.0, description="GPUs per model actor")
    device_language_map: dict[str, list[str]] = Field(
        default_factory=dict, description="device -> its language pairs; unlisted: every pair"
    )
    load_balance_strategy: Literal["least_loaded", "round_robin", "by_memory"] = Field(
        "least_loaded", description="how the scheduler picks a model actor for a batch"
    )
    stream_interval_ms: float = Field(
        10.0, ge=0.0, le=1000.0, description="text is sent at most this often, ms"
    )
    max_sessions: int = Field(64, ge=1, le=10_000, description="open sessions, at most")
    session_idle_timeout_s: float = Field(
        600.0, ge=1.0, le=86_400.0, description="a session with no request this long is closed, s"
    )
    max_prompt_chars: int = Field(
        4096, ge=1, le=1_000_000, description="longest prompt accepted, characters"
    )
    max_request_records: int = Field(
        1000, ge=10, le=1_000_000, description="finished requests/batches kept for the logs"
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="other pages (scheme://host:port) that may open the WebSocket",
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_origins(cls, origins: list[str]) -> list[str]:
        return [check_origin(origin) for origin in origins]

    @field_validator("device_language_map")
    @classmethod
    def _devices_are_numbers(cls, mapping: dict[str, list[str]]) -> dict[str, list[str]]:
        for device, pairs in mapping.items():
            if not device.isdigit():
                raise ValueError(f'device {device!r} is not a device number: write "0", "1", ...')
            if not pairs or len(set(pairs)) != len(pairs):
                raise ValueError(
                    f"device {device} needs its language pairs, each once (got {pairs})"
                )
        return mapping

    def batch_settings(self) -> BatchSettings:
        """The live-changeable part of this section."""
        return BatchSettings(**{k: getattr(self, k) for k in BatchSettings.model_fields})


class LanguagePair(_Section):
    """One language pair the service serves, and the model that serves it."""

    source_lang: str = Field(min_length=1, description="the language of the input")
    target_lang: str = Field(min_length=1, description="the language of the output")
    model_source: str | None = Field(
        None, min_length=1, description="its model; None: model.model_source"
    )


def _default_languages() -> dict[str, LanguagePair]:
    return {"en-zh": LanguagePair(source_lang="English", target_lang="Chinese")}


class StreamingConfig(_Section):
    """The whole file."""

    ray_cluster: RayClusterSection = Field(default_factory=RayClusterSection)
    model: ModelSection = Field(default_factory=ModelSection)
    languages: dict[str, LanguagePair] = Field(default_factory=_default_languages, min_length=1)
    serving: ServingSection = Field(default_factory=ServingSection)

    @property
    def default_language_pair(self) -> str:
        """The pair of a session that names none: the first in ``languages``."""
        return next(iter(self.languages))

    def device_pairs(self, device: int) -> list[str]:
        """The language pairs whose models ``device`` holds (one model actor each)."""
        return list(self.serving.device_language_map.get(str(device), self.languages))

    def model_placement(self) -> list[tuple[int, str]]:
        """``(device, language pair)`` of every model actor, devices in order."""
        return [
            (device, pair)
            for device in range(self.serving.model_actors)
            for pair in self.device_pairs(device)
        ]

    def model_source_of(self, pair: str) -> str:
        """The model that serves ``pair``."""
        return self.languages[pair].model_source or self.model.model_source

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"


def _model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    """The schema class that holds the field at ``loc`` (for suggesting a key's spelling)."""
    current: type[BaseModel] = model
    parts = list(loc)
    while parts:
        field = current.model_fields.get(str(parts.pop(0)))
        annotation = getattr(field, "annotation", None)
        if typing.get_origin(annotation) is dict and parts:  # languages: {name: LanguagePair}
            annotation = typing.get_args(annotation)[1]
            parts.pop(0)  # the entry's name
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return current
        current = annotation
    return current


def _describe(model: type[BaseModel], error: Mapping[str, Any]) -> str:
    loc = [str(p) for p in error.get("loc", ())]
    where = ".".join(loc) or "(top level)"
    kind = error.get("type", "")
    value = error.get("input")
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        known = sorted(owner.model_fields) if owner else []
        close = closest(loc[-1], known)
        hint = f"; did you mean {close!r}?" if close else f"; known keys: {', '.join(known)}"
        return f"{where}: unknown key{hint}"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "literal_error":
        message = "must be one of " + ", ".join(repr(s) for s in STRATEGIES)
    shown = json.dumps(value) if isinstance(value, (int, float, str, bool, type(None))) else "..."
    return f"{where}: {message[:1].lower() + message[1:]} (got {shown})"


def _validate(model: type[BaseModel], data: Any, source: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError([f"expected a JSON object, got {type(data).__name__}"], source=source)
    try:
        return model.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError([_describe(model, e) for e in err.errors()], source=source) from None


def _placement_problems(config: StreamingConfig) -> list[str]:
    """What is wrong with the devices' language pairs (each pair must have a device)."""
    problems = []
    mapping, devices = config.serving.device_language_map, config.serving.model_actors
    for device, pairs in mapping.items():
        if int(device) >= devices:
            problems.append(
                f"serving.device_language_map: device {device} does not exist "
                f"(serving.model_actors is {devices}: devices 0 to {devices - 1})"
            )
        for pair in pairs:
            if pair not in config.languages:
                close = closest(pair, config.languages)
                problems.append(
                    f"serving.device_language_map: device {device} names the language "
                    f"pair {pair!r}, which languages does not define"
                    + (f"; did you mean {close!r}?" if close else "")
                )
    if not problems:
        served = {pair for _, pair in config.model_placement()}
        problems += [
            f"languages.{pair}: no device serves it (add it to a device in "
            "serving.device_language_map, or leave a device out of the map)"
            for pair in config.languages
            if pair not in served
        ]
    return problems


def parse_config(data: Any, *, source: str = "the configuration") -> StreamingConfig:
    """A :class:`StreamingConfig` from a mapping; :class:`ConfigError` lists every problem."""
    config = _validate(StreamingConfig, data, source)
    problems = _placement_problems(config)
    if config.model.default_max_tokens > config.model.max_tokens_limit:
        problems.append(
            f"model.default_max_tokens ({config.model.default_max_tokens}) "
            f"is above model.max_tokens_limit ({config.model.max_tokens_limit})"
        )
    if problems:
        raise ConfigError(problems, source=source)
    return config


ENV_PREFIX = "STREAMING__"


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The overrides in ``environ`` (default: ``os.environ``) as ``{"section.key": value}``."""
    import os

    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    problems = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2 or not all(parts):
            problems.append(
                f"{name}: name a section and a key, e.g. {ENV_PREFIX}SERVING__MAX_BATCH_SIZE"
            )
            continue
        section, key = parts
        if section not in StreamingConfig.model_fields:
            close = closest(section, StreamingConfig.model_fields)
            problems.append(
                f"{name}: unknown section {section!r}"
                + (f"; did you mean {close.upper()!r}?" if close else "")
            )
            continue
        raw = environ[name]
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        found[f"{section}.{key}"] = value
    if problems:
        raise ConfigError(problems, source="the environment")
    return found


def _with_overrides(data: Any, overrides: Mapping[str, Any]) -> Any:
    if not overrides or not isinstance(data, Mapping):
        return data
    merged = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        if not isinstance(merged.get(section, {}), Mapping):
            continue  # the file's own error (a section that is not an object) is reported
        merged.setdefault(section, {})[key] = value
    return merged


def read_config(
    path: str | Path = DEFAULT_CONFIG_PATH, *, environ: Mapping[str, str] | None = None
) -> StreamingConfig:
    """Read and check a JSON configuration file, with the environment's overrides applied
    (``environ``: default ``os.environ``; ``{}`` reads the file alone). The keys overridden
    read are listed by :func:`env_overrides`."""
    path = Path(path)
    if not path.exists():
        raise WorkbookError(
            f"No configuration file at {path}.",
            f"create one with `python -m helpers.streaming.config create-default {path}`.",
        )
    if path.is_dir():
        raise WorkbookError(
            f"{path} is a folder, not a configuration file.",
            f"give the JSON file in it, e.g. {path / 'config.json'}.",
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            [
                f"not UTF-8 text (byte {err.start} is {err.object[err.start]:#04x}): "
                "save the file as UTF-8 JSON"
            ],
            source=str(path),
        ) from None
    except OSError as err:
        raise WorkbookError(
            f"Could not read {path}: {err.strerror}.",
            "check the file's permissions, or give another path.",
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            [f"not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"],
            source=str(path),
        ) from None
    overrides = env_overrides(environ)
    source = (
        f"{path} with {', '.join(ENV_PREFIX + k.replace('.', '__').upper() for k in overrides)}"
        if overrides
        else str(path)
    )
    return parse_config(_with_overrides(data, overrides), source=source)


def check_batch_settings(changes: Any, current: BatchSettings | None = None) -> BatchSettings:
    """``current`` with ``changes`` applied (a partial mapping), checked like the file is."""
    if not isinstance(changes, Mapping):
        raise ConfigError(
            [f"expected a JSON object, got {type(changes).__name__}"], source="the batch settings"
        )
    base = (current or BatchSettings()).model_dump()
    return _validate(BatchSettings, {**base, **dict(changes)}, "the batch settings")


def write_default_config(path: str | Path, *, force: bool = False) -> Path:
    """Write the default configuration to ``path`` (refusing to overwrite unless ``force``)."""
    path = Path(path)
    if path.is_dir():
        raise WorkbookError(
            f"{path} is a folder; the configuration is a file.",
            f"give a file name, e.g. {path / 'config.json'}.",
        )
    if path.exists() and not force:
        raise WorkbookError(
            f"{path} exists already.", "pass --force to overwrite it, or choose another path."
        )
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise WorkbookError(
            f"Could not write {path}: {blocker} is a file, not a folder.",
            "give a path in a folder, e.g. build/streaming/config.json.",
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(StreamingConfig().to_json())
    except OSError as err:
        raise WorkbookError(
            f"Could not write {path}: {err.strerror}.",
            "give a path in a folder you can write to, e.g. build/streaming/config.json.",
        ) from None
    return path


def _show(config: StreamingConfig, overridden: frozenset[str] | set[str] = frozenset()) -> str:
    """The effective configuration, one key a line; keys set by the environment marked."""
    lines = []
    for section_name in StreamingConfig.model_fields:
        section = getattr(config, section_name)
        lines.append(f"[{section_name}]")
        if isinstance(section, dict):  # languages: one line per pair
            for name, pair in section.items():
                value = json.dumps(pair.model_dump(exclude_none=True))
                mark = " (environment)" if f"{section_name}.{name}" in overridden else ""
                lines.append(f"  {name:<24} {value}{mark}")
            continue
        for name, field in type(section).model_fields.items():
            value = json.dumps(getattr(section, name))
            mark = " (environment)" if f"{section_name}.{name}" in overridden else ""
            lines.append(f"  {name:<24} {value:<14} # {field.description}{mark}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``create-default PATH``, ``show PATH``, ``validate PATH``."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers.streaming.config",
        description="Create, show and validate the streaming service's JSON configuration.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-default", help="write the default configuration")
    create.add_argument("path", type=Path)
    create.add_argument("--force", action="store_true", help="overwrite an existing file")
    for name, text in (
        ("show", "print every setting with its meaning"),
        ("validate", "check a file; exit code 1 if it has problems"),
    ):
        sub.add_parser(name, help=text).add_argument("path", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "create-default":
            print(f"wrote {write_default_config(args.path, force=args.force)}")
        elif args.command == "show":
            overrides = env_overrides()
            print(_show(read_config(args.path), overridden=set(overrides)))
        else:
            overrides = env_overrides()
            config = read_config(args.path)
            if overrides:
                given = ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())
                print("from the environment: " + given)
            serving = config.serving
            placement = ", ".join(
                f"{pair} on device {device}" for device, pair in config.model_placement()
            )
            print(
                f"{args.path} is valid: {len(config.model_placement())} model actor(s) on "
                f"{serving.model_actors} device(s) ({placement}), batches of up "
                f"to {serving.max_batch_size} within {serving.batch_timeout_ms:g} ms, "
                f"{serving.load_balance_strategy}"
            )
    except WorkbookError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
