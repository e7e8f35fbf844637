"""Resumable training jobs and the ``results.jsonl`` log of the pipelines.

Every network a pipeline trains is a :class:`TrainJob` with its own workdir. :func:`run_job`
calls :func:`hybrenet_jax.train.train_and_evaluate`, which resumes from the newest intact
checkpoint of that workdir; a workdir that already holds ``summary.json`` is finished and is
not trained again. :class:`ResultsLog` appends one JSON line per finished model (flushed and
fsynced), so an interrupted pipeline loses at most the run in progress, and that run resumes
from its checkpoints when the same command is run again.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
from typing import Callable

import ml_collections

from hybrenet_jax.counts import count
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.pipeline.errors import PipelineError
from hybrenet_jax.pipeline.estimate import add_epochs
from hybrenet_jax.pipeline.settings import DISTILL
from hybrenet_jax.train import train_and_evaluate

Log = Callable[[str], None]
ROLES = ("teacher", "criticality", "variant", "pretrained")
#: ``role`` of the ``results.jsonl`` line that summarizes one variant's DKD beta sweep.
DKD_BEST = "dkd_best"


class Preempted(Exception):
    """A training run was stopped by SIGTERM after saving a checkpoint; rerun to resume."""

    def __init__(self, workdir: pathlib.Path, step: int):
        super().__init__(f"preempted at step {step} in {workdir}; rerun the same command to "
                         "resume")
        self.workdir = workdir
        self.step = step


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
        if self.distill not in DISTILL:
            raise PipelineError(f"distill={self.distill!r}; accepted: {', '.join(DISTILL)}")
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


def job_config(base: ml_collections.ConfigDict, job: TrainJob) -> ml_collections.ConfigDict:
    """The training config of ``job``: ``base`` with its model, dataset and distillation.

    A DKD job also sets ``distill.dkd_beta`` (when the job names one) and trains
    ``job.extra_epochs`` epochs longer (:func:`add_epochs`).
    """
    config = copy.deepcopy(base)
    config.model = job.model
    config.dataset = job.dataset
    config.distill.kind = job.distill
    config.distill.teacher_workdir = job.teacher_workdir if job.distill != "none" else ""
    config.distill.teacher_model = job.teacher_model if job.distill != "none" else ""
    if job.distill == "dkd":
        if job.dkd_beta is not None:
            config.distill.dkd_beta = float(job.dkd_beta)
        add_epochs(config, job.extra_epochs)
    return config


def teacher_config(base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``base`` with the teacher's duration (``pipeline.teacher_num_epochs`` when > 0)."""
    config = copy.deepcopy(base)
    epochs = int(base.pipeline.teacher_num_epochs) if "pipeline" in base else 0
    if epochs > 0:
        config.num_epochs = epochs
        config.total_steps = 0
    return config


def read_summary(workdir: pathlib.Path) -> dict | None:
    """The ``summary.json`` of a finished run, or ``None`` when the run has not finished."""
    path = pathlib.Path(workdir) / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # half-written by another tool: train again (train_and_evaluate resumes)
    return summary if isinstance(summary, dict) and "test_accuracy" in summary else None


def run_job(config: ml_collections.ConfigDict, job: TrainJob, log: Log) -> dict:
    """Train ``job`` (resuming) unless its workdir is finished; return its summary.

    Raises:
      Preempted: the run received SIGTERM and saved a checkpoint.
      PipelineError: the finished workdir holds another model, or the same model trained
        with another distillation.
    """
    summary = read_summary(job.workdir)
    if summary is not None:
        if summary.get("model") != job.model:
            raise PipelineError(f"{job.workdir} holds a finished run of "
                                f"{summary.get('model')!r}, not {job.model!r}")
        if summary.get("distill", job.distill) != job.distill:
            raise PipelineError(f"{job.workdir} holds a run of {job.model} trained with "
                                f"distill={summary.get('distill')}, not {job.distill}: use "
                                "another workdir (or the same teacher option as before)")
        log(f"finished already: {job.model} ({job.workdir})")
        return summary
    log(f"training {job.role} {job.model} (distill {job.tag}) in {job.workdir}")
    summary = train_and_evaluate(job_config(config, job), job.workdir)
    if summary.get("preempted"):
        raise Preempted(job.workdir, int(summary.get("step", 0)))
    return summary


def check_teacher(workdir: str | os.PathLike) -> str:
    """The model string of a finished teacher run (raises a clear error if it is missing)."""
    path = pathlib.Path(workdir)
    if not path.is_dir():
        raise PipelineError(f"teacher workdir {path} does not exist; train the teacher first "
                            "(python -m launch.train ...) or leave the option out")
    summary = read_summary(path)
    if summary is None or not ((path / "best").is_dir() or (path / "checkpoints").is_dir()):
        raise PipelineError(f"teacher workdir {path} holds no finished training run "
                            "(summary.json and checkpoints); finish its training first")
    return str(summary.get("model", ""))


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


class ResultsLog:
    """``results.jsonl``: one JSON object per finished model, appended durably."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)

    def records(self) -> list[dict]:
        """Every well-formed line (lines that fail to parse are ignored here)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def find(self, model: str, dataset: str, distill: str, dkd_beta: float | None = None,
             extra_epochs: float = 0.0) -> dict | None:
        """The recorded run of ``model`` on ``dataset`` with ``distill`` (and, for DKD, the
        same beta and extra epochs), if any; ``dkd_best`` summary lines are not runs."""
        want = run_key(model, dataset, distill, dkd_beta, extra_epochs)
        for rec in self.records():
            if rec.get("role") != DKD_BEST and record_key(rec) == want:
                return rec
        return None

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def run_and_record(config: ml_collections.ConfigDict, job: TrainJob, results: ResultsLog,
                   log: Log) -> tuple[dict, bool]:
    """Run ``job`` unless ``results`` has it; returns ``(record, trained_or_recorded_now)``."""
    found = results.find(job.model, job.dataset, job.distill, job.dkd_beta, job.extra_epochs)
    if found is not None:
        log(f"in {results.path.name} already: {job.model} ({job.tag})")
        return found, False
    record = result_record(job, run_job(config, job, log))
    results.append(record)
    return record, True
