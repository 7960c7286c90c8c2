#!/usr/bin/env bash
# The test suite CI runs, in three phases:
#   0. lint, format and types: `ruff check` (code and notebooks), `ruff format --check` (the
#      Python files) and `mypy` (helpers/), configured in
#      pyproject.toml; a few seconds. A failure here fails the run, after the other phases ran;
#   1. on two pytest-xdist workers, longest files first: the unit tests of the helpers against
#      real Ray (tests/), the lessons whose CI profile entry says `shares_machine: true` (they
#      assert nothing about speed or timing) under nbval, and the tests marked `beside` (they
#      run lessons on a cluster of their own and measure nothing). One run, not two phases: the
#      machine is busy throughout (99% of both cores measured) and no worker waits for the
#      other phase's last long file;
#   2. the tests marked `alone`, one at a time: the labs' classroom run, then every other lesson
#      under nbval with the CI profile's parameters (their measured claims - vLLM vs
#      transformers, batching, autoscaling within 30 s, deploy to first token - need the
#      machine to themselves). A lesson with "Your turn" tasks runs as its proof notebook
#      (the runner's --prepare-only writes it): each task's check must fail on the blank
#      task, then pass on the answer (helpers/lessons/proof.py).
# Extra arguments go to pytest in every phase (e.g. -k cluster). At the end: the time of each
# test file and notebook (scripts/time_table.py), then of each phase.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
bash scripts/ensure_env.sh
bash scripts/ensure_browser.sh || true  # Chromium for the JupyterLab test, which names what is missing
bash scripts/ensure_sandbox.sh || true  # bubblewrap for the lab grader, which names what is missing
t_env=$((SECONDS - t0))
PY=.venv/bin/python
rm -rf build/nbval
# WORKBOOK_NOTEBOOKS="05 07" runs only these lessons under nbval; "none" runs none; empty (the
# default) runs every lesson.
NOTEBOOKS="${WORKBOOK_NOTEBOOKS:-}"
# WORKBOOK_TEST_WORKERS: xdist workers of phase 1 (0: in this process, one test at a time).
# Two suit 2 cores: three were no faster (897 s against 865 s), the CPU being the limit.
# --dist loadfile keeps a test file on one worker, in order (its module fixtures are shared);
# --no-loadscope-reorder keeps conftest.py's order, the longest files first (tests/durations.json).
WORKERS="${WORKBOOK_TEST_WORKERS:-2}"
COMMON=(--durations=20 -p no:cacheprovider)  # each phase ends with its 20 slowest items
# pytest-timeout: a hung test fails alone instead of hanging CI until its time limit. A unit
# test may take WORKBOOK_TEST_TIMEOUT_S (its cluster's start included; the slowest measured
# took well under it); a lesson's cell has nbval's own 900 s and 30 minutes as a backstop
# (conftest.py marks it), as have the tests of phase 2 (the classroom run).
UNIT_TIMEOUT=(--timeout="${WORKBOOK_TEST_TIMEOUT_S:-600}")
LONG_TIMEOUT=(--timeout=1800)

set +e
t0l=$SECONDS
echo "lint, format and types: ruff check, ruff format --check, mypy"
"$PY" -m ruff check . && "$PY" -m ruff format --check . && "$PY" -m mypy
lint=$?
t_lint=$((SECONDS - t0l))
t1=$SECONDS
rm -f build/test-unit.xml build/test-alone.xml build/proof-results.jsonl build/item-times.jsonl
# Each "Your turn" proof step records how long its check took (scripts/time_table.py prints the
# slowest checks of blank tasks: a check that waits out a timeout before failing).
export WORKBOOK_PROOF_RESULTS="${WORKBOOK_PROOF_RESULTS:-$PWD/build/proof-results.jsonl}"
# Each test item's start, end, process and scratch folder (conftest.py), for a CPU profile of the
# run: a sampler of /proc can then say which test each process's CPU time belongs to.
export WORKBOOK_ITEM_TIMES="${WORKBOOK_ITEM_TIMES:-$PWD/build/item-times.jsonl}"
TARGETS=(tests)
NBVAL=(--nbval-lax --nbval-current-env --nbval-cell-timeout=900
       --nbval-sanitize-with tests/nbval_sanitize.cfg)
SHARING=()
if [ "$NOTEBOOKS" != none ]; then
  # shellcheck disable=SC2086  # the names are words
  "$PY" -m helpers.runner --profile ci --prepare-only build/nbval $NOTEBOOKS >/dev/null || exit 1
  TARGETS+=(build/nbval)
  # The lessons whose CI entry says shares_machine (they assert nothing about speed or timing):
  # conftest.py marks their cells `beside` (the others' `alone`).
  # shellcheck disable=SC2086
  mapfile -t SHARING < <("$PY" -m helpers.runner --profile ci --list-sharing $NOTEBOOKS)
fi
export WORKBOOK_BESIDE="${SHARING[*]}"
# Phase 1: the unit tests, the lessons that share the machine and the tests marked `beside`,
# WORKERS at a time, longest files first (conftest.py); a lesson's cells on one worker, in order.
"$PY" -m pytest "${TARGETS[@]}" -n "$WORKERS" --dist loadfile --no-loadscope-reorder \
  -m "not alone" "${COMMON[@]}" "${UNIT_TIMEOUT[@]}" --junitxml=build/test-unit.xml \
  "${NBVAL[@]}" "$@"
unit=$?
t_unit=$((SECONDS - t1))
t3=$SECONDS
# Phase 2: the tests marked `alone` - the classroom run, every other lesson - one at a time.
"$PY" -m pytest "${TARGETS[@]}" -m alone "${COMMON[@]}" "${LONG_TIMEOUT[@]}" \
  --junitxml=build/test-alone.xml "${NBVAL[@]}" "$@"
lessons=$?
t_alone=$((SECONDS - t3))
set -e
"$PY" scripts/time_table.py build/test-unit.xml build/test-alone.xml "$WORKBOOK_PROOF_RESULTS" || true
minutes() { awk -v s="$1" 'BEGIN { printf "%.1f", s / 60 }'; }
printf '\n%-48s %8s %8s\n' "phase of make test" "minutes" "seconds"
row() { printf '%-48s %8s %8s\n' "$1" "$(minutes "$2")" "$2"; }
row "environment and browser check" "$t_env"
row "lint, format and types (ruff, mypy)" "$t_lint"
row "unit tests, lessons sharing ($WORKERS workers)" "$t_unit"
row "classroom run and lessons (one at a time)" "$t_alone"
row "total" $((SECONDS - t0))
# pytest's 5 is "no tests collected": fine in one phase (a -k that names only unit tests),
# a failure when neither phase ran anything.
ok() { [ "$1" -eq 0 ] || [ "$1" -eq 5 ]; }
if [ "$lint" -eq 0 ] && ok "$unit" && ok "$lessons" \
   && ! { [ "$unit" -eq 5 ] && [ "$lessons" -eq 5 ]; }; then
  echo "tests passed (lint, format and types: exit 0, unit tests: exit $unit, tests alone and lessons: exit $lessons)"
  exit 0
fi
echo "tests FAILED (lint, format and types: exit $lint, unit tests: exit $unit, tests alone and lessons:" \
     "exit $lessons; 0 is a pass, 5 ran nothing)" >&2
exit 1
