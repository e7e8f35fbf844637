"""Timing helpers shared by the benchmark's processes (no JAX, no torch)."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence


def timed_steps(step: Callable[[], None], count: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of each of ``count`` calls of ``step``."""
    walls, cpus = [], []
    for _ in range(count):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def median(values: Sequence[float]) -> float | None:
    """Median, or ``None`` for no values."""
    return statistics.median(values) if values else None


def spread(values: Sequence[float]) -> float | None:
    """Relative spread of step times: (p90 - p10) / median (``None`` below 3 values)."""
    if len(values) < 3:
        return None
    ordered = sorted(values)
    lo = ordered[int(0.1 * (len(ordered) - 1))]
    hi = ordered[int(round(0.9 * (len(ordered) - 1)))]
    return (hi - lo) / statistics.median(ordered)
