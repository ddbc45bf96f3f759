"""Compare two `decpo run` folders: the stage names and keys of stages.json, and every table line of
report.md with the stage table's wall-time column dropped (a restructure must leave both unchanged).

    python benchmarks/compare_runs.py runs/before runs/after
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path


def stage_keys(run: Path) -> dict[str, str]:
    return {name: entry["key"] for name, entry in json.loads((run / "stages.json").read_text()).items()}


def report_tables(run: Path) -> list[str]:
    lines = []
    for line in (run / "report.md").read_text().splitlines():
        if line.startswith("|"):
            cells = line.split("|")
            if len(cells) == 7 and ("wall time" in line or "`" in cells[5]):  # the stage table
                cells[4] = " - "
            lines.append("|".join(cells))
    return lines


def main(before: str, after: str) -> int:
    a, b = Path(before), Path(after)
    ka, kb = stage_keys(a), stage_keys(b)
    print(
        f"stages.json: same stage names: {sorted(ka) == sorted(kb)} ({len(ka)} stages); same keys: {ka == kb}"
    )
    for name in sorted(set(ka) | set(kb)):
        if ka.get(name) != kb.get(name):
            print(f"  key differs: {name} {ka.get(name)} {kb.get(name)}")
    ta, tb = report_tables(a), report_tables(b)
    diff = list(difflib.unified_diff(ta, tb, "before", "after", lineterm=""))
    print(f"report.md tables: {len(ta)} lines before, {len(tb)} after; diff: {'' if diff else '(empty)'}")
    print("\n".join(diff))
    return int(ka != kb or bool(diff))


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
