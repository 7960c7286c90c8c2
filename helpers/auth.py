"""Ray's token authentication, made explicit.

Since Ray 2.59 a local cluster can require a token on every RPC and dashboard request. A
cluster started by the workbook always runs with ``RAY_AUTH_MODE=token`` and its own token
file; any client (``ray status``, ``serve deploy``, ``ray job submit``, ``ray.init``) must
present the same token, which it finds through two environment variables:

* ``RAY_AUTH_MODE=token`` - the client should send a token at all;
* ``RAY_AUTH_TOKEN_PATH=/path/to/token`` - where to read it (default ``~/.ray/auth_token``),
  or ``RAY_AUTH_TOKEN=<the token>`` itself.

Usage::

    from helpers.auth import create_token_file, auth_env
    token_path = create_token_file(cluster_dir)
    subprocess.run(["ray", "status", "--address", addr], env=auth_env(token_path))
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from helpers.errors import AuthTokenError

__all__ = [
    "create_token_file",
    "write_secret",
    "auth_env",
    "activate_in_process",
    "restore_in_process",
    "auth_headers",
    "DEFAULT_TOKEN_PATH",
]

DEFAULT_TOKEN_PATH = Path.home() / ".ray" / "auth_token"


def create_token_file(folder: Path) -> Path:
    """Write a fresh random token to ``folder/auth_token`` (mode 0600) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_secret(folder / "auth_token", secrets.token_hex(32))


def write_secret(path: Path, text: str) -> Path:
    """Write ``text`` to a new file ``path`` that only this user can read (mode 0600).

    The file must not exist yet, not even as a link: a link planted there would otherwise
    make us write the token wherever it points (``O_EXCL | O_NOFOLLOW``).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError as err:
        raise AuthTokenError(
            f"{path} already exists: a token is written only to a new file.",
            "remove the file (or link) if it is a stale one of yours; if you did not make it, "
            "someone else can write to that folder: use a private one (WORKBOOK_SCRATCH).",
        ) from err
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def auth_env(token_path: Path | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: this process's environment) set up to use ``token_path``.

    With ``token_path=None`` authentication is switched off for the child
    (``RAY_AUTH_MODE=disabled``), for clusters started without it.
    """
    env = dict(os.environ if base is None else base)
    env.pop("RAY_AUTH_TOKEN", None)
    if token_path is None:
        env["RAY_AUTH_MODE"] = "disabled"
        env.pop("RAY_AUTH_TOKEN_PATH", None)
    else:
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    return env


def auth_headers(token_path: Path | None) -> dict[str, str]:
    """HTTP headers that present the token to the dashboard (REST API, Jobs API, metrics SD).

    ``{"Authorization": "Bearer <token>"}``, or ``{}`` for a cluster without authentication.
    """
    if token_path is None:
        return {}
    return {"Authorization": f"Bearer {Path(token_path).read_text().strip()}"}


def activate_in_process(env: Mapping[str, str]) -> dict[str, str | None]:
    """Apply the auth variables of ``env`` to this process and refresh Ray's cached view.

    Returns the previous values so they can be restored with :func:`restore_in_process`.
    """
    keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")
    previous = {k: os.environ.get(k) for k in keys}
    for key in keys:
        if key in env:
            os.environ[key] = env[key]
        else:
            os.environ.pop(key, None)
    _refresh_ray_auth_cache()
    return previous


def restore_in_process(previous: Mapping[str, str | None]) -> None:
    """Undo :func:`activate_in_process`."""
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _refresh_ray_auth_cache()


def _refresh_ray_auth_cache() -> None:
    # Ray caches the auth mode (RayConfig) and the token (a C++ singleton) per process.
    try:
        from ray._raylet import (  # type: ignore[attr-defined]  # compiled, not in its stub
            AuthenticationTokenLoader,
            Config,
        )
    except ImportError:  # pragma: no cover - Ray older than token auth
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
