"""Planned models shared by the DeepReShape and DeepReDuce pipelines: counts, budgets, rows.

Budget rule (``--budgets B1,B2,...``): a variant is kept when its ReLU count is at most the
largest budget; each kept variant is tagged with the smallest budget it fits. Asking for
budgets below every planned variant is an error that names the smallest count available.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Iterable, Sequence


from hybrenet_jax.bounded import MAX_RELUS, parse_count
from hybrenet_jax.counts import Counts, count
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.netspec import stage_names
from hybrenet_jax.pipeline.errors import PipelineError
from hybrenet_jax.pipeline.estimate import images_seen, planned_epochs, training_flops
from hybrenet_jax.pipeline.naming import run_dir_name
from hybrenet_jax.schema import TrainConfig

MODELS_DIR = "models"
TEACHER_DIR = "teacher"
CRITICALITY_DIR = "criticality"


@dataclasses.dataclass(frozen=True)
class PlannedModel:
    """One network a pipeline will train: its model string, origin and analytic counts."""

    model: str
    label: str
    network: str
    counts: Counts
    role: str = "variant"

    def fits(self, budgets: Sequence[int]) -> int | None:
        """The smallest budget this model's ReLUs fit (``None`` when it fits none)."""
        fitting = [b for b in sorted(budgets) if self.counts.relus <= b]
        return fitting[0] if fitting else None


@dataclasses.dataclass(frozen=True)
class VariantPlan:
    """What every pipeline plan holds: the criticality order and the variants it trains."""

    order: tuple[int, ...]
    variants: tuple[PlannedModel, ...]
    skipped: tuple[str, ...]
    over_budget: tuple[PlannedModel, ...]

    @property
    def order_text(self) -> str:
        """The order as the paper writes it, e.g. ``S3>S2>S4>S1``."""
        return stage_names(self.order, ">")

    def leftovers_dict(self) -> dict:
        """The JSON of what was not planned (``--dry-run --json`` ends with it)."""
        return {"skipped": list(self.skipped),
                "over_budget": [p.model for p in self.over_budget]}


def planned_model(model: str, dataset: str, label: str, network: str,
                  role: str = "variant") -> PlannedModel:
    """A :class:`PlannedModel` with counts for ``dataset``."""
    return PlannedModel(model, label, network, count(spec_from_model_string(model, dataset)),
                        role)


def dedupe(models: Iterable[PlannedModel]) -> list[PlannedModel]:
    """Drop repeated model strings, keeping the first occurrence."""
    seen: dict[str, PlannedModel] = {}
    for p in models:
        seen.setdefault(p.model, p)
    return list(seen.values())


def parse_budgets(text: str | None) -> tuple[int, ...]:
    """``"50000,100k"`` -> ``(50000, 100000)`` (``k``/``K`` = thousands)."""
    if not text:
        return ()
    budgets = [parse_count(token.strip(), "--budgets", low=1, high=MAX_RELUS,
                           error=PipelineError, kind="a ReLU count") for token in text.split(",")]
    return tuple(sorted(set(budgets)))


def apply_budgets(models: Sequence[PlannedModel], budgets: Sequence[int]
                  ) -> tuple[list[PlannedModel], list[PlannedModel]]:
    """``(kept, dropped)``: kept variants have at most ``max(budgets)`` ReLUs (all if none)."""
    if not budgets:
        return list(models), []
    cap = max(budgets)
    kept = [p for p in models if p.counts.relus <= cap]
    dropped = [p for p in models if p.counts.relus > cap]
    if not kept:
        smallest = min(models, key=lambda p: p.counts.relus)
        raise PipelineError(
            f"no planned variant fits the ReLU budgets {', '.join(map(str, budgets))}: the "
            f"smallest is {smallest.model} with {smallest.counts.relus} ReLUs; raise the "
            "budget or start from smaller networks (--m)")
    return kept, dropped


def variant_workdir(workdir: pathlib.Path, model: str, dataset: str, distill: str
                    ) -> pathlib.Path:
    """``DIR/models/<safe model name>-<distill>-<hash>``."""
    return pathlib.Path(workdir) / MODELS_DIR / run_dir_name(model, dataset, distill)


def plan_row(config: TrainConfig, dataset: str, p: PlannedModel, distill: str,
             teacher_flops: int, workdir: pathlib.Path | None,
             budgets: Sequence[int] = (), dkd_beta: float | None = None,
             extra_epochs: float = 0.0) -> dict:
    """One ``--dry-run --json`` object: counts, distillation, epochs and training FLOPs.

    ``config`` is the run's own config (a DKD run's says whether its warm-up is extra);
    ``workdir`` is the run directory the model will train in (``None``: not shown).
    ``epochs`` is the run's whole duration, ``extra_epochs`` the part added to the base
    schedule (DKD warm-up), ``dkd_beta`` the DKD non-target weight (``None`` unless DKD).
    """
    images = images_seen(config, dataset)
    row = {
        "role": p.role, "model": p.model, "label": p.label, "network": p.network,
        "dataset": dataset, "distill": distill, "dkd_beta": dkd_beta,
        "epochs": planned_epochs(config), "extra_epochs": float(extra_epochs),
        "relus": p.counts.relus,
        "stage_relus": list(p.counts.stage_relus), "flops": p.counts.flops,
        "macs": p.counts.macs, "params": p.counts.params, "train_images": images,
        "train_flops_estimate": training_flops(p.counts.flops, images,
                                               teacher_flops if distill != "none" else 0),
    }
    if budgets:
        row["budget"] = p.fits(budgets)
    if workdir is not None:
        row["workdir"] = str(workdir)
    return row
