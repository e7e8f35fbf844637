"""The ``snl`` section of a training config: SNL's knobs and where their defaults come from.

Defaults follow the public SNL scripts (spec §7): per-pixel masks initialised to 1; mask
search with Adam (lr 1e-3) on CE + KD (T=4, weight 1) + lambda * ||mask||_1, lambda from 1e-5
multiplied by 1.1 whenever the count of mask values above 1e-2 fails to reach a new low (from
search epoch 5 on), at most 2000 search epochs, stop once the count is within the budget;
binarize at 1e-2; fine-tune 100 epochs with SGD (lr 1e-3, momentum 0.9, weight decay 5e-4,
cosine) and KD. The teacher is the pretrained network itself, as in the public scripts. Like
the public ResNet models, the network has no stem ReLU during SNL (the stem site is linear
and unmasked; ``mask_stem`` masks it instead), and binarization keeps only masks above the
threshold (``fill_to_budget`` re-admits masks below it up to the budget).
Fields marked "ours" are additions of this implementation (see docs/snl.md).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from hybrenet_jax.errors import HybrenetError

GRANULARITIES = ("pixel", "channel")


class SNLError(HybrenetError):
    """Bad SNL input: budget, granularity, model or pretrained/teacher run."""


#: Defaults of ``config.snl``.
SNL_DEFAULTS: dict[str, object] = {
    "granularity": "pixel",  # pixel (public code) | channel (paper)
    "threshold": 1e-2,  # a mask value above this counts as a kept ReLU
    "search_learning_rate": 1e-3,  # Adam, all parameters (weights and masks)
    "mask_learning_rate": 0.0,  # ours: Adam lr of the masks alone; 0 = search_learning_rate
    "lasso": 1e-5,  # initial lambda of the L1 mask penalty
    "lasso_growth": 1.1,  # lambda *= this when the count reaches no new low ...
    "lasso_patience_epochs": 5,  # ... from this search epoch on
    "max_epochs": 2000,  # search epochs at most
    "epoch_steps": 0,  # ours: steps per search epoch; 0 = one pass over the training set
    "kd": True,  # KD from the teacher (default teacher: the pretrained network)
    "temperature": 4.0,
    "kd_weight": 1.0,  # loss = CE + kd_weight * KD (* T^2) [+ lambda * ||mask||_1]
    "finetune_epochs": 100,
    "finetune_steps": 0,  # ours: > 0 overrides finetune_epochs (tiny runs, tests)
    "finetune_learning_rate": 1e-3,
    "finetune_momentum": 0.9,
    "finetune_weight_decay": 5e-4,
    "fill_to_budget": False,  # ours when true: re-admit the largest masks below the threshold
    "mask_stem": False,  # true: mask the stem ReLU too; false: no stem ReLU, as public SNL
    "thin": "",  # ours: ReLU-Thinning before SNL, e.g. "S1+S2+S3+S4" or "all"
}


@dataclasses.dataclass(frozen=True)
class SNLSettings:
    """Typed view of ``config.snl`` (see :data:`SNL_DEFAULTS`)."""

    granularity: str
    threshold: float
    search_learning_rate: float
    mask_learning_rate: float
    lasso: float
    lasso_growth: float
    lasso_patience_epochs: int
    max_epochs: int
    epoch_steps: int
    kd: bool
    temperature: float
    kd_weight: float
    finetune_epochs: int
    finetune_steps: int
    finetune_learning_rate: float
    finetune_momentum: float
    finetune_weight_decay: float
    fill_to_budget: bool
    mask_stem: bool
    thin: str

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise SNLError(f"snl.granularity={self.granularity!r}; accepted: "
                           f"{', '.join(GRANULARITIES)}")
        if not 0 < self.threshold < 1:
            raise SNLError(f"snl.threshold={self.threshold}: must lie in (0, 1)")
        for name in ("search_learning_rate", "lasso", "finetune_learning_rate", "temperature"):
            if getattr(self, name) <= 0:
                raise SNLError(f"snl.{name}={getattr(self, name)} must be positive")
        if self.lasso_growth < 1:
            raise SNLError(f"snl.lasso_growth={self.lasso_growth} must be >= 1")
        if self.max_epochs <= 0:
            raise SNLError(f"snl.max_epochs={self.max_epochs} must be positive")
        if self.finetune_epochs < 0 or self.finetune_steps < 0 or self.epoch_steps < 0:
            raise SNLError("snl.finetune_epochs, finetune_steps and epoch_steps must be >= 0")

    @property
    def masks_learning_rate(self) -> float:
        """The Adam learning rate of the masks."""
        return self.mask_learning_rate or self.search_learning_rate


def ensure_snl_section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Add ``config.snl`` (or its missing fields) with :data:`SNL_DEFAULTS`."""
    if "snl" not in config:
        config.snl = ml_collections.ConfigDict()
    for key, value in SNL_DEFAULTS.items():
        if key not in config.snl:
            config.snl[key] = value
    return config


def snl_settings(config: ml_collections.ConfigDict) -> SNLSettings:
    """Validated settings of ``config.snl`` (defaults for missing fields)."""
    section = dict(SNL_DEFAULTS)
    if "snl" in config:
        section.update(config.snl.to_dict())
    unknown = sorted(set(section) - set(SNL_DEFAULTS))
    if unknown:
        raise SNLError(f"unknown config.snl field(s): {', '.join(unknown)}")
    fields = {f.name: f.type for f in dataclasses.fields(SNLSettings)}
    return SNLSettings(**{k: section[k] for k in fields})
