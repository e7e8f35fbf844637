"""One walker over a :class:`~hybrenet_jax.export.folding.FoldedNetwork`, many back ends.

:func:`run_folded` evaluates the folded graph with a small set of operations (:class:`Ops`):
the JAX back end (:mod:`.jax_ops`) computes values, the ONNX back end (:mod:`.onnx_export`)
emits nodes. Both therefore run exactly the same graph, wired as
:class:`hybrenet_jax.models.Network` wires the blocks:

* ``basic``, ``bottleneck``: ``after_add(main(x) + shortcut(x))`` (an empty shortcut is the
  identity);
* ``preact``:  ``a = main[:k](x)`` (the leading affine-ReLU), then
  ``main[k:](a) + (shortcut(a) if there is one else x)``;
* ``stem``, ``plain``, ``head``: ``main(x)``.

A ReLU-reuse conv runs its groups in order, as :class:`hybrenet_jax.models.ReuseConv` does:
input slice, plus (where the group links) the previous group's folded output added onto its
first channels, then the group's conv (or pass-through affine); the outputs are concatenated.
A kept ReLU site applies ``relu`` (only to the last, ReLU-group channels under ReLU-reuse);
culled and thinned sites are the identity, exactly like :class:`hybrenet_jax.models.ReluGate`.
"""

from __future__ import annotations

from typing import Protocol, Sequence, TypeVar

import numpy as np

from hybrenet_jax.architecture import RESIDUAL, Pool, ReluSite, branch_index
from hybrenet_jax.export.folding import (Affine, ConvPart, FoldedBlock, FoldedConv, FoldedDense,
                                         FoldedLayer, FoldedNetwork)

T = TypeVar("T")


class Ops(Protocol[T]):
    """The operations the folded graph is made of (``name`` is a readable base name)."""

    def conv(self, x: T, name: str, kernel: np.ndarray, bias: np.ndarray | None,
             stride: int, groups: int = 1) -> T: ...

    def channels(self, x: T, start: int, stop: int, name: str) -> T: ...

    def concat(self, xs: Sequence[T], name: str) -> T: ...

    def affine(self, x: T, name: str, scale: np.ndarray, shift: np.ndarray) -> T: ...

    def relu(self, x: T, name: str) -> T: ...

    def add(self, a: T, b: T, name: str) -> T: ...

    def pool(self, x: T, name: str, kind: str) -> T: ...

    def dense(self, x: T, name: str, kernel: np.ndarray, bias: np.ndarray,
              in_hwc: tuple[int, int, int] | None) -> T: ...


def link(ops: Ops[T], x: T, width: int, previous: T, channels: int, name: str) -> T:
    """``x`` (``width`` channels) with the first ``channels`` of ``previous`` added onto its
    first channels (a Res2Net link between ReLU-reuse groups)."""
    linked = ops.add(ops.channels(x, 0, channels, f"{name}_linked") if channels < width else x,
                     ops.channels(previous, 0, channels, f"{name}_from_previous"), f"{name}_link")
    if channels == width:
        return linked
    return ops.concat([linked, ops.channels(x, channels, width, f"{name}_rest")], f"{name}_in")


def conv(layer: FoldedConv, ops: Ops[T], x: T) -> T:
    """A folded conv: one conv, or its ReLU-reuse groups in order, concatenated."""
    if layer.is_single:
        part = layer.parts[0]
        return ops.conv(x, layer.name, part.kernel, part.bias, part.stride, part.groups)
    outs: list[T] = []
    for part in layer.parts:
        name = f"{layer.name}_{part.group}"
        xs = ops.channels(x, part.in_start, part.in_stop, f"{name}_in")
        if part.link:
            xs = link(ops, xs, part.in_stop - part.in_start, outs[-1], part.link, name)
        if isinstance(part, ConvPart):
            outs.append(ops.conv(xs, name, part.kernel, part.bias, part.stride))
        elif part.scale is not None:
            outs.append(ops.affine(xs, name, part.scale, part.shift))
        else:
            outs.append(xs)
    return ops.concat(outs, layer.name)


def relu_gate(site: ReluSite, ops: Ops[T], x: T) -> T:
    """A ReLU position: identity unless kept; under reuse only the last C/N channels."""
    if not site.kept:
        return x
    if site.reuse == 1:
        return ops.relu(x, site.name)
    start = site.relu_start
    activated = ops.relu(ops.channels(x, start, site.channels, f"{site.name}_group"), site.name)
    return ops.concat([ops.channels(x, 0, start, f"{site.name}_linear"), activated],
                      f"{site.name}_out")


def layer(record: FoldedLayer, ops: Ops[T], x: T) -> T:
    """Apply one folded layer."""
    if isinstance(record, FoldedConv):
        return conv(record, ops, x)
    if isinstance(record, Affine):
        return ops.affine(x, record.name, record.scale, record.shift)
    if isinstance(record, ReluSite):
        return relu_gate(record, ops, x)
    if isinstance(record, Pool):
        return ops.pool(x, record.name, record.kind)
    if isinstance(record, FoldedDense):
        return ops.dense(x, record.name, record.kernel, record.bias, record.in_hwc)
    raise TypeError(f"not a folded layer: {record!r}")


def sequence(layers: Sequence[FoldedLayer], ops: Ops[T], x: T) -> T:
    for record in layers:
        x = layer(record, ops, x)
    return x


def block(b: FoldedBlock, ops: Ops[T], x: T) -> T:
    """Apply one block with its residual wiring."""
    if b.kind in RESIDUAL:  # wiring as ``architecture.Block`` states it
        k = branch_index(b.main, b.branch_after)
        a = sequence(b.main[:k], ops, x)
        s = sequence(b.shortcut, ops, a) if b.shortcut else x
        y = sequence(b.main[k:], ops, a)
        return sequence(b.after_add, ops, ops.add(y, s, f"{b.name}_add"))
    return sequence(b.main, ops, x)


def run_folded(net: FoldedNetwork, ops: Ops[T], x: T) -> T:
    """Evaluate (or emit) the whole folded network on input ``x``; returns the logits."""
    for b in net.blocks:
        x = block(b, ops, x)
    return x
