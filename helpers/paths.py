"""Where things live: the repository, its folders, and the scratch area for clusters.

Paths are found from this package's location, so notebooks, tests and the Serve CLI agree
whatever the working directory is.

Usage::

    from helpers.paths import CONFIGS_DIR
    profile = CONFIGS_DIR / "profiles" / "ci.yaml"
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "NOTEBOOKS_DIR",
    "CONFIGS_DIR",
    "IMAGES_DIR",
    "LABS_DIR",
    "BUILD_DIR",
    "scratch_root",
]

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR: Path = REPO_ROOT / "notebooks"
CONFIGS_DIR: Path = REPO_ROOT / "configs"
IMAGES_DIR: Path = REPO_ROOT / "images"
LABS_DIR: Path = REPO_ROOT / "labs"  # source/ (with solutions) and student/ (generated)
BUILD_DIR: Path = Path(os.environ.get("WORKBOOK_BUILD_DIR", REPO_ROOT / "build"))


def scratch_root() -> Path:
    """The folder under which each local cluster gets its temp dir, token and logs.

    Kept short (Ray puts Unix sockets in it, and those paths are limited to ~100 bytes).
    Override with ``WORKBOOK_SCRATCH``.
    """
    root = Path(os.environ.get("WORKBOOK_SCRATCH", Path(tempfile.gettempdir()) / "rsw"))
    root.mkdir(parents=True, exist_ok=True)
    return root
