"""Numbers read from text, bounded: the one parser of every number a user types.

Command-line options (``--m 16``, ``--top 3``, ``--threads 4``, ``--tolerance 1e-4``) and
lists (``--budgets 50k,100k``, ``--scales 0.5,2``, ``--dkd-betas 0.8 1 2 6``) are read here.
A number is refused, with one line naming the text and the accepted range, when it is not a
number, not finite (``inf``, ``nan``, ``1e400``), not an integer where one is needed, or
outside its range. Each range is far above any sensible value and low enough that a typo
(an extra digit or three) is caught before anything is built, not later by an
``OverflowError`` or an int32 step counter.

:func:`parse_int`, :func:`parse_float`, :func:`parse_count` (``50k`` = 50,000) and
:func:`parse_int_list` (``2-2-2-2``) raise ``error`` (default :class:`NumberError`, a
:class:`HybrenetError`: exit code 2); ``hybrenet_jax.cli._types.arg_type`` makes any of them an
argparse ``type=`` whose refusal is a usage error. Imports nothing heavy.
"""

from __future__ import annotations

import math

from hybrenet_jax.errors import HybrenetError


#: The largest ReLU count (budgets): no accepted network has that many (a layer is at most
#: 16,384 channels of 64x64 pixels, a network at most 1,024 blocks: ~1.4e11 ReLUs).
MAX_RELUS = 10**12
#: The largest thread count (GC threads of the cost model).
MAX_THREADS = 4_096
#: The largest base width ``m`` (a layer is at most 16,384 channels wide).
MAX_BASE_WIDTH = 16_384
#: The largest stage depth of a ``--depths``/``--multipliers`` list (a network has at most
#: 1,024 blocks).
MAX_DEPTH = 1_024
#: The largest channel-scaling factor: x256 makes a 64-wide ResNet stem 16,384 channels wide.
MAX_SCALE = 256.0
#: The largest count of networks kept (``--top``) or of images (``--verify-*``, ``--batch``).
MAX_COUNT = 1_000_000
#: The largest checkpoint step (steps are int32).
MAX_STEP = 2**31 - 1


class NumberError(HybrenetError):
    """A number typed by the user is not a number, not finite or out of its range."""


def _shown(value: float) -> str:
    """``1,000,000`` for large whole numbers, ``0.5`` / ``1e-05`` otherwise."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                  and abs(value) >= 1e4):
        return f"{int(value):,}"
    return f"{value:g}"


def range_text(low: float | None, high: float | None, low_open: bool = False) -> str:
    """``"in [1, 1,000]"``, ``"> 0"``, ... (what a bounded number accepts)."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_shown(low)}, {_shown(high)}]"
    if low is not None:
        return f"{'>' if low_open else '>='} {_shown(low)}"
    if high is not None:
        return f"<= {_shown(high)}"
    return "finite"


def _refuse(error: type[HybrenetError], what: str, text: object, reason: str, kind: str,
            low: float | None, high: float | None, low_open: bool = False, note: str = "",
            example: str = "") -> HybrenetError:
    """``error("--m '1e400': not finite; accepted: an integer in [1, 16,384]")``."""
    shown = repr(text) if len(repr(text)) <= 60 else repr(text)[:57] + "..."
    accepted = (f"{kind} {range_text(low, high, low_open)}" if low is not None or high is not None
                else f"a finite {kind.split(' ', 1)[1]}") + (f" ({note})" if note else "")
    return error(f"{what}{' ' if what else ''}{shown}: {reason}; accepted: {accepted}{example}")


def _finite(token: object) -> float | None:
    """``token`` as a float (``None``: not a number, or a nonzero literal that underflows to
    0 such as ``1e-400``: it would silently mean 0); may be ``inf``/``nan``."""
    if isinstance(token, bool):
        return None
    text = token.strip().replace("_", "") if isinstance(token, str) else token
    try:
        value = float(text)
    except (TypeError, ValueError, OverflowError):
        return None
    if value == 0 and isinstance(text, str) and any(c in "123456789"
                                                    for c in text.lower().split("e")[0]):
        return None
    return value


