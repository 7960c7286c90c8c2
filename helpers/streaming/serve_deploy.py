"""Config entries for the Serve version of lesson 12's service (harness around the lesson's code).

The deployments themselves (``TokenGenerator``, ``StreamingIngress``, ``build_app``) are
written in notebooks/12_streaming_sessions.ipynb; their package copy is
:mod:`helpers.streaming.serve_app`. This module holds what a deploy needs around them:

* :class:`AppArgs` - the application's ``args`` (checked in ``build_app`` and the ingress);
* :func:`app_config` - one application entry of a Serve config, with a new API token;
  :func:`app_token` reads it back;
* :func:`deploy_apps` - deploy entries *beside* the applications already deployed from a
  config (a config deploy replaces the whole set); :func:`deployed_configs` reads them;
* :func:`set_generator_settings` - change ``TokenGenerator``'s ``user_config`` as
  ``serve deploy`` would (an operator's action: it deploys the cluster's whole config).

Usage::

    entry = app_config("stream", "/stream", model_source=path)
    deploy_apps(cluster, [entry])
    StreamingClient(url, app_token(entry))

Introduced in notebooks/12_streaming_sessions.ipynb.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from helpers.streaming.api import new_token
from helpers.streaming.config import BatchSettings, check_origin
from helpers.waiting import wait_for

if TYPE_CHECKING:  # pragma: no cover
    from helpers.cluster import ClusterHandle

__all__ = [
    "GENERATOR",
    "INGRESS",
    "IMPORT_PATH",
    "AppArgs",
    "app_config",
    "app_token",
    "deployed_configs",
    "deploy_apps",
    "set_generator_settings",
]

GENERATOR = "TokenGenerator"
INGRESS = "StreamingIngress"
IMPORT_PATH = "helpers.streaming.serve_app:build_app"


class AppArgs(BaseModel):
    """The application's arguments (the ``args`` of its config entry)."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["batch", "llm"] = "batch"
    model_source: str = "tiny"
    torch_threads: int = Field(1, ge=1)
    generator_replicas: int = Field(1, ge=1)
    generator_num_cpus: float = Field(1.0, ge=0)
    default_max_tokens: int = Field(32, ge=1)
    max_tokens_limit: int = Field(256, ge=1)
    max_sessions: int = Field(64, ge=1)
    session_idle_timeout_s: float = Field(600.0, ge=1.0)
    max_prompt_chars: int = Field(4096, ge=1)
    allowed_origins: list[str] = Field(default_factory=list)
    api_token: str = Field(min_length=16)  # app_config makes one unless given
    llm_config: dict[str, Any] | None = None  # engine "llm": an LLMConfig as a dict

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_origins(cls, origins: list[str]) -> list[str]:
        return [check_origin(origin) for origin in origins]


def app_config(
    name: str,
    route_prefix: str,
    *,
    settings: BatchSettings | None = None,
    import_path: str = IMPORT_PATH,
    **args: Any,
) -> dict[str, Any]:
    """One application entry of a Serve config for ``build_app`` (``args``: :class:`AppArgs`).

    Unless ``api_token`` is given, a new one is made: read it back from
    ``entry["args"]["api_token"]`` (:func:`app_token`) to call the application.
    """
    checked = AppArgs(**{"api_token": new_token(), **args})
    entry: dict[str, Any] = {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": import_path,
        "args": checked.model_dump(exclude_defaults=True),
    }
    if checked.engine == "batch":
        entry["deployments"] = [
            {"name": GENERATOR, "user_config": (settings or BatchSettings()).model_dump()}
        ]
    return entry


def app_token(entry: Mapping[str, Any]) -> str:
    """The API token of an application entry made by :func:`app_config`."""
    return entry["args"]["api_token"]


def deployed_configs(cluster: ClusterHandle) -> list[dict[str, Any]]:
    """The applications deployed from a config, as Serve holds them (their config entries)."""
    from helpers.serve_status import serve_details

    apps = serve_details(cluster).get("applications") or {}
    return [a["deployed_app_config"] for a in apps.values() if a.get("deployed_app_config")]


def deploy_apps(cluster: ClusterHandle, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Deploy config ``entries`` (:func:`app_config`) *beside* the applications already deployed
    from a config: a config deploy replaces the whole set, so the others are sent back as Serve
    holds them (unchanged, so untouched). Returns the config deployed."""
    from helpers.serve_cli import deploy_config

    applications = {a["name"]: a for a in deployed_configs(cluster)}
    applications.update({e["name"]: e for e in entries})
    config = {"applications": list(applications.values())}
    deploy_config(cluster, config)
    return config


def set_generator_settings(
    cluster: ClusterHandle,
    app: str,
    settings: BatchSettings,
    *,
    wait: bool = True,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Give application ``app``'s generator a new ``user_config``, as ``serve deploy`` would.

    The config Serve holds (every application deployed from a config, as deployed) is read
    back, ``user_config`` of ``TokenGenerator`` is replaced, and the whole config is deployed
    again: Serve sees that only ``user_config`` changed and calls ``reconfigure`` on the
    running replicas. With ``wait``, returns once Serve reports the deployment HEALTHY with
    the new ``user_config``. Returns the config deployed.
    """
    from helpers.errors import ServeTimeoutError
    from helpers.serve_cli import deploy_config, with_deployment_options
    from helpers.serve_status import serve_details

    config = with_deployment_options(
        {"applications": deployed_configs(cluster)},
        app,
        GENERATOR,
        user_config=settings.model_dump(),
    )
    deploy_config(cluster, config)
    last = ""

    def reconfigured() -> bool:
        nonlocal last
        details = (serve_details(cluster).get("applications") or {}).get(app) or {}
        generator = (details.get("deployments") or {}).get(GENERATOR) or {}
        target = (generator.get("deployment_config") or {}).get("user_config")
        last = f"{details.get('status')}, {GENERATOR} {generator.get('status')}"
        return (
            target == settings.model_dump()
            and generator.get("status") == "HEALTHY"
            and details.get("status") == "RUNNING"
        )

    if wait:
        wait_for(
            reconfigured,
            timeout_s=timeout_s,
            poll_s=0.2,
            what=f"{app}'s {GENERATOR} reconfigured",
            on_timeout=lambda waited: ServeTimeoutError(app, timeout_s, last),
        )
    return config
