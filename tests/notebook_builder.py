"""Small notebooks built in code, for the tests of labs and lessons (regions, checks, proofs)."""

from __future__ import annotations

import nbformat


def notebook(*cells: tuple[str, str, list[str]]) -> nbformat.NotebookNode:
    """A Python 3 notebook of ``(kind, text, tags)`` cells ("md" or "code"), ids c0, c1, ..."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for i, (kind, text, tags) in enumerate(cells):
        cell = (
            nbformat.v4.new_markdown_cell(text) if kind == "md" else nbformat.v4.new_code_cell(text)
        )
        cell.id = f"c{i}"
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb
