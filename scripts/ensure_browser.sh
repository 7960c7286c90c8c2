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

if [ ! -x "$CHROMIUM" ] && [ -z "${WORKBOOK_CHROMIUM:-}" ]; then
  echo "(Chromium is missing: a minute or two)"
  bash scripts/apt_install.sh chromium
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
