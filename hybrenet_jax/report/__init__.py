"""Pareto and distribution reports (``hybrenet pareto``, ``hybrenet plot-distribution``).

:func:`build_report` reads our results files and the published points, fills in estimated
latencies, computes per-dataset frontiers and writes ``pareto.md``, ``pareto.csv`` and the
three accuracy-vs-cost plots. See ``docs/pareto.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from typing import Callable, Sequence

from hybrenet_jax import reference_data
from hybrenet_jax.cost.gc import DEFAULT_CLIENT_DEVICE, DEFAULT_THREADS
from hybrenet_jax.report.frontier import METRICS, pareto_front
from hybrenet_jax.report.latency import FALLBACK_REFERENCE, fill_latency
from hybrenet_jax.report.markdown import render
from hybrenet_jax.report.plots import os_reason, plot_metric, shown_path
from hybrenet_jax.report.points import (OURS, Point, ReportError, load_published,
                                        load_results)
from hybrenet_jax.train.rundir import atomic_file

#: Plot file per metric.
PLOT_FILES = {"relus": "relu_accuracy.png", "flops": "flops_accuracy.png",
              "latency": "latency_accuracy.png"}
#: The published method compared against the others when no results are given for a dataset.
PUBLISHED_SUBJECT = "HybReNet"


def default_published_path() -> pathlib.Path:
    """The published points shipped with the package (``reference_data/published_points.csv``)."""
    return reference_data.published_points_path()


@dataclasses.dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote."""

    files: tuple[pathlib.Path, ...]
    points: tuple[Point, ...]
    subjects: dict[str, str]
    problems: tuple[str, ...]


def subjects_by_dataset(points: Sequence[Point]) -> dict[str, str]:
    """The method whose frontier is compared per dataset: ours, else published HybReNet."""
    out = {}
    for dataset in {p.dataset for p in points}:
        methods = {p.method for p in points if p.dataset == dataset}
        if OURS in methods:
            out[dataset] = OURS
        elif PUBLISHED_SUBJECT in methods:
            out[dataset] = PUBLISHED_SUBJECT
    return out


def _frontier_ids(points: Sequence[Point], key: str, per_method: bool) -> set[int]:
    """ids of the points on a frontier of ``key``, per dataset (and per method if asked)."""
    groups: dict[tuple, list[Point]] = {}
    for p in points:
        groups.setdefault((p.dataset, p.method if per_method else ""), []).append(p)
    return {id(p) for group in groups.values() for p in pareto_front(group, METRICS[key])}


def write_csv(points: Sequence[Point], path: pathlib.Path) -> None:
    """All points with their latency and frontier flags (own method / all methods)."""
    fields = ["dataset", "source", "method", "label", "model", "distill", "relus", "flops",
              "accuracy", "latency_seconds", "latency_source"]
    flags = {(scope, key): _frontier_ids(points, key, per_method=scope == "method")
             for key in METRICS for scope in ("method", "overall")}
    with _report_file(path) as f:
        writer = csv.writer(f)
        writer.writerow(fields + [f"{scope}_frontier_{key}" for scope, key in flags]
                        + ["origin"])
        for p in sorted(points, key=lambda p: (p.dataset, p.method, p.relus, -p.accuracy)):
            row = {k: getattr(p, k) for k in fields}
            row["model"] = p.model or ""
            if p.latency_seconds is not None:
                row["latency_seconds"] = f"{p.latency_seconds:.4f}"
            writer.writerow([row[k] for k in fields]
                            + [int(id(p) in ids) for ids in flags.values()] + [p.origin])


class _report_file:
    """A text file of the report written atomically (temporary sibling + rename); a failed
    write is one :class:`ReportError` and leaves the old file as it was."""

    def __init__(self, path: pathlib.Path):
        self.path = pathlib.Path(path)

    def __enter__(self):
        self._cm = atomic_file(self.path, "w")
        return self._cm.__enter__()

    def __exit__(self, *exc) -> bool:
        try:
            self._cm.__exit__(*exc)
        except OSError as err:
            raise ReportError(f"cannot write {shown_path(self.path)}: "
                              f"{os_reason(err, self.path)}") from None
        return False


def build_report(results: Sequence[str | pathlib.Path], out_dir: str | pathlib.Path,
                 published: str | pathlib.Path | None = None, use_published: bool = True,
                 threads: int = DEFAULT_THREADS, client_device: str = DEFAULT_CLIENT_DEVICE,
                 warn: Callable[[str], None] | None = None) -> Report:
    """Read, estimate latencies, compute frontiers and write the report into ``out_dir``.

    Bad result lines / published rows are passed to ``warn`` and skipped.
    """
    warn = warn or (lambda _msg: None)
    points, problems = load_results(results)
    inputs = [f"Our results: {', '.join(map(str, results)) or 'none'} ({len(points)} points)."]
    if use_published:
        path = pathlib.Path(published) if published else default_published_path()
        pub, pub_problems = load_published(path)
        points += pub
        problems += pub_problems
        inputs.append(f"Published points: {path} ({len(pub)} points).")
    else:
        inputs.append("Published points: not used (--no-published).")
    for problem in problems:
        warn(problem)
    if not points:
        raise ReportError("no usable points: every results line was rejected and no "
                          "published points were read")
    notes: list[str] = []
    points = fill_latency(points, threads, client_device, warn=notes.append)
    inputs.append(
        f"Latency: Delphi cost model (`hybrenet cost`; server HE single-thread, GC with "
        f"{threads} threads, client device {client_device}) unless a result gives "
        f"`latency_seconds`. Points whose network has no model string use HE ∝ FLOPs at "
        f"{FALLBACK_REFERENCE}'s HE seconds per FLOP, plus GC for their ReLUs.")
    fallback = [p for p in points if p.latency_source == "fallback"]
    notes += [f"{p.origin}: {p.method} {p.label}: latency from the FLOPs fallback"
              for p in fallback]
    subjects = subjects_by_dataset(points)
    inputs.append("Compared frontier per dataset: " + ", ".join(
        f"{d}: {s}" for d, s in sorted(subjects.items())) + ".")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "pareto.md", out / "pareto.csv"]
    with _report_file(files[0]) as f:
        f.write(render(points, subjects, notes, inputs))
    write_csv(points, files[1])
    for key, name in PLOT_FILES.items():
        files.append(plot_metric(points, METRICS[key], out / name, subjects))
    return Report(tuple(files), tuple(points), subjects, tuple(problems))
