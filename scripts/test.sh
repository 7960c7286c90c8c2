#!/usr/bin/env bash
# The whole test suite, what CI runs: the unit tests of the helpers against real Ray, every
# lesson under nbval with the CI profile's parameters, and the labs' classroom run (solutions
# under nbval, the generated student versions graded). Extra arguments go to pytest
# (e.g. -k cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_env.sh
bash scripts/ensure_browser.sh || true  # Chromium for the JupyterLab test, which names what is missing
PY=.venv/bin/python
rm -rf build/nbval
# WORKBOOK_NOTEBOOKS="05 07" runs only these lessons under nbval (a named lesson runs even
# when the profile skips it); WORKBOOK_NOTEBOOKS=none runs none (the unit tests alone).
NOTEBOOKS="${WORKBOOK_NOTEBOOKS:-}"
TARGETS=(tests build/nbval)
if [ "$NOTEBOOKS" = none ]; then
  TARGETS=(tests)
else
  # shellcheck disable=SC2086  # the names are words
  "$PY" -m helpers.runner --profile ci --prepare-only build/nbval $NOTEBOOKS >/dev/null
fi
# Two pytest-xdist workers (WORKBOOK_TEST_WORKERS=0: one test at a time, in this process).
# --dist loadfile keeps a notebook's cells, and a test file, on one worker and in order;
# conftest.py hands the longest files out first (--no-loadscope-reorder keeps that order),
# so the two workers finish close together.
exec "$PY" -m pytest "${TARGETS[@]}" -n "${WORKBOOK_TEST_WORKERS:-2}" \
  --dist loadfile --no-loadscope-reorder --durations=30 \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
  --nbval-sanitize-with tests/nbval_sanitize.cfg \
  -p no:cacheprovider "$@"
