"""The Ray Serve Workbook helper package: the plumbing, so the notebooks can teach.

Usage::

    from helpers import open_cluster, wait_until_running, status_table
    cluster = open_cluster(num_cpus=4)        # or open_cluster(ray_address="host:6379")

Modules, one job each:

* :mod:`helpers.cluster` - start a local multi-node Ray cluster, or connect to one; stop it.
* :mod:`helpers.auth` - Ray's token authentication for clusters and CLI clients.
* :mod:`helpers.health_check` - CPU, GPU and object-store probes across the nodes.
* :mod:`helpers.serve_status` - wait for a Serve application, explain why it is not running.
* :mod:`helpers.envcheck` - versions, CPU/GPU path, imports: the environment verdict.
* :mod:`helpers.profiles` and :mod:`helpers.runner` - headless runs of the lessons.
* :mod:`helpers.ports`, :mod:`helpers.processes` - free ports; stopping exactly what we started.
* :mod:`helpers.errors` - the workbook's exceptions, each with the fix in its message.
* :mod:`helpers.lessons` - "Your turn" tasks: their checks, practice versions, ``reveal``, the
  proof CI runs; :mod:`helpers.solution_regions` and :mod:`helpers.check_feedback` are what
  they share with :mod:`helpers.labs`.
"""

from helpers.cluster import (
    ClusterHandle,
    ExistingCluster,
    LocalCluster,
    connect_to_cluster,
    open_cluster,
    start_local_cluster,
)
from helpers.envcheck import check_environment
from helpers.errors import (
    AuthTokenError,
    ClusterNotRunningError,
    ClusterStartError,
    DashboardTimeoutError,
    EnvironmentProblem,
    ParameterError,
    PortInUseError,
    ProfileError,
    ServeDeployError,
    ServeTimeoutError,
    WorkbookError,
)
from helpers.health_check import HealthReport, run_health_check
from helpers.paths import BUILD_DIR, CONFIGS_DIR, IMAGES_DIR, NOTEBOOKS_DIR, REPO_ROOT
from helpers.ports import ensure_port_free, free_port
from helpers.serve_status import pending_demands, status_table, wait_until_running

__all__ = [
    "AuthTokenError",
    "BUILD_DIR",
    "CONFIGS_DIR",
    "ClusterHandle",
    "ClusterNotRunningError",
    "ClusterStartError",
    "DashboardTimeoutError",
    "EnvironmentProblem",
    "ExistingCluster",
    "HealthReport",
    "IMAGES_DIR",
    "LocalCluster",
    "NOTEBOOKS_DIR",
    "ParameterError",
    "PortInUseError",
    "ProfileError",
    "REPO_ROOT",
    "ServeDeployError",
    "ServeTimeoutError",
    "WorkbookError",
    "check_environment",
    "connect_to_cluster",
    "ensure_port_free",
    "free_port",
    "open_cluster",
    "pending_demands",
    "run_health_check",
    "start_local_cluster",
    "status_table",
    "wait_until_running",
]
