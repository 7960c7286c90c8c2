#!/usr/bin/env bash
# The whole test suite: unit tests of the helpers against real Ray, then every notebook under
# nbval with the CI profile's parameters. Extra arguments go to pytest (e.g. -k cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_env.sh
PY=.venv/bin/python
rm -rf build/nbval
"$PY" -m helpers.runner --profile ci --prepare-only build/nbval >/dev/null
exec "$PY" -m pytest tests build/nbval \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
  --nbval-sanitize-with tests/nbval_sanitize.cfg \
  -p no:cacheprovider "$@"
