#!/usr/bin/env bash
# The test suite CI runs, in four phases:
#   0. lint and types: `ruff check` (code and notebooks) and `mypy` (helpers/), configured in
#      pyproject.toml; a few seconds. A failure here fails the run, after the other phases ran;
#   1. the unit tests of the helpers against real Ray (tests/), on two pytest-xdist workers;
#   2. the lessons whose CI profile entry says `shares_machine: true` (they assert nothing
#      about speed or timing), under nbval, two at a time, with the tests marked `beside`
#      (a test that runs lessons on a cluster of its own and measures nothing);
#   3. the tests marked `alone`, one at a time: the labs' classroom run, then every other lesson
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
t_env=$((SECONDS - t0))
PY=.venv/bin/python
rm -rf build/nbval
# WORKBOOK_NOTEBOOKS="05 07" runs only these lessons under nbval; "none" runs none; empty (the
# default) runs every lesson.
NOTEBOOKS="${WORKBOOK_NOTEBOOKS:-}"
# WORKBOOK_TEST_WORKERS: xdist workers of phase 1 (0: in this process, one test at a time).
# Two suit 2 cores: most of a unit test's time is Ray starting processes and waiting for them.
# --dist loadfile keeps a test file on one worker, in order (its module fixtures are shared);
# --no-loadscope-reorder keeps conftest.py's order, the longest files first (tests/durations.json).
WORKERS="${WORKBOOK_TEST_WORKERS:-2}"
COMMON=(--durations=20 -p no:cacheprovider)  # each phase ends with its 20 slowest items
# pytest-timeout: a hung test fails alone instead of hanging CI until its time limit. A unit
# test may take WORKBOOK_TEST_TIMEOUT_S (its cluster's start included; the slowest measured
# took well under it); a lesson's cell has nbval's own 900 s, and the tests of phases 2 and 3
# (a lesson's cell, the classroom run) get 30 minutes each as a backstop.
UNIT_TIMEOUT=(--timeout="${WORKBOOK_TEST_TIMEOUT_S:-600}")
LONG_TIMEOUT=(--timeout=1800)

set +e
t0l=$SECONDS
echo "lint and types: ruff check, mypy"
"$PY" -m ruff check . && "$PY" -m mypy
lint=$?
t_lint=$((SECONDS - t0l))
t1=$SECONDS
rm -f build/test-unit.xml build/test-alone.xml
"$PY" -m pytest tests -n "$WORKERS" --dist loadfile --no-loadscope-reorder \
  -m "not alone and not beside" "${COMMON[@]}" \
  "${UNIT_TIMEOUT[@]}" --junitxml=build/test-unit.xml "$@"
unit=$?
t_unit=$((SECONDS - t1))
t2=$SECONDS
TARGETS=(tests)
SHARING=()
NBVAL=(--nbval-lax --nbval-current-env --nbval-cell-timeout=900
       --nbval-sanitize-with tests/nbval_sanitize.cfg)
rm -f build/test-sharing.xml
if [ "$NOTEBOOKS" != none ]; then
  # shellcheck disable=SC2086  # the names are words
  "$PY" -m helpers.runner --profile ci --prepare-only build/nbval $NOTEBOOKS >/dev/null || exit 1
  TARGETS+=(build/nbval)
  # Lessons whose CI entry says shares_machine (they assert nothing about speed or timing)
  # run two at a time, one per xdist worker, each with its own cluster; the others after
  # them, one at a time.
  # shellcheck disable=SC2086
  mapfile -t SHARING < <("$PY" -m helpers.runner --profile ci --list-sharing $NOTEBOOKS)
fi
# Phase 2: those lessons and the test files with tests marked `beside` (conftest.py orders
# them all longest first).
SHARED_FILES=(tests/test_shared_lessons.py)
for stem in "${SHARING[@]}"; do
  SHARED_FILES+=("build/nbval/$stem.ipynb")
  TARGETS+=("--ignore=build/nbval/$stem.ipynb")
done
"$PY" -m pytest "${SHARED_FILES[@]}" -n 2 --dist loadfile --no-loadscope-reorder \
  "${COMMON[@]}" "${LONG_TIMEOUT[@]}" --junitxml=build/test-sharing.xml "${NBVAL[@]}" "$@"
sharing=$?
t_sharing=$((SECONDS - t2))
t3=$SECONDS
"$PY" -m pytest "${TARGETS[@]}" -m alone "${COMMON[@]}" "${LONG_TIMEOUT[@]}" \
  --junitxml=build/test-alone.xml "${NBVAL[@]}" "$@"
lessons=$?
if [ "$lessons" -eq 5 ]; then lessons=$sharing  # phase 3 ran nothing: phase 2 decides
elif [ "$sharing" -ne 0 ] && [ "$sharing" -ne 5 ]; then lessons=$sharing; fi
t_alone=$((SECONDS - t3))
set -e
"$PY" scripts/time_table.py build/test-unit.xml build/test-sharing.xml build/test-alone.xml || true
minutes() { awk -v s="$1" 'BEGIN { printf "%.1f", s / 60 }'; }
printf '\n%-48s %8s %8s\n' "phase of make test" "minutes" "seconds"
row() { printf '%-48s %8s %8s\n' "$1" "$(minutes "$2")" "$2"; }
row "environment and browser check" "$t_env"
row "lint and types (ruff, mypy)" "$t_lint"
row "unit tests ($WORKERS workers)" "$t_unit"
row "lessons that share the machine (two at a time)" "$t_sharing"
row "classroom run and lessons (one at a time)" "$t_alone"
row "total" $((SECONDS - t0))
# pytest's 5 is "no tests collected": fine in one phase (a -k that names only unit tests),
# a failure when neither phase ran anything.
ok() { [ "$1" -eq 0 ] || [ "$1" -eq 5 ]; }
if [ "$lint" -eq 0 ] && ok "$unit" && ok "$lessons" \
   && ! { [ "$unit" -eq 5 ] && [ "$lessons" -eq 5 ]; }; then
  echo "tests passed (lint and types: exit 0, unit tests: exit $unit, tests alone and lessons: exit $lessons)"
  exit 0
fi
echo "tests FAILED (lint and types: exit $lint, unit tests: exit $unit, tests alone and lessons:" \
     "exit $lessons; 0 is a pass, 5 ran nothing)" >&2
exit 1
