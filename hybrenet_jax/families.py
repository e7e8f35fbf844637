"""Constructors for every network family of the paper (spec §2), and the registry of names.

Each constructor returns a validated :class:`NetSpec`. ReLU options (``culled``, ``thinned``,
``reuse``), ``classes`` and ``input_size`` pass through as keyword arguments.

:data:`NAMES` registers how each network is named in a model string (one :class:`NameForm`
per name form): the model-string parser, its errors, ``hybrenet --help`` and the README's table
(checked by a test) are all derived from it. A new family is one constructor plus one entry.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Sequence

from hybrenet_jax.errors import DescriptionError
from hybrenet_jax.netspec import NetSpec

RESNET18_DEPTHS = (2, 2, 2, 2)
RESNET34_DEPTHS = (3, 4, 6, 3)
CIFAR_RESNET_DEPTHS = {20: 3, 32: 5, 56: 9}  # blocks per stage of the 3-stage CIFAR ResNets

#: RegNet-X presets of Radosavovic et al. 2020 ("Designing Network Design Spaces"), as pycls's
#: ``configs/dds_baselines/regnetx/RegNetX-*MF_dds_8gpu.yaml`` generate them (the quantized
#: linear widths after the group-width compatibility adjustment): stage widths, stage depths,
#: group width. Bottleneck ratio 1, stem width :data:`REGNET_STEM_WIDTH`. These are also the
#: RegNet-X networks of the paper's App. E.4 comparison.
REGNETX: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    "regnetx-200mf": ((24, 56, 152, 368), (1, 1, 4, 7), 8),
    "regnetx-400mf": ((32, 64, 160, 384), (1, 2, 7, 12), 16),
    "regnetx-600mf": ((48, 96, 240, 528), (1, 3, 5, 7), 24),
    "regnetx-800mf": ((64, 128, 288, 672), (1, 3, 7, 5), 16),
}
#: RegNet's stem width (pycls ``REGNET.STEM_W``); ``m`` of a ``regnetx-*`` string.
REGNET_STEM_WIDTH = 32

#: Names :func:`adapted` accepts: the ConvNeXt-adapted ResNets (ResNet blocks with ConvNeXt's
#: widths and depths) and the native RegNet-X presets (built by :func:`regnetx_preset`).
ADAPTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "convnext-t": ((96, 192, 384, 768), (3, 3, 9, 3)),
    "convnext-n": ((96, 192, 384, 768), (2, 2, 8, 2)),
    "convnext-p": ((64, 128, 256, 512), (2, 2, 6, 2)),
    "convnext-f": ((48, 96, 192, 384), (2, 2, 6, 2)),
    "convnext-a": ((40, 80, 160, 320), (2, 2, 6, 2)),
    **{name: (w, d) for name, (w, d, _) in REGNETX.items()},
}


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise DescriptionError(f"{name}={value!r}: must be a positive integer")
    return value


def widths_from_multipliers(m: int, multipliers: Sequence[int]) -> tuple[int, ...]:
    """Stage widths ``[m, a*m, a*b*m, ...]`` from a base width and stage multipliers."""
    _positive("m", m)
    names = ("alpha", "beta", "gamma")
    widths = [m]
    for i, lam in enumerate(multipliers):
        label = names[i] if i < len(names) else f"lambda{i + 1}"
        if not isinstance(lam, int) or lam < 1:
            raise DescriptionError(
                f"{label}={lam!r}: stage multipliers must be integers >= 1 (HRNs use >= 2)"
            )
        widths.append(widths[-1] * lam)
    return tuple(widths)


def resnet(widths: Sequence[int], depths: Sequence[int], stem_width: int | None = None,
           **kw) -> NetSpec:
    """Post-activation BasicBlock ResNet with arbitrary stage widths and depths."""
    widths = tuple(widths)
    return NetSpec("resnet", stem_width or widths[0], widths, tuple(depths), **kw)


def resnet18(m: int = 64, depths: Sequence[int] = RESNET18_DEPTHS, **kw) -> NetSpec:
    """ResNet18 (BaseCh when ``m`` != 64): widths m, 2m, 4m, 8m."""
    return resnet(widths_from_multipliers(m, (2, 2, 2)), depths, **kw)


def resnet34(m: int = 64, depths: Sequence[int] = RESNET34_DEPTHS, **kw) -> NetSpec:
    """ResNet34: widths m, 2m, 4m, 8m; depths 3-4-6-3."""
    return resnet(widths_from_multipliers(m, (2, 2, 2)), depths, **kw)


def cifar_resnet(layers: int, m: int = 16, depths: Sequence[int] | None = None,
                 **kw) -> NetSpec:
    """ResNet20/32/56 for CIFAR: 3 stages of 3/5/9 blocks, widths m, 2m, 4m (m=16)."""
    if layers not in CIFAR_RESNET_DEPTHS:
        raise DescriptionError(
            f"resnet{layers} is not a CIFAR ResNet; accepted: "
            + ", ".join(f"resnet{n}" for n in CIFAR_RESNET_DEPTHS)
        )
    depths = tuple(depths) if depths is not None else (CIFAR_RESNET_DEPTHS[layers],) * 3
    return resnet(widths_from_multipliers(m, (2, 2)), depths, **kw)


def wide_resnet(depth: int, k: int, m: int = 16, depths: Sequence[int] | None = None,
                **kw) -> NetSpec:
    """WRN-depth-k: pre-activation blocks, stem m=16, widths 16k, 32k, 64k."""
    _positive("k", k)
    if depths is None:
        if depth < 10 or (depth - 4) % 6:
            raise DescriptionError(
                f"WRN depth={depth}: must satisfy depth = 6n + 4 with n >= 1 (e.g. 16, 22, 28, 40)"
            )
        depths = ((depth - 4) // 6,) * 3
    widths = tuple(w * k for w in widths_from_multipliers(m, (2, 2)))
    return NetSpec("wrn", m, widths, tuple(depths), **kw)


def vgg16(m: int = 64, depths: Sequence[int] = (2, 2, 3, 3, 3), **kw) -> NetSpec:
    """VGG16 (CIFAR variant as run in Delphi): 13 conv-BN-ReLU, 2x2 avg pools, 3 FC layers."""
    return NetSpec("vgg", m, widths_from_multipliers(m, (2, 2, 2, 1)), tuple(depths), **kw)


def hrn(multipliers: Sequence[int], m: int = 16, depths: Sequence[int] | None = None,
        **kw) -> NetSpec:
    """HybReNet ``HRN-AxBxCx``: widths m, A·m, A·B·m, A·B·C·m; ResNet18 depths by default."""
    multipliers = tuple(multipliers)
    if depths is None:
        depths = (2,) * (len(multipliers) + 1)
    return resnet(widths_from_multipliers(m, multipliers), depths, **kw)


def stagech(s: int, m: int = 16, depths: Sequence[int] = RESNET18_DEPTHS, **kw) -> NetSpec:
    """StageCh ``sxsxsx``: all stage multipliers equal to ``s``."""
    return hrn((s,) * (len(tuple(depths)) - 1), m=m, depths=depths, **kw)


def regnetx(widths: Sequence[int], depths: Sequence[int], group_width: int,
            stem_width: int = REGNET_STEM_WIDTH, **kw) -> NetSpec:
    """RegNet-X (AnyNet-X) with explicit stage widths, depths and group width (ratio b=1)."""
    return NetSpec("regnetx", stem_width, tuple(widths), tuple(depths), group_width=group_width,
                   **kw)


def _round(x: float) -> int:
    return math.floor(x + 0.5)


def regnetx_preset(preset: str, m: int | None = None, depths: Sequence[int] | None = None,
                   **kw) -> NetSpec:
    """A published RegNet-X (e.g. ``regnetx-400mf``).

    ``m`` is the stem width (RegNet's 32): every width scales by ``m / 32``, the group width
    too (``max(1, round(g * m / 32))``, so halving keeps the number of groups), and each stage
    width is rounded to the nearest multiple of the new group width (at least one group).
    """
    try:
        widths, default_depths, group = REGNETX[preset]
    except KeyError:
        raise DescriptionError(
            f"unknown RegNet-X network {preset!r}; accepted: {', '.join(REGNETX)}"
        ) from None
    stem = REGNET_STEM_WIDTH
    if m is not None:
        _positive("m", m)
        scale = m / REGNET_STEM_WIDTH
        group = max(1, _round(group * scale))
        widths = tuple(max(group, _round(w * scale / group) * group) for w in widths)
        stem = m
    return regnetx(widths, depths if depths is not None else default_depths, group, stem, **kw)


def adapted(preset: str, m: int | None = None, depths: Sequence[int] | None = None,
            **kw) -> NetSpec:
    """ConvNeXt-adapted ResNet (e.g. ``convnext-t``; ``m`` rescales all widths) or a native
    RegNet-X preset (``regnetx-*``, see :func:`regnetx_preset`)."""
    if preset in REGNETX:
        return regnetx_preset(preset, m, depths, **kw)
    try:
        widths, default_depths = ADAPTED[preset]
    except KeyError:
        raise DescriptionError(
            f"unknown adapted network {preset!r}; accepted: {', '.join(ADAPTED)}"
        ) from None
    if m is not None:
        _positive("m", m)
        widths = tuple(max(1, math.floor(w * m / widths[0] + 0.5)) for w in widths)
    return resnet(widths, depths if depths is not None else default_depths, **kw)


def imagenet_geometry(spec: NetSpec, input_size: int = 224, classes: int = 1000) -> NetSpec:
    """The same RegNet-X in RegNet's own ImageNet geometry (stride-2 3x3 stem, every stage
    strided, 224x224 input, 1000 classes): what the RegNet paper's FLOPs/params describe."""
    if spec.family != "regnetx":
        raise DescriptionError(f"imagenet_geometry: only regnetx networks have RegNet's "
                               f"ImageNet geometry, not family {spec.family!r}")
    return spec.replace(geometry="imagenet", input_size=input_size, classes=classes,
                        name=spec.name)


