"""The declarative network description: the one place a network is defined.

A :class:`NetSpec` states what a researcher chooses — block family, stem and stage widths,
stage depths, input size, classes, and which ReLUs are culled, thinned or reused. Everything
else (the layer list in :mod:`hybrenet_jax.architecture`, the analytic counts, the Flax model,
the cost model and the export) is derived from it, so no two parts of the project describe a
network separately.

Stages are numbered from 1 (``S1``) as in the paper; the stem's ReLU belongs to Stage1.

A ``NetSpec`` checks its own fields (types, ranges, choices, stage names). Checks that need the
layer list (a ReLU-reuse factor must divide the width of every Re2 layer) belong to
:func:`hybrenet_jax.architecture.expand`, which every consumer calls and model strings call
at parse time; imports go ``architecture -> netspec`` only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Literal

from hybrenet_jax.errors import DescriptionError

Family = Literal["resnet", "wrn", "vgg", "regnetx"]
FAMILIES: tuple[str, ...] = ("resnet", "wrn", "vgg", "regnetx")
#: Input geometries: ``cifar`` (3x3 stride-1 stem, Stage1 unstrided; every family) or
#: ``imagenet`` (RegNet's own: 3x3 stride-2 stem, every stage strided; ``regnetx`` only).
GEOMETRIES: tuple[str, ...] = ("cifar", "imagenet")
#: ReLU-reuse factors accepted (1 = no reuse; 2 = two-way split; >=4 = three-way split).
REUSE_FACTORS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
#: Re2 channel splits: the paper's three groups, or N equal divisions (Table 14 ablation).
REUSE_SPLITS: tuple[str, ...] = ("three", "equal")
#: Which layers Re2 applies to: every kept ReLU layer, or one conv per block (Table 14).
REUSE_LAYERS: tuple[str, ...] = ("kept", "alternate")


def stage_name(stage: int) -> str:
    """Return the paper's name of a 1-based stage index (``1`` -> ``"S1"``)."""
    return f"S{stage}"


def stage_names(stages: Iterable[int], sep: str = ",") -> str:
    """Stage names joined by ``sep`` (``(3, 2), ">"`` -> ``"S3>S2"``)."""
    return sep.join(stage_name(s) for s in stages)


