"""DeepReShape design algorithms: criticality, ReLU equalization and the Algorithm 2 plan.

* :func:`criticality` — the stage criticality metric of spec §4 from measured accuracies.
* :func:`equalize_width` — Algorithm 1 by width: integer stage multipliers >= 2 whose stage
  ReLU counts follow a criticality order strictly (spec §5).
* :func:`equalize_depth` — Algorithm 1 by depth: the smallest stage depths that do the same
  for fixed widths.
* :func:`capacity_criticality` — step 2: the alpha = 2 variants of equalized networks.
* :func:`relu_optimization_plan` — Algorithm 2: base, thinned, thinned+ScaleCh0.5 and Re2
  4/8/16 variants (Stage1 culled first when it holds the largest ReLU share).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

from hybrenet_jax.counts import Counts, count
from hybrenet_jax.dataset_info import dataset_info
from hybrenet_jax.errors import DesignError, HybrenetError
from hybrenet_jax.model_string import parse_model_string, spec_from_model_string
from hybrenet_jax.netspec import NetSpec, parse_stage_name, stage_names

#: Exponent of the ReLU-count normalisation in the criticality metric (spec §4).
CRITICALITY_EXPONENT = -0.07
#: ReLU-reuse factors of Algorithm 2.
PLAN_REUSE_FACTORS = (4, 8, 16)


# -- criticality ---------------------------------------------------------------------------
def criticality(accuracies: Sequence[float], relus: Sequence[int]) -> tuple[float, ...]:
    """Stage criticality ``C_k = (A_k - min_j A_j) * (R_k / 1000) ** -0.07`` (spec §4).

    Args:
      accuracies: top-1 % of the network keeping ReLUs only in stage k, one per stage.
      relus: ReLU count of stage k (stem included in Stage1), one per stage.

    Returns:
      One criticality value per stage; the least critical stage gets 0.
    """
    if len(accuracies) != len(relus) or not accuracies:
        raise DesignError(
            f"criticality needs one accuracy and one ReLU count per stage; got "
            f"{len(accuracies)} accuracies and {len(relus)} ReLU counts"
        )
    if any(r <= 0 for r in relus):
        raise DesignError(f"stage ReLU counts must be positive, got {list(relus)}")
    floor = min(accuracies)
    return tuple((a - floor) * (r / 1000) ** CRITICALITY_EXPONENT
                 for a, r in zip(accuracies, relus))


def criticality_order(values: Sequence[float]) -> tuple[int, ...]:
    """Stages (1-based) from most to least critical; ties keep the earlier stage first."""
    return tuple(sorted(range(1, len(values) + 1), key=lambda s: (-values[s - 1], s)))


def parse_order(text: str | Sequence[int], num_stages: int) -> tuple[int, ...]:
    """Parse ``"S3,S2,S4,S1"`` (or ``S3>S2>S4>S1``) into ``(3, 2, 4, 1)``; must be a permutation."""
    if isinstance(text, str):
        tokens = [t for t in text.replace(">", ",").split(",") if t.strip()]
        order = tuple(parse_stage_name(t, num_stages) for t in tokens)
    else:
        order = tuple(int(s) for s in text)
    if sorted(order) != list(range(1, num_stages + 1)):
        expected = stage_names(range(1, num_stages + 1))
        raise DesignError(
            f"criticality order {stage_names(order) or '(empty)'} must name "
            f"each of the {num_stages} stages exactly once (e.g. {expected})"
        )
    return order


# -- equalization ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Candidate:
    """One network proposed by ReLU equalization."""

    multipliers: tuple[int, ...]
    depths: tuple[int, ...]
    m: int
    model: str
    counts: Counts

    @property
    def name(self) -> str:
        return "hrn-" + "".join(f"{lam}x" for lam in self.multipliers)

    def as_dict(self) -> dict:
        greek = dict(zip(("alpha", "beta", "gamma"), self.multipliers))
        return {
            **greek,
            "multipliers": list(self.multipliers),
            "depths": list(self.depths),
            "m": self.m,
            "name": self.name,
            "model": self.model,
            "stage_relus": list(self.counts.stage_relus),
            "relus": self.counts.relus,
            "flops": self.counts.flops,
            "params": self.counts.params,
        }


def _stage_weights(depths: Sequence[int], multipliers: Sequence[int]) -> list[int]:
    """Stage ReLU counts up to a common factor: phi_k * prod(lambda_j<k) * 4^(D-k)."""
    d = len(depths)
    weights, prod = [], 1
    for k in range(d):
        if k:
            prod *= multipliers[k - 1]
        weights.append(depths[k] * prod * 4 ** (d - 1 - k))
    return weights


def _follows(weights: Sequence[int], order: Sequence[int]) -> bool:
    return all(weights[a - 1] > weights[b - 1] for a, b in zip(order, order[1:]))


def _hrn_model(multipliers: Sequence[int], depths: Sequence[int], m: int) -> str:
    name = "hrn-" + "".join(f"{lam}x" for lam in multipliers)
    opts = [f"m={m}"] if m != 16 else []
    if tuple(depths) != (2,) * len(depths):
        opts.append("depths=" + "-".join(str(d) for d in depths))
    return name + (":" + ",".join(opts) if opts else "")


def _candidate(multipliers, depths, m, dataset) -> Candidate:
    model = _hrn_model(multipliers, depths, m)
    return Candidate(tuple(multipliers), tuple(depths), m, model,
                     count(spec_from_model_string(model, dataset)))


def _check_depths(depths: Sequence[int]) -> tuple[int, ...]:
    depths = tuple(int(d) for d in depths)
    if len(depths) < 2:
        raise DesignError(f"ReLU equalization needs at least 2 stages; got depths {depths}")
    if any(d <= 0 for d in depths):
        raise DesignError(f"depths must be positive integers; got {depths}")
    return depths


def _smallest_alpha(tail: tuple[int, ...], depths, order, bound: int) -> int | None:
    """Smallest first multiplier making ``(alpha, *tail)`` follow ``order`` (None if none)."""
    for alpha in range(2, bound + 1):
        if _follows(_stage_weights(depths, (alpha, *tail)), order):
            return alpha
    return None


def equalize_width(depths: Sequence[int], order: Sequence[int] | str, m: int = 16,
                   dataset: str = "cifar100", bound: int | None = None) -> list[Candidate]:
    """Algorithm 1 by width: stage multipliers whose stage ReLUs follow ``order`` strictly.

    Every multiplier is an integer >= 2. For each feasible choice of the later multipliers
    (beta, gamma, ...) the smallest feasible alpha is taken; where a later multiplier is
    unbounded for fixed multipliers after it, only its smallest feasible value is kept (the
    paper's "smallest beta per gamma"). The stem is ignored in the inequalities.

    Returns:
      Candidates ranked by FLOPs (ascending).

    Raises:
      DesignError: no width assignment satisfies the order.
    """
    depths = _check_depths(depths)
    d = len(depths)
    order = parse_order(order, d)
    if bound is None:
        bound = 64 if d <= 5 else 16
    tails: list[tuple[int, ...]] = []
    alpha_of: dict[tuple[int, ...], int] = {}
    for tail in itertools.product(range(2, bound + 1), repeat=d - 2):
        alpha = _smallest_alpha(tail, depths, order, bound)
        if alpha is not None:
            tails.append(tail)
            alpha_of[tail] = alpha
    # Unbounded coordinates (feasible up to the search bound) keep only their smallest value.
    for j in range(d - 2):
        groups: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        for t in tails:
            groups.setdefault(t[j + 1:], []).append(t)
        kept = []
        for members in groups.values():
            if max(t[j] for t in members) == bound:
                low = min(t[j] for t in members)
                members = [t for t in members if t[j] == low]
            kept.extend(members)
        tails = kept
    if not tails:
        raise DesignError(
            f"no integer stage multipliers >= 2 (searched up to {bound}) make the stage ReLU "
            f"counts of depths {'-'.join(map(str, depths))} follow the order "
            f"{stage_names(order, '>')}; try another order, other depths, or "
            "--by depth"
        )
    cands = [_candidate((alpha_of[t], *t), depths, m, dataset) for t in set(tails)]
    return sorted(cands, key=lambda c: (c.counts.flops, c.multipliers))


def equalize_depth(widths_multipliers: Sequence[int], order: Sequence[int] | str, m: int = 16,
                   dataset: str = "cifar100") -> list[Candidate]:
    """Algorithm 1 by depth: the smallest stage depths whose stage ReLUs follow ``order``.

    Each constraint ``phi_a * c_a > phi_b * c_b`` only bounds a more critical stage's depth
    from below, so the componentwise-smallest solution is unique: the least critical stage
    gets depth 1 and each next stage the smallest depth exceeding its predecessor.
    """
    multipliers = tuple(int(x) for x in widths_multipliers)
    if any(x < 1 for x in multipliers):
        raise DesignError(f"stage multipliers must be integers >= 1; got {multipliers}")
    d = len(multipliers) + 1
    order = parse_order(order, d)
    unit = _stage_weights((1,) * d, multipliers)  # weight of one block per stage
    depths = [0] * d
    previous = 0
    for stage in reversed(order):
        depths[stage - 1] = previous // unit[stage - 1] + 1
        previous = depths[stage - 1] * unit[stage - 1]
    return [_candidate(multipliers, depths, m, dataset)]


def capacity_criticality(candidates: Sequence[Candidate], dataset: str = "cifar100",
                         alpha: int = 2) -> list[Candidate]:
    """Step 2: the same networks with the first multiplier set to ``alpha`` (default 2).

    More ReLUs move to the least-critical Stage1 and FLOPs drop sharply; duplicates removed,
    ranked by FLOPs.
    """
    seen: dict[tuple, Candidate] = {}
    for c in candidates:
        mult = (alpha, *c.multipliers[1:])
        key = (mult, c.depths, c.m)
        if key not in seen:
            seen[key] = _candidate(mult, c.depths, c.m, dataset)
    return sorted(seen.values(), key=lambda c: (c.counts.flops, c.multipliers))


# -- Algorithm 2 ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PlanEntry:
    """One ReLU-optimized variant planned by Algorithm 2."""

    label: str
    model: str
    counts: Counts

    def as_dict(self) -> dict:
        return {"label": self.label, "model": self.model, **self.counts.as_dict()}


def _base_width(spec: NetSpec) -> int:
    return spec.widths[0] if spec.family == "resnet" and spec.stem_width == spec.widths[0] \
        else spec.stem_width


def relu_optimization_plan(model: str, dataset: str = "cifar100",
                           reuse_factors: Sequence[int] = PLAN_REUSE_FACTORS
                           ) -> tuple[list[PlanEntry], list[str]]:
    """Algorithm 2: the ReLU-optimized variants of ``model`` with their counts.

    Variants: base; thinned (Stage1 culled first when it holds the largest ReLU share, every
    other stage thinned); thinned + ScaleCh 0.5 (``m`` halved); thinned + Re2 N for each N.

    Returns:
      ``(entries, skipped)`` where ``skipped`` explains variants that cannot be built (e.g. a
      reuse factor that does not divide a width, or an odd ``m``).
    """
    dataset_info(dataset)
    base_spec = spec_from_model_string(model, dataset)
    base_counts = count(base_spec)
    ms = parse_model_string(model)
    entries = [PlanEntry("base", str(ms), base_counts)]
    skipped: list[str] = []

    culled = set(base_spec.culled)
    shares = base_counts.stage_relus
    if max(range(len(shares)), key=lambda i: (shares[i], -i)) == 0 and shares[0] > 0:
        culled.add(1)
    thinned = [s for s in range(1, base_spec.num_stages + 1) if s not in culled]
    join = lambda stages: stage_names(sorted(stages), "+") or None  # noqa: E731
    thin_ms = ms.with_options(cull=join(culled), thin=join(thinned))
    label = ("culled S1, " if 1 in culled and 1 not in base_spec.culled else "") + "thinned"

    def add(label: str, variant) -> None:
        try:
            entries.append(PlanEntry(label, str(variant),
                                     count(spec_from_model_string(str(variant), dataset))))
        except HybrenetError as err:
            skipped.append(f"{label}: {err}")

    add(label, thin_ms)
    m = _base_width(base_spec)
    if ms.get("widths") is not None:
        skipped.append(f"{label} + ScaleCh 0.5: custom widths= has no base width m to halve")
    elif m % 2 or m < 2:
        skipped.append(f"{label} + ScaleCh 0.5: base width m={m} cannot be halved exactly")
    else:
        add(f"{label} + ScaleCh 0.5", thin_ms.with_options(m=str(m // 2)))
    for n in reuse_factors:
        add(f"{label} + Re2 {n}", thin_ms.with_options(reuse=str(n)))
    return entries, skipped


__all__ = [
    "Candidate", "PlanEntry", "capacity_criticality", "criticality", "criticality_order",
    "equalize_depth", "equalize_width", "parse_order", "relu_optimization_plan",
]
