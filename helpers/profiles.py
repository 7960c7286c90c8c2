"""Run profiles: which parameters each notebook gets in a headless run.

A profile is a YAML file in ``configs/profiles/`` (``ci.yaml`` small and fast, ``full.yaml``
the learner defaults)::

    description: what this profile is for
    defaults:
      timeout_s: 900            # per notebook, wall clock
    notebooks:
      01_ray_cluster_setup:
        timeout_s: 600
        parameters:
          worker_nodes: 1
    labs:                       # the same, for the labs' source notebooks (labs/source/)
      lab01_first_deployment:
        parameters:
          replicas: 2

Everything is checked against the notebooks themselves: an unknown notebook, key or
parameter, or a value of the wrong type, is a :class:`ProfileError` / :class:`ParameterError`
that names the closest valid spelling. Values out of range are refused too: a ``timeout_s``
that is not a number > 0; a negative number for any parameter (also inside a list); 0 for a
parameter that counts or times something that must be there (a name with ``replicas`` in
it, or ending in ``concurrency``, ``requests``, ``users``, ``tokens``, ``batch_size(s)``,
``actors``, ``timeout_s``, ``max_num_seqs`` or ``max_model_len``); and a share (``..._share``,
``..._weight``, ``..._utilization``, ``..._alpha``, ``..._fraction(s)``) outside 0..1.

Usage::

    from helpers.profiles import load_profile
    profile = load_profile("ci")
    profile.parameters_for("01_ray_cluster_setup")
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from helpers.errors import ParameterError, ProfileError, closest
from helpers.paths import CONFIGS_DIR, LABS_DIR, NOTEBOOKS_DIR

__all__ = [
    "Profile",
    "NotebookSettings",
    "load_profile",
    "available_profiles",
    "notebook_parameters",
    "list_notebooks",
    "list_labs",
    "check_parameters",
]

PROFILES_DIR = CONFIGS_DIR / "profiles"
_TOP_KEYS = {"description", "defaults", "notebooks", "labs"}
_ENTRY_KEYS = {"timeout_s", "parameters", "skip", "shares_machine"}
_DEFAULT_TIMEOUT_S = 900.0


def _suggest(word: str, options: Any) -> str:
    close = closest(word, options, cutoff=0.5)
    return f" Did you mean {close!r}?" if close else ""


def list_notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The numbered lessons, in order: ``NN_slug.ipynb``, and the parts of a split lesson
    (``02a_slug.ipynb``, ``02b_slug.ipynb``), each part after the one before it."""
    found = set(folder.glob("[0-9][0-9]_*.ipynb")) | set(folder.glob("[0-9][0-9][a-z]_*.ipynb"))
    return sorted(found, key=lambda p: p.stem.split("_", 1)[0])


def list_labs(folder: Path = LABS_DIR / "source") -> list[Path]:
    """The labs' source notebooks (``labNN_slug.ipynb``), in order."""
    return sorted(folder.glob("lab[0-9][0-9]_*.ipynb"))


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def notebook_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """The notebook's parameters cell as ``{name: {"default": ..., "type": ..., "help": ...}}``."""
    import papermill as pm

    info = pm.inspect_notebook(str(path))
    out = {}
    for name, spec in info.items():
        out[name] = {
            "default": spec.get("default"),
            "type": (spec.get("inferred_type_name") or "None").strip(),
            "help": spec.get("help", ""),
        }
    return out


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


_POSITIVE = re.compile(r"replicas|(concurrency|requests|users|tokens|batch_sizes?|actors|"
                       r"timeout_s|max_num_seqs|max_model_len)$")
_SHARE = re.compile(r"(share|weight|utilization|alpha|fractions?)$")


def _numbers(value: Any) -> list[float]:
    """The numbers in a parameter's value (itself, or inside its lists)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [n for item in value for n in _numbers(item)]
    return []


def _range_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is out of range for a parameter called ``name`` (None when it is not)."""
    for number in _numbers(value):
        if not math.isfinite(number) or number < 0:
            return "a number >= 0"
        if _POSITIVE.search(name) and number == 0:
            return "more than 0 (it counts or times something the notebook needs)"
        if _SHARE.search(name) and number > 1:
            return "a share between 0 and 1"
    return None


