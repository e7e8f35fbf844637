"""ONNX export of the folded inference graph (built with ``onnx.helper``).

Layout: the model input ``input`` is **NCHW** float32 with a static shape
``[batch, channels, size, size]`` (already normalised images, i.e. what
``normalization_for(dataset).apply`` gives, transposed with ``x.transpose(0, 3, 1, 2)``); the
output ``logits`` is ``[batch, classes]``. Conv weights are OIHW (transposed from Flax HWIO);
the VGG classifier's first dense kernel has its rows permuted from NHWC to NCHW flatten order.

Ops: ``Conv`` (with bias where a BatchNorm was folded in; a RegNet-X grouped conv carries the
``group`` attribute, its OIHW weight ``[out, in/group, k, k]``), ``Slice``/``Concat`` on the channel
axis for ReLU-reuse groups (each group is its own ``Conv``; a linked group's ``Conv`` reads the
``Add`` of its input slice and the previous group's output), ``Mul``+``Add`` for BatchNorms
that follow no conv, ``Relu`` only where the network keeps one (under reuse, on the last,
ReLU-group slice), ``Add`` for residuals,
``AveragePool``/``GlobalAveragePool``+``Flatten``, ``Gemm`` for dense layers. Opset
:data:`OPSET`.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from hybrenet_jax.counts import count
from hybrenet_jax.export.errors import ExportError
from hybrenet_jax.export.folding import FoldedNetwork, fold
from hybrenet_jax.export.graph import run_folded
from hybrenet_jax.variables import validate_variables
from hybrenet_jax.netspec import NetSpec
from hybrenet_jax.train.storage import write_text_atomically

OPSET = 17
INPUT = "input"
OUTPUT = "logits"


class OnnxOps:
    """:class:`~hybrenet_jax.export.graph.Ops` that emit ONNX nodes on NCHW value names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: set[str] = {INPUT, OUTPUT}
        self._ints: dict[tuple[int, ...], str] = {}

    def fresh(self, base: str) -> str:
        """A value name not used yet, derived from ``base``."""
        name, i = base, 1
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def constant(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, values: tuple[int, ...]) -> str:
        """A shared int64 initializer (Slice starts/ends/axes)."""
        if values not in self._ints:
            label = "_".join(str(v) for v in values)
            self._ints[values] = self.constant(f"const_i64_{label}",
                                               np.asarray(values, np.int64))
        return self._ints[values]

    def node(self, op: str, inputs: Sequence[str], base: str, **attrs) -> str:
        out = self.fresh(base)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    # -- Ops --------------------------------------------------------------------------------
    def conv(self, x: str, name: str, kernel: np.ndarray, bias: np.ndarray | None,
             stride: int, groups: int = 1) -> str:
        k = kernel.shape[0]
        inputs = [x, self.constant(f"{name}.weight", kernel.transpose(3, 2, 0, 1))]
        if bias is not None:
            inputs.append(self.constant(f"{name}.bias", bias))
        attrs = {"group": groups} if groups > 1 else {}
        return self.node("Conv", inputs, name, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[k // 2] * 4, **attrs)

    def channels(self, x: str, start: int, stop: int, name: str) -> str:
        return self.node("Slice", [x, self.ints((start,)), self.ints((stop,)), self.ints((1,))],
                         name)

    def concat(self, xs: Sequence[str], name: str) -> str:
        return xs[0] if len(xs) == 1 else self.node("Concat", xs, name, axis=1)

    def affine(self, x: str, name: str, scale: np.ndarray, shift: np.ndarray) -> str:
        shape = (1, -1, 1, 1)
        y = self.node("Mul", [x, self.constant(f"{name}.scale", scale.reshape(shape))],
                      f"{name}_mul")
        return self.node("Add", [y, self.constant(f"{name}.shift", shift.reshape(shape))], name)

    def relu(self, x: str, name: str) -> str:
        return self.node("Relu", [x], name)

    def add(self, a: str, b: str, name: str) -> str:
        return self.node("Add", [a, b], name)

    def pool(self, x: str, name: str, kind: str) -> str:
        if kind == "global":
            return self.node("Flatten", [self.node("GlobalAveragePool", [x], name)],
                             f"{name}_flat", axis=1)
        return self.node("AveragePool", [x], name, kernel_shape=[2, 2], strides=[2, 2])

    def dense(self, x: str, name: str, kernel: np.ndarray, bias: np.ndarray,
              in_hwc: tuple[int, int, int] | None) -> str:
        if in_hwc is not None:  # rows from NHWC to NCHW flatten order
            h, w, c = in_hwc
            kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
            x = self.node("Flatten", [x], f"{name}_flat", axis=1)
        return self.node("Gemm", [x, self.constant(f"{name}.weight", kernel),
                                  self.constant(f"{name}.bias", bias)], name)


def build_onnx(net: FoldedNetwork, batch: int = 1, metadata: dict[str, str] | None = None
               ) -> onnx.ModelProto:
    """The ONNX model of a folded network for a static batch size (checked with the checker)."""
    if batch < 1:
        raise ExportError(f"batch={batch} must be a positive integer")
    spec = net.spec
    ops = OnnxOps()
    y = run_folded(net, ops, INPUT)
    for node in ops.nodes:  # the last op's output becomes the graph output "logits"
        node.output[:] = [OUTPUT if o == y else o for o in node.output]
    x_info = helper.make_tensor_value_info(
        INPUT, TensorProto.FLOAT, [batch, spec.in_channels, spec.input_size, spec.input_size])
    y_info = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [batch, spec.classes])
    graph = helper.make_graph(ops.nodes, (spec.name or spec.family).replace(":", "_"),
                              [x_info], [y_info], initializer=ops.initializers,
                              doc_string="BatchNorm-folded inference graph; input NCHW float32 "
                                         "(normalised images), output logits")
    opsets = [helper.make_opsetid("", OPSET)]
    # The lowest IR version that carries this opset: readable by older runtimes too.
    model = helper.make_model(graph, opset_imports=opsets, producer_name="hybrenet_jax",
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(model, {"layout": "NCHW", **(metadata or {})})
    onnx.checker.check_model(model)
    return model


def save_onnx(model: onnx.ModelProto, path: str | pathlib.Path) -> pathlib.Path:
    """Write ``model`` to ``path`` (parent folders created)."""
    path = pathlib.Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, model.SerializeToString())  # no partial file on a full disk
    except OSError as err:
        raise ExportError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def relu_scalars(model: onnx.ModelProto) -> int:
    """Scalar ReLU outputs per image: the ``Relu`` output sizes from shape inference / batch."""
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*inferred.graph.value_info, *inferred.graph.output)}
    batch = inferred.graph.input[0].type.tensor_type.shape.dim[0].dim_value
    total = 0
    for node in inferred.graph.node:
        if node.op_type == "Relu":
            dims = shapes.get(node.output[0])
            if not dims or any(d <= 0 for d in dims):
                raise ExportError(f"shape inference left the output of {node.name} unknown")
            total += int(np.prod(dims))
    return total // batch


def run_onnxruntime(model: onnx.ModelProto | str | pathlib.Path, images: np.ndarray
                    ) -> np.ndarray:
    """Logits of an exported model for NHWC float32 ``images`` (any count: run in batches)."""
    import onnxruntime as ort  # noqa: PLC0415 (heavy; only needed to run a model)

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    batch = session.get_inputs()[0].shape[0]
    x = np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2))
    n = x.shape[0]
    padded = -n % batch
    if padded:
        x = np.concatenate([x, np.zeros((padded, *x.shape[1:]), np.float32)])
    outs = [session.run([OUTPUT], {INPUT: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs)[:n]


def export_onnx(spec: NetSpec, variables: dict, path: str | pathlib.Path, batch: int = 1,
                metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Validate ``variables`` against ``spec``, fold them and write the ONNX model to ``path``.

    ``metadata`` (string key/values) is stored in the model's ``metadata_props`` next to the
    model string and the analytic ReLU count.
    """
    variables = validate_variables(spec, variables, "the export")
    props = {"model": spec.name, "relus": str(count(spec).relus), **(metadata or {})}
    model = build_onnx(fold(spec, variables), batch, props)
    save_onnx(model, path)
    return model
