#!/usr/bin/env bash
# The test suite CI runs: the unit tests of the helpers against real Ray, then the CI
# profile's lessons under nbval with its parameters. Extra arguments go to pytest
# (e.g. -k cluster). `make test-extended` adds what CI leaves out: every lesson, and the tests
# marked extended (the labs' classroom run, the streaming service).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_env.sh
bash scripts/ensure_browser.sh || true  # Chromium for the JupyterLab test, which names what is missing
PY=.venv/bin/python
rm -rf build/nbval
# WORKBOOK_NOTEBOOKS="05 07" runs only these lessons under nbval (a named lesson runs even
# when the profile skips it); "all" names every lesson; "none" runs none (unit tests alone).
NOTEBOOKS="${WORKBOOK_NOTEBOOKS:-}"
[ "$NOTEBOOKS" = all ] && NOTEBOOKS="$(echo notebooks/[0-9][0-9]_*.ipynb)"
TARGETS=(tests build/nbval)
if [ "$NOTEBOOKS" = none ]; then
  TARGETS=(tests)
else
  # shellcheck disable=SC2086  # the names are words
  "$PY" -m helpers.runner --profile ci --prepare-only build/nbval $NOTEBOOKS >/dev/null
fi
# One test at a time by default. WORKBOOK_TEST_WORKERS=2 runs two pytest-xdist workers
# (--dist loadfile keeps a notebook's cells, and a test file, on one worker and in order):
# faster on a machine with spare cores, but on 2 cores two Ray clusters plus vLLM engines
# overload it, and the lessons' timing claims (batching speed-ups, vLLM vs transformers) fail.
exec "$PY" -m pytest "${TARGETS[@]}" -n "${WORKBOOK_TEST_WORKERS:-0}" \
  --dist loadfile --durations=30 -m "not extended" \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
  --nbval-sanitize-with tests/nbval_sanitize.cfg \
  -p no:cacheprovider "$@"
