"""Ports: find free ones, check one is free, say who holds a busy one.

Usage::

    from helpers.ports import free_port, ensure_port_free
    port = free_port()
    ensure_port_free(8000, purpose="Serve HTTP")   # raises PortInUseError naming the owner
"""

from __future__ import annotations

import socket
import time

import psutil

from helpers.errors import NoFreePortError, PortInUseError

__all__ = [
    "free_port",
    "free_ports",
    "is_port_free",
    "port_owner",
    "ensure_port_free",
    "wait_for_port",
]

_handed_out: set[int] = set()


def is_port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on ``host:port`` and we can bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    # Something may listen on 0.0.0.0 or another address of this port: ask the kernel too.
    return port_owner(port) is None


def free_port(low: int = 20000, high: int = 40000) -> int:
    """A port that is free now and that this process has not handed out before.

    Ports are taken from ``[low, high)`` so they stay clear of Ray's worker-port range
    (10002-19999) and of the Linux ephemeral range.
    """
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            candidate = sock.getsockname()[1]
        if not low <= candidate < high:
            candidate = low + (candidate * 7919) % (high - low)
        if candidate in _handed_out or not is_port_free(candidate):
            continue
        _handed_out.add(candidate)
        return candidate
    raise NoFreePortError(
        f"No free port found in [{low}, {high}) after 500 tries.",
        "stop what holds the ports in that range (`ss -ltnp` lists the listeners), or ask for "
        "a wider range.",
    )


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports."""
    return [free_port() for _ in range(count)]


def port_owner(port: int) -> str | None:
    """'pid 123 (raylet)' for the process listening on ``port``, or None if none is."""
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, PermissionError):  # pragma: no cover - non-root elsewhere
        return None
    for conn in conns:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            if conn.pid is None:
                return "another user's process"
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            return f"pid {conn.pid} ({name})"
    return None


def ensure_port_free(port: int, *, purpose: str = "", host: str = "127.0.0.1") -> None:
    """Raise :class:`PortInUseError` (naming the owner) unless ``port`` is free."""
    if not is_port_free(port, host):
        raise PortInUseError(port, port_owner(port) or "an unknown process", purpose=purpose)


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = 30.0) -> bool:
    """Wait until something accepts connections on ``host:port``; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.2)
    return False
