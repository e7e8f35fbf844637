"""Per-field rules of a training config, checked before anything is built or compiled.

:data:`RULES` maps every field of ``hybrenet_jax/config.py`` to what it accepts (type, range, choices,
finite numbers); :func:`validate_config` checks a config against the table and raises one
:class:`ConfigError` naming every bad field. Fields a config adds beyond the table (``snl``,
``pipeline``) belong to other tools and are not checked here. Rules that involve the machine
or several fields (batch divisible by the devices, a teacher for distillation) stay in
``loop.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from hybrenet_jax.data.registry import LOADABLE
from hybrenet_jax.errors import ConfigError, HybrenetError
from hybrenet_jax.train.state import OPTIMIZERS, SCHEDULES


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


@dataclasses.dataclass(frozen=True)
class Float:
    """A finite number in ``[low, high]`` (``low_open``: strictly above ``low``)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    note: str = ""

    def check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {type(value).__name__}"
        if not math.isfinite(value):
            return "must be a finite number"
        if self.low_open and self.low is not None and value <= self.low:
            return f"must be > {self.low}" + (f" ({self.note})" if self.note else "")
        return _range(value, self.low, self.high, self.note)


@dataclasses.dataclass(frozen=True)
class Bool:
    """``True`` or ``False``."""

    def check(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``choices`` (``fold``: compared case-insensitively)."""

    choices: tuple[str, ...]
    fold: bool = False

    def check(self, value: Any) -> str | None:
        key = value.lower() if self.fold and isinstance(value, str) else value
        if key in self.choices:
            return None
        return f"accepted: {', '.join(self.choices)}"


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


Rule = Int | Float | Bool | Choice | Text


def _range(value: float, low: float | None, high: float | None, note: str) -> str | None:
    if (low is None or value >= low) and (high is None or value <= high):
        return None
    if low is not None and high is not None:
        text = f"must be in [{low}, {high}]"
    elif low is not None:
        text = f"must be >= {low}"
    else:
        text = f"must be <= {high}"
    return text + (f" ({note})" if note else "")


#: Upper bounds of the count fields. None is a hardware limit: each is far above any sensible
#: value and low enough that a typo (an extra digit or three) is caught here in milliseconds,
#: not after compiling, by an int32 overflow in a step counter or by a full disk.
MAX_STEPS = 2**31 - 1  # steps are int32 in the optimizer state and the LR schedule
MAX_EPOCHS = 1_000_000
MAX_BATCH = 2**20
MAX_DEVICES = 65_536
MAX_KEPT = 1_000  # checkpoints kept (periodic or best): each is a full copy of the state

#: Dotted field name -> rule; the accepted names come from the code that uses them.
RULES: dict[str, Rule] = {
    "seed": Int(0, 2**32 - 1),
    "model": Text(nonempty=True),
    "dataset": Choice(LOADABLE, fold=True),
    "data_dir": Text(),
    "manual_dir": Text(),
    "batch_size": Int(1, MAX_BATCH),
    "batch_rule": Choice(("global", "per_device")),
    "num_epochs": Int(0, MAX_EPOCHS),
    "total_steps": Int(0, MAX_STEPS, note="0: num_epochs decides"),
    "optimizer": Choice(OPTIMIZERS),
    "learning_rate": Float(0.0, low_open=True),
    "lr_schedule": Choice(SCHEDULES),
    "warmup_epochs": Float(0.0),
    "momentum": Float(0.0, 1.0),
    "nesterov": Bool(),
    "weight_decay": Float(0.0),
    "label_smoothing": Float(0.0, 1.0),
    "crop_padding": Int(0, 64, note="pixels on each side; images are at most 64 wide"),
    "flip": Bool(),
    "augment": Bool(),
    "dtype": Choice(("float32", "bfloat16")),
    "mesh_model_axis": Int(1, MAX_DEVICES, note="devices along the model axis"),
    "prefetch": Int(1, 64, note="batches held on the devices ahead of the step"),
    "data_workers": Int(0, 256, note="0: automatic"),
    "log_every_steps": Int(1, MAX_STEPS),
    "eval_every_steps": Int(0, MAX_STEPS, note="0: once per epoch"),
    "checkpoint_every_steps": Int(0, MAX_STEPS, note="0: once per epoch"),
    "checkpoint_keep": Int(1, MAX_KEPT, note="the newest checkpoint is what a rerun resumes "
                                             "from; each is a full copy of the state on disk"),
    "checkpoint_keep_best": Int(0, MAX_KEPT, note="0: no best checkpoints; each is a full "
                                                  "copy of the state on disk"),
    "async_checkpointing": Bool(),
    "tensorboard": Bool(),
    "progress": Bool(),
    "distill.kind": Choice(("none", "kd", "dkd")),
    "distill.teacher_workdir": Text(),
    "distill.teacher_model": Text(),
    "distill.teacher_checkpoint": Choice(("best", "latest")),
    "distill.temperature": Float(0.0, low_open=True),
    "distill.kd_weight": Float(0.0, 1.0),
    "distill.dkd_alpha": Float(0.0),
    "distill.dkd_beta": Float(0.0, low_open=True),
    "distill.dkd_warmup_epochs": Float(0.0),
}


#: Fields that may be missing from a config (added after configs were written).
OPTIONAL = frozenset({"data_workers", "batch_rule"})


def _lookup(config: Mapping, dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            return False, None
    return True, node


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def problems(config: Mapping) -> list[str]:
    """Every field of ``config`` that breaks its rule, as ``name=value: what is accepted``."""
    found = []
    for name, rule in RULES.items():
        present, value = _lookup(config, name)
        if not present:
            if name not in OPTIONAL:
                found.append(f"{name} is missing (see hybrenet_jax/config.py)")
            continue
        why = rule.check(value)
        if why:
            found.append(f"{name}={_shown(value)}: {why}")
    return found


def validate_config(config: Mapping) -> None:
    """Check every field against :data:`RULES`; cheap, imports and compiles nothing heavy.

    Raises:
      ConfigError: one line naming every bad field and what it accepts.
    """
    bad = problems(config)
    if not bad:  # the model string, parsed as every consumer will, before anything is made
        from hybrenet_jax.model_string import spec_from_model_string

        try:
            spec_from_model_string(config["model"], config["dataset"])
        except HybrenetError as err:
            bad.append(str(err).splitlines()[0])
    if bad:
        raise ConfigError("invalid config: " + "; ".join(bad))
