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

The file's shape is a pydantic model with unknown keys forbidden (as the streaming config's),
its errors said in the file's terms; the entries are then checked against the notebooks
themselves. Everything is checked: an unknown notebook, key or
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
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

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
_DEFAULT_TIMEOUT_S = 900.0
_SECONDS = Field(default=None, gt=0, allow_inf_nan=False, strict=True)  # a number > 0, no text


class _Entry(BaseModel):
    """One notebook's entry in a profile (the file's shape; its parameters are checked
    against the notebook itself)."""

    model_config = ConfigDict(extra="forbid")
    timeout_s: float | None = _SECONDS
    parameters: dict[str, Any] = Field(default_factory=dict)
    skip: StrictBool = False
    shares_machine: StrictBool = False


class _Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout_s: float | None = _SECONDS
    skip: StrictBool = False


class _ProfileFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    defaults: _Defaults = Field(default_factory=_Defaults)
    notebooks: dict[str, _Entry] = Field(default_factory=dict)
    labs: dict[str, _Entry] = Field(default_factory=dict)


_TOP_KEYS = set(_ProfileFile.model_fields)
_ENTRY_KEYS = set(_Entry.model_fields)


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


_POSITIVE = re.compile(
    r"replicas|(concurrency|requests|users|tokens|batch_sizes?|actors|"
    r"timeout_s|max_num_seqs|max_model_len)$"
)
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


def load_profile(
    name_or_path: str | Path,
    *,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    labs_dir: Path = LABS_DIR / "source",
) -> Profile:
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
        raise ProfileError(
            f"{path.name} is not valid YAML.",
            "fix the syntax near the line shown.",
            details=str(err),
        ) from err
    if not isinstance(data, dict):
        raise ProfileError(f"{path.name} must be a mapping.", "see configs/profiles/ci.yaml.")
    # A key with nothing under it (`notebooks:`, `01_ok:`) is YAML's null: an empty mapping.
    for key in ("defaults", "notebooks", "labs"):
        if data.get(key) is None:
            data.pop(key, None)
        elif isinstance(data[key], dict) and key != "defaults":
            data[key] = {
                stem: entry if entry is not None else {} for stem, entry in data[key].items()
            }
    try:
        shape = _ProfileFile.model_validate(data)
    except ValidationError as err:
        raise _shape_error(path, err.errors()[0]) from None
    sections = {"notebooks": list_notebooks(notebooks_dir), "labs": list_labs(labs_dir)}
    defaults = shape.defaults.model_dump(exclude_unset=True)
    entries = {
        section: _entries(path, getattr(shape, section), section, paths, shape.defaults)
        for section, paths in sections.items()
    }
    return Profile(
        path.stem, shape.description, defaults, entries["notebooks"], path, entries["labs"]
    )


def _shape_error(path: Path, error: Mapping[str, Any]) -> ProfileError:
    """The first thing wrong with a profile's shape, said in the file's terms (its keys, a
    notebook's entry) with the closest valid spelling of an unknown key."""
    loc = [str(part) for part in error["loc"]]
    kind, value = error["type"], error.get("input")
    section = loc[0] if loc else ""
    if section in ("notebooks", "labs") and len(loc) >= 2:
        stem, rest, keys = loc[1], loc[2:], _ENTRY_KEYS
        where = f"{stem}: "
    elif section == "defaults":
        stem, rest, keys, where = "", loc[1:], set(_Defaults.model_fields), ""
    else:
        stem, rest, keys, where = "", loc, _TOP_KEYS, ""
    key = rest[-1] if rest else ""
    if kind == "extra_forbidden":
        if section == "defaults":
            return ProfileError(
                f"{path.name}: unknown default {key!r}.{_suggest(key, keys)}",
                "defaults may set timeout_s and skip.",
            )
        if stem:
            return ProfileError(
                f"{path.name}: {stem}: unknown key {key!r}.{_suggest(key, keys)}",
                f"a notebook entry may have {', '.join(sorted(keys))}.",
            )
        return ProfileError(
            f"{path.name}: unknown key {key!r}.{_suggest(key, keys)}",
            f"top-level keys are {', '.join(sorted(keys))}.",
        )
    if key == "timeout_s":
        prefix = "defaults: " if section == "defaults" else where
        return ProfileError(
            f"{path.name}: {prefix}timeout_s must be a number of seconds > 0, not {value!r}.",
            "write a number without quotes or units, e.g. timeout_s: 600.",
        )
    if key in ("shares_machine", "skip"):
        return ProfileError(
            f"{path.name}: {where}{key} must be true or false, not {value!r}.",
            "write shares_machine: true only for a notebook that asserts nothing about speed "
            "or timing."
            if key == "shares_machine"
            else "write skip: true or skip: false.",
        )
    if key == "parameters":
        return ProfileError(
            f"{path.name}: {where}parameters must be a mapping, not a {type(value).__name__}.",
            "write one indented 'name: value' line per parameter below 'parameters:'.",
        )
    if stem and not rest:  # the entry itself is not a mapping
        return ProfileError(
            f"{path.name}: {stem}: the entry must be a mapping, not a {type(value).__name__} "
            f"({value!r}).",
            f"write its keys ({', '.join(sorted(_ENTRY_KEYS))}) on indented lines below "
            f"'{stem}:', e.g. '    parameters:' then '      name: value'.",
        )
    if section in ("notebooks", "labs") and len(loc) == 1:
        return ProfileError(
            f"{path.name}: {section} must be a mapping of notebook names, not "
            f"{type(value).__name__}.",
            f"write {section}: then one indented 'name:' line per notebook.",
        )
    if section == "defaults" and len(loc) == 1:
        return ProfileError(
            f"{path.name}: defaults must be a mapping, not {type(value).__name__}.",
            "write defaults: then indented key: value lines (timeout_s, skip).",
        )
    return ProfileError(
        f"{path.name}: {'.'.join(loc)}: {error['msg']} (got {value!r}).",
        "see configs/profiles/ci.yaml for the shape of a profile.",
    )


def _entries(
    path: Path,
    entries_in: Mapping[str, _Entry],
    section: str,
    notebooks: list[Path],
    defaults: _Defaults,
) -> dict[str, NotebookSettings]:
    """The settings of one section (``notebooks`` or ``labs``) of a profile, each checked
    against its notebook: that it exists, and its parameters' names, types and ranges."""
    stems = {p.stem: p for p in notebooks}
    entries: dict[str, NotebookSettings] = {}
    for stem, entry in entries_in.items():
        if stem not in stems:
            raise ProfileError(
                f"{path.name}: no notebook {stem!r}.{_suggest(stem, stems)}",
                f"name {section} by file name without .ipynb, as in {section}/"
                + ("source/." if section == "labs" else "."),
            )
        try:
            check_parameters(stems[stem], entry.parameters)
        except ParameterError as err:
            raise ParameterError(f"{path.name}: {err.problem}", err.fix) from err
        timeout = entry.timeout_s or defaults.timeout_s or _DEFAULT_TIMEOUT_S
        entries[stem] = NotebookSettings(
            timeout_s=float(timeout),
            parameters=dict(entry.parameters),
            skip=entry.skip if "skip" in entry.model_fields_set else defaults.skip,
            shares_machine=entry.shares_machine,
        )
    return entries
