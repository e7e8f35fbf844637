"""BatchNorm folding: the inference graph a private-inference framework runs.

:func:`fold` walks the layer records of :func:`hybrenet_jax.architecture.expand` (the single
description of the network) together with trained Flax variables and returns a
:class:`FoldedNetwork`: the same blocks, with every BatchNorm removed.

* A BatchNorm that directly follows a conv in its block (``conv -> bn``: every conv of the
  post-activation ResNet, RegNet-X (grouped convs fold per output channel the same way) and
  VGG families, ``conv1 -> bn2`` of the pre-activation WRN block)
  is folded into that conv: with ``s = gamma / sqrt(var + eps)`` the kernel becomes
  ``kernel * s`` (per output channel) and the conv gains the bias ``beta - mean * s``.
* A ReLU-reuse conv is folded per group (:meth:`~hybrenet_jax.architecture.Conv.groups`:
  ``[reuse | linear | relu]`` or N equal divisions): each sub-conv takes the scale and bias of
  its own output channels. The Res2Net links read the previous group's *normalised* output, so
  they carry over to the folded graph unchanged (``link`` on each part). An identity reuse
  group (shape unchanged) has no kernel to fold into, so its slice keeps the BatchNorm as a
  per-channel affine ``x * s + b`` on the passed-on channels (:class:`PassPart`).
* A BatchNorm that follows no conv (the WRN ``bn1`` of every block and ``final_bn``) becomes a
  per-channel affine layer (:class:`Affine`, ``Mul`` + ``Add`` in ONNX). It cannot be folded
  backwards: its input also feeds the identity shortcut (and the stem output of a WRN carries
  no BatchNorm to merge with).

Scales and biases are computed in float64 and stored as float32. All tensors keep the Flax
layouts: NHWC activations, HWIO conv kernels, ``(in, out)`` dense kernels whose input rows are
in NHWC flatten order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping, Union

import numpy as np

from hybrenet_jax.architecture import (BatchNorm, Block, BlockKind, Conv, Dense, Layer, Pool,
                                       ReluSite, expand)
from hybrenet_jax.export.errors import ExportError
from hybrenet_jax.models import BN_EPSILON
from hybrenet_jax.netspec import NetSpec


@dataclasses.dataclass(frozen=True, eq=False)
class ConvPart:
    """A dense sub-conv reading input channels ``[in_start, in_stop)``.

    ``group`` is ``""`` for an ordinary conv, else the ReLU-reuse group (``"reuse"``,
    ``"linear_group"``, ``"linear_group2"``, ``"relu_group"``, ...). ``kernel`` is HWIO;
    ``bias`` is ``None`` when no BatchNorm was folded in. Padding is ``k // 2`` on every side.
    ``link`` > 0: the first ``link`` channels of the previous part's output are added onto the
    first ``link`` input channels before the conv. ``groups`` > 1: a grouped conv (RegNet-X),
    ``kernel`` ``[k, k, in/groups, out]``.
    """

    group: str
    in_start: int
    in_stop: int
    kernel: np.ndarray
    bias: np.ndarray | None
    stride: int
    link: int = 0
    groups: int = 1


@dataclasses.dataclass(frozen=True, eq=False)
class PassPart:
    """An identity reuse group: input channels ``[in_start, in_stop)`` passed on, times
    ``scale`` plus ``shift`` when a BatchNorm followed (both ``None`` otherwise)."""

    in_start: int
    in_stop: int
    scale: np.ndarray | None
    shift: np.ndarray | None
    group: str = "reuse"
    link: int = 0


@dataclasses.dataclass(frozen=True, eq=False)
class FoldedConv:
    """A conv record with its following BatchNorm (``bn``, or ``None``) folded in.

    ``parts`` produce consecutive output-channel slices that are concatenated; a plain conv
    has a single :class:`ConvPart` reading all input channels.
    """

    record: Conv
    parts: tuple[Union[ConvPart, PassPart], ...]
    bn: str | None

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def is_single(self) -> bool:
        """Whether this is one ordinary conv over all channels (no slicing needed)."""
        return len(self.parts) == 1 and isinstance(self.parts[0], ConvPart)


@dataclasses.dataclass(frozen=True, eq=False)
class Affine:
    """A BatchNorm that follows no conv, as ``x * scale + shift`` per channel."""

    record: BatchNorm
    scale: np.ndarray
    shift: np.ndarray

    @property
    def name(self) -> str:
        return self.record.name


@dataclasses.dataclass(frozen=True, eq=False)
class FoldedDense:
    """A dense layer; ``in_hwc`` is ``(h, w, c)`` when it flattens a feature map (NHWC order)."""

    record: Dense
    kernel: np.ndarray
    bias: np.ndarray
    in_hwc: tuple[int, int, int] | None

    @property
    def name(self) -> str:
        return self.record.name


FoldedLayer = Union[FoldedConv, Affine, FoldedDense, ReluSite, Pool]


@dataclasses.dataclass(frozen=True, eq=False)
class FoldedBlock:
    """A block of the architecture with its layers folded; wiring as in ``Block.kind``."""

    name: str
    stage: int
    kind: BlockKind
    main: tuple[FoldedLayer, ...]
    shortcut: tuple[FoldedLayer, ...] = ()
    after_add: tuple[FoldedLayer, ...] = ()
    branch_after: str = ""  # ``Block.branch_after``: folding keeps that ReLU and its name

    def layers(self) -> Iterator[FoldedLayer]:
        yield from self.main
        yield from self.shortcut
        yield from self.after_add


@dataclasses.dataclass(frozen=True, eq=False)
class FoldedNetwork:
    """The BatchNorm-free inference graph of one spec (see the module docstring)."""

    spec: NetSpec
    blocks: tuple[FoldedBlock, ...]

    def layers(self) -> Iterator[FoldedLayer]:
        for block in self.blocks:
            yield from block.layers()

    def tensors(self) -> dict[str, np.ndarray]:
        """Every folded tensor by name, e.g. ``stage2_block1_conv1/relu_group/kernel``."""
        out: dict[str, np.ndarray] = {}
        for layer in self.layers():
            out.update(_layer_tensors(layer))
        return out

    def describe(self) -> list[dict]:
        """JSON view of the folded graph: blocks, their ops and the tensor names they use."""
        return [{"block": b.name, "stage": b.stage, "kind": b.kind,
                 **{part: [_describe(l) for l in getattr(b, part)]
                    for part in ("main", "shortcut", "after_add") if getattr(b, part)}}
                for b in self.blocks]


def _part_prefix(conv: FoldedConv, part: Union[ConvPart, PassPart]) -> str:
    return f"{conv.name}/{part.group}" if part.group else conv.name


def _layer_tensors(layer: FoldedLayer) -> dict[str, np.ndarray]:
    if isinstance(layer, FoldedConv):
        out = {}
        for part in layer.parts:
            prefix = _part_prefix(layer, part)
            if isinstance(part, ConvPart):
                out[f"{prefix}/kernel"] = part.kernel
                if part.bias is not None:
                    out[f"{prefix}/bias"] = part.bias
            elif part.scale is not None:
                out[f"{prefix}/scale"] = part.scale
                out[f"{prefix}/shift"] = part.shift
        return out
    if isinstance(layer, Affine):
        return {f"{layer.name}/scale": layer.scale, f"{layer.name}/shift": layer.shift}
    if isinstance(layer, FoldedDense):
        return {f"{layer.name}/kernel": layer.kernel, f"{layer.name}/bias": layer.bias}
    return {}


def _describe(layer: FoldedLayer) -> dict:
    if isinstance(layer, FoldedConv):
        parts = []
        for part in layer.parts:
            item = {"group": part.group or None, "in_channels": [part.in_start, part.in_stop],
                    "link": part.link}
            if isinstance(part, ConvPart):
                item.update(op="conv", kernel=part.kernel.shape[0], stride=part.stride,
                            out_channels=part.kernel.shape[-1], groups=part.groups)
            else:
                item.update(op="identity" if part.scale is None else "affine",
                            out_channels=part.in_stop - part.in_start)
            parts.append(item)
        return {"name": layer.name, "op": "conv", "folds": layer.bn, "parts": parts,
                "tensors": sorted(_layer_tensors(layer))}
    if isinstance(layer, Affine):
        return {"name": layer.name, "op": "affine", "tensors": sorted(_layer_tensors(layer))}
    if isinstance(layer, FoldedDense):
        return {"name": layer.name, "op": "dense",
                "flattens_hwc": list(layer.in_hwc) if layer.in_hwc else None,
                "tensors": sorted(_layer_tensors(layer))}
    if isinstance(layer, ReluSite):
        return {"name": layer.name, "op": "relu" if layer.kept else "identity",
                "state": layer.state, "reuse": layer.reuse, "channels": layer.channels}
    return {"name": layer.name, "op": "avg_pool_2x2" if layer.kind == "avg2" else
            "global_avg_pool"}


# -- folding ----------------------------------------------------------------------------------
def bn_scale_shift(params: Mapping[str, Any], stats: Mapping[str, Any], eps: float = BN_EPSILON
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(s, b)`` with ``bn(x) = x * s + b`` in float64."""
    gamma = np.asarray(params["scale"], np.float64)
    beta = np.asarray(params["bias"], np.float64)
    mean = np.asarray(stats["mean"], np.float64)
    var = np.asarray(stats["var"], np.float64)
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


