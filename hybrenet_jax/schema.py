"""The typed training configuration: frozen dataclasses with the paper's defaults and rules.

:class:`TrainConfig` is every field a run has; its sections :class:`DistillConfig`,
:class:`PipelineConfig` and :class:`SNLConfig` hold distillation, the ReLU-optimization
pipelines and SNL. Each field carries its default (the paper's recipe, spec §7; SNL's public
scripts) and its rule (:class:`Int`, :class:`Float`, :class:`Bool`, :class:`Choice`,
:class:`Text`, :class:`Betas`), so the schema, the defaults and the checks are one table.

:func:`build_config` is the boundary: it turns a mapping (an ml_collections ``ConfigDict``
from a ``configs/*.py`` file and ``--config.a.b=v`` overrides, or a plain dict) into a
:class:`TrainConfig`, filling missing fields with defaults and raising one
:class:`ConfigError` line that names every unknown or bad field and what it accepts. The
library then reads typed, immutable values; :func:`updated` makes a changed copy (checked
again). Rules that involve the machine (devices) stay with the training loop.

Durations: ``total_steps > 0`` overrides ``num_epochs``; a DKD run with
``distill.dkd_warmup_extra`` trains ``distill.dkd_warmup_epochs`` more epochs on top
(:func:`schedule_steps`, the paper's 200 + 20).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

from hybrenet_jax.dataset_info import DATASETS
from hybrenet_jax.errors import ConfigError, HybrenetError

#: Names of the choices several modules accept (one list each).
DISTILL_KINDS: tuple[str, ...] = ("none", "kd", "dkd")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
SCHEDULES: tuple[str, ...] = ("cosine", "constant")
DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16")
BATCH_RULES: tuple[str, ...] = ("global", "per_device")
GRANULARITIES: tuple[str, ...] = ("pixel", "channel")
#: The paper's DKD sweep of the non-target weight beta (target weight 1; spec §7).
PAPER_DKD_BETAS: tuple[float, ...] = (0.8, 1.0, 2.0, 6.0)

#: Upper bounds of the count fields. None is a hardware limit: each is far above any sensible
#: value and low enough that a typo (an extra digit or three) is caught here in milliseconds,
#: not after compiling, by an int32 overflow in a step counter or by a full disk.
#: Sane ranges of the weights a typo can blow up (a run with them diverges at once, and the
#: advice of the divergence message, a lower learning rate, would not help): coupled weight
#: decay (the paper's 4e-4), distillation temperature (1-20 in practice), SNL's L1 weight
#: (1e-5..1e-2) and its growth per search epoch (1.1).
MAX_WEIGHT_DECAY = 1.0
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 1000.0
MAX_LASSO = 10.0
MAX_LASSO_GROWTH = 10.0
MAX_STEPS = 2**31 - 1  # steps are int32 in the optimizer state and the LR schedule
MAX_EPOCHS = 1_000_000
MAX_BATCH = 2**20
MAX_DEVICES = 65_536
MAX_KEPT = 1_000  # checkpoints kept (periodic or best): each is a full copy of the state
#: DKD's loss weights (alpha, beta; the paper sweeps beta in 0.8..6, the DKD authors use 8)
MAX_DKD_WEIGHT = 1_000.0


# -- rules ----------------------------------------------------------------------------------
def _range(value: float, low: float | None, high: float | None, note: str,
           low_open: bool = False, high_open: bool = False) -> str | None:
    if (low is None or (value > low if low_open else value >= low)) \
            and (high is None or (value < high if high_open else value <= high)):
        return None
    if low is not None and high is not None:
        text = f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        text = f"must be {'>' if low_open else '>='} {low}"
    else:
        text = f"must be {'<' if high_open else '<='} {high}"
    return text + (f" ({note})" if note else "")


@dataclasses.dataclass(frozen=True)
class Int:
    """An integer (not a bool) in ``[low, high]``; ``note`` explains special values."""

    low: int | None = None
    high: int | None = None
    note: str = ""

    def check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {type(value).__name__}"
        return _range(value, self.low, self.high, self.note)

    def convert(self, value: Any) -> int:
        return int(value)


@dataclasses.dataclass(frozen=True)
class Float:
    """A finite number in ``[low, high]`` (``low_open``/``high_open``: the bound excluded)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""

    def check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {type(value).__name__}"
        if not math.isfinite(value):
            return "must be a finite number"
        note = f" ({self.note})" if self.note else ""
        if self.low_open and self.low is not None and value <= self.low:
            return f"must be > {self.low}" + note
        if self.high_open and self.high is not None and value >= self.high:
            return f"must be < {self.high}" + note
        return _range(value, self.low, self.high, self.note, self.low_open, self.high_open)

    def convert(self, value: Any) -> float:
        return float(value)