def _bounded(value: float | None, text: object, what: str, kind: str, low: float | None,
             high: float | None, low_open: bool, note: str, example: str,
             error: type[HybrenetError]) -> float:
    if value is None:
        reason = f"not {kind}"
    elif isinstance(value, float) and not math.isfinite(value):  # a huge int is finite
        reason = "not finite"
    elif (low is not None and (value <= low if low_open else value < low)) \
            or (high is not None and value > high):
        reason = "out of range"
    else:
        return value
    raise _refuse(error, what, text, reason, kind, low, high, low_open, note, example)


def parse_int(text: object, what: str = "", low: int | None = 0, high: int | None = None,
              note: str = "", error: type[HybrenetError] = NumberError) -> int:
    """``text`` as an integer in ``[low, high]`` (``"12"``, ``"1_000"``, ``"1e3"``; not
    ``"1.5"``).

    Raises:
      error: one line with ``what``, ``text`` and the accepted range.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value: float | None = text
    else:
        try:
            value = int(text.strip().replace("_", "")) if isinstance(text, str) else None
        except ValueError:
            value = None
        if value is None and isinstance(text, str) and text.strip().lstrip("+-").isdigit():
            raise _refuse(error, what, text, "out of range", "an integer", low, high, note=note)
        if value is None:  # "1e3" is 1000; "inf", "nan", "1.5" are refused
            value = _finite(text)
            if value is not None and math.isfinite(value) and not value.is_integer():
                raise _refuse(error, what, text, "not an integer", "an integer", low, high,
                              note=note)
    value = _bounded(value, text, what, "an integer", low, high, False, note, "", error)
    return int(value)


def parse_float(text: object, what: str = "", low: float | None = None,
                high: float | None = None, low_open: bool = False, note: str = "",
                error: type[HybrenetError] = NumberError) -> float:
    """``text`` as a finite number in ``[low, high]`` (``(low, high]`` with ``low_open``).

    Raises:
      error: one line with ``what``, ``text`` and the accepted range.
    """
    return float(_bounded(_finite(text), text, what, "a number", low, high, low_open, note,
                          "", error))


def parse_count(text: object, what: str = "", low: int = 1, high: int | None = MAX_RELUS,
                note: str = "", error: type[HybrenetError] = NumberError,
                kind: str = "a count") -> int:
    """A count such as a ReLU budget: ``"50000"``, ``"50k"`` / ``"50K"`` (thousands),
    ``"1e5"``, ``"1_000"``; a fraction is rounded down (``"2.5k"`` = 2,500).

    Raises:
      error: one line with ``what``, ``text`` and the accepted range.
    """
    token = text.strip().lower() if isinstance(text, str) else text
    scale = 1
    if isinstance(token, str) and token.endswith("k"):
        token, scale = token[:-1], 1000
    value = _finite(token)
    if value is not None:
        value *= scale  # 1e308k is inf: not finite
        if high is not None and math.isfinite(value) and value < high + 1:
            value = float(int(value))  # rounded down: 1e12 + 0.5 is still in range
    return int(_bounded(value, text, what, kind, low, high, False, note,
                        " (e.g. 50000 or 50k)", error))


def parse_int_list(text: str, what: str = "", low: int | None = 1, high: int | None = None,
                   note: str = "", min_items: int = 1,
                   error: type[HybrenetError] = NumberError) -> tuple[int, ...]:
    """``"2-2-2-2"`` or ``"2,2,2,2"`` -> ``(2, 2, 2, 2)``: at least ``min_items`` integers,
    each in ``[low, high]``.

    Raises:
      error: one line with ``what``, ``text``, the bad item and the accepted range.
    """
    prefix = f"{what} {text!r}:" if what else f"{text!r}:"
    values = tuple(parse_int(t, prefix, low, high, note, error)
                   for t in str(text).replace(",", "-").split("-"))
    if len(values) < min_items:
        raise error(f"{prefix} {len(values)} value(s); accepted: at least {min_items} "
                    f"integers {range_text(low, high)} joined by '-'"
                    + (f" ({note})" if note else ""))
    return values
