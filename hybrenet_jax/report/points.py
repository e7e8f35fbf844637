"""Accuracy/cost points for Pareto reports: our ``results.jsonl`` files and published rows.

Our results: one JSON object per line with ``model`` (model string), ``dataset``, ``relus``,
``flops``, ``accuracy`` (percent, 0-100) or ``test_accuracy`` (a fraction, 0-1), and
optionally ``distill`` and ``latency_seconds``. Lines that do not parse are returned as
problems (``path:line: reason``) and skipped; the good lines are kept.

DKD beta sweeps (``hybrenet deepreshape --distill dkd``): the runs of one model with a
``dkd_beta`` (same file, dataset and ``extra_epochs``) become **one** point, the best run,
whose ``sweep`` lists every run's (beta, accuracy) for the report's sweep table; the
pipeline's ``role: "dkd_best"`` summary lines are derived from those runs and are skipped.

Published rows: ``published_points.csv`` (``#`` comment lines, then ``dataset, method,
backbone, config, relus_k, flops_m, acc, distill``). A row's network is turned into a model
string when its backbone/config can be read (HybReNet and ConvNeXt rows; SNL/SENet rows keep
every linear layer of their backbone); otherwise ``model`` is ``None``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import pathlib
import re
from typing import Iterable

from hybrenet_jax.bounded import MAX_RELUS, range_text
from hybrenet_jax.counts import count
from hybrenet_jax.dataset_info import DATASETS
from hybrenet_jax.errors import HybrenetError
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.netspec import stage_names
from hybrenet_jax.schema import MAX_DKD_WEIGHT

OURS = "ours"
#: ``role`` of the pipeline's per-variant DKD sweep summary lines (derived, not a run).
DKD_BEST = "dkd_best"
PUBLISHED = "published"
PUBLISHED_COLUMNS = ("dataset", "method", "backbone", "config", "relus_k", "flops_m", "acc",
                     "distill")
#: A model string built for a published row must reproduce its FLOPs this closely (our Re2
#: FLOPs convention differs from the paper's ResNet18 Re2 rows by up to ~9%).
FLOPS_TOLERANCE = 0.10
#: Upper bounds of a point's numbers: far above any network (a network accepted by the model
#: strings has ~1.4e11 ReLUs at most), low enough that a typo or an overflow is a bad line
#: rather than a frontier drawn at 1e308.
MAX_POINT_RELUS = float(MAX_RELUS)
MAX_POINT_FLOPS = 1e18
MAX_LATENCY_SECONDS = 1e9


class ReportError(HybrenetError):
    """Bad input to a report (missing file, no usable points, bad option)."""


@dataclasses.dataclass(frozen=True)
class Point:
    """One trained network: its costs and accuracy (percent)."""

    dataset: str
    source: str  # OURS or PUBLISHED
    method: str
    label: str
    model: str | None
    distill: str
    relus: float
    flops: float
    accuracy: float
    latency_seconds: float | None = None
    latency_source: str = ""
    origin: str = ""
    dkd_beta: float | None = None  # DKD non-target weight of the (best) run
    sweep: tuple[tuple[float, float], ...] = ()  # (beta, accuracy %) of every run of a sweep


def _number(value, field: str, minimum: float = 0.0, strict: bool = False,
            maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field}={str(value)[:40]!r} is not a finite number")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        raise ValueError(f"{field}={str(value)[:40]} is not a finite number")
    if value < minimum or (strict and value == minimum) or (maximum is not None
                                                           and value > maximum):
        raise ValueError(f"{field}={value!r} must be {range_text(minimum, maximum, strict)}")
    return float(value)


def accuracy_percent(value, field: str, fraction: bool = False) -> float:
    """Accuracy as a percentage; ``fraction=True`` reads ``value`` on the 0-1 scale.

    The scale comes from the field's name, never from the value: a broken run at 0.8% top-1
    must not be read as 80%.
    """
    acc = _number(value, field)
    top = 1.0 if fraction else 100.0
    if acc > top:
        raise ValueError(f"{field}={value!r} is above {top:g}; {field} is "
                         + ("a fraction (0-1)" if fraction else "a percentage (0-100)"))
    return acc * 100 if fraction else acc


def point_from_record(rec: object, origin: str) -> Point:
    """Validate one results.jsonl object and turn it into a :class:`Point` (ValueError if bad)."""
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    model = rec.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ValueError("missing 'model' (a model string such as hrn-2x5x3x:m=16)")
    dataset = rec.get("dataset")
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is missing or unknown; accepted: "
                         + ", ".join(DATASETS))
    for key in ("relus", "flops"):
        if key not in rec:
            raise ValueError(f"missing {key!r}")
    if "accuracy" in rec:
        acc = accuracy_percent(rec["accuracy"], "accuracy")
    elif "test_accuracy" in rec:
        acc = accuracy_percent(rec["test_accuracy"], "test_accuracy", fraction=True)
    else:
        raise ValueError("missing 'accuracy' (percent, 0-100) or 'test_accuracy' (fraction, 0-1)")
    latency = rec.get("latency_seconds")
    if latency is not None:
        latency = _number(latency, "latency_seconds", strict=True, maximum=MAX_LATENCY_SECONDS)
    distill = rec.get("distill")
    if distill is not None and not isinstance(distill, str):
        raise ValueError(f"distill={distill!r} must be a string such as KD or DKD")
    beta = rec.get("dkd_beta")
    if beta is not None:
        beta = _number(beta, "dkd_beta", strict=True, maximum=MAX_DKD_WEIGHT)
    return Point(dataset=dataset, source=OURS, method=OURS, label=model.strip(),
                 model=model.strip(), distill=distill or "-",
                 relus=_number(rec["relus"], "relus", maximum=MAX_POINT_RELUS),
                 flops=_number(rec["flops"], "flops", strict=True, maximum=MAX_POINT_FLOPS),
                 accuracy=acc,
                 latency_seconds=latency, latency_source="given" if latency else "",
                 origin=origin, dkd_beta=beta)


def _sweep_key(point: Point, rec: dict, path: pathlib.Path) -> tuple | None:
    """The group of a DKD sweep run (``None`` for any other point)."""
    if point.dkd_beta is None or str(point.distill).lower() != "dkd":
        return None
    extra = rec.get("extra_epochs") or 0.0
    return (str(path), point.dataset, point.model, float(extra) if isinstance(
        extra, (int, float)) else str(extra))


def collapse_sweeps(points: list[Point], keys: list[tuple | None]) -> list[Point]:
    """One point per DKD sweep: its most accurate run (ties: smaller beta), with ``sweep``.

    ``keys[i]`` is the sweep group of ``points[i]`` (``None``: not a sweep run, kept as is).
    The best point keeps the position of the sweep's first run.
    """
    groups: dict[tuple, list[Point]] = {}
    for p, key in zip(points, keys):
        if key is not None:
            groups.setdefault(key, []).append(p)
    out: list[Point] = []
    for p, key in zip(points, keys):
        if key is None:
            out.append(p)
            continue
        runs = groups.pop(key, None)
        if runs is None:
            continue  # already emitted with its sweep's first run
        best = min(runs, key=lambda r: (-r.accuracy, r.dkd_beta))
        sweep = tuple(sorted((r.dkd_beta, r.accuracy) for r in runs))
        betas = "/".join(f"{b:g}" for b, _ in sweep)
        out.append(dataclasses.replace(
            best, sweep=sweep,
            distill=f"{best.distill} b={best.dkd_beta:g} (best of {betas})"))
    return out


def load_results(paths: Iterable[str | pathlib.Path]) -> tuple[list[Point], list[str]]:
    """Points of every good line of ``paths``, and one ``path:line: reason`` per bad line.

    DKD beta sweeps are collapsed to their best run (:func:`collapse_sweeps`); the
    pipeline's ``dkd_best`` summary lines are skipped (they repeat a run of the file).
    """
    points: list[Point] = []
    keys: list[tuple | None] = []
    problems: list[str] = []
    for path in map(pathlib.Path, paths):
        try:
            text = path.read_text()
        except OSError as err:
            raise ReportError(f"cannot read results file {path}: {err.strerror or err}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            origin = f"{path}:{number}"
            try:
                rec = json.loads(line)
                if isinstance(rec, dict) and rec.get("role") == DKD_BEST:
                    continue
                point = point_from_record(rec, origin)
            except json.JSONDecodeError as err:
                problems.append(f"{origin}: not valid JSON ({err.msg})")
                continue
            except ValueError as err:
                problems.append(f"{origin}: {err}")
                continue
            points.append(point)
            keys.append(_sweep_key(point, rec, path))
    return collapse_sweeps(points, keys), problems


_HRN = re.compile(r"^hrn-(\d+(?:x\d+)*x)\s*(?:m\s*=\s*(\d+))?$", re.I)
#: Configs of rows whose ReLUs were pruned by mask search, all convs of the backbone kept.
_BACKBONE_ONLY = ("-", "", "vanilla", "thinned then snl")
_STAGES = re.compile(r"^S(\d)(?:\s*-\s*S(\d))?$", re.I)


def _stage_list(text: str) -> str:
    """``S2-S4`` -> ``S2+S3+S4``; ``S2+S3+S4`` stays; raises ValueError otherwise."""
    stages: list[int] = []
    for part in text.split("+"):
        match = _STAGES.match(part.strip())
        if not match:
            raise ValueError(f"cannot read stages {text!r}")
        lo = int(match.group(1))
        hi = int(match.group(2) or lo)
        stages.extend(range(lo, hi + 1))
    return stage_names(stages, "+")


def published_model_string(backbone: str, config: str) -> str | None:
    """The model string of a published row's network, or ``None`` if it cannot be read.

    SNL/SENet-style rows (config ``-``, ``vanilla``, ``thinned then SNL``) map to their plain
    backbone: ReLU pruning keeps every conv, so the backbone's linear layers are the HE cost.
    """
    name = backbone.strip().lower()
    depths = {"resnet18": None, "resnet34": "3-4-6-3"}
    options: dict[str, str] = {}
    parts = [p.strip() for p in config.split(";") if p.strip()]
    if parts and (match := _HRN.match(parts[0])):
        if name not in depths:
            return None
        net = f"hrn-{match.group(1)}"
        if match.group(2):
            options["m"] = match.group(2)
        if depths[name]:
            options["depths"] = depths[name]
        parts = parts[1:]
    elif config.strip().lower() in _BACKBONE_ONLY:
        plain = name in ("resnet18", "resnet34") or re.fullmatch(r"wrn\d+x\d+", name)
        return name if plain else None
    elif name.startswith("convnext-"):
        net = name
    else:
        return None
    try:
        for part in parts:
            words = part.split()
            if words[-1].lower() in ("culled", "thinned") and len(words) == 2:
                key = "cull" if words[-1].lower() == "culled" else "thin"
                options[key] = _stage_list(words[0])
            elif len(words) == 2 and words[0].lower() == "re2" and words[1].isdigit():
                options["reuse"] = words[1]
            else:
                return None
    except ValueError:
        return None
    order = ("m", "depths", "cull", "thin", "reuse")
    opts = ",".join(f"{k}={options[k]}" for k in order if k in options)
    return f"{net}:{opts}" if opts else net


def _checked_model(backbone: str, config: str, dataset: str, flops: float) -> str | None:
    """:func:`published_model_string`, kept only if it parses and reproduces the row's FLOPs."""
    model = published_model_string(backbone, config)
    if model is None or dataset not in DATASETS:
        return None
    try:
        counted = count(spec_from_model_string(model, dataset)).flops
    except HybrenetError:
        return None
    return model if abs(counted - flops) <= FLOPS_TOLERANCE * flops else None