@dataclasses.dataclass(frozen=True)
class Bool:
    """``True`` or ``False``."""

    def check(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"

    def convert(self, value: Any) -> bool:
        return bool(value)


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``choices`` (``fold``: compared, and kept, lower-cased)."""

    choices: tuple[str, ...]
    fold: bool = False

    def check(self, value: Any) -> str | None:
        key = value.lower() if self.fold and isinstance(value, str) else value
        if key in self.choices:
            return None
        return f"accepted: {', '.join(self.choices)}"

    def convert(self, value: Any) -> str:
        return value.lower() if self.fold else value


@dataclasses.dataclass(frozen=True)
class Text:
    """A string (``nonempty``: with at least one non-blank character)."""

    nonempty: bool = False

    def check(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"must be a string, got {type(value).__name__}"
        if self.nonempty and not value.strip():
            return "must not be empty"
        return None

    def convert(self, value: Any) -> str:
        return value


@dataclasses.dataclass(frozen=True)
class Betas:
    """Positive numbers as ``"0.8,1,2,6"`` text (or a list); kept as that text."""

    def check(self, value: Any) -> str | None:
        try:
            parse_dkd_betas(value)
        except ConfigError as err:
            return str(err)
        return None

    def convert(self, value: Any) -> str:
        return ",".join(f"{b:g}" for b in parse_dkd_betas(value))


Rule = Int | Float | Bool | Choice | Text | Betas


def parse_dkd_betas(value: object) -> tuple[float, ...]:
    """``"0.8,1,2,6"`` / ``[0.8, 1]`` -> ``(0.8, 1.0)`` (sorted, unique, each > 0).

    Raises:
      ConfigError: empty, non-numeric, non-finite or non-positive values.
    """
    if isinstance(value, str):
        tokens: list = [t for t in value.replace(",", " ").split() if t]
    elif isinstance(value, (list, tuple)):
        tokens = list(value)
    else:
        tokens = [value]
    betas = []
    for token in tokens:
        try:
            beta = float(token)
        except (TypeError, ValueError):
            raise ConfigError(f"DKD beta {token!r} is not a number (e.g. --dkd-betas 0.8 1 2 "
                              "6)") from None
        if isinstance(token, bool) or not math.isfinite(beta) or not 0 < beta <= MAX_DKD_WEIGHT:
            raise ConfigError(f"DKD beta {token!r} must be a positive number <= "
                              f"{MAX_DKD_WEIGHT:g}")
        betas.append(beta)
    if not betas:
        raise ConfigError("no DKD beta given (e.g. --dkd-betas 0.8 1 2 6)")
    return tuple(sorted(set(betas)))


def _field(default: Any, rule: Rule) -> Any:
    return dataclasses.field(default=default, metadata={"rule": rule})


def _section(cls: type) -> Any:
    return dataclasses.field(default_factory=cls)


# -- sections -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation from a finished run of ours (spec §7: KD, DKD)."""

    kind: Literal["none", "kd", "dkd"] = _field("none", Choice(DISTILL_KINDS))
    teacher_workdir: str = _field("", Text())
    #: default: the model string recorded in the teacher's run
    teacher_model: str = _field("", Text())
    teacher_checkpoint: Literal["best", "latest"] = _field("best", Choice(("best", "latest")))
    temperature: float = _field(4.0, Float(MIN_TEMPERATURE, MAX_TEMPERATURE))
    kd_weight: float = _field(0.9, Float(0.0, 1.0))  # KD: (1 - w) * CE + w * KD
    dkd_alpha: float = _field(1.0, Float(0.0, MAX_DKD_WEIGHT))  # DKD target weight
    #: DKD non-target weight: one of the paper's sweep 0.8/1/2/6 (DKD authors' own: 8)
    dkd_beta: float = _field(1.0, Float(0.0, MAX_DKD_WEIGHT, low_open=True))
    #: the DKD term ramps in linearly over this many epochs ...
    dkd_warmup_epochs: float = _field(20.0, Float(0.0, MAX_EPOCHS))
    #: ... trained on top of the schedule (the paper's "20 additional epochs": 200 + 20);
    #: false: the ramp lies inside the schedule (the other reading)
    dkd_warmup_extra: bool = _field(True, Bool())


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What ``hybrenet criticality|deepreshape|deepreduce`` add to a training config."""

    #: teacher of every KD/DKD run (spec §7: ResNet18), trained once per pipeline workdir
    teacher_model: str = _field("resnet18", Text(nonempty=True))
    #: teacher training length in epochs; 0 = the config's own duration
    teacher_num_epochs: int = _field(0, Int(0, MAX_EPOCHS, note="0: the config's duration"))
    #: distillation of the trained variants when the command line does not say
    distill: Literal["none", "kd", "dkd"] = _field("kd", Choice(DISTILL_KINDS))
    #: DKD runs: one run per non-target weight beta, the best per variant reported
    dkd_betas: str = _field("0.8,1,2,6", Betas())

    @property
    def betas(self) -> tuple[float, ...]:
        """:attr:`dkd_betas` as numbers."""
        return parse_dkd_betas(self.dkd_betas)


@dataclasses.dataclass(frozen=True)
class SNLConfig:
    """SNL (spec §7; docs/snl.md), defaults of the public SNL scripts; "ours" marks additions.

    Search: Adam on CE + KD + lambda * ||mask||_1, lambda from ``lasso`` multiplied by
    ``lasso_growth`` whenever the count of masks above ``threshold`` reaches no new low (from
    search epoch ``lasso_patience_epochs`` on), stop within the budget or after
    ``max_epochs``. Then binarize at ``threshold`` and fine-tune (SGD, cosine, KD).
    """

    granularity: Literal["pixel", "channel"] = _field("pixel", Choice(GRANULARITIES))
    threshold: float = _field(1e-2, Float(0.0, 1.0, low_open=True, high_open=True))
    search_learning_rate: float = _field(1e-3, Float(0.0, low_open=True))
    #: ours: Adam lr of the masks alone; 0 = search_learning_rate
    mask_learning_rate: float = _field(0.0, Float(0.0))
    lasso: float = _field(1e-5, Float(0.0, MAX_LASSO, low_open=True))
    lasso_growth: float = _field(1.1, Float(1.0, MAX_LASSO_GROWTH))
    lasso_patience_epochs: int = _field(5, Int(0, MAX_EPOCHS))
    max_epochs: int = _field(2000, Int(1, MAX_EPOCHS))
    #: ours: steps per search epoch; 0 = one pass over the training set
    epoch_steps: int = _field(0, Int(0, MAX_STEPS, note="0: one pass over the training set"))
    #: KD from the teacher (default teacher: the pretrained network, as the public scripts)
    kd: bool = _field(True, Bool())
    temperature: float = _field(4.0, Float(MIN_TEMPERATURE, MAX_TEMPERATURE))
    kd_weight: float = _field(1.0, Float(0.0, MAX_DKD_WEIGHT))  # CE + kd_weight * KD (* T^2)
    finetune_epochs: int = _field(100, Int(0, MAX_EPOCHS))
    #: ours: > 0 overrides finetune_epochs (tiny runs, tests)
    finetune_steps: int = _field(0, Int(0, MAX_STEPS, note="0: finetune_epochs decides"))
    finetune_learning_rate: float = _field(1e-3, Float(0.0, low_open=True))
    finetune_momentum: float = _field(0.9, Float(0.0, 1.0))
    finetune_weight_decay: float = _field(5e-4, Float(0.0, MAX_WEIGHT_DECAY))
    #: ours when true: re-admit the largest masks below the threshold up to the budget
    fill_to_budget: bool = _field(False, Bool())
    #: true: mask the stem ReLU too; false: no stem ReLU, as public SNL's ResNets
    mask_stem: bool = _field(False, Bool())
    #: ours: ReLU-Thinning before SNL, e.g. "S1+S2+S3+S4" or "all"
    thin: str = _field("", Text())

    @property
    def masks_learning_rate(self) -> float:
        """The Adam learning rate of the masks."""
        return self.mask_learning_rate or self.search_learning_rate


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: the paper recipe (SGD momentum 0.9, lr 0.1 cosine, batch 128,
    weight decay 4e-4, 200 epochs) and its sections."""

    seed: int = _field(0, Int(0, 2**32 - 1))
    #: the order of the training batches and their augmentation; -1 = ``seed`` (a population
    #: of several seeds shares one data stream: see :func:`stream_seed`)
    data_seed: int = _field(-1, Int(-1, 2**32 - 1))
    model: str = _field("resnet18", Text(nonempty=True))
    dataset: str = _field("cifar100", Choice(tuple(DATASETS), fold=True))
    data_dir: str = _field("", Text())
    manual_dir: str = _field("", Text())
    batch_size: int = _field(128, Int(1, MAX_BATCH))
    #: global: batch_size is the global batch on any number of devices (paper recipe);
    #: per_device: batch_size per data-axis device, learning_rate scaled by the device count
    batch_rule: Literal["global", "per_device"] = _field("global", Choice(BATCH_RULES))
    num_epochs: int = _field(200, Int(0, MAX_EPOCHS))
    total_steps: int = _field(0, Int(0, MAX_STEPS, note="0: num_epochs decides"))
    optimizer: Literal["sgd", "adam"] = _field("sgd", Choice(OPTIMIZERS))
    learning_rate: float = _field(0.1, Float(0.0, low_open=True))
    lr_schedule: Literal["cosine", "constant"] = _field("cosine", Choice(SCHEDULES))
    warmup_epochs: float = _field(0.0, Float(0.0, MAX_EPOCHS))
    momentum: float = _field(0.9, Float(0.0, 1.0))
    nesterov: bool = _field(False, Bool())
    weight_decay: float = _field(4e-4, Float(0.0, MAX_WEIGHT_DECAY))
    label_smoothing: float = _field(0.0, Float(0.0, 1.0))
    crop_padding: int = _field(4, Int(0, 64, note="pixels on each side; images are at most "
                                                  "64 wide"))
    flip: bool = _field(True, Bool())
    augment: bool = _field(True, Bool())
    dtype: Literal["float32", "bfloat16"] = _field("float32", Choice(DTYPE_NAMES))
    mesh_model_axis: int = _field(1, Int(1, MAX_DEVICES, note="devices along the model axis"))
    prefetch: int = _field(2, Int(1, 64, note="batches held on the devices ahead of the step"))
    #: threads preparing training batches; 0: min(4, cores); the batches are the same
    data_workers: int = _field(0, Int(0, 256, note="0: automatic"))
    log_every_steps: int = _field(50, Int(1, MAX_STEPS))
    eval_every_steps: int = _field(0, Int(0, MAX_STEPS, note="0: once per epoch"))
    checkpoint_every_steps: int = _field(0, Int(0, MAX_STEPS, note="0: once per epoch"))
    checkpoint_keep: int = _field(2, Int(1, MAX_KEPT, note="the newest checkpoint is what a "
                                                           "rerun resumes from; each is a full "
                                                           "copy of the state on disk"))
    checkpoint_keep_best: int = _field(1, Int(0, MAX_KEPT, note="0: no best checkpoints; each "
                                                                "is a full copy of the state "
                                                                "on disk"))
    async_checkpointing: bool = _field(True, Bool())
    tensorboard: bool = _field(True, Bool())
    progress: bool = _field(True, Bool())
    distill: DistillConfig = _section(DistillConfig)
    pipeline: PipelineConfig = _section(PipelineConfig)
    snl: SNLConfig = _section(SNLConfig)


# -- walking the schema ---------------------------------------------------------------------
def _leaves(cls: type, prefix: str = "") -> dict[str, Rule]:
    out: dict[str, Rule] = {}
    for f in dataclasses.fields(cls):
        if "rule" in f.metadata:
            out[prefix + f.name] = f.metadata["rule"]
        else:
            out.update(_leaves(f.default_factory, f"{prefix}{f.name}."))
    return out


#: Dotted field name -> rule, for every field of :class:`TrainConfig`.
RULES: dict[str, Rule] = _leaves(TrainConfig)


def as_dict(config: TrainConfig) -> dict[str, Any]:
    """``config`` as nested plain dicts (JSON-ready; ``ConfigDict(as_dict(c))`` for files)."""
    return dataclasses.asdict(config)


def field_value(config: Any, dotted: str) -> Any:
    """``config.a.b`` for ``"a.b"`` on a :class:`TrainConfig` or a mapping."""
    node = config
    for part in dotted.split("."):
        node = node[part] if isinstance(node, Mapping) else getattr(node, part)
    return node


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _walk(cls: type, given: Any, prefix: str, bad: list[str]) -> Any:
    """``cls`` from ``given`` (a mapping; missing fields keep their defaults)."""
    if not isinstance(given, Mapping) and not hasattr(given, "items"):
        bad.append(f"{prefix.rstrip('.')} must be a section of fields, got "
                   f"{type(given).__name__}")
        return cls()
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in given.keys() if k not in names)
    if unknown:
        where = f"section {prefix.rstrip('.')!r}" if prefix else "the config"
        bad.append(f"unknown field(s) {', '.join(prefix + u for u in unknown)} in {where}; "
                   f"fields: {', '.join(names)}")
    values: dict[str, Any] = {}
    for name, f in names.items():
        if name not in given:
            continue
        value = given[name]
        rule = f.metadata.get("rule")
        if rule is None:
            values[name] = _walk(f.default_factory, value, f"{prefix}{name}.", bad)
            continue
        why = rule.check(value)
        if why:
            bad.append(f"{prefix}{name}={_shown(value)}: {why}")
        else:
            values[name] = rule.convert(value)
    return cls(**values)


