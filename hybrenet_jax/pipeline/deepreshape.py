"""The DeepReShape pipeline: criticality order -> HybReNets -> ReLU-optimized variants.

Steps (spec §4-§6):

1. criticality order: given (``--order``) or measured on the BaseCh network of the given
   depths (:mod:`~hybrenet_jax.pipeline.criticality`);
2. ReLU equalization (:func:`~hybrenet_jax.design.equalize_width`, Algorithm 1) and the
   alpha = 2 capacity-criticality networks (:func:`~hybrenet_jax.design.capacity_criticality`);
3. Algorithm 2 variants of every network (:func:`~hybrenet_jax.design.relu_optimization_plan`),
   kept when within the ReLU budgets (see :mod:`~hybrenet_jax.pipeline.planning`);
4. the teacher trained once, then every variant with KD or DKD
   (:mod:`~hybrenet_jax.pipeline.runner`); one ``results.jsonl`` line per trained model.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from hybrenet_jax.bounded import parse_int
from hybrenet_jax.design import (PLAN_REUSE_FACTORS, Candidate, capacity_criticality,
                                 equalize_width, parse_order, relu_optimization_plan)
from hybrenet_jax.netspec import REUSE_FACTORS
from hybrenet_jax.pipeline.errors import PipelineError
from hybrenet_jax.pipeline.planning import (PlannedModel, VariantPlan, apply_budgets, dedupe,
                                            planned_model)

#: Which networks to optimize: the equalized HRNs, the alpha = 2 ones, or both.
NETWORK_SETS = ("all", "equalized", "alpha2")


@dataclasses.dataclass(frozen=True)
class DeepReshapePlan(VariantPlan):
    """The networks and variants of one DeepReShape run."""

    networks: tuple[tuple[str, Candidate], ...]  # (kind, candidate), kind in equalized|alpha2

    def as_dict(self) -> dict:
        """``--dry-run --json``."""
        return {
            "order": self.order_text,
            "networks": [{"kind": kind, **c.as_dict()} for kind, c in self.networks],
            "variants": [{"model": p.model, "label": p.label, "network": p.network,
                          "relus": p.counts.relus, "flops": p.counts.flops}
                         for p in self.variants],
            **self.leftovers_dict(),
        }


def base_network(depths: Sequence[int], m: int) -> str:
    """The BaseCh network (all stage multipliers 2) of ``depths``: where criticality is measured."""
    multipliers = "2x" * (len(depths) - 1)
    return f"hrn-{multipliers}:m={m},depths={'-'.join(str(d) for d in depths)}"


def parse_reuse_factors(text: str | None) -> tuple[int, ...]:
    """``"4,8,16"`` -> ``(4, 8, 16)``; ``"none"`` or ``""`` -> no Re2 variants."""
    if text is None:
        return PLAN_REUSE_FACTORS
    if text.strip().lower() in ("", "none"):
        return ()
    factors = tuple(parse_int(t.strip(), "--reuse", low=min(REUSE_FACTORS),
                              high=max(REUSE_FACTORS), note="ReLU-reuse factors like 4,8,16, "
                              "or 'none'", error=PipelineError) for t in text.split(","))
    wrong = [f for f in factors if f not in REUSE_FACTORS]
    if wrong:
        raise PipelineError(f"--reuse {text!r}: {wrong[0]} is not a ReLU-reuse factor; "
                            f"accepted: {', '.join(map(str, REUSE_FACTORS))}, or 'none'")
    return factors


def plan_deepreshape(depths: Sequence[int], order: str | Sequence[int], dataset: str,
                     m: int = 16, budgets: Sequence[int] = (),
                     reuse_factors: Sequence[int] = PLAN_REUSE_FACTORS,
                     networks: str = "all", top: int = 0) -> DeepReshapePlan:
    """Plan every network and variant (no training).

    Args:
      depths: base stage depths, e.g. ``(2, 2, 2, 2)``.
      order: criticality order (most to least critical), e.g. ``"S3,S2,S4,S1"``.
      dataset: dataset whose input size and classes the counts use.
      m: base width of the HRNs.
      budgets: ReLU budgets; variants above the largest are dropped.
      reuse_factors: ReLU-reuse factors of Algorithm 2.
      networks: ``all``, ``equalized`` (Algorithm 1 networks) or ``alpha2``.
      top: keep only the ``top`` lowest-FLOPs networks of each kind (0 = all).
    """
    if networks not in NETWORK_SETS:
        raise PipelineError(f"networks={networks!r}; accepted: {', '.join(NETWORK_SETS)}")
    if m <= 0:
        raise PipelineError(f"--m {m}: the base width must be a positive integer")
    if top < 0:
        raise PipelineError(f"--top {top}: must be >= 0 (0 keeps every network)")
    order = parse_order(order, len(depths))
    equalized = equalize_width(depths, order, m=m, dataset=dataset)
    alpha2 = capacity_criticality(equalized, dataset=dataset)
    chosen: list[tuple[str, Candidate]] = []
    for kind, cands in (("equalized", equalized), ("alpha2", alpha2)):
        if networks in ("all", kind):
            chosen += [(kind, c) for c in (cands[:top] if top else cands)]
    unique: dict[str, tuple[str, Candidate]] = {}
    for kind, c in chosen:
        unique.setdefault(c.model, (kind, c))
    variants: list[PlannedModel] = []
    skipped: list[str] = []
    for kind, c in unique.values():
        entries, notes = relu_optimization_plan(c.model, dataset, reuse_factors)
        variants += [planned_model(e.model, dataset, e.label, c.model) for e in entries]
        skipped += [f"{c.model}: {n}" for n in notes]
    kept, over = apply_budgets(dedupe(variants), budgets)
    return DeepReshapePlan(order=order, networks=tuple(unique.values()), variants=tuple(kept),
                           skipped=tuple(skipped), over_budget=tuple(over))
