"""Each graded notebook's kernel in a sandbox: a user of its own, a workbook without the answers.

The grader (:mod:`helpers.labs.grading`) runs every submission's kernel under bubblewrap
(Debian's ``bubblewrap`` package) and ``setpriv`` (util-linux), as a user id of its own that no
other process on the machine has (:data:`UID_BASE` and up, one per notebook of the run), in a
file system that holds only:

* the operating system and the Python installation, read-only;
* the **student kit** mounted where the workbook is (read-only): the workbook's files without
  ``labs/source`` (the solutions), ``helpers/labs/hidden_checks.py``, the proofs and the tests
  (:func:`helpers.labs.kit.build_kit`), and the project's environment, read-only;
* a private working folder (the notebook's working directory and ``HOME``) and scratch
  folder, owned by that user, with a private copy of the cluster's token;
* the Ray session folder of the cluster's head node (a driver on the node writes its log
  there and connects to the node's sockets, which the grader opens to other users), and the
  tiny model's cache, read-only.

So a cell cannot read the solutions, the hidden checks, the other submissions or the grades,
cannot write into anyone's notebook, and cannot signal the grader or any process not its own
(another user's). When the notebook ends, or its deadline passes, every process of its user id
is ended (:meth:`Box.end`): whatever the kernel started, however it detached, goes too.

What the sandbox does *not* cover: code a student deploys runs on the cluster, as the cluster's
user, outside any sandbox; a classroom cluster should run as a user that cannot read the
instructor's checkout or the grades (labs/README.md says how).

Needs root (to run each kernel as a user of its own) and bubblewrap: :func:`check_sandbox` says
what to install, before any notebook runs. ``--no-sandbox`` grades without it (trusted
submissions only).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.errors import WorkbookError
from helpers.labs.kit import build_kit
from helpers.paths import REPO_ROOT
from helpers.tiny_llm import model_cache_root

if TYPE_CHECKING:  # pragma: no cover
    from helpers.cluster import ClusterHandle

__all__ = ["UID_BASE", "ClassSandbox", "Box", "check_sandbox", "processes_of"]

#: The first user id the sandboxes run as (the run's n-th notebook: UID_BASE + n). A user id
#: that /etc/passwd names, or that a process has, is skipped.
UID_BASE = 62000

#: Where the kernel finds its connection file inside the sandbox (the grader's is bound there).
_CONNECTION = "/run/workbook/connection.json"

_SYSTEM_RO = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc")


def check_sandbox() -> None:
    """A :class:`WorkbookError` saying what to do if the sandbox cannot run here."""
    missing = [tool for tool in ("bwrap", "setpriv") if shutil.which(tool) is None]
    if missing:
        raise WorkbookError(
            f"Grading runs each notebook in a sandbox, and {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed.",
            "install Debian's bubblewrap (as root: apt-get install -y bubblewrap; setpriv "
            "comes with util-linux), or grade trusted submissions with --no-sandbox.",
        )
    if os.geteuid() != 0:
        raise WorkbookError(
            "Grading in a sandbox runs each notebook as a user of its own, which needs root.",
            "run the grader as root (e.g. sudo .venv/bin/python -m helpers.labs grade ...), or "
            "grade trusted submissions with --no-sandbox.",
        )
    probe = subprocess.run(
        ["bwrap", "--ro-bind", "/", "/", "--unshare-ipc", "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        raise WorkbookError(
            "bubblewrap is installed but cannot make a sandbox here.",
            "run the grader where bwrap works (a container may need --privileged), or grade "
            "trusted submissions with --no-sandbox.",
            details=probe.stderr[-1000:],
        )


def processes_of(uid: int) -> list[Any]:
    """The processes whose real user id is ``uid``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info.get("uids")
        if uids is not None and uids.real == uid:
            found.append(proc)
    return found


def _uid_free(uid: int) -> bool:
    import pwd

    try:
        pwd.getpwuid(uid)
    except KeyError:
        return not processes_of(uid)
    return False


def _ancestors(paths: list[str]) -> list[str]:
    """Every folder above ``paths`` (shortest first), which the sandbox makes, world-readable:
    bubblewrap would otherwise make them private to root."""
    found = {str(p) for path in paths for p in Path(path).parents if str(p) not in ("/", "/tmp")}
    return sorted(found - set(paths), key=lambda p: (p.count("/"), p))


@dataclass
class Box:
    """One notebook's sandbox: its user id, folders, token copy and kernel."""

    uid: int
    work: Path  # working folder and HOME, the user's own
    scratch: Path  # WORKBOOK_SCRATCH
    token: Path | None
    kernel_dir: Path  # the kernelspec folder
    kernel_name: str

    def kernel_manager(self) -> Any:
        """A jupyter_client kernel manager that starts this box's kernel."""
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager

        specs = KernelSpecManager(kernel_dirs=[str(self.kernel_dir)], ensure_native_kernel=False)
        return AsyncKernelManager(kernel_name=self.kernel_name, kernel_spec_manager=specs)

    def end(self) -> list[int]:
        """End every process of this box's user id (the kernel and anything it started, by
        that id: no other process has it); remove its folders. Returns the ids ended."""
        import psutil

        ended = []
        for _ in range(5):  # a process may fork while the others are ended
            procs = processes_of(self.uid)
            if not procs:
                break
            for proc in procs:
                try:
                    proc.kill()
                    ended.append(proc.pid)
                except psutil.Error:
                    pass
            psutil.wait_procs(procs, timeout=5)
        shutil.rmtree(self.work.parent, ignore_errors=True)  # its folder: work, scratch, kernel
        return ended


