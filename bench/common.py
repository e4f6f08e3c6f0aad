"""What every benchmark module shares: the row format bench/run.py prints, percentiles, RSS."""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["Row", "percentile", "row", "rss_bytes"]

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
