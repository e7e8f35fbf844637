"""Config files and overrides: how a :class:`~hybrenet_jax.schema.TrainConfig` is made.

One loader and one override syntax for ``python -m launch.train``/``hybrenet train`` and every
``hybrenet`` verb alike:

* :func:`base_config` — the schema's defaults (:mod:`hybrenet_jax.schema`, the paper's recipe)
  as an ml_collections ``ConfigDict``: ``configs/*.py`` files start from it and change only
  what differs;
* :func:`load_config` imports ``FILE.py`` and calls its ``get_config(ARG)``;
* :func:`apply_overrides` sets existing fields from ``a.b=value`` strings (``--config.a.b=v``),
  converting the text to the field's current type (a typo in a field name is an error);
* :func:`config_from_args` does both for parsed command-line arguments and builds the typed,
  checked config (:func:`~hybrenet_jax.schema.build_config`): the boundary after which the
  library reads only typed values (the argparse side, ``add_config_arguments``, lives in
  :mod:`hybrenet_jax.cli._pipeline`).
"""

from __future__ import annotations

import copy
import importlib.util
import pathlib
import sys
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from hybrenet_jax.errors import ConfigError
from hybrenet_jax.schema import TrainConfig, as_dict, build_config

OVERRIDE_PREFIX = "--config."
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_KIND_NAMES = {int: "an integer", float: "a number"}


def base_config() -> ml_collections.ConfigDict:
    """Every field with the paper's defaults (:class:`~hybrenet_jax.schema.TrainConfig`), as
    a ``ConfigDict`` that config files change."""
    return ml_collections.ConfigDict(as_dict(TrainConfig()))


def _merged(defaults: dict, given: Mapping) -> dict:
    out = dict(defaults)
    for key, value in given.items():
        if isinstance(out.get(key), dict) and hasattr(value, "items"):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def complete(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config`` with every field it lacks set to its default (a config file may hold only
    what it changes; unknown fields stay, for :func:`build_config` to name)."""
    return ml_collections.ConfigDict(_merged(as_dict(TrainConfig()), config.to_dict()))


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


def config_from_args(args: Any) -> TrainConfig:
    """The checked, typed config of ``args.config`` with the ``args.config_overrides``.

    Raises:
      ConfigError: the file, an override or a field value is wrong (one line).
    """
    config = complete(load_config(args.config))
    apply_overrides(config, getattr(args, "config_overrides", []))
    return build_config(config)
