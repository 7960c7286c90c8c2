"""The per-notebook leak check (conftest.py) fails a notebook that leaves a cluster running.

nbval kills each notebook's kernel outright, so a notebook whose cleanup cell is missing
leaves its Ray nodes behind. This runs such a notebook under nbval in a child pytest and checks
that the leak is reported, named, and ended (by process id).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import psutil

from helpers.paths import REPO_ROOT

LEAKY_CELLS = [
    "from helpers.cluster import start_local_cluster\n"
    "cluster = start_local_cluster(num_cpus=1, include_dashboard=False)\n"
    "open(os.environ['LEAK_PIDFILE'], 'w').write(str(cluster.nodes_started[0].pid))",
    "assert cluster.running  # and no cleanup cell follows",
]


def test_notebook_that_leaves_a_cluster_fails_and_is_cleaned(
    isolated_workbook_scratch: Path,
) -> None:
    folder = REPO_ROOT / "build" / "leakcheck"  # under the repo, so conftest.py applies
    folder.mkdir(parents=True, exist_ok=True)
    notebook = folder / "leaky.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os")] + [
        nbformat.v4.new_code_cell(c) for c in LEAKY_CELLS
    ]
    nbformat.write(nb, notebook)
    pidfile = isolated_workbook_scratch / "leader.pid"
    env = dict(
        os.environ, LEAK_PIDFILE=str(pidfile), WORKBOOK_SCRATCH=str(isolated_workbook_scratch)
    )

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(notebook),
            "--nbval-lax",
            "--nbval-current-env",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "leaky.ipynb left processes or ports behind" in output, output
    assert "cluster-" in output  # the leftover is named
    leader = int(pidfile.read_text())
    assert not psutil.pid_exists(leader) or psutil.Process(leader).status() == psutil.STATUS_ZOMBIE
