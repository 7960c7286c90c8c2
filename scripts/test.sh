#!/usr/bin/env bash
# The whole test suite: unit tests of the helpers against real Ray, then every notebook under
# nbval with the CI profile's parameters. Extra arguments go to pytest (e.g. -k cluster).
# `make test-extended` runs what CI leaves out: every lesson, and the tests marked extended.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_env.sh
bash scripts/ensure_browser.sh || true  # Chromium for the JupyterLab test, which names what is missing
PY=.venv/bin/python
rm -rf build/nbval
# WORKBOOK_NOTEBOOKS="05 07" names the lessons to run under nbval instead of the CI set (a
# named lesson runs even when the CI profile skips it); "all" names every lesson.
NOTEBOOKS="${WORKBOOK_NOTEBOOKS:-}"
[ "$NOTEBOOKS" = all ] && NOTEBOOKS="$(echo notebooks/[0-9][0-9]_*.ipynb)"
# shellcheck disable=SC2086  # the names are words
"$PY" -m helpers.runner --profile ci --prepare-only build/nbval $NOTEBOOKS >/dev/null
# One test at a time by default. WORKBOOK_TEST_WORKERS=2 runs two pytest-xdist workers
# (--dist loadfile keeps a notebook's cells and a test file on one worker, in order): faster
# on a machine with spare cores, but on 2 cores two Ray clusters plus a vLLM engine overload
# it and Ray's dashboard or a raylet then misses its start-up window.
exec "$PY" -m pytest tests build/nbval -n "${WORKBOOK_TEST_WORKERS:-0}" --dist loadfile \
  --durations=25 -m "not extended" \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
  --nbval-sanitize-with tests/nbval_sanitize.cfg \
  -p no:cacheprovider "$@"