# -- the registry of names -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NameForm:
    """One way of naming networks in a model string.

    Attributes:
      form: the name as users see it (``hrn-AxBxCx``, ``convnext-t/n/p/f/a``).
      pattern: full-match regex of the lower-cased name.
      build: ``(match, keyword arguments) -> NetSpec`` (``m``, ``depths``, ReLU options, ...).
      check: a problem with the name itself (``None`` when fine), reported pointing at it.
    """

    form: str
    pattern: str
    build: Callable[[re.Match, dict], NetSpec]
    check: Callable[[re.Match], str | None] = lambda match: None

    def match(self, name: str) -> re.Match | None:
        """The regex match of ``name`` (lower-case), or ``None``."""
        return re.fullmatch(self.pattern, name)


def _multipliers(group: str) -> tuple[int, ...]:
    return tuple(int(v) for v in group.rstrip("x").split("x"))


def _stagech(match: re.Match, kw: dict) -> NetSpec:
    multipliers = _multipliers(match.group(1))
    kw.setdefault("depths", (2,) * (len(multipliers) + 1))
    return stagech(multipliers[0], **kw)


def _stagech_check(match: re.Match) -> str | None:
    if len(set(_multipliers(match.group(1)))) != 1:
        return "stagech-SxSxSx needs equal multipliers (use hrn-AxBxCx for different ones)"
    return None


