"""Training configuration: the schema with the paper's defaults, config files and overrides.

One place for all of it, used by ``python -m launch.train``/``hybrenet train`` and every
``hybrenet`` verb alike:

* :func:`base_config` — every field a training config has, with the paper's recipe (spec §7)
  as defaults; each field has a rule in :mod:`hybrenet_jax.train.config_rules` (a test keeps
  the two in step). ``configs/*.py`` files start from it and change what differs.
* :func:`load_config` imports ``FILE.py`` and calls its ``get_config(ARG)``;
* :func:`apply_overrides` sets existing fields from ``a.b=value`` strings (``--config.a.b=v``),
  converting the text to the field's current type (a typo in a field name is an error);
* :func:`config_from_args` applies both to parsed command-line arguments (the argparse side,
  ``add_config_arguments``, lives in :mod:`hybrenet_jax.cli._pipeline`).

Durations are resolved at run time: when ``total_steps > 0`` it overrides ``num_epochs``;
``*_every_steps = 0`` means once per epoch.
"""

from __future__ import annotations

import copy
import importlib.util
import pathlib
import sys
from typing import Any, Callable, Sequence

import ml_collections

from hybrenet_jax.errors import ConfigError

OVERRIDE_PREFIX = "--config."
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_KIND_NAMES = {int: "an integer", float: "a number"}


def base_config() -> ml_collections.ConfigDict:
    """The paper recipe: SGD momentum 0.9, lr 0.1 cosine, batch 128, wd 4e-4, 200 epochs."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = "resnet18"
    c.dataset = "cifar100"
    c.data_dir = ""
    c.manual_dir = ""
    c.batch_size = 128
    # global: batch_size is the global batch on any number of devices (paper recipe);
    # per_device: batch_size per data-axis device, learning_rate scaled by the device count
    c.batch_rule = "global"
    c.num_epochs = 200
    c.total_steps = 0
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.lr_schedule = "cosine"
    c.warmup_epochs = 0.0
    c.momentum = 0.9
    c.nesterov = False
    c.weight_decay = 4e-4
    c.label_smoothing = 0.0
    c.crop_padding = 4
    c.flip = True
    c.augment = True
    c.dtype = "float32"
    c.mesh_model_axis = 1
    c.prefetch = 2
    c.data_workers = 0  # threads preparing training batches; 0: min(4, cores); same batches
    c.log_every_steps = 50
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 0
    c.checkpoint_keep = 2
    c.checkpoint_keep_best = 1
    c.async_checkpointing = True
    c.tensorboard = True
    c.progress = True
    c.distill = ml_collections.ConfigDict()
    c.distill.kind = "none"  # none | kd | dkd
    c.distill.teacher_workdir = ""
    c.distill.teacher_model = ""  # default: the model string recorded in the teacher's run
    c.distill.teacher_checkpoint = "best"  # best | latest
    c.distill.temperature = 4.0
    c.distill.kd_weight = 0.9
    c.distill.dkd_alpha = 1.0
    c.distill.dkd_beta = 1.0  # one of the paper's sweep 0.8/1/2/6 (DKD authors' own: 8)
    c.distill.dkd_warmup_epochs = 20.0
    return c


def load_config(text: str) -> ml_collections.ConfigDict:
    """Load ``PATH.py[:ARG]``: import the file and return ``get_config(ARG)`` (a copy).

    The folder above the file's folder goes on ``sys.path`` so that a config file can import
    its siblings (``from configs.default import get_config``) wherever the command runs.
    """
    path_text, _, arg = text.partition(":")
    path = pathlib.Path(path_text)
    if path.suffix != ".py" or not path.is_file():
        raise ConfigError(f"--config {text!r}: expected an existing configs/NAME.py[:ARG] file")
    if (path.resolve().parent / "__init__.py").is_file():  # configs/ is a package: its
        root = str(path.resolve().parent.parent)             # files import their siblings
        if root not in sys.path:
            sys.path.append(root)  # after everything installed: shadows nothing
    module_name = f"_hybrenet_config_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        get_config: Callable | None = getattr(module, "get_config", None)
        if get_config is None:
            raise ConfigError(f"--config {path}: the file defines no get_config(arg)")
        config = get_config(arg or None)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure here is the file's fault
        raise ConfigError(f"--config {text}: loading it failed ({type(err).__name__}: {err})"
                          ) from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"--config {path}: get_config() must return an ml_collections "
                          f"ConfigDict, got {type(config).__name__}")
    return copy.deepcopy(config)


def _convert(current: object, text: str, key: str) -> object:
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"--config.{key}={text!r}: expected true or false")
    for kind in (int, float):
        if isinstance(current, kind):
            try:
                return kind(text)
            except ValueError:
                raise ConfigError(f"--config.{key}={text!r}: expected {_KIND_NAMES[kind]}"
                                    ) from None
    if current is None or isinstance(current, str):
        return text
    raise ConfigError(f"--config.{key}: fields of type {type(current).__name__} cannot be "
                        "set from the command line")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]
                    ) -> ml_collections.ConfigDict:
    """Set ``a.b=value`` overrides on ``config`` in place (only fields that exist)."""
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"config override {item!r} is not of the form a.b=value")
        *parents, leaf = key.split(".")
        target = config
        for i, parent in enumerate(parents):
            if parent not in target or not isinstance(target[parent], ml_collections.ConfigDict):
                raise ConfigError(f"--config.{key}: config has no section "
                                    f"{'.'.join(parents[:i + 1])!r}")
            target = target[parent]
        if leaf not in target:
            known = ", ".join(sorted(target.keys()))
            raise ConfigError(f"--config.{key}: no such config field; fields here: {known}")
        target[leaf] = _convert(target[leaf], value, key)
    return config


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--config.a.b=v`` (or ``--config.a.b v``) tokens from the other arguments."""
    overrides: list[str] = []
    rest: list[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith(OVERRIDE_PREFIX):
            body = token[len(OVERRIDE_PREFIX):]
            if "=" not in body:
                if i + 1 >= len(tokens):
                    raise ConfigError(f"{token}: missing value (use {token}=VALUE)")
                body = f"{body}={tokens[i + 1]}"
                i += 1
            overrides.append(body)
        else:
            rest.append(token)
        i += 1
    return overrides, rest


def config_from_args(args: Any,
                     prepare: Callable[[ml_collections.ConfigDict], None] | None = None
                     ) -> ml_collections.ConfigDict:
    """The config named by ``args.config`` with ``prepare`` applied, then the overrides."""
    config = load_config(args.config)
    if prepare is not None:
        prepare(config)
    return apply_overrides(config, getattr(args, "config_overrides", []))
