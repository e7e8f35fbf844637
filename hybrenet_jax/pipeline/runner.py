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

DKD (spec §7): every variant is trained once per non-target weight beta of
``PipelineOptions.dkd_betas`` (the paper's 0.8, 1, 2, 6; target weight ``distill.dkd_alpha``),
each for ``distill.dkd_warmup_epochs`` more epochs than the base schedule when
``dkd_warmup_extra`` (the paper's "20 additional epochs for warmup"; the config field
``distill.dkd_warmup_extra`` that the training loop reads). Every run's distillation is the
pipeline's (``--distill``), whatever the config's ``distill.kind``; the teacher trains
without. Once a variant's sweep
is complete, a ``role: "dkd_best"`` line names its best run.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
from typing import Callable, Sequence

import jax

from hybrenet_jax.counts import count
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.pipeline import criticality as crit
from hybrenet_jax.pipeline.errors import PipelineError
from hybrenet_jax.pipeline.jobs import (DKD_BEST, Log, TrainJob, find_record, job_config,
                                        pack_size, record_key, run_and_record,
                                        teacher_config, train_jobs)
from hybrenet_jax.train.rundir import (RESULTS, ResultsLog, finished_run_model,
                                       locked_workdir, write_atomically, write_json)
from hybrenet_jax.pipeline.planning import (CRITICALITY_DIR, TEACHER_DIR,
                                            PlannedModel, plan_row, planned_model,
                                            variant_workdir)
from hybrenet_jax.schema import (DISTILL_KINDS, PAPER_DKD_BETAS, TrainConfig, extra_epochs,
                                 parse_dkd_betas, updated)


@dataclasses.dataclass(frozen=True)
class TeacherRun:
    """Where the teacher every variant distils from was trained (empty when ``distill ==
    "none"``); the loaded teacher network itself is :class:`hybrenet_jax.train.steps.Teacher`."""

    workdir: str = ""
    model: str = ""


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """Where and how a plan is trained."""

    workdir: pathlib.Path
    distill: str = "kd"
    teacher_workdir: str = ""  # a finished external teacher run; "" = train DIR/teacher
    budgets: tuple[int, ...] = ()
    dkd_betas: tuple[float, ...] = PAPER_DKD_BETAS  # one DKD run per beta
    dkd_warmup_extra: bool = True  # DKD runs: + distill.dkd_warmup_epochs epochs on top
    pack: int = 0  # runs trained as one population: 0 = auto (:func:`pack_size`), 1 = alone

    def __post_init__(self) -> None:
        if self.distill not in DISTILL_KINDS:
            raise PipelineError(f"distill={self.distill!r} (--distill or pipeline.distill); "
                                f"accepted: {', '.join(DISTILL_KINDS)}")
        object.__setattr__(self, "dkd_betas", parse_dkd_betas(self.dkd_betas))

    @property
    def results(self) -> ResultsLog:
        return ResultsLog(self.workdir / RESULTS)


def teacher_model_name(config: TrainConfig, options: PipelineOptions) -> str:
    """The teacher's model string (checks an external teacher run exists)."""
    if options.distill == "none":
        return ""
    if options.teacher_workdir:
        return finished_run_model(options.teacher_workdir) or config.pipeline.teacher_model
    return str(config.pipeline.teacher_model)


def resolve_teacher(config: TrainConfig, options: PipelineOptions,
                    log: Log) -> TeacherRun:
    """Train ``DIR/teacher`` once (resumable) unless an external teacher is given."""
    if options.distill == "none":
        return TeacherRun()
    if options.teacher_workdir:
        return TeacherRun(options.teacher_workdir, finished_run_model(options.teacher_workdir))
    job = TrainJob(model=str(config.pipeline.teacher_model), dataset=config.dataset,
                   workdir=options.workdir / TEACHER_DIR, role="teacher", label="teacher")
    log(f"[teacher] {job.model}")
    run_and_record(teacher_config(config), job, options.results, log)
    return TeacherRun(str(job.workdir), job.model)


def measure_order(config: TrainConfig, model: str, options: PipelineOptions,
                  teacher: TeacherRun, log: Log) -> crit.CriticalityResult:
    """Criticality of ``model`` in ``DIR/criticality`` (KD from the teacher when there is one)."""
    if not teacher.workdir:
        log("warning: no teacher (--distill none): criticality from plain cross-entropy, not "
            "the paper's KD accuracies")
    return crit.measure_criticality(config, model, options.workdir / CRITICALITY_DIR,
                                    teacher_workdir=teacher.workdir or None, log=log,
                                    pack=options.pack)


def dkd_extra_epochs(config: TrainConfig, options: PipelineOptions) -> float:
    """Epochs a run of the pipeline trains beyond the base schedule: the schema's rule
    (:func:`hybrenet_jax.schema.extra_epochs`) with the pipeline's distillation and warm-up."""
    return extra_epochs(updated(config, {"distill.kind": options.distill,
                                         "distill.dkd_warmup_extra": options.dkd_warmup_extra}))


def variant_jobs(config: TrainConfig, p: PlannedModel, options: PipelineOptions,
                 teacher: TeacherRun) -> list[TrainJob]:
    """The training runs of one planned variant: one, or one per DKD beta."""
    common = dict(model=p.model, dataset=config.dataset, distill=options.distill,
                  teacher_workdir=teacher.workdir, teacher_model=teacher.model,
                  role="variant", label=p.label, network=p.network)
    if options.distill == "dkd":
        extra = dkd_extra_epochs(config, options)
        jobs = [TrainJob(workdir=pathlib.Path("."), dkd_beta=beta, extra_epochs=extra,
                         **common) for beta in options.dkd_betas]
    else:
        jobs = [TrainJob(workdir=pathlib.Path("."), **common)]
    return [dataclasses.replace(j, workdir=variant_workdir(options.workdir, p.model,
                                                           config.dataset, j.tag))
            for j in jobs]


def best_of_sweep(records: Sequence[dict]) -> dict:
    """The ``dkd_best`` line of one variant's DKD runs: the most accurate run (ties: the
    smaller beta) with every run's beta and accuracy in ``dkd_sweep``."""
    ranked = sorted(records, key=lambda r: (-float(r["accuracy"]), float(r["dkd_beta"])))
    best = ranked[0]
    sweep = [{"dkd_beta": r["dkd_beta"], "accuracy": r["accuracy"], "workdir": r["workdir"]}
             for r in sorted(records, key=lambda r: float(r["dkd_beta"]))]
    return {**{k: v for k, v in best.items() if k not in ("wall_seconds", "run")},
            "role": DKD_BEST, "dkd_betas": [s["dkd_beta"] for s in sweep], "dkd_sweep": sweep}


def _record_best(results: ResultsLog, runs: Sequence[dict]) -> dict:
    """Append the sweep's ``dkd_best`` line unless the same summary is recorded already."""
    best = best_of_sweep(runs)
    for rec in results.records():
        if rec.get("role") == DKD_BEST and record_key(rec) == record_key(best) \
                and rec.get("dkd_sweep") == best["dkd_sweep"]:
            return rec
    results.append(best)
    return best


def train_planned(config: TrainConfig, planned: Sequence[PlannedModel],
                  options: PipelineOptions, teacher: TeacherRun, log: Log) -> list[dict]:
    """Train every planned variant (skipping finished runs); returns their result records.

    Runs not recorded yet train in populations of :func:`pack_size` (in plan order: they
    share the teacher and the schedule); with DKD each variant yields one record per beta,
    then its ``dkd_best`` record.

    Raises:
      PipelineError: some runs diverged (the others were trained and recorded first).
    """
    per_variant = [variant_jobs(config, p, options, teacher) for p in planned]
    recorded: dict[tuple, dict] = {}
    pending = []
    for jobs in per_variant:
        for job in jobs:
            found = find_record(options.results, job.model, job.dataset, job.distill,
                                job.dkd_beta, job.extra_epochs)
            if found is not None:
                log(f"in {options.results.path.name} already: {job.model} ({job.tag})")
                recorded[job.key] = found
            else:
                pending.append(job)
    index = {job.key: i for i, jobs in enumerate(per_variant, start=1) for job in jobs}
    size = pack_size(options.pack)
    failed = []
    for start in range(0, len(pending), size):
        group = pending[start:start + size]
        for job in group:
            beta = f" (DKD beta {job.dkd_beta:g})" if job.dkd_beta is not None else ""
            log(f"[variant {index[job.key]}/{len(planned)}] {job.label}: {job.model}{beta}")
        for job, result in zip(group, train_jobs(config, group, options.results, log)):
            if isinstance(result, dict):
                recorded[job.key] = result
            else:
                failed.append(f"{job.model} ({job.tag}): {result}")
    records = []
    for p, jobs in zip(planned, per_variant):
        runs = [recorded[j.key] for j in jobs if j.key in recorded]
        records += runs
        if options.distill == "dkd" and runs:
            best = _record_best(options.results, runs)
            log(f"best DKD beta for {p.model}: {best['dkd_beta']:g} "
                f"({best['accuracy']:.2f}%)")
            records.append(best)
    write_results_markdown(options.results, options.workdir / "results.md")
    if failed:
        raise PipelineError(f"{len(failed)} run(s) diverged and were not recorded (the others "
                            f"were): {failed[0]}" + (f"; and {len(failed) - 1} more"
                                                       if len(failed) > 1 else ""))
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


def run_pipeline(config: TrainConfig, options: PipelineOptions, planned,
                 plan_for_order: Callable, criticality_model: str | None, command: str,
                 log: Log) -> list[dict]:
    """The teacher, then (when ``planned`` is None) the criticality order, then every variant.

    Args:
      planned: a plan (``DeepReshapePlan``/``DeepReducePlan``), or ``None`` to measure the
        criticality of ``criticality_model`` first and plan with ``plan_for_order(order)``.
      command: the verb, recorded in ``DIR/plan.json``.

    The whole verb holds ``DIR/run.lock`` (a second run on ``DIR`` is refused with one line,
    :class:`~hybrenet_jax.train.workdir_lock.WorkdirBusyError`); the teacher, criticality and
    variant runs in its subfolders hold their own locks.
    """
    with locked_workdir(options.workdir, enabled=jax.process_index() == 0,
                        error=PipelineError):
        return _run_pipeline(config, options, planned, plan_for_order, criticality_model,
                             command, log)


def _run_pipeline(config: TrainConfig, options: PipelineOptions, planned,
                  plan_for_order: Callable, criticality_model: str | None, command: str,
                  log: Log) -> list[dict]:
    teacher = resolve_teacher(config, options, log)
    if planned is None:
        result = measure_order(config, criticality_model, options, teacher, log)
        log(f"criticality order of {criticality_model}: {result.order_text}")
        planned = plan_for_order(result.order)
    write_plan(options, {"command": command, "dataset": config.dataset,
                         "distill": options.distill, "budgets": list(options.budgets),
                         **({"dkd_betas": list(options.dkd_betas),
                             "dkd_extra_epochs": dkd_extra_epochs(config, options)}
                            if options.distill == "dkd" else {}),
                         **planned.as_dict()})
    return train_planned(config, planned.variants, options, teacher, log)


def dry_run_rows(config: TrainConfig, planned: Sequence[PlannedModel],
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
            rows.append(plan_row(job_config(config, job), dataset, p, distill, teacher_flops,
                                 job.workdir))
    placeholder = TeacherRun(options.teacher_workdir or str(options.workdir / TEACHER_DIR),
                          teacher)
    size = pack_size(options.pack)
    variants = 0
    for p in planned:
        for job in variant_jobs(config, p, options, placeholder):
            row = plan_row(job_config(config, job), dataset, p, job.distill, teacher_flops,
                           job.workdir, options.budgets, dkd_beta=job.dkd_beta,
                           extra_epochs=job.extra_epochs)
            row["population"] = variants // size + 1  # trained together (--pack)
            variants += 1
            rows.append(row)
    members = collections.Counter(r.get("population") for r in rows)
    for row in rows:  # a population runs its teacher once per batch for all its members
        if row.get("population") and row["distill"] != "none" and teacher_flops:
            shared = teacher_flops * row["train_images"]
            row["train_flops_estimate"] -= shared * (1 - 1 / members[row["population"]])
    return rows


def write_plan(options: PipelineOptions, plan: dict) -> None:
    """Record what this invocation planned (``DIR/plan.json``)."""
    options.workdir.mkdir(parents=True, exist_ok=True)
    write_json(options.workdir / "plan.json", plan)


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
                     f"{float(r.get('accuracy', 0)):.2f} | {distill_text(r)} |")
    write_atomically(path, "\n".join(lines) + "\n")


def distill_text(rec: dict) -> str:
    """``kd``, ``dkd b=2`` (one DKD run) or ``dkd best b=2 of 0.8/1/2/6`` (a sweep's best)."""
    distill = str(rec.get("distill", ""))
    beta = rec.get("dkd_beta")
    if distill != "dkd" or beta is None:
        return distill
    if rec.get("role") == DKD_BEST:
        swept = "/".join(f"{float(b):g}" for b in rec.get("dkd_betas", []))
        return f"dkd best b={float(beta):g} of {swept}"
    return f"dkd b={float(beta):g}"
