"""One walker over a :class:`~hybrenet_jax.export.folding.FoldedNetwork`, many back ends.

:func:`run_folded` evaluates the folded graph with a small set of operations (:class:`Ops`):
the JAX back end (:mod:`.jax_ops`) computes values, the ONNX back end (:mod:`.onnx_export`)
emits nodes. Both therefore run exactly the same graph, wired as
:class:`hybrenet_jax.models.Network` wires the blocks:

* ``basic``:   ``after_add(main(x) + shortcut(x))`` (an empty shortcut is the identity);
* ``preact``:  ``a = main[:k](x)`` (the leading affine-ReLU), then
  ``main[k:](a) + (shortcut(a) if there is one else x)``;
* ``stem``, ``plain``, ``head``: ``main(x)``.

A kept ReLU site applies ``relu`` (only to the relu-group channels under ReLU-reuse, whose
output is also added onto the first C/N linear-group channels); culled and thinned sites are
the identity, exactly like :class:`hybrenet_jax.models.ReluGate`.
"""

from __future__ import annotations

from typing import Protocol, Sequence, TypeVar

import numpy as np

from hybrenet_jax.architecture import Pool, ReluSite, reuse_split
from hybrenet_jax.export.folding import (Affine, ConvPart, FoldedBlock, FoldedConv, FoldedDense,
                                         FoldedLayer, FoldedNetwork)

T = TypeVar("T")


class Ops(Protocol[T]):
    """The operations the folded graph is made of (``name`` is a readable base name)."""

    def conv(self, x: T, name: str, kernel: np.ndarray, bias: np.ndarray | None,
             stride: int) -> T: ...

    def channels(self, x: T, start: int, stop: int, name: str) -> T: ...

    def concat(self, xs: Sequence[T], name: str) -> T: ...

    def affine(self, x: T, name: str, scale: np.ndarray, shift: np.ndarray) -> T: ...

    def relu(self, x: T, name: str) -> T: ...

    def add(self, a: T, b: T, name: str) -> T: ...

    def pool(self, x: T, name: str, kind: str) -> T: ...

    def dense(self, x: T, name: str, kernel: np.ndarray, bias: np.ndarray,
              in_hwc: tuple[int, int, int] | None) -> T: ...


def conv(layer: FoldedConv, ops: Ops[T], x: T) -> T:
    """A folded conv: one conv, or per-group slices concatenated in output order."""
    if layer.is_single:
        part = layer.parts[0]
        return ops.conv(x, layer.name, part.kernel, part.bias, part.stride)
    outs = []
    for part in layer.parts:
        name = f"{layer.name}_{part.group}"
        xs = ops.channels(x, part.in_start, part.in_stop, f"{name}_in")
        if isinstance(part, ConvPart):
            outs.append(ops.conv(xs, name, part.kernel, part.bias, part.stride))
        elif part.scale is not None:
            outs.append(ops.affine(xs, name, part.scale, part.shift))
        else:
            outs.append(xs)
    return ops.concat(outs, layer.name)


def relu_gate(site: ReluSite, ops: Ops[T], x: T) -> T:
    """A ReLU position: identity unless kept; reuse-aware (see the module docstring)."""
    if not site.kept:
        return x
    if site.reuse == 1:
        return ops.relu(x, site.name)
    r, p, linear = reuse_split(site.channels, site.reuse)
    activated = ops.relu(ops.channels(x, r, r + p, f"{site.name}_group"), site.name)
    parts = [ops.channels(x, 0, r, f"{site.name}_reuse")] if r else []
    parts.append(activated)
    linked = ops.channels(x, r + p, r + 2 * p, f"{site.name}_linked")
    parts.append(ops.add(linked, activated, f"{site.name}_link"))
    if linear > p:
        parts.append(ops.channels(x, r + 2 * p, site.channels, f"{site.name}_linear"))
    return ops.concat(parts, f"{site.name}_out")


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
    if b.kind == "basic":
        y = sequence(b.main, ops, x)
        s = sequence(b.shortcut, ops, x)
        return sequence(b.after_add, ops, ops.add(y, s, f"{b.name}_add"))
    if b.kind == "preact":
        k = next(i for i, l in enumerate(b.main) if isinstance(l, ReluSite)) + 1
        a = sequence(b.main[:k], ops, x)
        s = sequence(b.shortcut, ops, a) if b.shortcut else x
        return ops.add(sequence(b.main[k:], ops, a), s, f"{b.name}_add")
    return sequence(b.main, ops, x)


def run_folded(net: FoldedNetwork, ops: Ops[T], x: T) -> T:
    """Evaluate (or emit) the whole folded network on input ``x``; returns the logits."""
    for b in net.blocks:
        x = block(b, ops, x)
    return x