def build_config(given: Mapping | TrainConfig) -> TrainConfig:
    """The checked, typed config of ``given`` (a ``ConfigDict``, a dict or a TrainConfig).

    Missing fields take their defaults; then every field is checked against its rule and the
    model string is parsed as every consumer will. Rules of a training run (a teacher for
    distillation, the devices) are the loop's. Imports and compiles nothing heavy.

    Raises:
      ConfigError: one line naming every unknown or bad field and what it accepts.
    """
    if isinstance(given, TrainConfig):
        given = as_dict(given)
    bad: list[str] = []
    config = _walk(TrainConfig, given, "", bad)
    if not bad:
        from hybrenet_jax.model_string import spec_from_model_string  # noqa: PLC0415

        try:
            spec_from_model_string(config.model, config.dataset)
        except HybrenetError as err:
            bad.append(str(err).splitlines()[0])
    if bad:
        raise ConfigError("invalid config: " + "; ".join(bad))
    return config


def validate_config(given: Mapping | TrainConfig) -> None:
    """Check ``given`` as :func:`build_config` does (raises :class:`ConfigError`)."""
    build_config(given)


def updated(config: TrainConfig | Mapping, changes: Mapping[str, Any]) -> TrainConfig:
    """A copy of ``config`` with ``{"a.b": value}`` changes, checked again (a mapping is
    built first, as :func:`build_config` does)."""
    tree = as_dict(build_config(config) if not isinstance(config, TrainConfig) else config)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise ConfigError(f"no config field {dotted!r}")
        node[leaf] = value
    return build_config(tree)