def load_published(path: str | pathlib.Path) -> tuple[list[Point], list[str]]:
    """Points of ``published_points.csv`` and one ``path:line: reason`` per bad row."""
    path = pathlib.Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise ReportError(f"cannot read published points {path}: {err.strerror or err}; pass "
                          "--published PATH or --no-published") from None
    numbered = [(n, line) for n, line in enumerate(lines, start=1)
                if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise ReportError(f"{path} holds no data rows")
    reader = csv.reader(line for _, line in numbered)
    header = [h.strip() for h in next(reader)]
    missing = [c for c in PUBLISHED_COLUMNS if c not in header]
    if missing:
        raise ReportError(f"{path}: header lacks column(s) {', '.join(missing)}; expected "
                          + ",".join(PUBLISHED_COLUMNS))
    points, problems = [], []
    for (number, _), row in zip(numbered[1:], reader):
        origin = f"{path}:{number}"
        rec = dict(zip(header, (c.strip() for c in row)))
        try:
            if len(row) != len(header):
                raise ValueError(f"expected {len(header)} columns, got {len(row)}")
            relus = _number(float(rec["relus_k"]), "relus_k",
                            maximum=MAX_POINT_RELUS / 1e3) * 1e3
            flops = _number(float(rec["flops_m"]), "flops_m", strict=True,
                            maximum=MAX_POINT_FLOPS / 1e6) * 1e6
            acc = accuracy_percent(float(rec["acc"]), "acc")
        except ValueError as err:
            problems.append(f"{origin}: {err}")
            continue
        dataset = rec["dataset"].lower()
        label = rec["backbone"] + ("" if rec["config"] in ("-", "") else f" {rec['config']}")
        points.append(Point(
            dataset=dataset, source=PUBLISHED, method=rec["method"], label=label,
            model=_checked_model(rec["backbone"], rec["config"], dataset, flops),
            distill=rec["distill"] or "-", relus=relus, flops=flops, accuracy=acc,
            origin=origin))
    return points, problems