def check_parameters(notebook: Path, parameters: Mapping[str, Any]) -> None:
    """Raise :class:`ParameterError` unless every parameter exists with the right type and a
    value in range (see the module's docstring)."""
    known = notebook_parameters(notebook)
    if not known:
        raise ParameterError(
            f"{notebook.name} has no cell tagged 'parameters'.",
            "tag the notebook's parameters cell with 'parameters' (View > Cell Toolbar > Tags).",
        )
    for name, value in parameters.items():
        if name not in known:
            raise ParameterError(
                f"{notebook.name} has no parameter {name!r}.{_suggest(name, known)}",
                f"use one of: {', '.join(sorted(known))}.",
            )
        type_name = known[name]["type"].split("[")[0].replace("Optional", "").strip()
        expected = _TYPES.get(type_name)
        if expected is None:
            continue
        if type_name != "bool" and isinstance(value, bool) and bool not in expected:
            ok = False
        else:
            ok = isinstance(value, expected)
        if not ok:
            raise ParameterError(
                f"{notebook.name}: parameter {name!r} must be {type_name}, "
                f"got {type(value).__name__} {value!r}.",
                f"give {name} a {type_name} value (default: {known[name]['default']}).",
            )
        need = _range_problem(name, value)
        if need:
            raise ParameterError(
                f"{notebook.name}: parameter {name!r} must be {need}, got {value!r}.",
                f"give {name} a value in range (default: {known[name]['default']}; "
                f"{known[name]['help'] or 'see the notebook'}).",
            )


