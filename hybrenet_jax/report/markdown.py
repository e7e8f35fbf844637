"""``pareto.md``: frontier tables with improvement factors over each published method."""

from __future__ import annotations

from typing import Mapping, Sequence

from hybrenet_jax.report.frontier import METRICS, Comparison, Metric, compare, pareto_front
from hybrenet_jax.report.points import OURS, Point

_ISO = {"relus": "iso-ReLU", "flops": "iso-FLOPs", "latency": "iso-latency"}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(map(_cell, headers)) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
    return out


def _cost(value: float | None, metric: Metric) -> str:
    if value is None:
        return "–"
    scaled = value / metric.scale
    return f"{scaled:,.1f}" if scaled >= 10 else f"{scaled:,.2f}"


def _reduction(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _gain(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _best(comparisons: Sequence[Comparison], metric: Metric) -> tuple[str, str]:
    reductions = [c for c in comparisons if c.reduction is not None]
    gains = [c for c in comparisons if c.gain is not None]
    red = max(reductions, key=lambda c: c.reduction, default=None)
    gain = max(gains, key=lambda c: c.gain, default=None)
    red_text = "–" if red is None else (
        f"{red.reduction:.2f}× at {red.point.accuracy:.2f}% ({red.point.label})")
    gain_text = "–" if gain is None else (
        f"{gain.gain:+.2f} pp at {_cost(metric.get(gain.point), metric)} {metric.unit} "
        f"({gain.point.label})")
    return red_text, gain_text


def metric_section(points: Sequence[Point], subject: str, metric: Metric) -> list[str]:
    """Frontier table of ``subject`` for one metric, with per-baseline comparisons."""
    iso = _ISO[metric.key]
    front = pareto_front([p for p in points if p.method == subject], metric)
    baselines = sorted({p.method for p in points} - {subject, OURS})
    lines = [f"### Accuracy vs {metric.label}", ""]
    if not front:
        return lines + [f"No {subject} points with {metric.key}.", ""]
    comps = {b: compare(front, pareto_front([p for p in points if p.method == b], metric), b,
                        metric) for b in baselines}
    headers = ["network", "distill", metric.label, "acc (%)"]
    for b in baselines:
        headers += [f"vs {b}: reduction at iso-accuracy", f"vs {b}: +acc at {iso}"]
    rows = []
    for i, p in enumerate(front):
        row = [p.label, p.distill, _cost(metric.get(p), metric), f"{p.accuracy:.2f}"]
        for b in baselines:
            row += [_reduction(comps[b][i].reduction), _gain(comps[b][i].gain)]
        rows.append(row)
    lines += [f"Frontier of **{subject}** ({len(front)} points):", ""] + _table(headers, rows)
    if baselines:
        summary = [(b, *_best(comps[b], metric)) for b in baselines]
        lines += ["", f"Best over each method ({metric.key}):", ""]
        lines += _table(("method", "largest reduction at iso-accuracy",
                         f"largest accuracy gain at {iso}"), summary)
    return lines + [""]


def sweep_section(points: Sequence[Point]) -> list[str]:
    """Table of the DKD beta sweeps among ``points``: every run's accuracy, the best marked."""
    swept = [p for p in points if p.sweep]
    if not swept:
        return []
    betas = sorted({b for p in swept for b, _ in p.sweep})
    headers = ["network", "ReLUs (K)"] + [f"DKD b={b:g} acc (%)" for b in betas] + ["best b"]
    rows = []
    for p in sorted(swept, key=lambda p: (-p.relus, p.label)):
        acc = dict(p.sweep)
        cells = []
        for b in betas:
            if b not in acc:
                cells.append("–")
            else:
                text = f"{acc[b]:.2f}"
                cells.append(f"**{text}**" if b == p.dkd_beta else text)
        rows.append([p.label, f"{p.relus / 1e3:,.2f}", *cells, f"{p.dkd_beta:g}"])
    return (["### DKD beta sweeps", "",
             f"Each run of a DKD sweep ({len(swept)} networks); the frontiers above use the "
             "best run of each (bold).", ""] + _table(headers, rows) + [""])


def render(points: Sequence[Point], subjects: Mapping[str, str], notes: Sequence[str],
           inputs: Sequence[str]) -> str:
    """The whole ``pareto.md`` text."""
    lines = ["# Pareto frontiers: accuracy vs ReLUs, FLOPs and estimated latency", ""]
    lines += [f"- {line}" for line in inputs]
    lines += [
        "- Reduction at iso-accuracy: the method's cost at the frontier point's accuracy divided "
        "by the point's cost (> 1 means fewer ReLUs/FLOPs/seconds). Gain at iso-cost: accuracy "
        "minus the method's accuracy at the same cost, in percentage points. Methods are "
        "interpolated between their own frontier points (accuracy linear in log cost); '–' "
        "means outside the method's measured range (no extrapolation).", ""]
    for dataset in sorted({p.dataset for p in points}):
        group = [p for p in points if p.dataset == dataset]
        subject = subjects.get(dataset)
        counts = ", ".join(f"{m} {sum(p.method == m for p in group)}"
                           for m in sorted({p.method for p in group}))
        lines += [f"## {dataset}", "", f"Points: {counts}.", ""]
        if subject is None:
            lines += ["No subject (neither our results nor published HybReNet points).", ""]
            continue
        for metric in METRICS.values():
            lines += metric_section(group, subject, metric)
        lines += sweep_section(group)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)
