"""Run every benchmark module, print one table and write bench/results.json.

Each `bench/bench_*.py` module exposes `async def main() -> list[Row]`.  A row reports a measured
value next to a baseline measured in the same run, so that results are ratios rather than
absolute numbers tied to one machine.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import sys
from pathlib import Path
from typing import Any

import bench

Row = dict[str, Any]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def print_table(rows: list[Row]) -> None:
    columns = ["benchmark", "value", "unit", "baseline", "ratio", "target", "met"]
    table = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


async def run_all(only: list[str]) -> list[Row]:
    rows: list[Row] = []
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if not info.name.startswith("bench_"):
            continue
        if only and not any(o in info.name for o in only):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        print(f"# {info.name}", file=sys.stderr)
        for row in await module.main():
            rows.append({"module": info.name, **row})
    return rows


def main() -> None:
    rows = asyncio.run(run_all(sys.argv[1:]))
    print_table(rows)
    out = Path(__file__).with_name("results.json")
    out.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    print(f"\nresults written to {out}")


if __name__ == "__main__":
    main()
