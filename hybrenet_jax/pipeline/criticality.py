"""Stage criticality measurement (spec §4; DeepReDuce's metric).

For each stage k the network keeping ReLUs **only in stage k** (every other stage culled; the
stem's ReLU belongs to Stage1) is trained, with KD from a teacher when one is given and with
plain cross-entropy otherwise. With ``A_k`` its final test top-1 (%) and ``R_k`` stage k's ReLU
count in the *base* network, ``C_k = (A_k - min_j A_j) * (R_k / 1000) ** -0.07``
(:func:`hybrenet_jax.design.criticality`); the order lists stages from most to least
critical (ties: earlier stage first).

Layout of the workdir: ``stage_S1/`` ... one resumable training run per stage, and the
results ``criticality.json`` and ``criticality.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pathlib

import jax

from hybrenet_jax.counts import count
from hybrenet_jax.design import criticality, criticality_order
from hybrenet_jax.model_string import model_string_with, spec_from_model_string
from hybrenet_jax.netspec import NetSpec, stage_name, stage_names
from hybrenet_jax.pipeline.errors import PipelineError
from hybrenet_jax.pipeline.jobs import Log, TrainJob, pack_size, train_jobs
from hybrenet_jax.schema import TrainConfig
from hybrenet_jax.train.rundir import (damaged, finished_run_model, locked_workdir, read_json,
                                       read_summary, write_atomically, write_json)

RESULT_JSON = "criticality.json"
RESULT_MD = "criticality.md"


def base_spec(model: str, dataset: str) -> NetSpec:
    """The base network of a criticality measurement (all ReLUs present)."""
    spec = spec_from_model_string(model, dataset)
    if spec.culled or spec.thinned or spec.reuse > 1:
        raise PipelineError(f"criticality is measured on a base network with every ReLU; "
                            f"{model!r} has cull=/thin=/reuse= options: remove them")
    return spec


def stage_only_model(model: str, stage: int, num_stages: int) -> str:
    """``model`` keeping ReLUs only in ``stage``: e.g. stage 2 of 4 -> ``cull=S1+S3+S4``."""
    others = "+".join(stage_name(s) for s in range(1, num_stages + 1) if s != stage)
    return model_string_with(model, cull=others or None)


def stage_jobs(model: str, dataset: str, workdir: pathlib.Path, distill: str = "none",
               teacher_workdir: str = "", teacher_model: str = "") -> list[TrainJob]:
    """One training job per stage, in ``workdir/stage_Sk``."""
    spec = base_spec(model, dataset)
    return [TrainJob(model=stage_only_model(model, k, spec.num_stages), dataset=dataset,
                     workdir=pathlib.Path(workdir) / f"stage_{stage_name(k)}", distill=distill,
                     teacher_workdir=teacher_workdir, teacher_model=teacher_model,
                     role="criticality", label=f"ReLUs only in {stage_name(k)}", network=model)
            for k in range(1, spec.num_stages + 1)]


@dataclasses.dataclass(frozen=True)
class CriticalityResult:
    """Measured per-stage accuracies, criticalities and the resulting order."""

    model: str
    dataset: str
    distill: str
    teacher_workdir: str
    stage_models: tuple[str, ...]
    relus: tuple[int, ...]
    accuracies: tuple[float, ...]
    values: tuple[float, ...]
    order: tuple[int, ...]

    @property
    def order_text(self) -> str:
        """``S3>S2>S4>S1``."""
        return stage_names(self.order, ">")

    @property
    def order_arg(self) -> str:
        """``S3,S2,S4,S1`` (the form ``--order`` takes)."""
        return ",".join(stage_name(s) for s in self.order)

    def as_dict(self) -> dict:
        rank = {s: i for i, s in enumerate(self.order, start=1)}
        return {
            "model": self.model, "dataset": self.dataset, "distill": self.distill,
            "teacher_workdir": self.teacher_workdir,
            "order": [stage_name(s) for s in self.order], "order_text": self.order_text,
            "stages": [{"stage": stage_name(k), "model": m, "relus": r, "accuracy": a,
                        "criticality": round(c, 4), "rank": rank[k]}
                       for k, (m, r, a, c) in enumerate(zip(self.stage_models, self.relus,
                                                            self.accuracies, self.values),
                                                        start=1)],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "CriticalityResult":
        stages = d["stages"]
        return cls(model=d["model"], dataset=d["dataset"], distill=d["distill"],
                   teacher_workdir=d.get("teacher_workdir", ""),
                   stage_models=tuple(s["model"] for s in stages),
                   relus=tuple(int(s["relus"]) for s in stages),
                   accuracies=tuple(float(s["accuracy"]) for s in stages),
                   values=tuple(float(s["criticality"]) for s in stages),
                   order=tuple(int(name[1:]) for name in d["order"]))

    def markdown(self) -> str:
        """The paper-style table: stage, ReLUs, accuracy, criticality, rank."""
        rank = {s: i for i, s in enumerate(self.order, start=1)}
        teacher = f"KD from {self.teacher_workdir}" if self.distill != "none" else \
            "plain cross-entropy (no teacher)"
        lines = [f"# ReLU criticality of `{self.model}` ({self.dataset})", "",
                 f"Each row trains the network with ReLUs only in that stage ({teacher}); "
                 "C_k = (A_k - min A) * (R_k/1000)^-0.07.", "",
                 "| stage | ReLUs (K) | accuracy % | criticality | rank |",
                 "|---|---:|---:|---:|---:|"]
        for k, (r, a, c) in enumerate(zip(self.relus, self.accuracies, self.values), start=1):
            lines.append(f"| {stage_name(k)} | {r / 1e3:,.2f} | {a:.2f} | {c:.2f} | {rank[k]} |")
        lines += ["", f"Criticality order (most to least critical): **{self.order_text}**", ""]
        return "\n".join(lines)


def compute_result(model: str, dataset: str, distill: str, teacher_workdir: str,
                   stage_models, accuracies) -> CriticalityResult:
    """Criticality values and order from per-stage accuracies (%)."""
    relus = count(base_spec(model, dataset)).stage_relus
    values = criticality(list(accuracies), list(relus))
    return CriticalityResult(model=model, dataset=dataset, distill=distill,
                             teacher_workdir=teacher_workdir, stage_models=tuple(stage_models),
                             relus=tuple(relus), accuracies=tuple(float(a) for a in accuracies),
                             values=tuple(values), order=criticality_order(values))


def load_result(workdir: str | pathlib.Path,
                set_aside: bool = False) -> CriticalityResult | None:
    """The result written by an earlier :func:`measure_criticality`, if any; a damaged
    ``criticality.json`` (empty after a full disk, torn, edited) is one warning and ``None``
    (measured again: the finished stage runs are not retrained), and with ``set_aside`` (the
    caller holds the workdir) it is renamed to ``criticality.json.damaged``."""
    path = pathlib.Path(workdir) / RESULT_JSON
    record = read_json(path, "criticality result", set_aside)
    if record is None:
        return None
    try:
        result = CriticalityResult.from_dict(record)
        if len(result.order) != len(result.stage_models) or \
                sorted(result.order) != list(range(1, len(result.order) + 1)):
            raise ValueError("its order does not list every stage once")
        numbers = (*result.relus, *result.accuracies, *result.values)
        if not all(math.isfinite(x) and x >= 0 for x in numbers) \
                or not all(0 <= a <= 100 for a in result.accuracies):
            raise ValueError("its ReLUs, accuracies (%) and criticalities must be finite, "
                             ">= 0, accuracies <= 100")
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as err:
        damaged(path, "criticality result", f"not a criticality result: {err!r}"[:160],
                set_aside)
        return None
    return result


def measure_criticality(config: TrainConfig, model: str,
                        workdir: str | pathlib.Path, teacher_workdir: str | None = None,
                        log: Log = logging.getLogger(__name__).info,
                        pack: int = 0) -> CriticalityResult:
    """Train the per-stage networks (resuming; finished ones skipped) and write the result.

    The stage runs train in populations of ``pack`` (0: by backend, :func:`~.jobs.pack_size`;
    1: one by one), one teacher pass for all of a population.

    Args:
      config: training config (its ``dataset`` and recipe are used for every stage run).
      model: model string of the base network, e.g. ``hrn-2x2x2x:m=4``.
      workdir: where ``stage_Sk/``, ``criticality.json`` and ``criticality.md`` go.
      teacher_workdir: a finished teacher run for KD; ``None`` trains with plain CE.
    """
    workdir = pathlib.Path(workdir)
    teacher_model = finished_run_model(teacher_workdir) if teacher_workdir else ""
    distill = "kd" if teacher_workdir else "none"
    jobs = stage_jobs(model, config.dataset, workdir, distill, str(teacher_workdir or ""),
                      teacher_model)
    # the whole measurement holds workdir/run.lock (each stage run locks its own stage_Sk/)
    with locked_workdir(workdir, enabled=jax.process_index() == 0, error=PipelineError):
        load_result(workdir, set_aside=True)  # a damaged result is kept aside, then rewritten
        accuracies = []
        size = pack_size(pack)
        for start in range(0, len(jobs), size):
            group = jobs[start:start + size]
            for i, job in enumerate(group, start=start + 1):
                log(f"[criticality {i}/{len(jobs)}] {job.label}")
            for job, record in zip(group, train_jobs(config, group, None, log)):
                if not isinstance(record, dict):
                    raise PipelineError(f"criticality: the {job.label} run diverged ({record}); "
                                        "every stage is needed: fix its recipe and rerun")
                summary = read_summary(job.workdir)  # the unrounded accuracy
                accuracies.append(100.0 * float(summary["test_accuracy"]))
        result = compute_result(model, config.dataset, distill, str(teacher_workdir or ""),
                                [j.model for j in jobs], accuracies)
        if jax.process_index() == 0:
            write_json(workdir / RESULT_JSON, result.as_dict())
            write_atomically(workdir / RESULT_MD, result.markdown())
    return result
