"""Running a plan: teacher once, optional criticality measurement, then every variant.

Shared by :mod:`~hybrenet_jax.pipeline.deepreshape` and
:mod:`~hybrenet_jax.pipeline.deepreduce`. Layout of a pipeline workdir ``DIR``::

    DIR/teacher/             the KD/DKD teacher (unless --teacher-workdir names one)
    DIR/criticality/         per-stage runs + criticality.json/.md (with --measure-order)
    DIR/models/<name>/       one training run per planned variant
    DIR/results.jsonl        one JSON line per finished model (teacher and variants)
    DIR/results.md           the same as a markdown table
    DIR/plan.json            the plan of the last invocation

Restarting the same command skips models already in ``results.jsonl`` (or whose workdir holds
``summary.json``) and resumes an interrupted run from its checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Callable, Sequence

import ml_collections

from hybrenet_jax.counts import count
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.pipeline import criticality as crit
from hybrenet_jax.pipeline.errors import PipelineError
from hybrenet_jax.pipeline.jobs import (Log, ResultsLog, TrainJob, check_teacher,
                                        run_and_record, teacher_config)
from hybrenet_jax.pipeline.planning import (CRITICALITY_DIR, RESULTS, TEACHER_DIR,
                                            PlannedModel, plan_row, planned_model,
                                            variant_workdir)
from hybrenet_jax.pipeline.settings import DISTILL


@dataclasses.dataclass(frozen=True)
class Teacher:
    """The teacher every variant distils from (empty when ``distill == "none"``)."""

    workdir: str = ""
    model: str = ""


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """Where and how a plan is trained."""

    workdir: pathlib.Path
    distill: str = "kd"
    teacher_workdir: str = ""  # a finished external teacher run; "" = train DIR/teacher
    budgets: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.distill not in DISTILL:
            raise PipelineError(f"distill={self.distill!r} (--distill or pipeline.distill); "
                                f"accepted: {', '.join(DISTILL)}")

    @property
    def results(self) -> ResultsLog:
        return ResultsLog(self.workdir / RESULTS)


def teacher_model_name(config: ml_collections.ConfigDict, options: PipelineOptions) -> str:
    """The teacher's model string (checks an external teacher run exists)."""
    if options.distill == "none":
        return ""
    if options.teacher_workdir:
        return check_teacher(options.teacher_workdir) or config.pipeline.teacher_model
    return str(config.pipeline.teacher_model)


def resolve_teacher(config: ml_collections.ConfigDict, options: PipelineOptions,
                    log: Log) -> Teacher:
    """Train ``DIR/teacher`` once (resumable) unless an external teacher is given."""
    if options.distill == "none":
        return Teacher()
    if options.teacher_workdir:
        return Teacher(options.teacher_workdir, check_teacher(options.teacher_workdir))
    job = TrainJob(model=str(config.pipeline.teacher_model), dataset=config.dataset,
                   workdir=options.workdir / TEACHER_DIR, role="teacher", label="teacher")
    log(f"[teacher] {job.model}")
    run_and_record(teacher_config(config), job, options.results, log)
    return Teacher(str(job.workdir), job.model)


def measure_order(config: ml_collections.ConfigDict, model: str, options: PipelineOptions,
                  teacher: Teacher, log: Log) -> crit.CriticalityResult:
    """Criticality of ``model`` in ``DIR/criticality`` (KD from the teacher when there is one)."""
    return crit.measure_criticality(config, model, options.workdir / CRITICALITY_DIR,
                                    teacher_workdir=teacher.workdir or None, log=log)


def train_planned(config: ml_collections.ConfigDict, planned: Sequence[PlannedModel],
                  options: PipelineOptions, teacher: Teacher, log: Log) -> list[dict]:
    """Train every planned variant (skipping finished ones); returns their result records."""
    records = []
    for i, p in enumerate(planned, start=1):
        job = TrainJob(model=p.model, dataset=config.dataset,
                       workdir=variant_workdir(options.workdir, p.model, config.dataset,
                                               options.distill),
                       distill=options.distill, teacher_workdir=teacher.workdir,
                       teacher_model=teacher.model, role="variant", label=p.label,
                       network=p.network)
        log(f"[variant {i}/{len(planned)}] {p.label}: {p.model}")
        record, _ = run_and_record(config, job, options.results, log)
        records.append(record)
    write_results_markdown(options.results, options.workdir / "results.md")
    return records


