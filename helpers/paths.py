"""Where things live: the repository, its folders, and the scratch area for clusters.

Paths are found from this package's location, so notebooks, tests and the Serve CLI agree
whatever the working directory is.

Usage::

    from helpers.paths import CONFIGS_DIR
    profile = CONFIGS_DIR / "profiles" / "ci.yaml"
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from helpers.errors import WorkbookError

__all__ = [
    "REPO_ROOT",
    "NOTEBOOKS_DIR",
    "CONFIGS_DIR",
    "IMAGES_DIR",
    "LABS_DIR",
    "BUILD_DIR",
    "scratch_root",
    "user_root",
]

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR: Path = REPO_ROOT / "notebooks"
CONFIGS_DIR: Path = REPO_ROOT / "configs"
IMAGES_DIR: Path = REPO_ROOT / "images"
LABS_DIR: Path = REPO_ROOT / "labs"  # source/ (with solutions) and student/ (generated)
BUILD_DIR: Path = Path(os.environ.get("WORKBOOK_BUILD_DIR", REPO_ROOT / "build"))


def _private_folder(path: Path, *, ours: bool) -> Path:
    """``path`` as a folder only this user can write to, made (mode 0700) if missing.

    Clean-up trusts what it finds there (the registry of started processes, tokens, the node
    start lock): a folder another user owns or may write to could make it end the wrong
    processes. ``ours``: the workbook's own default folder, whose mode it may tighten.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as err:
        raise WorkbookError(
            f"Cannot use {path} as the workbook's scratch folder ({err.strerror or err}).",
            "set WORKBOOK_SCRATCH to a short folder of your own, e.g. "
            "export WORKBOOK_SCRATCH=$(mktemp -d)",
        ) from err
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise WorkbookError(
            f"{path} is not a folder of yours (owner uid {info.st_uid}, you are {os.getuid()}"
            f"{', and it is a link' if stat.S_ISLNK(info.st_mode) else ''}): the workbook keeps "
            "its records of processes to stop there, so it will not use it.",
            "remove it if it is a stale one of yours, or set WORKBOOK_SCRATCH to a folder of "
            "your own, e.g. export WORKBOOK_SCRATCH=$(mktemp -d)",
        )
    if info.st_mode & 0o022:
        if not ours:
            raise WorkbookError(
                f"{path} can be written by other users (mode {stat.S_IMODE(info.st_mode):o}): "
                "anyone could plant records there that make the clean-up stop your processes.",
                f"chmod go-w {path}, or set WORKBOOK_SCRATCH to a private folder "
                "(mktemp -d makes one)",
            )
        path.chmod(0o700)
    return path


def user_root() -> Path:
    """This user's own folder in the system's temp dir, ``/tmp/rsw-<uid>`` (mode 0700): the
    default scratch folder, and where every workbook process of this user meets (the node
    start lock), whatever ``WORKBOOK_SCRATCH`` says."""
    return _private_folder(Path(tempfile.gettempdir()) / f"rsw-{os.getuid()}", ours=True)


def scratch_root() -> Path:
    """The folder under which each local cluster gets its temp dir, token and logs.

    Kept short (Ray puts Unix sockets in it, and those paths are limited to ~100 bytes).
    Override with ``WORKBOOK_SCRATCH``. Either way it must be a folder of this user's that
    others cannot write to (see :func:`_private_folder`): a clear error says otherwise.
    """
    explicit = os.environ.get("WORKBOOK_SCRATCH")
    if explicit:
        return _private_folder(Path(explicit), ours=False)
    return user_root()