def _choices(names: Sequence[str]) -> tuple[str, str]:
    """``(form, pattern)`` for a set of fixed names sharing a prefix: ``convnext-t/n/p``."""
    prefix = names[0].rsplit("-", 1)[0]
    form = prefix + "-" + "/".join(n.rsplit("-", 1)[1] for n in names)
    return form, "|".join(re.escape(n) for n in names)


_CONVNEXT = [n for n in ADAPTED if n not in REGNETX]

#: Every name form a model string accepts, in the order help and errors list them.
NAMES: tuple[NameForm, ...] = (
    NameForm("resnet18", "resnet18", lambda match, kw: resnet18(**kw)),
    NameForm("resnet34", "resnet34", lambda match, kw: resnet34(**kw)),
    NameForm("resnet20", "resnet20", lambda match, kw: cifar_resnet(20, **kw)),
    NameForm("resnet32", "resnet32", lambda match, kw: cifar_resnet(32, **kw)),
    NameForm("resnet56", "resnet56", lambda match, kw: cifar_resnet(56, **kw)),
    NameForm("wrnDxK", r"wrn-?(\d+)[x-](\d+)",
             lambda match, kw: wide_resnet(int(match.group(1)), int(match.group(2)), **kw)),
    NameForm("vgg16", "vgg16", lambda match, kw: vgg16(**kw)),
    NameForm("hrn-AxBxCx", r"hrn-((?:\d+x)+)",
             lambda match, kw: hrn(_multipliers(match.group(1)), **kw)),
    NameForm("stagech-SxSxSx", r"stagech-((?:\d+x)+)", _stagech, _stagech_check),
    NameForm(*_choices(_CONVNEXT), lambda match, kw: adapted(match.group(0), **kw)),
    NameForm(*_choices(list(REGNETX)), lambda match, kw: regnetx_preset(match.group(0), **kw)),
)


def find_name(name: str) -> tuple[NameForm, re.Match] | None:
    """The registered form ``name`` (lower-case) matches, with its match; ``None`` if none."""
    for form in NAMES:
        if (match := form.match(name)) is not None:
            return form, match
    return None