def parse_stage_name(token: str, num_stages: int) -> int:
    """Parse ``"S2"`` (case-insensitive) into ``2``, checking it exists in the network."""
    accepted = stage_names(range(1, num_stages + 1), ", ")
    text = token.strip().upper()
    if not (text.startswith("S") and text[1:].isdigit()):
        raise DescriptionError(f"unknown stage name {token!r}; accepted: {accepted}")
    stage = int(text[1:])
    if not 1 <= stage <= num_stages:
        raise DescriptionError(
            f"stage {token!r} does not exist in a {num_stages}-stage network; accepted: {accepted}"
        )
    return stage


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """A complete, validated description of one network.

    Attributes:
      family: ``"resnet"`` (post-activation BasicBlocks: ResNet18/34/20/32/56, BaseCh, StageCh,
        HRN, ConvNeXt-/RegNet-adapted), ``"wrn"`` (pre-activation WideResNet blocks with a final
        BN-ReLU) or ``"vgg"`` (plain conv-BN-ReLU stacks, 2x2 average pool after each stage,
        three fully connected layers) or ``"regnetx"`` (RegNet-X: residual bottleneck X blocks
        ``1x1 -> 3x3 grouped (group width group_width, stride here) -> 1x1``, bottleneck ratio 1).
      stem_width: output channels of the 3x3 stem conv (``m`` for ResNets, 16 for WRN).
        Unused by ``vgg`` (its first stage starts at the input).
      widths: channels of each stage.
      depths: blocks (layers for ``vgg``) per stage.
      input_size: square input side (32 for CIFAR, 64 for TinyImageNet).
      classes: number of output classes.
      culled: stages whose ReLUs are all removed (Stage1 includes the stem ReLU).
      thinned: stages that keep one ReLU per block (see :mod:`hybrenet_jax.architecture`).
      reuse: ReLU-reuse factor N applied to every kept ReLU inside the stages (1 = off).
      reuse_split: ``"three"`` (reuse C/4, linear, ReLU C/N: the paper's Re2 layer) or
        ``"equal"`` (N equal divisions, ReLUs in the last); see :mod:`hybrenet_jax.architecture`.
      reuse_link: whether the Re2 groups are linked Res2Net-style (the previous group's output
        added to the next group's input before its conv).
      reuse_layers: ``"kept"`` (every kept ReLU layer inside the stages) or ``"alternate"``
        (one conv layer per BasicBlock, ``conv1``; the odd layers of a VGG stage).
      name: canonical model string this spec was built from (informational).
      in_channels: input image channels.
      head_width: hidden width of the VGG classifier (ignored by other families).
      group_width: channels per group of the X blocks' 3x3 conv (``regnetx`` only; must divide
        every stage width; 0 for the other families).
      geometry: ``"cifar"`` (the project's convention: 3x3 stride-1 stem, Stage1 at the input
        resolution, stages 2.. halve it) or ``"imagenet"`` (``regnetx`` only: RegNet's own 3x3
        stride-2 stem and a stride-2 first block in every stage, e.g. 224 -> 7).
    """

    family: str
    stem_width: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    input_size: int = 32
    classes: int = 100
    culled: frozenset[int] = frozenset()
    thinned: frozenset[int] = frozenset()
    reuse: int = 1
    reuse_split: str = "three"
    reuse_link: bool = True
    reuse_layers: str = "kept"
    name: str = ""
    in_channels: int = 3
    head_width: int = 4096
    group_width: int = 0
    geometry: str = "cifar"

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "culled", frozenset(int(s) for s in self.culled))
        object.__setattr__(self, "thinned", frozenset(int(s) for s in self.thinned))
        self._validate()

    # -- validation --------------------------------------------------------------------------
    def _validate(self) -> None:
        if self.family not in FAMILIES:
            raise DescriptionError(
                f"family={self.family!r} is unknown; accepted: {', '.join(FAMILIES)}"
            )
        if not self.widths:
            raise DescriptionError("widths must list at least one stage width")
        if len(self.widths) != len(self.depths):
            raise DescriptionError(
                f"widths has {len(self.widths)} stages but depths has {len(self.depths)}; "
                "give one depth per stage"
            )
        for i, w in enumerate(self.widths, start=1):
            if w <= 0:
                raise DescriptionError(f"widths[S{i}]={w}: stage widths must be positive integers")
        for i, d in enumerate(self.depths, start=1):
            if d <= 0:
                raise DescriptionError(f"depths[S{i}]={d}: stage depths must be positive integers")
        if self.family != "vgg" and self.stem_width <= 0:
            raise DescriptionError(f"stem_width={self.stem_width}: must be a positive integer")
        for field, value in (("classes", self.classes), ("in_channels", self.in_channels),
                             ("head_width", self.head_width)):
            if value <= 0:
                raise DescriptionError(f"{field}={value}: must be a positive integer")
        self._validate_regnetx()
        factor = 2 ** self.num_downsamples
        if self.input_size <= 0 or self.input_size % factor:
            raise DescriptionError(
                f"input_size={self.input_size}: a {self.family} network with {self.num_stages} "
                f"stages halves the resolution {self.num_downsamples} times, so the input size "
                f"must be a positive multiple of {factor}"
            )
        for field in ("culled", "thinned"):
            bad = sorted(s for s in getattr(self, field) if not 1 <= s <= self.num_stages)
            if bad:
                accepted = stage_names(range(1, self.num_stages + 1), ", ")
                raise DescriptionError(
                    f"{field} names stage(s) {stage_names(bad, ', ')} that do not "
                    f"exist; accepted: {accepted}"
                )
        both = sorted(self.culled & self.thinned)
        if both:
            raise DescriptionError(
                f"stage(s) {stage_names(both, ', ')} are both culled and thinned; "
                "a culled stage has no ReLUs left to thin"
            )
        if self.reuse not in REUSE_FACTORS:
            raise DescriptionError(
                f"reuse={self.reuse}: accepted ReLU-reuse factors are "
                f"{', '.join(str(r) for r in REUSE_FACTORS)}"
            )
        for field, accepted in (("reuse_split", REUSE_SPLITS), ("reuse_layers", REUSE_LAYERS)):
            if getattr(self, field) not in accepted:
                raise DescriptionError(f"{field}={getattr(self, field)!r}; accepted: "
                                       f"{', '.join(accepted)}")
        if not isinstance(self.reuse_link, bool):
            raise DescriptionError(f"reuse_link={self.reuse_link!r} must be True or False")
        ablation = {"reuse_split": "three", "reuse_link": True, "reuse_layers": "kept"}
        changed = [k for k, default in ablation.items() if getattr(self, k) != default]
        if self.reuse == 1 and changed:
            raise DescriptionError(f"{', '.join(changed)} set without ReLU-reuse: they shape "
                                   "Re2 layers, so give a reuse factor N > 1 as well")
        if self.reuse > 1 and self.family == "wrn":
            raise DescriptionError(
                "reuse: ReLU-reuse is defined for conv-BN-ReLU layers (families resnet and vgg); "
                "pre-activation WideResNet blocks are not supported"
            )
        if self.reuse > 1 and self.family == "regnetx":
            raise DescriptionError(
                "reuse: ReLU-reuse is not defined for RegNet-X's X blocks (grouped 3x3 convs); "
                "use cull= / thin= (or m=) to cut their ReLUs"
            )

    def _validate_regnetx(self) -> None:
        if self.geometry not in GEOMETRIES:
            raise DescriptionError(f"geometry={self.geometry!r}; accepted: {', '.join(GEOMETRIES)}")
        if self.family != "regnetx":
            if self.group_width:
                raise DescriptionError(f"group_width={self.group_width}: only the regnetx family "
                                       "has grouped convs")
            if self.geometry != "cifar":
                raise DescriptionError(f"geometry={self.geometry!r}: only the regnetx family has "
                                       "an ImageNet geometry")
            return
        if not isinstance(self.group_width, int) or self.group_width <= 0:
            raise DescriptionError(f"group_width={self.group_width!r}: a regnetx network needs a "
                                   "positive group width")
        bad = [f"{stage_name(i)}={w}" for i, w in enumerate(self.widths, start=1)
               if w % self.group_width]
        if bad:
            raise DescriptionError(f"group_width={self.group_width} does not divide the stage "
                                   f"width(s) {', '.join(bad)}")

    # -- derived facts -----------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        """Number of stages."""
        return len(self.widths)

    @property
    def num_downsamples(self) -> int:
        """How many times the spatial resolution is halved before the head."""
        if self.family == "vgg":
            return self.num_stages  # a 2x2 pool after every stage
        if self.geometry == "imagenet":
            return self.num_stages + 1  # strided stem + first block of every stage
        return self.num_stages - 1  # first block of stages 2.. has stride 2

    def stage_input_size(self, stage: int) -> int:
        """Spatial side of the feature maps computed inside ``stage`` (1-based)."""
        if self.geometry == "imagenet":
            return self.input_size >> (stage + 1)
        return self.input_size >> (stage - 1)

    def replace(self, **changes) -> "NetSpec":
        """Return a validated copy with ``changes`` applied (``name`` is cleared unless given)."""
        changes.setdefault("name", "")
        return dataclasses.replace(self, **changes)

    @property
    def stages(self) -> tuple[str, ...]:
        """Stage names ``("S1", "S2", ...)``."""
        return tuple(stage_name(s) for s in range(1, self.num_stages + 1))
