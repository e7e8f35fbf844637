"""Config files for the pipeline verbs: ``--config FILE.py[:ARG]`` plus ``--config.a.b=v``.

The training entry point (``launch.train``) reads configs through absl flags; the ``hybrenet``
verbs use argparse, so this module loads the same ``configs/*.py`` files itself:

* :func:`load_config` imports ``FILE.py`` and calls its ``get_config(ARG)``;
* :func:`apply_overrides` sets existing fields from ``a.b=value`` strings, converting the text
  to the field's current type (a typo in a field name is an error, as with ``launch.train``);
* :func:`config_from_args` applies both to parsed command-line arguments (the argparse side,
  ``add_config_arguments``, lives in :mod:`hybrenet_jax.cli._pipeline`).
"""

from __future__ import annotations

import copy
import importlib.util
import pathlib
import sys
from typing import Any, Callable, Sequence

import ml_collections

from hybrenet_jax.pipeline.errors import PipelineError

OVERRIDE_PREFIX = "--config."
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def load_config(text: str) -> ml_collections.ConfigDict:
    """Load ``PATH.py[:ARG]``: import the file and return ``get_config(ARG)`` (a copy).

    The folder above the file's folder goes on ``sys.path`` so that ``configs/x.py`` can
    ``from configs.base import base_config`` wherever the command runs.
    """
    path_text, _, arg = text.partition(":")
    path = pathlib.Path(path_text)
    if path.suffix != ".py" or not path.is_file():
        raise PipelineError(f"--config {text!r}: expected an existing configs/NAME.py[:ARG] file")
    root = str(path.resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    module_name = f"_hybrenet_config_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - any import failure is the file's fault
        raise PipelineError(f"--config {path}: cannot import it ({type(err).__name__}: {err})"
                            ) from None
    get_config: Callable | None = getattr(module, "get_config", None)
    if get_config is None:
        raise PipelineError(f"--config {path}: the file defines no get_config(arg)")
    config = get_config(arg or None)
    if not isinstance(config, ml_collections.ConfigDict):
        raise PipelineError(f"--config {path}: get_config() must return an ml_collections "
                            f"ConfigDict, got {type(config).__name__}")
    return copy.deepcopy(config)


def _convert(current: object, text: str, key: str) -> object:
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise PipelineError(f"--config.{key}={text!r}: expected true or false")
    for kind in (int, float):
        if isinstance(current, kind):
            try:
                return kind(text)
            except ValueError:
                raise PipelineError(f"--config.{key}={text!r}: expected a {kind.__name__}"
                                    ) from None
    if current is None or isinstance(current, str):
        return text
    raise PipelineError(f"--config.{key}: fields of type {type(current).__name__} cannot be "
                        "set from the command line")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]
                    ) -> ml_collections.ConfigDict:
    """Set ``a.b=value`` overrides on ``config`` in place (only fields that exist)."""
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise PipelineError(f"config override {item!r} is not of the form a.b=value")
        *parents, leaf = key.split(".")
        target = config
        for i, parent in enumerate(parents):
            if parent not in target or not isinstance(target[parent], ml_collections.ConfigDict):
                raise PipelineError(f"--config.{key}: config has no section "
                                    f"{'.'.join(parents[:i + 1])!r}")
            target = target[parent]
        if leaf not in target:
            known = ", ".join(sorted(target.keys()))
            raise PipelineError(f"--config.{key}: no such config field; fields here: {known}")
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
                    raise PipelineError(f"{token}: missing value (use {token}=VALUE)")
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
