"""DeepReDuce-style ReLU optimization of classical networks (ResNet18, WRN22x8, ...).

Given a criticality order, the variants of a base network are:

* culling: the ``c`` least-critical stages culled, for ``c = 0 .. max_culled`` (``c = 0`` is
  the base network; the stem ReLU goes with Stage1);
* thinning: each of those with every remaining stage thinned (one ReLU per block kept);
* channel scaling: each thinned network with the base width ``m`` scaled by each factor in
  ``scales`` (e.g. 0.5 halves every stage's channels).

Training reuses the DeepReShape machinery (:mod:`~hybrenet_jax.pipeline.runner`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from hybrenet_jax.bounded import MAX_SCALE, parse_float
from hybrenet_jax.design import parse_order
from hybrenet_jax.model_string import model_string_with, parse_model_string
from hybrenet_jax.netspec import stage_names
from hybrenet_jax.pipeline.criticality import base_spec
from hybrenet_jax.pipeline.errors import PipelineError
from hybrenet_jax.pipeline.planning import (PlannedModel, VariantPlan, apply_budgets, dedupe,
                                            planned_model)

DEFAULT_SCALES = (0.5,)


@dataclasses.dataclass(frozen=True)
class DeepReducePlan(VariantPlan):
    """The variants of one DeepReDuce run."""

    model: str

    def as_dict(self) -> dict:
        """``--dry-run --json``."""
        return {"model": self.model, "order": self.order_text,
                "variants": [{"model": p.model, "label": p.label, "relus": p.counts.relus,
                              "flops": p.counts.flops} for p in self.variants],
                **self.leftovers_dict()}


def parse_scales(text: str | None) -> tuple[float, ...]:
    """``"0.5,2"`` -> ``(0.5, 2.0)``; ``"none"`` -> no channel-scaled variants."""
    if text is None:
        return DEFAULT_SCALES
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(parse_float(t.strip(), "--scales", low=0.0, high=MAX_SCALE, low_open=True,
                             note="channel-scaling factors like 0.5,2, or 'none'",
                             error=PipelineError) for t in text.split(","))


def _join(stages) -> str | None:
    return stage_names(sorted(stages), "+") or None


def plan_deepreduce(model: str, order: str | Sequence[int], dataset: str,
                    scales: Sequence[float] = DEFAULT_SCALES, max_culled: int | None = None,
                    budgets: Sequence[int] = ()) -> DeepReducePlan:
    """Plan the culled / thinned / channel-scaled variants of ``model`` (no training)."""
    spec = base_spec(model, dataset)
    n = spec.num_stages
    order = parse_order(order, n)
    if max_culled is None:
        max_culled = n - 1
    if not 0 <= max_culled <= n - 1:
        raise PipelineError(f"--max-culled {max_culled}: must be between 0 and {n - 1} (at "
                            "least one stage keeps its ReLUs)")
    ms = parse_model_string(model)
    m = spec.stem_width
    variants: list[PlannedModel] = []
    skipped: list[str] = []
    for c in range(max_culled + 1):
        culled = order[n - c:] if c else ()
        kept = [s for s in range(1, n + 1) if s not in culled]
        prefix = f"culled {_join(culled)}" if culled else "base"
        cull_model = model_string_with(model, cull=_join(culled))
        variants.append(planned_model(cull_model, dataset, prefix, model))
        thin_label = f"{prefix}, thinned" if culled else "thinned"
        thin_model = model_string_with(cull_model, thin=_join(kept))
        variants.append(planned_model(thin_model, dataset, thin_label, model))
        for scale in scales:
            new_m = int(round(m * scale))
            label = f"{thin_label} + ScaleCh {scale:g}"
            if ms.get("widths") is not None:
                skipped.append(f"{label}: custom widths= has no base width m to scale")
            elif new_m < 1 or new_m == m:
                skipped.append(f"{label}: m={m} x {scale:g} gives no new width")
            else:
                variants.append(planned_model(model_string_with(thin_model, m=str(new_m)),
                                              dataset, label, model))
    kept_variants, over = apply_budgets(dedupe(variants), budgets)
    return DeepReducePlan(model=model, order=order, variants=tuple(kept_variants),
                          skipped=tuple(skipped), over_budget=tuple(over))
