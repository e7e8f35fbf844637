"""Checks that an export computes what the Flax model computes.

* ONNX: onnxruntime logits vs. the JAX model (eval mode) on random and real test images, max
  absolute difference at most :data:`TOLERANCE` (float32); and the scalar ``Relu`` outputs of
  the graph (shape inference, per image) equal the analytic ``count(spec).relus``.
* Bundle: reloaded variables bit-identical to the exported ones, reloaded model outputs
  identical, stored folded tensors identical to a fresh fold, and the folded graph's logits
  within :data:`TOLERANCE` of the JAX model.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hybrenet_jax.counts import count
from hybrenet_jax.export.errors import ExportError
from hybrenet_jax.export.folding import fold
from hybrenet_jax.variables import flatten
from hybrenet_jax.models import build_model
from hybrenet_jax.netspec import NetSpec

TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class Check:
    """One verification result: ``value`` must be at most ``limit`` (``exact``: equal it)."""

    name: str
    value: float
    limit: float
    passed: bool
    exact: bool = False

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        bound = "expected" if self.exact else "limit"
        return f"  {verdict:6s} {self.name}: {_number(self.value)} ({bound} {_number(self.limit)})"


def _number(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:.3g}"


@dataclasses.dataclass(frozen=True)
class Report:
    """All checks of one verification run."""

    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def lines(self) -> list[str]:
        return [c.line() for c in self.checks]


def _within(name: str, diff: float, tolerance: float) -> Check:
    return Check(name, diff, tolerance, bool(np.isfinite(diff) and diff <= tolerance))


def _exact(name: str, value: float, expected: float) -> Check:
    return Check(name, value, expected, value == expected, exact=True)


def random_inputs(spec: NetSpec, n: int, seed: int = 0) -> np.ndarray:
    """``n`` standard-normal NHWC float32 images (the scale of normalised data)."""
    shape = (n, spec.input_size, spec.input_size, spec.in_channels)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def real_inputs(dataset: str, n: int) -> np.ndarray:
    """The first ``n`` images of ``dataset``'s evaluation split, normalised (NHWC float32)."""
    from hybrenet_jax.data import load_dataset, normalization_for  # noqa: PLC0415

    split = load_dataset(dataset, "eval")
    if len(split) < n:
        raise ExportError(f"{dataset} has only {len(split)} evaluation images, asked for {n}")
    return normalization_for(dataset).apply(np.asarray(split.images[:n]))


def jax_logits(spec: NetSpec, variables: Mapping[str, Any], images: np.ndarray) -> np.ndarray:
    """Logits of the (unfolded) Flax model in eval mode, computed in full float32.

    The reference must be float32 like onnxruntime's: at JAX's default precision a GPU
    multiplies in TF32 (H100: ~5e-3 off on digits logits), which says nothing about the export.
    """
    model = build_model(spec)
    with jax.default_matmul_precision("highest"):
        return np.asarray(model.apply(dict(variables), jnp.asarray(images), train=False))


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def verify_onnx(model: Any, spec: NetSpec, variables: Mapping[str, Any],
                inputs: Mapping[str, np.ndarray], tolerance: float = TOLERANCE) -> Report:
    """Check an ONNX model (``ModelProto`` or path) against the JAX model.

    ``inputs`` maps a label (``"random"``, ``"real"``) to NHWC float32 images.
    """
    import onnx  # noqa: PLC0415

    from hybrenet_jax.export.onnx_export import relu_scalars, run_onnxruntime  # noqa: PLC0415

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    checks = []
    for label, images in inputs.items():
        diff = _max_diff(run_onnxruntime(proto, images), jax_logits(spec, variables, images))
        checks.append(_within(f"onnxruntime vs JAX logits, {len(images)} {label} images, "
                              "max abs diff", diff, tolerance))
    checks.append(_exact("scalar Relu outputs per image in the graph vs analytic ReLU count",
                         relu_scalars(proto), count(spec).relus))
    return Report(tuple(checks))


def verify_bundle(path: str | pathlib.Path, spec: NetSpec, variables: Mapping[str, Any],
                  inputs: Mapping[str, np.ndarray], tolerance: float = TOLERANCE) -> Report:
    """Reload the bundle at ``path`` and check it against the exported spec and variables."""
    from hybrenet_jax.export.bundle import load_bundle  # noqa: PLC0415
    from hybrenet_jax.export.jax_ops import apply_folded  # noqa: PLC0415

    bundle = load_bundle(path)
    checks = [_exact("description fields differing from the exported spec",
                     sum(getattr(bundle.spec, f.name) != getattr(spec, f.name)
                         for f in dataclasses.fields(spec)), 0)]
    original, loaded = flatten(variables), flatten(bundle.variables)
    differing = sum(1 for k in original
                    if k not in loaded or not np.array_equal(original[k], loaded[k]))
    checks.append(_exact("variable arrays not bit-identical after reload", differing, 0))
    refolded = fold(bundle.spec, bundle.variables)
    fresh = refolded.tensors()
    differing = sum(1 for k in fresh if not np.array_equal(fresh[k], bundle.folded[k]))
    checks.append(_exact("stored folded tensors not identical to a fresh fold", differing, 0))
    for label, images in inputs.items():
        expected = jax_logits(spec, variables, images)
        checks.append(_exact(f"reloaded model vs original, {len(images)} {label} images, "
                             "max abs diff", _max_diff(
                                 jax_logits(bundle.spec, bundle.variables, images), expected),
                             0.0))
        checks.append(_within(f"folded graph vs JAX logits, {len(images)} {label} images, "
                              "max abs diff", _max_diff(apply_folded(refolded, images), expected),
                              tolerance))
    return Report(tuple(checks))