def _timeout(path: Path, where: str, value: Any) -> float:
    """A profile's ``timeout_s``, checked: a number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ProfileError(f"{path.name}: {where}timeout_s must be a number of seconds > 0, "
                           f"not {value!r}.",
                           "write a number without quotes or units, e.g. timeout_s: 600.")
    return float(value)


@dataclass
class NotebookSettings:
    timeout_s: float
    parameters: dict[str, Any] = field(default_factory=dict)
    skip: bool = False
    # True: it asserts nothing another notebook running beside it could break (no claim
    # about speed or timing), so `make test` runs it beside another such notebook.
    shares_machine: bool = False


@dataclass
class Profile:
    name: str
    description: str
    defaults: dict[str, Any]
    notebooks: dict[str, NotebookSettings]
    path: Path
    labs: dict[str, NotebookSettings] = field(default_factory=dict)

    def settings_for(self, stem: str) -> NotebookSettings:
        if stem in self.notebooks:
            return self.notebooks[stem]
        if stem in self.labs:
            return self.labs[stem]
        return NotebookSettings(timeout_s=float(self.defaults.get("timeout_s", _DEFAULT_TIMEOUT_S)))

    def parameters_for(self, stem: str) -> dict[str, Any]:
        return dict(self.settings_for(stem).parameters)


def load_profile(name_or_path: str | Path, *, notebooks_dir: Path = NOTEBOOKS_DIR,
                 labs_dir: Path = LABS_DIR / "source") -> Profile:
    """Read and validate a profile by name (``ci``) or path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        names = available_profiles()
        raise ProfileError(
            f"No run profile {str(name_or_path)!r}.{_suggest(str(name_or_path), names)}",
            f"use one of: {', '.join(names)} (files in configs/profiles/).",
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ProfileError(f"{path.name} is not valid YAML.", "fix the syntax near the line shown.",
                           details=str(err)) from err
    if not isinstance(data, dict):
        raise ProfileError(f"{path.name} must be a mapping.", "see configs/profiles/ci.yaml.")
    for key in data:
        if key not in _TOP_KEYS:
            raise ProfileError(
                f"{path.name}: unknown key {key!r}.{_suggest(key, _TOP_KEYS)}",
                f"top-level keys are {', '.join(sorted(_TOP_KEYS))}.",
            )
    if not isinstance(data.get("defaults") or {}, dict):
        raise ProfileError(f"{path.name}: defaults must be a mapping, not "
                           f"{type(data['defaults']).__name__}.",
                           "write defaults: then indented key: value lines (timeout_s, skip).")
    defaults = dict(data.get("defaults") or {})
    if "timeout_s" in defaults:
        _timeout(path, "defaults: ", defaults["timeout_s"])
    for key in defaults:
        if key not in _ENTRY_KEYS - {"parameters"}:
            raise ProfileError(f"{path.name}: unknown default {key!r}.{_suggest(key, _ENTRY_KEYS)}",
                               "defaults may set timeout_s and skip.")
    sections = {"notebooks": list_notebooks(notebooks_dir), "labs": list_labs(labs_dir)}
    entries = {section: _entries(path, data, section, paths, defaults)
               for section, paths in sections.items()}
    return Profile(path.stem, str(data.get("description", "")), defaults, entries["notebooks"],
                   path, entries["labs"])


def _entries(path: Path, data: dict[str, Any], section: str, notebooks: list[Path],
             defaults: dict[str, Any]) -> dict[str, NotebookSettings]:
    """The validated settings of one section (``notebooks`` or ``labs``) of a profile."""
    stems = {p.stem: p for p in notebooks}
    entries: dict[str, NotebookSettings] = {}
    if not isinstance(data.get(section) or {}, dict):
        raise ProfileError(f"{path.name}: {section} must be a mapping of notebook names, not "
                           f"{type(data[section]).__name__}.",
                           f"write {section}: then one indented 'name:' line per notebook.")
    for stem, entry in (data.get(section) or {}).items():
        if stem not in stems:
            raise ProfileError(
                f"{path.name}: no notebook {stem!r}.{_suggest(stem, stems)}",
                f"name {section} by file name without .ipynb, as in {section}/"
                + ("source/." if section == "labs" else "."),
            )
        entry = entry or {}
        if not isinstance(entry, dict):
            raise ProfileError(
                f"{path.name}: {stem}: the entry must be a mapping, not a "
                f"{type(entry).__name__} ({entry!r}).",
                f"write its keys ({', '.join(sorted(_ENTRY_KEYS))}) on indented lines below "
                f"'{stem}:', e.g. '    parameters:' then '      name: value'.",
            )
        for key in entry:
            if key not in _ENTRY_KEYS:
                raise ProfileError(
                    f"{path.name}: {stem}: unknown key {key!r}.{_suggest(key, _ENTRY_KEYS)}",
                    f"a notebook entry may have {', '.join(sorted(_ENTRY_KEYS))}.",
                )
        if not isinstance(entry.get("parameters") or {}, dict):
            raise ProfileError(
                f"{path.name}: {stem}: parameters must be a mapping, not a "
                f"{type(entry['parameters']).__name__}.",
                "write one indented 'name: value' line per parameter below 'parameters:'.")
        if "timeout_s" in entry:
            _timeout(path, f"{stem}: ", entry["timeout_s"])
        if not isinstance(entry.get("shares_machine", False), bool):
            raise ProfileError(
                f"{path.name}: {stem}: shares_machine must be true or false, not "
                f"{entry['shares_machine']!r}.",
                "write shares_machine: true only for a notebook that asserts nothing about "
                "speed or timing.")
        params = dict(entry.get("parameters") or {})
        try:
            check_parameters(stems[stem], params)
        except ParameterError as err:
            raise ParameterError(f"{path.name}: {err.problem}", err.fix) from err
        entries[stem] = NotebookSettings(
            timeout_s=float(entry.get("timeout_s", defaults.get("timeout_s", _DEFAULT_TIMEOUT_S))),
            parameters=params,
            skip=bool(entry.get("skip", defaults.get("skip", False))),
            shares_machine=entry.get("shares_machine", False),
        )
    return entries
