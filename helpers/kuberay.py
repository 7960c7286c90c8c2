"""KubeRay: a RayService manifest that embeds a Serve config built by ``serve build``.

On Kubernetes the KubeRay operator runs the Ray cluster *and* the Serve applications from one
custom resource, a ``RayService``. Its ``spec.serveConfigV2`` is a string holding exactly the
YAML that ``serve deploy`` would send; ``spec.rayClusterConfig`` describes the head and worker
pods. Changing only ``serveConfigV2`` updates the applications in place (like ``serve
deploy``); changing ``rayClusterConfig`` makes KubeRay start a new cluster, wait until its
applications are ready, and then switch the Service over: zero downtime either way.

The workbook generates the manifest and explains it; it does not apply it (there is no
Kubernetes here). Apply it with ``kubectl apply -f configs/kuberay/rayservice.yaml`` on a
cluster with the KubeRay operator installed.

Usage::

    from helpers.kuberay import rayservice_manifest, write_manifest, embedded_serve_config
    manifest = rayservice_manifest(Path("configs/serve/workbook_apps.yaml").read_text())
    write_manifest(manifest, "configs/kuberay/rayservice.yaml")
    embedded_serve_config(manifest) == yaml.safe_load(built_text)   # True

Introduced in notebooks/03b_updates_and_operations.ipynb.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from helpers.errors import BadValueError

__all__ = [
    "RAY_VERSION",
    "DEFAULT_IMAGE",
    "rayservice_manifest",
    "write_manifest",
    "load_manifest",
    "embedded_serve_config",
]

RAY_VERSION = "2.60.0"
#: An image with Ray *and this project* installed: the import paths in the Serve config
#: (helpers.apps...) must be importable in every pod. Build it from the Ray image:
#: ``FROM rayproject/ray:2.60.0-py311-cpu`` + ``COPY . /app`` + ``RUN pip install /app``.
DEFAULT_IMAGE = "ray-serve-workbook:0.1.0"

_HEADER = """\
RayService for the Ray Serve Workbook's example applications (generated; do not edit).
Made by helpers.kuberay.rayservice_manifest() (lesson 03b shows it) from
the config that `serve build` wrote to configs/serve/workbook_apps.yaml: spec.serveConfigV2
is that file, verbatim. Apply on a cluster with the KubeRay operator:
    kubectl apply -f configs/kuberay/rayservice.yaml
The image must contain Ray 2.60.0 and this project (pip install .), so that the import
paths helpers.apps.* resolve in every pod.
"""


class _LiteralStr(str):
    """A string that YAML writes as a block literal (``|``), so the embedded config reads."""


def _literal_representer(dumper: yaml.SafeDumper, value: _LiteralStr) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_LiteralStr, _literal_representer)


def _container(
    name: str, image: str, cpu: str, memory: str, ports: Mapping[str, int] | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu, "memory": memory},
        },
    }
    if ports:
        container["ports"] = [{"name": k, "containerPort": v} for k, v in ports.items()]
    return container


def rayservice_manifest(
    serve_config_text: str,
    *,
    name: str = "ray-serve-workbook",
    image: str = DEFAULT_IMAGE,
    ray_version: str = RAY_VERSION,
    head_cpu: str = "2",
    head_memory: str = "4Gi",
    worker_replicas: int = 1,
    worker_cpu: str = "2",
    worker_memory: str = "4Gi",
) -> dict[str, Any]:
    """A ``ray.io/v1`` RayService whose ``serveConfigV2`` is ``serve_config_text`` verbatim.

    ``serve_config_text`` is the YAML text of a Serve config (``serve build`` output); it is
    checked to parse as a mapping with ``applications``.
    """
    parsed = yaml.safe_load(serve_config_text)
    if not isinstance(parsed, dict) or "applications" not in parsed:
        raise BadValueError(
            "serve_config_text is not a Serve config: it must be YAML with an 'applications:' "
            "list.",
            "pass the text that `serve build` writes (or a config file's text), not its path.",
            details=serve_config_text[:500],
        )
    text = serve_config_text if serve_config_text.endswith("\n") else serve_config_text + "\n"
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": _LiteralStr(text),
            "rayClusterConfig": {
                "rayVersion": ray_version,
                "headGroupSpec": {
                    # Inside the pod network; KubeRay reaches the dashboard (Serve's REST
                    # API) through the head Service. Do not expose it outside the cluster.
                    "rayStartParams": {"dashboard-host": "0.0.0.0"},
                    "template": {
                        "spec": {
                            "containers": [
                                _container(
                                    "ray-head",
                                    image,
                                    head_cpu,
                                    head_memory,
                                    {
                                        "gcs-server": 6379,
                                        "dashboard": 8265,
                                        "client": 10001,
                                        "serve": 8000,
                                    },
                                )
                            ]
                        }
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "cpu-workers",
                        "replicas": worker_replicas,
                        "minReplicas": worker_replicas,
                        "maxReplicas": max(worker_replicas, 2),
                        "rayStartParams": {},
                        "template": {
                            "spec": {
                                "containers": [
                                    _container("ray-worker", image, worker_cpu, worker_memory)
                                ]
                            }
                        },
                    }
                ],
            },
        },
    }


def write_manifest(manifest: Mapping[str, Any], path: str | Path) -> Path:
    """Write the manifest as YAML with an explanatory comment header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {line}".rstrip() + "\n" for line in _HEADER.splitlines())
    body = yaml.dump(dict(manifest), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    path.write_text(header + body)
    return path


def load_manifest(path: str | Path) -> dict[str, Any]:
    """A manifest file as a dict."""
    return yaml.safe_load(Path(path).read_text())


def embedded_serve_config(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The Serve config inside a RayService (``spec.serveConfigV2``), parsed."""
    return yaml.safe_load(manifest["spec"]["serveConfigV2"])