def measured_order(workdir: pathlib.Path | None, model: str) -> tuple[int, ...] | None:
    """The order in ``DIR/criticality/criticality.json`` (``None`` if not measured yet)."""
    if workdir is None:
        return None
    result = crit.load_result(workdir / CRITICALITY_DIR)
    if result is None:
        return None
    if result.model != model:
        raise PipelineError(f"{workdir / CRITICALITY_DIR} holds the criticality of "
                            f"{result.model!r}, not {model!r}: use another --workdir")
    return result.order


def run_pipeline(config: ml_collections.ConfigDict, options: PipelineOptions, planned,
                 plan_for_order: Callable, criticality_model: str | None, command: str,
                 log: Log) -> list[dict]:
    """Teacher, then (when ``planned`` is None) the criticality order, then every variant.

    Args:
      planned: a plan (``DeepReshapePlan``/``DeepReducePlan``), or ``None`` to measure the
        criticality of ``criticality_model`` first and plan with ``plan_for_order(order)``.
      command: the verb, recorded in ``DIR/plan.json``.
    """
    teacher = resolve_teacher(config, options, log)
    if planned is None:
        result = measure_order(config, criticality_model, options, teacher, log)
        log(f"criticality order of {criticality_model}: {result.order_text}")
        planned = plan_for_order(result.order)
    write_plan(options, {"command": command, "dataset": config.dataset,
                         "distill": options.distill, "budgets": list(options.budgets),
                         **planned.as_dict()})
    return train_planned(config, planned.variants, options, teacher, log)


def dry_run_rows(config: ml_collections.ConfigDict, planned: Sequence[PlannedModel],
                 options: PipelineOptions, criticality_model: str | None = None) -> list[dict]:
    """``--dry-run`` rows: the teacher, the criticality runs (if measured) and the variants."""
    dataset = config.dataset
    teacher = teacher_model_name(config, options)
    teacher_flops = count(spec_from_model_string(teacher, dataset)).flops if teacher else 0
    rows = []
    if teacher and not options.teacher_workdir:
        p = planned_model(teacher, dataset, "teacher", teacher, role="teacher")
        rows.append(plan_row(teacher_config(config), dataset, p, "none", 0,
                             options.workdir / TEACHER_DIR))
    if criticality_model:
        distill = "kd" if teacher else "none"
        for job in crit.stage_jobs(criticality_model, dataset,
                                   options.workdir / CRITICALITY_DIR):
            p = planned_model(job.model, dataset, job.label, criticality_model,
                              role="criticality")
            rows.append(plan_row(config, dataset, p, distill, teacher_flops, job.workdir))
    for p in planned:
        rows.append(plan_row(config, dataset, p, options.distill, teacher_flops,
                             variant_workdir(options.workdir, p.model, dataset,
                                             options.distill), options.budgets))
    return rows


def write_plan(options: PipelineOptions, plan: dict) -> None:
    """Record what this invocation planned (``DIR/plan.json``)."""
    options.workdir.mkdir(parents=True, exist_ok=True)
    (options.workdir / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")


def write_results_markdown(results: ResultsLog, path: pathlib.Path) -> None:
    """``results.md``: every recorded model as a markdown table (sorted by ReLUs)."""
    records = sorted(results.records(), key=lambda r: (r.get("role") != "teacher",
                                                        -float(r.get("relus", 0))))
    lines = ["| role | model | variant | ReLUs (K) | FLOPs (M) | accuracy % | distill |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in records:
        lines.append(f"| {r.get('role', '')} | `{r.get('model')}` | {r.get('label', '')} | "
                     f"{float(r.get('relus', 0)) / 1e3:,.2f} | "
                     f"{float(r.get('flops', 0)) / 1e6:,.2f} | "
                     f"{float(r.get('accuracy', 0)):.2f} | {r.get('distill', '')} |")
    path.write_text("\n".join(lines) + "\n")
