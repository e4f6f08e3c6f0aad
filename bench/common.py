"""What every benchmark module shares: the row format bench/run.py prints, percentiles, RSS."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Row", "measure_in_child", "module_main", "percentile", "row", "rss_bytes"]

Row = dict[str, Any]


def row(
    benchmark: str,
    value: float,
    unit: str,
    baseline: float | None,
    target: str | None = None,
    met: bool | None = None,
) -> Row:
    return {
        "benchmark": benchmark,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": value / baseline if baseline else None,
        "target": target,
        "met": met,
    }


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


MEMORY_CHILD_FLAG = "--memory-child"


async def measure_in_child(module: str) -> dict[str, float]:
    """Run `python -m <module> --memory-child` and return the JSON it prints last.

    Memory is measured in a fresh process so that what earlier benchmarks allocated cannot
    skew the RSS reading.
    """
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, MEMORY_CHILD_FLAG, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"memory benchmark child {module} failed with {child.returncode}")
    result: dict[str, float] = json.loads(out.splitlines()[-1])  # log lines may come first
    return result


def module_main(
    main: Callable[[], Coroutine[Any, Any, list[Row]]],
    memory_child: Callable[[], Coroutine[Any, Any, dict[str, float]]],
) -> None:
    """`python -m bench.<module>`: the module's table, or the memory child's JSON."""
    if MEMORY_CHILD_FLAG in sys.argv:
        print(json.dumps(asyncio.run(memory_child())))
    else:
        from bench.run import print_table

        print_table(asyncio.run(main()))
