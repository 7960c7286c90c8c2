"""Where make test's time went: the seconds of each test file or notebook, from pytest's JUnit XML.

    python scripts/time_table.py build/test-unit.xml build/test-alone.xml

Prints, per phase, the files and notebooks that took longest (setup, call and teardown of
their items together), so that each run says where to look first when it grows.
"""

from __future__ import annotations

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


def main(paths: list[str]) -> int:
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            print(f"(no {path}: that phase did not run)")
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
