"""The Ray Serve Workbook helper package: the plumbing, so the notebooks can teach.

Usage::

    from helpers import open_cluster, wait_until_running, status_table
    cluster = open_cluster(num_cpus=4)        # or open_cluster(ray_address="host:6379")

The code a lesson is *about* (deployments, configs, CLI commands) is written in the lesson;
these modules are the harness around it. The map, one job per module, with the lesson that
first uses it (``-`` where only the runner, the labs or the tests do):

Cluster
  * :mod:`helpers.cluster` (01) - start a local multi-node Ray cluster, or connect to one; stop it.
  * :mod:`helpers.auth` (01) - Ray's token authentication for clusters and CLI clients.
  * :mod:`helpers.processes` (01) - a command in a session of its own (``ManagedProcess``):
    registered, stopped by id and at exit; the leftover registry.
  * :mod:`helpers.ports` (02a) - free ports; who holds a busy one.
  * :mod:`helpers.paths` (01) - the repository's folders and the private scratch folder.
  * :mod:`helpers.health_check` (01) - CPU, GPU and object-store probes on every node (the
    harness's copy of the script lesson 01 has the learner write).
  * :mod:`helpers.envcheck` (00) - versions, CPU or GPU path, imports: the environment verdict.
  * :mod:`helpers.shared_cluster` (02a) - on someone else's cluster: one's own names and clean-up;
    ``end_lesson``, every lesson's last cell.
  * :mod:`helpers.placement` (08) - nodes, resources in use, replicas per node, placement groups.
  * :mod:`helpers.faults` (09) - kill replicas, proxies, the controller or a raylet; await recovery.
  * :mod:`helpers.doctor` (09) - one call, a list of findings about a cluster and its applications.

Serve
  * :mod:`helpers.serve_status` (02a) - wait for an application; explain why it is not running.
  * :mod:`helpers.serve_timeline` (02b) - Serve's status recorded over time, and its plot.
  * :mod:`helpers.serve_cli` (03a) - ``serve run/deploy/status/...`` on this cluster, in the background.
  * :mod:`helpers.kuberay` (03b) - a KubeRay RayService manifest around a ``serve build`` config.
  * :mod:`helpers.serve_apps` (04a) - applications from Python: deploy one and wait for it, wait
    after ``serve deploy``, delete one; the HTTP proxy's URL.
  * :mod:`helpers.autoscaling` (05) - autoscaling made visible: replicas under load, a dashboard.
  * :mod:`helpers.metrics` (05) - Ray's Prometheus metrics scraped: series, rates, quantiles.
  * :mod:`helpers.browser` (09) - headless Chromium (Playwright) for screenshots and page checks.
  * :mod:`helpers.apps` (02a on) - the lessons' applications, each generated from the lesson
    cell that writes it (``# export:``); edit the lesson, never the copy.

Load
  * :mod:`helpers.traffic` (02b) - a burst of requests, or a loop that runs during an update.
  * :mod:`helpers.load` (05) - closed- or open-loop load, JSON or OpenAI chat, every request timed;
    ``run_in_new_loop``, the one way the package runs a coroutine or a blocking call from
    inside Jupyter's event loop.
  * :mod:`helpers.locust_run` (05) - real Locust, headless, from Python.
  * :mod:`helpers.echo_server` (-) - a bare HTTP server: the load tools' fastest endpoint.
  * :mod:`helpers.evaluation` (06) - parameter sweeps: heatmaps, ``summary.json``, a report.
  * :mod:`helpers.plotting` (05) - figures drawn without pyplot that notebooks show as pictures.

LLM
  * :mod:`helpers.tiny_llm` (04a) - the tiny Llama-architecture model, built on this machine.
  * :mod:`helpers.llm` (04a) - LLM configs for CPU or GPU, the engine's own errors, streaming
    and benchmark clients.
  * :mod:`helpers.llm_callbacks` (04a) - a start-up callback that skips "downloading" a local model.
  * :mod:`helpers.vllm_server` (04b) - vLLM's own OpenAI server on loopback: the engine without
    Serve.
  * :mod:`helpers.streaming` (12) - the streaming case study: config, model, scheduler, the
    actor and Serve implementations, client and evaluation.

Notebooks and runs
  * :mod:`helpers.profiles` and :mod:`helpers.runner` (-) - headless runs of the lessons
    (``make run``, ``make test``) under a run profile.
  * :mod:`helpers.lessons` (01) - "Your turn" tasks: their checks, practice versions,
    ``reveal``, exported cells, the proof CI runs.
  * :mod:`helpers.solution_regions`, :mod:`helpers.check_feedback` (-) - what lessons and labs
    share: the solution-region parser and the checks' feedback.
  * :mod:`helpers.errors` (04b) - the workbook's exceptions, each with the fix in its message.
  * :mod:`helpers.waiting` (02a) - one way to wait: a check called until it says yes, a
    timeout that says what it saw last (behind every ``wait_until_*`` and ``wait_for``).
  * :mod:`helpers.recording` (-) - the background recorders' base: threads that sample until
    stopped, keep rows in order, and raise a failed sample's error from ``stop()``.

Labs
  * :mod:`helpers.labs` (-) - the classroom labs: their checks, sessions, student versions,
    proofs, grader and student kit (``labs/README.md``). The checks: one module per lab
    (``helpers/labs/checks/lab01.py`` ...) on a shared ``framework.py``; the hidden ones in
    ``helpers/labs/hidden_checks.py``.
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
