"""argparse ``type=`` functions of the verbs: the bounded parsers of :mod:`hybrenet_jax.bounded`."""

from __future__ import annotations

import argparse
import functools
from typing import Callable, TypeVar

from hybrenet_jax.errors import HybrenetError

T = TypeVar("T")


def arg_type(parse: Callable[..., T], name: str = "", **bounds) -> Callable[[str], T]:
    """``parse`` (e.g. ``bounded.parse_int``) with ``bounds`` as an argparse ``type=``: a
    refusal is a usage error (``argument --m: '1e400': not finite; accepted: ...``, exit 2)."""

    @functools.wraps(parse)
    def convert(text: str) -> T:
        try:
            return parse(text, "", **bounds)
        except HybrenetError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = name or parse.__name__  # argparse names it in some messages
    return convert
