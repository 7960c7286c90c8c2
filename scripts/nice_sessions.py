"""Give the sessions of make test's first phase the low CPU priority of their processes.

Usage: ``python scripts/nice_sessions.py PID`` (scripts/test.sh): until process PID ends, every
second, each session (autogroup) holding one of this user's processes at nice 19 gets the
autogroup nice 19 as well.

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


def lower_sessions(seen: set[tuple[str, str]]) -> None:
    """One pass over /proc; ``seen`` holds the processes already looked at (pid, start time)."""
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
            path = f"/proc/{pid}/autogroup"
            with open(path) as f:
                if f.read().split()[-1] == str(LOW):
                    continue
            with open(path, "w") as f:
                f.write(str(LOW))
        except (OSError, ValueError, IndexError):
            continue  # gone, no autogroups, or not allowed: nice alone counts


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python scripts/nice_sessions.py PID", file=sys.stderr)
        return 2
    watched = int(argv[0])
    seen: set[tuple[str, str]] = set()
    while True:
        try:
            os.kill(watched, 0)
        except ProcessLookupError:
            return 0
        lower_sessions(seen)
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
