#!/usr/bin/env bash
# Make sure the JupyterLab browser test has its browser: Debian's Chromium, driven by
# Playwright for Python (from the project's .venv). Playwright's own browser downloads are
# not used. A no-op when Chromium is there; installs it with apt-get when missing and running
# as root; otherwise says exactly what to install and exits 1.
#
#   WORKBOOK_CHROMIUM=/path/to/chromium   use another Chromium binary
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM="${WORKBOOK_CHROMIUM:-/usr/bin/chromium}"
PY=.venv/bin/python

if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ -z "${WORKBOOK_CHROMIUM:-}" ]; then
    echo "installing Chromium with apt-get (Debian's chromium package); a minute or two"
    log="$(mktemp)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y chromium >"$log" 2>&1; then
      # The package lists may be missing or stale on a fresh machine: refresh them once.
      if ! { apt-get update >>"$log" 2>&1 && apt-get install -y chromium >>"$log" 2>&1; }; then
        tail -n 15 "$log" >&2
        rm -f "$log"
        echo "error: apt-get could not install chromium (see above)." >&2
        echo "Fix: run 'apt-get update && apt-get install -y chromium' and read its error." >&2
        exit 1
      fi
    fi
    rm -f "$log"
  fi
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "error: no Chromium at $CHROMIUM; the JupyterLab browser test needs one." >&2
  echo "Fix: install Debian's package as root:  apt-get update && apt-get install -y chromium" >&2
  echo "     (Ubuntu: the chromium snap does not work headless here; use Debian's package," >&2
  echo "     or point WORKBOOK_CHROMIUM at a Chromium/Chrome binary)." >&2
  exit 1
fi
if [ -x "$PY" ] && ! "$PY" -c "import playwright.sync_api" 2>/dev/null; then
  echo "error: the Python package 'playwright' is missing from $PY's environment." >&2
  echo "Fix: make setup  (it installs the project's notebooks extra, which has playwright)." >&2
  exit 1
fi
echo "browser ready: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
