"""The package's own modules are imported at the top of files (issue 25).

A project import (``import helpers...``, ``from helpers... import``, a relative import)
inside a function or method body hides a dependency from the reader and from import-cycle
checks. The ones that stay inside a function are listed here, each with its reason; anything
else fails this test. Heavy third-party packages (ray, torch, vllm, pandas, transformers ...)
may still be imported inside functions: that is not checked here.

To add one: move the import to the top of the file if you can. If it must stay, add the
file (``WHOLE_FILES``, for a file whose every lazy import has the same reason) or the file and
the module it imports (``ALLOWED``) with the reason. Pure AST: no import, no cluster.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers.paths import REPO_ROOT

# --- the reasons ------------------------------------------------------------------------------

ENTRY_POINT = (
    "a command-line entry point: each subcommand imports only what it runs, so "
    "`list` or `generate` does not load the grader, nbclient or the proof machinery"
)
REPLICA = (
    "lesson 12's case study, whose modules run in Ray actors and Serve replicas as well "
    "as in the driver: each keeps what only some of its functions (and processes) need "
    "inside them; the package imports nothing (helpers/streaming/__init__.py)"
)
HEAVY_MATPLOTLIB = (
    "helpers.plotting imports matplotlib (0.5-1.2 s): only the functions that draw load it"
)
HEAVY_RAY_SERVE = (
    "the application module imports ray.serve, FastAPI and pandas (1.3 s): every "
    "lab kernel imports the checks, only lab 02's and 07's hidden checks use it"
)
HEAVY_NBFORMAT = (
    "helpers.labs.notebooks imports nbformat and jsonschema: every lab kernel "
    "imports the session, only a hint reads a notebook"
)
HEAVY_RAY_LLM = (
    "helpers.llm_callbacks subclasses ray.llm's callback base (ray, 0.45 s): only "
    "make_llm_config needs it, and it imports ray.serve.llm there anyway"
)

#: Files whose every project import inside a function is allowed, for one reason.
WHOLE_FILES: dict[str, str] = {
    "helpers/labs/__main__.py": ENTRY_POINT,
    "helpers/lessons/__main__.py": ENTRY_POINT,
    "helpers/streaming/actors.py": REPLICA,
    "helpers/streaming/api.py": REPLICA,
    "helpers/streaming/client.py": REPLICA,
    "helpers/streaming/evaluation.py": REPLICA,
    "helpers/streaming/model.py": REPLICA,
    "helpers/streaming/serve_app.py": REPLICA,
    "helpers/streaming/serve_deploy.py": REPLICA,
}

#: (file, module it imports inside a function): the reason.
ALLOWED: dict[tuple[str, str], str] = {
    ("helpers/autoscaling.py", "helpers.plotting"): HEAVY_MATPLOTLIB,
    ("helpers/evaluation.py", "helpers.plotting"): HEAVY_MATPLOTLIB,
    ("helpers/labs/hidden_checks.py", "helpers.apps.configurable"): HEAVY_RAY_SERVE,
    ("helpers/labs/session.py", "helpers.labs.notebooks"): HEAVY_NBFORMAT,
    ("helpers/llm.py", "helpers.llm_callbacks"): HEAVY_RAY_LLM,
}


# --- the scan ---------------------------------------------------------------------------------


def _package_of(rel: str) -> list[str]:
    """``helpers/labs/kit.py`` -> ``["helpers", "labs"]`` (an ``__init__.py``'s own package)."""
    return rel.split("/")[:-1]


def project_imports_in_functions(path: Path, rel: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every project import inside a function or method of ``path``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            if in_function and isinstance(child, ast.Import):
                found.extend(
                    (child.lineno, a.name)
                    for a in child.names
                    if a.name == "helpers" or a.name.startswith("helpers.")
                )
            elif in_function and isinstance(child, ast.ImportFrom):
                module = child.module or ""
                if child.level:  # relative: resolve it against the file's package
                    package = _package_of(rel)
                    base = package[: len(package) - (child.level - 1)]
                    found.append((child.lineno, ".".join([*base, module] if module else base)))
                elif module == "helpers" or module.startswith("helpers."):
                    found.append((child.lineno, module))
            visit(child, inside)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


def scan(root: Path = REPO_ROOT) -> dict[str, list[tuple[int, str]]]:
    """Every ``helpers/**/*.py`` with project imports inside functions: ``{file: [(line, module)]}``."""
    result = {}
    for path in sorted((root / "helpers").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        found = project_imports_in_functions(path, rel)
        if found:
            result[rel] = found
    return result


def not_allowed(found: dict[str, list[tuple[int, str]]]) -> list[str]:
    return [
        f"{rel}:{line}: imports {module} inside a function"
        for rel, imports in found.items()
        if rel not in WHOLE_FILES
        for line, module in imports
        if (rel, module) not in ALLOWED
    ]


# --- the tests --------------------------------------------------------------------------------


def test_project_imports_sit_at_the_top_of_files() -> None:
    problems = not_allowed(scan())
    assert not problems, (
        "Project imports inside a function (move them to the top of the file; if one must "
        "stay, add it to the allowlist in tests/test_imports_at_top.py with its reason):\n  "
        + "\n  ".join(problems)
    )


def test_every_allowlist_entry_is_still_needed() -> None:
    """An entry whose import has moved to the top (or whose file is gone) is removed, so the
    allowlist says what is true today."""
    found = scan()
    stale = [rel for rel in WHOLE_FILES if rel not in found]
    stale += [
        f"{rel} -> {module}"
        for rel, module in ALLOWED
        if module not in {m for _, m in found.get(rel, [])}
    ]
    assert not stale, f"allowlist entries with no import inside a function any more: {stale}"


def test_a_new_import_inside_a_function_is_caught(tmp_path: Path) -> None:
    """The scan sees absolute and relative project imports in functions and methods, at any
    depth, and leaves module-level, ``TYPE_CHECKING`` and third-party imports alone."""
    package = tmp_path / "helpers" / "sub"
    package.mkdir(parents=True)
    (package / "mod.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from helpers.errors import WorkbookError\n"
        "if TYPE_CHECKING:\n"
        "    from helpers.cluster import ClusterHandle\n"
        "def f():\n"
        "    import ray\n"
        "    from helpers.ports import free_port\n"
        "class C:\n"
        "    def m(self):\n"
        "        if True:\n"
        "            import helpers.waiting\n"
        "        def inner():\n"
        "            from . import other\n"
        "            from ..paths import REPO_ROOT\n"
    )
    assert scan(tmp_path) == {
        "helpers/sub/mod.py": [
            (7, "helpers.ports"),
            (11, "helpers.waiting"),
            (13, "helpers.sub"),
            (14, "helpers.paths"),
        ]
    }
    assert len(not_allowed(scan(tmp_path))) == 4
