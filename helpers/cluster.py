"""Ray clusters for the lessons: start one on this machine, or connect to one that runs.

A *local cluster* is real: ``ray start --head`` for the head node and one more ``ray start
--address=...`` per worker node, each a separate raylet with its own logical resources, all on
127.0.0.1. That gives a multi-node cluster on a laptop, on which scheduling, placement and
spreading behave as they would across machines.

Everything the workbook starts is stopped by process id (see :mod:`helpers.processes`),
idempotently, and also when the interpreter exits after a failed cell.

Usage::

    from helpers.cluster import start_local_cluster
    with start_local_cluster(num_cpus=4, num_gpus=2) as cluster:
        cluster.add_worker(num_cpus=1, num_gpus=1, resources={"node_b": 1})
        print(cluster.nodes_table())
        cluster.run_cli(["ray", "status"])

or, for a classroom's shared cluster::

    cluster = open_cluster(ray_address="10.0.0.5:6379", dashboard_url="http://10.0.0.5:8265")
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.auth import (
    activate_in_process,
    auth_env,
    create_token_file,
    restore_in_process,
    write_secret,
)
from helpers.errors import (
    AuthTokenError,
    ClusterNotRunningError,
    ClusterStartError,
    WorkbookError,
)
from helpers.paths import scratch_root, user_root
from helpers.ports import ensure_port_free, free_port, wait_for_port
from helpers.processes import (
    forget_at_exit,
    ray_executable,  # re-exported: notebooks import it from here
    register,
    remove_orphan_shm,
    start_session,
    stop_at_exit,
    stop_session,
    stop_sessions,
    sweep_orphans,
    unregister,
)
from helpers.waiting import wait_for

__all__ = [
    "NodeInfo",
    "ClusterHandle",
    "LocalCluster",
    "ExistingCluster",
    "start_local_cluster",
    "connect_to_cluster",
    "open_cluster",
    "ray_executable",
]

_STARTED_MARK = "Ray runtime started"


def _pid_max() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 4194304  # Linux's upper limit


# The longest names Ray gives a session folder (its pid as long as this machine's largest) and
# a socket in it (the dashboard's modules listen on sockets/dash_<Module>).
_LONGEST_SESSION_NAME = "session_2026-01-01_00-00-00_000000_" + "9" * len(str(_pid_max()))
_LONGEST_SOCKET_NAME = "dash_TaskEventsHead"
#: Seconds a stopping cluster's processes get to exit on SIGTERM before they are killed.
STOP_GRACE_S = 3.0


@dataclass(frozen=True)
class NodeSpec:
    """What a node is asked to have: its name and logical resources."""

    name: str
    num_cpus: float = 1
    num_gpus: float = 0
    resources: Mapping[str, float] | None = None
    memory: int | None = None
    object_store_memory: int | None = None
    #: Extra environment variables of the node's processes (raylet, and the workers it
    #: starts), e.g. Ray settings such as ``{"RAY_memory_usage_threshold": "0.5"}``.
    env: Mapping[str, str] | None = None


@dataclass
class NodeInfo:
    """One raylet the workbook started."""

    name: str
    role: str  # "head" or "worker"
    num_cpus: float
    num_gpus: float
    resources: dict[str, float]
    pid: int
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        """The ``ray start`` command line that started this node, as you would type it."""
        words = ["ray", *self.argv[1:]] if self.argv else []
        return " ".join(words)


@contextlib.contextmanager
def _node_start_turn(timeout_s: float) -> Iterator[None]:
    """Let one node of this machine start at a time (a lock shared by every workbook process).

    Starting a node launches half a dozen Python processes (dashboard, agents, monitors) that
    import for seconds of CPU each, and Ray's start-up windows are fixed (see
    ``_start_with_retry``): two clusters starting at once on 2 cores (two notebooks, parallel
    tests) can make both miss them. Waiting for our turn costs a few seconds; after
    ``timeout_s`` we start anyway rather than wait on a stuck neighbour.
    """
    # In this user's private folder (not /tmp itself, where another user could own or plant
    # the file), never through a link.
    fd = os.open(user_root() / "node-start.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    handle = os.fdopen(fd, "r+")
    deadline = time.monotonic() + timeout_s
    locked = False
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
        yield
    finally:
        if locked:
            fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


class ClusterHandle:
    """What a lesson needs from a cluster, whether it started it or not."""

    address: str  # GCS address, host:port
    dashboard_url: str
    token_path: Path | None

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]

    @property
    def env(self) -> dict[str, str]:
        """Environment for CLI clients (ray, serve, ray job) talking to this cluster."""
        env = auth_env(self.token_path)
        env["RAY_ADDRESS"] = self.address
        # `ray job` and `serve deploy/status` read the dashboard address from here.
        env["RAY_API_SERVER_ADDRESS"] = self.dashboard_url
        env["RAY_DASHBOARD_ADDRESS"] = self.dashboard_url
        return env

    def run_cli(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout_s: float = 180.0,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess:
        """Run a CLI command (``["ray", "status"]``) with this cluster's address and token.

        The first word is resolved to the command installed beside this Python. With
        ``check=True`` a non-zero exit raises :class:`WorkbookError` carrying the output.
        """
        full_env = self.env
        if env:
            full_env.update(env)
        cmd = [ray_executable(argv[0]) if argv[0] in ("ray", "serve") else argv[0], *argv[1:]]
        try:
            result = subprocess.run(
                cmd,
                env=full_env,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as err:
            raise WorkbookError(
                f"`{' '.join(argv)}` did not finish within {timeout_s:.0f} s.",
                "check that the cluster is running (cluster.nodes_table()) and try again "
                "with a larger timeout_s.",
            ) from err
        if check and result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            if "InvalidAuthToken" in output or "AuthenticationError" in output:
                raise AuthTokenError(
                    f"`{' '.join(argv)}` was refused: it did not present the cluster's token.",
                    "run CLI clients with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH set "
                    "(cluster.env has both).",
                    details=output[-2000:],
                )
            raise WorkbookError(
                f"`{' '.join(argv)}` failed with exit code {result.returncode}.",
                "read the command's output below.",
                details=output[-4000:],
            )
        return result

    def connect(self, **init_kwargs: Any) -> Any:
        """``ray.init`` this process to the cluster (idempotent) and return the context."""
        import ray

        activate_in_process(self.env)
        if ray.is_initialized():
            return ray.get_runtime_context()
        init_kwargs.setdefault("log_to_driver", False)
        init_kwargs.setdefault("logging_level", "WARNING")
        return ray.init(address=self.address, **init_kwargs)

    def nodes(self) -> list[dict[str, Any]]:
        """Alive nodes as plain dicts (name, id, ip, head, resources)."""
        from ray.util.state import list_nodes

        activate_in_process(self.env)
        try:
            states = list_nodes(address=self.dashboard_url, detail=True, timeout=30)
        except Exception as err:
            raise ClusterNotRunningError(
                f"Could not list the nodes of the cluster at {self.dashboard_url}.",
                "check the cluster is running and the dashboard address is right.",
                details=str(err)[-1500:],
            ) from err
        rows = []
        for node in states:
            if node.state != "ALIVE":
                continue
            rows.append(
                {
                    "name": node.node_name,
                    "node_id": node.node_id,
                    "ip": node.node_ip,
                    "is_head": bool(node.is_head_node),
                    "resources": dict(node.resources_total or {}),
                }
            )
        rows.sort(key=lambda r: (not r["is_head"], r["name"]))
        return rows

    def nodes_table(self) -> Any:
        """A pandas DataFrame: one row per alive node with its CPU, GPU, memory and extras."""
        import pandas as pd

        records = []
        for node in self.nodes():
            res = node["resources"]
            custom = {
                k: v
                for k, v in res.items()
                if k not in ("CPU", "GPU", "memory", "object_store_memory")
                and not k.startswith("node:")
                and not k.startswith("accelerator_type")
            }
            records.append(
                {
                    "node": node["name"],
                    "head": node["is_head"],
                    "node_id": node["node_id"][:12],
                    "ip": node["ip"],
                    "CPU": res.get("CPU", 0.0),
                    "GPU": res.get("GPU", 0.0),
                    "memory_GiB": round(res.get("memory", 0.0) / 2**30, 2),
                    "object_store_GiB": round(res.get("object_store_memory", 0.0) / 2**30, 2),
                    "custom": ", ".join(f"{k}={v:g}" for k, v in sorted(custom.items())),
                }
            )
        return pd.DataFrame.from_records(records)

    def total_resources(self) -> dict[str, float]:
        """Sum of each resource over the alive nodes."""
        totals: dict[str, float] = {}
        for node in self.nodes():
            for key, value in node["resources"].items():
                totals[key] = totals.get(key, 0.0) + value
        return totals

    def disconnect(self) -> None:
        """``ray.shutdown()`` this process's driver if it is connected."""
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except Exception:  # noqa: BLE001 - best effort while cleaning up
            pass

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> ClusterHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalCluster(ClusterHandle):
    """A cluster of raylets on this machine that this process started and will stop."""

    def __init__(
        self,
        *,
        port: int | None = None,
        dashboard_port: int | None = None,
        auth: bool = True,
        include_dashboard: bool = True,
        scratch: Path | None = None,
    ) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.id = f"cluster-{suffix}"
        # Ray puts Unix sockets under <temp-dir>/session_<date>_<pid>/sockets/, and their paths
        # may be at most 107 bytes: the folders here are short, and a scratch folder too deep
        # for the longest socket is refused now rather than failing obscurely later (the
        # dashboard's "Module MetricsHead failed to start. Received EOF from pipe").
        self.dir = (scratch or scratch_root()) / f"c{suffix}"
        self.ray_temp_dir = self.dir / "r"
        longest = self.ray_temp_dir / _LONGEST_SESSION_NAME / "sockets" / _LONGEST_SOCKET_NAME
        if len(str(longest).encode()) > 107:
            raise ClusterStartError(
                f"The scratch folder {self.dir.parent} is too long a path for Ray's Unix sockets "
                f"({len(str(longest).encode())} bytes where at most 107 fit, e.g. {longest}).",
                "set WORKBOOK_SCRATCH to a short folder of yours, e.g. $(mktemp -d /tmp/rswXXXX).",
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.vllm_rpc_dir = self.dir / "v"  # vLLM engines' sockets (see _start_node)
        self.vllm_rpc_dir.mkdir(exist_ok=True)
        self.port = port or free_port()
        self.dashboard_port = dashboard_port or free_port()
        self.include_dashboard = include_dashboard
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.token_path = create_token_file(self.dir) if auth else None
        self.nodes_started: list[NodeInfo] = []
        self.created_at = time.time()
        self._stopped = False
        self._previous_env: dict[str, str | None] | None = None
        stop_at_exit(self, self.stop)  # after a failed cell too

    # -- starting -----------------------------------------------------------------------

    def _node_argv(self, spec: NodeSpec, *, head: bool, ports: dict[str, int]) -> list[str]:
        argv = [ray_executable("ray"), "start", "--block", "--disable-usage-stats"]
        argv += ["--node-ip-address=127.0.0.1", f"--node-name={spec.name}"]
        if head:
            argv += [
                "--head",
                f"--port={self.port}",
                f"--temp-dir={self.ray_temp_dir}",
                f"--ray-client-server-port={ports['ray_client_server']}",
            ]
            if self.include_dashboard:
                argv += ["--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
            else:
                argv += ["--include-dashboard=False"]
        else:
            argv += [f"--address={self.address}"]
        argv += [f"--num-cpus={int(spec.num_cpus)}", f"--num-gpus={int(spec.num_gpus)}"]
        if spec.resources:
            argv += [f"--resources={json.dumps(dict(spec.resources))}"]
        if spec.memory:
            argv += [f"--memory={int(spec.memory)}"]
        if spec.object_store_memory:
            argv += [f"--object-store-memory={int(spec.object_store_memory)}"]
        argv += [
            f"--node-manager-port={ports['node_manager']}",
            f"--object-manager-port={ports['object_manager']}",
            f"--dashboard-agent-listen-port={ports['dashboard_agent_http']}",
            f"--dashboard-agent-grpc-port={ports['dashboard_agent_grpc']}",
            f"--runtime-env-agent-port={ports['runtime_env_agent']}",
            f"--metrics-export-port={ports['metrics_export']}",
        ]
        return argv

    def _start_node(self, spec: NodeSpec, *, head: bool, timeout_s: float) -> NodeInfo:
        names = [
            "node_manager",
            "object_manager",
            "dashboard_agent_http",
            "dashboard_agent_grpc",
            "runtime_env_agent",
            "metrics_export",
        ]
        if head:
            names += ["ray_client_server", "dashboard_metrics", "autoscaler_metrics"]
        ports = {n: free_port() for n in names}
        argv = self._node_argv(spec, head=head, ports=ports)
        name = spec.name
        log_path = self.dir / f"{name}.log"
        env = auth_env(self.token_path)
        env.pop("RAY_ADDRESS", None)
        # vLLM names its engines' ZMQ sockets <VLLM_RPC_BASE_PATH>/<uuid> (default: /tmp) and
        # never removes them: in this cluster's folder they go when the cluster stops.
        env.setdefault("VLLM_RPC_BASE_PATH", str(self.vllm_rpc_dir))
        if head:
            # The dashboard and the autoscaler's monitor serve their own metrics on fixed ports
            # unless told (DASHBOARD_METRIC_PORT 44227, AUTOSCALER_METRIC_PORT 44217), and the
            # dashboard lists both among the cluster's Prometheus targets: with two clusters on
            # one machine the second cannot bind them, and its targets are the first cluster's
            # processes (or, once that stops, nothing). Free ports of its own instead.
            env["DASHBOARD_METRIC_PORT"] = str(ports["dashboard_metrics"])
            env["AUTOSCALER_METRIC_PORT"] = str(ports["autoscaler_metrics"])
        env.update(spec.env or {})
        env = _node_env(env)
        proc = start_session(argv, log_path, env=env)
        node = NodeInfo(
            name=name,
            role="head" if head else "worker",
            num_cpus=spec.num_cpus,
            num_gpus=spec.num_gpus,
            resources=dict(spec.resources or {}),
            pid=proc.pid,
            log_path=log_path,
            ports=ports,
            argv=argv,
        )
        self.nodes_started.append(node)
        self._save_registry()
        self._wait_started(proc, node, timeout_s)
        return node

    def _start_with_retry(
        self, spec: NodeSpec, *, head: bool, timeout_s: float, attempts: int = 3
    ) -> NodeInfo:
        for attempt in range(1, attempts + 1):
            try:
                with _node_start_turn(timeout_s):
                    return self._start_node(spec, head=head, timeout_s=timeout_s)
            except ClusterStartError as err:
                # A new raylet waits a fixed ~15 s for its dashboard agent (a Python process)
                # to report its ports, and `ray start` waits a fixed 30 s for the raylet to
                # register; on a busy 2-core machine either is sometimes too short. The failed
                # node was stopped, so trying again is safe; any other failure is final.
                if "timed out during startup" not in err.details or attempt == attempts:
                    raise
                time.sleep(5 * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _abandon(self, node: NodeInfo) -> None:
        """A node failed to start: stop its processes and forget it."""
        stop_session(node.pid)
        if node in self.nodes_started:
            self.nodes_started.remove(node)
        self._save_registry()

    def _wait_started(self, proc: subprocess.Popen, node: NodeInfo, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = node.log_path.read_text(errors="replace")
                self._abandon(node)
                raise ClusterStartError(
                    f"`ray start` for node {node.name!r} exited with code {proc.returncode}.",
                    _advice_from_log(log),
                    details=_tail(log),
                )
            if _STARTED_MARK in node.log_path.read_text(errors="replace"):
                return
            time.sleep(0.3)
        log = node.log_path.read_text(errors="replace")
        self._abandon(node)
        raise ClusterStartError(
            f"Node {node.name!r} did not start within {timeout_s:.0f} s.",
            "the machine may be overloaded; close other notebooks or raise timeout_s.",
            details=_tail(log),
        )

    def start_head(
        self,
        *,
        num_cpus: float = 4,
        num_gpus: float = 0,
        resources: Mapping[str, float] | None = None,
        memory: int | None = None,
        object_store_memory: int | None = 512 * 2**20,
        timeout_s: float = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> NodeInfo:
        """Start the head node (GCS, dashboard, raylet) and wait until it serves requests.

        ``env``: extra environment variables for the node's processes (Ray settings).
        """
        sweep_orphans()  # what a killed kernel's clusters left running, by recorded id
        ensure_port_free(self.port, purpose="Ray GCS")
        if self.include_dashboard:
            ensure_port_free(self.dashboard_port, purpose="Ray dashboard")
        self._previous_env = activate_in_process(auth_env(self.token_path))
        spec = NodeSpec("head", num_cpus, num_gpus, resources, memory, object_store_memory, env)
        try:
            node = self._start_with_retry(spec, head=True, timeout_s=timeout_s)
        except BaseException:
            self.stop()
            raise
        if self.include_dashboard and not wait_for_port(self.dashboard_port, timeout_s=timeout_s):
            log = node.log_path.read_text(errors="replace")  # before stop() removes the folder
            self.stop()
            raise ClusterStartError(
                f"The Ray dashboard did not open its port within {timeout_s:.0f} s.",
                "the machine may be overloaded (close other notebooks or raise timeout_s); "
                "try include_dashboard=False if you do not need Serve's CLI or the Jobs API.",
                details=_tail(log),
            )
        self._wait_for_nodes(1, timeout_s)
        return node

    def add_worker(
        self,
        *,
        num_cpus: float = 1,
        num_gpus: float = 0,
        resources: Mapping[str, float] | None = None,
        memory: int | None = None,
        object_store_memory: int | None = 256 * 2**20,
        name: str | None = None,
        timeout_s: float = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> NodeInfo:
        """Add a worker node (one more raylet on this machine) with its own resources.

        ``env``: extra environment variables for the node's processes (Ray settings such as
        ``RAY_memory_usage_threshold``, which then apply to this node only).
        """
        if self._stopped or not self.nodes_started:
            raise ClusterNotRunningError(
                "This cluster is not running.", "start it first with start_local_cluster()."
            )
        count = sum(1 for n in self.nodes_started if n.role == "worker")
        spec = NodeSpec(
            name or f"worker-{count + 1}",
            num_cpus,
            num_gpus,
            resources,
            memory,
            object_store_memory,
            env,
        )
        node = self._start_with_retry(spec, head=False, timeout_s=timeout_s)
        self._wait_for_nodes(len(self.nodes_started), timeout_s)
        return node

    def run_node_command(self, command: str, *, timeout_s: float = 120.0) -> NodeInfo:
        """Run a ``ray start --address=...`` command line as typed in a terminal, in a process
        session of its own, and wait until the node it starts has joined.

        The command runs with ``bash -c`` and this cluster's environment (``cluster.env``:
        ``$RAY_ADDRESS`` and the token), so it is exactly the line a learner types beside
        JupyterLab. A ``ray start`` without ``--block`` exits once its node runs, leaving the
        node's processes in that session: :meth:`stop` ends them by session id (never ``ray
        stop``, which ends every Ray process on the machine). A notebook's ``!ray start`` would
        not do: the pseudo-terminal IPython runs it in hangs the node up when the command ends.

        ``cluster.run_node_command("ray start --address=$RAY_ADDRESS --num-cpus=1")``
        """
        if self._stopped or not self.nodes_started:
            raise ClusterNotRunningError(
                "This cluster is not running.", "start it first with start_local_cluster()."
            )
        node = _run_node_command(
            self, command, self.dir, timeout_s=timeout_s, on_started=self._adopt
        )
        return node

    def _adopt(self, node: NodeInfo) -> None:
        self.nodes_started.append(node)
        self._save_registry()

    def _wait_for_nodes(self, expected: int, timeout_s: float) -> None:
        if not self.include_dashboard:
            return  # the node count is read through the dashboard; "started" must suffice
        seen = 0

        def registered() -> bool:
            nonlocal seen
            seen = len(self.nodes())
            return seen >= expected

        # The dashboard may not answer yet while the nodes come up: not yet.
        wait_for(
            registered,
            timeout_s=timeout_s,
            what=f"{expected} nodes registered",
            not_yet=(ClusterNotRunningError,),
            on_timeout=lambda waited: ClusterStartError(
                f"Only {0 if waited.error else seen} of {expected} nodes registered "
                f"within {timeout_s:.0f} s.",
                "look at the node logs in the cluster folder.",
                details="\n".join(str(n.log_path) for n in self.nodes_started),
            ),
        )

    def _save_registry(self) -> None:
        register(
            self.id,
            {
                "kind": "ray-cluster",
                "owner_pid": os.getpid(),
                "address": self.address,
                "dashboard_url": self.dashboard_url,
                "dir": str(self.dir),
                "sessions": [n.pid for n in self.nodes_started],
                "ports": [self.port, self.dashboard_port]
                + [p for n in self.nodes_started for p in n.ports.values()],
            },
        )

    # -- stopping -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return not self._stopped and bool(self.nodes_started)

    def stop_node(self, name: str) -> None:
        """Stop one worker node (its raylet and everything it runs), by process id."""
        node = next((n for n in self.nodes_started if n.name == name), None)
        if node is None:
            raise WorkbookError(f"No node named {name!r}.", "see cluster.nodes_started.")
        stop_session(node.pid)
        self.nodes_started.remove(node)
        self._save_registry()

    def stop(self) -> None:
        """Disconnect this process and stop every node this cluster started. Idempotent, and
        resumable: a stop that was interrupted (a second Ctrl-C) is finished by the next."""
        if self._stopped:
            return
        self.disconnect()
        # Every process of every node at once (a kernel shutting down gives us only a few
        # seconds). A graceful Ray shutdown takes 15-20 s, process after process, to tidy up
        # state that dies with this cluster anyway; what lingers after STOP_GRACE_S is killed.
        stop_sessions([node.pid for node in self.nodes_started], grace_s=STOP_GRACE_S)
        # vLLM engines that Serve ended earlier left their shared memory behind (nobody
        # unlinks it when an engine is killed); whatever of it nobody uses now goes too.
        remove_orphan_shm(self.created_at)
        unregister(self.id)
        if self._previous_env is not None:
            restore_in_process(self._previous_env)
            self._previous_env = None
        shutil.rmtree(self.dir, ignore_errors=True)
        forget_at_exit(self)
        self._stopped = True  # only now: every step above may be run again

    def __enter__(self) -> LocalCluster:
        return self

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LocalCluster {self.address} {len(self.nodes_started)} nodes {state}>"


class ExistingCluster(ClusterHandle):
    """A cluster someone else runs (a classroom's, a GPU box's). Stopping only disconnects."""

    def __init__(self, address: str, dashboard_url: str, token_path: Path | None) -> None:
        self.address = address
        self.dashboard_url = dashboard_url
        self.token_path = token_path
        self.nodes_started: list[NodeInfo] = []  # nodes this machine joined to it
        self.written_token: Path | None = None  # a token file written for us: stop() removes it

    def run_node_command(self, command: str, *, timeout_s: float = 120.0) -> NodeInfo:
        """Join this machine to the cluster with a ``ray start --address=...`` command line
        (see :meth:`LocalCluster.run_node_command`); :meth:`stop` ends that node again."""
        folder = scratch_root() / f"joined-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True, exist_ok=True)
        stop_at_exit(self, self.stop)  # the joined node ends with this process
        return _run_node_command(
            self, command, folder, timeout_s=timeout_s, on_started=self.nodes_started.append
        )

    def stop(self) -> None:
        """Disconnect this process and end the nodes this machine joined to the cluster; the
        cluster keeps running (it is not ours)."""
        self.disconnect()
        stop_sessions([node.pid for node in self.nodes_started], grace_s=STOP_GRACE_S)
        self.nodes_started.clear()
        if self.written_token is not None:
            self.written_token.unlink(missing_ok=True)
            self.written_token = None
        forget_at_exit(self)

    def __repr__(self) -> str:
        return f"<ExistingCluster {self.address}>"


def start_local_cluster(
    *,
    num_cpus: float = 4,
    num_gpus: float = 0,
    resources: Mapping[str, float] | None = None,
    workers: Sequence[Mapping[str, Any]] = (),
    port: int | None = None,
    dashboard_port: int | None = None,
    auth: bool = True,
    include_dashboard: bool = True,
    memory: int | None = None,
    object_store_memory: int | None = 512 * 2**20,
    timeout_s: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> LocalCluster:
    """Start a head node (and optional worker nodes) on this machine; return the cluster.

    ``num_cpus``/``num_gpus`` are *logical*: Ray schedules against them, so 4 CPUs on a
    2-core laptop or 2 GPUs on a machine with none are fine for teaching placement.
    ``workers`` is a list of keyword dicts for :meth:`LocalCluster.add_worker`.
    Ports left as None are chosen free. ``auth=True`` (Ray's default) gives the cluster a
    token of its own. ``env`` adds environment variables (Ray settings) to the head node's
    processes; give workers theirs in their ``workers`` dicts.
    """
    cluster = LocalCluster(
        port=port, dashboard_port=dashboard_port, auth=auth, include_dashboard=include_dashboard
    )
    try:
        cluster.start_head(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            resources=resources,
            memory=memory,
            object_store_memory=object_store_memory,
            timeout_s=timeout_s,
            env=env,
        )
        for spec in workers:
            cluster.add_worker(**dict(spec))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def connect_to_cluster(
    address: str,
    *,
    dashboard_url: str | None = None,
    token_path: str | Path | None = None,
    token: str | None = None,
    timeout_s: float = 5.0,
) -> ExistingCluster:
    """Use a cluster that is already running at ``address`` (``host:port`` of its GCS).

    Gives a clear :class:`ClusterNotRunningError` when nothing answers. The token comes from
    ``token_path``, else ``token`` (written to a private file), else, as Ray's own clients
    look for it, the ``RAY_AUTH_TOKEN_PATH`` or ``RAY_AUTH_TOKEN`` environment variable, else
    ``~/.ray/auth_token`` if it exists; a cluster without authentication needs none.
    """
    address = address.removeprefix("ray://")
    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit():
        raise ClusterNotRunningError(
            f"{address!r} is not a cluster address.",
            "give the head node's GCS address as host:port, for example 127.0.0.1:6379.",
        )
    try:
        with socket.create_connection((host, int(port_text)), timeout=timeout_s):
            pass
    except OSError as err:
        raise ClusterNotRunningError(
            f"No Ray cluster answers at {address} ({err.strerror or err}).",
            "start one with `ray start --head` (or start_local_cluster()), or check the "
            "address and that the port is reachable from here.",
        ) from err
    dashboard_url = dashboard_url or f"http://{host}:8265"
    path: Path | None
    if not token_path and not token:  # where Ray's own clients look, in their order
        token = os.environ.get("RAY_AUTH_TOKEN")
        token_path = None if token else os.environ.get("RAY_AUTH_TOKEN_PATH")
    if token_path:
        path = Path(token_path)
    elif token:
        path = write_secret(scratch_root() / f"token-{uuid.uuid4().hex[:8]}", token)
        cluster = ExistingCluster(address, dashboard_url, path)
        cluster.written_token = path
        return cluster
    else:
        default = Path.home() / ".ray" / "auth_token"
        path = default if default.exists() else None
    return ExistingCluster(address, dashboard_url, path)


def open_cluster(
    ray_address: str = "",
    *,
    dashboard_url: str = "",
    token_path: str = "",
    **local_kwargs: Any,
) -> ClusterHandle:
    """The lessons' one entry point: start a local cluster, or connect when given an address.

    An empty ``ray_address`` (the default notebook parameter) starts a local cluster with
    ``local_kwargs``; anything else connects to that cluster instead.
    """
    if ray_address:
        return connect_to_cluster(
            ray_address, dashboard_url=dashboard_url or None, token_path=token_path or None
        )
    return start_local_cluster(**local_kwargs)


def _node_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` made fit for a node's processes, whether the workbook or a learner's typed
    ``ray start`` starts them."""
    # A new raylet waits for its agents (Python processes) to report their ports and aborts
    # when they are late ("Timed out waiting for file ...agent_port..."): on a busy 2-core
    # machine the default window is too short, so give them two minutes.
    env.setdefault("RAY_agent_register_timeout_ms", "120000")
    # Ray Jobs run their entrypoint (`python -m ...`) with the node's PATH: put this
    # interpreter's folder (the project's .venv/bin) first, so `python` there is the one
    # that has Ray and the helpers even when the venv was never activated.
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env["PATH"]]) if env.get("PATH") else bin_dir
    return env


def _run_node_command(
    cluster: ClusterHandle, command: str, folder: Path, *, timeout_s: float, on_started: Any
) -> NodeInfo:
    """See :meth:`LocalCluster.run_node_command`; ``on_started`` records the node's session
    before anything can fail, so that stopping the cluster ends it whatever happens next."""
    words = shlex.split(command)
    if words[:2] != ["ray", "start"] or "--head" in words:
        raise WorkbookError(
            f"{command!r} is not a command that starts a worker node.",
            "write it as you would type it: ray start --address=$RAY_ADDRESS --num-cpus=...",
        )
    if any(w == "--block" for w in words):
        raise WorkbookError(
            f"{command!r} has --block: it would never return here.",
            "leave --block out; the workbook stops the node by process id.",
        )
    before = {n["node_id"] for n in cluster.nodes()}
    name = next(
        (w.split("=", 1)[1] for w in words if w.startswith("--node-name=")),
        f"node-{len(before) + 1}",
    )
    log_path = folder / f"{name}.command.log"
    env = _node_env(cluster.env)  # `ray` there is the one beside this Python
    with _node_start_turn(timeout_s):
        proc = start_session(["bash", "-c", command], log_path, env=env)
        node = NodeInfo(
            name=name,
            role="worker",
            num_cpus=0,
            num_gpus=0,
            resources={},
            pid=proc.pid,
            log_path=log_path,
            argv=words,
        )
        on_started(node)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        log = log_path.read_text(errors="replace")
        if code != 0:
            raise ClusterStartError(
                f"`{command}` "
                + (
                    f"did not finish within {timeout_s:.0f} s."
                    if code is None
                    else f"exited with code {code}."
                ),
                _advice_from_log(log),
                details=_tail(log),
            )
    wait_for(
        lambda: {n["node_id"] for n in cluster.nodes()} - before,
        timeout_s=timeout_s,
        what="a new node",
        on_timeout=lambda waited: ClusterStartError(
            f"`{command}` ran, but no new node joined within {timeout_s:.0f} s.",
            "read the command's output below, and the node's logs.",
            details=_tail(log_path.read_text(errors="replace")),
        ),
    )
    return node


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _advice_from_log(log: str) -> str:
    if "already running" in log or "Address already in use" in log or "bind" in log.lower():
        return "a port is taken: pass other ports, or leave them as None to pick free ones."
    if "InvalidAuthToken" in log or "Authentication" in log:
        return "the node could not authenticate: start it with the cluster's token (cluster.env)."
    if "Failed to connect to GCS" in log or "Unable to connect to GCS" in log:
        return "the worker could not reach the head node: check the head is running."
    return "read the end of the `ray start` log below."
