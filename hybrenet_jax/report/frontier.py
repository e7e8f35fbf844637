"""Pareto frontiers of accuracy against a cost, and comparisons between frontiers.

A point is on the frontier when no other point costs at most as much and is at least as
accurate (with one of the two strict). Comparisons between a subject frontier and a baseline
method's frontier, the way the paper reports them:

* **iso-accuracy reduction**: the baseline's cost at the subject point's accuracy divided by
  the subject point's cost (> 1: the subject needs less);
* **iso-cost gain**: the subject point's accuracy minus the baseline's accuracy at the same
  cost (percentage points).

Between two baseline frontier points the baseline is interpolated linearly in accuracy against
log(cost); outside the baseline's measured range there is no value (no extrapolation).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from hybrenet_jax.report.points import Point


@dataclasses.dataclass(frozen=True)
class Metric:
    """A cost axis: how to read it from a point and how to print it."""

    key: str
    label: str  # axis label
    scale: float  # divide the raw value by this for display
    unit: str
    get: Callable[[Point], float | None]


METRICS: dict[str, Metric] = {
    "relus": Metric("relus", "ReLUs (K)", 1e3, "K", lambda p: p.relus),
    "flops": Metric("flops", "FLOPs (M)", 1e6, "M", lambda p: p.flops),
    "latency": Metric("latency", "estimated Delphi latency (s)", 1.0, "s",
                      lambda p: p.latency_seconds),
}


def costed(points: Sequence[Point], metric: Metric) -> list[Point]:
    """Points with a positive value of ``metric`` (log axes need positive costs)."""
    return [p for p in points if (metric.get(p) or 0) > 0]


def pareto_front(points: Sequence[Point], metric: Metric) -> list[Point]:
    """Frontier points, cheapest first (cost and accuracy both increase along it)."""
    ordered = sorted(costed(points, metric), key=lambda p: (metric.get(p), -p.accuracy))
    front: list[Point] = []
    for p in ordered:
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


def cost_at_accuracy(front: Sequence[Point], accuracy: float, metric: Metric) -> float | None:
    """Baseline cost to reach ``accuracy`` (interpolated on log cost), None out of range."""
    for lo, hi in zip(front, front[1:]):
        if lo.accuracy <= accuracy <= hi.accuracy:
            t = (accuracy - lo.accuracy) / (hi.accuracy - lo.accuracy)
            return math.exp((1 - t) * math.log(metric.get(lo)) + t * math.log(metric.get(hi)))
    if front and accuracy == front[0].accuracy:  # one-point frontier, exact match
        return metric.get(front[0])
    return None


def accuracy_at_cost(front: Sequence[Point], cost: float, metric: Metric) -> float | None:
    """Baseline accuracy at ``cost`` (interpolated on log cost), None out of range."""
    for lo, hi in zip(front, front[1:]):
        c_lo, c_hi = metric.get(lo), metric.get(hi)
        if c_lo <= cost <= c_hi:
            t = (math.log(cost) - math.log(c_lo)) / (math.log(c_hi) - math.log(c_lo))
            return (1 - t) * lo.accuracy + t * hi.accuracy
    if front and cost == metric.get(front[0]):
        return front[0].accuracy
    return None


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One subject frontier point against one baseline method's frontier."""

    point: Point
    baseline: str
    reduction: float | None  # baseline cost / subject cost at the subject's accuracy
    gain: float | None  # subject accuracy - baseline accuracy at the subject's cost


def compare(subject: Sequence[Point], baseline: Sequence[Point], baseline_name: str,
            metric: Metric) -> list[Comparison]:
    """Compare every point of the subject frontier with a baseline frontier."""
    out = []
    for p in subject:
        base_cost = cost_at_accuracy(baseline, p.accuracy, metric)
        base_acc = accuracy_at_cost(baseline, metric.get(p), metric)
        out.append(Comparison(
            point=p, baseline=baseline_name,
            reduction=None if base_cost is None else base_cost / metric.get(p),
            gain=None if base_acc is None else p.accuracy - base_acc))
    return out
