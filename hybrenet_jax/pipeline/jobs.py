"""Resumable training jobs and the ``results.jsonl`` log of the pipelines.

Every network a pipeline trains is a :class:`TrainJob` with its own workdir. :func:`run_job`
calls :func:`hybrenet_jax.train.loop.train_once`, which resumes from the newest intact
checkpoint of that workdir; a workdir that already holds ``summary.json`` is finished and is
not trained again. :class:`~hybrenet_jax.train.rundir.ResultsLog` appends one JSON line per finished model (flushed and
fsynced), so an interrupted pipeline loses at most the run in progress, and that run resumes
from its checkpoints when the same command is run again.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

from hybrenet_jax.counts import count
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.pipeline.errors import PipelineError
from hybrenet_jax.schema import DISTILL_KINDS, TrainConfig, updated
from hybrenet_jax.train import loop as train_loop
from hybrenet_jax.train.loop import train_once
from hybrenet_jax.train.rundir import Preempted, ResultsLog, read_summary

Log = Callable[[str], None]
ROLES = ("teacher", "criticality", "variant", "pretrained")
#: ``role`` of the ``results.jsonl`` line that summarizes one variant's DKD beta sweep.
DKD_BEST = "dkd_best"


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """One network to train: what, where and how (distillation, teacher)."""

    model: str
    dataset: str
    workdir: pathlib.Path
    distill: str = "none"
    teacher_workdir: str = ""
    teacher_model: str = ""
    role: str = "variant"
    label: str = ""
    network: str = ""
    dkd_beta: float | None = None  # DKD non-target weight of this run (None: the config's)
    extra_epochs: float = 0.0  # epochs added to the config's schedule (DKD warm-up, spec §7)

    def __post_init__(self) -> None:
        if self.distill not in DISTILL_KINDS:
            raise PipelineError(f"distill={self.distill!r}; accepted: "
                                f"{', '.join(DISTILL_KINDS)}")
        if self.distill != "dkd" and (self.dkd_beta is not None or self.extra_epochs):
            raise PipelineError(f"{self.model}: dkd_beta/extra_epochs need distill=dkd")
        if self.extra_epochs < 0:
            raise PipelineError(f"extra_epochs={self.extra_epochs} must be >= 0")
        if self.distill != "none" and not self.teacher_workdir:
            raise PipelineError(f"{self.model}: distill={self.distill} needs a teacher workdir")
        if self.role not in ROLES:
            raise PipelineError(f"role={self.role!r}; accepted: {', '.join(ROLES)}")

    @property
    def tag(self) -> str:
        """The run's distillation as named in its workdir: ``kd``, ``dkd-b0.8-x20``, ..."""
        if self.distill != "dkd" or self.dkd_beta is None:
            return self.distill
        return f"dkd-b{self.dkd_beta:g}" + (f"-x{self.extra_epochs:g}" if self.extra_epochs
                                             else "")

    @property
    def key(self) -> tuple:
        """What makes two runs the same (see :func:`run_key`)."""
        return run_key(self.model, self.dataset, self.distill, self.dkd_beta,
                       self.extra_epochs)


def run_key(model: str | None, dataset: str | None, distill: str | None,
            dkd_beta: float | None = None, extra_epochs: float | None = 0.0) -> tuple:
    """``(model, dataset, distill, dkd_beta, extra_epochs)``; the last two only for DKD.

    A DKD line written before the beta sweep existed has no ``dkd_beta`` (``None``) and so
    never matches a sweep run.
    """
    if distill != "dkd":
        return (model, dataset, distill, None, None)
    return (model, dataset, distill, None if dkd_beta is None else float(dkd_beta),
            float(extra_epochs or 0.0))


def record_key(rec: dict) -> tuple:
    """:func:`run_key` of a ``results.jsonl`` line."""
    return run_key(rec.get("model"), rec.get("dataset"), rec.get("distill"),
                   rec.get("dkd_beta"), rec.get("extra_epochs"))


def job_config(base: TrainConfig, job: TrainJob) -> TrainConfig:
    """The training config of ``job``: ``base`` with its model, dataset and distillation
    (whatever ``base.distill.kind`` says: the pipeline decides each run's distillation).

    A DKD job also sets ``distill.dkd_beta`` (when the job names one) and, when it has
    ``extra_epochs``, trains the warm-up on top of the schedule (``distill.dkd_warmup_extra``;
    ``extra_epochs`` is ``distill.dkd_warmup_epochs`` then).
    """
    if job.distill == "dkd" and job.extra_epochs \
            and job.extra_epochs != base.distill.dkd_warmup_epochs:
        raise PipelineError(f"{job.model}: extra_epochs={job.extra_epochs:g} differs from "
                            f"distill.dkd_warmup_epochs={base.distill.dkd_warmup_epochs:g}")
    distilled = job.distill != "none"
    changes = {"model": job.model, "dataset": job.dataset, "distill.kind": job.distill,
               "distill.teacher_workdir": job.teacher_workdir if distilled else "",
               "distill.teacher_model": job.teacher_model if distilled else "",
               "distill.dkd_warmup_extra": bool(job.extra_epochs)}
    if job.distill == "dkd" and job.dkd_beta is not None:
        changes["distill.dkd_beta"] = float(job.dkd_beta)
    return updated(base, changes)


def teacher_config(base: TrainConfig) -> TrainConfig:
    """``base`` without distillation and with the teacher's duration
    (``pipeline.teacher_num_epochs`` when > 0)."""
    changes: dict = {"distill.kind": "none", "distill.teacher_workdir": "",
                     "distill.teacher_model": ""}
    if base.pipeline.teacher_num_epochs > 0:
        changes.update(num_epochs=base.pipeline.teacher_num_epochs, total_steps=0)
    return updated(base, changes)