class _Folder:
    """Folds one architecture's layer sequences, reading tensors from the variables."""

    def __init__(self, variables: Mapping[str, Any]):
        self.params = variables.get("params", {})
        self.stats = variables.get("batch_stats", {})
        self.spatial: tuple[int, int, int] | None = None  # (h, w, c) of the running feature map

    def _get(self, tree: Mapping[str, Any], *path: str) -> np.ndarray:
        node: Any = tree
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                raise ExportError(f"variables have no entry {'/'.join(path)} (needed to fold "
                                  f"layer {path[0]})")
            node = node[key]
        return np.asarray(node)

    def bn(self, record: BatchNorm) -> tuple[np.ndarray, np.ndarray]:
        scale, shift = bn_scale_shift({k: self._get(self.params, record.name, k)
                                       for k in ("scale", "bias")},
                                      {k: self._get(self.stats, record.name, k)
                                       for k in ("mean", "var")})
        if scale.shape != (record.channels,):
            raise ExportError(f"{record.name} has {scale.shape[0]} channels, expected "
                              f"{record.channels}")
        return scale, shift

    def conv(self, record: Conv, bn: BatchNorm | None) -> FoldedConv:
        if bn is not None and bn.channels != record.out_ch:
            raise ExportError(f"{bn.name} ({bn.channels} channels) cannot fold into "
                              f"{record.name} ({record.out_ch} output channels)")
        scale, shift = self.bn(bn) if bn is not None else (None, None)

        def part(group: str, path: tuple[str, ...], ins: tuple[int, int],
                 outs: tuple[int, int], kernel_size: int, link: int) -> ConvPart:
            kernel = self._get(self.params, record.name, *path, "kernel")
            groups = record.feature_groups
            per_group = (ins[1] - ins[0]) // groups
            if kernel.shape != (kernel_size, kernel_size, per_group, outs[1] - outs[0]):
                raise ExportError(f"{'/'.join((record.name, *path, 'kernel'))} has shape "
                                  f"{kernel.shape}, expected {kernel_size}x{kernel_size}, "
                                  f"{per_group} -> {outs[1] - outs[0]} channels")
            bias = None
            if scale is not None:
                kernel = (kernel.astype(np.float64) * scale[outs[0]:outs[1]])
                bias = shift[outs[0]:outs[1]].astype(np.float32)
            return ConvPart(group, ins[0], ins[1], kernel.astype(np.float32), bias,
                            record.stride, link, groups)

        parts: list[Union[ConvPart, PassPart]] = []
        for g in record.groups():
            ins, outs = (g.in_start, g.in_stop), (g.out_start, g.out_stop)
            if g.is_identity:
                parts.append(PassPart(
                    g.in_start, g.in_stop,
                    None if scale is None else scale[g.out_start:g.out_stop].astype(np.float32),
                    None if shift is None else shift[g.out_start:g.out_stop].astype(np.float32),
                    g.name, g.link))
            else:
                parts.append(part(g.name, (g.name,) if g.name else (), ins, outs, g.kernel,
                                  g.link))
        self.spatial = (record.out_hw, record.out_hw, record.out_ch)
        return FoldedConv(record, tuple(parts), bn.name if bn is not None else None)

    def dense(self, record: Dense) -> FoldedDense:
        kernel = self._get(self.params, record.name, "kernel").astype(np.float32)
        bias = self._get(self.params, record.name, "bias").astype(np.float32)
        if kernel.shape != (record.in_features, record.out_features):
            raise ExportError(f"{record.name}/kernel has shape {kernel.shape}, expected "
                              f"{(record.in_features, record.out_features)}")
        in_hwc = self.spatial
        if in_hwc is not None and int(np.prod(in_hwc)) != record.in_features:
            raise ExportError(f"{record.name} expects {record.in_features} features but its "
                              f"input feature map is {in_hwc}")
        self.spatial = None
        return FoldedDense(record, kernel, bias, in_hwc)

    def sequence(self, layers: tuple[Layer, ...]) -> tuple[FoldedLayer, ...]:
        out: list[FoldedLayer] = []
        i = 0
        while i < len(layers):
            record = layers[i]
            following = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(record, Conv):
                bn = following if isinstance(following, BatchNorm) else None
                out.append(self.conv(record, bn))
                i += 2 if bn is not None else 1
                continue
            if isinstance(record, BatchNorm):
                scale, shift = self.bn(record)
                out.append(Affine(record, scale.astype(np.float32), shift.astype(np.float32)))
            elif isinstance(record, Dense):
                out.append(self.dense(record))
            elif isinstance(record, Pool):
                self.spatial = (None if record.kind == "global" else
                                (record.in_hw // 2, record.in_hw // 2, record.channels))
                out.append(record)
            elif isinstance(record, ReluSite):
                out.append(record)
            else:
                raise ExportError(f"cannot fold layer record {record!r}")
            i += 1
        return tuple(out)

    def block(self, block: Block) -> FoldedBlock:
        main = self.sequence(block.main)
        spatial = self.spatial
        shortcut = self.sequence(block.shortcut)
        self.spatial = spatial  # a shortcut ends in the main path's shape
        return FoldedBlock(block.name, block.stage, block.kind, main, shortcut,
                           self.sequence(block.after_add), block.branch_after)


def fold(spec: NetSpec, variables: Mapping[str, Any]) -> FoldedNetwork:
    """Fold every BatchNorm of ``spec``'s network, using trained ``variables``.

    Args:
      spec: the network description (its ``expand`` is walked; nothing else describes it).
      variables: Flax variables with ``params`` and ``batch_stats`` (NumPy or JAX arrays);
        validate them first with :func:`hybrenet_jax.export.variables.validate_variables`.

    Raises:
      ExportError: a tensor the description needs is missing or has the wrong shape.
    """
    folder = _Folder(variables)
    return FoldedNetwork(spec, tuple(folder.block(b) for b in expand(spec).blocks))
