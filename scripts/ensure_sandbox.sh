#!/usr/bin/env bash
# Make sure the lab grader can run each notebook in its sandbox: Debian's bubblewrap (bwrap)
# and util-linux's setpriv (helpers/labs/sandbox.py). A no-op when both are there; installs
# bubblewrap with apt-get when it is missing and running as root; otherwise says exactly what
# to install and exits 1.
set -euo pipefail

if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing bubblewrap with apt-get (the lab grader's sandbox); a few seconds"
    log="$(mktemp)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y bubblewrap >"$log" 2>&1; then
      # The package lists may be missing or stale on a fresh machine: refresh them once.
      if ! { apt-get update >>"$log" 2>&1 && apt-get install -y bubblewrap >>"$log" 2>&1; }; then
        tail -n 15 "$log" >&2
        rm -f "$log"
        echo "error: apt-get could not install bubblewrap (see above)." >&2
        echo "Fix: run 'apt-get update && apt-get install -y bubblewrap' and read its error." >&2
        exit 1
      fi
    fi
    rm -f "$log"
  fi
fi
for tool in bwrap setpriv; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool is missing; the lab grader runs each notebook in a sandbox with it." >&2
    echo "Fix: as root, apt-get install -y bubblewrap util-linux" >&2
    exit 1
  fi
done
echo "sandbox ready: $(bwrap --version)"