def run_job(config: TrainConfig, job: TrainJob, log: Log) -> dict:
    """Train ``job`` (resuming) unless its workdir is finished; return its summary.

    Raises:
      Preempted: the run received SIGTERM and saved a checkpoint.
      PipelineError: the finished workdir holds another model, or the same model trained
        with another distillation.
    """
    if read_summary(job.workdir) is None:
        log(f"training {job.role} {job.model} (distill {job.tag}) in {job.workdir}")
    return train_once(job_config(config, job), job.workdir, log)


def result_record(job: TrainJob, summary: dict) -> dict:
    """The ``results.jsonl`` line of a finished job (``accuracy`` in percent).

    ``hybrenet pareto`` reads ``model``, ``dataset``, ``relus``, ``flops``, ``accuracy``
    (percent) and ``distill`` from it directly.
    """
    counts = count(spec_from_model_string(job.model, job.dataset))
    record = {
        "model": job.model,
        "dataset": job.dataset,
        "role": job.role,
        "network": job.network or job.model,
        "label": job.label,
        "distill": job.distill,
        "teacher": job.teacher_model if job.distill != "none" else "",
        "relus": counts.relus,
        "stage_relus": list(counts.stage_relus),
        "flops": counts.flops,
        "macs": counts.macs,
        "params": counts.params,
        "accuracy": round(100.0 * float(summary["test_accuracy"]), 4),
        "best_accuracy": round(100.0 * float(summary.get("best_accuracy",
                                                         summary["test_accuracy"])), 4),
        "steps": summary.get("steps"),
        "epochs": summary.get("epochs"),
        "workdir": str(job.workdir),
        "wall_seconds": summary.get("wall_seconds"),
    }
    if job.distill == "dkd":
        record.update(dkd_beta=job.dkd_beta, extra_epochs=float(job.extra_epochs),
                      run=job.tag)
    return record


def find_record(results: ResultsLog, model: str, dataset: str, distill: str,
                dkd_beta: float | None = None, extra_epochs: float = 0.0) -> dict | None:
    """The recorded run of ``model`` on ``dataset`` with ``distill`` (and, for DKD, the same
    beta and extra epochs), if any; ``dkd_best`` summary lines are not runs."""
    want = run_key(model, dataset, distill, dkd_beta, extra_epochs)
    for rec in results.records():
        if rec.get("role") != DKD_BEST and record_key(rec) == want:
            return rec
    return None


def run_and_record(config: TrainConfig, job: TrainJob, results: ResultsLog,
                   log: Log) -> tuple[dict, bool]:
    """Run ``job`` unless ``results`` has it; returns ``(record, trained_or_recorded_now)``."""
    found = find_record(results, job.model, job.dataset, job.distill, job.dkd_beta,
                        job.extra_epochs)
    if found is not None:
        log(f"in {results.path.name} already: {job.model} ({job.tag})")
        return found, False
    record = result_record(job, run_job(config, job, log))
    results.append(record)
    return record, True


#: ``--pack auto``: runs per population on each backend (bench.population: on 2 CPU cores
#: 4 packed KD students are 1.44x the same runs one by one; a GPU has room for more).
AUTO_PACK = {"cpu": 4, "gpu": 8, "tpu": 8}


def pack_size(pack: int) -> int:
    """Runs per population: ``pack``, or by backend when it is 0 (auto)."""
    if pack > 0:
        return pack
    import jax  # noqa: PLC0415 (the backend of this process)

    return AUTO_PACK.get(jax.default_backend(), 1)


def train_jobs(config: TrainConfig, jobs: list[TrainJob], results: ResultsLog | None, log: Log
               ) -> list[dict | BaseException]:
    """Train ``jobs`` (none recorded in ``results`` yet) as one population and append the
    record of each that finishes (``results`` None: record nothing); finished workdirs are
    read, not trained again.

    Returns, per job: its record, or the error of its divergence (that member was stopped;
    the others went on). With one job to train this is :func:`run_job`, whose errors raise.

    Raises:
      Preempted: SIGTERM (or Ctrl-C) stopped the population after a checkpoint.
      PipelineError: a finished workdir holds another model or distillation.
    """
    out: dict[int, dict | BaseException] = {}
    todo = []
    for i, job in enumerate(jobs):
        if read_summary(job.workdir) is not None or len(jobs) == 1:
            out[i] = result_record(job, run_job(config, job, log))
        else:
            todo.append(i)
    if len(todo) == 1:
        out[todo[0]] = result_record(jobs[todo[0]], run_job(config, jobs[todo[0]], log))
    elif todo:
        log(f"training {len(todo)} runs as one population: "
            + ", ".join(f"{jobs[i].model} ({jobs[i].tag})" for i in todo))
        trained = train_loop.train_population([(job_config(config, jobs[i]), jobs[i].workdir)
                                    for i in todo])
        for i, result in zip(todo, trained):
            if isinstance(result, BaseException):
                log(f"{jobs[i].model} ({jobs[i].tag}) stopped: {result}")
                out[i] = result
            elif result.get("preempted"):
                raise Preempted(jobs[i].workdir, int(result.get("step", 0)))
            else:
                out[i] = result_record(jobs[i], result)
    for i in range(len(jobs)):
        if isinstance(out[i], dict) and results is not None:
            results.append(out[i])
    return [out[i] for i in range(len(jobs))]
