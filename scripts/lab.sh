#!/usr/bin/env bash
# `make lab`: JupyterLab on notebooks/ with the project's kernel, listening on 127.0.0.1 only.
#
# It first registers the project's environment as a named Jupyter kernel for this user,
# "Ray Serve Workbook (.venv)" (name ray-serve-workbook), so that a JupyterLab or VS Code you
# already run can pick it too. Extra arguments go to JupyterLab (e.g. --no-browser).
#
#   LAB_PORT=8888   the port (default 8888)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT="${LAB_PORT:-8888}"

"$PY" -m ipykernel install --user --name ray-serve-workbook \
  --display-name "Ray Serve Workbook (.venv)" >/dev/null
echo "kernel registered: 'Ray Serve Workbook (.venv)' (ray-serve-workbook) for $(id -un);" \
     "pick it in any JupyterLab or VS Code"

args=(--notebook-dir=notebooks --ServerApp.ip=127.0.0.1 "--ServerApp.port=$PORT"
      --ServerApp.port_retries=0)
if [ "$(id -u)" = 0 ]; then
  # Jupyter refuses to start as root ("Running as root is not recommended. Use --allow-root to
  # bypass."). In a container or a cloud VM root is often the only user: start anyway, say so.
  echo "warning: you are root. JupyterLab refuses root unless told otherwise, so it starts with" \
       "--allow-root: its kernels run as root, and anyone with its token can do anything on" \
       "this machine. It listens on 127.0.0.1 only; reach it from elsewhere through an SSH" \
       "tunnel. To avoid this, run 'make lab' as an ordinary user." >&2
  args+=(--allow-root)
fi
exec "$PY" -m jupyterlab "${args[@]}" "$@"
