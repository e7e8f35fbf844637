"""Fill in the estimated Delphi latency of points that do not carry one.

* A point with a model string: HE (server + client) of that network from the cost model, plus
  GC for the point's own ReLU count (for SNL/SENet rows the model is the unpruned backbone:
  ReLU pruning keeps every conv, and only the ReLUs change).
* Otherwise (fallback): HE scaled from FLOPs by the HE seconds per FLOP of ResNet18 on the same
  dataset, plus GC for the point's ReLUs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

from hybrenet_jax.cost import estimate, gc_cost
from hybrenet_jax.cost.gc import DEFAULT_CLIENT_DEVICE, DEFAULT_THREADS
from hybrenet_jax.errors import HybrenetError
from hybrenet_jax.report.points import Point

#: Network whose HE seconds per FLOP the fallback uses.
FALLBACK_REFERENCE = "resnet18"


@functools.lru_cache(maxsize=256)
def _he_seconds(model: str, dataset: str) -> float:
    cost = estimate(model, dataset)
    return cost.he_seconds + cost.client_he_seconds


@functools.lru_cache(maxsize=16)
def he_seconds_per_flop(dataset: str) -> float:
    """Fallback rate: HE seconds per FLOP of :data:`FALLBACK_REFERENCE` on ``dataset``."""
    cost = estimate(FALLBACK_REFERENCE, dataset)
    return (cost.he_seconds + cost.client_he_seconds) / cost.flops


def point_latency(point: Point, threads: int = DEFAULT_THREADS,
                  client_device: str = DEFAULT_CLIENT_DEVICE) -> tuple[float, str, str]:
    """``(seconds, source, note)`` for one point; ``note`` explains a fallback ("" otherwise)."""
    gc = gc_cost(int(round(point.relus)), threads, client_device).seconds
    note = ""
    if point.model is not None:
        try:
            return _he_seconds(point.model, point.dataset) + gc, "model", ""
        except HybrenetError as err:
            note = f"model {point.model!r} cannot be costed ({err}); used the FLOPs fallback"
    return point.flops * he_seconds_per_flop(point.dataset) + gc, "fallback", note


def fill_latency(points: Sequence[Point], threads: int = DEFAULT_THREADS,
                 client_device: str = DEFAULT_CLIENT_DEVICE,
                 warn: Callable[[str], None] | None = None) -> list[Point]:
    """Copies of ``points`` with ``latency_seconds`` set wherever it was missing."""
    out = []
    for p in points:
        if p.latency_seconds is not None:
            out.append(p)
            continue
        seconds, source, note = point_latency(p, threads, client_device)
        if note and warn:
            warn(f"{p.origin}: {note}")
        out.append(dataclasses.replace(p, latency_seconds=seconds, latency_source=source))
    return out
