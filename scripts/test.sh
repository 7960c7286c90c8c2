#!/usr/bin/env bash
# The whole test suite: unit tests of the helpers against real Ray, then every notebook under
# nbval with the CI profile's parameters. Extra arguments go to pytest (e.g. -k cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_env.sh
bash scripts/ensure_browser.sh || true  # Chromium for the JupyterLab test, which names what is missing
PY=.venv/bin/python
rm -rf build/nbval
"$PY" -m helpers.runner --profile ci --prepare-only build/nbval >/dev/null
# Two pytest-xdist workers (WORKBOOK_TEST_WORKERS): a notebook waits on Ray and Serve for much of
# its run, so two at a time use 2 cores well. --dist loadfile keeps each notebook's cells (and
# each test file) on one worker, in order. Nodes of the clusters start one at a time
# (helpers.cluster), so two workers do not crowd each other out of Ray's start-up windows.
exec "$PY" -m pytest tests build/nbval -n "${WORKBOOK_TEST_WORKERS:-2}" --dist loadfile \
  --durations=25 -m "not extended" \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
  --nbval-sanitize-with tests/nbval_sanitize.cfg \
  -p no:cacheprovider "$@"
