"""Clear the execution count of every code cell that has no output (a pre-commit hook).

nbstripout runs first with --keep-count: it strips every output except those of cells tagged
``keep_output`` (the golden outputs nbval compares), and keeps execution counts, because nbval
skips a golden cell whose count is empty. This clears the counts it kept on the other cells,
so a committed lesson is what tests/test_notebooks_hygiene.py accepts.

    python scripts/clear_counts.py notebooks/01_ray_cluster_setup.ipynb ...

Exits 1 when it changed a file (pre-commit then shows the change), else 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def clear_counts(path: Path) -> bool:
    """Clear the counts of ``path``'s code cells without outputs; True if the file changed."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    changed = False
    for cell in nb.get("cells", []):
        if (
            cell.get("cell_type") == "code"
            and not cell.get("outputs")
            and cell.get("execution_count") is not None
        ):
            cell["execution_count"] = None
            changed = True
    if changed:  # the layout nbformat and Jupyter write
        text = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        path.write_text(text, encoding="utf-8")
    return changed


def main(argv: list[str]) -> int:
    changed = [name for name in argv if clear_counts(Path(name))]
    for name in changed:
        print(f"cleared execution counts in {name}")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
