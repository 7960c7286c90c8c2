"""Give the sessions of make test's first phase the low CPU priority of their processes.

Usage: ``python scripts/nice_sessions.py PID`` (scripts/test.sh): until process PID ends, every
second, each session (autogroup) holding one of this user's processes at nice 19 gets the
autogroup nice 19 as well; never the watcher's own session (make test's: phase 1 runs in a
session of its own, ``setsid``), nor a kernel thread's.

Why: where the kernel groups processes by session (``/proc/sys/kernel/sched_autogroup_enabled``
is 1, the default of most distributions), it shares the CPU between sessions first and weighs
processes by nice only within one. Every Ray node, Jupyter kernel and Serve CLI call of the
tests starts a session of its own, so ``nice -n 19`` alone gives the first phase an equal
share against the second (measured: two busy loops at nice 19 in sessions of their own took
49 % of a core each beside two at nice 0; with their sessions' nice at 19 too, 1.6 %). A
session's nice is written to ``/proc/PID/autogroup`` by any of its processes' owner (raising it
needs no privilege). Without autogroups, or where the file cannot be written, nice alone
counts and this does nothing.
"""

from __future__ import annotations

import os
import sys
import time

LOW = 19


def _nice_and_start(pid: str) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # gone, or not readable
    return int(fields[16]), fields[19]  # stat's fields 19 (nice) and 22 (start time)


def _autogroup(pid: str | int) -> list[str]:
    """``["/autogroup-N", "nice", "K"]`` (empty without autogroups or if gone)."""
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            return f.read().split()
    except OSError:
        return []


def lower_sessions(seen: set[tuple[str, str]], keep: str) -> None:
    """One pass over /proc; ``seen`` holds the processes already looked at (pid, start time).
    The autogroup named ``keep`` (this watcher's own: make test's, and phase 2's driver) and
    kernel threads (a nice-19 kernel thread's group is everyone's) are never touched."""
    uid = os.getuid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        info = _nice_and_start(pid)
        if info is None or (pid, info[1]) in seen:
            continue
        seen.add((pid, info[1]))  # a process's nice is its parent's from birth: look once
        try:
            if info[0] < LOW or os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if not f.read(1):
                    continue  # a kernel thread
            group = _autogroup(pid)
            if not group or group[0] == keep or group[-1] == str(LOW):
                continue
            with open(f"/proc/{pid}/autogroup", "w") as f:
                f.write(str(LOW))
        except (OSError, ValueError, IndexError):
            continue  # gone, or not allowed: nice alone counts


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python scripts/nice_sessions.py PID", file=sys.stderr)
        return 2
    watched = int(argv[0])
    seen: set[tuple[str, str]] = set()
    own = _autogroup(os.getpid())
    if not own:
        return 0  # no autogroups here: nice alone counts
    while True:
        try:
            os.kill(watched, 0)
        except ProcessLookupError:
            return 0
        lower_sessions(seen, keep=own[0])
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
