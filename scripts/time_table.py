"""Where make test's time went: the seconds of each test file or notebook, from pytest's JUnit XML.

    python scripts/time_table.py build/test-unit.xml build/test-alone.xml build/proof-results.jsonl
    python scripts/time_table.py --save tests/durations.json build/test-*.xml

Prints, per phase, the files and notebooks that took longest (setup, call and teardown of
their items together), so that each run says where to look first when it grows. With
``--save``, also records each file's seconds in that JSON file (``{"test_labs": 251.5, ...}``,
merged into what it holds): the phases that run on two workers start the longest files first
(``conftest.py`` reads it), so that no long file starts last while the other worker idles.
A ``.jsonl`` argument is the lessons' proof record (``WORKBOOK_PROOF_RESULTS``): the "Your
turn" checks that took longest on a blank task, time each run pays for a check to fail.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROWS = 25


def per_file(path: Path) -> dict[str, float]:
    seconds: dict[str, float] = defaultdict(float)
    for case in ET.parse(path).iter("testcase"):
        # "tests.test_labs" for a test module; "build.nbval.07a_multi_app_config.ipynb" or
        # similar for a notebook under nbval: the part before the file's extension.
        name = case.get("file") or case.get("classname") or "?"
        seconds[name] += float(case.get("time") or 0.0)
    return seconds


def stem(name: str) -> str:
    """A junit file name as ``durations.json`` keys it: ``tests.test_labs`` -> ``test_labs``,
    ``build.nbval.07a_multi_app_config.ipynb`` -> ``07a_multi_app_config``."""
    return name.removesuffix(".ipynb").removesuffix(".py").replace("/", ".").rsplit(".", 1)[-1]


def save(paths: list[str], target: Path) -> None:
    durations = json.loads(target.read_text()) if target.is_file() else {}
    for raw in paths:
        if Path(raw).is_file():
            durations.update({stem(k): round(v, 1) for k, v in per_file(Path(raw)).items()})
    target.write_text(json.dumps(dict(sorted(durations.items())), indent=1) + "\n")
    print(f"saved the seconds of {len(durations)} files and notebooks in {target}")


def slowest_blanks(path: Path, rows: int = 10) -> None:
    """The proof's blank-task checks that took longest (a check that waits out its whole
    timeout before it can fail is the first place to look)."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    blanks = sorted(
        (r for r in records if r.get("step") == "blank" and "seconds" in r),
        key=lambda r: -r["seconds"],
    )
    total = sum(r["seconds"] for r in blanks)
    print(f"\n{path.name}: {len(blanks)} checks run on a blank task, {total:.0f} s in all")
    print(f"{'lesson, task':<60} {'seconds':>8}")
    for r in blanks[:rows]:
        print(f"{r['lesson'] + ', Your turn ' + str(r['task']):<60} {r['seconds']:8.1f}")


def main(paths: list[str]) -> int:
    if paths[:1] == ["--save"]:
        target, paths = Path(paths[1]), paths[2:]
        save(paths, target)
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            print(f"(no {path}: that phase did not run)")
            continue
        if path.suffix == ".jsonl":
            slowest_blanks(path)
            continue
        seconds = per_file(path)
        total = sum(seconds.values())
        print(f"\n{path.name}: {len(seconds)} files, {total / 60:.1f} min of items")
        print(f"{'file or notebook':<60} {'seconds':>8}")
        for name, s in sorted(seconds.items(), key=lambda kv: -kv[1])[:ROWS]:
            print(f"{name:<60} {s:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