def stream_seed(config: TrainConfig) -> int:
    """The seed of the training batches' order and augmentation: ``data_seed``, or ``seed``
    when it is -1 (the default: one seed for initialisation and data, as ever)."""
    return config.seed if config.data_seed < 0 else config.data_seed


def schedule_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """Training steps of a run: ``total_steps`` or ``num_epochs`` x steps per epoch, plus the
    DKD warm-up epochs when they are trained on top (``distill.dkd_warmup_extra``).

    Raises:
      ConfigError: the run, or one of its warm-ups, is longer than :data:`MAX_STEPS` steps
        (steps are int32), named with the fields that make it so.
    """
    base = config.total_steps if config.total_steps > 0 \
        else config.num_epochs * steps_per_epoch
    total = int(base) + extra_steps(config, steps_per_epoch)
    run = f"total_steps={config.total_steps}" if config.total_steps > 0 \
        else f"num_epochs={config.num_epochs}"
    if extra_epochs(config):
        run += f" + distill.dkd_warmup_epochs={config.distill.dkd_warmup_epochs:g}"
    spans = {run: total, f"warmup_epochs={config.warmup_epochs:g}":
             config.warmup_epochs * steps_per_epoch}
    if config.distill.kind == "dkd":
        spans[f"distill.dkd_warmup_epochs={config.distill.dkd_warmup_epochs:g}"] = \
            config.distill.dkd_warmup_epochs * steps_per_epoch
    for what, steps in spans.items():
        if steps > MAX_STEPS:
            raise ConfigError(f"{what} at {steps_per_epoch:,} steps per epoch is "
                              f"{int(steps):,} steps; at most {MAX_STEPS:,} are accepted "
                              "(steps are int32): fewer epochs or a larger batch_size")
    return total


def extra_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """Steps added on top of the base schedule (the DKD warm-up of the paper's 200 + 20)."""
    return int(round(extra_epochs(config) * steps_per_epoch))


def extra_epochs(config: TrainConfig) -> float:
    """Epochs added on top of the base schedule (see :func:`extra_steps`)."""
    if config.distill.kind != "dkd" or not config.distill.dkd_warmup_extra:
        return 0.0
    return float(config.distill.dkd_warmup_epochs)