class ClassSandbox:
    """What every notebook's sandbox of a grading run shares: the student kit, the cluster's
    session folder and the read-only binds; :meth:`box` makes one notebook's."""

    def __init__(self, cluster: ClusterHandle) -> None:
        check_sandbox()
        self.root = Path(tempfile.mkdtemp(prefix="workbook-grading-"))
        os.chmod(self.root, 0o711)  # the boxes' own folders are inside, reachable by them
        try:
            self.kit = self.root / "kit"
            build_kit(self.kit)
            (self.kit / ".venv").mkdir(exist_ok=True)  # where the environment is mounted
            self.session = self._open_node_sockets(cluster)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        self._next_uid = UID_BASE
        self.venv = Path(sys.prefix)

    @staticmethod
    def _open_node_sockets(cluster: ClusterHandle) -> Path | None:
        """The Ray folder of the node this process connects through (a driver connects through
        its own machine's raylet), whose raylet and object-store sockets are opened to the
        sandboxes' users (a driver connects to them; they are made for the cluster's user
        only). None when that folder is not on this machine."""
        import ray

        cluster.connect()
        node = ray._private.worker.global_worker.node
        temp = Path(node.get_temp_dir_path())
        if not temp.is_dir():
            return None
        for socket in (node.raylet_socket_name, node.plasma_store_socket_name):
            if socket and Path(socket).exists():
                os.chmod(socket, 0o777)
        return temp

    def _free_uid(self) -> int:
        while not _uid_free(self._next_uid):
            self._next_uid += 1
        uid, self._next_uid = self._next_uid, self._next_uid + 1
        return uid

    def box(self, token_path: str | os.PathLike[str] | None) -> Box:
        """A new sandbox for one notebook (a fresh user id, folders and kernelspec)."""
        uid = self._free_uid()
        home = Path(tempfile.mkdtemp(prefix=f"box-{uid}-", dir=self.root))
        work, scratch = home / "work", home / "scratch"
        for folder in (home, work, scratch):
            folder.mkdir(exist_ok=True)
            os.chown(folder, uid, uid)
            os.chmod(folder, 0o700)
        token = None
        if token_path and Path(token_path).is_file():
            token = work / ".ray_auth_token"
            shutil.copyfile(token_path, token)
            os.chown(token, uid, uid)
            os.chmod(token, 0o600)
        kernel_dir = home / "kernels"
        spec = kernel_dir / "sandboxed"
        spec.mkdir(parents=True)
        env = {
            "HOME": str(work),
            "WORKBOOK_SCRATCH": str(scratch),
            "RAY_AUTH_TOKEN_PATH": str(token or ""),
            # The driver's event log would go to a folder of the cluster's user only.
            "RAY_event_log_reporter_enabled": "0",
            "PYTHONUNBUFFERED": "1",
        }
        if model_cache_root().is_dir():  # read-only in the box: found there, not rebuilt
            env["WORKBOOK_MODEL_CACHE"] = str(model_cache_root().resolve())
        spec.joinpath("kernel.json").write_text(
            json.dumps(
                {
                    "argv": self._argv(uid, home, env),
                    "display_name": f"sandboxed kernel (uid {uid})",
                    "language": "python",
                    "interrupt_mode": "message",  # a signal to bwrap would not reach it
                }
            )
        )
        return Box(uid, work, scratch, token, kernel_dir, "sandboxed")

    def _argv(self, uid: int, home: Path, env: dict[str, str]) -> list[str]:
        ro = [p for p in _SYSTEM_RO if Path(p).exists()]
        ro_extra = [Path(sys.base_prefix).resolve()]
        models = model_cache_root()
        if models.is_dir():
            ro_extra.append(models.resolve())
        repo = REPO_ROOT.resolve()
        rw = [home] + ([self.session] if self.session else [])
        venv_outside = not self.venv.resolve().is_relative_to(repo)
        mounts = [str(p) for p in (*ro_extra, repo, *rw)] + (
            [str(self.venv)] if venv_outside else []
        )
        argv = ["bwrap", "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-uts"]
        for system in ro:
            argv += ["--ro-bind", system, system]
        argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for folder in _ancestors(mounts + [_CONNECTION]):
            argv += ["--perms", "0755", "--dir", folder]
        for path in ro_extra:
            argv += ["--ro-bind", str(path), str(path)]
        argv += ["--ro-bind", str(self.kit), str(repo)]
        argv += ["--ro-bind", str(self.venv), str(self.venv)]  # in the kit's empty .venv, or apart
        for own in rw:
            argv += ["--bind", str(own), str(own)]
        argv += ["--ro-bind", "{connection_file}", _CONNECTION]
        for key, value in env.items():
            argv += ["--setenv", key, value]
        argv += ["--chdir", str(home / "work")]
        conn = home / "work" / ".connection.json"
        python = Path(sys.prefix) / "bin" / "python"
        start = (
            f"cp {_CONNECTION} {shlex.quote(str(conn))} && chown {uid}:{uid} "
            f"{shlex.quote(str(conn))} && exec setpriv --reuid={uid} --regid={uid} "
            f"--clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all "
            f"{shlex.quote(str(python))} -m ipykernel_launcher -f {shlex.quote(str(conn))}"
        )
        return [*argv, "--", "/bin/sh", "-c", start]

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
