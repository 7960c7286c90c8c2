#!/usr/bin/env bash
# Make sure the lab grader can run each notebook in its sandbox: Debian's bubblewrap (bwrap)
# and util-linux's setpriv (helpers/labs/sandbox.py). A no-op when both are there; installs
# bubblewrap with apt-get when it is missing and running as root; otherwise says exactly what
# to install and exits 1.
set -euo pipefail

if ! command -v bwrap >/dev/null 2>&1; then
  bash "$(dirname "$0")/apt_install.sh" bubblewrap
fi
for tool in bwrap setpriv; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool is missing; the lab grader runs each notebook in a sandbox with it." >&2
    echo "Fix: as root, apt-get install -y bubblewrap util-linux" >&2
    exit 1
  fi
done
echo "sandbox ready: $(bwrap --version)"
